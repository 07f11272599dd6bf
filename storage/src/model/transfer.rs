//! A file transfer and its state machine (contract §6.1, §7).
//!
//! All changes go through methods on [`FileTransfer`]. Each one checks its preconditions first
//! and only then appends to the histories, so an `Err` always leaves the transfer unchanged.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::ids::{FileTransferId, Party, ResourceId};
use super::time::Timestamp;
use crate::digest::{Digest, Md5};

/// The status of a file transfer, with Altinn's names and ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum FileTransferStatus {
    /// Created; waiting for the upload.
    Initialized = 0,
    /// The first byte has arrived.
    UploadStarted = 1,
    /// All bytes are durable; the scan (or checksum check) is pending.
    UploadProcessing = 2,
    /// Ready for download.
    Published = 3,
    /// Cancelled (exists in Altinn's enum; nothing writes it yet).
    Cancelled = 4,
    /// Every recipient has confirmed the download.
    AllConfirmedDownloaded = 5,
    /// The file has been deleted; the metadata remains.
    Purged = 6,
    /// Upload, checksum or scan failed.
    Failed = 7,
}

impl FileTransferStatus {
    /// Every status, in id order.
    pub const ALL: [Self; 8] = [
        Self::Initialized,
        Self::UploadStarted,
        Self::UploadProcessing,
        Self::Published,
        Self::Cancelled,
        Self::AllConfirmedDownloaded,
        Self::Purged,
        Self::Failed,
    ];

    /// Altinn's numeric id.
    pub const fn id(self) -> u8 {
        self as u8
    }

    /// The status with Altinn id `id`.
    pub fn from_id(id: u8) -> Option<Self> {
        Self::ALL.get(usize::from(id)).copied()
    }

    /// Altinn's external name (`FileTransferStatusExt`).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Initialized => "Initialized",
            Self::UploadStarted => "UploadStarted",
            Self::UploadProcessing => "UploadProcessing",
            Self::Published => "Published",
            Self::Cancelled => "Cancelled",
            Self::AllConfirmedDownloaded => "AllConfirmedDownloaded",
            Self::Purged => "Purged",
            Self::Failed => "Failed",
        }
    }

    /// Altinn's default status text, shown when a status row has no detailed text.
    pub const fn default_text(self) -> &'static str {
        match self {
            Self::Initialized => "Ready for upload",
            Self::UploadStarted => "Upload started",
            Self::UploadProcessing => "Processing upload",
            Self::Published => "Ready for download",
            Self::Cancelled => "FileTransfer cancelled",
            Self::AllConfirmedDownloaded => "All downloaded",
            Self::Purged => "FileTransfer has been purged",
            Self::Failed => "Upload failed",
        }
    }

    /// The transition table of contract §7.1. This is the only place it is written down.
    pub const fn can_transition_to(self, next: Self) -> bool {
        use FileTransferStatus::*;
        matches!(
            (self, next),
            (Initialized, UploadStarted)
                | (UploadStarted, UploadProcessing | Published | Failed)
                | (UploadProcessing, Published | Failed)
                | (Published, AllConfirmedDownloaded)
                | (
                    Initialized
                        | UploadStarted
                        | UploadProcessing
                        | Published
                        | Cancelled
                        | AllConfirmedDownloaded
                        | Failed,
                    Purged
                )
        )
    }

    /// Whether the file may be downloaded in this status.
    pub const fn is_downloadable(self) -> bool {
        matches!(self, Self::Published | Self::AllConfirmedDownloaded)
    }
}

impl fmt::Display for FileTransferStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One recipient's status, with Altinn's names and ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum RecipientFileTransferStatus {
    /// Addressed; nothing downloaded yet.
    Initialized = 0,
    /// Has started a download.
    DownloadStarted = 1,
    /// Has confirmed the download.
    DownloadConfirmed = 2,
}

impl RecipientFileTransferStatus {
    /// Altinn's numeric id.
    pub const fn id(self) -> u8 {
        self as u8
    }

    /// The status with Altinn id `id`.
    pub fn from_id(id: u8) -> Option<Self> {
        [Self::Initialized, Self::DownloadStarted, Self::DownloadConfirmed]
            .get(usize::from(id))
            .copied()
    }

    /// Altinn's external name.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Initialized => "Initialized",
            Self::DownloadStarted => "DownloadStarted",
            Self::DownloadConfirmed => "DownloadConfirmed",
        }
    }

    /// Altinn's status text.
    pub const fn default_text(self) -> &'static str {
        match self {
            Self::Initialized => "Initialized",
            Self::DownloadStarted => "Recipient has attempted to download fileTransfer",
            Self::DownloadConfirmed => "Recipient has downloaded fileTransfer",
        }
    }
}

/// A row of the transfer's status history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusEntry {
    /// The status entered.
    pub status: FileTransferStatus,
    /// A detailed text (e.g. "Checksum mismatch"); `None` = the status's default text.
    pub text: Option<String>,
    /// When.
    pub at: Timestamp,
}

impl StatusEntry {
    /// The text to show: the detailed one, else the default.
    pub fn display_text(&self) -> &str {
        self.text.as_deref().unwrap_or(self.status.default_text())
    }
}

/// A row of the recipients' status history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecipientStatusEntry {
    /// Which recipient.
    pub recipient: Party,
    /// The status entered.
    pub status: RecipientFileTransferStatus,
    /// When.
    pub at: Timestamp,
}

/// The stored file of a transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredContent {
    /// Bytes.
    pub size: u64,
    /// BLAKE3: the blob's address.
    pub blake3: Digest,
    /// MD5: Altinn's `checksum`. Computed beside the upload and recorded when ready
    /// ([`FileTransfer::record_md5`]), so it may be unknown for a moment after the upload.
    pub md5: Option<Md5>,
}

/// What initialize was asked for, after validation of its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewFileTransfer {
    /// The resource.
    pub resource_id: ResourceId,
    /// File name, 1–255 characters.
    pub file_name: String,
    /// The sender's free-text reference.
    pub senders_reference: String,
    /// The sender.
    pub sender: Party,
    /// Recipients, at least one, without duplicates.
    pub recipients: Vec<Party>,
    /// Metadata.
    pub property_list: BTreeMap<String, String>,
    /// An MD5 the upload must match.
    pub declared_checksum: Option<Md5>,
    /// A BLAKE3 the upload must match (Ferry extension).
    pub declared_blake3: Option<Digest>,
    /// `!disableVirusScan`.
    pub use_virus_scan: bool,
}

/// A scan's result as it matters to a transfer. A scanner that is down is not an outcome: the
/// transfer waits in `UploadProcessing` until the scan can run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanOutcome {
    /// No threat found in all of the bytes.
    Clean,
    /// No threat found, with a word on how the file was scanned (a large file: its segments,
    /// its archive members), added to the `Published` status text.
    CleanNoted {
        /// E.g. "Scanned as 3 overlapping segments; not an archive Ferry opens member by member."
        note: String,
    },
    /// A signature matched.
    Infected {
        /// The signature name as the scanner reported it.
        signature: String,
    },
    /// The file cannot be scanned (e.g. larger than the scanner can handle).
    Unscannable {
        /// Why.
        reason: String,
    },
}

/// The result of [`FileTransfer::complete_upload`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadOutcome {
    /// Waiting for the scan.
    Processing,
    /// Published at once (scanning disabled on an approved resource).
    Published,
    /// The declared checksum did not match: the transfer failed (Altinn error 9).
    ChecksumMismatch,
}

/// The result of [`FileTransfer::confirm_download`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfirmOutcome {
    /// This recipient had already confirmed: nothing changed.
    AlreadyConfirmed,
    /// Confirmed; other recipients have yet to confirm.
    Confirmed,
    /// Confirmed, and it was the last one: the transfer is now `AllConfirmedDownloaded`.
    AllConfirmed,
}

/// A change the state machine refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransferError {
    /// The state machine has no edge `from → to`.
    #[error("a file transfer cannot go from {from} to {to}")]
    IllegalTransition {
        /// Current status.
        from: FileTransferStatus,
        /// Requested status.
        to: FileTransferStatus,
    },
    /// Altinn error 4: an upload is only possible while `Initialized` or `UploadStarted`.
    #[error(
        "A file transfer has already been, or attempted to be, created. Create a new file transfer resource to try again."
    )]
    AlreadyUploaded,
    /// Altinn error 7.
    #[error(
        "The requested file transfer's file is not ready for download. See file transfer status."
    )]
    NotAvailable,
    /// Altinn error 10.
    #[error(
        "A file transfer can only be confirmed to be downloaded when it is published. See file transfer status."
    )]
    NotPublished,
    /// Altinn error 19.
    #[error("Cannot confirm before the files have been downloaded")]
    ConfirmBeforeDownload,
    /// The party is not a recipient of this transfer.
    #[error("{0} is not a recipient of this file transfer")]
    NotARecipient(Party),
    /// Altinn error 3.
    #[error("No file uploaded yet")]
    NoFileUploaded,
    /// An MD5 was recorded twice with different values: the stored bytes changed.
    #[error("the file's MD5 was recorded as {recorded} and now computed as {computed}")]
    Md5Conflict {
        /// What was recorded first.
        recorded: Md5,
        /// What was computed now.
        computed: Md5,
    },
}

impl TransferError {
    /// Altinn's error number, where Altinn has one.
    pub const fn altinn_code(&self) -> Option<u16> {
        match self {
            Self::AlreadyUploaded => Some(4),
            Self::NotAvailable => Some(7),
            Self::NotPublished => Some(10),
            Self::ConfirmBeforeDownload => Some(19),
            Self::NoFileUploaded => Some(3),
            Self::IllegalTransition { .. } | Self::NotARecipient(_) | Self::Md5Conflict { .. } => {
                None
            }
        }
    }
}

/// A file transfer: what was sent, to whom, and everything that happened to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileTransfer {
    /// Id.
    pub id: FileTransferId,
    /// Resource.
    pub resource_id: ResourceId,
    /// File name.
    pub file_name: String,
    /// Sender's reference.
    pub senders_reference: String,
    /// Sender (canonical form).
    pub sender: Party,
    /// Recipients (canonical form), in the order given.
    pub recipients: Vec<Party>,
    /// Metadata.
    pub property_list: BTreeMap<String, String>,
    /// The MD5 the sender declared, if any.
    pub declared_checksum: Option<Md5>,
    /// The BLAKE3 the sender declared, if any (Ferry extension).
    #[serde(default)]
    pub declared_blake3: Option<Digest>,
    /// Whether the file must be scanned before publication.
    pub use_virus_scan: bool,
    /// Creation time.
    pub created: Timestamp,
    /// When the transfer expires and is purged.
    pub expiration_time: Timestamp,
    /// The stored file, once the upload completed.
    pub content: Option<StoredContent>,
    /// Whether a scan found the file clean (publication may still wait for the checksum).
    #[serde(default)]
    pub scan_passed: bool,
    /// While `UploadProcessing`: what the processing waits for (e.g. the scanner being down).
    /// Shown as the status text instead of the default.
    #[serde(default)]
    pub processing_note: Option<String>,
    /// Every status the transfer entered, oldest first; never empty. (The index keeps the
    /// histories in tables of their own, so they are not part of the serialised record.)
    #[serde(skip)]
    pub status_history: Vec<StatusEntry>,
    /// Every recipient status change, oldest first.
    #[serde(skip)]
    pub recipient_history: Vec<RecipientStatusEntry>,
}

impl FileTransfer {
    /// A new transfer in `Initialized`, each recipient `Initialized`.
    pub fn initialize(
        id: FileTransferId,
        new: NewFileTransfer,
        at: Timestamp,
        time_to_live: std::time::Duration,
    ) -> Self {
        let recipient_history = new
            .recipients
            .iter()
            .map(|r| RecipientStatusEntry {
                recipient: r.clone(),
                status: RecipientFileTransferStatus::Initialized,
                at,
            })
            .collect();
        Self {
            id,
            resource_id: new.resource_id,
            file_name: new.file_name,
            senders_reference: new.senders_reference,
            sender: new.sender,
            recipients: new.recipients,
            property_list: new.property_list,
            declared_checksum: new.declared_checksum,
            declared_blake3: new.declared_blake3,
            use_virus_scan: new.use_virus_scan,
            created: at,
            expiration_time: at.saturating_add(time_to_live),
            content: None,
            scan_passed: false,
            processing_note: None,
            status_history: vec![StatusEntry {
                status: FileTransferStatus::Initialized,
                text: None,
                at,
            }],
            recipient_history,
        }
    }

    /// The current status.
    pub fn status(&self) -> FileTransferStatus {
        self.latest_status().status
    }

    /// The current status row.
    pub fn latest_status(&self) -> &StatusEntry {
        self.status_history.last().expect("a transfer's status history is never empty")
    }

    /// When the transfer was published, if it was.
    pub fn published_at(&self) -> Option<Timestamp> {
        self.status_history.iter().find(|e| e.status == FileTransferStatus::Published).map(|e| e.at)
    }

    /// A recipient's current status as Altinn's overview shows it: the highest ever reached.
    pub fn recipient_status(&self, recipient: &Party) -> Option<RecipientFileTransferStatus> {
        self.recipient_history.iter().filter(|e| &e.recipient == recipient).map(|e| e.status).max()
    }

    /// Whether the transfer holds a reference on its blob: it has content and is neither failed
    /// nor purged. The index derives blob reference counts from this, so they can never disagree
    /// with the transfers.
    pub fn holds_blob(&self) -> bool {
        self.content.is_some()
            && !matches!(
                self.status(),
                FileTransferStatus::Failed
                    | FileTransferStatus::Purged
                    | FileTransferStatus::Cancelled
            )
    }

    fn push_status(
        &mut self,
        to: FileTransferStatus,
        text: Option<String>,
        at: Timestamp,
    ) -> Result<(), TransferError> {
        let from = self.status();
        if !from.can_transition_to(to) {
            return Err(TransferError::IllegalTransition { from, to });
        }
        self.status_history.push(StatusEntry { status: to, text, at });
        Ok(())
    }

    /// The first byte of an upload arrived: `Initialized → UploadStarted`. Resuming an upload
    /// already in `UploadStarted` changes nothing. Any later status is Altinn error 4.
    pub fn start_upload(&mut self, at: Timestamp) -> Result<(), TransferError> {
        match self.status() {
            FileTransferStatus::Initialized => {
                self.push_status(FileTransferStatus::UploadStarted, None, at)
            }
            FileTransferStatus::UploadStarted => Ok(()),
            _ => Err(TransferError::AlreadyUploaded),
        }
    }

    /// Whether publication still waits for the MD5 to check the declared checksum against.
    pub fn checksum_pending(&self) -> bool {
        self.declared_checksum.is_some() && self.content.is_none_or(|c| c.md5.is_none())
    }

    fn checksum_mismatch(&self) -> bool {
        let md5 = matches!(
            (self.declared_checksum, self.content.and_then(|c| c.md5)),
            (Some(declared), Some(actual)) if declared != actual
        );
        let blake3 = matches!(
            (self.declared_blake3, self.content.map(|c| c.blake3)),
            (Some(declared), Some(actual)) if declared != actual
        );
        md5 || blake3
    }

    /// All bytes are durable. Moves to `UploadProcessing` (scan or checksum pending),
    /// `Published` (neither) or `Failed` (the MD5 is known and differs from the declared one).
    pub fn complete_upload(
        &mut self,
        content: StoredContent,
        at: Timestamp,
    ) -> Result<UploadOutcome, TransferError> {
        if self.status() != FileTransferStatus::UploadStarted {
            return Err(TransferError::IllegalTransition {
                from: self.status(),
                to: FileTransferStatus::UploadProcessing,
            });
        }
        let previous = self.content.replace(content);
        let outcome = if self.checksum_mismatch() {
            self.push_status(FileTransferStatus::Failed, Some("Checksum mismatch".into()), at)
                .map(|()| UploadOutcome::ChecksumMismatch)
        } else if self.use_virus_scan || self.checksum_pending() {
            self.push_status(FileTransferStatus::UploadProcessing, None, at)
                .map(|()| UploadOutcome::Processing)
        } else {
            self.push_status(FileTransferStatus::Published, None, at)
                .map(|()| UploadOutcome::Published)
        };
        if outcome.is_err() {
            self.content = previous;
        }
        outcome
    }

    /// The file's MD5 is known. Fails the transfer on a mismatch with the declared checksum;
    /// publishes it if it was only waiting for this (scan passed or not required).
    pub fn record_md5(&mut self, md5: Md5, at: Timestamp) -> Result<(), TransferError> {
        let Some(content) = self.content else {
            return Err(TransferError::NoFileUploaded);
        };
        match content.md5 {
            Some(recorded) if recorded == md5 => return Ok(()),
            Some(recorded) => {
                return Err(TransferError::Md5Conflict { recorded, computed: md5 });
            }
            None => {}
        }
        let before = self.content;
        self.content = Some(StoredContent { md5: Some(md5), ..content });
        let result = if self.status() != FileTransferStatus::UploadProcessing {
            Ok(())
        } else if self.checksum_mismatch() {
            self.push_status(FileTransferStatus::Failed, Some("Checksum mismatch".into()), at)
        } else if !self.use_virus_scan || self.scan_passed {
            self.push_status(FileTransferStatus::Published, None, at)
        } else {
            Ok(())
        };
        if result.is_err() {
            self.content = before;
        }
        result
    }

    /// The scan finished: a clean file is `Published` (or waits in `UploadProcessing` for its
    /// checksum); anything else is `Failed` with a text that says why.
    pub fn record_scan(
        &mut self,
        outcome: &ScanOutcome,
        at: Timestamp,
    ) -> Result<(), TransferError> {
        if self.status() != FileTransferStatus::UploadProcessing || !self.use_virus_scan {
            return Err(TransferError::IllegalTransition {
                from: self.status(),
                to: match outcome {
                    ScanOutcome::Clean | ScanOutcome::CleanNoted { .. } => {
                        FileTransferStatus::Published
                    }
                    _ => FileTransferStatus::Failed,
                },
            });
        }
        match outcome {
            ScanOutcome::Clean | ScanOutcome::CleanNoted { .. } if self.checksum_pending() => {
                self.scan_passed = true;
                Ok(())
            }
            ScanOutcome::Clean => {
                self.push_status(FileTransferStatus::Published, None, at)?;
                self.scan_passed = true;
                Ok(())
            }
            ScanOutcome::CleanNoted { note } => {
                let text = format!("{}. {note}", FileTransferStatus::Published.default_text());
                self.push_status(FileTransferStatus::Published, Some(text), at)?;
                self.scan_passed = true;
                Ok(())
            }
            ScanOutcome::Infected { signature } => self.push_status(
                FileTransferStatus::Failed,
                Some(format!("Malware scan failed: Malicious. Extra details: {signature}")),
                at,
            ),
            ScanOutcome::Unscannable { reason } => self.push_status(
                FileTransferStatus::Failed,
                Some(format!("Malware scan failed: NotScanned. Extra details: {reason}")),
                at,
            ),
        }
    }

    /// The status text to show: a processing note while `UploadProcessing`, else the latest
    /// row's text.
    pub fn status_text(&self) -> &str {
        match (&self.processing_note, self.status()) {
            (Some(note), FileTransferStatus::UploadProcessing) => note,
            _ => self.latest_status().display_text(),
        }
    }

    /// Records what processing waits for; only while `UploadProcessing`. `None` clears it.
    pub fn note_processing(&mut self, note: Option<String>) -> Result<(), TransferError> {
        if self.status() != FileTransferStatus::UploadProcessing {
            return Err(TransferError::IllegalTransition {
                from: self.status(),
                to: FileTransferStatus::UploadProcessing,
            });
        }
        self.processing_note = note;
        Ok(())
    }

    /// The upload or its processing failed for another reason.
    pub fn fail(&mut self, text: impl Into<String>, at: Timestamp) -> Result<(), TransferError> {
        self.push_status(FileTransferStatus::Failed, Some(text.into()), at)
    }

    /// The file is deleted (expiry or grace purge). Purging twice is an error the caller can
    /// treat as a no-op.
    pub fn purge(&mut self, at: Timestamp) -> Result<(), TransferError> {
        self.push_status(FileTransferStatus::Purged, None, at)
    }

    fn check_recipient(&self, recipient: &Party) -> Result<(), TransferError> {
        if self.recipients.contains(recipient) {
            Ok(())
        } else {
            Err(TransferError::NotARecipient(recipient.clone()))
        }
    }

    /// A recipient started a download (`DownloadStarted`; repeated downloads add rows).
    pub fn record_download(
        &mut self,
        recipient: &Party,
        at: Timestamp,
    ) -> Result<(), TransferError> {
        self.check_recipient(recipient)?;
        if !self.status().is_downloadable() {
            return Err(TransferError::NotAvailable);
        }
        self.recipient_history.push(RecipientStatusEntry {
            recipient: recipient.clone(),
            status: RecipientFileTransferStatus::DownloadStarted,
            at,
        });
        Ok(())
    }

    /// A recipient confirms its download. Confirming again is a successful no-op, also after
    /// `AllConfirmedDownloaded` (Altinn answers 400 there; Ferry fixes that quirk).
    pub fn confirm_download(
        &mut self,
        recipient: &Party,
        at: Timestamp,
    ) -> Result<ConfirmOutcome, TransferError> {
        use RecipientFileTransferStatus::*;
        self.check_recipient(recipient)?;
        let current = self.recipient_status(recipient);
        if current == Some(DownloadConfirmed) && self.status().is_downloadable() {
            return Ok(ConfirmOutcome::AlreadyConfirmed);
        }
        if self.status() != FileTransferStatus::Published {
            return Err(TransferError::NotPublished);
        }
        if current != Some(DownloadStarted) {
            return Err(TransferError::ConfirmBeforeDownload);
        }
        let all_others_confirmed = self
            .recipients
            .iter()
            .filter(|r| *r != recipient)
            .all(|r| self.recipient_status(r) == Some(DownloadConfirmed));
        if all_others_confirmed {
            self.push_status(FileTransferStatus::AllConfirmedDownloaded, None, at)?;
        }
        self.recipient_history.push(RecipientStatusEntry {
            recipient: recipient.clone(),
            status: DownloadConfirmed,
            at,
        });
        Ok(if all_others_confirmed {
            ConfirmOutcome::AllConfirmed
        } else {
            ConfirmOutcome::Confirmed
        })
    }
}
