//! GitHub-, Shopify- and Slack-style senders (`kind = "hmac"` with a preset) through the
//! whole pipeline, each signed as the sender signs (Python's `hmac`, not hookline's code)
//! and each making contacts through a mapping.

use hookline_proto::v1::{self, lookup_contact_request::Key};
use hookline_tests::{Reply, Stack, now_secs, sign_as};
use serde_json::json;

const GITHUB_SECRET: &str = "github-webhook-secret";
const SHOPIFY_OLD: &str = "shopify-client-secret-old";
const SHOPIFY_NEW: &str = "shopify-client-secret-new";
const SLACK_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";

const SOURCES: &str = r#"
[sources.github]
kind = "hmac"
preset = "github"
secrets = ["github-webhook-secret"]

[sources.github.map]
email = "/pusher/email"
name = "/pusher/name"
external_id = "/sender/id"
external_id_system = "github_user"
occurred_at = "/head_commit/timestamp"

[[sources.github.actions]]
types = ["push"]
do = "contact"

[[sources.github.actions]]
types = ["sponsorship"]
do = "purchase"
purchase_id = "/sponsorship/node_id"
amount = "/sponsorship/tier/monthly_price_in_cents"
currency_value = "usd"

[sources.shopify]
kind = "hmac"
preset = "shopify"
secrets = ["shopify-client-secret-old", "shopify-client-secret-new"]

[sources.shopify.map]
email = "/email"
first_name = "/customer/first_name"
last_name = "/customer/last_name"
phone = "/customer/phone"
external_id = "/customer/id"
external_id_system = "shopify_customer"
occurred_at = "/updated_at"

[[sources.shopify.actions]]
types = ["orders/paid"]
do = "purchase"
purchase_id = "/id"
amount = "/total_price"
amount_unit = "major"
currency = "/currency"

[[sources.shopify.actions]]
types = ["refunds/create"]
do = "refund"
refund_id = "/id"
purchase_id = "/order_id"
amount = "/transactions/0/amount"
amount_unit = "major"
currency = "/transactions/0/currency"

[sources.slack]
kind = "hmac"
preset = "slack"
secrets = ["8f742231b10e8888abcd99yyyzzz85a5"]

[sources.slack.map]
email = "/event/user/profile/email"
phone = "/event/user/profile/phone"
name = "/event/user/real_name"
external_id = "/event/user/id"
external_id_system = "slack_user"

[[sources.slack.actions]]
types = ["team_join", "user_change"]
do = "contact"
"#;

async fn post(stack: &Stack, source: &str, body: &[u8], headers: &[(&str, &str)]) -> Reply {
    stack
        .http
        .post(
            &stack.edge.url(&format!("/webhooks/{source}")),
            body.to_vec(),
            headers,
        )
        .await
}

fn bytes(v: &serde_json::Value) -> Vec<u8> {
    v.to_string().into_bytes()
}

async fn lookup(stack: &Stack, key: Key) -> v1::Contact {
    stack
        .contacts
        .client()
        .await
        .lookup_contact(v1::LookupContactRequest {
            key: Some(key.clone()),
            phone_region: String::new(),
        })
        .await
        .unwrap_or_else(|e| panic!("lookup by {key:?}: {e}"))
        .into_inner()
        .contact
        .unwrap_or_default()
}

#[tokio::test]
async fn a_github_style_sender() {
    let stack = Stack::start_with_sources(SOURCES).await;
    let push = bytes(&json!({
        "ref": "refs/heads/main",
        "repository": {"id": 1_296_269, "full_name": "octocat/Hello-World"},
        "pusher": {"name": "The Octocat", "email": "octocat@example.com"},
        "sender": {"login": "octocat", "id": 583_231},
        "head_commit": {"timestamp": "2026-12-01T10:00:00Z"}
    }));
    let send = |event: &'static str, delivery: &'static str, body: Vec<u8>, signed: Vec<u8>| {
        let stack = &stack;
        async move {
            let sig = sign_as(&["github", GITHUB_SECRET], &signed).await;
            post(
                stack,
                "github",
                &body,
                &[
                    ("x-github-event", event),
                    ("x-github-delivery", delivery),
                    ("x-hub-signature-256", &sig),
                    ("user-agent", "GitHub-Hookshot/044aadd"),
                ],
            )
            .await
        }
    };
    let reply = send("push", "d-1", push.clone(), push.clone()).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.json()["status"], "applied");
    // X-GitHub-Delivery is not signed, so the event is known by its type and body.
    let push_id = reply.json()["event_id"].as_str().unwrap().to_owned();
    assert!(push_id.starts_with("sha256:"), "{push_id}");
    // A redelivery (GitHub's "Redeliver" button) is the same event...
    let again = send("push", "d-1", push.clone(), push.clone()).await;
    assert_eq!(again.json()["status"], "duplicate");
    // ...and so is a captured delivery replayed under a delivery id of the replayer's.
    let replay = send("push", "d-forged", push.clone(), push.clone()).await;
    assert_eq!(replay.json()["status"], "duplicate");
    assert_eq!(replay.json()["event_id"], push_id.as_str());
    // Tampered after signing.
    let mut tampered = push.clone();
    let at = tampered.iter().position(|b| *b == b'O').unwrap();
    tampered[at] = b'0';
    assert_eq!(
        send("push", "d-2", tampered, push.clone()).await.status,
        401
    );

    // A sponsorship of the same GitHub user: found by the external id, not an email.
    let sponsorship = bytes(&json!({
        "action": "created",
        "sponsorship": {
            "node_id": "MDExOlNwb25zb3JzaGlwMQ==",
            "sponsor": {"login": "octocat", "id": 583_231},
            "tier": {"monthly_price_in_cents": 500}
        },
        "sender": {"login": "octocat", "id": 583_231}
    }));
    let reply = send("sponsorship", "d-3", sponsorship.clone(), sponsorship).await;
    assert_eq!(reply.json()["status"], "applied", "{:?}", reply.body);
    // GitHub pings a new hook: authentic, taken by no action, recorded.
    let ping = bytes(&json!({"zen": "Keep it logically awesome.", "hook_id": 1}));
    let reply = send("ping", "d-4", ping.clone(), ping).await;
    assert_eq!(reply.json()["status"], "ignored", "{:?}", reply.body);
    assert_eq!(
        reply.json()["reason"],
        "event type \"ping\" matches no action"
    );

    let contact = stack
        .contacts
        .lookup_email("octocat@example.com")
        .await
        .expect("found");
    assert_eq!(contact.name, "The Octocat");
    assert_eq!(
        contact.external_ids,
        vec![v1::ExternalId {
            system: "github_user".into(),
            id: "583231".into()
        }]
    );
    assert_eq!(contact.stage(), v1::Stage::Purchased);
    assert_eq!(contact.totals[0].purchased, 500);
    assert_eq!(contact.field_updated_at["name"].seconds, 1_796_119_200);
    let ignored = stack
        .contacts
        .events(v1::ListEventsRequest {
            source: "github".into(),
            outcome: v1::EventOutcome::Ignored.into(),
            ..Default::default()
        })
        .await;
    assert_eq!(ignored.len(), 1);
    assert!(ignored[0].event_id.starts_with("github:sha256:"));
    assert_eq!(ignored[0].r#type, "ping");
    assert!(!ignored[0].body.is_empty(), "recorded with its body");
}

#[tokio::test]
async fn a_shopify_style_sender() {
    let stack = Stack::start_with_sources(SOURCES).await;
    let order = bytes(&json!({
        "id": 820_982_911_946_154_508_u64,
        "email": "jon@example.com",
        "created_at": "2026-12-01T10:00:00-05:00",
        "updated_at": "2026-12-01T10:00:01-05:00",
        "total_price": "403.10",
        "currency": "USD",
        "customer": {"id": 115_310_627_314_723_954_u64, "first_name": "John", "last_name": "Smith",
                     "phone": "+16135551212"}
    }));
    let refund = bytes(&json!({
        "id": 509_562_969,
        "order_id": 820_982_911_946_154_508_u64,
        "created_at": "2026-12-02T10:00:00-05:00",
        "transactions": [{"amount": "15.00", "currency": "USD", "kind": "refund"}]
    }));
    // After a client-secret rotation Shopify may sign with the old secret for an hour.
    for (topic, id, body, secret) in [
        (
            "orders/paid",
            "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043",
            &order,
            SHOPIFY_OLD,
        ),
        (
            "refunds/create",
            "0c1d2e3f-4a5b-4c6d-8e9f-a0b1c2d3e4f5",
            &refund,
            SHOPIFY_NEW,
        ),
    ] {
        let sig = sign_as(&["shopify", secret], body).await;
        let headers = [
            ("x-shopify-topic", topic),
            ("x-shopify-webhook-id", id),
            ("x-shopify-hmac-sha256", sig.as_str()),
            ("x-shopify-shop-domain", "example.myshopify.com"),
        ];
        let reply = post(&stack, "shopify", body, &headers).await;
        assert_eq!(reply.status, 200, "{topic}: {:?}", reply.body);
        assert_eq!(reply.json()["status"], "applied", "{topic}");
        let again = post(&stack, "shopify", body, &headers).await;
        assert_eq!(again.json()["status"], "duplicate", "{topic}");
        // A replay under another X-Shopify-Webhook-Id (it is not signed) is no new event.
        let mut replayed = headers;
        replayed[1].1 = "11111111-2222-4333-8444-555555555555";
        let replay = post(&stack, "shopify", body, &replayed).await;
        assert_eq!(replay.json()["status"], "duplicate", "{topic}");
    }
    // The same order under another topic is another event (Shopify sends orders/create
    // and orders/paid with one body when an order is paid at once): mapped by no action
    // here, it is recorded, not taken for the paid one.
    let sig = sign_as(&["shopify", SHOPIFY_NEW], &order).await;
    let created = post(
        &stack,
        "shopify",
        &order,
        &[
            ("x-shopify-topic", "orders/create"),
            (
                "x-shopify-webhook-id",
                "6a7b8c9d-0e1f-4a2b-8c3d-4e5f6a7b8c9d",
            ),
            ("x-shopify-hmac-sha256", &sig),
        ],
    )
    .await;
    assert_eq!(created.json()["status"], "ignored", "{:?}", created.body);
    let wrong = sign_as(&["shopify", "not-the-secret"], &order).await;
    let reply = post(
        &stack,
        "shopify",
        &order,
        &[
            ("x-shopify-topic", "orders/paid"),
            ("x-shopify-webhook-id", "x"),
            ("x-shopify-hmac-sha256", &wrong),
        ],
    )
    .await;
    assert_eq!(reply.status, 401);

    let contact = lookup(
        &stack,
        Key::ExternalId(v1::ExternalId {
            system: "shopify_customer".into(),
            id: "115310627314723954".into(),
        }),
    )
    .await;
    assert_eq!(contact.email, "jon@example.com");
    assert_eq!(
        (contact.first_name.as_str(), contact.last_name.as_str()),
        ("John", "Smith")
    );
    assert_eq!(contact.phone, "+16135551212");
    assert_eq!(contact.purchases.len(), 1);
    assert_eq!(contact.purchases[0].purchase_id, "820982911946154508");
    assert!(contact.refunded);
    assert_eq!(contact.refunds[0].refund_id, "509562969");
    assert_eq!(
        contact.totals,
        vec![v1::CurrencyTotal {
            currency: "usd".into(),
            purchased: 40_310,
            refunded: 1_500,
        }]
    );
}

#[tokio::test]
async fn a_slack_style_sender() {
    let stack = Stack::start_with_sources(SOURCES).await;
    let signed = |body: Vec<u8>, ts: i64| async move {
        let ts = ts.to_string();
        let sig = sign_as(&["slack", SLACK_SECRET, &ts], &body).await;
        (body, ts, sig)
    };
    // Slack verifies the endpoint first: the challenge comes back, nothing is stored.
    let (body, ts, sig) = signed(
        bytes(&json!({"token": "Jhj5dZrVaK7ZwHHjRyZWjbDl", "challenge": "3eZbrw1aBm2rZgRN", "type": "url_verification"})),
        now_secs(),
    )
    .await;
    let headers = [
        ("x-slack-request-timestamp", ts.as_str()),
        ("x-slack-signature", sig.as_str()),
    ];
    let reply = post(&stack, "slack", &body, &headers).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.json(), json!({"challenge": "3eZbrw1aBm2rZgRN"}));
    assert_eq!(stack.redis.dbsize().await, 0);

    let join = bytes(&json!({
        "token": "Jhj5dZrVaK7ZwHHjRyZWjbDl", "team_id": "T061EG9R6", "api_app_id": "A0PNCHHK2",
        "type": "event_callback", "event_id": "Ev0PV52K25", "event_time": 1_796_378_400,
        "event": {"type": "team_join", "user": {
            "id": "U0G9QF9C6", "real_name": "Grace Hopper",
            "profile": {"email": "grace@example.com", "phone": "+1 415 555 0199"}}}
    }));
    let (body, ts, sig) = signed(join.clone(), now_secs()).await;
    let reply = post(
        &stack,
        "slack",
        &body,
        &[
            ("x-slack-request-timestamp", &ts),
            ("x-slack-signature", &sig),
        ],
    )
    .await;
    assert_eq!(reply.json()["status"], "applied", "{:?}", reply.body);
    assert_eq!(reply.json()["event_id"], "Ev0PV52K25");
    // Slack retries with a new timestamp and X-Slack-Retry-Num; the event id is the same.
    let (body, ts, sig) = signed(join.clone(), now_secs() + 1).await;
    let reply = post(
        &stack,
        "slack",
        &body,
        &[
            ("x-slack-request-timestamp", &ts),
            ("x-slack-signature", &sig),
            ("x-slack-retry-num", "1"),
            ("x-slack-retry-reason", "http_timeout"),
        ],
    )
    .await;
    assert_eq!(reply.json()["status"], "duplicate", "{:?}", reply.body);
    // A replay of an old request is refused.
    let (body, ts, sig) = signed(join, now_secs() - 360).await;
    let reply = post(
        &stack,
        "slack",
        &body,
        &[
            ("x-slack-request-timestamp", &ts),
            ("x-slack-signature", &sig),
        ],
    )
    .await;
    assert_eq!(reply.status, 401);

    let contact = stack
        .contacts
        .lookup_email("grace@example.com")
        .await
        .expect("found");
    assert_eq!(contact.name, "Grace Hopper");
    assert_eq!(contact.phone, "+14155550199");
    assert_eq!(contact.external_ids[0].system, "slack_user");
    assert_eq!(contact.field_updated_at["name"].seconds, 1_796_378_400);
}
