//! Reading local blobs and temporaries: positioned reads of a file, and verification.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

use crate::digest::Digest;
use crate::ports::{BlobReader, ReadAt, Verification};

/// An open file of the store, read with `pread`.
#[derive(Debug)]
struct LocalFile(File);

impl ReadAt for LocalFile {
    fn read_at(&self, offset: u64, len: usize) -> io::Result<Bytes> {
        let mut buf = vec![0u8; len];
        self.0.read_exact_at(&mut buf, offset)?;
        Ok(Bytes::from(buf))
    }
}

/// Opens a file of the store for reading, with its size now.
pub(super) fn open(path: &Path) -> io::Result<BlobReader> {
    let file = File::open(path)?;
    let size = file.metadata()?.len();
    Ok(BlobReader { reader: Arc::new(LocalFile(file)), size })
}

pub(super) fn verify(path: &Path, expected: &Digest) -> io::Result<Verification> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Verification::Missing),
        Err(e) => return Err(e),
    };
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader(file)?;
    let actual = Digest::from(hasher.finalize());
    Ok(if actual == *expected { Verification::Intact } else { Verification::Corrupt { actual } })
}
