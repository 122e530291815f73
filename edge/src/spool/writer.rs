//! The thread that owns the spool's file: every write and read goes through it, and the
//! file closes when it ends (on [`Op::Close`], or when every handle is gone). Puts and
//! removals that queue up while
//! a commit is on its way to disk go together in the next one: under an outage at full
//! load the spool costs one fsync per group, not one per event. A put that would take
//! the spool past `spool_max_bytes` is refused on its own; a group whose commit fails
//! fails as a whole, and nothing of it counts.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::{Notify, mpsc, oneshot};

use super::db::{self, Change, Contents, Rows};
use super::{SpoolError, Stats};

/// Operations waiting for the writer.
pub const QUEUE: usize = 4096;
/// Most operations in one commit.
const MAX_GROUP: usize = 512;
/// Most bytes put in one commit, unless one entry is larger (it then goes alone).
const MAX_GROUP_BYTES: usize = 16 * 1024 * 1024;

/// One request to the writer.
#[derive(Debug)]
pub enum Op {
    Put(Vec<u8>, oneshot::Sender<Result<(), SpoolError>>),
    Remove(Vec<u64>, oneshot::Sender<Result<(), SpoolError>>),
    /// Up to `limit` entries after a key, oldest first, as stored.
    Page {
        after: Option<u64>,
        limit: usize,
        reply: oneshot::Sender<Result<Rows, SpoolError>>,
    },
    /// Finish what came before, then close the file.
    Close,
}

impl Op {
    fn bytes(&self) -> usize {
        match self {
            Self::Put(b, _) => b.len(),
            Self::Remove(..) | Self::Page { .. } | Self::Close => 0,
        }
    }
}

/// Opens the spool's file and counts what it holds: at start, and again after a
/// storage error.
pub type Opener = Box<dyn Fn() -> Result<(redb::Database, Contents), SpoolError> + Send>;

/// Starts the writer thread on the file `open` opened; it ends on [`Op::Close`] or when
/// every sender of `ops` is dropped.
pub fn start(
    open: Opener,
    db: redb::Database,
    ops: mpsc::Receiver<Op>,
    contents: Contents,
    max_bytes: u64,
    stats: Arc<Stats>,
    added: Arc<Notify>,
) -> Result<std::thread::JoinHandle<()>, SpoolError> {
    let writer = Writer {
        open,
        db: Some(db),
        next: contents.next,
        max_bytes,
        stats,
        added,
    };
    std::thread::Builder::new()
        .name("edge-spool".to_owned())
        .spawn(move || writer.run(ops))
        .map_err(|e| SpoolError::Open(format!("cannot start the spool's writer: {e}")))
}

struct Writer {
    open: Opener,
    /// `None` after a storage error: redb refuses every operation after an I/O error
    /// until the file is opened again, which the next operation does.
    db: Option<redb::Database>,
    /// Sequence number of the next entry.
    next: u64,
    max_bytes: u64,
    stats: Arc<Stats>,
    added: Arc<Notify>,
}

impl Writer {
    fn run(mut self, mut ops: mpsc::Receiver<Op>) {
        let mut carried: Option<Op> = None;
        loop {
            let Some(first) = carried.take().or_else(|| ops.blocking_recv()) else {
                return;
            };
            let mut bytes = 0;
            let mut group = Vec::new();
            let mut next = Some(first);
            let mut closing = false;
            while let Some(op) = next.take() {
                match op {
                    Op::Page {
                        after,
                        limit,
                        reply,
                    } => {
                        let page = self.db().and_then(|db| db::page(db, after, limit));
                        if page.is_err() {
                            self.lost();
                        }
                        let _ = reply.send(page);
                    }
                    Op::Close => {
                        closing = true;
                        break;
                    }
                    op => {
                        bytes += op.bytes();
                        if bytes > MAX_GROUP_BYTES && !group.is_empty() {
                            carried = Some(op);
                            break;
                        }
                        group.push(op);
                    }
                }
                if group.len() < MAX_GROUP {
                    next = ops.try_recv().ok();
                }
            }
            self.commit(group);
            if closing {
                tracing::info!(spooled = self.stats.entries(), "spool closed");
                return;
            }
        }
    }

    /// The open file, opened again if a storage error closed it. Its contents are
    /// counted anew: a commit that failed may have reached the disk or not.
    fn db(&mut self) -> Result<&redb::Database, SpoolError> {
        if self.db.is_none() {
            let (db, contents) = (self.open)().map_err(|e| {
                self.stats.failing.store(true, Ordering::Relaxed);
                SpoolError::Store(e.to_string())
            })?;
            let s = &self.stats;
            s.entries.store(contents.entries, Ordering::Relaxed);
            s.bytes.store(contents.bytes, Ordering::Relaxed);
            let oldest = db::oldest(&db).ok().flatten().unwrap_or(0);
            s.oldest_ms.store(oldest, Ordering::Relaxed);
            self.next = self.next.max(contents.next);
            tracing::info!(
                spooled = contents.entries,
                "spool opened again after a storage error"
            );
            self.db = Some(db);
        }
        self.db
            .as_ref()
            .ok_or_else(|| SpoolError::Store("the spool is not open".into()))
    }

    /// A storage error: the file is closed, to be opened again by the next operation.
    fn lost(&mut self) {
        self.stats.failing.store(true, Ordering::Relaxed);
        self.db = None;
    }

    /// Writes one group and answers each of its operations.
    fn commit(&mut self, group: Vec<Op>) {
        if group.is_empty() {
            return;
        }
        let held = self.stats.bytes();
        let mut adding = 0u64;
        let mut next = self.next;
        // Which puts fit, in order; the others are refused without touching the file.
        let mut changes = Vec::with_capacity(group.len());
        let mut admitted = Vec::with_capacity(group.len());
        for op in &group {
            match op {
                Op::Put(bytes, _) => {
                    let size = bytes.len() as u64;
                    let fits = held.saturating_add(adding).saturating_add(size) <= self.max_bytes;
                    admitted.push(fits);
                    if fits {
                        changes.push(Change::Put(next, bytes));
                        next += 1;
                        adding += size;
                    }
                }
                Op::Remove(keys, _) => {
                    admitted.push(true);
                    changes.extend(keys.iter().map(|k| Change::Remove(*k)));
                }
                Op::Page { .. } | Op::Close => admitted.push(false),
            }
        }
        let puts = changes
            .iter()
            .filter(|c| matches!(c, Change::Put(..)))
            .count() as u64;
        let result = if changes.is_empty() {
            Ok(db::Written::default())
        } else {
            self.db().and_then(|db| db::write(db, &changes))
        };
        drop(changes);
        match &result {
            Ok(written) => {
                self.next = next;
                let s = &self.stats;
                s.entries.fetch_add(puts, Ordering::Relaxed);
                s.entries
                    .fetch_sub(written.removed.min(s.entries()), Ordering::Relaxed);
                let bytes = held.saturating_add(adding).saturating_sub(written.freed);
                s.bytes.store(bytes, Ordering::Relaxed);
                s.oldest_ms
                    .store(written.oldest_ms.unwrap_or(0), Ordering::Relaxed);
                s.failing.store(false, Ordering::Relaxed);
                s.commits.fetch_add(1, Ordering::Relaxed);
                if puts > 0 {
                    self.added.notify_one();
                }
            }
            Err(e) => {
                tracing::error!(error = %e, operations = group.len(), "spool write failed");
                self.lost();
            }
        }
        let full = SpoolError::Full {
            held: held.saturating_add(adding),
            max: self.max_bytes,
        };
        for (op, fits) in group.into_iter().zip(admitted) {
            let answer = match (&result, fits) {
                (_, false) => Err(full.clone()),
                (Ok(_), true) => Ok(()),
                (Err(e), true) => Err(e.clone()),
            };
            if let Op::Put(_, reply) | Op::Remove(_, reply) = op {
                let _ = reply.send(answer);
            }
        }
    }
}
