//! What every use case shares: the [`App`] (storage, scanner, identity, clock, background
//! tasks), its options, readiness, and the access checks all areas use.

use std::sync::Arc;
use std::time::Duration;

use scanner::Clamd;
use storage::model::*;
use storage::{Md5, Storage};
use tokio::task::JoinHandle;

use crate::auth::{Authenticator, Caller};
use crate::error::ApiError;

pub(super) type Result<T, E = ApiError> = std::result::Result<T, E>;

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
pub(super) const READINESS_SCANNER: Duration = Duration::from_secs(2);

/// The application: storage, scanner, identity, and the rules between them. The first fields
/// are what every area uses; the last three are one area's state each, defined in that area's
/// file. Front-end settings (the Watch stall, the console's sessions) live in the front-ends.
pub struct App {
    /// The storage engine.
    pub storage: Storage,
    /// The clamd client.
    pub scanner: Clamd,
    /// Token validation.
    pub auth: Authenticator,
    /// Issues exchanged tokens (and console sessions), when the token exchange is on; its keys
    /// are trusted by `auth`.
    pub(crate) token_issuer: Option<Arc<crate::tokens::TokenIssuer>>,
    pub(crate) options: AppOptions,
    /// Life-cycle timing (the storage schedules with the same values).
    pub lifecycle: storage::Lifecycle,
    /// The public base URL (CloudEvent `source`, links).
    pub public_url: String,
    pub(super) clock: Box<dyn Fn() -> Timestamp + Send + Sync>,
    /// Prometheus metrics.
    pub metrics: crate::metrics::Metrics,
    /// Cancelled when the server shuts down: background work stops at a resumable point.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// Every background task (uploads, downloads, scans), awaited at shutdown.
    pub tasks: tokio_util::task::TaskTracker,
    /// Uploads: the sessions a front-end holds between two of its requests (`held.rs`).
    pub held: super::held::HeldSessions,
    /// Downloads: the `DownloadStarted` debounce (`debounce.rs`).
    pub(super) downloads: super::debounce::DownloadDebounce,
    /// Webhook delivery: settings, client, attempts in flight (`webhooks/config.rs`).
    pub webhooks: super::webhooks::Dispatch,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").field("options", &self.options).finish_non_exhaustive()
    }
}

pub(super) fn require_scope(caller: &Caller, scopes: &[&str]) -> Result<()> {
    if caller.has_any_scope(scopes) { Ok(()) } else { Err(ApiError::missing_scope(scopes)) }
}

pub(super) fn caller_org(caller: &Caller) -> Result<Party> {
    caller.org.clone().ok_or_else(|| ApiError::altinn(7001))
}

pub(super) fn parse_md5(text: &str) -> Result<Md5> {
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
            token_issuer: None,
            lifecycle: storage::Lifecycle::default(),
            public_url: "http://127.0.0.1:8080".into(),
            clock: Box::new(Timestamp::now),
            metrics: crate::metrics::Metrics::default(),
            shutdown: tokio_util::sync::CancellationToken::new(),
            tasks: tokio_util::task::TaskTracker::new(),
            held: Default::default(),
            downloads: Default::default(),
            webhooks: Default::default(),
        }
    }

    /// Sets the life-cycle timing (must match the storage's) and the public base URL.
    pub fn with_lifecycle(mut self, lifecycle: storage::Lifecycle, public_url: String) -> Self {
        self.lifecycle = lifecycle;
        self.public_url = public_url;
        self
    }

    /// Sets the webhook delivery settings.
    pub fn with_webhooks(self, webhooks: super::webhooks::WebhookConfig) -> Self {
        Self { webhooks: super::webhooks::Dispatch::new(webhooks), ..self }
    }

    /// Turns the token exchange on: `issuer` signs exchanged tokens, and they are trusted.
    pub fn with_token_issuer(self, issuer: crate::tokens::TokenIssuer) -> anyhow::Result<Self> {
        self.auth.trust(&issuer.issuer, issuer.verifying_keys()?);
        Ok(Self { token_issuer: Some(Arc::new(issuer)), ..self })
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
        // Held sessions hold the app and tails waiting for bytes: let them go. Their uploads
        // stay resumable (a held session is always at a checkpoint).
        self.held.clear();
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
        Readiness { storage, space, scanner, backends: self.storage.backends() }
    }

    /// A transfer the caller takes part in (sender or recipient). Anyone else learns nothing,
    /// not even that it exists: [`ApiError`] 1 (not found).
    pub(super) fn visible_transfer(&self, org: &Party, id: FileTransferId) -> Result<FileTransfer> {
        let transfer = self.storage.transfer(id)?.ok_or_else(|| ApiError::altinn(1))?;
        if transfer.sender == *org || transfer.recipients.contains(org) {
            Ok(transfer)
        } else {
            Err(ApiError::altinn(1))
        }
    }

    pub(super) fn resource_of(&self, transfer: &FileTransfer) -> Result<ResourceConfig> {
        self.storage.resource(&transfer.resource_id)?.ok_or_else(|| ApiError::altinn(25))
    }
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
    /// The engines of the metadata and of the blobs (`redb`/`postgresql`, `local`).
    pub backends: (&'static str, &'static str),
}

impl Readiness {
    /// Ready for every request, uploads included.
    pub fn is_ready(&self) -> bool {
        self.storage.is_ok() && self.scanner.is_ok()
    }
}
