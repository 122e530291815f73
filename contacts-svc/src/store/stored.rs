//! A contact as one Redis string (layout 2): its version, then either its record with
//! the log of events applied to it, the id of the contact that absorbed it, or the
//! tombstone of an erased contact. No I/O.
//!
//! ```text
//! "2" <version: 16 hex digits> "y" <size: u32 LE> <LZ4 block of the JSON below, with RECORD_DICT>
//! "2" <version: 16 hex digits> "z" <size: u32 LE> <LZ4 block of the JSON below>
//! "2" <version: 16 hex digits> "d" <JSON {"d": record, "log": [[received ms, record id], …]}>
//! "2" <version: 16 hex digits> "r" <survivor id>
//! "2" <version: 16 hex digits> "e" <JSON {"at": erased ms, "by": caller, "left": cleanup}>
//! ```
//!
//! A tombstone (`e`) holds no personal data once its erasure is complete. Until then,
//! `left` lists what is still to clean (see [`Cleanup`] and `erase.rs`): the record it
//! replaced is gone, so the cleanup could not be derived again after a crash.
//!
//! The version sits at a fixed place so that the compare-and-set script
//! (`keys::CAS_CONTACT`) compares it without decoding anything; a new contact is written
//! with `SET … NX`, which needs no script at all. Records are written compressed: the
//! JSON repeats its keys and every field's event id, and LZ4 takes a typical contact from
//! about 820 bytes to under 400 for a microsecond of CPU. Most of what is left is the
//! first occurrence of each key, which every contact shares: compressed against a
//! dictionary of the record's shapes ([`RECORD_DICT`], `y`), a checkout's contact takes
//! about 210 bytes. Values without the dictionary (`z`) and uncompressed ones (`d`),
//! written by earlier releases, are read too.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::contact::{ContactId, Erasure, Record};

/// The first byte of every contact value of this layout.
const FORMAT: u8 = b'2';
/// Hex digits of the version.
const VERSION_DIGITS: usize = 16;
/// The largest record a stored size may announce: far above any real contact, it stops
/// a corrupt value from asking for an absurd allocation.
const MAX_RECORD_BYTES: usize = 64 * 1024 * 1024;
/// The LZ4 dictionary of `y` values: the JSON shapes of typical records (a GoHighLevel
/// contact with every kind of field, then a Stripe checkout's, the most common, last
/// where matches are cheapest). Values written with it can only be read with the same
/// bytes: this file never changes; a better dictionary comes with a new kind byte.
const RECORD_DICT: &[u8] = include_bytes!("record_dict_1.txt");
/// Entries a contact's log keeps at most, newest first: its record is rewritten on
/// every event, so the log is bounded; older events stay in the webhook log.
pub(super) const MAX_CONTACT_LOG: usize = 1000;

/// One entry of a contact's log: when the event was received (Unix ms) and its record id.
pub(super) type LogEntry = (i64, String);

/// What a contact key holds. Nearly every one is `Data`: boxing it would cost an
/// allocation per read to save room in the rare redirect.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Body {
    Data { record: Record, log: Vec<LogEntry> },
    Redirect(ContactId),
    Erased(Tombstone),
}

/// What an erased contact's key holds: who erased it and when, and while the erasure is
/// not complete, what is left to clean.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Tombstone {
    #[serde(flatten)]
    pub(super) erasure: Erasure,
    #[serde(default, skip_serializing_if = "Cleanup::is_empty")]
    pub(super) left: Cleanup,
}

/// What an erasure still has to clean around a tombstone. Each step is idempotent, so
/// a repeated erasure may do all of it again.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Cleanup {
    /// Index keys to delete while they name one of `owners`.
    #[serde(default, rename = "idx", skip_serializing_if = "BTreeSet::is_empty")]
    pub(super) index_keys: BTreeSet<String>,
    /// The erased contact and the contacts merged into it: an index entry naming any of
    /// them finds the tombstone.
    #[serde(default, rename = "own", skip_serializing_if = "BTreeSet::is_empty")]
    pub(super) owners: BTreeSet<ContactId>,
    /// Event records (by record id) to strip of their bodies, headers and texts.
    #[serde(default, rename = "ev", skip_serializing_if = "BTreeSet::is_empty")]
    pub(super) records: BTreeSet<String>,
    /// Contacts merged into the erased one, to check that each is a redirect: a merge
    /// interrupted between writing its survivor and its redirects left one with data.
    #[serde(default, rename = "abs", skip_serializing_if = "BTreeSet::is_empty")]
    pub(super) absorbed: BTreeSet<ContactId>,
}

impl Cleanup {
    pub(super) fn is_empty(&self) -> bool {
        self.index_keys.is_empty()
            && self.owners.is_empty()
            && self.records.is_empty()
            && self.absorbed.is_empty()
    }

    /// Adds what `other` has to clean.
    pub(super) fn union(&mut self, other: Self) {
        self.index_keys.extend(other.index_keys);
        self.owners.extend(other.owners);
        self.records.extend(other.records);
        self.absorbed.extend(other.absorbed);
    }
}

/// A contact key's value, decoded.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Stored {
    pub(super) version: u64,
    pub(super) body: Body,
}

#[derive(Serialize)]
struct DataOut<'a> {
    d: &'a Record,
    #[serde(skip_serializing_if = "<[LogEntry]>::is_empty")]
    log: &'a [LogEntry],
}

#[derive(Deserialize)]
struct DataIn {
    d: Record,
    #[serde(default)]
    log: Vec<LogEntry>,
}

/// The version as the compare-and-set script finds it in a stored value.
pub(super) fn version_tag(version: u64) -> String {
    format!("{version:016x}")
}

/// Why a stored value cannot be read.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Unreadable(pub(super) String);

/// The value of a contact with `record` and `log` at `version`, encoded from borrowed
/// parts: a write need not copy the record it has just joined.
pub(super) fn encode_data(version: u64, record: &Record, log: &[LogEntry]) -> Vec<u8> {
    let mut out = header(version, b'y');
    // Serializing a record into a Vec cannot fail: every key of its maps is a string and
    // nothing in it refuses to serialize.
    let json = serde_json::to_vec(&DataOut { d: record, log }).unwrap_or_default();
    out.extend_from_slice(&u32::try_from(json.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(&lz4_flex::block::compress_with_dict(&json, RECORD_DICT));
    out
}

fn header(version: u64, kind: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    out.push(FORMAT);
    out.extend_from_slice(version_tag(version).as_bytes());
    out.push(kind);
    out
}

impl Stored {
    pub(super) fn encode(&self) -> Vec<u8> {
        match &self.body {
            Body::Data { record, log } => encode_data(self.version, record, log),
            Body::Redirect(to) => {
                let mut out = header(self.version, b'r');
                out.extend_from_slice(to.as_str().as_bytes());
                out
            }
            Body::Erased(tombstone) => {
                let mut out = header(self.version, b'e');
                // As for a record: nothing in a tombstone refuses to serialize.
                out.extend(serde_json::to_vec(tombstone).unwrap_or_default());
                out
            }
        }
    }

    pub(super) fn decode(bytes: &[u8]) -> Result<Self, Unreadable> {
        let bad = |why: &str| Unreadable(why.to_owned());
        let (&format, rest) = bytes.split_first().ok_or_else(|| bad("empty"))?;
        if format != FORMAT {
            return Err(bad("not a contact of layout 2"));
        }
        if rest.len() < VERSION_DIGITS + 1 {
            return Err(bad("too short"));
        }
        let (digits, rest) = rest.split_at(VERSION_DIGITS);
        let version = std::str::from_utf8(digits)
            .ok()
            .and_then(|d| u64::from_str_radix(d, 16).ok())
            .ok_or_else(|| bad("version is not hex"))?;
        let data = |json: &[u8]| -> Result<Body, Unreadable> {
            let data: DataIn =
                serde_json::from_slice(json).map_err(|e| Unreadable(e.to_string()))?;
            Ok(Body::Data {
                record: data.d,
                log: data.log,
            })
        };
        let body = match rest.split_first() {
            Some((b'y', packed)) => data(&unpack(packed, RECORD_DICT)?)?,
            Some((b'z', packed)) => data(&unpack(packed, &[])?)?,
            Some((b'd', json)) => data(json)?,
            Some((b'r', id)) => {
                let id = std::str::from_utf8(id)
                    .ok()
                    .and_then(|s| ContactId::parse(s).ok())
                    .ok_or_else(|| bad("redirect is not a contact id"))?;
                Body::Redirect(id)
            }
            Some((b'e', json)) => Body::Erased(
                serde_json::from_slice(json).map_err(|e| Unreadable(format!("tombstone: {e}")))?,
            ),
            _ => return Err(bad("neither a record, a redirect nor a tombstone")),
        };
        Ok(Self { version, body })
    }
}

/// The JSON of a compressed value (`<size: u32 LE> <LZ4 block>`), compressed against
/// `dict`.
fn unpack(packed: &[u8], dict: &[u8]) -> Result<Vec<u8>, Unreadable> {
    let bad = |why: &str| Unreadable(why.to_owned());
    let (size, block) = packed
        .split_first_chunk::<4>()
        .ok_or_else(|| bad("compressed record without its size"))?;
    let size = usize::try_from(u32::from_le_bytes(*size)).unwrap_or(usize::MAX);
    if size > MAX_RECORD_BYTES {
        return Err(bad("compressed record announces an impossible size"));
    }
    lz4_flex::block::decompress_with_dict(block, size, dict)
        .map_err(|e| Unreadable(format!("compressed record: {e}")))
}

/// Adds `entries` to a contact's log, keeping each record id once, newest first, none
/// received before `floor` (their records are gone) and at most [`MAX_CONTACT_LOG`].
pub(super) fn log_union(
    log: &mut Vec<LogEntry>,
    entries: impl IntoIterator<Item = LogEntry>,
    floor: i64,
) {
    log.extend(entries);
    log.retain(|(at, _)| *at >= floor);
    log.sort_by(|a, b| (b.0, &b.1).cmp(&(a.0, &a.1)));
    // Equal ids sort next to each other only when received at the same time; the same
    // id always is (it is one record), so `dedup_by` on neighbours suffices.
    log.dedup_by(|a, b| a.1 == b.1);
    log.truncate(MAX_CONTACT_LOG);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> ContactId {
        ContactId::parse(s).unwrap()
    }

    const A: &str = "ct_0190f0e0c0a07000800000000000000a";

    #[test]
    fn values_read_back_as_written() {
        let record = Record {
            first_seen: Some(7),
            ..Record::default()
        };
        for stored in [
            Stored {
                version: 1,
                body: Body::Data {
                    record: record.clone(),
                    log: vec![(5, "stripe:evt_1".to_owned())],
                },
            },
            Stored {
                version: u64::MAX,
                body: Body::Data {
                    record: Record::default(),
                    log: Vec::new(),
                },
            },
            Stored {
                version: 3,
                body: Body::Redirect(id(A)),
            },
        ] {
            assert_eq!(Stored::decode(&stored.encode()), Ok(stored));
        }
    }

    fn tombstone(left: Cleanup) -> Tombstone {
        Tombstone {
            erasure: Erasure {
                erased_at: 1_796_421_417_250,
                erased_by: "support-tool".to_owned(),
            },
            left,
        }
    }

    #[test]
    fn a_tombstone_reads_back_as_written_and_says_only_what_is_left() {
        let left = Cleanup {
            index_keys: ["hl:idx:email:jenny@example.com".to_owned()].into(),
            owners: [id(A)].into(),
            records: ["stripe:evt_1".to_owned()].into(),
            absorbed: [id(A)].into(),
        };
        for (left, json) in [
            (
                left,
                r#"{"at":1796421417250,"by":"support-tool","left":{"idx":["hl:idx:email:jenny@example.com"],"own":["ct_0190f0e0c0a07000800000000000000a"],"ev":["stripe:evt_1"],"abs":["ct_0190f0e0c0a07000800000000000000a"]}}"#,
            ),
            // Once complete, the audit fields alone.
            (
                Cleanup::default(),
                r#"{"at":1796421417250,"by":"support-tool"}"#,
            ),
        ] {
            let stored = Stored {
                version: 7,
                body: Body::Erased(tombstone(left)),
            };
            let bytes = stored.encode();
            assert_eq!(&bytes[..18], b"20000000000000007e");
            assert_eq!(std::str::from_utf8(&bytes[18..]), Ok(json));
            assert_eq!(Stored::decode(&bytes), Ok(stored));
        }
        assert!(matches!(
            Stored::decode(b"20000000000000007e{\"at\":1}"),
            Err(Unreadable(why)) if why.starts_with("tombstone: ")
        ));
    }

    #[test]
    fn cleanups_unite() {
        let one = |key: &str, record: &str| Cleanup {
            index_keys: [key.to_owned()].into(),
            owners: [id(A)].into(),
            records: [record.to_owned()].into(),
            absorbed: BTreeSet::new(),
        };
        let mut left = Cleanup::default();
        assert!(left.is_empty());
        left.union(one("k1", "r1"));
        left.union(one("k2", "r1"));
        assert_eq!(left.index_keys.len(), 2);
        assert_eq!(left.owners.len(), 1);
        assert_eq!(left.records.len(), 1);
        assert!(!left.is_empty());
    }

    #[test]
    fn the_version_sits_where_the_script_compares_it() {
        let bytes = Stored {
            version: 0x2a,
            body: Body::Redirect(id(A)),
        }
        .encode();
        assert_eq!(&bytes[1..17], version_tag(0x2a).as_bytes());
        let bytes = Stored {
            version: 0x2a,
            body: Body::Erased(tombstone(Cleanup::default())),
        }
        .encode();
        assert_eq!(&bytes[1..17], version_tag(0x2a).as_bytes());
    }

    #[test]
    fn unreadable_values_say_why() {
        for (bytes, why) in [
            (&b""[..], "empty"),
            (b"{\"email\":1}", "not a contact of layout 2"),
            (b"2000", "too short"),
            (b"2zzzzzzzzzzzzzzzzd{}", "version is not hex"),
            (
                b"20000000000000001x",
                "neither a record, a redirect nor a tombstone",
            ),
            (
                b"20000000000000001z\x01",
                "compressed record without its size",
            ),
            (
                b"20000000000000001z\xff\xff\xff\xff",
                "compressed record announces an impossible size",
            ),
            (
                b"20000000000000001rnot-an-id",
                "redirect is not a contact id",
            ),
        ] {
            assert_eq!(
                Stored::decode(bytes),
                Err(Unreadable(why.to_owned())),
                "{bytes:?}"
            );
        }
        assert!(Stored::decode(b"20000000000000001d{").is_err());
        assert!(Stored::decode(b"20000000000000001z\x10\x00\x00\x00garbage").is_err());
    }

    /// A contact as a Stripe checkout leaves it.
    fn checkout() -> (Record, Vec<LogEntry>) {
        let json = br#"{"email":{"at":1796421417000,"ev":"stripe:evt_1Q2w3E4r5T6y7U8i","v":{"n":"jenny.rosen@example.com","o":"Jenny.Rosen@example.com"}},"phone":{"at":1796421417000,"ev":"stripe:evt_1Q2w3E4r5T6y7U8i","v":{"v":"+14155550123","ok":true}},"name":{"at":1796421417000,"ev":"stripe:evt_1Q2w3E4r5T6y7U8i","v":"Jenny Rosen"},"payment_refs":["cs_test_a1B2c3D4e5F6","pi_3Mtw8kLkdIwHu7ix"],"purchases":{"pi_3Mtw8kLkdIwHu7ix":{"amount":4900,"currency":"usd","refs":{"pi":["pi_3Mtw8kLkdIwHu7ix"],"cs":["cs_test_a1B2c3D4e5F6"]},"first_at":1796421417000,"stamp":{"at":1796421417000,"ev":"stripe:evt_1Q2w3E4r5T6y7U8i"}}},"first_seen":1796421417000,"last_seen":1796421417000}"#;
        let record = serde_json::from_slice(json).unwrap();
        (
            record,
            vec![(1796421420104, "stripe:evt_1Q2w3E4r5T6y7U8i".to_owned())],
        )
    }

    /// `kind` followed by the JSON of `record` and `log` as earlier releases wrote it.
    fn written_before(kind: u8, record: &Record, log: &[LogEntry]) -> Vec<u8> {
        let json = serde_json::to_vec(&DataOut { d: record, log }).unwrap();
        let mut out = header(2, kind);
        match kind {
            b'd' => out.extend_from_slice(&json),
            _ => {
                out.extend_from_slice(&u32::try_from(json.len()).unwrap().to_le_bytes());
                out.extend_from_slice(&lz4_flex::block::compress(&json));
            }
        }
        out
    }

    #[test]
    fn records_are_written_compressed_with_the_dictionary_and_older_values_still_read() {
        let (record, log) = checkout();
        let stored = Stored {
            version: 2,
            body: Body::Data {
                record: record.clone(),
                log: log.clone(),
            },
        };
        let bytes = stored.encode();
        assert_eq!(bytes[17], b'y');
        assert_eq!(Stored::decode(&bytes).as_ref(), Ok(&stored));
        // The dictionary saves the first occurrence of every key.
        let without = written_before(b'z', &record, &log);
        assert!(
            without.len() > bytes.len() + 120,
            "{} bytes with the dictionary, {} without",
            bytes.len(),
            without.len()
        );
        for kind in [b'z', b'd'] {
            let before = written_before(kind, &record, &log);
            assert_eq!(Stored::decode(&before).as_ref(), Ok(&stored), "{kind}");
        }
        let plain = br#"20000000000000002d{"d":{"first_seen":7},"log":[[5,"stripe:evt_1"]]}"#;
        assert!(Stored::decode(plain).is_ok());
    }

    #[test]
    fn a_damaged_compressed_value_is_unreadable_not_a_panic() {
        let (record, log) = checkout();
        let bytes = encode_data(1, &record, &log);
        // A size too small for what the block holds, a block cut short, and a block
        // read without the dictionary it was written with.
        let mut small = bytes.clone();
        small[18..22].copy_from_slice(&10u32.to_le_bytes());
        let cut = bytes[..bytes.len() - 20].to_vec();
        let mut undictionaried = bytes.clone();
        undictionaried[17] = b'z';
        for damaged in [small, cut] {
            assert!(Stored::decode(&damaged).is_err());
        }
        assert_ne!(
            Stored::decode(&undictionaried).ok(),
            Some(Stored {
                version: 1,
                body: Body::Data { record, log }
            })
        );
    }

    #[test]
    fn a_log_keeps_each_event_once_newest_first_within_its_bounds() {
        let e = |at: i64, id: &str| (at, id.to_owned());
        for (log, add, floor, want) in [
            (vec![], vec![e(1, "a")], 0, vec![e(1, "a")]),
            (vec![e(1, "a")], vec![e(1, "a")], 0, vec![e(1, "a")]),
            (
                vec![e(1, "a")],
                vec![e(3, "c"), e(2, "b")],
                0,
                vec![e(3, "c"), e(2, "b"), e(1, "a")],
            ),
            (
                vec![e(1, "a"), e(5, "e")],
                vec![e(2, "b")],
                2,
                vec![e(5, "e"), e(2, "b")],
            ),
        ] {
            let mut log = log;
            log_union(&mut log, add, floor);
            assert_eq!(log, want);
        }
        let mut log = Vec::new();
        log_union(&mut log, (0..1500).map(|i| e(i, &format!("ev{i}"))), 0);
        assert_eq!(log.len(), MAX_CONTACT_LOG);
        assert_eq!(log[0], e(1499, "ev1499"));
    }
}
