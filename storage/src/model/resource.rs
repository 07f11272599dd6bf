//! Service owners and the broker configuration of a resource (contract §6.2, §4.10).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ids::{Party, ResourceId};
use super::time::{Timestamp, parse_iso8601_duration};

/// An organisation registered to own resources.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceOwner {
    /// The owner's organisation.
    pub id: Party,
    /// Display name.
    pub name: String,
    /// When it was registered.
    pub created: Timestamp,
}

/// A rejected resource configuration. `code()` is Altinn's error number and `Display` its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResourceError {
    /// Error 11.
    #[error("Max file transfer size cannot be negative")]
    MaxUploadSizeCannotBeNegative,
    /// Error 12.
    #[error("Max file transfer size cannot be zero")]
    MaxUploadSizeCannotBeZero,
    /// Error 13.
    #[error(
        "Max file transfer size cannot be set higher than 50GB in production unless the resource has been pre-approved for disabled virus scan. Contact us @ Slack."
    )]
    MaxUploadSizeForVirusScan,
    /// Error 14.
    #[error(
        "Invalid file transfer time to live format. Should follow ISO8601 standard for duration. Example: 'P30D' for 30 days."
    )]
    InvalidTimeToLiveFormat,
    /// Error 15.
    #[error("Time to live cannot exceed 365 days")]
    TimeToLiveCannotExceed365Days,
    /// Error 17.
    #[error(
        "Invalid grace period format. Should follow ISO8601 standard for duration. Example: 'PT2H' for 2 hours."
    )]
    InvalidGracePeriodFormat,
    /// Error 18.
    #[error("Grace period cannot exceed 24 hours")]
    GracePeriodCannotExceed24Hours,
    /// Error 22.
    #[error(
        "Max file transfer size cannot be set higher than 100GB in production because it has not yet been tested for it. Contact us @ Slack if you need it."
    )]
    MaxUploadSizeOverGlobal,
    /// Error 23.
    #[error(
        "In order to use manifest file shim you need to provide external service code and edition code"
    )]
    NeedServiceCodeForManifestShim,
}

impl ResourceError {
    /// Altinn's error number (`BRO-000NN`).
    pub const fn code(&self) -> u16 {
        match self {
            Self::MaxUploadSizeCannotBeNegative => 11,
            Self::MaxUploadSizeCannotBeZero => 12,
            Self::MaxUploadSizeForVirusScan => 13,
            Self::InvalidTimeToLiveFormat => 14,
            Self::TimeToLiveCannotExceed365Days => 15,
            Self::InvalidGracePeriodFormat => 17,
            Self::GracePeriodCannotExceed24Hours => 18,
            Self::MaxUploadSizeOverGlobal => 22,
            Self::NeedServiceCodeForManifestShim => 23,
        }
    }
}

/// The broker configuration of one resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceConfig {
    /// The resource.
    pub id: ResourceId,
    /// The organisation that owns it (Altinn's `organization_number` and `service_owner_id`).
    pub service_owner: Party,
    /// Largest file a transfer may carry; `None` = only the global limits apply.
    pub max_file_transfer_size: Option<u64>,
    /// Time from initialize to expiry; `None` = [`ResourceConfig::DEFAULT_TIME_TO_LIVE`].
    pub file_transfer_time_to_live: Option<Duration>,
    /// Purge once every recipient has confirmed (after the grace period).
    pub purge_file_transfer_after_all_recipients_confirmed: bool,
    /// Delay between the last confirmation and the purge; `None` = [`ResourceConfig::DEFAULT_GRACE_PERIOD`].
    pub purge_file_transfer_grace_period: Option<Duration>,
    /// Altinn 2 manifest shim (kept for compatibility of the configuration API).
    pub use_manifest_file_shim: Option<bool>,
    /// Altinn 2 service code.
    pub external_service_code_legacy: Option<String>,
    /// Altinn 2 service edition code.
    pub external_service_edition_code_legacy: Option<i32>,
    /// Whether senders may disable virus scanning. Set by operators only, never through the API.
    pub approved_for_disabled_virus_scan: bool,
    /// A party every transfer must involve (see [`ResourceConfig::check_required_party`]).
    pub required_party: Option<Party>,
    /// When the configuration was created.
    pub created: Timestamp,
    /// Who may send and receive (Ferry's replacement for Altinn's Resource Registry and PDP).
    #[serde(default)]
    pub access: AccessRules,
}

/// Which parties may send and which may receive files on a resource. The service owner may
/// always do both; an empty list means no one else.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessRules {
    /// Parties that may send.
    pub senders: Vec<Party>,
    /// Parties that may receive.
    pub recipients: Vec<Party>,
}

/// A change to a resource configuration, as the API receives it: only present fields change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourceUpdate {
    /// Bytes; validated against errors 11, 12, 13 and 22.
    pub max_file_transfer_size: Option<i64>,
    /// ISO-8601 duration; validated against errors 14 and 15.
    pub file_transfer_time_to_live: Option<String>,
    /// Purge after all confirmed.
    pub purge_file_transfer_after_all_recipients_confirmed: Option<bool>,
    /// ISO-8601 duration; validated against errors 17 and 18.
    pub purge_file_transfer_grace_period: Option<String>,
    /// Manifest shim; needs both legacy codes (error 23).
    pub use_manifest_file_shim: Option<bool>,
    /// Altinn 2 service code.
    pub external_service_code_legacy: Option<String>,
    /// Altinn 2 service edition code.
    pub external_service_edition_code_legacy: Option<i32>,
    /// Required party.
    pub required_party: Option<Party>,
    /// Replaces the access rules when present.
    pub access: Option<AccessRules>,
}

impl ResourceConfig {
    /// Time to live when the resource sets none.
    pub const DEFAULT_TIME_TO_LIVE: Duration = Duration::from_secs(30 * 86_400);
    /// Longest time to live.
    pub const MAX_TIME_TO_LIVE: Duration = Duration::from_secs(365 * 86_400);
    /// Grace period when the resource sets none.
    pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(2 * 3600);
    /// Longest grace period.
    pub const MAX_GRACE_PERIOD: Duration = Duration::from_secs(24 * 3600);
    /// Largest file that may be virus scanned (50 GB, decimal, as Altinn).
    pub const MAX_SIZE_WITH_VIRUS_SCAN: u64 = 50_000_000_000;
    /// Largest file at all: 32 MiB × 50,000 blocks, Altinn's global limit.
    pub const GLOBAL_MAX_SIZE: u64 = 32 * 1024 * 1024 * 50_000;

    /// A resource with every setting at its default.
    pub fn new(id: ResourceId, service_owner: Party, created: Timestamp) -> Self {
        Self {
            id,
            service_owner,
            max_file_transfer_size: None,
            file_transfer_time_to_live: None,
            purge_file_transfer_after_all_recipients_confirmed: true,
            purge_file_transfer_grace_period: None,
            use_manifest_file_shim: None,
            external_service_code_legacy: None,
            external_service_edition_code_legacy: None,
            approved_for_disabled_virus_scan: false,
            required_party: None,
            created,
            access: AccessRules::default(),
        }
    }

    /// The effective time to live.
    pub fn time_to_live(&self) -> Duration {
        self.file_transfer_time_to_live.unwrap_or(Self::DEFAULT_TIME_TO_LIVE)
    }

    /// The effective grace period.
    pub fn grace_period(&self) -> Duration {
        self.purge_file_transfer_grace_period.unwrap_or(Self::DEFAULT_GRACE_PERIOD)
    }

    /// The largest upload a transfer on this resource may carry.
    pub fn max_upload_size(&self, use_virus_scan: bool) -> u64 {
        let mut limit = self.max_file_transfer_size.unwrap_or(Self::GLOBAL_MAX_SIZE);
        if use_virus_scan {
            limit = limit.min(Self::MAX_SIZE_WITH_VIRUS_SCAN);
        }
        limit.min(Self::GLOBAL_MAX_SIZE)
    }

    /// Applies `update`. Every field is validated before anything changes, so a rejected update
    /// leaves the configuration exactly as it was.
    pub fn apply(&mut self, update: ResourceUpdate) -> Result<(), ResourceError> {
        let max_size = match update.max_file_transfer_size {
            None => self.max_file_transfer_size,
            Some(n) if n < 0 => return Err(ResourceError::MaxUploadSizeCannotBeNegative),
            Some(0) => return Err(ResourceError::MaxUploadSizeCannotBeZero),
            Some(n) => {
                let n = n.unsigned_abs();
                if n > Self::GLOBAL_MAX_SIZE {
                    return Err(ResourceError::MaxUploadSizeOverGlobal);
                }
                if n > Self::MAX_SIZE_WITH_VIRUS_SCAN && !self.approved_for_disabled_virus_scan {
                    return Err(ResourceError::MaxUploadSizeForVirusScan);
                }
                Some(n)
            }
        };
        let ttl = match update.file_transfer_time_to_live.as_deref() {
            None => self.file_transfer_time_to_live,
            Some(text) => {
                let ttl = parse_iso8601_duration(text)
                    .filter(|d| !d.is_zero())
                    .ok_or(ResourceError::InvalidTimeToLiveFormat)?;
                if ttl > Self::MAX_TIME_TO_LIVE {
                    return Err(ResourceError::TimeToLiveCannotExceed365Days);
                }
                Some(ttl)
            }
        };
        let grace = match update.purge_file_transfer_grace_period.as_deref() {
            None => self.purge_file_transfer_grace_period,
            Some(text) => {
                let grace =
                    parse_iso8601_duration(text).ok_or(ResourceError::InvalidGracePeriodFormat)?;
                if grace > Self::MAX_GRACE_PERIOD {
                    return Err(ResourceError::GracePeriodCannotExceed24Hours);
                }
                Some(grace)
            }
        };
        let service_code = update
            .external_service_code_legacy
            .or_else(|| self.external_service_code_legacy.clone());
        let edition_code = update
            .external_service_edition_code_legacy
            .or(self.external_service_edition_code_legacy);
        let shim = update.use_manifest_file_shim.or(self.use_manifest_file_shim);
        if shim == Some(true)
            && (service_code.as_deref().is_none_or(str::is_empty)
                || edition_code.is_none_or(|c| c == 0))
        {
            return Err(ResourceError::NeedServiceCodeForManifestShim);
        }

        self.max_file_transfer_size = max_size;
        self.file_transfer_time_to_live = ttl;
        self.purge_file_transfer_grace_period = grace;
        self.use_manifest_file_shim = shim;
        self.external_service_code_legacy = service_code;
        self.external_service_edition_code_legacy = edition_code;
        if let Some(purge) = update.purge_file_transfer_after_all_recipients_confirmed {
            self.purge_file_transfer_after_all_recipients_confirmed = purge;
        }
        if let Some(party) = update.required_party {
            self.required_party = Some(party);
        }
        if let Some(access) = update.access {
            self.access = access;
        }
        Ok(())
    }

    /// Whether `party` may send files on this resource.
    pub fn may_send(&self, party: &Party) -> bool {
        *party == self.service_owner || self.access.senders.contains(party)
    }

    /// Whether `party` may receive files on this resource.
    pub fn may_receive(&self, party: &Party) -> bool {
        *party == self.service_owner || self.access.recipients.contains(party)
    }

    /// The required-party rule of initialize (contract §6.2): if the resource names a required
    /// party and the sender is not it, there must be exactly one recipient and it must be the
    /// required party. Returns Altinn's error number on violation (27 or 26).
    pub fn check_required_party(&self, sender: &Party, recipients: &[Party]) -> Result<(), u16> {
        match &self.required_party {
            None => Ok(()),
            Some(required) if required == sender => Ok(()),
            Some(_) if recipients.len() > 1 => Err(27),
            Some(required) if recipients.first() == Some(required) => Ok(()),
            Some(_) => Err(26),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource() -> ResourceConfig {
        ResourceConfig::new(
            ResourceId::parse("r").unwrap(),
            Party::parse("0192:991825827").unwrap(),
            Timestamp::EPOCH,
        )
    }

    #[test]
    fn defaults_follow_the_contract() {
        let r = resource();
        assert_eq!(r.time_to_live(), Duration::from_secs(30 * 86_400));
        assert_eq!(r.grace_period(), Duration::from_secs(7200));
        assert!(r.purge_file_transfer_after_all_recipients_confirmed);
        assert_eq!(r.max_upload_size(true), 50_000_000_000);
        assert_eq!(r.max_upload_size(false), 1_677_721_600_000);
    }

    #[test]
    fn each_invalid_field_gives_its_altinn_error_and_changes_nothing() {
        let cases: Vec<(ResourceUpdate, u16)> = vec![
            (ResourceUpdate { max_file_transfer_size: Some(-1), ..Default::default() }, 11),
            (ResourceUpdate { max_file_transfer_size: Some(0), ..Default::default() }, 12),
            (
                ResourceUpdate {
                    max_file_transfer_size: Some(50_000_000_001),
                    ..Default::default()
                },
                13,
            ),
            (
                ResourceUpdate {
                    file_transfer_time_to_live: Some("30 days".into()),
                    ..Default::default()
                },
                14,
            ),
            (
                ResourceUpdate {
                    file_transfer_time_to_live: Some("P366D".into()),
                    ..Default::default()
                },
                15,
            ),
            (
                ResourceUpdate {
                    purge_file_transfer_grace_period: Some("2h".into()),
                    ..Default::default()
                },
                17,
            ),
            (
                ResourceUpdate {
                    purge_file_transfer_grace_period: Some("PT25H".into()),
                    ..Default::default()
                },
                18,
            ),
            (ResourceUpdate { max_file_transfer_size: Some(i64::MAX), ..Default::default() }, 22),
            (ResourceUpdate { use_manifest_file_shim: Some(true), ..Default::default() }, 23),
        ];
        for (update, code) in cases {
            let mut r = resource();
            // A valid field beside the invalid one must not be applied either.
            let update = ResourceUpdate {
                purge_file_transfer_after_all_recipients_confirmed: Some(false),
                ..update
            };
            let err = r.apply(update).unwrap_err();
            assert_eq!(err.code(), code, "{err}");
            assert_eq!(r, resource());
        }
    }

    #[test]
    fn valid_updates_apply() {
        let mut r = resource();
        r.apply(ResourceUpdate {
            max_file_transfer_size: Some(1024),
            file_transfer_time_to_live: Some("P365D".into()),
            purge_file_transfer_grace_period: Some("PT24H".into()),
            purge_file_transfer_after_all_recipients_confirmed: Some(false),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(r.max_upload_size(true), 1024);
        assert_eq!(r.time_to_live(), ResourceConfig::MAX_TIME_TO_LIVE);
        assert_eq!(r.grace_period(), ResourceConfig::MAX_GRACE_PERIOD);
        assert!(!r.purge_file_transfer_after_all_recipients_confirmed);
        // Approved resources may exceed the virus-scan limit.
        r.approved_for_disabled_virus_scan = true;
        r.apply(ResourceUpdate {
            max_file_transfer_size: Some(60_000_000_000),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(r.max_upload_size(false), 60_000_000_000);
        assert_eq!(r.max_upload_size(true), 50_000_000_000);
    }

    #[test]
    fn required_party_rule() {
        let owner = Party::parse("0192:991825827").unwrap();
        let other = Party::parse("0192:986252932").unwrap();
        let third = Party::parse("0192:910753614").unwrap();
        let mut r = resource();
        assert_eq!(r.check_required_party(&other, std::slice::from_ref(&third)), Ok(()));
        r.required_party = Some(owner.clone());
        assert_eq!(r.check_required_party(&owner, &[other.clone(), third.clone()]), Ok(()));
        assert_eq!(r.check_required_party(&other, std::slice::from_ref(&owner)), Ok(()));
        assert_eq!(r.check_required_party(&other, std::slice::from_ref(&third)), Err(26));
        assert_eq!(r.check_required_party(&other, &[owner, third]), Err(27));
    }
}

#[cfg(test)]
mod access_tests {
    use super::*;

    #[test]
    fn the_owner_may_always_send_and_receive_and_lists_add_others() {
        let owner = Party::parse("0192:991825827").unwrap();
        let other = Party::parse("0192:986252932").unwrap();
        let mut r =
            ResourceConfig::new(ResourceId::parse("r").unwrap(), owner.clone(), Timestamp::EPOCH);
        assert!(r.may_send(&owner) && r.may_receive(&owner));
        assert!(!r.may_send(&other) && !r.may_receive(&other));
        r.apply(ResourceUpdate {
            access: Some(AccessRules { senders: vec![other.clone()], recipients: vec![] }),
            ..Default::default()
        })
        .unwrap();
        assert!(r.may_send(&other));
        assert!(!r.may_receive(&other));
    }
}
