//! Ferry's storage engine.
//!
//! # Layout
//!
//! - [`model`]: the domain — transfers, resources, parties, statuses — pure and I/O-free.
//! - [`digest`]: BLAKE3 [`Digest`] (a blob's address) and [`Md5`] (Altinn's checksum).
//! - [`ports`]: the two ports a backend implements, [`ports::BlobStore`] (the bytes) and
//!   [`ports::MetadataStore`] (the records), each with its contract written on its methods.
//! - `blob`: [`LocalBlobStore`], the blob port on local files: durable writer, positioned
//!   reader, verification.
//! - `index`: [`RedbIndex`], the metadata port on a redb database with a single
//!   group-committing writer.
//! - `rules`: how records are tied together (reference counts, events, jobs), written once
//!   against the metadata port.
//! - `records`: the records of the metadata port besides the model's own.
//! - `stream`: the facade's byte streams over any blob port: [`BlobRange`], [`BlobTail`].
//! - [`Storage`] (this file): the facade that keeps the two consistent, and [`Upload`], a
//!   resumable upload in progress. It holds each port as an `Arc<dyn …>` (see [`ports`] on why).
//! - `conformance` (tests, feature `conformance`): the ports' contracts as test suites.
//!
//! # Invariants
//!
//! The facade keeps them with any pair of ports that meets their contracts:
//!
//! - The index never points at a missing blob: a blob is promoted (durable, complete, under its
//!   digest) before the transaction that references it commits, and deleted only after the
//!   transaction that drops its last reference commits (`place_and_reference`, `collect`). A
//!   per-digest lock orders the two. A small blob ([`StorageOptions::inline_max`], 64 KiB by
//!   default) is never a file at all: its bytes are written in the very transaction that
//!   creates its record and removed in the one that removes it, so the two cannot disagree; it
//!   needs no fsync, file, directory or deletion of its own (the cost of a small transfer is
//!   its index commits).
//! - Blob reference counts are derived from the transfers ([`FileTransfer::holds_blob`]) in the
//!   same transaction that changes the transfer, so they cannot drift (`rules::save_transfer`).
//! - Temporary data is never visible: it stays a temporary of the blob store until promoted.
//!   Start-up deletes every temporary that no upload in the index claims (`Storage::recover`).
//!
//! Architecture invariant: this crate knows nothing of gRPC, HTTP or ClamAV.

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod digest;
pub mod model;
pub mod ports;

mod blob;
mod error;
mod index;
mod md5_follower;
#[cfg(feature = "postgres")]
mod pg;
mod records;
mod rules;
mod stream;
mod upload;
pub mod webhooks;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use blob::{INLINE_MD5_LIMIT, LocalBlobStore, Verification};
pub use digest::{Digest, Md5};
pub use error::{Error, Result};
pub use index::RedbIndex;
pub use md5_follower::Md5Follower;
#[cfg(feature = "postgres")]
pub use pg::{PgIndex, PgOptions, WRITE_ATTEMPTS};
pub use ports::IndexStats;
pub use records::{BlobRecord, EventRecord, Job, JobKind, ScanProgress, UploadRecord, event_id};
pub use stream::{BlobRange, BlobTail};
pub use upload::Upload;

use model::{
    FileTransfer, FileTransferId, Party, ResourceConfig, ResourceId, ServiceOwner, StoredContent,
    Timestamp,
};
use ports::{BlobStore, FinishedTemp, TempKind};
use ports::{MetadataRead, MetadataStore, MetadataTxn};
use rules::Stored;
use stream::BlobWriter;

/// When life-cycle jobs come due, relative to the change that schedules them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifecycle {
    /// An upload with no activity this long fails (Altinn: 24 h).
    pub stuck_upload_after: std::time::Duration,
    /// A scan that has not finished this long after the upload fails the transfer.
    pub scan_timeout: std::time::Duration,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self {
            stuck_upload_after: std::time::Duration::from_secs(24 * 3600),
            scan_timeout: std::time::Duration::from_secs(2 * 3600),
        }
    }
}

/// How to open the storage.
#[derive(Debug, Clone)]
pub struct StorageOptions {
    /// The data directory: `index.redb`, `blobs/`, `tmp/`.
    pub root: PathBuf,
    /// fsync file data, directories and index commits. Only throwaway test data turns it off.
    pub sync: bool,
    /// Most index writes per group commit.
    pub max_batch: usize,
    /// At start-up, delete blob files that no index record references (left by a crash between
    /// a rename and its commit). Walks the whole blob directory.
    pub sweep_orphan_blobs: bool,
    /// Life-cycle job timing.
    pub lifecycle: Lifecycle,
    /// Bytes of the data directory's filesystem that uploads leave free, so that the index can
    /// always commit: a write that would go below it fails with [`Error::StorageFull`] before any
    /// of its bytes are written. 0 turns the check off (the filesystem's own ENOSPC still maps
    /// to [`Error::StorageFull`]).
    pub min_free_bytes: u64,
    /// Blobs of at most this many bytes are kept inline in the metadata store, committed with
    /// the transaction that references them: no file, no directory, no fsync of their own, and
    /// a download or rescan reads them from the index. 0: every blob is a file.
    pub inline_max: u64,
}

/// The default [`StorageOptions::inline_max`]: 64 KiB. Small enough that an index page holds a
/// few and a commit stays short; most of Altinn's messages (XML, PDF receipts) are below it.
pub const DEFAULT_INLINE_MAX: u64 = 64 * 1024;

/// The largest [`StorageOptions::inline_max`] a server accepts: an inline blob is read whole
/// into memory, and must stay far below a scanner's stream limit.
pub const MAX_INLINE_MAX: u64 = 1024 * 1024;

/// The default [`StorageOptions::min_free_bytes`]: room for many index commits and the reads
/// and small writes that keep a full server serving.
pub const DEFAULT_MIN_FREE_BYTES: u64 = 256 * 1024 * 1024;

impl StorageOptions {
    /// Durable defaults for a data directory.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            sync: true,
            max_batch: 512,
            sweep_orphan_blobs: true,
            lifecycle: Lifecycle::default(),
            min_free_bytes: DEFAULT_MIN_FREE_BYTES,
            inline_max: DEFAULT_INLINE_MAX,
        }
    }
}

/// Free space of the data directory (see [`Storage::space`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Space {
    /// Bytes an unprivileged writer may still use.
    pub free: u64,
    /// [`StorageOptions::min_free_bytes`].
    pub min_free: u64,
}

impl Space {
    /// Free space is below the reserve: uploads are refused.
    pub fn is_low(&self) -> bool {
        self.min_free > 0 && self.free < self.min_free
    }
}

/// What start-up recovery found and did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Temporaries deleted because no upload claimed them.
    pub temporaries_removed: usize,
    /// Uploads forgotten because their temporary was gone.
    pub uploads_dropped: usize,
    /// Blob files deleted after their last reference went.
    pub blobs_collected: usize,
    /// Blob files deleted because no record referenced them.
    pub orphan_blobs_removed: usize,
}

/// The storage engine: blob store and index, kept consistent. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Storage {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    root: PathBuf,
    blobs: Arc<dyn BlobStore>,
    /// [`StorageOptions::min_free_bytes`].
    min_free: u64,
    /// [`StorageOptions::inline_max`].
    inline_max: u64,
    index: Arc<dyn MetadataStore>,
    /// Striped locks ordering blob placement against blob deletion for the same digest.
    locks: Vec<tokio::sync::Mutex<()>>,
    /// Uploads with a live writer: at most one writer per upload (see [`Storage::open_upload`]).
    live_uploads: std::sync::Mutex<HashSet<model::UploadId>>,
    recovery: Recovery,
    lifecycle: Lifecycle,
    /// The sequence of the last event committed; watchers wait on it.
    events: tokio::sync::watch::Sender<u64>,
}

const N_LOCK_STRIPES: usize = 256;

impl Storage {
    /// Opens (or creates) the storage in `options.root` and recovers from any crash.
    pub async fn open(options: StorageOptions) -> Result<Self> {
        let blobs = Self::local_blobs(&options)?;
        let index_path = options.root.join("index.redb");
        let index = tokio::task::spawn_blocking(move || {
            RedbIndex::open(&index_path, options.sync, options.max_batch)
        })
        .await
        .map_err(|e| Error::Io {
            context: "opening the index",
            source: std::io::Error::other(e),
        })??;
        Self::open_with(options, Arc::new(index), Arc::new(blobs)).await
    }

    /// The blob store under the data directory, created if needed.
    fn local_blobs(options: &StorageOptions) -> Result<LocalBlobStore> {
        std::fs::create_dir_all(&options.root).map_err(Error::io("creating the data directory"))?;
        LocalBlobStore::open(&options.root, options.sync, options.min_free_bytes)
            .map_err(Error::io("creating the blob directories"))
    }

    /// Opens the storage with its metadata in PostgreSQL ([`PgIndex`], schema migrated at
    /// open) and its blobs under `options.root`, and recovers from any crash as
    /// [`Storage::open`] does. Needs a multi-threaded tokio runtime.
    #[cfg(feature = "postgres")]
    pub async fn open_on_postgres(options: StorageOptions, pg: PgOptions) -> Result<Self> {
        let blobs = Self::local_blobs(&options)?;
        let index = PgIndex::open(pg)?;
        Self::open_with(options, Arc::new(index), Arc::new(blobs)).await
    }

    /// The engines of the metadata and of the blobs, for readiness.
    pub fn backends(&self) -> (&'static str, &'static str) {
        (self.inner.index.backend(), self.inner.blobs.backend())
    }

    /// Opens the storage on the given ports (any backends) and recovers from any crash, as
    /// [`Storage::open`] does with the redb index and the local blob store under
    /// `options.root`. Of `options`, `root` is only the directory whose free space
    /// [`Storage::space`] reports; `sync` and `max_batch` are the ports' own business.
    pub async fn open_with(
        options: StorageOptions,
        metadata: Arc<dyn MetadataStore>,
        blobs: Arc<dyn BlobStore>,
    ) -> Result<Self> {
        let mut storage = Self {
            inner: Arc::new(Inner {
                root: options.root,
                blobs,
                min_free: options.min_free_bytes,
                inline_max: options.inline_max,
                index: metadata,
                locks: (0..N_LOCK_STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
                live_uploads: Default::default(),
                recovery: Recovery::default(),
                lifecycle: options.lifecycle,
                events: tokio::sync::watch::channel(0).0,
            }),
        };
        let recovery = storage.recover(options.sweep_orphan_blobs).await?;
        storage.inner.events.send_replace(storage.snapshot(|r| r.last_event_seq())?);
        Arc::get_mut(&mut storage.inner).expect("not shared yet").recovery = recovery;
        if recovery != Recovery::default() {
            tracing::info!(?recovery, "storage recovered");
        }
        Ok(storage)
    }

    async fn recover(&self, sweep_orphans: bool) -> Result<Recovery> {
        let mut recovery = Recovery::default();
        let uploads = self.snapshot(|r| r.uploads())?;
        for (id, record) in &uploads {
            let name = record.temp_name.clone();
            let exists =
                self.blob_io("looking for a temporary", move |b| b.temp_exists(&name)).await?;
            if !exists {
                tracing::warn!(upload = %id, "upload's temporary is gone; forgetting the upload");
                let id = id.clone();
                self.transact(move |txn| txn.remove_upload(&id)).await?;
                recovery.uploads_dropped += 1;
            }
        }
        let claimed: HashSet<String> = uploads.into_iter().map(|(_, r)| r.temp_name).collect();
        recovery.temporaries_removed = self
            .blob_io("sweeping temporaries", move |b| {
                b.sweep_temporaries(&|name| claimed.contains(name))
            })
            .await?;
        let pending = self.snapshot(|r| r.pending_gc())?;
        recovery.blobs_collected = pending.len();
        self.collect(pending).await?;
        if sweep_orphans {
            let on_disk = self.blob_io("listing blobs", |b| b.list()).await?;
            // Blobs whose record says they are files (not inline), read in one snapshot.
            let files: HashSet<Digest> = self.snapshot(|r| {
                let mut files = HashSet::new();
                for (digest, _) in r.blobs()? {
                    if !r.has_inline_blob(&digest)? {
                        files.insert(digest);
                    }
                }
                Ok(files)
            })?;
            for digest in on_disk.into_iter().filter(|d| !files.contains(d)) {
                let _guard = self.lock(&digest).await;
                if self.file_unreferenced(&digest)? {
                    self.blob_io("removing an orphan blob", move |b| b.remove(&digest)).await?;
                    recovery.orphan_blobs_removed += 1;
                }
            }
        }
        Ok(recovery)
    }

    /// How many handles to this storage exist (the database closes when the last one goes).
    pub fn handle_count(&self) -> usize {
        Arc::strong_count(&self.inner)
    }

    /// The data directory.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// What start-up recovery did.
    pub fn recovery(&self) -> Recovery {
        self.inner.recovery
    }

    /// Group-commit counters.
    pub fn index_stats(&self) -> &IndexStats {
        self.inner.index.stats()
    }

    /// Free space of the data directory's filesystem, against the configured reserve.
    pub fn space(&self) -> Result<Space> {
        let stat = rustix::fs::statvfs(&self.inner.root)
            .map_err(|e| Error::io("reading the free space")(e.into()))?;
        Ok(Space {
            free: stat.f_bavail.saturating_mul(stat.f_frsize),
            min_free: self.inner.min_free,
        })
    }

    /// Fails with [`Error::StorageFull`] unless `needed` more bytes fit above the reserve: an
    /// upload whose length is known is refused before its first byte, not at its last.
    pub fn check_space(&self, needed: u64) -> Result<()> {
        let space = self.space()?;
        if space.min_free > 0 && space.free < space.min_free.saturating_add(needed) {
            return Err(Error::StorageFull { context: "accepting an upload" });
        }
        Ok(())
    }

    /// Whether the index can commit now: an empty write transaction, committed and fsynced like
    /// any other (it shares a group commit with whatever else is queued). Tried even while the
    /// store is unhealthy: the attempt is what finds out that it recovered (a reopened redb, a
    /// PostgreSQL that is back), and a replica a load balancer took out of service gets no
    /// other writes.
    pub async fn probe_commit(&self) -> Result<()> {
        self.transact(|_| Ok(())).await
    }

    async fn lock(&self, digest: &Digest) -> tokio::sync::MutexGuard<'_, ()> {
        self.inner.locks[usize::from(digest.as_bytes()[0])].lock().await
    }

    // --- service owners and resources ---

    /// Registers a service owner; [`Error::AlreadyExists`] if it is registered.
    pub async fn create_service_owner(&self, owner: ServiceOwner) -> Result<()> {
        self.transact(move |txn| txn.insert_service_owner(&owner)).await
    }

    /// A registered service owner.
    pub fn service_owner(&self, party: &Party) -> Result<Option<ServiceOwner>> {
        self.snapshot(|r| r.service_owner(party))
    }

    /// Reads, changes and writes a resource configuration in one transaction. `f` gets the
    /// current configuration (if any) and returns the new one, or an error that changes nothing.
    pub async fn modify_resource<F>(&self, id: ResourceId, mut f: F) -> Result<ResourceConfig>
    where
        F: FnMut(Option<ResourceConfig>) -> Result<ResourceConfig> + Send + 'static,
    {
        self.transact(move |txn| {
            let current = txn.resource(&id)?;
            let next = f(current)?;
            if next.id != id {
                return Err(Error::Corrupt("a resource update changed the resource id".into()));
            }
            txn.put_resource(&next)?;
            Ok(next)
        })
        .await
    }

    /// Every resource configuration.
    pub fn resources(&self) -> Result<Vec<ResourceConfig>> {
        self.snapshot(|r| r.resources())
    }

    /// A resource configuration.
    pub fn resource(&self, id: &ResourceId) -> Result<Option<ResourceConfig>> {
        self.snapshot(|r| r.resource(id))
    }

    // --- transfers ---

    /// Stores a new transfer with its histories and search entries.
    pub async fn insert_transfer(&self, transfer: FileTransfer) -> Result<()> {
        let lifecycle = self.inner.lifecycle;
        self.transact(move |txn| rules::insert_transfer(txn, &transfer, &lifecycle).map(drop))
            .await?;
        self.events_committed();
        Ok(())
    }

    /// Stores a new transfer under a client idempotency key: the same key with the same request
    /// hash returns the transfer the first call created (nothing new is stored); the same key
    /// with another request is [`Error::AlreadyExists`].
    pub async fn insert_transfer_idempotent(
        &self,
        transfer: FileTransfer,
        key: String,
        request_hash: [u8; 32],
    ) -> Result<FileTransferId> {
        let lifecycle = self.inner.lifecycle;
        self.transact(move |txn| {
            rules::insert_transfer_idempotent(txn, &transfer, &key, request_hash, &lifecycle)
        })
        .await
        .inspect(|_| self.events_committed())
    }

    /// Every transfer id (for start-up recovery and consistency checks).
    pub fn transfer_ids(&self) -> Result<Vec<FileTransferId>> {
        self.snapshot(|r| r.transfer_ids())
    }

    /// A transfer with its histories.
    pub fn transfer(&self, id: FileTransferId) -> Result<Option<FileTransfer>> {
        self.snapshot(|r| r.transfer(id))
    }

    /// The segments of transfer `id`'s file found clean so far, while it waits for its scan.
    pub fn scan_progress(&self, id: FileTransferId) -> Result<Option<ScanProgress>> {
        self.snapshot(|r| r.scan_progress(id))
    }

    /// Records segments of transfer `id`'s file found clean (added to those recorded before), in
    /// one transaction that first checks the transfer still waits for its scan and holds the
    /// file `progress.blob`; otherwise records nothing and answers `false`. The record is
    /// removed by the change that takes the transfer out of `UploadProcessing`.
    pub async fn record_scan_progress(
        &self,
        id: FileTransferId,
        progress: ScanProgress,
    ) -> Result<bool> {
        self.transact(move |txn| rules::merge_scan_progress(txn, id, &progress)).await
    }

    /// Loads a transfer, applies `f` and stores the result, all in one transaction: the status
    /// change, its history rows and the blob reference it implies commit together or not at all.
    /// An `Err` from `f` changes nothing.
    pub async fn update_transfer<T, F>(
        &self,
        id: FileTransferId,
        mut f: F,
    ) -> Result<(FileTransfer, T)>
    where
        T: Send + 'static,
        F: FnMut(&mut FileTransfer) -> Result<T> + Send + 'static,
    {
        let lifecycle = self.inner.lifecycle;
        let (transfer, value, released) = self
            .transact(move |txn| {
                let mut transfer = rules::load(txn, id)?;
                let before = Stored::of(&transfer);
                let value = f(&mut transfer)?;
                let released = rules::save_transfer(txn, &transfer, before, &lifecycle)?;
                Ok((transfer, value, released))
            })
            .await?;
        self.events_committed();
        self.collect(released).await?;
        Ok((transfer, value))
    }

    /// Transfers of `resource` created in `[from, to)`, oldest first, at most `limit`.
    pub fn transfers_by_resource(
        &self,
        resource: &ResourceId,
        from: Timestamp,
        to: Timestamp,
        limit: usize,
    ) -> Result<Vec<FileTransferId>> {
        self.snapshot(|r| r.transfers_by_resource(resource, from, to, limit))
    }

    /// Transfers `party` sent (`as_recipient = false`) or received, created in `[from, to)`.
    pub fn transfers_by_party(
        &self,
        party: &Party,
        as_recipient: bool,
        from: Timestamp,
        to: Timestamp,
        limit: usize,
    ) -> Result<Vec<FileTransferId>> {
        self.snapshot(|r| r.transfers_by_party(party, as_recipient, from, to, limit))
    }

    // --- blobs ---

    /// Starts a one-shot (not resumable) blob write. Dropping it unfinished deletes its temporary.
    pub async fn blob_writer(&self) -> Result<BlobIngest> {
        let blobs = self.inner.blobs.clone();
        let writer =
            blocking(move || BlobWriter::create(blobs, TempKind::OneShot), "creating a temporary")
                .await?;
        Ok(BlobIngest { writer })
    }

    /// Finishes a one-shot write and stores the blob with one standalone reference (identical
    /// content is stored once; its count goes up).
    pub async fn add_blob(&self, ingest: BlobIngest) -> Result<StoredContent> {
        let volatile = self.keeps_inline(ingest.len());
        let finished =
            ingest.writer.finish(volatile).await.map_err(Error::io("finishing a blob"))?;
        let content = finished.content;
        self.place_and_reference(finished, move |txn| rules::blob_incref(txn, &content)).await?;
        Ok(content)
    }

    /// The MD5 of a stored blob: recorded, or computed from the file and recorded now.
    pub async fn blob_md5(&self, digest: &Digest) -> Result<Md5> {
        let record = self.blob(digest)?.ok_or_else(|| Error::NotFound(format!("blob {digest}")))?;
        if let Some(md5) = record.md5 {
            return Ok(md5);
        }
        let range = self.read_blob(digest, 0, None).await?;
        let md5 = Md5Follower::read(range).finish().await.map_err(Error::io("hashing a blob"))?;
        let digest = *digest;
        self.transact(move |txn| rules::set_blob_md5(txn, &digest, md5)).await?;
        Ok(md5)
    }

    /// Records the MD5 of a transfer's file (see [`FileTransfer::record_md5`]): in one
    /// transaction the transfer may fail (checksum mismatch, releasing its blob) or be published,
    /// and the blob's record gets the MD5.
    pub async fn record_md5(
        &self,
        id: FileTransferId,
        md5: Md5,
        at: Timestamp,
    ) -> Result<FileTransfer> {
        let lifecycle = self.inner.lifecycle;
        let (transfer, released) = self
            .transact(move |txn| {
                let mut transfer = rules::load(txn, id)?;
                let before = Stored::of(&transfer);
                transfer.record_md5(md5, at)?;
                let released = rules::save_transfer(txn, &transfer, before, &lifecycle)?;
                if let Some(content) = transfer.content {
                    rules::set_blob_md5(txn, &content.blake3, md5)?;
                }
                Ok((transfer, released))
            })
            .await?;
        self.events_committed();
        self.collect(released).await?;
        Ok(transfer)
    }

    // --- events and the life-cycle schedule ---

    fn events_committed(&self) {
        if let Ok(last) = self.snapshot(|r| r.last_event_seq()) {
            self.inner.events.send_if_modified(|seq| std::mem::replace(seq, last) != last);
        }
    }

    /// Events after sequence `after` (0: from the start), at most `limit`, in order.
    pub fn events_after(&self, after: u64, limit: usize) -> Result<Vec<EventRecord>> {
        self.snapshot(|r| r.events_after(after, limit))
    }

    /// The sequence of the last event in the log (0: none yet).
    pub fn last_event_seq(&self) -> Result<u64> {
        self.snapshot(|r| r.last_event_seq())
    }

    /// The sequence of the event with `id`, if it is in the log.
    pub fn event_seq(&self, id: &uuid::Uuid) -> Result<Option<u64>> {
        self.snapshot(|r| r.event_seq(id))
    }

    /// Follows the sequence of the last committed event (for long-polls and watch streams).
    pub fn watch_events(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.events.subscribe()
    }

    /// Life-cycle jobs due at or before `now`, earliest first.
    pub fn due_jobs(&self, now: Timestamp, limit: usize) -> Result<Vec<Job>> {
        self.snapshot(|r| r.due_jobs(now, limit))
    }

    /// Runs `job` in one transaction: the job leaves the schedule and `f`'s change to the
    /// transfer (with its events, follow-up jobs and blob release) commits with it. `f` may
    /// return a time to run the job again. A job whose transfer is gone just leaves.
    pub async fn run_job<F>(&self, job: Job, mut f: F) -> Result<()>
    where
        F: FnMut(&mut FileTransfer, Option<&ResourceConfig>) -> Result<Option<Timestamp>>
            + Send
            + 'static,
    {
        let lifecycle = self.inner.lifecycle;
        let released = self
            .transact(move |txn| {
                if !txn.unschedule(&job)? {
                    return Ok(Vec::new()); // already run
                }
                let Some(mut transfer) = txn.transfer(job.transfer)? else {
                    return Ok(Vec::new());
                };
                let resource = txn.resource(&transfer.resource_id)?;
                let before = Stored::of(&transfer);
                if let Some(again) = f(&mut transfer, resource.as_ref())? {
                    txn.schedule(&Job { due: again, ..job })?;
                }
                rules::save_transfer(txn, &transfer, before, &lifecycle)
            })
            .await?;
        self.events_committed();
        self.collect(released).await
    }

    /// Drops a standalone reference taken by [`Storage::add_blob`]; the file goes with the last.
    pub async fn release_blob(&self, digest: Digest) -> Result<()> {
        let last = self.transact(move |txn| rules::blob_decref(txn, &digest)).await?;
        if last {
            self.collect(vec![digest]).await?;
        }
        Ok(())
    }

    /// The index record of a blob.
    pub fn blob(&self, digest: &Digest) -> Result<Option<BlobRecord>> {
        self.snapshot(|r| r.blob(digest))
    }

    /// Every blob record.
    pub fn blobs(&self) -> Result<Vec<(Digest, BlobRecord)>> {
        self.snapshot(|r| r.blobs())
    }

    /// Opens `len` bytes (to the end if `None`) of a blob from `offset`.
    pub async fn read_blob(
        &self,
        digest: &Digest,
        offset: u64,
        len: Option<u64>,
    ) -> Result<BlobRange> {
        if let Some(bytes) = self.snapshot(|r| r.inline_blob(digest))? {
            return BlobRange::new(stream::in_memory(bytes), offset, len)
                .map_err(Error::io("opening a blob"));
        }
        let digest = *digest;
        self.blob_io("opening a blob", move |b| BlobRange::new(b.open(&digest)?, offset, len)).await
    }

    /// Re-hashes a blob (its file, or its inline bytes) and compares it with its digest.
    pub async fn verify_blob(&self, digest: &Digest) -> Result<Verification> {
        if let Some(bytes) = self.snapshot(|r| r.inline_blob(digest))? {
            let actual = Digest::of(&bytes);
            return Ok(if actual == *digest {
                Verification::Intact
            } else {
                Verification::Corrupt { actual }
            });
        }
        let digest = *digest;
        self.blob_io("verifying a blob", move |b| b.verify(&digest)).await
    }

    /// Whether blob `digest` is kept inline in the metadata store.
    pub fn is_inline(&self, digest: &Digest) -> Result<bool> {
        self.snapshot(|r| r.has_inline_blob(digest))
    }

    /// Whether a finished temporary of `len` bytes is kept inline rather than promoted.
    pub(crate) fn keeps_inline(&self, len: u64) -> bool {
        self.inner.inline_max > 0 && len <= self.inner.inline_max
    }

    /// Whether blob `digest`'s file should go: no record references it, or its record keeps
    /// the bytes inline (identical content came back inline). One snapshot, so a record that
    /// changes between the two reads cannot mislead it.
    fn file_unreferenced(&self, digest: &Digest) -> Result<bool> {
        self.snapshot(|r| Ok(r.blob(digest)?.is_none() || r.has_inline_blob(digest)?))
    }

    /// The path of a blob's file (for tests that damage it on purpose, and for operators); an
    /// empty path if the blob store keeps no local files ([`BlobStore::local_path`]). An inline
    /// blob ([`Storage::is_inline`]) has no file at this path.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.inner.blobs.local_path(digest).unwrap_or_default()
    }

    /// Places a finished temporary under its digest and commits `reference` in the same step.
    /// If the commit fails or references nothing, the file is removed again unless something
    /// else references the same content. A small blob ([`StorageOptions::inline_max`]) is not
    /// placed: its bytes are read back from the temporary and written in the same transaction
    /// as `reference`, if that transaction creates the blob's record (otherwise identical
    /// content is stored already, inline or as a file).
    async fn place_and_reference<T, F>(&self, finished: FinishedTemp, mut reference: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnMut(&mut dyn MetadataTxn) -> Result<T> + Send + 'static,
    {
        let digest = finished.content.blake3;
        let temp = finished.name.clone();
        let _guard = self.lock(&digest).await;
        // Content kept inline already stays inline (inline_max may have been lowered since):
        // a blob is a file or inline bytes, never both.
        let inline = if self.keeps_inline(finished.content.size) || self.is_inline(&digest)? {
            let (name, size) = (temp.clone(), finished.content.size as usize);
            let bytes = self
                .blob_io("reading a small blob", move |b| {
                    b.open_temp(&name)?.reader.read_at(0, size)
                })
                .await?;
            Some(bytes)
        } else {
            self.blob_io("placing a blob", move |b| b.promote(&finished)).await?;
            None
        };
        let result = self
            .transact(move |txn| {
                let Some(bytes) = &inline else { return reference(txn) };
                let existed = txn.blob(&digest)?.is_some();
                let result = reference(txn)?;
                if !existed && txn.blob(&digest)?.is_some() {
                    txn.put_inline_blob(&digest, bytes)?;
                }
                Ok(result)
            })
            .await;
        // Committed or refused, the temporary has served its purpose. (A crash before this line
        // leaves it unclaimed, and start-up sweeps it.)
        self.blob_io("removing a temporary", move |b| b.remove_temp(&temp)).await?;
        if self.blob(&digest)?.is_none() {
            self.blob_io("removing an unreferenced blob", move |b| b.remove(&digest)).await?;
        }
        result
    }

    /// Deletes the files of blobs whose last reference went, unless one came back meanwhile.
    async fn collect(&self, digests: Vec<Digest>) -> Result<()> {
        for digest in digests {
            let _guard = self.lock(&digest).await;
            // Identical content may have come back meanwhile, inline: its file goes all the same.
            if self.file_unreferenced(&digest)? {
                self.blob_io("deleting a blob", move |b| b.remove(&digest)).await?;
            }
            self.transact(move |txn| txn.unqueue_gc(&digest)).await?;
        }
        Ok(())
    }

    /// Checks that the index and the files agree; returns the problems found (empty = consistent).
    /// Used by tests after crashes, and by operators.
    pub async fn check_consistency(&self) -> Result<Vec<String>> {
        let mut problems = Vec::new();
        let mut holders: std::collections::HashMap<Digest, u64> = Default::default();
        for id in self.transfer_ids()? {
            let transfer = self.transfer(id)?.ok_or_else(|| Error::NotFound(id.to_string()))?;
            if let Some(content) = transfer.content.filter(|_| transfer.holds_blob()) {
                *holders.entry(content.blake3).or_default() += 1;
            }
        }
        for (digest, record) in self.blobs()? {
            match self.verify_blob(&digest).await? {
                Verification::Intact => {}
                other => problems.push(format!("blob {digest}: {other:?}")),
            }
            let held = holders.remove(&digest).unwrap_or(0);
            if record.refs < held {
                problems.push(format!(
                    "blob {digest}: {} refs but {held} transfers hold it",
                    record.refs
                ));
            }
        }
        for (digest, n) in holders {
            problems.push(format!("{n} transfers hold blob {digest}, which has no record"));
        }
        Ok(problems)
    }
}

/// A one-shot blob write in progress (see [`Storage::blob_writer`]).
#[derive(Debug)]
pub struct BlobIngest {
    writer: BlobWriter,
}

impl BlobIngest {
    /// Appends a chunk.
    pub async fn write(&mut self, chunk: bytes::Bytes) -> Result<()> {
        self.writer.write(chunk).await.map_err(Error::io("writing a blob"))
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.writer.len()
    }

    /// A reader that follows the bytes as they are written (for [`Md5Follower::follow`]).
    pub fn tail(&self) -> Result<BlobTail> {
        self.writer.tail().map_err(Error::io("opening a blob for reading"))
    }

    /// Whether nothing was written yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
    context: &'static str,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Io { context, source: std::io::Error::other(e) })?
        .map_err(Error::io(context))
}

impl Storage {
    /// Runs `f` on the blob store on the blocking pool (see [`ports::BlobStore`]: every method
    /// may block).
    async fn blob_io<T: Send + 'static>(
        &self,
        context: &'static str,
        f: impl FnOnce(&dyn BlobStore) -> std::io::Result<T> + Send + 'static,
    ) -> Result<T> {
        let blobs = self.inner.blobs.clone();
        blocking(move || f(&*blobs), context).await
    }

    fn blob_store(&self) -> &Arc<dyn BlobStore> {
        &self.inner.blobs
    }

    /// Runs `f` on a consistent snapshot of the metadata store (see [`MetadataStore::read`]).
    pub(crate) fn snapshot<T>(
        &self,
        f: impl FnOnce(&mut dyn MetadataRead) -> Result<T>,
    ) -> Result<T> {
        ports::snapshot(&*self.inner.index, f)
    }

    /// Runs `f` in one metadata transaction and returns its result once it is durable (see
    /// [`MetadataStore::write`]: `f` may run more than once).
    pub(crate) async fn transact<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnMut(&mut dyn MetadataTxn) -> Result<T> + Send + 'static,
    {
        ports::transact(&*self.inner.index, f).await
    }
}
