//! Identifiers: file transfers, resources, parties and uploads.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Why an identifier was rejected. The messages are Altinn's where Altinn has one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// Not a UUID.
    #[error("'{0}' is not a valid file transfer id: expected a UUID")]
    FileTransferId(String),
    /// Not `[urn:altinn:resource:]{1–255 characters without ':'}`.
    #[error("Invalid Resource identifier format")]
    ResourceId,
    /// Not `0192:{9 digits}` or `urn:altinn:organization:identifier-no:{9 digits}`.
    #[error(
        "Organization numbers should be on the form countrycode:organizationnumber (e.g. 0192:910753614) or urn:altinn:organization:identifier-no:organizationnumber"
    )]
    Party(String),
}

/// A file transfer's id: a UUID (v4 when Ferry makes it).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FileTransferId(Uuid);

impl FileTransferId {
    /// A fresh random id.
    pub fn new_random() -> Self {
        Self(Uuid::new_v4())
    }

    /// Wraps an existing UUID.
    pub const fn from_uuid(uuid: Uuid) -> Self {
        Self(uuid)
    }

    /// The UUID.
    pub const fn as_uuid(&self) -> &Uuid {
        &self.0
    }

    /// The id as a `u128`, the key form used by the index (big-endian order = UUID order).
    pub const fn as_u128(&self) -> u128 {
        self.0.as_u128()
    }

    /// The inverse of [`FileTransferId::as_u128`].
    pub const fn from_u128(value: u128) -> Self {
        Self(Uuid::from_u128(value))
    }
}

impl fmt::Display for FileTransferId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Standard 36-character lowercase hyphenated form, as Altinn prints GUIDs.
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl fmt::Debug for FileTransferId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FileTransferId({self})")
    }
}

impl FromStr for FileTransferId {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self).map_err(|_| IdError::FileTransferId(s.to_owned()))
    }
}

/// An Altinn Resource Registry id, e.g. `altinn-broker-test-resource-1`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ResourceId(String);

impl ResourceId {
    /// The prefix that initialize accepts and strips.
    pub const URN_PREFIX: &'static str = "urn:altinn:resource:";
    /// Longest accepted id.
    pub const MAX_LEN: usize = 255;

    /// Parses the form initialize accepts: an optional `urn:altinn:resource:` prefix (stripped),
    /// then 1–255 characters without `:`.
    pub fn parse(input: &str) -> Result<Self, IdError> {
        Self::parse_bare(input.strip_prefix(Self::URN_PREFIX).unwrap_or(input))
    }

    /// Parses a bare id, as the search and resource endpoints take it (no prefix stripping).
    pub fn parse_bare(input: &str) -> Result<Self, IdError> {
        let n_chars = input.chars().count();
        if n_chars == 0 || n_chars > Self::MAX_LEN || input.contains(':') {
            return Err(IdError::ResourceId);
        }
        Ok(Self(input.to_owned()))
    }

    /// The bare id.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The `urn:altinn:resource:{id}` form used in events.
    pub fn to_urn(&self) -> String {
        format!("{}{}", Self::URN_PREFIX, self.0)
    }
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ResourceId({})", self.0)
    }
}

/// A party: a Norwegian organisation, identified by its 9-digit organisation number.
///
/// Accepted forms are `0192:{9 digits}` (ISO 6523 ICD 0192) and
/// `urn:altinn:organization:identifier-no:{9 digits}`; both normalise to the canonical
/// `0192:{9 digits}` that [`Party`] displays. Unlike Altinn, Ferry normalises the sender too, so
/// search finds a transfer by its sender whichever form the sender used (contract §2.2 quirk).
/// Other ICDs are rejected: Altinn's regex lets any four digits through and then treats the number
/// as Norwegian anyway, which would silently address the wrong organisation.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Party(String);

impl Party {
    /// The ICD prefix of the canonical form.
    pub const ICD_PREFIX: &'static str = "0192:";
    /// The URN prefix used in events and accepted on input.
    pub const URN_PREFIX: &'static str = "urn:altinn:organization:identifier-no:";

    /// Parses `0192:{9 digits}` or `urn:altinn:organization:identifier-no:{9 digits}`.
    pub fn parse(input: &str) -> Result<Self, IdError> {
        let digits = input
            .strip_prefix(Self::ICD_PREFIX)
            .or_else(|| input.strip_prefix(Self::URN_PREFIX))
            .ok_or_else(|| IdError::Party(input.to_owned()))?;
        Self::from_org_number(digits).map_err(|_| IdError::Party(input.to_owned()))
    }

    /// Parses a bare 9-digit organisation number (as in `requiredParty` and
    /// `urn:altinn:orgNumber` claims), or either prefixed form.
    pub fn parse_lenient(input: &str) -> Result<Self, IdError> {
        Self::from_org_number(input).or_else(|_| Self::parse(input))
    }

    fn from_org_number(digits: &str) -> Result<Self, IdError> {
        if digits.len() == 9 && digits.bytes().all(|b| b.is_ascii_digit()) {
            Ok(Self(digits.to_owned()))
        } else {
            Err(IdError::Party(digits.to_owned()))
        }
    }

    /// The 9-digit organisation number, without prefix.
    pub fn org_number(&self) -> &str {
        &self.0
    }

    /// The `urn:altinn:organization:identifier-no:{orgnr}` form used as an event subject.
    pub fn to_urn(&self) -> String {
        format!("{}{}", Self::URN_PREFIX, self.0)
    }
}

impl fmt::Display for Party {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", Self::ICD_PREFIX, self.0)
    }
}

impl fmt::Debug for Party {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Party({self})")
    }
}

/// The key of an upload in progress: one per file transfer, or one per TUS partial upload.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct UploadId(String);

impl UploadId {
    /// The single upload of a transfer.
    pub fn for_transfer(id: FileTransferId) -> Self {
        Self(id.to_string())
    }

    /// A partial upload (TUS concatenation) of a transfer.
    pub fn partial(id: FileTransferId, partial: &str) -> Self {
        Self(format!("{id}/{partial}"))
    }

    /// The key as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Rebuilds a key read back from the index.
    pub fn from_stored(key: &str) -> Self {
        Self(key.to_owned())
    }
}

impl fmt::Debug for UploadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UploadId({})", self.0)
    }
}

impl fmt::Display for UploadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parties_normalise_to_the_icd_form() {
        let a = Party::parse("0192:910753614").unwrap();
        let b = Party::parse("urn:altinn:organization:identifier-no:910753614").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "0192:910753614");
        assert_eq!(a.to_urn(), "urn:altinn:organization:identifier-no:910753614");
        assert_eq!(Party::parse_lenient("910753614").unwrap(), a);
    }

    #[test]
    fn malformed_parties_are_rejected() {
        for bad in [
            "",
            "910753614",
            "0192:91075361",
            "0192:9107536140",
            "0193:910753614",
            "0192:91075361x",
            "urn:altinn:organization:identifier-no:",
            "urn:altinn:person:identifier-no:910753614",
            " 0192:910753614",
        ] {
            assert!(Party::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn resource_ids_strip_the_urn_only_where_asked() {
        assert_eq!(ResourceId::parse("urn:altinn:resource:abc").unwrap().as_str(), "abc");
        assert_eq!(ResourceId::parse("abc").unwrap().as_str(), "abc");
        assert!(ResourceId::parse_bare("urn:altinn:resource:abc").is_err());
        assert!(ResourceId::parse("").is_err());
        assert!(ResourceId::parse("urn:altinn:resource:").is_err());
        assert!(ResourceId::parse(&"x".repeat(255)).is_ok());
        assert!(ResourceId::parse(&"x".repeat(256)).is_err());
    }

    #[test]
    fn transfer_ids_round_trip() {
        let id = FileTransferId::new_random();
        assert_eq!(id.to_string().parse::<FileTransferId>().unwrap(), id);
        assert_eq!(FileTransferId::from_u128(id.as_u128()), id);
        assert!("not-a-uuid".parse::<FileTransferId>().is_err());
    }
}
