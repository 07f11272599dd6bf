//! The rules that tie records together, written once against the metadata port's transaction
//! ([`MetadataTxn`]) so that every store keeps them: a store stores records, these decide which.
//!
//! - [`save_transfer`]: the one function every transfer change goes through. In the same
//!   transaction as the transfer's record it appends the new history rows, logs the events they
//!   imply ([`FileTransfer::events_since`]), schedules the life-cycle jobs the new statuses call
//!   for, drops the scan progress once the transfer left `UploadProcessing`, and moves the blob
//!   reference that [`FileTransfer::holds_blob`] implies.
//! - [`blob_incref`] / [`blob_decref`]: reference counts; the last reference of an inline blob
//!   removes its bytes in the same transaction, that of a blob with a file queues the file's
//!   deletion (`pending_gc`), done by the facade after the commit.
//! - [`merge_scan_progress`], [`insert_transfer_idempotent`]: checks and merges that must see
//!   the same snapshot as their write.

use crate::Lifecycle;
use crate::digest::{Digest, Md5};
use crate::error::{Error, Result};
use crate::model::{FileTransfer, FileTransferId, FileTransferStatus, StoredContent};
use crate::ports::{MetadataTxn, StoredHistory};
use crate::records::{BlobRecord, EventRecord, Job, JobKind, ScanProgress, event_id};

/// What of a transfer was stored before a change: its histories' lengths and the blob it held.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stored {
    history: StoredHistory,
    held: Option<StoredContent>,
}

impl Stored {
    pub(crate) const NOTHING: Self =
        Self { history: StoredHistory { status: 0, recipient: 0 }, held: None };

    pub(crate) fn of(transfer: &FileTransfer) -> Self {
        Self {
            history: StoredHistory::of(transfer),
            held: transfer.content.filter(|_| transfer.holds_blob()),
        }
    }
}

/// Loads a transfer for a change inside `txn`: [`Error::NotFound`] if there is none.
pub(crate) fn load(txn: &mut dyn MetadataTxn, id: FileTransferId) -> Result<FileTransfer> {
    txn.transfer(id)?.ok_or_else(|| Error::NotFound(format!("file transfer {id}")))
}

/// Stores a new transfer with its histories, events, jobs and search entries.
pub(crate) fn insert_transfer(
    txn: &mut dyn MetadataTxn,
    transfer: &FileTransfer,
    lifecycle: &Lifecycle,
) -> Result<Vec<Digest>> {
    txn.insert_transfer(transfer)?;
    save_transfer(txn, transfer, Stored::NOTHING, lifecycle)
}

/// Inserts `transfer` unless `key` was used before: then returns the transfer it created if the
/// request hash matches, or an error if the same key came with a different request.
pub(crate) fn insert_transfer_idempotent(
    txn: &mut dyn MetadataTxn,
    transfer: &FileTransfer,
    key: &str,
    request_hash: [u8; 32],
    lifecycle: &Lifecycle,
) -> Result<FileTransferId> {
    match txn.idempotency_key(key)? {
        Some((hash, id)) if hash == request_hash => Ok(id),
        Some(_) => {
            Err(Error::AlreadyExists(format!("idempotency key {key:?} with a different request")))
        }
        None => {
            insert_transfer(txn, transfer, lifecycle)?;
            txn.put_idempotency_key(key, request_hash, transfer.id)?;
            Ok(transfer.id)
        }
    }
}

/// Writes the transfer's record, the history rows added since `before`, the events and jobs
/// they imply, and the blob reference change implied by [`FileTransfer::holds_blob`]. Returns
/// digests whose last reference went.
pub(crate) fn save_transfer(
    txn: &mut dyn MetadataTxn,
    transfer: &FileTransfer,
    before: Stored,
    lifecycle: &Lifecycle,
) -> Result<Vec<Digest>> {
    txn.put_transfer(transfer, before.history)?;
    append_events(txn, transfer, before.history)?;
    schedule_jobs(txn, transfer, before.history.status, lifecycle)?;
    if transfer.status() != FileTransferStatus::UploadProcessing {
        // The scan is over (or will never run): its progress goes with it.
        txn.remove_scan_progress(transfer.id)?;
    }
    let after = Stored::of(transfer).held;
    let mut released = Vec::new();
    match (before.held, after) {
        (None, Some(content)) => blob_incref(txn, &content)?,
        (Some(content), None) => {
            let was_last = blob_decref(txn, &content.blake3)?;
            if was_last {
                released.push(content.blake3);
            }
        }
        (Some(a), Some(b)) if a.blake3 != b.blake3 => {
            return Err(Error::Corrupt(format!("transfer {} changed its content", transfer.id)));
        }
        _ => {}
    }
    Ok(released)
}

/// Logs the events the rows added since `before` imply (an event happens once: the store skips
/// ids already logged).
fn append_events(
    txn: &mut dyn MetadataTxn,
    transfer: &FileTransfer,
    before: StoredHistory,
) -> Result<()> {
    let events = transfer.events_since(before.status, before.recipient);
    if events.is_empty() {
        return Ok(());
    }
    let records: Vec<EventRecord> = events
        .into_iter()
        .map(|event| EventRecord {
            seq: 0,
            id: event_id(event.kind, transfer.id, event.role, &event.party),
            kind: event.kind,
            transfer: transfer.id,
            resource: transfer.resource_id.clone(),
            party: event.party,
            role: event.role,
            at: event.at,
        })
        .collect();
    txn.append_events(records).map(drop)
}

/// Jobs the new status rows call for, in the same transaction as the change.
fn schedule_jobs(
    txn: &mut dyn MetadataTxn,
    transfer: &FileTransfer,
    n_status_before: usize,
    lifecycle: &Lifecycle,
) -> Result<()> {
    let job = |due, kind| Job { due, transfer: transfer.id, kind };
    for entry in transfer.status_history.iter().skip(n_status_before) {
        match entry.status {
            FileTransferStatus::Initialized => {
                txn.schedule(&job(transfer.expiration_time, JobKind::Expiry))?
            }
            FileTransferStatus::UploadStarted => txn.schedule(&job(
                entry.at.saturating_add(lifecycle.stuck_upload_after),
                JobKind::StuckUpload,
            ))?,
            FileTransferStatus::UploadProcessing if transfer.use_virus_scan => txn.schedule(
                &job(entry.at.saturating_add(lifecycle.scan_timeout), JobKind::ScanTimeout),
            )?,
            FileTransferStatus::AllConfirmedDownloaded => {
                let resource = txn.resource(&transfer.resource_id)?;
                if let Some(resource) =
                    resource.filter(|r| r.purge_file_transfer_after_all_recipients_confirmed)
                {
                    let due = entry.at.saturating_add(resource.grace_period());
                    txn.schedule(&job(due, JobKind::GracePurge))?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Takes one reference to a blob (creating its record), and keeps its file from collection.
pub(crate) fn blob_incref(txn: &mut dyn MetadataTxn, content: &StoredContent) -> Result<()> {
    let record = match txn.blob(&content.blake3)? {
        Some(mut record) => {
            record.refs += 1;
            record.md5 = record.md5.or(content.md5);
            record
        }
        None => BlobRecord { size: content.size, md5: content.md5, refs: 1 },
    };
    txn.put_blob(&content.blake3, &record)?;
    // A blob that gained a reference must not be collected.
    txn.unqueue_gc(&content.blake3)
}

/// Drops one reference; returns true if it was the last of a blob with a file (the file is then
/// queued for deletion). The last reference of an inline blob takes its bytes with it, in this
/// transaction: there is nothing to delete afterwards.
pub(crate) fn blob_decref(txn: &mut dyn MetadataTxn, digest: &Digest) -> Result<bool> {
    let Some(mut record) = txn.blob(digest)? else {
        return Err(Error::Corrupt(format!("released blob {digest} has no record")));
    };
    record.refs -= 1;
    if record.refs > 0 {
        txn.put_blob(digest, &record)?;
        return Ok(false);
    }
    txn.remove_blob(digest)?;
    if txn.remove_inline_blob(digest)? {
        return Ok(false);
    }
    txn.queue_gc(digest)?;
    Ok(true)
}

/// Records a blob's MD5 (no-op if the blob has no record any more).
pub(crate) fn set_blob_md5(txn: &mut dyn MetadataTxn, digest: &Digest, md5: Md5) -> Result<()> {
    if let Some(mut record) = txn.blob(digest)? {
        record.md5 = Some(md5);
        txn.put_blob(digest, &record)?;
    }
    Ok(())
}

/// Adds `progress`'s clean segments to what is recorded for transfer `id` (replacing a record for
/// other bytes or another segment geometry), if the transfer still waits for its scan and its file
/// is `progress.blob`. Returns whether anything was recorded.
pub(crate) fn merge_scan_progress(
    txn: &mut dyn MetadataTxn,
    id: FileTransferId,
    progress: &ScanProgress,
) -> Result<bool> {
    let Some(transfer) = txn.transfer(id)? else { return Ok(false) };
    if transfer.status() != FileTransferStatus::UploadProcessing
        || transfer.content.is_none_or(|c| c.blake3 != progress.blob)
    {
        return Ok(false);
    }
    let mut merged = progress.clone();
    if let Some(stored) = txn.scan_progress(id)?
        && (stored.blob, stored.segment_len, stored.overlap)
            == (progress.blob, progress.segment_len, progress.overlap)
    {
        merged.clean.extend(stored.clean);
    }
    txn.put_scan_progress(id, &merged)?;
    Ok(true)
}
