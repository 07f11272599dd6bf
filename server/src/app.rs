//! The use cases, independent of transport: gRPC handlers (and the REST facade) unpack a
//! request, call one of these, and map the result. No business rule lives anywhere else.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use scanner::Clamd;
use storage::model::*;
use storage::{BlobRange, Digest, Md5, Md5Follower, Storage, Upload};
use tokio::task::JoinHandle;

use crate::auth::{Authenticator, Caller, SCOPE_READ, SCOPE_SERVICE_OWNER, SCOPE_WRITE};
use crate::error::ApiError;
use crate::scan::{self, TailInput};

type Result<T, E = ApiError> = std::result::Result<T, E>;

/// Network frames are gathered into writes of at least this many bytes.
pub const FRAME_BUFFER: usize = 256 * 1024;
/// Upload checkpoints: bytes between fsync'd, acknowledged offsets.
pub const CHECKPOINT_BYTES: u64 = 8 * 1024 * 1024;
/// The status text of a transfer whose upload ran out of storage space.
pub const STORAGE_FULL_TEXT: &str = "Upload failed: the server ran out of storage space while receiving the file; initialize a new file transfer to send it again";
/// Ranged downloads by the same recipient within this window record one `DownloadStarted`.
pub const DOWNLOAD_DEBOUNCE: Duration = Duration::from_secs(300);

/// Tunables of the use cases.
#[derive(Debug, Clone)]
pub struct AppOptions {
    /// Largest upload at all, whatever the resource says.
    pub global_max_upload: u64,
    /// Longest wait between scan retries while the scanner is unavailable.
    pub scan_retry_max: Duration,
    /// Resources the operator approved for transfers without a virus scan (Altinn's
    /// `approvedForDisabledVirusScan`, an administrator's decision that no API can make).
    pub unscanned_resources: Vec<String>,
    /// How long an upload's body or stream may bring nothing before it is cut off.
    pub idle_timeout: Duration,
}

impl Default for AppOptions {
    fn default() -> Self {
        Self {
            global_max_upload: ResourceConfig::GLOBAL_MAX_SIZE,
            scan_retry_max: Duration::from_secs(60),
            unscanned_resources: Vec::new(),
            idle_timeout: Duration::from_secs(30),
        }
    }
}

/// How long readiness waits for clamd's VERSION.
const READINESS_SCANNER: Duration = Duration::from_secs(2);

/// The application: storage, scanner, identity, and the rules between them.
pub struct App {
    /// The storage engine.
    pub storage: Storage,
    /// The clamd client.
    pub scanner: Clamd,
    /// Token validation.
    pub auth: Authenticator,
    pub(crate) options: AppOptions,
    clock: Box<dyn Fn() -> Timestamp + Send + Sync>,
    download_debounce: Mutex<HashMap<(FileTransferId, Party), Instant>>,
    /// Cancelled when the server shuts down: background work stops at a resumable point.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// Every background task (uploads, downloads, scans), awaited at shutdown.
    pub tasks: tokio_util::task::TaskTracker,
    /// TUS uploads between two PATCH requests: the live session (with its scan and MD5 tails)
    /// waits here, so a chunk never re-reads what came before.
    pub(crate) parked: Mutex<HashMap<UploadId, crate::tus::Parked>>,
    /// Prometheus metrics.
    pub metrics: crate::metrics::Metrics,
    /// Life-cycle timing (the storage schedules with the same values).
    pub lifecycle: storage::Lifecycle,
    /// The public base URL (CloudEvent `source`).
    pub public_url: String,
    /// Issues exchanged tokens, when the token exchange is on.
    pub(crate) token_issuer: Option<Arc<crate::exchange::TokenIssuer>>,
    /// Webhook delivery settings.
    pub webhooks: crate::webhooks::WebhookConfig,
    /// The HTTP client webhooks go out with.
    pub http: reqwest::Client,
    /// Webhook deliveries being attempted.
    pub in_flight: crate::webhooks::InFlight,
    /// How long a Watch reader may take no message before it is closed.
    pub watch_stall: Duration,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").field("options", &self.options).finish_non_exhaustive()
    }
}

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

/// The final result of an upload.
#[derive(Debug, Clone)]
pub struct UploadResult {
    /// The transfer after the upload.
    pub transfer: FileTransfer,
}

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

fn require_scope(caller: &Caller, scopes: &[&str]) -> Result<()> {
    if caller.has_any_scope(scopes) { Ok(()) } else { Err(ApiError::missing_scope(scopes)) }
}

fn caller_org(caller: &Caller) -> Result<Party> {
    caller.org.clone().ok_or_else(|| ApiError::altinn(7001))
}

fn parse_md5(text: &str) -> Result<Md5> {
    if text.len() != 32 {
        return Err(ApiError::invalid_field(
            "Checksum",
            "The checksum, if used, must be a MD5 hash with a length of 32 characters",
        ));
    }
    if text.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(ApiError::invalid_field(
            "Checksum",
            "The checksum, if used, must be a MD5 hash in lower case",
        ));
    }
    text.parse().map_err(|_| {
        ApiError::invalid_field("Checksum", "The checksum, if used, must be a MD5 hash in hex")
    })
}

impl App {
    /// Wires the parts together.
    pub fn new(storage: Storage, scanner: Clamd, auth: Authenticator, options: AppOptions) -> Self {
        Self {
            storage,
            scanner,
            auth,
            options,
            clock: Box::new(Timestamp::now),
            download_debounce: Mutex::default(),
            shutdown: tokio_util::sync::CancellationToken::new(),
            tasks: tokio_util::task::TaskTracker::new(),
            parked: Mutex::default(),
            metrics: crate::metrics::Metrics::default(),
            lifecycle: storage::Lifecycle::default(),
            public_url: "http://127.0.0.1:8080".into(),
            token_issuer: None,
            webhooks: crate::webhooks::WebhookConfig::default(),
            http: webhook_client(Duration::from_secs(30)),
            in_flight: crate::webhooks::InFlight::default(),
            watch_stall: Duration::from_secs(30),
        }
    }

    /// Sets the life-cycle timing (must match the storage's) and the public base URL.
    pub fn with_lifecycle(mut self, lifecycle: storage::Lifecycle, public_url: String) -> Self {
        self.lifecycle = lifecycle;
        self.public_url = public_url;
        self
    }

    /// Sets the webhook delivery settings.
    pub fn with_webhooks(mut self, webhooks: crate::webhooks::WebhookConfig) -> Self {
        self.http = webhook_client(Duration::from_secs(webhooks.timeout_secs));
        self.webhooks = webhooks;
        self
    }

    /// Turns the token exchange on: `issuer` signs exchanged tokens, and they are trusted.
    pub fn with_token_issuer(self, issuer: crate::exchange::TokenIssuer) -> anyhow::Result<Self> {
        self.auth.trust(&issuer.issuer, issuer.verifying_keys()?);
        Ok(Self { token_issuer: Some(Arc::new(issuer)), ..self })
    }

    /// Sets how long a Watch reader may stall.
    pub fn with_watch_stall(mut self, stall: Duration) -> Self {
        self.watch_stall = stall;
        self
    }

    /// Replaces the clock (tests).
    pub fn with_clock(mut self, clock: impl Fn() -> Timestamp + Send + Sync + 'static) -> Self {
        self.clock = Box::new(clock);
        self
    }

    /// Spawns background work that shutdown waits for.
    pub fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tasks.spawn(future)
    }

    /// Stops background work and waits for it (at most `deadline`).
    pub async fn close(&self, deadline: Duration) {
        self.shutdown.cancel();
        // Parked TUS sessions hold the app and tails waiting for bytes: let them go. Their
        // uploads stay resumable (a parked session is always at a checkpoint).
        self.parked.lock().expect("parked map").clear();
        self.tasks.close();
        if tokio::time::timeout(deadline, self.tasks.wait()).await.is_err() {
            tracing::warn!(
                n_tasks = self.tasks.len(),
                "background tasks still running at shutdown"
            );
        }
    }

    /// The current time.
    pub fn now(&self) -> Timestamp {
        (self.clock)()
    }

    pub(crate) fn scan_retry_delay(&self, attempt: u32) -> Duration {
        scan::backoff(attempt, self.options.scan_retry_max)
    }

    /// Readiness: the index can commit, the data directory has room above its reserve, and
    /// clamd answers.
    pub async fn readiness(&self) -> Readiness {
        let storage = match self.storage.probe_commit().await {
            Err(e) if e.is_storage_full() => Err("full: the index cannot commit".to_owned()),
            Err(e) => Err(format!("cannot commit: {e}")),
            Ok(()) => match self.storage.space() {
                Ok(space) if space.is_low() => Err(format!(
                    "full: {} bytes free, below the reserve of {}; uploads are refused",
                    space.free, space.min_free
                )),
                Ok(_) => Ok(()),
                Err(e) => Err(format!("cannot read the free space: {e}")),
            },
        };
        let space = self.storage.space().ok();
        // Bounded: a clamd that accepts and never answers would hold a load balancer's probe
        // for the scanner's connect and write timeouts (over a minute).
        let scanner = match tokio::time::timeout(READINESS_SCANNER, self.scanner.version()).await {
            Ok(version) => version.map_err(|e| e.to_string()),
            Err(_) => Err(format!("no answer within {} s", READINESS_SCANNER.as_secs())),
        };
        Readiness { storage, space, scanner }
    }

    /// A transfer the caller takes part in (sender or recipient). Anyone else learns nothing,
    /// not even that it exists: [`ApiError`] 1 (not found).
    fn visible_transfer(&self, org: &Party, id: FileTransferId) -> Result<FileTransfer> {
        let transfer = self.storage.transfer(id)?.ok_or_else(|| ApiError::altinn(1))?;
        if transfer.sender == *org || transfer.recipients.contains(org) {
            Ok(transfer)
        } else {
            Err(ApiError::altinn(1))
        }
    }

    fn resource_of(&self, transfer: &FileTransfer) -> Result<ResourceConfig> {
        self.storage.resource(&transfer.resource_id)?.ok_or_else(|| ApiError::altinn(25))
    }

    // --- service owners and resources ---

    /// Registers the caller's organisation as a service owner.
    pub async fn register_service_owner(&self, caller: &Caller, name: String) -> Result<()> {
        require_scope(caller, &[SCOPE_SERVICE_OWNER])?;
        let org = caller_org(caller)?;
        if name.trim().is_empty() {
            return Err(ApiError::invalid("name is required"));
        }
        let owner = ServiceOwner { id: org, name, created: self.now() };
        match self.storage.create_service_owner(owner).await {
            Err(storage::Error::AlreadyExists(_)) => Err(ApiError::altinn(7002)),
            other => Ok(other?),
        }
    }

    /// The caller's service owner record.
    pub fn service_owner(&self, caller: &Caller) -> Result<ServiceOwner> {
        require_scope(caller, &[SCOPE_SERVICE_OWNER])?;
        let org = caller_org(caller)?;
        self.storage.service_owner(&org)?.ok_or_else(|| ApiError::altinn(7004))
    }

    /// Creates or changes a resource the caller owns.
    pub async fn put_resource(
        &self,
        caller: &Caller,
        id: &str,
        update: ResourceUpdate,
    ) -> Result<ResourceConfig> {
        require_scope(caller, &[SCOPE_SERVICE_OWNER])?;
        let org = caller_org(caller)?;
        let id = ResourceId::parse_bare(id).map_err(|e| ApiError::invalid(e.to_string()))?;
        if self.storage.service_owner(&org)?.is_none() {
            return Err(ApiError::altinn(24));
        }
        let now = self.now();
        let resource_id = id.clone();
        // The operator's approval for unscanned transfers lets the resource allow more than a
        // scanned file may be (error 13 otherwise); it is configuration, never stored.
        let approved = self.options.unscanned_resources.contains(&id.to_string());
        let result = self
            .storage
            .modify_resource(id, move |current| {
                let mut resource = match current {
                    Some(r) if r.service_owner != org => {
                        return Err(storage::Error::NotFound("owner".into()));
                    }
                    Some(r) => r,
                    None => ResourceConfig::new(resource_id.clone(), org.clone(), now),
                };
                let stored = resource.approved_for_disabled_virus_scan;
                resource.approved_for_disabled_virus_scan = stored || approved;
                resource.apply(update.clone())?;
                resource.approved_for_disabled_virus_scan = stored;
                Ok(resource)
            })
            .await;
        match result {
            // Someone else's resource: no rights (Altinn 401/6).
            Err(storage::Error::NotFound(_)) => Err(ApiError::altinn(6)),
            other => Ok(other?),
        }
    }

    /// A resource the caller owns.
    pub fn resource(&self, caller: &Caller, id: &str) -> Result<ResourceConfig> {
        require_scope(caller, &[SCOPE_SERVICE_OWNER])?;
        let org = caller_org(caller)?;
        let id = ResourceId::parse_bare(id).map_err(|e| ApiError::invalid(e.to_string()))?;
        let resource = self.storage.resource(&id)?.ok_or_else(|| ApiError::altinn(25))?;
        if resource.service_owner != org {
            return Err(ApiError::altinn(6));
        }
        Ok(self.with_operator_approval(resource))
    }

    /// The resources the caller's organisation owns or may send or receive on: what a person
    /// picks from (the web console); every operation on them still checks its own rights.
    pub fn visible_resources(&self, caller: &Caller) -> Result<Vec<ResourceConfig>> {
        require_scope(caller, &[SCOPE_SERVICE_OWNER, SCOPE_WRITE, SCOPE_READ])?;
        let org = caller_org(caller)?;
        Ok(self
            .storage
            .resources()?
            .into_iter()
            .filter(|r| r.service_owner == org || r.may_send(&org) || r.may_receive(&org))
            .map(|r| self.with_operator_approval(r))
            .collect())
    }

    /// `resource` with the operator's approval for unscanned transfers applied.
    fn with_operator_approval(&self, mut resource: ResourceConfig) -> ResourceConfig {
        let id = resource.id.to_string();
        if self.options.unscanned_resources.contains(&id) {
            resource.approved_for_disabled_virus_scan = true;
        }
        resource
    }

    // --- transfers ---

    /// Initialize (contract §4.1): validates, checks rights, stores the transfer.
    pub async fn initialize(
        &self,
        caller: &Caller,
        req: InitializeRequest,
    ) -> Result<FileTransferId> {
        require_scope(caller, &[SCOPE_WRITE])?;
        let n_name = req.file_name.chars().count();
        if n_name == 0 || n_name > 255 {
            return Err(ApiError::invalid_field(
                "FileName",
                "FileName must be between 1 and 255 characters",
            ));
        }
        let resource_id = ResourceId::parse(&req.resource_id).map_err(|_| {
            ApiError::invalid_field("ResourceId", "Invalid Resource identifier format")
        })?;
        let n_ref = req.senders_file_transfer_reference.chars().count();
        if n_ref == 0 || n_ref > 4096 {
            return Err(ApiError::invalid_field(
                "SendersFileTransferReference",
                "SendersFileTransferReference must be between 1 and 4096 characters",
            ));
        }
        let sender = Party::parse(&req.sender)
            .map_err(|e| ApiError::invalid_field("Sender", e.to_string()))?;
        if req.recipients.is_empty() {
            return Err(ApiError::invalid_field(
                "Recipients",
                "One or more recipients are required",
            ));
        }
        let mut recipients = Vec::with_capacity(req.recipients.len());
        for r in &req.recipients {
            let party = Party::parse(r).map_err(|_| {
                ApiError::invalid_field("Recipients", "Each recipient should be on the form countrycode:organizationnumber (e.g. 0192:910753614) or urn:altinn:organization:identifier-no:organizationnumber")
            })?;
            if !recipients.contains(&party) {
                recipients.push(party);
            }
        }
        if req.property_list.len() > 10 {
            return Err(ApiError::invalid_field(
                "PropertyList",
                "PropertyList can contain at most 10 properties",
            ));
        }
        for (key, value) in &req.property_list {
            let (k, v) = (key.chars().count(), value.chars().count());
            if k > 50 {
                return Err(ApiError::invalid_field(
                    "PropertyList",
                    format!(
                        "PropertyList Key can not be longer than 50. Length:{k}, KeyValue:{key}"
                    ),
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

        // Rights, in Altinn's order (§4.1): the caller acts for the sender, the resource exists
        // and has an owner, the sender may send, the options are allowed, the recipients may
        // receive, the required party is respected.
        let org = caller_org(caller)?;
        if org != sender {
            return Err(ApiError::altinn(6));
        }
        let resource = self.storage.resource(&resource_id)?.ok_or_else(|| ApiError::altinn(25))?;
        let resource = self.with_operator_approval(resource);
        if self.storage.service_owner(&resource.service_owner)?.is_none() {
            return Err(ApiError::altinn(2));
        }
        if !resource.may_send(&sender) {
            return Err(ApiError::altinn(6));
        }
        if req.disable_virus_scan && !resource.approved_for_disabled_virus_scan {
            return Err(ApiError::altinn(20));
        }
        if !recipients.iter().all(|r| resource.may_receive(r)) {
            return Err(ApiError::altinn(28));
        }
        resource.check_required_party(&sender, &recipients).map_err(ApiError::altinn)?;

        let new = NewFileTransfer {
            resource_id,
            file_name: req.file_name.clone(),
            senders_reference: req.senders_file_transfer_reference.clone(),
            sender,
            recipients,
            property_list: req.property_list.clone(),
            declared_checksum,
            declared_blake3,
            use_virus_scan: !req.disable_virus_scan,
        };
        let transfer = FileTransfer::initialize(
            FileTransferId::new_random(),
            new.clone(),
            self.now(),
            resource.time_to_live(),
        );
        match req.idempotency_key.as_deref().filter(|k| !k.is_empty()) {
            None => {
                let id = transfer.id;
                self.storage.insert_transfer(transfer).await?;
                Ok(id)
            }
            Some(key) => {
                let hash = *blake3::hash(format!("{new:?}").as_bytes()).as_bytes();
                let key = format!("{org}/{key}");
                match self.storage.insert_transfer_idempotent(transfer, key, hash).await {
                    Err(storage::Error::AlreadyExists(_)) => Err(ApiError {
                        kind: crate::error::Kind::AlreadyExists,
                        code: None,
                        message: "this idempotency key was used with a different request".into(),
                        http_status: 409,
                        field: None,
                    }),
                    other => Ok(other?),
                }
            }
        }
    }

    /// The overview or details of a transfer the caller takes part in.
    pub fn transfer(&self, caller: &Caller, id: FileTransferId) -> Result<FileTransfer> {
        require_scope(caller, &[SCOPE_WRITE, SCOPE_READ])?;
        let org = caller_org(caller)?;
        self.visible_transfer(&org, id)
    }

    /// The committed offset of an upload (sender only).
    pub fn upload_status(
        &self,
        caller: &Caller,
        id: FileTransferId,
    ) -> Result<(u64, FileTransferStatus)> {
        require_scope(caller, &[SCOPE_WRITE])?;
        let org = caller_org(caller)?;
        let transfer = self.visible_transfer(&org, id)?;
        if transfer.sender != org {
            return Err(ApiError::altinn(6));
        }
        let committed = self.storage.upload_offset(&UploadId::for_transfer(id))?.unwrap_or(0);
        let committed = match transfer.content {
            Some(content) => content.size,
            None => committed,
        };
        Ok((committed, transfer.status()))
    }

    /// Starts (or resumes) an upload: `offset` is where the client's bytes start (the committed
    /// offset to resume), or `None` to start over from byte 0.
    pub async fn begin_upload(
        self: &Arc<Self>,
        caller: &Caller,
        id: FileTransferId,
        offset: Option<u64>,
        declared_length: Option<u64>,
    ) -> Result<UploadSession> {
        require_scope(caller, &[SCOPE_WRITE])?;
        let org = caller_org(caller)?;
        let transfer = self.visible_transfer(&org, id)?;
        if transfer.sender != org {
            return Err(ApiError::altinn(6));
        }
        let resource = self.resource_of(&transfer)?;
        if !resource.may_send(&org) {
            return Err(ApiError::altinn(6));
        }
        if !matches!(
            transfer.status(),
            FileTransferStatus::Initialized | FileTransferStatus::UploadStarted
        ) {
            return Err(ApiError::altinn(4));
        }
        let limit =
            resource.max_upload_size(transfer.use_virus_scan).min(self.options.global_max_upload);
        if declared_length.is_some_and(|n| n > limit) {
            return Err(too_large(limit));
        }
        // Refused before anything is created if the rest cannot fit above the storage reserve:
        // the sender does not pay for an upload that would fail at its end.
        let remaining = declared_length.map_or(0, |n| n.saturating_sub(offset.unwrap_or(0)));
        self.storage.check_space(remaining)?;
        let upload_id = UploadId::for_transfer(id);
        // A TUS session parked between two PATCHes gives way: any protocol may resume.
        self.parked.lock().expect("parked map").remove(&upload_id);
        // The declared length is recorded with the upload, so whichever protocol resumes it
        // after an interruption (TUS needs `Upload-Length`) knows the total.
        let mut upload = self
            .storage
            .open_upload_declared(upload_id.clone(), self.now(), declared_length)
            .await?;
        // `None`: start over (a REST upload sends the whole file), discarding a partial upload.
        let offset = match offset {
            Some(offset) => offset,
            None if upload.offset() == 0 && upload.length() == declared_length => 0,
            None => {
                drop(upload);
                self.storage.abort_upload(&upload_id).await?;
                upload = self
                    .storage
                    .open_upload_declared(upload_id, self.now(), declared_length)
                    .await?;
                0
            }
        };
        if let (Some(recorded), Some(declared)) = (upload.length(), declared_length)
            && recorded != declared
        {
            return Err(ApiError {
                kind: crate::error::Kind::FailedPrecondition,
                code: None,
                message: format!(
                    "the upload was begun with a length of {recorded} bytes, not {declared}: resume it with the same length, or start it over"
                ),
                http_status: 409,
                field: None,
            });
        }
        let declared_length = declared_length.or(upload.length());
        if offset != upload.offset() {
            return Err(ApiError {
                kind: crate::error::Kind::FailedPrecondition,
                code: None,
                message: format!(
                    "the upload continues at offset {}, not {offset}: resume from the committed offset",
                    upload.offset()
                ),
                http_status: 409,
                field: None,
            });
        }
        // The scanner and the MD5 follow the upload from its first byte (a resumed upload's
        // committed prefix included), at their own pace.
        // A file longer than clamd's limit is scanned as overlapping segments, each starting
        // as soon as the upload reaches it.
        // Segments found clean are recorded once the upload completes (`scan_file`), so a
        // restart resumes the scan at the first segment not yet clean; a file that fits one
        // stream has nothing to resume and records nothing.
        let mut scan_file = None;
        let scan = transfer.use_virus_scan.then(|| {
            let tail = upload.tail();
            let app = self.clone();
            let fits_one_stream = declared_length
                .is_some_and(|n| n <= self.scanner.options().max_stream_len);
            let progress = (!fits_one_stream).then(|| {
                let (progress, file) = scan::record_progress(self, id);
                scan_file = Some(file);
                progress
            });
            self.metrics.scans_in_progress.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.spawn(async move {
                let tail = match tail {
                    Ok(tail) => TailInput(tail),
                    Err(e) => return scan::lost_scan(e),
                };
                let none = std::collections::BTreeSet::new();
                tokio::select! {
                    // Shutting down: the transfer's scan resumes at the next start.
                    () = app.shutdown.cancelled() => scan::lost_scan("the server is shutting down"),
                    outcome = scan::scan_input(&app, id, &tail, &none, progress.as_ref()) => outcome,
                }
            })
        });
        // The MD5 follows the upload only where it decides the answer to it (see `finish`);
        // otherwise it is computed after the last byte, beside clamd's scan, so it takes no
        // CPU from the upload itself (on two cores MD5 took a third of the server's CPU).
        let md5 = if transfer.declared_checksum.is_some() || !transfer.use_virus_scan {
            Some(Md5Follower::follow(upload.tail()?))
        } else {
            None
        };
        self.metrics.uploads_in_progress.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(UploadSession {
            app: self.clone(),
            id,
            upload: Some(upload),
            limit,
            declared_length,
            started: transfer.status() == FileTransferStatus::UploadStarted,
            since_checkpoint: 0,
            auto_checkpoint: true,
            pending: bytes::BytesMut::new(),
            scan,
            scan_file,
            md5,
        })
    }

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
        if !ranged || self.debounce_download(id, &org) {
            let at = self.now();
            let who = org.clone();
            self.storage.update_transfer(id, move |t| Ok(t.record_download(&who, at)?)).await?;
        }
        let range = self.storage.read_blob(&content.blake3, offset, length).await?;
        Ok(Download { file_name: transfer.file_name, content, offset, range })
    }

    /// Whether this ranged download should record `DownloadStarted` (once per window).
    fn debounce_download(&self, id: FileTransferId, org: &Party) -> bool {
        let mut seen = self.download_debounce.lock().expect("debounce map poisoned");
        let now = Instant::now();
        seen.retain(|_, at| now.duration_since(*at) < DOWNLOAD_DEBOUNCE);
        match seen.entry((id, org.clone())) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(now);
                true
            }
        }
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
            let Some(t) = self.storage.transfer(id)? else {
                continue;
            };
            if t.resource_id != resource_id {
                continue;
            }
            let date = match q.status {
                Some(status) => {
                    if t.status() != status {
                        continue;
                    }
                    t.status_history
                        .iter()
                        .rev()
                        .find(|e| e.status == status)
                        .map(|e| e.at)
                        .unwrap_or(t.created)
                }
                None => t.created,
            };
            if let Some(wanted) = q.recipient_status {
                // Latest by time (Altinn's search rule, unlike the overview's highest).
                let latest =
                    t.recipient_history.iter().rev().find(|e| e.recipient == org).map(|e| e.status);
                if latest != Some(wanted) {
                    continue;
                }
            }
            let inside = match (q.from, q.to) {
                (Some(from), Some(to)) => from <= date && date <= to,
                (Some(from), None) => date > from,
                (None, Some(to)) => date < to,
                (None, None) => true,
            };
            if inside {
                hits.push((date, id));
            }
        }
        hits.sort();
        if !q.order_ascending {
            hits.reverse();
        }
        if let Some(token) = q.page_token.as_deref().filter(|t| !t.is_empty()) {
            let cursor = parse_page_token(token)?;
            hits.retain(|hit| if q.order_ascending { *hit > cursor } else { *hit < cursor });
        }
        let page_size = q.page_size.filter(|n| *n > 0).unwrap_or(100).min(100);
        let next = (hits.len() > page_size).then(|| {
            let (date, id) = hits[page_size - 1];
            format!("{}.{}", date.as_unix_micros(), id)
        });
        hits.truncate(page_size);
        Ok((hits.into_iter().map(|(_, id)| id).collect(), next))
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

    /// Hashes transfer `id`'s stored file (blob `digest`) and records its MD5 (the blob's record
    /// keeps it too, so identical content is hashed once).
    async fn record_blob_md5(&self, id: FileTransferId, digest: &Digest) -> Result<FileTransfer> {
        let md5 = self.storage.blob_md5(digest).await?;
        Ok(self.storage.record_md5(id, md5, self.now()).await?)
    }

    /// Finishes what a restart interrupted: MD5s not yet recorded and scans not yet done.
    pub async fn resume_pending(self: &Arc<Self>) -> anyhow::Result<()> {
        for id in self.storage.transfer_ids()? {
            let Some(t) = self.storage.transfer(id)? else {
                continue;
            };
            if t.status() != FileTransferStatus::UploadProcessing {
                continue;
            }
            if let Some(content) = t.content.filter(|c| c.md5.is_none()) {
                self.record_blob_md5(id, &content.blake3).await?;
            }
            if t.use_virus_scan && !t.scan_passed {
                tracing::info!(transfer = %id, "resuming the scan of a transfer");
                self.spawn(scan::finish_scan(self.clone(), id, None));
            }
        }
        Ok(())
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

fn too_large(limit: u64) -> ApiError {
    ApiError::altinn_with(16, format!("File size exceeds maximum ({limit} bytes)"))
}

fn past_declared_length(declared: u64, end: u64, committed: u64) -> ApiError {
    ApiError::invalid(format!(
        "the upload's declared length is {declared} bytes, and this data would end at byte {end}: bytes past the declared length are refused ({committed} bytes are durable; resume from there)"
    ))
}

/// What `/health/ready` reports.
#[derive(Debug)]
pub struct Readiness {
    /// The index commits and there is room for uploads.
    pub storage: std::result::Result<(), String>,
    /// The data directory's free space, if it could be read.
    pub space: Option<storage::Space>,
    /// clamd's version.
    pub scanner: std::result::Result<String, String>,
}

impl Readiness {
    /// Ready for every request, uploads included.
    pub fn is_ready(&self) -> bool {
        self.storage.is_ok() && self.scanner.is_ok()
    }
}

/// An upload in progress, driven by a transport.
pub struct UploadSession {
    app: Arc<App>,
    id: FileTransferId,
    upload: Option<Upload>,
    limit: u64,
    declared_length: Option<u64>,
    started: bool,
    since_checkpoint: u64,
    auto_checkpoint: bool,
    /// Small frames gathered by [`UploadSession::write_frame`] until they make a good write.
    pending: bytes::BytesMut,
    scan: Option<JoinHandle<scanner::SegmentedVerdict>>,
    /// Tells the scan's progress recorder the completed file: its segments count from then on.
    scan_file: Option<tokio::sync::oneshot::Sender<storage::model::StoredContent>>,
    md5: Option<Md5Follower>,
}

impl Drop for UploadSession {
    fn drop(&mut self) {
        self.app.metrics.uploads_in_progress.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl std::fmt::Debug for UploadSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UploadSession").field("id", &self.id).finish_non_exhaustive()
    }
}

impl UploadSession {
    /// Bytes received so far (durable or not).
    pub fn offset(&self) -> u64 {
        self.upload.as_ref().map_or(0, Upload::offset)
    }

    /// The durable offset.
    pub fn committed(&self) -> u64 {
        self.upload.as_ref().map_or(0, Upload::committed)
    }

    /// Takes a chunk. Returns a newly committed offset to acknowledge, if a checkpoint happened.
    /// Exceeding the size limit cuts the upload off and keeps nothing.
    pub async fn write(&mut self, chunk: Bytes) -> Result<Option<u64>> {
        // Frames gathered by `write_frame` go first: bytes never change order.
        if !self.pending.is_empty() {
            let pending = self.pending.split().freeze();
            self.write_raw(pending).await?;
        }
        self.write_raw(chunk).await
    }

    async fn write_raw(&mut self, chunk: Bytes) -> Result<Option<u64>> {
        let upload = self.upload.as_mut().ok_or_else(|| ApiError::invalid("the upload is over"))?;
        if chunk.is_empty() {
            return Ok(None);
        }
        if upload.offset() + chunk.len() as u64 > self.limit {
            self.discard().await;
            return Err(too_large(self.limit));
        }
        if let Some((declared, end)) = self.past_declared(chunk.len() as u64) {
            let committed = self.sync_point().await?;
            return Err(past_declared_length(declared, end, committed));
        }
        let upload = self.upload.as_mut().ok_or_else(|| ApiError::invalid("the upload is over"))?;
        if !self.started {
            let at = self.app.now();
            self.app.storage.update_transfer(self.id, move |t| Ok(t.start_upload(at)?)).await?;
            self.started = true;
        }
        self.since_checkpoint += chunk.len() as u64;
        let n = chunk.len() as u64;
        if let Err(e) = upload.write(chunk).await {
            return Err(self.failed_write(e).await);
        }
        self.app.metrics.upload_bytes.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        if self.auto_checkpoint && self.since_checkpoint >= CHECKPOINT_BYTES {
            return self.sync_point().await.map(Some);
        }
        Ok(None)
    }

    /// Where `more` bytes would end, if that is past the declared length. The caller refuses
    /// them before any is written and makes what came before durable (the client may resume
    /// from it): nothing past the declared length is ever committed.
    fn past_declared(&self, more: u64) -> Option<(u64, u64)> {
        let declared = self.declared_length?;
        let end = self.offset() + self.pending.len() as u64 + more;
        (end > declared).then_some((declared, end))
    }

    /// The transfer.
    pub fn transfer_id(&self) -> FileTransferId {
        self.id
    }

    /// Whether `write` checkpoints by itself every [`CHECKPOINT_BYTES`]. TUS turns it off while
    /// a chunk's checksum is unverified: a bad chunk must leave the committed offset unmoved.
    pub fn set_auto_checkpoint(&mut self, on: bool) {
        self.auto_checkpoint = on;
    }

    /// Records `UploadStarted` now (TUS creation), not at the first byte.
    pub async fn mark_started(&mut self) -> Result<()> {
        if !self.started {
            let at = self.app.now();
            self.app.storage.update_transfer(self.id, move |t| Ok(t.start_upload(at)?)).await?;
            self.started = true;
        }
        Ok(())
    }

    /// Takes a network frame of any size: frames are gathered into writes of at least
    /// [`FRAME_BUFFER`] bytes (the size limit is still checked on every frame).
    pub async fn write_frame(&mut self, frame: &[u8]) -> Result<()> {
        let offset = self.offset() + self.pending.len() as u64;
        if offset + frame.len() as u64 > self.limit {
            self.discard().await;
            return Err(too_large(self.limit));
        }
        if let Some((declared, end)) = self.past_declared(frame.len() as u64) {
            let committed = self.checkpoint().await?;
            return Err(past_declared_length(declared, end, committed));
        }
        self.pending.extend_from_slice(frame);
        if self.pending.len() >= FRAME_BUFFER {
            let chunk = self.pending.split().freeze();
            self.write_raw(chunk).await?;
        }
        Ok(())
    }

    async fn flush_frames(&mut self) -> Result<()> {
        if !self.pending.is_empty() {
            let chunk = self.pending.split().freeze();
            self.write_raw(chunk).await?;
        }
        Ok(())
    }

    /// Makes everything received durable; returns the committed offset.
    pub async fn checkpoint(&mut self) -> Result<u64> {
        self.flush_frames().await?;
        self.sync_point().await
    }

    async fn sync_point(&mut self) -> Result<u64> {
        let at = self.app.now();
        let upload = self.upload.as_mut().ok_or_else(|| ApiError::invalid("the upload is over"))?;
        self.since_checkpoint = 0;
        match upload.checkpoint(at).await {
            Ok(committed) => Ok(committed),
            Err(e) => Err(self.failed_write(e).await),
        }
    }

    /// A write or checkpoint failed. Out of space, the upload ends for good: its partial file
    /// is deleted at once (it would keep the disk full) and the transfer fails with a reason
    /// that says so; the sender initializes a new transfer once there is room. Any other
    /// failure leaves the durable prefix to resume from.
    async fn failed_write(&mut self, e: storage::Error) -> ApiError {
        if !e.is_storage_full() {
            return e.into();
        }
        tracing::warn!(transfer = %self.id, received = self.offset(), "upload failed: out of storage space");
        self.discard().await;
        let at = self.app.now();
        if let Err(e) = self
            .app
            .storage
            .update_transfer(self.id, move |t| Ok(t.fail(STORAGE_FULL_TEXT, at)?))
            .await
        {
            tracing::warn!(transfer = %self.id, error = %e, "failing an upload that ran out of space");
        }
        ApiError::storage_full()
    }

    async fn discard(&mut self) {
        if let Some(scan) = self.scan.take() {
            scan.abort();
        }
        self.md5 = None;
        drop(self.upload.take());
        if let Err(e) = self.app.storage.abort_upload(&UploadId::for_transfer(self.id)).await {
            tracing::warn!(transfer = %self.id, error = %e, "discarding an upload failed");
        }
    }

    /// The client finished sending: completes the upload, checks checksums, and hands the scan
    /// to a background task that publishes (or fails) the transfer.
    pub async fn finish(mut self) -> Result<UploadResult> {
        self.flush_frames().await?;
        if let Some(declared) = self.declared_length.filter(|n| *n != self.offset()) {
            // Keep what arrived, durably: the client can resume and send the rest.
            self.sync_point().await?;
            return Err(ApiError::invalid(format!(
                "the upload ended at {} bytes but its declared length is {declared}",
                self.offset()
            )));
        }
        let upload = self.upload.take().ok_or_else(|| ApiError::invalid("the upload is over"))?;
        let app = self.app.clone();
        let (transfer, outcome) =
            match app.storage.complete_upload(self.id, upload, app.now()).await {
                Ok(done) => done,
                Err(e) => return Err(self.failed_write(e).await),
            };
        // The MD5 decides the answer only if the sender declared a checksum (a mismatch is
        // 400/9 here, as in Altinn), and an unscanned file is published now, with its MD5: then
        // it followed the upload. Otherwise the scan decides: the MD5 is computed from the blob
        // beside it (several times faster than clamd) and publication waits for both, so a
        // Published transfer always shows its checksum and the client is not held up by MD5.
        // A small file (storage's `INLINE_MD5_LIMIT`) got its MD5 while it was written, and
        // `complete_upload` already checked and recorded it.
        let content = transfer.content.expect("a completed upload has content");
        if let Some(file) = self.scan_file.take() {
            let _ = file.send(content);
        }
        let digest = content.blake3;
        let (transfer, md5) = match self.md5.take() {
            _ if content.md5.is_some() => (transfer, None),
            Some(follower) => (record_followed_md5(&app, self.id, digest, follower).await?, None),
            None => {
                let (task_app, id) = (app.clone(), self.id);
                let recording = app.spawn(async move {
                    if let Err(e) = task_app.record_blob_md5(id, &digest).await {
                        tracing::warn!(transfer = %id, error = %e, "recording the MD5 failed");
                    }
                });
                (transfer, Some(recording))
            }
        };
        if outcome == UploadOutcome::ChecksumMismatch
            || transfer.latest_status().text.as_deref() == Some("Checksum mismatch")
        {
            if let Some(scan) = self.scan.take() {
                scan.abort();
            }
            return Err(ApiError::altinn(9));
        }
        if let Some(scan) = self.scan.take() {
            let id = self.id;
            let task_app = app.clone();
            app.spawn(async move {
                let app = task_app;
                let first = scan.await.unwrap_or_else(scan::lost_scan);
                if let Some(recording) = md5 {
                    let _ = recording.await;
                }
                scan::finish_scan(app, id, Some(first)).await;
            });
        }
        Ok(UploadResult { transfer })
    }
}

/// Records the MD5 `follower` computed; if it failed, hashes the stored blob (`digest`) instead.
async fn record_followed_md5(
    app: &App,
    id: FileTransferId,
    digest: Digest,
    follower: Md5Follower,
) -> Result<FileTransfer> {
    match follower.finish().await {
        Ok(md5) => Ok(app.storage.record_md5(id, md5, app.now()).await?),
        Err(e) => {
            tracing::warn!(transfer = %id, error = %e, "MD5 follower failed; hashing the blob");
            app.record_blob_md5(id, &digest).await
        }
    }
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

/// The client webhooks go out with: rustls on ring, no redirects (a redirect could lead past the
/// SSRF check), a timeout per attempt.
fn webhook_client(timeout: Duration) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .build()
        .expect("an HTTP client builds")
}
