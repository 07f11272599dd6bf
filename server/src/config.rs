//! Server configuration: a TOML file (unknown keys rejected), then environment overrides
//! (`FERRY_LISTEN`, `FERRY_DATA_DIR`, `FERRY_CLAMD`, `FERRY_CLAMD_DB`, `FERRY_METADATA`,
//! `FERRY_METADATA_SCHEMA`, `FERRY_METADATA_PASSWORD`, `FERRY_DEV`), then
//! command-line flags.
//! `config.example.toml` beside this crate documents every key; a test parses it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use scanner::{ClamdAddress, ClamdOptions};
use serde::Deserialize;

use crate::auth::IssuerConfig;

/// Everything the server needs to start.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address to listen on (gRPC, gRPC-Web and HTTP share it).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Data directory: index, blobs, temporaries, the development key.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Development mode: create and trust a signing key in the data directory (`ferry token`).
    #[serde(default)]
    pub dev: bool,
    /// The scanner.
    #[serde(default)]
    pub clamd: ClamdConfig,
    /// Token validation.
    #[serde(default)]
    pub auth: AuthConfig,
    /// Limits.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Cross-origin access for browsers (gRPC-Web and REST).
    #[serde(default)]
    pub cors: CorsConfig,
    /// The base URL clients reach the server at (CloudEvent `source`); default `http://{listen}`.
    #[serde(default)]
    pub public_url: Option<String>,
    /// Life-cycle jobs.
    #[serde(default)]
    pub lifecycle: LifecycleConfig,
    /// Webhook delivery.
    #[serde(default)]
    pub webhooks: crate::app::webhooks::WebhookConfig,
    /// The data directory's storage.
    #[serde(default)]
    pub storage: StorageConfig,
    /// The web console.
    #[serde(default)]
    pub console: ConsoleConfig,
}

/// `[storage]`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// Where the metadata lives: `redb` (the default: `index.redb` in the data directory) or a
    /// PostgreSQL URL, `postgres://user@host:port/database`. `FERRY_METADATA` overrides it. The
    /// URL may hold a password; `metadata_password_file` or `FERRY_METADATA_PASSWORD` keep it
    /// out of the file. Never logged.
    #[serde(default = "default_metadata")]
    pub metadata: String,
    /// The PostgreSQL schema of Ferry's tables (created with them). Default `ferry`;
    /// `FERRY_METADATA_SCHEMA` overrides it.
    #[serde(default = "default_metadata_schema")]
    pub metadata_schema: String,
    /// A file whose first line is the PostgreSQL password (e.g. a mounted secret).
    #[serde(default)]
    pub metadata_password_file: Option<PathBuf>,
    /// The PostgreSQL password, from `FERRY_METADATA_PASSWORD` only (not a TOML key).
    #[serde(skip)]
    pub metadata_password: Option<String>,
    /// Bytes of the data directory's filesystem that uploads leave free for the index; below
    /// it uploads are refused (507 / RESOURCE_EXHAUSTED) and `/health/ready` says not ready.
    /// 0 turns the reserve off.
    #[serde(default = "default_min_free")]
    pub min_free_bytes: u64,
    /// Files of at most this many bytes are kept inside the index (one commit, no file of their
    /// own) rather than as files under `blobs/`. 0: every file is a blob file.
    #[serde(default = "default_inline_max")]
    pub inline_max_bytes: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            metadata: default_metadata(),
            metadata_schema: default_metadata_schema(),
            metadata_password_file: None,
            metadata_password: None,
            min_free_bytes: default_min_free(),
            inline_max_bytes: default_inline_max(),
        }
    }
}

/// Secrets stay out of logs: the URL is shown without its password.
impl std::fmt::Debug for StorageConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageConfig")
            .field("metadata", &redact_url(&self.metadata))
            .field("metadata_schema", &self.metadata_schema)
            .field("metadata_password_file", &self.metadata_password_file)
            .field("metadata_password", &self.metadata_password.as_ref().map(|_| "…"))
            .field("min_free_bytes", &self.min_free_bytes)
            .field("inline_max_bytes", &self.inline_max_bytes)
            .finish()
    }
}

/// Which engine keeps the metadata.
#[derive(Debug, Clone)]
pub enum MetadataBackend {
    /// redb in the data directory.
    Redb,
    /// PostgreSQL.
    Postgres(storage::PgOptions),
}

impl StorageConfig {
    /// The metadata backend `metadata` names, with its password resolved.
    pub fn metadata_backend(&self) -> anyhow::Result<MetadataBackend> {
        let url = self.metadata.trim();
        if url.is_empty() || url == "redb" {
            return Ok(MetadataBackend::Redb);
        }
        anyhow::ensure!(
            url.starts_with("postgres://") || url.starts_with("postgresql://"),
            "[storage] metadata is {:?}: use \"redb\" or a postgres:// URL",
            redact_url(url)
        );
        let password = match (&self.metadata_password, &self.metadata_password_file) {
            (Some(password), _) => Some(password.clone()),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path).with_context(|| {
                    format!("reading metadata_password_file {}", path.display())
                })?;
                Some(text.lines().next().unwrap_or_default().to_owned())
            }
            (None, None) => None,
        };
        Ok(MetadataBackend::Postgres(storage::PgOptions {
            schema: self.metadata_schema.clone(),
            password,
            ..storage::PgOptions::new(url)
        }))
    }
}

/// `url` without the password of its user-info part (`postgres://u:secret@h` → `postgres://u:…@h`).
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((user_info, host)) if user_info.contains(':') => {
            let user = user_info.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:…@{host}{path}")
        }
        _ => url.to_owned(),
    }
}

fn default_metadata() -> String {
    "redb".to_owned()
}

fn default_metadata_schema() -> String {
    storage::PgOptions::DEFAULT_SCHEMA.to_owned()
}

fn default_inline_max() -> u64 {
    storage::DEFAULT_INLINE_MAX
}

fn default_min_free() -> u64 {
    storage::DEFAULT_MIN_FREE_BYTES
}

/// `[lifecycle]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LifecycleConfig {
    /// How often due jobs run, in seconds.
    #[serde(default = "default_job_interval")]
    pub interval_secs: u64,
    /// An upload with no activity this long fails, in seconds (Altinn: 24 h).
    #[serde(default = "default_stuck")]
    pub stuck_upload_secs: u64,
    /// A scan not finished this long after the upload fails the transfer, in seconds.
    #[serde(default = "default_scan_timeout")]
    pub scan_timeout_secs: u64,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        Self {
            interval_secs: default_job_interval(),
            stuck_upload_secs: default_stuck(),
            scan_timeout_secs: default_scan_timeout(),
        }
    }
}

fn default_job_interval() -> u64 {
    30
}
fn default_stuck() -> u64 {
    24 * 3600
}
fn default_scan_timeout() -> u64 {
    2 * 3600
}

/// `[cors]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsConfig {
    /// Origins allowed to call the API from a browser (e.g. `https://portal.example.no`), or
    /// `["*"]` for any. Empty (the default): no CORS headers, browsers refuse cross-origin calls.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
}

/// `[clamd]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClamdConfig {
    /// `unix:/path/to/clamd.sock` or `tcp:host:port`.
    #[serde(default = "default_clamd")]
    pub address: String,
    /// Longest wait for the verdict after the last byte, in seconds.
    #[serde(default = "default_reply_timeout")]
    pub reply_timeout_secs: u64,
    /// Longest wait between scan retries while clamd is unavailable, in seconds.
    #[serde(default = "default_retry_max")]
    pub retry_max_secs: u64,
    /// Resources whose senders may disable the virus scan (`disableVirusScan`): an operator's
    /// approval, as Altinn's administrators give it. Default none.
    #[serde(default)]
    pub unscanned_resources: Vec<String>,
    /// Longest stream sent to clamd, in bytes: at most clamd's `StreamMaxLength` and
    /// `MaxFileSize` (which clamd caps at 2 GiB − 3). A longer file is scanned as segments of
    /// this length overlapping by 1 MiB. At least 4 MiB.
    #[serde(default = "default_max_stream")]
    pub max_stream_bytes: u64,
    /// Most segments of one large file scanned at the same time, each on its own clamd
    /// connection; Ferry never uses more than clamd's `MaxThreads` (it asks clamd).
    #[serde(default = "default_parallel_segments")]
    pub max_parallel_segments: usize,
    /// The signature directory clamd loaded (its `DatabaseDirectory`). A file longer than
    /// `max_stream_bytes` is checked against its whole-file hash signatures (`.hdb`, `.hsb`,
    /// also inside `.cvd`/`.cld`), which no segment can match; without it such a file is not
    /// published. `FERRY_CLAMD_DB` overrides it.
    #[serde(default)]
    pub database_dir: Option<PathBuf>,
}

impl Default for ClamdConfig {
    fn default() -> Self {
        Self {
            address: default_clamd(),
            reply_timeout_secs: default_reply_timeout(),
            retry_max_secs: default_retry_max(),
            unscanned_resources: Vec::new(),
            max_stream_bytes: default_max_stream(),
            max_parallel_segments: default_parallel_segments(),
            database_dir: None,
        }
    }
}

fn default_max_stream() -> u64 {
    scanner::CLAMD_MAX_STREAM
}
fn default_parallel_segments() -> usize {
    4
}

/// `[auth]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Clock leeway for `exp`, in seconds.
    #[serde(default = "default_leeway")]
    pub leeway_secs: u64,
    /// Trusted issuers.
    #[serde(default)]
    pub issuers: Vec<IssuerConfig>,
    /// How often issuers' JWKS URLs are fetched again (seconds).
    #[serde(default = "default_jwks_refresh")]
    pub jwks_refresh_secs: u64,
    /// Altinn's token exchange.
    #[serde(default)]
    pub exchange: ExchangeConfig,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            leeway_secs: default_leeway(),
            issuers: Vec::new(),
            jwks_refresh_secs: default_jwks_refresh(),
            exchange: ExchangeConfig::default(),
        }
    }
}

fn default_jwks_refresh() -> u64 {
    3600
}

/// `[auth.exchange]`: `GET /authentication/api/v1/exchange/maskinporten`, which Altinn clients
/// call first to swap their Maskinporten token for one the broker accepts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExchangeConfig {
    /// Issuers (each also under `[[auth.issuers]]`) whose tokens may be exchanged: Maskinporten's.
    /// Empty: the exchange is off (in development mode the development issuer is added).
    #[serde(default)]
    pub issuers: Vec<String>,
    /// The `iss` of exchanged tokens. Default: `{public_url}/authentication/api/v1/openid/`.
    pub issuer: Option<String>,
    /// PKCS#8 PEM EC P-256 private key that signs exchanged tokens (ES256). Required when the
    /// exchange is on, except in development mode (the development key signs).
    pub signing_key_file: Option<PathBuf>,
    /// Public keys (PEM) of earlier signing keys: still accepted and published in the JWKS,
    /// so tokens signed before a rotation stay valid until they expire.
    #[serde(default)]
    pub verification_key_files: Vec<PathBuf>,
    /// Lifetime of an exchanged token, in seconds.
    #[serde(default = "default_exchange_ttl")]
    pub ttl_secs: u64,
}

impl Default for ExchangeConfig {
    fn default() -> Self {
        Self {
            issuers: Vec::new(),
            issuer: None,
            signing_key_file: None,
            verification_key_files: Vec::new(),
            ttl_secs: default_exchange_ttl(),
        }
    }
}

fn default_exchange_ttl() -> u64 {
    1800
}

/// `[limits]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest upload whatever a resource allows, in bytes.
    #[serde(default = "default_max_upload")]
    pub max_upload_bytes: u64,
    /// A gRPC watcher that accepts no message for this long is closed with the cursor to resume
    /// from (seconds).
    #[serde(default = "default_watch_stall")]
    pub watch_stall_secs: u64,
    /// An upload whose request body (HTTP) or stream (gRPC) brings no byte for this long is
    /// checkpointed and cut off: 408 and `Connection: close`, gRPC UNAVAILABLE; it resumes from
    /// its committed offset (seconds, at least 1).
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_secs: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_upload_bytes: default_max_upload(),
            watch_stall_secs: default_watch_stall(),
            idle_timeout_secs: default_idle_timeout(),
        }
    }
}

fn default_idle_timeout() -> u64 {
    30
}

fn default_watch_stall() -> u64 {
    30
}
fn default_listen() -> SocketAddr {
    "127.0.0.1:8080".parse().expect("valid default address")
}
fn default_data_dir() -> PathBuf {
    ".ferry/data".into()
}
fn default_clamd() -> String {
    "unix:.ferry/clamd/clamd.sock".into()
}
fn default_reply_timeout() -> u64 {
    600
}
fn default_retry_max() -> u64 {
    60
}
fn default_leeway() -> u64 {
    30
}
fn default_max_upload() -> u64 {
    storage::model::ResourceConfig::GLOBAL_MAX_SIZE
}

impl Default for Config {
    fn default() -> Self {
        toml::from_str("").expect("an empty config is valid")
    }
}

impl Config {
    /// Reads `path` (or the defaults), then applies environment overrides.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        let mut config = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?
            }
            None => Self::default(),
        };
        if let Ok(v) = std::env::var("FERRY_LISTEN") {
            config.listen = v.parse().context("FERRY_LISTEN")?;
        }
        if let Ok(v) = std::env::var("FERRY_DATA_DIR") {
            config.data_dir = v.into();
        }
        if let Ok(v) = std::env::var("FERRY_CLAMD") {
            config.clamd.address = v;
        }
        if let Ok(v) = std::env::var("FERRY_CLAMD_DB") {
            config.clamd.database_dir = Some(v.into());
        }
        if let Ok(v) = std::env::var("FERRY_METADATA") {
            config.storage.metadata = v;
        }
        if let Ok(v) = std::env::var("FERRY_METADATA_SCHEMA") {
            config.storage.metadata_schema = v;
        }
        if let Ok(v) = std::env::var("FERRY_METADATA_PASSWORD") {
            config.storage.metadata_password = Some(v);
        }
        if let Ok(v) = std::env::var("FERRY_DEV") {
            config.dev = matches!(v.as_str(), "1" | "true" | "yes");
        }
        config.clamd_options()?;
        config.storage.metadata_backend()?;
        Ok(config)
    }

    /// The parsed clamd address.
    pub fn clamd_address(&self) -> anyhow::Result<ClamdAddress> {
        self.clamd.address.parse().map_err(|e: String| anyhow::anyhow!(e))
    }

    /// How to talk to clamd; refuses limits it cannot work with.
    pub fn clamd_options(&self) -> anyhow::Result<ClamdOptions> {
        let clamd = &self.clamd;
        anyhow::ensure!(
            (scanner::MIN_SEGMENT..=scanner::CLAMD_MAX_STREAM).contains(&clamd.max_stream_bytes),
            "[clamd] max_stream_bytes must be between {} and {} (clamd's own ceiling), not {}",
            scanner::MIN_SEGMENT,
            scanner::CLAMD_MAX_STREAM,
            clamd.max_stream_bytes
        );
        anyhow::ensure!(
            (1..=256).contains(&clamd.max_parallel_segments),
            "[clamd] max_parallel_segments must be between 1 and 256, not {}",
            clamd.max_parallel_segments
        );
        Ok(ClamdOptions {
            reply_timeout: Duration::from_secs(clamd.reply_timeout_secs),
            max_stream_len: clamd.max_stream_bytes,
            max_parallel_segments: clamd.max_parallel_segments,
            database_dir: clamd.database_dir.clone(),
            ..ClamdOptions::new(self.clamd_address()?)
        })
    }

    /// Token leeway.
    pub fn leeway(&self) -> Duration {
        Duration::from_secs(self.auth.leeway_secs)
    }
}

/// `[console]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// OpenID Connect sign-in (`[console.oidc]`).
    pub oidc: Option<OidcConfig>,
}

/// `[console.oidc]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The provider's issuer URL; its discovery document is
    /// `{issuer}/.well-known/openid-configuration`.
    pub issuer: String,
    /// This client's id at the provider (the ID token's audience).
    pub client_id: String,
    /// The client secret (HTTP Basic at the token endpoint); none for a public client.
    pub client_secret: Option<String>,
    /// Scopes to request.
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// The provider's name on the sign-in button.
    pub name: Option<String>,
}

fn default_scopes() -> Vec<String> {
    vec!["openid".into()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metadata_backend_is_redb_or_a_postgres_url_and_its_password_never_shows() {
        let mut storage = StorageConfig::default();
        assert!(matches!(storage.metadata_backend().unwrap(), MetadataBackend::Redb));
        storage.metadata = "mysql://x@db/ferry".into();
        let refused = storage.metadata_backend().unwrap_err().to_string();
        assert!(refused.contains("postgres://"), "{refused}");

        storage.metadata = "postgres://ferry:s3cret@db.internal:5433/broker".into();
        storage.metadata_schema = "tenant_a".into();
        let MetadataBackend::Postgres(pg) = storage.metadata_backend().unwrap() else {
            panic!("a postgres:// URL is PostgreSQL")
        };
        assert_eq!(pg.schema, "tenant_a");
        assert_eq!(redact_url(&storage.metadata), "postgres://ferry:…@db.internal:5433/broker");
        for shown in [format!("{storage:?}"), format!("{pg:?}")] {
            assert!(!shown.contains("s3cret"), "{shown}");
        }

        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("pw");
        std::fs::write(&secret, "from-file\nignored\n").unwrap();
        storage.metadata = "postgres://ferry@db/broker".into();
        storage.metadata_password_file = Some(secret);
        let MetadataBackend::Postgres(pg) = storage.metadata_backend().unwrap() else {
            panic!("PostgreSQL")
        };
        assert_eq!(pg.password.as_deref(), Some("from-file"));
        storage.metadata_password = Some("from-env".into());
        let MetadataBackend::Postgres(pg) = storage.metadata_backend().unwrap() else {
            panic!("PostgreSQL")
        };
        assert_eq!(pg.password.as_deref(), Some("from-env"), "the environment wins");
    }

    #[test]
    fn the_example_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml");
        let text = std::fs::read_to_string(path).unwrap();
        let config: Config = toml::from_str(&text).unwrap();
        assert_eq!(config.listen.port(), 8080);
        assert!(config.dev);
        assert_eq!(config.auth.issuers.len(), 1);
        config.clamd_address().unwrap();
        let clamd = config.clamd_options().unwrap();
        assert_eq!(clamd.max_stream_len, scanner::CLAMD_MAX_STREAM);
        assert_eq!(clamd.max_parallel_segments, 4);
    }

    #[test]
    fn clamd_limits_it_cannot_work_with_are_refused() {
        let mut config = Config::default();
        config.clamd.max_stream_bytes = scanner::CLAMD_MAX_STREAM + 1;
        assert!(config.clamd_options().is_err());
        config.clamd.max_stream_bytes = 1024;
        assert!(config.clamd_options().is_err());
        config.clamd.max_stream_bytes = 8 << 20;
        config.clamd.max_parallel_segments = 0;
        assert!(config.clamd_options().is_err());
    }

    #[test]
    fn unknown_keys_are_rejected() {
        assert!(toml::from_str::<Config>("listne = \"127.0.0.1:1\"").is_err());
        assert!(toml::from_str::<Config>("[clamd]\nadress = \"x\"").is_err());
    }
}
