//! The Altinn 3 Broker-compatible REST facade (`/broker/api/v1/...`): thin handlers over the same
//! use cases as gRPC. Field names, statuses, error bodies and headers follow the contract, so
//! clients written for Altinn work by changing the base URL and the token issuer.
//!
//! - JSON out is camelCase with enums as strings; JSON in matches property names
//!   case-insensitively (Altinn's Postman collections send PascalCase).
//! - Errors: RFC 7807 ProblemDetails with `code` (`BRO-000NN`) and `traceId`; field validation
//!   as ValidationProblemDetails with `errors`; 401 with `WWW-Authenticate: Bearer` and no body
//!   for a missing or bad token; 403 with no body for a missing scope.
//! - Every response carries `X-Content-Type-Options: nosniff` and `Cache-Control: no-store`; an
//!   `Accept` header that allows none of an endpoint's types is refused with 406.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use bytes::Bytes;
use futures_util::StreamExt as _;
use serde_json::{Map, Value, json};
use storage::model::*;

use super::http::{CiObject, problem, rfc9110, timed_out, trace_id};
use crate::app::{App, InitializeRequest, SearchQuery, checksum_of, recipient_views};
use crate::auth::Caller;
use crate::error::{ApiError, Kind};

pub use super::http::BASE;
/// Download body chunk.
const DOWNLOAD_CHUNK: usize = 256 * 1024;

/// The REST routes, to be merged into the server's router.
pub fn router(app: Arc<App>) -> Router {
    let json_api = Router::new()
        .route("/filetransfer", post(initialize).get(search))
        // Streams the file part: no body limit (the size rules of the resource apply instead).
        .route(
            "/filetransfer/upload",
            post(initialize_and_upload).layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .route("/filetransfer/{id}", get(overview))
        .route("/filetransfer/{id}/details", get(details))
        .route("/filetransfer/{id}/upload", post(upload))
        .route("/filetransfer/{id}/confirmdownload", post(confirm))
        .route("/serviceowner", post(register_service_owner).get(service_owner))
        .route("/resource/{id}", put(put_resource).get(get_resource))
        .layer(middleware::from_fn(accept_json));
    // Download declares no produced type, so no Accept check (as in Altinn); statistics
    // produce CSV.
    let files = Router::new().route("/filetransfer/{id}/download", get(download)).route(
        "/statistics/monthly",
        get(monthly_statistics).layer(middleware::from_fn(accept_csv)),
    );
    Router::new()
        .nest(BASE, json_api.merge(files))
        .layer(middleware::from_fn(security_headers))
        .with_state(app)
}

// --- errors ---

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.http_status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        match (self.kind, self.code) {
            // Altinn answers these with an empty body; Ferry says what to fix (clients that ignore
            // the body are unaffected).
            (Kind::Unauthenticated, _) => {
                let body = json!({
                    "type": rfc9110(StatusCode::UNAUTHORIZED),
                    "title": "Unauthorized",
                    "status": 401,
                    "detail": self.message,
                    "traceId": trace_id(),
                });
                let mut response = problem(StatusCode::UNAUTHORIZED, body);
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                response
            }
            (Kind::PermissionDenied, None) => {
                let body = json!({
                    "type": rfc9110(StatusCode::FORBIDDEN),
                    "title": "Forbidden",
                    "status": 403,
                    "detail": self.message,
                    "traceId": trace_id(),
                });
                problem(StatusCode::FORBIDDEN, body)
            }
            (Kind::InvalidArgument, None) => {
                let field = self.field.unwrap_or("request");
                let body = json!({
                    "type": rfc9110(StatusCode::BAD_REQUEST),
                    "title": "One or more validation errors occurred.",
                    "status": 400,
                    "errors": { field: [self.message] },
                    "traceId": trace_id(),
                });
                problem(StatusCode::BAD_REQUEST, body)
            }
            (_, code) => {
                let mut body = json!({
                    "type": rfc9110(status),
                    "title": status.canonical_reason().unwrap_or("Error"),
                    "status": status.as_u16(),
                    "detail": self.message,
                    "traceId": trace_id(),
                });
                if let Some(code) = code {
                    body["code"] = json!(format!("BRO-{code:05}"));
                }
                problem(status, body)
            }
        }
    }
}

type Result<T, E = ApiError> = std::result::Result<T, E>;

// --- middleware ---

async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn accept_csv(request: Request, next: Next) -> Response {
    accept_check(request, next, "text/csv").await
}

/// Altinn's Accept check: if an Accept header is present, one of its media types (parameters
/// ignored) must be `application/json` or `*/*`.
async fn accept_json(request: Request, next: Next) -> Response {
    accept_check(request, next, "application/json").await
}

async fn accept_check(request: Request, next: Next, produces: &'static str) -> Response {
    let acceptable = request.headers().get_all(header::ACCEPT).iter().all(|value| {
        value.to_str().is_ok_and(|v| {
            v.split(',').any(|media| {
                let media = media.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
                media == produces || media == "*/*"
            })
        })
    });
    if request.headers().contains_key(header::ACCEPT) && !acceptable {
        return (
            StatusCode::NOT_ACCEPTABLE,
            format!(
                "This endpoint does not support the requested Accept header. Supported Accept headers are: {produces}"
            ),
        )
            .into_response();
    }
    next.run(request).await
}

// --- request helpers ---

fn caller(app: &App, headers: &HeaderMap) -> Result<Caller> {
    let value = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    Ok(app.auth.authenticate(value)?)
}

fn transfer_id(text: &str) -> Result<FileTransferId> {
    // Altinn answers an unknown or malformed id with 404/1.
    text.parse().map_err(|_| ApiError::altinn(1))
}

// --- views ---

fn time(t: Timestamp) -> Value {
    Value::String(t.to_rfc3339())
}

fn overview_json(t: &FileTransfer, with_published: bool) -> Map<String, Value> {
    let recipients: Vec<Value> = recipient_views(t)
        .into_iter()
        .map(|r| {
            json!({
                "recipient": r.party.to_string(),
                "currentRecipientFileTransferStatusCode": r.status.name(),
                "currentRecipientFileTransferStatusText": r.status.default_text(),
                "currentRecipientFileTransferStatusChanged": time(r.changed),
            })
        })
        .collect();
    let mut view = json!({
        "fileTransferId": t.id.to_string(),
        "resourceId": t.resource_id.as_str(),
        "fileName": t.file_name,
        "sendersFileTransferReference": t.senders_reference,
        "checksum": checksum_of(t).map(|m| m.to_hex()),
        "useVirusScan": t.use_virus_scan,
        "fileTransferSize": t.content.map_or(0, |c| c.size),
        "fileTransferStatus": t.status().name(),
        "fileTransferStatusText": t.status_text(),
        "fileTransferStatusChanged": time(t.latest_status().at),
        "created": time(t.created),
        "expirationTime": time(t.expiration_time),
        "sender": t.sender.to_string(),
        "recipients": recipients,
        "propertyList": t.property_list,
        // Ferry extension: the content address.
        "blake3": t.content.map(|c| c.blake3.to_hex()),
    });
    if with_published {
        view["published"] = t.published_at().map_or(Value::Null, time);
    }
    match view {
        Value::Object(map) => map,
        _ => unreachable!("built as an object"),
    }
}

// --- file transfers ---

async fn initialize(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    let caller = caller(&app, &headers)?;
    let body = CiObject::parse(&body)?;
    let request = InitializeRequest {
        file_name: body.required_string("fileName")?,
        resource_id: body.required_string("resourceId")?,
        senders_file_transfer_reference: body
            .string("sendersFileTransferReference")?
            .unwrap_or_default(),
        sender: body.required_string("sender")?,
        recipients: body.strings("recipients")?.ok_or_else(|| {
            ApiError::invalid_field("Recipients", "One or more recipients are required")
        })?,
        property_list: body.string_map("propertyList")?,
        checksum: body.string("checksum")?,
        disable_virus_scan: body.bool("disableVirusScan")?.unwrap_or(false),
        idempotency_key: headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        blake3: body.string("blake3")?,
    };
    let id = app.initialize(&caller, request).await?;
    Ok(axum::Json(json!({ "fileTransferId": id.to_string() })).into_response())
}

async fn upload(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    let caller = caller(&app, &headers)?;
    let id = transfer_id(&id)?;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut session = app.begin_upload(&caller, id, None, declared).await?;
    let (body, idle) = crate::api::body::idle(body, app.options.idle_timeout);
    let mut stream = body.into_data_stream();
    while let Some(frame) = stream.next().await {
        let frame = match frame {
            Ok(frame) => frame,
            Err(e) => {
                // The client stalled or went away mid-body: keep what arrived (TUS or gRPC
                // resume it from there).
                let committed = session.checkpoint().await;
                if idle.fired() {
                    return Ok(timed_out(&app, id, committed.ok()));
                }
                return Err(ApiError::invalid_field(
                    "body",
                    format!("the upload was interrupted: {e}"),
                ));
            }
        };
        session.write_frame(&frame).await?;
    }
    session.finish().await?;
    Ok(axum::Json(json!({ "fileTransferId": id.to_string() })).into_response())
}

/// `POST /filetransfer/upload`: initialize and upload in one multipart request. The file part
/// (`FileTransfer`) streams into storage like a raw upload, so the `Metadata.*` fields must come
/// before it (as form encoders send them).
async fn initialize_and_upload(State(app): State<Arc<App>>, request: Request) -> Result<Response> {
    use axum::extract::FromRequest as _;
    // Identity first (401 before any complaint about the body), then the form.
    let caller = caller(&app, request.headers())?;
    let (parts, body) = request.into_parts();
    let (body, idle) = crate::api::body::idle(body, app.options.idle_timeout);
    let request = Request::from_parts(parts, body);
    let mut form = axum::extract::Multipart::from_request(request, &())
        .await
        .map_err(|e| ApiError::invalid_field("body", e.body_text()))?;
    let mut request = InitializeRequest::default();
    let mut seen_sender = false;
    let bad = |e: axum::extract::multipart::MultipartError| {
        ApiError::invalid_field("body", e.to_string())
    };
    while let Some(mut field) = form.next_field().await.map_err(bad)? {
        let name = field.name().unwrap_or_default().to_owned();
        if name.eq_ignore_ascii_case("FileTransfer") {
            if request.file_name.is_empty() || request.resource_id.is_empty() || !seen_sender {
                return Err(ApiError::invalid_field(
                    "FileTransfer",
                    "The Metadata fields (FileName, ResourceId, Sender, Recipients) must come before the FileTransfer part.",
                ));
            }
            let id = app.initialize(&caller, request).await?;
            let mut session = app.begin_upload(&caller, id, None, None).await?;
            loop {
                match field.chunk().await {
                    Ok(Some(chunk)) => session.write_frame(&chunk).await?,
                    Ok(None) => break,
                    Err(e) => {
                        let committed = session.checkpoint().await;
                        if idle.fired() {
                            return Ok(timed_out(&app, id, committed.ok()));
                        }
                        return Err(bad(e));
                    }
                }
            }
            session.finish().await?;
            return Ok(axum::Json(json!({ "fileTransferId": id.to_string() })).into_response());
        }
        let key = name.strip_prefix("Metadata.").unwrap_or(&name).to_owned();
        let value = field.text().await.map_err(bad)?;
        let lower = key.to_ascii_lowercase();
        match lower.as_str() {
            "filename" => request.file_name = value,
            "resourceid" => request.resource_id = value,
            "sendersfiletransferreference" => request.senders_file_transfer_reference = value,
            "sender" => {
                request.sender = value;
                seen_sender = true;
            }
            "recipients" => request.recipients.push(value),
            "checksum" => request.checksum = Some(value),
            "disablevirusscan" => request.disable_virus_scan = value.eq_ignore_ascii_case("true"),
            _ if lower.starts_with("propertylist[") && lower.ends_with(']') => {
                request
                    .property_list
                    .insert(key["PropertyList[".len()..key.len() - 1].to_owned(), value);
            }
            _ => {}
        }
    }
    Err(ApiError::invalid_field("FileTransfer", "The FileTransfer field is required."))
}

async fn overview(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response> {
    let caller = caller(&app, &headers)?;
    let t = app.transfer(&caller, transfer_id(&id)?)?;
    Ok(axum::Json(Value::Object(overview_json(&t, true))).into_response())
}

async fn details(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response> {
    let caller = caller(&app, &headers)?;
    let t = app.transfer(&caller, transfer_id(&id)?)?;
    let mut view = overview_json(&t, false);
    view.insert(
        "fileTransferStatusHistory".into(),
        t.status_history
            .iter()
            .map(|e| {
                json!({
                    "fileTransferStatus": e.status.name(),
                    "fileTransferStatusText": e.display_text(),
                    "fileTransferStatusChanged": time(e.at),
                })
            })
            .collect(),
    );
    view.insert(
        "recipientFileTransferStatusHistory".into(),
        t.recipient_history
            .iter()
            .map(|e| {
                json!({
                    "recipient": e.recipient.to_string(),
                    "recipientFileTransferStatusCode": e.status.name(),
                    "recipientFileTransferStatusText": e.status.default_text(),
                    "recipientFileTransferStatusChanged": time(e.at),
                })
            })
            .collect(),
    );
    Ok(axum::Json(Value::Object(view)).into_response())
}

async fn confirm(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response> {
    let caller = caller(&app, &headers)?;
    app.confirm_download(&caller, transfer_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// A boolean query parameter: `true` or `false` (any case), else a validation error.
fn bool_param(name: &'static str, value: Option<&str>, default: bool) -> Result<bool> {
    match value {
        None => Ok(default),
        Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
        Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
        Some(v) => Err(ApiError::invalid_field(
            name,
            format!("The value '{v}' is not valid for {name}: use true or false."),
        )),
    }
}

fn enum_by_name<T: Copy>(text: &str, field: &'static str, all: &[(T, &str)]) -> Result<T> {
    let by_number = text.parse::<usize>().ok().and_then(|n| all.get(n)).map(|(v, _)| *v);
    all.iter()
        .find(|(_, name)| name.eq_ignore_ascii_case(text))
        .map(|(v, _)| *v)
        .or(by_number)
        .ok_or_else(|| ApiError::invalid_field(field, format!("The value '{text}' is not valid.")))
}

async fn search(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Response> {
    let caller = caller(&app, &headers)?;
    let param = |name: &str| crate::api::http::query_param(&params, name);
    let resource_id = param("resourceId").filter(|v| !v.is_empty()).ok_or_else(|| {
        ApiError::invalid_field("resourceId", "The resourceId field is required.")
    })?;
    let statuses: Vec<(FileTransferStatus, &str)> =
        FileTransferStatus::ALL.iter().map(|s| (*s, s.name())).collect();
    let recipient_statuses: Vec<(RecipientFileTransferStatus, &str)> =
        (0..3).filter_map(RecipientFileTransferStatus::from_id).map(|s| (s, s.name())).collect();
    let date = |name: &'static str| -> Result<Option<Timestamp>> {
        param(name)
            .map(|v| {
                Timestamp::parse_rfc3339(v).ok_or_else(|| {
                    ApiError::invalid_field(
                        name,
                        format!("The value '{v}' is not a valid date-time."),
                    )
                })
            })
            .transpose()
    };
    let query = SearchQuery {
        resource_id: resource_id.to_owned(),
        status: param("status").map(|v| enum_by_name(v, "status", &statuses)).transpose()?,
        recipient_status: param("recipientStatus")
            .map(|v| enum_by_name(v, "recipientStatus", &recipient_statuses))
            .transpose()?,
        from: date("from")?,
        to: date("to")?,
        order_ascending: bool_param("orderAscending", param("orderAscending"), false)?,
        as_recipient: param("role")
            .map(|v| enum_by_name(v, "role", &[(false, "Sender"), (true, "Recipient")]))
            .transpose()?,
        // Ferry extension: page past Altinn's 100-item cap.
        page_token: param("continuationToken").map(str::to_owned),
        page_size: None,
    };
    let (ids, next) = app.search(&caller, query)?;
    let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
    let mut response = axum::Json(ids).into_response();
    if let Some(next) = next.and_then(|n| HeaderValue::from_str(&n).ok()) {
        response.headers_mut().insert("x-continuation-token", next);
    }
    Ok(response)
}

/// A resolved byte range: (first byte, length).
pub(crate) fn resolve_range(header: Option<&str>, size: u64) -> Result<Option<(u64, u64)>> {
    let Some(spec) = header.map(str::trim) else { return Ok(None) };
    let Some(spec) = spec.get(..6).filter(|u| u.eq_ignore_ascii_case("bytes=")).map(|_| &spec[6..])
    else {
        return Ok(None); // other units are ignored
    };
    if spec.contains(',') {
        return Ok(None); // multi-range: the whole file
    }
    let Some((a, b)) = spec.trim().split_once('-') else { return Ok(None) };
    let (a, b) = (a.trim(), b.trim());
    let (start, end) = match (a.parse::<u64>().ok(), b.parse::<u64>().ok()) {
        (Some(start), Some(end)) => (start, end),
        (Some(start), None) if b.is_empty() => (start, size.saturating_sub(1)),
        (None, Some(n)) if a.is_empty() => {
            if n == 0 {
                return Err(ApiError::altinn(29));
            }
            (size.saturating_sub(n), size.saturating_sub(1))
        }
        _ => return Ok(None), // malformed: ignored, as Altinn does
    };
    if start >= size || end < start {
        return Err(ApiError::altinn(29));
    }
    let end = end.min(size - 1);
    Ok(Some((start, end - start + 1)))
}

/// Also the web console's download (its session token passed as the bearer).
pub(crate) async fn download(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response> {
    let caller = caller(&app, &headers)?;
    let id = transfer_id(&id)?;
    let size = app.transfer(&caller, id)?.content.map_or(0, |c| c.size);
    let range = resolve_range(headers.get(header::RANGE).and_then(|v| v.to_str().ok()), size)?;
    let (offset, length) = range.unwrap_or((0, size));
    let download = app.download(&caller, id, offset, Some(length)).await?;
    let status = if range.is_some() { StatusCode::PARTIAL_CONTENT } else { StatusCode::OK };
    let counter = app.clone();
    let body = futures_util::stream::unfold(download.range, move |mut range| {
        let counter = counter.clone();
        async move {
            match range.next_chunk(DOWNLOAD_CHUNK).await {
                Ok(Some(chunk)) => {
                    counter
                        .metrics
                        .download_bytes
                        .fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
                    Some((Ok::<_, std::io::Error>(chunk), range))
                }
                Ok(None) => None,
                Err(e) => Some((Err(e), range)),
            }
        }
    });
    let mut response = Response::new(Body::from_stream(body));
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Some((start, len)) = range {
        let value = format!("bytes {start}-{}/{size}", start + len - 1);
        h.insert(header::CONTENT_RANGE, HeaderValue::from_str(&value).expect("ascii"));
    }
    if let Ok(value) = HeaderValue::from_str(&content_disposition(&download.file_name)) {
        h.insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

/// `attachment; filename="…"` with an RFC 5987 `filename*` for names outside plain ASCII.
fn content_disposition(name: &str) -> String {
    let ascii: String = name
        .chars()
        .map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '_' })
        .filter(|c| *c != '"')
        .collect();
    let mut value = format!("attachment; filename=\"{ascii}\"");
    if ascii != name {
        let encoded: String = name
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        value.push_str(&format!("; filename*=UTF-8''{encoded}"));
    }
    value
}

// --- statistics ---

async fn monthly_statistics(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Response> {
    let caller = caller(&app, &headers)?;
    let param = |name: &str| crate::api::http::query_param(&params, name);
    let number = |name: &'static str| -> Result<i64> {
        param(name)
            .ok_or_else(|| ApiError::invalid_field(name, format!("The {name} field is required.")))?
            .parse()
            .map_err(|_| ApiError::altinn(6003))
    };
    let (year, month) = (number("year")?, number("month")?);
    let end_user = bool_param("includeEndUser", param("includeEndUser"), true)?;
    let vendor = bool_param("includeVendor", param("includeVendor"), false)?;
    if !end_user && !vendor {
        return Err(ApiError::altinn(6005));
    }
    let resource = param("resourceId").filter(|r| !r.is_empty());
    let rows = app.monthly_statistics(&caller, year, month, resource)?;
    let mut csv = String::from(
        "year,month,resourceId,senderVendor,recipientVendor,sender,recipient,totalFileTransfers,uploadCount,totalTransferDownloadAttempts,transfersWithDownloadConfirmed\n",
    );
    for r in rows {
        // Ferry does not record the vendor (the token's consumer) yet: those columns stay blank.
        let (sender, recipient) =
            if end_user { (r.sender.as_str(), r.recipient.as_str()) } else { ("", "") };
        csv.push_str(&format!(
            "{},{},{},,,{sender},{recipient},{},{},{},{}\n",
            r.year,
            r.month,
            r.resource_id,
            r.total_file_transfers,
            r.upload_count,
            r.total_transfer_download_attempts,
            r.transfers_with_download_confirmed
        ));
    }
    let file = format!(
        "monthly_statistics_{}_{year:04}-{month:02}.csv",
        resource.unwrap_or("all-resources")
    );
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv".to_owned()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename={file}")),
        ],
        csv,
    )
        .into_response())
}

// --- service owners and resources ---

async fn register_service_owner(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    let caller = caller(&app, &headers)?;
    let name = CiObject::parse(&body)?.required_string("name")?;
    app.register_service_owner(&caller, name).await?;
    Ok(StatusCode::OK.into_response())
}

async fn service_owner(State(app): State<Arc<App>>, headers: HeaderMap) -> Result<Response> {
    let caller = caller(&app, &headers)?;
    let owner = app.service_owner(&caller)?;
    // Ferry has no per-owner storage accounts; both kinds of Altinn's are always ready.
    let provider = |kind: &str| json!({ "type": kind, "deploymentStatus": "Ready", "deploymentEnvironment": "Ferry" });
    Ok(axum::Json(json!({
        "name": owner.name,
        "storageProviders": [provider("AltinnAzure"), provider("AltinnAzureWithoutVirusScan")],
    }))
    .into_response())
}

async fn put_resource(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    let caller = caller(&app, &headers)?;
    let update = resource_update(&CiObject::parse(&body)?)?;
    app.put_resource(&caller, &id, update).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `PUT /resource/{id}`'s body as a resource update (the model validates the values).
pub(crate) fn resource_update(body: &CiObject) -> Result<ResourceUpdate> {
    let parties = |list: Vec<String>| -> Result<Vec<Party>> {
        list.iter()
            .map(|p| {
                Party::parse_lenient(p)
                    .map_err(|e| ApiError::invalid_field("access", e.to_string()))
            })
            .collect()
    };
    let access = match body.object("access")? {
        None => None,
        Some(inner) => Some(AccessRules {
            senders: parties(inner.strings("senders")?.unwrap_or_default())?,
            recipients: parties(inner.strings("recipients")?.unwrap_or_default())?,
        }),
    };
    Ok(ResourceUpdate {
        max_file_transfer_size: body.int("maxFileTransferSize")?,
        file_transfer_time_to_live: body.string("fileTransferTimeToLive")?,
        purge_file_transfer_after_all_recipients_confirmed: body
            .bool("purgeFileTransferAfterAllRecipientsConfirmed")?,
        purge_file_transfer_grace_period: body.string("purgeFileTransferGracePeriod")?,
        use_manifest_file_shim: body.bool("useManifestFileShim")?,
        external_service_code_legacy: body.string("externalServiceCodeLegacy")?,
        external_service_edition_code_legacy: body
            .int("externalServiceEditionCodeLegacy")?
            .map(|n| {
                i32::try_from(n).map_err(|_| {
                    ApiError::invalid_field("externalServiceEditionCodeLegacy", "out of range")
                })
            })
            .transpose()?,
        required_party: body
            .string("requiredParty")?
            .map(|p| {
                Party::parse_lenient(&p)
                    .map_err(|e| ApiError::invalid_field("requiredParty", e.to_string()))
            })
            .transpose()?,
        access,
    })
}

/// .NET's `TimeSpan.ToString()`: `[d.]hh:mm:ss`, which Altinn's GET resource returns.
fn dotnet_timespan(d: std::time::Duration) -> String {
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let clock = format!("{:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60);
    if days > 0 { format!("{days}.{clock}") } else { clock }
}

async fn get_resource(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response> {
    let caller = caller(&app, &headers)?;
    let r = app.resource(&caller, &id)?;
    Ok(axum::Json(json!({
        "maxFileTransferSize": r.max_file_transfer_size,
        "fileTransferTimeToLive": dotnet_timespan(r.time_to_live()),
        "purgeFileTransferAfterAllRecipientsConfirmed": r.purge_file_transfer_after_all_recipients_confirmed,
        "purgeFileTransferGracePeriod": dotnet_timespan(r.grace_period()),
        "useManifestFileShim": r.use_manifest_file_shim,
        "externalServiceCodeLegacy": r.external_service_code_legacy,
        "externalServiceEditionCodeLegacy": r.external_service_edition_code_legacy,
        "requiredParty": r.required_party.as_ref().map(|p| p.org_number().to_owned()),
        // Ferry extension: who may send and receive.
        "access": {
            "senders": r.access.senders.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "recipients": r.access.recipients.iter().map(ToString::to_string).collect::<Vec<_>>(),
        },
    }))
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_resolve_like_altinn() {
        let r = |h: &str| resolve_range(Some(h), 100).map_err(|e| e.code);
        assert_eq!(r("bytes=0-9"), Ok(Some((0, 10))));
        assert_eq!(r("BYTES=90-"), Ok(Some((90, 10))));
        assert_eq!(r("bytes=-5"), Ok(Some((95, 5))));
        assert_eq!(r("bytes=50-1000"), Ok(Some((50, 50))));
        assert_eq!(r("bytes=100-"), Err(Some(29)));
        assert_eq!(r("bytes=9-3"), Err(Some(29)));
        assert_eq!(r("bytes=0-1,5-6"), Ok(None));
        assert_eq!(r("items=0-1"), Ok(None));
        assert_eq!(r("bytes=x-y"), Ok(None));
        assert_eq!(resolve_range(None, 100).unwrap(), None);
    }

    #[test]
    fn timespans_print_like_dotnet() {
        use std::time::Duration;
        assert_eq!(dotnet_timespan(Duration::from_secs(30 * 86_400)), "30.00:00:00");
        assert_eq!(dotnet_timespan(Duration::from_secs(7200)), "02:00:00");
        assert_eq!(dotnet_timespan(Duration::from_secs(90_061)), "1.01:01:01");
    }

    #[test]
    fn content_disposition_keeps_ascii_and_encodes_the_rest() {
        assert_eq!(content_disposition("a b.txt"), "attachment; filename=\"a b.txt\"");
        assert_eq!(
            content_disposition("rapport-ø.pdf"),
            "attachment; filename=\"rapport-_.pdf\"; filename*=UTF-8''rapport-%C3%B8.pdf"
        );
    }
}
