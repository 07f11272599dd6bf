//! The local blob store: complete files named by their BLAKE3 digest, the first implementation
//! of the blob port ([`crate::ports::BlobStore`]).
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
//!
//! - `writer.rs`: [`LocalTemp`], a temporary being written (BLAKE3 beside the write, the
//!   free-space reserve, resume).
//! - `reader.rs`: positioned reads of a file, verification.

mod reader;
mod writer;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

pub use crate::ports::Verification;
pub use writer::INLINE_MD5_LIMIT;
use writer::LocalTemp;

use crate::digest::Digest;
use crate::ports::{BlobReader, BlobStore, FinishedTemp, TempBlob, TempKind};

/// Blobs as files under a data directory: `blobs/ab/cd/<hex>` and `tmp/<uuid>.part`.
#[derive(Debug, Clone)]
pub struct LocalBlobStore {
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

impl LocalBlobStore {
    /// Opens (or creates) the store under `root`. `sync` fsyncs file data and directories (off
    /// only for throwaway test data); a write that would leave fewer than `reserve` bytes of the
    /// filesystem free fails before any of its bytes are written (0: no reserve).
    pub fn open(root: &Path, sync: bool, reserve: u64) -> io::Result<Self> {
        let write = WriteOptions { sync, reserve };
        let store = Self { blobs: root.join("blobs"), tmp: root.join("tmp"), write };
        fs::create_dir_all(&store.blobs)?;
        fs::create_dir_all(&store.tmp)?;
        Ok(store)
    }

    /// Where the blob with `digest` lives.
    pub fn path_of(&self, digest: &Digest) -> PathBuf {
        let hex = digest.to_hex();
        self.blobs.join(&hex[0..2]).join(&hex[2..4]).join(hex)
    }

    fn temp_path(&self, name: &str) -> PathBuf {
        self.tmp.join(name)
    }

    fn new_temp_name() -> String {
        format!("{}.part", uuid::Uuid::new_v4().simple())
    }
}

impl BlobStore for LocalBlobStore {
    fn create_temp(&self, kind: TempKind) -> io::Result<Box<dyn TempBlob>> {
        let name = Self::new_temp_name();
        let path = self.temp_path(&name);
        let keep = kind == TempKind::Resumable;
        Ok(Box::new(LocalTemp::create(name, path, keep, self.write)?))
    }

    fn resume_temp(&self, name: &str, committed: u64) -> io::Result<Box<dyn TempBlob>> {
        let path = self.temp_path(name);
        Ok(Box::new(LocalTemp::resume(name.to_owned(), path, committed, self.write)?))
    }

    fn temp_exists(&self, name: &str) -> io::Result<bool> {
        Ok(self.temp_path(name).exists())
    }

    fn open_temp(&self, name: &str) -> io::Result<BlobReader> {
        reader::open(&self.temp_path(name))
    }

    fn remove_temp(&self, name: &str) -> io::Result<()> {
        remove_if_exists(&self.temp_path(name))
    }

    fn sweep_temporaries(&self, keep: &dyn Fn(&str) -> bool) -> io::Result<usize> {
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

    /// Links a finished temporary into place under its digest. If the blob already exists
    /// (identical content stored before), nothing is linked: content is stored once. The caller
    /// holds the digest's lock, so no removal of the same blob runs meanwhile, and unlinks the
    /// temporary once the index has committed.
    fn promote(&self, finished: &FinishedTemp) -> io::Result<()> {
        let target = self.path_of(&finished.content.blake3);
        if target.exists() {
            return Ok(());
        }
        let dir = target.parent().expect("blob paths have a parent");
        if !dir.exists() {
            self.create_dir_durably(dir)?;
        }
        match fs::hard_link(self.temp_path(&finished.name), &target) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
        // The new name is only durable once the directory entry is: fsync the directory.
        self.sync_dir(dir)
    }

    fn open(&self, digest: &Digest) -> io::Result<BlobReader> {
        reader::open(&self.path_of(digest))
    }

    fn verify(&self, digest: &Digest) -> io::Result<Verification> {
        reader::verify(&self.path_of(digest), digest)
    }

    /// Deletes a blob file. Missing is fine: removal is idempotent.
    fn remove(&self, digest: &Digest) -> io::Result<()> {
        remove_if_exists(&self.path_of(digest))
    }

    fn list(&self) -> io::Result<Vec<Digest>> {
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

    fn local_path(&self, digest: &Digest) -> Option<PathBuf> {
        Some(self.path_of(digest))
    }
}

impl LocalBlobStore {
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
}

fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
