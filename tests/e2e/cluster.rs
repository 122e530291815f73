//! contacts-svc on a real Redis Cluster (3 masters, 3 replicas, started by the harness):
//! signed Stripe checkouts through the edge apply once, every command finds its slot (a
//! cross-slot command fails on a cluster), each waits for a replica of every master, and
//! the data spreads over every master.

use std::time::Duration;

use hookline_proto::v1;
use hookline_tests::{
    ContactsSvc, Edge, Http, RedisCluster, eventually, stripe_checkout, stripe_source,
};

#[tokio::test]
async fn checkouts_apply_once_on_a_redis_cluster_and_spread_over_its_masters() {
    let cluster = RedisCluster::start(3, 1).await;
    // Each event waits for a replica of every master (WAIT goes to all of them).
    let contacts = ContactsSvc::start_on_cluster(
        &cluster.urls(),
        contacts_svc::StoreOptions {
            wait_replicas: 1,
            ..contacts_svc::StoreOptions::default()
        },
    )
    .await;
    let edge = Edge::start(&format!(
        "contacts_url = \"{}\"\ncontacts_timeout_ms = 5000\n{}",
        contacts.url(),
        stripe_source()
    ))
    .await;
    let http = Http::new();
    // Ready only once contacts-svc reports SERVING: the cluster covers every slot.
    let ready = edge.url("/readyz");
    eventually(Duration::from_secs(20), "the edge to be ready", || async {
        (http.get(&ready).await.status == 200).then_some(())
    })
    .await;

    let bodies: Vec<Vec<u8>> = (0..12)
        .map(|i| {
            stripe_checkout(
                &format!("evt_cluster_{i}"),
                &format!("buyer{i}@example.com"),
                1000 + i,
                &format!("pi_cluster_{i}"),
            )
        })
        .collect();
    // All at once, so that batches span many slots; then again, as a sender's retries.
    for expected in ["applied", "duplicate"] {
        let replies =
            futures::future::join_all(bodies.iter().map(|b| edge.post_stripe(&http, b))).await;
        for reply in replies {
            assert_eq!(reply.status, 200, "{:?}", reply.body);
            assert_eq!(reply.json()["status"], expected);
        }
    }
    for i in 0..12 {
        let contact = contacts
            .lookup_email(&format!("buyer{i}@example.com"))
            .await
            .expect("found");
        assert_eq!(contact.totals[0].purchased, 1000 + i);
    }
    let log = contacts.events(v1::ListEventsRequest::default()).await;
    assert_eq!(log.len(), 12);
    let listed = contacts.contacts().await;
    assert_eq!(listed.len(), 12);
    let keys = cluster.keys_per_master().await;
    assert_eq!(keys.len(), 3, "{keys:?}");
    assert!(
        keys.iter().all(|&n| n > 0),
        "every master holds keys: {keys:?}"
    );
}
