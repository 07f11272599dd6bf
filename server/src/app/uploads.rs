//! Uploads: sessions that write, checkpoint and finish, whatever the transport.

use std::sync::Arc;

use bytes::Bytes;
use storage::model::*;
use storage::{Digest, Md5Follower, Upload};
use tokio::task::JoinHandle;

use super::context::*;
use super::scanning::{self, TailInput};
use crate::auth::{Caller, SCOPE_WRITE};
use crate::error::ApiError;

type Result<T, E = ApiError> = std::result::Result<T, E>;

/// Network frames are gathered into writes of at least this many bytes.
pub const FRAME_BUFFER: usize = 256 * 1024;
/// Upload checkpoints: bytes between fsync'd, acknowledged offsets.
pub const CHECKPOINT_BYTES: u64 = 8 * 1024 * 1024;
/// The status text of a transfer whose upload ran out of storage space.
pub const STORAGE_FULL_TEXT: &str = "Upload failed: the server ran out of storage space while receiving the file; initialize a new file transfer to send it again";

/// The final result of an upload.
#[derive(Debug, Clone)]
pub struct UploadResult {
    /// The transfer after the upload.
    pub transfer: FileTransfer,
}

impl App {
    /// The committed offset of an upload (sender only).
    pub fn upload_status(
        &self,
        caller: &Caller,
        id: FileTransferId,
    ) -> Result<(u64, FileTransferStatus)> {
        require_scope(caller, &[SCOPE_WRITE])?;
        let org = caller_org(caller)?;
        let transfer = self.visible_transfer(&org, id)?;
        if transfer.sender != org {
            return Err(ApiError::altinn(6));
        }
        let committed = self.storage.upload_offset(&UploadId::for_transfer(id))?.unwrap_or(0);
        let committed = match transfer.content {
            Some(content) => content.size,
            None => committed,
        };
        Ok((committed, transfer.status()))
    }

    /// Starts (or resumes) an upload: `offset` is where the client's bytes start (the committed
    /// offset to resume), or `None` to start over from byte 0.
    pub async fn begin_upload(
        self: &Arc<Self>,
        caller: &Caller,
        id: FileTransferId,
        offset: Option<u64>,
        declared_length: Option<u64>,
    ) -> Result<UploadSession> {
        let (transfer, limit) = self.check_upload(caller, id, offset, declared_length)?;
        let upload_id = UploadId::for_transfer(id);
        // A session a front-end holds between two requests gives way: any protocol may resume.
        self.held.release(&upload_id);
        let upload = self.open_upload_at(id, offset, declared_length).await?;
        let declared_length = declared_length.or(upload.length());
        let (scan, scan_file) = if transfer.use_virus_scan {
            let (scan, scan_file) = self.follow_with_scan(id, &upload, declared_length);
            (Some(scan), scan_file)
        } else {
            (None, None)
        };
        // The MD5 follows the upload only where it decides the answer to it (see `finish`);
        // otherwise it is computed after the last byte, beside clamd's scan, so it takes no
        // CPU from the upload itself (on two cores MD5 took a third of the server's CPU).
        let md5 = if transfer.declared_checksum.is_some() || !transfer.use_virus_scan {
            Some(Md5Follower::follow(upload.tail()?))
        } else {
            None
        };
        // Beginning the upload recorded `UploadStarted` (one commit with the upload's record).
        let started =
            transfer.status() == FileTransferStatus::UploadStarted || upload.started_transfer();
        self.metrics.uploads_in_progress.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(UploadSession {
            app: self.clone(),
            id,
            upload: Some(upload),
            limit,
            declared_length,
            started,
            since_checkpoint: 0,
            auto_checkpoint: true,
            pending: bytes::BytesMut::new(),
            scan,
            scan_file,
            md5,
        })
    }

    /// Whether the caller may upload to transfer `id` now, `declared_length` bytes from
    /// `offset`: the transfer and its upload limit if so. Refused before anything is created if
    /// the rest cannot fit above the storage reserve: the sender does not pay for an upload that
    /// would fail at its end.
    fn check_upload(
        &self,
        caller: &Caller,
        id: FileTransferId,
        offset: Option<u64>,
        declared_length: Option<u64>,
    ) -> Result<(FileTransfer, u64)> {
        require_scope(caller, &[SCOPE_WRITE])?;
        let org = caller_org(caller)?;
        let transfer = self.visible_transfer(&org, id)?;
        if transfer.sender != org {
            return Err(ApiError::altinn(6));
        }
        let resource = self.resource_of(&transfer)?;
        if !resource.may_send(&org) {
            return Err(ApiError::altinn(6));
        }
        if !matches!(
            transfer.status(),
            FileTransferStatus::Initialized | FileTransferStatus::UploadStarted
        ) {
            return Err(ApiError::altinn(4));
        }
        let limit =
            resource.max_upload_size(transfer.use_virus_scan).min(self.options.global_max_upload);
        if declared_length.is_some_and(|n| n > limit) {
            return Err(too_large(limit));
        }
        let remaining = declared_length.map_or(0, |n| n.saturating_sub(offset.unwrap_or(0)));
        self.storage.check_space(remaining)?;
        Ok((transfer, limit))
    }

    /// The storage upload, open where the client's bytes start: at `offset` (which must be the
    /// committed offset), or at 0 for `None`, discarding a partial upload. The declared length
    /// is recorded with the upload, so whichever protocol resumes it after an interruption (TUS
    /// needs `Upload-Length`) knows the total; resuming with another length is refused.
    async fn open_upload_at(
        &self,
        id: FileTransferId,
        offset: Option<u64>,
        declared_length: Option<u64>,
    ) -> Result<Upload> {
        let upload_id = UploadId::for_transfer(id);
        // Opening a new upload records UploadStarted: an offset no upload can continue at is
        // refused first, so a refused request changes nothing (Altinn checks, then starts).
        if let Some(offset) = offset.filter(|o| *o != 0)
            && self.storage.upload(&upload_id)?.is_none()
        {
            return Err(wrong_offset(0, offset));
        }
        let mut upload = self.storage.open_transfer_upload(id, self.now(), declared_length).await?;
        // `None`: start over (a REST upload sends the whole file), discarding a partial upload.
        let offset = match offset {
            Some(offset) => offset,
            None if upload.offset() == 0 && upload.length() == declared_length => 0,
            None => {
                drop(upload);
                self.storage.abort_upload(&upload_id).await?;
                upload = self.storage.open_transfer_upload(id, self.now(), declared_length).await?;
                0
            }
        };
        if let (Some(recorded), Some(declared)) = (upload.length(), declared_length)
            && recorded != declared
        {
            return Err(ApiError {
                kind: crate::error::Kind::FailedPrecondition,
                code: None,
                message: format!(
                    "the upload was begun with a length of {recorded} bytes, not {declared}: resume it with the same length, or start it over"
                ),
                http_status: 409,
                field: None,
            });
        }
        if offset != upload.offset() {
            return Err(wrong_offset(upload.offset(), offset));
        }
        Ok(upload)
    }

    /// Starts the scan that follows `upload` from its first byte (a resumed upload's committed
    /// prefix included), at its own pace. A file longer than clamd's limit is scanned as
    /// overlapping segments, each starting as soon as the upload reaches it; segments found
    /// clean are recorded once the upload completes (the returned sender), so a restart resumes
    /// the scan at the first segment not yet clean. A file that fits one stream has nothing to
    /// resume and records nothing.
    fn follow_with_scan(
        self: &Arc<Self>,
        id: FileTransferId,
        upload: &Upload,
        declared_length: Option<u64>,
    ) -> (JoinHandle<scanner::SegmentedVerdict>, Option<tokio::sync::oneshot::Sender<StoredContent>>)
    {
        let tail = upload.tail();
        let app = self.clone();
        let fits_one_stream =
            declared_length.is_some_and(|n| n <= self.scanner.options().max_stream_len);
        let (progress, scan_file) = if fits_one_stream {
            (None, None)
        } else {
            let (progress, file) = scanning::record_progress(self, id);
            (Some(progress), Some(file))
        };
        self.metrics.scans_in_progress.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let scan = self.spawn(async move {
            let tail = match tail {
                Ok(tail) => TailInput(tail),
                Err(e) => return scanning::lost_scan(e),
            };
            let none = std::collections::BTreeSet::new();
            tokio::select! {
                // Shutting down: the transfer's scan resumes at the next start.
                () = app.shutdown.cancelled() => scanning::lost_scan("the server is shutting down"),
                outcome = scanning::scan_input(&app, id, &tail, &none, progress.as_ref()) => outcome,
            }
        });
        (scan, scan_file)
    }

    /// Hashes transfer `id`'s stored file (blob `digest`) and records its MD5 (the blob's record
    /// keeps it too, so identical content is hashed once).
    pub(super) async fn record_blob_md5(
        &self,
        id: FileTransferId,
        digest: &Digest,
    ) -> Result<FileTransfer> {
        let md5 = self.storage.blob_md5(digest).await?;
        Ok(self.storage.record_md5(id, md5, self.now()).await?)
    }

    /// Finishes what a restart interrupted: MD5s not yet recorded and scans not yet done.
    pub async fn resume_pending(self: &Arc<Self>) -> anyhow::Result<()> {
        for id in self.storage.transfer_ids()? {
            let Some(t) = self.storage.transfer(id)? else {
                continue;
            };
            if t.status() != FileTransferStatus::UploadProcessing {
                continue;
            }
            if let Some(content) = t.content.filter(|c| c.md5.is_none()) {
                self.record_blob_md5(id, &content.blake3).await?;
            }
            if t.use_virus_scan && !t.scan_passed {
                tracing::info!(transfer = %id, "resuming the scan of a transfer");
                self.spawn(scanning::finish_scan(self.clone(), id, None));
            }
        }
        Ok(())
    }
}

fn too_large(limit: u64) -> ApiError {
    ApiError::altinn_with(16, format!("File size exceeds maximum ({limit} bytes)"))
}

fn past_declared_length(declared: u64, end: u64, committed: u64) -> ApiError {
    ApiError::invalid(format!(
        "the upload's declared length is {declared} bytes, and this data would end at byte {end}: bytes past the declared length are refused ({committed} bytes are durable; resume from there)"
    ))
}

/// An upload in progress, driven by a transport.
pub struct UploadSession {
    app: Arc<App>,
    id: FileTransferId,
    upload: Option<Upload>,
    limit: u64,
    declared_length: Option<u64>,
    started: bool,
    since_checkpoint: u64,
    auto_checkpoint: bool,
    /// Small frames gathered by [`UploadSession::write_frame`] until they make a good write.
    pending: bytes::BytesMut,
    scan: Option<JoinHandle<scanner::SegmentedVerdict>>,
    /// Tells the scan's progress recorder the completed file: its segments count from then on.
    scan_file: Option<tokio::sync::oneshot::Sender<storage::model::StoredContent>>,
    md5: Option<Md5Follower>,
}

impl Drop for UploadSession {
    fn drop(&mut self) {
        self.app.metrics.uploads_in_progress.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl std::fmt::Debug for UploadSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UploadSession").field("id", &self.id).finish_non_exhaustive()
    }
}

impl UploadSession {
    /// Bytes received so far (durable or not).
    pub fn offset(&self) -> u64 {
        self.upload.as_ref().map_or(0, Upload::offset)
    }

    /// The durable offset.
    pub fn committed(&self) -> u64 {
        self.upload.as_ref().map_or(0, Upload::committed)
    }

    /// Takes a chunk. Returns a newly committed offset to acknowledge, if a checkpoint happened.
    /// Exceeding the size limit cuts the upload off and keeps nothing.
    pub async fn write(&mut self, chunk: Bytes) -> Result<Option<u64>> {
        // Frames gathered by `write_frame` go first: bytes never change order.
        if !self.pending.is_empty() {
            let pending = self.pending.split().freeze();
            self.write_raw(pending).await?;
        }
        self.write_raw(chunk).await
    }

    async fn write_raw(&mut self, chunk: Bytes) -> Result<Option<u64>> {
        let upload = self.upload.as_mut().ok_or_else(|| ApiError::invalid("the upload is over"))?;
        if chunk.is_empty() {
            return Ok(None);
        }
        if upload.offset() + chunk.len() as u64 > self.limit {
            self.discard().await;
            return Err(too_large(self.limit));
        }
        if let Some((declared, end)) = self.past_declared(chunk.len() as u64) {
            let committed = self.sync_point().await?;
            return Err(past_declared_length(declared, end, committed));
        }
        let upload = self.upload.as_mut().ok_or_else(|| ApiError::invalid("the upload is over"))?;
        if !self.started {
            let at = self.app.now();
            self.app.storage.update_transfer(self.id, move |t| Ok(t.start_upload(at)?)).await?;
            self.started = true;
        }
        self.since_checkpoint += chunk.len() as u64;
        let n = chunk.len() as u64;
        if let Err(e) = upload.write(chunk).await {
            return Err(self.failed_write(e).await);
        }
        self.app.metrics.upload_bytes.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        if self.auto_checkpoint && self.since_checkpoint >= CHECKPOINT_BYTES {
            return self.sync_point().await.map(Some);
        }
        Ok(None)
    }

    /// Where `more` bytes would end, if that is past the declared length. The caller refuses
    /// them before any is written and makes what came before durable (the client may resume
    /// from it): nothing past the declared length is ever committed.
    fn past_declared(&self, more: u64) -> Option<(u64, u64)> {
        let declared = self.declared_length?;
        let end = self.offset() + self.pending.len() as u64 + more;
        (end > declared).then_some((declared, end))
    }

    /// The transfer.
    pub fn transfer_id(&self) -> FileTransferId {
        self.id
    }

    /// Whether `write` checkpoints by itself every [`CHECKPOINT_BYTES`]. TUS turns it off while
    /// a chunk's checksum is unverified: a bad chunk must leave the committed offset unmoved.
    pub fn set_auto_checkpoint(&mut self, on: bool) {
        self.auto_checkpoint = on;
    }

    /// Records `UploadStarted` now (TUS creation), not at the first byte.
    pub async fn mark_started(&mut self) -> Result<()> {
        if !self.started {
            let at = self.app.now();
            self.app.storage.update_transfer(self.id, move |t| Ok(t.start_upload(at)?)).await?;
            self.started = true;
        }
        Ok(())
    }

    /// Takes a network frame of any size: frames are gathered into writes of at least
    /// [`FRAME_BUFFER`] bytes (the size limit is still checked on every frame).
    pub async fn write_frame(&mut self, frame: &[u8]) -> Result<()> {
        let offset = self.offset() + self.pending.len() as u64;
        if offset + frame.len() as u64 > self.limit {
            self.discard().await;
            return Err(too_large(self.limit));
        }
        if let Some((declared, end)) = self.past_declared(frame.len() as u64) {
            let committed = self.checkpoint().await?;
            return Err(past_declared_length(declared, end, committed));
        }
        self.pending.extend_from_slice(frame);
        if self.pending.len() >= FRAME_BUFFER {
            let chunk = self.pending.split().freeze();
            self.write_raw(chunk).await?;
        }
        Ok(())
    }

    async fn flush_frames(&mut self) -> Result<()> {
        if !self.pending.is_empty() {
            let chunk = self.pending.split().freeze();
            self.write_raw(chunk).await?;
        }
        Ok(())
    }

    /// Makes everything received durable; returns the committed offset.
    pub async fn checkpoint(&mut self) -> Result<u64> {
        self.flush_frames().await?;
        self.sync_point().await
    }

    async fn sync_point(&mut self) -> Result<u64> {
        let at = self.app.now();
        let upload = self.upload.as_mut().ok_or_else(|| ApiError::invalid("the upload is over"))?;
        self.since_checkpoint = 0;
        match upload.checkpoint(at).await {
            Ok(committed) => Ok(committed),
            Err(e) => Err(self.failed_write(e).await),
        }
    }

    /// A write or checkpoint failed. Out of space, the upload ends for good: its partial file
    /// is deleted at once (it would keep the disk full) and the transfer fails with a reason
    /// that says so; the sender initializes a new transfer once there is room. Any other
    /// failure leaves the durable prefix to resume from.
    async fn failed_write(&mut self, e: storage::Error) -> ApiError {
        if !e.is_storage_full() {
            return e.into();
        }
        tracing::warn!(transfer = %self.id, received = self.offset(), "upload failed: out of storage space");
        self.discard().await;
        let at = self.app.now();
        if let Err(e) = self
            .app
            .storage
            .update_transfer(self.id, move |t| Ok(t.fail(STORAGE_FULL_TEXT, at)?))
            .await
        {
            tracing::warn!(transfer = %self.id, error = %e, "failing an upload that ran out of space");
        }
        ApiError::storage_full()
    }

    async fn discard(&mut self) {
        if let Some(scan) = self.scan.take() {
            scan.abort();
        }
        self.md5 = None;
        drop(self.upload.take());
        if let Err(e) = self.app.storage.abort_upload(&UploadId::for_transfer(self.id)).await {
            tracing::warn!(transfer = %self.id, error = %e, "discarding an upload failed");
        }
    }

    /// The client finished sending: completes the upload, checks checksums, and hands the scan
    /// to a background task that publishes (or fails) the transfer.
    pub async fn finish(mut self) -> Result<UploadResult> {
        self.flush_frames().await?;
        if let Some(declared) = self.declared_length.filter(|n| *n != self.offset()) {
            // Keep what arrived, durably: the client can resume and send the rest.
            self.sync_point().await?;
            return Err(ApiError::invalid(format!(
                "the upload ended at {} bytes but its declared length is {declared}",
                self.offset()
            )));
        }
        let upload = self.upload.take().ok_or_else(|| ApiError::invalid("the upload is over"))?;
        let app = self.app.clone();
        let (transfer, outcome) =
            match app.storage.complete_upload(self.id, upload, app.now()).await {
                Ok(done) => done,
                Err(e) => return Err(self.failed_write(e).await),
            };
        // The MD5 decides the answer only if the sender declared a checksum (a mismatch is
        // 400/9 here, as in Altinn), and an unscanned file is published now, with its MD5: then
        // it followed the upload. Otherwise the scan decides: the MD5 is computed from the blob
        // beside it (several times faster than clamd) and publication waits for both, so a
        // Published transfer always shows its checksum and the client is not held up by MD5.
        // A small file (storage's `INLINE_MD5_LIMIT`) got its MD5 while it was written, and
        // `complete_upload` already checked and recorded it.
        let content = transfer.content.expect("a completed upload has content");
        if let Some(file) = self.scan_file.take() {
            let _ = file.send(content);
        }
        let digest = content.blake3;
        let (transfer, md5) = match self.md5.take() {
            _ if content.md5.is_some() => (transfer, None),
            Some(follower) => (record_followed_md5(&app, self.id, digest, follower).await?, None),
            None => {
                let (task_app, id) = (app.clone(), self.id);
                let recording = app.spawn(async move {
                    if let Err(e) = task_app.record_blob_md5(id, &digest).await {
                        tracing::warn!(transfer = %id, error = %e, "recording the MD5 failed");
                    }
                });
                (transfer, Some(recording))
            }
        };
        if outcome == UploadOutcome::ChecksumMismatch
            || transfer.latest_status().text.as_deref() == Some("Checksum mismatch")
        {
            if let Some(scan) = self.scan.take() {
                scan.abort();
            }
            return Err(ApiError::altinn(9));
        }
        if let Some(scan) = self.scan.take() {
            let id = self.id;
            let task_app = app.clone();
            app.spawn(async move {
                let app = task_app;
                let first = scan.await.unwrap_or_else(scanning::lost_scan);
                if let Some(recording) = md5 {
                    let _ = recording.await;
                }
                scanning::finish_scan(app, id, Some(first)).await;
            });
        }
        Ok(UploadResult { transfer })
    }
}

/// Records the MD5 `follower` computed; if it failed, hashes the stored blob (`digest`) instead.
async fn record_followed_md5(
    app: &App,
    id: FileTransferId,
    digest: Digest,
    follower: Md5Follower,
) -> Result<FileTransfer> {
    match follower.finish().await {
        Ok(md5) => Ok(app.storage.record_md5(id, md5, app.now()).await?),
        Err(e) => {
            tracing::warn!(transfer = %id, error = %e, "MD5 follower failed; hashing the blob");
            app.record_blob_md5(id, &digest).await
        }
    }
}

/// An upload resumed at `offset` where it continues at `committed`: 409 / FAILED_PRECONDITION.
fn wrong_offset(committed: u64, offset: u64) -> ApiError {
    ApiError {
        kind: crate::error::Kind::FailedPrecondition,
        code: None,
        message: format!(
            "the upload continues at offset {committed}, not {offset}: resume from the committed offset"
        ),
        http_status: 409,
        field: None,
    }
}
