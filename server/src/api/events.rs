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
use serde_json::Value;
use storage::EventRecord;

use crate::app::App;
use crate::app::events::{EventFilter, cloud_event, event_reader, parse_cursor};
use crate::error::ApiError;

const MAX_PAGE: usize = 1000;
const MAX_WAIT: Duration = Duration::from_secs(60);
const SCAN_BATCH: usize = 1024;

/// The event routes.
pub fn router(app: Arc<App>) -> Router {
    Router::new().route("/events/api/v1/events", get(feed)).with_state(app)
}

async fn feed(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let value = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let org = event_reader(&app, value)?;
    let param = |name: &str| crate::api::http::query_param(&params, name);
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
