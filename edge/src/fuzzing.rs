//! The fuzz targets' bodies: one function per target of the `fuzz/` crate, each taking
//! the fuzzer's bytes, reading them as the inputs of real code (a delivery, a
//! configuration file, a header value) and calling that code. A panic is the bug they
//! look for; where a stronger property is cheap they check it too, with `assert!`, so
//! that a violation is a crash the fuzzer reports. The unit tests run the same
//! functions on stable as property tests (`fuzzing/tests.rs`), so `make test` covers
//! them in bounded time and `make fuzz` searches further.
//!
//! A delivery is read like an HTTP message: `name: value` lines up to an empty line
//! (a line starting with `?` is the query string), then the body. Bytes without an
//! empty line are all body. In a header value, `{sig}` (and for Standard Webhooks
//! `{v1}` and `{v1a}`) stands for the signature the source's fixed key makes over this
//! delivery, so that a seed or a mutation of one reaches the code past the signature
//! check. The keys are fixed and TEST-ONLY; the module exists only for tests and with the
//! `fuzzing` feature, so none of it is in a release binary.

use std::path::Path;
use std::sync::LazyLock;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::Signer as _;
use hookline_proto::v1;
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::config::{Args, Config};
use crate::secret::Resolver;
use crate::sources::gohighlevel_workflow::GoHighLevelWorkflow;
use crate::sources::signature::{self, Algorithm};
use crate::sources::{
    self, Delivery, Kind as _, Source, header_map_of, standard_webhooks, stripe, timestamp,
};

/// The receipt time of every delivery, Unix seconds: the seeds' timestamps.
pub const NOW: i64 = 1_767_225_600;
/// Every source's tolerance of signed timestamps (the default).
const TOLERANCE_SECS: i64 = 300;
const RECEIVED_AT_MS: i64 = NOW * 1000;

const STRIPE_SECRET: &str = "whsec_fuzz_only_stripe_secret";
/// The key bytes are the base64-decoded part.
const STANDARD_WEBHOOKS_SECRET: &str = "whsec_ZnV6ei1vbmx5LXN0YW5kYXJkLXdlYmhvb2tzLWtleQ==";
/// The seed of the Ed25519 key `v1a` signatures are made with.
const STANDARD_WEBHOOKS_SIGNING_KEY: [u8; 32] = [42; 32];
const HMAC_SECRET: &str = "fuzz-only-hmac-secret";
const WORKFLOW_TOKEN: &str = "fuzz-only-workflow-token";
/// The app of the GoHighLevel fixtures, whose events the source takes.
const GHL_APP: &str = "fdbfd90cd48bb76107d26543";
const GHL_ED25519_PUBLIC: &str =
    include_str!("../../tests/fixtures/gohighlevel/test-vectors/TEST-ONLY-ed25519-public.pem");
const GHL_ED25519_PRIVATE: &str =
    include_str!("../../tests/fixtures/gohighlevel/test-vectors/TEST-ONLY-ed25519-private.pem");
const GHL_RSA_PUBLIC: &str =
    include_str!("../../tests/fixtures/gohighlevel/test-vectors/TEST-ONLY-rsa4096-public.pem");

/// A source built from its `[sources.<name>]` table, as the edge builds it.
struct Built {
    name: &'static str,
    source: Box<dyn Source>,
}

fn build(name: &'static str, toml: &str) -> Built {
    let table: toml::Table = toml.parse().expect("a fuzzing source's table is TOML");
    let no_env = |_: &str| None;
    let resolver = Resolver::new(Path::new("."), &no_env);
    let source = sources::build(name, table, &resolver)
        .unwrap_or_else(|p| panic!("the fuzzing source {name} is not valid: {p}"));
    Built { name, source }
}

static STRIPE: LazyLock<Built> = LazyLock::new(|| {
    build(
        "stripe",
        &format!("kind = \"stripe\"\nsecrets = [\"{STRIPE_SECRET}\"]"),
    )
});

static GOHIGHLEVEL: LazyLock<Built> = LazyLock::new(|| {
    build(
        "ghl",
        &format!(
            "kind = \"gohighlevel\"\napp_id = \"{GHL_APP}\"\nallow_legacy_rsa = true\n\
             ed25519_public_key = '''{GHL_ED25519_PUBLIC}'''\n\
             rsa_public_key = '''{GHL_RSA_PUBLIC}'''"
        ),
    )
});

static WORKFLOW: LazyLock<Built> = LazyLock::new(|| workflow(WORKFLOW_TOKEN));

/// A workflow source with another token: what it takes, the real one must refuse.
static WORKFLOW_OTHER: LazyLock<Built> = LazyLock::new(|| workflow("another-token"));

fn workflow(token: &str) -> Built {
    build(
        "ghl-workflow",
        &format!(
            "kind = \"gohighlevel-workflow\"\ntoken = \"{token}\"\n\
             id_pointer = \"/customData/event_id\""
        ),
    )
}

static STANDARD_WEBHOOKS: LazyLock<Built> = LazyLock::new(|| {
    let public_key = standard_webhooks::public_key_of(&STANDARD_WEBHOOKS_SIGNING_KEY);
    build(
        "acme",
        &format!(
            r#"kind = "standard-webhooks"
secrets = ["{STANDARD_WEBHOOKS_SECRET}"]
public_keys = ["{public_key}"]

[map]
email = "/data/email"
phone = "/data/phone"
first_name = "/data/first_name"
last_name = "/data/last_name"
external_id = "/data/id"
occurred_at = "/timestamp"

[[actions]]
types = ["payment.succeeded"]
do = "purchase"
purchase_id = "/data/payment_id"
amount = "/data/amount"
currency = "/data/currency"

[[actions]]
types = ["payment.refunded"]
do = "refund"
refund_id = "/data/refund_id"
purchase_id = "/data/payment_id"
amount = "/data/amount"
currency = "/data/currency"

[[actions]]
types = ["tags.*"]
do = "add_tags"
tags = "/data/tags"

[[actions]]
types = ["appointment.*"]
do = "appointment"
appointment_id = "/data/appointment_id"
status = "/data/status"
start_time = "/data/start"
end_time = "/data/end"

[[actions]]
types = ["user.*"]
do = "contact"
"#
        ),
    )
});

/// How each `hmac` source signs: what `{sig}` becomes in its signature header.
type Signer = fn(&Raw) -> Option<String>;

/// The `hmac` sources: the three presets and a configuration that uses every other key.
static HMAC: LazyLock<Vec<(Built, Signer)>> = LazyLock::new(|| {
    let preset = |name: &'static str| {
        build(
            name,
            &format!(
                "kind = \"hmac\"\npreset = \"{name}\"\nsecrets = [\"{HMAC_SECRET}\"]\n\
                 [map]\nemail = \"/email\"\nexternal_id = \"/id\""
            ),
        )
    };
    let custom = build(
        "custom",
        &format!(
            r#"kind = "hmac"
secrets = ["{HMAC_SECRET}"]
header = "x-fuzz-signature"
algorithm = "sha512"
encoding = "base64"
prefix = "sha512="
signed_content = "{{id}}.{{timestamp}}.{{body}}"
timestamp_header = "x-fuzz-timestamp"
id_header = "x-fuzz-id"
type_header = "x-fuzz-event"

[map]
email = "/user/email"
phone = "/user/phone"
occurred_at = "/at"

[[actions]]
types = ["order.paid"]
do = "purchase"
purchase_id = "/order/id"
amount = "/order/total"
currency = "/order/currency"

[[actions]]
do = "contact"
"#
        ),
    );
    let github: Signer = |raw| {
        let mac = signature::mac(Algorithm::Sha256, HMAC_SECRET.as_bytes(), &[&raw.body]);
        Some(format!("sha256={}", hex::encode(mac)))
    };
    let shopify: Signer = |raw| {
        let mac = signature::mac(Algorithm::Sha256, HMAC_SECRET.as_bytes(), &[&raw.body]);
        Some(BASE64.encode(mac))
    };
    let slack: Signer = |raw| {
        let ts = raw.header("x-slack-request-timestamp")?;
        let signed: [&[u8]; 4] = [b"v0:", ts, b":", &raw.body];
        let mac = signature::mac(Algorithm::Sha256, HMAC_SECRET.as_bytes(), &signed);
        Some(format!("v0={}", hex::encode(mac)))
    };
    let custom_signer: Signer = |raw| {
        let (id, ts) = (raw.header("x-fuzz-id")?, raw.header("x-fuzz-timestamp")?);
        let signed: [&[u8]; 5] = [id, b".", ts, b".", &raw.body];
        let mac = signature::mac(Algorithm::Sha512, HMAC_SECRET.as_bytes(), &signed);
        Some(format!("sha512={}", BASE64.encode(mac)))
    };
    vec![
        (preset("github"), github),
        (preset("shopify"), shopify),
        (preset("slack"), slack),
        (custom, custom_signer),
    ]
});

/// What a placeholder becomes in a delivery: its signature, when it can be made.
type SignWith<'a> = dyn Fn(&Raw) -> Option<String> + 'a;

/// A delivery as the fuzzer's bytes spell it (module docs).
#[derive(Debug, Default)]
struct Raw {
    /// Names and values as written, trimmed; not yet checked as HTTP.
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    query: String,
    body: Vec<u8>,
}

impl Raw {
    fn parse(data: &[u8]) -> Self {
        let Some(end) = data.windows(2).position(|w| w == b"\n\n") else {
            return Self {
                body: data.to_vec(),
                ..Self::default()
            };
        };
        let mut raw = Self {
            body: data[end + 2..].to_vec(),
            ..Self::default()
        };
        for line in data[..end].split(|b| *b == b'\n') {
            if let Some(query) = line.strip_prefix(b"?") {
                raw.query = String::from_utf8_lossy(query).into_owned();
            } else if let Some(colon) = line.iter().position(|b| *b == b':') {
                raw.headers.push((
                    line[..colon].trim_ascii().to_ascii_lowercase(),
                    line[colon + 1..].trim_ascii().to_vec(),
                ));
            }
        }
        raw
    }

    /// The first value written for `name` (lower case), as written.
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n == name.as_bytes())
            .map(|(_, v)| v.as_slice())
    }

    /// The headers that are valid HTTP, with each placeholder replaced by what its
    /// signer makes (a placeholder it makes nothing for stays as written).
    fn header_map(&self, placeholders: &[(&str, &SignWith<'_>)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in &self.headers {
            let mut value = value.clone();
            for (placeholder, sign) in placeholders {
                if contains(&value, placeholder.as_bytes())
                    && let Some(signature) = sign(self)
                {
                    value = replace(&value, placeholder.as_bytes(), signature.as_bytes());
                }
            }
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name),
                HeaderValue::from_bytes(&value),
            ) {
                map.append(name, value);
            }
        }
        map
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn replace(haystack: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len() + with.len());
    let mut rest = haystack;
    while let Some(at) = rest.windows(needle.len()).position(|w| w == needle) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(with);
        rest = &rest[at + needle.len()..];
    }
    out.extend_from_slice(rest);
    out
}

/// Verifies a delivery, and when it passes checks that the signature binds the body:
/// one byte more and the same headers must fail.
fn verify(source: &dyn Source, headers: &HeaderMap, raw: &Raw) -> bool {
    let delivery = Delivery {
        headers,
        query: &raw.query,
        body: &raw.body,
    };
    let verified = source.verify(delivery, NOW).is_ok();
    // A workflow token binds nothing: only signatures are checked against the body.
    if verified && source.kind() != GoHighLevelWorkflow::KIND {
        let longer = [raw.body.as_slice(), b" "].concat();
        let tampered = Delivery {
            body: &longer,
            ..delivery
        };
        assert!(
            source.verify(tampered, NOW).is_err(),
            "a {} signature that verifies does not bind the body",
            source.kind()
        );
    }
    verified
}

/// `Stripe-Signature` parsing: any text is parsed or refused, and what is parsed is
/// written back to a header that parses the same.
pub fn stripe_header(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(parsed) = stripe::parse_header(text) else {
        return;
    };
    assert!(parsed.t >= 0, "t is a number of ASCII digits: {text:?}");
    let v1_elements = text
        .split(',')
        .filter(|e| e.split_once('=').is_some_and(|(k, _)| k == "v1"))
        .count();
    assert!(parsed.v1.len() <= v1_elements, "{text:?}");
    let mut again = format!("t={}", parsed.t);
    for mac in &parsed.v1 {
        again.push_str(&format!(",v1={}", hex::encode(mac)));
    }
    if parsed.v1.is_empty() {
        again.push_str(",v1=");
    }
    assert_eq!(
        stripe::parse_header(&again).as_ref(),
        Ok(&parsed),
        "{text:?}"
    );
}

/// The Stripe verifier. A header that verifies holds a `t` within the tolerance and a
/// `v1` that is the HMAC of `t.body`. Returns whether it verified.
pub fn verify_stripe(data: &[u8]) -> bool {
    let raw = Raw::parse(data);
    let sign = |raw: &Raw| {
        let header = std::str::from_utf8(raw.header("stripe-signature")?).ok()?;
        let t = header.split(',').find_map(|e| e.strip_prefix("t="))?;
        let t = t
            .parse::<i64>()
            .map_or_else(|_| t.to_owned(), |t| t.to_string());
        let signed: [&[u8]; 3] = [t.as_bytes(), b".", &raw.body];
        let mac = signature::mac(Algorithm::Sha256, STRIPE_SECRET.as_bytes(), &signed);
        Some(hex::encode(mac))
    };
    let headers = raw.header_map(&[("{sig}", &sign)]);
    let verified = verify(STRIPE.source.as_ref(), &headers, &raw);
    if verified {
        let value = headers
            .get("stripe-signature")
            .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
            .expect("a verified delivery has one ASCII Stripe-Signature");
        let t: i64 = value
            .split(',')
            .find_map(|e| e.strip_prefix("t="))
            .and_then(|t| t.parse().ok())
            .expect("a verified header has a t");
        assert!(NOW - t <= TOLERANCE_SECS, "{value}");
        let t = t.to_string();
        let signed: [&[u8]; 3] = [t.as_bytes(), b".", &raw.body];
        let mac = hex::encode(signature::mac(
            Algorithm::Sha256,
            STRIPE_SECRET.as_bytes(),
            &signed,
        ));
        assert!(
            value
                .split(',')
                .filter_map(|e| e.strip_prefix("v1="))
                .any(|v| v.eq_ignore_ascii_case(&mac)),
            "verified without the HMAC among its v1 values: {value}"
        );
    }
    verified
}

/// The GoHighLevel verifier, `X-GHL-Signature` (Ed25519; `{sig}` signs with the
/// TEST-ONLY key) and the legacy `X-WH-Signature` (RSA, switched on).
pub fn verify_gohighlevel(data: &[u8]) -> bool {
    let raw = Raw::parse(data);
    let sign = |raw: &Raw| sources::gohighlevel::sign(GHL_ED25519_PRIVATE, &raw.body);
    let headers = raw.header_map(&[("{sig}", &sign)]);
    verify(GOHIGHLEVEL.source.as_ref(), &headers, &raw)
}

/// The workflow token check. What it takes, a source with another token refuses, and
/// every credential it took is the token.
pub fn verify_gohighlevel_workflow(data: &[u8]) -> bool {
    let raw = Raw::parse(data);
    let headers = raw.header_map(&[]);
    let verified = verify(WORKFLOW.source.as_ref(), &headers, &raw);
    if verified {
        let other = Delivery {
            headers: &headers,
            query: &raw.query,
            body: &raw.body,
        };
        assert!(
            WORKFLOW_OTHER.source.verify(other, NOW).is_err(),
            "one delivery passed two tokens"
        );
        // After `Bearer `, when there is a token there at all.
        let bearer = headers
            .get("authorization")
            .and_then(|auth| auth.as_bytes().trim_ascii().get(7..))
            .map(<[u8]>::trim_ascii)
            .filter(|token| !token.is_empty());
        if let Some(token) = bearer {
            assert_eq!(token, WORKFLOW_TOKEN.as_bytes(), "another token passed");
        }
    }
    verified
}

/// The Standard Webhooks verifier, `v1` (HMAC; `{v1}`) and `v1a` (Ed25519; `{v1a}`).
/// A delivery that verifies has a timestamp within the tolerance both ways.
pub fn verify_standard_webhooks(data: &[u8]) -> bool {
    let raw = Raw::parse(data);
    // The signed content, `{id}.{timestamp}.{body}`, of whichever header family is there.
    let signed = |raw: &Raw| {
        let family = if raw.header("webhook-signature").is_some() {
            "webhook"
        } else {
            "svix"
        };
        let id = raw.header(&format!("{family}-id"))?;
        let ts = raw.header(&format!("{family}-timestamp"))?;
        Some([id, b".", ts, b".", &raw.body].concat())
    };
    let v1 = |raw: &Raw| {
        let key = standard_webhooks::decode_secret(STANDARD_WEBHOOKS_SECRET).ok()?;
        let mac = signature::mac(Algorithm::Sha256, &key, &[&signed(raw)?]);
        Some(format!("v1,{}", BASE64.encode(mac)))
    };
    let v1a = |raw: &Raw| {
        let key = ed25519_dalek::SigningKey::from_bytes(&STANDARD_WEBHOOKS_SIGNING_KEY);
        let signature = key.sign(&signed(raw)?);
        Some(format!("v1a,{}", BASE64.encode(signature.to_bytes())))
    };
    let headers = raw.header_map(&[("{v1}", &v1), ("{v1a}", &v1a)]);
    let verified = verify(STANDARD_WEBHOOKS.source.as_ref(), &headers, &raw);
    if verified {
        let ts = ["webhook-timestamp", "svix-timestamp"]
            .iter()
            .find_map(|h| headers.get(*h))
            .and_then(|v| v.to_str().ok()?.trim().parse::<i64>().ok())
            .expect("a verified delivery has a timestamp");
        assert!((NOW - ts).abs() <= TOLERANCE_SECS, "{ts}");
    }
    verified
}

/// The generic HMAC verifier, under each of its sources; `{sig}` is the signature of
/// the source it is verified by. Returns how many sources it verified under.
pub fn verify_hmac(data: &[u8]) -> usize {
    let raw = Raw::parse(data);
    let mut verified = 0;
    for (built, signer) in HMAC.iter() {
        let headers = raw.header_map(&[("{sig}", signer)]);
        if verify(built.source.as_ref(), &headers, &raw) {
            verified += 1;
            let delivery = Delivery {
                headers: &headers,
                query: &raw.query,
                body: &raw.body,
            };
            // Slack's handshake is answered only after verification, so only here.
            let _ = built.source.handshake(delivery);
        }
    }
    verified
}

/// Normalizes a delivery as `built`, checks what every event must be, and that the
/// headers the source records make the same event again (a replay's).
fn normalize(built: &Built, raw: &Raw) -> v1::WebhookEvent {
    let headers = raw.header_map(&[]);
    let delivery = Delivery {
        headers: &headers,
        query: &raw.query,
        body: &raw.body,
    };
    let source = built.source.as_ref();
    let event = source.normalize(built.name, delivery, RECEIVED_AT_MS);
    let scope = format!("{}:", built.name);
    assert!(
        event.id.len() > scope.len() && event.id.starts_with(&scope),
        "event id {:?} is not an id in the source's scope",
        event.id
    );
    assert_eq!(event.source, built.name);
    assert_eq!(event.kind, source.kind());
    assert!(event.payload.is_some(), "an event without a payload");
    assert!(event.occurred_at.is_some(), "an event without its time");
    assert_eq!(event.received_at, Some(timestamp(RECEIVED_AT_MS)));
    if let Some(v1::webhook_event::Payload::Ignored(_)) = event.payload {
        assert_eq!(
            event.raw_body.as_deref(),
            Some(raw.body.as_slice()),
            "an ignored event without its body"
        );
    }
    let recorded = header_map_of(&source.recorded_headers(&headers));
    let replay = Delivery {
        headers: &recorded,
        query: "",
        body: &raw.body,
    };
    assert_eq!(
        source.normalize(built.name, replay, RECEIVED_AT_MS),
        event,
        "a replay with the recorded headers makes another event"
    );
    event
}

/// The Stripe normalizer.
pub fn normalize_stripe(data: &[u8]) -> v1::WebhookEvent {
    normalize(&STRIPE, &Raw::parse(data))
}

/// The GoHighLevel marketplace normalizer (the fixtures' app).
pub fn normalize_gohighlevel(data: &[u8]) -> v1::WebhookEvent {
    normalize(&GOHIGHLEVEL, &Raw::parse(data))
}

/// The GoHighLevel workflow normalizer (with an `id_pointer`).
pub fn normalize_gohighlevel_workflow(data: &[u8]) -> v1::WebhookEvent {
    normalize(&WORKFLOW, &Raw::parse(data))
}

/// The Standard Webhooks normalizer, through a mapping with every kind of action.
pub fn normalize_standard_webhooks(data: &[u8]) -> v1::WebhookEvent {
    normalize(&STANDARD_WEBHOOKS, &Raw::parse(data))
}

/// The generic HMAC normalizer, as each of the `hmac` sources.
pub fn normalize_hmac(data: &[u8]) -> Vec<v1::WebhookEvent> {
    let raw = Raw::parse(data);
    HMAC.iter()
        .map(|(built, _)| normalize(built, &raw))
        .collect()
}

/// The variable every `env:` reference resolves to: no problem may quote it.
const CANARY: &str = "whsec_CANARY_fuzz_secret_never_quoted";

/// The configuration loader on any text, as `edge --check-config` reads a file: the
/// sources' summary, or every problem, none of which quotes a secret.
pub fn config(data: &[u8]) -> Result<Vec<String>, Vec<String>> {
    let Ok(text) = std::str::from_utf8(data) else {
        return Err(Vec::new());
    };
    let args = Args::for_file("edge.toml");
    let env = |_: &str| Some(CANARY.to_owned());
    match Config::parse(text, Path::new("."), &args, &env) {
        Ok(config) => Ok(config.summary()),
        Err(problems) => {
            assert!(!problems.is_empty(), "refused without a problem");
            let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
            for line in &lines {
                assert!(
                    !line.contains("CANARY"),
                    "a problem quotes a secret: {line}"
                );
            }
            Err(lines)
        }
    }
}

#[cfg(test)]
mod tests;
