//! File transfers: initialize, overview and details, search, statistics.

use std::collections::{BTreeMap, HashSet};

use storage::model::*;
use storage::{Digest, Md5};

use super::context::*;
use crate::auth::{Caller, SCOPE_READ, SCOPE_SERVICE_OWNER, SCOPE_WRITE};
use crate::error::ApiError;

type Result<T, E = ApiError> = std::result::Result<T, E>;

/// What initialize receives, as the wire gives it (validated here).
#[derive(Debug, Clone, Default)]
pub struct InitializeRequest {
    /// `fileName`.
    pub file_name: String,
    /// `resourceId`.
    pub resource_id: String,
    /// `sendersFileTransferReference`.
    pub senders_file_transfer_reference: String,
    /// `sender`.
    pub sender: String,
    /// `recipients`.
    pub recipients: Vec<String>,
    /// `propertyList`.
    pub property_list: BTreeMap<String, String>,
    /// `checksum` (MD5 hex).
    pub checksum: Option<String>,
    /// `disableVirusScan`.
    pub disable_virus_scan: bool,
    /// Ferry extension.
    pub idempotency_key: Option<String>,
    /// Ferry extension: BLAKE3 hex.
    pub blake3: Option<String>,
}

/// Search parameters (contract §4.6 plus paging).
#[derive(Debug, Clone, Default)]
pub struct SearchQuery {
    /// Required.
    pub resource_id: String,
    /// Latest status filter.
    pub status: Option<FileTransferStatus>,
    /// The caller's latest recipient status filter (implies role recipient).
    pub recipient_status: Option<RecipientFileTransferStatus>,
    /// Lower bound.
    pub from: Option<Timestamp>,
    /// Upper bound.
    pub to: Option<Timestamp>,
    /// Oldest first.
    pub order_ascending: bool,
    /// `Some(false)` sender, `Some(true)` recipient, `None` both.
    pub as_recipient: Option<bool>,
    /// Continuation token.
    pub page_token: Option<String>,
    /// Page size (≤ 100).
    pub page_size: Option<usize>,
}

impl SearchQuery {
    /// The date `t` is sorted and bounded by, when it matches this search for `org` on
    /// `resource`: the time it entered the wanted status, or its creation.
    fn matches(&self, t: &FileTransfer, org: &Party, resource: &ResourceId) -> Option<Timestamp> {
        if t.resource_id != *resource {
            return None;
        }
        let date = match self.status {
            Some(status) if t.status() != status => return None,
            Some(status) => t
                .status_history
                .iter()
                .rev()
                .find(|e| e.status == status)
                .map_or(t.created, |e| e.at),
            None => t.created,
        };
        if let Some(wanted) = self.recipient_status {
            // Latest by time (Altinn's search rule, unlike the overview's highest).
            let latest =
                t.recipient_history.iter().rev().find(|e| e.recipient == *org).map(|e| e.status);
            if latest != Some(wanted) {
                return None;
            }
        }
        let inside = match (self.from, self.to) {
            (Some(from), Some(to)) => from <= date && date <= to,
            (Some(from), None) => date > from,
            (None, Some(to)) => date < to,
            (None, None) => true,
        };
        inside.then_some(date)
    }

    /// One page of `hits` in the wanted order after the continuation token, and the token of
    /// the next page if there is one.
    fn page(
        &self,
        mut hits: Vec<(Timestamp, FileTransferId)>,
    ) -> Result<(Vec<FileTransferId>, Option<String>)> {
        hits.sort();
        if !self.order_ascending {
            hits.reverse();
        }
        if let Some(token) = self.page_token.as_deref().filter(|t| !t.is_empty()) {
            let cursor = parse_page_token(token)?;
            hits.retain(|hit| if self.order_ascending { *hit > cursor } else { *hit < cursor });
        }
        let page_size = self.page_size.filter(|n| *n > 0).unwrap_or(100).min(100);
        let next = (hits.len() > page_size).then(|| {
            let (date, id) = hits[page_size - 1];
            format!("{}.{}", date.as_unix_micros(), id)
        });
        hits.truncate(page_size);
        Ok((hits.into_iter().map(|(_, id)| id).collect(), next))
    }
}

/// An initialize request's fields checked one by one (Altinn's messages), before any right.
fn validate(req: &InitializeRequest) -> Result<NewFileTransfer> {
    let n_name = req.file_name.chars().count();
    if n_name == 0 || n_name > 255 {
        return Err(ApiError::invalid_field(
            "FileName",
            "FileName must be between 1 and 255 characters",
        ));
    }
    let resource_id = ResourceId::parse(&req.resource_id)
        .map_err(|_| ApiError::invalid_field("ResourceId", "Invalid Resource identifier format"))?;
    let n_ref = req.senders_file_transfer_reference.chars().count();
    if n_ref == 0 || n_ref > 4096 {
        return Err(ApiError::invalid_field(
            "SendersFileTransferReference",
            "SendersFileTransferReference must be between 1 and 4096 characters",
        ));
    }
    let sender =
        Party::parse(&req.sender).map_err(|e| ApiError::invalid_field("Sender", e.to_string()))?;
    let recipients = validate_recipients(&req.recipients)?;
    validate_properties(&req.property_list)?;
    let declared_checksum =
        req.checksum.as_deref().filter(|c| !c.trim().is_empty()).map(parse_md5).transpose()?;
    let declared_blake3 = req
        .blake3
        .as_deref()
        .filter(|c| !c.trim().is_empty())
        .map(|c| c.to_ascii_lowercase().parse::<Digest>())
        .transpose()
        .map_err(|_| {
            ApiError::invalid_field("Blake3", "blake3, if used, must be 64 hex characters")
        })?;
    Ok(NewFileTransfer {
        resource_id,
        file_name: req.file_name.clone(),
        senders_reference: req.senders_file_transfer_reference.clone(),
        sender,
        recipients,
        property_list: req.property_list.clone(),
        declared_checksum,
        declared_blake3,
        use_virus_scan: !req.disable_virus_scan,
    })
}

/// The recipients, parsed, in order, each once.
fn validate_recipients(given: &[String]) -> Result<Vec<Party>> {
    if given.is_empty() {
        return Err(ApiError::invalid_field("Recipients", "One or more recipients are required"));
    }
    let mut recipients = Vec::with_capacity(given.len());
    for r in given {
        let party = Party::parse(r).map_err(|_| {
            ApiError::invalid_field("Recipients", "Each recipient should be on the form countrycode:organizationnumber (e.g. 0192:910753614) or urn:altinn:organization:identifier-no:organizationnumber")
        })?;
        if !recipients.contains(&party) {
            recipients.push(party);
        }
    }
    Ok(recipients)
}

/// At most 10 properties, keys up to 50 and values up to 3,000 characters.
fn validate_properties(properties: &BTreeMap<String, String>) -> Result<()> {
    if properties.len() > 10 {
        return Err(ApiError::invalid_field(
            "PropertyList",
            "PropertyList can contain at most 10 properties",
        ));
    }
    for (key, value) in properties {
        let (k, v) = (key.chars().count(), value.chars().count());
        if k > 50 {
            return Err(ApiError::invalid_field(
                "PropertyList",
                format!("PropertyList Key can not be longer than 50. Length:{k}, KeyValue:{key}"),
            ));
        }
        if v > 3000 {
            return Err(ApiError::invalid_field(
                "PropertyList",
                format!(
                    "PropertyList Value can not be longer than 3000. Length:{v}, Value:{value}"
                ),
            ));
        }
    }
    Ok(())
}

impl App {
    /// Initialize (contract §4.1): validates, checks rights, stores the transfer.
    pub async fn initialize(
        &self,
        caller: &Caller,
        req: InitializeRequest,
    ) -> Result<FileTransferId> {
        require_scope(caller, &[SCOPE_WRITE])?;
        let new = validate(&req)?;
        let resource = self.check_initialize_rights(caller, &new, req.disable_virus_scan)?;
        let transfer = FileTransfer::initialize(
            FileTransferId::new_random(),
            new.clone(),
            self.now(),
            resource.time_to_live(),
        );
        let id = transfer.id;
        match req.idempotency_key.as_deref().filter(|k| !k.is_empty()) {
            None => self.storage.insert_transfer(transfer).await?,
            Some(key) => {
                // The same key with the same request is the same transfer; with another, a 409.
                let hash = *blake3::hash(format!("{new:?}").as_bytes()).as_bytes();
                let key = format!("{}/{key}", new.sender);
                return match self.storage.insert_transfer_idempotent(transfer, key, hash).await {
                    Err(storage::Error::AlreadyExists(_)) => Err(ApiError {
                        kind: crate::error::Kind::AlreadyExists,
                        code: None,
                        message: "this idempotency key was used with a different request".into(),
                        http_status: 409,
                        field: None,
                    }),
                    other => Ok(other?),
                };
            }
        }
        Ok(id)
    }

    /// The rights of an initialize, in Altinn's order (§4.1): the caller acts for the sender,
    /// the resource exists and has an owner, the sender may send, the options are allowed, the
    /// recipients may receive, the required party is respected. The resource, when they hold.
    fn check_initialize_rights(
        &self,
        caller: &Caller,
        new: &NewFileTransfer,
        disable_virus_scan: bool,
    ) -> Result<ResourceConfig> {
        if caller_org(caller)? != new.sender {
            return Err(ApiError::altinn(6));
        }
        let resource =
            self.storage.resource(&new.resource_id)?.ok_or_else(|| ApiError::altinn(25))?;
        let resource = self.with_operator_approval(resource);
        if self.storage.service_owner(&resource.service_owner)?.is_none() {
            return Err(ApiError::altinn(2));
        }
        if !resource.may_send(&new.sender) {
            return Err(ApiError::altinn(6));
        }
        if disable_virus_scan && !resource.approved_for_disabled_virus_scan {
            return Err(ApiError::altinn(20));
        }
        if !new.recipients.iter().all(|r| resource.may_receive(r)) {
            return Err(ApiError::altinn(28));
        }
        resource.check_required_party(&new.sender, &new.recipients).map_err(ApiError::altinn)?;
        Ok(resource)
    }

    /// The overview or details of a transfer the caller takes part in.
    pub fn transfer(&self, caller: &Caller, id: FileTransferId) -> Result<FileTransfer> {
        require_scope(caller, &[SCOPE_WRITE, SCOPE_READ])?;
        let org = caller_org(caller)?;
        self.visible_transfer(&org, id)
    }

    /// Search (contract §4.6) with keyset paging.
    pub fn search(
        &self,
        caller: &Caller,
        q: SearchQuery,
    ) -> Result<(Vec<FileTransferId>, Option<String>)> {
        require_scope(caller, &[SCOPE_WRITE, SCOPE_READ])?;
        let org = caller_org(caller)?;
        let resource_id = ResourceId::parse_bare(&q.resource_id)
            .map_err(|_| ApiError::invalid("resourceId is required"))?;
        if self.storage.resource(&resource_id)?.is_none() {
            return Err(ApiError::altinn(5));
        }
        let roles: &[bool] = match (q.recipient_status, q.as_recipient) {
            (Some(_), _) | (None, Some(true)) => &[true],
            (None, Some(false)) => &[false],
            (None, None) => &[false, true],
        };
        let mut ids = HashSet::new();
        for &as_recipient in roles {
            let far = Timestamp::from_unix_micros(i64::MAX);
            ids.extend(self.storage.transfers_by_party(
                &org,
                as_recipient,
                Timestamp::EPOCH,
                far,
                usize::MAX,
            )?);
        }
        let mut hits: Vec<(Timestamp, FileTransferId)> = Vec::new();
        for id in ids {
            if let Some(t) = self.storage.transfer(id)?
                && let Some(date) = q.matches(&t, &org, &resource_id)
            {
                hits.push((date, id));
            }
        }
        q.page(hits)
    }

    /// Monthly statistics (contract §4.14) for the caller's resources, or one of them: a row per
    /// (resource, sender, recipient) with transfers created that month, how many were uploaded
    /// (published), download attempts and confirmed downloads. Computed from the index on
    /// request, so it is correct however transfers moved since.
    pub fn monthly_statistics(
        &self,
        caller: &Caller,
        year: i64,
        month: i64,
        resource: Option<&str>,
    ) -> Result<Vec<StatisticsRow>> {
        require_scope(caller, &[SCOPE_SERVICE_OWNER])?;
        let org = caller_org(caller)?;
        if !(1..=9999).contains(&year) || !(1..=12).contains(&month) {
            return Err(ApiError::altinn(6003));
        }
        let resources = match resource {
            Some(id) => {
                let id = ResourceId::parse_bare(id)
                    .map_err(|e| ApiError::invalid_field("resourceId", e.to_string()))?;
                let r = self.storage.resource(&id)?.ok_or_else(|| ApiError::altinn(25))?;
                if r.service_owner != org {
                    return Err(ApiError::altinn(6));
                }
                vec![r]
            }
            None => {
                self.storage.resources()?.into_iter().filter(|r| r.service_owner == org).collect()
            }
        };
        let start =
            Timestamp::parse_rfc3339(&format!("{year:04}-{month:02}-01")).expect("valid date");
        let (ny, nm) = if month == 12 { (year + 1, 1) } else { (year, month + 1) };
        let end = Timestamp::parse_rfc3339(&format!("{ny:04}-{nm:02}-01")).expect("valid date");
        let mut rows: BTreeMap<(String, String, String), StatisticsRow> = BTreeMap::new();
        for resource in &resources {
            for id in self.storage.transfers_by_resource(&resource.id, start, end, usize::MAX)? {
                let Some(t) = self.storage.transfer(id)? else { continue };
                let uploaded = t.published_at().is_some();
                for recipient in &t.recipients {
                    let key =
                        (resource.id.to_string(), t.sender.to_string(), recipient.to_string());
                    let row = rows.entry(key).or_insert_with(|| StatisticsRow {
                        year,
                        month,
                        resource_id: resource.id.to_string(),
                        sender: t.sender.to_string(),
                        recipient: recipient.to_string(),
                        ..StatisticsRow::default()
                    });
                    row.total_file_transfers += 1;
                    row.upload_count += u64::from(uploaded);
                    let mine = t.recipient_history.iter().filter(|e| &e.recipient == recipient);
                    let (mut attempts, mut confirmed) = (0, false);
                    for e in mine {
                        attempts +=
                            u64::from(e.status == RecipientFileTransferStatus::DownloadStarted);
                        confirmed |= e.status == RecipientFileTransferStatus::DownloadConfirmed;
                    }
                    row.total_transfer_download_attempts += attempts;
                    row.transfers_with_download_confirmed += u64::from(confirmed);
                }
            }
        }
        if rows.is_empty() {
            return Err(ApiError::altinn(6001));
        }
        Ok(rows.into_values().collect())
    }

    /// Transfers by current status (for metrics; walks the index).
    pub fn transfers_by_status(&self) -> Result<std::collections::BTreeMap<&'static str, u64>> {
        let mut counts = std::collections::BTreeMap::new();
        for id in self.storage.transfer_ids()? {
            if let Some(t) = self.storage.transfer(id)? {
                *counts.entry(t.status().name()).or_default() += 1;
            }
        }
        Ok(counts)
    }
}

fn parse_page_token(token: &str) -> Result<(Timestamp, FileTransferId)> {
    let bad = || ApiError::invalid("page_token is not one this server issued");
    let (date, id) = token.split_once('.').ok_or_else(bad)?;
    Ok((
        Timestamp::from_unix_micros(date.parse().map_err(|_| bad())?),
        id.parse().map_err(|_| bad())?,
    ))
}

/// A recipient's current status as the overview shows it (Altinn: the highest status reached,
/// with the time it was last entered).
#[derive(Debug, Clone)]
pub struct RecipientView {
    /// The recipient.
    pub party: Party,
    /// Its current status.
    pub status: RecipientFileTransferStatus,
    /// When it entered that status last.
    pub changed: Timestamp,
}

/// The current status of every recipient of `t`.
pub fn recipient_views(t: &FileTransfer) -> Vec<RecipientView> {
    t.recipients
        .iter()
        .map(|r| {
            let status = t.recipient_status(r).unwrap_or(RecipientFileTransferStatus::Initialized);
            let changed = t
                .recipient_history
                .iter()
                .rev()
                .find(|e| &e.recipient == r && e.status == status)
                .map_or(t.created, |e| e.at);
            RecipientView { party: r.clone(), status, changed }
        })
        .collect()
}

/// The `checksum` to show: the file's MD5 once known, else the one the sender declared.
pub fn checksum_of(t: &FileTransfer) -> Option<Md5> {
    t.content.and_then(|c| c.md5).or(t.declared_checksum)
}

/// A row of the monthly statistics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatisticsRow {
    /// Year.
    pub year: i64,
    /// Month, 1–12.
    pub month: i64,
    /// Resource.
    pub resource_id: String,
    /// Sender (`0192:…`).
    pub sender: String,
    /// Recipient (`0192:…`).
    pub recipient: String,
    /// Transfers created in the month.
    pub total_file_transfers: u64,
    /// Of those, how many were uploaded and published.
    pub upload_count: u64,
    /// `DownloadStarted` records.
    pub total_transfer_download_attempts: u64,
    /// Transfers the recipient confirmed.
    pub transfers_with_download_confirmed: u64,
}
