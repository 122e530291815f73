use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hookline_proto::prost_types::Timestamp;
use hookline_proto::v1::{self, webhook_event::Payload};
use http::{HeaderMap, HeaderName, HeaderValue};
use rsa::traits::PublicKeyParts as _;
use serde_json::{Map, Value};
use sha2::Digest as _;

use super::normalize::*;
use super::*;
use crate::config::{Args, Config};
use crate::sources::fields::{proto_timestamp, to_minor_units};
use crate::sources::{Delivery, Source, body_digest_id, timestamp};

macro_rules! fixture {
    ($name:literal) => {
        include_bytes!(concat!(
            "../../../../tests/fixtures/gohighlevel/fixtures/",
            $name
        ))
    };
}

macro_rules! vector {
    ($name:literal) => {
        include_str!(concat!(
            "../../../../tests/fixtures/gohighlevel/test-vectors/",
            $name
        ))
    };
}

/// The compact bytes GHL would send for `AppointmentUpdate-showed.json`, as signed.
const BODY: &[u8] = include_bytes!(
    "../../../../tests/fixtures/gohighlevel/test-vectors/AppointmentUpdate-showed.body.json"
);
/// The same JSON value, pretty-printed: different bytes.
const PRETTY: &[u8] = fixture!("AppointmentUpdate-showed.json");
const ED25519_SIG: &str = vector!("AppointmentUpdate-showed.x-ghl-signature.txt");
const RSA_SIG: &str = vector!("AppointmentUpdate-showed.x-wh-signature.txt");
const TEST_ED25519_PUBLIC: &str = vector!("TEST-ONLY-ed25519-public.pem");
const TEST_ED25519_PRIVATE: &str = vector!("TEST-ONLY-ed25519-private.pem");
const TEST_RSA_PUBLIC: &str = vector!("TEST-ONLY-rsa4096-public.pem");

const SOURCE: &str = "ghl";
const RECEIVED_MS: i64 = 1_800_000_000_000;

#[derive(Clone, Copy, Debug)]
enum Keys {
    /// The TEST-ONLY keys that made the test vectors.
    Test,
    /// GHL's published keys.
    Production,
}

fn source(keys: Keys, options: Options) -> GoHighLevel {
    let (ed25519, rsa) = match keys {
        Keys::Test => (TEST_ED25519_PUBLIC, TEST_RSA_PUBLIC),
        Keys::Production => (GHL_ED25519_PUBLIC_KEY_PEM, GHL_RSA_PUBLIC_KEY_PEM),
    };
    GoHighLevel::new(
        parse_ed25519_pem(ed25519).expect("Ed25519 key"),
        parse_rsa_pem(rsa).expect("RSA key"),
        options,
    )
}

fn legacy(on: bool) -> Options {
    Options {
        allow_legacy_rsa: on,
        ..ours()
    }
}

/// The options of a source configured for the fixtures' app, every location accepted.
fn ours() -> Options {
    Options {
        app_ids: [APP.to_owned()].into(),
        ..Options::default()
    }
}

/// A copy of `s` with one base64 character changed: still base64, another signature.
fn flipped(s: &str) -> String {
    let mut chars: Vec<char> = s.trim().chars().collect();
    chars[10] = if chars[10] == 'A' { 'B' } else { 'A' };
    chars.into_iter().collect()
}

fn one_byte_changed(body: &[u8]) -> Vec<u8> {
    // "showed" → "showee": still JSON, different bytes.
    let text = String::from_utf8(body.to_vec()).expect("utf-8");
    text.replacen("\"showed\"", "\"showee\"", 1).into_bytes()
}

#[test]
fn signatures() {
    struct Case {
        name: &'static str,
        keys: Keys,
        legacy_rsa: bool,
        headers: Vec<(&'static str, String)>,
        body: Vec<u8>,
        want: Result<(), VerifyError>,
    }
    fn check(c: Case) {
        let mut headers = HeaderMap::new();
        for (name, value) in &c.headers {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).expect("name"),
                HeaderValue::from_str(value).expect("value"),
            );
        }
        let d = Delivery {
            headers: &headers,
            query: "",
            body: &c.body,
        };
        let got = source(c.keys, legacy(c.legacy_rsa)).verify(d, 0);
        assert_eq!(got, c.want, "{}", c.name);
    }
    let ed = || ED25519_SIG.trim().to_owned();
    let rsa = || RSA_SIG.trim().to_owned();
    let ghl = "X-GHL-Signature";
    let wh = "X-WH-Signature";
    let missing = || Err(VerifyError::MissingHeader("X-GHL-Signature"));
    let cases = [
        Case {
            name: "ed25519 good",
            keys: Keys::Test,
            legacy_rsa: false,
            headers: vec![(ghl, ed())],
            body: BODY.to_vec(),
            want: Ok(()),
        },
        Case {
            name: "ed25519 good, header name in lower case, value padded with spaces",
            keys: Keys::Test,
            legacy_rsa: false,
            headers: vec![("x-ghl-signature", format!("  {}  ", ed()))],
            body: BODY.to_vec(),
            want: Ok(()),
        },
        Case {
            name: "ed25519 bad",
            keys: Keys::Test,
            legacy_rsa: true,
            headers: vec![(ghl, flipped(&ed()))],
            body: BODY.to_vec(),
            want: Err(VerifyError::Mismatch),
        },
        Case {
            name: "rsa good, legacy on",
            keys: Keys::Test,
            legacy_rsa: true,
            headers: vec![(wh, rsa())],
            body: BODY.to_vec(),
            want: Ok(()),
        },
        Case {
            name: "rsa bad, legacy on",
            keys: Keys::Test,
            legacy_rsa: true,
            headers: vec![(wh, flipped(&rsa()))],
            body: BODY.to_vec(),
            want: Err(VerifyError::Mismatch),
        },
        Case {
            name: "rsa good, legacy off: rejected",
            keys: Keys::Test,
            legacy_rsa: false,
            headers: vec![(wh, rsa())],
            body: BODY.to_vec(),
            want: missing(),
        },
        Case {
            name: "both good",
            keys: Keys::Test,
            legacy_rsa: true,
            headers: vec![(ghl, ed()), (wh, rsa())],
            body: BODY.to_vec(),
            want: Ok(()),
        },
        Case {
            name: "ed25519 bad, rsa good: the GHL header decides",
            keys: Keys::Test,
            legacy_rsa: true,
            headers: vec![(ghl, flipped(&ed())), (wh, rsa())],
            body: BODY.to_vec(),
            want: Err(VerifyError::Mismatch),
        },
        Case {
            name: "ed25519 good, rsa bad: the GHL header decides",
            keys: Keys::Test,
            legacy_rsa: true,
            headers: vec![(ghl, ed()), (wh, flipped(&rsa()))],
            body: BODY.to_vec(),
            want: Ok(()),
        },
        Case {
            name: "ed25519 not base64, rsa good: the GHL header decides",
            keys: Keys::Test,
            legacy_rsa: true,
            headers: vec![(ghl, "not base64!".to_owned()), (wh, rsa())],
            body: BODY.to_vec(),
            want: Err(VerifyError::Malformed("X-GHL-Signature is not base64")),
        },
        Case {
            name: "ed25519 N/A, rsa good, legacy on",
            keys: Keys::Test,
            legacy_rsa: true,
            headers: vec![(ghl, "N/A".to_owned()), (wh, rsa())],
            body: BODY.to_vec(),
            want: Ok(()),
        },
        Case {
            name: "ed25519 empty, rsa good, legacy on",
            keys: Keys::Test,
            legacy_rsa: true,
            headers: vec![(ghl, String::new()), (wh, rsa())],
            body: BODY.to_vec(),
            want: Ok(()),
        },
        Case {
            name: "ed25519 N/A alone",
            keys: Keys::Test,
            legacy_rsa: true,
            headers: vec![(ghl, "N/A".to_owned())],
            body: BODY.to_vec(),
            want: missing(),
        },
        Case {
            name: "ed25519 n/a alone",
            keys: Keys::Test,
            legacy_rsa: true,
            headers: vec![(ghl, "n/a".to_owned())],
            body: BODY.to_vec(),
            want: missing(),
        },
        Case {
            name: "ed25519 empty alone",
            keys: Keys::Test,
            legacy_rsa: true,
            headers: vec![(ghl, "  ".to_owned())],
            body: BODY.to_vec(),
            want: missing(),
        },
        Case {
            name: "both N/A",
            keys: Keys::Test,
            legacy_rsa: true,
            headers: vec![(ghl, "N/A".to_owned()), (wh, "N/A".to_owned())],
            body: BODY.to_vec(),
            want: missing(),
        },
        Case {
            name: "both empty",
            keys: Keys::Test,
            legacy_rsa: true,
            headers: vec![(ghl, String::new()), (wh, String::new())],
            body: BODY.to_vec(),
            want: missing(),
        },
        Case {
            name: "no signature header",
            keys: Keys::Test,
            legacy_rsa: true,
            headers: vec![],
            body: BODY.to_vec(),
            want: missing(),
        },
        Case {
            name: "re-serialized (pretty) body, ed25519",
            keys: Keys::Test,
            legacy_rsa: false,
            headers: vec![(ghl, ed())],
            body: PRETTY.to_vec(),
            want: Err(VerifyError::Mismatch),
        },
        Case {
            name: "re-serialized (pretty) body, rsa",
            keys: Keys::Test,
            legacy_rsa: true,
            headers: vec![(wh, rsa())],
            body: PRETTY.to_vec(),
            want: Err(VerifyError::Mismatch),
        },
        Case {
            name: "one byte changed, ed25519",
            keys: Keys::Test,
            legacy_rsa: false,
            headers: vec![(ghl, ed())],
            body: one_byte_changed(BODY),
            want: Err(VerifyError::Mismatch),
        },
        Case {
            name: "one byte changed, rsa",
            keys: Keys::Test,
            legacy_rsa: true,
            headers: vec![(wh, rsa())],
            body: one_byte_changed(BODY),
            want: Err(VerifyError::Mismatch),
        },
        Case {
            name: "trailing newline added to the body",
            keys: Keys::Test,
            legacy_rsa: false,
            headers: vec![(ghl, ed())],
            body: [BODY, b"\n"].concat(),
            want: Err(VerifyError::Mismatch),
        },
        Case {
            name: "production keys reject the test ed25519 signature",
            keys: Keys::Production,
            legacy_rsa: true,
            headers: vec![(ghl, ed())],
            body: BODY.to_vec(),
            want: Err(VerifyError::Mismatch),
        },
        Case {
            name: "production keys reject the test rsa signature",
            keys: Keys::Production,
            legacy_rsa: true,
            headers: vec![(wh, rsa())],
            body: BODY.to_vec(),
            want: Err(VerifyError::Mismatch),
        },
        Case {
            name: "ed25519 not base64",
            keys: Keys::Test,
            legacy_rsa: false,
            headers: vec![(ghl, "%%%%".to_owned())],
            body: BODY.to_vec(),
            want: Err(VerifyError::Malformed("X-GHL-Signature is not base64")),
        },
        Case {
            name: "ed25519 base64 without padding",
            keys: Keys::Test,
            legacy_rsa: false,
            headers: vec![(ghl, ed().trim_end_matches('=').to_owned())],
            body: BODY.to_vec(),
            want: Err(VerifyError::Malformed("X-GHL-Signature is not base64")),
        },
        Case {
            name: "ed25519 base64 of the wrong length",
            keys: Keys::Test,
            legacy_rsa: false,
            headers: vec![(ghl, "AAAA".to_owned())],
            body: BODY.to_vec(),
            want: Err(VerifyError::Malformed("X-GHL-Signature is not 64 bytes")),
        },
        Case {
            name: "ed25519 all zero signature",
            keys: Keys::Test,
            legacy_rsa: false,
            headers: vec![(ghl, STANDARD.encode([0u8; 64]))],
            body: BODY.to_vec(),
            want: Err(VerifyError::Mismatch),
        },
        Case {
            name: "rsa not base64",
            keys: Keys::Test,
            legacy_rsa: true,
            headers: vec![(wh, "not base64!".to_owned())],
            body: BODY.to_vec(),
            want: Err(VerifyError::Malformed("X-WH-Signature is not base64")),
        },
        Case {
            name: "rsa header holding an ed25519-sized signature",
            keys: Keys::Test,
            legacy_rsa: true,
            headers: vec![(wh, ed())],
            body: BODY.to_vec(),
            want: Err(VerifyError::Malformed(
                "X-WH-Signature does not have the key's length",
            )),
        },
        Case {
            name: "duplicate X-GHL-Signature",
            keys: Keys::Test,
            legacy_rsa: false,
            headers: vec![(ghl, ed()), (ghl, ed())],
            body: BODY.to_vec(),
            want: Err(VerifyError::DuplicateHeader("X-GHL-Signature")),
        },
        Case {
            name: "duplicate X-GHL-Signature, one of them N/A",
            keys: Keys::Test,
            legacy_rsa: false,
            headers: vec![(ghl, "N/A".to_owned()), (ghl, ed())],
            body: BODY.to_vec(),
            want: Err(VerifyError::DuplicateHeader("X-GHL-Signature")),
        },
        Case {
            name: "duplicate X-WH-Signature",
            keys: Keys::Test,
            legacy_rsa: true,
            headers: vec![(wh, rsa()), (wh, rsa())],
            body: BODY.to_vec(),
            want: Err(VerifyError::DuplicateHeader("X-WH-Signature")),
        },
    ];
    for case in cases {
        check(case);
    }
}

#[test]
fn sign_reproduces_the_test_vector() {
    // Ed25519 signatures are deterministic: the helper must give the vector's bytes.
    assert_eq!(
        sign(TEST_ED25519_PRIVATE, BODY).as_deref(),
        Some(ED25519_SIG.trim())
    );
    assert_eq!(sign("not a key", BODY), None);
}

/// The DER inside a PEM block, read independently of the crates under test.
fn pem_der(pem: &str) -> Vec<u8> {
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    STANDARD.decode(b64).expect("PEM body is base64")
}

#[test]
fn production_keys() {
    use ed25519_dalek::pkcs8::EncodePublicKey as _;
    let ed25519_der = pem_der(GHL_ED25519_PUBLIC_KEY_PEM);
    assert_eq!(
        hex::encode(sha2::Sha256::digest(&ed25519_der)),
        "5a2c1b2749d3efcc233fb27d4ab43d56b8d20818c42cd226f6c9a3ff20d3097c"
    );
    let ed25519 = parse_ed25519_pem(GHL_ED25519_PUBLIC_KEY_PEM).expect("GHL Ed25519 key");
    assert_eq!(
        hex::encode(ed25519.as_bytes()),
        "8b61d1d6cacbe28d7c3bc0516bb815258ec6edbba96cddc7f40c09ac708388e8"
    );
    assert_eq!(
        ed25519.to_public_key_der().expect("DER").as_bytes(),
        ed25519_der.as_slice()
    );

    let rsa_der = pem_der(GHL_RSA_PUBLIC_KEY_PEM);
    assert_eq!(
        hex::encode(sha2::Sha256::digest(&rsa_der)),
        "2f62045d413b1b7747e26770ce7f57840cbf86288cd20ceb90d299a62501fd25"
    );
    let rsa = parse_rsa_pem(GHL_RSA_PUBLIC_KEY_PEM).expect("GHL RSA key");
    assert_eq!(rsa.size() * 8, 4096);
    assert_eq!(rsa.n_bytes().len(), 512);
    assert_eq!(
        rsa.n_bytes().first().map(|b| b >> 7),
        Some(1),
        "top bit set"
    );
    assert_eq!(rsa.e_bytes().as_ref(), &[1, 0, 1]);
}

// Configuration, through the real parser.

fn parse_config(source_toml: &str) -> Result<Config, String> {
    let args = Args::for_file("edge.toml");
    let text = format!("[sources.ghl]\n{source_toml}");
    let base = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/gohighlevel"
    ));
    Config::parse(&text, base, &args, &|name| {
        (name == "GHL_ED25519_PEM").then(|| TEST_ED25519_PUBLIC.to_owned())
    })
    .map_err(|e| e.to_string())
}

fn ghl_source(config: &Config) -> &GoHighLevel {
    let source = config.sources.get("ghl").expect("the ghl source");
    crate::sources::downcast::<GoHighLevel>(source.as_ref())
        .unwrap_or_else(|| panic!("not a gohighlevel source: {source:?}"))
}

/// The start of a gohighlevel source taking the fixtures' app.
const GHL_APP: &str = "kind = \"gohighlevel\"\napp_id = \"fdbfd90cd48bb76107d26543\"";

#[test]
fn config() {
    /// `Ok(fragment)`: parses, and the source's `Debug` contains the fragment.
    fn check(toml: &str, want: Result<&str, &str>) {
        let got = parse_config(toml);
        match (got, want) {
            (Ok(config), Ok(fragment)) => {
                let debug = format!("{:?}", ghl_source(&config));
                assert!(debug.contains(fragment), "{toml}: {debug}");
            }
            (Err(e), Err(want)) => assert_eq!(e, want, "{toml}"),
            (got, want) => panic!("{toml}: got {got:?}, want {want:?}"),
        }
    }
    let production = "8b61d1d6cacbe28d7c3bc0516bb815258ec6edbba96cddc7f40c09ac708388e8";
    let test_key = hex::encode(
        parse_ed25519_pem(TEST_ED25519_PUBLIC)
            .expect("key")
            .as_bytes(),
    );
    let required = "sources.ghl.app_id: is required: GoHighLevel signs every app's webhooks \
                    with one key, so without it another app's events would be applied (set \
                    app_id, or app_ids for several)";
    let ghl = |rest: &str| format!("{GHL_APP}\n{rest}");
    let bare = |rest: &str| format!("kind = \"gohighlevel\"\n{rest}");
    let cases: Vec<(String, Result<&str, &str>)> = vec![
        (ghl(""), Ok(production)),
        (
            ghl(""),
            Ok("rsa_public_key_bits: 4096, allow_legacy_rsa: false"),
        ),
        (
            ghl("ed25519_public_key = \"file:test-vectors/TEST-ONLY-ed25519-public.pem\""),
            Ok(&test_key),
        ),
        (
            ghl("ed25519_public_key = \"env:GHL_ED25519_PEM\""),
            Ok(&test_key),
        ),
        (
            ghl(&format!(
                "ed25519_public_key = '''\n{TEST_ED25519_PUBLIC}'''"
            )),
            Ok(&test_key),
        ),
        (
            ghl(
                "rsa_public_key = \"file:test-vectors/TEST-ONLY-rsa4096-public.pem\"\n\
                 allow_legacy_rsa = true",
            ),
            Ok("allow_legacy_rsa: true"),
        ),
        (
            ghl("ed25519_public_key = \"file:test-vectors/TEST-ONLY-rsa4096-public.pem\""),
            Err("sources.ghl.ed25519_public_key: not an Ed25519 public key in PEM"),
        ),
        (
            ghl("ed25519_public_key = \
                 \"MCowBQYDK2VwAyEAi2HR1srL4o18O8BRa7gVJY7G7bupbN3H9AwJrHCDiOg=\""),
            Err("sources.ghl.ed25519_public_key: not an Ed25519 public key in PEM"),
        ),
        (
            ghl("rsa_public_key = \"file:test-vectors/TEST-ONLY-ed25519-public.pem\""),
            Err("sources.ghl.rsa_public_key: not an RSA public key in PEM"),
        ),
        // The app: required, one or several; a client id counts up to its first '-'.
        (
            bare(
                "app_id = \"fdbfd90cd48bb76107d26543-mbpkmuu7\"\n\
                  location_ids = [\"DhU4XgaOzyx7J3SdoVwg\"]",
            ),
            Ok(
                r#"app_ids: {"fdbfd90cd48bb76107d26543"}, location_ids: Some({"DhU4XgaOzyx7J3SdoVwg"})"#,
            ),
        ),
        (ghl(""), Ok("location_ids: None")),
        (
            bare("app_ids = [\"bbb\", \"aaa-client\", \" ccc \"]"),
            Ok(r#"app_ids: {"aaa", "bbb", "ccc"}"#),
        ),
        (bare(""), Err(required)),
        (
            bare("location_ids = [\"DhU4XgaOzyx7J3SdoVwg\"]"),
            Err(required),
        ),
        (
            ghl("app_ids = [\"other\"]"),
            Err(
                "sources.ghl.app_ids: cannot be set together with app_id (app_id for one app, \
                 app_ids for several)",
            ),
        ),
        (bare("app_id = \"\""), Err("sources.ghl.app_id: is empty")),
        (bare("app_id = \"  \""), Err("sources.ghl.app_id: is empty")),
        (
            bare("app_id = \"-suffix\""),
            Err(
                "sources.ghl.app_id: has nothing before its first '-' (the app id, or the \
                 client id <appId>-<suffix>)",
            ),
        ),
        (
            bare("app_ids = []"),
            Err(
                "sources.ghl.app_ids: is empty (list the id of every app whose events this \
                 source takes)",
            ),
        ),
        (
            bare("app_ids = [\"a\", \"\"]"),
            Err("sources.ghl.app_ids[1]: is empty"),
        ),
        (
            ghl("location_ids = []"),
            Err("sources.ghl.location_ids: is empty (leave it out to accept every location)"),
        ),
        (
            ghl("location_ids = [\"a\", \" \"]"),
            Err("sources.ghl.location_ids[1]: is empty"),
        ),
    ];
    for (toml, want) in cases {
        check(&toml, want);
    }
}

#[test]
fn config_errors_name_the_key() {
    fn check(toml: &str, want_prefix: &str, want_fragment: &str) {
        let err = parse_config(toml).expect_err(toml);
        assert!(
            err.starts_with(want_prefix) && err.contains(want_fragment),
            "{toml}: {err}"
        );
    }
    check(
        &format!("{GHL_APP}\nrsa_public_key = \"file:no-such.pem\""),
        "sources.ghl.rsa_public_key: cannot read ",
        "no-such.pem",
    );
    check(
        &format!("{GHL_APP}\nsecret = \"x\""),
        "sources.ghl.secret: unknown key (known: ed25519_public_key, rsa_public_key, \
         allow_legacy_rsa, app_id, app_ids, location_ids)",
        "",
    );
    check(
        &format!("{GHL_APP}\nallow_legacy_rsa = \"yes\""),
        "sources.ghl.allow_legacy_rsa: invalid type: string \"yes\", expected a boolean",
        "",
    );
    // A 1024-bit key: too weak to trust a signature made with it.
    check(
        &format!(
            "{GHL_APP}\nrsa_public_key = \"\"\"
-----BEGIN PUBLIC KEY-----
MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDAGHKF9zmOHMvWl5adCYXtm2N5
RS1P93HCDPc4lnkGivhEvehxAwUhoit+M37l7J1NUFwnIERbdD7D6/zc98C4G1dq
fhdrbKzGuU0FJDAJs4foQ/kt2y2n04eIABsSw9b6gxGJ+OpFRRM3CC5jtlsI/HA/
UrTgo/53DotlmzjWQwIDAQAB
-----END PUBLIC KEY-----\"\"\""
        ),
        "sources.ghl.rsa_public_key: RSA key has 1024 bits",
        "at least 2048",
    );
    check(
        "kind = \"ghl\"",
        "sources.ghl.kind: unknown kind \"ghl\"",
        "(known: stripe, gohighlevel, gohighlevel-workflow",
    );
}

// Normalization.

pub(crate) fn at(rfc3339: &str) -> Timestamp {
    proto_timestamp(rfc3339.parse().expect("RFC 3339"))
}

fn event(
    webhook_id: &str,
    event_type: &str,
    occurred_at: &str,
    contact: v1::ContactData,
    payload: Payload,
) -> v1::WebhookEvent {
    v1::WebhookEvent {
        id: format!("{SOURCE}:{webhook_id}"),
        source: SOURCE.to_owned(),
        kind: "gohighlevel".to_owned(),
        r#type: event_type.to_owned(),
        occurred_at: Some(at(occurred_at)),
        received_at: Some(timestamp(RECEIVED_MS)),
        contact: Some(contact),
        payload: Some(payload),
        ..v1::WebhookEvent::default()
    }
}

fn appointment_of(
    id: &str,
    calendar_id: &str,
    status: v1::AppointmentStatus,
    (start, end): (&str, &str),
    title: &str,
    deleted: bool,
) -> Payload {
    Payload::AppointmentUpdated(v1::AppointmentUpdated {
        appointment_id: id.to_owned(),
        calendar_id: calendar_id.to_owned(),
        status: status.into(),
        start_time: Some(at(start)),
        end_time: Some(at(end)),
        title: title.to_owned(),
        deleted,
        start_time_inferred: false,
    })
}

/// The external id list of one GoHighLevel contact.
pub(crate) fn ghl_contact_id(id: &str) -> Vec<v1::ExternalId> {
    vec![v1::ExternalId {
        system: "ghl_contact".to_owned(),
        id: id.to_owned(),
    }]
}

pub(crate) fn tags(list: &[&str]) -> Option<v1::TagList> {
    Some(v1::TagList {
        tags: list.iter().map(|t| (*t).to_owned()).collect(),
    })
}

fn jordan(tag_list: &[&str]) -> v1::ContactData {
    v1::ContactData {
        email: Some("jordan.avery@example.com".to_owned()),
        phone: Some("+15550100199".to_owned()),
        first_name: Some("Jordan".to_owned()),
        last_name: Some("Avery".to_owned()),
        name: Some("Jordan Avery".to_owned()),
        external_ids: ghl_contact_id("P4FmErxTM1cHho4PAAAN"),
        phone_region: "US".to_owned(),
        tags: tags(tag_list),
        dnd: Some(false),
        payment_refs: vec![],
        ..v1::ContactData::default()
    }
}

const JORDAN: &str = "P4FmErxTM1cHho4PAAAN";
const SAM: &str = "tO2oSoJGr297EYx8ZXnd";
const MORGAN: &str = "vkYfQv9NomBbjl2y4y5q";
const CALENDAR: &str = "1mof4efXgMxhV8az36a4";
const APP: &str = "fdbfd90cd48bb76107d26543";
const LOCATION: &str = "DhU4XgaOzyx7J3SdoVwg";

#[test]
fn normalizes_every_fixture() {
    fn check(name: &str, body: &[u8], want: v1::WebhookEvent) {
        let got =
            source(Keys::Test, ours()).normalize(SOURCE, Delivery::body_only(body), RECEIVED_MS);
        assert_eq!(got, want, "{name}");
    }
    use v1::AppointmentStatus as S;
    let jordan_call = "Discovery Call - Jordan Avery";
    let sam_call = "Discovery Call - Sam Okafor";
    // The same delivery, pretty-printed in the fixture and compact as signed.
    let showed = event(
        "40f4bb62-515a-4dc0-b2a0-6162272349f5",
        "AppointmentUpdate",
        "2026-12-03T15:41:07.903Z",
        ghl_contact(JORDAN),
        appointment_of(
            "FN1XdtXNMPqAXiuF3XRc",
            CALENDAR,
            S::Attended,
            ("2026-12-03T15:00:00Z", "2026-12-03T15:30:00Z"),
            jordan_call,
            false,
        ),
    );
    let cases: [(&str, &[u8], v1::WebhookEvent); 14] = [
        (
            "AppointmentCreate: confirmed, -05:00 offset",
            fixture!("AppointmentCreate.json"),
            event(
                "a52ed62f-3c37-4504-b3df-4266c8ecc26a",
                "AppointmentCreate",
                "2026-11-28T15:02:11.482Z",
                ghl_contact(JORDAN),
                appointment_of(
                    "FN1XdtXNMPqAXiuF3XRc",
                    CALENDAR,
                    S::Booked,
                    ("2026-12-03T15:00:00Z", "2026-12-03T15:30:00Z"),
                    jordan_call,
                    false,
                ),
            ),
        ),
        (
            "AppointmentUpdate: showed, Z with milliseconds, the same instants",
            fixture!("AppointmentUpdate-showed.json"),
            showed.clone(),
        ),
        (
            "AppointmentUpdate: the signed compact body normalizes as the pretty one",
            BODY,
            showed,
        ),
        (
            "AppointmentUpdate: noshow, -08:00 offset",
            fixture!("AppointmentUpdate-noshow.json"),
            event(
                "50489621-e131-4cd3-845a-a9eb74092212",
                "AppointmentUpdate",
                "2026-12-04T18:05:33.671Z",
                ghl_contact(MORGAN),
                appointment_of(
                    "NWc0fZ581jIBgb32ensw",
                    "sMzMJ5xu09kc24Qo4YXg",
                    S::NoShow,
                    ("2026-12-04T17:00:00Z", "2026-12-04T17:45:00Z"),
                    "Consultation - Morgan Lee",
                    false,
                ),
            ),
        ),
        (
            "AppointmentUpdate: cancelled, +00:00 offset",
            fixture!("AppointmentUpdate-cancelled.json"),
            event(
                "225d441a-6622-47f4-aed2-adf4a9370766",
                "AppointmentUpdate",
                "2026-12-02T21:47:19.555Z",
                ghl_contact(SAM),
                appointment_of(
                    "FwTjT7fXwZ8Qz8IpCRMR",
                    CALENDAR,
                    S::Cancelled,
                    ("2026-12-07T14:00:00Z", "2026-12-07T14:30:00Z"),
                    sam_call,
                    false,
                ),
            ),
        ),
        (
            "AppointmentDelete: deleted",
            fixture!("AppointmentDelete.json"),
            event(
                "8dbaaea1-22ab-4c54-8fdd-9d4535b9f648",
                "AppointmentDelete",
                "2026-12-02T21:47:19.555Z",
                ghl_contact(SAM),
                appointment_of(
                    "FwTjT7fXwZ8Qz8IpCRMR",
                    CALENDAR,
                    S::Cancelled,
                    ("2026-12-07T14:00:00Z", "2026-12-07T14:30:00Z"),
                    sam_call,
                    true,
                ),
            ),
        ),
        (
            "ContactCreate: no dateUpdated, so the envelope timestamp",
            fixture!("ContactCreate.json"),
            event(
                "39c3a8bd-daa8-4316-8ec4-002dac9523be",
                "ContactCreate",
                "2026-11-28T15:01:59.402Z",
                jordan(&["webinar-nov", "booked-call"]),
                Payload::ContactUpserted(v1::ContactUpserted {}),
            ),
        ),
        (
            "ContactUpdate: sparse",
            fixture!("ContactUpdate.json"),
            event(
                "e61bab8d-aa12-441d-a6dc-1435e510d256",
                "ContactUpdate",
                "2026-12-01T16:04:12.640Z",
                v1::ContactData {
                    email: Some("morgan.lee@example.com".to_owned()),
                    phone: Some("+15550100142".to_owned()),
                    first_name: Some("Morgan".to_owned()),
                    last_name: Some("Lee".to_owned()),
                    name: Some("Morgan Lee".to_owned()),
                    external_ids: ghl_contact_id(MORGAN),
                    phone_region: "US".to_owned(),
                    tags: tags(&["consultation"]),
                    dnd: Some(false),
                    payment_refs: vec![],
                    ..v1::ContactData::default()
                },
                Payload::ContactUpserted(v1::ContactUpserted {}),
            ),
        ),
        (
            "ContactTagUpdate: the full list after the change",
            fixture!("ContactTagUpdate.json"),
            event(
                "a5abd5bf-a2c9-4a5f-86bd-967490028dd1",
                "ContactTagUpdate",
                "2026-12-03T15:41:09.554Z",
                jordan(&["webinar-nov", "booked-call", "showed"]),
                Payload::ContactUpserted(v1::ContactUpserted {}),
            ),
        ),
        (
            "ContactDelete: the GHL id only",
            fixture!("ContactDelete.json"),
            event(
                "c7eaf686-4c54-4717-82a3-768c81b5f6a6",
                "ContactDelete",
                "2026-12-03T09:12:55.013Z",
                ghl_contact(SAM),
                Payload::ContactDeleted(v1::ContactDeleted {}),
            ),
        ),
        (
            "OpportunityCreate: monetaryValue in minor units",
            fixture!("OpportunityCreate.json"),
            event(
                "b72b8747-de6e-4d0e-b545-9aff7fd70279",
                "OpportunityCreate",
                "2026-12-03T15:45:20.871Z",
                ghl_contact(JORDAN),
                Payload::OpportunityUpdated(v1::OpportunityUpdated {
                    opportunity_id: "jniYpMBoCO0WX8SivsTM".to_owned(),
                    status: "open".to_owned(),
                    monetary_value: 150_000,
                    name: "Jordan Avery - Irrigation upgrade".to_owned(),
                    pipeline_id: "dHRZHeDFHzMGL3ZDF2gy".to_owned(),
                    pipeline_stage_id: "6b1f0c4e-8a2d-4f7b-9e3a-5c1d2b7e8f90".to_owned(),
                }),
            ),
        ),
        (
            "InvoicePaid: contactDetails, amountPaid in cents, updatedAt",
            fixture!("InvoicePaid.json"),
            event(
                "1dda1c76-a134-40ad-9a75-e3a2790cc4a9",
                "InvoicePaid",
                "2026-12-11T09:03:37.650Z",
                v1::ContactData {
                    email: Some("jordan.avery@example.com".to_owned()),
                    phone: Some("+15550100199".to_owned()),
                    name: Some("Jordan Avery".to_owned()),
                    external_ids: ghl_contact_id(JORDAN),
                    payment_refs: vec!["ghl_invoice:6a3f1c9e2b7d4e8f0a1b2c3d".to_owned()],
                    ..v1::ContactData::default()
                },
                Payload::PurchaseCompleted(v1::PurchaseCompleted {
                    purchase_id: "ghl_invoice:6a3f1c9e2b7d4e8f0a1b2c3d".to_owned(),
                    amount: 150_000,
                    currency: "usd".to_owned(),
                    invoice_id: "6a3f1c9e2b7d4e8f0a1b2c3d".to_owned(),
                    description: "Irrigation upgrade".to_owned(),
                    ..v1::PurchaseCompleted::default()
                }),
            ),
        ),
        (
            "INSTALL",
            fixture!("INSTALL.json"),
            event(
                "7a2b9c1d-3e4f-4a5b-8c6d-7e8f9a0b1c2d",
                "INSTALL",
                "2026-11-20T12:00:05.118Z",
                v1::ContactData::default(),
                Payload::AppLifecycle(v1::AppLifecycle {
                    installed: true,
                    app_id: APP.to_owned(),
                    location_id: LOCATION.to_owned(),
                    company_id: "pdaCbEjquazkrtQiXCMC".to_owned(),
                }),
            ),
        ),
        (
            "UNINSTALL: no companyId",
            fixture!("UNINSTALL.json"),
            event(
                "2c3d4e5f-6a7b-4c8d-9e0f-1a2b3c4d5e6f",
                "UNINSTALL",
                "2026-12-20T12:00:41.552Z",
                v1::ContactData::default(),
                Payload::AppLifecycle(v1::AppLifecycle {
                    installed: false,
                    app_id: APP.to_owned(),
                    location_id: LOCATION.to_owned(),
                    company_id: String::new(),
                }),
            ),
        ),
    ];
    for (name, body, want) in cases {
        check(name, body, want);
    }
}

/// `fixture` with its JSON changed by `edit`.
fn edited(fixture: &[u8], edit: impl FnOnce(&mut Map<String, Value>)) -> Vec<u8> {
    let mut value: Value = serde_json::from_slice(fixture).expect("fixture is JSON");
    edit(value.as_object_mut().expect("object"));
    serde_json::to_vec(&value).expect("serializes")
}

fn ignored_reason(e: &v1::WebhookEvent) -> Option<&str> {
    match &e.payload {
        Some(Payload::Ignored(i)) => Some(i.reason.as_str()),
        _ => None,
    }
}

#[test]
fn allow_lists() {
    /// `want`: `None` when the event is applied, else the whole ignore reason.
    fn check(name: &str, options: Options, body: &[u8], want: Option<&str>) {
        let got =
            source(Keys::Test, options).normalize(SOURCE, Delivery::body_only(body), RECEIVED_MS);
        match (ignored_reason(&got), want) {
            (None, None) => {}
            (Some(reason), Some(want)) => {
                assert_eq!(reason, want, "{name}");
                // Still authentic: recorded under its own id, with the body for replay.
                assert!(got.id.starts_with("ghl:"), "{name}");
                assert!(!got.id.contains("sha256"), "{name}");
                assert!(
                    matches!(&got.payload, Some(Payload::Ignored(_))),
                    "{name}: {:?}",
                    got.payload
                );
                assert_eq!(got.raw_body.as_deref(), Some(body), "{name}");
                assert_eq!(got.contact, Some(v1::ContactData::default()), "{name}");
            }
            (got, want) => panic!("{name}: ignored {got:?}, want {want:?}"),
        }
    }
    let apps = |ids: &[&str]| Options {
        app_ids: ids.iter().map(|s| (*s).to_owned()).collect(),
        ..Options::default()
    };
    let locations = |ids: &[&str]| Options {
        location_ids: Some(ids.iter().map(|s| (*s).to_owned()).collect()),
        ..ours()
    };
    let appointment = fixture!("AppointmentCreate.json").as_slice();
    let invoice_alt_only = edited(fixture!("InvoicePaid.json"), |m| {
        m.remove("locationId");
    });
    let invoice_company = edited(fixture!("InvoicePaid.json"), |m| {
        m.remove("locationId");
        m.insert("altType".into(), "company".into());
    });
    let bulk_install = edited(fixture!("INSTALL.json"), |m| {
        m.remove("locationId");
        m.insert("locationIds".into(), serde_json::json!(["other", LOCATION]));
    });
    let company_install = edited(fixture!("INSTALL.json"), |m| {
        m.remove("locationId");
    });
    let without = |key: &'static str| {
        edited(appointment, move |m| {
            m.remove(key);
        })
    };
    let with = |key: &'static str, value: Value| {
        edited(appointment, move |m| {
            m.insert(key.to_owned(), value);
        })
    };
    let other_app = "not for this app/location: appId is not the configured app_id";
    let no_app = "not for this app/location: the event has no appId";
    let other_location = "not for this app/location: location is not in location_ids";
    let cases: Vec<(&str, Options, Vec<u8>, Option<&str>)> = vec![
        ("app matches", ours(), appointment.to_vec(), None),
        (
            "one of several apps",
            apps(&["0123456789abcdef01234567", APP]),
            appointment.to_vec(),
            None,
        ),
        (
            "app differs",
            apps(&["0123456789abcdef01234567"]),
            appointment.to_vec(),
            Some(other_app),
        ),
        (
            "no app configured accepts nothing",
            Options::default(),
            appointment.to_vec(),
            Some(other_app),
        ),
        ("appId missing", ours(), without("appId"), Some(no_app)),
        (
            "appId blank",
            ours(),
            with("appId", " ".into()),
            Some(no_app),
        ),
        (
            "appId not a string",
            ours(),
            with("appId", 7.into()),
            Some(no_app),
        ),
        (
            "versionId is not appId",
            ours(),
            edited(&without("appId"), |m| {
                m.insert("versionId".into(), APP.into());
            }),
            Some(no_app),
        ),
        (
            "appId is compared whole",
            ours(),
            with("appId", format!("{APP}-mbpkmuu7").into()),
            Some(other_app),
        ),
        (
            "install of another app",
            apps(&["0123456789abcdef01234567"]),
            fixture!("INSTALL.json").to_vec(),
            Some(other_app),
        ),
        (
            "uninstall of another app",
            apps(&["0123456789abcdef01234567"]),
            fixture!("UNINSTALL.json").to_vec(),
            Some(other_app),
        ),
        (
            "uninstall without appId",
            ours(),
            edited(fixture!("UNINSTALL.json"), |m| {
                m.remove("appId");
            }),
            Some(no_app),
        ),
        (
            "location listed",
            locations(&["x", LOCATION]),
            appointment.to_vec(),
            None,
        ),
        (
            "location not listed",
            locations(&["x"]),
            appointment.to_vec(),
            Some(other_location),
        ),
        (
            "no location while location_ids is set",
            locations(&[LOCATION]),
            without("locationId"),
            Some(other_location),
        ),
        (
            "app and location match, uninstall",
            locations(&[LOCATION]),
            fixture!("UNINSTALL.json").to_vec(),
            None,
        ),
        (
            "the app is checked before the location",
            Options {
                location_ids: Some(["x".to_owned()].into()),
                ..Options::default()
            },
            appointment.to_vec(),
            Some(other_app),
        ),
        (
            "invoice located by altId",
            locations(&[LOCATION]),
            invoice_alt_only,
            None,
        ),
        (
            "altId of a company is no location",
            locations(&[LOCATION]),
            invoice_company,
            Some(other_location),
        ),
        (
            "bulk install lists the location",
            locations(&[LOCATION]),
            bulk_install.clone(),
            None,
        ),
        (
            "bulk install without it",
            locations(&["x"]),
            bulk_install,
            Some(other_location),
        ),
        (
            "company install, every location accepted",
            ours(),
            company_install.clone(),
            None,
        ),
        (
            "company install, locations listed",
            locations(&[LOCATION]),
            company_install,
            Some(other_location),
        ),
        (
            "the app is checked before the type",
            apps(&["x"]),
            br#"{"type":"NoteCreate","webhookId":"w","appId":"y"}"#.to_vec(),
            Some(other_app),
        ),
    ];
    for (name, options, body, want) in cases {
        check(name, options, &body, want);
    }
}

#[test]
fn unexpected_shapes_are_ignored_with_a_reason() {
    /// `want_id`: the unscoped event id (`None`: the body digest).
    fn check(name: &str, body: &[u8], want_id: Option<&str>, want_type: &str, want_reason: &str) {
        let got =
            source(Keys::Test, ours()).normalize(SOURCE, Delivery::body_only(body), RECEIVED_MS);
        let want_id = want_id.map_or_else(|| body_digest_id(body), str::to_owned);
        assert_eq!(got.id, format!("ghl:{want_id}"), "{name}");
        assert_eq!(got.r#type, want_type, "{name}");
        let reason = ignored_reason(&got).unwrap_or_else(|| panic!("{name}: {got:?}"));
        assert!(reason.starts_with(want_reason), "{name}: {reason}");
    }
    /// Name, body, unscoped id (`None`: the digest), type, start of the reason.
    type Case<'a> = (&'a str, &'a [u8], Option<&'a str>, &'a str, &'a str);
    let cases: [Case<'_>; 15] = [
        (
            "not JSON",
            b"type=AppointmentCreate",
            None,
            "",
            "body is not JSON",
        ),
        ("empty", b"", None, "", "body is not JSON"),
        (
            "JSON array",
            b"[1,2]",
            None,
            "",
            "body is not a JSON object",
        ),
        (
            "no type",
            br#"{"appId":"fdbfd90cd48bb76107d26543","webhookId":"w1"}"#,
            Some("w1"),
            "",
            "body has no type",
        ),
        (
            "type not a string",
            br#"{"appId":"fdbfd90cd48bb76107d26543","type":7,"webhookId":"w1"}"#,
            Some("w1"),
            "",
            "body has no type",
        ),
        (
            "unmapped type",
            br#"{"appId":"fdbfd90cd48bb76107d26543","type":"NoteCreate","webhookId":"w1"}"#,
            Some("w1"),
            "NoteCreate",
            "event type \"NoteCreate\" is not mapped",
        ),
        (
            "unmapped opportunity delete",
            br#"{"appId":"fdbfd90cd48bb76107d26543","type":"OpportunityDelete","id":"o","contactId":"c"}"#,
            None,
            "OpportunityDelete",
            "event type",
        ),
        (
            "webhookId not a string",
            br#"{"appId":"fdbfd90cd48bb76107d26543","type":"NoteCreate","webhookId":42}"#,
            None,
            "NoteCreate",
            "event type",
        ),
        (
            "appointment not an object",
            br#"{"appId":"fdbfd90cd48bb76107d26543","type":"AppointmentUpdate","appointment":"x"}"#,
            None,
            "AppointmentUpdate",
            "body has no appointment object",
        ),
        (
            "appointment without id",
            br#"{"appId":"fdbfd90cd48bb76107d26543","type":"AppointmentUpdate","appointment":{"contactId":"c"}}"#,
            None,
            "AppointmentUpdate",
            "appointment has no id",
        ),
        (
            "opportunity without id",
            br#"{"appId":"fdbfd90cd48bb76107d26543","type":"OpportunityUpdate","contactId":"c"}"#,
            None,
            "OpportunityUpdate",
            "opportunity has no id",
        ),
        (
            "invoice without _id",
            br#"{"appId":"fdbfd90cd48bb76107d26543","type":"InvoicePaid","currency":"USD","amountPaid":1}"#,
            None,
            "InvoicePaid",
            "invoice has no _id",
        ),
        (
            "contact delete without id",
            br#"{"appId":"fdbfd90cd48bb76107d26543","type":"ContactDelete","email":"a@example.com"}"#,
            None,
            "ContactDelete",
            "contact has no id",
        ),
        (
            "opportunity value not a number",
            br#"{"appId":"fdbfd90cd48bb76107d26543","type":"OpportunityUpdate","id":"o","contactId":"c","monetaryValue":"lots"}"#,
            None,
            "OpportunityUpdate",
            "monetaryValue is not an amount",
        ),
        (
            "invoice without currency",
            br#"{"appId":"fdbfd90cd48bb76107d26543","type":"InvoicePaid","_id":"i","amountPaid":1}"#,
            None,
            "InvoicePaid",
            "invoice has no currency",
        ),
    ];
    for (name, body, id, event_type, reason) in cases {
        check(name, body, id, event_type, reason);
    }
}

/// Whether an event without contact identifiers changes anything is contacts-svc's
/// decision, made once it has checked the fields: the edge still types the event, with
/// what contact data there is, even none.
#[test]
fn events_without_contact_identifiers_keep_their_type() {
    fn check(name: &str, body: Vec<u8>, want_contact: v1::ContactData, want: fn(&Payload) -> bool) {
        let got =
            source(Keys::Test, ours()).normalize(SOURCE, Delivery::body_only(&body), RECEIVED_MS);
        assert_eq!(got.contact, Some(want_contact), "{name}");
        let payload = got.payload.as_ref().expect("a payload");
        assert!(want(payload), "{name}: {payload:?}");
        assert!(
            got.raw_body.is_none(),
            "{name}: a typed event carries no body"
        );
    }
    type Case = (&'static str, Vec<u8>, v1::ContactData, fn(&Payload) -> bool);
    let cases: [Case; 5] = [
        (
            "an appointment without contactId",
            edited(fixture!("AppointmentCreate.json"), |m| {
                let a = m.get_mut("appointment").and_then(Value::as_object_mut);
                a.expect("appointment").remove("contactId");
            }),
            v1::ContactData::default(),
            |p| matches!(p, Payload::AppointmentUpdated(a) if a.appointment_id == "FN1XdtXNMPqAXiuF3XRc"),
        ),
        (
            "a contact with a name only",
            br#"{"appId":"fdbfd90cd48bb76107d26543","type":"ContactUpdate","firstName":"A"}"#
                .to_vec(),
            v1::ContactData {
                first_name: Some("A".to_owned()),
                ..v1::ContactData::default()
            },
            |p| matches!(p, Payload::ContactUpserted(_)),
        ),
        (
            "a contact whose identifiers are blank or not strings",
            br#"{"appId":"fdbfd90cd48bb76107d26543","type":"ContactCreate","id":" ","email":7,"phone":""}"#
                .to_vec(),
            v1::ContactData::default(),
            |p| matches!(p, Payload::ContactUpserted(_)),
        ),
        (
            "an invoice without contactDetails",
            edited(fixture!("InvoicePaid.json"), |m| {
                m.remove("contactDetails");
            }),
            v1::ContactData {
                payment_refs: vec!["ghl_invoice:6a3f1c9e2b7d4e8f0a1b2c3d".to_owned()],
                ..v1::ContactData::default()
            },
            |p| matches!(p, Payload::PurchaseCompleted(i) if i.amount == 150_000),
        ),
        (
            "an opportunity without contactId",
            edited(fixture!("OpportunityCreate.json"), |m| {
                m.remove("contactId");
            }),
            v1::ContactData::default(),
            |p| matches!(p, Payload::OpportunityUpdated(o) if o.opportunity_id == "jniYpMBoCO0WX8SivsTM"),
        ),
    ];
    for (name, body, contact, want) in cases {
        check(name, body, contact, want);
    }
}

#[test]
fn field_variations() {
    fn check(name: &str, body: Vec<u8>, inspect: impl FnOnce(&v1::WebhookEvent)) {
        let got =
            source(Keys::Test, ours()).normalize(SOURCE, Delivery::body_only(&body), RECEIVED_MS);
        assert!(ignored_reason(&got).is_none(), "{name}: {got:?}");
        inspect(&got);
    }
    let appointment_with = |key: &'static str, value: Value| {
        edited(fixture!("AppointmentCreate.json"), move |m| {
            let a = m.get_mut("appointment").and_then(Value::as_object_mut);
            a.expect("appointment").insert(key.to_owned(), value);
        })
    };
    let appointment = |e: &v1::WebhookEvent| match &e.payload {
        Some(Payload::AppointmentUpdated(a)) => a.clone(),
        other => panic!("{other:?}"),
    };
    for (status, want) in [
        ("new", v1::AppointmentStatus::Booked),
        ("confirmed", v1::AppointmentStatus::Booked),
        ("showed", v1::AppointmentStatus::Attended),
        ("noshow", v1::AppointmentStatus::NoShow),
        ("cancelled", v1::AppointmentStatus::Cancelled),
        ("invalid", v1::AppointmentStatus::Cancelled),
        ("active", v1::AppointmentStatus::Unspecified),
        ("", v1::AppointmentStatus::Unspecified),
    ] {
        check(
            status,
            appointment_with("appointmentStatus", status.into()),
            |e| assert_eq!(appointment(e).status(), want, "{status}"),
        );
    }
    check(
        "a start time that is not RFC 3339 is left unset",
        appointment_with("startTime", "tomorrow at ten".into()),
        |e| assert_eq!(appointment(e).start_time, None),
    );
    check(
        "a naive start time is no instant",
        appointment_with("startTime", "2026-12-03T10:00:00".into()),
        |e| assert_eq!(appointment(e).start_time, None),
    );
    check(
        "+05:30 offset",
        appointment_with("startTime", "2023-09-25T16:00:00+05:30".into()),
        |e| assert_eq!(appointment(e).start_time, Some(at("2023-09-25T10:30:00Z"))),
    );
    check(
        "unparseable dateUpdated falls back to the envelope timestamp",
        appointment_with("dateUpdated", "yesterday".into()),
        |e| assert_eq!(e.occurred_at, Some(at("2026-11-28T15:02:12.117Z"))),
    );
    check(
        "no dateUpdated and no timestamp: the receipt time",
        edited(fixture!("AppointmentCreate.json"), |m| {
            m.remove("timestamp");
            if let Some(a) = m.get_mut("appointment").and_then(Value::as_object_mut) {
                a.remove("dateUpdated");
            }
        }),
        |e| assert_eq!(e.occurred_at, Some(timestamp(RECEIVED_MS))),
    );
    check(
        "no webhookId: the body digest",
        edited(fixture!("ContactCreate.json"), |m| {
            m.remove("webhookId");
        }),
        |e| assert!(e.id.starts_with("ghl:sha256:"), "{}", e.id),
    );
    let contact = |e: &v1::WebhookEvent| e.contact.clone().expect("contact");
    check(
        "ContactDndUpdate states dnd",
        edited(fixture!("ContactUpdate.json"), |m| {
            m.insert("type".into(), "ContactDndUpdate".into());
            m.insert("dnd".into(), true.into());
        }),
        |e| {
            assert_eq!(e.r#type, "ContactDndUpdate");
            assert_eq!(contact(e).dnd, Some(true));
        },
    );
    check(
        "no tags key: tags unset; no dnd key: dnd unset",
        edited(fixture!("ContactUpdate.json"), |m| {
            m.remove("tags");
            m.remove("dnd");
        }),
        |e| {
            assert_eq!(contact(e).tags, None);
            assert_eq!(contact(e).dnd, None);
        },
    );
    check(
        "empty tag list clears the tags",
        edited(fixture!("ContactUpdate.json"), |m| {
            m.insert("tags".into(), serde_json::json!([]));
        }),
        |e| assert_eq!(contact(e).tags, tags(&[])),
    );
    check(
        "tags trimmed, blanks, duplicates and non-strings dropped",
        edited(fixture!("ContactUpdate.json"), |m| {
            m.insert(
                "tags".into(),
                serde_json::json!([" a ", "", "b", "a", 3, null]),
            );
        }),
        |e| assert_eq!(contact(e).tags, tags(&["a", "b"])),
    );
    check(
        "country that is not a two-letter code gives no region",
        edited(fixture!("ContactUpdate.json"), |m| {
            m.insert("country".into(), "United States".into());
        }),
        |e| assert_eq!(contact(e).phone_region, ""),
    );
    check(
        "lower-case country",
        edited(fixture!("ContactUpdate.json"), |m| {
            m.insert("country".into(), "gb".into());
        }),
        |e| assert_eq!(contact(e).phone_region, "GB"),
    );
    let opportunity_value = |e: &v1::WebhookEvent| match &e.payload {
        Some(Payload::OpportunityUpdated(o)) => o.monetary_value,
        other => panic!("{other:?}"),
    };
    for (value, want) in [
        (serde_json::json!(1499.99), 149_999),
        (serde_json::json!(0.1), 10),
        (serde_json::json!("250.5"), 25_050),
        (serde_json::json!(null), 0),
    ] {
        check(
            "monetaryValue",
            edited(fixture!("OpportunityCreate.json"), |m| {
                m.insert("monetaryValue".into(), value.clone());
            }),
            |e| assert_eq!(opportunity_value(e), want, "{value}"),
        );
    }
    let purchase = |e: &v1::WebhookEvent| match &e.payload {
        Some(Payload::PurchaseCompleted(p)) => p.clone(),
        other => panic!("{other:?}"),
    };
    check(
        "invoice in a zero-decimal currency",
        edited(fixture!("InvoicePaid.json"), |m| {
            m.insert("currency".into(), "JPY".into());
            m.insert("amountPaid".into(), 12_000.into());
        }),
        |e| {
            assert_eq!(purchase(e).amount, 12_000);
            assert_eq!(purchase(e).currency, "jpy");
        },
    );
    check(
        "invoice without type: a paid invoice is read as InvoicePaid",
        edited(fixture!("InvoicePaid.json"), |m| {
            m.remove("type");
        }),
        |e| {
            assert_eq!(e.r#type, "InvoicePaid");
            assert_eq!(purchase(e).amount, 150_000);
        },
    );
}

#[test]
fn minor_units() {
    fn check(value: Value, exponent: u32, want: Option<i64>) {
        assert_eq!(
            to_minor_units(&value, exponent),
            want,
            "{value} e{exponent}"
        );
    }
    use serde_json::json;
    let cases = [
        (json!(1500), 2, Some(150_000)),
        (json!(-15), 2, Some(-1500)),
        (json!(19.99), 2, Some(1999)),
        (json!(0.29), 2, Some(29)),
        (json!(1.005), 2, Some(100)), // 1.005 is 1.00499999… as a double
        (json!(0.125), 2, Some(13)),  // exact halves round away from zero
        (json!(1.234), 3, Some(1234)),
        (json!(12.5), 0, Some(13)),
        (json!("42"), 2, Some(4200)),
        (json!(" 42.10 "), 2, Some(4210)),
        (json!(92_233_720_368_547_759_i64), 2, None),
        (json!(1e300), 2, None),
        (json!("NaN"), 2, None),
        (json!(""), 2, None),
        (json!(true), 2, None),
        (json!(null), 2, None),
    ];
    for (value, exponent, want) in cases {
        check(value, exponent, want);
    }
}

#[test]
fn never_panics_on_truncated_or_mangled_bodies() {
    let ghl = source(
        Keys::Test,
        Options {
            app_ids: [APP.to_owned()].into(),
            location_ids: Some([LOCATION.to_owned()].into()),
            allow_legacy_rsa: true,
        },
    );
    let bodies: [&[u8]; 14] = [
        fixture!("AppointmentCreate.json"),
        fixture!("AppointmentDelete.json"),
        fixture!("AppointmentUpdate-cancelled.json"),
        fixture!("AppointmentUpdate-noshow.json"),
        fixture!("AppointmentUpdate-showed.json"),
        fixture!("ContactCreate.json"),
        fixture!("ContactDelete.json"),
        fixture!("ContactTagUpdate.json"),
        fixture!("ContactUpdate.json"),
        fixture!("INSTALL.json"),
        fixture!("InvoicePaid.json"),
        fixture!("OpportunityCreate.json"),
        fixture!("UNINSTALL.json"),
        BODY,
    ];
    for body in bodies {
        for end in 0..body.len() {
            let event = ghl.normalize(SOURCE, Delivery::body_only(&body[..end]), RECEIVED_MS);
            assert!(event.id.starts_with("ghl:"));
        }
        // Every string value replaced by a number, and every number by a string: the
        // fields it needs are unusable, and the body still becomes an event.
        let value: serde_json::Value = serde_json::from_slice(body).expect("fixture is JSON");
        let mangled = serde_json::to_vec(&swap_types(value)).expect("JSON");
        let event = ghl.normalize(SOURCE, Delivery::body_only(&mangled), RECEIVED_MS);
        assert!(event.id.starts_with("ghl:"), "{event:?}");
        // A signature header made of the body must not verify, nor panic.
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-ghl-signature",
            HeaderValue::from_str(&STANDARD.encode(&body[..64])).expect("value"),
        );
        let d = Delivery {
            headers: &headers,
            query: "",
            body,
        };
        assert_eq!(ghl.verify(d, 0), Err(VerifyError::Mismatch));
    }
}

/// `v` with every string turned into a number and every number into a string.
fn swap_types(v: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::String(_) => Value::from(1),
        Value::Number(n) => Value::String(n.to_string()),
        Value::Array(items) => Value::Array(items.into_iter().map(swap_types).collect()),
        Value::Object(map) => {
            Value::Object(map.into_iter().map(|(k, v)| (k, swap_types(v))).collect())
        }
        other => other,
    }
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Any amount written with two decimals converts exactly.
        #[test]
        fn two_decimal_amounts_convert_exactly(cents in -(1_i64 << 50)..(1_i64 << 50)) {
            let text = format!(
                "{}{}.{:02}",
                if cents < 0 { "-" } else { "" },
                cents.unsigned_abs() / 100,
                cents.unsigned_abs() % 100
            );
            let value: Value = serde_json::from_str(&text).expect("a JSON number");
            prop_assert_eq!(to_minor_units(&value, 2), Some(cents), "{}", text);
        }

        /// Normalization never panics and always keeps the source's id scope.
        #[test]
        fn normalize_takes_any_bytes(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let event = source(Keys::Test, ours()).normalize(SOURCE, Delivery::body_only(&body), RECEIVED_MS);
            prop_assert!(event.id.starts_with("ghl:"));
        }

        /// Random signature headers never verify.
        #[test]
        fn random_signatures_never_verify(
            ed25519 in "[A-Za-z0-9+/=]{0,100}",
            rsa in "[A-Za-z0-9+/=]{0,700}",
        ) {
            let mut headers = HeaderMap::new();
            headers.insert("x-ghl-signature", HeaderValue::from_str(&ed25519).expect("value"));
            headers.insert("x-wh-signature", HeaderValue::from_str(&rsa).expect("value"));
            let d = Delivery { headers: &headers, query: "", body: BODY };
            prop_assert!(source(Keys::Test, legacy(true)).verify(d, 0).is_err());
        }
    }
}
