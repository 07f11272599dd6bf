//! Sources of bytes to scan.

use std::future::Future;
use std::io;

use bytes::Bytes;
use tokio::sync::mpsc;

/// Something a scan reads from, chunk by chunk, at the scanner's pace.
pub trait ByteSource: Send {
    /// The next up to `max` bytes, `None` at the end, or an error if the bytes cannot be had
    /// (the scan then fails; it never reports clean for bytes it did not see).
    fn next_chunk(&mut self, max: usize) -> impl Future<Output = io::Result<Option<Bytes>>> + Send;
}

/// In-memory bytes (tests, small payloads).
impl ByteSource for Bytes {
    async fn next_chunk(&mut self, max: usize) -> io::Result<Option<Bytes>> {
        if self.is_empty() {
            return Ok(None);
        }
        let n = max.min(self.len());
        Ok(Some(self.split_to(n)))
    }
}

/// Chunks from a bounded channel: the producer waits when the scanner is `capacity` chunks
/// behind. A producer that stops with `Err` fails the scan.
#[derive(Debug)]
pub struct ChannelSource {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    pending: Bytes,
}

impl ChannelSource {
    /// A source and the sender that feeds it.
    pub fn new(capacity: usize) -> (mpsc::Sender<io::Result<Bytes>>, Self) {
        let (tx, rx) = mpsc::channel(capacity);
        (tx, Self { rx, pending: Bytes::new() })
    }
}

impl ByteSource for ChannelSource {
    async fn next_chunk(&mut self, max: usize) -> io::Result<Option<Bytes>> {
        if self.pending.is_empty() {
            match self.rx.recv().await {
                None => return Ok(None),
                Some(chunk) => self.pending = chunk?,
            }
        }
        let n = max.min(self.pending.len());
        Ok(Some(self.pending.split_to(n)))
    }
}
