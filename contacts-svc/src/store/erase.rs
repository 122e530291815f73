//! Erasing a contact (`EraseContact`): its record becomes a tombstone (`stored.rs`), the
//! index entries that lead to it go, and the records of its events lose what could
//! name the person. What a tombstone keeps and what is cleaned are pure functions
//! ([`cleanup`], [`stripped`], [`window_id`]); the rest is their I/O.
//!
//! The steps, in this order:
//!
//! 1. The tombstone is written over the record, guarded by the record's version as
//!    every write is (`CAS_CONTACT`). It lists what is left to clean (a [`Cleanup`]):
//!    the record that named the index entries and events is gone from then on, so that
//!    list could not be derived again after a crash.
//! 2. Contacts merged into it that still hold data (a merge interrupted between
//!    writing its survivor and its redirects) are added to the list, the tombstone
//!    written again, and then turned into redirects to it.
//! 3. Index entries are deleted while they name it or a contact merged into it
//!    (compare-and-delete: an entry a new contact claimed since stays).
//! 4. Event records are stripped, keeping their time to live, while they hold what
//!    was read (a new delivery may have taken an expired key).
//! 5. The tombstone is written once more, without the list.
//!
//! A crash (or a deadline) after step 1 leaves a tombstone with its list, and the next
//! `EraseContact` does steps 2 to 5 again: each is idempotent. Meanwhile nothing shows
//! the person: reads show the tombstone, a lookup through a leftover entry finds
//! nothing, and an event through one clears it and makes a new contact (`apply.rs`).
//!
//! Concurrent events: an event that read the contact before step 1 fails its own
//! compare-and-set and resolves again, reaching the tombstone; one applied before step
//! 1 makes step 1 fail, and the erasure reads the record again, that event included.
//! Two erasures of one contact: the first tombstone written wins (its `erased_at` and
//! `erased_by` stay), the other call completes the same list. With
//! `--redis-wait-replicas`, an erasure is answered once the replicas hold it.

use std::collections::BTreeSet;

use hookline_proto::v1;

use super::apply::{MAX_ATTEMPTS, Write, written};
use super::keys::{
    DELETE_IF_ANY, REWRITE_IF, contact_key, decode_contact, decode_done, event_key, index_key,
    record_value,
};
use super::stored::{Body, Cleanup, LogEntry, Stored, Tombstone};
use super::{Loaded, Store};
use crate::contact::{ContactId, Erasure, Record};
use crate::error::Error;

/// What erasing contact `id`, holding `record` and `log`, leaves to clean: the index
/// entries of every identifier it was stated to have, current or former (those of the
/// contacts merged into it are among them: they were pointed at it, or still name
/// them), the records of its events, and the contacts merged into it.
pub(super) fn cleanup(id: &ContactId, record: &Record, log: &[LogEntry]) -> Cleanup {
    Cleanup {
        index_keys: record.every_identifier().iter().map(index_key).collect(),
        owners: std::iter::once(id.clone())
            .chain(record.merged.iter().cloned())
            .collect(),
        records: log.iter().map(|(_, record_id)| record_id.clone()).collect(),
        absorbed: record.merged.clone(),
    }
}

/// What an erased contact's event record keeps: which event it was, from where, when,
/// and what became of it. The body and headers go, and so do the texts that may quote
/// the payload or name other contacts (`reason`, `notes`, which records of earlier
/// releases hold in `reason`) and the provider's own id when it was unusable as a key.
/// Built field by field, so that a field added to `EventRecord` later is dropped until
/// someone decides it may stay.
pub(super) fn stripped(r: &v1::EventRecord) -> v1::EventRecord {
    v1::EventRecord {
        event_id: r.event_id.clone(),
        source: r.source.clone(),
        r#type: r.r#type.clone(),
        outcome: r.outcome,
        contact_id: r.contact_id.clone(),
        occurred_at: r.occurred_at,
        received_at: r.received_at,
        applied_at: r.applied_at,
        ..v1::EventRecord::default()
    }
}

/// The id of the dedup window an occurrence's record id (`<id>@<received ms>`, see
/// `EventId::occurrence`) belongs to: the window's key holds a copy of the record of
/// its latest occurrence for as long as the window lasts.
pub(super) fn window_id(record_id: &str) -> Option<&str> {
    let (id, at) = record_id.rsplit_once('@')?;
    let digits = !at.is_empty() && at.bytes().all(|b| b.is_ascii_digit());
    (digits && !id.is_empty()).then_some(id)
}

impl Store {
    /// Erases contact `id` (the survivor, for the id of a merged contact) on behalf of
    /// `by` at `now` (Unix ms), and returns its tombstone. An erased contact's
    /// erasure is completed if it was not, and its tombstone returned as it was.
    pub async fn erase(&self, id: &ContactId, by: &str, now: i64) -> Result<Loaded, Error> {
        for _ in 0..MAX_ATTEMPTS {
            let (live, stored) = self.resolve(id).await?;
            let Some(Stored { version, body }) = stored else {
                return Err(Error::NotFound(format!("no contact {id}")));
            };
            let (version, tombstone) = match body {
                Body::Erased(tombstone) => (version, tombstone),
                Body::Data { record, log } => {
                    let tombstone = Tombstone {
                        erasure: Erasure {
                            erased_at: now,
                            erased_by: by.to_owned(),
                        },
                        left: cleanup(&live, &record, &log),
                    };
                    if !self.put(&live, version, &tombstone).await? {
                        continue; // an event changed it since it was read
                    }
                    (version + 1, tombstone)
                }
                // `resolve` follows every redirect.
                Body::Redirect(_) => continue,
            };
            if let Some(done) = self.complete(&live, version, tombstone).await? {
                // With `--redis-wait-replicas`, the erasure is on the replicas before
                // it is reported: a failover must not bring the person back.
                self.replicated().await?;
                return Ok(done);
            }
        }
        Err(Error::Contention(MAX_ATTEMPTS))
    }

    /// Cleans what the tombstone of `live` (at `version`) lists, then writes it without
    /// the list. `None` when the tombstone changed meanwhile (another erasure of the
    /// same contact): the caller reads it again.
    async fn complete(
        &self,
        live: &ContactId,
        version: u64,
        mut tombstone: Tombstone,
    ) -> Result<Option<Loaded>, Error> {
        if tombstone.left.is_empty() {
            return Ok(Some(Loaded::tombstone(
                live.clone(),
                version,
                tombstone.erasure,
            )));
        }
        let Some(version) = self.redirect_merged(live, version, &mut tombstone).await? else {
            return Ok(None);
        };
        self.delete_entries(&tombstone.left).await?;
        for record_id in &tombstone.left.records {
            self.strip_record(record_id).await?;
        }
        tombstone.left = Cleanup::default();
        if !self.put(live, version, &tombstone).await? {
            return Ok(None);
        }
        Ok(Some(Loaded::tombstone(
            live.clone(),
            version + 1,
            tombstone.erasure,
        )))
    }

    /// Makes every contact merged into `live` a redirect: one that still holds data is
    /// added to what the tombstone lists (written first, so that a crash cannot lose
    /// it), then turned into a redirect to `live`; the contacts merged into it are
    /// checked in turn. The tombstone's version after, `None` when it changed meanwhile.
    async fn redirect_merged(
        &self,
        live: &ContactId,
        mut version: u64,
        tombstone: &mut Tombstone,
    ) -> Result<Option<u64>, Error> {
        let mut c = self.conn.clone();
        let mut checked: BTreeSet<ContactId> = BTreeSet::new();
        let mut tries = 0;
        loop {
            let next = tombstone.left.absorbed.difference(&checked).next().cloned();
            let Some(merged) = next else {
                return Ok(Some(version));
            };
            let key = contact_key(&merged);
            let value: Option<Vec<u8>> = redis::cmd("GET").arg(&key).query_async(&mut c).await?;
            let stored = value.map(|v| decode_contact(&key, &v)).transpose()?;
            let Some(Stored {
                version: theirs,
                body: Body::Data { record, log },
            }) = stored
            else {
                // A redirect (the merge was complete), or nothing there to erase.
                checked.insert(merged);
                continue;
            };
            tries += 1;
            if tries > MAX_ATTEMPTS {
                return Err(Error::Contention(MAX_ATTEMPTS));
            }
            tombstone.left.union(cleanup(&merged, &record, &log));
            if !self.put(live, version, tombstone).await? {
                return Ok(None);
            }
            version += 1;
            let redirect = Stored {
                version: theirs + 1,
                body: Body::Redirect(live.clone()),
            };
            let reply = Write::new(&merged, theirs, redirect.encode())
                .run(&mut c)
                .await?;
            // Not written: an event changed it since it was read; read it again.
            if written(&reply) {
                checked.insert(merged);
            }
        }
    }

    /// Deletes each index entry `left` lists while it names one of its owners.
    async fn delete_entries(&self, left: &Cleanup) -> Result<(), Error> {
        let mut c = self.conn.clone();
        let owners: Vec<&str> = left.owners.iter().map(ContactId::as_str).collect();
        for key in &left.index_keys {
            let _: i64 = DELETE_IF_ANY
                .call()
                .key(key)
                .arg(&owners)
                .run(&mut c)
                .await?;
        }
        Ok(())
    }

    /// Strips the record of event `record_id` (see [`stripped`]), and the copy its dedup
    /// window holds, if any.
    async fn strip_record(&self, record_id: &str) -> Result<(), Error> {
        self.strip_key(record_id, record_id).await?;
        if let Some(window) = window_id(record_id) {
            self.strip_key(window, record_id).await?;
        }
        Ok(())
    }

    /// Strips the record of `record_id` that the event key of `key_id` holds, keeping
    /// the form of its value (`D` or `W<log entry> `) and its time to live.
    async fn strip_key(&self, key_id: &str, record_id: &str) -> Result<(), Error> {
        let key = event_key(key_id);
        let mut c = self.conn.clone();
        for _ in 0..MAX_ATTEMPTS {
            let value: Option<Vec<u8>> = redis::cmd("GET").arg(&key).query_async(&mut c).await?;
            // Expired, or the lease of a delivery that came after: no record to strip.
            let Some(done) = value.as_deref().and_then(|v| decode_done(&key, v)) else {
                return Ok(());
            };
            let done = done?;
            // A window's key holds its latest occurrence's record, maybe another one's.
            if done.record.event_id != record_id {
                return Ok(());
            }
            let mut kept = stripped(&done.record);
            if kept == done.record {
                return Ok(());
            }
            let new = record_value(&mut kept, key_id, done.log_entry.as_deref());
            let swapped: i64 = REWRITE_IF
                .call()
                .key(&key)
                .arg(value.unwrap_or_default())
                .arg(new)
                .run(&mut c)
                .await?;
            if swapped == 1 {
                return Ok(());
            }
        }
        Err(Error::Contention(MAX_ATTEMPTS))
    }

    /// Writes `tombstone` over contact `id` if its version is still `version`.
    async fn put(
        &self,
        id: &ContactId,
        version: u64,
        tombstone: &Tombstone,
    ) -> Result<bool, Error> {
        let mut c = self.conn.clone();
        let value = Stored {
            version: version + 1,
            body: Body::Erased(tombstone.clone()),
        }
        .encode();
        let reply = Write::new(id, version, value).run(&mut c).await?;
        Ok(written(&reply))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contact::{Email, Lww, Phone, Region, Stamp, timestamp};

    const A: &str = "ct_0190f0e0c0a07000800000000000000a";
    const B: &str = "ct_0190f0e0c0a07000800000000000000b";

    fn id(s: &str) -> ContactId {
        ContactId::parse(s).unwrap()
    }

    fn lww<T>(v: T) -> Option<Lww<T>> {
        Some(Lww {
            stamp: Stamp {
                at: 1,
                ev: "stripe:evt_1".to_owned(),
            },
            v,
        })
    }

    fn us() -> Region {
        Region::parse("region", "US").unwrap()
    }

    /// Jenny, who bought with Stripe and absorbed contact B.
    fn jenny() -> Record {
        Record {
            email: lww(Email::parse("email", "Jenny@Example.com").unwrap()),
            phone: lww(Phone::parse_strict("phone", "+14155550100", us()).unwrap()),
            name: lww("Jenny Rosen".to_owned()),
            external_ids: [("ghl_contact".to_owned(), "g1".to_owned())].into(),
            payment_refs: ["pi_1".to_owned()].into(),
            merged: [id(B)].into(),
            ..Record::default()
        }
    }

    fn strings<const N: usize>(items: [&str; N]) -> BTreeSet<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn an_erasure_cleans_every_index_entry_event_and_merged_contact_of_the_record() {
        let log =
            |ids: &[&str]| -> Vec<LogEntry> { ids.iter().map(|r| (5, (*r).to_owned())).collect() };
        for (record, log, want) in [
            (
                jenny(),
                log(&["stripe:evt_1", "batch:link"]),
                Cleanup {
                    index_keys: strings([
                        "hl:idx:ext:ghl_contact:g1",
                        "hl:idx:pay:pi_1",
                        "hl:idx:email:jenny@example.com",
                        "hl:idx:phone:+14155550100",
                    ]),
                    owners: [id(A), id(B)].into(),
                    records: strings(["stripe:evt_1", "batch:link"]),
                    absorbed: [id(B)].into(),
                },
            ),
            // Nothing known: the contact itself is still the owner of whatever names it.
            (
                Record::default(),
                Vec::new(),
                Cleanup {
                    owners: [id(A)].into(),
                    ..Cleanup::default()
                },
            ),
        ] {
            assert_eq!(cleanup(&id(A), &record, &log), want);
        }
    }

    #[test]
    fn a_stripped_record_keeps_what_happened_and_nothing_of_the_person() {
        let at = |s| Some(timestamp(s));
        let kept = v1::EventRecord {
            event_id: "acme:msg_1".to_owned(),
            source: "acme".to_owned(),
            r#type: "user.created".to_owned(),
            outcome: v1::EventOutcome::Applied.into(),
            contact_id: A.to_owned(),
            occurred_at: at(1),
            received_at: at(2),
            applied_at: at(3),
            ..v1::EventRecord::default()
        };
        let full = v1::EventRecord {
            reason: "value at /data/email: jenny@example.com".to_owned(),
            body: br#"{"data":{"email":"jenny@example.com"}}"#.to_vec(),
            notes: vec![format!("conflict: this email belongs to {B}")],
            original_event_id: "jenny@example.com signed up".to_owned(),
            headers: vec![v1::Header {
                name: "webhook-id".to_owned(),
                value: b"msg_1".to_vec(),
            }],
            ..kept.clone()
        };
        for (record, want) in [(&full, &kept), (&kept, &kept)] {
            assert_eq!(&stripped(record), want);
        }
    }

    #[test]
    fn an_occurrence_names_its_window_and_other_ids_none() {
        for (record_id, want) in [
            (
                "ghl-workflow:sha256:ab12@1796421417000",
                Some("ghl-workflow:sha256:ab12"),
            ),
            ("a@b@17", Some("a@b")),
            ("stripe:evt_1", None),
            ("acme:jenny@example.com", None),
            ("acme:x@", None),
            ("@17", None),
        ] {
            assert_eq!(window_id(record_id), want, "{record_id}");
        }
    }
}
