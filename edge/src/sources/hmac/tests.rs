use std::path::Path;

use hookline_proto::v1::webhook_event::Payload;

use super::*;
use crate::config::{Args, Config};
use crate::sources::signature;

/// GitHub's documented test vector (docs.github.com, "Validating webhook deliveries").
const GITHUB_SECRET: &str = "It's a Secret to Everybody";
const GITHUB_BODY: &[u8] = b"Hello, World!";
const GITHUB_SIGNATURE: &str =
    "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

/// Slack's documented example (api.slack.com, "Verifying requests from Slack").
const SLACK_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const SLACK_TS: i64 = 1_531_420_618;
const SLACK_BODY: &[u8] = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
const SLACK_SIGNATURE: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

/// Shopify publishes no vector: this one is Python's `base64.b64encode(hmac.new(secret,
/// body, hashlib.sha256).digest())`, the computation of Shopify's own examples.
const SHOPIFY_SECRET: &str = "hush-shopify-client-secret";
const SHOPIFY_BODY: &[u8] =
    br#"{"id":820982911946154508,"email":"jon@example.com","total_price":"403.00","currency":"USD"}"#;
const SHOPIFY_SIGNATURE: &str = "DClpjJQl0VXU7JOjZBuK/lrotS8JgfcryzzB4ZsnpLY=";

/// The `[sources.hooks]` source with these keys after its kind, or the error lines.
fn source(toml: &str) -> Result<HmacSource, String> {
    let text = format!("[sources.hooks]\nkind = \"hmac\"\n{toml}");
    let mut config = Config::parse(&text, Path::new("."), &Args::for_file("edge.toml"), &|_| {
        None
    })
    .map_err(|e| e.to_string())?;
    let any: Box<dyn std::any::Any> = config.sources.remove("hooks").expect("the source");
    Ok(*any.downcast::<HmacSource>().expect("an hmac source"))
}

fn preset(name: &str, secret: &str) -> HmacSource {
    source(&format!("preset = \"{name}\"\nsecrets = [{secret:?}]")).expect("valid")
}

fn verify(
    s: &HmacSource,
    pairs: &[(&str, &str)],
    body: &[u8],
    now: i64,
) -> Result<(), VerifyError> {
    crate::sources::verify_with(s, pairs, body, now)
}

/// A name, the headers, the body and the verdict.
type Case<'a> = (
    &'a str,
    Vec<(&'a str, &'a str)>,
    &'a [u8],
    Result<(), VerifyError>,
);

#[test]
fn presets_verify_their_senders_known_answers() {
    let github = preset("github", GITHUB_SECRET);
    let header = "x-hub-signature-256";
    let cases: Vec<Case<'_>> = vec![
        (
            "vector",
            vec![(header, GITHUB_SIGNATURE)],
            GITHUB_BODY,
            Ok(()),
        ),
        (
            "upper-case hex",
            vec![(
                header,
                "sha256=757107EA0EB2509FC211221CCE984B8A37570B6D7586C22C46F4379C8B043E17",
            )],
            GITHUB_BODY,
            Ok(()),
        ),
        (
            "another body",
            vec![(header, GITHUB_SIGNATURE)],
            b"Hello, World?",
            Err(VerifyError::Mismatch),
        ),
        (
            "no prefix",
            vec![(header, &GITHUB_SIGNATURE[7..])],
            GITHUB_BODY,
            Err(VerifyError::Malformed("signature without its prefix")),
        ),
        (
            "the legacy SHA-1 header only",
            vec![(
                "x-hub-signature",
                "sha1=01dc10d0c83e72ed246219cdd91669667fe2ca59",
            )],
            GITHUB_BODY,
            Err(VerifyError::MissingHeader("X-Hub-Signature-256")),
        ),
        (
            "not hex",
            vec![(header, "sha256=zz")],
            GITHUB_BODY,
            Err(VerifyError::Malformed("signature is not in its encoding")),
        ),
    ];
    for (name, pairs, body, want) in cases {
        assert_eq!(verify(&github, &pairs, body, 0), want, "github: {name}");
    }

    let shopify = preset("shopify", SHOPIFY_SECRET);
    let header = "x-shopify-hmac-sha256";
    assert_eq!(
        verify(&shopify, &[(header, SHOPIFY_SIGNATURE)], SHOPIFY_BODY, 0),
        Ok(())
    );
    assert_eq!(
        verify(
            &preset("shopify", "an-old-secret"),
            &[(header, SHOPIFY_SIGNATURE)],
            SHOPIFY_BODY,
            0
        ),
        Err(VerifyError::Mismatch)
    );

    let slack = preset("slack", SLACK_SECRET);
    let ts = SLACK_TS.to_string();
    let ok: &[(&str, &str)] = &[
        ("x-slack-signature", SLACK_SIGNATURE),
        ("x-slack-request-timestamp", &ts),
    ];
    for (name, now, want) in [
        ("at once", SLACK_TS, Ok(())),
        ("300 s later", SLACK_TS + 300, Ok(())),
        (
            "301 s later",
            SLACK_TS + 301,
            Err(VerifyError::StaleTimestamp),
        ),
        (
            "301 s before",
            SLACK_TS - 301,
            Err(VerifyError::StaleTimestamp),
        ),
    ] {
        assert_eq!(verify(&slack, ok, SLACK_BODY, now), want, "slack: {name}");
    }
    let other_ts = (SLACK_TS + 1).to_string();
    assert_eq!(
        verify(
            &slack,
            &[
                ("x-slack-signature", SLACK_SIGNATURE),
                ("x-slack-request-timestamp", &other_ts)
            ],
            SLACK_BODY,
            SLACK_TS,
        ),
        Err(VerifyError::Mismatch),
        "the timestamp is signed"
    );
    assert_eq!(
        verify(
            &slack,
            &[("x-slack-signature", SLACK_SIGNATURE)],
            SLACK_BODY,
            SLACK_TS
        ),
        Err(VerifyError::MissingHeader("X-Slack-Request-Timestamp"))
    );
    assert_eq!(
        verify(
            &slack,
            &[
                ("x-slack-signature", SLACK_SIGNATURE),
                ("x-slack-request-timestamp", "soon")
            ],
            SLACK_BODY,
            SLACK_TS,
        ),
        Err(VerifyError::Malformed(
            "timestamp is not a whole number of seconds"
        ))
    );
}

/// A sender of its own: SHA-512, base64, the id and timestamp signed, two secrets.
const CUSTOM: &str = r#"
secrets = ["first-secret", "second-secret"]
header = "X-Acme-Signature"
algorithm = "sha512"
encoding = "base64"
prefix = "v1="
signed_content = "{id}.{timestamp}.{body}"
timestamp_header = "X-Acme-Timestamp"
tolerance_secs = 60
id_header = "X-Acme-Delivery"
"#;

#[test]
fn a_configured_scheme() {
    let s = source(CUSTOM).expect("valid");
    let body = br#"{"email":"ada@example.com"}"#;
    let sign = |secret: &str, id: &str, ts: &str, body: &[u8]| {
        let mac = signature::mac(
            Algorithm::Sha512,
            secret.as_bytes(),
            &[id.as_bytes(), b".", ts.as_bytes(), b".", body],
        );
        format!("v1={}", BASE64.encode(mac))
    };
    let now = 1_800_000_000;
    let ts = now.to_string();
    let first = sign("first-secret", "d1", &ts, body);
    let second = sign("second-secret", "d1", &ts, body);
    let sha256 = format!(
        "v1={}",
        BASE64.encode(signature::mac(
            Algorithm::Sha256,
            b"first-secret",
            &[b"d1.", ts.as_bytes(), b".", body]
        ))
    );
    let h = |sig: &str, id: &str, ts: &str| {
        vec![
            ("x-acme-signature".to_owned(), sig.to_owned()),
            ("x-acme-delivery".to_owned(), id.to_owned()),
            ("x-acme-timestamp".to_owned(), ts.to_owned()),
        ]
    };
    let cases = [
        ("first secret", h(&first, "d1", &ts), now, Ok(())),
        ("second secret", h(&second, "d1", &ts), now, Ok(())),
        (
            "prefix in another case",
            h(&first.replacen("v1=", "V1=", 1), "d1", &ts),
            now,
            Ok(()),
        ),
        (
            "another id",
            h(&first, "d2", &ts),
            now,
            Err(VerifyError::Mismatch),
        ),
        (
            "an id holding the separator",
            h(&sign("first-secret", "d.1", &ts, body), "d.1", &ts),
            now,
            Err(VerifyError::Malformed(
                "id holds the separator that follows it in the signed content",
            )),
        ),
        (
            "SHA-256",
            h(&sha256, "d1", &ts),
            now,
            Err(VerifyError::Mismatch),
        ),
        (
            "61 s late",
            h(&first, "d1", &ts),
            now + 61,
            Err(VerifyError::StaleTimestamp),
        ),
        (
            "no id",
            h(&first, "d1", &ts)
                .into_iter()
                .filter(|(k, _)| k != "x-acme-delivery")
                .collect(),
            now,
            Err(VerifyError::MissingHeader("id")),
        ),
        (
            "no signature",
            h(&first, "d1", &ts)[1..].to_vec(),
            now,
            Err(VerifyError::MissingHeader("signature")),
        ),
    ];
    for (name, pairs, at, want) in cases {
        let pairs: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(verify(&s, &pairs, body, at), want, "{name}");
    }
}

#[test]
fn templates() {
    use Part::{Body, Id, Text, Timestamp};
    let cases: [(&str, Result<Vec<Part>, &str>); 8] = [
        ("{body}", Ok(vec![Body])),
        (
            "{timestamp}.{body}",
            Ok(vec![Timestamp, Text(".".into()), Body]),
        ),
        (
            "v0:{timestamp}:{body}",
            Ok(vec![Text("v0:".into()), Timestamp, Text(":".into()), Body]),
        ),
        (
            "{id}.{timestamp}.{body}",
            Ok(vec![
                Id,
                Text(".".into()),
                Timestamp,
                Text(".".into()),
                Body,
            ]),
        ),
        (
            "{timestamp}",
            Err("\"{timestamp}\" must hold {body} exactly once"),
        ),
        (
            "{body}{body}",
            Err("\"{body}{body}\" must hold {body} exactly once"),
        ),
        (
            "{date}.{body}",
            Err(
                "\"{date}.{body}\" has an unknown placeholder {date} (known: {body}, {timestamp}, {id})",
            ),
        ),
        ("{body", Err("\"{body\" has a '{' without its '}'")),
    ];
    for (t, want) in cases {
        assert_eq!(template(t), want.map_err(str::to_owned), "{t}");
    }
}

#[test]
fn configuration() {
    fn check(toml: &str, want: &[&str]) {
        crate::problem::assert_problems(source(toml), want, toml);
    }
    check(CUSTOM, &[]);
    check("preset = \"github\"\nsecrets = [\"s\"]", &[]);
    // A key beside the preset wins.
    check(
        "preset = \"github\"\nsecrets = [\"s\"]\nheader = \"X-Hub-Signature-256-Enterprise\"",
        &[],
    );
    check(
        "preset = \"gitlab\"\nsecrets = [\"s\"]",
        &["sources.hooks.preset: unknown preset \"gitlab\" (known: github, shopify, slack)"],
    );
    check(
        "secrets = [\"s\"]\nheader = \"X Sig\"\nalgorithm = \"sha1\"\nencoding = \"base32\"",
        &[
            "sources.hooks.header: \"X Sig\" is not a header name",
            "sources.hooks.algorithm: \"sha1\" is not sha256 or sha512",
            "sources.hooks.encoding: \"base32\" is not hex or base64",
        ],
    );
    check(
        "secrets = [\"s\"]\nheader = \"x-sig\"\nsigned_content = \"{id}.{timestamp}.{body}\"",
        &[
            "sources.hooks.timestamp_header: is required: signed_content holds {timestamp}",
            "sources.hooks.id_header: is required: signed_content holds {id}",
        ],
    );
    check(
        "secrets = [\"s\"]\nheader = \"x-sig\"\ntimestamp_header = \"x-ts\"\nid_pointer = \"id\"",
        &[
            "sources.hooks.id_pointer: \"id\" is not a JSON Pointer to a field (RFC 6901): it \
             starts with '/', and '~' is written '~0' and '/' in a key '~1', e.g. \
             \"/data/email\"",
            "sources.hooks.timestamp_header: is set, but signed_content does not hold \
             {timestamp}: an unsigned timestamp proves nothing",
        ],
    );
    check(
        "header = \"x-sig\"",
        &["sources.hooks: missing field `secrets`"],
    );
    check(
        "preset = \"github\"\nsecrets = [\"s\"]\nid_header = \"x-github-delivery\"\ntolerance_secs = 300\ndedup_window_secs = 0",
        &[
            "sources.hooks.tolerance_secs: is set, but signed_content does not hold \
             {timestamp}: nothing bounds a replay of this sender's deliveries but \
             deduplication",
            "sources.hooks.id_header: is not signed (signed_content has no {id}): an id a \
             sender of a captured request could change cannot deduplicate; leave it out \
             (then the id is id_pointer's, else the digest of the type and body)",
            "sources.hooks.dedup_window_secs: must be between 1 and 2592000 (30 days)",
        ],
    );
    check(
        "secrets = []\nheader = \"x-sig\"",
        &["sources.hooks.secrets: needs at least one secret"],
    );
}

#[test]
fn ids_types_and_the_slack_handshake() {
    let github = source(
        "preset = \"github\"\nsecrets = [\"s\"]\n[sources.hooks.map]\nemail = \"/pusher/email\"",
    )
    .expect("valid");
    let body = br#"{"pusher":{"email":"octo@example.com"}}"#;
    let h = crate::sources::header_map(&[
        ("x-github-delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
        ("x-github-event", "push"),
    ]);
    let d = Delivery {
        headers: &h,
        query: "",
        body,
    };
    let e = github.normalize("hooks", d, 0);
    // X-GitHub-Delivery is not signed: the id is the digest of the type and the body,
    // deduplicated for contacts-svc's whole TTL (nothing else stops a replay).
    assert_eq!(e.id.len(), "hooks:sha256:".len() + 64, "{}", e.id);
    assert!(e.id.starts_with("hooks:sha256:"), "{}", e.id);
    assert_eq!(e.dedup_window_secs, 0);
    assert_eq!(e.r#type, "push");
    assert_eq!(e.kind, "hmac");
    assert_eq!(
        e.contact.and_then(|c| c.email).as_deref(),
        Some("octo@example.com")
    );
    // Another delivery id, the same bytes: the same event.
    let h2 = crate::sources::header_map(&[
        ("x-github-delivery", "00000000-0000-0000-0000-000000000000"),
        ("x-github-event", "push"),
    ]);
    let again = github.normalize(
        "hooks",
        Delivery {
            headers: &h2,
            query: "",
            body,
        },
        0,
    );
    assert_eq!(again.id, e.id);
    // Another type, the same body (Shopify's orders/create and orders/paid): another event.
    let h3 = crate::sources::header_map(&[("x-github-event", "sponsorship")]);
    let other = github.normalize(
        "hooks",
        Delivery {
            headers: &h3,
            query: "",
            body,
        },
        0,
    );
    assert_ne!(other.id, e.id);
    // No type header: the body's digest alone.
    let e = github.normalize("hooks", Delivery::body_only(body), 0);
    assert_eq!(
        e.id,
        format!("hooks:{}", crate::sources::body_digest_id(body))
    );
    assert_eq!(e.r#type, "");
    // A timestamped scheme's digest ids are duplicates for an hour.
    let stamped = source(
        "secrets = [\"s\"]\nheader = \"x-sig\"\nsigned_content = \"{timestamp}.{body}\"\ntimestamp_header = \"x-ts\"",
    )
    .expect("valid");
    assert_eq!(
        stamped
            .normalize("hooks", Delivery::body_only(body), 0)
            .dedup_window_secs,
        3600
    );
    // A window of the file's.
    let windowed =
        source("preset = \"github\"\nsecrets = [\"s\"]\ndedup_window_secs = 60").expect("valid");
    assert_eq!(
        windowed
            .normalize("hooks", Delivery::body_only(body), 0)
            .dedup_window_secs,
        60
    );
    // An id of the payload's is no digest: no window.
    let slack = preset("slack", SLACK_SECRET);
    assert_eq!(
        slack
            .normalize("hooks", Delivery::body_only(br#"{"event_id":"Ev1"}"#), 0)
            .dedup_window_secs,
        0
    );

    // Slack: the id and the type from the payload.
    let slack = preset("slack", SLACK_SECRET);
    let event = br#"{"type":"event_callback","event_id":"Ev08MFMKH6","event_time":1796378400,"event":{"type":"team_join","user":{"id":"U1"}}}"#;
    let e = slack.normalize("hooks", Delivery::body_only(event), 0);
    assert_eq!(e.id, "hooks:Ev08MFMKH6");
    assert_eq!(e.r#type, "team_join");
    assert_eq!(e.occurred_at.map(|t| t.seconds), Some(1_796_378_400));
    assert!(matches!(e.payload, Some(Payload::ContactUpserted(_))));
    assert_eq!(slack.handshake(Delivery::body_only(event)), None);
    let challenge = br#"{"token":"x","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}"#;
    assert_eq!(
        slack.handshake(Delivery::body_only(challenge)),
        Some(json!({"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"}))
    );
    // Only a Slack source answers challenges.
    assert_eq!(github.handshake(Delivery::body_only(challenge)), None);
}

mod properties {
    use http::HeaderValue;
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Only the GitHub vector's own signature passes, whatever else the header holds.
        #[test]
        fn only_the_signature_passes(candidate in "[ -~]{0,80}") {
            let github = preset("github", GITHUB_SECRET);
            let Ok(_) = HeaderValue::from_str(&candidate) else { return Ok(()) };
            let verdict = verify(&github, &[("x-hub-signature-256", &candidate)], GITHUB_BODY, 0);
            let real = candidate.trim().eq_ignore_ascii_case(GITHUB_SIGNATURE);
            prop_assert_eq!(verdict.is_ok(), real, "{}", candidate);
        }

        /// Templates of any text parse or are refused, never panic; a parsed one holds the
        /// body exactly once.
        #[test]
        fn any_template(t in "[{}a-z.:]{0,30}") {
            if let Ok(parts) = template(&t) {
                prop_assert_eq!(parts.iter().filter(|p| **p == Part::Body).count(), 1);
            }
        }
    }
}
