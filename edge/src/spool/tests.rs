//! The spool against a real file in a temporary directory.

use std::path::PathBuf;

use std::sync::Arc;

use bytes::Bytes;
use hookline_proto::v1;

use super::*;

/// A fresh directory under the system's temporary directory, removed when dropped.
struct Dir(PathBuf);

impl Dir {
    fn new() -> Self {
        let dir =
            std::env::temp_dir().join(format!("hookline-spool-{}", uuid::Uuid::new_v4().simple()));
        Self(dir)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn entry(n: u32) -> Entry {
    Entry {
        spooled_at_ms: 1_764_000_000_000 + i64::from(n),
        item: v1::ApplyEventsItem {
            event: Some(v1::WebhookEvent {
                id: format!("stripe:evt_{n}"),
                source: "stripe".into(),
                ..Default::default()
            }),
            request_id: format!("req-{n}"),
            traceparent: String::new(),
            replay_of: String::new(),
        },
        body: Some(Bytes::from(format!("{{\"id\":\"evt_{n}\"}}"))),
    }
}

async fn ids(spool: &Spool) -> Vec<String> {
    spool
        .page(None, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, e)| e.unwrap().item.event.unwrap().id)
        .collect()
}

#[tokio::test]
async fn entries_come_back_oldest_first_and_survive_a_reopen() {
    let dir = Dir::new();
    let (spool, closer) = Spool::open(&dir.0, u64::MAX).unwrap();
    for n in 0..5 {
        spool.put(&entry(n)).await.unwrap();
    }
    assert_eq!(spool.stats().entries(), 5);
    let size = entry(0).encode().len() as u64;
    assert_eq!(spool.stats().bytes(), 5 * size);
    assert_eq!(spool.stats().oldest_ms(), Some(entry(0).spooled_at_ms));
    let page = spool.page(None, 2).await.unwrap();
    assert_eq!(page.len(), 2);
    assert_eq!(page[0].1.as_ref().unwrap(), &entry(0));
    let next = spool.page(Some(page[1].0), 10).await.unwrap();
    assert_eq!(next.len(), 3);
    assert_eq!(next[0].1.as_ref().unwrap(), &entry(2));

    spool.remove(vec![page[0].0, page[1].0]).await.unwrap();
    assert_eq!(spool.stats().entries(), 3);
    assert_eq!(spool.stats().bytes(), 3 * size);
    assert_eq!(spool.stats().oldest_ms(), Some(entry(2).spooled_at_ms));
    closer.close().await;
    assert_eq!(spool.put(&entry(9)).await, Err(SpoolError::Closed));
    drop(spool);

    let (spool, closer) = Spool::open(&dir.0, u64::MAX).unwrap();
    assert_eq!(spool.stats().entries(), 3);
    assert_eq!(spool.stats().bytes(), 3 * size);
    assert_eq!(spool.stats().oldest_ms(), Some(entry(2).spooled_at_ms));
    spool.put(&entry(5)).await.unwrap();
    assert_eq!(
        ids(&spool).await,
        [
            "stripe:evt_2",
            "stripe:evt_3",
            "stripe:evt_4",
            "stripe:evt_5"
        ]
    );
    closer.close().await;
}

#[tokio::test]
async fn a_put_beyond_the_limit_is_refused_and_changes_nothing() {
    let dir = Dir::new();
    let size = entry(0).encode().len() as u64;
    let (spool, closer) = Spool::open(&dir.0, 2 * size).unwrap();
    spool.put(&entry(0)).await.unwrap();
    spool.put(&entry(1)).await.unwrap();
    let refused = spool.put(&entry(2)).await;
    assert!(
        matches!(refused, Err(SpoolError::Full { max, .. }) if max == 2 * size),
        "{refused:?}"
    );
    assert_eq!(spool.stats().entries(), 2);
    assert_eq!(ids(&spool).await, ["stripe:evt_0", "stripe:evt_1"]);
    // Room again once an entry is gone.
    let first = spool.page(None, 1).await.unwrap()[0].0;
    spool.remove(vec![first]).await.unwrap();
    spool.put(&entry(2)).await.unwrap();
    assert_eq!(ids(&spool).await, ["stripe:evt_1", "stripe:evt_2"]);
    closer.close().await;

    let (off, closer) = Spool::open(&Dir::new().0, 0).unwrap();
    assert!(matches!(
        off.put(&entry(0)).await,
        Err(SpoolError::Full { .. })
    ));
    closer.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn puts_that_arrive_together_share_a_commit() {
    let dir = Dir::new();
    let (spool, closer) = Spool::open(&dir.0, u64::MAX).unwrap();
    let mut puts = tokio::task::JoinSet::new();
    for n in 0..400 {
        let spool = spool.clone();
        puts.spawn(async move { spool.put(&entry(n)).await });
    }
    while let Some(put) = puts.join_next().await {
        put.unwrap().unwrap();
    }
    assert_eq!(spool.stats().entries(), 400);
    let commits = spool.stats().commits();
    assert!(commits < 200, "{commits} commits for 400 concurrent puts");
    closer.close().await;
}

#[tokio::test]
async fn a_second_edge_on_the_same_directory_is_refused() {
    let dir = Dir::new();
    let (_spool, closer) = Spool::open(&dir.0, u64::MAX).unwrap();
    let second = Spool::open(&dir.0, u64::MAX);
    let Err(SpoolError::Open(why)) = second else {
        panic!("a second spool opened on the same file");
    };
    assert!(why.contains("in use by another edge"), "{why}");
    closer.close().await;
    // Closed, it opens again.
    let (_spool, closer) = Spool::open(&dir.0, u64::MAX).unwrap();
    closer.close().await;
}

#[tokio::test]
async fn a_damaged_entry_is_reported_and_holds_up_no_other() {
    let dir = Dir::new();
    let (spool, closer) = Spool::open(&dir.0, u64::MAX).unwrap();
    spool.put(&entry(0)).await.unwrap();
    closer.close().await;
    drop(spool);
    // Written by something that is not this edge's layout.
    {
        let db = redb::Database::create(dir.0.join(db::FILE)).unwrap();
        let tx = db.begin_write().unwrap();
        tx.open_table(redb::TableDefinition::<u64, &[u8]>::new("entries"))
            .unwrap()
            .insert(7, &[9u8, 1, 2][..])
            .unwrap();
        tx.commit().unwrap();
    }
    let (spool, closer) = Spool::open(&dir.0, u64::MAX).unwrap();
    spool.put(&entry(1)).await.unwrap();
    let page = spool.page(None, 10).await.unwrap();
    let shapes: Vec<_> = page.iter().map(|(k, e)| (*k, e.is_ok())).collect();
    assert_eq!(shapes, [(0, true), (7, false), (8, true)]);
    closer.close().await;
}

/// A file backend whose writes and syncs fail while `full` is set, as on a full disk.
#[derive(Debug)]
struct Flaky {
    file: redb::backends::FileBackend,
    full: Arc<std::sync::atomic::AtomicBool>,
}

impl Flaky {
    fn check(&self) -> Result<(), redb::BackendError> {
        if self.full.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(redb::BackendError::Io(std::io::Error::other(
                "no space left on device",
            )));
        }
        Ok(())
    }
}

type Range = std::ops::Bound<u64>;

impl redb::StorageBackend for Flaky {
    fn len(&self) -> Result<u64, redb::BackendError> {
        self.file.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), redb::BackendError> {
        self.file.read(offset, out)
    }
    fn set_len(&self, len: u64) -> Result<(), redb::BackendError> {
        self.check()?;
        self.file.set_len(len)
    }
    fn sync_data(&self) -> Result<(), redb::BackendError> {
        self.check()?;
        self.file.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), redb::BackendError> {
        self.check()?;
        self.file.write(offset, data)
    }
    fn close(&self) -> Result<(), redb::BackendError> {
        self.file.close()
    }
    fn try_lock_range(&self, start: Range, end: Range) -> Result<bool, redb::BackendError> {
        self.file.try_lock_range(start, end)
    }
    fn try_lock_shared_range(&self, start: Range, end: Range) -> Result<bool, redb::BackendError> {
        self.file.try_lock_shared_range(start, end)
    }
    fn lock_range(&self, start: Range, end: Range) -> Result<(), redb::BackendError> {
        self.file.lock_range(start, end)
    }
    fn lock_shared_range(&self, start: Range, end: Range) -> Result<(), redb::BackendError> {
        self.file.lock_shared_range(start, end)
    }
    fn unlock_range(&self, start: Range, end: Range) -> Result<(), redb::BackendError> {
        self.file.unlock_range(start, end)
    }
    fn query_lock_range(&self, start: Range, end: Range) -> Result<bool, redb::BackendError> {
        self.file.query_lock_range(start, end)
    }
}

#[tokio::test]
async fn after_a_storage_error_the_spool_opens_its_file_again_and_goes_on() {
    let dir = Dir::new();
    std::fs::create_dir_all(&dir.0).unwrap();
    let path = dir.0.join(db::FILE);
    let full = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let opener: writer::Opener = {
        let full = full.clone();
        Box::new(move || {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(|e| SpoolError::Open(e.to_string()))?;
            let backend = Flaky {
                file: redb::backends::FileBackend::new(file),
                full: full.clone(),
            };
            let db = redb::Database::builder()
                .create_with_backend(backend)
                .map_err(|e| SpoolError::Open(e.to_string()))?;
            let contents = db::prepare(&db)?;
            Ok((db, contents))
        })
    };
    let (spool, closer) = Spool::open_with(opener, u64::MAX).unwrap();
    spool.put(&entry(0)).await.unwrap();

    full.store(true, std::sync::atomic::Ordering::Relaxed);
    let refused = spool.put(&entry(1)).await;
    assert!(matches!(refused, Err(SpoolError::Store(_))), "{refused:?}");
    assert!(spool.stats().failing());

    // Room again: the spool works again without a restart, and lost nothing.
    full.store(false, std::sync::atomic::Ordering::Relaxed);
    spool.put(&entry(2)).await.unwrap();
    assert!(!spool.stats().failing());
    assert_eq!(ids(&spool).await, ["stripe:evt_0", "stripe:evt_2"]);
    assert_eq!(spool.stats().entries(), 2);
    let first = spool.page(None, 1).await.unwrap()[0].0;
    spool.remove(vec![first]).await.unwrap();
    assert_eq!(ids(&spool).await, ["stripe:evt_2"]);
    closer.close().await;
}

#[tokio::test]
async fn a_damaged_file_is_an_error_naming_it_not_a_crash() {
    let dir = Dir::new();
    std::fs::create_dir_all(&dir.0).unwrap();
    std::fs::write(dir.0.join(db::FILE), vec![0xA5; 64 * 1024]).unwrap();
    let Err(SpoolError::Open(why)) = Spool::open(&dir.0, u64::MAX) else {
        panic!("a damaged spool opened");
    };
    assert!(why.contains(db::FILE), "{why}");
}
