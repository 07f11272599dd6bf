//! The metadata port's record operations on redb tables: [`Redb`] wraps a read or write
//! transaction and implements [`MetadataRead`] (both) and [`MetadataTxn`] (write). Each method
//! touches the tables of one kind of record; the rules that combine them are in
//! `crate::rules`.

use redb::{
    Key, ReadOnlyTable, ReadTransaction, ReadableTable, ReadableTableMetadata, Table,
    TableDefinition, Value, WriteTransaction,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::tables::*;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::model::{
    FileTransfer, FileTransferId, Party, RecipientStatusEntry, ResourceConfig, ResourceId,
    ServiceOwner, StatusEntry, Timestamp, UploadId,
};
use crate::ports::{Counter, MetadataRead, MetadataTxn, StoredHistory};
use crate::records::{BlobRecord, EventRecord, Job, JobKind, ScanProgress, UploadRecord};
use crate::records::{Delivery, Subscription};

pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    Ok(postcard::to_allocvec(value)?)
}

pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    Ok(postcard::from_bytes(bytes)?)
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
    txn.open_table(INLINE_BLOBS)?;
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
        // Schema 2 only added the table of inline blobs (created above): an index of schema 1
        // is one of schema 2 without any. Marked 2, so that a build of schema 1, which would
        // not find inline blobs, refuses it.
        Some(1) => {
            meta.insert("schema_version", encode(&SCHEMA_VERSION)?.as_slice())?;
        }
        Some(v) => {
            return Err(Error::Corrupt(format!(
                "index schema version {v}, this build understands {SCHEMA_VERSION}"
            )));
        }
    }
    Ok(())
}

/// Opening tables the same way in read and write transactions.
pub(crate) trait Tables {
    /// The table type of this kind of transaction.
    type Table<'t, K: Key + 'static, V: Value + 'static>: ReadableTable<K, V>
        + ReadableTableMetadata
    where
        Self: 't;

    fn table<K: Key + 'static, V: Value + 'static>(
        &self,
        def: TableDefinition<'_, K, V>,
    ) -> Result<Self::Table<'_, K, V>>;
}

impl Tables for ReadTransaction {
    type Table<'t, K: Key + 'static, V: Value + 'static> = ReadOnlyTable<K, V>;

    fn table<K: Key + 'static, V: Value + 'static>(
        &self,
        def: TableDefinition<'_, K, V>,
    ) -> Result<ReadOnlyTable<K, V>> {
        Ok(self.open_table(def)?)
    }
}

impl Tables for WriteTransaction {
    type Table<'t, K: Key + 'static, V: Value + 'static> = Table<'t, K, V>;

    fn table<K: Key + 'static, V: Value + 'static>(
        &self,
        def: TableDefinition<'_, K, V>,
    ) -> Result<Table<'_, K, V>> {
        Ok(self.open_table(def)?)
    }
}

/// A redb transaction seen through the metadata port.
pub(crate) struct Redb<'a, T>(pub(crate) &'a T);

/// Every value of a table, decoded, in key order.
fn all<K: Key + 'static, R: DeserializeOwned>(
    table: &impl ReadableTable<K, &'static [u8]>,
) -> Result<Vec<R>> {
    let mut out = Vec::new();
    for entry in table.iter()? {
        out.push(decode(entry?.1.value())?);
    }
    Ok(out)
}

fn digest_key(key: &[u8], what: &str) -> Result<Digest> {
    let bytes: [u8; 32] =
        key.try_into().map_err(|_| Error::Corrupt(format!("{what} key is not 32 bytes")))?;
    Ok(Digest::from_bytes(bytes))
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

fn append_rows<T: Serialize>(
    txn: &WriteTransaction,
    table: TableDefinition<'static, (u128, u32), &'static [u8]>,
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

const NEXT_EVENT_SEQ: &str = "next_event_seq";
const FANOUT_CURSOR: &str = "fanout_cursor";

impl<T: Tables> Redb<'_, T> {
    fn meta_value<R: DeserializeOwned>(&self, key: &str) -> Result<Option<R>> {
        self.0.table(META)?.get(key)?.map(|v| decode(v.value())).transpose()
    }
}

impl<T: Tables> MetadataRead for Redb<'_, T> {
    fn service_owner(&mut self, party: &Party) -> Result<Option<ServiceOwner>> {
        self.0
            .table(SERVICE_OWNERS)?
            .get(party.org_number())?
            .map(|v| decode(v.value()))
            .transpose()
    }

    fn resource(&mut self, id: &ResourceId) -> Result<Option<ResourceConfig>> {
        self.0.table(RESOURCES)?.get(id.as_str())?.map(|v| decode(v.value())).transpose()
    }

    fn resources(&mut self) -> Result<Vec<ResourceConfig>> {
        all(&self.0.table(RESOURCES)?)
    }

    fn transfer(&mut self, id: FileTransferId) -> Result<Option<FileTransfer>> {
        let key = id.as_u128();
        let transfers = self.0.table(TRANSFERS)?;
        let Some(row) = transfers.get(key)? else {
            return Ok(None);
        };
        let mut transfer: FileTransfer = decode(row.value())?;
        transfer.status_history = read_rows::<StatusEntry>(&self.0.table(STATUS_HISTORY)?, key)?;
        transfer.recipient_history =
            read_rows::<RecipientStatusEntry>(&self.0.table(RECIPIENT_HISTORY)?, key)?;
        if transfer.status_history.is_empty() {
            return Err(Error::Corrupt(format!("transfer {id} has no status history")));
        }
        Ok(Some(transfer))
    }

    fn transfer_ids(&mut self) -> Result<Vec<FileTransferId>> {
        let table = self.0.table(TRANSFERS)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            out.push(FileTransferId::from_u128(entry?.0.value()));
        }
        Ok(out)
    }

    fn transfers_by_resource(
        &mut self,
        resource: &ResourceId,
        from: Timestamp,
        to: Timestamp,
        limit: usize,
    ) -> Result<Vec<FileTransferId>> {
        let table = self.0.table(BY_RESOURCE)?;
        let start = (resource.as_str(), from.as_unix_micros(), 0u128);
        let end = (resource.as_str(), to.as_unix_micros(), 0u128);
        let mut out = Vec::new();
        for entry in table.range(start..end)?.take(limit) {
            out.push(FileTransferId::from_u128(entry?.0.value().2));
        }
        Ok(out)
    }

    fn transfers_by_party(
        &mut self,
        party: &Party,
        as_recipient: bool,
        from: Timestamp,
        to: Timestamp,
        limit: usize,
    ) -> Result<Vec<FileTransferId>> {
        let table = self.0.table(BY_PARTY)?;
        let role = u8::from(as_recipient);
        let start = (party.org_number(), role, from.as_unix_micros(), 0u128);
        let end = (party.org_number(), role, to.as_unix_micros(), 0u128);
        let mut out = Vec::new();
        for entry in table.range(start..end)?.take(limit) {
            out.push(FileTransferId::from_u128(entry?.0.value().3));
        }
        Ok(out)
    }

    fn idempotency_key(&mut self, key: &str) -> Result<Option<([u8; 32], FileTransferId)>> {
        self.0.table(IDEMPOTENCY)?.get(key)?.map(|v| decode(v.value())).transpose()
    }

    fn blob(&mut self, digest: &Digest) -> Result<Option<BlobRecord>> {
        let table = self.0.table(BLOBS)?;
        table.get(digest.as_bytes().as_slice())?.map(|v| decode(v.value())).transpose()
    }

    fn inline_blob(&mut self, digest: &Digest) -> Result<Option<bytes::Bytes>> {
        let table = self.0.table(INLINE_BLOBS)?;
        Ok(table
            .get(digest.as_bytes().as_slice())?
            .map(|v| bytes::Bytes::copy_from_slice(v.value())))
    }

    fn has_inline_blob(&mut self, digest: &Digest) -> Result<bool> {
        Ok(self.0.table(INLINE_BLOBS)?.get(digest.as_bytes().as_slice())?.is_some())
    }

    fn blobs(&mut self) -> Result<Vec<(Digest, BlobRecord)>> {
        let table = self.0.table(BLOBS)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (key, value) = entry?;
            out.push((digest_key(key.value(), "blob")?, decode(value.value())?));
        }
        Ok(out)
    }

    fn pending_gc(&mut self) -> Result<Vec<Digest>> {
        let table = self.0.table(BLOB_GC)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            out.push(digest_key(entry?.0.value(), "gc")?);
        }
        Ok(out)
    }

    fn upload(&mut self, id: &UploadId) -> Result<Option<UploadRecord>> {
        self.0.table(UPLOADS)?.get(id.as_str())?.map(|v| decode(v.value())).transpose()
    }

    fn uploads(&mut self) -> Result<Vec<(UploadId, UploadRecord)>> {
        let table = self.0.table(UPLOADS)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (key, value) = entry?;
            out.push((UploadId::from_stored(key.value()), decode(value.value())?));
        }
        Ok(out)
    }

    fn scan_progress(&mut self, id: FileTransferId) -> Result<Option<ScanProgress>> {
        self.0.table(SCAN_PROGRESS)?.get(id.as_u128())?.map(|v| decode(v.value())).transpose()
    }

    fn events_after(&mut self, after: u64, limit: usize) -> Result<Vec<EventRecord>> {
        let table = self.0.table(EVENT_LOG)?;
        let mut out = Vec::new();
        for entry in table.range(after.saturating_add(1)..)?.take(limit) {
            out.push(decode(entry?.1.value())?);
        }
        Ok(out)
    }

    fn event(&mut self, seq: u64) -> Result<Option<EventRecord>> {
        self.0.table(EVENT_LOG)?.get(seq)?.map(|v| decode(v.value())).transpose()
    }

    fn event_seq(&mut self, id: &uuid::Uuid) -> Result<Option<u64>> {
        let table = self.0.table(EVENT_IDS)?;
        Ok(table.get(id.as_bytes().as_slice())?.map(|v| v.value()))
    }

    fn last_event_seq(&mut self) -> Result<u64> {
        let table = self.0.table(EVENT_LOG)?;
        Ok(table.last()?.map_or(0, |(k, _)| k.value()))
    }

    fn due_jobs(&mut self, now: Timestamp, limit: usize) -> Result<Vec<Job>> {
        let table = self.0.table(SCHEDULE)?;
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

    fn subscription(&mut self, id: u64) -> Result<Option<Subscription>> {
        self.0.table(SUBSCRIPTIONS)?.get(id)?.map(|v| decode(v.value())).transpose()
    }

    fn subscriptions(&mut self) -> Result<Vec<Subscription>> {
        all(&self.0.table(SUBSCRIPTIONS)?)
    }

    fn has_subscriptions(&mut self) -> Result<bool> {
        Ok(!self.0.table(SUBSCRIPTIONS)?.is_empty()?)
    }

    fn delivery(&mut self, id: u64) -> Result<Option<Delivery>> {
        self.0.table(DELIVERIES)?.get(id)?.map(|v| decode(v.value())).transpose()
    }

    fn deliveries(&mut self) -> Result<Vec<Delivery>> {
        all(&self.0.table(DELIVERIES)?)
    }

    fn due_deliveries(&mut self, now: Timestamp, limit: usize) -> Result<Vec<u64>> {
        let table = self.0.table(DELIVERY_DUE)?;
        let mut out = Vec::new();
        for entry in table.range(..=(now.as_unix_micros(), u64::MAX))?.take(limit) {
            out.push(entry?.0.value().1);
        }
        Ok(out)
    }

    fn dead_letters(&mut self) -> Result<Vec<Delivery>> {
        all(&self.0.table(DEAD_LETTERS)?)
    }

    fn fanout_cursor(&mut self) -> Result<u64> {
        Ok(self.meta_value(FANOUT_CURSOR)?.unwrap_or(0))
    }
}

impl Redb<'_, WriteTransaction> {
    fn put_meta<R: Serialize>(&self, key: &str, value: &R) -> Result<()> {
        self.0.open_table(META)?.insert(key, encode(value)?.as_slice())?;
        Ok(())
    }
}

impl MetadataTxn for Redb<'_, WriteTransaction> {
    fn insert_service_owner(&mut self, owner: &ServiceOwner) -> Result<()> {
        let mut table = self.0.open_table(SERVICE_OWNERS)?;
        let key = owner.id.org_number();
        if table.get(key)?.is_some() {
            return Err(Error::AlreadyExists(format!("service owner {}", owner.id)));
        }
        table.insert(key, encode(owner)?.as_slice())?;
        Ok(())
    }

    fn put_resource(&mut self, resource: &ResourceConfig) -> Result<()> {
        self.0.open_table(RESOURCES)?.insert(resource.id.as_str(), encode(resource)?.as_slice())?;
        Ok(())
    }

    fn insert_transfer(&mut self, transfer: &FileTransfer) -> Result<()> {
        if self.0.open_table(TRANSFERS)?.get(transfer.id.as_u128())?.is_some() {
            return Err(Error::AlreadyExists(format!("file transfer {}", transfer.id)));
        }
        let id = transfer.id.as_u128();
        let created = transfer.created.as_unix_micros();
        self.0.open_table(BY_RESOURCE)?.insert((transfer.resource_id.as_str(), created, id), ())?;
        let mut by_party = self.0.open_table(BY_PARTY)?;
        by_party.insert((transfer.sender.org_number(), 0u8, created, id), ())?;
        for recipient in &transfer.recipients {
            by_party.insert((recipient.org_number(), 1u8, created, id), ())?;
        }
        Ok(())
    }

    fn put_transfer(&mut self, transfer: &FileTransfer, stored: StoredHistory) -> Result<()> {
        let id = transfer.id.as_u128();
        self.0.open_table(TRANSFERS)?.insert(id, encode(transfer)?.as_slice())?;
        append_rows(self.0, STATUS_HISTORY, id, &transfer.status_history, stored.status)?;
        append_rows(self.0, RECIPIENT_HISTORY, id, &transfer.recipient_history, stored.recipient)
    }

    fn put_idempotency_key(
        &mut self,
        key: &str,
        request_hash: [u8; 32],
        transfer: FileTransferId,
    ) -> Result<()> {
        self.0
            .open_table(IDEMPOTENCY)?
            .insert(key, encode(&(request_hash, transfer))?.as_slice())?;
        Ok(())
    }

    fn put_blob(&mut self, digest: &Digest, record: &BlobRecord) -> Result<()> {
        let mut blobs = self.0.open_table(BLOBS)?;
        blobs.insert(digest.as_bytes().as_slice(), encode(record)?.as_slice())?;
        Ok(())
    }

    fn remove_blob(&mut self, digest: &Digest) -> Result<()> {
        self.0.open_table(BLOBS)?.remove(digest.as_bytes().as_slice())?;
        Ok(())
    }

    fn put_inline_blob(&mut self, digest: &Digest, bytes: &[u8]) -> Result<()> {
        self.0.open_table(INLINE_BLOBS)?.insert(digest.as_bytes().as_slice(), bytes)?;
        Ok(())
    }

    fn remove_inline_blob(&mut self, digest: &Digest) -> Result<bool> {
        Ok(self.0.open_table(INLINE_BLOBS)?.remove(digest.as_bytes().as_slice())?.is_some())
    }

    fn queue_gc(&mut self, digest: &Digest) -> Result<()> {
        self.0.open_table(BLOB_GC)?.insert(digest.as_bytes().as_slice(), ())?;
        Ok(())
    }

    fn unqueue_gc(&mut self, digest: &Digest) -> Result<()> {
        self.0.open_table(BLOB_GC)?.remove(digest.as_bytes().as_slice())?;
        Ok(())
    }

    fn put_upload(&mut self, id: &UploadId, record: &UploadRecord) -> Result<()> {
        self.0.open_table(UPLOADS)?.insert(id.as_str(), encode(record)?.as_slice())?;
        Ok(())
    }

    fn remove_upload(&mut self, id: &UploadId) -> Result<Option<UploadRecord>> {
        let mut table = self.0.open_table(UPLOADS)?;
        let removed = table.remove(id.as_str())?.map(|v| decode(v.value())).transpose()?;
        Ok(removed)
    }

    fn put_scan_progress(&mut self, id: FileTransferId, progress: &ScanProgress) -> Result<()> {
        self.0.open_table(SCAN_PROGRESS)?.insert(id.as_u128(), encode(progress)?.as_slice())?;
        Ok(())
    }

    fn remove_scan_progress(&mut self, id: FileTransferId) -> Result<()> {
        self.0.open_table(SCAN_PROGRESS)?.remove(id.as_u128())?;
        Ok(())
    }

    fn append_events(&mut self, events: Vec<EventRecord>) -> Result<usize> {
        if events.is_empty() {
            return Ok(0);
        }
        let mut meta = self.0.open_table(META)?;
        let mut next: u64 =
            meta.get(NEXT_EVENT_SEQ)?.map(|v| decode(v.value())).transpose()?.unwrap_or(1);
        let mut log = self.0.open_table(EVENT_LOG)?;
        let mut ids = self.0.open_table(EVENT_IDS)?;
        let mut appended = 0;
        for mut event in events {
            if ids.get(event.id.as_bytes().as_slice())?.is_some() {
                continue; // already recorded: an event happens once
            }
            event.seq = next;
            log.insert(next, encode(&event)?.as_slice())?;
            ids.insert(event.id.as_bytes().as_slice(), next)?;
            next += 1;
            appended += 1;
        }
        meta.insert(NEXT_EVENT_SEQ, encode(&next)?.as_slice())?;
        Ok(appended)
    }

    fn schedule(&mut self, job: &Job) -> Result<()> {
        let key = (job.due.as_unix_micros(), job.transfer.as_u128(), job.kind.code());
        self.0.open_table(SCHEDULE)?.insert(key, ())?;
        Ok(())
    }

    fn unschedule(&mut self, job: &Job) -> Result<bool> {
        let key = (job.due.as_unix_micros(), job.transfer.as_u128(), job.kind.code());
        Ok(self.0.open_table(SCHEDULE)?.remove(key)?.is_some())
    }

    fn next_id(&mut self, counter: Counter) -> Result<u64> {
        let key = match counter {
            Counter::Subscription => "next_subscription_id",
            Counter::Delivery => "next_delivery_id",
        };
        let next: u64 = self.meta_value(key)?.unwrap_or(1);
        self.put_meta(key, &(next + 1))?;
        Ok(next)
    }

    fn put_subscription(&mut self, sub: &Subscription) -> Result<()> {
        self.0.open_table(SUBSCRIPTIONS)?.insert(sub.id, encode(sub)?.as_slice())?;
        Ok(())
    }

    fn remove_subscription(&mut self, id: u64) -> Result<()> {
        self.0.open_table(SUBSCRIPTIONS)?.remove(id)?;
        Ok(())
    }

    fn put_delivery(&mut self, d: &Delivery) -> Result<()> {
        self.0.open_table(DELIVERIES)?.insert(d.id, encode(d)?.as_slice())?;
        self.0.open_table(DELIVERY_DUE)?.insert((d.due.as_unix_micros(), d.id), ())?;
        Ok(())
    }

    fn remove_delivery(&mut self, id: u64) -> Result<Option<Delivery>> {
        let removed = self
            .0
            .open_table(DELIVERIES)?
            .remove(id)?
            .map(|v| decode::<Delivery>(v.value()))
            .transpose()?;
        if let Some(d) = &removed {
            self.0.open_table(DELIVERY_DUE)?.remove((d.due.as_unix_micros(), d.id))?;
        }
        Ok(removed)
    }

    fn put_dead_letter(&mut self, d: &Delivery) -> Result<()> {
        self.0.open_table(DEAD_LETTERS)?.insert(d.id, encode(d)?.as_slice())?;
        Ok(())
    }

    fn remove_dead_letter(&mut self, id: u64) -> Result<()> {
        self.0.open_table(DEAD_LETTERS)?.remove(id)?;
        Ok(())
    }

    fn set_fanout_cursor(&mut self, seq: u64) -> Result<()> {
        self.put_meta(FANOUT_CURSOR, &seq)
    }
}
