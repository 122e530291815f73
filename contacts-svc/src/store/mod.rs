//! All Redis access; nothing else in contacts-svc sees Redis. The connection (one server
//! or a cluster) is in `conn.rs`, the key layout and the scripts in `keys.rs`, leases and
//! done markers in `lease.rs`, resolving and writing contacts in `apply.rs` (one event),
//! `batch.rs` and `round.rs` (the round trips a batch shares), reads and listings in
//! `read.rs`, erasing a contact in `erase.rs`.
//!
//! ```text
//! hl:schema                  string  the layout's version ("2"; see `schema.rs`)
//! hl:ev:{<event id>}         string  "L<token>" while one caller applies the event (lease,
//!                                    PX), then "D" + EventRecord protobuf (EX dedup TTL);
//!                                    "W<log entry id> " + EventRecord when it waited for
//!                                    replicas (the listing shows it at that entry only)
//! hl:rp:{<record id>}        string  lock of one replay of that record while it applies
//! hl:c:{<contact id>}        string  version + record + the contact's log, or version + the
//!                                    survivor's id once merged, or version + a tombstone
//!                                    once erased (see `stored.rs`)
//! hl:idx:<kind>:<value>      string  contact id holding an identifier (created with SET NX)
//! hl:contacts:new            stream  contacts as created: an entry per batch naming them
//! hl:events:log              stream  the webhook log: an entry per batch naming its events
//!                                    with their receipt times, trimmed by its retention
//! ```
//!
//! The layout runs on Redis Cluster: every key of one contact shares the hash tag
//! `{<contact id>}`, each script touches one key, and `conn.rs` cuts pipelines by slot. A contact's update and its log
//! entry are one value, so a crash leaves nothing half applied. Everything else (index
//! claims, merges, the listings) is idempotent and ordered so that a retry after a crash
//! completes the work.
//!
//! Round trips: an `ApplyEvents` batch shares all three of a new event's. One pipeline
//! takes every event's lease and reads its index entries (`SET … NX GET`, `MGET`); then
//! the events' first writes go together (`round.rs`): one pipeline with one `XADD`
//! listing the batch's new contacts, then each event's index claims and contact write
//! (merges take a few more); one pipeline writes the batch's webhook log entry (a single
//! `XADD`) and every done marker. A new event costs three round trips whatever the batch
//! size, and no script: a new contact is written with `SET … NX`.

mod apply;
mod batch;
mod conn;
mod erase;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
mod keys;
mod lease;
mod page;
mod read;
mod round;
pub mod schema;
mod stored;

use std::time::Duration;

use hookline_proto::v1;

use crate::contact::{ContactId, Erasure, Identifier, Record};
use crate::error::Error;

pub use page::{Cursor, Page};
pub use read::EventFilter;
pub use schema::{Layout, MigrateReport};

/// Tuning of deduplication and leases.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// How long an applied event id is remembered, with its record; must outlive every
    /// sender's retries.
    pub dedup_ttl: Duration,
    /// How long the webhook log lists an event (at most `dedup_ttl`: its record goes then).
    pub log_retention: Duration,
    /// How long one caller may hold an event before another may take it over.
    pub lease: Duration,
    /// How long a second delivery of an event in progress waits for the first.
    pub lease_wait: Duration,
    /// Timeout of every Redis command.
    pub command_timeout: Duration,
    /// Replicas that must confirm a batch's writes (`WAIT`, on every master of a
    /// cluster) before its events count as applied; 0: none.
    pub wait_replicas: u32,
    /// How long to wait for them before answering "retry later".
    pub wait_timeout: Duration,
    /// For `rediss://`: the authority to trust instead of the system's, and a client
    /// certificate for Redis's `tls-auth-clients`.
    pub tls: Option<RedisTls>,
}

/// TLS to Redis: PEM bytes. Its `Debug` shows nothing: it may hold a private key.
#[derive(Clone, Default)]
pub struct RedisTls {
    pub ca: Option<Vec<u8>>,
    /// The client certificate and its key, both or neither.
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for RedisTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedisTls([redacted])")
    }
}

impl RedisTls {
    fn certificates(&self) -> redis::TlsCertificates {
        redis::TlsCertificates {
            client_tls: self.client.clone().map(|(client_cert, client_key)| {
                redis::ClientTlsConfig {
                    client_cert,
                    client_key,
                }
            }),
            root_cert: self.ca.clone(),
        }
    }
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            dedup_ttl: Duration::from_secs(30 * 24 * 3600),
            log_retention: Duration::from_secs(30 * 24 * 3600),
            lease: Duration::from_secs(10),
            lease_wait: Duration::from_secs(2),
            command_timeout: Duration::from_secs(2),
            wait_replicas: 0,
            wait_timeout: Duration::from_secs(1),
            tls: None,
        }
    }
}

/// What became of an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    pub outcome: v1::EventOutcome,
    pub contact_id: Option<ContactId>,
    /// Why it was not applied (ignored, body required).
    pub reason: String,
    /// What was changed while reading and applying it (see `v1::ApplyEventResponse`).
    pub notes: Vec<String>,
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
    /// The events applied to it, newest first (see `stored.rs`).
    pub(crate) log: Vec<(i64, String)>,
    /// Set when the contact was erased: `record` and `log` are then empty, and nothing
    /// may be written into it.
    pub erased: Option<Erasure>,
}

impl Loaded {
    /// A contact nobody has written: version 0, empty.
    pub(super) fn unwritten(id: ContactId) -> Self {
        Self {
            id,
            version: 0,
            record: Record::default(),
            log: Vec::new(),
            erased: None,
        }
    }

    /// The tombstone of an erased contact at `version`.
    pub(super) fn tombstone(id: ContactId, version: u64, erasure: Erasure) -> Self {
        Self {
            erased: Some(erasure),
            version,
            ..Self::unwritten(id)
        }
    }

    /// The public view: the contact, or the tombstone of an erased one.
    pub fn to_proto(&self) -> v1::Contact {
        match &self.erased {
            Some(erasure) => erasure.to_proto(&self.id),
            None => self.record.to_proto(&self.id),
        }
    }
}

/// Handle on the Redis database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    conn: conn::Conn,
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
        let certs = opts.tls.as_ref().map(RedisTls::certificates);
        let conn = conn::Conn::single(url, opts.command_timeout, certs)?;
        Ok(Self { conn, opts })
    }

    /// Prepares a connection to the Redis Cluster `nodes` belong to, without connecting.
    pub fn open_cluster(nodes: &[String], opts: StoreOptions) -> Result<Self, redis::RedisError> {
        let certs = opts.tls.as_ref().map(RedisTls::certificates);
        let conn = conn::Conn::cluster(nodes, opts.command_timeout, certs)?;
        Ok(Self { conn, opts })
    }

    /// Waits until `wait_replicas` replicas (of every master) hold every write this
    /// process sent so far, at most `wait_timeout`.
    pub(super) async fn replicated(&self) -> Result<(), Error> {
        let wanted = self.opts.wait_replicas;
        if wanted == 0 {
            return Ok(());
        }
        let mut c = self.conn.clone();
        let timeout = u64::try_from(self.opts.wait_timeout.as_millis()).unwrap_or(u64::MAX);
        // On a cluster the client sends WAIT to every master and answers the least.
        let acked: i64 = redis::cmd("WAIT")
            .arg(wanted)
            .arg(timeout.max(1))
            .query_async(&mut c)
            .await?;
        let acked = u32::try_from(acked).unwrap_or(0);
        if acked < wanted {
            return Err(Error::Replicas { wanted, acked });
        }
        Ok(())
    }

    /// Whether Redis answers, and a cluster covers every slot (`cluster_state:ok`).
    pub async fn ping(&self) -> Result<(), Error> {
        let mut c = self.conn.clone();
        if self.conn.is_cluster() {
            let info: String = redis::cmd("CLUSTER")
                .arg("INFO")
                .query_async(&mut c)
                .await?;
            if !info.lines().any(|l| l.trim() == "cluster_state:ok") {
                return Err(Error::Redis(redis::RedisError::from((
                    redis::ErrorKind::Server(redis::ServerErrorKind::ClusterDown),
                    "the cluster does not cover every slot",
                ))));
            }
        } else {
            let _: String = redis::cmd("PING").query_async(&mut c).await?;
        }
        Ok(())
    }

    /// Runs `pipe` (no scripts: those are invoked on their own, which reloads them if a
    /// Redis restart emptied its script cache).
    pub(super) async fn query<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T, Error> {
        let mut c = self.conn.clone();
        Ok(pipe.query_async(&mut c).await?)
    }
}

pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, millis_i64)
}

pub(super) fn millis_i64(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

pub(super) fn millis_u64(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Waiting for another caller to finish: pauses that double from 2 ms to 50 ms, for at
/// most `limit` in all.
pub(super) struct Patience {
    started: std::time::Instant,
    pause: Duration,
    limit: Duration,
}

impl Patience {
    pub(super) fn new(limit: Duration) -> Self {
        Self {
            started: std::time::Instant::now(),
            pause: Duration::from_millis(2),
            limit,
        }
    }

    /// Waits the next pause; `false`, at once, when the time is up.
    pub(super) async fn wait(&mut self) -> bool {
        if self.started.elapsed() >= self.limit {
            return false;
        }
        tokio::time::sleep(self.pause).await;
        self.pause = (self.pause * 2).min(Duration::from_millis(50));
        true
    }
}
