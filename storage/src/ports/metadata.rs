//! The metadata port: every record of Ferry (transfers, resources, service owners, uploads,
//! blob references, the event log, the life-cycle schedule, scan progress, webhook state),
//! read in consistent snapshots and changed in atomic transactions.
//!
//! # Transactions
//!
//! A write is a closure over a transaction handle ([`MetadataTxn`]) with typed reads and
//! writes of records. The store runs it in one transaction and commits it durably before it
//! answers; an `Err` from the closure (a rule refused the change) or from the commit commits
//! nothing of it. The closure is `FnMut`: the store may run it again, each time against a
//! transaction in which none of its earlier effects exist (the redb store re-runs the other
//! jobs of a group commit when one fails; a SQL store re-runs after a serialization failure),
//! so it must not have effects outside the transaction.
//!
//! The rules that combine records (a blob's reference count follows its transfers, an event
//! is logged with the change that causes it, a job is scheduled with the status that calls for
//! it) are written once, in the facade (`storage/src/rules.rs`), against this trait: a store
//! implements record storage, not Ferry's rules.
//!
//! A SQL implementation maps [`MetadataStore::write`] to one `BEGIN … COMMIT` at a
//! serializable (or repeatable-read with row locks) isolation level, each method of
//! [`MetadataTxn`] to one or a few statements, and retries the closure on a serialization
//! failure.
//!
//! # Blocking
//!
//! The closures and every method of [`MetadataRead`] / [`MetadataTxn`] are synchronous: the
//! domain rules they run are. [`MetadataStore::write`] is async (the redb store queues the
//! closure to its writer thread; a network store runs it on the blocking pool, where it may
//! `block_on` its client). [`MetadataStore::read`] is synchronous because the facade's read
//! methods are: a network store runs it with `tokio::task::block_in_place`.
//!
//! # Crashes
//!
//! A committed transaction survives a crash (`kill -9`, power loss with `sync`); an
//! uncommitted one leaves nothing. What a crash between a commit and the blob store's work can
//! leave (digests queued for deletion, uploads whose temporary is gone) is recorded in the
//! records themselves ([`MetadataRead::pending_gc`], [`MetadataRead::uploads`]) and finished
//! by the facade at start-up.
//!
//! Implementations: [`crate::RedbIndex`]. The conformance suite
//! (`storage::conformance::metadata`, feature `conformance`) states this contract as tests.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::model::{
    FileTransfer, FileTransferId, Party, ResourceConfig, ResourceId, ServiceOwner, Timestamp,
    UploadId,
};
use crate::records::{BlobRecord, EventRecord, Job, ScanProgress, UploadRecord};
use crate::records::{Delivery, Subscription};

/// What a write job returns, type-erased (the facade downcasts it to the closure's type).
pub type Reply = Box<dyn Any + Send>;

/// A write transaction's body; see the [module](self) on why it is `FnMut`.
pub type WriteJob = Box<dyn FnMut(&mut dyn MetadataTxn) -> Result<Reply> + Send>;

/// A boxed future, for the async methods of the port.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How much of a transfer's histories is stored already: [`MetadataTxn::put_transfer`] writes
/// the rows after these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoredHistory {
    /// Status history rows stored.
    pub status: usize,
    /// Recipient history rows stored.
    pub recipient: usize,
}

impl StoredHistory {
    /// What is stored of `transfer` as loaded.
    pub fn of(transfer: &FileTransfer) -> Self {
        Self { status: transfer.status_history.len(), recipient: transfer.recipient_history.len() }
    }
}

/// Counters handed out by [`MetadataTxn::next_id`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    /// Webhook subscription ids.
    Subscription,
    /// Webhook delivery ids.
    Delivery,
}

/// Counters of a store's commits, for benchmarks, metrics and readiness.
#[derive(Debug, Default)]
pub struct IndexStats {
    commits: AtomicU64,
    jobs: AtomicU64,
    reopens: AtomicU64,
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

    /// Times the database was reopened (or reconnected) after an I/O failure.
    pub fn reopens(&self) -> u64 {
        self.reopens.load(Ordering::Relaxed)
    }

    /// Counts one committed transaction that ran `jobs` write jobs.
    pub fn count_commit(&self, jobs: u64) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.jobs.fetch_add(jobs, Ordering::Relaxed);
    }

    /// Counts one reopen.
    pub fn count_reopen(&self) {
        self.reopens.fetch_add(1, Ordering::Relaxed);
    }
}

/// A metadata store. See the [module](self) for transactions, blocking and crashes.
pub trait MetadataStore: Send + Sync + fmt::Debug {
    /// Runs `f` on a consistent snapshot: it sees every transaction committed before `read`
    /// began and nothing of any later one. Never waits for writers. Calls `f` once (not at all
    /// if the snapshot cannot be taken: [`crate::Error::Recovering`] while the store is being
    /// reopened) and returns what `f` returned.
    fn read(&self, f: &mut dyn FnMut(&mut dyn MetadataRead) -> Result<()>) -> Result<()>;

    /// Runs `job` in a transaction and commits it; resolves once the commit is durable, with
    /// the job's reply. Atomic: a job that fails, or whose commit fails, leaves nothing. Writes
    /// are serializable: the result is as if the committed jobs ran one after the other, in an
    /// order consistent with the order in which their futures resolved.
    fn write(&self, job: WriteJob) -> BoxFuture<'_, Result<Reply>>;

    /// Whether the last commit succeeded (readiness: a store that cannot commit is not ready).
    fn healthy(&self) -> bool;

    /// The engine's name, for readiness and logs (`redb`, `postgresql`).
    fn backend(&self) -> &'static str;

    /// Commit counters.
    fn stats(&self) -> &IndexStats;
}

/// [`MetadataStore::read`] with a typed result: runs `f` on a snapshot and returns what it
/// returned.
pub fn snapshot<T>(
    store: &dyn MetadataStore,
    f: impl FnOnce(&mut dyn MetadataRead) -> Result<T>,
) -> Result<T> {
    let mut f = Some(f);
    let mut out = None;
    store.read(&mut |r| {
        let f = f.take().ok_or_else(|| Error::Corrupt("a snapshot read ran twice".into()))?;
        out = Some(f(r)?);
        Ok(())
    })?;
    out.ok_or_else(|| Error::Corrupt("a snapshot read did not run".into()))
}

/// [`MetadataStore::write`] with a typed result: runs `f` in one transaction and returns its
/// result once the commit is durable. `f` may run more than once (see the [module](self)).
pub async fn transact<T, F>(store: &dyn MetadataStore, mut f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnMut(&mut dyn MetadataTxn) -> Result<T> + Send + 'static,
{
    let job: WriteJob = Box::new(move |txn| f(txn).map(|v| Box::new(v) as Reply));
    let reply = store.write(job).await?;
    Ok(*reply.downcast::<T>().expect("a write job's reply has the job's type"))
}

/// Typed reads, in a snapshot ([`MetadataStore::read`]) or in a write transaction (where they
/// see the transaction's own writes). Lists are complete unless a `limit` says otherwise.
pub trait MetadataRead {
    /// A registered service owner.
    fn service_owner(&mut self, party: &Party) -> Result<Option<ServiceOwner>>;
    /// A resource configuration.
    fn resource(&mut self, id: &ResourceId) -> Result<Option<ResourceConfig>>;
    /// Every resource configuration, by id.
    fn resources(&mut self) -> Result<Vec<ResourceConfig>>;

    /// A transfer with both histories, in row order.
    fn transfer(&mut self, id: FileTransferId) -> Result<Option<FileTransfer>>;
    /// Every transfer id.
    fn transfer_ids(&mut self) -> Result<Vec<FileTransferId>>;
    /// Transfers of `resource` created in `[from, to)`, oldest first (ties by id), at most
    /// `limit`.
    fn transfers_by_resource(
        &mut self,
        resource: &ResourceId,
        from: Timestamp,
        to: Timestamp,
        limit: usize,
    ) -> Result<Vec<FileTransferId>>;
    /// Transfers `party` sent (`as_recipient` false) or receives, created in `[from, to)`,
    /// oldest first (ties by id), at most `limit`.
    fn transfers_by_party(
        &mut self,
        party: &Party,
        as_recipient: bool,
        from: Timestamp,
        to: Timestamp,
        limit: usize,
    ) -> Result<Vec<FileTransferId>>;
    /// The request hash and transfer stored under an idempotency key.
    fn idempotency_key(&mut self, key: &str) -> Result<Option<([u8; 32], FileTransferId)>>;

    /// A blob's record (present while something references the blob).
    fn blob(&mut self, digest: &Digest) -> Result<Option<BlobRecord>>;
    /// The bytes of a blob kept inline in the metadata store (see
    /// [`MetadataTxn::put_inline_blob`]); `None` if the blob is not inline (or unknown).
    fn inline_blob(&mut self, digest: &Digest) -> Result<Option<Bytes>>;
    /// Whether blob `digest` is kept inline, without reading its bytes.
    fn has_inline_blob(&mut self, digest: &Digest) -> Result<bool> {
        Ok(self.inline_blob(digest)?.is_some())
    }
    /// Every blob record, by digest.
    fn blobs(&mut self) -> Result<Vec<(Digest, BlobRecord)>>;
    /// Digests queued for deletion ([`MetadataTxn::queue_gc`]).
    fn pending_gc(&mut self) -> Result<Vec<Digest>>;

    /// An upload in progress.
    fn upload(&mut self, id: &UploadId) -> Result<Option<UploadRecord>>;
    /// Every upload in progress, by id.
    fn uploads(&mut self) -> Result<Vec<(UploadId, UploadRecord)>>;
    /// The scan progress recorded for a transfer.
    fn scan_progress(&mut self, id: FileTransferId) -> Result<Option<ScanProgress>>;

    /// Events with a sequence above `after`, in order, at most `limit`.
    fn events_after(&mut self, after: u64, limit: usize) -> Result<Vec<EventRecord>>;
    /// The event with sequence `seq`.
    fn event(&mut self, seq: u64) -> Result<Option<EventRecord>>;
    /// The sequence of the event with `id`.
    fn event_seq(&mut self, id: &uuid::Uuid) -> Result<Option<u64>>;
    /// The highest sequence in the log (0: empty).
    fn last_event_seq(&mut self) -> Result<u64>;

    /// Scheduled jobs due at or before `now`, earliest first (ties by transfer, then kind), at
    /// most `limit`.
    fn due_jobs(&mut self, now: Timestamp, limit: usize) -> Result<Vec<Job>>;

    /// A webhook subscription.
    fn subscription(&mut self, id: u64) -> Result<Option<Subscription>>;
    /// Every subscription, by id.
    fn subscriptions(&mut self) -> Result<Vec<Subscription>>;
    /// Whether any subscription exists (the hot path's idle check).
    fn has_subscriptions(&mut self) -> Result<bool>;
    /// A pending delivery.
    fn delivery(&mut self, id: u64) -> Result<Option<Delivery>>;
    /// Every pending delivery, by id.
    fn deliveries(&mut self) -> Result<Vec<Delivery>>;
    /// Ids of pending deliveries due at or before `now`, earliest first (ties by id), at most
    /// `limit`.
    fn due_deliveries(&mut self, now: Timestamp, limit: usize) -> Result<Vec<u64>>;
    /// Every dead letter, by id.
    fn dead_letters(&mut self) -> Result<Vec<Delivery>>;
    /// The last event sequence fanned out to deliveries (0: none).
    fn fanout_cursor(&mut self) -> Result<u64>;
}

/// Typed writes inside a transaction (see [`MetadataStore::write`]). Each method changes only
/// what it names; none commits. `put_*` inserts or replaces; `remove_*` of a missing record is
/// no error unless said otherwise.
pub trait MetadataTxn: MetadataRead {
    /// Registers a service owner; [`crate::Error::AlreadyExists`] if one is registered.
    fn insert_service_owner(&mut self, owner: &ServiceOwner) -> Result<()>;
    /// Stores a resource configuration under its id.
    fn put_resource(&mut self, resource: &ResourceConfig) -> Result<()>;

    /// Registers a new transfer: [`crate::Error::AlreadyExists`] if its id is taken; otherwise
    /// writes its search entries (by resource, by sender, by each recipient, all at
    /// `transfer.created`). Its record and histories are written by
    /// [`MetadataTxn::put_transfer`] in the same transaction.
    fn insert_transfer(&mut self, transfer: &FileTransfer) -> Result<()>;
    /// Writes a transfer's record and the history rows after `stored` (rows are append-only:
    /// [`crate::Error::Corrupt`] if a history is shorter than `stored`).
    fn put_transfer(&mut self, transfer: &FileTransfer, stored: StoredHistory) -> Result<()>;
    /// Stores the request hash and transfer of an idempotency key.
    fn put_idempotency_key(
        &mut self,
        key: &str,
        request_hash: [u8; 32],
        transfer: FileTransferId,
    ) -> Result<()>;

    /// Stores a blob's record.
    fn put_blob(&mut self, digest: &Digest, record: &BlobRecord) -> Result<()>;
    /// Removes a blob's record.
    fn remove_blob(&mut self, digest: &Digest) -> Result<()>;
    /// Keeps a small blob's bytes in the metadata store itself, beside its record: durable when
    /// the transaction commits, gone with it if it does not. The facade writes them only in the
    /// transaction that creates the blob's record, and removes them in the one that removes it.
    fn put_inline_blob(&mut self, digest: &Digest, bytes: &[u8]) -> Result<()>;
    /// Removes a blob's inline bytes; returns whether there were any.
    fn remove_inline_blob(&mut self, digest: &Digest) -> Result<bool>;
    /// Queues a digest for deletion of its file (after this transaction commits).
    fn queue_gc(&mut self, digest: &Digest) -> Result<()>;
    /// Takes a digest off the deletion queue.
    fn unqueue_gc(&mut self, digest: &Digest) -> Result<()>;

    /// Stores an upload's record.
    fn put_upload(&mut self, id: &UploadId, record: &UploadRecord) -> Result<()>;
    /// Removes an upload's record and returns it.
    fn remove_upload(&mut self, id: &UploadId) -> Result<Option<UploadRecord>>;
    /// Stores a transfer's scan progress.
    fn put_scan_progress(&mut self, id: FileTransferId, progress: &ScanProgress) -> Result<()>;
    /// Removes a transfer's scan progress.
    fn remove_scan_progress(&mut self, id: FileTransferId) -> Result<()>;

    /// Appends those of `events` whose id is not in the log yet, in order, under the next
    /// sequences (their `seq` is ignored); returns how many were appended. Sequences are
    /// gap-free and in commit order: a reader that saw sequence `n` has seen every event below
    /// it (no two transactions take sequences concurrently).
    fn append_events(&mut self, events: Vec<EventRecord>) -> Result<usize>;

    /// Schedules a job (scheduling the same job twice stores it once).
    fn schedule(&mut self, job: &Job) -> Result<()>;
    /// Removes a scheduled job; returns whether it was scheduled.
    fn unschedule(&mut self, job: &Job) -> Result<bool>;

    /// The next value of a counter, from 1; never the same twice among committed transactions.
    fn next_id(&mut self, counter: Counter) -> Result<u64>;
    /// Stores a subscription.
    fn put_subscription(&mut self, sub: &Subscription) -> Result<()>;
    /// Removes a subscription (its deliveries and dead letters are the caller's to remove).
    fn remove_subscription(&mut self, id: u64) -> Result<()>;
    /// Stores a pending delivery, due at `delivery.due`.
    fn put_delivery(&mut self, delivery: &Delivery) -> Result<()>;
    /// Removes a pending delivery and returns it.
    fn remove_delivery(&mut self, id: u64) -> Result<Option<Delivery>>;
    /// Stores a dead letter.
    fn put_dead_letter(&mut self, delivery: &Delivery) -> Result<()>;
    /// Removes a dead letter.
    fn remove_dead_letter(&mut self, id: u64) -> Result<()>;
    /// Moves the fan-out cursor.
    fn set_fanout_cursor(&mut self, seq: u64) -> Result<()>;
}
