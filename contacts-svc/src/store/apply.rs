//! Applying one event once its lease is held: resolving its contact, claiming new
//! identifiers, merging and writing, guarded by versions (the batch around it is in
//! `batch.rs`).

use std::collections::BTreeMap;

use hookline_proto::v1;
use redis::Value;

use super::keys::{CAS_CONTACT, DELETE_IF, REPOINT, claim, contact_key, created_millis, index_key};
use super::stored::{Body, Stored, encode_data, log_union, version_tag};
use super::{Applied, Loaded, Patience, Store, millis_i64, now_millis};
use crate::contact::{self, ContactId, EventEffect, Identifier, ParsedEvent, Record};
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

/// The identifiers whose index entries lead (maybe through merges) to an erased contact,
/// with the contact each entry names. `hits` pairs each identifier with the live
/// contact its entry leads to.
fn erased_entries<'a>(
    pointers: &'a [Option<ContactId>],
    hits: &'a [(Identifier, Option<ContactId>)],
    loaded: &BTreeMap<ContactId, Loaded>,
) -> Vec<(&'a Identifier, &'a ContactId)> {
    hits.iter()
        .zip(pointers)
        .filter_map(|((ident, live), pointer)| {
            let erased = loaded.get(live.as_ref()?)?.erased.is_some();
            erased.then_some((ident, pointer.as_ref()?))
        })
        .collect()
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

impl Store {
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
        // Whether `fresh` is listed: once is enough, whatever the attempts.
        let mut listed = false;
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
            // An index entry that leads to an erased contact is a leftover of its erasure
            // (not complete yet, or a claim made while it ran): the identifier is nobody's
            // now. It is cleared, if it still names what it named, and the event resolved
            // again, so that it makes a new contact and never writes into the tombstone.
            let stale = erased_entries(&raw, &hits, &contacts);
            if !stale.is_empty() {
                self.clear_erased(&stale).await?;
                continue;
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
                    match contacts.get(&live) {
                        Some(l) if l.version == 0 => {
                            return Err(Error::NotFound(format!("no contact {id}")));
                        }
                        Some(l) if l.erased.is_some() => {
                            return Err(Error::NotFound(format!("contact {id} was erased")));
                        }
                        _ => {}
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
            if let Some(o) = orphan.clone() {
                let live = self.load_into(&o, &mut contacts).await?;
                if contacts.get(&live).is_some_and(|l| l.erased.is_some()) {
                    // Erased meanwhile, by its id: nothing of it is to be merged any more.
                    orphan = None;
                } else if !plan.targets.contains(&live) {
                    plan.targets.push(live);
                    plan.targets.sort(); // the oldest survives, as in `contact::plan`
                }
            }

            let survivor = match plan.targets.first() {
                Some(id) => id.clone(),
                None => fresh.clone(),
            };
            let mut base = contacts
                .remove(&survivor)
                .unwrap_or_else(|| Loaded::unwritten(survivor.clone()));
            let list = base.version == 0 && !listed;
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
                    .claim_and_write(&plan.claims, &base, list, ev, log_floor)
                    .await?;
                listed |= list;
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
            let claimed = self.claim(&plan.claims, &survivor, list).await?;
            listed |= list;
            if !claimed {
                continue; // another caller claimed one first: resolve again
            }
            // As in `claim_and_write`: no write before the replicas hold the claims.
            if !plan.claims.is_empty()
                && let Err(e) = self.replicated().await
            {
                self.unclaim(&plan.claims, &survivor).await;
                return Err(e);
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
                log_union(&mut base.log, other.log.iter().cloned(), log_floor);
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
            // Absorbed contacts stay in the listing of new contacts, which skips redirects.
            self.repoint(&repoints, &survivor).await?;

            return Ok(applied(survivor, absorbed.len(), plan.conflicts));
        }
        Err(Error::Contention(MAX_ATTEMPTS))
    }

    /// Gives back the claims of `idents` this attempt made for `owner` (each still naming
    /// it), when it cannot go on: the retry need not wait for them to be cleared as
    /// claims of a contact never written. One that cannot be given back is cleared so
    /// later.
    async fn unclaim(&self, idents: &[Identifier], owner: &ContactId) {
        for ident in idents {
            if let Err(e) = self.delete_entry(ident, owner).await {
                tracing::debug!(error = %e, "claim not given back, it will be cleared");
            }
        }
    }

    /// Deletes the index entry of `ident` if it still names `id` (one key, one script):
    /// an entry another caller has pointed elsewhere meanwhile stays.
    async fn delete_entry(&self, ident: &Identifier, id: &ContactId) -> Result<(), Error> {
        let mut c = self.conn.clone();
        let _: i64 = DELETE_IF
            .call()
            .key(index_key(ident))
            .arg(id.as_str())
            .run(&mut c)
            .await?;
        Ok(())
    }

    /// Claims identifiers for `owner` with SET NX, and lists `owner` when `list`. False
    /// if another contact got one of the identifiers first.
    pub(super) async fn claim(
        &self,
        idents: &[Identifier],
        owner: &ContactId,
        list: bool,
    ) -> Result<bool, Error> {
        if idents.is_empty() && !list {
            return Ok(true);
        }
        let cmds = idents.iter().map(|ident| claim(ident, owner)).collect();
        let replies = self.round_trip(cmds, list.then_some(owner)).await?;
        claimed(&replies)
    }

    /// [`Store::claim`] and [`Store::write`] in one round trip (two, with a `WAIT`
    /// between them, when replicas are asked for): whether every claim held, and whether
    /// the contact was written. The contact is listed and its
    /// identifiers claimed before it is written (listings skip it until it is), so a
    /// crash cannot leave it unlisted; if a claim is lost, the caller resolves again.
    pub(super) async fn claim_and_write(
        &self,
        idents: &[Identifier],
        l: &Loaded,
        list: bool,
        ev: &ParsedEvent,
        log_floor: i64,
    ) -> Result<(bool, bool), Error> {
        if self.opts.wait_replicas > 0 && !idents.is_empty() {
            // With replicas asked for, the claims are on them before the contact is
            // written: a failover that took back a claim but not the contact would
            // leave a contact no index finds, and the event's retry would make a second
            // one beside it.
            if !self.claim(idents, &l.id, list).await? {
                return Ok((false, false));
            }
            if let Err(e) = self.replicated().await {
                self.unclaim(idents, &l.id).await;
                return Err(e);
            }
            return Ok((true, self.write(l, ev, log_floor).await?));
        }
        let write = self.contact_write(l, ev, log_floor);
        let mut cmds: Vec<redis::Cmd> = idents.iter().map(|ident| claim(ident, &l.id)).collect();
        cmds.push(write.cmd(false));
        let mut replies = self.round_trip(cmds, list.then_some(&l.id)).await?;
        let wrote = replies.pop().unwrap_or(Value::Nil);
        let claimed = claimed(&replies)?;
        match wrote {
            // Redis lost its scripts (a restart): the claims ran, the write did not. Write
            // now, by the script's source, so no claim is left naming an unwritten contact
            // while this call goes on; which claims held is unknown, so the caller
            // resolves again.
            Value::ServerError(e) if e.kind() == Some(redis::ServerErrorKind::NoScript) => {
                let mut c = self.conn.clone();
                let reply: Value = write.cmd(true).query_async(&mut c).await?;
                Ok((false, written(&reply)))
            }
            Value::ServerError(e) => Err(redis::RedisError::from(e).into()),
            reply => Ok((claimed, written(&reply))),
        }
    }

    /// The write of a contact with the event's entry in its log: `SET … NX` when it is
    /// new, else the compare-and-set of its version.
    pub(super) fn contact_write(&self, l: &Loaded, ev: &ParsedEvent, log_floor: i64) -> Write {
        let mut log = l.log.clone();
        log_union(
            &mut log,
            [(ev.received_at, ev.record_id.as_str().to_owned())],
            log_floor,
        );
        Write::new(
            &l.id,
            l.version,
            encode_data(l.version + 1, &l.record, &log),
        )
    }

    /// Writes a contact if unchanged since read, with the event's log entry.
    pub(super) async fn write(
        &self,
        l: &Loaded,
        ev: &ParsedEvent,
        log_floor: i64,
    ) -> Result<bool, Error> {
        let mut c = self.conn.clone();
        let reply = self.contact_write(l, ev, log_floor).run(&mut c).await?;
        Ok(written(&reply))
    }

    /// Removes index entries that still name a contact whose writer is gone.
    pub(super) async fn clear_claims(
        &self,
        claims: &[(&Identifier, &ContactId)],
    ) -> Result<(), Error> {
        for (ident, id) in claims {
            self.delete_entry(ident, id).await?;
            tracing::warn!(identifier = %ident.masked(), contact_id = %id, "claim of an unwritten contact cleared");
        }
        Ok(())
    }

    /// Removes index entries that still name the contact they led to an erased contact
    /// through.
    async fn clear_erased(&self, entries: &[(&Identifier, &ContactId)]) -> Result<(), Error> {
        for (ident, id) in entries {
            self.delete_entry(ident, id).await?;
            tracing::info!(kind = ident.kind(), contact_id = %id, "index entry of an erased contact cleared");
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
            let redirect = Stored {
                version: other.version + 1,
                body: Body::Redirect(survivor.clone()),
            };
            let reply = Write::new(&other.id, other.version, redirect.encode())
                .run(&mut c)
                .await?;
            if !written(&reply) {
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

/// Whether every `SET NX` claim held (an error reply is the round trip's error).
fn claimed(replies: &[Value]) -> Result<bool, Error> {
    let mut held = true;
    for reply in replies {
        match reply {
            Value::ServerError(e) => return Err(redis::RedisError::from(e.clone()).into()),
            Value::Nil => held = false,
            _ => {}
        }
    }
    Ok(held)
}

/// Whether a [`Write`] wrote: `SET … NX` answers OK, the script 1.
pub(super) fn written(reply: &Value) -> bool {
    matches!(reply, Value::Okay | Value::Int(1))
}

/// The write of one contact key, guarded by the version read.
pub(super) enum Write {
    /// A contact not written yet.
    New(redis::Cmd),
    /// The compare-and-set of a written one.
    Update(super::keys::LuaCall),
}

impl Write {
    /// The write of `value` (an encoded [`Stored`]) over the version `read`.
    pub(super) fn new(id: &ContactId, read: u64, value: Vec<u8>) -> Self {
        let key = contact_key(id);
        if read == 0 {
            let mut cmd = redis::cmd("SET");
            cmd.arg(key).arg(value).arg("NX");
            Self::New(cmd)
        } else {
            Self::Update(
                CAS_CONTACT
                    .call()
                    .key(key)
                    .arg(version_tag(read))
                    .arg(value),
            )
        }
    }

    pub(super) fn cmd(&self, by_source: bool) -> redis::Cmd {
        match self {
            Self::New(cmd) => cmd.clone(),
            Self::Update(call) => call.cmd(by_source),
        }
    }

    pub(super) async fn run(&self, conn: &mut super::conn::Conn) -> redis::RedisResult<Value> {
        match self {
            Self::New(cmd) => cmd.query_async(conn).await,
            Self::Update(call) => call.run(conn).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contact::Erasure;

    fn id(n: char) -> ContactId {
        ContactId::parse(&format!("ct_0190f0e0c0a07000800000000000000{n}")).unwrap()
    }

    #[test]
    fn entries_that_lead_to_a_tombstone_are_found_by_what_they_name() {
        let erasure = Erasure {
            erased_at: 1,
            erased_by: "ops".to_owned(),
        };
        // a: erased; b: live; c: merged into a (its entries lead to a's tombstone).
        let loaded: BTreeMap<ContactId, Loaded> = [
            (id('a'), Loaded::tombstone(id('a'), 3, erasure)),
            (
                id('b'),
                Loaded {
                    version: 2,
                    ..Loaded::unwritten(id('b'))
                },
            ),
        ]
        .into();
        let email = Identifier::Email("jenny@example.com".to_owned());
        let phone = Identifier::Phone("+14155550100".to_owned());
        let payment = Identifier::PaymentRef("pi_1".to_owned());
        let new = Identifier::PaymentRef("pi_2".to_owned());
        for (pointers, lead_to, want) in [
            (
                vec![Some(id('c')), Some(id('b')), Some(id('a')), None],
                vec![Some(id('a')), Some(id('b')), Some(id('a')), None],
                vec![(email.clone(), id('c')), (payment.clone(), id('a'))],
            ),
            (vec![Some(id('b'))], vec![Some(id('b'))], vec![]),
            (vec![None], vec![None], vec![]),
        ] {
            let idents = [email.clone(), phone.clone(), payment.clone(), new.clone()];
            let hits: Vec<(Identifier, Option<ContactId>)> =
                idents.into_iter().zip(lead_to).collect();
            let found: Vec<(Identifier, ContactId)> = erased_entries(&pointers, &hits, &loaded)
                .into_iter()
                .map(|(ident, named)| (ident.clone(), named.clone()))
                .collect();
            assert_eq!(found, want);
        }
    }
}
