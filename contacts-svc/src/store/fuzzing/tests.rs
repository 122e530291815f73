//! The decoders' fuzz targets on stable, a bounded number of cases each: arbitrary
//! bytes, and values this code writes with random bytes changed, which get past the
//! format byte and the version to the compressed record, the JSON and the protobuf.

use proptest::prelude::*;

use super::*;
use crate::contact::{ContactId, Record};
use crate::store::stored::{Body, encode_data};

/// A contact as a Stripe checkout leaves it, with a log of two events.
fn checkout() -> Vec<u8> {
    let json = br#"{"email":{"at":1796421417000,"ev":"stripe:evt_1","v":{"n":"jenny.rosen@example.com","o":"Jenny.Rosen@example.com"}},"phone":{"at":1796421417000,"ev":"stripe:evt_1","v":{"v":"+14155550123","ok":true}},"name":{"at":1796421417000,"ev":"stripe:evt_1","v":"Jenny Rosen"},"payment_refs":["cs_test_a1","pi_3M"],"purchases":{"pi_3M":{"amount":4900,"currency":"usd","refs":{"pi":["pi_3M"],"cs":["cs_test_a1"]},"first_at":1796421417000,"stamp":{"at":1796421417000,"ev":"stripe:evt_1"}}},"first_seen":1796421417000,"last_seen":1796421417000}"#;
    let record: Record = serde_json::from_slice(json).expect("a record");
    let log = [(1, "stripe:evt_1".to_owned()), (2, "ghl:wh_2".to_owned())];
    encode_data(7, &record, &log)
}

/// Values of every kind this code reads: `y` (as written now), `z` and `d` (as earlier
/// releases wrote them), and a redirect.
fn contact_values() -> Vec<Vec<u8>> {
    let y = checkout();
    let json =
        br#"{"d":{"first_seen":7,"tags":{"at":1,"ev":"e","v":["a"]}},"log":[[5,"stripe:evt_1"]]}"#;
    let mut z = b"20000000000000003z".to_vec();
    z.extend_from_slice(&u32::try_from(json.len()).expect("small").to_le_bytes());
    z.extend_from_slice(&lz4_flex::block::compress(json));
    let d = [&b"20000000000000003d"[..], json].concat();
    let redirect = Stored {
        version: 9,
        body: Body::Redirect(ContactId::parse("ct_0190f0e0c0a07000800000000000000a").expect("id")),
    }
    .encode();
    vec![y, z, d, redirect]
}

/// Done markers as this code writes them, with and without a log entry.
fn event_values() -> Vec<Vec<u8>> {
    let record = v1::EventRecord {
        event_id: EVENT_ID.to_owned(),
        source: "stripe".to_owned(),
        contact_id: "ct_0190f0e0c0a07000800000000000000a".to_owned(),
        body: b"{\"id\":\"kept\"}".to_vec(),
        ..v1::EventRecord::default()
    };
    vec![
        record_value(&mut record.clone(), EVENT_ID, None),
        record_value(&mut record.clone(), EVENT_ID, Some("1733356800000-3")),
        record_value(&mut record.clone(), "other:id", None),
    ]
}

/// One of `values` with a few bytes overwritten, and maybe cut short.
fn damaged(values: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let n = values.len();
    (
        0..n,
        prop::collection::vec((any::<usize>(), any::<u8>()), 0..6),
        any::<usize>(),
    )
        .prop_map(move |(i, changes, keep)| {
            let mut v = values[i].clone();
            for (at, byte) in changes {
                let at = at % v.len();
                v[at] = byte;
            }
            v.truncate(keep % (v.len() + 1) + v.len() / 2);
            v
        })
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 512,
        // A failure is reported with its input; nothing to keep between runs.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn every_decoder_takes_any_bytes(data in prop::collection::vec(any::<u8>(), 0..4096)) {
        contact_value(&data);
        event_record(&data);
        done_marker(&data);
    }

    #[test]
    fn damaged_contacts_read_back_or_are_refused(data in damaged(contact_values())) {
        contact_value(&data);
    }

    #[test]
    fn damaged_event_values_read_back_or_are_refused(data in damaged(event_values())) {
        done_marker(&data);
        if let Some(body) = data.get(1..) {
            event_record(body);
        }
    }
}

#[test]
fn the_values_written_read_back() {
    for value in contact_values() {
        assert!(contact_value(&value), "{value:?}");
    }
    for value in event_values() {
        assert_eq!(done_marker(&value), Some(true), "{value:?}");
        assert!(
            event_record(&value[value.iter().position(|b| *b == b' ').map_or(1, |s| s + 1)..])
                .is_some()
        );
    }
    assert_eq!(done_marker(b"L0123456789abcdef"), None, "a lease");
}
