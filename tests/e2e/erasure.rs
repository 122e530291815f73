//! Erasing a person (`EraseContact`): after a Stripe checkout through the edge, a
//! replayed event that was recorded with its raw body, and a second contact merged into
//! the first, nothing in Redis names the person any more; the contact is a tombstone
//! that says when and by whom it was erased; a later event about the same person makes a
//! new contact; erasing again answers the same tombstone. The other tests erase while
//! events about the person keep coming, complete an erasure a crash cut short (its
//! tombstone written with what was left to clean), and answer an erasure only once a
//! replica holds it when contacts-svc waits for replicas.
//!
//! Contact records are stored compressed, so not finding an email in their bytes would
//! prove little; the strong check therefore also requires every contact value to be a
//! tombstone or a redirect, whose bytes are plain.

use std::collections::BTreeSet;

use futures::future::join_all;
use hookline_proto::v1::{self, lookup_contact_request::Key};
use hookline_tests::{ContactsSvc, Redis, Stack, contact_event, contact_item, stripe_checkout};

/// Jenny's email (Stripe's checkout), the email of the contact merged into hers, the
/// phone `stripe_checkout` states, a second phone of the merged contact, her name and
/// her GoHighLevel id.
const EMAIL: &str = "jenny.erased@example.com";
const WORK_EMAIL: &str = "jen.at.work@example.com";
const PHONE: &str = "+14155550100";
const WORK_PHONE: &str = "+14155550199";
const NAME: &str = "Jenny Rosen";
const GHL_ID: &str = "ghl_erase_1";

/// What identifies Jenny: each names an index key until she is erased.
const IDENTIFIERS: [&str; 5] = [EMAIL, WORK_EMAIL, PHONE, WORK_PHONE, GHL_ID];
/// None of it may be left anywhere once she is erased.
const PERSONAL: [&str; 6] = [EMAIL, WORK_EMAIL, PHONE, WORK_PHONE, GHL_ID, NAME];

/// An `ApplyEvents` item of `event`, replaying record `replay_of` when not empty.
fn item(event: v1::WebhookEvent, replay_of: &str) -> v1::ApplyEventsItem {
    v1::ApplyEventsItem {
        event: Some(event),
        request_id: "r".into(),
        traceparent: String::new(),
        replay_of: replay_of.into(),
    }
}

/// A profile event `id` of the source `batch` with these contact fields.
fn profile(id: &str, data: v1::ContactData) -> v1::WebhookEvent {
    v1::WebhookEvent {
        contact: Some(data),
        ..contact_event(id, "batch", None, None)
    }
}

fn ghl_id() -> v1::ExternalId {
    v1::ExternalId {
        system: "ghl_contact".into(),
        id: GHL_ID.into(),
    }
}

async fn erase(contacts: &ContactsSvc, id: &str) -> Result<v1::Contact, tonic::Status> {
    contacts
        .client()
        .await
        .erase_contact(v1::EraseContactRequest {
            contact_id: id.into(),
        })
        .await
        .map(|r| r.into_inner().contact.unwrap_or_default())
}

async fn lookup(stack: &Stack, key: Key) -> Result<v1::Contact, tonic::Status> {
    stack
        .contacts
        .client()
        .await
        .lookup_contact(v1::LookupContactRequest {
            key: Some(key),
            phone_region: String::new(),
        })
        .await
        .map(|r| r.into_inner().contact.unwrap_or_default())
}

/// Every byte string Redis holds under `key`: its name, and its value (a string, or the
/// fields and values of a stream's entries).
async fn contents(c: &mut redis::aio::MultiplexedConnection, key: &str) -> Vec<Vec<u8>> {
    let kind: String = redis::cmd("TYPE").arg(key).query_async(c).await.unwrap();
    let value: redis::Value = match kind.as_str() {
        "string" => redis::cmd("GET").arg(key).query_async(c).await.unwrap(),
        "stream" => redis::cmd("XRANGE")
            .arg(key)
            .arg("-")
            .arg("+")
            .query_async(c)
            .await
            .unwrap(),
        other => panic!("{key}: a {other}, which hookline does not write"),
    };
    let mut out = vec![key.as_bytes().to_vec()];
    flatten(value, &mut out);
    out
}

fn flatten(value: redis::Value, out: &mut Vec<Vec<u8>>) {
    match value {
        redis::Value::BulkString(b) => out.push(b),
        redis::Value::SimpleString(s) => out.push(s.into_bytes()),
        redis::Value::Array(items) => items.into_iter().for_each(|v| flatten(v, out)),
        _ => {}
    }
}

/// Every key of the database with the byte strings it holds (see [`contents`]).
async fn every_key(stack: &Stack) -> Vec<(String, Vec<Vec<u8>>)> {
    let mut c = stack.redis.conn().await;
    let mut keys = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut c)
            .await
            .unwrap();
        keys.extend(batch);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    let mut all = Vec::new();
    for key in keys {
        let held = contents(&mut c, &key).await;
        all.push((key, held));
    }
    all
}

/// The keys whose name or value holds `text`.
fn holding(all: &[(String, Vec<Vec<u8>>)], text: &str) -> Vec<String> {
    all.iter()
        .filter(|(_, held)| {
            held.iter()
                .any(|b| b.windows(text.len()).any(|w| w == text.as_bytes()))
        })
        .map(|(key, _)| key.clone())
        .collect()
}

/// Every lookup of Jenny's identifiers, with what it names.
fn jennys_keys() -> Vec<(Key, &'static str)> {
    vec![
        (Key::Email(EMAIL.into()), EMAIL),
        (Key::Email(WORK_EMAIL.into()), WORK_EMAIL),
        (Key::Phone(PHONE.into()), PHONE),
        (Key::Phone(WORK_PHONE.into()), WORK_PHONE),
        (Key::ExternalId(ghl_id()), GHL_ID),
    ]
}

#[tokio::test]
async fn an_erased_person_is_gone_from_every_key_and_comes_back_only_as_new() {
    let stack = Stack::start().await;
    let contacts = &stack.contacts;

    // A checkout through the edge: her email, phone, name and payment.
    let checkout = stripe_checkout("evt_erase_1", EMAIL, 4900, "pi_erase_1");
    let reply = stack.post_stripe(&checkout).await;
    assert_eq!(reply.json()["status"], "applied", "{:?}", reply.body);
    let jenny = contacts.lookup_email(EMAIL).await.unwrap().id;

    // An event the edge could not read, recorded with its raw body and headers, then
    // replayed once normalized: it is hers now, and its record is in her log.
    let mut unread = contact_event("acme:msg_erase", "acme", None, None);
    unread.payload = Some(v1::webhook_event::Payload::Ignored(v1::EventIgnored {
        reason: "a type no action takes".into(),
        ..Default::default()
    }));
    unread.raw_body = Some(format!(r#"{{"data":{{"email":"{EMAIL}","name":"{NAME}"}}}}"#).into());
    unread.raw_headers = vec![v1::Header {
        name: "webhook-id".into(),
        value: b"msg_erase".to_vec(),
    }];
    let answers = contacts.apply_events(vec![item(unread, "")]).await;
    assert_eq!(answers[0].outcome(), v1::EventOutcome::Ignored);
    let recorded = contacts.record("acme:msg_erase").await;
    assert!(!recorded[0].body.is_empty() && !recorded[0].headers.is_empty());
    let replayed = v1::WebhookEvent {
        contact: Some(v1::ContactData {
            email: Some(EMAIL.into()),
            last_name: Some("Rosen".into()),
            ..Default::default()
        }),
        ..contact_event("acme:msg_erase", "acme", None, None)
    };
    let answers = contacts
        .apply_events(vec![item(replayed, "acme:msg_erase")])
        .await;
    assert_eq!(answers[0].outcome(), v1::EventOutcome::Applied);
    assert_eq!(answers[0].contact_id, jenny);

    // A second contact (her work email and phone, her GoHighLevel id), then an event
    // that ties it to her: merged into hers. Its region is malformed, which the link's
    // record notes.
    let work = profile(
        "batch:erase-work",
        v1::ContactData {
            email: Some(WORK_EMAIL.into()),
            phone: Some(WORK_PHONE.into()),
            first_name: Some("Jen".into()),
            external_ids: vec![ghl_id()],
            ..Default::default()
        },
    );
    let link = profile(
        "batch:erase-link",
        v1::ContactData {
            email: Some(EMAIL.into()),
            external_ids: vec![ghl_id()],
            phone_region: "not a region".into(),
            ..Default::default()
        },
    );
    let answers = contacts.apply_events(vec![item(work, "")]).await;
    let absorbed = answers[0].contact_id.clone();
    assert_ne!(absorbed, jenny);
    let answers = contacts.apply_events(vec![item(link, "")]).await;
    assert_eq!(answers[0].contact_id, jenny);
    assert!(!answers[0].notes.is_empty(), "{:?}", answers[0]);
    let merged = contacts.get_contact(&absorbed).await.unwrap();
    assert_eq!(merged.id, jenny);
    assert_eq!(merged.merged_ids, std::slice::from_ref(&absorbed));
    let before = contacts.contact_events(&jenny).await;
    assert_eq!(before.len(), 4, "{before:?}");
    // Before: every one of her identifiers is in Redis, so the check below can fail.
    let all = every_key(&stack).await;
    for text in IDENTIFIERS {
        assert!(!holding(&all, text).is_empty(), "{text} is nowhere before");
    }

    // Erased through the merged contact's id: the survivor is what goes.
    let tombstone = erase(contacts, &absorbed).await.unwrap();
    assert_eq!(tombstone.id, jenny);
    assert!(tombstone.erased_at.is_some(), "{tombstone:?}");
    assert_eq!(tombstone.erased_by, "unauthenticated");
    let bare = v1::Contact {
        id: jenny.clone(),
        erased_at: tombstone.erased_at,
        erased_by: tombstone.erased_by.clone(),
        ..Default::default()
    };
    assert_eq!(tombstone, bare, "a tombstone holds nothing else");

    // No lookup finds her; both ids show the tombstone; the listing shows it too,
    // and no stage's listing does.
    for (key, what) in jennys_keys() {
        let found = lookup(&stack, key).await;
        assert_eq!(
            found.as_ref().map_err(tonic::Status::code),
            Err(tonic::Code::NotFound),
            "lookup by {what}: {found:?}"
        );
    }
    for id in [&jenny, &absorbed] {
        assert_eq!(contacts.get_contact(id).await.unwrap(), tombstone, "{id}");
    }
    let listed = contacts.contacts().await;
    assert_eq!(listed, std::slice::from_ref(&tombstone));
    let leads = contacts
        .client()
        .await
        .list_contacts(v1::ListContactsRequest {
            stage: v1::Stage::Lead.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .contacts;
    assert!(leads.is_empty(), "{leads:?}");

    // Her events: none listed by contact; in the whole log, her records are stripped.
    for id in [&jenny, &absorbed] {
        assert_eq!(contacts.contact_events(id).await, [], "{id}");
    }
    // (The replayed event is listed twice: at its first delivery and at its replay.)
    let log = contacts.events(v1::ListEventsRequest::default()).await;
    let ids: BTreeSet<&str> = before.iter().map(|r| r.event_id.as_str()).collect();
    let hers: Vec<&v1::EventRecord> = log
        .iter()
        .filter(|r| ids.contains(r.event_id.as_str()))
        .collect();
    let listed_ids: BTreeSet<&str> = hers.iter().map(|r| r.event_id.as_str()).collect();
    assert_eq!(listed_ids, ids, "{log:?}");
    for r in hers {
        assert!(
            r.body.is_empty() && r.headers.is_empty() && r.notes.is_empty() && r.reason.is_empty(),
            "{r:?}"
        );
    }

    // The strong check: no key of the database holds any of it, in its name or value.
    // Contact values are compressed: that every one is a tombstone or a redirect
    // makes reading their bytes meaningful.
    let all = every_key(&stack).await;
    for text in PERSONAL {
        assert_eq!(holding(&all, text), Vec::<String>::new(), "{text}");
    }
    for (key, held) in &all {
        if key.starts_with("hl:c:") {
            let kind = held[1].get(17).copied().map(char::from);
            assert!(matches!(kind, Some('e' | 'r')), "{key}: {kind:?}");
        }
    }

    // A new event about her makes a new contact, with nothing of the old one.
    let answers = contacts
        .apply_events(vec![contact_item(
            "batch:erase-after",
            EMAIL,
            Some("Jenny again"),
        )])
        .await;
    assert_eq!(answers[0].outcome(), v1::EventOutcome::Applied);
    let fresh = contacts.lookup_email(EMAIL).await.unwrap();
    assert_ne!(fresh.id, jenny);
    assert_eq!(answers[0].contact_id, fresh.id);
    assert_eq!(
        (fresh.email.as_str(), fresh.first_name.as_str()),
        (EMAIL, "Jenny again")
    );
    assert!(
        fresh.phone.is_empty()
            && fresh.name.is_empty()
            && fresh.last_name.is_empty()
            && fresh.purchases.is_empty()
            && fresh.external_ids.is_empty()
            && fresh.merged_ids.is_empty(),
        "{fresh:?}"
    );
    assert_eq!(contacts.get_contact(&jenny).await.unwrap(), tombstone);

    // Erasing again answers the same tombstone.
    assert_eq!(erase(contacts, &jenny).await.unwrap(), tombstone);
    assert_eq!(erase(contacts, &absorbed).await.unwrap(), tombstone);
    for (id, code) in [
        ("ct_0190f0e0c0a07000800000000000000a", tonic::Code::NotFound),
        ("jenny", tonic::Code::InvalidArgument),
    ] {
        let answer = erase(contacts, id).await;
        assert_eq!(answer.map_err(|e| e.code()), Err(code), "{id}");
    }
}

#[tokio::test]
async fn an_erasure_racing_events_about_the_person_never_brings_her_back() {
    let stack = Stack::start().await;
    let contacts = &stack.contacts;
    for round in 0..3 {
        let email = format!("racing{round}@example.com");
        let (event, intent) = (format!("evt_race_{round}"), format!("pi_race_{round}"));
        let checkout = stripe_checkout(&event, &email, 100, &intent);
        assert_eq!(stack.post_stripe(&checkout).await.status, 200);
        let jenny = contacts.lookup_email(&email).await.unwrap().id;
        // Eight events about her in four calls, sent while she is being erased.
        let events = (0..4).map(|call| {
            let items = (0..2)
                .map(|i| {
                    let id = format!("batch:race-{round}-{call}-{i}");
                    contact_item(&id, &email, Some(&format!("name {call}-{i}")))
                })
                .collect();
            contacts.apply_events(items)
        });
        let (erased, answers) = tokio::join!(erase(contacts, &jenny), join_all(events));
        let tombstone = erased.unwrap();
        assert_eq!(tombstone.id, jenny);
        for answer in answers.iter().flatten() {
            assert_eq!(answer.outcome(), v1::EventOutcome::Applied, "{answer:?}");
        }
        // Whatever was applied to her before the tombstone went with her; what came
        // after made one new contact (or none, when all came before).
        assert_eq!(contacts.get_contact(&jenny).await.unwrap(), tombstone);
        match contacts.lookup_email(&email).await {
            Ok(fresh) => {
                assert_ne!(fresh.id, jenny);
                assert!(fresh.purchases.is_empty(), "{fresh:?}");
            }
            Err(e) => assert_eq!(e.code(), tonic::Code::NotFound),
        }
        // No index entry names her.
        let all = every_key(&stack).await;
        let naming = holding(&all, &jenny);
        assert!(
            naming.iter().all(|k| !k.starts_with("hl:idx:")),
            "{naming:?}"
        );
    }
}

#[tokio::test]
async fn an_erasure_cut_short_is_completed_by_the_next_call() {
    let stack = Stack::start().await;
    let contacts = &stack.contacts;
    let checkout = stripe_checkout("evt_cut_1", EMAIL, 4900, "pi_cut_1");
    assert_eq!(stack.post_stripe(&checkout).await.status, 200);
    let jenny = contacts.lookup_email(EMAIL).await.unwrap().id;
    // A contact of hers whose merge into hers was cut short too: her record names it as
    // merged, but it still holds its data.
    let answers = contacts
        .apply_events(vec![contact_item(
            "batch:cut-work",
            WORK_EMAIL,
            Some("Jen"),
        )])
        .await;
    let unmerged = answers[0].contact_id.clone();

    // What a crash right after the first step leaves: the tombstone, written over the
    // record's version, listing what is still to clean (the layout of `stored.rs`).
    let mut c = stack.redis.conn().await;
    let key = format!("hl:c:{{{jenny}}}");
    let value: Vec<u8> = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut c)
        .await
        .unwrap();
    let version = u64::from_str_radix(std::str::from_utf8(&value[1..17]).unwrap(), 16).unwrap();
    let left = serde_json::json!({
        "idx": [
            format!("hl:idx:email:{EMAIL}"),
            format!("hl:idx:phone:{PHONE}"),
            "hl:idx:pay:pi_cut_1",
            "hl:idx:pay:cs_test_evt_cut_1",
        ],
        "own": [jenny, unmerged],
        "ev": ["stripe:evt_cut_1"],
        "abs": [unmerged],
    });
    let tombstone = serde_json::json!({"at": 1_796_421_417_250_i64, "by": "ops", "left": left});
    let cut = format!("2{:016x}e{tombstone}", version + 1);
    let () = redis::cmd("SET")
        .arg(&key)
        .arg(cut)
        .query_async(&mut c)
        .await
        .unwrap();

    // Until completed, she shows only as the tombstone, and no lookup finds her,
    // though her index entries are still there.
    let shown = contacts.get_contact(&jenny).await.unwrap();
    assert_eq!(
        (shown.id.as_str(), shown.erased_by.as_str()),
        (jenny.as_str(), "ops")
    );
    let found = contacts.lookup_email(EMAIL).await;
    assert_eq!(found.map_err(|e| e.code()), Err(tonic::Code::NotFound));
    assert!(!holding(&every_key(&stack).await, EMAIL).is_empty());
    // An event through one of those entries meanwhile makes a new contact: it never
    // writes into the tombstone.
    let after = profile(
        "batch:cut-after",
        v1::ContactData {
            phone: Some(PHONE.into()),
            first_name: Some("After".into()),
            ..Default::default()
        },
    );
    let answers = contacts.apply_events(vec![item(after, "")]).await;
    assert_eq!(answers[0].outcome(), v1::EventOutcome::Applied);
    let fresh = answers[0].contact_id.clone();
    assert_ne!(fresh, jenny);
    assert_eq!(contacts.get_contact(&jenny).await.unwrap(), shown);

    // The next call completes it, keeping when and by whom it was asked for first;
    // the contact merged into hers is a redirect to her tombstone now, and the new
    // contact keeps the entry it took.
    let completed = erase(contacts, &jenny).await.unwrap();
    assert_eq!(completed, shown);
    assert_eq!(completed.erased_at.map(|t| t.seconds), Some(1_796_421_417));
    assert_eq!(contacts.get_contact(&unmerged).await.unwrap(), completed);
    let all = every_key(&stack).await;
    for text in [EMAIL, WORK_EMAIL, NAME, "pi_cut_1"] {
        assert_eq!(holding(&all, text), Vec::<String>::new(), "{text}");
    }
    let phone_key = format!("hl:idx:phone:{PHONE}");
    assert_eq!(holding(&all, PHONE), std::slice::from_ref(&phone_key));
    let owner: String = redis::cmd("GET")
        .arg(&phone_key)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(owner, fresh);
    let value: Vec<u8> = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&value[17..]),
        r#"e{"at":1796421417250,"by":"ops"}"#
    );
}

#[tokio::test]
async fn with_replicas_asked_for_an_erasure_is_answered_once_a_replica_holds_it() {
    let master = Redis::start().await;
    let replica = Redis::start_replica_of(&master).await;
    let contacts = ContactsSvc::start_waiting_for_a_replica(&master).await;
    let answers = contacts
        .apply_events(vec![contact_item("wait:jenny", EMAIL, Some("Jenny"))])
        .await;
    let jenny = answers[0].contact_id.clone();

    // A replica that does not answer: the erasure is not reported done (a failover could
    // take it back), and the retry, once the replica is back, completes it.
    replica.pause();
    let answer = erase(&contacts, &jenny).await;
    assert_eq!(answer.map_err(|e| e.code()), Err(tonic::Code::Unavailable));
    replica.resume();
    let tombstone = erase(&contacts, &jenny).await.unwrap();
    assert_eq!(tombstone.id, jenny);
    let mut on_replica = replica.conn().await;
    let value: Vec<u8> = redis::cmd("GET")
        .arg(format!("hl:c:{{{jenny}}}"))
        .query_async(&mut on_replica)
        .await
        .unwrap();
    assert_eq!(value.get(17), Some(&b'e'));
    let entry: Option<String> = redis::cmd("GET")
        .arg(format!("hl:idx:email:{EMAIL}"))
        .query_async(&mut on_replica)
        .await
        .unwrap();
    assert_eq!(entry, None);
}
