//! What webhook delivery is configured with (`[webhooks]`), the client it goes out with and the
//! deliveries in flight: the webhook area's state, [`Dispatch`].

use std::time::Duration;

use serde::Deserialize;

/// `[webhooks]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Allow endpoints on loopback addresses (tests, local development). Never private ranges.
    #[serde(default)]
    pub allow_loopback: bool,
    /// Seconds to wait before each retry (Altinn's ladder: 12 attempts over about 35 h).
    #[serde(default = "default_ladder")]
    pub retry_ladder_secs: Vec<f64>,
    /// A subscription failing this long without a success is disabled (seconds; 5 days).
    #[serde(default = "default_disable_after")]
    pub disable_after_secs: u64,
    /// Longest wait for an endpoint's answer (seconds).
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// How often the dispatcher looks for due deliveries (milliseconds).
    #[serde(default = "default_poll")]
    pub poll_ms: u64,
}

fn default_ladder() -> Vec<f64> {
    vec![10.0, 30.0, 60.0, 300.0, 600.0, 1800.0, 3600.0, 10_800.0, 21_600.0, 43_200.0, 43_200.0]
}
fn default_disable_after() -> u64 {
    5 * 86_400
}
fn default_timeout() -> u64 {
    30
}
fn default_poll() -> u64 {
    250
}

impl Default for WebhookConfig {
    fn default() -> Self {
        toml::from_str("").expect("defaults parse")
    }
}

/// Attempts in flight at once for one subscription: a slow endpoint uses at most these.
pub const PER_SUBSCRIPTION_IN_FLIGHT: usize = 4;
/// Attempts in flight at once overall.
pub const IN_FLIGHT: usize = 64;

/// Deliveries being attempted: delivery id → subscription id.
#[derive(Debug, Default)]
pub struct InFlight(pub(super) std::sync::Mutex<Attempts>);

/// What the dispatcher knows of its attempts.
#[derive(Debug, Default)]
pub(super) struct Attempts {
    /// Being attempted: delivery id → subscription id.
    pub(super) running: std::collections::HashMap<u64, u64>,
    /// Attempts that ended since the dispatcher's current round began: its snapshot of due
    /// deliveries may predate their outcome, so they wait for the next round (without it, a
    /// delivery that ended while the round read its snapshot would be sent again).
    pub(super) ended: std::collections::HashSet<u64>,
}

/// The webhook area's state in [`crate::App`]: its settings, its HTTP client, what is in flight.
#[derive(Debug)]
pub struct Dispatch {
    /// `[webhooks]`.
    pub config: WebhookConfig,
    /// The client deliveries go out with ([`http_client`] with the configured timeout).
    pub(super) http: reqwest::Client,
    /// Deliveries being attempted.
    pub(super) in_flight: InFlight,
}

impl Dispatch {
    /// Delivery with `config`.
    pub fn new(config: WebhookConfig) -> Self {
        let http = http_client(Duration::from_secs(config.timeout_secs));
        Self { config, http, in_flight: InFlight::default() }
    }
}

impl Default for Dispatch {
    fn default() -> Self {
        Self::new(WebhookConfig::default())
    }
}

/// A client for calls to other parties' servers: rustls on ring, no redirects (a redirect could
/// lead past the SSRF check), `timeout` per request. Webhooks go out with it, and the console's
/// OpenID Connect calls.
pub fn http_client(timeout: Duration) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .build()
        .expect("an HTTP client builds")
}
