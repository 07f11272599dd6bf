//! Webhooks (events-design §7): Altinn Events-compatible subscriptions and at-least-once
//! delivery of each party's events.
//!
//! - `POST|GET|DELETE /events/api/v1/subscriptions[/{id}]` (Altinn's field names), plus
//!   `GET …/{id}/deliveries` (pending deliveries and dead letters), `POST …/{id}/replay` (dead
//!   letters) and `POST …/{id}/secret` (rotation): Ferry extensions.
//! - A new subscription receives nothing until its endpoint answered the validation handshake
//!   (a `platform.events.validatesubscription` CloudEvent) with 2xx.
//! - Delivery: one POST per (event, subscription) with the CloudEvent as JSON and Standard
//!   Webhooks headers (`webhook-id` = event id, `webhook-timestamp`, `webhook-signature`
//!   `v1,<base64 HMAC-SHA256(secret, id.timestamp.body)>`, one per secret during a rotation).
//!   2xx succeeds; 410 disables the subscription; 429/503 with `Retry-After` wait as asked;
//!   anything else retries on Altinn's ladder with ±10 % jitter, then dead-letters. A
//!   subscription that has failed for `disable_after` is disabled.
//! - SSRF: an endpoint must be http(s) and every address its host resolves to must be public;
//!   loopback only when `[webhooks] allow_loopback` says so (tests). Checked at creation and
//!   again before every delivery (the name may resolve elsewhere later).
//! - Rights are checked again at delivery: the subscriber must still have a role on the resource.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use serde_json::{Value, json};
use storage::model::{Party, ResourceId};
use storage::webhooks::Subscription;

use crate::app::App;
use crate::app::webhooks::{DeliveryView, check_endpoint, new_secret, validate};
use crate::error::ApiError;

/// The routes.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/events/api/v1/subscriptions", post(create).get(list))
        .route("/events/api/v1/subscriptions/{id}", get(get_one).delete(delete))
        .route("/events/api/v1/subscriptions/{id}/deliveries", get(deliveries))
        .route("/events/api/v1/subscriptions/{id}/replay", post(replay))
        .route("/events/api/v1/subscriptions/{id}/secret", post(rotate_secret))
        .with_state(app)
}

/// The subscriber: whoever may read events.
fn caller(app: &App, headers: &HeaderMap) -> Result<Party, ApiError> {
    let value = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    crate::app::events::event_reader(app, value)
}

fn view(sub: &Subscription, secret: Option<&str>) -> Value {
    let mut v = json!({
        "id": sub.id,
        "endPoint": sub.end_point,
        "resourceFilter": sub.resource_filter.to_urn(),
        "subjectFilter": sub.subject_filter.to_urn(),
        "typeFilter": sub.type_filter,
        "consumer": sub.consumer.to_urn(),
        "createdBy": sub.consumer.to_urn(),
        "created": sub.created.to_rfc3339(),
        "validated": sub.validated,
        "disabled": sub.disabled,
    });
    if let Some(secret) = secret {
        v["secret"] = json!(secret);
    }
    v
}

async fn create(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let org = caller(&app, &headers)?;
    let body = crate::api::http::CiObject::parse(&body)?;
    let field = |name: &'static str| body.string(name);
    let end_point = field("endPoint")?
        .ok_or_else(|| ApiError::invalid_field("endPoint", "The endPoint field is required."))?;
    let resource = field("resourceFilter")?.ok_or_else(|| {
        ApiError::invalid_field("resourceFilter", "The resourceFilter field is required.")
    })?;
    let resource = ResourceId::parse(&resource).map_err(|_| {
        ApiError::invalid_field("resourceFilter", "resourceFilter must be urn:altinn:resource:{id}")
    })?;
    // A subscriber receives only its own organisation's events.
    let subject = match field("subjectFilter")? {
        None => org.clone(),
        Some(s) => Party::parse_lenient(&s)
            .map_err(|e| ApiError::invalid_field("subjectFilter", e.to_string()))?,
    };
    if subject != org {
        return Err(ApiError { http_status: 403, ..ApiError::missing_scope(&[]) }
            .with_message("subjectFilter must be your own organisation"));
    }
    let Some(config) = app.storage.resource(&resource)? else { return Err(ApiError::altinn(25)) };
    if !(config.may_send(&org) || config.may_receive(&org)) {
        return Err(ApiError::altinn(6));
    }
    check_endpoint(&end_point, app.webhooks.config.allow_loopback)
        .await
        .map_err(|e| ApiError::invalid_field("endPoint", e))?;
    let secret = new_secret();
    let sub = app
        .storage
        .create_subscription(Subscription {
            id: 0,
            consumer: org.clone(),
            end_point,
            resource_filter: resource,
            subject_filter: subject,
            type_filter: field("typeFilter")?,
            created: app.now(),
            validated: false,
            disabled: None,
            secrets: vec![secret.clone()],
            from_seq: 0,
            failing_since: None,
        })
        .await?;
    app.spawn(validate(app.clone(), sub.clone()));
    Ok((StatusCode::CREATED, axum::Json(view(&sub, Some(&secret)))).into_response())
}

fn parse_id(id: &str) -> Result<u64, ApiError> {
    id.parse().map_err(|_| ApiError::invalid_field("id", "id must be a number"))
}

/// Someone else's subscription does not exist for this caller (`App::own_subscription`).
fn own(app: &App, org: &Party, id: &str) -> Result<Subscription, ApiError> {
    app.own_subscription(org, parse_id(id)?)
}

/// Also the web console's (its session token passed as the bearer).
pub(crate) async fn list(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let org = caller(&app, &headers)?;
    let subs: Vec<Value> = app
        .storage
        .subscriptions()?
        .iter()
        .filter(|s| s.consumer == org)
        .map(|s| view(s, None))
        .collect();
    Ok(axum::Json(json!({ "count": subs.len(), "subscriptions": subs })).into_response())
}

async fn get_one(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let org = caller(&app, &headers)?;
    Ok(axum::Json(view(&own(&app, &org, &id)?, None)).into_response())
}

async fn delete(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let org = caller(&app, &headers)?;
    let sub = own(&app, &org, &id)?;
    app.storage.delete_subscription(sub.id).await?;
    Ok(StatusCode::OK.into_response())
}

/// Also the web console's (its session token passed as the bearer).
pub(crate) async fn replay(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let org = caller(&app, &headers)?;
    let sub = own(&app, &org, &id)?;
    let n = app.storage.replay_dead_letters(sub.id, app.now()).await?;
    Ok(axum::Json(json!({ "replayed": n })).into_response())
}

#[derive(Debug, serde::Deserialize)]
struct DeliveriesQuery {
    limit: Option<String>,
}

/// A subscription's pending deliveries and dead letters, newest first (`limit` of each, 50 by
/// default, at most `MAX_LISTED_DELIVERIES`).
async fn deliveries(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Query(q): Query<DeliveriesQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let value = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let caller = app.auth.authenticate(value)?;
    let limit = match q.limit.as_deref() {
        None => 50,
        Some(text) => text.parse().map_err(|_| {
            ApiError::invalid_field("limit", "limit must be a whole number (at most 200)")
        })?,
    };
    let list = app.subscription_deliveries(&caller, parse_id(&id)?, limit)?;
    let row = |d: &DeliveryView| {
        json!({
            "id": d.id,
            "sequence": d.seq,
            "eventId": d.event.as_ref().map(|e| e.id.to_string()),
            "type": d.event.as_ref().map(|e| e.kind.type_string()),
            "resourceinstance": d.event.as_ref().map(|e| e.transfer.to_string()),
            "time": d.event.as_ref().map(|e| e.at.to_rfc3339()),
            "state": d.state.name(),
            "attempts": d.attempts,
            "lastError": d.last_error,
            "responseCode": d.response_code,
            "nextAttempt": d.next_attempt.map(|t| t.to_rfc3339()),
        })
    };
    Ok(axum::Json(json!({
        "subscriptionId": list.subscription.id,
        "pendingCount": list.n_pending,
        "pending": list.pending.iter().map(row).collect::<Vec<_>>(),
        "deadLetterCount": list.n_dead_letters,
        "deadLetters": list.dead_letters.iter().map(row).collect::<Vec<_>>(),
    }))
    .into_response())
}

async fn rotate_secret(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let org = caller(&app, &headers)?;
    let sub = own(&app, &org, &id)?;
    let secret = new_secret();
    let new = secret.clone();
    // The new secret signs first; the previous one keeps signing until the next rotation.
    let sub = app
        .storage
        .modify_subscription(sub.id, move |s| {
            s.secrets.insert(0, new.clone());
            s.secrets.truncate(2);
        })
        .await?;
    Ok(axum::Json(view(&sub, Some(&secret))).into_response())
}

impl ApiError {
    /// The same error with another message.
    pub fn with_message(self, message: impl Into<String>) -> Self {
        Self { message: message.into(), ..self }
    }
}
