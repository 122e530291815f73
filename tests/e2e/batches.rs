//! The events of one `ApplyEvents` call are independent: one that cannot finish (its
//! id held by another caller) neither makes its batch-mates miss the caller's deadline
//! nor keeps their leases when the caller gives up. They share their round trips: the
//! new contacts of a batch are written in one pipeline with one listing entry.

use std::time::Duration;

use hookline_proto::v1;
use hookline_tests::{ContactsSvc, Redis, contact_item, eventually};

/// Makes `id` look applied right now by another caller, for a minute.
async fn hold(redis: &Redis, id: &str) {
    let mut conn = redis.conn().await;
    let () = redis::cmd("SET")
        .arg(format!("hl:ev:{{{id}}}"))
        .arg("Lanother-caller")
        .arg("PX")
        .arg(60_000)
        .query_async(&mut conn)
        .await
        .unwrap();
}

/// What the event's key holds: `L…` while leased, `D…` once done.
async fn marker(redis: &Redis, id: &str) -> Option<char> {
    let mut conn = redis.conn().await;
    let value: Option<Vec<u8>> = redis::cmd("GET")
        .arg(format!("hl:ev:{{{id}}}"))
        .query_async(&mut conn)
        .await
        .unwrap();
    value.and_then(|v| v.first().map(|b| char::from(*b)))
}

fn batch() -> Vec<v1::ApplyEventsItem> {
    vec![
        contact_item("batch:held", "held@example.com", None),
        contact_item("batch:one", "one@example.com", None),
        contact_item("batch:two", "two@example.com", None),
    ]
}

#[tokio::test]
async fn a_held_event_does_not_make_its_batch_miss_the_deadline() {
    let redis = Redis::start().await;
    let contacts = ContactsSvc::start(&redis.url()).await;
    hold(&redis, "batch:held").await;
    // The caller waits one second; the held event would wait two for its holder.
    let mut request = tonic::Request::new(v1::ApplyEventsRequest { items: batch() });
    request.set_timeout(Duration::from_secs(1));
    let results = contacts
        .client()
        .await
        .apply_events(request)
        .await
        .expect("answered within the caller's deadline")
        .into_inner()
        .results;
    let outcomes: Vec<_> = results
        .iter()
        .map(|r| r.response.as_ref().map(v1::ApplyEventResponse::outcome))
        .collect();
    assert_eq!(
        outcomes,
        [
            Some(v1::EventOutcome::RetryLater),
            Some(v1::EventOutcome::Applied),
            Some(v1::EventOutcome::Applied),
        ]
    );
    assert_eq!(marker(&redis, "batch:one").await, Some('D'));
    assert_eq!(marker(&redis, "batch:two").await, Some('D'));
    assert_eq!(
        marker(&redis, "batch:held").await,
        Some('L'),
        "another caller's lease is left alone"
    );
}

#[tokio::test]
async fn a_caller_that_gives_up_leaves_no_lease_held() {
    let redis = Redis::start().await;
    let contacts = ContactsSvc::start(&redis.url()).await;
    hold(&redis, "batch:held").await;
    let mut grpc = contacts.client().await;
    let call = tokio::spawn(async move {
        grpc.apply_events(v1::ApplyEventsRequest { items: batch() })
            .await
    });
    // The two free events are written and wait, leased, for their held batch-mate.
    eventually(
        Duration::from_secs(5),
        "the free events to be written",
        || {
            let contacts = &contacts;
            async move {
                let one = contacts.lookup_email("one@example.com").await.ok()?;
                let two = contacts.lookup_email("two@example.com").await.ok()?;
                Some((one, two))
            }
        },
    )
    .await;
    assert_eq!(marker(&redis, "batch:one").await, Some('L'));
    // The caller gives up (the sender's connection went away).
    call.abort();
    let _ = call.await;
    // The batch still finishes: the free events are marked done, so their redelivery is
    // a duplicate at once rather than "in progress" until their leases expire.
    eventually(
        Duration::from_secs(5),
        "the free events to be done",
        || async {
            let done = marker(&redis, "batch:one").await == Some('D')
                && marker(&redis, "batch:two").await == Some('D');
            done.then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn the_new_contacts_of_a_batch_are_written_together_and_listed_once() {
    let redis = Redis::start().await;
    let contacts = ContactsSvc::start(&redis.url()).await;
    let items: Vec<_> = (0..8)
        .map(|i| {
            contact_item(
                &format!("batch:new{i}"),
                &format!("new{i}@example.com"),
                None,
            )
        })
        .collect();
    let answers = contacts.apply_events(items).await;
    assert!(
        answers
            .iter()
            .all(|a| a.outcome() == v1::EventOutcome::Applied),
        "{answers:?}"
    );
    // One entry in each listing for the whole batch: the listing of new contacts is
    // written with the contacts, in the batch's one pipeline of first writes.
    let mut conn = redis.conn().await;
    for stream in ["hl:contacts:new", "hl:events:log"] {
        let len: u64 = redis::cmd("XLEN")
            .arg(stream)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(len, 1, "{stream}");
    }
    let listed = contacts.contacts().await;
    let mut emails: Vec<_> = listed.iter().map(|c| c.email.clone()).collect();
    emails.sort();
    let want: Vec<_> = (0..8).map(|i| format!("new{i}@example.com")).collect();
    assert_eq!(emails, want);
}
