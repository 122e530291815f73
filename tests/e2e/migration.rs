//! Upgrading: a database written by the previous storage layout (built here with raw
//! Redis commands, as that version wrote it) is refused by contacts-svc with one line
//! naming the command that migrates it; `contacts-svc migrate` converts it, again as
//! often as it is run; the new code then reads every contact, merge, listing and event
//! record as they were, and applies new events on top.

use std::time::Duration;

use hookline_proto::prost::Message as _;
use hookline_proto::v1;
use hookline_tests::{ContactsSvc, Redis, contact_event, free_port, workspace_bin};

/// Runs contacts-svc with `args` to completion: exit code, stdout and stderr.
async fn contacts_svc(args: &[&str]) -> (i32, String, String) {
    let child = tokio::process::Command::new(workspace_bin("contacts-svc"))
        .args(args)
        .env_clear()
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run contacts-svc");
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("contacts-svc {args:?} did not exit"))
        .expect("contacts-svc output");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A contact id of a contact created `ms` after the epoch.
fn contact_id(ms: u64, n: u8) -> String {
    format!("ct_{ms:012x}7000800000000000{n:04x}")
}

/// An event record as both layouts store it: "D" and the protobuf.
fn done_record(id: &str, contact: &str, received_ms: i64) -> Vec<u8> {
    let at = |ms: i64| hookline_proto::prost_types::Timestamp {
        seconds: ms / 1000,
        nanos: 0,
    };
    let record = v1::EventRecord {
        event_id: id.to_owned(),
        source: "stripe".to_owned(),
        r#type: "checkout.session.completed".to_owned(),
        outcome: v1::EventOutcome::Applied.into(),
        contact_id: contact.to_owned(),
        occurred_at: Some(at(received_ms - 1000)),
        received_at: Some(at(received_ms)),
        applied_at: Some(at(received_ms)),
        ..Default::default()
    };
    let mut value = b"D".to_vec();
    value.extend(record.encode_to_vec());
    value
}

#[tokio::test]
async fn a_database_of_the_previous_layout_is_refused_then_migrated_and_read_as_it_was() {
    let redis = Redis::start().await;
    let now = hookline_tests::now_millis();
    let ann = contact_id(1_700_000_000_000, 1);
    let absorbed = contact_id(1_700_000_000_500, 2);
    let bob = contact_id(1_700_000_001_000, 3);
    let ann_record = format!(
        r#"{{"email":{{"at":1000,"ev":"stripe:evt_ann1","v":{{"n":"ann@example.com","o":"Ann@Example.com"}}}},"name":{{"at":1000,"ev":"stripe:evt_ann1","v":"Ann Lee"}},"payment_refs":["pi_ann1"],"purchases":{{"pi_ann1":{{"amount":4900,"currency":"usd","refs":{{"pi":["pi_ann1"]}},"first_at":1000,"stamp":{{"at":1000,"ev":"stripe:evt_ann1"}}}}}},"milestones":{{}},"first_seen":1000,"last_seen":2000,"merged":["{absorbed}"]}}"#
    );
    let bob_record = r#"{"email":{"at":3000,"ev":"stripe:evt_bob1","v":{"n":"bob@example.com","o":"bob@example.com"}},"milestones":{},"first_seen":3000,"last_seen":3000}"#;

    // Layout 1, as the previous version wrote it: contacts in hashes beside sorted sets
    // of their events (the absorbed contact's log stays under its own id), two sorted
    // listings, index entries and event records.
    let mut c = redis.conn().await;
    let () = redis::pipe()
        .cmd("HSET")
        .arg(format!("hl:c:{{{ann}}}"))
        .arg("v")
        .arg(4)
        .arg("d")
        .arg(&ann_record)
        .ignore()
        .cmd("ZADD")
        .arg(format!("hl:c:{{{ann}}}:log"))
        .arg(now - 3000)
        .arg("stripe:evt_ann1")
        .ignore()
        .cmd("HSET")
        .arg(format!("hl:c:{{{absorbed}}}"))
        .arg("v")
        .arg(2)
        .arg("r")
        .arg(&ann)
        .ignore()
        .cmd("ZADD")
        .arg(format!("hl:c:{{{absorbed}}}:log"))
        .arg(now - 2000)
        .arg("stripe:evt_ann2")
        .ignore()
        .cmd("HSET")
        .arg(format!("hl:c:{{{bob}}}"))
        .arg("v")
        .arg(1)
        .arg("d")
        .arg(bob_record)
        .ignore()
        .cmd("ZADD")
        .arg(format!("hl:c:{{{bob}}}:log"))
        .arg(now - 1000)
        .arg("stripe:evt_bob1")
        .ignore()
        .cmd("SET")
        .arg("hl:idx:email:ann@example.com")
        .arg(&ann)
        .ignore()
        .cmd("SET")
        .arg("hl:idx:pay:pi_ann1")
        .arg(&ann)
        .ignore()
        .cmd("SET")
        .arg("hl:idx:email:bob@example.com")
        .arg(&bob)
        .ignore()
        .cmd("ZADD")
        .arg("hl:contacts")
        .arg(1_700_000_000_000_i64)
        .arg(&ann)
        .arg(1_700_000_001_000_i64)
        .arg(&bob)
        .ignore()
        .cmd("ZADD")
        .arg("hl:events")
        .arg(now - 3000)
        .arg("stripe:evt_ann1")
        .arg(now - 2000)
        .arg("stripe:evt_ann2")
        .arg(now - 1000)
        .arg("stripe:evt_bob1")
        .ignore()
        .cmd("SET")
        .arg("hl:ev:{stripe:evt_ann1}")
        .arg(done_record("stripe:evt_ann1", &ann, now - 3000))
        .arg("EX")
        .arg(3600)
        .ignore()
        .cmd("SET")
        .arg("hl:ev:{stripe:evt_ann2}")
        .arg(done_record("stripe:evt_ann2", &absorbed, now - 2000))
        .arg("EX")
        .arg(3600)
        .ignore()
        .cmd("SET")
        .arg("hl:ev:{stripe:evt_bob1}")
        .arg(done_record("stripe:evt_bob1", &bob, now - 1000))
        .arg("EX")
        .arg(3600)
        .ignore()
        // What an interrupted migration may have left: a listing half rebuilt.
        .cmd("XADD")
        .arg("hl:contacts:new")
        .arg("*")
        .arg("ct_half_written")
        .arg("")
        .ignore()
        .query_async(&mut c)
        .await
        .unwrap();

    // The new version refuses to serve it, in one line that says what to run.
    let url = redis.url();
    let listen = format!("127.0.0.1:{}", free_port());
    let (code, _, stderr) = contacts_svc(&[
        "--listen",
        &listen,
        "--redis-url",
        &url,
        "--insecure-no-auth",
    ])
    .await;
    assert_ne!(code, 0, "contacts-svc served a database of layout 1");
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains("layout")).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].contains("contacts-svc migrate"), "{stderr}");

    // `migrate` converts it; run again, it finds nothing left to do.
    let (code, stdout, stderr) = contacts_svc(&["migrate", "--redis-url", &url]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("storage layout 2 (3 contacts converted now, 2 listed, 3 events"),
        "{stdout}"
    );
    let (code, stdout, stderr) = contacts_svc(&["--redis-url", &url, "migrate"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("(0 contacts converted now"), "{stdout}");
    let old: u32 = redis::cmd("EXISTS")
        .arg(
            &[
                "hl:contacts",
                "hl:events",
                &format!("hl:c:{{{absorbed}}}:log"),
            ][..],
        )
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(old, 0, "layout 1's keys are left behind");

    // The new code reads it all as it was.
    let contacts = ContactsSvc::start(&url).await;
    let found = contacts.lookup_email("ann@example.com").await.unwrap();
    assert_eq!(found.id, ann);
    assert_eq!(found.email, "ann@example.com");
    assert_eq!(found.purchases.len(), 1, "{found:?}");
    assert_eq!(contacts.get_contact(&absorbed).await.unwrap().id, ann);
    let mut client = contacts.client().await;
    let listed: Vec<String> = client
        .list_contacts(v1::ListContactsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .contacts
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(
        listed,
        [bob.clone(), ann.clone()],
        "newest first, each once"
    );
    let logged: Vec<String> = contacts
        .events(v1::ListEventsRequest::default())
        .await
        .into_iter()
        .map(|r| r.event_id)
        .collect();
    assert_eq!(
        logged,
        ["stripe:evt_bob1", "stripe:evt_ann2", "stripe:evt_ann1"]
    );
    let ann_events: Vec<String> = contacts
        .contact_events(&ann)
        .await
        .into_iter()
        .map(|r| r.event_id)
        .collect();
    assert_eq!(
        ann_events,
        ["stripe:evt_ann2", "stripe:evt_ann1"],
        "the absorbed contact's events are Ann's"
    );

    // New events apply on top, to the same contact, and are logged with the old ones.
    let event = contact_event("evt_ann3", "stripe", Some("ann@example.com"), None);
    let applied = client
        .apply_event(v1::ApplyEventRequest { event: Some(event) })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(applied.outcome(), v1::EventOutcome::Applied, "{applied:?}");
    assert_eq!(applied.contact_id, ann);
    assert_eq!(contacts.contact_events(&ann).await.len(), 3);
    assert_eq!(
        contacts
            .lookup_email("ann@example.com")
            .await
            .unwrap()
            .purchases
            .len(),
        1
    );
}
