//! The spool: where the edge keeps verified events that contacts-svc could not take, so
//! that it can acknowledge them (202) and apply them later instead of asking the sender
//! to retry. An entry is on disk (fsync) before the sender is answered; entries that
//! arrive together share one commit ([`writer`]); the replayer ([`replay`]) drains the
//! spool oldest first and removes an entry only after contacts-svc answered for it.
//!
//! Layers: `entry` (the stored bytes of one event, pure), `db` (the redb file, blocking),
//! `writer` (the thread that owns every write), `replay` (the background drain).

mod db;
mod entry;
pub mod replay;
mod writer;

pub use entry::{DecodeError, Entry};

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use tokio::sync::{Notify, mpsc, oneshot};

/// Why the spool cannot take or give back an entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpoolError {
    #[error("cannot open the spool: {0}")]
    Open(String),
    #[error("the spool is full: {held} of spool_max_bytes {max} bytes are held")]
    Full { held: u64, max: u64 },
    #[error("spool storage failed: {0}")]
    Store(String),
    #[error("the spool is closed")]
    Closed,
}

/// What the spool holds now, for metrics and readiness.
#[derive(Debug, Default)]
pub struct Stats {
    entries: AtomicU64,
    bytes: AtomicU64,
    /// Spooled-at time of the oldest entry, Unix ms; 0 when empty.
    oldest_ms: AtomicI64,
    /// Whether the last write group failed in storage (a full disk, say).
    failing: AtomicBool,
    /// Write groups committed.
    commits: AtomicU64,
}

impl Stats {
    /// Stats of a spool holding `entries` of `bytes` in all: for tests of what reads them.
    #[cfg(test)]
    pub fn holding(entries: u64, bytes: u64, failing: bool) -> Self {
        Self {
            entries: AtomicU64::new(entries),
            bytes: AtomicU64::new(bytes),
            failing: AtomicBool::new(failing),
            ..Self::default()
        }
    }

    pub fn entries(&self) -> u64 {
        self.entries.load(Ordering::Relaxed)
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Spooled-at time of the oldest entry, Unix ms.
    pub fn oldest_ms(&self) -> Option<i64> {
        match self.oldest_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(ms),
        }
    }

    /// Whether the last write failed in storage.
    pub fn failing(&self) -> bool {
        self.failing.load(Ordering::Relaxed)
    }

    /// Write groups committed since the spool was opened.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }
}

/// Handle on the spool; cheap to clone. The file closes on [`Closer::close`] (or when
/// the last handle is gone).
#[derive(Clone, Debug)]
pub struct Spool {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    ops: mpsc::Sender<writer::Op>,
    stats: Arc<Stats>,
    /// Woken on every put, so the replayer waits without polling.
    added: Arc<Notify>,
    max_bytes: u64,
}

/// Closes the spool: what was asked of it before is finished, what comes after is
/// refused ([`SpoolError::Closed`]).
#[derive(Debug)]
pub struct Closer {
    ops: mpsc::Sender<writer::Op>,
    thread: std::thread::JoinHandle<()>,
}

impl Closer {
    /// Closes the file and waits until it is closed.
    pub async fn close(self) {
        let _ = self.ops.send(writer::Op::Close).await;
        let thread = self.thread;
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }
}

impl Spool {
    /// Opens the spool in `dir`, holding at most `max_bytes` of entries. Blocks briefly
    /// (a file that was not closed cleanly is checked on open).
    pub fn open(dir: &Path, max_bytes: u64) -> Result<(Self, Closer), SpoolError> {
        let dir = dir.to_path_buf();
        Self::open_with(Box::new(move || db::open(&dir)), max_bytes)
    }

    /// [`Spool::open`] with the file opened by `open`.
    fn open_with(open: writer::Opener, max_bytes: u64) -> Result<(Self, Closer), SpoolError> {
        let (db, contents) = open()?;
        let stats = Arc::new(Stats::default());
        stats.entries.store(contents.entries, Ordering::Relaxed);
        stats.bytes.store(contents.bytes, Ordering::Relaxed);
        stats
            .oldest_ms
            .store(db::oldest(&db)?.unwrap_or(0), Ordering::Relaxed);
        let added = Arc::new(Notify::new());
        let (ops, rx) = mpsc::channel(writer::QUEUE);
        let thread = writer::start(
            open,
            db,
            rx,
            contents,
            max_bytes,
            stats.clone(),
            added.clone(),
        )?;
        let closer = Closer {
            ops: ops.clone(),
            thread,
        };
        let spool = Self {
            inner: Arc::new(Inner {
                ops,
                stats,
                added,
                max_bytes,
            }),
        };
        Ok((spool, closer))
    }

    /// Stores `entry`, on disk when this returns.
    pub async fn put(&self, entry: &Entry) -> Result<(), SpoolError> {
        let bytes = entry.encode();
        let (reply, answer) = oneshot::channel();
        self.inner
            .ops
            .send(writer::Op::Put(bytes, reply))
            .await
            .map_err(|_| SpoolError::Closed)?;
        answer.await.unwrap_or(Err(SpoolError::Closed))
    }

    /// Removes the entries with these keys (those already gone are skipped).
    pub async fn remove(&self, keys: Vec<u64>) -> Result<(), SpoolError> {
        if keys.is_empty() {
            return Ok(());
        }
        let (reply, answer) = oneshot::channel();
        self.inner
            .ops
            .send(writer::Op::Remove(keys, reply))
            .await
            .map_err(|_| SpoolError::Closed)?;
        answer.await.unwrap_or(Err(SpoolError::Closed))
    }

    /// Up to `limit` entries after key `after`, oldest first; an entry that cannot be
    /// read comes back as its error, so one damaged entry holds up no other.
    pub async fn page(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, Result<Entry, DecodeError>)>, SpoolError> {
        let (reply, answer) = oneshot::channel();
        self.inner
            .ops
            .send(writer::Op::Page {
                after,
                limit,
                reply,
            })
            .await
            .map_err(|_| SpoolError::Closed)?;
        let rows = answer.await.unwrap_or(Err(SpoolError::Closed))?;
        Ok(rows
            .into_iter()
            .map(|(key, bytes)| (key, Entry::decode(&bytes)))
            .collect())
    }

    pub fn stats(&self) -> &Stats {
        &self.inner.stats
    }

    /// The most bytes of entries it holds.
    pub fn max_bytes(&self) -> u64 {
        self.inner.max_bytes
    }

    /// Resolves after the next put (or at once if one happened since the last call).
    pub async fn added(&self) {
        self.inner.added.notified().await;
    }
}

#[cfg(test)]
mod tests;
