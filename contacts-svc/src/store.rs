//! All Redis access and the key layout; nothing else in contacts-svc sees Redis.
//!
//! ```text
//! hl:ev:{<event id>}          string  "L<token>" while one caller applies the event (lease,
//!                                     PX), then "D" + EventRecord protobuf (EX dedup TTL)
//! hl:c:{<contact id>}         hash    v: version, d: record (JSON), r: survivor id once merged
//! hl:c:{<contact id>}:log     zset    ids of the events applied to the contact, by receipt
//! hl:idx:<kind>:<value>       string  contact id holding an identifier (created with SET NX)
//! hl:contacts                 zset    live contact ids by creation time
//! hl:events                   zset    every event id by receipt time: the webhook log
//! ```
//!
//! The layout is ready for Redis Cluster: every key of one contact shares the hash tag
//! `{<contact id>}`, and each script touches the keys of one slot only. A contact's
//! update and its log entry are one script, so a crash leaves nothing half applied.
//! Everything else (index claims, merges, the global log) is idempotent and ordered so
//! that a retry after a crash completes the work.
//!
//! Round trips: an `ApplyEvents` batch shares its first and last. One pipeline takes
//! every event's lease and reads its index entries (`SET … NX GET`, `MGET`); each event
//! then claims its identifiers, lists a new contact and writes it in one pipeline of its
//! own (merges take a few more); one pipeline writes every webhook log entry (a single
//! `ZADD`) and done marker. A new event costs three round trips whatever the batch size.

use std::collections::BTreeMap;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use hookline_proto::prost::Message as _;
use hookline_proto::v1;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands as _, Script, Value};

use crate::contact::{self, ContactId, EventEffect, Identifier, Ignored, ParsedEvent, Record};
use crate::error::Error;

/// Tuning of deduplication and leases.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// How long an applied event id is remembered; must outlive every sender's retries.
    pub dedup_ttl: Duration,
    /// How long one caller may hold an event before another may take it over.
    pub lease: Duration,
    /// How long a second delivery of an event in progress waits for the first.
    pub lease_wait: Duration,
    /// Timeout of every Redis command.
    pub command_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            dedup_ttl: Duration::from_secs(30 * 24 * 3600),
            lease: Duration::from_secs(10),
            lease_wait: Duration::from_secs(2),
            command_timeout: Duration::from_secs(2),
        }
    }
}

/// What became of an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    pub outcome: v1::EventOutcome,
    pub contact_id: Option<ContactId>,
    pub reason: String,
    /// Contacts absorbed into `contact_id` by this event.
    pub merges: usize,
    /// Identifiers left on another contact (see `contact::plan`).
    pub conflicts: Vec<(Identifier, ContactId)>,
}

/// A contact as stored: its live id (after following merges), version and record.
#[derive(Clone, Debug)]
pub struct Loaded {
    pub id: ContactId,
    pub version: u64,
    pub record: Record,
}

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
}

/// The fields `v` (version), `d` (record) and `r` (survivor) of a contact hash.
type ContactRow = (Option<u64>, Option<Vec<u8>>, Option<String>);

/// Attempts at resolving and writing before giving up against concurrent writers.
const MAX_ATTEMPTS: u32 = 32;
/// Redirects followed from a merged contact to its survivor.
const MAX_REDIRECTS: usize = 16;
/// Items examined per listing call, whatever the filter, to bound its cost.
const SCAN_BUDGET: usize = 2000;

const CONTACTS: &str = "hl:contacts";
const EVENTS: &str = "hl:events";

fn event_key(id: impl std::fmt::Display) -> String {
    format!("hl:ev:{{{id}}}")
}

fn contact_key(id: impl std::fmt::Display) -> String {
    format!("hl:c:{{{id}}}")
}

fn contact_log_key(id: &ContactId) -> String {
    format!("hl:c:{{{id}}}:log")
}

fn index_key(ident: &Identifier) -> String {
    match ident {
        Identifier::External { system, id } => format!("hl:idx:ext:{system}:{id}"),
        Identifier::PaymentRef(r) => format!("hl:idx:pay:{r}"),
        Identifier::Email(e) => format!("hl:idx:email:{e}"),
        Identifier::Phone(p) => format!("hl:idx:phone:{p}"),
    }
}

/// Writes a contact if its version is still the one read: either new data, or a
/// redirect to the contact that absorbed it. Also logs the event, and every 32nd write
/// drops log entries older than the dedup TTL.
static CAS_CONTACT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local v = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
if v ~= tonumber(ARGV[1]) then return 0 end
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[1], 'v', v + 1, 'r', ARGV[3])
  redis.call('HDEL', KEYS[1], 'd')
else
  redis.call('HSET', KEYS[1], 'v', v + 1, 'd', ARGV[2])
end
if ARGV[4] ~= '' then
  redis.call('ZADD', KEYS[2], ARGV[5], ARGV[4])
  if v % 32 == 31 then
    redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[6])
  end
end
return 1
",
    )
});

/// Deletes a key if it still holds the given value (releases a lease).
static DELETE_IF: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
",
    )
});

/// Points an index entry at another contact if it still names the old one.
static REPOINT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('SET', KEYS[1], ARGV[2]) return 1 end
return 0
",
    )
});

/// Handle on the Redis database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    conn: ConnectionManager,
    opts: StoreOptions,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("opts", &self.opts).finish()
    }
}

impl Store {
    /// Prepares a connection to `url` without connecting: the connection is made on
    /// first use and re-made in the background whenever it breaks.
    pub fn open(url: &str, opts: StoreOptions) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(opts.command_timeout))
            .set_response_timeout(Some(opts.command_timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(1));
        let conn = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(Self { conn, opts })
    }

    pub async fn ping(&self) -> Result<(), Error> {
        let mut c = self.conn.clone();
        let _: String = redis::cmd("PING").query_async(&mut c).await?;
        Ok(())
    }

    /// Applies `ev` exactly once. `explicit` is a contact the caller named.
    pub async fn apply(
        &self,
        ev: &ParsedEvent,
        explicit: Option<&ContactId>,
    ) -> Result<Applied, Error> {
        self.apply_batch(&[(ev, explicit)])
            .await
            .pop()
            .unwrap_or(Err(Error::Contention(0)))
    }

    /// Applies each event exactly once; one result per event, in order. Events are
    /// independent: one failing leaves the others applied.
    ///
    /// The first and the last round trip are shared by the whole batch: one pipeline
    /// takes every lease and reads every index entry, and one writes every webhook log
    /// entry and done marker. In between, each event resolves and writes its contact on
    /// its own, concurrently (the Redis client sends their commands together).
    pub async fn apply_batch(
        &self,
        batch: &[(&ParsedEvent, Option<&ContactId>)],
    ) -> Vec<Result<Applied, Error>> {
        // A second copy of an event in the same batch waits for the first, as a second
        // delivery would: it is a duplicate if the first applies, and fails with it.
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        let mut unique = Vec::with_capacity(batch.len());
        let copy_of: Vec<Option<usize>> = batch
            .iter()
            .map(|(ev, explicit)| match seen.get(ev.id.as_str()) {
                Some(&first) => Some(first),
                None => {
                    seen.insert(ev.id.as_str(), unique.len());
                    unique.push((*ev, *explicit));
                    None
                }
            })
            .collect();
        let results = self.apply_unique(&unique).await;
        if unique.len() == batch.len() {
            return results; // no copies: nothing to answer twice
        }
        let mut firsts = results.iter();
        copy_of
            .iter()
            .map(|copy| {
                let result = match copy {
                    Some(first) => results.get(*first),
                    None => firsts.next(),
                };
                match result {
                    Some(Ok(applied)) if copy.is_some() => Ok(unchanged(
                        v1::EventOutcome::Duplicate,
                        applied.contact_id.clone(),
                        applied.reason.clone(),
                    )),
                    Some(result) => result.clone(),
                    None => Err(Error::Contention(0)), // one result per event: unreachable
                }
            })
            .collect()
    }

    /// [`Store::apply_batch`] for events with distinct ids.
    async fn apply_unique(
        &self,
        batch: &[(&ParsedEvent, Option<&ContactId>)],
    ) -> Vec<Result<Applied, Error>> {
        let leases: Vec<Lease> = batch.iter().map(|(ev, _)| Lease::new(ev)).collect();
        let first = match self.try_acquire(&leases).await {
            Ok(first) => first,
            Err(e) => return batch.iter().map(|_| Err(e.clone())).collect(),
        };
        let steps = futures::future::join_all(batch.iter().zip(&leases).zip(first).map(
            |(((ev, explicit), lease), first)| self.apply_leased(ev, *explicit, lease, first),
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
                log.arg(ev.received_at).arg(ev.id.as_str());
                let mut marker = redis::cmd("SET");
                marker
                    .arg(event_key(&ev.id))
                    .arg(self.done_marker(ev, applied))
                    .arg("EX")
                    .arg(self.opts.dedup_ttl.as_secs().max(1));
                markers.push(marker);
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
        steps
            .into_iter()
            .map(|step| match step? {
                Step::Duplicate(applied) => Ok(applied),
                Step::Finish(applied) => finished.clone().map(|()| applied),
            })
            .collect()
    }

    /// Resolves and applies one event of a batch, given what its first round trip found
    /// (`None`: another caller holds its lease; an error: a stored value it cannot read).
    async fn apply_leased(
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
                return Ok(Step::Duplicate(unchanged(
                    v1::EventOutcome::Duplicate,
                    ContactId::parse(&done.contact_id).ok(),
                    done.reason,
                )));
            }
        };
        let result = match &ev.action {
            Ok(effect) => {
                self.apply_effect(ev, effect, &lease.idents, pointers, explicit)
                    .await
            }
            Err(Ignored { reason, .. }) => {
                Ok(unchanged(v1::EventOutcome::Ignored, None, reason.clone()))
            }
        };
        match result {
            Ok(mut applied) => {
                for note in &ev.notes {
                    if !applied.reason.is_empty() {
                        applied.reason.push_str("; ");
                    }
                    applied.reason.push_str(note);
                }
                Ok(Step::Finish(applied))
            }
            Err(e) => {
                self.release(lease).await;
                Err(e)
            }
        }
    }

    /// Gives up the lease if it is still ours, so that a retry can apply the event right
    /// away instead of after the lease expires.
    async fn release(&self, lease: &Lease) {
        let mut c = self.conn.clone();
        let released: Result<i64, _> = DELETE_IF
            .key(&lease.key)
            .arg(&lease.token)
            .invoke_async(&mut c)
            .await;
        if let Err(e) = released {
            tracing::debug!(error = %e, "lease not released, it will expire");
        }
    }

    /// Takes the lease on an event held by another caller, waiting (up to `lease_wait`)
    /// for it to finish: answering DUPLICATE before the first has taken effect would
    /// acknowledge an event that may still fail.
    async fn acquire(&self, lease: &Lease) -> Result<Acquired, Error> {
        let started = Instant::now();
        let mut pause = Duration::from_millis(2);
        loop {
            let found = self.try_acquire(std::slice::from_ref(lease)).await?;
            if let Some(acquired) = found.into_iter().next().transpose()?.flatten() {
                return Ok(acquired);
            }
            if started.elapsed() >= self.opts.lease_wait {
                return Err(Error::InProgress(lease.key.clone()));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    /// In one round trip, tries to take the lease on each event and reads where its
    /// identifiers point. `None` where another caller holds the lease; an error of one
    /// event (a stored value it cannot read) is that event's alone, and it may hold its
    /// lease.
    async fn try_acquire(
        &self,
        leases: &[Lease],
    ) -> Result<Vec<Result<Option<Acquired>, Error>>, Error> {
        let mut pipe = redis::pipe();
        for lease in leases {
            // SET … NX GET answers the value in place, nil when the lease is taken.
            pipe.cmd("SET")
                .arg(&lease.key)
                .arg(&lease.token)
                .arg("NX")
                .arg("PX")
                .arg(millis_u64(self.opts.lease))
                .arg("GET");
            if !lease.idents.is_empty() {
                pipe.add_command(index_read(&lease.idents));
            }
        }
        let replies: Vec<Value> = self.query(&pipe).await?;
        let mut replies = replies.into_iter();
        let mut found = Vec::with_capacity(leases.len());
        for lease in leases {
            let reply = replies.next().unwrap_or(Value::Nil);
            let index = if lease.idents.is_empty() {
                None
            } else {
                Some(replies.next().unwrap_or(Value::Nil))
            };
            found.push(acquired(lease, reply, index));
        }
        Ok(found)
    }

    /// Runs `pipe` (no scripts: those are invoked on their own, which reloads them if a
    /// Redis restart emptied its script cache).
    async fn query<T: redis::FromRedisValue>(&self, pipe: &redis::Pipeline) -> Result<T, Error> {
        let mut c = self.conn.clone();
        Ok(pipe.query_async(&mut c).await?)
    }

    /// The done marker of an event: "D" and its webhook log record.
    fn done_marker(&self, ev: &ParsedEvent, applied: &Applied) -> Vec<u8> {
        let record = v1::EventRecord {
            event_id: ev.id.to_string(),
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
                Err(ignored) => ignored.body.clone(),
                Ok(_) => Vec::new(),
            },
            ..v1::EventRecord::default()
        };
        let mut value = Vec::with_capacity(1 + record.encoded_len());
        value.push(b'D');
        // A Vec grows as needed, so encoding into it cannot run out of room.
        let _ = record.encode(&mut value);
        value
    }

    /// Resolves the event's contact (creating or merging as needed) and applies it.
    async fn apply_effect(
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
        for _ in 0..MAX_ATTEMPTS {
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
                None => ContactId::generate(),
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

    async fn index_lookup(&self, idents: &[Identifier]) -> Result<Vec<Option<ContactId>>, Error> {
        if idents.is_empty() {
            return Ok(Vec::new());
        }
        let mut c = self.conn.clone();
        let raw: Value = index_read(idents).query_async(&mut c).await?;
        pointer_ids(idents, raw)
    }

    /// Loads `id`, following merges, into `into`; returns the live id. A contact that
    /// does not exist yet loads as empty with version 0.
    async fn load_into(
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

    /// Claims identifiers for `owner` with SET NX, and lists `owner` when `new`. False
    /// if another contact got one of the identifiers first.
    async fn claim(
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
    async fn claim_and_write(
        &self,
        idents: &[Identifier],
        l: &Loaded,
        ev: &ParsedEvent,
        log_floor: i64,
    ) -> Result<(bool, bool), Error> {
        let mut pipe = claims(idents, &l.id, l.version == 0);
        pipe.invoke_script(&self.cas_write(l, ev, log_floor)?);
        let mut c = self.conn.clone();
        match pipe.query_async::<Vec<Value>>(&mut c).await {
            Ok(mut replies) => {
                let written = matches!(replies.pop(), Some(Value::Int(1)));
                Ok((replies.iter().all(|v| !matches!(v, Value::Nil)), written))
            }
            // Redis lost its scripts (a restart): load it; the claims may have been
            // made, so the caller resolves again.
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                CAS_CONTACT.load_async(&mut c).await?;
                Ok((false, false))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The compare-and-set write of a contact with the event's log entry.
    fn cas_write<'a>(
        &self,
        l: &Loaded,
        ev: &ParsedEvent,
        log_floor: i64,
    ) -> Result<redis::ScriptInvocation<'a>, Error> {
        let data = serde_json::to_vec(&l.record).map_err(|e| Error::Corrupt {
            key: contact_key(&l.id),
            reason: e.to_string(),
        })?;
        let mut invocation = CAS_CONTACT.prepare_invoke();
        invocation
            .key(contact_key(&l.id))
            .key(contact_log_key(&l.id))
            .arg(l.version)
            .arg(data)
            .arg("")
            .arg(ev.id.as_str())
            .arg(ev.received_at)
            .arg(log_floor);
        Ok(invocation)
    }

    /// Writes a contact if unchanged since read, with the event's log entry.
    async fn write(&self, l: &Loaded, ev: &ParsedEvent, log_floor: i64) -> Result<bool, Error> {
        let mut c = self.conn.clone();
        let ok: i64 = self
            .cas_write(l, ev, log_floor)?
            .invoke_async(&mut c)
            .await?;
        Ok(ok == 1)
    }

    /// Turns absorbed contacts into redirects to the survivor.
    async fn absorb(&self, survivor: &ContactId, absorbed: &[Loaded]) -> Result<bool, Error> {
        let mut c = self.conn.clone();
        for other in absorbed {
            let ok: i64 = CAS_CONTACT
                .key(contact_key(&other.id))
                .key(contact_log_key(&other.id))
                .arg(other.version)
                .arg("")
                .arg(survivor.as_str())
                .arg("")
                .arg(0)
                .arg(0)
                .invoke_async(&mut c)
                .await?;
            if ok != 1 {
                return Ok(false);
            }
            tracing::info!(contact_id = %survivor, absorbed = %other.id, "contacts merged");
        }
        Ok(true)
    }

    async fn repoint(
        &self,
        entries: &[(Identifier, ContactId)],
        to: &ContactId,
    ) -> Result<(), Error> {
        let mut c = self.conn.clone();
        for (ident, from) in entries {
            let _: i64 = REPOINT
                .key(index_key(ident))
                .arg(from.as_str())
                .arg(to.as_str())
                .invoke_async(&mut c)
                .await?;
        }
        Ok(())
    }

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
        let keep = |r: &v1::EventRecord| {
            filter.source.as_ref().is_none_or(|s| *s == r.source)
                && filter.outcome.is_none_or(|o| r.outcome == i32::from(o))
        };
        if let Some(contact) = &filter.contact {
            return self.list_contact_events(contact, after, limit, keep).await;
        }
        let mut pager = Pager::new(EVENTS, after, limit);
        while let Some(batch) = pager.next_batch(self).await? {
            let records = self
                .load_records(batch.iter().map(|(m, _)| m.as_str()))
                .await?;
            let items = records.into_iter().map(|r| r.filter(|r| keep(r))).collect();
            pager.take(&batch, items);
        }
        Ok(pager.finish())
    }

    async fn list_contact_events(
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
    async fn load_records<'a>(
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

    /// Drops webhook log entries older than the dedup TTL (their records are gone).
    pub async fn trim_log(&self) -> Result<u64, Error> {
        let floor = now_millis() - millis_i64(self.opts.dedup_ttl);
        let mut c = self.conn.clone();
        let removed: u64 = c.zrembyscore(EVENTS, "-inf", format!("({floor}")).await?;
        Ok(removed)
    }
}

/// Gathers one page from a sorted set, newest first: up to `limit` items, or fewer after
/// examining [`SCAN_BUDGET`] members (a rarely matching filter returns a short page with
/// a token to go on).
struct Pager<T> {
    scan: ZScan,
    limit: usize,
    items: Vec<T>,
    done: bool,
}

impl<T> Pager<T> {
    fn new(key: &'static str, after: Option<Cursor>, limit: usize) -> Self {
        Self {
            scan: ZScan::new(key, after),
            limit,
            items: Vec::new(),
            done: false,
        }
    }

    /// The next members to turn into items, or `None` when the page is complete.
    async fn next_batch(&mut self, store: &Store) -> Result<Option<Vec<(String, i64)>>, Error> {
        if self.done || self.items.len() >= self.limit || self.scan.examined >= SCAN_BUDGET {
            return Ok(None);
        }
        let batch = self.scan.next_batch(store, self.limit.max(16)).await?;
        if batch.is_empty() {
            self.done = true;
            return Ok(None);
        }
        Ok(Some(batch))
    }

    /// Adds the items made of `batch` (`None`: not listed), up to the limit.
    fn take(&mut self, batch: &[(String, i64)], items: Vec<Option<T>>) {
        for (i, item) in items.into_iter().enumerate() {
            if let Some(item) = item {
                self.items.push(item);
                if self.items.len() == self.limit {
                    self.scan.rewind_to(batch, i);
                    return;
                }
            }
        }
    }

    fn finish(self) -> Page<T> {
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
struct ZScan {
    key: &'static str,
    after: Option<Cursor>,
    /// Highest score of the first batch, so entries added while paging do not shift
    /// the offsets of a walk that started at the top.
    ceiling: Option<i64>,
    last: Option<Cursor>,
    offset: usize,
    examined: usize,
}

impl ZScan {
    fn new(key: &'static str, after: Option<Cursor>) -> Self {
        Self {
            key,
            last: after.clone(),
            after,
            ceiling: None,
            offset: 0,
            examined: 0,
        }
    }

    /// The next members after the cursor, newest first; empty at the end.
    async fn next_batch(&mut self, store: &Store, n: usize) -> Result<Vec<(String, i64)>, Error> {
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
    fn rewind_to(&mut self, batch: &[(String, i64)], i: usize) {
        if let Some((m, s)) = batch.get(i) {
            self.last = Some(Cursor {
                score: *s,
                member: m.clone(),
            });
        }
    }

    fn position(&self) -> Option<Cursor> {
        self.last.clone()
    }
}

/// The lease an event's caller takes: its dedup key, a token of this attempt, and the
/// identifiers whose index entries are read in the same round trip.
struct Lease {
    key: String,
    token: String,
    idents: Vec<Identifier>,
}

impl Lease {
    fn new(ev: &ParsedEvent) -> Self {
        Self {
            key: event_key(&ev.id),
            token: format!("L{}", uuid::Uuid::now_v7().simple()),
            idents: match &ev.action {
                Ok(effect) => effect.data.identifiers(),
                Err(_) => Vec::new(),
            },
        }
    }
}

/// What became of one event of a batch before the last round trip.
enum Step {
    /// Applied (or ignored) now: its log entry and done marker are still to be written.
    Finish(Applied),
    /// Applied before: nothing to write.
    Duplicate(Applied),
}

/// What taking the lease on an event found.
enum Acquired {
    /// The lease is ours; where the event's identifiers pointed at that moment.
    Lease(Vec<Option<ContactId>>),
    /// The event was applied before.
    Done(Box<v1::EventRecord>),
}

/// Claims `idents` for `owner` with `SET NX` (a nil reply: another contact holds one),
/// and lists `owner` when it is `new`.
fn claims(idents: &[Identifier], owner: &ContactId, new: bool) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    for ident in idents {
        pipe.cmd("SET")
            .arg(index_key(ident))
            .arg(owner.as_str())
            .arg("NX");
    }
    if new {
        pipe.zadd(CONTACTS, owner.as_str(), created_millis(owner))
            .ignore();
    }
    pipe
}

/// What one event's replies in [`Store::try_acquire`] say: the lease with where the
/// identifiers point (`index`, the `MGET` reply), the record of an event applied before,
/// or `None` while another caller holds the lease.
fn acquired(lease: &Lease, reply: Value, index: Option<Value>) -> Result<Option<Acquired>, Error> {
    let current: Option<Vec<u8>> =
        redis::from_redis_value(reply).map_err(|e| Error::Redis(e.into()))?;
    match current.as_deref() {
        None => Ok(Some(Acquired::Lease(match index {
            Some(reply) => pointer_ids(&lease.idents, reply)?,
            None => Vec::new(),
        }))),
        Some([b'D', rest @ ..]) => Ok(Some(Acquired::Done(Box::new(decode_record(
            &lease.key, rest,
        )?)))),
        Some(_) => Ok(None),
    }
}

/// One `MGET` of the index entries of `idents` (a cluster client splits it by slot).
fn index_read(idents: &[Identifier]) -> redis::Cmd {
    let mut cmd = redis::cmd("MGET");
    for ident in idents {
        cmd.arg(index_key(ident));
    }
    cmd
}

/// The reply of [`index_read`], as contact ids.
fn pointer_ids(idents: &[Identifier], reply: Value) -> Result<Vec<Option<ContactId>>, Error> {
    let values: Vec<Value> = match reply {
        Value::Array(values) if values.len() == idents.len() => values,
        _ => {
            return Err(Error::Corrupt {
                key: idents.first().map(index_key).unwrap_or_default(),
                reason: "MGET answered something other than one value per key".to_owned(),
            });
        }
    };
    values
        .into_iter()
        .zip(idents)
        .map(|(v, ident)| {
            let corrupt = |reason: &str| Error::Corrupt {
                key: index_key(ident),
                reason: reason.to_owned(),
            };
            let s: Option<String> =
                redis::from_redis_value(v).map_err(|_| corrupt("not a string"))?;
            s.map(|s| ContactId::parse(&s).map_err(|_| corrupt("not a contact id")))
                .transpose()
        })
        .collect()
}

/// The `HMGET` of a contact's row: its version, record and redirect.
fn contact_row(key: &str) -> redis::Cmd {
    let mut cmd = redis::cmd("HMGET");
    cmd.arg(key).arg("v").arg("d").arg("r");
    cmd
}

fn decode_contact(key: &str, bytes: &[u8]) -> Result<Record, Error> {
    serde_json::from_slice(bytes).map_err(|e| Error::Corrupt {
        key: key.to_owned(),
        reason: e.to_string(),
    })
}

fn decode_record(key: &str, bytes: &[u8]) -> Result<v1::EventRecord, Error> {
    v1::EventRecord::decode(bytes).map_err(|e| Error::Corrupt {
        key: key.to_owned(),
        reason: e.to_string(),
    })
}

/// An applied event's outcome on `contact`, naming the identifiers left elsewhere.
fn applied(contact: ContactId, merges: usize, conflicts: Vec<(Identifier, ContactId)>) -> Applied {
    let reason = conflicts
        .iter()
        .map(|(ident, other)| {
            format!(
                "conflict: this {} belongs to {other}, a different person by email or provider id; left there",
                ident.kind()
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    Applied {
        outcome: v1::EventOutcome::Applied,
        contact_id: Some(contact),
        reason,
        merges,
        conflicts,
    }
}

/// The answer for an event that changed no contact: a duplicate, or an ignored event.
fn unchanged(outcome: v1::EventOutcome, contact_id: Option<ContactId>, reason: String) -> Applied {
    Applied {
        outcome,
        contact_id,
        reason,
        merges: 0,
        conflicts: Vec::new(),
    }
}

/// Creation time of a contact, from its UUID v7.
fn created_millis(id: &ContactId) -> i64 {
    id.as_str()
        .get(3..15)
        .and_then(|hex| i64::from_str_radix(hex, 16).ok())
        .unwrap_or(0)
}

pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, millis_i64)
}

fn millis_i64(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn millis_u64(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
