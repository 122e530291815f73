//! The spool's file: a redb database under `spool_dir`, one table of entries keyed by a
//! sequence number (so key order is arrival order) and one of metadata holding the
//! layout's version. Everything here blocks; [`super::writer`] and the readers call it
//! from threads of their own.

use std::path::Path;

use redb::{Database, Durability, ReadableDatabase as _, ReadableTable as _, TableDefinition};

use super::SpoolError;

/// Entries by sequence number, oldest first.
const ENTRIES: TableDefinition<u64, &[u8]> = TableDefinition::new("entries");
/// `layout` → the version of the file's layout.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// The layout this edge writes and reads.
pub const LAYOUT: u64 = 1;
/// Most bytes of entries one page holds, unless its first entry alone is larger.
const PAGE_BYTES: usize = 8 * 1024 * 1024;
/// The file's name under `spool_dir`.
pub const FILE: &str = "spool.redb";

/// What the file holds, counted when it is opened and kept up to date by the writer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Contents {
    pub entries: u64,
    pub bytes: u64,
    /// Sequence number of the next entry.
    pub next: u64,
}

/// Opens (or creates) the spool in `dir`, checks its layout and counts what it holds.
/// An edge already running on the same directory holds the file's lock: a second one
/// refuses to start rather than share it.
pub fn open(dir: &Path) -> Result<(Database, Contents), SpoolError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| SpoolError::Open(format!("{}: {e}", dir.display())))?;
    let path = dir.join(FILE);
    // redb may panic on a file damaged outside it: that is an error to report, naming
    // the file, not a crash on every start.
    let created =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Database::create(&path)))
            .map_err(|_| {
                SpoolError::Open(format!(
                    "{} is damaged and cannot be read: move it aside (it holds acknowledged \
                 events: keep it for recovery) and start again",
                    path.display()
                ))
            })?;
    let db = created.map_err(|e| match e {
        redb::DatabaseError::DatabaseAlreadyOpen => SpoolError::Open(format!(
            "{} is in use by another edge: give each edge a spool_dir of its own",
            path.display()
        )),
        other => SpoolError::Open(format!("{}: {other}", path.display())),
    })?;
    let contents =
        prepare(&db).map_err(|e| SpoolError::Open(format!("{}: {e}", path.display())))?;
    Ok((db, contents))
}

/// Creates the tables of a new file or checks the layout of an old one, and counts.
pub fn prepare(db: &Database) -> Result<Contents, SpoolError> {
    let tx = db.begin_write().map_err(store)?;
    {
        let mut meta = tx.open_table(META).map_err(store)?;
        let layout = meta.get("layout").map_err(store)?.map(|v| v.value());
        match layout {
            None => {
                meta.insert("layout", LAYOUT).map_err(store)?;
            }
            Some(LAYOUT) => {}
            Some(other) => {
                return Err(SpoolError::Open(format!(
                    "spool layout {other} is newer than this edge's ({LAYOUT}): run the edge \
                     that wrote it until the spool is empty, or a newer edge"
                )));
            }
        }
        tx.open_table(ENTRIES).map_err(store)?;
    }
    tx.commit().map_err(store)?;
    let read = db.begin_read().map_err(store)?;
    let entries = read.open_table(ENTRIES).map_err(store)?;
    let mut contents = Contents::default();
    for row in entries.iter().map_err(store)? {
        let (key, value) = row.map_err(store)?;
        contents.entries += 1;
        contents.bytes += value.value().len() as u64;
        contents.next = key.value().saturating_add(1);
    }
    Ok(contents)
}

/// Stored entries by key, oldest first.
pub type Rows = Vec<(u64, Vec<u8>)>;

/// One change of a write group.
#[derive(Debug)]
pub enum Change<'a> {
    Put(u64, &'a [u8]),
    Remove(u64),
}

/// Applies `changes` in one transaction, on disk (fsync) when this returns. Returns the
/// bytes each removal freed (0 for an entry already gone) and the spooled-at time of
/// the oldest entry left.
pub fn write(db: &Database, changes: &[Change<'_>]) -> Result<Written, SpoolError> {
    let mut tx = db.begin_write().map_err(store)?;
    tx.set_durability(Durability::Immediate).map_err(store)?;
    let mut freed = 0;
    let mut removed = 0;
    let oldest;
    {
        let mut entries = tx.open_table(ENTRIES).map_err(store)?;
        for change in changes {
            match change {
                Change::Put(key, value) => {
                    entries.insert(*key, *value).map_err(store)?;
                }
                Change::Remove(key) => {
                    if let Some(old) = entries.remove(*key).map_err(store)? {
                        freed += old.value().len() as u64;
                        removed += 1;
                    }
                }
            }
        }
        oldest = entries
            .first()
            .map_err(store)?
            .map(|(_, v)| super::Entry::spooled_at(v.value()));
    }
    tx.commit().map_err(store)?;
    Ok(Written {
        freed,
        removed,
        oldest_ms: oldest.flatten(),
    })
}

/// What a write group did besides its puts.
#[derive(Debug, Default)]
pub struct Written {
    pub freed: u64,
    pub removed: u64,
    pub oldest_ms: Option<i64>,
}

/// Up to `limit` entries (and about [`PAGE_BYTES`]) after sequence number `after` (from
/// the first when `None`), oldest first, as stored.
pub fn page(db: &Database, after: Option<u64>, limit: usize) -> Result<Rows, SpoolError> {
    let read = db.begin_read().map_err(store)?;
    let entries = read.open_table(ENTRIES).map_err(store)?;
    let range = match after {
        Some(k) => entries.range(k.saturating_add(1)..),
        None => entries.range(0..),
    }
    .map_err(store)?;
    let mut out = Vec::with_capacity(limit.min(256));
    let mut bytes = 0;
    for row in range.take(limit) {
        let (key, value) = row.map_err(store)?;
        // Bounded in bytes too (bodies may be large), but never empty.
        bytes += value.value().len();
        if bytes > PAGE_BYTES && !out.is_empty() {
            break;
        }
        out.push((key.value(), value.value().to_vec()));
    }
    Ok(out)
}

/// The spooled-at time of the oldest entry.
pub fn oldest(db: &Database) -> Result<Option<i64>, SpoolError> {
    let read = db.begin_read().map_err(store)?;
    let entries = read.open_table(ENTRIES).map_err(store)?;
    let first = entries.first().map_err(store)?;
    Ok(first.and_then(|(_, v)| super::Entry::spooled_at(v.value())))
}

fn store(e: impl Into<redb::Error>) -> SpoolError {
    SpoolError::Store(e.into().to_string())
}
