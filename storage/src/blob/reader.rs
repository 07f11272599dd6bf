//! Reading blobs: byte ranges as a sequence of `Bytes` chunks, and verification.

use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

use super::writer::read_at;
use crate::digest::Digest;

/// A byte range of a blob, read chunk by chunk with positioned reads.
#[derive(Debug)]
pub struct BlobRange {
    file: Arc<File>,
    pos: u64,
    end: u64,
    size: u64,
}

impl BlobRange {
    pub(super) fn open(path: &Path, offset: u64, len: Option<u64>) -> io::Result<Self> {
        let file = File::open(path)?;
        let size = file.metadata()?.len();
        if offset > size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("offset {offset} is past the end of a {size}-byte blob"),
            ));
        }
        let end = len.map_or(size, |len| offset.saturating_add(len).min(size));
        Ok(Self { file: Arc::new(file), pos: offset, end, size })
    }

    /// The whole blob's size.
    pub fn blob_size(&self) -> u64 {
        self.size
    }

    /// Bytes left in the range.
    pub fn remaining(&self) -> u64 {
        self.end - self.pos
    }

    /// The next up to `max` bytes, or `None` at the end of the range.
    pub async fn next_chunk(&mut self, max: usize) -> io::Result<Option<Bytes>> {
        if self.pos >= self.end {
            return Ok(None);
        }
        let n = (self.end - self.pos).min(max as u64) as usize;
        let chunk = read_at(self.file.clone(), self.pos, n).await?;
        self.pos += n as u64;
        Ok(Some(chunk))
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
