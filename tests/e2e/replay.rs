//! `edge.v1.ReplayService/ReplayEvents`: events recorded as ignored, replayed after the
//! configuration is fixed, take effect once, never twice, and are never verified again.

use hookline_proto::edge::v1 as edge_v1;
use hookline_proto::edge::v1::replay_service_client::ReplayServiceClient;
use hookline_proto::v1;
use hookline_tests::{Edge, Reply, Stack, contact_event, now_secs, run_grpcurl, sign_as};
use serde_json::json;

/// The secret the deliveries are signed with; the fixed edge no longer has it.
const OLD: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const NEW: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

/// The `acme` source, reading the email at `email` (the wrong pointer, then the right).
fn acme(secret: &str, email: &str) -> String {
    format!(
        r#"
[sources.acme]
kind = "standard-webhooks"
secrets = ["{secret}"]

[sources.acme.map]
email = "{email}"
first_name = "/data/first_name"

[[sources.acme.actions]]
types = ["user.*"]
do = "contact"
"#
    )
}

fn user(email: Option<&str>) -> Vec<u8> {
    json!({
        "type": "user.created",
        "timestamp": "2026-12-01T10:00:00Z",
        "data": {"email": email, "first_name": "Grace"}
    })
    .to_string()
    .into_bytes()
}

/// Delivers `body` as message `id`, signed now by the official library with [`OLD`].
async fn deliver(edge: &Edge, stack_http: &hookline_tests::Http, id: &str, body: &[u8]) -> Reply {
    let now = now_secs().to_string();
    let sig = sign_as(&["standard-webhooks", OLD, id, &now], body).await;
    stack_http
        .post(
            &edge.url("/webhooks/acme"),
            body.to_vec(),
            &[
                ("webhook-id", id),
                ("webhook-timestamp", &now),
                ("webhook-signature", &sig),
            ],
        )
        .await
}

/// An edge with the fixed mapping and only the new secret, on the same contacts-svc.
async fn fixed_edge(stack: &Stack) -> Edge {
    let toml = format!(
        "contacts_url = \"{}\"\n{}",
        stack.contacts.url(),
        acme(NEW, "/data/email")
    );
    Edge::start_with_metrics_listener(&toml).await
}

async fn replay(
    edge: &Edge,
    req: edge_v1::ReplayEventsRequest,
) -> Vec<(String, edge_v1::ReplayResult)> {
    let mut client = ReplayServiceClient::connect(format!("http://{}", edge.admin_addr))
        .await
        .unwrap();
    let answer = client.replay_events(req).await.unwrap().into_inner();
    answer
        .events
        .into_iter()
        .map(|e| (e.event_id.clone(), e.result()))
        .collect()
}

#[tokio::test]
async fn an_event_ignored_under_an_old_mapping_applies_once_after_the_fix() {
    let stack = Stack::start_with_sources(&acme(OLD, "/data/mail")).await;
    let body = user(Some("grace@example.com"));
    let reply = deliver(&stack.edge, &stack.http, "msg_1", &body).await;
    assert_eq!(reply.json()["status"], "ignored", "{:?}", reply.body);
    assert_eq!(reply.json()["reason"], "no contact identifiers");

    let edge = fixed_edge(&stack).await;
    // As an operator runs it, by reflection.
    let out = run_grpcurl(&[
        "-plaintext",
        "-d",
        r#"{"event_ids": ["acme:msg_1"]}"#,
        &edge.admin_addr.to_string(),
        "edge.v1.ReplayService/ReplayEvents",
    ])
    .await;
    let answer: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(answer["events"][0]["eventId"], "acme:msg_1", "{out}");
    assert_eq!(
        answer["events"][0]["result"], "REPLAY_RESULT_APPLIED",
        "{out}"
    );
    let contact = stack
        .contacts
        .lookup_email("grace@example.com")
        .await
        .unwrap();
    assert_eq!(contact.first_name, "Grace");
    assert_eq!(answer["events"][0]["contactId"], contact.id.as_str());
    let record = stack.contacts.record("acme:msg_1").await;
    assert_eq!(record[0].outcome(), v1::EventOutcome::Applied);
    assert_eq!(record[0].contact_id, contact.id);

    // Never twice: not by a second replay, nor by the sender's redelivery.
    let again = replay(
        &edge,
        edge_v1::ReplayEventsRequest {
            event_ids: vec!["acme:msg_1".into(), "acme:msg_none".into()],
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        again,
        [
            ("acme:msg_1".into(), edge_v1::ReplayResult::AlreadyApplied),
            ("acme:msg_none".into(), edge_v1::ReplayResult::Skipped),
        ]
    );
    let redelivered = deliver(&stack.edge, &stack.http, "msg_1", &body).await;
    assert_eq!(redelivered.json()["status"], "duplicate");
}

#[tokio::test]
async fn replays_by_filter_report_each_event_and_concurrent_replays_apply_once() {
    let stack = Stack::start_with_sources(&acme(OLD, "/data/mail")).await;
    for (id, email) in [
        ("msg_a", Some("a@example.com")),
        ("msg_b", Some("b@example.com")),
        ("msg_c", None),
    ] {
        let reply = deliver(&stack.edge, &stack.http, id, &user(email)).await;
        assert_eq!(reply.json()["status"], "ignored", "{:?}", reply.body);
    }
    let edge = fixed_edge(&stack).await;
    let none = replay(
        &edge,
        edge_v1::ReplayEventsRequest {
            source: "acme".into(),
            r#type: "invoice.paid".into(),
            ..Default::default()
        },
    )
    .await;
    assert!(none.is_empty(), "{none:?}");

    let by_source = || {
        replay(
            &edge,
            edge_v1::ReplayEventsRequest {
                source: "acme".into(),
                r#type: "user.created".into(),
                ..Default::default()
            },
        )
    };
    let (first, second) = tokio::join!(by_source(), by_source());
    let mut all: Vec<_> = first.iter().chain(&second).cloned().collect();
    all.sort();
    use edge_v1::ReplayResult::{AlreadyApplied, Applied, StillIgnored};
    let results = |id: &str| -> Vec<edge_v1::ReplayResult> {
        all.iter()
            .filter(|(e, _)| e == id)
            .map(|(_, r)| *r)
            .collect()
    };
    for id in ["acme:msg_a", "acme:msg_b"] {
        let mut got = results(id);
        got.sort_by_key(|r| *r as i32);
        // Each replay selected it while it was ignored, or after it applied (then the
        // filter on ignored leaves it out): exactly one applied it.
        assert!(
            got == [Applied] || got == [Applied, AlreadyApplied],
            "{id}: {got:?} of {all:?}"
        );
    }
    assert!(
        results("acme:msg_c").iter().all(|r| *r == StillIgnored),
        "{all:?}"
    );
    for email in ["a@example.com", "b@example.com"] {
        stack.contacts.lookup_email(email).await.unwrap();
    }
    // A replay without a selection is refused rather than replaying everything.
    let mut client = ReplayServiceClient::connect(format!("http://{}", edge.admin_addr))
        .await
        .unwrap();
    let refused = client
        .replay_events(edge_v1::ReplayEventsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
}

/// An event of source `replayed` about `email` (none: no identifier, so ignored),
/// carrying its raw body as every event that may be recorded does.
fn replayed_event(id: &str, email: Option<&str>) -> v1::WebhookEvent {
    v1::WebhookEvent {
        raw_body: Some(b"{}".to_vec()),
        ..contact_event(id, "replayed", email, None)
    }
}

async fn apply(stack: &Stack, event: v1::WebhookEvent, replay_of: &str) -> v1::ApplyEventResponse {
    let item = v1::ApplyEventsItem {
        event: Some(event),
        request_id: "r".into(),
        traceparent: String::new(),
        replay_of: replay_of.into(),
    };
    let mut answer = stack
        .contacts
        .client()
        .await
        .apply_events(v1::ApplyEventsRequest { items: vec![item] })
        .await
        .unwrap()
        .into_inner();
    answer.results.remove(0).response.unwrap()
}

#[tokio::test]
async fn contacts_svc_lets_a_replay_take_over_only_a_record_that_still_says_ignored() {
    let stack = Stack::start().await;
    let ignored = apply(&stack, replayed_event("replayed:e1", None), "").await;
    assert_eq!(ignored.outcome(), v1::EventOutcome::Ignored);
    // A redelivery of an ignored event is a duplicate; its replay, fixed, applies.
    let again = apply(
        &stack,
        replayed_event("replayed:e1", Some("e1@example.com")),
        "",
    )
    .await;
    assert_eq!(again.outcome(), v1::EventOutcome::Duplicate);
    let fixed = replayed_event("replayed:e1", Some("e1@example.com"));
    assert_eq!(
        apply(&stack, fixed.clone(), "replayed:e1").await.outcome(),
        v1::EventOutcome::Applied
    );
    assert_eq!(
        apply(&stack, fixed.clone(), "replayed:e1").await.outcome(),
        v1::EventOutcome::Duplicate,
        "a record that says applied is never taken over"
    );
    let elsewhere = apply(&stack, fixed, "replayed:other").await;
    assert_eq!(
        elsewhere.outcome(),
        v1::EventOutcome::Rejected,
        "{elsewhere:?}"
    );

    // Two replays in separate calls at once: one applies, the other finds it applied.
    for n in 0..8 {
        let id = format!("replayed:race{n}");
        let email = format!("race{n}@example.com");
        assert_eq!(
            apply(&stack, replayed_event(&id, None), "").await.outcome(),
            v1::EventOutcome::Ignored
        );
        let (a, b) = tokio::join!(
            apply(&stack, replayed_event(&id, Some(&email)), &id),
            apply(&stack, replayed_event(&id, Some(&email)), &id)
        );
        let mut outcomes = [a.outcome(), b.outcome()];
        outcomes.sort_by_key(|o| *o as i32);
        assert_eq!(
            outcomes,
            [v1::EventOutcome::Applied, v1::EventOutcome::Duplicate],
            "{id}"
        );
    }
}

/// A GitHub-style source: its event type is a header (`X-GitHub-Event`) and its event id
/// a digest of that type and the body, so a replay needs the recorded header.
fn github(email: &str) -> String {
    format!(
        r#"
[sources.github]
kind = "hmac"
preset = "github"
secrets = ["github-webhook-secret"]

[sources.github.map]
email = "{email}"

[[sources.github.actions]]
types = ["push"]
do = "contact"
"#
    )
}

#[tokio::test]
async fn a_replay_reads_the_headers_recorded_with_the_body() {
    let stack = Stack::start_with_sources(&github("/pusher/mail")).await;
    let push = json!({"pusher": {"name": "The Octocat", "email": "octocat@example.com"}})
        .to_string()
        .into_bytes();
    let sig = sign_as(&["github", "github-webhook-secret"], &push).await;
    let reply = stack
        .http
        .post(
            &stack.edge.url("/webhooks/github"),
            push,
            &[("x-github-event", "push"), ("x-hub-signature-256", &sig)],
        )
        .await;
    // Ignored by contacts-svc, which asks for the body: recorded with its type header.
    assert_eq!(
        reply.json()["reason"],
        "no contact identifiers",
        "{:?}",
        reply.body
    );
    let id = format!("github:{}", reply.json()["event_id"].as_str().unwrap());
    let record = stack.contacts.record(&id).await;
    let headers: Vec<_> = record[0]
        .headers
        .iter()
        .map(|h| (h.name.as_str(), h.value.as_slice()))
        .collect();
    assert_eq!(headers, [("x-github-event", &b"push"[..])]);

    let toml = format!(
        "contacts_url = \"{}\"\n{}",
        stack.contacts.url(),
        github("/pusher/email")
    );
    let edge = Edge::start_with_metrics_listener(&toml).await;
    let replayed = replay(
        &edge,
        edge_v1::ReplayEventsRequest {
            event_ids: vec![id.clone()],
            ..Default::default()
        },
    )
    .await;
    assert_eq!(replayed, [(id, edge_v1::ReplayResult::Applied)]);
    stack
        .contacts
        .lookup_email("octocat@example.com")
        .await
        .unwrap();
}

#[tokio::test]
async fn a_replay_that_fails_leaves_the_record_as_it_was() {
    let stack = Stack::start().await;
    assert_eq!(
        apply(&stack, replayed_event("replayed:f1", None), "")
            .await
            .outcome(),
        v1::EventOutcome::Ignored
    );
    // The identifier's index entry is unreadable: applying the event fails.
    let mut redis = stack.redis.conn().await;
    let () = redis::cmd("SET")
        .arg("hl:idx:email:f1@example.com")
        .arg("not a contact id")
        .query_async(&mut redis)
        .await
        .unwrap();
    let fixed = replayed_event("replayed:f1", Some("f1@example.com"));
    let failed = apply(&stack, fixed.clone(), "replayed:f1").await;
    assert_ne!(failed.outcome(), v1::EventOutcome::Applied, "{failed:?}");
    let kept = stack.contacts.record("replayed:f1").await;
    assert_eq!(
        kept.len(),
        1,
        "the record of an ignored event outlives a failed replay"
    );
    assert_eq!(kept[0].outcome(), v1::EventOutcome::Ignored);
    assert_eq!(kept[0].body, b"{}");

    // Repaired, the next replay applies it.
    let () = redis::cmd("DEL")
        .arg("hl:idx:email:f1@example.com")
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(
        apply(&stack, fixed, "replayed:f1").await.outcome(),
        v1::EventOutcome::Applied
    );
    assert_eq!(
        stack.contacts.record("replayed:f1").await[0].outcome(),
        v1::EventOutcome::Applied
    );
}

#[tokio::test]
async fn replays_of_two_occurrences_of_a_windowed_event_in_one_call_apply_both() {
    let stack = Stack::start().await;
    // An id derived from content, deduplicated within a window: two occurrences an hour
    // apart are two events, each with a record of its own.
    let occurrence = |at: i64, email: Option<&str>| {
        let mut ev = replayed_event("replayed:dg1", email);
        ev.dedup_window_secs = 1;
        ev.received_at = Some(hookline_proto::prost_types::Timestamp {
            seconds: at,
            nanos: 0,
        });
        ev.occurred_at = ev.received_at;
        if let Some(v1::ContactData { email: Some(e), .. }) = &mut ev.contact {
            *e = format!("{at}.{e}");
        }
        ev
    };
    let (first, second) = (1_790_000_000, 1_790_003_600);
    assert_eq!(
        apply(&stack, occurrence(first, None), "").await.outcome(),
        v1::EventOutcome::Ignored
    );
    // The second occurrence, once the first's one-second window has passed.
    hookline_tests::eventually(
        std::time::Duration::from_secs(10),
        "the second occurrence to be recorded",
        || async {
            let outcome = apply(&stack, occurrence(second, None), "").await.outcome();
            (outcome == v1::EventOutcome::Ignored).then_some(())
        },
    )
    .await;
    let ids: Vec<String> = stack
        .contacts
        .events(v1::ListEventsRequest {
            source: "replayed".into(),
            ..Default::default()
        })
        .await
        .into_iter()
        .map(|r| r.event_id)
        .collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    let mut items = Vec::new();
    for at in [first, second] {
        let id = ids
            .iter()
            .find(|id| id.ends_with(&format!("@{}", at * 1000)))
            .unwrap_or_else(|| panic!("a record of the occurrence at {at}: {ids:?}"));
        items.push(v1::ApplyEventsItem {
            event: Some(occurrence(at, Some("dg1@example.com"))),
            request_id: "r".into(),
            traceparent: String::new(),
            replay_of: id.clone(),
        });
    }
    let answer = stack
        .contacts
        .client()
        .await
        .apply_events(v1::ApplyEventsRequest { items })
        .await
        .unwrap()
        .into_inner();
    let outcomes: Vec<_> = answer
        .results
        .iter()
        .map(|r| r.response.as_ref().unwrap().outcome())
        .collect();
    assert_eq!(
        outcomes,
        [v1::EventOutcome::Applied, v1::EventOutcome::Applied]
    );
    for at in [first, second] {
        stack
            .contacts
            .lookup_email(&format!("{at}.dg1@example.com"))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_replay_keeps_the_original_of_an_id_that_could_not_serve_as_a_key() {
    let stack = Stack::start_with_sources(&acme(OLD, "/data/mail")).await;
    // Over 256 bytes: recorded under a digest of it, the original kept beside.
    let long_id = format!("msg_{}", "x".repeat(300));
    let reply = deliver(
        &stack.edge,
        &stack.http,
        &long_id,
        &user(Some("long@example.com")),
    )
    .await;
    assert_eq!(reply.json()["status"], "ignored", "{:?}", reply.body);
    let records = stack
        .contacts
        .events(v1::ListEventsRequest {
            source: "acme".into(),
            ..Default::default()
        })
        .await;
    let record = records
        .iter()
        .find(|r| r.original_event_id.contains(&long_id))
        .expect("the record of the long id");
    assert!(
        record.event_id.starts_with("acme:sha256:"),
        "{}",
        record.event_id
    );
    let id = record.event_id.clone();

    let edge = fixed_edge(&stack).await;
    let replayed = replay(
        &edge,
        edge_v1::ReplayEventsRequest {
            event_ids: vec![id.clone()],
            ..Default::default()
        },
    )
    .await;
    assert_eq!(replayed, [(id.clone(), edge_v1::ReplayResult::Applied)]);
    let after = stack.contacts.record(&id).await;
    assert_eq!(after[0].outcome(), v1::EventOutcome::Applied);
    assert!(after[0].original_event_id.contains(&long_id), "{after:?}");
}

#[tokio::test]
async fn a_replay_of_a_windowed_event_leaves_todays_deliveries_alone() {
    let stack = Stack::start().await;
    let event = |at: i64, window: u32, email: Option<&str>| {
        let mut ev = replayed_event("replayed:w1", email);
        ev.dedup_window_secs = window;
        ev.received_at = Some(hookline_proto::prost_types::Timestamp {
            seconds: at,
            nanos: 0,
        });
        ev
    };
    let then = 1_790_000_000;
    assert_eq!(
        apply(&stack, event(then, 1, None), "").await.outcome(),
        v1::EventOutcome::Ignored
    );
    let record = format!("replayed:w1@{}", then * 1000);
    // Replayed under a longer window (the configuration changed): it applies, and it
    // does not make the same content delivered today a duplicate once the first
    // occurrence's own one-second window is over.
    assert_eq!(
        apply(&stack, event(then, 3600, Some("w1@example.com")), &record)
            .await
            .outcome(),
        v1::EventOutcome::Applied
    );
    hookline_tests::eventually(
        std::time::Duration::from_secs(10),
        "a delivery of today to be an occurrence of its own",
        || async {
            let today = hookline_tests::now_secs();
            let outcome = apply(&stack, event(today, 3600, Some("w1@example.com")), "")
                .await
                .outcome();
            (outcome == v1::EventOutcome::Applied).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn a_record_of_a_source_this_edge_lacks_is_skipped_with_the_reason() {
    let stack = Stack::start_with_sources(&acme(OLD, "/data/mail")).await;
    let reply = deliver(
        &stack.edge,
        &stack.http,
        "msg_elsewhere",
        &user(Some("e@example.com")),
    )
    .await;
    assert_eq!(reply.json()["status"], "ignored", "{:?}", reply.body);
    let toml = format!(
        "contacts_url = \"{}\"\n{}",
        stack.contacts.url(),
        hookline_tests::stripe_source()
    );
    let edge = Edge::start_with_metrics_listener(&toml).await;
    let mut client = ReplayServiceClient::connect(format!("http://{}", edge.admin_addr))
        .await
        .unwrap();
    let answer = client
        .replay_events(edge_v1::ReplayEventsRequest {
            event_ids: vec!["acme:msg_elsewhere".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.events.len(), 1);
    assert_eq!(answer.events[0].result(), edge_v1::ReplayResult::Skipped);
    assert!(
        answer.events[0].reason.contains("not configured"),
        "{:?}",
        answer.events[0]
    );
    assert_eq!(
        stack.contacts.record("acme:msg_elsewhere").await[0].outcome(),
        v1::EventOutcome::Ignored,
        "left as it was"
    );
}
