//! MD5 off the ingest path.
//!
//! Altinn's `checksum` is an MD5. MD5 runs at 0.6–0.7 GiB/s on one core, slower than a disk
//! that takes 1.2 GiB/s with fdatasync, so the blob writer does not compute it. A follower tails
//! the bytes as they are written (the same [`BlobTail`] the scanner reads) and hashes them on the
//! other core; ingest never waits for it. Its result is recorded when ready
//! ([`crate::Storage::record_md5`]); a transfer whose sender declared a checksum is not
//! published before the MD5 is known and matches.

use std::io;

use md5::Digest as _;
use tokio::task::JoinHandle;

use crate::digest::Md5;
use crate::stream::{BlobRange, BlobTail};

/// Reads per step.
const STEP: usize = 1 << 20;

/// A running MD5 computation over a stream of bytes.
#[derive(Debug)]
pub struct Md5Follower {
    task: JoinHandle<io::Result<Md5>>,
}

impl Md5Follower {
    /// Hashes an upload while it is being written; finishes when the upload does.
    pub fn follow(mut tail: BlobTail) -> Self {
        Self::spawn(async move {
            let mut hasher = md5::Md5::new();
            while let Some(chunk) = tail.next_chunk(STEP).await? {
                hasher = hash_off_thread(hasher, chunk).await?;
            }
            Ok(Md5::from_bytes(hasher.finalize().into()))
        })
    }

    /// Hashes a stored blob (for blobs written without a follower).
    pub fn read(mut range: BlobRange) -> Self {
        Self::spawn(async move {
            let mut hasher = md5::Md5::new();
            while let Some(chunk) = range.next_chunk(STEP).await? {
                hasher = hash_off_thread(hasher, chunk).await?;
            }
            Ok(Md5::from_bytes(hasher.finalize().into()))
        })
    }

    fn spawn(f: impl Future<Output = io::Result<Md5>> + Send + 'static) -> Self {
        Self { task: tokio::spawn(f) }
    }

    /// Whether the MD5 is ready.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// The MD5 of every byte, once the stream ended.
    pub async fn finish(self) -> io::Result<Md5> {
        self.task.await.map_err(io::Error::other)?
    }
}

async fn hash_off_thread(mut hasher: md5::Md5, chunk: bytes::Bytes) -> io::Result<md5::Md5> {
    tokio::task::spawn_blocking(move || {
        hasher.update(&chunk);
        hasher
    })
    .await
    .map_err(io::Error::other)
}
