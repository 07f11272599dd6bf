//! Webhook delivery (events-design §7), a use case: fans each party's new events out to the
//! subscriptions that match them and delivers them at least once, with the Standard Webhooks
//! signature, retries on Altinn's ladder, dead letters and the SSRF check before every attempt.
//! The subscription API over HTTP is `crate::api::webhooks`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use hmac::{KeyInit, Mac};
use reqwest::{StatusCode, header};
use serde_json::{Value, json};
use storage::webhooks::{Outcome, Subscription};

use super::App;

mod config;

pub use config::{
    Dispatch, IN_FLIGHT, InFlight, PER_SUBSCRIPTION_IN_FLIGHT, WebhookConfig, http_client,
};

/// Whether an address may receive webhooks.
pub fn is_public(ip: IpAddr, allow_loopback: bool) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    if ip.is_loopback() {
        return allow_loopback;
    }
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || (a == 100 && (64..128).contains(&b)) // CGNAT
                || a == 0
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            !(v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80 // link local
                || (first == 0x2001 && v6.segments()[1] == 0x0db8)) // documentation
        }
    }
}

/// The SSRF check of an endpoint URL: scheme, and every resolved address public.
pub async fn check_endpoint(url: &str, allow_loopback: bool) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("endPoint is not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err("endPoint must be an http or https URL".into());
    }
    let host = parsed.host_str().ok_or("endPoint has no host")?;
    let port = parsed.port_or_known_default().unwrap_or(443);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<_> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("endPoint host does not resolve: {e}"))?
        .collect();
    if addrs.is_empty() {
        return Err("endPoint host does not resolve".into());
    }
    match addrs.iter().find(|a| !is_public(a.ip(), allow_loopback)) {
        Some(bad) => {
            Err(format!("endPoint resolves to {}, which is not a public address", bad.ip()))
        }
        None => Ok(()),
    }
}

pub(crate) fn new_secret() -> String {
    use rand_core::RngCore as _;
    let mut bytes = [0u8; 32];
    rand_core::OsRng.fill_bytes(&mut bytes);
    format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// `webhook-signature` for a body: one `v1,<sig>` per secret, space-separated.
pub fn signature(secrets: &[String], id: &str, timestamp: i64, body: &[u8]) -> String {
    secrets
        .iter()
        .filter_map(|secret| {
            let key = base64::engine::general_purpose::STANDARD
                .decode(secret.strip_prefix("whsec_")?)
                .ok()?;
            let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).ok()?;
            mac.update(format!("{id}.{timestamp}.").as_bytes());
            mac.update(body);
            Some(format!(
                "v1,{}",
                base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
            ))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The validation handshake, retried briefly (1 s, 5 s, 10 s, 30 s).
pub(crate) async fn validate(app: Arc<App>, sub: Subscription) {
    let event = json!({
        "id": uuid::Uuid::new_v4().to_string(),
        "specversion": "1.0",
        "type": "platform.events.validatesubscription",
        "source": format!("{}/events/api/v1/subscriptions/{}", app.public_url.trim_end_matches('/'), sub.id),
    });
    for delay in [0u64, 1, 5, 10, 30] {
        tokio::select! {
            () = app.shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(delay)) => {}
        }
        let id = event["id"].as_str().unwrap_or_default().to_owned();
        if let Ok(response) = send_event(&app, &sub, &id, &event).await
            && response.status().is_success()
        {
            let _ = app.storage.modify_subscription(sub.id, |s| s.validated = true).await;
            return;
        }
    }
    tracing::warn!(subscription = sub.id, "endpoint did not answer the validation handshake");
}

async fn send_event(
    app: &App,
    sub: &Subscription,
    id: &str,
    event: &Value,
) -> Result<reqwest::Response, String> {
    check_endpoint(&sub.end_point, app.webhooks.config.allow_loopback).await?;
    let body = serde_json::to_vec(event).map_err(|e| e.to_string())?;
    let timestamp = app.now().as_unix_micros() / 1_000_000;
    app.webhooks
        .http
        .post(&sub.end_point)
        .header(header::CONTENT_TYPE, "application/json; charset=utf-8")
        .header("webhook-id", id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature(&sub.secrets, id, timestamp, &body))
        .body(body)
        .send()
        .await
        .map_err(|e| e.to_string())
}

/// Fans out new events and delivers what is due, until shutdown.
pub async fn run_forever(app: Arc<App>) {
    let poll = Duration::from_millis(app.webhooks.config.poll_ms.max(10));
    // New events wake the dispatcher at once; the poll catches retries coming due.
    let mut events = app.storage.watch_events();
    loop {
        events.borrow_and_update();
        if let Err(e) = deliver_due(&app).await {
            tracing::error!(error = %e, "webhook delivery failed; retrying");
        }
        tokio::select! {
            () = app.shutdown.cancelled() => return,
            () = tokio::time::sleep(poll) => {}
            Ok(()) = events.changed() => {}
        }
    }
}

async fn deliver_due(app: &Arc<App>) -> anyhow::Result<()> {
    let now = app.now();
    app.storage.fan_out(now, 1024).await?;
    // Attempts that end from here on may be in the snapshot below as still due.
    app.webhooks.in_flight.0.lock().expect("in-flight lock").ended.clear();
    // Each attempt runs on its own: the loop never waits for an endpoint, and one slow
    // subscription holds at most PER_SUBSCRIPTION_IN_FLIGHT slots.
    for (delivery, sub, event) in app.storage.due_deliveries(now, 1024)? {
        {
            let mut attempts = app.webhooks.in_flight.0.lock().expect("in-flight lock");
            if attempts.running.len() >= IN_FLIGHT {
                break;
            }
            let busy = attempts.running.values().filter(|s| **s == sub.id).count();
            if attempts.running.contains_key(&delivery.id)
                || attempts.ended.contains(&delivery.id)
                || busy >= PER_SUBSCRIPTION_IN_FLIGHT
            {
                continue;
            }
            attempts.running.insert(delivery.id, sub.id);
        }
        let app = app.clone();
        let task_app = app.clone();
        task_app.spawn(async move {
            let outcome = attempt(&app, &sub, &event, delivery.attempts).await;
            if let Err(e) = app.storage.record_delivery(delivery.id, outcome, app.now()).await {
                tracing::error!(delivery = delivery.id, error = %e, "recording a delivery failed");
            }
            let mut attempts = app.webhooks.in_flight.0.lock().expect("in-flight lock");
            attempts.running.remove(&delivery.id);
            attempts.ended.insert(delivery.id);
        });
    }
    Ok(())
}

async fn attempt(
    app: &App,
    sub: &Subscription,
    e: &storage::EventRecord,
    attempts: u32,
) -> Outcome {
    let now = app.now();
    // Rights again: the subscriber must still have a role on the resource.
    let allowed = app
        .storage
        .resource(&e.resource)
        .ok()
        .flatten()
        .is_some_and(|r| r.may_send(&sub.consumer) || r.may_receive(&sub.consumer));
    if !allowed {
        return Outcome::GiveUp {
            error: "the subscriber no longer has rights on the resource".into(),
        };
    }
    let event = crate::app::events::cloud_event(app, e);
    let mut retry_after = None;
    let error = match send_event(app, sub, &e.id.to_string(), &event).await {
        Ok(r) if r.status().is_success() => return Outcome::Delivered,
        Ok(r) if r.status() == StatusCode::GONE => {
            return Outcome::Disable { reason: "the endpoint answered HTTP 410 Gone".into() };
        }
        Ok(r) => {
            let status = r.status();
            // An overloaded endpoint may say when to come back; that replaces the ladder's
            // delay, not its length, so an endpoint that always answers 503 still ends.
            retry_after = r
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .filter(|_| matches!(status.as_u16(), 429 | 502 | 503 | 504))
                .map(|secs| Duration::from_secs(secs.min(43_200)));
            format!("HTTP {status}")
        }
        Err(e) => e,
    };
    let disable_after = Duration::from_secs(app.webhooks.config.disable_after_secs);
    if sub.failing_since.is_some_and(|since| now.saturating_duration_since(since) > disable_after) {
        return Outcome::Disable {
            reason: format!(
                "failing without a success for more than {} ({error})",
                humantime_secs(app.webhooks.config.disable_after_secs)
            ),
        };
    }
    let Some(secs) = app.webhooks.config.retry_ladder_secs.get(attempts as usize) else {
        return Outcome::GiveUp { error };
    };
    let delay = retry_after.unwrap_or_else(|| {
        let jitter = 1.0
            + (rand_core::RngCore::next_u32(&mut rand_core::OsRng) as f64 / u32::MAX as f64 - 0.5)
                * 0.2;
        Duration::from_secs_f64((secs * jitter).max(0.0))
    });
    Outcome::Retry { at: now.saturating_add(delay), error }
}

/// "5 days", "2 hours", "90 seconds": the largest whole unit.
fn humantime_secs(secs: u64) -> String {
    let plural = |n: u64, unit: &str| format!("{n} {unit}{}", if n == 1 { "" } else { "s" });
    match secs {
        s if s >= 86_400 && s % 86_400 == 0 => plural(s / 86_400, "day"),
        s if s >= 3_600 && s % 3_600 == 0 => plural(s / 3_600, "hour"),
        s => plural(s, "second"),
    }
}

/// How many deliveries a subscription's delivery list shows at most, of each kind.
pub const MAX_LISTED_DELIVERIES: usize = 200;

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    /// Not attempted yet.
    Queued,
    /// Being attempted right now.
    InFlight,
    /// Failed at least once; tried again at `next_attempt`.
    Retrying,
    /// Out of attempts, or the subscription was disabled: a dead letter, until replayed.
    Dead,
}

impl DeliveryState {
    /// The name the API and the console show.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::InFlight => "inFlight",
            Self::Retrying => "retrying",
            Self::Dead => "dead",
        }
    }
}

/// One delivery of one event to a subscription, as its owner sees it.
#[derive(Debug, Clone)]
pub struct DeliveryView {
    /// The delivery's id.
    pub id: u64,
    /// The event's position in the log.
    pub seq: u64,
    /// The event (`None` if the log no longer has it).
    pub event: Option<storage::EventRecord>,
    /// Attempts so far.
    pub attempts: u32,
    /// Where it stands.
    pub state: DeliveryState,
    /// The last failure, as recorded.
    pub last_error: Option<String>,
    /// The endpoint's HTTP status in the last failure, when it answered at all.
    pub response_code: Option<u16>,
    /// When it is tried next (pending deliveries only).
    pub next_attempt: Option<storage::model::Timestamp>,
}

/// A subscription's pending deliveries and dead letters, newest first, each list bounded.
#[derive(Debug, Clone)]
pub struct SubscriptionDeliveries {
    /// The subscription.
    pub subscription: Subscription,
    /// Pending deliveries (queued, in flight, retrying), newest first, at most the limit.
    pub pending: Vec<DeliveryView>,
    /// How many are pending in all.
    pub n_pending: usize,
    /// Dead letters, newest first, at most the limit.
    pub dead_letters: Vec<DeliveryView>,
    /// How many dead letters there are in all.
    pub n_dead_letters: usize,
}

/// The HTTP status in a recorded failure: attempts record an answer as `HTTP <status>` (see
/// `attempt`); a failure without one (refused, timed out, SSRF check) has none.
fn response_code(error: &str) -> Option<u16> {
    let (_, rest) = error.split_once("HTTP ")?;
    rest.get(..3).and_then(|code| code.parse().ok()).filter(|code| (100..600).contains(code))
}

impl App {
    /// The subscription `id` if `org` owns it; anyone else's does not exist for the caller.
    pub fn own_subscription(
        &self,
        org: &storage::model::Party,
        id: u64,
    ) -> Result<Subscription, crate::error::ApiError> {
        match self.storage.subscription(id)? {
            Some(sub) if &sub.consumer == org => Ok(sub),
            _ => Err(crate::error::ApiError {
                code: None,
                message: "subscription not found".into(),
                ..crate::error::ApiError::altinn(1)
            }),
        }
    }

    /// A subscription's recent deliveries and dead letters, for its owner only (the same rule
    /// as the rest of the subscription API): newest first, at most `limit` of each
    /// ([`MAX_LISTED_DELIVERIES`] at most). Delivered events leave no record, so a delivery
    /// that succeeded is no longer listed.
    pub fn subscription_deliveries(
        &self,
        caller: &crate::auth::Caller,
        id: u64,
        limit: usize,
    ) -> Result<SubscriptionDeliveries, crate::error::ApiError> {
        let org = super::events::subscriber(caller)?;
        let subscription = self.own_subscription(&org, id)?;
        let limit = limit.clamp(1, MAX_LISTED_DELIVERIES);
        let in_flight: std::collections::HashSet<u64> = self
            .webhooks
            .in_flight
            .0
            .lock()
            .expect("in-flight lock")
            .running
            .keys()
            .copied()
            .collect();
        let view = |d: storage::webhooks::Delivery, dead: bool| {
            let state = match (dead, in_flight.contains(&d.id), d.attempts) {
                (true, _, _) => DeliveryState::Dead,
                (false, true, _) => DeliveryState::InFlight,
                (false, false, 0) => DeliveryState::Queued,
                (false, false, _) => DeliveryState::Retrying,
            };
            let event = self.storage.events_after(d.seq.saturating_sub(1), 1);
            DeliveryView {
                id: d.id,
                seq: d.seq,
                event: event.ok().and_then(|mut e| e.pop()).filter(|e| e.seq == d.seq),
                attempts: d.attempts,
                state,
                response_code: d.last_error.as_deref().and_then(response_code),
                last_error: d.last_error,
                next_attempt: (!dead).then_some(d.due),
            }
        };
        let newest = |mut list: Vec<storage::webhooks::Delivery>| {
            list.sort_by_key(|d| std::cmp::Reverse(d.id));
            let n = list.len();
            list.truncate(limit);
            (list, n)
        };
        let (pending, n_pending) = newest(self.storage.pending_deliveries(id)?);
        let (dead, n_dead_letters) = newest(self.storage.dead_letters(id)?);
        Ok(SubscriptionDeliveries {
            subscription,
            pending: pending.into_iter().map(|d| view(d, false)).collect(),
            n_pending,
            dead_letters: dead.into_iter().map(|d| view(d, true)).collect(),
            n_dead_letters,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_receive_webhooks() {
        for ip in [
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:10.0.0.1",
            "224.0.0.1",
        ] {
            assert!(!is_public(ip.parse().unwrap(), false), "{ip}");
        }
        assert!(
            !is_public("10.0.0.1".parse().unwrap(), true),
            "allow_loopback opens loopback only"
        );
        assert!(is_public("127.0.0.1".parse().unwrap(), true));
        assert!(!is_public("127.0.0.1".parse().unwrap(), false));
        for ip in ["8.8.8.8", "2a00:1450::1"] {
            assert!(is_public(ip.parse().unwrap(), false), "{ip}");
        }
    }

    #[test]
    fn signatures_follow_standard_webhooks() {
        // The Standard Webhooks reference vector.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned();
        let body = br#"{"test": 2432232314}"#;
        let sig = signature(&[secret], "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn a_recorded_failure_names_the_endpoints_status_when_it_answered() {
        assert_eq!(response_code("HTTP 500 Internal Server Error"), Some(500));
        assert_eq!(response_code("the endpoint answered HTTP 410 Gone"), Some(410));
        assert_eq!(
            response_code("failing for more than 5 days (HTTP 503 Service Unavailable)"),
            Some(503)
        );
        assert_eq!(response_code("error sending request: connection refused"), None);
        assert_eq!(response_code("HTTP x"), None);
    }
}
