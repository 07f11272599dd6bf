//! Downloads and their confirmation.

use storage::BlobRange;
use storage::model::*;

use super::context::*;
use crate::auth::{Caller, SCOPE_READ};
use crate::error::ApiError;

type Result<T, E = ApiError> = std::result::Result<T, E>;

pub use super::debounce::DOWNLOAD_DEBOUNCE;

/// A download about to stream.
#[derive(Debug)]
pub struct Download {
    /// File name.
    pub file_name: String,
    /// The stored content.
    pub content: StoredContent,
    /// First byte sent.
    pub offset: u64,
    /// The bytes.
    pub range: BlobRange,
}

impl App {
    /// Starts a download (recipients only) of `length` bytes (or the rest) from `offset`.
    pub async fn download(
        &self,
        caller: &Caller,
        id: FileTransferId,
        offset: u64,
        length: Option<u64>,
    ) -> Result<Download> {
        require_scope(caller, &[SCOPE_READ])?;
        let org = caller_org(caller)?;
        let transfer = self.visible_transfer(&org, id)?;
        if !transfer.recipients.contains(&org) {
            return Err(ApiError::altinn(6));
        }
        let resource = self.resource_of(&transfer)?;
        if !resource.may_receive(&org) {
            return Err(ApiError::altinn(6));
        }
        if !transfer.status().is_downloadable() {
            return Err(ApiError::altinn(7));
        }
        let content = transfer.content.ok_or_else(|| ApiError::altinn(3))?;
        if offset > content.size || (offset == content.size && content.size > 0) {
            return Err(ApiError::altinn(29));
        }
        let ranged = offset > 0 || length.is_some_and(|l| l < content.size);
        if !ranged || self.downloads.first_in_window(id, &org) {
            let at = self.now();
            let who = org.clone();
            self.storage.update_transfer(id, move |t| Ok(t.record_download(&who, at)?)).await?;
        }
        let range = self.storage.read_blob(&content.blake3, offset, length).await?;
        Ok(Download { file_name: transfer.file_name, content, offset, range })
    }

    /// Confirms the caller's download.
    pub async fn confirm_download(
        &self,
        caller: &Caller,
        id: FileTransferId,
    ) -> Result<ConfirmOutcome> {
        require_scope(caller, &[SCOPE_READ])?;
        let org = caller_org(caller)?;
        let transfer = self.visible_transfer(&org, id)?;
        if !transfer.recipients.contains(&org) {
            return Err(ApiError::altinn(6));
        }
        if !self.resource_of(&transfer)?.may_receive(&org) {
            return Err(ApiError::altinn(6));
        }
        let at = self.now();
        let (_, outcome) =
            self.storage.update_transfer(id, move |t| Ok(t.confirm_download(&org, at)?)).await?;
        Ok(outcome)
    }
}
