//! The storage layout's version in Redis (`hl:schema`), and the migration from the
//! previous layout.
//!
//! Layout 1 (until this version) kept a contact in a hash (`v` version, `d` JSON record,
//! `r` survivor) beside a sorted set of its events (`hl:c:{id}:log`), and listed contacts
//! and events in two sorted sets (`hl:contacts`, `hl:events`). Layout 2 keeps a contact
//! and its log in one string (`stored.rs`) and the listings in streams. Event records,
//! leases and index entries are the same in both.
//!
//! contacts-svc refuses to serve a database of layout 1; `contacts-svc migrate` converts
//! it. The migration is idempotent and resumable: it marks the database as layout 1 while
//! it works, converts each contact in one script (a converted one is skipped), rebuilds
//! each listing from scratch before it deletes the old one, and marks the database as
//! layout 2 last. Run it with every contacts-svc stopped; run it again after a crash.

use std::collections::BTreeSet;
use std::sync::LazyLock;

use redis::Value;

use super::Store;
use super::keys::{CONTACTS, EVENTS, Lua, SCHEMA};
use super::stored::{Body, LogEntry, Stored, log_union};
use crate::contact::{ContactId, Record};
use crate::error::Error;

/// The layout this code reads and writes.
pub const CURRENT: u32 = 2;

/// Layout 1's listing of contacts (a sorted set by creation time).
const V1_CONTACTS: &str = "hl:contacts";
/// Layout 1's webhook log (a sorted set by receipt time).
const V1_EVENTS: &str = "hl:events";
/// Keys read per `SCAN` step and items per listing entry written while migrating.
const STEP: usize = 500;

fn v1_log_key(id: &ContactId) -> String {
    format!("hl:c:{{{id}}}:log")
}

/// What a database holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Nothing of hookline's yet.
    Empty,
    /// The layout this code uses.
    Current,
    /// An earlier layout: `contacts-svc migrate` converts it.
    Old(u32),
    /// A later layout, written by a newer contacts-svc.
    Newer(String),
}

impl Layout {
    /// Why a contacts-svc of this version cannot serve the database, if it cannot.
    pub fn refusal(&self) -> Option<String> {
        match self {
            Self::Empty | Self::Current => None,
            Self::Old(v) => Some(format!(
                "redis holds hookline's storage layout {v}, this contacts-svc needs layout {CURRENT}: stop every contacts-svc and run `contacts-svc migrate` with the same --redis-url"
            )),
            Self::Newer(v) => Some(format!(
                "redis holds hookline's storage layout {v}, newer than this contacts-svc's ({CURRENT}): run the contacts-svc that wrote it"
            )),
        }
    }
}

/// What a migration did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MigrateReport {
    /// Contacts converted now (those converted by an earlier run are not counted).
    pub contacts: u64,
    /// Contacts listed in the new listing.
    pub listed: u64,
    /// Events listed in the new webhook log.
    pub logged: u64,
}

/// Replaces a contact of layout 1 (a hash, and its log) with its layout 2 string, if it
/// is still the version read.
static CONVERT: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(
        r"
if redis.call('TYPE', KEYS[1])['ok'] ~= 'hash' then return 0 end
if (redis.call('HGET', KEYS[1], 'v') or '') ~= ARGV[1] then return -1 end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('SET', KEYS[1], ARGV[2])
return 1
",
    )
});

/// A contact of layout 1 as layout 2 stores it, from its hash fields and its log (the
/// logs of the contacts it absorbed included, which layout 1 kept apart).
fn convert(
    key: &str,
    version: u64,
    data: Option<&[u8]>,
    redirect: Option<&str>,
    logs: Vec<LogEntry>,
) -> Result<Stored, Error> {
    let corrupt = |reason: String| Error::Corrupt {
        key: key.to_owned(),
        reason,
    };
    let body = match (redirect, data) {
        (Some(to), _) => Body::Redirect(
            ContactId::parse(to).map_err(|_| corrupt("redirect is not a contact id".into()))?,
        ),
        (None, Some(data)) => {
            let record: Record =
                serde_json::from_slice(data).map_err(|e| corrupt(e.to_string()))?;
            let mut log = Vec::new();
            log_union(&mut log, logs, i64::MIN);
            Body::Data { record, log }
        }
        (None, None) => Body::Data {
            record: Record::default(),
            log: Vec::new(),
        },
    };
    Ok(Stored { version, body })
}

impl Store {
    /// The layout the database holds.
    pub async fn layout(&self) -> Result<Layout, Error> {
        let mut c = self.conn.clone();
        let (schema, old): (Option<String>, u32) = redis::pipe()
            .get(SCHEMA)
            .exists(&[V1_CONTACTS, V1_EVENTS][..])
            .query_async(&mut c)
            .await?;
        Ok(match schema {
            Some(v) if v == CURRENT.to_string() => Layout::Current,
            Some(v) => match v.parse::<u32>() {
                Ok(n) if n < CURRENT => Layout::Old(n),
                _ => Layout::Newer(v),
            },
            // Every database layout 1 wrote holds one of its listings.
            None if old > 0 => Layout::Old(1),
            None => Layout::Empty,
        })
    }

    /// Checks that this code can serve the database, marking an empty one with the
    /// current layout.
    pub async fn check_layout(&self) -> Result<(), Error> {
        let mut layout = self.layout().await?;
        if layout == Layout::Empty {
            let mut c = self.conn.clone();
            let _: Value = redis::cmd("SET")
                .arg(SCHEMA)
                .arg(CURRENT)
                .arg("NX")
                .query_async(&mut c)
                .await?;
            layout = self.layout().await?;
        }
        match layout.refusal() {
            Some(why) => Err(Error::Layout(why)),
            None => Ok(()),
        }
    }

    /// Converts a database of layout 1 to the current one (see the module docs); a
    /// database of the current layout is left as it is.
    pub async fn migrate(&self) -> Result<MigrateReport, Error> {
        let mut report = MigrateReport::default();
        match self.layout().await? {
            Layout::Current => return Ok(report),
            Layout::Empty | Layout::Old(1) => {}
            other => {
                return Err(Error::Layout(other.refusal().unwrap_or_default()));
            }
        }
        let mut c = self.conn.clone();
        let () = redis::cmd("SET")
            .arg(SCHEMA)
            .arg(1)
            .query_async(&mut c)
            .await?;
        report.contacts = self.migrate_contacts().await?;
        report.listed = self.migrate_listing(V1_CONTACTS, CONTACTS, false).await?;
        report.logged = self.migrate_listing(V1_EVENTS, EVENTS, true).await?;
        self.drop_v1_logs().await?;
        let () = redis::cmd("SET")
            .arg(SCHEMA)
            .arg(CURRENT)
            .query_async(&mut c)
            .await?;
        Ok(report)
    }

    /// Every `hl:c:*` key of layout 1, `SCAN` step by step.
    async fn scan_contacts(
        &self,
        mut each: impl AsyncFnMut(Vec<String>) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let mut c = self.conn.clone();
        let mut cursor = 0u64;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg("hl:c:{*")
                .arg("COUNT")
                .arg(STEP)
                .query_async(&mut c)
                .await?;
            each(keys).await?;
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }

    async fn migrate_contacts(&self) -> Result<u64, Error> {
        let mut converted = 0;
        self.scan_contacts(async |keys| {
            for key in keys {
                if key.ends_with(":log") {
                    continue;
                }
                if self.convert_contact(&key).await? {
                    converted += 1;
                }
            }
            Ok(())
        })
        .await?;
        Ok(converted)
    }

    /// Converts one contact key of layout 1; false if it was converted before.
    async fn convert_contact(&self, key: &str) -> Result<bool, Error> {
        let mut c = self.conn.clone();
        let id = key
            .strip_prefix("hl:c:{")
            .and_then(|k| k.strip_suffix('}'))
            .and_then(|k| ContactId::parse(k).ok())
            .ok_or_else(|| Error::Corrupt {
                key: key.to_owned(),
                reason: "not a contact id".to_owned(),
            })?;
        loop {
            let kind: String = redis::cmd("TYPE").arg(key).query_async(&mut c).await?;
            if kind != "hash" {
                return Ok(false);
            }
            let (version, data, redirect): (Option<u64>, Option<Vec<u8>>, Option<String>) =
                redis::cmd("HMGET")
                    .arg(key)
                    .arg("v")
                    .arg("d")
                    .arg("r")
                    .query_async(&mut c)
                    .await?;
            let mut logs: Vec<LogEntry> = Vec::new();
            let mut ids: BTreeSet<ContactId> = BTreeSet::from([id.clone()]);
            if redirect.is_none()
                && let Some(d) = &data
                && let Ok(record) = serde_json::from_slice::<Record>(d)
            {
                ids.extend(record.merged);
            }
            for of in &ids {
                let part: Vec<(String, i64)> = redis::cmd("ZRANGE")
                    .arg(v1_log_key(of))
                    .arg(0)
                    .arg(-1)
                    .arg("WITHSCORES")
                    .query_async(&mut c)
                    .await?;
                logs.extend(part.into_iter().map(|(m, s)| (s, m)));
            }
            let stored = convert(
                key,
                version.unwrap_or(0),
                data.as_deref(),
                redirect.as_deref(),
                logs,
            )?;
            // A redirect's log is left for its survivor to read (see `drop_v1_logs`).
            let own_log = match stored.body {
                Body::Data { .. } => v1_log_key(&id),
                // Layout 1 knew no tombstones: `convert` makes none.
                Body::Redirect(_) | Body::Erased(_) => key.to_owned(),
            };
            let done: i64 = CONVERT
                .call()
                .key(key)
                .key(own_log)
                .arg(version.map(|v| v.to_string()).unwrap_or_default())
                .arg(stored.encode())
                .run(&mut c)
                .await?;
            match done {
                1 => return Ok(true),
                0 => return Ok(false),
                _ => continue, // changed while read (an older contacts-svc still runs)
            }
        }
    }

    /// Rebuilds the listing `from` (a sorted set of layout 1) as the stream `to`, oldest
    /// first, then deletes `from`. `scored`: each item's score goes beside it (the webhook
    /// log keeps receipt times).
    async fn migrate_listing(&self, from: &str, to: &str, scored: bool) -> Result<u64, Error> {
        let mut c = self.conn.clone();
        let kind: String = redis::cmd("TYPE").arg(from).query_async(&mut c).await?;
        if kind != "zset" {
            return Ok(0);
        }
        // What an interrupted run wrote is written again.
        let () = redis::cmd("DEL")
            .arg(to)
            .query_async(&mut c)
            .await
            .map(|_: i64| ())?;
        let mut start = 0usize;
        let mut listed = 0u64;
        loop {
            let chunk: Vec<(String, i64)> = redis::cmd("ZRANGE")
                .arg(from)
                .arg(start)
                .arg(start + STEP - 1)
                .arg("WITHSCORES")
                .query_async(&mut c)
                .await?;
            if chunk.is_empty() {
                break;
            }
            let mut add = redis::cmd("XADD");
            add.arg(to).arg("*");
            for (member, score) in &chunk {
                add.arg(member);
                if scored {
                    add.arg(score);
                } else {
                    add.arg("");
                }
            }
            let _: String = add.query_async(&mut c).await?;
            listed += chunk.len() as u64;
            start += chunk.len();
        }
        let _: i64 = redis::cmd("DEL").arg(from).query_async(&mut c).await?;
        Ok(listed)
    }

    /// Deletes what is left of layout 1's contact logs: those of absorbed contacts,
    /// copied into their survivors' logs.
    async fn drop_v1_logs(&self) -> Result<(), Error> {
        let mut c = self.conn.clone();
        self.scan_contacts(async |keys| {
            let logs: Vec<&String> = keys.iter().filter(|k| k.ends_with(":log")).collect();
            if !logs.is_empty() {
                let _: i64 = redis::cmd("DEL").arg(logs).query_async(&mut c).await?;
            }
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_of_another_layout_is_refused_with_the_way_out() {
        assert_eq!(Layout::Empty.refusal(), None);
        assert_eq!(Layout::Current.refusal(), None);
        let old = Layout::Old(1).refusal().unwrap();
        assert!(old.contains("contacts-svc migrate"), "{old}");
        assert!(!old.contains('\n'));
        let newer = Layout::Newer("3".into()).refusal().unwrap();
        assert!(newer.contains("newer"), "{newer}");
    }

    #[test]
    fn contacts_of_layout_1_convert_with_their_logs() {
        let a = "ct_0190f0e0c0a07000800000000000000a";
        let data = br#"{"first_seen":5}"#;
        let logs = vec![
            (1, "s:e1".to_owned()),
            (3, "s:e3".to_owned()),
            (1, "s:e1".to_owned()),
        ];
        let stored = convert("k", 4, Some(data), None, logs).unwrap();
        let record = Record {
            first_seen: Some(5),
            ..Record::default()
        };
        assert_eq!(
            stored,
            Stored {
                version: 4,
                body: Body::Data {
                    record,
                    log: vec![(3, "s:e3".to_owned()), (1, "s:e1".to_owned())],
                },
            }
        );
        let redirect = convert("k", 2, None, Some(a), Vec::new()).unwrap();
        assert_eq!(redirect.body, Body::Redirect(ContactId::parse(a).unwrap()));
        assert!(convert("k", 1, Some(b"{"), None, Vec::new()).is_err());
        assert!(convert("k", 1, None, Some("nobody"), Vec::new()).is_err());
    }
}
