//! contacts-svc on a real Redis Cluster (3 masters, 3 replicas, started by the harness):
//! signed Stripe checkouts through two edges, each balancing over two contacts-svc, apply
//! once however they are spread; every command finds its slot (a cross-slot command
//! fails on a cluster), each waits for a replica of every master, and the data spreads
//! over every master.

use std::time::Duration;

use hookline_proto::v1;
use hookline_tests::{
    ContactsSvc, Edge, Http, RedisCluster, eventually, metric, stripe_checkout, stripe_source,
};

#[tokio::test]
async fn checkouts_through_two_edges_and_two_contacts_svc_apply_once_on_a_cluster() {
    let cluster = RedisCluster::start(3, 1).await;
    // Each event waits for a replica of every master (WAIT goes to all of them).
    let options = || contacts_svc::StoreOptions {
        wait_replicas: 1,
        ..contacts_svc::StoreOptions::default()
    };
    let contacts = [
        ContactsSvc::start_on_cluster(&cluster.urls(), options()).await,
        ContactsSvc::start_on_cluster(&cluster.urls(), options()).await,
    ];
    // Each edge balances over both contacts-svc.
    let urls = format!("{},{}", contacts[0].url(), contacts[1].url());
    let config = format!(
        "contacts_url = \"{urls}\"\ncontacts_timeout_ms = 5000\n{}",
        stripe_source()
    );
    let edges = [
        Edge::start_with_metrics_listener(&config).await,
        Edge::start_with_metrics_listener(&config).await,
    ];
    let http = Http::new();
    // Ready only once contacts-svc reports SERVING: the cluster covers every slot.
    for edge in &edges {
        let ready = edge.url("/readyz");
        eventually(Duration::from_secs(20), "an edge to be ready", || async {
            (http.get(&ready).await.status == 200).then_some(())
        })
        .await;
    }

    const EVENTS: i64 = 24;
    let bodies: Vec<Vec<u8>> = (0..EVENTS)
        .map(|i| {
            stripe_checkout(
                &format!("evt_cluster_{i}"),
                &format!("buyer{i}@example.com"),
                1000 + i,
                &format!("pi_cluster_{i}"),
            )
        })
        .collect();
    // Every event twice at once, through both edges (which one first is drawn), as a
    // sender that retries before its first delivery was answered: one of the two
    // applies it, the other finds it done, or is queued when the first held the event
    // longer than contacts-svc waits for it (and finds it done when replayed).
    let mut pick = 0x2545_f491_4f6c_dd1d_u64;
    let deliveries = bodies.iter().flat_map(|body| {
        pick ^= pick << 13;
        pick ^= pick >> 7;
        pick ^= pick << 17;
        let first = usize::from(pick % 2 == 1);
        [&edges[first], &edges[1 - first]].map(|edge| edge.post_stripe(&http, body))
    });
    let replies = futures::future::join_all(deliveries).await;
    let mut queued = 0;
    for (i, pair) in replies.chunks(2).enumerate() {
        let mut statuses: Vec<String> = pair
            .iter()
            .map(|r| {
                assert!(matches!(r.status, 200 | 202), "event {i}: {:?}", r.body);
                r.json()["status"].as_str().unwrap_or_default().to_owned()
            })
            .collect();
        statuses.sort();
        assert!(
            [["applied", "duplicate"], ["applied", "queued"]]
                .contains(&[statuses[0].as_str(), statuses[1].as_str()]),
            "event {i}: {statuses:?}"
        );
        queued += usize::from(statuses[1] == "queued");
    }
    for edge in &edges {
        let metrics = edge.metrics_url("/metrics");
        eventually(Duration::from_secs(20), "the spool to drain", || async {
            let text = http.get(&metrics).await.body;
            let text = String::from_utf8_lossy(&text).into_owned();
            (metric(&text, "hookline_edge_spool_entries", &[]) == 0.0).then_some(())
        })
        .await;
    }
    // And again through the other edge: a duplicate.
    for (i, body) in bodies.iter().enumerate() {
        let reply = edges[i % 2].post_stripe(&http, body).await;
        assert_eq!(reply.json()["status"], "duplicate", "event {i}");
    }
    for i in 0..EVENTS {
        let contact = contacts[usize::try_from(i % 2).unwrap()]
            .lookup_email(&format!("buyer{i}@example.com"))
            .await
            .expect("found");
        assert_eq!(contact.totals[0].purchased, 1000 + i);
        assert_eq!(contact.purchases.len(), 1);
    }
    let log = contacts[0].events(v1::ListEventsRequest::default()).await;
    assert_eq!(log.len(), 24);
    assert_eq!(contacts[1].contacts().await.len(), 24);
    let keys = cluster.keys_per_master().await;
    assert_eq!(keys.len(), 3, "{keys:?}");
    assert!(
        keys.iter().all(|&n| n > 0),
        "every master holds keys: {keys:?}"
    );
    println!(
        "cluster: {EVENTS} events, {} deliveries through 2 edges and 2 contacts-svc: \
         {EVENTS} applied, {queued} queued, the rest duplicate; keys per master {keys:?}",
        3 * EVENTS
    );
}
