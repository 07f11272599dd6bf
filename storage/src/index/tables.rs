//! All redb tables. Values are postcard-encoded records (see [`super::ops`]); a change to a
//! record's shape gets a new table name (`-v2`) and a migration, never a silent reinterpretation.

use redb::TableDefinition;

/// Key/value pairs about the database itself (schema version).
pub(crate) const META: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("meta-v1");
/// Org number (9 digits) → `ServiceOwner`.
pub(crate) const SERVICE_OWNERS: TableDefinition<'static, &str, &[u8]> =
    TableDefinition::new("service_owners-v1");
/// Resource id → `ResourceConfig`.
pub(crate) const RESOURCES: TableDefinition<'static, &str, &[u8]> =
    TableDefinition::new("resources-v1");
/// Transfer id → `FileTransfer` without its histories.
pub(crate) const TRANSFERS: TableDefinition<'static, u128, &[u8]> =
    TableDefinition::new("transfers-v1");
/// (transfer id, sequence) → `StatusEntry`.
pub(crate) const STATUS_HISTORY: TableDefinition<'static, (u128, u32), &[u8]> =
    TableDefinition::new("transfer_status_history-v1");
/// (transfer id, sequence) → `RecipientStatusEntry`.
pub(crate) const RECIPIENT_HISTORY: TableDefinition<'static, (u128, u32), &[u8]> =
    TableDefinition::new("recipient_status_history-v1");
/// BLAKE3 digest → `BlobRecord` (size, MD5, reference count). A blob is listed here only while
/// its file exists and something references it.
pub(crate) const BLOBS: TableDefinition<'static, &[u8], &[u8]> = TableDefinition::new("blobs-v1");
/// Digests whose last reference went: their files are deleted after the commit.
/// The bytes of small blobs kept in the index (schema 2): digest → bytes.
pub(crate) const INLINE_BLOBS: TableDefinition<'static, &[u8], &[u8]> =
    TableDefinition::new("inline_blobs-v1");
pub(crate) const BLOB_GC: TableDefinition<'static, &[u8], ()> = TableDefinition::new("blob_gc-v1");
/// Upload id → `UploadRecord` (temporary file, durable committed offset).
pub(crate) const UPLOADS: TableDefinition<'static, &str, &[u8]> =
    TableDefinition::new("uploads-v1");
/// Transfer id → `ScanProgress`: the segments of its file found clean so far, while it waits for
/// its scan (removed in the transaction that takes it out of `UploadProcessing`).
pub(crate) const SCAN_PROGRESS: TableDefinition<'static, u128, &[u8]> =
    TableDefinition::new("scan_progress-v1");
/// Search index: (resource id, created µs, transfer id).
pub(crate) const BY_RESOURCE: TableDefinition<'static, (&str, i64, u128), ()> =
    TableDefinition::new("transfers_by_resource-v1");
/// Search index: (org number, role, created µs, transfer id); role 0 = sender, 1 = recipient.
pub(crate) const BY_PARTY: TableDefinition<'static, (&str, u8, i64, u128), ()> =
    TableDefinition::new("transfers_by_party-v1");

/// Idempotency key (`{org}/{key}`) → (BLAKE3 of the request, transfer id).
pub(crate) const IDEMPOTENCY: TableDefinition<'static, &str, &[u8]> =
    TableDefinition::new("idempotency-v1");

/// The event outbox and log: sequence → `EventRecord`. Gap-free and in commit order, because
/// sequences are taken inside the single writer's transactions.
pub(crate) const EVENT_LOG: TableDefinition<'static, u64, &[u8]> =
    TableDefinition::new("event_log-v1");
/// Event id (16 bytes) → sequence, for `after=<id>` cursors and dedupe.
pub(crate) const EVENT_IDS: TableDefinition<'static, &[u8], u64> =
    TableDefinition::new("event_ids-v1");
/// The life-cycle schedule: (due µs, transfer id, job kind) → ().
pub(crate) const SCHEDULE: TableDefinition<'static, (i64, u128, u8), ()> =
    TableDefinition::new("schedule-v1");

/// Webhook subscriptions: id → `Subscription`.
pub(crate) const SUBSCRIPTIONS: TableDefinition<'static, u64, &[u8]> =
    TableDefinition::new("subscriptions-v1");
/// Pending deliveries: id → `Delivery`.
pub(crate) const DELIVERIES: TableDefinition<'static, u64, &[u8]> =
    TableDefinition::new("deliveries-v1");
/// The delivery scheduler: (due µs, delivery id) → ().
pub(crate) const DELIVERY_DUE: TableDefinition<'static, (i64, u64), ()> =
    TableDefinition::new("delivery_due-v1");
/// Deliveries that ran out of attempts: id → `Delivery`; replayable.
pub(crate) const DEAD_LETTERS: TableDefinition<'static, u64, &[u8]> =
    TableDefinition::new("dead_letters-v1");

/// The schema version written to [`META`].
pub(crate) const SCHEMA_VERSION: u32 = 2;
