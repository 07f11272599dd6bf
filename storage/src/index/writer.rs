//! The single writer with group commit.
//!
//! Callers queue a write job (a closure over the transaction) and await its reply. One thread
//! takes every job that is waiting, up to [`IndexOptions::max_batch`], runs them in order inside
//! one transaction and commits once: concurrent small writes share one fsync. A reply is sent only
//! after the commit is durable, so an acknowledged write survives `kill -9`.
//!
//! A job that fails must not take the others down with it. Its error aborts the transaction; the
//! failed job gets the error and the rest run again in a fresh transaction. That is why jobs are
//! `FnMut`: they may run more than once, each time against a transaction in which none of their
//! earlier effects exist.
//!
//! An I/O failure (a full disk, above all) poisons a redb database: every later read and write
//! answers "Previous I/O error occurred". The writer then reopens the database, which recovers
//! its last committed state, so the server heals by itself once the cause is gone: the jobs of
//! the failed commit get their error, nothing of them is visible, and the next jobs run against
//! the reopened database. Readers wait for a reopen (milliseconds) rather than fail.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redb::{Database, Durability, ReadableDatabase};
use tokio::sync::{mpsc, oneshot};

use super::ops::{self, Redb};
use crate::error::{Error, Result};
use crate::ports::{BoxFuture, IndexStats, MetadataRead, MetadataStore, Reply, WriteJob as Job};

struct Request {
    job: Job,
    reply: oneshot::Sender<Result<Reply>>,
}

/// Tuning of the index writer.
#[derive(Debug, Clone)]
pub(crate) struct IndexOptions {
    /// fsync every commit (`Durability::Immediate`). Off only for throwaway test data.
    pub(crate) sync: bool,
    /// Most jobs per transaction.
    pub(crate) max_batch: usize,
}

/// The open database, replaced when an I/O failure poisoned it. Readers and the writer hold
/// the read lock for as long as they use a transaction, so a reopen (the write lock) never
/// closes a database under anyone.
struct Slot {
    path: PathBuf,
    db: RwLock<Option<Database>>,
    /// The last commit (or reopen) succeeded.
    healthy: AtomicBool,
}

impl Slot {
    fn guard(&self) -> std::sync::RwLockReadGuard<'_, Option<Database>> {
        // A poisoned lock only means a panic elsewhere; the database itself is still sound.
        self.db.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Closes the poisoned database and opens it again. On failure (the disk may still be
    /// full) the slot stays empty and the next write tries again.
    fn reopen(&self, stats: &IndexStats) {
        let mut db = self.db.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        drop(db.take());
        match Database::create(&self.path) {
            Ok(reopened) => {
                *db = Some(reopened);
                self.healthy.store(true, Ordering::Relaxed);
                stats.count_reopen();
                tracing::warn!("index reopened after an I/O failure");
            }
            Err(e) => {
                tracing::error!(error = %e, "reopening the index failed; retrying on the next write")
            }
        }
    }
}

/// The metadata port on redb: one database file, read in snapshots, written by one thread that
/// group-commits (see `index/writer.rs`).
pub struct RedbIndex {
    slot: Arc<Slot>,
    tx: Option<mpsc::Sender<Request>>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<IndexStats>,
}

impl std::fmt::Debug for RedbIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbIndex").field("stats", &self.stats).finish_non_exhaustive()
    }
}

impl RedbIndex {
    /// Opens (or creates) the database at `path` and checks its schema; redb repairs itself
    /// after a crash on open. `sync` fsyncs every commit (off only for throwaway test data);
    /// `max_batch` is the most write jobs per group commit. Blocking.
    pub fn open(path: &Path, sync: bool, max_batch: usize) -> Result<Self> {
        let options = IndexOptions { sync, max_batch };
        let db = Database::create(path)?;
        let txn = db.begin_write()?;
        ops::init(&txn)?;
        txn.commit()?;
        let slot = Arc::new(Slot {
            path: path.to_owned(),
            db: RwLock::new(Some(db)),
            healthy: AtomicBool::new(true),
        });
        let (tx, rx) = mpsc::channel(options.max_batch.max(1) * 4);
        let stats = Arc::new(IndexStats::default());
        let thread = {
            let slot = slot.clone();
            let stats = stats.clone();
            std::thread::Builder::new()
                .name("ferry-index".into())
                .spawn(move || run(&slot, rx, options, &stats))
                .map_err(Error::io("starting the index writer"))?
        };
        Ok(Self { slot, tx: Some(tx), thread: Some(thread), stats })
    }

    /// Stops the writer after the queued jobs are committed.
    fn shutdown(&mut self) {
        self.tx = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl MetadataStore for RedbIndex {
    /// Runs `f` on a redb snapshot. Reads never wait for the writer.
    fn read(&self, f: &mut dyn FnMut(&mut dyn MetadataRead) -> Result<()>) -> Result<()> {
        let guard = self.slot.guard();
        let db = guard.as_ref().ok_or(Error::Recovering)?;
        let txn = db.begin_read()?;
        f(&mut Redb(&txn))
    }

    /// Queues `job` for the next group commit; resolves once that commit is durable.
    fn write(&self, job: Job) -> BoxFuture<'_, Result<Reply>> {
        Box::pin(async move {
            let (reply, rx) = oneshot::channel();
            let tx = self.tx.as_ref().ok_or(Error::Closed)?;
            tx.send(Request { job, reply }).await.map_err(|_| Error::Closed)?;
            rx.await.map_err(|_| Error::Closed)?
        })
    }

    /// Whether the last commit succeeded (readiness: a poisoned or full index cannot commit).
    fn healthy(&self) -> bool {
        self.slot.healthy.load(Ordering::Relaxed)
    }

    fn backend(&self) -> &'static str {
        "redb"
    }

    fn stats(&self) -> &IndexStats {
        &self.stats
    }
}

impl Drop for RedbIndex {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn run(slot: &Slot, mut rx: mpsc::Receiver<Request>, options: IndexOptions, stats: &IndexStats) {
    /// Least time between two reopen attempts while the database cannot be opened.
    const REOPEN_BACKOFF: Duration = Duration::from_millis(200);
    let mut last_reopen: Option<Instant> = None;
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < options.max_batch {
            match rx.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        let poisoned = {
            let guard = slot.guard();
            match guard.as_ref() {
                Some(db) => {
                    // A job refused by a rule fails alone; only a poisoned database is unhealthy.
                    let failed = commit_batch(db, batch, options.sync, stats);
                    let poisoned = failed && is_poisoned(db);
                    slot.healthy.store(!poisoned, Ordering::Relaxed);
                    poisoned
                }
                None => {
                    fail_all(batch, || Error::Recovering);
                    true
                }
            }
        };
        if poisoned && last_reopen.is_none_or(|at| at.elapsed() >= REOPEN_BACKOFF) {
            last_reopen = Some(Instant::now());
            slot.reopen(stats);
        }
    }
}

/// Whether an I/O failure left `db` unusable (redb then answers every call with `PreviousIo`).
fn is_poisoned(db: &Database) -> bool {
    match db.begin_write() {
        Ok(txn) => txn.abort().is_err(),
        Err(redb::TransactionError::Storage(redb::StorageError::PreviousIo)) => true,
        Err(redb::TransactionError::Storage(redb::StorageError::Io(_))) => true,
        Err(_) => false,
    }
}

/// Runs and commits one batch; returns whether any job or the commit failed.
fn commit_batch(db: &Database, mut batch: Vec<Request>, sync: bool, stats: &IndexStats) -> bool {
    let mut failures = false;
    loop {
        let mut txn = match db.begin_write() {
            Ok(txn) => txn,
            Err(e) => {
                let e = Error::from(e);
                fail_all(batch, || clone_error(&e));
                return true;
            }
        };
        if let Err(e) =
            txn.set_durability(if sync { Durability::Immediate } else { Durability::None })
        {
            let e = e.to_string();
            fail_all(batch, || Error::Index(e.clone().into()));
            return true;
        }
        let mut replies = Vec::with_capacity(batch.len());
        let mut failed = None;
        for (i, request) in batch.iter_mut().enumerate() {
            match (request.job)(&mut Redb(&txn)) {
                Ok(reply) => replies.push(reply),
                Err(e) => {
                    failed = Some((i, e));
                    break;
                }
            }
        }
        if let Some((i, e)) = failed {
            // Roll back everything, tell the failed job, and run the others again.
            failures = true;
            if let Err(abort_err) = txn.abort() {
                tracing::error!(error = %abort_err, "aborting an index transaction failed");
            }
            let request = batch.remove(i);
            let _ = request.reply.send(Err(e));
            if batch.is_empty() {
                return true;
            }
            continue;
        }
        match txn.commit() {
            Ok(()) => {
                stats.count_commit(batch.len() as u64);
                for (request, reply) in batch.into_iter().zip(replies) {
                    let _ = request.reply.send(Ok(reply));
                }
                return failures;
            }
            Err(e) => {
                let e = Error::from(e);
                fail_all(batch, || clone_error(&e));
                return true;
            }
        }
    }
}

/// The same failure for every job of a batch (errors are not `Clone`: a full disk stays a full
/// disk, anything else its message).
fn clone_error(e: &Error) -> Error {
    match e {
        Error::StorageFull { context } => Error::StorageFull { context },
        Error::Recovering => Error::Recovering,
        Error::Index(inner) => Error::Index(inner.to_string().into()),
        other => Error::Index(other.to_string().into()),
    }
}

fn fail_all(batch: Vec<Request>, error: impl Fn() -> Error) {
    tracing::error!(error = %error(), n_jobs = batch.len(), "index commit failed");
    for request in batch {
        let _ = request.reply.send(Err(error()));
    }
}
