//! The domain model: pure types and rules, no I/O, no clock, no database.
//!
//! - [`ids`]: file transfer ids, resource ids and parties (organisations), with Altinn's input
//!   forms and Ferry's canonical forms.
//! - [`time`]: [`Timestamp`] and the ISO-8601 durations resource configuration is written in.
//! - [`resource`]: service owners and resource configuration, with Altinn's defaults, limits and
//!   validation errors (11–18, 22, 23).
//! - [`transfer`]: a file transfer, its status history and each recipient's history. Every
//!   change goes through a method that enforces the state machine of the Altinn contract (§7):
//!   an illegal transition is an error and leaves the transfer untouched.
//!
//! Architecture invariant: nothing here reads a clock or a file. Callers pass the time in, so the
//! rules are testable and the life-cycle jobs can run on an injected clock.

pub mod event;
pub mod ids;
pub mod resource;
pub mod time;
pub mod transfer;

pub use event::{DomainEvent, EventRole, EventType};
pub use ids::{FileTransferId, IdError, Party, ResourceId, UploadId};
pub use resource::{AccessRules, ResourceConfig, ResourceError, ResourceUpdate, ServiceOwner};
pub use time::{Timestamp, parse_iso8601_duration};
pub use transfer::{
    ConfirmOutcome, FileTransfer, FileTransferStatus, NewFileTransfer, RecipientFileTransferStatus,
    RecipientStatusEntry, ScanOutcome, StatusEntry, StoredContent, TransferError, UploadOutcome,
};

#[cfg(test)]
mod proptests;
