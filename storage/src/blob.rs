//! The content-addressed blob store: complete files named by their BLAKE3 digest.
//!
//! On disk, under the storage root:
//!
//! | path                  | what                                                       |
//! |-----------------------|------------------------------------------------------------|
//! | `blobs/ab/cd/<hex>`   | a complete blob; `ab`, `cd` are the first two digest bytes |
//! | `tmp/<uuid>.part`     | data being written; never read as a blob                   |
//!
//! Architecture invariant: a file under `blobs/` is complete, fsynced and named by the digest of
//! its bytes. It got there as a hard link to a finished temporary in `tmp/` (same filesystem, so
//! the name appears atomically) followed by an fsync of the directory. The temporary is unlinked
//! only after the index committed the blob, so a crash at any point leaves either a resumable
//! upload or a committed blob, never neither. Reference counts live in the index, not here.

mod reader;
mod writer;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

pub use reader::{BlobRange, Verification};
pub use writer::BlobTail;
pub(crate) use writer::BlobWriter;
pub(crate) use writer::FinishedBlob;
pub use writer::INLINE_MD5_LIMIT;

use crate::digest::Digest;

/// The directories of the blob store.
#[derive(Debug, Clone)]
pub(crate) struct BlobStore {
    blobs: PathBuf,
    tmp: PathBuf,
    write: WriteOptions,
}

/// How temporaries are written.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WriteOptions {
    /// fsync data (off only for throwaway test data).
    pub(crate) sync: bool,
    /// Bytes of the filesystem that writes leave free (see [`crate::StorageOptions::min_free_bytes`]).
    pub(crate) reserve: u64,
}

impl BlobStore {
    pub(crate) fn open(root: &Path, write: WriteOptions) -> io::Result<Self> {
        let store = Self { blobs: root.join("blobs"), tmp: root.join("tmp"), write };
        fs::create_dir_all(&store.blobs)?;
        fs::create_dir_all(&store.tmp)?;
        Ok(store)
    }

    /// Where the blob with `digest` lives.
    pub(crate) fn path_of(&self, digest: &Digest) -> PathBuf {
        let hex = digest.to_hex();
        self.blobs.join(&hex[0..2]).join(&hex[2..4]).join(hex)
    }

    pub(crate) fn temp_path(&self, name: &str) -> PathBuf {
        self.tmp.join(name)
    }

    pub(crate) fn new_temp_name() -> String {
        format!("{}.part", uuid::Uuid::new_v4().simple())
    }

    pub(crate) fn write_options(&self) -> WriteOptions {
        self.write
    }

    /// Links a finished temporary into place under its digest. If the blob already exists
    /// (identical content stored before), nothing is linked: content is stored once. The caller
    /// holds the digest's lock, so no removal of the same blob runs meanwhile, and unlinks the
    /// temporary once the index has committed.
    pub(crate) fn place(&self, finished: &FinishedBlob) -> io::Result<()> {
        let target = self.path_of(&finished.content.blake3);
        if target.exists() {
            return Ok(());
        }
        let dir = target.parent().expect("blob paths have a parent");
        if !dir.exists() {
            self.create_dir_durably(dir)?;
        }
        match fs::hard_link(&finished.temp_path, &target) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
        // The new name is only durable once the directory entry is: fsync the directory.
        self.sync_dir(dir)
    }

    /// Creates `dir` (and its parent), fsyncing each parent whose entries changed.
    fn create_dir_durably(&self, dir: &Path) -> io::Result<()> {
        let parent = dir.parent().expect("blob directories have a parent");
        if !parent.exists() {
            fs::create_dir_all(parent)?;
            self.sync_dir(parent.parent().expect("fan-out directories have a parent"))?;
        }
        match fs::create_dir(dir) {
            Ok(()) => self.sync_dir(parent),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        if self.write.sync { fs::File::open(dir)?.sync_all() } else { Ok(()) }
    }

    /// Deletes a blob file. Missing is fine: removal is idempotent.
    pub(crate) fn remove(&self, digest: &Digest) -> io::Result<()> {
        remove_if_exists(&self.path_of(digest))
    }

    /// Opens `len` bytes of a blob from `offset` for reading.
    pub(crate) fn open_range(
        &self,
        digest: &Digest,
        offset: u64,
        len: Option<u64>,
    ) -> io::Result<BlobRange> {
        BlobRange::open(&self.path_of(digest), offset, len)
    }

    /// Re-hashes a blob and compares with its name.
    pub(crate) fn verify(&self, digest: &Digest) -> io::Result<Verification> {
        reader::verify(&self.path_of(digest), digest)
    }

    /// Deletes every temporary whose name `keep` rejects; returns how many went.
    pub(crate) fn sweep_temporaries(&self, keep: impl Fn(&str) -> bool) -> io::Result<usize> {
        let mut n_removed = 0;
        for entry in fs::read_dir(&self.tmp)? {
            let entry = entry?;
            let name = entry.file_name();
            if !keep(&name.to_string_lossy()) {
                remove_if_exists(&entry.path())?;
                n_removed += 1;
            }
        }
        Ok(n_removed)
    }

    /// Every blob file on disk, with its digest (files with foreign names are skipped).
    pub(crate) fn list(&self) -> io::Result<Vec<Digest>> {
        let mut out = Vec::new();
        for a in fs::read_dir(&self.blobs)? {
            let a = a?;
            if !a.file_type()?.is_dir() {
                continue;
            }
            for b in fs::read_dir(a.path())? {
                let b = b?;
                if !b.file_type()?.is_dir() {
                    continue;
                }
                for f in fs::read_dir(b.path())? {
                    if let Ok(digest) = f?.file_name().to_string_lossy().parse::<Digest>() {
                        out.push(digest);
                    }
                }
            }
        }
        Ok(out)
    }
}

/// Opens a range of any file under the store (temporaries included).
pub(crate) fn open_path_range(path: &Path, offset: u64, len: Option<u64>) -> io::Result<BlobRange> {
    BlobRange::open(path, offset, len)
}

pub(crate) fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
