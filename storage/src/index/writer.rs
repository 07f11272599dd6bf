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

use std::any::Any;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

use redb::{Database, Durability, ReadTransaction, ReadableDatabase, WriteTransaction};
use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, Result};

type Reply = Box<dyn Any + Send>;
type Job = Box<dyn FnMut(&WriteTransaction) -> Result<Reply> + Send>;

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

/// Counters of the writer, for benchmarks and metrics.
#[derive(Debug, Default)]
pub struct IndexStats {
    commits: AtomicU64,
    jobs: AtomicU64,
}

impl IndexStats {
    /// Transactions committed.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Jobs committed (≥ commits; the ratio is the group-commit factor).
    pub fn jobs(&self) -> u64 {
        self.jobs.load(Ordering::Relaxed)
    }
}

/// The redb database and its writer thread.
pub(crate) struct Index {
    db: Arc<Database>,
    tx: Option<mpsc::Sender<Request>>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<IndexStats>,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index").field("stats", &self.stats).finish_non_exhaustive()
    }
}

impl Index {
    /// Opens (or creates) the database. redb repairs itself after a crash on open.
    pub(crate) fn open(path: &Path, options: IndexOptions) -> Result<Self> {
        let db = Arc::new(Database::create(path)?);
        let (tx, rx) = mpsc::channel(options.max_batch.max(1) * 4);
        let stats = Arc::new(IndexStats::default());
        let thread = {
            let db = db.clone();
            let stats = stats.clone();
            std::thread::Builder::new()
                .name("ferry-index".into())
                .spawn(move || run(db, rx, options, stats))
                .map_err(Error::io("starting the index writer"))?
        };
        Ok(Self { db, tx: Some(tx), thread: Some(thread), stats })
    }

    /// Runs `job` in the next group commit and returns its result once it is durable.
    pub(crate) async fn write<T, F>(&self, mut job: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnMut(&WriteTransaction) -> Result<T> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let job: Job = Box::new(move |txn| job(txn).map(|v| Box::new(v) as Reply));
        let tx = self.tx.as_ref().ok_or(Error::Closed)?;
        tx.send(Request { job, reply }).await.map_err(|_| Error::Closed)?;
        let value = rx.await.map_err(|_| Error::Closed)??;
        Ok(*value.downcast::<T>().expect("a write job's reply has the job's type"))
    }

    /// Runs `f` on a consistent snapshot. Reads never wait for the writer.
    pub(crate) fn read<T>(&self, f: impl FnOnce(&ReadTransaction) -> Result<T>) -> Result<T> {
        let txn = self.db.begin_read()?;
        f(&txn)
    }

    pub(crate) fn stats(&self) -> &Arc<IndexStats> {
        &self.stats
    }

    /// Stops the writer after the queued jobs are committed.
    pub(crate) fn shutdown(&mut self) {
        self.tx = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Index {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn run(
    db: Arc<Database>,
    mut rx: mpsc::Receiver<Request>,
    options: IndexOptions,
    stats: Arc<IndexStats>,
) {
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < options.max_batch {
            match rx.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        commit_batch(&db, batch, options.sync, &stats);
    }
}

fn commit_batch(db: &Database, mut batch: Vec<Request>, sync: bool, stats: &IndexStats) {
    loop {
        let mut txn = match db.begin_write() {
            Ok(txn) => txn,
            Err(e) => return fail_all(batch, &e.to_string()),
        };
        if let Err(e) =
            txn.set_durability(if sync { Durability::Immediate } else { Durability::None })
        {
            return fail_all(batch, &e.to_string());
        }
        let mut replies = Vec::with_capacity(batch.len());
        let mut failed = None;
        for (i, request) in batch.iter_mut().enumerate() {
            match (request.job)(&txn) {
                Ok(reply) => replies.push(reply),
                Err(e) => {
                    failed = Some((i, e));
                    break;
                }
            }
        }
        if let Some((i, e)) = failed {
            // Roll back everything, tell the failed job, and run the others again.
            if let Err(abort_err) = txn.abort() {
                tracing::error!(error = %abort_err, "aborting an index transaction failed");
            }
            let request = batch.remove(i);
            let _ = request.reply.send(Err(e));
            if batch.is_empty() {
                return;
            }
            continue;
        }
        match txn.commit() {
            Ok(()) => {
                stats.commits.fetch_add(1, Ordering::Relaxed);
                stats.jobs.fetch_add(batch.len() as u64, Ordering::Relaxed);
                for (request, reply) in batch.into_iter().zip(replies) {
                    let _ = request.reply.send(Ok(reply));
                }
            }
            Err(e) => fail_all(batch, &e.to_string()),
        }
        return;
    }
}

fn fail_all(batch: Vec<Request>, message: &str) {
    tracing::error!(error = message, n_jobs = batch.len(), "index commit failed");
    for request in batch {
        let _ = request.reply.send(Err(Error::Index(message.to_owned().into())));
    }
}
