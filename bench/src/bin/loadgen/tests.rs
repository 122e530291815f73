//! Unit tests of the load generator's pure parts.

use edge::sources::Source as _;

use serde_json::Value;

use crate::bodies::Bodies;
use crate::histogram::Histogram;
use crate::procfs::{
    cpu_ticks, descendants, machine_ticks, members, peak_rss_kib, snapshot, tree_peak_rss_kib,
};
use crate::redis_stats::{RedisReading, command_calls, info_field, redis_costs};
use crate::report::{median, thousands};
use crate::{DEFAULT_SECRET, Proc, WRONG_SECRET, now_secs, parse_proc, parse_tree};

#[test]
fn histogram_buckets_are_contiguous_and_tight() {
    let mut prev_index = 0;
    for v in 0..1_000_000u64 {
        let i = Histogram::index(v);
        assert!(i == prev_index || i == prev_index + 1, "gap at {v}");
        assert!(Histogram::highest(i) >= v, "{v} above its bucket");
        let err = (Histogram::highest(i) - v) as f64 / v.max(1) as f64;
        assert!(err <= 1.0 / 64.0, "{v}: error {err}");
        prev_index = i;
    }
    assert!(Histogram::index(u64::MAX) < Histogram::new().counts.len());
}

#[test]
fn quantiles() {
    let check = |values: &[u64], q: f64, want: u64| {
        let mut h = Histogram::new();
        values.iter().for_each(|v| h.record(*v));
        assert_eq!(h.quantile(q), want, "q{q} of {values:?}");
    };
    check(&[], 0.5, 0);
    check(&[7], 0.999, 7);
    check(&[1, 2, 3, 4], 0.5, 2);
    check(&[1, 2, 3, 4], 0.75, 3);
    check(&[1, 2, 3, 4], 1.0, 4);
    // Bucketed values report the bucket's top, capped at the maximum seen.
    check(&[1000, 1000, 1000], 0.5, 1000);
    check(&[1000, 1001, 5000], 0.5, 1007);
}

#[test]
fn bodies_are_unique_sized_and_valid_stripe_events() {
    let bodies = Bodies::new("0badcafe", 2048, 1_795_870_800);
    assert_eq!(bodies.len(), 2048);
    assert_eq!(bodies.number_slots.len(), 5);
    let a = bodies.event(0);
    let b = bodies.event(123_456_789);
    assert_eq!(a.len(), 2048);
    let v: Value = serde_json::from_slice(&b).expect("JSON");
    let o = &v["data"]["object"];
    assert_eq!(v["id"], "evt_0badcafe000123456789");
    assert_eq!(v["type"], "checkout.session.completed");
    assert_eq!(o["id"], "cs_test_0badcafe000123456789");
    assert_eq!(o["payment_intent"], "pi_0badcafe000123456789");
    assert_eq!(
        o["customer_details"]["email"],
        "buyer.0badcafe000123456789@example.com"
    );
    // 1_795_870_800 s is 6,800 s into a cycle of 8,000 blocks: numbers from 6.8e9.
    assert_eq!(o["customer_details"]["phone"], "+18923456789");
    let a: Value = serde_json::from_slice(&a).expect("JSON");
    assert_eq!(
        a["data"]["object"]["customer_details"]["phone"],
        "+18800000000"
    );
    // Below the smallest event, the smallest event.
    assert!(Bodies::new("0badcafe", 10, 0).len() > 10);
}

#[test]
fn runs_a_second_apart_share_no_phone_number() {
    let phone = |bodies: &Bodies, n: u64| -> String {
        let v: Value = serde_json::from_slice(&bodies.event(n)).expect("JSON");
        v["data"]["object"]["customer_details"]["phone"]
            .as_str()
            .expect("a phone")
            .to_owned()
    };
    let first = Bodies::new("0badcafe", 1024, 1_795_870_800);
    let next = Bodies::new("0badcaff", 1024, 1_795_870_801);
    // The first run's millionth event is the last before the next run's numbers.
    assert_eq!(phone(&first, 999_999), "+18800999999");
    assert_eq!(phone(&next, 0), "+18801000000");
    // The last block wraps to the first, still with a valid area code.
    let last = Bodies::new("0badcafe", 1024, 7_999);
    assert_eq!(phone(&last, 0), "+19999000000");
    assert_eq!(phone(&last, 1_000_000), "+12000000000");
}

#[test]
fn bodies_verify_with_the_edge() {
    let bodies = Bodies::new("0badcafe", 1024, 0);
    let body = bodies.event(42);
    let t = now_secs();
    let verifier = edge::sources::stripe::Stripe::new([DEFAULT_SECRET.as_bytes()], 300);
    let verify = |secret: &str| {
        let mut headers = http::HeaderMap::new();
        let sig = edge::sources::stripe::sign(secret, t, &body);
        headers.insert("stripe-signature", sig.parse().expect("header value"));
        let delivery = edge::sources::Delivery {
            headers: &headers,
            query: "",
            body: &body,
        };
        verifier.verify(delivery, t)
    };
    assert_eq!(verify(DEFAULT_SECRET), Ok(()));
    assert_eq!(
        verify(WRONG_SECRET),
        Err(edge::sources::VerifyError::Mismatch)
    );
}

#[test]
fn procs_parse() {
    assert!(parse_proc("edge=42").is_ok_and(|p| p.name == "edge" && p.pid == 42));
    assert!(parse_proc("edge").is_err());
    assert!(parse_proc("=42").is_err());
    assert!(parse_proc("edge=x").is_err());
    assert!(parse_proc("edge=42").is_ok_and(|p| !p.tree));
    assert!(parse_tree("node=7").is_ok_and(|p| p.name == "node" && p.pid == 7 && p.tree));
    assert!(parse_tree("node").is_err());
}

#[test]
fn descendants_of_a_process() {
    // 1 ─┬─ 10 ─┬─ 11
    //    │      └─ 12 ── 13
    //    └─ 20
    let parents = [(10, 1), (11, 10), (12, 10), (13, 12), (20, 1), (1, 0)];
    let check = |root: u32, want: &[u32]| {
        let mut got = descendants(root, &parents);
        got.sort_unstable();
        assert_eq!(got, want, "descendants of {root}");
    };
    check(10, &[11, 12, 13]);
    check(12, &[13]);
    check(13, &[]);
    check(1, &[10, 11, 12, 13, 20]);
    // A process that is not there has none.
    check(99, &[]);
    let tree = |pid: u32, tree: bool| Proc {
        name: "p".to_owned(),
        pid,
        tree,
    };
    // The root comes first: it is read before its descendants.
    let mut m = members(&tree(10, true), &parents);
    assert_eq!(m.first(), Some(&10));
    m.sort_unstable();
    assert_eq!(m, [10, 11, 12, 13]);
    assert_eq!(members(&tree(10, false), &parents), [10]);
}

#[test]
fn this_process_as_a_tree() {
    let mut child = std::process::Command::new("sleep")
        .arg("5")
        .spawn()
        .expect("spawn sleep");
    let me = Proc {
        name: "me".to_owned(),
        pid: std::process::id(),
        tree: true,
    };
    let snap = snapshot(std::slice::from_ref(&me));
    let _ = child.kill();
    let _ = child.wait();
    assert!(snap.members[0] >= 2, "{snap:?}");
    assert!(snap.procs[0].is_some());
    assert!(tree_peak_rss_kib(&me).is_some_and(|k| k > 0));
}

#[test]
fn info_answers() {
    let memory =
        "# Memory\r\nused_memory:1048576\r\nused_memory_human:1.00M\r\nused_memory_rss:9\r\n";
    assert_eq!(info_field(memory, "used_memory"), Some(1_048_576));
    assert_eq!(info_field(memory, "used_memory_rss"), Some(9));
    assert_eq!(info_field(memory, "used_memory_peak"), None);
    let stats = "# Commandstats\r\n\
        cmdstat_set:calls=600,usec=900,usec_per_call=1.50,rejected_calls=0,failed_calls=0\r\n\
        cmdstat_evalsha:calls=100,usec=1100,usec_per_call=11.00,rejected_calls=0,failed_calls=0\r\n\
        cmdstat_client|setinfo:calls=2,usec=1,usec_per_call=0.50,rejected_calls=0,failed_calls=0\r\n";
    let calls = command_calls(stats);
    assert_eq!(calls.get("set"), Some(&600));
    assert_eq!(calls.get("evalsha"), Some(&100));
    assert_eq!(calls.get("client|setinfo"), Some(&2));
    assert_eq!(calls.len(), 3);
}

#[test]
fn redis_costs_per_stored_event() {
    let reading = |used_memory, calls: &[(&str, u64)], stored| RedisReading {
        used_memory,
        calls: calls.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
        stored,
    };
    let before = reading(1_000_000, &[("info", 3), ("set", 10)], 5);
    let after = reading(
        1_450_000,
        &[("info", 5), ("set", 1010), ("hset", 1000)],
        1005,
    );
    let v = redis_costs("events", &before, &after);
    assert_eq!(v["events_stored"], 1000);
    assert_eq!(v["commands"], 2002);
    assert_eq!(v["commands_per_event"], 2.002);
    assert_eq!(v["commands_per_event_by_name"]["set"], 1.0);
    assert_eq!(v["commands_per_event_by_name"]["info"], 0.002);
    assert_eq!(v["memory_bytes_per_event"], 450.0);
    // Nothing stored: no per-event figures rather than a division by zero.
    let v = redis_costs("events", &before, &before);
    assert_eq!(v["events_stored"], 0);
    assert!(v["commands_per_event"].is_null());
    assert!(v["memory_bytes_per_event"].is_null());
}

#[test]
fn proc_readers_read_this_process() {
    assert!(cpu_ticks(std::process::id()).is_some());
    assert!(peak_rss_kib(std::process::id()).is_some_and(|k| k > 0));
    assert!(machine_ticks().is_some_and(|m| m.irq <= m.busy && m.busy <= m.total));
}

#[test]
fn thousands_separators() {
    for (v, want) in [
        (0.0, "0"),
        (999.4, "999"),
        (1000.0, "1,000"),
        (1_234_567.0, "1,234,567"),
    ] {
        assert_eq!(thousands(v), want);
    }
}

#[test]
fn the_ratio_to_node_is_the_median_of_the_pairs() {
    for (values, want) in [
        (vec![], None),
        (vec![0.9], Some(0.9)),
        (vec![1.1, 0.7, 1.0], Some(1.0)),
        (vec![1.2, 0.8, 1.0, 0.9], Some(0.95)),
    ] {
        assert_eq!(median(&values), want, "{values:?}");
    }
}
