//! The fuzz targets' bodies for what contacts-svc reads back from Redis: a contact's
//! value (`stored.rs`), an event record and a done marker (`keys.rs`). Redis holds what
//! this code wrote, but a value damaged, written by another release or by hand must be
//! refused as corrupt, never crash the service. Each function takes the fuzzer's bytes
//! as a value and checks, beyond not panicking, that what decodes encodes to something
//! that decodes the same. The unit tests run them as property tests
//! (`fuzzing/tests.rs`); the `fuzz/` crate runs them with the `fuzzing` feature.

use hookline_proto::v1;

use super::keys::{Done, decode_done, decode_record, event_key, record_value};
use super::stored::Stored;

/// The event whose key every record is read under.
const EVENT_ID: &str = "stripe:evt_fuzz";

/// A contact key's value. Returns whether it decoded.
pub fn contact_value(data: &[u8]) -> bool {
    let Ok(stored) = Stored::decode(data) else {
        return false;
    };
    let again = Stored::decode(&stored.encode());
    assert_eq!(again.as_ref(), Ok(&stored), "a contact does not read back");
    true
}

/// An event record under `hl:ev:{stripe:evt_fuzz}`: what decodes is written as a done
/// marker and reads back the same.
pub fn event_record(data: &[u8]) -> Option<v1::EventRecord> {
    let key = event_key(EVENT_ID);
    let record = decode_record(&key, data).ok()?;
    let value = record_value(&mut record.clone(), EVENT_ID, None);
    let again = decode_done(&key, &value).and_then(Result::ok);
    assert_eq!(
        again.as_ref().map(|d| &d.record),
        Some(&record),
        "an event record does not read back"
    );
    Some(record)
}

/// An event key's value: a done marker (`D` or `W<entry> `, then the record), a lease
/// (`None`), or corrupt. A marker is written again with its record and log entry and
/// reads back the same.
pub fn done_marker(data: &[u8]) -> Option<bool> {
    let key = event_key(EVENT_ID);
    let Ok(done) = decode_done(&key, data)? else {
        return Some(false);
    };
    let Done { record, log_entry } = &done;
    let value = record_value(&mut record.clone(), EVENT_ID, log_entry.as_deref());
    let again = decode_done(&key, &value).and_then(Result::ok);
    assert_eq!(
        again.as_ref(),
        Some(&done),
        "a done marker does not read back"
    );
    Some(true)
}

#[cfg(test)]
mod tests;
