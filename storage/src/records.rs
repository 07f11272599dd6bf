//! The records the metadata port stores besides the model's own types ([`crate::model`]):
//! blobs, uploads, scan progress, events, life-cycle jobs, webhook subscriptions and deliveries. Plain data; how a store lays them
//! out is its own business (the redb store postcard-encodes them, see `index/tables.rs`).

use serde::{Deserialize, Serialize};

use crate::digest::{Digest, Md5};
use crate::model::{EventRole, EventType, FileTransferId, Party, ResourceId, Timestamp};

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
    /// The name of its temporary in the blob store ([`crate::ports::TempBlob::name`]).
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
    pub(crate) const ALL: [Self; 4] =
        [Self::Expiry, Self::GracePurge, Self::StuckUpload, Self::ScanTimeout];

    pub(crate) fn code(self) -> u8 {
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

/// A webhook subscription (Altinn Events' fields).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    /// Id.
    pub id: u64,
    /// The organisation that owns it.
    pub consumer: Party,
    /// Where events are POSTed.
    pub end_point: String,
    /// Only events of this resource.
    pub resource_filter: ResourceId,
    /// Only events addressed to this party (the consumer itself).
    pub subject_filter: Party,
    /// Only this event type, if set.
    pub type_filter: Option<String>,
    /// Creation time.
    pub created: Timestamp,
    /// The endpoint answered the validation handshake.
    pub validated: bool,
    /// Why deliveries stopped, if they did (410 Gone, days of failure).
    pub disabled: Option<String>,
    /// Signing secrets, newest first (several during a rotation).
    pub secrets: Vec<String>,
    /// Events up to this sequence predate the subscription.
    pub from_seq: u64,
    /// Since when deliveries have been failing without a success.
    pub failing_since: Option<Timestamp>,
}

impl Subscription {
    /// Whether an event goes to this subscription.
    pub fn matches(&self, e: &EventRecord) -> bool {
        self.validated
            && self.disabled.is_none()
            && e.seq > self.from_seq
            && e.resource == self.resource_filter
            && e.party == self.subject_filter
            && self
                .type_filter
                .as_deref()
                .is_none_or(|t| t.eq_ignore_ascii_case(e.kind.type_string()))
    }
}

/// One event to deliver to one subscription.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// Id.
    pub id: u64,
    /// The subscription.
    pub subscription: u64,
    /// The event's sequence.
    pub seq: u64,
    /// Attempts so far.
    pub attempts: u32,
    /// When it is due.
    pub due: Timestamp,
    /// The last failure.
    pub last_error: Option<String>,
}
