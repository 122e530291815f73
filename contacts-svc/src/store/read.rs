//! Reads: a contact by id (following merges) or by identifier, and the listings of
//! contacts and of the webhook log, paged newest first (`page.rs`).

use std::collections::BTreeMap;

use hookline_proto::prost::Message as _;
use hookline_proto::v1;
use redis::Value;

use super::keys::{
    CONTACTS, Done, EVENTS, contact_key, decode_contact, decode_done, event_key, index_read,
    pointer_ids,
};
use super::page::{Cursor, Page, Pager};
use super::stored::{Body, Stored};
use super::{Loaded, Store, millis_i64, now_millis};
use crate::contact::{ContactId, Identifier};
use crate::error::Error;

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

fn redirect_chain_too_long(id: &ContactId) -> Error {
    Error::Corrupt {
        key: contact_key(id),
        reason: "redirect chain too long".to_owned(),
    }
}

/// Entries of the webhook log read at once while paging it (each names the events of
/// one batch, up to a few dozen).
const LOG_CHUNK: usize = 2;

impl Store {
    /// The contact holding `ident`, if any. An erased contact holds no identifier: an
    /// index entry still naming one (its erasure not complete yet) finds nothing.
    pub async fn lookup(&self, ident: &Identifier) -> Result<Option<Loaded>, Error> {
        let ids = self.index_lookup(std::slice::from_ref(ident)).await?;
        match ids.into_iter().next().flatten() {
            Some(id) => {
                Ok(Some(self.load(&id).await?).filter(|l| l.version > 0 && l.erased.is_none()))
            }
            None => Ok(None),
        }
    }

    /// The contact with `id` (or the survivor it was merged into), if it exists; an
    /// erased one as its tombstone.
    pub async fn get(&self, id: &ContactId) -> Result<Option<Loaded>, Error> {
        Ok(Some(self.load(id).await?).filter(|l| l.version > 0))
    }

    /// Reads a contact, following redirects to the survivor of merges. An erased contact
    /// loads as its tombstone, empty but for [`Loaded::erased`].
    pub async fn load(&self, id: &ContactId) -> Result<Loaded, Error> {
        let (id, stored) = self.resolve(id).await?;
        Ok(match stored {
            None => Loaded::unwritten(id),
            Some(Stored {
                version,
                body: Body::Data { record, log },
            }) => Loaded {
                id,
                version,
                record,
                log,
                erased: None,
            },
            Some(Stored {
                version,
                body: Body::Erased(tombstone),
            }) => Loaded::tombstone(id, version, tombstone.erasure),
            // `resolve` follows every redirect.
            Some(Stored {
                body: Body::Redirect(_),
                ..
            }) => return Err(redirect_chain_too_long(&id)),
        })
    }

    /// The live id `id` leads to, following redirects, and what its key holds (`None`
    /// when nothing was written there yet): never a redirect.
    pub(super) async fn resolve(
        &self,
        id: &ContactId,
    ) -> Result<(ContactId, Option<Stored>), Error> {
        let mut c = self.conn.clone();
        let mut id = id.clone();
        for _ in 0..MAX_REDIRECTS {
            let key = contact_key(&id);
            let value: Option<Vec<u8>> = redis::cmd("GET").arg(&key).query_async(&mut c).await?;
            let Some(value) = value else {
                return Ok((id, None));
            };
            match decode_contact(&key, &value)? {
                Stored {
                    body: Body::Redirect(to),
                    ..
                } => id = to,
                stored => return Ok((id, Some(stored))),
            }
        }
        Err(redirect_chain_too_long(&id))
    }

    /// One page of contacts, newest first by creation, keeping those `keep` accepts
    /// (erased ones as their tombstones).
    pub async fn list_contacts(
        &self,
        after: Option<Cursor>,
        limit: usize,
        keep: impl Fn(&Loaded) -> bool,
    ) -> Result<Page<Loaded>, Error> {
        let mut pager = Pager::new(CONTACTS, Cursor::stream(after)?, limit);
        while let Some(batch) = pager.next_batch(self).await? {
            let mut pipe = redis::pipe();
            for item in &batch {
                pipe.get(contact_key(&item.member));
            }
            let values: Vec<Option<Vec<u8>>> = self.query(&pipe).await?;
            let mut items = Vec::with_capacity(values.len());
            for (item, value) in batch.iter().zip(values) {
                // Merged contacts are listed through their survivor; unwritten ones not
                // at all (see `claim`).
                let (Ok(id), Some(value)) = (ContactId::parse(&item.member), value) else {
                    items.push(None);
                    continue;
                };
                let loaded = match decode_contact(&contact_key(&id), &value)? {
                    Stored {
                        version,
                        body: Body::Data { record, log },
                    } => Loaded {
                        id,
                        version,
                        record,
                        log,
                        erased: None,
                    },
                    Stored {
                        version,
                        body: Body::Erased(tombstone),
                    } => Loaded::tombstone(id, version, tombstone.erasure),
                    Stored {
                        body: Body::Redirect(_),
                        ..
                    } => {
                        items.push(None);
                        continue;
                    }
                };
                items.push(Some(loaded).filter(|l| keep(l)));
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
            return self
                .list_contact_events(contact, Cursor::log(after)?, limit, keep)
                .await;
        }
        let weigh = |r: &v1::EventRecord| r.encoded_len();
        let mut pager = Pager::weighed(EVENTS, Cursor::stream(after)?, limit, LOG_CHUNK, weigh);
        while let Some(batch) = pager.next_batch(self).await? {
            let done = self
                .load_done(batch.iter().map(|i| i.member.as_str()))
                .await?;
            // A record that names its log entry is listed there only.
            let items = done
                .into_iter()
                .zip(&batch)
                .map(|(d, item)| {
                    d.filter(|d| d.log_entry.as_ref().is_none_or(|e| *e == item.at.entry))
                        .map(|d| d.record)
                        .filter(|r| keep(r))
                })
                .collect();
            pager.take(&batch, items);
        }
        Ok(pager.finish())
    }

    /// Drops webhook log entries older than its retention. Each batch trims it as it
    /// logs its events; this trims it while no events come.
    pub async fn trim_log(&self) -> Result<u64, Error> {
        let floor = now_millis() - millis_i64(self.opts.log_retention);
        let mut c = self.conn.clone();
        let removed: u64 = redis::cmd("XTRIM")
            .arg(EVENTS)
            .arg("MINID")
            .arg("~")
            .arg(floor)
            .query_async(&mut c)
            .await?;
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

    /// One page of a contact's events, newest first by receipt, from its log (which
    /// holds those of the contacts it absorbed). An erased contact has no log: it lists
    /// nothing, and its stripped records stay in the whole webhook log until they expire.
    pub(super) async fn list_contact_events(
        &self,
        contact: &ContactId,
        after: Option<(i64, String)>,
        limit: usize,
        keep: impl Fn(&v1::EventRecord) -> bool,
    ) -> Result<Page<v1::EventRecord>, Error> {
        let live = self.load(contact).await?;
        if live.version == 0 {
            return Err(Error::NotFound(format!("no contact {contact}")));
        }
        let entries = &live.log;
        let start = match &after {
            Some((at, member)) => entries
                .iter()
                .position(|(a, m)| (*a, m.as_str()) < (*at, member.as_str()))
                .unwrap_or(entries.len()),
            None => 0,
        };
        // A contact's events were applied: their records carry no raw body.
        let mut out = Vec::new();
        for chunk in entries[start..].chunks(limit.max(16)) {
            let records = self
                .load_records(chunk.iter().map(|(_, m)| m.as_str()))
                .await?;
            for ((at, member), rec) in chunk.iter().zip(records) {
                if let Some(rec) = rec.filter(|r| keep(r)) {
                    out.push(rec);
                    if out.len() == limit {
                        let next = Cursor::Log {
                            at: *at,
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
        Ok(self
            .load_done(ids)
            .await?
            .into_iter()
            .map(|d| d.map(|d| d.record))
            .collect())
    }

    /// The done markers of events by id, `None` where the event is unknown, expired or
    /// in progress.
    async fn load_done<'a>(
        &self,
        ids: impl Iterator<Item = &'a str>,
    ) -> Result<Vec<Option<Done>>, Error> {
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
            .map(|(v, key)| v.and_then(|v| decode_done(key, &v)).transpose())
            .collect()
    }
}
