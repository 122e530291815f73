//! What happens when Redis or contacts-svc is down: the event is spooled and the sender
//! told 202, or, when it cannot be spooled either, told to retry; nothing it was told
//! is taken care of gets lost.

use std::time::Duration;

use hookline_proto::v1;
use hookline_tests::{
    ContactsSvc, Edge, Http, Redis, Stack, contact_item, eventually, metric, stripe_checkout,
};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// The whole stack, then contacts-svc stopped: Redis, the edge, a client and the address
/// contacts-svc comes back on.
async fn without_contacts_svc() -> (Redis, Edge, Http, std::net::SocketAddr) {
    let Stack {
        redis,
        contacts,
        edge,
        http,
    } = Stack::start().await;
    let addr = contacts.addr;
    contacts.stop().await;
    (redis, edge, http, addr)
}

async fn health(contacts: &ContactsSvc) -> ServingStatus {
    let Ok(channel) = tonic::transport::Endpoint::from_shared(contacts.url())
        .expect("url")
        .connect()
        .await
    else {
        return ServingStatus::Unknown;
    };
    let mut client = HealthClient::new(channel);
    client
        .check(HealthCheckRequest {
            service: "contacts.v1.ContactsService".into(),
        })
        .await
        .map(|r| r.into_inner().status())
        .unwrap_or(ServingStatus::Unknown)
}

#[tokio::test]
async fn redis_down_means_queued_and_the_spooled_event_applies_once_it_returns() {
    let mut stack = Stack::start().await;
    let body = stripe_checkout("evt_outage", "outage@example.com", 700, "pi_outage");
    stack.redis.kill().await;

    let reply = stack.post_stripe(&body).await;
    assert_eq!(reply.status, 202, "{:?}", reply.body);
    assert_eq!(reply.json()["status"], "queued");
    assert_eq!(reply.json()["event_id"], "evt_outage");
    eventually(Duration::from_secs(10), "health NOT_SERVING", || async {
        (health(&stack.contacts).await == ServingStatus::NotServing).then_some(())
    })
    .await;
    let ready = stack.http.get(&stack.edge.url("/readyz")).await;
    assert_eq!(
        ready.status, 200,
        "still taking deliveries: {:?}",
        ready.body
    );
    assert_eq!(ready.json()["status"], "degraded");
    assert!(
        ready.json()["reason"]
            .as_str()
            .unwrap()
            .starts_with("spooling")
    );
    assert_eq!(ready.json()["spooled"], 1);
    // A redelivery meanwhile is spooled again, and applies no more than once.
    assert_eq!(stack.post_stripe(&body).await.status, 202);

    stack.redis.restart().await;
    let contact = eventually(
        Duration::from_secs(20),
        "the spooled event to be applied",
        || async { stack.contacts.lookup_email("outage@example.com").await.ok() },
    )
    .await;
    assert_eq!(contact.totals[0].purchased, 700);
    eventually(Duration::from_secs(20), "the spool to drain", || async {
        let r = stack.http.get(&stack.edge.url("/readyz")).await;
        (r.json()["status"] == "ready").then_some(())
    })
    .await;
    let metrics = stack.http.get(&stack.edge.metrics_url("/metrics")).await;
    let text = String::from_utf8_lossy(&metrics.body);
    let replayed = |outcome| {
        metric(
            &text,
            "hookline_edge_spool_replayed_total",
            &[("outcome", outcome)],
        )
    };
    assert_eq!(
        (replayed("applied"), replayed("duplicate")),
        (1.0, 1.0),
        "{text}"
    );
    assert_eq!(metric(&text, "hookline_edge_spool_entries", &[]), 0.0);
    assert_eq!(stack.post_stripe(&body).await.json()["status"], "duplicate");
}

#[tokio::test]
async fn an_event_that_can_be_neither_applied_nor_spooled_is_answered_retry_later() {
    let mut stack = Stack::start_with_config("spool_max_bytes = 0").await;
    let body = stripe_checkout("evt_nowhere", "nowhere@example.com", 700, "pi_nowhere");
    stack.redis.kill().await;

    let reply = stack.post_stripe(&body).await;
    assert_eq!(reply.status, 503, "{:?}", reply.body);
    assert_eq!(reply.headers["retry-after"], "5");
    assert!(
        !String::from_utf8_lossy(&reply.body).contains("redis")
            && !String::from_utf8_lossy(&reply.body).contains("spool"),
        "a 5xx says nothing about its cause"
    );
    let ready = eventually(Duration::from_secs(10), "readyz 503", || async {
        let r = stack.http.get(&stack.edge.url("/readyz")).await;
        (r.status == 503).then_some(r)
    })
    .await;
    assert_eq!(ready.json()["status"], "down");
    let metrics = stack.http.get(&stack.edge.metrics_url("/metrics")).await;
    let text = String::from_utf8_lossy(&metrics.body);
    assert_eq!(
        metric(
            &text,
            "hookline_edge_spool_writes_total",
            &[("result", "full")]
        ),
        1.0
    );

    stack.redis.restart().await;
    // The sender's retry now takes effect.
    let reply = eventually(
        Duration::from_secs(10),
        "the retry to be applied",
        || async {
            let r = stack.post_stripe(&body).await;
            (r.status == 200).then_some(r)
        },
    )
    .await;
    assert_eq!(reply.json()["status"], "applied");
}

#[tokio::test]
async fn an_acknowledged_event_survives_a_redis_crash_with_aof() {
    let mut stack = Stack::start_with_redis(Redis::start_with(true).await).await;
    let body = stripe_checkout("evt_durable", "durable@example.com", 1200, "pi_durable");
    let reply = eventually(
        Duration::from_secs(10),
        "the event to be applied",
        || async {
            let r = stack.post_stripe(&body).await;
            (r.status == 200).then_some(r)
        },
    )
    .await;
    assert_eq!(reply.json()["status"], "applied");

    stack.redis.restart().await; // SIGKILL, then start on the same AOF
    let reply = eventually(
        Duration::from_secs(10),
        "the redelivery to be answered",
        || async {
            let r = stack.post_stripe(&body).await;
            (r.status == 200).then_some(r)
        },
    )
    .await;
    assert_eq!(
        reply.json()["status"],
        "duplicate",
        "the done marker survived"
    );
    let contact = stack
        .contacts
        .lookup_email("durable@example.com")
        .await
        .expect("the contact survived");
    assert_eq!(contact.totals[0].purchased, 1200);
}

#[tokio::test]
async fn contacts_svc_down_means_queued_and_applied_when_it_is_back() {
    let (redis, edge, http, addr) = without_contacts_svc().await;
    let body = stripe_checkout("evt_svc_down", "down@example.com", 100, "pi_down");
    let reply = edge.post_stripe(&http, &body).await;
    assert_eq!(reply.status, 202, "{:?}", reply.body);
    assert_eq!(reply.json()["status"], "queued");
    let ready = http.get(&edge.url("/readyz")).await;
    assert_eq!(
        (ready.status, ready.json()["status"].as_str()),
        (200, Some("degraded"))
    );
    assert_eq!(redis.dbsize().await, 0);

    // Back on the same address, the edge reconnects by itself and replays.
    let contacts = ContactsSvc::start_on(addr, &redis.url()).await;
    let contact = eventually(
        Duration::from_secs(20),
        "the spooled event to be applied",
        || async { contacts.lookup_email("down@example.com").await.ok() },
    )
    .await;
    assert_eq!(contact.totals[0].purchased, 100);
    assert_eq!(
        edge.post_stripe(&http, &body).await.json()["status"],
        "duplicate"
    );
}

/// Redis forgets its scripts when it restarts (or on SCRIPT FLUSH). The write that
/// claims identifiers and stores the contact in one pipeline then gets NOSCRIPT: it must
/// load the script and apply the event, not fail it.
#[tokio::test]
async fn events_apply_after_redis_forgets_its_scripts() {
    let stack = Stack::start().await;
    let mut redis = stack.redis.conn().await;
    for n in 1..=3 {
        let () = redis::cmd("SCRIPT")
            .arg("FLUSH")
            .query_async(&mut redis)
            .await
            .expect("SCRIPT FLUSH");
        let email = format!("scripts{n}@example.com");
        let body = stripe_checkout(
            &format!("evt_scripts_{n}"),
            &email,
            100 * n,
            &format!("pi_scripts_{n}"),
        );
        let reply = stack.post_stripe(&body).await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        assert_eq!(reply.json()["status"], "applied");
        let contact = stack.contacts.lookup_email(&email).await.expect("found");
        assert_eq!(contact.totals[0].purchased, 100 * n);
    }
}

#[tokio::test]
async fn an_event_whose_request_was_abandoned_is_not_sent() {
    let redis = Redis::start().await;
    let contacts = ContactsSvc::start(&redis.url()).await;
    let url: http::Uri = contacts.url().parse().unwrap();
    let options = edge::ContactsOptions::new(Duration::from_secs(2));
    let client = edge::Contacts::connect_lazy(&[url], &options);
    let trace = edge::trace::Trace::of(&http::HeaderMap::new());
    let event = |id: String| contact_item(&id, "queued@example.com", None).event.unwrap();

    // Redis hangs: every call slot fills with a call that cannot finish, and the rest
    // of the events wait in the edge's queue. At most eight calls of 128 events are in
    // flight, so the last 50 of 1,100 are surely queued.
    redis.pause();
    let blocked = futures::future::join_all((0..1050).map(|i| {
        let event = event(format!("batch:blocker{i}"));
        let (client, trace) = (&client, &trace);
        async move { client.apply(event, trace).await }
    }));
    // Their senders give up while they are queued (a timeout, a closed connection).
    let abandoned = futures::future::join_all((0..50).map(|i| {
        let event = event(format!("batch:abandoned{i}"));
        let (client, trace) = (&client, &trace);
        async move {
            let gave_up =
                tokio::time::timeout(Duration::from_millis(100), client.apply(event, trace));
            assert!(gave_up.await.is_err(), "answered while Redis hangs");
        }
    }));
    // The blockers are queued first: `join!` polls its futures in order.
    let (_, ()) = futures::join!(blocked, async {
        abandoned.await;
        redis.resume();
    });
    // The queue is first in, first out: once a later event is answered, the abandoned
    // ones were taken out of it.
    let after = client
        .apply(event("batch:after".to_owned()), &trace)
        .await
        .expect("answered once Redis is back");
    assert_eq!(after.outcome(), v1::EventOutcome::Applied);
    let mut conn = redis.conn().await;
    for i in 0..50 {
        let sent: bool = redis::cmd("EXISTS")
            .arg(format!("hl:ev:{{batch:abandoned{i}}}"))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(!sent, "abandoned event {i} was sent to contacts-svc");
    }
}

/// A checkout of `email` by `name`, paid with `payment_intent`, that happened `ago`
/// seconds before now.
fn checkout_at(id: &str, email: &str, name: &str, payment_intent: &str, ago: i64) -> Vec<u8> {
    let mut event: serde_json::Value =
        serde_json::from_slice(&stripe_checkout(id, email, 1000, payment_intent)).unwrap();
    event["created"] = (hookline_tests::now_secs() - ago).into();
    event["data"]["object"]["customer_details"]["name"] = name.into();
    event.to_string().into_bytes()
}

#[tokio::test]
async fn spooled_events_end_the_same_whatever_order_the_spool_holds_them_in() {
    let (redis, edge, http, addr) = without_contacts_svc().await;
    let email = "order@example.com";
    // Spooled newest first: the spool replays in arrival order, the reverse of the
    // order the changes happened in.
    let newer = checkout_at("evt_newer", email, "Ada Newer", "pi_newer", 10);
    let older = checkout_at("evt_older", email, "Ada Older", "pi_older", 100);
    for body in [&newer, &older, &newer] {
        let reply = edge.post_stripe(&http, body).await;
        assert_eq!(reply.status, 202, "{:?}", reply.body);
    }

    let contacts = ContactsSvc::start_on(addr, &redis.url()).await;
    eventually(Duration::from_secs(20), "the spool to drain", || async {
        let r = http.get(&edge.url("/readyz")).await;
        (r.json()["status"] == "ready").then_some(())
    })
    .await;
    // And a live event older than both, after them.
    let oldest = checkout_at("evt_oldest", email, "Ada Oldest", "pi_oldest", 1000);
    assert_eq!(
        edge.post_stripe(&http, &oldest).await.json()["status"],
        "applied"
    );

    let contact = contacts.lookup_email(email).await.unwrap();
    assert_eq!(contact.name, "Ada Newer", "the newest change wins");
    let mut payments: Vec<_> = contact
        .purchases
        .iter()
        .map(|p| p.payment_intent_id.as_str())
        .collect();
    payments.sort_unstable();
    assert_eq!(payments, ["pi_newer", "pi_older", "pi_oldest"]);
    assert_eq!(contact.totals[0].purchased, 3000);
}

#[tokio::test]
async fn spooled_events_that_cannot_apply_yet_hold_up_none_behind_them() {
    let (redis, edge, http, addr) = without_contacts_svc().await;
    // More than a page of the replayer's of one person whose index entry is unreadable
    // (contacts-svc answers each "later"), then a few of other people.
    for n in 0..70 {
        let body = stripe_checkout(
            &format!("evt_stuck_{n}"),
            "stuck@example.com",
            100,
            &format!("pi_stuck_{n}"),
        );
        assert_eq!(edge.post_stripe(&http, &body).await.status, 202);
    }
    for n in 0..5 {
        let body = stripe_checkout(
            &format!("evt_free_{n}"),
            &format!("free{n}@example.com"),
            100,
            &format!("pi_free_{n}"),
        );
        assert_eq!(edge.post_stripe(&http, &body).await.status, 202);
    }
    let mut conn = redis.conn().await;
    let () = redis::cmd("SET")
        .arg("hl:idx:email:stuck@example.com")
        .arg("not a contact id")
        .query_async(&mut conn)
        .await
        .unwrap();

    let contacts = ContactsSvc::start_on(addr, &redis.url()).await;
    for n in 0..5 {
        let email = format!("free{n}@example.com");
        eventually(
            Duration::from_secs(30),
            "the events behind the stuck ones to apply",
            || async { contacts.lookup_email(&email).await.ok() },
        )
        .await;
    }
    // They are left, the others gone.
    eventually(
        Duration::from_secs(10),
        "70 entries left in the spool",
        || async {
            let body = http.get(&edge.metrics_url("/metrics")).await.body;
            let text = String::from_utf8_lossy(&body);
            (metric(&text, "hookline_edge_spool_entries", &[]) == 70.0).then_some(())
        },
    )
    .await;
}
