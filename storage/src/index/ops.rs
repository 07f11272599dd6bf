//! Record-level operations, each used inside one transaction by the storage facade.

use redb::{ReadTransaction, ReadableTable, WriteTransaction};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::tables::*;
use crate::digest::{Digest, Md5};
use crate::error::{Error, Result};
use crate::model::{
    DomainEvent, EventRole, EventType, FileTransfer, FileTransferId, FileTransferStatus, Party,
    RecipientStatusEntry, ResourceConfig, ResourceId, ServiceOwner, StatusEntry, StoredContent,
    Timestamp, UploadId,
};

pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    Ok(postcard::to_allocvec(value)?)
}

pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    Ok(postcard::from_bytes(bytes)?)
}

/// A stored blob: its size, MD5 and how many things reference it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRecord {
    /// Bytes.
    pub size: u64,
    /// MD5 of the bytes, once computed.
    pub md5: Option<Md5>,
    /// References: transfers holding it plus standalone references.
    pub refs: u64,
}

/// How far the scan of a transfer's file got: the segments clamd found clean, so a scan
/// interrupted by a restart or a clamd outage resumes at the first segment not yet clean.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanProgress {
    /// The file (its BLAKE3): progress on other bytes is no progress.
    pub blob: Digest,
    /// Segment length the indices refer to.
    pub segment_len: u64,
    /// Overlap between segments the indices refer to.
    pub overlap: u64,
    /// Segments found clean.
    pub clean: std::collections::BTreeSet<u64>,
}

/// An upload in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadRecord {
    /// File name of its temporary under `tmp/`.
    pub temp_name: String,
    /// Bytes known to be durable in the temporary.
    pub committed: u64,
    /// When the upload began.
    pub created: Timestamp,
    /// When its committed offset last moved.
    pub updated: Timestamp,
    /// The total length the client announced (TUS `Upload-Length`), if any.
    #[serde(default)]
    pub length: Option<u64>,
}

/// Creates every table and checks the schema version.
pub(crate) fn init(txn: &WriteTransaction) -> Result<()> {
    txn.open_table(SERVICE_OWNERS)?;
    txn.open_table(RESOURCES)?;
    txn.open_table(TRANSFERS)?;
    txn.open_table(STATUS_HISTORY)?;
    txn.open_table(RECIPIENT_HISTORY)?;
    txn.open_table(BLOBS)?;
    txn.open_table(BLOB_GC)?;
    txn.open_table(UPLOADS)?;
    txn.open_table(SCAN_PROGRESS)?;
    txn.open_table(BY_RESOURCE)?;
    txn.open_table(BY_PARTY)?;
    txn.open_table(IDEMPOTENCY)?;
    txn.open_table(EVENT_LOG)?;
    txn.open_table(EVENT_IDS)?;
    txn.open_table(SCHEDULE)?;
    txn.open_table(SUBSCRIPTIONS)?;
    txn.open_table(DELIVERIES)?;
    txn.open_table(DELIVERY_DUE)?;
    txn.open_table(DEAD_LETTERS)?;
    let mut meta = txn.open_table(META)?;
    let stored = meta.get("schema_version")?.map(|v| decode::<u32>(v.value())).transpose()?;
    match stored {
        None => {
            meta.insert("schema_version", encode(&SCHEMA_VERSION)?.as_slice())?;
        }
        Some(v) if v == SCHEMA_VERSION => {}
        Some(v) => {
            return Err(Error::Corrupt(format!(
                "index schema version {v}, this build understands {SCHEMA_VERSION}"
            )));
        }
    }
    Ok(())
}

// --- service owners and resources ---

pub(crate) fn insert_service_owner(txn: &WriteTransaction, owner: &ServiceOwner) -> Result<()> {
    let mut table = txn.open_table(SERVICE_OWNERS)?;
    let key = owner.id.org_number();
    if table.get(key)?.is_some() {
        return Err(Error::AlreadyExists(format!("service owner {}", owner.id)));
    }
    table.insert(key, encode(owner)?.as_slice())?;
    Ok(())
}

pub(crate) fn get_service_owner(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    party: &Party,
) -> Result<Option<ServiceOwner>> {
    table.get(party.org_number())?.map(|v| decode(v.value())).transpose()
}

pub(crate) fn put_resource(txn: &WriteTransaction, resource: &ResourceConfig) -> Result<()> {
    txn.open_table(RESOURCES)?.insert(resource.id.as_str(), encode(resource)?.as_slice())?;
    Ok(())
}

pub(crate) fn get_resource(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    id: &ResourceId,
) -> Result<Option<ResourceConfig>> {
    table.get(id.as_str())?.map(|v| decode(v.value())).transpose()
}

// --- transfers ---

/// How much of a transfer's histories is already stored.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stored {
    n_status: usize,
    n_recipient: usize,
    held: Option<StoredContent>,
}

impl Stored {
    pub(crate) const NOTHING: Self = Self { n_status: 0, n_recipient: 0, held: None };

    pub(crate) fn of(transfer: &FileTransfer) -> Self {
        Self {
            n_status: transfer.status_history.len(),
            n_recipient: transfer.recipient_history.len(),
            held: transfer.content.filter(|_| transfer.holds_blob()),
        }
    }
}

pub(crate) fn insert_transfer(
    txn: &WriteTransaction,
    transfer: &FileTransfer,
    lifecycle: &crate::Lifecycle,
) -> Result<Vec<Digest>> {
    if txn.open_table(TRANSFERS)?.get(transfer.id.as_u128())?.is_some() {
        return Err(Error::AlreadyExists(format!("file transfer {}", transfer.id)));
    }
    let id = transfer.id.as_u128();
    let created = transfer.created.as_unix_micros();
    txn.open_table(BY_RESOURCE)?.insert((transfer.resource_id.as_str(), created, id), ())?;
    let mut by_party = txn.open_table(BY_PARTY)?;
    by_party.insert((transfer.sender.org_number(), 0u8, created, id), ())?;
    for recipient in &transfer.recipients {
        by_party.insert((recipient.org_number(), 1u8, created, id), ())?;
    }
    save_transfer(txn, transfer, Stored::NOTHING, lifecycle)
}

/// Inserts `transfer` unless `key` was used before: then returns the transfer it created if the
/// request hash matches, or an error if the same key came with a different request.
pub(crate) fn insert_transfer_idempotent(
    txn: &WriteTransaction,
    transfer: &FileTransfer,
    key: &str,
    request_hash: [u8; 32],
    lifecycle: &crate::Lifecycle,
) -> Result<FileTransferId> {
    let existing = {
        let table = txn.open_table(IDEMPOTENCY)?;
        let value = table.get(key)?;
        value.map(|v| decode::<([u8; 32], FileTransferId)>(v.value())).transpose()?
    };
    match existing {
        Some((hash, id)) if hash == request_hash => Ok(id),
        Some(_) => {
            Err(Error::AlreadyExists(format!("idempotency key {key:?} with a different request")))
        }
        None => {
            insert_transfer(txn, transfer, lifecycle)?;
            txn.open_table(IDEMPOTENCY)?
                .insert(key, encode(&(request_hash, transfer.id))?.as_slice())?;
            Ok(transfer.id)
        }
    }
}

/// Writes the transfer's record, the history rows added since `before`, and the blob reference
/// change implied by [`FileTransfer::holds_blob`]. Returns digests whose last reference went.
pub(crate) fn save_transfer(
    txn: &WriteTransaction,
    transfer: &FileTransfer,
    before: Stored,
    lifecycle: &crate::Lifecycle,
) -> Result<Vec<Digest>> {
    let id = transfer.id.as_u128();
    txn.open_table(TRANSFERS)?.insert(id, encode(transfer)?.as_slice())?;
    append_rows(txn, STATUS_HISTORY, id, &transfer.status_history, before.n_status)?;
    append_rows(txn, RECIPIENT_HISTORY, id, &transfer.recipient_history, before.n_recipient)?;
    append_events(txn, transfer, transfer.events_since(before.n_status, before.n_recipient))?;
    schedule_jobs(txn, transfer, before.n_status, lifecycle)?;
    if transfer.status() != FileTransferStatus::UploadProcessing {
        // The scan is over (or will never run): its progress goes with it.
        txn.open_table(SCAN_PROGRESS)?.remove(id)?;
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

fn append_rows<T: Serialize>(
    txn: &WriteTransaction,
    table: redb::TableDefinition<'static, (u128, u32), &'static [u8]>,
    id: u128,
    rows: &[T],
    n_stored: usize,
) -> Result<()> {
    if rows.len() < n_stored {
        return Err(Error::Corrupt("a history shrank".into()));
    }
    let mut table = txn.open_table(table)?;
    for (seq, row) in rows.iter().enumerate().skip(n_stored) {
        let seq = u32::try_from(seq).map_err(|_| Error::Corrupt("history too long".into()))?;
        table.insert((id, seq), encode(row)?.as_slice())?;
    }
    Ok(())
}

/// Loads a transfer with both histories from any transaction.
pub(crate) fn load_transfer(
    transfers: &impl ReadableTable<u128, &'static [u8]>,
    status: &impl ReadableTable<(u128, u32), &'static [u8]>,
    recipients: &impl ReadableTable<(u128, u32), &'static [u8]>,
    id: FileTransferId,
) -> Result<Option<FileTransfer>> {
    let key = id.as_u128();
    let Some(row) = transfers.get(key)? else {
        return Ok(None);
    };
    let mut transfer: FileTransfer = decode(row.value())?;
    transfer.status_history = read_rows::<StatusEntry>(status, key)?;
    transfer.recipient_history = read_rows::<RecipientStatusEntry>(recipients, key)?;
    if transfer.status_history.is_empty() {
        return Err(Error::Corrupt(format!("transfer {id} has no status history")));
    }
    Ok(Some(transfer))
}

fn read_rows<T: DeserializeOwned>(
    table: &impl ReadableTable<(u128, u32), &'static [u8]>,
    id: u128,
) -> Result<Vec<T>> {
    let mut out = Vec::new();
    for entry in table.range((id, 0)..=(id, u32::MAX))? {
        let (_, value) = entry?;
        out.push(decode(value.value())?);
    }
    Ok(out)
}

pub(crate) fn load_transfer_read(
    txn: &ReadTransaction,
    id: FileTransferId,
) -> Result<Option<FileTransfer>> {
    load_transfer(
        &txn.open_table(TRANSFERS)?,
        &txn.open_table(STATUS_HISTORY)?,
        &txn.open_table(RECIPIENT_HISTORY)?,
        id,
    )
}

pub(crate) fn load_transfer_write(
    txn: &WriteTransaction,
    id: FileTransferId,
) -> Result<Option<FileTransfer>> {
    load_transfer(
        &txn.open_table(TRANSFERS)?,
        &txn.open_table(STATUS_HISTORY)?,
        &txn.open_table(RECIPIENT_HISTORY)?,
        id,
    )
}

/// Transfers of a resource created in `[from, to)`, oldest first.
pub(crate) fn transfers_by_resource(
    txn: &ReadTransaction,
    resource: &ResourceId,
    from: Timestamp,
    to: Timestamp,
    limit: usize,
) -> Result<Vec<FileTransferId>> {
    let table = txn.open_table(BY_RESOURCE)?;
    let start = (resource.as_str(), from.as_unix_micros(), 0u128);
    let end = (resource.as_str(), to.as_unix_micros(), 0u128);
    let mut out = Vec::new();
    for entry in table.range(start..end)?.take(limit) {
        out.push(FileTransferId::from_u128(entry?.0.value().2));
    }
    Ok(out)
}

/// Transfers where `party` has `role` (0 sender, 1 recipient), created in `[from, to)`.
pub(crate) fn transfers_by_party(
    txn: &ReadTransaction,
    party: &Party,
    role: u8,
    from: Timestamp,
    to: Timestamp,
    limit: usize,
) -> Result<Vec<FileTransferId>> {
    let table = txn.open_table(BY_PARTY)?;
    let start = (party.org_number(), role, from.as_unix_micros(), 0u128);
    let end = (party.org_number(), role, to.as_unix_micros(), 0u128);
    let mut out = Vec::new();
    for entry in table.range(start..end)?.take(limit) {
        out.push(FileTransferId::from_u128(entry?.0.value().3));
    }
    Ok(out)
}

// --- blobs ---

pub(crate) fn blob_incref(txn: &WriteTransaction, content: &StoredContent) -> Result<()> {
    let mut blobs = txn.open_table(BLOBS)?;
    let key = content.blake3.as_bytes().as_slice();
    let record = match blobs.get(key)?.map(|v| decode::<BlobRecord>(v.value())).transpose()? {
        Some(mut record) => {
            record.refs += 1;
            record.md5 = record.md5.or(content.md5);
            record
        }
        None => BlobRecord { size: content.size, md5: content.md5, refs: 1 },
    };
    blobs.insert(key, encode(&record)?.as_slice())?;
    drop(blobs);
    // A blob that gained a reference must not be collected.
    txn.open_table(BLOB_GC)?.remove(key)?;
    Ok(())
}

/// Drops one reference; returns true if it was the last (the file is then queued for deletion).
pub(crate) fn blob_decref(txn: &WriteTransaction, digest: &Digest) -> Result<bool> {
    let mut blobs = txn.open_table(BLOBS)?;
    let key = digest.as_bytes().as_slice();
    let Some(mut record) = blobs.get(key)?.map(|v| decode::<BlobRecord>(v.value())).transpose()?
    else {
        return Err(Error::Corrupt(format!("released blob {digest} has no record")));
    };
    record.refs -= 1;
    if record.refs > 0 {
        blobs.insert(key, encode(&record)?.as_slice())?;
        return Ok(false);
    }
    blobs.remove(key)?;
    drop(blobs);
    txn.open_table(BLOB_GC)?.insert(key, ())?;
    Ok(true)
}

/// Records a blob's MD5 (no-op if the blob has no record any more).
pub(crate) fn set_blob_md5(txn: &WriteTransaction, digest: &Digest, md5: Md5) -> Result<()> {
    let mut blobs = txn.open_table(BLOBS)?;
    let key = digest.as_bytes().as_slice();
    let record = blobs.get(key)?.map(|v| decode::<BlobRecord>(v.value())).transpose()?;
    if let Some(mut record) = record {
        record.md5 = Some(md5);
        blobs.insert(key, encode(&record)?.as_slice())?;
    }
    Ok(())
}

pub(crate) fn get_blob(txn: &ReadTransaction, digest: &Digest) -> Result<Option<BlobRecord>> {
    let table = txn.open_table(BLOBS)?;
    table.get(digest.as_bytes().as_slice())?.map(|v| decode(v.value())).transpose()
}

pub(crate) fn all_blobs(txn: &ReadTransaction) -> Result<Vec<(Digest, BlobRecord)>> {
    let table = txn.open_table(BLOBS)?;
    let mut out = Vec::new();
    for entry in table.iter()? {
        let (key, value) = entry?;
        let bytes: [u8; 32] = key
            .value()
            .try_into()
            .map_err(|_| Error::Corrupt("blob key is not 32 bytes".into()))?;
        out.push((Digest::from_bytes(bytes), decode(value.value())?));
    }
    Ok(out)
}

pub(crate) fn pending_gc(txn: &ReadTransaction) -> Result<Vec<Digest>> {
    let table = txn.open_table(BLOB_GC)?;
    let mut out = Vec::new();
    for entry in table.iter()? {
        let (key, ()) = (entry?.0, ());
        let bytes: [u8; 32] =
            key.value().try_into().map_err(|_| Error::Corrupt("gc key is not 32 bytes".into()))?;
        out.push(Digest::from_bytes(bytes));
    }
    Ok(out)
}

/// Every transfer id, for consistency checks.
pub(crate) fn all_transfer_ids(txn: &ReadTransaction) -> Result<Vec<FileTransferId>> {
    let table = txn.open_table(TRANSFERS)?;
    let mut out = Vec::new();
    for entry in table.iter()? {
        out.push(FileTransferId::from_u128(entry?.0.value()));
    }
    Ok(out)
}

// --- scan progress ---

pub(crate) fn get_scan_progress(
    txn: &ReadTransaction,
    id: FileTransferId,
) -> Result<Option<ScanProgress>> {
    let table = txn.open_table(SCAN_PROGRESS)?;
    table.get(id.as_u128())?.map(|v| decode(v.value())).transpose()
}

/// Adds `progress`'s clean segments to what is recorded for transfer `id` (replacing a record for
/// other bytes or another segment geometry), if the transfer still waits for its scan and its file
/// is `progress.blob`. Returns whether anything was recorded.
pub(crate) fn merge_scan_progress(
    txn: &WriteTransaction,
    id: FileTransferId,
    progress: &ScanProgress,
) -> Result<bool> {
    let Some(transfer) = load_transfer_write(txn, id)? else { return Ok(false) };
    if transfer.status() != FileTransferStatus::UploadProcessing
        || transfer.content.is_none_or(|c| c.blake3 != progress.blob)
    {
        return Ok(false);
    }
    let mut table = txn.open_table(SCAN_PROGRESS)?;
    let key = id.as_u128();
    let mut merged = progress.clone();
    if let Some(stored) = table.get(key)?.map(|v| decode::<ScanProgress>(v.value())).transpose()?
        && (stored.blob, stored.segment_len, stored.overlap)
            == (progress.blob, progress.segment_len, progress.overlap)
    {
        merged.clean.extend(stored.clean);
    }
    table.insert(key, encode(&merged)?.as_slice())?;
    Ok(true)
}

// --- uploads ---

pub(crate) fn get_upload(txn: &ReadTransaction, id: &UploadId) -> Result<Option<UploadRecord>> {
    let table = txn.open_table(UPLOADS)?;
    table.get(id.as_str())?.map(|v| decode(v.value())).transpose()
}

pub(crate) fn put_upload(
    txn: &WriteTransaction,
    id: &UploadId,
    record: &UploadRecord,
) -> Result<()> {
    txn.open_table(UPLOADS)?.insert(id.as_str(), encode(record)?.as_slice())?;
    Ok(())
}

pub(crate) fn remove_upload(txn: &WriteTransaction, id: &UploadId) -> Result<Option<UploadRecord>> {
    let mut table = txn.open_table(UPLOADS)?;
    let removed = table.remove(id.as_str())?.map(|v| decode(v.value())).transpose()?;
    Ok(removed)
}

pub(crate) fn all_uploads(txn: &ReadTransaction) -> Result<Vec<(UploadId, UploadRecord)>> {
    let table = txn.open_table(UPLOADS)?;
    let mut out = Vec::new();
    for entry in table.iter()? {
        let (key, value) = entry?;
        out.push((UploadId::from_stored(key.value()), decode(value.value())?));
    }
    Ok(out)
}

// --- events ---

/// An event in the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    /// Position in the log (from 1, gap-free).
    pub seq: u64,
    /// Deterministic id: the same (type, transfer, role, party) always gets the same id.
    pub id: uuid::Uuid,
    /// Type.
    pub kind: EventType,
    /// The transfer (`resourceinstance`).
    pub transfer: FileTransferId,
    /// Its resource.
    pub resource: ResourceId,
    /// To whom (`subject`).
    pub party: Party,
    /// As what (`data.Role`).
    pub role: EventRole,
    /// When the change happened.
    pub at: Timestamp,
}

/// The deterministic id of an event: BLAKE3 of `type:transfer:role:party`, as a version-8 UUID.
pub fn event_id(
    kind: EventType,
    transfer: FileTransferId,
    role: EventRole,
    party: &Party,
) -> uuid::Uuid {
    let text = format!("{}:{transfer}:{}:{party}", kind.type_string(), role.name());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&blake3::hash(text.as_bytes()).as_bytes()[..16]);
    bytes[6] = (bytes[6] & 0x0f) | 0x80;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    uuid::Uuid::from_bytes(bytes)
}

const NEXT_EVENT_SEQ: &str = "next_event_seq";

fn append_events(
    txn: &WriteTransaction,
    transfer: &FileTransfer,
    events: Vec<DomainEvent>,
) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let mut meta = txn.open_table(META)?;
    let mut next: u64 =
        meta.get(NEXT_EVENT_SEQ)?.map(|v| decode(v.value())).transpose()?.unwrap_or(1);
    let mut log = txn.open_table(EVENT_LOG)?;
    let mut ids = txn.open_table(EVENT_IDS)?;
    for event in events {
        let id = event_id(event.kind, transfer.id, event.role, &event.party);
        if ids.get(id.as_bytes().as_slice())?.is_some() {
            continue; // already recorded: an event happens once
        }
        let record = EventRecord {
            seq: next,
            id,
            kind: event.kind,
            transfer: transfer.id,
            resource: transfer.resource_id.clone(),
            party: event.party,
            role: event.role,
            at: event.at,
        };
        log.insert(next, encode(&record)?.as_slice())?;
        ids.insert(id.as_bytes().as_slice(), next)?;
        next += 1;
    }
    meta.insert(NEXT_EVENT_SEQ, encode(&next)?.as_slice())?;
    Ok(())
}

/// Events with a sequence above `after`, at most `limit`.
pub(crate) fn events_after(
    txn: &ReadTransaction,
    after: u64,
    limit: usize,
) -> Result<Vec<EventRecord>> {
    let table = txn.open_table(EVENT_LOG)?;
    let mut out = Vec::new();
    for entry in table.range(after.saturating_add(1)..)?.take(limit) {
        out.push(decode(entry?.1.value())?);
    }
    Ok(out)
}

pub(crate) fn event_seq(txn: &ReadTransaction, id: &uuid::Uuid) -> Result<Option<u64>> {
    let table = txn.open_table(EVENT_IDS)?;
    Ok(table.get(id.as_bytes().as_slice())?.map(|v| v.value()))
}

pub(crate) fn last_event_seq(txn: &ReadTransaction) -> Result<u64> {
    let table = txn.open_table(EVENT_LOG)?;
    Ok(table.last()?.map_or(0, |(k, _)| k.value()))
}

// --- life-cycle schedule ---

/// What a scheduled job does when it comes due.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum JobKind {
    /// The transfer's time to live is over.
    Expiry,
    /// The grace period after all recipients confirmed is over.
    GracePurge,
    /// The upload may have stalled.
    StuckUpload,
    /// The scan may be taking too long.
    ScanTimeout,
}

impl JobKind {
    const ALL: [Self; 4] = [Self::Expiry, Self::GracePurge, Self::StuckUpload, Self::ScanTimeout];

    fn code(self) -> u8 {
        Self::ALL.iter().position(|k| *k == self).expect("listed") as u8
    }
}

/// A due life-cycle job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Job {
    /// When it is due.
    pub due: Timestamp,
    /// Which transfer.
    pub transfer: FileTransferId,
    /// What to do.
    pub kind: JobKind,
}

pub(crate) fn schedule(
    txn: &WriteTransaction,
    due: Timestamp,
    transfer: FileTransferId,
    kind: JobKind,
) -> Result<()> {
    txn.open_table(SCHEDULE)?
        .insert((due.as_unix_micros(), transfer.as_u128(), kind.code()), ())?;
    Ok(())
}

pub(crate) fn unschedule(txn: &WriteTransaction, job: &Job) -> Result<bool> {
    let key = (job.due.as_unix_micros(), job.transfer.as_u128(), job.kind.code());
    Ok(txn.open_table(SCHEDULE)?.remove(key)?.is_some())
}

/// Jobs the new status rows call for, in the same transaction as the change.
fn schedule_jobs(
    txn: &WriteTransaction,
    transfer: &FileTransfer,
    n_status_before: usize,
    lifecycle: &crate::Lifecycle,
) -> Result<()> {
    for entry in transfer.status_history.iter().skip(n_status_before) {
        match entry.status {
            FileTransferStatus::Initialized => {
                schedule(txn, transfer.expiration_time, transfer.id, JobKind::Expiry)?
            }
            FileTransferStatus::UploadStarted => schedule(
                txn,
                entry.at.saturating_add(lifecycle.stuck_upload_after),
                transfer.id,
                JobKind::StuckUpload,
            )?,
            FileTransferStatus::UploadProcessing if transfer.use_virus_scan => schedule(
                txn,
                entry.at.saturating_add(lifecycle.scan_timeout),
                transfer.id,
                JobKind::ScanTimeout,
            )?,
            FileTransferStatus::AllConfirmedDownloaded => {
                let resource = get_resource(&txn.open_table(RESOURCES)?, &transfer.resource_id)?;
                if let Some(resource) =
                    resource.filter(|r| r.purge_file_transfer_after_all_recipients_confirmed)
                {
                    let due = entry.at.saturating_add(resource.grace_period());
                    schedule(txn, due, transfer.id, JobKind::GracePurge)?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Jobs due at or before `now`, earliest first.
pub(crate) fn due_jobs(txn: &ReadTransaction, now: Timestamp, limit: usize) -> Result<Vec<Job>> {
    let table = txn.open_table(SCHEDULE)?;
    let mut out = Vec::new();
    for entry in table.range(..=(now.as_unix_micros(), u128::MAX, u8::MAX))?.take(limit) {
        let (due, transfer, kind) = entry?.0.value();
        let kind = *JobKind::ALL
            .get(usize::from(kind))
            .ok_or_else(|| Error::Corrupt(format!("job kind {kind}")))?;
        out.push(Job {
            due: Timestamp::from_unix_micros(due),
            transfer: FileTransferId::from_u128(transfer),
            kind,
        });
    }
    Ok(out)
}
