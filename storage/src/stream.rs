//! The facade's streams over the blob port: [`BlobWriter`] (a temporary being written, with the
//! progress its tails follow), [`BlobTail`] (reads a temporary while it grows) and [`BlobRange`]
//! (a byte range of a blob). They work with any [`BlobStore`]; the bytes move through
//! [`TempBlob::write`] and [`ReadAt::read_at`], one hop to the blocking pool per chunk, as the
//! local store always did.

use std::io;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::watch;

use crate::ports::{BlobReader, BlobStore, FinishedTemp, ReadAt, TempBlob, TempKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TailState {
    Open,
    Finished,
    Aborted,
}

#[derive(Debug, Clone, Copy)]
struct Progress {
    written: u64,
    state: TailState,
}

/// Streams bytes into a temporary of a [`BlobStore`], hashing them on the way (in the store's
/// [`TempBlob`]), and tells tails how far it got.
pub(crate) struct BlobWriter {
    temp: Option<Box<dyn TempBlob>>,
    name: String,
    store: Arc<dyn BlobStore>,
    progress: watch::Sender<Progress>,
    finished: bool,
}

impl std::fmt::Debug for BlobWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobWriter")
            .field("temp", &self.name)
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl BlobWriter {
    /// Creates a new, empty temporary (blocking).
    pub(crate) fn create(store: Arc<dyn BlobStore>, kind: TempKind) -> io::Result<Self> {
        let temp = store.create_temp(kind)?;
        Ok(Self::from_temp(store, temp))
    }

    /// Reopens the temporary `name` of an interrupted upload at its durable `committed` offset
    /// (blocking; see [`BlobStore::resume_temp`]).
    pub(crate) fn resume(
        store: Arc<dyn BlobStore>,
        name: &str,
        committed: u64,
    ) -> io::Result<Self> {
        let temp = store.resume_temp(name, committed)?;
        Ok(Self::from_temp(store, temp))
    }

    fn from_temp(store: Arc<dyn BlobStore>, temp: Box<dyn TempBlob>) -> Self {
        let (progress, _) =
            watch::channel(Progress { written: temp.len(), state: TailState::Open });
        Self { name: temp.name().to_owned(), temp: Some(temp), store, progress, finished: false }
    }

    /// The temporary's name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Bytes written so far.
    pub(crate) fn len(&self) -> u64 {
        self.progress.borrow().written
    }

    fn take_temp(&mut self) -> io::Result<Box<dyn TempBlob>> {
        self.temp.take().ok_or_else(|| {
            io::Error::other("an earlier write to this blob was interrupted; resume the upload")
        })
    }

    /// Appends `chunk`.
    pub(crate) async fn write(&mut self, chunk: Bytes) -> io::Result<()> {
        if chunk.is_empty() {
            return Ok(());
        }
        let mut temp = self.take_temp()?;
        let (temp, result) = tokio::task::spawn_blocking(move || {
            let result = temp.write(&chunk);
            (temp, result)
        })
        .await
        .map_err(io::Error::other)?;
        let written = temp.len();
        self.temp = Some(temp);
        result?;
        self.progress.send_modify(|p| p.written = written);
        Ok(())
    }

    /// Makes everything written so far durable and returns that offset.
    pub(crate) async fn sync_data(&mut self) -> io::Result<u64> {
        let mut temp = self.take_temp()?;
        let (temp, result) = tokio::task::spawn_blocking(move || {
            let result = temp.sync();
            (temp, result)
        })
        .await
        .map_err(io::Error::other)?;
        self.temp = Some(temp);
        result
    }

    /// Makes the temporary durable (unless `volatile`: see [`TempBlob::finish_volatile`]) and
    /// returns it with its digests, to be promoted or kept inline.
    pub(crate) async fn finish(mut self, volatile: bool) -> io::Result<FinishedTemp> {
        let temp = self.take_temp()?;
        let finished = tokio::task::spawn_blocking(move || {
            if volatile { temp.finish_volatile() } else { temp.finish() }
        })
        .await
        .map_err(io::Error::other)??;
        self.finished = true;
        self.progress.send_modify(|p| p.state = TailState::Finished);
        Ok(finished)
    }

    /// A reader that follows the bytes as they are written: the pipelined scanner reads the
    /// upload through it while it arrives, at its own pace, without holding anything in memory.
    pub(crate) fn tail(&self) -> io::Result<BlobTail> {
        let BlobReader { reader, .. } = self.store.open_temp(&self.name)?;
        Ok(BlobTail { reader, pos: 0, progress: self.progress.subscribe() })
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if !self.finished {
            // The temporary itself goes (one-shot) or stays (resumable) with its handle.
            self.progress.send_modify(|p| p.state = TailState::Aborted);
        }
    }
}

/// Reads a blob while it is being written (see [`crate::Upload::tail`]).
#[derive(Debug)]
pub struct BlobTail {
    reader: Arc<dyn ReadAt>,
    pos: u64,
    progress: watch::Receiver<Progress>,
}

impl BlobTail {
    /// The next up to `max` bytes: waits while the writer has nothing new, `None` once the
    /// writer finished and everything was read, an error if the upload was abandoned.
    pub async fn next_chunk(&mut self, max: usize) -> io::Result<Option<Bytes>> {
        loop {
            let progress = *self.progress.borrow_and_update();
            if self.pos < progress.written {
                let n = (progress.written - self.pos).min(max as u64) as usize;
                let chunk = read_at(&self.reader, self.pos, n).await?;
                self.pos += n as u64;
                return Ok(Some(chunk));
            }
            match progress.state {
                TailState::Finished => return Ok(None),
                TailState::Aborted => return Err(aborted()),
                TailState::Open => {}
            }
            if self.progress.changed().await.is_err() {
                // The writer is gone; its last word decides.
                let last = *self.progress.borrow();
                if last.state == TailState::Finished && self.pos >= last.written {
                    return Ok(None);
                }
                if last.state != TailState::Finished {
                    return Err(aborted());
                }
            }
        }
    }

    /// Bytes read so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Another reader of the same upload, starting at `offset`: each segment of a segmented
    /// scan follows the upload with its own.
    pub fn fork_at(&self, offset: u64) -> BlobTail {
        BlobTail { reader: self.reader.clone(), pos: offset, progress: self.progress.clone() }
    }

    /// Waits until more than `offset` bytes were written (`Ok(true)`) or the upload finished
    /// with at most that many (`Ok(false)`); an error if the upload was abandoned first.
    pub async fn wait_past(&mut self, offset: u64) -> io::Result<bool> {
        loop {
            let progress = *self.progress.borrow_and_update();
            if progress.written > offset {
                return Ok(true);
            }
            match progress.state {
                TailState::Finished => return Ok(false),
                TailState::Aborted => return Err(aborted()),
                TailState::Open => {}
            }
            if self.progress.changed().await.is_err() {
                let last = *self.progress.borrow();
                return match last.state {
                    _ if last.written > offset => Ok(true),
                    TailState::Finished => Ok(false),
                    _ => Err(aborted()),
                };
            }
        }
    }
}

fn aborted() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "the upload was interrupted before it finished",
    )
}

/// A byte range of a blob, read chunk by chunk with positioned reads.
#[derive(Debug)]
pub struct BlobRange {
    reader: Arc<dyn ReadAt>,
    pos: u64,
    end: u64,
    size: u64,
}

impl BlobRange {
    /// `len` bytes (to the end if `None`, clamped to it) from `offset` of an opened object; an
    /// error if `offset` is past its end.
    pub(crate) fn new(opened: BlobReader, offset: u64, len: Option<u64>) -> io::Result<Self> {
        let BlobReader { reader, size } = opened;
        if offset > size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("offset {offset} is past the end of a {size}-byte blob"),
            ));
        }
        let end = len.map_or(size, |len| offset.saturating_add(len).min(size));
        Ok(Self { reader, pos: offset, end, size })
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
        let chunk = read_at(&self.reader, self.pos, n).await?;
        self.pos += n as u64;
        Ok(Some(chunk))
    }
}

async fn read_at(reader: &Arc<dyn ReadAt>, offset: u64, len: usize) -> io::Result<Bytes> {
    let reader = reader.clone();
    tokio::task::spawn_blocking(move || reader.read_at(offset, len))
        .await
        .map_err(io::Error::other)?
}

/// A blob kept inline in the metadata store, read from memory.
#[derive(Debug)]
struct InMemory(Bytes);

impl ReadAt for InMemory {
    fn read_at(&self, offset: u64, len: usize) -> io::Result<Bytes> {
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        match start.checked_add(len) {
            Some(end) if end <= self.0.len() => Ok(self.0.slice(start..end)),
            _ => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{len} bytes at {offset} of a {}-byte blob", self.0.len()),
            )),
        }
    }
}

/// An opened inline blob.
pub(crate) fn in_memory(bytes: Bytes) -> BlobReader {
    let size = bytes.len() as u64;
    BlobReader { reader: Arc::new(InMemory(bytes)), size }
}
