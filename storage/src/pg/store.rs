//! [`PgIndex`]: the metadata port on PostgreSQL.
//!
//! # Writes: one writer, group commit, one lock
//!
//! As with redb, callers queue write jobs to one writer thread, which runs whatever has queued
//! up (at most `max_batch`) in one transaction and answers each job after `COMMIT` returns (with
//! PostgreSQL's default `synchronous_commit = on`, after the WAL is flushed). A job that fails
//! is rolled back to its own savepoint; the others commit. Every write transaction begins by
//! taking a transaction-level advisory lock (one key per schema) at `READ COMMITTED`: the
//! statements after it see every earlier commit, and two Ferry processes on one database take
//! turns, so writes are serializable by construction (no serialization failures to retry) and
//! event sequences are gap-free and in commit order, as the port demands.
//!
//! A connection lost before `COMMIT` was sent (PostgreSQL restarting, the network) is not the
//! jobs' fault: the writer reconnects and runs the batch again, up to [`WRITE_ATTEMPTS`] times
//! with a growing pause (50 ms × 4ⁿ: 4.25 s in all); then the jobs fail with
//! [`Error::Unavailable`] and the store reports itself unhealthy. While it is, a batch tries
//! once (a readiness probe learns at once that the database is still away); the first commit
//! that succeeds makes it healthy again. A connection lost
//! during `COMMIT` leaves the outcome unknown: the jobs fail with [`Error::Unavailable`] and are
//! not run again (a caller that retries finds what did commit, e.g. an upload's offset).
//!
//! # Reads
//!
//! A read runs on a pooled connection in a `REPEATABLE READ READ ONLY` transaction: one snapshot
//! for the whole closure. The facade's reads are synchronous and called on tokio workers, so a
//! read runs inside `tokio::task::block_in_place` (the server's runtime is multi-threaded).
//!
//! # The connections' runtime
//!
//! The connections are `tokio-postgres` connections driven by a small runtime of this store's
//! own (one worker thread, `ferry-pg`): a caller blocks on its query with that runtime's handle,
//! which works from the writer thread, the blocking pool and `block_in_place` alike, and the
//! store shuts the runtime down without blocking when it is dropped.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::runtime::{Handle, Runtime, RuntimeFlavor};
use tokio::sync::{mpsc, oneshot};

use super::ops::Conn;
use super::schema::{MIGRATIONS, MIGRATIONS_TABLE};
use crate::error::{Error, Result};
use crate::ports::{BoxFuture, IndexStats, MetadataRead, MetadataStore, Reply, WriteJob as Job};

/// How often the writer runs a batch whose connection was lost before its commit.
pub const WRITE_ATTEMPTS: u32 = 5;

/// Connections kept idle for reads.
const IDLE_READERS: usize = 16;

/// Where and how to keep the metadata in PostgreSQL. Its `Debug` shows neither the URL's
/// password nor `password`.
#[derive(Clone)]
pub struct PgOptions {
    /// A libpq connection string or `postgres://` URL (user, password, host, port, database).
    pub url: String,
    /// The password, if not in `url` (from a secret file or the environment).
    pub password: Option<String>,
    /// The schema that holds Ferry's tables (created if missing): several deployments, or
    /// tests, can share one database. Lower-case letters, digits and `_`.
    pub schema: String,
    /// Most write jobs per transaction.
    pub max_batch: usize,
}

impl PgOptions {
    /// The default schema, `ferry`.
    pub const DEFAULT_SCHEMA: &'static str = "ferry";

    /// Options for `url` with the default schema and batch size.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            password: None,
            schema: Self::DEFAULT_SCHEMA.into(),
            max_batch: 512,
        }
    }
}

impl std::fmt::Debug for PgOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let config: Option<tokio_postgres::Config> = self.url.parse().ok();
        let hosts = config.as_ref().map(|c| (c.get_hosts().len(), c.get_ports().to_vec()));
        f.debug_struct("PgOptions")
            .field("user", &config.as_ref().and_then(|c| c.get_user().map(str::to_owned)))
            .field("hosts_and_ports", &hosts)
            .field("dbname", &config.as_ref().and_then(|c| c.get_dbname().map(str::to_owned)))
            .field("schema", &self.schema)
            .field("max_batch", &self.max_batch)
            .finish_non_exhaustive()
    }
}

struct Request {
    job: Job,
    reply: oneshot::Sender<Result<Reply>>,
}

/// What connects, shared by the writer and the readers.
struct Connector {
    config: tokio_postgres::Config,
    schema: String,
    rt: Handle,
}

impl Connector {
    fn connect(&self) -> Result<Conn> {
        let (client, connection) = self
            .rt
            .block_on(self.config.connect(tokio_postgres::NoTls))
            .map_err(|e| Error::Unavailable(format!("connecting to PostgreSQL: {e}")))?;
        self.rt.spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "a PostgreSQL connection ended");
            }
        });
        let conn = Conn::new(client, self.rt.clone());
        conn.batch(&format!("SET search_path TO {}", self.schema))?;
        Ok(conn)
    }
}

/// The metadata port on PostgreSQL. See the [module](self) for how it writes and reads.
pub struct PgIndex {
    connector: Arc<Connector>,
    readers: Mutex<Vec<Conn>>,
    tx: Option<mpsc::Sender<Request>>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<IndexStats>,
    healthy: Arc<AtomicBool>,
    runtime: Option<Runtime>,
}

impl std::fmt::Debug for PgIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgIndex")
            .field("schema", &self.connector.schema)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// Runs blocking PostgreSQL work from wherever the facade calls: inside `block_in_place` on a
/// tokio worker, directly elsewhere.
fn blocking<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        Ok(_) => Err(Error::Index(
            "the PostgreSQL metadata store needs a multi-threaded tokio runtime".into(),
        )),
        Err(_) => f(),
    }
}

/// The advisory-lock key of a schema's writers (migrations use the next one).
fn lock_key(schema: &str) -> i64 {
    let mut hasher = DefaultHasher::new();
    ("ferry-writer", schema).hash(&mut hasher);
    (hasher.finish() & !1) as i64
}

impl PgIndex {
    /// Connects, creates the schema if needed and applies the migrations this build has and
    /// the database lacks (refusing a database migrated by a newer build), then starts the
    /// writer. Blocking.
    pub fn open(options: PgOptions) -> Result<Self> {
        if options.schema.is_empty()
            || !options
                .schema
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(Error::Index(
                format!("schema {:?}: use lower-case letters, digits and _", options.schema).into(),
            ));
        }
        let mut config: tokio_postgres::Config = options
            .url
            .parse()
            .map_err(|e| Error::Index(format!("the PostgreSQL URL: {e}").into()))?;
        if let Some(password) = &options.password {
            config.password(password.as_bytes());
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        if config.get_application_name().is_none() {
            config.application_name("ferry");
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("ferry-pg")
            .enable_all()
            .build()
            .map_err(Error::io("starting the PostgreSQL runtime"))?;
        let connector = Arc::new(Connector {
            config,
            schema: options.schema.clone(),
            rt: runtime.handle().clone(),
        });
        let key = lock_key(&options.schema);
        let first = match blocking(|| migrate(&connector, key + 1)) {
            Ok(conn) => conn,
            Err(e) => {
                // Dropping a runtime blocks, which an async caller must not: let it go.
                runtime.shutdown_background();
                return Err(e);
            }
        };
        let (tx, rx) = mpsc::channel(options.max_batch.max(1) * 4);
        let stats = Arc::new(IndexStats::default());
        let healthy = Arc::new(AtomicBool::new(true));
        let thread = {
            let (connector, stats, healthy) = (connector.clone(), stats.clone(), healthy.clone());
            let max_batch = options.max_batch.max(1);
            std::thread::Builder::new()
                .name("ferry-pg-writer".into())
                .spawn(move || {
                    let writer = Writer { connector, key, max_batch, stats, healthy };
                    writer.run(Some(first), rx)
                })
                .map_err(Error::io("starting the PostgreSQL writer"))?
        };
        Ok(Self {
            connector,
            readers: Mutex::new(Vec::new()),
            tx: Some(tx),
            thread: Some(thread),
            stats,
            healthy,
            runtime: Some(runtime),
        })
    }

    fn reader(&self) -> Result<Conn> {
        let pooled = self.readers.lock().unwrap_or_else(std::sync::PoisonError::into_inner).pop();
        match pooled {
            Some(conn) if !conn.is_closed() => Ok(conn),
            _ => self.connector.connect(),
        }
    }

    fn give_back(&self, conn: Conn) {
        if conn.is_closed() {
            return;
        }
        let mut idle = self.readers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if idle.len() < IDLE_READERS {
            idle.push(conn);
        }
    }

    /// A snapshot transaction on a reader; a pooled connection found dead at `BEGIN` (the
    /// server restarted) is replaced once, before the closure runs.
    fn begin_read(&self) -> Result<Conn> {
        const BEGIN: &str = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY";
        let conn = self.reader()?;
        match conn.batch(BEGIN) {
            Ok(()) => Ok(conn),
            Err(Error::Unavailable(_)) => {
                let conn = self.connector.connect()?;
                conn.batch(BEGIN)?;
                Ok(conn)
            }
            Err(e) => Err(e),
        }
    }
}

/// Creates the schema and applies missing migrations, under a session advisory lock so that
/// processes starting together apply each once. Returns the connection for the writer.
fn migrate(connector: &Connector, key: i64) -> Result<Conn> {
    let conn = connector.connect()?;
    conn.batch(&format!(
        "SELECT pg_advisory_lock({key}); CREATE SCHEMA IF NOT EXISTS {schema}; {MIGRATIONS_TABLE}",
        schema = connector.schema
    ))?;
    let mut conn = conn;
    let result = apply_migrations(&mut conn);
    if result.is_err() {
        let _ = conn.batch("ROLLBACK");
    }
    conn.batch(&format!("SELECT pg_advisory_unlock({key})"))?;
    result?;
    Ok(conn)
}

fn apply_migrations(conn: &mut Conn) -> Result<()> {
    let applied = conn.applied_migrations()?;
    if applied > MIGRATIONS.len() {
        return Err(Error::Corrupt(format!(
            "the PostgreSQL schema is at version {applied}, this build understands {}",
            MIGRATIONS.len()
        )));
    }
    for (i, migration) in MIGRATIONS.iter().enumerate().skip(applied) {
        let version = i + 1;
        conn.batch(&format!(
            "BEGIN; {migration}; INSERT INTO schema_migrations (version) VALUES ({version}); COMMIT"
        ))?;
        tracing::info!(version, "PostgreSQL schema migrated");
    }
    Ok(())
}

impl MetadataStore for PgIndex {
    fn read(&self, f: &mut dyn FnMut(&mut dyn MetadataRead) -> Result<()>) -> Result<()> {
        blocking(|| {
            let mut conn = self.begin_read()?;
            let result = f(&mut conn);
            let end = conn.batch(if result.is_ok() { "COMMIT" } else { "ROLLBACK" });
            self.give_back(conn);
            result.and(end)
        })
    }

    fn write(&self, job: Job) -> BoxFuture<'_, Result<Reply>> {
        Box::pin(async move {
            let (reply, rx) = oneshot::channel();
            let tx = self.tx.as_ref().ok_or(Error::Closed)?;
            tx.send(Request { job, reply }).await.map_err(|_| Error::Closed)?;
            rx.await.map_err(|_| Error::Closed)?
        })
    }

    fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    fn backend(&self) -> &'static str {
        "postgresql"
    }

    fn stats(&self) -> &IndexStats {
        &self.stats
    }
}

impl Drop for PgIndex {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.readers.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

struct Writer {
    connector: Arc<Connector>,
    key: i64,
    max_batch: usize,
    stats: Arc<IndexStats>,
    healthy: Arc<AtomicBool>,
}

/// Why a batch did not commit.
enum Failed {
    /// The connection went before `COMMIT` was sent: nothing committed, run the batch again.
    Retry(Error),
    /// Nothing to run again: the commit's outcome is unknown, or the transaction failed.
    Final(Error),
}

impl Writer {
    fn run(&self, mut conn: Option<Conn>, mut rx: mpsc::Receiver<Request>) {
        while let Some(first) = rx.blocking_recv() {
            let mut batch = vec![first];
            while batch.len() < self.max_batch {
                match rx.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(_) => break,
                }
            }
            self.commit(&mut conn, batch);
        }
    }

    /// Runs and commits one batch, reconnecting and running it again while its connection is
    /// lost before the commit; answers every job.
    fn commit(&self, conn: &mut Option<Conn>, mut batch: Vec<Request>) {
        let mut pause = Duration::from_millis(50);
        // A store already known to be cut off tries once: a readiness probe, or a caller while
        // the database is down, learns it at once instead of after every retry.
        let attempts = if self.healthy.load(Ordering::Relaxed) { WRITE_ATTEMPTS } else { 1 };
        for attempt in 1..=attempts {
            let failed = match conn.take().map_or_else(|| self.connector.connect(), Ok) {
                Ok(mut c) => match self.run_batch(&mut c, &mut batch) {
                    Ok(outcomes) => {
                        *conn = Some(c);
                        self.healthy.store(true, Ordering::Relaxed);
                        let committed = outcomes.iter().filter(|o| o.is_ok()).count() as u64;
                        if committed > 0 {
                            self.stats.count_commit(committed);
                        }
                        for (request, outcome) in batch.into_iter().zip(outcomes) {
                            let _ = request.reply.send(outcome);
                        }
                        return;
                    }
                    Err(failed) => {
                        if !c.is_closed() {
                            *conn = Some(c);
                        }
                        failed
                    }
                },
                Err(e) => Failed::Retry(e),
            };
            let e = match failed {
                Failed::Retry(e) if attempt < attempts => {
                    tracing::warn!(error = %e, attempt, "PostgreSQL write lost its connection; retrying");
                    self.healthy.store(false, Ordering::Relaxed);
                    std::thread::sleep(pause);
                    pause *= 4;
                    continue;
                }
                Failed::Retry(e) | Failed::Final(e) => e,
            };
            if matches!(e, Error::Unavailable(_)) {
                self.healthy.store(false, Ordering::Relaxed);
            }
            tracing::error!(error = %e, n_jobs = batch.len(), "PostgreSQL commit failed");
            let message = e.to_string();
            for request in batch.drain(..) {
                let _ = request.reply.send(Err(match &e {
                    Error::Unavailable(_) => Error::Unavailable(message.clone()),
                    _ => Error::Index(message.clone().into()),
                }));
            }
            return;
        }
    }

    /// One transaction: the lock, each job in a savepoint (unless it is alone), the commit.
    fn run_batch(
        &self,
        conn: &mut Conn,
        batch: &mut [Request],
    ) -> Result<Vec<Result<Reply>>, Failed> {
        let key = self.key;
        conn.batch(&format!("BEGIN; SELECT pg_advisory_xact_lock({key})"))
            .map_err(Failed::Retry)?;
        let alone = batch.len() == 1;
        let mut outcomes = Vec::with_capacity(batch.len());
        for request in batch.iter_mut() {
            if !alone {
                conn.batch("SAVEPOINT job").map_err(|e| abandon(conn, e))?;
            }
            match (request.job)(conn) {
                Ok(reply) => {
                    if !alone {
                        conn.batch("RELEASE SAVEPOINT job").map_err(|e| abandon(conn, e))?;
                    }
                    outcomes.push(Ok(reply));
                }
                // The job may have failed because the connection did: the batch runs again.
                Err(e @ Error::Unavailable(_)) => return Err(abandon(conn, e)),
                Err(e) => {
                    let undo = if alone { "ROLLBACK" } else { "ROLLBACK TO SAVEPOINT job" };
                    conn.batch(undo).map_err(|e| abandon(conn, e))?;
                    outcomes.push(Err(e));
                    if alone {
                        return Ok(outcomes);
                    }
                }
            }
        }
        match conn.batch("COMMIT") {
            Ok(()) => Ok(outcomes),
            Err(Error::Unavailable(e)) => Err(Failed::Final(Error::Unavailable(format!(
                "the connection was lost during COMMIT; the outcome is unknown: {e}"
            )))),
            Err(e) => Err(Failed::Final(e)),
        }
    }
}

/// Gives up a transaction before its commit: rolled back if the connection still works.
fn abandon(conn: &Conn, e: Error) -> Failed {
    if matches!(e, Error::Unavailable(_)) || conn.is_closed() {
        return Failed::Retry(e);
    }
    let _ = conn.batch("ROLLBACK");
    Failed::Final(e)
}
