//! Applying events: a batch shares its first round trip (leases and index reads) and
//! its last (log entries and done markers); in between each event resolves its contact,
//! claims new identifiers, merges and writes, guarded by versions.

use std::collections::BTreeMap;
use std::time::Instant;

use hookline_proto::v1;
use redis::Value;

use super::keys::{
    CAS_CONTACT, CONTACTS, DELETE_IF, EVENTS, LuaCall, REPOINT, claims, contact_key,
    contact_log_key, created_millis, index_key, is_noscript,
};
use super::lease::{Acquired, Lease};
use super::{Applied, Loaded, Patience, Store, millis_i64, now_millis};
use crate::contact::{self, ContactId, EventEffect, Identifier, Ignored, ParsedEvent, Record};
use crate::error::Error;

/// Attempts at resolving and writing before giving up against concurrent writers.
pub(super) const MAX_ATTEMPTS: u32 = 32;

/// The identifiers whose index entries name a contact that is not written yet (and is
/// not `mine`), with that contact.
fn unwritten_claims<'a>(
    idents: &'a [Identifier],
    pointers: &'a [Option<ContactId>],
    loaded: &BTreeMap<ContactId, Loaded>,
    mine: &ContactId,
) -> Vec<(&'a Identifier, &'a ContactId)> {
    idents
        .iter()
        .zip(pointers)
        .filter_map(|(ident, pointer)| {
            let id = pointer.as_ref()?;
            let unwritten = id != mine && loaded.get(id).is_some_and(|l| l.version == 0);
            unwritten.then_some((ident, id))
        })
        .collect()
}

/// What became of one event of a batch before the last round trip.
pub(super) enum Step {
    /// Applied or ignored now: its log entry and done marker are still to be written.
    Finish(Applied),
    /// Nothing to write: a duplicate, or an ignored event that must come with its body.
    Answer(Applied),
}

/// An applied event's outcome on `contact`, noting the identifiers left elsewhere.
pub(super) fn applied(
    contact: ContactId,
    merges: usize,
    conflicts: Vec<(Identifier, ContactId)>,
) -> Applied {
    let notes = conflicts
        .iter()
        .map(|(ident, other)| {
            format!(
                "conflict: this {} belongs to {other}, a different person by email or provider id; left there",
                ident.kind()
            )
        })
        .collect();
    Applied {
        outcome: v1::EventOutcome::Applied,
        contact_id: Some(contact),
        reason: String::new(),
        notes,
        merges,
        conflicts,
    }
}

/// The answer for an event that changed no contact now.
pub(super) fn unchanged(
    outcome: v1::EventOutcome,
    contact_id: Option<ContactId>,
    reason: String,
) -> Applied {
    Applied {
        outcome,
        contact_id,
        reason,
        notes: Vec::new(),
        merges: 0,
        conflicts: Vec::new(),
    }
}

/// What two events of a batch must share to be copies of one: the key their lease is
/// taken on (a replay's is its record, one occurrence of an id with a window), and
/// whether they are replays.
fn gate(ev: &ParsedEvent) -> (&str, bool) {
    if ev.replay {
        (ev.record_id.as_str(), true)
    } else {
        (ev.id.as_str(), false)
    }
}

/// The answer for an event whose record says it was taken care of before.
fn duplicate(done: &v1::EventRecord) -> Applied {
    unchanged(
        v1::EventOutcome::Duplicate,
        ContactId::parse(&done.contact_id).ok(),
        done.reason.clone(),
    )
}

impl Store {
    /// Applies `ev` exactly once, by `deadline`. `explicit` is a contact the caller named.
    pub async fn apply(
        &self,
        ev: &ParsedEvent,
        explicit: Option<&ContactId>,
        deadline: Instant,
    ) -> Result<Applied, Error> {
        // `apply_batch` answers every event of the batch: this one.
        self.apply_batch(&[(ev, explicit)], deadline)
            .await
            .swap_remove(0)
    }

    /// Applies each event exactly once; one result per event, in order. Events are
    /// independent: one failing leaves the others applied, and one still unfinished at
    /// `deadline` gives its lease back and answers [`Error::Deadline`] while the others
    /// are recorded.
    ///
    /// The first and the last round trip are shared by the whole batch: one pipeline
    /// takes every lease and reads every index entry, and one writes every webhook log
    /// entry and done marker. In between, each event resolves and writes its contact on
    /// its own, concurrently (the Redis client sends their commands together).
    pub async fn apply_batch(
        &self,
        batch: &[(&ParsedEvent, Option<&ContactId>)],
        deadline: Instant,
    ) -> Vec<Result<Applied, Error>> {
        // A second copy of an event in the same batch waits for the first, as a second
        // delivery would: it is a duplicate if the first took effect, and fails with it.
        let mut seen: BTreeMap<(&str, bool), usize> = BTreeMap::new();
        let mut unique = Vec::with_capacity(batch.len());
        // For each event: its index in `unique`, and whether it is a copy.
        let places: Vec<(usize, bool)> = batch
            .iter()
            .map(|(ev, explicit)| match seen.get(&gate(ev)) {
                Some(&first) => (first, true),
                None => {
                    seen.insert(gate(ev), unique.len());
                    unique.push((*ev, *explicit));
                    (unique.len() - 1, false)
                }
            })
            .collect();
        let results = self.apply_unique(&unique, deadline).await;
        // `results[i]` answers `unique[i]`. A copy of a replay that left the event
        // ignored is answered the same: it was looked at with the same configuration.
        places
            .into_iter()
            .map(|(first, copy)| match &results[first] {
                Ok(a)
                    if copy
                        && a.outcome != v1::EventOutcome::BodyRequired
                        && !(unique[first].0.replay && a.outcome == v1::EventOutcome::Ignored) =>
                {
                    Ok(unchanged(
                        v1::EventOutcome::Duplicate,
                        a.contact_id.clone(),
                        a.reason.clone(),
                    ))
                }
                result => result.clone(),
            })
            .collect()
    }

    /// [`Store::apply_batch`] for events with distinct ids.
    pub(super) async fn apply_unique(
        &self,
        batch: &[(&ParsedEvent, Option<&ContactId>)],
        deadline: Instant,
    ) -> Vec<Result<Applied, Error>> {
        let leases: Vec<Lease> = batch.iter().map(|(ev, _)| Lease::new(ev)).collect();
        let first = match self.try_acquire(&leases).await {
            Ok(first) => first,
            Err(e) => return batch.iter().map(|_| Err(e.clone())).collect(),
        };
        let steps = futures::future::join_all(batch.iter().zip(&leases).zip(first).map(
            |(((ev, explicit), lease), first)| async move {
                let step = self.apply_leased(ev, *explicit, lease, first);
                match tokio::time::timeout_at(deadline.into(), step).await {
                    Ok(step) => step,
                    // Whatever it wrote so far is completed by the retry (applying is
                    // idempotent), which must not wait for this lease to expire.
                    Err(_) => {
                        self.release(lease).await;
                        Err(Error::Deadline)
                    }
                }
            },
        ))
        .await;

        // The log entries before the markers: if we crash in between, the retry re-adds
        // them. A marker is written whoever holds the lease now: a caller that took over
        // an expired lease applies the same event to the same effect, so either record
        // is right, and a failing caller only ever deletes its own lease.
        let mut log = redis::cmd("ZADD");
        log.arg(EVENTS);
        let mut markers = Vec::new();
        for ((ev, _), step) in batch.iter().zip(&steps) {
            if let Ok(Step::Finish(applied)) = step {
                log.arg(ev.received_at).arg(ev.record_id.as_str());
                markers.extend(self.done_markers(ev, applied));
            }
        }
        let finished = if markers.is_empty() {
            Ok(())
        } else {
            let mut pipe = redis::pipe();
            pipe.add_command(log).ignore();
            for marker in markers {
                pipe.add_command(marker).ignore();
            }
            self.query::<()>(&pipe).await
        };
        // A replay's lock goes once its record says what became of the event (when it
        // failed before, it was released then): either way the record is as it should be.
        for (lease, step) in leases.iter().zip(&steps) {
            if lease.record.is_some() && matches!(step, Ok(Step::Finish(_))) {
                self.release(lease).await;
            }
        }
        steps
            .into_iter()
            .map(|step| match step? {
                Step::Answer(applied) => Ok(applied),
                Step::Finish(applied) => finished.clone().map(|()| applied),
            })
            .collect()
    }

    /// Resolves and applies one event of a batch, given what its first round trip found
    /// (`None`: another caller holds its lease; an error: a stored value it cannot read).
    pub(super) async fn apply_leased(
        &self,
        ev: &ParsedEvent,
        explicit: Option<&ContactId>,
        lease: &Lease,
        first: Result<Option<Acquired>, Error>,
    ) -> Result<Step, Error> {
        let acquired = match first {
            Ok(Some(acquired)) => acquired,
            Ok(None) => self.acquire(lease).await?,
            Err(e) => {
                self.release(lease).await;
                return Err(e);
            }
        };
        let pointers = match acquired {
            Acquired::Lease(pointers) => pointers,
            Acquired::Done(done) => {
                // A replay's lock is released at once; any other lease is the record
                // itself, which this leaves alone (it holds no token of ours).
                if lease.record.is_some() {
                    self.release(lease).await;
                }
                return Ok(Step::Answer(duplicate(&done)));
            }
        };
        let result = match &ev.action {
            Ok(effect) => {
                self.apply_effect(ev, effect, &lease.idents, pointers, explicit)
                    .await
            }
            // An event that is not applied is recorded with its raw body or not at all.
            Err(Ignored {
                reason, body: None, ..
            }) => {
                self.release(lease).await;
                return Ok(Step::Answer(unchanged(
                    v1::EventOutcome::BodyRequired,
                    None,
                    reason.clone(),
                )));
            }
            Err(Ignored { reason, .. }) => {
                Ok(unchanged(v1::EventOutcome::Ignored, None, reason.clone()))
            }
        };
        match result {
            Ok(mut applied) => {
                // What reading the event changed comes before what applying it found.
                applied.notes.splice(0..0, ev.notes.iter().cloned());
                Ok(Step::Finish(applied))
            }
            Err(e) => {
                self.release(lease).await;
                Err(e)
            }
        }
    }

    /// Resolves the event's contact (creating or merging as needed) and applies it.
    pub(super) async fn apply_effect(
        &self,
        ev: &ParsedEvent,
        effect: &EventEffect,
        idents: &[Identifier],
        pointers: Vec<Option<ContactId>>,
        explicit: Option<&ContactId>,
    ) -> Result<Applied, Error> {
        let delta = Record::from_event(effect);
        let log_floor = ev.received_at - millis_i64(self.opts.dedup_ttl);
        // Where each identifier pointed when the lease was taken; read again on retries.
        let mut first = Some(pointers);
        // A contact this call created whose identifiers another caller claimed first: it
        // holds this event alone, and is merged into wherever the event goes.
        let mut orphan: Option<ContactId> = None;
        // The contact this call creates if the event names nobody yet: one id for every
        // attempt, so that index entries claimed by an earlier attempt are known as ours.
        let fresh = ContactId::generate();
        let mut patience = Patience::new(self.opts.lease_wait);
        for attempt in 1..=MAX_ATTEMPTS {
            let raw = match first.take() {
                Some(p) => p,
                None => self.index_lookup(idents).await?,
            };
            let mut contacts: BTreeMap<ContactId, Loaded> = BTreeMap::new();
            let mut hits = Vec::with_capacity(idents.len());
            for (ident, pointer) in idents.iter().zip(&raw) {
                let live = match pointer {
                    Some(id) => Some(self.load_into(id, &mut contacts).await?),
                    None => None,
                };
                hits.push((ident.clone(), live));
            }
            // Index entries naming a contact nobody has written yet say nothing about whose
            // identifiers they are: the event must not join such a contact, or another
            // person's event that claimed them would then find this person's data there.
            let pending = unwritten_claims(idents, &raw, &contacts, &fresh);
            if !pending.is_empty() {
                // A claim's contact is written in the claim's own round trip, so a claim
                // older than a lease belongs to a call that failed in between: clear it.
                let floor = now_millis() - millis_i64(self.opts.lease);
                let gone: Vec<_> = pending
                    .into_iter()
                    .filter(|(_, id)| created_millis(id) < floor)
                    .collect();
                if !gone.is_empty() {
                    self.clear_claims(&gone).await?;
                } else if !patience.wait().await {
                    // Its writer is slow, not gone: let the sender retry later.
                    return Err(Error::Contention(attempt));
                }
                continue;
            }
            let explicit_live = match explicit {
                Some(id) => {
                    let live = self.load_into(id, &mut contacts).await?;
                    if contacts.get(&live).is_some_and(|l| l.version == 0) {
                        return Err(Error::NotFound(format!("no contact {id}")));
                    }
                    Some(live)
                }
                None => None,
            };
            let records: BTreeMap<ContactId, &Record> = contacts
                .iter()
                .map(|(k, v)| (k.clone(), &v.record))
                .collect();
            let mut plan = contact::plan(&effect.data, explicit_live.as_ref(), &hits, &records);
            if let Some(o) = &orphan {
                let live = self.load_into(o, &mut contacts).await?;
                if !plan.targets.contains(&live) {
                    plan.targets.push(live);
                    plan.targets.sort(); // the oldest survives, as in `contact::plan`
                }
            }

            let survivor = match plan.targets.first() {
                Some(id) => id.clone(),
                None => fresh.clone(),
            };
            let mut base = contacts.remove(&survivor).unwrap_or(Loaded {
                id: survivor.clone(),
                version: 0,
                record: Record::default(),
            });
            // Identifiers that name another contact than the survivor (one it absorbs, or
            // a merged id), except those left with their owner in a conflict.
            let mut repoints: Vec<(Identifier, ContactId)> = idents
                .iter()
                .zip(&raw)
                .filter_map(|(ident, pointer)| match pointer {
                    Some(p)
                        if *p != survivor && !plan.conflicts.iter().any(|(i, _)| i == ident) =>
                    {
                        Some((ident.clone(), p.clone()))
                    }
                    _ => None,
                })
                .collect();
            if plan.targets.len() <= 1 && repoints.is_empty() {
                // Nothing to merge or repoint: claim, list and write in one round trip.
                base.record.join(delta.clone());
                let new = base.version == 0;
                let (claimed, written) = self
                    .claim_and_write(&plan.claims, &base, ev, log_floor)
                    .await?;
                if !claimed {
                    // Another caller claimed an identifier first: resolve again, and
                    // merge what was written here into the contact holding it.
                    if written && new {
                        orphan = Some(survivor);
                    }
                    continue;
                }
                if !written {
                    continue; // the contact changed since it was read
                }
                return Ok(applied(survivor, 0, plan.conflicts));
            }
            // A contact not written yet is listed before it is written (listings skip
            // it until it is), so a crash cannot leave it unlisted.
            if !self
                .claim(&plan.claims, &survivor, base.version == 0)
                .await?
            {
                continue; // another caller claimed one first: resolve again
            }
            let absorbed: Vec<Loaded> = plan
                .targets
                .iter()
                .skip(1)
                .filter_map(|id| contacts.remove(id))
                .collect();
            for other in &absorbed {
                base.record.join(other.record.clone());
                base.record.merged.insert(other.id.clone());
            }
            base.record.join(delta.clone());
            if !self.write(&base, ev, log_floor).await? {
                continue;
            }
            if !self.absorb(&survivor, &absorbed).await? {
                continue; // an absorbed contact changed meanwhile: merge it again
            }
            for other in &absorbed {
                for ident in other.record.identifiers() {
                    repoints.push((ident, other.id.clone()));
                }
            }
            self.repoint(&repoints, &survivor).await?;
            if !absorbed.is_empty() {
                let mut pipe = redis::pipe();
                for other in &absorbed {
                    pipe.zrem(CONTACTS, other.id.as_str()).ignore();
                }
                let () = self.query(&pipe).await?;
            }

            return Ok(applied(survivor, absorbed.len(), plan.conflicts));
        }
        Err(Error::Contention(MAX_ATTEMPTS))
    }

    /// Claims identifiers for `owner` with SET NX, and lists `owner` when `new`. False
    /// if another contact got one of the identifiers first.
    pub(super) async fn claim(
        &self,
        idents: &[Identifier],
        owner: &ContactId,
        new: bool,
    ) -> Result<bool, Error> {
        if idents.is_empty() && !new {
            return Ok(true);
        }
        let results: Vec<Value> = self.query(&claims(idents, owner, new)).await?;
        Ok(results.iter().all(|v| !matches!(v, Value::Nil)))
    }

    /// [`Store::claim`] and [`Store::write`] in one round trip: whether every claim
    /// held, and whether the contact was written. The contact is listed and its
    /// identifiers claimed before it is written (listings skip it until it is), so a
    /// crash cannot leave it unlisted; if a claim is lost, the caller resolves again.
    pub(super) async fn claim_and_write(
        &self,
        idents: &[Identifier],
        l: &Loaded,
        ev: &ParsedEvent,
        log_floor: i64,
    ) -> Result<(bool, bool), Error> {
        let write = self.cas_write(l, ev, log_floor)?;
        let mut pipe = claims(idents, &l.id, l.version == 0);
        pipe.add_command(write.cmd(false));
        let mut c = self.conn.clone();
        match pipe.query_async::<Vec<Value>>(&mut c).await {
            Ok(mut replies) => {
                let written = matches!(replies.pop(), Some(Value::Int(1)));
                Ok((replies.iter().all(|v| !matches!(v, Value::Nil)), written))
            }
            // Redis lost its scripts (a restart): the claims ran, the write did not. Write
            // now, by the script's source, so no claim is left naming an unwritten contact
            // while this call goes on; which claims held is unknown, so the caller
            // resolves again.
            Err(e) if is_noscript(&e) => {
                let ok: i64 = write.cmd(true).query_async(&mut c).await?;
                Ok((false, ok == 1))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The compare-and-set write of a contact with the event's log entry.
    pub(super) fn cas_write(
        &self,
        l: &Loaded,
        ev: &ParsedEvent,
        log_floor: i64,
    ) -> Result<LuaCall, Error> {
        let data = serde_json::to_vec(&l.record).map_err(|e| Error::Corrupt {
            key: contact_key(&l.id),
            reason: e.to_string(),
        })?;
        Ok(CAS_CONTACT
            .call()
            .key(contact_key(&l.id))
            .key(contact_log_key(&l.id))
            .arg(l.version)
            .arg(data)
            .arg("")
            .arg(ev.record_id.as_str())
            .arg(ev.received_at)
            .arg(log_floor))
    }

    /// Writes a contact if unchanged since read, with the event's log entry.
    pub(super) async fn write(
        &self,
        l: &Loaded,
        ev: &ParsedEvent,
        log_floor: i64,
    ) -> Result<bool, Error> {
        let mut c = self.conn.clone();
        let ok: i64 = self.cas_write(l, ev, log_floor)?.run(&mut c).await?;
        Ok(ok == 1)
    }

    /// Removes index entries that still name a contact whose writer is gone.
    pub(super) async fn clear_claims(
        &self,
        claims: &[(&Identifier, &ContactId)],
    ) -> Result<(), Error> {
        let mut c = self.conn.clone();
        for (ident, id) in claims {
            let _: i64 = DELETE_IF
                .call()
                .key(index_key(ident))
                .arg(id.as_str())
                .run(&mut c)
                .await?;
            tracing::warn!(identifier = %ident.masked(), contact_id = %id, "claim of an unwritten contact cleared");
        }
        Ok(())
    }

    /// Turns absorbed contacts into redirects to the survivor.
    pub(super) async fn absorb(
        &self,
        survivor: &ContactId,
        absorbed: &[Loaded],
    ) -> Result<bool, Error> {
        let mut c = self.conn.clone();
        for other in absorbed {
            let ok: i64 = CAS_CONTACT
                .call()
                .key(contact_key(&other.id))
                .key(contact_log_key(&other.id))
                .arg(other.version)
                .arg("")
                .arg(survivor.as_str())
                .arg("")
                .arg(0)
                .arg(0)
                .run(&mut c)
                .await?;
            if ok != 1 {
                return Ok(false);
            }
            tracing::info!(contact_id = %survivor, absorbed = %other.id, "contacts merged");
        }
        Ok(true)
    }

    pub(super) async fn repoint(
        &self,
        entries: &[(Identifier, ContactId)],
        to: &ContactId,
    ) -> Result<(), Error> {
        let mut c = self.conn.clone();
        for (ident, from) in entries {
            let _: i64 = REPOINT
                .call()
                .key(index_key(ident))
                .arg(from.as_str())
                .arg(to.as_str())
                .run(&mut c)
                .await?;
        }
        Ok(())
    }
}
