//! The durable writer: bytes stream into a temporary file while being hashed with BLAKE3.
//!
//! BLAKE3 runs beside the write, not before or after it: past [`HASH_THREAD_THRESHOLD`] bytes
//! each chunk (a shared `Bytes`, not a copy) goes to a hasher thread through a bounded channel
//! while the writing task copies it into the page cache, so on two cores the two overlap and
//! ingest runs at the disk's pace (measured: hashing inline cost ~20% of a 1.2 GiB/s disk).
//! Smaller blobs hash inline and never pay for a thread. MD5 is here only for blobs up to
//! [`INLINE_MD5_LIMIT`]: at 0.6–0.7 GiB/s on one core it is slower than this machine's disk
//! (≈1.2 GiB/s with fdatasync), so any large ingest that waited for it would run at half the
//! disk's speed. For larger blobs [`crate::Md5Follower`] computes it by tailing the same file on
//! the other core, and its result is recorded when it is ready (Altinn's `checksum` may also
//! appear late).
//!
//! Durability: [`LocalTemp::sync`] makes a prefix durable (resumable uploads record that
//! offset in the index afterwards); [`LocalTemp::finish`] fsyncs the whole file before
//! [`super::LocalBlobStore`]'s `promote` links it into place and fsyncs the directory.
//!
//! This is the local implementation of [`TempBlob`]: every method blocks, and the facade's
//! [`crate::stream::BlobWriter`] calls it on the blocking pool, one hop per chunk.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::mpsc::{SyncSender, sync_channel};
use std::thread::JoinHandle;

use bytes::Bytes;

use super::WriteOptions;
use crate::digest::{Digest, Md5};
use crate::model::StoredContent;
use crate::ports::{FinishedTemp, TempBlob};

/// Blobs smaller than this hash inline; larger ones move BLAKE3 to a thread of their own.
pub(crate) const HASH_THREAD_THRESHOLD: u64 = 1 << 20;
/// Chunks in flight to the hasher thread before the writer waits for it.
const HASH_QUEUE_DEPTH: usize = 16;
/// Blobs up to this size also get their MD5 inline, so it is known when the upload completes
/// and no second pass over the file is needed (for a 4 KiB file that pass was a blocking-pool
/// hop, a read and an index commit of its own). Past it MD5 is dropped: [`crate::Md5Follower`]
/// or a pass after completion computes it off the ingest path, and at most this much MD5 work
/// was wasted on a large file.
pub const INLINE_MD5_LIMIT: u64 = 256 * 1024;
/// Read size when re-hashing the committed prefix of a resumed upload.
const REHASH_CHUNK: usize = 1 << 20;

/// BLAKE3, inline for small blobs, on its own thread for large ones.
enum HashPipe {
    Inline(Box<blake3::Hasher>),
    Threaded { tx: SyncSender<Bytes>, handle: JoinHandle<blake3::Hasher> },
}

impl HashPipe {
    fn update(&mut self, chunk: &Bytes, len_after: u64) -> io::Result<()> {
        match self {
            Self::Inline(hasher) if len_after < HASH_THREAD_THRESHOLD => {
                hasher.update(chunk);
                Ok(())
            }
            Self::Inline(hasher) => {
                let mut hasher = std::mem::take(&mut **hasher);
                let (tx, rx) = sync_channel::<Bytes>(HASH_QUEUE_DEPTH);
                let handle =
                    std::thread::Builder::new().name("ferry-blake3".into()).spawn(move || {
                        for chunk in rx {
                            hasher.update(&chunk);
                        }
                        hasher
                    })?;
                tx.send(chunk.clone()).map_err(|_| hasher_gone())?;
                *self = Self::Threaded { tx, handle };
                Ok(())
            }
            Self::Threaded { tx, .. } => tx.send(chunk.clone()).map_err(|_| hasher_gone()),
        }
    }

    /// A fresh inline hasher (what a finished writer leaves behind).
    fn empty() -> Self {
        Self::Inline(Box::default())
    }

    fn finish(self) -> io::Result<blake3::Hash> {
        let hasher = match self {
            Self::Inline(hasher) => *hasher,
            Self::Threaded { tx, handle } => {
                drop(tx);
                handle.join().map_err(|_| hasher_gone())?
            }
        };
        Ok(hasher.finalize())
    }
}

fn hasher_gone() -> io::Error {
    io::Error::other("the BLAKE3 hashing thread stopped")
}

struct WriterState {
    file: File,
    hash: HashPipe,
    /// MD5 of every byte, while the blob is within [`INLINE_MD5_LIMIT`] (and was not resumed).
    md5: Option<md5::Md5>,
    len: u64,
    /// Bytes of the filesystem this writer leaves free.
    reserve: u64,
}

impl WriterState {
    fn new(file: File, hasher: blake3::Hasher, md5: Option<md5::Md5>, len: u64) -> Self {
        Self { file, hash: HashPipe::Inline(Box::new(hasher)), md5, len, reserve: 0 }
    }

    fn write(&mut self, chunk: &Bytes) -> io::Result<()> {
        // Refuse the chunk, before writing any of it, if it would eat into the reserve: the
        // index must always find room for its commits (a failed commit costs a reopen).
        if self.reserve > 0 {
            let free = free_bytes(&self.file)?;
            if free < self.reserve.saturating_add(chunk.len() as u64) {
                return Err(below_reserve(free, self.reserve));
            }
        }
        // Hand the chunk to the hasher first, so hashing and the write run at the same time.
        let len_after = self.len + chunk.len() as u64;
        self.hash.update(chunk, len_after)?;
        if len_after > INLINE_MD5_LIMIT {
            self.md5 = None;
        } else if let Some(md5) = &mut self.md5 {
            md5::Digest::update(md5, chunk);
        }
        self.file.write_all(chunk)?;
        self.len += chunk.len() as u64;
        Ok(())
    }
}
/// A temporary file being written, hashed on the way.
pub(crate) struct LocalTemp {
    state: WriterState,
    name: String,
    path: PathBuf,
    /// Resumable uploads keep their temporary when dropped unfinished; one-shot writes delete it.
    keep_on_drop: bool,
    sync: bool,
    finished: bool,
}

impl std::fmt::Debug for LocalTemp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalTemp")
            .field("path", &self.path)
            .field("len", &self.state.len)
            .finish_non_exhaustive()
    }
}

impl LocalTemp {
    /// Creates a new, empty temporary file at `path`.
    pub(crate) fn create(
        name: String,
        path: PathBuf,
        keep_on_drop: bool,
        options: WriteOptions,
    ) -> io::Result<Self> {
        let file = OpenOptions::new().write(true).create_new(true).open(&path)?;
        let state = WriterState::new(file, blake3::Hasher::new(), Some(md5::Digest::new()), 0);
        Ok(Self::from_state(state, name, path, keep_on_drop, options))
    }

    /// Reopens the temporary of an interrupted upload: cuts it back to the durable `committed`
    /// offset (anything after it may be torn) and re-hashes that prefix, so the final digests
    /// cover every byte exactly as an uninterrupted upload would.
    pub(crate) fn resume(
        name: String,
        path: PathBuf,
        committed: u64,
        options: WriteOptions,
    ) -> io::Result<Self> {
        let mut file = OpenOptions::new().read(true).write(true).open(&path)?;
        let on_disk = file.metadata()?.len();
        if on_disk < committed {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "temporary {} holds {on_disk} bytes but {committed} were committed",
                    path.display()
                ),
            ));
        }
        file.set_len(committed)?;
        file.seek(SeekFrom::Start(0))?;
        let mut hasher = blake3::Hasher::new();
        let mut rehashed = 0u64;
        {
            let mut reader = (&file).take(committed);
            let mut buf = vec![0u8; REHASH_CHUNK];
            loop {
                let n = read_full(&mut reader, &mut buf)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                rehashed += n as u64;
            }
        }
        // The MD5 of a resumed prefix is left to the pass after completion.
        let mut state = WriterState::new(file, hasher, None, rehashed);
        if state.len != committed {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "temporary shrank while resuming",
            ));
        }
        state.file.seek(SeekFrom::Start(committed))?;
        Ok(Self::from_state(state, name, path, true, options))
    }

    fn from_state(
        mut state: WriterState,
        name: String,
        path: PathBuf,
        keep_on_drop: bool,
        options: WriteOptions,
    ) -> Self {
        state.reserve = options.reserve;
        Self { state, name, path, keep_on_drop, sync: options.sync, finished: false }
    }
}

impl TempBlob for LocalTemp {
    fn name(&self) -> &str {
        &self.name
    }

    fn len(&self) -> u64 {
        self.state.len
    }

    fn write(&mut self, chunk: &Bytes) -> io::Result<()> {
        self.state.write(chunk)
    }

    fn sync(&mut self) -> io::Result<u64> {
        if self.sync {
            self.state.file.sync_data()?;
        }
        Ok(self.state.len)
    }

    fn finish(self: Box<Self>) -> io::Result<FinishedTemp> {
        if self.sync {
            self.state.file.sync_all()?;
        }
        self.finish_volatile()
    }

    fn finish_volatile(mut self: Box<Self>) -> io::Result<FinishedTemp> {
        let hash = std::mem::replace(&mut self.state.hash, HashPipe::empty());
        let content = StoredContent {
            size: self.state.len,
            blake3: Digest::from(hash.finish()?),
            md5: self.state.md5.take().map(|m| Md5::from_bytes(md5::Digest::finalize(m).into())),
        };
        // From here on the file is the caller's to promote and remove.
        self.finished = true;
        Ok(FinishedTemp { name: std::mem::take(&mut self.name), content })
    }
}

impl Drop for LocalTemp {
    fn drop(&mut self) {
        if !self.finished && !self.keep_on_drop {
            let _ = super::remove_if_exists(&self.path);
        }
    }
}

/// Bytes an unprivileged writer may still use on the filesystem that holds `file`.
pub(crate) fn free_bytes(file: &File) -> io::Result<u64> {
    let stat = rustix::fs::fstatvfs(file).map_err(io::Error::from)?;
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// The error for a write refused to keep the reserve free: it reads as "no space" everywhere.
fn below_reserve(free: u64, reserve: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::StorageFull,
        format!("{free} bytes free, and {reserve} are kept free for the index"),
    )
}

fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}
