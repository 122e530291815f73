//! Reads: a contact by id (following merges) or by identifier, and the listings of
//! contacts and of the webhook log, paged newest first over sorted sets.

use std::collections::BTreeMap;

use hookline_proto::prost::Message as _;
use hookline_proto::v1;
use redis::{AsyncCommands as _, Value};

use super::keys::{
    CONTACTS, ContactRow, EVENTS, contact_key, contact_log_key, contact_row, decode_contact,
    decode_record, event_key, index_read, pointer_ids,
};
use super::{Loaded, Store, millis_i64, now_millis};
use crate::contact::{ContactId, Identifier, Record};
use crate::error::Error;

/// Position in a listing, newest first: the score and member of the last item seen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor {
    pub score: i64,
    pub member: String,
}

impl Cursor {
    pub fn encode(&self) -> String {
        format!("{}:{}", self.score, self.member)
    }

    pub fn decode(s: &str) -> Result<Option<Self>, Error> {
        if s.is_empty() {
            return Ok(None);
        }
        let bad = || Error::invalid("page_token", "is not a token this service issued");
        let (score, member) = s.split_once(':').ok_or_else(bad)?;
        Ok(Some(Self {
            score: score.parse().map_err(|_| bad())?,
            member: member.to_owned(),
        }))
    }
}

/// One page of a listing.
#[derive(Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<Cursor>,
}

/// Filter for the webhook log.
#[derive(Clone, Debug, Default)]
pub struct EventFilter {
    pub contact: Option<ContactId>,
    pub source: Option<String>,
    pub outcome: Option<v1::EventOutcome>,
    pub event_type: Option<String>,
    /// Received at or after, Unix ms.
    pub received_from: Option<i64>,
    /// Received before, Unix ms.
    pub received_before: Option<i64>,
    /// Only these records, in this order, without paging.
    pub ids: Vec<String>,
}

impl EventFilter {
    /// Whether `r` passes every filter but `contact` and `ids`.
    pub fn keeps(&self, r: &v1::EventRecord) -> bool {
        let received = r
            .received_at
            .as_ref()
            .map_or(0, |t| t.seconds * 1000 + i64::from(t.nanos / 1_000_000));
        self.source.as_ref().is_none_or(|s| *s == r.source)
            && self.outcome.is_none_or(|o| r.outcome == i32::from(o))
            && self.event_type.as_ref().is_none_or(|t| *t == r.r#type)
            && self.received_from.is_none_or(|from| received >= from)
            && self.received_before.is_none_or(|before| received < before)
    }
}

/// Redirects followed from a merged contact to its survivor.
pub(super) const MAX_REDIRECTS: usize = 16;

/// Items examined per listing call, whatever the filter, to bound its cost.
pub(super) const SCAN_BUDGET: usize = 2000;
/// Most encoded bytes of event records in one page (an ignored event carries its raw
/// body): under the 4 MiB a gRPC client takes by default. A page holds at least one.
pub const PAGE_BYTES: usize = 3 * 1024 * 1024;
/// Records read from Redis at once while paging the webhook log.
const RECORD_CHUNK: usize = 16;

/// Gathers one page from a sorted set, newest first: up to `limit` items and
/// [`PAGE_BYTES`] of them by `weigh`, or fewer after examining [`SCAN_BUDGET`] members
/// (a rarely matching filter returns a short page with a token to go on).
pub(super) struct Pager<T> {
    scan: ZScan,
    limit: usize,
    /// Members read per round trip.
    chunk: usize,
    weigh: fn(&T) -> usize,
    bytes: usize,
    items: Vec<T>,
    done: bool,
}

impl<T> Pager<T> {
    /// A pager whose items are small: a page is read in one go.
    pub(super) fn new(key: &'static str, after: Option<Cursor>, limit: usize) -> Self {
        Self::weighed(key, after, limit, limit.max(16), |_| 0)
    }

    /// A pager whose items may be large: read a few at a time, and `weigh`ed.
    pub(super) fn weighed(
        key: &'static str,
        after: Option<Cursor>,
        limit: usize,
        chunk: usize,
        weigh: fn(&T) -> usize,
    ) -> Self {
        Self {
            scan: ZScan::new(key, after),
            limit,
            chunk,
            weigh,
            bytes: 0,
            items: Vec::new(),
            done: false,
        }
    }

    fn full(&self) -> bool {
        self.items.len() >= self.limit || self.bytes >= PAGE_BYTES
    }

    /// The next members to turn into items, or `None` when the page is complete.
    pub(super) async fn next_batch(
        &mut self,
        store: &Store,
    ) -> Result<Option<Vec<(String, i64)>>, Error> {
        if self.done || self.full() || self.scan.examined >= SCAN_BUDGET {
            return Ok(None);
        }
        let batch = self.scan.next_batch(store, self.chunk).await?;
        if batch.is_empty() {
            self.done = true;
            return Ok(None);
        }
        Ok(Some(batch))
    }

    /// Adds the items made of `batch` (`None`: not listed), up to the limit.
    pub(super) fn take(&mut self, batch: &[(String, i64)], items: Vec<Option<T>>) {
        for (i, item) in items.into_iter().enumerate() {
            if let Some(item) = item {
                // The first item always fits: a page is never empty for its size alone.
                let weight = (self.weigh)(&item);
                if !self.items.is_empty() && self.bytes.saturating_add(weight) > PAGE_BYTES {
                    self.bytes = PAGE_BYTES;
                    self.scan.rewind_to_before(batch, i);
                    return;
                }
                self.bytes = self.bytes.saturating_add(weight);
                self.items.push(item);
                if self.full() {
                    self.scan.rewind_to(batch, i);
                    return;
                }
            }
        }
    }

    pub(super) fn finish(self) -> Page<T> {
        Page {
            items: self.items,
            next: if self.done {
                None
            } else {
                self.scan.position()
            },
        }
    }
}

/// Walks a sorted set from the highest score down, resuming after a cursor.
pub(super) struct ZScan {
    key: &'static str,
    after: Option<Cursor>,
    /// Highest score of the first batch, so entries added while paging do not shift
    /// the offsets of a walk that started at the top.
    ceiling: Option<i64>,
    last: Option<Cursor>,
    /// `last` before the latest batch.
    before_batch: Option<Cursor>,
    offset: usize,
    examined: usize,
}

impl ZScan {
    pub(super) fn new(key: &'static str, after: Option<Cursor>) -> Self {
        Self {
            key,
            last: after.clone(),
            before_batch: after.clone(),
            after,
            ceiling: None,
            offset: 0,
            examined: 0,
        }
    }

    /// The next members after the cursor, newest first; empty at the end.
    pub(super) async fn next_batch(
        &mut self,
        store: &Store,
        n: usize,
    ) -> Result<Vec<(String, i64)>, Error> {
        self.before_batch = self.last.clone();
        let mut c = store.conn.clone();
        let max = match (&self.after, self.ceiling) {
            (Some(a), _) => a.score.to_string(),
            (None, Some(c)) => c.to_string(),
            (None, None) => "+inf".to_owned(),
        };
        let batch: Vec<(String, i64)> = redis::cmd("ZREVRANGEBYSCORE")
            .arg(self.key)
            .arg(max)
            .arg("-inf")
            .arg("WITHSCORES")
            .arg("LIMIT")
            .arg(self.offset)
            .arg(n)
            .query_async(&mut c)
            .await?;
        self.offset += batch.len();
        if self.ceiling.is_none() {
            self.ceiling = batch.first().map(|(_, s)| *s);
        }
        // Members tied with the cursor's score come in descending order; skip those at
        // or above the cursor, which earlier pages returned.
        let batch: Vec<(String, i64)> = batch
            .into_iter()
            .filter(|(m, s)| {
                self.after
                    .as_ref()
                    .is_none_or(|a| *s < a.score || (*s == a.score && *m < a.member))
            })
            .collect();
        self.examined += batch.len();
        if let Some((m, s)) = batch.last() {
            self.last = Some(Cursor {
                score: *s,
                member: m.clone(),
            });
        }
        Ok(batch)
    }

    /// Resume after item `i` of `batch` rather than after the whole batch.
    /// Resume at item `i` of `batch`: after the one before it, or where the batch began.
    pub(super) fn rewind_to_before(&mut self, batch: &[(String, i64)], i: usize) {
        match i.checked_sub(1) {
            Some(before) => self.rewind_to(batch, before),
            None => self.last = self.before_batch.clone(),
        }
    }

    pub(super) fn rewind_to(&mut self, batch: &[(String, i64)], i: usize) {
        if let Some((m, s)) = batch.get(i) {
            self.last = Some(Cursor {
                score: *s,
                member: m.clone(),
            });
        }
    }

    pub(super) fn position(&self) -> Option<Cursor> {
        self.last.clone()
    }
}

impl Store {
    /// The contact holding `ident`, if any.
    pub async fn lookup(&self, ident: &Identifier) -> Result<Option<Loaded>, Error> {
        let ids = self.index_lookup(std::slice::from_ref(ident)).await?;
        match ids.into_iter().next().flatten() {
            Some(id) => Ok(Some(self.load(&id).await?).filter(|l| l.version > 0)),
            None => Ok(None),
        }
    }

    /// The contact with `id` (or the survivor it was merged into), if it exists.
    pub async fn get(&self, id: &ContactId) -> Result<Option<Loaded>, Error> {
        Ok(Some(self.load(id).await?).filter(|l| l.version > 0))
    }

    /// Reads a contact, following redirects to the survivor of merges.
    pub async fn load(&self, id: &ContactId) -> Result<Loaded, Error> {
        let mut c = self.conn.clone();
        let mut id = id.clone();
        for _ in 0..MAX_REDIRECTS {
            let key = contact_key(&id);
            let (v, d, r): ContactRow = contact_row(&key).query_async(&mut c).await?;
            if let Some(r) = r {
                id = ContactId::parse(&r).map_err(|_| Error::Corrupt {
                    key,
                    reason: "redirect is not a contact id".to_owned(),
                })?;
                continue;
            }
            let record = match d {
                Some(d) => decode_contact(&key, &d)?,
                None => Record::default(),
            };
            return Ok(Loaded {
                id,
                version: v.unwrap_or(0),
                record,
            });
        }
        Err(Error::Corrupt {
            key: contact_key(&id),
            reason: "redirect chain too long".to_owned(),
        })
    }

    /// One page of contacts, newest first, keeping those `keep` accepts.
    pub async fn list_contacts(
        &self,
        after: Option<Cursor>,
        limit: usize,
        keep: impl Fn(&Record) -> bool,
    ) -> Result<Page<Loaded>, Error> {
        let mut pager = Pager::new(CONTACTS, after, limit);
        while let Some(batch) = pager.next_batch(self).await? {
            let mut pipe = redis::pipe();
            for (member, _) in &batch {
                pipe.add_command(contact_row(&contact_key(member)));
            }
            let rows: Vec<ContactRow> = self.query(&pipe).await?;
            let mut items = Vec::with_capacity(rows.len());
            for ((member, _), (v, d, r)) in batch.iter().zip(rows) {
                // Merged contacts are listed through their survivor; unwritten ones not
                // at all (see `claim`).
                let (Ok(id), Some(version), Some(d), None) = (ContactId::parse(member), v, d, r)
                else {
                    items.push(None);
                    continue;
                };
                let record = decode_contact(&contact_key(&id), &d)?;
                items.push(keep(&record).then_some(Loaded {
                    id,
                    version,
                    record,
                }));
            }
            pager.take(&batch, items);
        }
        Ok(pager.finish())
    }

    /// One page of the webhook log, newest first.
    pub async fn list_events(
        &self,
        after: Option<Cursor>,
        limit: usize,
        filter: &EventFilter,
    ) -> Result<Page<v1::EventRecord>, Error> {
        let keep = |r: &v1::EventRecord| filter.keeps(r);
        if !filter.ids.is_empty() {
            let records = self
                .load_records(filter.ids.iter().map(String::as_str))
                .await?;
            let items = records
                .into_iter()
                .flatten()
                .filter(|r| keep(r))
                .filter(|r| {
                    filter
                        .contact
                        .as_ref()
                        .is_none_or(|c| r.contact_id == c.as_str())
                })
                .collect();
            return Ok(Page { items, next: None });
        }
        if let Some(contact) = &filter.contact {
            return self.list_contact_events(contact, after, limit, keep).await;
        }
        let weigh = |r: &v1::EventRecord| r.encoded_len();
        let mut pager = Pager::weighed(EVENTS, after, limit, RECORD_CHUNK, weigh);
        while let Some(batch) = pager.next_batch(self).await? {
            let records = self
                .load_records(batch.iter().map(|(m, _)| m.as_str()))
                .await?;
            let items = records.into_iter().map(|r| r.filter(|r| keep(r))).collect();
            pager.take(&batch, items);
        }
        Ok(pager.finish())
    }

    /// Drops webhook log entries older than the dedup TTL (their records are gone).
    pub async fn trim_log(&self) -> Result<u64, Error> {
        let floor = now_millis() - millis_i64(self.opts.dedup_ttl);
        let mut c = self.conn.clone();
        let removed: u64 = c.zrembyscore(EVENTS, "-inf", format!("({floor}")).await?;
        Ok(removed)
    }

    pub(super) async fn index_lookup(
        &self,
        idents: &[Identifier],
    ) -> Result<Vec<Option<ContactId>>, Error> {
        if idents.is_empty() {
            return Ok(Vec::new());
        }
        let mut c = self.conn.clone();
        let raw: Value = index_read(idents).query_async(&mut c).await?;
        pointer_ids(idents, raw)
    }

    /// Loads `id`, following merges, into `into`; returns the live id. A contact that
    /// does not exist yet loads as empty with version 0.
    pub(super) async fn load_into(
        &self,
        id: &ContactId,
        into: &mut BTreeMap<ContactId, Loaded>,
    ) -> Result<ContactId, Error> {
        if into.contains_key(id) {
            return Ok(id.clone());
        }
        let loaded = self.load(id).await?;
        let live = loaded.id.clone();
        into.entry(live.clone()).or_insert(loaded);
        Ok(live)
    }

    pub(super) async fn list_contact_events(
        &self,
        contact: &ContactId,
        after: Option<Cursor>,
        limit: usize,
        keep: impl Fn(&v1::EventRecord) -> bool,
    ) -> Result<Page<v1::EventRecord>, Error> {
        let live = self.load(contact).await?;
        if live.version == 0 {
            return Err(Error::NotFound(format!("no contact {contact}")));
        }
        let mut c = self.conn.clone();
        let mut entries: Vec<(String, i64)> = Vec::new();
        let ids = std::iter::once(&live.id).chain(live.record.merged.iter());
        for id in ids {
            let part: Vec<(String, i64)> = c.zrange_withscores(contact_log_key(id), 0, -1).await?;
            entries.extend(part);
        }
        entries.sort_by(|a, b| (b.1, &b.0).cmp(&(a.1, &a.0)));
        entries.dedup_by(|a, b| a.0 == b.0);
        let start = match &after {
            Some(cur) => entries
                .iter()
                .position(|(m, s)| (*s, m.as_str()) < (cur.score, cur.member.as_str()))
                .unwrap_or(entries.len()),
            None => 0,
        };
        // A contact's events were applied: their records carry no raw body.
        let mut out = Vec::new();
        for chunk in entries[start..].chunks(limit.max(16)) {
            let records = self
                .load_records(chunk.iter().map(|(m, _)| m.as_str()))
                .await?;
            for ((member, score), rec) in chunk.iter().zip(records) {
                if let Some(rec) = rec.filter(|r| keep(r)) {
                    out.push(rec);
                    if out.len() == limit {
                        let next = Cursor {
                            score: *score,
                            member: member.clone(),
                        };
                        return Ok(Page {
                            items: out,
                            next: Some(next),
                        });
                    }
                }
            }
        }
        Ok(Page {
            items: out,
            next: None,
        })
    }

    /// Event records by id, `None` where the event is unknown, expired or in progress.
    pub(super) async fn load_records<'a>(
        &self,
        ids: impl Iterator<Item = &'a str>,
    ) -> Result<Vec<Option<v1::EventRecord>>, Error> {
        let keys: Vec<String> = ids.map(event_key).collect();
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut c = self.conn.clone();
        let mut pipe = redis::pipe();
        for k in &keys {
            pipe.get(k);
        }
        let values: Vec<Option<Vec<u8>>> = pipe.query_async(&mut c).await?;
        values
            .into_iter()
            .zip(&keys)
            .map(|(v, key)| match v.as_deref() {
                Some([b'D', rest @ ..]) => decode_record(key, rest).map(Some),
                _ => Ok(None),
            })
            .collect()
    }
}
