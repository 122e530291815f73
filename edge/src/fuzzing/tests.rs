//! The fuzz targets on stable, a bounded number of cases each: arbitrary bytes, and
//! structured inputs that reach past the first checks (headers that look right with
//! random parts, fixture bodies with random changes), with what each must answer.

use proptest::prelude::*;
use serde_json::Value;

use super::*;

macro_rules! fixtures {
    ($dir:literal: $($name:literal),+ $(,)?) => {
        &[$(include_bytes!(concat!("../../../tests/fixtures/", $dir, "/", $name))),+]
    };
}

const STRIPE_BODIES: &[&[u8]] = fixtures!("stripe":
    "charge_refunded.json",
    "charge_succeeded.json",
    "charge_succeeded_uncaptured.json",
    "checkout_session_async_payment_succeeded.json",
    "checkout_session_completed_guest_paid.json",
    "checkout_session_completed_subscription.json",
    "checkout_session_completed_unpaid.json",
    "customer_created.json",
    "customer_updated.json",
    "invoice_paid_basil.json",
    "payment_intent_succeeded.json",
    "product_created_unmapped.json",
    "refund_created.json",
    "refund_updated_failed.json",
    "thin_v2_event.json",
);

const GHL_BODIES: &[&[u8]] = fixtures!("gohighlevel/fixtures":
    "AppointmentCreate.json",
    "AppointmentDelete.json",
    "AppointmentUpdate-cancelled.json",
    "AppointmentUpdate-noshow.json",
    "AppointmentUpdate-showed.json",
    "ContactCreate.json",
    "ContactDelete.json",
    "ContactTagUpdate.json",
    "ContactUpdate.json",
    "INSTALL.json",
    "InvoicePaid.json",
    "OpportunityCreate.json",
    "UNINSTALL.json",
);

const WORKFLOW_BODIES: &[&[u8]] = fixtures!("gohighlevel/fixtures":
    "workflow-custom-webhook.json",
    "workflow-webhook-appointment-booked.json",
    "workflow-webhook-appointment-showed.json",
    "workflow-webhook-contact-created.json",
);

/// Payloads of the shapes the Standard Webhooks and hmac mappings read.
const MAPPED_BODIES: &[&[u8]] = &[
    br#"{"type":"user.created","timestamp":"2026-12-04T09:30:00Z","data":{"id":"user_1","email":"Grace.Hopper@Example.com","first_name":"Grace","phone":"+1 415 555 0199"}}"#,
    br#"{"type":"payment.succeeded","timestamp":1767225600,"data":{"id":"user_1","email":"a@example.com","payment_id":"pay_1","amount":"12.50","currency":"EUR"}}"#,
    br#"{"type":"payment.refunded","data":{"email":"a@example.com","refund_id":"re_1","payment_id":"pay_1","amount":500,"currency":"usd"}}"#,
    br#"{"type":"tags.added","data":{"email":"a@example.com","tags":["vip","beta"]}}"#,
    br#"{"type":"appointment.booked","data":{"email":"a@example.com","appointment_id":"ap_1","status":"booked","start":"2026-12-03T10:00:00-05:00","end":"2026-12-03T11:00:00Z"}}"#,
    br#"{"id":"evt_1","email":"b@example.com","user":{"email":"c@example.com","phone":"4155550100"},"order":{"id":"o_1","total":4900,"currency":"usd"},"at":"2026-01-01T00:00:00Z"}"#,
    br#"{"type":"url_verification","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","token":"x"}"#,
    br#"{"event_id":"Ev1","event_time":1767225600,"event":{"type":"team_join","user":{"email":"d@example.com"}}}"#,
];

/// The RSA test vector: the compact body and its legacy signature by the TEST-ONLY key.
const GHL_VECTOR_BODY: &[u8] = include_bytes!(
    "../../../tests/fixtures/gohighlevel/test-vectors/AppointmentUpdate-showed.body.json"
);
const GHL_VECTOR_RSA: &str = include_str!(
    "../../../tests/fixtures/gohighlevel/test-vectors/AppointmentUpdate-showed.x-wh-signature.txt"
);

/// A delivery in the targets' format: header lines, an empty line, the body.
fn delivery(headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in headers {
        out.extend_from_slice(format!("{name}: {value}\n").as_bytes());
    }
    out.push(b'\n');
    out.extend_from_slice(body);
    out
}

fn any_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..4096)
}

/// Bytes that start like a delivery: header lines of random text, then random bytes.
fn any_delivery() -> impl Strategy<Value = Vec<u8>> {
    let line = "[a-zA-Z-]{1,24}: [ -~]{0,80}";
    (prop::collection::vec(line, 0..6), any_bytes()).prop_map(|(lines, body)| {
        let mut out = lines.join("\n").into_bytes();
        out.extend_from_slice(b"\n\n");
        out.extend_from_slice(&body);
        out
    })
}

/// A JSON value to put in place of a field: wrong types, odd numbers, odd text.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        Just(serde_json::json!(1e300)),
        Just(serde_json::json!(u64::MAX)),
        "[ -~]{0,40}".prop_map(Value::from),
        "\\PC{0,20}".prop_map(Value::from),
        Just(Value::from("2026-02-30T25:61:00+99:00")),
        Just(Value::from("Thu, Feb 31st, 2026 | 13:99 pm")),
        Just(Value::from("")),
    ];
    leaf.prop_recursive(2, 8, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Replaces the `n`-th value of `v` (depth first, modulo their number) with `with`.
fn replace_nth(v: &mut Value, n: usize, with: Value) {
    fn count(v: &Value) -> usize {
        1 + match v {
            Value::Array(a) => a.iter().map(count).sum(),
            Value::Object(m) => m.values().map(count).sum(),
            _ => 0,
        }
    }
    fn walk(v: &mut Value, n: &mut usize, with: &mut Option<Value>) {
        if *n == 0 {
            if let Some(with) = with.take() {
                *v = with;
            }
            return;
        }
        *n -= 1;
        match v {
            Value::Array(a) => a.iter_mut().for_each(|c| walk(c, n, with)),
            Value::Object(m) => m.values_mut().for_each(|c| walk(c, n, with)),
            _ => {}
        }
    }
    let mut n = n % count(v);
    walk(v, &mut n, &mut Some(with));
}

/// One of `bodies`, changed: a JSON value replaced (it stays JSON, with a field of
/// another type or value), or bytes overwritten (it mostly stops being JSON).
fn mutated(bodies: &'static [&'static [u8]]) -> impl Strategy<Value = Vec<u8>> {
    let pick = 0..bodies.len();
    let by_value = (pick.clone(), any::<usize>(), any_json()).prop_map(move |(i, n, with)| {
        let mut v: Value = serde_json::from_slice(bodies[i]).expect("a JSON fixture");
        replace_nth(&mut v, n, with);
        serde_json::to_vec(&v).expect("JSON")
    });
    let by_bytes = (
        pick,
        prop::collection::vec((any::<usize>(), any::<u8>()), 1..8),
    )
        .prop_map(move |(i, changes)| {
            let mut body = bodies[i].to_vec();
            for (at, byte) in changes {
                let at = at % body.len();
                body[at] = byte;
            }
            body
        });
    prop_oneof![3 => by_value, 1 => by_bytes]
}

/// Every target that reads a delivery (headers and body): each verifier and normalizer.
fn every_delivery_target(data: &[u8]) {
    verify_stripe(data);
    verify_gohighlevel(data);
    verify_gohighlevel_workflow(data);
    verify_standard_webhooks(data);
    verify_hmac(data);
    normalize_stripe(data);
    normalize_gohighlevel(data);
    normalize_gohighlevel_workflow(data);
    normalize_standard_webhooks(data);
    normalize_hmac(data);
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        // A failure is reported with its input; nothing to keep between runs.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn every_target_takes_any_bytes(data in any_bytes()) {
        stripe_header(&data);
        every_delivery_target(&data);
        let _ = super::config(&data);
    }

    #[test]
    fn every_delivery_target_takes_any_headers(data in any_delivery()) {
        every_delivery_target(&data);
    }

    /// Headers of `t`, `v1`, `v0` and junk elements in any order parse back the same.
    #[test]
    fn stripe_headers_of_any_elements(
        elements in prop::collection::vec(prop_oneof![
            "t=[0-9]{0,20}",
            "v1=[0-9a-f]{64}",
            "v1=[0-9a-fA-F]{0,66}",
            "v0=[0-9a-f]{0,64}",
            "[ -~]{0,12}",
        ], 0..6),
    ) {
        stripe_header(elements.join(",").as_bytes());
    }

    /// A signed Stripe delivery verifies exactly while its `t` is not too old.
    #[test]
    fn stripe_signatures_made_with_the_secret_verify_when_fresh(
        body in mutated(STRIPE_BODIES),
        age in -400_i64..400,
        extra in prop_oneof![Just(String::new()), Just(",v0=abc".to_owned()), ",v1=[0-9a-f]{64}"],
    ) {
        let header = format!("t={},v1={{sig}}{extra}", NOW - age);
        let data = delivery(&[("Stripe-Signature", &header)], &body);
        prop_assert_eq!(verify_stripe(&data), age <= TOLERANCE_SECS);
        normalize_stripe(&body);
    }

    /// GoHighLevel: an Ed25519 signature by the key verifies on any body.
    #[test]
    fn gohighlevel_signatures_verify_on_any_body(body in mutated(GHL_BODIES)) {
        let data = delivery(&[("X-GHL-Signature", "{sig}")], &body);
        prop_assert!(verify_gohighlevel(&data));
        normalize_gohighlevel(&body);
    }

    /// The workflow token passes in the header or the query, and nothing else does.
    #[test]
    fn workflow_tokens(body in mutated(WORKFLOW_BODIES), token in "[!-~]{1,40}", query in any::<bool>()) {
        let right = token == WORKFLOW_TOKEN;
        let data = if query {
            let mut data = format!("?a=1&token={token}\n").into_bytes();
            data.extend_from_slice(&delivery(&[], &body));
            data
        } else {
            delivery(&[("Authorization", &format!("Bearer {token}"))], &body)
        };
        prop_assert_eq!(verify_gohighlevel_workflow(&data), right);
        let real = delivery(&[("Authorization", &format!("Bearer {WORKFLOW_TOKEN}"))], &body);
        prop_assert!(verify_gohighlevel_workflow(&real));
        normalize_gohighlevel_workflow(&body);
    }

    /// Standard Webhooks: `v1` and `v1a` entries made with the keys verify among junk
    /// while the timestamp is within the tolerance either way.
    #[test]
    fn standard_webhooks_signatures_verify_when_fresh(
        body in mutated(MAPPED_BODIES),
        id in "[a-zA-Z0-9_]{1,30}",
        skew in -400_i64..400,
        entry in prop_oneof![Just("{v1}"), Just("{v1a}")],
        junk in "[ -~]{0,40}",
        svix in any::<bool>(),
    ) {
        let family = if svix { "svix" } else { "webhook" };
        let ts = (NOW + skew).to_string();
        let signature = format!("{junk} {entry}");
        let data = delivery(
            &[
                (&format!("{family}-id"), &id),
                (&format!("{family}-timestamp"), &ts),
                (&format!("{family}-signature"), &signature),
            ],
            &body,
        );
        // Junk with more than 15 entries of its own is refused before any is checked.
        let entries = signature.split(' ').filter(|e| !e.is_empty()).count();
        prop_assert_eq!(verify_standard_webhooks(&data), skew.abs() <= TOLERANCE_SECS && entries <= 16);
        normalize_standard_webhooks(&data);
    }

    /// Each hmac source takes its own signature, and the other sources refuse it.
    #[test]
    fn hmac_signatures_verify_under_their_source(
        body in mutated(MAPPED_BODIES),
        which in 0_usize..4,
        id in "[a-z0-9_]{1,20}",
    ) {
        let ts = NOW.to_string();
        let headers: Vec<(&str, &str)> = match which {
            0 => vec![("X-Hub-Signature-256", "{sig}"), ("X-GitHub-Event", "push")],
            1 => vec![("X-Shopify-Hmac-Sha256", "{sig}"), ("X-Shopify-Topic", "orders/paid")],
            2 => vec![("X-Slack-Signature", "{sig}"), ("X-Slack-Request-Timestamp", &ts)],
            _ => vec![
                ("X-Fuzz-Signature", "{sig}"),
                ("X-Fuzz-Timestamp", &ts),
                ("X-Fuzz-Id", &id),
                ("X-Fuzz-Event", "order.paid"),
            ],
        };
        let data = delivery(&headers, &body);
        prop_assert_eq!(verify_hmac(&data), 1);
        normalize_hmac(&data);
    }

    /// A valid configuration with one line changed is checked without a panic, and
    /// problems never quote the secret of an `env:` reference.
    #[test]
    fn configurations_with_a_line_changed(
        line in any::<usize>(),
        value in prop_oneof![
            Just("\"env:ANY\"".to_owned()),
            Just("[\"env:ANY\", \"whsec_x\"]".to_owned()),
            Just("-1".to_owned()),
            Just("18446744073709551616".to_owned()),
            Just("{ a = 1 }".to_owned()),
            Just("\"\"".to_owned()),
            "\"[ -~]{0,30}\"",
            "[0-9]{1,12}",
        ],
    ) {
        let lines: Vec<&str> = SAMPLE_CONFIG.lines().collect();
        let at = line % lines.len();
        let changed: Vec<String> = lines
            .iter()
            .enumerate()
            .map(|(i, l)| match l.split_once(" = ") {
                Some((key, _)) if i == at => format!("{key} = {value}"),
                _ => (*l).to_owned(),
            })
            .collect();
        let _ = super::config(changed.join("\n").as_bytes());
    }
}

/// A configuration with every kind of source, as a seed of the config target.
const SAMPLE_CONFIG: &str = r#"listen = "127.0.0.1:8080"
contacts_url = "http://127.0.0.1:50051"
max_body_bytes = 1048576
metrics_listen = "127.0.0.1:8081"
contacts_dns_refresh_secs = 30
max_connections = 1000

[sources.stripe]
kind = "stripe"
secrets = ["env:STRIPE_SECRET"]
tolerance_secs = 300

[sources.ghl-workflow]
kind = "gohighlevel-workflow"
token = "env:GHL_TOKEN"
id_pointer = "/customData/event_id"
dedup_window_secs = 3600

[sources.acme]
kind = "standard-webhooks"
secrets = ["whsec_aG9va2xpbmUtZGV2ZWxvcG1lbnQtb25seS1zZWNyZXQ="]

[sources.acme.map]
email = "/data/email"
external_id = "/data/id"

[[sources.acme.actions]]
types = ["payment.succeeded"]
do = "purchase"
purchase_id = "/data/payment_id"
amount = "/data/amount"
currency = "/data/currency"

[sources.github]
kind = "hmac"
preset = "github"
secrets = ["env:GITHUB_SECRET"]
"#;

#[test]
fn the_sample_configuration_is_valid_and_its_secrets_are_never_quoted() {
    let summary = super::config(SAMPLE_CONFIG.as_bytes()).expect("a valid configuration");
    assert_eq!(summary.len(), 4, "{summary:?}");
    // The canary is no Standard Webhooks secret: the problem names the key, and the
    // target has checked that it does not quote the value.
    let bad = SAMPLE_CONFIG.replace(
        "whsec_aG9va2xpbmUtZGV2ZWxvcG1lbnQtb25seS1zZWNyZXQ=",
        "env:ACME_SECRET",
    );
    let problems = super::config(bad.as_bytes()).expect_err("the canary is not base64");
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("sources.acme.secrets[0]: ")),
        "{problems:?}"
    );
}

/// The legacy RSA signature of the test vector verifies on its body only (outside the
/// property tests: a 4096-bit check takes long in a debug build).
#[test]
fn the_rsa_vector_verifies_on_its_own_body() {
    let legacy = |body: &[u8]| delivery(&[("X-WH-Signature", GHL_VECTOR_RSA.trim())], body);
    assert!(verify_gohighlevel(&legacy(GHL_VECTOR_BODY)));
    let changed = [GHL_VECTOR_BODY, b" "].concat();
    assert!(!verify_gohighlevel(&legacy(&changed)));
}

#[test]
fn placeholders_are_replaced_by_the_signature_of_the_delivery() {
    let body = br#"{"id":"evt_1","type":"customer.created"}"#;
    let data = delivery(
        &[("Stripe-Signature", &format!("t={NOW},v1={{sig}}"))],
        body,
    );
    assert!(verify_stripe(&data));
    // Written out, the same signature verifies without the placeholder.
    let t = NOW.to_string();
    let mac = signature::mac(
        Algorithm::Sha256,
        STRIPE_SECRET.as_bytes(),
        &[t.as_bytes(), b".", body],
    );
    let written = format!("t={NOW},v1={}", hex::encode(mac));
    assert!(verify_stripe(&delivery(
        &[("Stripe-Signature", &written)],
        body
    )));
    assert!(!verify_stripe(&delivery(
        &[("Stripe-Signature", &written)],
        b"{}"
    )));
    // Bytes without an empty line are a body alone.
    let raw = Raw::parse(b"Stripe-Signature: t=1,v1=00");
    assert!(raw.headers.is_empty());
    assert_eq!(raw.body, b"Stripe-Signature: t=1,v1=00");
}
