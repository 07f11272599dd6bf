//! Resumable uploads.
//!
//! An upload writes into a temporary registered in the index under its [`UploadId`]. Each
//! [`Upload::checkpoint`] fsyncs the temporary and then records the offset as committed, so the
//! committed offset is always durable. After a dropped connection, or a server restart, or a
//! `kill -9`, [`Storage::open_upload`] reopens the temporary, cuts it back to the committed
//! offset and re-hashes that prefix: the client continues from there and the final digests are
//! those of an uninterrupted upload.

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::model::{
    FileTransfer, FileTransferId, FileTransferStatus, Timestamp, UploadId, UploadOutcome,
};
use crate::ports::TempKind;
use crate::records::UploadRecord;
use crate::rules::{self, Stored};
use crate::stream::{BlobRange, BlobTail, BlobWriter};
use crate::{Storage, blocking};

/// An upload in progress. Dropping it keeps its temporary: it can be resumed.
#[derive(Debug)]
pub struct Upload {
    storage: Storage,
    id: UploadId,
    writer: BlobWriter,
    committed: u64,
    /// The total length the client declared, if it did.
    length: Option<u64>,
    /// Opening it moved its transfer to (or found it in) `UploadStarted`.
    started_transfer: bool,
    _claim: LiveClaim,
}

/// Marks an upload as having a live writer; released on drop.
#[derive(Debug)]
struct LiveClaim {
    storage: Storage,
    id: UploadId,
}

impl LiveClaim {
    fn take(storage: &Storage, id: &UploadId) -> Result<Self> {
        let mut live = storage.inner.live_uploads.lock().expect("live upload set poisoned");
        if !live.insert(id.clone()) {
            return Err(Error::AlreadyExists(format!("a writer for upload {id}")));
        }
        Ok(Self { storage: storage.clone(), id: id.clone() })
    }
}

impl Drop for LiveClaim {
    fn drop(&mut self) {
        if let Ok(mut live) = self.storage.inner.live_uploads.lock() {
            live.remove(&self.id);
        }
    }
}

impl Storage {
    /// Starts an upload, or resumes it at its committed offset if it exists. One writer at a
    /// time: while an [`Upload`] for `id` is alive, opening it again is
    /// [`Error::AlreadyExists`] (a client that reconnects while its old stream is still being
    /// torn down retries).
    pub async fn open_upload(&self, id: UploadId, at: Timestamp) -> Result<Upload> {
        self.open_upload_declared(id, at, None).await
    }

    /// [`Storage::open_upload`], recording the total `length` the client declared if the upload
    /// has none yet, in the same step that creates it: an upload however begun (REST, TUS, gRPC)
    /// can then be resumed by any protocol after a restart, TUS needing the length. A length
    /// recorded earlier is kept; [`Upload::length`] tells it.
    pub async fn open_upload_declared(
        &self,
        id: UploadId,
        at: Timestamp,
        length: Option<u64>,
    ) -> Result<Upload> {
        self.open_upload_starting(id, at, length, None).await
    }

    /// [`Storage::open_upload_declared`] for the upload of transfer `transfer`: the transaction
    /// that creates the upload's record also moves the transfer from `Initialized` to
    /// `UploadStarted`, so beginning an upload is one commit, not two.
    /// [`Upload::started_transfer`] tells whether the transfer is `UploadStarted` now.
    pub async fn open_transfer_upload(
        &self,
        transfer: FileTransferId,
        at: Timestamp,
        length: Option<u64>,
    ) -> Result<Upload> {
        self.open_upload_starting(UploadId::for_transfer(transfer), at, length, Some(transfer))
            .await
    }

    async fn open_upload_starting(
        &self,
        id: UploadId,
        at: Timestamp,
        length: Option<u64>,
        start: Option<FileTransferId>,
    ) -> Result<Upload> {
        let claim = LiveClaim::take(self, &id)?;
        let existing = self.upload(&id)?;
        let blobs = self.blob_store().clone();
        let (writer, committed, length, started) = match existing {
            Some(record) => {
                let name = record.temp_name.clone();
                let committed = record.committed;
                let writer = blocking(
                    move || BlobWriter::resume(blobs, &name, committed),
                    "resuming an upload",
                )
                .await?;
                let known = match (record.length, length) {
                    (None, Some(length)) => {
                        let key = id.clone();
                        let record = UploadRecord { length: Some(length), ..record };
                        self.transact(move |txn| txn.put_upload(&key, &record)).await?;
                        Some(length)
                    }
                    (known, _) => known,
                };
                (writer, committed, known, false)
            }
            None => {
                let writer = blocking(
                    move || BlobWriter::create(blobs, TempKind::Resumable),
                    "creating an upload",
                )
                .await?;
                let temp_name = writer.name().to_owned();
                let record =
                    UploadRecord { temp_name, committed: 0, created: at, updated: at, length };
                let key = id.clone();
                let lifecycle = self.inner.lifecycle;
                let started = self
                    .transact(move |txn| {
                        txn.put_upload(&key, &record)?;
                        let Some(transfer_id) = start else { return Ok(false) };
                        let mut transfer = rules::load(txn, transfer_id)?;
                        if transfer.status() == FileTransferStatus::Initialized {
                            let before = Stored::of(&transfer);
                            transfer.start_upload(at)?;
                            rules::save_transfer(txn, &transfer, before, &lifecycle)?;
                        }
                        Ok(transfer.status() == FileTransferStatus::UploadStarted)
                    })
                    .await?;
                if start.is_some() {
                    self.events_committed();
                }
                (writer, 0, length, started)
            }
        };
        Ok(Upload {
            storage: self.clone(),
            id,
            writer,
            committed,
            length,
            started_transfer: started,
            _claim: claim,
        })
    }

    /// The record of an upload in progress, if there is one.
    pub fn upload(&self, id: &UploadId) -> Result<Option<UploadRecord>> {
        self.snapshot(|r| r.upload(id))
    }

    /// Reads the committed bytes of an upload in progress (e.g. a finished TUS partial upload
    /// that is concatenated into the final file).
    pub async fn read_upload(&self, id: &UploadId) -> Result<BlobRange> {
        let record = self.upload(id)?.ok_or_else(|| Error::NotFound(format!("upload {id}")))?;
        self.blob_io("reading an upload", move |b| {
            BlobRange::new(b.open_temp(&record.temp_name)?, 0, Some(record.committed))
        })
        .await
    }

    /// The durable offset of an upload in progress, if there is one.
    pub fn upload_offset(&self, id: &UploadId) -> Result<Option<u64>> {
        Ok(self.upload(id)?.map(|r| r.committed))
    }

    /// Every upload in progress.
    pub fn uploads(&self) -> Result<Vec<(UploadId, UploadRecord)>> {
        self.snapshot(|r| r.uploads())
    }

    /// Forgets an upload and deletes its temporary.
    pub async fn abort_upload(&self, id: &UploadId) -> Result<()> {
        let key = id.clone();
        let removed = self.transact(move |txn| txn.remove_upload(&key)).await?;
        if let Some(record) = removed {
            self.blob_io("deleting a temporary", move |b| b.remove_temp(&record.temp_name)).await?;
        }
        Ok(())
    }

    /// Finishes `upload` as the file of transfer `transfer_id`: fsyncs and hashes it, places the
    /// blob, and in one transaction applies [`FileTransfer::complete_upload`], takes the blob
    /// reference that implies and forgets the upload.
    pub async fn complete_upload(
        &self,
        transfer_id: FileTransferId,
        upload: Upload,
        at: Timestamp,
    ) -> Result<(FileTransfer, UploadOutcome)> {
        let Upload { id, writer, _claim, .. } = upload;
        let volatile = self.keeps_inline(writer.len());
        let finished = writer.finish(volatile).await.map_err(Error::io("finishing an upload"))?;
        let content = finished.content;
        let upload_id = id.clone();
        let lifecycle = self.inner.lifecycle;
        let result = self
            .place_and_reference(finished, move |txn| {
                let mut transfer = rules::load(txn, transfer_id)?;
                let before = Stored::of(&transfer);
                let outcome = transfer.complete_upload(content, at)?;
                rules::save_transfer(txn, &transfer, before, &lifecycle)?;
                txn.remove_upload(&upload_id)?;
                Ok((transfer, outcome))
            })
            .await;
        self.events_committed();
        if result.is_err() {
            // The temporary is gone (placed, then released): the upload cannot be resumed.
            let key = id.clone();
            self.transact(move |txn| txn.remove_upload(&key).map(drop)).await?;
        }
        result
    }
}

impl Upload {
    /// Which upload this is.
    pub fn id(&self) -> &UploadId {
        &self.id
    }

    /// The total length the client declared, if any client did.
    pub fn length(&self) -> Option<u64> {
        self.length
    }

    /// Bytes written so far (durable or not).
    pub fn offset(&self) -> u64 {
        self.writer.len()
    }

    /// Bytes known to be durable.
    pub fn committed(&self) -> u64 {
        self.committed
    }

    /// Whether opening this upload ([`Storage::open_transfer_upload`]) left its transfer in
    /// `UploadStarted`; false for an upload that was resumed or opened otherwise.
    pub fn started_transfer(&self) -> bool {
        self.started_transfer
    }

    /// Appends a chunk.
    pub async fn write(&mut self, chunk: Bytes) -> Result<()> {
        self.writer.write(chunk).await.map_err(Error::io("writing an upload"))
    }

    /// Makes everything written durable and records it as the committed offset, which is
    /// returned. Acknowledge bytes to a client only after this.
    pub async fn checkpoint(&mut self, at: Timestamp) -> Result<u64> {
        let offset = self.writer.sync_data().await.map_err(Error::io("syncing an upload"))?;
        if offset == self.committed {
            return Ok(offset);
        }
        let id = self.id.clone();
        self.storage
            .transact(move |txn| {
                let mut record =
                    txn.upload(&id)?.ok_or_else(|| Error::NotFound(format!("upload {id}")))?;
                record.committed = offset;
                record.updated = at;
                txn.put_upload(&id, &record)
            })
            .await?;
        self.committed = offset;
        Ok(offset)
    }

    /// A reader that follows this upload's bytes from the start as they are written: the
    /// pipelined scanner consumes it. It ends when the upload completes and fails if the
    /// upload is dropped unfinished.
    pub fn tail(&self) -> Result<BlobTail> {
        self.writer.tail().map_err(Error::io("opening an upload for reading"))
    }
}
