//! Leases on event ids (`SET NX PX`), taken for a whole batch in one round trip
//! together with the index entries of each event's identifiers, and the done marker an
//! applied event leaves behind.

use std::time::Duration;

use hookline_proto::v1;
use redis::Value;

use super::keys::{
    DELETE_IF, decode_done, event_key, index_read, pointer_ids, record_value, replay_lock_key,
};
use super::{Applied, Patience, Store, millis_u64, now_millis};
use crate::contact::{self, ContactId, EventId, Identifier, ParsedEvent};
use crate::error::Error;

/// The lease an event's caller takes: its dedup key, a token of this attempt, and the
/// identifiers whose index entries are read in the same round trip. A replay takes the
/// lock of the record it replays instead, and reads the record: the record stays as it
/// is until the replay's outcome replaces it, so a replay that fails loses nothing.
pub(super) struct Lease {
    pub(super) key: String,
    pub(super) token: String,
    pub(super) idents: Vec<Identifier>,
    /// For a replay: the key of the record it replays.
    pub(super) record: Option<String>,
}

impl Lease {
    pub(super) fn new(ev: &ParsedEvent) -> Self {
        let (key, record) = if ev.replay {
            // Gated by the record it replays: the dedup key of an id with a window may
            // have expired while the record still says what became of the event.
            (
                replay_lock_key(&ev.record_id),
                Some(event_key(&ev.record_id)),
            )
        } else {
            (event_key(&ev.id), None)
        };
        Self {
            key,
            token: format!("L{}", uuid::Uuid::now_v7().simple()),
            idents: match &ev.action {
                Ok(effect) => effect.data.identifiers(),
                Err(_) => Vec::new(),
            },
            record,
        }
    }
}

/// What taking the lease on an event found.
pub(super) enum Acquired {
    /// The lease is ours; where the event's identifiers pointed at that moment.
    Lease(Vec<Option<ContactId>>),
    /// The event was taken care of before: its record.
    Done(Box<v1::EventRecord>),
}

/// What one event's replies in [`Store::try_acquire`] say: the lease with where the
/// identifiers point (`index`, the `MGET` reply), the record of an event applied before,
/// or `None` while another caller holds the lease. For a replay, `record` is the record
/// it replays (read once its lock was taken): it goes on only while the record says
/// ignored; the lock is the caller's to release otherwise.
pub(super) fn acquired(
    lease: &Lease,
    reply: Value,
    record: Option<Value>,
    index: Option<Value>,
) -> Result<Option<Acquired>, Error> {
    let pointers = |index: Option<Value>| match index {
        Some(reply) => pointer_ids(&lease.idents, reply),
        None => Ok(Vec::new()),
    };
    let redis_err = |e: redis::ParsingError| Error::Redis(e.into());
    if let (Some(key), Some(record)) = (&lease.record, record) {
        // `SET … NX` answers OK when the lock is ours, nil while another replay has it.
        if matches!(reply, Value::Nil) {
            return Ok(None);
        }
        let value: Option<Vec<u8>> = redis::from_redis_value(record).map_err(redis_err)?;
        let Some(value) = value else {
            return Err(Error::invalid(
                "replay_of",
                "no record of this event is left to replay",
            ));
        };
        return match decode_done(key, &value) {
            Some(done) => {
                let done = done?.record;
                if done.outcome == i32::from(v1::EventOutcome::Ignored) {
                    Ok(Some(Acquired::Lease(pointers(index)?)))
                } else {
                    Ok(Some(Acquired::Done(Box::new(done))))
                }
            }
            None => Err(Error::InProgress(key.clone())),
        };
    }
    let current: Option<Vec<u8>> = redis::from_redis_value(reply).map_err(redis_err)?;
    let Some(current) = current else {
        return Ok(Some(Acquired::Lease(pointers(index)?)));
    };
    match decode_done(&lease.key, &current) {
        Some(done) => Ok(Some(Acquired::Done(Box::new(done?.record)))),
        None => Ok(None),
    }
}

impl Store {
    /// Gives up the lease if it is still ours, so that a retry can apply the event right
    /// away instead of after the lease expires.
    pub(super) async fn release(&self, lease: &Lease) {
        let mut c = self.conn.clone();
        let released: Result<i64, _> = DELETE_IF
            .call()
            .key(&lease.key)
            .arg(&lease.token)
            .run(&mut c)
            .await;
        if let Err(e) = released {
            tracing::debug!(error = %e, "lease not released, it will expire");
        }
    }

    /// Takes the lease on an event held by another caller, waiting (up to `lease_wait`)
    /// for it to finish: answering DUPLICATE before the first has taken effect would
    /// acknowledge an event that may still fail.
    pub(super) async fn acquire(&self, lease: &Lease) -> Result<Acquired, Error> {
        let mut patience = Patience::new(self.opts.lease_wait);
        loop {
            let found = self.try_acquire(std::slice::from_ref(lease)).await?;
            if let Some(acquired) = found.into_iter().next().transpose()?.flatten() {
                return Ok(acquired);
            }
            if !patience.wait().await {
                return Err(Error::InProgress(lease.key.clone()));
            }
        }
    }

    /// In one round trip, tries to take the lease on each event and reads where its
    /// identifiers point. `None` where another caller holds the lease; an error of one
    /// event (a stored value it cannot read) is that event's alone, and it may hold its
    /// lease.
    pub(super) async fn try_acquire(
        &self,
        leases: &[Lease],
    ) -> Result<Vec<Result<Option<Acquired>, Error>>, Error> {
        let mut pipe = redis::pipe();
        for lease in leases {
            // SET … NX GET answers the value in place, nil when the lease is taken; a
            // replay's lock answers OK or nil, and the record is read after it.
            let set = pipe
                .cmd("SET")
                .arg(&lease.key)
                .arg(&lease.token)
                .arg("NX")
                .arg("PX")
                .arg(millis_u64(self.opts.lease));
            match &lease.record {
                Some(record) => {
                    pipe.cmd("GET").arg(record);
                }
                None => {
                    set.arg("GET");
                }
            }
            if !lease.idents.is_empty() {
                pipe.add_command(index_read(&lease.idents));
            }
        }
        let replies: Vec<Value> = self.query(&pipe).await?;
        let mut replies = replies.into_iter();
        let mut found = Vec::with_capacity(leases.len());
        for lease in leases {
            let reply = replies.next().unwrap_or(Value::Nil);
            let record = lease
                .record
                .as_ref()
                .map(|_| replies.next().unwrap_or(Value::Nil));
            let index = if lease.idents.is_empty() {
                None
            } else {
                Some(replies.next().unwrap_or(Value::Nil))
            };
            found.push(acquired(lease, reply, record, index));
        }
        Ok(found)
    }

    /// The `SET`s that mark an event done: its dedup key holds "D" and its webhook log
    /// record for the dedup TTL. An event deduplicated within a shorter window (a
    /// content-derived id) holds its dedup key only that long, and keeps its record
    /// under the id of this occurrence for the dedup TTL, so the log still shows it.
    /// `log_entry` is the webhook log entry listing the event, when it was written first.
    pub(super) fn done_markers(
        &self,
        ev: &ParsedEvent,
        applied: &Applied,
        log_entry: Option<&str>,
    ) -> Vec<redis::Cmd> {
        let mut record = v1::EventRecord {
            event_id: ev.record_id.to_string(),
            source: ev.source.clone(),
            r#type: ev.event_type.clone(),
            outcome: applied.outcome.into(),
            contact_id: applied
                .contact_id
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            reason: applied.reason.clone(),
            occurred_at: Some(contact::timestamp(ev.occurred_at)),
            received_at: Some(contact::timestamp(ev.received_at)),
            applied_at: Some(contact::timestamp(now_millis())),
            body: match &ev.action {
                Err(ignored) => ignored.body.clone().unwrap_or_default(),
                Ok(_) => Vec::new(),
            },
            notes: applied.notes.clone(),
            original_event_id: ev.original_id.clone().unwrap_or_default(),
            headers: match &ev.action {
                Err(ignored) if ignored.body.is_some() => ignored.headers.clone(),
                _ => Vec::new(),
            },
        };
        let ttl = self.opts.dedup_ttl;
        let mut set = |id: &EventId, ttl: Duration| {
            let mut cmd = redis::cmd("SET");
            cmd.arg(event_key(id))
                .arg(record_value(&mut record, id.as_str(), log_entry))
                .arg("EX")
                .arg(ttl.as_secs().max(1));
            cmd
        };
        match ev.dedup_window {
            // A replay settles the occurrence it replays, which is long past its window:
            // the window's key belongs to deliveries of today (and may hold the lease of
            // one applying now), so it is left alone.
            Some(_) if ev.replay => vec![set(&ev.record_id, ttl)],
            Some(window) => vec![set(&ev.id, window.min(ttl)), set(&ev.record_id, ttl)],
            None => vec![set(&ev.id, ttl)],
        }
    }
}
