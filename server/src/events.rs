//! The event pull feed: `GET /events/api/v1/events` (Altinn Events' query API, contract §8 and
//! events-design §7.8), with long-polling.
//!
//! A caller sees the events addressed to its own organisation (the CloudEvent `subject`),
//! optionally for one resource and of given types, in log order. `after` is an event id (or
//! `0`); the `next` header names the cursor to continue from: the last returned id, or an opaque
//! `seq:<n>` when the events scanned after it were not the caller's (so nobody learns ids of
//! events they may not see). An unknown cursor is an error, never a silent replay from the start.
//! `wait` (seconds, at most 60) holds an empty answer until a matching event commits.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use storage::EventRecord;

use crate::app::App;
use crate::auth::{SCOPE_EVENTS_SUBSCRIBE, SCOPE_READ, SCOPE_WRITE};
use crate::error::ApiError;

const MAX_PAGE: usize = 1000;
const MAX_WAIT: Duration = Duration::from_secs(60);
const SCAN_BATCH: usize = 1024;

/// The event routes.
pub fn router(app: Arc<App>) -> Router {
    Router::new().route("/events/api/v1/events", get(feed)).with_state(app)
}

/// An event as CloudEvents 1.0 JSON with Altinn's attribute names, plus `sequence`.
pub fn cloud_event(app: &App, e: &EventRecord) -> Value {
    json!({
        "specversion": "1.0",
        "id": e.id.to_string(),
        "type": e.kind.type_string(),
        "time": e.at.to_rfc3339(),
        "resource": e.resource.to_urn(),
        "resourceinstance": e.transfer.to_string(),
        "subject": e.party.to_urn(),
        "source": format!("{}/broker/api/v1/filetransfer", app.public_url.trim_end_matches('/')),
        "data": { "Role": e.role.name() },
        "sequence": format!("{:020}", e.seq),
    })
}

/// Who reads events (feed, Watch, subscriptions): an authenticated caller acting for its
/// organisation, with Altinn Events' scope `altinn:events.subscribe` or a broker scope
/// (`altinn:broker.read`, `altinn:broker.write`): whoever may send or receive transfers may see
/// their events. `altinn:serviceowner` alone is not enough (it configures resources).
pub(crate) fn event_reader(
    app: &App,
    authorization: Option<&str>,
) -> Result<storage::model::Party, ApiError> {
    let caller = app.auth.authenticate(authorization)?;
    let scopes = [SCOPE_EVENTS_SUBSCRIBE, SCOPE_READ, SCOPE_WRITE];
    if !caller.has_any_scope(&scopes) {
        return Err(ApiError::missing_scope(&scopes));
    }
    caller.org.clone().ok_or_else(|| ApiError::altinn(7001))
}

async fn feed(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let value = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let org = event_reader(&app, value)?;
    let param = |name: &str| crate::rest::query_param(&params, name);
    let resource = param("resource").map(|r| {
        storage::model::ResourceId::parse(r).map_err(|_| {
            ApiError::invalid_field("resource", "resource must be urn:altinn:resource:{id}")
        })
    });
    let resource = resource.transpose()?;
    let types: Vec<&str> = params
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("type"))
        .map(|(_, v)| v.as_str())
        .collect();
    let size = match param("size") {
        None => 50,
        Some(v) => {
            v.parse::<usize>().ok().filter(|n| (1..=MAX_PAGE).contains(n)).ok_or_else(|| {
                ApiError::invalid_field("size", format!("size must be 1–{MAX_PAGE}"))
            })?
        }
    };
    let wait = match param("wait") {
        None => Duration::ZERO,
        Some(v) => v
            .parse::<u64>()
            .map(Duration::from_secs)
            .ok()
            .filter(|d| *d <= MAX_WAIT)
            .ok_or_else(|| ApiError::invalid_field("wait", "wait must be 0–60 seconds"))?,
    };
    let mut after = parse_cursor(&app, param("after").unwrap_or("0"))?;
    let filter =
        EventFilter { org, resource, types: types.iter().map(|t| t.to_string()).collect() };
    let matches = |e: &EventRecord| filter.matches(e);
    let deadline = tokio::time::Instant::now() + wait;
    let mut changes = app.storage.watch_events();
    let (page, scanned_to) = loop {
        changes.borrow_and_update();
        let mut page = Vec::new();
        let mut scanned_to = after;
        // Scan in batches until the page is full or the log ends.
        loop {
            let batch = app.storage.events_after(scanned_to, SCAN_BATCH)?;
            let Some(last) = batch.last() else { break };
            let last_seq = last.seq;
            for e in batch {
                scanned_to = e.seq;
                if matches(&e) {
                    page.push(e);
                    if page.len() == size {
                        break;
                    }
                }
            }
            if page.len() == size || scanned_to < last_seq {
                break;
            }
        }
        if !page.is_empty() || tokio::time::Instant::now() >= deadline {
            break (page, scanned_to);
        }
        // Nothing yet: skip what was scanned, wait for the next commit (or the deadline).
        after = scanned_to;
        let waited = tokio::time::timeout_at(deadline, changes.changed()).await;
        if !matches!(waited, Ok(Ok(()))) {
            break (page, scanned_to);
        }
    };
    let next = match page.last() {
        Some(last) if last.seq == scanned_to => last.id.to_string(),
        _ => format!("seq:{scanned_to}"),
    };
    let events: Vec<Value> = page.iter().map(|e| cloud_event(&app, e)).collect();
    let mut response = (StatusCode::OK, axum::Json(events)).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/cloudevents+json"));
    if let Ok(value) = HeaderValue::from_str(&next) {
        h.insert("next", value);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// Which events a reader sees: its own organisation's, optionally narrowed.
#[derive(Debug, Clone)]
pub(crate) struct EventFilter {
    pub(crate) org: storage::model::Party,
    pub(crate) resource: Option<storage::model::ResourceId>,
    pub(crate) types: Vec<String>,
}

impl EventFilter {
    pub(crate) fn matches(&self, e: &EventRecord) -> bool {
        e.party == self.org
            && self.resource.as_ref().is_none_or(|r| &e.resource == r)
            && (self.types.is_empty()
                || self.types.iter().any(|t| t.eq_ignore_ascii_case(e.kind.type_string())))
    }
}

/// A cursor (`0`, an event id or `seq:<n>`) as a log position. Unknown: an error.
pub(crate) fn parse_cursor(app: &App, cursor: &str) -> Result<u64, ApiError> {
    match cursor {
        "" | "0" => Ok(0),
        cursor => match cursor.strip_prefix("seq:") {
            Some(n) => n.parse().map_err(|_| cursor_error()),
            None => {
                let id: uuid::Uuid = cursor.parse().map_err(|_| cursor_error())?;
                app.storage.event_seq(&id)?.ok_or_else(cursor_error)
            }
        },
    }
}

fn cursor_error() -> ApiError {
    ApiError {
        kind: crate::error::Kind::InvalidArgument,
        code: None,
        message: "after: cursor not found or expired; start from after=0 or a cursor from the next header"
            .into(),
        http_status: 400,
        field: Some("after"),
    }
}
