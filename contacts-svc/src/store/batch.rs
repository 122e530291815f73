//! Batches of events: copies told apart, one round trip that takes every lease and reads
//! every index entry, each event then resolved and written on its own (`apply.rs`, its
//! first writes sent together, `round.rs`), and one last round trip that writes every
//! webhook log entry and done marker. With `--redis-wait-replicas`, the replicas confirm
//! each step before the next is written: the contacts, the log entry, the markers, then
//! the answer.

use std::collections::BTreeMap;
use std::time::Instant;

use hookline_proto::v1;

use super::apply::unchanged;
use super::keys::EVENTS;
use super::lease::{Acquired, Lease};
use super::{Applied, Store, millis_i64, now_millis};
use crate::contact::{ContactId, Ignored, ParsedEvent};
use crate::error::Error;

/// What became of one event of a batch before the last round trip.
pub(super) enum Step {
    /// Applied or ignored now: its log entry and done marker are still to be written.
    Finish(Applied),
    /// Nothing to write: a duplicate, or an ignored event that must come with its body.
    Answer(Applied),
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

/// One pipeline of `cmds`, in order, their replies dropped.
fn ignored(cmds: impl IntoIterator<Item = redis::Cmd>) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    for cmd in cmds {
        pipe.add_command(cmd).ignore();
    }
    pipe
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
        // The events' first writes (claims, listing and contact) go as one pipeline.
        let steps = self
            .in_rounds(futures::future::join_all(
                batch.iter().zip(&leases).zip(first).map(
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
                ),
            ))
            .await;

        // With replicas asked for, the contacts' writes must be on them before any done
        // marker is written: on a cluster the marker may live on another master than
        // the contact, and a marker that survives a failover which took the contact
        // back would answer the event's redelivery "duplicate" with nothing applied.
        let written = if steps.iter().any(|s| matches!(s, Ok(Step::Finish(_)))) {
            self.replicated().await
        } else {
            Ok(())
        };
        let mut steps = steps;
        if let Err(e) = written {
            for (lease, step) in leases.iter().zip(&mut steps) {
                if matches!(step, Ok(Step::Finish(_))) {
                    // Not done: the lease goes, so that the retry need not wait for it.
                    self.release(lease).await;
                    *step = Err(e.clone());
                }
            }
        }

        // The log entry before the markers: if we crash in between, the retry logs the
        // events again (a listing shows such an event twice, never not at all). A marker
        // is written whoever holds the lease now: a caller that took over an expired
        // lease applies the same event to the same effect, so either record is right,
        // and a failing caller only ever deletes its own lease.
        let mut log = redis::cmd("XADD");
        log.arg(EVENTS)
            .arg("MINID")
            .arg("~")
            .arg(now_millis() - millis_i64(self.opts.log_retention))
            .arg("*");
        let mut done = Vec::new();
        for ((ev, _), step) in batch.iter().zip(&steps) {
            if let Ok(Step::Finish(applied)) = step {
                log.arg(ev.record_id.as_str()).arg(ev.received_at);
                done.push((ev, applied));
            }
        }
        let markers = |log_entry: Option<&str>| -> Vec<redis::Cmd> {
            let each = done.iter();
            each.flat_map(|(ev, applied)| self.done_markers(ev, applied, log_entry))
                .collect()
        };
        let finished = if done.is_empty() {
            Ok(())
        } else if self.opts.wait_replicas > 0 {
            // The same order across a failover: the log entry is on the replicas before
            // any marker is written, or a marker that outlived its log entry would answer
            // the redelivery "duplicate" and the event would never be listed. A marker
            // names its log entry: when this attempt fails after logging, the retry
            // logs the event again, and the listing shows it at the entry its marker
            // names only.
            let mut c = self.conn.clone();
            match log.query_async::<String>(&mut c).await {
                Ok(entry) => match self.replicated().await {
                    Ok(()) => self.query::<()>(&ignored(markers(Some(&entry)))).await,
                    Err(e) => Err(e),
                },
                Err(e) => Err(e.into()),
            }
        } else {
            self.query::<()>(&ignored(std::iter::once(log).chain(markers(None))))
                .await
        };
        // A replay's lock goes once its record says what became of the event (when it
        // failed before, it was released then): either way the record is as it should be.
        for (lease, step) in leases.iter().zip(&steps) {
            if lease.record.is_some() && matches!(step, Ok(Step::Finish(_))) {
                self.release(lease).await;
            }
        }
        // An answer that says the event took effect (applied, ignored and recorded, or a
        // duplicate) waits for the replicas asked for: a failover must not take back what
        // the sender is told is done. WAIT covers every write this process sent so far,
        // a duplicate's first application by this process included.
        let settles = |s: &Result<Step, Error>| match s {
            Ok(Step::Finish(_)) => true,
            Ok(Step::Answer(a)) => a.outcome == v1::EventOutcome::Duplicate,
            Err(_) => false,
        };
        let replicated = match &finished {
            Ok(()) if steps.iter().any(settles) => self.replicated().await,
            _ => Ok(()),
        };
        let settled = finished.and(replicated);
        steps
            .into_iter()
            .map(|step| match step? {
                Step::Answer(applied) if applied.outcome == v1::EventOutcome::Duplicate => {
                    settled.clone().map(|()| applied)
                }
                Step::Answer(applied) => Ok(applied),
                Step::Finish(applied) => settled.clone().map(|()| applied),
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
}
