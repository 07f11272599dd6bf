//! Broker events (contract §8): which of Altinn's eight event types a change of a transfer
//! causes, and to whom. Derived from the change itself (new status rows, new recipient rows), so
//! no code path can change a transfer and forget its event.

use serde::{Deserialize, Serialize};

use super::ids::Party;
use super::time::Timestamp;
use super::transfer::{FileTransfer, FileTransferStatus, RecipientFileTransferStatus};

/// Altinn Broker's event types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventType {
    /// Initialize succeeded (to the sender).
    FileTransferInitialized,
    /// All bytes are in; processing (to the sender).
    UploadProcessing,
    /// Ready for download (to the sender and each recipient).
    Published,
    /// Upload or processing failed (to the sender).
    UploadFailed,
    /// A recipient confirmed (to that recipient and the sender).
    DownloadConfirmed,
    /// Every recipient confirmed (to the sender).
    AllConfirmedDownloaded,
    /// The file was deleted (to the sender).
    FilePurged,
    /// Purged before this party confirmed (to each such recipient, and once to the sender).
    FileNeverConfirmedDownloaded,
}

impl EventType {
    /// Altinn's type string: `no.altinn.broker.` + the lowercased name.
    pub const fn type_string(self) -> &'static str {
        match self {
            Self::FileTransferInitialized => "no.altinn.broker.filetransferinitialized",
            Self::UploadProcessing => "no.altinn.broker.uploadprocessing",
            Self::Published => "no.altinn.broker.published",
            Self::UploadFailed => "no.altinn.broker.uploadfailed",
            Self::DownloadConfirmed => "no.altinn.broker.downloadconfirmed",
            Self::AllConfirmedDownloaded => "no.altinn.broker.allconfirmeddownloaded",
            Self::FilePurged => "no.altinn.broker.filepurged",
            Self::FileNeverConfirmedDownloaded => "no.altinn.broker.fileneverconfirmeddownloaded",
        }
    }
}

/// The role of the addressed party (`data.Role`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventRole {
    /// The sender.
    Sender,
    /// A recipient.
    Recipient,
}

impl EventRole {
    /// `Sender` or `Recipient`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Sender => "Sender",
            Self::Recipient => "Recipient",
        }
    }
}

/// One event for one party, before it gets its place in the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainEvent {
    /// Which event.
    pub kind: EventType,
    /// To whom (the CloudEvent `subject`).
    pub party: Party,
    /// As what.
    pub role: EventRole,
    /// When the change happened.
    pub at: Timestamp,
}

impl FileTransfer {
    /// The events caused by the rows appended since the transfer had `n_status` status rows and
    /// `n_recipient` recipient rows (0 and 0 for a new transfer), in order.
    pub fn events_since(&self, n_status: usize, n_recipient: usize) -> Vec<DomainEvent> {
        let mut events = Vec::new();
        let to_sender = |kind, at| DomainEvent {
            kind,
            party: self.sender.clone(),
            role: EventRole::Sender,
            at,
        };
        for entry in self.status_history.iter().skip(n_status) {
            let at = entry.at;
            match entry.status {
                FileTransferStatus::Initialized => {
                    events.push(to_sender(EventType::FileTransferInitialized, at))
                }
                FileTransferStatus::UploadProcessing => {
                    events.push(to_sender(EventType::UploadProcessing, at))
                }
                FileTransferStatus::Published => {
                    events.push(to_sender(EventType::Published, at));
                    events.extend(self.recipients.iter().map(|r| DomainEvent {
                        kind: EventType::Published,
                        party: r.clone(),
                        role: EventRole::Recipient,
                        at,
                    }));
                }
                FileTransferStatus::Failed => events.push(to_sender(EventType::UploadFailed, at)),
                FileTransferStatus::AllConfirmedDownloaded => {
                    events.push(to_sender(EventType::AllConfirmedDownloaded, at))
                }
                FileTransferStatus::Purged => {
                    events.push(to_sender(EventType::FilePurged, at));
                    // Only a file that was published can go unconfirmed.
                    if self.published_at().is_some() {
                        let unconfirmed: Vec<_> = self
                            .recipients
                            .iter()
                            .filter(|r| {
                                self.recipient_status(r)
                                    != Some(RecipientFileTransferStatus::DownloadConfirmed)
                            })
                            .collect();
                        for r in &unconfirmed {
                            events.push(DomainEvent {
                                kind: EventType::FileNeverConfirmedDownloaded,
                                party: (*r).clone(),
                                role: EventRole::Recipient,
                                at,
                            });
                        }
                        if !unconfirmed.is_empty() {
                            events.push(to_sender(EventType::FileNeverConfirmedDownloaded, at));
                        }
                    }
                }
                FileTransferStatus::UploadStarted | FileTransferStatus::Cancelled => {}
            }
        }
        // A confirmation comes before what it causes: the last one makes the transfer
        // `AllConfirmedDownloaded` at the same instant, so at equal times recipients' events go
        // first (a stable sort keeps each history's own order).
        let mut confirmations = Vec::new();
        for entry in self.recipient_history.iter().skip(n_recipient) {
            if entry.status == RecipientFileTransferStatus::DownloadConfirmed {
                confirmations.push(DomainEvent {
                    kind: EventType::DownloadConfirmed,
                    party: entry.recipient.clone(),
                    role: EventRole::Recipient,
                    at: entry.at,
                });
                confirmations.push(to_sender(EventType::DownloadConfirmed, entry.at));
            }
        }
        if confirmations.is_empty() {
            return events;
        }
        let mut all: Vec<(bool, DomainEvent)> = confirmations
            .into_iter()
            .map(|e| (false, e))
            .chain(events.into_iter().map(|e| (true, e)))
            .collect();
        all.sort_by_key(|(from_status, e)| (e.at, *from_status));
        all.into_iter().map(|(_, e)| e).collect()
    }
}
