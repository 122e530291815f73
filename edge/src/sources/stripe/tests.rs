use super::*;

use hmac::{Hmac, KeyInit as _, Mac as _};
use hookline_proto::prost_types::Timestamp;
use sha2::Sha256;

/// The known-answer vector of spec/stripe.md §2, computed with the official
/// `stripe.WebhookSignature.generate_signature_header`.
const SECRET: &str = "whsec_hookline_example_secret_0001";
const T: i64 = 1_767_225_600;
const BODY: &[u8] = br#"{"id":"evt_test_hookline_1","object":"event","type":"customer.created"}"#;
const KAT_V1: &str = "2f585e3b43044fa64c5750b9df5df7481ec78d7bd7cbb64ad508b6214638dbd4";
const KAT_HEADER: &str =
    "t=1767225600,v1=2f585e3b43044fa64c5750b9df5df7481ec78d7bd7cbb64ad508b6214638dbd4";

/// HMAC-SHA256 as Stripe computes it, with the hmac/sha2 crates directly.
fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    mac.update(msg);
    mac.finalize().into_bytes().to_vec()
}

/// Hex `v1` for `t_text + "." + body` under the raw key bytes `key`.
fn mac_with_key(key: &[u8], t_text: &str, body: &[u8]) -> String {
    hex::encode(hmac_sha256(key, &[t_text.as_bytes(), b".", body].concat()))
}

/// Hex `v1` under an endpoint secret (the whole `whsec_…` string is the key).
fn mac(secret: &str, t_text: &str, body: &[u8]) -> String {
    mac_with_key(secret.as_bytes(), t_text, body)
}

/// A correct header for `BODY` under `SECRET` at `t`.
fn good(t: i64) -> String {
    format!("t={t},v1={}", mac(SECRET, &t.to_string(), BODY))
}

#[test]
fn signing_helpers_reproduce_the_known_answer_vector() {
    assert_eq!(mac(SECRET, "1767225600", BODY), KAT_V1);
    assert_eq!(good(T), KAT_HEADER);
    assert_eq!(sign(SECRET, T, BODY), KAT_HEADER);
}

mod verification {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as B64;
    use http::{HeaderMap, HeaderName, HeaderValue};

    use super::*;

    const HEADER_NAME: &str = "Stripe-Signature";
    /// The secret before a roll, and one the endpoint never had.
    const OLD: &str = "whsec_hookline_example_secret_0000";
    const OTHER: &str = "whsec_hookline_example_secret_9999";
    /// A secret whose tail is valid base64 (the Standard Webhooks example secret).
    const B64_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    /// HMAC-SHA1 of the known-answer payload under `SECRET`, precomputed with Python's
    /// `hmac.new(secret, b"1767225600." + body, hashlib.sha1).hexdigest()` (no SHA-1
    /// crate in this workspace).
    const KAT_HMAC_SHA1: &str = "706e8cff0ea8d6066065a0e4ffaa69d046f99c31";
    const I64_OVERFLOW: &str = "9223372036854775808";

    fn malformed(why: &'static str) -> Result<(), VerifyError> {
        Err(VerifyError::Malformed(why))
    }
    const MISSING: Result<(), VerifyError> = Err(VerifyError::MissingHeader("Stripe-Signature"));
    const DUPLICATE: Result<(), VerifyError> =
        Err(VerifyError::DuplicateHeader("Stripe-Signature"));
    const MISMATCH: Result<(), VerifyError> = Err(VerifyError::Mismatch);
    const STALE: Result<(), VerifyError> = Err(VerifyError::StaleTimestamp);

    /// One delivery to one verifier and the verdict it must get.
    #[derive(Debug)]
    struct Case {
        name: &'static str,
        /// The secrets the verifier holds.
        secrets: Vec<String>,
        tolerance: i64,
        /// Header fields in the order sent: name as written, raw value bytes.
        headers: Vec<(&'static str, Vec<u8>)>,
        body: Vec<u8>,
        now: i64,
        want: Result<(), VerifyError>,
    }

    /// `SECRET`, tolerance 300 s, one `Stripe-Signature: header`, `BODY`, now = `T`, Ok.
    fn case(name: &'static str, header: impl Into<Vec<u8>>) -> Case {
        Case {
            name,
            secrets: vec![SECRET.to_owned()],
            tolerance: 300,
            headers: vec![(HEADER_NAME, header.into())],
            body: BODY.to_vec(),
            now: T,
            want: Ok(()),
        }
    }

    impl Case {
        fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
            self.body = body.into();
            self
        }
        fn now(mut self, now: i64) -> Self {
            self.now = now;
            self
        }
        fn tolerance(mut self, secs: i64) -> Self {
            self.tolerance = secs;
            self
        }
        fn secrets(mut self, secrets: &[&str]) -> Self {
            self.secrets = secrets.iter().map(|s| (*s).to_owned()).collect();
            self
        }
        fn headers(mut self, headers: &[(&'static str, &str)]) -> Self {
            self.headers = headers
                .iter()
                .map(|(n, v)| (*n, v.as_bytes().to_vec()))
                .collect();
            self
        }
        fn want(mut self, want: Result<(), VerifyError>) -> Self {
            self.want = want;
            self
        }
    }

    fn check(cases: Vec<Case>) {
        let mut failures = Vec::new();
        for c in &cases {
            let mut headers = HeaderMap::new();
            for (name, value) in &c.headers {
                headers.append(
                    HeaderName::from_bytes(name.as_bytes()).expect("valid header name"),
                    HeaderValue::from_bytes(value).expect("valid header value"),
                );
            }
            let verifier = Stripe::new(c.secrets.iter().map(|s| s.as_bytes()), c.tolerance);
            let delivery = Delivery {
                headers: &headers,
                query: "",
                body: &c.body,
            };
            let got = verifier.verify(delivery, c.now);
            if got != c.want {
                failures.push(format!("{}: got {got:?}, want {:?}", c.name, c.want));
            }
        }
        assert!(
            failures.is_empty(),
            "{} of {} cases failed:\n{}",
            failures.len(),
            cases.len(),
            failures.join("\n")
        );
    }

    /// §2: what is signed, with which key, and that the bytes are hashed as received.
    #[test]
    fn signed_content_and_secret() {
        let kat_body = String::from_utf8(BODY.to_vec()).expect("ASCII");
        let zoe = "{\"name\":\"Zoë\"}";
        let zoe_header = format!("t={T},v1={}", mac(SECRET, &T.to_string(), zoe.as_bytes()));
        check(vec![
            case("known-answer vector", KAT_HEADER),
            case("known-answer vector built here", good(T)),
            case("known-answer vector, lower-case header name", KAT_HEADER)
                .headers(&[("stripe-signature", KAT_HEADER)]),
            case("known-answer vector, upper-case header name", KAT_HEADER)
                .headers(&[("STRIPE-SIGNATURE", KAT_HEADER)]),
            case("header under another name", KAT_HEADER)
                .headers(&[("Stripe-Signatures", KAT_HEADER)])
                .want(MISSING),
            case("final newline added", KAT_HEADER)
                .body(format!("{kat_body}\n"))
                .want(MISMATCH),
            case("CRLF added", KAT_HEADER)
                .body(format!("{kat_body}\r\n"))
                .want(MISMATCH),
            case("re-indented", KAT_HEADER)
                .body(r#"{"id": "evt_test_hookline_1", "object": "event", "type": "customer.created"}"#)
                .want(MISMATCH),
            case("keys reordered", KAT_HEADER)
                .body(r#"{"type":"customer.created","id":"evt_test_hookline_1","object":"event"}"#)
                .want(MISMATCH),
            case("\\u-escaped", KAT_HEADER)
                .body(r#"{"id":"evt\u005ftest_hookline_1","object":"event","type":"customer.created"}"#)
                .want(MISMATCH),
            case("BOM added", KAT_HEADER)
                .body([b"\xEF\xBB\xBF".as_slice(), BODY].concat())
                .want(MISMATCH),
            case("secret loaded with a trailing newline", KAT_HEADER)
                .secrets(&["whsec_hookline_example_secret_0001\n"])
                .want(MISMATCH),
            case("secret loaded with a trailing space", KAT_HEADER)
                .secrets(&["whsec_hookline_example_secret_0001 "])
                .want(MISMATCH),
            case("non-ASCII body, signed over its UTF-8 bytes", zoe_header.clone())
                .body(zoe),
            case("non-ASCII body, verified as \\u-escaped", zoe_header)
                .body(r#"{"name":"Zo\u00eb"}"#)
                .want(MISMATCH),
            case(
                "empty body, correctly signed (rejected later as not JSON, §7)",
                format!("t={T},v1={}", mac(SECRET, &T.to_string(), b"")),
            )
            .body(""),
        ]);
    }

    /// §3: age only; the future is accepted; the boundary is inclusive.
    #[test]
    fn tolerance() {
        check(vec![
            case("signed now", sign(SECRET, T, BODY)),
            case("299 s old", sign(SECRET, T, BODY)).now(T + 299),
            case("exactly at the tolerance", sign(SECRET, T, BODY)).now(T + 300),
            case("one second over", sign(SECRET, T, BODY))
                .now(T + 301)
                .want(STALE),
            case("a day old", sign(SECRET, T, BODY))
                .now(T + 86_400)
                .want(STALE),
            case("one second in the future", sign(SECRET, T + 1, BODY)),
            case("an hour in the future", sign(SECRET, T + 3600, BODY)),
            case(
                "ten years in the future",
                sign(SECRET, T + 10 * 365 * 86_400, BODY),
            ),
            case("custom 60 s, at the boundary", sign(SECRET, T, BODY))
                .tolerance(60)
                .now(T + 60),
            case("custom 60 s, one second over", sign(SECRET, T, BODY))
                .tolerance(60)
                .now(T + 61)
                .want(STALE),
            case("custom 1 s, one second old", sign(SECRET, T, BODY))
                .tolerance(1)
                .now(T + 1),
            case("custom 1 s, two seconds old", sign(SECRET, T, BODY))
                .tolerance(1)
                .now(T + 2)
                .want(STALE),
            case(
                "maximum tolerance 86400 s, at the boundary",
                sign(SECRET, T, BODY),
            )
            .tolerance(86_400)
            .now(T + 86_400),
        ]);
    }

    /// §4: any `v1` under any configured secret.
    #[test]
    fn rotation() {
        let t = T.to_string();
        let new = mac(SECRET, &t, BODY);
        let old = mac(OLD, &t, BODY);
        let other = mac(OTHER, &t, BODY);
        let zeros = "0".repeat(64);
        let many_bogus: String = (0..50).map(|i| format!(",v1={i:064x}")).collect();
        check(vec![
            case("two secrets, v1 under the new", format!("t={t},v1={new}"))
                .secrets(&[OLD, SECRET]),
            case("two secrets, v1 under the old", format!("t={t},v1={old}"))
                .secrets(&[OLD, SECRET]),
            case("two secrets, both v1", format!("t={t},v1={new},v1={old}"))
                .secrets(&[OLD, SECRET]),
            case(
                "two secrets, both v1, order reversed",
                format!("t={t},v1={old},v1={new}"),
            )
            .secrets(&[SECRET, OLD]),
            case(
                "only the new secret, both v1",
                format!("t={t},v1={old},v1={new}"),
            )
            .secrets(&[SECRET]),
            case(
                "only the old secret, both v1",
                format!("t={t},v1={new},v1={old}"),
            )
            .secrets(&[OLD]),
            case("two secrets, v1 under neither", format!("t={t},v1={other}"))
                .secrets(&[OLD, SECRET])
                .want(MISMATCH),
            case(
                "two secrets, several v1 under neither",
                format!("t={t},v1={other},v1={zeros},v1=bad_signature"),
            )
            .secrets(&[OLD, SECRET])
            .want(MISMATCH),
            case(
                "valid v1 then bogus v1",
                format!("t={t},v1={new},v1=bad_signature"),
            ),
            case(
                "bogus v1 then valid v1",
                format!("t={t},v1=bad_signature,v1={new}"),
            ),
            case(
                "valid v1 then 64-hex bogus v1",
                format!("t={t},v1={new},v1={zeros}"),
            ),
            case(
                "64-hex bogus v1 then valid v1",
                format!("t={t},v1={zeros},v1={new}"),
            ),
            case(
                "valid v1 after 50 bogus ones",
                format!("t={t}{many_bogus},v1={new}"),
            ),
            case(
                "elements in another order",
                format!("v0={zeros},v1={new},t={t}"),
            ),
            case(
                "valid MAC only as v0, bogus v1 (downgrade)",
                format!("t={t},v1={zeros},v0={new}"),
            )
            .want(MISMATCH),
        ]);
    }

    /// §5: every row of "What every official SDK rejects".
    #[test]
    fn what_every_sdk_rejects() {
        let t = T.to_string();
        let v1 = KAT_V1;
        let b64_tail = B64_SECRET.strip_prefix("whsec_").expect("prefix");
        let b64_key = B64.decode(b64_tail).expect("valid base64");
        let mut no_header = case("header missing", "").want(MISSING);
        no_header.headers.clear();
        let mut one_byte_changed = BODY.to_vec();
        one_byte_changed[10] ^= 0x01;
        check(vec![
            // header missing, or empty
            no_header,
            case("header empty", "").want(MISSING),
            case("header only whitespace", " \t ").want(MISSING),
            // free text, no t= / v1= structure
            case("free text", "bad_header").want(malformed("no t")),
            case("bare hex", KAT_V1).want(malformed("no t")),
            // no t element
            case("no t element", format!("v1={v1}")).want(malformed("no t")),
            // t empty, non-numeric, decimal
            case("t empty", format!("t=,v1={v1}")).want(malformed("t is not a number")),
            case("t abc", format!("t=abc,v1={v1}")).want(malformed("t is not a number")),
            case(
                "t decimal, MAC over that text",
                format!("t={t}.5,v1={}", mac(SECRET, &format!("{t}.5"), BODY)),
            )
            .want(malformed("t is not a number")),
            // t of 0, negative, or older than the tolerance, even when correctly signed
            case("t=0 correctly signed", sign(SECRET, 0, BODY)).want(STALE),
            case(
                "t=-1 correctly signed",
                format!("t=-1,v1={}", mac(SECRET, "-1", BODY)),
            )
            .want(malformed("t is not a number")),
            case("t=12345 correctly signed", sign(SECRET, 12_345, BODY)).want(STALE),
            case("t older than the tolerance", sign(SECRET, T - 301, BODY)).want(STALE),
            // no v1 element, even if the value is the correct MAC
            case("only v0 with the correct MAC", format!("t={t},v0={v1}"))
                .want(malformed("no v1 signature")),
            case("only v2 with the correct MAC", format!("t={t},v2={v1}"))
                .want(malformed("no v1 signature")),
            case("only V1 with the correct MAC", format!("t={t},V1={v1}"))
                .want(malformed("no v1 signature")),
            case("t only", format!("t={t}")).want(malformed("no v1 signature")),
            // v1 empty, truncated or extended, base64, HMAC-SHA1
            case("v1 empty", format!("t={t},v1=")).want(MISMATCH),
            case(
                "v1 truncated by one hex digit",
                format!("t={t},v1={}", &v1[..63]),
            )
            .want(MISMATCH),
            case(
                "v1 truncated by one byte",
                format!("t={t},v1={}", &v1[..62]),
            )
            .want(MISMATCH),
            case("v1 extended by one hex digit", format!("t={t},v1={v1}0")).want(MISMATCH),
            case("v1 extended by one byte", format!("t={t},v1={v1}00")).want(MISMATCH),
            case(
                "v1 as base64",
                format!("t={t},v1={}", B64.encode(hex::decode(v1).expect("hex"))),
            )
            .want(MISMATCH),
            case("v1 HMAC-SHA1", format!("t={t},v1={KAT_HMAC_SHA1}")).want(MISMATCH),
            // MAC over the body only, another t, another body, another secret
            case(
                "MAC over the body only",
                format!(
                    "t={t},v1={}",
                    hex::encode(hmac_sha256(SECRET.as_bytes(), BODY))
                ),
            )
            .want(MISMATCH),
            case(
                "MAC over another t",
                format!("t={t},v1={}", mac(SECRET, &(T - 1).to_string(), BODY)),
            )
            .want(MISMATCH),
            case(
                "MAC over another body",
                format!("t={t},v1={}", mac(SECRET, &t, b"{}")),
            )
            .want(MISMATCH),
            case(
                "MAC under another secret",
                format!("t={t},v1={}", mac(OTHER, &t, BODY)),
            )
            .want(MISMATCH),
            // key without whsec_, or base64-decoded
            case(
                "key without the whsec_ prefix",
                format!("t={t},v1={}", mac("hookline_example_secret_0001", &t, BODY)),
            )
            .want(MISMATCH),
            case(
                "base64 secret, key with the prefix (control)",
                format!("t={t},v1={}", mac(B64_SECRET, &t, BODY)),
            )
            .secrets(&[B64_SECRET]),
            case(
                "base64 secret, key base64-decoded",
                format!("t={t},v1={}", mac_with_key(&b64_key, &t, BODY)),
            )
            .secrets(&[B64_SECRET])
            .want(MISMATCH),
            case(
                "base64 secret, key without the prefix",
                format!("t={t},v1={}", mac(b64_tail, &t, BODY)),
            )
            .secrets(&[B64_SECRET])
            .want(MISMATCH),
            // ';' separators, spaces after commas or around '='
            case("';' separators", format!("t={t};v1={v1}")).want(malformed("t is not a number")),
            case("';' separators, v1 first", format!("v1={v1};t={t}")).want(malformed("no t")),
            case("space after the comma", format!("t={t}, v1={v1}"))
                .want(malformed("no v1 signature")),
            case("space after the comma before t", format!("v1={v1}, t={t}"))
                .want(malformed("no t")),
            case("space before '=' of t", format!("t ={t},v1={v1}")).want(malformed("no t")),
            case("space after '=' of t", format!("t= {t},v1={v1}"))
                .want(malformed("t is not a number")),
            case("space before '=' of v1", format!("t={t},v1 ={v1}"))
                .want(malformed("no v1 signature")),
            case("space after '=' of v1", format!("t={t},v1= {v1}")).want(MISMATCH),
            // body changed in any byte after signing
            case("body changed by one bit", KAT_HEADER)
                .body(one_byte_changed)
                .want(MISMATCH),
            case("body missing its last byte", KAT_HEADER)
                .body(&BODY[..BODY.len() - 1])
                .want(MISMATCH),
            case("body empty", KAT_HEADER).body("").want(MISMATCH),
        ]);
    }

    /// §6: every row of the disagreement table, with hookline's rule.
    #[test]
    fn where_the_sdks_disagree() {
        let t = T.to_string();
        let v1 = KAT_V1;
        let non_hex_64 = "z".repeat(64);
        let zero_t = format!("0{t}");
        let max = i64::MAX.to_string();
        let future = T + 10 * 365 * 86_400;
        let millis = T * 1000;
        let invalid_utf8: &[u8] = b"{\"id\":\"evt_1\",\"note\":\"\xFF\xFE\xC3\"}";
        let lossy = String::from_utf8_lossy(invalid_utf8).into_owned();
        let bom_body = [b"\xEF\xBB\xBF".as_slice(), BODY].concat();
        check(vec![
            // several t: reject
            case("t twice, same value", format!("t={t},t={t},v1={v1}"))
                .want(malformed("more than one t")),
            case(
                "t twice, v1 between",
                format!("t={},v1={v1},t={t}", T - 1000),
            )
            .want(malformed("more than one t")),
            // upper-case hex: accept
            case(
                "v1 upper-case hex",
                format!("t={t},v1={}", v1.to_ascii_uppercase()),
            ),
            case(
                "v1 mixed-case hex",
                format!("t={t},v1={}{}", &v1[..32], v1[32..].to_ascii_uppercase()),
            ),
            // v1 that is not 64 hex digits: skipped, others may match
            case(
                "bad_signature skipped",
                format!("t={t},v1=bad_signature,v1={v1}"),
            ),
            case(
                "64 non-hex chars skipped",
                format!("t={t},v1={non_hex_64},v1={v1}"),
            ),
            case("only non-hex v1", format!("t={t},v1={non_hex_64}")).want(MISMATCH),
            // trailing comma, empty element, element without '=': ignored
            case("trailing comma", format!("t={t},v1={v1},")),
            case("leading comma", format!(",t={t},v1={v1}")),
            case("empty element", format!("t={t},,v1={v1}")),
            case("element without '='", format!("t={t},garbage,v1={v1}")),
            case("bare v1 without '='", format!("t={t},v1,v1={v1}")),
            // value containing '=': split at the first, so the value is not hex
            case("v1=<mac>=x alone", format!("t={t},v1={v1}=x")).want(MISMATCH),
            case(
                "v1=<mac>=x, then a valid v1",
                format!("t={t},v1={v1}=x,v1={v1}"),
            ),
            case("t=<t>=1", format!("t={t}=1,v1={v1}")).want(malformed("t is not a number")),
            // spaces, + or _ in t: reject
            case("leading space in t", format!("t= {t},v1={v1}"))
                .want(malformed("t is not a number")),
            case("trailing space in t", format!("t={t} ,v1={v1}"))
                .want(malformed("t is not a number")),
            case("tab in t", format!("t=\t{t},v1={v1}")).want(malformed("t is not a number")),
            case("plus sign in t", format!("t=+{t},v1={v1}")).want(malformed("t is not a number")),
            case("underscores in t", format!("t=1_767_225_600,v1={v1}"))
                .want(malformed("t is not a number")),
            case("hex t", format!("t=0x{T:x},v1={v1}")).want(malformed("t is not a number")),
            // leading zeros: accept, MAC over the re-formatted integer
            case(
                "leading zero, MAC over the integer",
                format!("t={zero_t},v1={v1}"),
            ),
            case(
                "leading zeros, MAC over the integer",
                format!("t=000000{t},v1={v1}"),
            ),
            case(
                "leading zero, MAC over the raw text",
                format!("t={zero_t},v1={}", mac(SECRET, &zero_t, BODY)),
            )
            .want(MISMATCH),
            // t overflowing i64: reject; i64::MAX itself is a valid (far-future) t
            case(
                "t = i64::MAX + 1",
                format!("t={I64_OVERFLOW},v1={}", mac(SECRET, I64_OVERFLOW, BODY)),
            )
            .want(malformed("t is out of range")),
            case("t of 40 digits", format!("t={},v1={v1}", "9".repeat(40)))
                .want(malformed("t is out of range")),
            case(
                "t = i64::MAX correctly signed",
                format!("t={max},v1={}", mac(SECRET, &max, BODY)),
            ),
            // far future and milliseconds: accept
            case("t ten years ahead", good(future)),
            case("t in milliseconds", good(millis)),
            // whitespace around the whole value: trimmed
            case("spaces around the value", format!("  {KAT_HEADER}  ")),
            case("tabs around the value", format!("\t{KAT_HEADER}\t")),
            case(
                "mixed SP/HTAB around the value",
                format!(" \t {KAT_HEADER}\t "),
            ),
            // two Stripe-Signature fields: reject
            case("two fields, both valid", KAT_HEADER)
                .headers(&[(HEADER_NAME, KAT_HEADER), (HEADER_NAME, KAT_HEADER)])
                .want(DUPLICATE),
            case("two fields, valid then bogus", KAT_HEADER)
                .headers(&[(HEADER_NAME, KAT_HEADER), (HEADER_NAME, "t=1,v1=00")])
                .want(DUPLICATE),
            case("two fields, empty then valid", KAT_HEADER)
                .headers(&[(HEADER_NAME, ""), (HEADER_NAME, KAT_HEADER)])
                .want(DUPLICATE),
            case("two fields, names in different case", KAT_HEADER)
                .headers(&[
                    ("STRIPE-SIGNATURE", KAT_HEADER),
                    ("stripe-signature", KAT_HEADER),
                ])
                .want(DUPLICATE),
            // BOM added after signing: byte-exact, reject; a BOM that was signed verifies
            case("BOM added after signing", KAT_HEADER)
                .body(bom_body.clone())
                .want(MISMATCH),
            case(
                "BOM present when signed",
                format!("t={t},v1={}", mac(SECRET, &t, &bom_body)),
            )
            .body(bom_body),
            // invalid UTF-8: HMAC over the raw bytes, never decoded
            case(
                "invalid UTF-8, signed over the raw bytes",
                format!("t={t},v1={}", mac(SECRET, &t, invalid_utf8)),
            )
            .body(invalid_utf8),
            case(
                "invalid UTF-8, MAC over the lossy decoding",
                format!("t={t},v1={}", mac(SECRET, &t, lossy.as_bytes())),
            )
            .body(invalid_utf8)
            .want(MISMATCH),
            // and a header value that is not ASCII (obs-text) is malformed
            case(
                "non-ASCII byte in the header value",
                [KAT_HEADER.as_bytes(), b",v0=\xE9"].concat(),
            )
            .want(malformed("not ASCII")),
        ]);
    }
}

/// Fixtures, from edge/src/sources/stripe/ to the repository's tests/fixtures/stripe/.
mod fixtures {
    pub const GUEST_PAID: &[u8] = include_bytes!(
        "../../../../tests/fixtures/stripe/checkout_session_completed_guest_paid.json"
    );
    pub const UNPAID: &[u8] =
        include_bytes!("../../../../tests/fixtures/stripe/checkout_session_completed_unpaid.json");
    pub const ASYNC_PAID: &[u8] = include_bytes!(
        "../../../../tests/fixtures/stripe/checkout_session_async_payment_succeeded.json"
    );
    pub const SUBSCRIPTION: &[u8] = include_bytes!(
        "../../../../tests/fixtures/stripe/checkout_session_completed_subscription.json"
    );
    pub const PAYMENT_INTENT: &[u8] =
        include_bytes!("../../../../tests/fixtures/stripe/payment_intent_succeeded.json");
    pub const CHARGE: &[u8] =
        include_bytes!("../../../../tests/fixtures/stripe/charge_succeeded.json");
    pub const CHARGE_UNCAPTURED: &[u8] =
        include_bytes!("../../../../tests/fixtures/stripe/charge_succeeded_uncaptured.json");
    pub const CHARGE_REFUNDED: &[u8] =
        include_bytes!("../../../../tests/fixtures/stripe/charge_refunded.json");
    pub const REFUND_CREATED: &[u8] =
        include_bytes!("../../../../tests/fixtures/stripe/refund_created.json");
    pub const REFUND_FAILED: &[u8] =
        include_bytes!("../../../../tests/fixtures/stripe/refund_updated_failed.json");
    pub const CUSTOMER_CREATED: &[u8] =
        include_bytes!("../../../../tests/fixtures/stripe/customer_created.json");
    pub const CUSTOMER_UPDATED: &[u8] =
        include_bytes!("../../../../tests/fixtures/stripe/customer_updated.json");
    pub const INVOICE_PAID: &[u8] =
        include_bytes!("../../../../tests/fixtures/stripe/invoice_paid_basil.json");
    pub const THIN: &[u8] = include_bytes!("../../../../tests/fixtures/stripe/thin_v2_event.json");
    pub const UNMAPPED: &[u8] =
        include_bytes!("../../../../tests/fixtures/stripe/product_created_unmapped.json");
}

/// Receive time used for every normalization: a non-whole second, to see the milliseconds.
const RECEIVED_MS: i64 = 1_767_600_000_250;
const RECEIVED: Timestamp = Timestamp {
    seconds: 1_767_600_000,
    nanos: 250_000_000,
};

/// `body` with `from` (which must occur exactly once) replaced by `to`.
fn patch(body: &[u8], from: &str, to: &str) -> Vec<u8> {
    let text = std::str::from_utf8(body).expect("fixtures are UTF-8");
    assert_eq!(
        text.matches(from).count(),
        1,
        "patch target {from:?} must occur exactly once"
    );
    text.replacen(from, to, 1).into_bytes()
}

/// Expected events: the fixtures' facts written out by hand.
mod want {
    use super::*;

    pub const JENNY_PI: &str = "pi_3QhkLnHookLine0001Paid";
    pub const JENNY_CH: &str = "ch_3QhkLnHookLine0001Paid";
    pub const JENNY_CS: &str = "cs_test_a1HookLineGuestPaid0001";
    pub const MAX_PI: &str = "pi_3QhkMaHookLine0002Sepa";
    pub const MAX_CS: &str = "cs_test_b1HookLineSepaDebit0002";
    pub const MAX_CUS: &str = "cus_HookLineMaxM0002";
    pub const GRACE_CS: &str = "cs_test_c1HookLineSubscribe0004";
    pub const GRACE_CUS: &str = "cus_HookLineGrace0004";
    pub const GRACE_IN: &str = "in_1QhkNbHookLine0004Inv";
    pub const GRACE_SUB: &str = "sub_1QhkNbHookLine0004Pro";
    pub const SAM_PI: &str = "pi_3QhkRtHookLine0007Auth";
    pub const SAM_CH: &str = "ch_3QhkRtHookLine0007Auth";
    pub const ADA_CUS: &str = "cus_HookLineAdaL0011";

    pub fn event(
        evt: &str,
        event_type: &str,
        created: i64,
        contact: v1::ContactData,
        payload: Payload,
    ) -> v1::WebhookEvent {
        v1::WebhookEvent {
            id: format!("stripe:{evt}"),
            source: "stripe".to_owned(),
            kind: "stripe".to_owned(),
            r#type: event_type.to_owned(),
            occurred_at: Some(Timestamp {
                seconds: created,
                nanos: 0,
            }),
            received_at: Some(RECEIVED),
            contact: Some(contact),
            payload: Some(payload),
            ..v1::WebhookEvent::default()
        }
    }

    pub fn contact(
        email: Option<&str>,
        name: Option<&str>,
        phone: Option<&str>,
        region: &str,
        customer: Option<&str>,
        refs: &[&str],
    ) -> v1::ContactData {
        v1::ContactData {
            email: email.map(str::to_owned),
            phone: phone.map(str::to_owned),
            name: name.map(str::to_owned),
            phone_region: region.to_owned(),
            external_ids: customer
                .map(|id| v1::ExternalId {
                    system: "stripe_customer".to_owned(),
                    id: id.to_owned(),
                })
                .into_iter()
                .collect(),
            payment_refs: refs.iter().map(|r| (*r).to_owned()).collect(),
            ..v1::ContactData::default()
        }
    }

    pub fn purchase(purchase_id: &str, amount: i64, currency: &str) -> v1::PurchaseCompleted {
        v1::PurchaseCompleted {
            purchase_id: purchase_id.to_owned(),
            amount,
            currency: currency.to_owned(),
            ..v1::PurchaseCompleted::default()
        }
    }

    pub fn upserted() -> Payload {
        Payload::ContactUpserted(v1::ContactUpserted {})
    }

    /// Mutable access to parts of an expected event, for the variants.
    pub fn purchase_of(e: &mut v1::WebhookEvent) -> &mut v1::PurchaseCompleted {
        match e.payload.as_mut() {
            Some(Payload::PurchaseCompleted(p)) => p,
            other => panic!("expected a purchase, have {other:?}"),
        }
    }
    pub fn refund_of(e: &mut v1::WebhookEvent) -> &mut v1::RefundUpdated {
        match e.payload.as_mut() {
            Some(Payload::RefundUpdated(r)) => r,
            other => panic!("expected a refund, have {other:?}"),
        }
    }
    pub fn contact_of(e: &mut v1::WebhookEvent) -> &mut v1::ContactData {
        e.contact.as_mut().expect("contact")
    }
    pub fn tweak(
        mut e: v1::WebhookEvent,
        f: impl FnOnce(&mut v1::WebhookEvent),
    ) -> v1::WebhookEvent {
        f(&mut e);
        e
    }

    fn jenny_session() -> v1::ContactData {
        contact(
            Some("Jenny.Rosen@example.com"),
            Some("Jenny Rosen"),
            Some("+15415550142"),
            "US",
            None,
            &[JENNY_PI, JENNY_CS],
        )
    }
    fn jenny_billing() -> v1::ContactData {
        contact(
            Some("jenny.rosen@example.com"),
            Some("Jenny Rosen"),
            Some("(541) 555-0142"),
            "US",
            None,
            &[JENNY_PI, JENNY_CH],
        )
    }
    fn max() -> v1::ContactData {
        contact(
            Some("max.mustermann@example.com"),
            Some("Max Mustermann"),
            None,
            "DE",
            Some(MAX_CUS),
            &[MAX_PI, MAX_CS],
        )
    }

    pub fn guest_paid() -> v1::WebhookEvent {
        event(
            "evt_1QhkLnHookLine0001CsPaid",
            "checkout.session.completed",
            1_767_225_601,
            jenny_session(),
            Payload::PurchaseCompleted(v1::PurchaseCompleted {
                checkout_session_id: JENNY_CS.to_owned(),
                payment_intent_id: JENNY_PI.to_owned(),
                ..purchase(JENNY_PI, 4900, "usd")
            }),
        )
    }

    pub fn unpaid() -> v1::WebhookEvent {
        event(
            "evt_1QhkMaHookLine0002CsUnpaid",
            "checkout.session.completed",
            1_767_225_900,
            max(),
            upserted(),
        )
    }

    pub fn async_paid() -> v1::WebhookEvent {
        event(
            "evt_1QjqPzHookLine0003CsAsyncOk",
            "checkout.session.async_payment_succeeded",
            1_767_398_700,
            max(),
            Payload::PurchaseCompleted(v1::PurchaseCompleted {
                checkout_session_id: MAX_CS.to_owned(),
                payment_intent_id: MAX_PI.to_owned(),
                ..purchase(MAX_PI, 12_000, "eur")
            }),
        )
    }

    pub fn subscription() -> v1::WebhookEvent {
        event(
            "evt_1QhkNbHookLine0004CsSub",
            "checkout.session.completed",
            1_767_229_200,
            contact(
                Some("Grace.Hopper@example.com"),
                Some("Grace Hopper"),
                Some("+14155550199"),
                "US",
                Some(GRACE_CUS),
                &[GRACE_IN, GRACE_CS],
            ),
            Payload::PurchaseCompleted(v1::PurchaseCompleted {
                checkout_session_id: GRACE_CS.to_owned(),
                invoice_id: GRACE_IN.to_owned(),
                subscription_id: GRACE_SUB.to_owned(),
                ..purchase(GRACE_IN, 2900, "usd")
            }),
        )
    }

    pub fn payment_intent() -> v1::WebhookEvent {
        event(
            "evt_3QhkLnHookLine0005PiOk",
            "payment_intent.succeeded",
            1_767_225_600,
            contact(
                Some("jenny.rosen@example.com"),
                Some("Jenny Rosen"),
                Some("(541) 555-0142"),
                "US",
                None,
                &[JENNY_PI, JENNY_CH],
            ),
            Payload::PurchaseCompleted(v1::PurchaseCompleted {
                payment_intent_id: JENNY_PI.to_owned(),
                charge_id: JENNY_CH.to_owned(),
                description: "Spring webinar ticket".to_owned(),
                ..purchase(JENNY_PI, 4900, "usd")
            }),
        )
    }

    pub fn charge() -> v1::WebhookEvent {
        event(
            "evt_3QhkLnHookLine0006ChOk",
            "charge.succeeded",
            1_767_225_599,
            jenny_billing(),
            Payload::PurchaseCompleted(v1::PurchaseCompleted {
                payment_intent_id: JENNY_PI.to_owned(),
                charge_id: JENNY_CH.to_owned(),
                description: "Spring webinar ticket".to_owned(),
                ..purchase(JENNY_PI, 4900, "usd")
            }),
        )
    }

    pub fn charge_uncaptured() -> v1::WebhookEvent {
        event(
            "evt_3QhkRtHookLine0007ChAuth",
            "charge.succeeded",
            1_767_232_800,
            contact(
                Some("sam.lee@example.com"),
                Some("Sam Lee"),
                Some("416 555 0177"),
                "CA",
                Some("cus_HookLineSamL0007"),
                &[SAM_PI, SAM_CH],
            ),
            upserted(),
        )
    }

    pub fn charge_refunded() -> v1::WebhookEvent {
        event(
            "evt_3QhkLnHookLine0008ChRefund",
            "charge.refunded",
            1_767_312_000,
            jenny_billing(),
            Payload::RefundUpdated(v1::RefundUpdated {
                refund_id: String::new(),
                charge_id: JENNY_CH.to_owned(),
                payment_intent_id: JENNY_PI.to_owned(),
                amount: 0,
                currency: "usd".to_owned(),
                status: v1::RefundStatus::Succeeded.into(),
                charge_amount_refunded: 3000,
            }),
        )
    }

    pub fn refund_created() -> v1::WebhookEvent {
        event(
            "evt_3QhkLnHookLine0009ReNew",
            "refund.created",
            1_767_312_000,
            contact(None, None, None, "", None, &[JENNY_PI, JENNY_CH]),
            Payload::RefundUpdated(v1::RefundUpdated {
                refund_id: "re_3QhkLnHookLine0009Part".to_owned(),
                charge_id: JENNY_CH.to_owned(),
                payment_intent_id: JENNY_PI.to_owned(),
                amount: 2000,
                currency: "usd".to_owned(),
                status: v1::RefundStatus::Succeeded.into(),
                charge_amount_refunded: 0,
            }),
        )
    }

    pub fn refund_failed() -> v1::WebhookEvent {
        event(
            "evt_3QhkLnHookLine0010ReFail",
            "refund.updated",
            1_767_571_200,
            contact(None, None, None, "", None, &[JENNY_PI, JENNY_CH]),
            Payload::RefundUpdated(v1::RefundUpdated {
                refund_id: "re_3QhkLnHookLine0010Fail".to_owned(),
                charge_id: JENNY_CH.to_owned(),
                payment_intent_id: JENNY_PI.to_owned(),
                amount: 1000,
                currency: "usd".to_owned(),
                status: v1::RefundStatus::Failed.into(),
                charge_amount_refunded: 0,
            }),
        )
    }

    pub fn customer_created() -> v1::WebhookEvent {
        event(
            "evt_1QhkSuHookLine0011CusNew",
            "customer.created",
            1_767_236_400,
            contact(
                Some("Ada.Lovelace@example.com"),
                Some("Ada Lovelace"),
                Some("(503) 555-0101"),
                "US",
                Some(ADA_CUS),
                &[],
            ),
            upserted(),
        )
    }

    pub fn customer_updated() -> v1::WebhookEvent {
        event(
            "evt_1QiLtVHookLine0012CusUpd",
            "customer.updated",
            1_767_322_800,
            contact(
                Some("ada@example.com"),
                Some("Ada King"),
                Some("001 503 555 0102"),
                "US",
                Some(ADA_CUS),
                &[],
            ),
            upserted(),
        )
    }

    pub fn invoice_paid() -> v1::WebhookEvent {
        event(
            "evt_1QhkNbHookLine0013InvPaid",
            "invoice.paid",
            1_767_229_203,
            contact(
                Some("Grace.Hopper@example.com"),
                Some("Grace Hopper"),
                Some("+1 415-555-0199"),
                "US",
                Some(GRACE_CUS),
                &[GRACE_IN],
            ),
            Payload::PurchaseCompleted(v1::PurchaseCompleted {
                invoice_id: GRACE_IN.to_owned(),
                subscription_id: GRACE_SUB.to_owned(),
                ..purchase(GRACE_IN, 2900, "usd")
            }),
        )
    }
}

/// Bodies that map to a contact effect: the whole normalized event must match.
mod normalization {
    use super::fixtures::*;
    // Explicit names shadow the module's functions of the same name.
    use super::want::*;
    use super::want::{charge_refunded, contact, invoice_paid, payment_intent};
    use super::*;

    struct Case {
        name: &'static str,
        body: Vec<u8>,
        want: v1::WebhookEvent,
    }

    fn case(name: &'static str, body: impl Into<Vec<u8>>, want: v1::WebhookEvent) -> Case {
        Case {
            name,
            body: body.into(),
            want,
        }
    }

    fn check(cases: Vec<Case>) {
        let mut failures = Vec::new();
        for c in &cases {
            let got = normalize("stripe", &c.body, RECEIVED_MS);
            if got != c.want {
                failures.push(format!("{}:\n  got  {got:?}\n  want {:?}", c.name, c.want));
            }
        }
        assert!(
            failures.is_empty(),
            "{} of {} cases failed:\n{}",
            failures.len(),
            cases.len(),
            failures.join("\n")
        );
    }

    #[test]
    fn fixtures() {
        check(vec![
            case(
                "checkout.session.completed, guest, paid",
                GUEST_PAID,
                guest_paid(),
            ),
            case("checkout.session.completed, unpaid", UNPAID, unpaid()),
            case(
                "checkout.session.async_payment_succeeded",
                ASYNC_PAID,
                async_paid(),
            ),
            case(
                "checkout.session.completed, subscription",
                SUBSCRIPTION,
                subscription(),
            ),
            case("payment_intent.succeeded", PAYMENT_INTENT, payment_intent()),
            case("charge.succeeded", CHARGE, charge()),
            case(
                "charge.succeeded, captured:false",
                CHARGE_UNCAPTURED,
                charge_uncaptured(),
            ),
            case("charge.refunded", CHARGE_REFUNDED, charge_refunded()),
            case("refund.created", REFUND_CREATED, refund_created()),
            case("refund.updated, failed", REFUND_FAILED, refund_failed()),
            case("customer.created", CUSTOMER_CREATED, customer_created()),
            case("customer.updated", CUSTOMER_UPDATED, customer_updated()),
            case("invoice.paid, basil", INVOICE_PAID, invoice_paid()),
        ]);
    }

    /// Variants of the fixtures, one changed field each, for the rules §9-§11 state.
    #[test]
    fn field_rules() {
        check(vec![
            // Checkout Session
            case(
                "event id: surrounding whitespace is not part of it",
                patch(
                    GUEST_PAID,
                    r#""id": "evt_1QhkLnHookLine0001CsPaid""#,
                    r#""id": " evt_1QhkLnHookLine0001CsPaid ""#,
                ),
                guest_paid(),
            ),
            case(
                "session: customer_details.email wins over customer_email",
                patch(
                    GUEST_PAID,
                    r#""customer_email": "jenny.prefilled@example.com""#,
                    r#""customer_email": "someone.else@example.com""#,
                ),
                guest_paid(),
            ),
            case(
                "session: customer_email when customer_details.email is null",
                patch(
                    GUEST_PAID,
                    r#""email": "Jenny.Rosen@example.com""#,
                    r#""email": null"#,
                ),
                tweak(guest_paid(), |e| {
                    contact_of(e).email = Some("jenny.prefilled@example.com".to_owned());
                }),
            ),
            case(
                "session: customer_email when customer_details.email is blank",
                patch(
                    GUEST_PAID,
                    r#""email": "Jenny.Rosen@example.com""#,
                    r#""email": "  ""#,
                ),
                tweak(guest_paid(), |e| {
                    contact_of(e).email = Some("jenny.prefilled@example.com".to_owned());
                }),
            ),
            case(
                "session: name trimmed",
                patch(
                    GUEST_PAID,
                    r#""name": "Jenny Rosen""#,
                    r#""name": "  Jenny Rosen ""#,
                ),
                guest_paid(),
            ),
            case(
                "session: no address, no phone region",
                patch(GUEST_PAID, r#""country": "US""#, r#""country": null"#),
                tweak(guest_paid(), |e| contact_of(e).phone_region = String::new()),
            ),
            case(
                "session: expanded customer object",
                patch(
                    UNPAID,
                    r#""customer": "cus_HookLineMaxM0002""#,
                    r#""customer": {"id": "cus_HookLineMaxM0002", "object": "customer", "email": "other@example.com"}"#,
                ),
                unpaid(),
            ),
            case(
                "session: expanded payment_intent object",
                patch(
                    GUEST_PAID,
                    r#""payment_intent": "pi_3QhkLnHookLine0001Paid""#,
                    r#""payment_intent": {"id": "pi_3QhkLnHookLine0001Paid", "object": "payment_intent", "amount": 4900}"#,
                ),
                guest_paid(),
            ),
            case(
                "session: upper-case currency is lower-cased",
                patch(ASYNC_PAID, r#""currency": "eur""#, r#""currency": "EUR""#),
                async_paid(),
            ),
            case(
                "session: no payment_intent or invoice, purchase keyed by the session",
                patch(
                    GUEST_PAID,
                    r#""payment_intent": "pi_3QhkLnHookLine0001Paid""#,
                    r#""payment_intent": null"#,
                ),
                tweak(guest_paid(), |e| {
                    contact_of(e).payment_refs = vec![want::JENNY_CS.to_owned()];
                    let p = purchase_of(e);
                    p.purchase_id = want::JENNY_CS.to_owned();
                    p.payment_intent_id = String::new();
                }),
            ),
            case(
                "session: payment_intent wins over invoice",
                patch(
                    GUEST_PAID,
                    r#""invoice": null"#,
                    r#""invoice": "in_1QhkLnHookLine0001Receipt""#,
                ),
                tweak(guest_paid(), |e| {
                    contact_of(e).payment_refs = vec![
                        want::JENNY_PI.to_owned(),
                        "in_1QhkLnHookLine0001Receipt".to_owned(),
                        want::JENNY_CS.to_owned(),
                    ];
                    purchase_of(e).invoice_id = "in_1QhkLnHookLine0001Receipt".to_owned();
                }),
            ),
            case(
                "session: payment_status missing is not a purchase",
                patch(GUEST_PAID, r#""payment_status": "paid","#, ""),
                tweak(guest_paid(), |e| e.payload = Some(upserted())),
            ),
            case(
                "session: customer_details missing",
                patch(
                    &patch(
                        UNPAID,
                        r#""customer_email": null"#,
                        r#""customer_email": "max.prefilled@example.com""#,
                    ),
                    r#""customer_details": {"#,
                    r#""customer_details_renamed": {"#,
                ),
                tweak(unpaid(), |e| {
                    let c = contact_of(e);
                    c.email = Some("max.prefilled@example.com".to_owned());
                    c.name = None;
                    c.phone_region = String::new();
                }),
            ),
            // PaymentIntent
            case(
                "payment intent: amount_received wins over amount",
                patch(
                    PAYMENT_INTENT,
                    r#""amount_received": 4900"#,
                    r#""amount_received": 4500"#,
                ),
                tweak(payment_intent(), |e| purchase_of(e).amount = 4500),
            ),
            case(
                "payment intent: amount when amount_received is missing",
                patch(PAYMENT_INTENT, r#""amount_received": 4900,"#, ""),
                payment_intent(),
            ),
            case(
                "payment intent: no shipping, no receipt email, with a customer",
                patch(
                    &patch(
                        &patch(
                            PAYMENT_INTENT,
                            r#""receipt_email": "jenny.rosen@example.com""#,
                            r#""receipt_email": null"#,
                        ),
                        r#""shipping": {"#,
                        r#""shipping_renamed": {"#,
                    ),
                    r#""customer": null"#,
                    r#""customer": "cus_HookLineJenR0001""#,
                ),
                tweak(payment_intent(), |e| {
                    *contact_of(e) = contact(
                        None,
                        None,
                        None,
                        "",
                        Some("cus_HookLineJenR0001"),
                        &[want::JENNY_PI, want::JENNY_CH],
                    );
                }),
            ),
            // Charge
            case(
                "charge: receipt_email when billing_details.email is null",
                patch(
                    CHARGE,
                    r#""email": "jenny.rosen@example.com""#,
                    r#""email": null"#,
                ),
                tweak(charge(), |e| {
                    contact_of(e).email = Some("receipts@example.com".to_owned());
                }),
            ),
            case(
                "charge: amount_captured wins over amount",
                patch(
                    CHARGE,
                    r#""amount_captured": 4900"#,
                    r#""amount_captured": 4000"#,
                ),
                tweak(charge(), |e| purchase_of(e).amount = 4000),
            ),
            case(
                "charge: captured missing counts as captured",
                patch(CHARGE, r#""captured": true,"#, ""),
                charge(),
            ),
            case(
                "charge: no payment_intent, purchase keyed by the charge",
                patch(
                    CHARGE,
                    r#""payment_intent": "pi_3QhkLnHookLine0001Paid""#,
                    r#""payment_intent": null"#,
                ),
                tweak(charge(), |e| {
                    contact_of(e).payment_refs = vec![want::JENNY_CH.to_owned()];
                    let p = purchase_of(e);
                    p.purchase_id = want::JENNY_CH.to_owned();
                    p.payment_intent_id = String::new();
                }),
            ),
            case(
                "charge: no payment_intent but an invoice, purchase keyed by the invoice",
                patch(
                    &patch(
                        CHARGE,
                        r#""payment_intent": "pi_3QhkLnHookLine0001Paid""#,
                        r#""payment_intent": null"#,
                    ),
                    r#""invoice": null"#,
                    r#""invoice": "in_1QhkLnHookLine0001Legacy""#,
                ),
                tweak(charge(), |e| {
                    contact_of(e).payment_refs = vec![
                        want::JENNY_CH.to_owned(),
                        "in_1QhkLnHookLine0001Legacy".to_owned(),
                    ];
                    let p = purchase_of(e);
                    p.purchase_id = "in_1QhkLnHookLine0001Legacy".to_owned();
                    p.payment_intent_id = String::new();
                    p.invoice_id = "in_1QhkLnHookLine0001Legacy".to_owned();
                }),
            ),
            case(
                "charge: expanded customer object",
                patch(
                    CHARGE_UNCAPTURED,
                    r#""customer":"cus_HookLineSamL0007""#,
                    r#""customer":{"id":"cus_HookLineSamL0007","object":"customer"}"#,
                ),
                charge_uncaptured(),
            ),
            // charge.refunded
            case(
                "charge.refunded: full refund",
                patch(
                    &patch(
                        CHARGE_REFUNDED,
                        r#""amount_refunded": 3000"#,
                        r#""amount_refunded": 4900"#,
                    ),
                    r#""refunded": false"#,
                    r#""refunded": true"#,
                ),
                tweak(charge_refunded(), |e| {
                    refund_of(e).charge_amount_refunded = 4900;
                }),
            ),
            case(
                "charge.refunded: older API version embedding refunds",
                patch(
                    &patch(
                        CHARGE_REFUNDED,
                        r#""api_version": "2024-06-20""#,
                        r#""api_version": "2020-08-27""#,
                    ),
                    r#""refunded": false,"#,
                    &format!(r#""refunded": false, "refunds": {EMBEDDED_REFUNDS},"#),
                ),
                charge_refunded(),
            ),
            // Customer
            case(
                "customer: no address, no phone region",
                patch(CUSTOMER_CREATED, r#""country": "US""#, r#""country": "  ""#),
                tweak(customer_created(), |e| {
                    contact_of(e).phone_region = String::new()
                }),
            ),
            case(
                "customer: blank fields say nothing",
                patch(
                    &patch(
                        CUSTOMER_CREATED,
                        r#""name": "Ada Lovelace""#,
                        r#""name": """#,
                    ),
                    r#""phone": "(503) 555-0101""#,
                    r#""phone": null"#,
                ),
                tweak(customer_created(), |e| {
                    let c = contact_of(e);
                    c.name = None;
                    c.phone = None;
                }),
            ),
            // Invoice
            case(
                "invoice: older API version, top-level subscription and payment_intent",
                LEGACY_INVOICE,
                event(
                    "evt_1PaaaaHookLine0016InvOld",
                    "invoice.paid",
                    1_767_229_203,
                    contact(
                        Some("grace.hopper@example.com"),
                        Some("Grace Hopper"),
                        None,
                        "",
                        Some(want::GRACE_CUS),
                        &[
                            "in_1PaaaaHookLine0016Inv",
                            "pi_1PaaaaHookLine0016Pay",
                            "ch_1PaaaaHookLine0016Pay",
                        ],
                    ),
                    Payload::PurchaseCompleted(v1::PurchaseCompleted {
                        payment_intent_id: "pi_1PaaaaHookLine0016Pay".to_owned(),
                        charge_id: "ch_1PaaaaHookLine0016Pay".to_owned(),
                        invoice_id: "in_1PaaaaHookLine0016Inv".to_owned(),
                        subscription_id: "sub_1PaaaaHookLine0016Old".to_owned(),
                        description: "Renewal".to_owned(),
                        ..purchase("pi_1PaaaaHookLine0016Pay", 1500, "gbp")
                    }),
                ),
            ),
            case(
                "invoice: amount_paid 0 (trial) is still recorded",
                patch(
                    INVOICE_PAID,
                    r#""amount_paid": 2900"#,
                    r#""amount_paid": 0"#,
                ),
                tweak(invoice_paid(), |e| purchase_of(e).amount = 0),
            ),
            case(
                "customer: an unknown field nested 100000 deep is skipped",
                format!(
                    r#"{{"id":"evt_1HookLineDeep","object":"event","type":"customer.created","created":1767225600,"data":{{"object":{{"id":"cus_1","metadata":{}{}}}}}}}"#,
                    "[".repeat(100_000),
                    "]".repeat(100_000),
                ),
                event(
                    "evt_1HookLineDeep",
                    "customer.created",
                    1_767_225_600,
                    contact(None, None, None, "", Some("cus_1"), &[]),
                    upserted(),
                ),
            ),
            // Envelope
            case(
                "envelope: created missing, occurred_at is the receive time",
                patch(
                    CUSTOMER_CREATED,
                    "\"created\": 1767236400,\n  \"data\"",
                    "\"data\"",
                ),
                tweak(customer_created(), |e| e.occurred_at = Some(RECEIVED)),
            ),
            case(
                "envelope: created as a string, occurred_at is the receive time",
                patch(
                    CUSTOMER_CREATED,
                    "\"created\": 1767236400,\n  \"data\"",
                    "\"created\": \"2026-01-01T03:00:00Z\",\n  \"data\"",
                ),
                tweak(customer_created(), |e| e.occurred_at = Some(RECEIVED)),
            ),
            case(
                "envelope: Connect event with account, live mode",
                patch(
                    CUSTOMER_CREATED,
                    "\"livemode\": false,\n  \"pending_webhooks\"",
                    "\"livemode\": true,\n  \"account\": \"acct_1HookLineConnect01\",\n  \"pending_webhooks\"",
                ),
                customer_created(),
            ),
        ]);
    }

    /// Every refund `status`, one case each (§10).
    #[test]
    fn refund_states() {
        let states: [(&'static str, &str, v1::RefundStatus); 5] = [
            ("refund: pending", r#""pending""#, v1::RefundStatus::Pending),
            (
                "refund: requires_action",
                r#""requires_action""#,
                v1::RefundStatus::RequiresAction,
            ),
            (
                "refund: canceled",
                r#""canceled""#,
                v1::RefundStatus::Canceled,
            ),
            (
                "refund: unknown status",
                r#""reversed""#,
                v1::RefundStatus::Unspecified,
            ),
            ("refund: null status", "null", v1::RefundStatus::Unspecified),
        ];
        check(
            states
                .into_iter()
                .map(|(name, json, status)| {
                    case(
                        name,
                        patch(
                            REFUND_CREATED,
                            r#""status": "succeeded""#,
                            &format!(r#""status": {json}"#),
                        ),
                        tweak(refund_created(), |e| {
                            refund_of(e).status = status.into();
                        }),
                    )
                })
                .collect(),
        );
    }

    /// An invoice as API versions before 2025-03-31.basil render it.
    const LEGACY_INVOICE: &str = r#"{
  "id": "evt_1PaaaaHookLine0016InvOld",
  "object": "event",
  "api_version": "2023-10-16",
  "created": 1767229203,
  "data": {
    "object": {
      "id": "in_1PaaaaHookLine0016Inv",
      "object": "invoice",
      "amount_due": 1500,
      "amount_paid": 1500,
      "amount_remaining": 0,
      "billing_reason": "subscription_cycle",
      "charge": "ch_1PaaaaHookLine0016Pay",
      "currency": "GBP",
      "customer": "cus_HookLineGrace0004",
      "customer_address": null,
      "customer_email": "grace.hopper@example.com",
      "customer_name": "Grace Hopper",
      "customer_phone": null,
      "description": "Renewal",
      "lines": {
        "object": "list",
        "data": [
          {
            "id": "il_1PaaaaHookLine0016",
            "amount": 1500,
            "description": "Hookline Pro",
            "price": {
              "id": "price_1HookLineProMonthlyGbp"
            }
          }
        ],
        "has_more": false
      },
      "paid": true,
      "payment_intent": "pi_1PaaaaHookLine0016Pay",
      "status": "paid",
      "subscription": "sub_1PaaaaHookLine0016Old",
      "total": 1500
    }
  },
  "livemode": false,
  "pending_webhooks": 1,
  "request": {
    "id": null,
    "idempotency_key": null
  },
  "type": "invoice.paid"
}"#;

    /// `refunds` as a Charge embeds them under API versions before 2022-11-15.
    const EMBEDDED_REFUNDS: &str = r#"{
  "object": "list",
  "data": [
    {
      "id": "re_3QhkLnHookLine0009Part",
      "object": "refund",
      "amount": 2000,
      "currency": "usd",
      "status": "succeeded",
      "created": 1767311999
    },
    {
      "id": "re_3QhkLnHookLine0008Part",
      "object": "refund",
      "amount": 1000,
      "currency": "usd",
      "status": "succeeded",
      "created": 1767300000
    }
  ],
  "has_more": false,
  "total_count": 2,
  "url": "/v1/charges/ch_3QhkLnHookLine0001Paid/refunds"
}"#;
}

/// Authentic bodies that change no contact: ignored, with the body kept.
mod ignored {
    use super::fixtures::*;
    use super::*;

    struct Case {
        name: &'static str,
        body: Vec<u8>,
        /// Expected event id, scoped to the source.
        id: String,
        event_type: &'static str,
        occurred_ms: i64,
        /// A part of the reason that says why.
        reason: &'static str,
    }

    fn case(
        name: &'static str,
        body: impl Into<Vec<u8>>,
        id: &str,
        event_type: &'static str,
        occurred_ms: i64,
        reason: &'static str,
    ) -> Case {
        Case {
            name,
            body: body.into(),
            id: id.to_owned(),
            event_type,
            occurred_ms,
            reason,
        }
    }

    /// A body without a usable id: keyed by its SHA-256.
    fn anonymous(name: &'static str, body: impl Into<Vec<u8>>, reason: &'static str) -> Case {
        use sha2::Digest as _;
        let body = body.into();
        let id = format!("stripe:sha256:{}", hex::encode(Sha256::digest(&body)));
        case(name, body, &id, "", RECEIVED_MS, reason)
    }

    fn check(cases: Vec<Case>) {
        let mut failures = Vec::new();
        for c in &cases {
            let got = normalize("stripe", &c.body, RECEIVED_MS);
            let reason = match &got.payload {
                Some(Payload::Ignored(i)) => i.reason.clone(),
                other => {
                    failures.push(format!("{}: not ignored: {other:?}", c.name));
                    continue;
                }
            };
            if !reason.contains(c.reason) {
                failures.push(format!(
                    "{}: reason {reason:?} does not say {:?}",
                    c.name, c.reason
                ));
            }
            let want = v1::WebhookEvent {
                id: c.id.clone(),
                source: "stripe".to_owned(),
                kind: "stripe".to_owned(),
                r#type: c.event_type.to_owned(),
                occurred_at: Some(Timestamp {
                    seconds: c.occurred_ms.div_euclid(1000),
                    nanos: i32::try_from(c.occurred_ms.rem_euclid(1000) * 1_000_000)
                        .expect("small"),
                }),
                received_at: Some(RECEIVED),
                contact: Some(v1::ContactData::default()),
                payload: Some(Payload::Ignored(v1::EventIgnored {
                    reason,
                    ..v1::EventIgnored::default()
                })),
                raw_body: Some(c.body.clone()),
                ..v1::WebhookEvent::default()
            };
            if got != want {
                failures.push(format!("{}:\n  got  {got:?}\n  want {want:?}", c.name));
            }
        }
        assert!(
            failures.is_empty(),
            "{} of {} cases failed:\n{}",
            failures.len(),
            cases.len(),
            failures.join("\n")
        );
    }

    #[test]
    fn ignored_events() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        check(vec![
            // Authentic events hookline does not map
            case(
                "thin (v2) event",
                THIN,
                "stripe:evt_test_65HookLineThin0014MeterErr",
                "v1.billing.meter.error_report_triggered",
                RECEIVED_MS,
                "thin (v2) event",
            ),
            case(
                "unmapped type",
                UNMAPPED,
                "stripe:evt_1QhkAaHookLine0015Prod",
                "product.created",
                1_767_220_000_000,
                "\"product.created\" is not mapped",
            ),
            case(
                "async payment failed is not mapped",
                patch(
                    UNPAID,
                    r#""type": "checkout.session.completed""#,
                    r#""type": "checkout.session.async_payment_failed""#,
                ),
                "stripe:evt_1QhkMaHookLine0002CsUnpaid",
                "checkout.session.async_payment_failed",
                1_767_225_900_000,
                "is not mapped",
            ),
            case(
                "type missing",
                patch(
                    CUSTOMER_CREATED,
                    r#""type": "customer.created""#,
                    r#""kind": "x""#,
                ),
                "stripe:evt_1QhkSuHookLine0011CusNew",
                "",
                1_767_236_400_000,
                "is not mapped",
            ),
            // Bodies that are not events: keyed by their digest
            case(
                "empty body (known SHA-256)",
                "",
                "stripe:sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                "",
                RECEIVED_MS,
                "not a Stripe event",
            ),
            anonymous(
                "HTML",
                "<html><body>502 Bad Gateway</body></html>",
                "not a Stripe event",
            ),
            anonymous(
                "invalid UTF-8",
                b"{\"id\":\"evt_\xFF\xFE\"}".as_slice(),
                "not a Stripe event",
            ),
            anonymous("JSON array", "[1,2,3]", "not a Stripe event"),
            anonymous("JSON string", "\"evt_1\"", "not a Stripe event"),
            anonymous("JSON null", "null", "not a Stripe event"),
            anonymous(
                "truncated fixture",
                &GUEST_PAID[..GUEST_PAID.len() / 2],
                "not a Stripe event",
            ),
            anonymous(
                "trailing garbage",
                [BODY, b"x"].concat(),
                "not a Stripe event",
            ),
            anonymous(
                "id is a number",
                r#"{"id":42,"object":"event"}"#,
                "not a Stripe event",
            ),
            anonymous("nested 100000 deep", deep, "not a Stripe event"),
            anonymous(
                "no id",
                r#"{"object":"event","type":"customer.created","created":1767225600,"data":{"object":{"id":"cus_1","object":"customer"}}}"#,
                "no event id",
            ),
            anonymous(
                "id empty",
                r#"{"id":"","object":"event","type":"customer.created"}"#,
                "no event id",
            ),
            anonymous(
                "id blank",
                r#"{"id":" \t ","object":"event","type":"customer.created"}"#,
                "no event id",
            ),
            anonymous("id null", r#"{"id":null,"object":"event"}"#, "no event id"),
            anonymous("empty object", "{}", "no event id"),
            // Events whose data.object is missing or of an unexpected shape
            case(
                "data missing",
                r#"{"id":"evt_1HookLineNoData","object":"event","type":"customer.created","created":1767225600}"#,
                "stripe:evt_1HookLineNoData",
                "customer.created",
                1_767_225_600_000,
                "no data.object",
            ),
            case(
                "data.object missing",
                r#"{"id":"evt_1HookLineNoObj","object":"event","type":"customer.created","created":1767225600,"data":{"previous_attributes":{}}}"#,
                "stripe:evt_1HookLineNoObj",
                "customer.created",
                1_767_225_600_000,
                "no data.object",
            ),
            case(
                "data.object null",
                r#"{"id":"evt_1HookLineNullObj","object":"event","type":"customer.created","created":1767225600,"data":{"object":null}}"#,
                "stripe:evt_1HookLineNullObj",
                "customer.created",
                1_767_225_600_000,
                "no data.object",
            ),
            case(
                "amount_total as a string",
                patch(
                    GUEST_PAID,
                    r#""amount_total": 4900"#,
                    r#""amount_total": "4900""#,
                ),
                "stripe:evt_1QhkLnHookLine0001CsPaid",
                "checkout.session.completed",
                1_767_225_601_000,
                "unexpected checkout.session.completed object",
            ),
            case(
                "amount as a float",
                patch(CHARGE, r#""amount": 4900"#, r#""amount": 49.0"#),
                "stripe:evt_3QhkLnHookLine0006ChOk",
                "charge.succeeded",
                1_767_225_599_000,
                "unexpected charge.succeeded object",
            ),
            case(
                "amount beyond i64",
                patch(
                    REFUND_CREATED,
                    r#""amount": 2000"#,
                    r#""amount": 99999999999999999999"#,
                ),
                "stripe:evt_3QhkLnHookLine0009ReNew",
                "refund.created",
                1_767_312_000_000,
                "unexpected refund.created object",
            ),
            case(
                "customer_details as a string",
                patch(
                    SUBSCRIPTION,
                    r#""customer_details": {"#,
                    r#""customer_details": "Grace", "was_customer_details": {"#,
                ),
                "stripe:evt_1QhkNbHookLine0004CsSub",
                "checkout.session.completed",
                1_767_229_200_000,
                "unexpected checkout.session.completed object",
            ),
            case(
                "customer as a number",
                patch(
                    INVOICE_PAID,
                    r#""customer": "cus_HookLineGrace0004""#,
                    r#""customer": 4"#,
                ),
                "stripe:evt_1QhkNbHookLine0013InvPaid",
                "invoice.paid",
                1_767_229_203_000,
                "unexpected invoice.paid object",
            ),
            case(
                "expanded customer without an id",
                patch(
                    CHARGE_UNCAPTURED,
                    r#""customer":"cus_HookLineSamL0007""#,
                    r#""customer":{"object":"customer"}"#,
                ),
                "stripe:evt_3QhkRtHookLine0007ChAuth",
                "charge.succeeded",
                1_767_232_800_000,
                "unexpected charge.succeeded object",
            ),
            case(
                "object without its id",
                patch(CUSTOMER_UPDATED, r#""id": "cus_HookLineAdaL0011","#, ""),
                "stripe:evt_1QiLtVHookLine0012CusUpd",
                "customer.updated",
                1_767_322_800_000,
                "unexpected customer.updated object",
            ),
            case(
                "data.object a string",
                r#"{"id":"evt_1HookLineStrObj","object":"event","type":"customer.created","created":1767225600,"data":{"object":"cus_1"}}"#,
                "stripe:evt_1HookLineStrObj",
                "customer.created",
                1_767_225_600_000,
                "unexpected customer.created object",
            ),
            case(
                "data.object an array",
                r#"{"id":"evt_1HookLineArrObj","object":"event","type":"refund.created","created":1767225600,"data":{"object":[]}}"#,
                "stripe:evt_1HookLineArrObj",
                "refund.created",
                1_767_225_600_000,
                "unexpected refund.created object",
            ),
        ]);
    }
}

/// §11: the events of one payment record one purchase; refunds find it by reference.
mod one_payment {
    use super::fixtures::*;
    use super::*;

    struct Case {
        name: &'static str,
        /// Events that must record the same purchase.
        purchases: Vec<&'static [u8]>,
        purchase_id: &'static str,
        /// Other events of the payment (refunds, the unpaid session) that must reach the
        /// purchase through a shared payment reference.
        followers: Vec<&'static [u8]>,
    }

    fn check(cases: Vec<Case>) {
        let mut failures = Vec::new();
        for c in &cases {
            let mut refs = Vec::new();
            for body in &c.purchases {
                let e = normalize("stripe", body, RECEIVED_MS);
                match &e.payload {
                    Some(Payload::PurchaseCompleted(p)) if p.purchase_id == c.purchase_id => {}
                    other => failures.push(format!("{}: {}: {other:?}", c.name, e.id)),
                }
                refs.extend(e.contact.unwrap_or_default().payment_refs);
            }
            for body in &c.followers {
                let e = normalize("stripe", body, RECEIVED_MS);
                let theirs = e.contact.unwrap_or_default().payment_refs;
                if theirs.is_empty() || !theirs.iter().any(|r| refs.contains(r)) {
                    failures.push(format!(
                        "{}: {} refs {theirs:?} reach none of {refs:?}",
                        c.name, e.id
                    ));
                }
            }
        }
        assert!(
            failures.is_empty(),
            "{} of {} cases failed:\n{}",
            failures.len(),
            cases.len(),
            failures.join("\n")
        );
    }

    #[test]
    fn events_of_one_payment() {
        check(vec![
            Case {
                name: "guest checkout: session, payment intent, charge",
                purchases: vec![GUEST_PAID, PAYMENT_INTENT, CHARGE],
                purchase_id: want::JENNY_PI,
                followers: vec![CHARGE_REFUNDED, REFUND_CREATED, REFUND_FAILED],
            },
            Case {
                name: "subscription: session and invoice",
                purchases: vec![SUBSCRIPTION, INVOICE_PAID],
                purchase_id: want::GRACE_IN,
                followers: vec![],
            },
            Case {
                name: "delayed payment: lead first, purchase later",
                purchases: vec![ASYNC_PAID],
                purchase_id: want::MAX_PI,
                followers: vec![UNPAID],
            },
        ]);
    }
}
