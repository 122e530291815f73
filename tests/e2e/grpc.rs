//! contacts-svc as internal callers and engineers see it: grpcurl by reflection, health,
//! validation errors, idempotent upserts and paging.

use std::time::Duration;

use hookline_proto::v1;
use hookline_tests::{
    ContactsSvc, Redis, Stack, contact_item, eventually, grpcurl_output, run_grpcurl,
    stripe_checkout,
};

/// What grpcurl says of contacts-svc's health (its output and errors).
async fn health_check(addr: &str) -> String {
    let out = grpcurl_output(&[
        "-plaintext",
        "-d",
        r#"{"service":"contacts.v1.ContactsService"}"#,
        addr,
        "grpc.health.v1.Health/Check",
    ])
    .await;
    format!(
        "{} {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test]
async fn grpcurl_lists_describes_and_calls_by_reflection() {
    let stack = Stack::start().await;
    let addr = stack.contacts.addr.to_string();
    let body = stripe_checkout("evt_grpcurl", "grpcurl@example.com", 1999, "pi_grpcurl");
    assert_eq!(stack.post_stripe(&body).await.status, 200);

    let list = run_grpcurl(&["-plaintext", &addr, "list"]).await;
    assert!(list.contains("contacts.v1.ContactsService"), "{list}");
    assert!(list.contains("grpc.health.v1.Health"), "{list}");
    let describe = run_grpcurl(&[
        "-plaintext",
        &addr,
        "describe",
        "contacts.v1.ContactsService",
    ])
    .await;
    for rpc in [
        "ApplyEvent",
        "UpsertContact",
        "GetContact",
        "LookupContact",
        "ListContacts",
        "ListEvents",
        "EraseContact",
    ] {
        assert!(
            describe.contains(&format!("rpc {rpc}")),
            "{rpc} missing from {describe}"
        );
    }
    let health = health_check(&addr).await;
    assert!(health.contains(r#""SERVING""#), "{health}");
    let found = run_grpcurl(&[
        "-plaintext",
        "-d",
        r#"{"email":"GRPCURL@example.com"}"#,
        &addr,
        "contacts.v1.ContactsService/LookupContact",
    ])
    .await;
    let json: serde_json::Value = serde_json::from_str(&found).unwrap();
    assert_eq!(json["contact"]["email"], "grpcurl@example.com");
    assert_eq!(json["contact"]["purchases"][0]["amount"], "1999");
    assert_eq!(json["contact"]["stage"], "STAGE_PURCHASED");
}

#[tokio::test]
async fn health_is_not_serving_until_redis_answers() {
    // Start contacts-svc against a Redis that is not there yet.
    let mut redis = Redis::start().await;
    redis.kill().await;
    let contacts = ContactsSvc::start(&redis.url()).await;
    let addr = contacts.addr.to_string();
    let text = health_check(&addr).await;
    assert!(text.contains(r#""NOT_SERVING""#), "{text}");
    let mut grpc = contacts.client().await;
    let err = grpc
        .get_contact(v1::GetContactRequest {
            contact_id: "ct_0190a2b3c4d5e6f708192a3b4c5d6e7f".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");

    // Once Redis answers, so does the health check.
    redis.restart().await;
    eventually(Duration::from_secs(10), "health SERVING", || async {
        let text = health_check(&addr).await;
        text.contains(r#""SERVING""#).then_some(())
    })
    .await;
}

#[tokio::test]
async fn bad_arguments_name_the_field_and_missing_contacts_are_not_found() {
    let redis = Redis::start().await;
    let contacts = ContactsSvc::start(&redis.url()).await;
    let mut grpc = contacts.client().await;
    use v1::lookup_contact_request::Key;
    let lookup = |key| v1::LookupContactRequest {
        key: Some(key),
        phone_region: String::new(),
    };
    let cases = [
        (
            lookup(Key::Email("not-an-email".into())),
            tonic::Code::InvalidArgument,
            "email",
        ),
        (
            lookup(Key::Phone("call me".into())),
            tonic::Code::InvalidArgument,
            "phone",
        ),
        (
            lookup(Key::ExternalId(v1::ExternalId {
                system: "Bad System".into(),
                id: "x".into(),
            })),
            tonic::Code::InvalidArgument,
            "external_id.system",
        ),
        (
            v1::LookupContactRequest::default(),
            tonic::Code::InvalidArgument,
            "key",
        ),
        (
            lookup(Key::Email("nobody@example.com".into())),
            tonic::Code::NotFound,
            "no contact",
        ),
        (
            lookup(Key::Phone("(415) 555-0100".into())),
            tonic::Code::NotFound,
            "no contact",
        ),
    ];
    for (req, code, needle) in cases {
        let err = grpc.lookup_contact(req.clone()).await.unwrap_err();
        assert_eq!(err.code(), code, "{req:?}");
        assert!(
            err.message().contains(needle),
            "{:?} should name {needle}",
            err.message()
        );
    }
    let err = grpc
        .get_contact(v1::GetContactRequest {
            contact_id: "42".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("contact_id"));
    let err = grpc
        .apply_event(v1::ApplyEventRequest {
            event: Some(v1::WebhookEvent::default()),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("event.id"), "{}", err.message());
    assert_eq!(redis.dbsize().await, 0, "bad input changed something");
}

#[tokio::test]
async fn upserts_are_idempotent_and_partial() {
    let redis = Redis::start().await;
    let contacts = ContactsSvc::start(&redis.url()).await;
    let mut grpc = contacts.client().await;
    let upsert = |key: &str, data: v1::ContactData, mask: &[&str], contact_id: &str| {
        v1::UpsertContactRequest {
            idempotency_key: key.into(),
            contact_id: contact_id.into(),
            data: Some(data),
            update_mask: Some(hookline_proto::prost_types::FieldMask {
                paths: mask.iter().map(|s| (*s).to_owned()).collect(),
            }),
            occurred_at: None,
        }
    };
    let data = v1::ContactData {
        email: Some("Upsert@Example.com".into()),
        phone: Some("(415) 555-0100".into()),
        first_name: Some("Ada".into()),
        ..v1::ContactData::default()
    };
    let first = grpc
        .upsert_contact(upsert("k1", data.clone(), &[], ""))
        .await
        .unwrap()
        .into_inner();
    assert!(first.applied);
    let contact = first.contact.unwrap();
    assert_eq!(
        (contact.email.as_str(), contact.phone.as_str()),
        ("upsert@example.com", "+14155550100")
    );
    let again = grpc
        .upsert_contact(upsert("k1", data.clone(), &[], ""))
        .await
        .unwrap()
        .into_inner();
    assert!(!again.applied);
    assert_eq!(again.contact.unwrap().id, contact.id);

    // Only the masked field is written.
    let change = v1::ContactData {
        first_name: Some("Grace".into()),
        last_name: Some("Hopper".into()),
        ..v1::ContactData::default()
    };
    let masked = grpc
        .upsert_contact(upsert("k2", change, &["last_name"], &contact.id))
        .await
        .unwrap()
        .into_inner()
        .contact
        .unwrap();
    assert_eq!(
        (masked.first_name.as_str(), masked.last_name.as_str()),
        ("Ada", "Hopper")
    );

    let err = grpc
        .upsert_contact(upsert("", data.clone(), &[], ""))
        .await
        .unwrap_err();
    assert!(err.message().contains("idempotency_key"));
    let err = grpc
        .upsert_contact(upsert(
            "k3",
            v1::ContactData::default(),
            &[],
            "ct_0190a2b3c4d5e6f708192a3b4c5d6e7f",
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let err = grpc
        .upsert_contact(upsert("k4", data, &["nickname"], ""))
        .await
        .unwrap_err();
    assert!(err.message().contains("update_mask"));
}

#[tokio::test]
async fn contacts_and_events_page_newest_first() {
    let stack = Stack::start().await;
    for i in 0..5 {
        let body = stripe_checkout(
            &format!("evt_page_{i}"),
            &format!("p{i}@example.com"),
            100,
            &format!("pi_page_{i}"),
        );
        assert_eq!(stack.post_stripe(&body).await.status, 200);
    }
    let mut grpc = stack.contacts.client().await;
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = grpc
            .list_contacts(v1::ListContactsRequest {
                page_size: 2,
                page_token: token.clone(),
                stage: 0,
            })
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        seen.extend(page.contacts.into_iter().map(|c| c.email));
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
        assert!(pages < 10, "paging does not end");
    }
    assert_eq!(
        seen,
        [
            "p4@example.com",
            "p3@example.com",
            "p2@example.com",
            "p1@example.com",
            "p0@example.com"
        ]
    );
    assert_eq!(pages, 3, "pages of at most 2");
    let none = grpc
        .list_contacts(v1::ListContactsRequest {
            page_size: 10,
            page_token: String::new(),
            stage: v1::Stage::Booked.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(none.contacts.is_empty());

    let mut ids = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        pages += 1;
        assert!(pages < 10, "paging does not end");
        let page = grpc
            .list_events(v1::ListEventsRequest {
                page_size: 3,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        ids.extend(page.events.into_iter().map(|e| e.event_id));
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(pages, 2, "pages of at most 3");
    let newest_first: Vec<String> = (0..5)
        .rev()
        .map(|i| format!("stripe:evt_page_{i}"))
        .collect();
    assert_eq!(ids, newest_first);
    let err = grpc
        .list_events(v1::ListEventsRequest {
            page_token: "garbage".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(err.message().contains("page_token"));
}

#[tokio::test]
async fn apply_events_answers_each_event_on_its_own() {
    let redis = Redis::start().await;
    let contacts = ContactsSvc::start(&redis.url()).await;
    let mut grpc = contacts.client().await;
    let mut no_id = contact_item("batch:2", "two@example.com", None);
    if let Some(event) = no_id.event.as_mut() {
        event.id = String::new();
    }
    let items = vec![
        contact_item("batch:1", "one@example.com", None),
        no_id,
        contact_item("batch:1", "one@example.com", None),
        v1::ApplyEventsItem::default(),
    ];
    let results = grpc
        .apply_events(v1::ApplyEventsRequest { items })
        .await
        .unwrap()
        .into_inner()
        .results;
    assert_eq!(results.len(), 4);
    let outcomes: Vec<_> = results
        .iter()
        .map(|r| r.response.as_ref().map(|a| a.outcome()))
        .collect();
    // The same event twice in one batch takes effect once: the first copy applies, the
    // second is its duplicate, on the same contact.
    assert_eq!(outcomes[0], Some(v1::EventOutcome::Applied));
    assert_eq!(outcomes[2], Some(v1::EventOutcome::Duplicate));
    let contact_of = |i: usize| results[i].response.as_ref().map(|a| a.contact_id.clone());
    assert!(contact_of(0).is_some_and(|c| !c.is_empty()));
    assert_eq!(contact_of(0), contact_of(2));
    // An event that breaks the contract is rejected, naming the field; nothing stored.
    assert_eq!(outcomes[1], Some(v1::EventOutcome::Rejected));
    assert_eq!(outcomes[3], Some(v1::EventOutcome::Rejected));
    let reason = |i: usize| results[i].response.as_ref().map(|a| a.reason.clone());
    assert!(
        reason(1).is_some_and(|r| r.contains("event.id")),
        "{results:?}"
    );
    assert!(
        reason(3).is_some_and(|r| r.contains("event")),
        "{results:?}"
    );

    let too_many = vec![contact_item("batch:x", "x@example.com", None); 1001];
    let err = grpc
        .apply_events(v1::ApplyEventsRequest { items: too_many })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("items"));
}

/// Two new events about one new person in one batch: both read "nobody has this email"
/// in the batch's first round trip, both create a contact, and only one can claim the
/// email. The loser's contact, already written, must end up merged into the winner's,
/// not left behind as a second copy of the person.
#[tokio::test]
async fn racing_creators_in_one_batch_leave_one_contact() {
    let redis = Redis::start().await;
    let contacts = ContactsSvc::start(&redis.url()).await;
    let mut grpc = contacts.client().await;
    // A first event loads the write script, so that the race below writes contacts on
    // its first attempt instead of both retrying after a NOSCRIPT reply.
    let warmup = grpc
        .apply_events(v1::ApplyEventsRequest {
            items: vec![contact_item("race:0", "earlier@example.com", None)],
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    assert!(warmup[0].response.is_some(), "{warmup:?}");
    let results = grpc
        .apply_events(v1::ApplyEventsRequest {
            items: vec![
                contact_item("race:1", "race@example.com", Some("Ada")),
                contact_item("race:2", "Race@Example.com", None),
            ],
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    let ids: Vec<String> = results
        .iter()
        .map(|r| {
            let applied = r.response.as_ref().expect("both apply");
            assert_eq!(applied.outcome(), v1::EventOutcome::Applied);
            applied.contact_id.clone()
        })
        .collect();
    assert_eq!(ids[0], ids[1], "both events name the surviving contact");

    let listed = grpc
        .list_contacts(v1::ListContactsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .contacts;
    assert_eq!(listed.len(), 2, "two people, two contacts: {listed:?}");
    let contact = listed
        .iter()
        .find(|c| c.id == ids[0])
        .expect("the survivor is listed");
    assert_eq!(contact.first_name, "Ada");
    // The losing creator's contact was written, then merged into the survivor.
    assert_eq!(contact.merged_ids.len(), 1, "{contact:?}");
    let absorbed = contacts
        .get_contact(&contact.merged_ids[0])
        .await
        .expect("resolves");
    assert_eq!(
        absorbed.id, contact.id,
        "the merged id resolves to the survivor"
    );
    let events = contacts.contact_events(&contact.id).await;
    let mut logged: Vec<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
    logged.sort_unstable();
    assert_eq!(logged, ["race:1", "race:2"]);
}

/// A stored value one event cannot read (here an index entry that is not a contact id)
/// fails that event alone: the rest of its batch applies, and its lease is given back
/// at once, so the sender's retry is not told "in progress" for the lease's lifetime.
#[tokio::test]
async fn a_corrupt_entry_fails_only_its_own_event_of_a_batch() {
    let redis = Redis::start().await;
    let contacts = ContactsSvc::start(&redis.url()).await;
    let mut grpc = contacts.client().await;
    let mut conn = redis.conn().await;
    let () = redis::cmd("SET")
        .arg("hl:idx:email:corrupt@example.com")
        .arg("not a contact id")
        .query_async(&mut conn)
        .await
        .expect("SET");
    let results = grpc
        .apply_events(v1::ApplyEventsRequest {
            items: vec![
                contact_item("corrupt:1", "corrupt@example.com", None),
                contact_item("corrupt:2", "fine@example.com", None),
            ],
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    let failed = results[0].response.as_ref().unwrap();
    assert_eq!(
        failed.outcome(),
        v1::EventOutcome::RetryLater,
        "{results:?}"
    );
    assert!(
        !failed.reason.contains("corrupt@"),
        "a failure says nothing about its cause: {results:?}"
    );
    let applied = results[1]
        .response
        .as_ref()
        .expect("the other event applies");
    assert_eq!(applied.outcome(), v1::EventOutcome::Applied);
    let marker = |id: &str| redis::cmd("EXISTS").arg(format!("hl:ev:{{{id}}}")).clone();
    let done: bool = marker("corrupt:2")
        .query_async(&mut conn)
        .await
        .expect("EXISTS");
    assert!(done, "the applied event has its marker under this key");
    let leased: bool = marker("corrupt:1")
        .query_async(&mut conn)
        .await
        .expect("EXISTS");
    assert!(!leased, "the failed event's lease is released");
}

#[tokio::test]
async fn pages_of_the_webhook_log_are_bounded_in_bytes() {
    let redis = Redis::start().await;
    let contacts = ContactsSvc::start(&redis.url()).await;
    // Five ignored events, each kept with a raw body of 1 MiB.
    let body = vec![b'x'; 1024 * 1024];
    let items: Vec<v1::ApplyEventsItem> = (0..5)
        .map(|i| {
            let mut item = contact_item(&format!("batch:big{i}"), "big@example.com", None);
            if let Some(event) = item.event.as_mut() {
                event.payload = Some(v1::webhook_event::Payload::Ignored(v1::EventIgnored {
                    reason: "unknown type".into(),
                    ..Default::default()
                }));
                event.raw_body = Some(body.clone());
            }
            item
        })
        .collect();
    let mut grpc = contacts.client().await;
    let results = grpc
        .apply_events(v1::ApplyEventsRequest { items })
        .await
        .unwrap()
        .into_inner()
        .results;
    assert!(
        results
            .iter()
            .all(|r| r.response.as_ref().map(v1::ApplyEventResponse::outcome)
                == Some(v1::EventOutcome::Ignored)),
        "{results:?}"
    );

    // A client with gRPC's default 4 MiB limit pages through them all, each once.
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = grpc
            .list_events(v1::ListEventsRequest {
                page_size: 100,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .expect("a page fits the client's default message limit")
            .into_inner();
        pages += 1;
        assert!(
            !page.events.is_empty() && page.events.len() <= 3,
            "{}",
            page.events.len()
        );
        seen.extend(page.events.into_iter().map(|e| (e.event_id, e.body.len())));
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    seen.sort();
    let want: Vec<(String, usize)> = (0..5)
        .map(|i| (format!("batch:big{i}"), 1024 * 1024))
        .collect();
    assert_eq!(seen, want);
    assert!(pages >= 2, "{pages} pages");
}
