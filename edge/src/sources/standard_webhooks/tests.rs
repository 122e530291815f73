use std::path::Path;

use hookline_proto::v1::webhook_event::Payload;
use http::{HeaderMap, HeaderName, HeaderValue};

use super::*;
use crate::config::{Args, Config};

/// The known-answer vector of the reference libraries' tests (`spec/standard-webhooks.md`
/// §4).
const KAT_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const KAT_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
const KAT_TS: i64 = 1_614_265_330;
const KAT_BODY: &[u8] = br#"{"test": 2432232314}"#;
const KAT_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

/// A second secret, for rotation.
const NEW_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
/// TEST-ONLY Ed25519 signing key bytes for `v1a`.
const SIGNING_KEY: [u8; 32] = [7; 32];

const NO_V1: VerifyError =
    VerifyError::Malformed("webhook-signature has no v1 or v1a signature this source can check");

/// The source `[sources.acme]` with these keys after its kind, or the error lines.
fn source(toml: &str) -> Result<StandardWebhooks, String> {
    let text = format!("[sources.acme]\nkind = \"standard-webhooks\"\n{toml}");
    let mut config = Config::parse(
        &text,
        Path::new("."),
        &Args::for_file("edge.toml"),
        &|name| (name == "ACME_SECRET").then(|| format!("{KAT_SECRET}\n")),
    )
    .map_err(|e| e.to_string())?;
    let any: Box<dyn std::any::Any> = config.sources.remove("acme").expect("the acme source");
    Ok(*any
        .downcast::<StandardWebhooks>()
        .expect("a standard-webhooks source"))
}

fn kat_source() -> StandardWebhooks {
    source("secrets = [\"env:ACME_SECRET\"]").expect("valid")
}

fn verify(
    s: &StandardWebhooks,
    pairs: &[(&str, &str)],
    body: &[u8],
    now: i64,
) -> Result<(), VerifyError> {
    crate::sources::verify_with(s, pairs, body, now)
}

/// The three headers with this signature, as `(name, value)` pairs.
fn with(id: &str, ts: &str, signature: &str) -> Vec<(String, String)> {
    vec![
        ("webhook-id".to_owned(), id.to_owned()),
        ("webhook-timestamp".to_owned(), ts.to_owned()),
        ("webhook-signature".to_owned(), signature.to_owned()),
    ]
}

/// A name, the headers, the body, the time and the verdict.
type Case<'a> = (
    &'a str,
    Vec<(String, String)>,
    &'a [u8],
    i64,
    Result<(), VerifyError>,
);

fn check(s: &StandardWebhooks, cases: Vec<Case<'_>>) {
    for (name, pairs, body, now, want) in cases {
        let pairs: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(verify(s, &pairs, body, now), want, "{name}");
    }
}

#[test]
fn the_reference_vector() {
    assert_eq!(
        sign_v1(KAT_SECRET, KAT_ID, KAT_TS, KAT_BODY).as_deref(),
        Some(KAT_SIGNATURE)
    );
    // The secret without its prefix, or without padding, is the same key.
    for secret in [
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    ] {
        assert_eq!(
            sign_v1(secret, KAT_ID, KAT_TS, KAT_BODY).as_deref(),
            Some(KAT_SIGNATURE)
        );
    }
    let ts = KAT_TS.to_string();
    check(
        &kat_source(),
        vec![(
            "vector",
            with(KAT_ID, &ts, KAT_SIGNATURE),
            KAT_BODY,
            KAT_TS,
            Ok(()),
        )],
    );
}

#[test]
fn every_rejection_the_spec_implies() {
    let ts = KAT_TS.to_string();
    let sig = |id: &str, t: i64, body: &[u8]| sign_v1(KAT_SECRET, id, t, body).expect("sign");
    let good = sig(KAT_ID, KAT_TS, KAT_BODY);
    let mac = good.strip_prefix("v1,").expect("v1").to_owned();
    let hex_mac = format!("v1,{}", hex::encode(BASE64.decode(&mac).expect("base64")));
    let undecoded_key = format!(
        "v1,{}",
        BASE64.encode(signature::mac(
            Algorithm::Sha256,
            KAT_SECRET.as_bytes(),
            &[KAT_ID.as_bytes(), b".", ts.as_bytes(), b".", KAT_BODY]
        ))
    );
    let mut tampered = KAT_BODY.to_vec();
    tampered[10] = b'3';
    let ms = (KAT_TS * 1000).to_string();
    let dotted_id = "msg.1";
    let dotted = sign_v1(KAT_SECRET, dotted_id, KAT_TS, KAT_BODY).expect("sign");
    let b = KAT_BODY;
    let t = KAT_TS;
    check(
        &kat_source(),
        vec![
            ("valid", with(KAT_ID, &ts, &good), b, t, Ok(())),
            ("300 s old", with(KAT_ID, &ts, &good), b, t + 300, Ok(())),
            ("300 s ahead", with(KAT_ID, &ts, &good), b, t - 300, Ok(())),
            (
                "stale",
                with(KAT_ID, &ts, &good),
                b,
                t + 301,
                Err(VerifyError::StaleTimestamp),
            ),
            (
                "future",
                with(KAT_ID, &ts, &good),
                b,
                t - 301,
                Err(VerifyError::StaleTimestamp),
            ),
            (
                "milliseconds",
                with(KAT_ID, &ms, &good),
                b,
                t,
                Err(VerifyError::StaleTimestamp),
            ),
            (
                "a list with junk around the valid one",
                with(KAT_ID, &ts, &format!("v1,AAAA v2,{mac} {good} v1,bm9wZQ==")),
                b,
                t,
                Ok(()),
            ),
            (
                "an entry without a comma",
                with(KAT_ID, &ts, &format!("junk {good}")),
                b,
                t,
                Ok(()),
            ),
            (
                "truncated",
                with(KAT_ID, &ts, &format!("v1,{}", &mac[..20])),
                b,
                t,
                Err(VerifyError::Mismatch),
            ),
            (
                "v1, and nothing",
                with(KAT_ID, &ts, "v1,"),
                b,
                t,
                Err(VerifyError::Mismatch),
            ),
            (
                "a random signature",
                with(
                    KAT_ID,
                    &ts,
                    "v1,dGhpcyBpcyBub3QgdGhlIHNpZ25hdHVyZSBhdCBhbGw=",
                ),
                b,
                t,
                Err(VerifyError::Mismatch),
            ),
            (
                "hex instead of base64",
                with(KAT_ID, &ts, &hex_mac),
                b,
                t,
                Err(VerifyError::Mismatch),
            ),
            (
                "bad base64",
                with(KAT_ID, &ts, "v1,!!!not base64"),
                b,
                t,
                Err(NO_V1),
            ),
            (
                "a MAC labelled v1a",
                with(KAT_ID, &ts, &format!("v1a,{mac}")),
                b,
                t,
                Err(NO_V1),
            ),
            (
                "a MAC labelled v2",
                with(KAT_ID, &ts, &format!("v2,{mac}")),
                b,
                t,
                Err(NO_V1),
            ),
            (
                "over another id",
                with("msg_other", &ts, &good),
                b,
                t,
                Err(VerifyError::Mismatch),
            ),
            (
                "over another timestamp",
                with(KAT_ID, &ts, &sig(KAT_ID, t + 1, b)),
                b,
                t,
                Err(VerifyError::Mismatch),
            ),
            (
                "a body changed by one byte",
                with(KAT_ID, &ts, &good),
                &tampered,
                t,
                Err(VerifyError::Mismatch),
            ),
            (
                "the whsec_ text as the key",
                with(KAT_ID, &ts, &undecoded_key),
                b,
                t,
                Err(VerifyError::Mismatch),
            ),
            (
                "an id with a dot",
                with(dotted_id, &ts, &dotted),
                b,
                t,
                Err(VerifyError::Malformed("webhook-id contains '.'")),
            ),
            (
                "a timestamp that is not an integer",
                with(KAT_ID, "hello", &good),
                b,
                t,
                Err(VerifyError::Malformed(
                    "timestamp is not a whole number of seconds",
                )),
            ),
            (
                "a decimal timestamp",
                with(KAT_ID, "1614265330.0", &good),
                b,
                t,
                Err(VerifyError::Malformed(
                    "timestamp is not a whole number of seconds",
                )),
            ),
            (
                "a negative timestamp",
                with(KAT_ID, "-1614265330", &good),
                b,
                t,
                Err(VerifyError::Malformed(
                    "timestamp is not a whole number of seconds",
                )),
            ),
            (
                "no id",
                with(KAT_ID, &ts, &good)[1..].to_vec(),
                b,
                t,
                Err(VerifyError::MissingHeader("webhook-id")),
            ),
            (
                "no timestamp",
                vec![
                    with(KAT_ID, &ts, &good)[0].clone(),
                    with(KAT_ID, &ts, &good)[2].clone(),
                ],
                b,
                t,
                Err(VerifyError::MissingHeader("webhook-timestamp")),
            ),
            (
                "no signature",
                with(KAT_ID, &ts, &good)[..2].to_vec(),
                b,
                t,
                Err(VerifyError::MissingHeader("webhook-signature")),
            ),
            (
                "an empty signature",
                with(KAT_ID, &ts, ""),
                b,
                t,
                Err(VerifyError::MissingHeader("webhook-signature")),
            ),
            (
                "no headers",
                vec![],
                b,
                t,
                Err(VerifyError::MissingHeader("webhook-id")),
            ),
            (
                "two signature headers",
                [
                    with(KAT_ID, &ts, &good),
                    vec![("webhook-signature".into(), good.clone())],
                ]
                .concat(),
                b,
                t,
                Err(VerifyError::DuplicateHeader("webhook-signature")),
            ),
            (
                "seventeen signatures",
                with(KAT_ID, &ts, &[good.as_str(); 17].join(" ")),
                b,
                t,
                Err(VerifyError::Malformed(
                    "webhook-signature holds more than 16 signatures",
                )),
            ),
            (
                "sixteen signatures, the last one valid",
                with(KAT_ID, &ts, &format!("{}{good}", "v1,AAAA ".repeat(15))),
                b,
                t,
                Ok(()),
            ),
            (
                "svix- headers",
                vec![
                    ("svix-id".into(), KAT_ID.into()),
                    ("svix-timestamp".into(), ts.clone()),
                    ("svix-signature".into(), good.clone()),
                ],
                b,
                t,
                Ok(()),
            ),
        ],
    );
}

#[test]
fn rotation_takes_the_old_and_the_new_secret() {
    let s = source(&format!("secrets = [\"{KAT_SECRET}\", \"{NEW_SECRET}\"]")).expect("valid");
    let ts = KAT_TS.to_string();
    let old = sign_v1(KAT_SECRET, KAT_ID, KAT_TS, KAT_BODY).expect("sign");
    let new = sign_v1(NEW_SECRET, KAT_ID, KAT_TS, KAT_BODY).expect("sign");
    let neither = sign_v1(
        "whsec_bm90IG91cnMgYXQgYWxsLCBub3Qgb3Vycw==",
        KAT_ID,
        KAT_TS,
        KAT_BODY,
    )
    .expect("sign");
    check(
        &s,
        vec![
            ("old", with(KAT_ID, &ts, &old), KAT_BODY, KAT_TS, Ok(())),
            ("new", with(KAT_ID, &ts, &new), KAT_BODY, KAT_TS, Ok(())),
            (
                "both, as a rotating sender sends them",
                with(KAT_ID, &ts, &format!("{new} {old}")),
                KAT_BODY,
                KAT_TS,
                Ok(()),
            ),
            (
                "neither",
                with(KAT_ID, &ts, &neither),
                KAT_BODY,
                KAT_TS,
                Err(VerifyError::Mismatch),
            ),
        ],
    );
    // Only the new one configured: the old one no longer passes.
    let s = source(&format!("secrets = [\"{NEW_SECRET}\"]")).expect("valid");
    check(
        &s,
        vec![(
            "old after rotation",
            with(KAT_ID, &ts, &old),
            KAT_BODY,
            KAT_TS,
            Err(VerifyError::Mismatch),
        )],
    );
}

#[test]
fn v1a_signatures_with_configured_public_keys() {
    let public = public_key_of(&SIGNING_KEY);
    let other = public_key_of(&[9; 32]);
    let ts = KAT_TS.to_string();
    let v1a = sign_v1a(&SIGNING_KEY, KAT_ID, KAT_TS, KAT_BODY);
    let v1 = sign_v1(KAT_SECRET, KAT_ID, KAT_TS, KAT_BODY).expect("sign");
    let by_other = sign_v1a(&[9; 32], KAT_ID, KAT_TS, KAT_BODY);
    let only_v1a = source(&format!("public_keys = [\"{public}\"]")).expect("valid");
    check(
        &only_v1a,
        vec![
            ("v1a", with(KAT_ID, &ts, &v1a), KAT_BODY, KAT_TS, Ok(())),
            (
                "v1a by another key",
                with(KAT_ID, &ts, &by_other),
                KAT_BODY,
                KAT_TS,
                Err(VerifyError::Mismatch),
            ),
            // No secret configured: an HMAC proves nothing here.
            (
                "v1 only",
                with(KAT_ID, &ts, &v1),
                KAT_BODY,
                KAT_TS,
                Err(NO_V1),
            ),
            (
                "v1a over another body",
                with(KAT_ID, &ts, &v1a),
                b"{}",
                KAT_TS,
                Err(VerifyError::Mismatch),
            ),
        ],
    );
    // Both kinds of key, and both entries, as the spec's rotation example sends them.
    let both = source(&format!(
        "secrets = [\"{KAT_SECRET}\"]\npublic_keys = [\"{other}\", \"{public}\"]"
    ))
    .expect("valid");
    check(
        &both,
        vec![
            (
                "v1 and v1a",
                with(KAT_ID, &ts, &format!("{v1} {v1a}")),
                KAT_BODY,
                KAT_TS,
                Ok(()),
            ),
            (
                "v1a alone",
                with(KAT_ID, &ts, &v1a),
                KAT_BODY,
                KAT_TS,
                Ok(()),
            ),
        ],
    );
}

#[test]
fn configuration() {
    fn check(toml: &str, want: Result<(), &str>) {
        assert_eq!(
            source(toml).map(|_| ()),
            want.map_err(str::to_owned),
            "{toml}"
        );
    }
    let public = public_key_of(&SIGNING_KEY);
    check("secrets = [\"env:ACME_SECRET\"]", Ok(()));
    check("secrets = [\"MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"]", Ok(()));
    check(&format!("public_keys = [\"{public}\"]"), Ok(()));
    check(
        "",
        Err(
            "sources.acme.secrets: is required: whsec_ secrets for v1 signatures (or \
             public_keys, whpk_, for v1a)",
        ),
    );
    check(
        "secrets = []",
        Err("sources.acme.secrets: needs at least one secret"),
    );
    check(
        "secrets = [\"whsec_\"]",
        Err("sources.acme.secrets[0]: holds an empty key"),
    );
    check(
        "secrets = [\"whsec_not base64!\"]",
        Err(
            "sources.acme.secrets[0]: is not a Standard Webhooks secret: whsec_ followed by \
             the base64 of the key bytes",
        ),
    );
    check(
        "public_keys = [\"whpk_AAAA\"]",
        Err(
            "sources.acme.public_keys[0]: is not whpk_ followed by the base64 of a 32-byte \
             Ed25519 public key",
        ),
    );
    check(
        "secrets = [\"env:ACME_SECRET\"]\ntolerance_secs = 0",
        Err("sources.acme.tolerance_secs: must be between 1 and 86400"),
    );
    // Every problem, each by its key; the secret is never quoted.
    let err = source(
        "secrets = [\"whsec_s3cr3t!!\", \"env:NOPE\"]\ntolerance = 5\n[sources.acme.map]\nemail = \"data/email\"",
    )
    .expect_err("invalid");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 4, "{err}");
    assert!(
        lines[0].starts_with("sources.acme.tolerance: unknown key (known: "),
        "{err}"
    );
    assert!(
        lines[1].starts_with("sources.acme.secrets[0]: is not a Standard Webhooks secret"),
        "{err}"
    );
    assert_eq!(
        lines[2],
        "sources.acme.secrets[1]: environment variable NOPE is not set"
    );
    assert!(
        lines[3].starts_with("sources.acme.map.email: \"data/email\" is not a JSON Pointer"),
        "{err}"
    );
    assert!(!err.contains("s3cr3t"), "{err}");
}

#[test]
fn events_take_the_webhook_id_and_the_mapping() {
    let s = source(
        "secrets = [\"env:ACME_SECRET\"]\n[sources.acme.map]\nemail = \"/data/email\"\nphone = \"/data/phone\"",
    )
    .expect("valid");
    let body = br#"{"type":"user.created","timestamp":"2022-11-03T20:26:10.344522Z","data":{"email":"Ada@Example.com","phone":"+14155550100"}}"#;
    let mut h = HeaderMap::new();
    h.insert(
        "webhook-id",
        HeaderValue::from_static("msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"),
    );
    let d = Delivery {
        headers: &h,
        query: "",
        body,
    };
    let e = s.normalize("acme", d, 1_700_000_000_000);
    assert_eq!(e.id, "acme:msg_2KWPBgLlAfxdpx2AI54pPJ85f4W");
    assert_eq!(e.kind, "standard-webhooks");
    // The spec's recommended `type` and `timestamp` are read without being mapped.
    assert_eq!(e.r#type, "user.created");
    assert_eq!(
        e.occurred_at.map(|t| (t.seconds, t.nanos)),
        Some((1_667_507_170, 344_000_000))
    );
    let contact = e.contact.expect("contact");
    assert_eq!(contact.email.as_deref(), Some("Ada@Example.com"));
    assert_eq!(contact.phone.as_deref(), Some("+14155550100"));
    assert!(matches!(e.payload, Some(Payload::ContactUpserted(_))));
    assert_eq!(e.raw_body, None);
}

/// A replay normalizes an ignored event from its body and recorded headers, which hold
/// the id headers only: a `svix-*` delivery keeps its `svix-id` there too, rather than
/// falling back to the body's digest because `svix-signature` is gone (found by the
/// normalize_standard_webhooks fuzz target).
#[test]
fn a_replay_from_recorded_headers_keeps_the_svix_id() {
    let s = kat_source();
    for family in ["webhook", "svix"] {
        let mut h = HeaderMap::new();
        for (name, value) in [
            ("id", KAT_ID),
            ("timestamp", "1614265330"),
            ("signature", KAT_SIGNATURE),
        ] {
            let name = HeaderName::from_bytes(format!("{family}-{name}").as_bytes()).expect("name");
            h.insert(name, HeaderValue::from_static(value));
        }
        let body: &[u8] = b"null";
        let at_receipt = s.normalize(
            "acme",
            Delivery {
                headers: &h,
                query: "",
                body,
            },
            0,
        );
        assert_eq!(at_receipt.id, format!("acme:{KAT_ID}"), "{family}");
        let recorded = crate::sources::header_map_of(&s.recorded_headers(&h));
        let replayed = s.normalize(
            "acme",
            Delivery {
                headers: &recorded,
                query: "",
                body,
            },
            0,
        );
        assert_eq!(replayed, at_receipt, "{family}");
    }
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Whatever the signature header holds, verification answers (never panics), and
        /// only the real signature among junk passes.
        #[test]
        fn any_signature_header(junk in "[ -~]{0,120}", with_real in any::<bool>()) {
            let s = kat_source();
            let ts = KAT_TS.to_string();
            let header = if with_real { format!("{junk} {KAT_SIGNATURE}") } else { junk };
            let Ok(value) = HeaderValue::from_str(&header) else { return Ok(()) };
            let mut h = HeaderMap::new();
            h.insert("webhook-id", HeaderValue::from_static(KAT_ID));
            h.insert("webhook-timestamp", HeaderValue::from_str(&ts).expect("digits"));
            h.insert("webhook-signature", value);
            let d = Delivery { headers: &h, query: "", body: KAT_BODY };
            let verdict = s.verify(d, KAT_TS);
            // The real entry passes when it stands as an entry of its own.
            let real_entry = header.split(' ').any(|e| e == KAT_SIGNATURE);
            prop_assert_eq!(verdict.is_ok(), real_entry, "{}", header);
        }

        /// Normalization takes any bytes and keeps the webhook-id.
        #[test]
        fn normalize_takes_any_bytes(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut h = HeaderMap::new();
            h.insert("webhook-id", HeaderValue::from_static(KAT_ID));
            let d = Delivery { headers: &h, query: "", body: &body };
            let event = kat_source().normalize("acme", d, 0);
            prop_assert_eq!(event.id, format!("acme:{KAT_ID}"));
        }
    }
}
