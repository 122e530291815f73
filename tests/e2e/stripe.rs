//! Stripe webhooks through the whole pipeline.

use hookline_proto::v1;
use std::time::Duration;

use hookline_tests::{STRIPE_SECRET, Stack, eventually, now_secs, stripe_checkout, stripe_sign};

async fn events(stack: &Stack) -> Vec<v1::EventRecord> {
    stack
        .contacts
        .events(v1::ListEventsRequest::default())
        .await
}

#[tokio::test]
async fn a_signed_checkout_creates_a_contact_found_by_email_in_any_case() {
    let stack = Stack::start().await;
    let body = stripe_checkout("evt_checkout_1", "Jenny.Rosen@Example.com", 4900, "pi_1");
    let reply = stack.post_stripe(&body).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.json()["status"], "applied");
    assert_eq!(reply.json()["event_id"], "evt_checkout_1");

    for spelling in [
        "jenny.rosen@example.com",
        "JENNY.ROSEN@EXAMPLE.COM",
        " Jenny.Rosen@example.COM ",
    ] {
        let contact = stack.contacts.lookup_email(spelling).await.expect("found");
        assert_eq!(contact.email, "jenny.rosen@example.com");
        assert_eq!(contact.email_original, "Jenny.Rosen@Example.com");
        assert_eq!(contact.phone, "+14155550100");
        assert_eq!(contact.name, "Jenny Rosen");
        assert_eq!(contact.stage(), v1::Stage::Purchased);
        assert_eq!(contact.purchases.len(), 1);
        assert_eq!(contact.purchases[0].purchase_id, "pi_1");
        assert_eq!(contact.purchases[0].amount, 4900);
        assert_eq!(contact.purchases[0].currency, "usd");
        assert_eq!(contact.totals[0].purchased, 4900);
    }
    let log = events(&stack).await;
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].event_id, "stripe:evt_checkout_1");
    assert_eq!(log[0].outcome(), v1::EventOutcome::Applied);
}

#[tokio::test]
async fn forged_stale_tampered_or_reserialized_requests_are_refused_and_store_nothing() {
    let stack = Stack::start().await;
    let body = stripe_checkout("evt_forged", "mallory@example.com", 100, "pi_forged");
    let now = now_secs();
    let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let pretty = serde_json::to_vec_pretty(&value).unwrap();
    let mut tampered = body.clone();
    let at = tampered.iter().position(|b| *b == b'1').unwrap();
    tampered[at] = b'9';

    let cases: Vec<(&str, Vec<u8>, Option<String>)> = vec![
        ("no signature", body.clone(), None),
        ("empty signature", body.clone(), Some(String::new())),
        (
            "wrong secret",
            body.clone(),
            Some(stripe_sign("whsec_not_the_secret", now, &body)),
        ),
        (
            "secret without whsec_",
            body.clone(),
            Some(stripe_sign("hookline_test_secret", now, &body)),
        ),
        (
            "stale timestamp",
            body.clone(),
            Some(stripe_sign(STRIPE_SECRET, now - 301, &body)),
        ),
        (
            "tampered body",
            tampered,
            Some(stripe_sign(STRIPE_SECRET, now, &body)),
        ),
        (
            "re-serialized body",
            pretty,
            Some(stripe_sign(STRIPE_SECRET, now, &body)),
        ),
        (
            "garbage header",
            body.clone(),
            Some("bad_header".to_owned()),
        ),
    ];
    for (name, payload, sig) in cases {
        let headers: Vec<(&str, &str)> = sig
            .iter()
            .map(|s| ("stripe-signature", s.as_str()))
            .collect();
        let reply = stack
            .http
            .post(&stack.edge.url("/webhooks/stripe"), payload, &headers)
            .await;
        assert_eq!(reply.status, 401, "{name}: {:?}", reply.body);
        assert!(reply.json()["error"].as_str().is_some(), "{name}");
    }
    assert_eq!(
        stack.redis.dbsize().await,
        0,
        "a refused request stored something"
    );
    assert_eq!(
        stack
            .contacts
            .lookup_email("mallory@example.com")
            .await
            .unwrap_err()
            .code(),
        tonic::Code::NotFound
    );
    // The same event, correctly signed, still goes through afterwards.
    assert_eq!(stack.post_stripe(&body).await.json()["status"], "applied");
}

#[tokio::test]
async fn the_same_event_delivered_20_times_at_once_takes_effect_once() {
    let stack = Stack::start().await;
    let body = stripe_checkout("evt_dup", "dup@example.com", 2500, "pi_dup");
    let replies = futures::future::join_all((0..20).map(|_| stack.post_stripe(&body))).await;
    let mut applied = 0;
    for r in &replies {
        assert_eq!(r.status, 200, "{:?}", r.body);
        match r.json()["status"].as_str() {
            Some("applied") => applied += 1,
            Some("duplicate") => {}
            other => panic!("unexpected status {other:?}"),
        }
    }
    assert_eq!(applied, 1);
    let contact = stack
        .contacts
        .lookup_email("dup@example.com")
        .await
        .unwrap();
    assert_eq!(contact.purchases.len(), 1);
    assert_eq!(contact.totals[0].purchased, 2500);
    assert_eq!(events(&stack).await.len(), 1);
    // A later redelivery (a new signature and timestamp) is a duplicate too.
    assert_eq!(stack.post_stripe(&body).await.json()["status"], "duplicate");
}

#[tokio::test]
async fn an_unmapped_type_is_acknowledged_and_recorded_as_ignored() {
    let stack = Stack::start().await;
    let body = serde_json::json!({
        "id": "evt_product", "object": "event", "type": "product.created",
        "created": now_secs(), "data": {"object": {"id": "prod_1", "object": "product"}}
    })
    .to_string();
    let reply = stack.post_stripe(body.as_bytes()).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["status"], "ignored");
    assert!(
        reply.json()["reason"]
            .as_str()
            .unwrap()
            .contains("product.created")
    );

    let log = events(&stack).await;
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].outcome(), v1::EventOutcome::Ignored);
    assert_eq!(log[0].r#type, "product.created");
    assert_eq!(
        log[0].body,
        body.as_bytes(),
        "the raw body is kept for replay"
    );
    assert!(log[0].contact_id.is_empty());
    // Unparseable JSON is authentic too: acknowledged, recorded, never retried forever.
    let reply = stack.post_stripe(b"not json").await;
    assert_eq!(
        (reply.status, reply.json()["status"].as_str()),
        (200, Some("ignored"))
    );
    assert_eq!(events(&stack).await.len(), 2);
}

#[tokio::test]
async fn a_refund_before_its_purchase_ends_on_the_buyer() {
    let stack = Stack::start().await;
    let refund = serde_json::json!({
        "id": "evt_refund", "object": "event", "type": "refund.created", "created": now_secs(),
        "data": {"object": {"id": "re_1", "object": "refund", "amount": 1000, "currency": "usd",
            "charge": "ch_1", "payment_intent": "pi_refunded", "status": "succeeded"}}
    })
    .to_string();
    assert_eq!(
        stack.post_stripe(refund.as_bytes()).await.json()["status"],
        "applied"
    );
    let checkout = stripe_checkout("evt_paid", "refunded@example.com", 3000, "pi_refunded");
    assert_eq!(
        stack.post_stripe(&checkout).await.json()["status"],
        "applied"
    );

    let contact = stack
        .contacts
        .lookup_email("refunded@example.com")
        .await
        .unwrap();
    assert!(contact.refunded);
    assert_eq!(contact.refunds.len(), 1);
    assert_eq!(contact.totals[0].purchased, 3000);
    assert_eq!(contact.totals[0].refunded, 1000);
    assert_eq!(contact.stage(), v1::Stage::Purchased);
}

#[tokio::test]
async fn a_delivery_while_another_caller_holds_the_event_is_queued_and_applied_once() {
    let stack = Stack::start().await;
    let body = stripe_checkout("evt_leased", "leased@example.com", 100, "pi_leased");
    // Another caller took the event's lease and is still applying it.
    let mut redis = stack.redis.conn().await;
    let _: () = redis::cmd("SET")
        .arg("hl:ev:{stripe:evt_leased}")
        .arg("Lanother-caller")
        .arg("PX")
        .arg(60_000)
        .query_async(&mut redis)
        .await
        .unwrap();
    let reply = stack.post_stripe(&body).await;
    assert_eq!(
        (reply.status, reply.json()["status"].as_str()),
        (202, Some("queued")),
        "answering 200 before the event took effect could lose it"
    );
    assert_eq!(
        stack
            .contacts
            .lookup_email("leased@example.com")
            .await
            .unwrap_err()
            .code(),
        tonic::Code::NotFound
    );
    // The other caller failed and released its lease: the spooled event applies.
    let _: () = redis::cmd("DEL")
        .arg("hl:ev:{stripe:evt_leased}")
        .query_async(&mut redis)
        .await
        .unwrap();
    let contact = eventually(
        Duration::from_secs(20),
        "the spooled event to be applied",
        || async { stack.contacts.lookup_email("leased@example.com").await.ok() },
    )
    .await;
    assert_eq!(contact.totals[0].purchased, 100);
    assert_eq!(stack.post_stripe(&body).await.json()["status"], "duplicate");
}
