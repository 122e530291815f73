//! Standard Webhooks senders through the whole pipeline, signed by the official
//! `standardwebhooks` Python package.

use hookline_proto::v1;
use hookline_tests::{Reply, Stack, metric, now_secs, sign_as};
use serde_json::json;

/// The reference libraries' test secret, and a second one for rotation.
const OLD: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const NEW: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

fn acme() -> String {
    format!(
        r#"
[sources.acme]
kind = "standard-webhooks"
secrets = ["{OLD}", "{NEW}"]

[sources.acme.map]
email = "/data/email"
phone = "/data/phone"
first_name = "/data/first_name"

[[sources.acme.actions]]
types = ["invoice.paid"]
do = "purchase"
purchase_id = "/data/invoice"
amount = "/data/amount"
currency = "/data/currency"

[[sources.acme.actions]]
types = ["user.*"]
do = "contact"
"#
    )
}

/// Posts `body` to `/webhooks/acme` with these three headers.
async fn post(stack: &Stack, id: &str, ts: &str, signature: &str, body: &[u8]) -> Reply {
    let mut headers = vec![];
    for (k, v) in [
        ("webhook-id", id),
        ("webhook-timestamp", ts),
        ("webhook-signature", signature),
    ] {
        if !v.is_empty() {
            headers.push((k, v));
        }
    }
    stack
        .http
        .post(&stack.edge.url("/webhooks/acme"), body.to_vec(), &headers)
        .await
}

/// The official library's signature of `body` with `secret`, for `id` at `ts`.
async fn official(secret: &str, id: &str, ts: i64, body: &[u8]) -> String {
    sign_as(&["standard-webhooks", secret, id, &ts.to_string()], body).await
}

fn user_created(email: &str) -> Vec<u8> {
    json!({
        "type": "user.created",
        "timestamp": "2026-12-01T10:00:00Z",
        "data": {"email": email, "phone": "+14155550123", "first_name": "Ada"}
    })
    .to_string()
    .into_bytes()
}

#[tokio::test]
async fn payloads_signed_by_the_official_library_apply_once_under_either_secret() {
    let stack = Stack::start_with_sources(&acme()).await;
    let body = user_created("ada@example.com");
    let now = now_secs();
    let sig = official(NEW, "msg_user_1", now, &body).await;
    let reply = post(&stack, "msg_user_1", &now.to_string(), &sig, &body).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.json()["status"], "applied");
    assert_eq!(reply.json()["event_id"], "msg_user_1");
    let contact = stack
        .contacts
        .lookup_email("ada@example.com")
        .await
        .expect("found");
    assert_eq!(contact.first_name, "Ada");
    assert_eq!(contact.phone, "+14155550123");

    // A retry carries the same webhook-id and a new timestamp and signature.
    let later = now + 5;
    let sig = official(NEW, "msg_user_1", later, &body).await;
    let reply = post(&stack, "msg_user_1", &later.to_string(), &sig, &body).await;
    assert_eq!(reply.json()["status"], "duplicate", "{:?}", reply.body);

    // Signed with the old secret during a rotation: taken too.
    let invoice = json!({
        "type": "invoice.paid", "timestamp": "2026-12-01T10:05:00Z",
        "data": {"email": "ada@example.com", "invoice": "in_1", "amount": 4900, "currency": "EUR"}
    })
    .to_string()
    .into_bytes();
    let sig = official(OLD, "msg_invoice_1", now, &invoice).await;
    let reply = post(&stack, "msg_invoice_1", &now.to_string(), &sig, &invoice).await;
    assert_eq!(reply.json()["status"], "applied", "{:?}", reply.body);

    // A rotating sender signs with both and sends both entries.
    let renamed = json!({
        "type": "user.updated",
        "timestamp": "2026-12-01T10:10:00Z",
        "data": {"email": "ada@example.com", "first_name": "Augusta Ada"}
    })
    .to_string()
    .into_bytes();
    let both = format!(
        "{} {}",
        official(OLD, "msg_user_2", now, &renamed).await,
        official(NEW, "msg_user_2", now, &renamed).await
    );
    let reply = post(&stack, "msg_user_2", &now.to_string(), &both, &renamed).await;
    assert_eq!(reply.json()["status"], "applied", "{:?}", reply.body);

    // A payload without any mapped identifier of a person: acknowledged, ignored and
    // recorded with its body.
    let nobody = json!({"type": "user.created", "data": {"first_name": "Nobody"}})
        .to_string()
        .into_bytes();
    let sig = official(NEW, "msg_nobody", now, &nobody).await;
    let reply = post(&stack, "msg_nobody", &now.to_string(), &sig, &nobody).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.json()["status"], "ignored");
    assert_eq!(reply.json()["reason"], "no contact identifiers");
    let ignored = stack
        .contacts
        .events(v1::ListEventsRequest {
            outcome: v1::EventOutcome::Ignored.into(),
            ..Default::default()
        })
        .await;
    assert_eq!(ignored.len(), 1);
    assert_eq!(ignored[0].event_id, "acme:msg_nobody");
    assert_eq!(ignored[0].body, nobody);

    let contact = stack
        .contacts
        .lookup_email("ada@example.com")
        .await
        .expect("found");
    assert_eq!(contact.first_name, "Augusta Ada");
    assert_eq!(contact.stage(), v1::Stage::Purchased);
    assert_eq!(contact.purchases.len(), 1);
    assert_eq!(
        (
            contact.purchases[0].purchase_id.as_str(),
            contact.purchases[0].amount,
            contact.purchases[0].currency.as_str()
        ),
        ("in_1", 4900, "eur")
    );
    let log = stack
        .contacts
        .events(v1::ListEventsRequest {
            source: "acme".into(),
            ..Default::default()
        })
        .await;
    let mut applied: Vec<&str> = log
        .iter()
        .filter(|e| e.outcome() == v1::EventOutcome::Applied)
        .map(|e| e.event_id.as_str())
        .collect();
    applied.sort_unstable();
    assert_eq!(
        applied,
        ["acme:msg_invoice_1", "acme:msg_user_1", "acme:msg_user_2"]
    );
}

#[tokio::test]
async fn every_rejection_is_401_and_stores_nothing() {
    let stack = Stack::start_with_sources(&acme()).await;
    let body = user_created("mallory@example.com");
    let now = now_secs();
    let ts = now.to_string();
    let good = official(NEW, "msg_1", now, &body).await;
    // A minute past the 300 s tolerance: the seconds signing takes cannot bring it back.
    let stale = official(NEW, "msg_1", now - 360, &body).await;
    let future = official(NEW, "msg_1", now + 360, &body).await;
    let wrong_key = official(
        "whsec_bm90IG91cnMgYXQgYWxsLCBub3Qgb3Vycw==",
        "msg_1",
        now,
        &body,
    )
    .await;
    let other_id = official(NEW, "msg_2", now, &body).await;
    let v1a = good.replacen("v1,", "v1a,", 1);
    let cases: Vec<(&str, &str, String, String)> = vec![
        ("stale", "msg_1", (now - 360).to_string(), stale),
        ("future", "msg_1", (now + 360).to_string(), future),
        ("wrong key", "msg_1", ts.clone(), wrong_key),
        ("no webhook-id", "", ts.clone(), good.clone()),
        ("no webhook-timestamp", "msg_1", String::new(), good.clone()),
        ("no webhook-signature", "msg_1", ts.clone(), String::new()),
        (
            "bad base64",
            "msg_1",
            ts.clone(),
            "v1,!!!!not-base64".into(),
        ),
        ("v1a with an HMAC", "msg_1", ts.clone(), v1a),
        ("signed for another id", "msg_1", ts.clone(), other_id),
        (
            "another timestamp than signed",
            "msg_1",
            (now - 1).to_string(),
            good.clone(),
        ),
    ];
    let count = cases.len();
    for (name, id, ts, sig) in cases {
        let reply = post(&stack, id, &ts, &sig, &body).await;
        assert_eq!(reply.status, 401, "{name}: {:?}", reply.body);
        assert!(reply.json()["error"].as_str().is_some(), "{name}");
    }
    assert_eq!(
        stack.redis.dbsize().await,
        0,
        "a refused request stored something"
    );
    let metrics = stack.http.get(&stack.edge.metrics_url("/metrics")).await;
    let text = String::from_utf8_lossy(&metrics.body);
    let refused = metric(
        &text,
        "hookline_edge_verification_failures_total",
        &[("source", "acme")],
    );
    assert_eq!(refused, count as f64, "{text}");
    // The same delivery, signed correctly, still goes through afterwards.
    let reply = post(&stack, "msg_1", &ts, &good, &body).await;
    assert_eq!(reply.json()["status"], "applied", "{:?}", reply.body);
}
