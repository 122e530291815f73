//! `--redis-wait-replicas`: an event counts as applied only once the replicas asked for
//! hold its writes, so that a failover cannot take back what the sender was told.

use hookline_proto::v1;
use hookline_tests::{ContactsSvc, Redis, contact_item};

async fn apply(contacts: &ContactsSvc, id: &str, email: &str) -> v1::ApplyEventResponse {
    contacts
        .apply_events(vec![contact_item(id, email, None)])
        .await
        .remove(0)
}

#[tokio::test]
async fn an_event_counts_as_applied_only_once_a_replica_holds_it() {
    let master = Redis::start().await;
    let replica = Redis::start_replica_of(&master).await;
    let contacts = ContactsSvc::start_waiting_for_a_replica(&master).await;

    let answer = apply(&contacts, "wait:one", "one@example.com").await;
    assert_eq!(answer.outcome(), v1::EventOutcome::Applied);
    // The replica holds it already: WAIT returned only once it did.
    let mut on_replica = replica.conn().await;
    let marker: Option<Vec<u8>> = redis::cmd("GET")
        .arg("hl:ev:{wait:one}")
        .query_async(&mut on_replica)
        .await
        .unwrap();
    // The marker names the webhook log entry written (and replicated) before it.
    let marker = String::from_utf8_lossy(&marker.unwrap()).into_owned();
    let (entry, _) = marker[1..].split_once(' ').unwrap();
    assert!(marker.starts_with('W'), "{marker:?}");
    let logged: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
        .arg("hl:events:log")
        .arg("-")
        .arg("+")
        .query_async(&mut on_replica)
        .await
        .unwrap();
    assert_eq!(logged.len(), 1);
    assert_eq!(
        (logged[0].0.as_str(), logged[0].1[0].as_str()),
        (entry, "wait:one")
    );

    // An attempt that logged the event and then failed (its replicas did not confirm the
    // log in time) left an entry naming it too; the retry logged it again. It is listed
    // once, at the entry its marker names.
    let mut on_master = master.conn().await;
    let _: String = redis::cmd("XADD")
        .arg("hl:events:log")
        .arg("*")
        .arg("wait:one")
        .arg(hookline_tests::now_millis())
        .query_async(&mut on_master)
        .await
        .unwrap();
    let listed = contacts.events(v1::ListEventsRequest::default()).await;
    let ids: Vec<&str> = listed.iter().map(|r| r.event_id.as_str()).collect();
    assert_eq!(ids, ["wait:one"]);

    // A replica that does not answer: the contact is written on the master, but no done
    // marker follows it (a marker that outlived a failover which took the contact back
    // would make the redelivery a duplicate with nothing applied) and the sender is told
    // to retry. Its retry, once the replica is back, applies the event again, to the same
    // effect.
    replica.pause();
    let answer = apply(&contacts, "wait:two", "two@example.com").await;
    assert_eq!(answer.outcome(), v1::EventOutcome::RetryLater);
    assert!(
        answer.reason.contains("not replicated"),
        "{}",
        answer.reason
    );
    let marker: Option<Vec<u8>> = redis::cmd("GET")
        .arg("hl:ev:{wait:two}")
        .query_async(&mut on_master)
        .await
        .unwrap();
    assert_eq!(marker, None, "no marker and no lease left behind");
    // Nor a claim of the email for a contact that was never written: the retry would
    // wait for it to be cleared.
    let claim: Option<String> = redis::cmd("GET")
        .arg("hl:idx:email:two@example.com")
        .query_async(&mut on_master)
        .await
        .unwrap();
    assert_eq!(claim, None, "no claim left behind");
    replica.resume();
    let answer = apply(&contacts, "wait:two", "two@example.com").await;
    assert_eq!(answer.outcome(), v1::EventOutcome::Applied);
    let again = apply(&contacts, "wait:two", "two@example.com").await;
    assert_eq!(again.outcome(), v1::EventOutcome::Duplicate);
    let contact = contacts.lookup_email("two@example.com").await.unwrap();
    assert_eq!(contact.id, answer.contact_id);
}
