//! `--redis-wait-replicas`: an event counts as applied only once the replicas asked for
//! hold its writes, so that a failover cannot take back what the sender was told.

use std::time::Duration;

use hookline_proto::v1;
use hookline_tests::{ContactsSvc, Redis, contact_item};

async fn apply(contacts: &ContactsSvc, id: &str, email: &str) -> v1::ApplyEventResponse {
    contacts
        .client()
        .await
        .apply_events(v1::ApplyEventsRequest {
            items: vec![contact_item(id, email, None)],
        })
        .await
        .unwrap()
        .into_inner()
        .results
        .remove(0)
        .response
        .expect("an answer")
}

#[tokio::test]
async fn an_event_counts_as_applied_only_once_a_replica_holds_it() {
    let master = Redis::start().await;
    let replica = Redis::start_replica_of(&master).await;
    let contacts = ContactsSvc::start_with_options(
        "127.0.0.1:0".parse().unwrap(),
        &master.url(),
        contacts_svc::StoreOptions {
            wait_replicas: 1,
            wait_timeout: Duration::from_millis(300),
            ..contacts_svc::StoreOptions::default()
        },
    )
    .await;

    let answer = apply(&contacts, "wait:one", "one@example.com").await;
    assert_eq!(answer.outcome(), v1::EventOutcome::Applied);
    // The replica holds it already: WAIT returned only once it did.
    let mut on_replica = replica.conn().await;
    let marker: Option<Vec<u8>> = redis::cmd("GET")
        .arg("hl:ev:{wait:one}")
        .query_async(&mut on_replica)
        .await
        .unwrap();
    assert_eq!(marker.and_then(|m| m.first().copied()), Some(b'D'));

    // A replica that does not answer: the event is written on the master, but the sender
    // is told to retry; its retry, once the replica is back, is a duplicate.
    replica.pause();
    let answer = apply(&contacts, "wait:two", "two@example.com").await;
    assert_eq!(answer.outcome(), v1::EventOutcome::RetryLater);
    assert!(
        answer.reason.contains("not replicated"),
        "{}",
        answer.reason
    );
    replica.resume();
    let answer = apply(&contacts, "wait:two", "two@example.com").await;
    assert_eq!(answer.outcome(), v1::EventOutcome::Duplicate);
}
