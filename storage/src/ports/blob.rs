//! The blob port: where the bytes of files live, addressed by their BLAKE3 digest.
//!
//! A blob store holds two kinds of objects:
//!
//! - **blobs**: complete, durable, immutable, named by the BLAKE3 digest of their bytes;
//! - **temporaries**: data being written, named by an opaque string the store chooses. A
//!   resumable temporary (an upload's) survives its writer and a restart, is appended to after
//!   [`BlobStore::resume_temp`], and becomes a blob by [`BlobStore::promote`]. It is never read
//!   as a blob.
//!
//! Reference counts, upload offsets and which temporaries are claimed live in the metadata
//! store ([`super::MetadataStore`]), not here: the store only keeps bytes. The facade
//! ([`crate::Storage`]) orders the two so that the index never points at a missing blob (see the
//! contract of [`BlobStore::promote`] and [`BlobStore::remove`]).
//!
//! # Object stores
//!
//! Nothing here is a path. A temporary maps to a multipart upload (S3) or uncommitted blocks
//! (Azure): [`TempBlob::write`] stages bytes, [`TempBlob::sync`] makes staged parts durable,
//! [`BlobStore::promote`] completes the object under its digest (or copies a completed
//! temporary object there, so the temporary stays resumable until
//! [`BlobStore::remove_temp`]). Staged parts cannot be read back in those stores, while
//! [`BlobStore::open_temp`] (the scanner's tail) and [`BlobStore::resume_temp`] (re-hashing the
//! committed prefix) need them: such a store keeps a local spool of each temporary as well,
//! or at least of the part not yet completed.
//!
//! # Blocking
//!
//! Every method may block. The facade calls them on tokio's blocking pool (`spawn_blocking`),
//! never on an async worker thread, so a network-bound implementation may wait for its async
//! client there with `tokio::runtime::Handle::current().block_on(..)`. Per chunk the facade
//! makes one hop to the blocking pool and calls one method through a vtable ([`TempBlob::write`],
//! [`ReadAt::read_at`]): no boxed future, no copy of the chunk, no lock.
//!
//! `Drop` is the exception: it runs wherever the handle is dropped, so it must not block on the
//! network (a remote implementation spawns its clean-up or leaves it to
//! [`BlobStore::sweep_temporaries`]).
//!
//! # Crashes
//!
//! A crash may leave: temporaries nobody finished (swept at start-up by
//! [`BlobStore::sweep_temporaries`], keeping those an upload record claims), and blobs promoted
//! whose metadata transaction never committed (found by [`BlobStore::list`] and removed by the
//! facade at start-up when no record references them). Nothing else: a blob that
//! [`BlobStore::open`] returns is complete.
//!
//! Implementations: [`crate::LocalBlobStore`] (files under a data directory). The conformance
//! suite (`storage::conformance::blob`, feature `conformance`) states this contract as tests.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;

use crate::digest::Digest;
use crate::model::StoredContent;

/// Whether a temporary outlives its writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TempKind {
    /// A one-shot write: dropping its writer unfinished deletes it.
    OneShot,
    /// An upload's temporary: dropping its writer keeps it for [`BlobStore::resume_temp`].
    Resumable,
}

/// A temporary that is complete and durable, with the size and digests of its bytes.
#[derive(Debug, Clone)]
pub struct FinishedTemp {
    /// The temporary's name ([`TempBlob::name`]).
    pub name: String,
    /// Size, BLAKE3 and (for small blobs, if the store computed it) MD5 of the bytes.
    pub content: StoredContent,
}

/// Positioned reads of a blob or a temporary.
pub trait ReadAt: Send + Sync + fmt::Debug {
    /// Exactly `len` bytes from `offset`. Fails ([`io::ErrorKind::UnexpectedEof`]) if fewer
    /// than `len` bytes exist there; `len` 0 at any offset up to the size is an empty chunk.
    /// Concurrent calls on one reader are allowed. Blocking.
    fn read_at(&self, offset: u64, len: usize) -> io::Result<Bytes>;
}

/// An open blob or temporary: a reader and the size it had when opened.
#[derive(Debug, Clone)]
pub struct BlobReader {
    /// Reads the bytes.
    pub reader: Arc<dyn ReadAt>,
    /// Bytes in the object when it was opened.
    pub size: u64,
}

/// A temporary being written: bytes are appended, hashed on the way (BLAKE3, and MD5 while the
/// temporary is at most [`crate::INLINE_MD5_LIMIT`] long and was not resumed).
pub trait TempBlob: Send + fmt::Debug {
    /// The temporary's name: what an upload record stores to find it again.
    fn name(&self) -> &str;

    /// Bytes written so far (durable or not).
    fn len(&self) -> u64;

    /// Whether nothing was written yet.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends `chunk` (not empty). On success every byte of it is visible to readers of the
    /// temporary ([`BlobStore::open_temp`]) but not necessarily durable. On failure the
    /// temporary's content past the last [`TempBlob::sync`] is undefined and the facade stops
    /// writing to this handle (an upload resumes from its committed offset). A write that
    /// would leave less free space than the store keeps in reserve fails with
    /// [`io::ErrorKind::StorageFull`] before any of its bytes are written.
    fn write(&mut self, chunk: &Bytes) -> io::Result<()>;

    /// Makes every byte written so far durable and returns that length. After a crash,
    /// [`BlobStore::resume_temp`] with this length finds those bytes.
    fn sync(&mut self) -> io::Result<u64>;

    /// Makes the whole temporary durable and returns its size and digests. The temporary keeps
    /// its name until [`BlobStore::remove_temp`]: it is promoted by [`BlobStore::promote`].
    fn finish(self: Box<Self>) -> io::Result<FinishedTemp>;

    /// Like [`TempBlob::finish`], but the bytes need not be made durable: the facade reads a
    /// small blob back ([`BlobStore::open_temp`]) and commits it inside the metadata store
    /// instead of promoting it, so the temporary's own fsync would be wasted. Whatever the
    /// store does, the returned digests are those of every byte written. The default finishes
    /// durably.
    fn finish_volatile(self: Box<Self>) -> io::Result<FinishedTemp> {
        self.finish()
    }
}

/// A content-addressed blob store with resumable temporaries. See the [module](self) for what
/// it keeps, how it is called and what a crash leaves.
pub trait BlobStore: Send + Sync + fmt::Debug {
    /// Creates a new, empty temporary with a fresh name.
    fn create_temp(&self, kind: TempKind) -> io::Result<Box<dyn TempBlob>>;

    /// Opens the resumable temporary `name` for appending after its first `committed` bytes
    /// (a length [`TempBlob::sync`] returned): anything after them is discarded, and the
    /// digests of the finished temporary cover every byte as if it had been written in one go.
    /// Fails if the temporary is missing or holds fewer than `committed` bytes.
    fn resume_temp(&self, name: &str, committed: u64) -> io::Result<Box<dyn TempBlob>>;

    /// Whether the temporary `name` exists.
    fn temp_exists(&self, name: &str) -> io::Result<bool>;

    /// Opens the temporary `name` for reading, while it is written or after. The reader sees at
    /// least every byte whose [`TempBlob::write`] returned.
    fn open_temp(&self, name: &str) -> io::Result<BlobReader>;

    /// Deletes the temporary `name`. Missing is fine: idempotent.
    fn remove_temp(&self, name: &str) -> io::Result<()>;

    /// Deletes every temporary whose name `keep` rejects (start-up: temporaries no upload
    /// claims) and returns how many went. Called while no temporary is being written.
    fn sweep_temporaries(&self, keep: &dyn Fn(&str) -> bool) -> io::Result<usize>;

    /// Makes the finished temporary the blob named by its digest, durably: once this returns,
    /// [`BlobStore::open`] finds it, after a crash too. If the blob exists already (identical
    /// content stored before) nothing changes: content is stored once. The temporary stays
    /// (readable, resumable) until [`BlobStore::remove_temp`], so a crash before the metadata
    /// commit leaves a resumable upload and at worst an orphan blob, never neither. Atomic: a
    /// blob is never visible incomplete. The facade never runs `promote` and
    /// [`BlobStore::remove`] of the same digest at the same time.
    fn promote(&self, temp: &FinishedTemp) -> io::Result<()>;

    /// Opens the blob `digest` for reading; [`io::ErrorKind::NotFound`] if there is none.
    fn open(&self, digest: &Digest) -> io::Result<BlobReader>;

    /// Re-hashes the blob `digest` and compares the result with its name.
    fn verify(&self, digest: &Digest) -> io::Result<Verification> {
        let BlobReader { reader, size } = match self.open(digest) {
            Ok(opened) => opened,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Verification::Missing),
            Err(e) => return Err(e),
        };
        let mut hasher = blake3::Hasher::new();
        let mut offset = 0;
        while offset < size {
            let n = (size - offset).min(1 << 20) as usize;
            hasher.update(&reader.read_at(offset, n)?);
            offset += n as u64;
        }
        let actual = Digest::from(hasher.finalize());
        Ok(if actual == *digest { Verification::Intact } else { Verification::Corrupt { actual } })
    }

    /// Deletes the blob `digest`, durably enough that a crash never brings back a blob whose
    /// deletion the facade recorded as done. Missing is fine: idempotent. Readers that opened
    /// it before may go on reading or fail; the facade deletes only unreferenced blobs.
    fn remove(&self, digest: &Digest) -> io::Result<()>;

    /// Every blob in the store (for the start-up sweep of orphans), in no particular order.
    /// Objects that are not blobs of this store are skipped.
    fn list(&self) -> io::Result<Vec<Digest>>;

    /// The engine's name, for readiness and logs.
    fn backend(&self) -> &'static str {
        "local"
    }

    /// The path of the blob's file, for a store whose blobs are local files; `None` otherwise.
    fn local_path(&self, digest: &Digest) -> Option<PathBuf> {
        let _ = digest;
        None
    }
}

/// The result of re-hashing a blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    /// The bytes hash to the blob's name.
    Intact,
    /// They do not: the file was corrupted.
    Corrupt {
        /// What the bytes hash to now.
        actual: Digest,
    },
    /// There is no such file.
    Missing,
}
