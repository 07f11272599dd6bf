//! TUS 1.0.0 resumable uploads at Altinn's URLs (contract §5):
//! `/broker/api/v1/filetransfer/upload/tus/{id}` and `…/{id}/partial/{partialId}`, with the
//! creation, termination, expiration, checksum and concatenation extensions.
//!
//! A TUS upload is the transfer's resumable upload in storage: a PATCH at `Upload-Offset` is a
//! resume at the committed offset. Between PATCHes the live session is parked in memory (its
//! scan and MD5 keep tailing the file), so chunks never re-read what came before; after a
//! restart the next PATCH reopens the upload from disk. Unlike Altinn's, `Upload-Checksum`
//! works: a chunk is verified before it is committed, and a mismatch (460) leaves the offset
//! where it was.

// Handlers return early with a ready `Response` as their error: it is the reply, on a cold path;
// boxing it would buy nothing.
#![allow(clippy::result_large_err)]

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine as _;
use bytes::BytesMut;
use futures_util::StreamExt as _;
use storage::Upload;
use storage::model::*;

use crate::api::http::BASE;
use crate::app::{App, UploadSession};
use crate::auth::SCOPE_WRITE;
use crate::error::ApiError;

/// How long an unfinished upload lives without activity (`Upload-Expires`).
pub const EXPIRATION: Duration = Duration::from_secs(24 * 3600);
const TUS_VERSION: &str = "1.0.0";
const BUFFER: usize = 256 * 1024;

/// A live upload between two PATCH requests.
pub(crate) enum Parked {
    /// The transfer's own upload, with its scan and MD5 tails.
    Transfer(UploadSession),
    /// A partial upload for concatenation.
    Partial(Upload),
}

/// The TUS routes.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route(
            &format!("{BASE}/filetransfer/upload/tus/{{id}}"),
            post(create).head(head).patch(patch).delete(terminate),
        )
        .route(
            &format!("{BASE}/filetransfer/upload/tus/{{id}}/partial/{{partial}}"),
            axum::routing::head(head_partial).patch(patch_partial).delete(terminate_partial),
        )
        // Altinn's legacy two-segment form.
        .route(
            &format!("{BASE}/filetransfer/upload/tus/{{id}}/{{partial}}"),
            axum::routing::head(head_partial).patch(patch_partial).delete(terminate_partial),
        )
        .with_state(app)
}

fn tus_headers(response: &mut Response) {
    let h = response.headers_mut();
    h.insert("tus-resumable", HeaderValue::from_static(TUS_VERSION));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
}

fn respond(status: StatusCode, headers: &[(&'static str, String)]) -> Response {
    let mut response = status.into_response();
    for (name, value) in headers {
        if let Ok(value) = HeaderValue::from_str(value) {
            response.headers_mut().insert(*name, value);
        }
    }
    tus_headers(&mut response);
    response
}

/// A TUS error: ProblemDetails saying what to do, with the TUS headers.
fn tus_error(status: StatusCode, message: &str) -> Response {
    let mut response = crate::api::http::problem_details(status, message);
    tus_headers(&mut response);
    response
}

/// The headers of TUS discovery (`OPTIONS`), on every TUS path.
fn discovery_headers(response: &mut Response) {
    let h = response.headers_mut();
    h.insert("tus-version", HeaderValue::from_static(TUS_VERSION));
    h.insert(
        "tus-extension",
        HeaderValue::from_static("creation,termination,expiration,checksum,concatenation"),
    );
    h.insert("tus-checksum-algorithm", HeaderValue::from_static("md5,sha1,sha256"));
    h.insert("tus-max-size", HeaderValue::from(ResourceConfig::GLOBAL_MAX_SIZE));
    tus_headers(response);
}

/// Whether `path` is one of the TUS routes' paths.
fn is_tus_path(path: &str) -> bool {
    path.strip_prefix(BASE)
        .and_then(|p| p.strip_prefix("/filetransfer/upload/tus/"))
        .is_some_and(|rest| !rest.is_empty())
}

/// TUS discovery, outside CORS: an `OPTIONS` request on a TUS path is answered with the TUS
/// headers (version, extensions, checksum algorithms, maximum size), without a token as the
/// protocol expects (they describe the server, not an upload). A CORS preflight there gets the
/// CORS layer's answer with the TUS headers added, so a browser client sees both; without CORS
/// configured, no CORS headers are added (the browser refuses, as it should).
pub async fn discovery(request: Request, next: axum::middleware::Next) -> Response {
    if request.method() != axum::http::Method::OPTIONS || !is_tus_path(request.uri().path()) {
        return next.run(request).await;
    }
    let preflight = request.headers().contains_key(header::ORIGIN)
        && request.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut response = if preflight { next.run(request).await } else { Response::default() };
    if !response.status().is_success() {
        response = Response::default();
    }
    if response.status() == StatusCode::OK && !preflight {
        *response.status_mut() = StatusCode::NO_CONTENT;
    }
    discovery_headers(&mut response);
    response
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

pub(crate) fn header_u64(headers: &HeaderMap, name: &str) -> Result<Option<u64>, Response> {
    header_str(headers, name)
        .map(|v| {
            v.trim().parse::<u64>().map_err(|_| {
                tus_error(
                    StatusCode::BAD_REQUEST,
                    &format!("{name} must be a non-negative integer"),
                )
            })
        })
        .transpose()
}

fn check_version(headers: &HeaderMap) -> Result<(), Response> {
    match header_str(headers, "tus-resumable") {
        Some(TUS_VERSION) => Ok(()),
        _ => {
            let mut refused = tus_error(
                StatusCode::PRECONDITION_FAILED,
                "send Tus-Resumable: 1.0.0 (the only TUS version this server speaks)",
            );
            refused.headers_mut().insert("tus-version", HeaderValue::from_static(TUS_VERSION));
            Err(refused)
        }
    }
}

/// `Upload-Expires`: an RFC 9110 HTTP date, as TUS's expiration extension requires.
fn expires(record: &storage::UploadRecord) -> String {
    record.updated.saturating_add(EXPIRATION).to_http_date()
}

fn caller_for(app: &App, headers: &HeaderMap) -> Result<crate::auth::Caller, Response> {
    let value = header_str(headers, "authorization");
    let caller = app.auth.authenticate(value).map_err(api)?;
    if !caller.has_any_scope(&[SCOPE_WRITE]) {
        return Err(ApiError::missing_scope(&[SCOPE_WRITE]).into_response());
    }
    Ok(caller)
}

fn transfer_id(text: &str) -> Result<FileTransferId, Response> {
    text.parse().map_err(|_| tus_error(StatusCode::NOT_FOUND, "Missing file transfer id"))
}

async fn create(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    create_inner(app, id, headers).await.unwrap_or_else(|r| r)
}

async fn create_inner(app: Arc<App>, id: String, headers: HeaderMap) -> Result<Response, Response> {
    let caller = caller_for(&app, &headers)?;
    check_version(&headers)?;
    let id = transfer_id(&id)?;
    if headers.contains_key("upload-defer-length") {
        return Err(tus_error(StatusCode::BAD_REQUEST, "Upload-Defer-Length is not supported"));
    }
    let concat = header_str(&headers, "upload-concat").map(str::trim);
    if let Some(final_list) = concat.and_then(|c| c.strip_prefix("final;")) {
        return concatenate(&app, &caller, id, final_list).await;
    }
    let length = header_u64(&headers, "upload-length")?
        .ok_or_else(|| tus_error(StatusCode::BAD_REQUEST, "Upload-Length is required"))?;
    let location;
    if concat == Some("partial") {
        // Check the sender's rights and the size as for a whole upload, without touching the
        // transfer's own upload.
        let partial = uuid::Uuid::new_v4().simple().to_string();
        check_sender(&app, &caller, id, length).await?;
        app.storage.check_space(length).map_err(api)?;
        let upload_id = UploadId::partial(id, &partial);
        let upload = app
            .storage
            .open_upload_declared(upload_id.clone(), app.now(), Some(length))
            .await
            .map_err(api)?;
        start(&app, id).await?;
        app.held.hold(upload_id, Parked::Partial(upload));
        location = format!("{BASE}/filetransfer/upload/tus/{id}/partial/{partial}");
    } else {
        let upload_id = UploadId::for_transfer(id);
        app.held.release(&upload_id);
        let mut session = app.begin_upload(&caller, id, None, Some(length)).await.map_err(api)?;
        session.mark_started().await.map_err(api)?;
        if length == 0 {
            session.finish().await.map_err(api)?;
        } else {
            app.held.hold(upload_id, Parked::Transfer(session));
        }
        location = format!("{BASE}/filetransfer/upload/tus/{id}");
    }
    let expires = app.now().saturating_add(EXPIRATION).to_http_date();
    Ok(respond(
        StatusCode::CREATED,
        &[("location", location), ("upload-offset", "0".into()), ("upload-expires", expires)],
    ))
}

fn api(e: impl Into<ApiError>) -> Response {
    e.into().into_response()
}

/// The rights and size checks of an upload, for partial uploads.
async fn check_sender(
    app: &Arc<App>,
    caller: &crate::auth::Caller,
    id: FileTransferId,
    length: u64,
) -> Result<(), Response> {
    let (transfer, resource) = own_transfer(app, caller, id)?;
    if !matches!(
        transfer.status(),
        FileTransferStatus::Initialized | FileTransferStatus::UploadStarted
    ) {
        return Err(api(ApiError::altinn(4)));
    }
    if length > resource.max_upload_size(transfer.use_virus_scan) {
        return Err(api(ApiError::altinn(16)));
    }
    Ok(())
}

/// The transfer, if the caller is its sender and may still send on its resource: every TUS
/// method on an existing upload checks this first, before an upload record or a parked
/// session is looked at (a transfer id is no secret).
fn own_transfer(
    app: &App,
    caller: &crate::auth::Caller,
    id: FileTransferId,
) -> Result<(FileTransfer, ResourceConfig), Response> {
    let org = caller.org.clone().ok_or_else(|| api(ApiError::altinn(7001)))?;
    let transfer = app.transfer(caller, id).map_err(api)?;
    if transfer.sender != org {
        return Err(api(ApiError::altinn(6)));
    }
    let resource = app
        .storage
        .resource(&transfer.resource_id)
        .map_err(api)?
        .ok_or_else(|| api(ApiError::altinn(25)))?;
    if !resource.may_send(&org) {
        return Err(api(ApiError::altinn(6)));
    }
    Ok((transfer, resource))
}

async fn start(app: &Arc<App>, id: FileTransferId) -> Result<(), Response> {
    let at = app.now();
    app.storage.update_transfer(id, move |t| Ok(t.start_upload(at)?)).await.map_err(api).map(drop)
}

/// HEAD: where to continue.
async fn head(State(app): State<Arc<App>>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    head_of(&app, &headers, &id, None).await.unwrap_or_else(|r| r)
}

async fn head_partial(
    State(app): State<Arc<App>>,
    Path((id, partial)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    head_of(&app, &headers, &id, Some(&partial)).await.unwrap_or_else(|r| r)
}

async fn head_of(
    app: &Arc<App>,
    headers: &HeaderMap,
    id: &str,
    partial: Option<&str>,
) -> Result<Response, Response> {
    let caller = caller_for(app, headers)?;
    check_version(headers)?;
    let id = transfer_id(id)?;
    let (transfer, _) = own_transfer(app, &caller, id)?;
    let upload_id =
        partial.map_or_else(|| UploadId::for_transfer(id), |p| UploadId::partial(id, p));
    match app.storage.upload(&upload_id).map_err(api)? {
        Some(record) => {
            let mut h = vec![
                ("upload-offset", record.committed.to_string()),
                ("upload-expires", expires(&record)),
            ];
            if let Some(length) = record.length {
                h.push(("upload-length", length.to_string()));
            }
            if partial.is_some() {
                h.push(("upload-concat", "partial".into()));
            }
            Ok(respond(StatusCode::OK, &h))
        }
        // Completed: the whole file is there.
        None if partial.is_none() && transfer.content.is_some() => {
            let size = transfer.content.map_or(0, |c| c.size).to_string();
            Ok(respond(StatusCode::OK, &[("upload-offset", size.clone()), ("upload-length", size)]))
        }
        None => Err(tus_error(StatusCode::NOT_FOUND, "no such upload")),
    }
}

/// A chunk's checksum, verified after the bytes are written but before they are committed.
pub(crate) enum Checksum {
    Md5(md5::Md5, Vec<u8>),
    Sha1(sha1::Sha1, Vec<u8>),
    Sha256(sha2::Sha256, Vec<u8>),
}

impl Checksum {
    pub(crate) fn parse(headers: &HeaderMap) -> Result<Option<Self>, Response> {
        use md5::Digest as _;
        let Some(value) = header_str(headers, "upload-checksum") else { return Ok(None) };
        let (alg, b64) = value.trim().split_once(' ').ok_or_else(|| {
            tus_error(StatusCode::BAD_REQUEST, "Upload-Checksum must be '<algorithm> <base64>'")
        })?;
        let expected = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|_| tus_error(StatusCode::BAD_REQUEST, "Upload-Checksum is not base64"))?;
        Ok(Some(match alg.to_ascii_lowercase().as_str() {
            "md5" => Self::Md5(md5::Md5::new(), expected),
            "sha1" => Self::Sha1(sha1::Sha1::new(), expected),
            "sha256" => Self::Sha256(sha2::Sha256::new(), expected),
            _ => {
                return Err(tus_error(
                    StatusCode::BAD_REQUEST,
                    "unsupported checksum algorithm; use md5, sha1 or sha256",
                ));
            }
        }))
    }

    pub(crate) fn update(&mut self, data: &[u8]) {
        use md5::Digest as _;
        match self {
            Self::Md5(h, _) => h.update(data),
            Self::Sha1(h, _) => h.update(data),
            Self::Sha256(h, _) => h.update(data),
        }
    }

    pub(crate) fn matches(self) -> bool {
        use md5::Digest as _;
        match self {
            Self::Md5(h, e) => h.finalize().as_slice() == e,
            Self::Sha1(h, e) => h.finalize().as_slice() == e,
            Self::Sha256(h, e) => h.finalize().as_slice() == e,
        }
    }
}

async fn patch(State(app): State<Arc<App>>, Path(id): Path<String>, request: Request) -> Response {
    patch_of(app, id, None, request).await.unwrap_or_else(|r| r)
}

async fn patch_partial(
    State(app): State<Arc<App>>,
    Path((id, partial)): Path<(String, String)>,
    request: Request,
) -> Response {
    patch_of(app, id, Some(partial), request).await.unwrap_or_else(|r| r)
}

/// What a PATCH needs once its headers passed the checks.
struct PatchContext {
    id: FileTransferId,
    upload_id: UploadId,
    offset: u64,
    length: u64,
    checksum: Option<Checksum>,
    target: Parked,
}

async fn patch_of(
    app: Arc<App>,
    id: String,
    partial: Option<String>,
    request: Request,
) -> Result<Response, Response> {
    let (parts, body) = request.into_parts();
    match patch_checks(&app, &id, partial.as_deref(), &parts.headers).await {
        Ok(Ok(context)) => patch_body(app, context, body).await,
        Ok(Err(done)) => {
            drain(body).await;
            Ok(done)
        }
        Err(refused) => {
            // Read (and drop) the body before answering, so a keep-alive client sees the status
            // instead of a connection closed under its request.
            drain(body).await;
            Err(refused)
        }
    }
}

/// Reads and discards up to 64 MiB of a request body.
async fn drain(body: axum::body::Body) {
    let mut stream = body.into_data_stream();
    let mut n = 0usize;
    while let Some(Ok(frame)) = stream.next().await {
        n += frame.len();
        if n > 64 * 1024 * 1024 {
            break;
        }
    }
}

/// Header checks and the live upload. `Ok(Err(response))`: nothing to write (already done).
async fn patch_checks(
    app: &Arc<App>,
    id: &str,
    partial: Option<&str>,
    headers: &HeaderMap,
) -> Result<Result<PatchContext, Response>, Response> {
    let caller = caller_for(app, headers)?;
    check_version(headers)?;
    if header_str(headers, "content-type") != Some("application/offset+octet-stream") {
        return Err(tus_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/offset+octet-stream",
        ));
    }
    let offset = header_u64(headers, "upload-offset")?
        .ok_or_else(|| tus_error(StatusCode::BAD_REQUEST, "Upload-Offset is required"))?;
    let id = transfer_id(id)?;
    let (transfer, _) = own_transfer(app, &caller, id)?;
    let upload_id =
        partial.map_or_else(|| UploadId::for_transfer(id), |p| UploadId::partial(id, p));
    let record = app.storage.upload(&upload_id).map_err(api)?;
    let Some(record) = record else {
        // A retried final PATCH after completion: the upload is done.
        return match transfer.content {
            Some(content) if partial.is_none() && offset == content.size => {
                Ok(Err(respond(StatusCode::NO_CONTENT, &[("upload-offset", offset.to_string())])))
            }
            _ => Err(tus_error(StatusCode::NOT_FOUND, "no such upload")),
        };
    };
    if app.now().saturating_duration_since(record.updated) > EXPIRATION {
        app.held.release(&upload_id);
        let _ = app.storage.abort_upload(&upload_id).await;
        return Err(tus_error(StatusCode::GONE, "the upload expired"));
    }
    // An upload begun elsewhere without a length (a chunked REST body, a gRPC stream without
    // `length`) takes it from this PATCH, as for a deferred length in TUS.
    let announced = header_u64(headers, "upload-length")?;
    let length = match (record.length, announced) {
        (Some(known), Some(announced)) if known != announced => {
            return Err(tus_error(
                StatusCode::BAD_REQUEST,
                &format!("Upload-Length is {known} for this upload and cannot change"),
            ));
        }
        (Some(known), _) => known,
        (None, Some(announced)) => announced,
        (None, None) => {
            return Err(tus_error(
                StatusCode::BAD_REQUEST,
                "the upload's total length is not known yet: send Upload-Length with this PATCH",
            ));
        }
    };
    if offset != record.committed {
        let mut conflict = tus_error(
            StatusCode::CONFLICT,
            &format!(
                "Upload-Offset is {offset} but the upload continues at {}: send HEAD to learn the offset, then PATCH from there",
                record.committed
            ),
        );
        conflict.headers_mut().insert("upload-offset", HeaderValue::from(record.committed));
        return Err(conflict);
    }
    let checksum = Checksum::parse(headers)?;
    let parked = app.held.take::<Parked>(&upload_id);
    let mut target = match parked {
        Some(parked) => parked,
        None if partial.is_some() => Parked::Partial(
            app.storage
                .open_upload_declared(upload_id.clone(), app.now(), Some(length))
                .await
                .map_err(api)?,
        ),
        None => Parked::Transfer(
            app.begin_upload(&caller, id, Some(offset), Some(length)).await.map_err(api)?,
        ),
    };
    if let Parked::Transfer(session) = &mut target {
        session.set_auto_checkpoint(checksum.is_none());
    }
    Ok(Ok(PatchContext { id, upload_id, offset, length, checksum, target }))
}

async fn patch_body(
    app: Arc<App>,
    context: PatchContext,
    body: axum::body::Body,
) -> Result<Response, Response> {
    let PatchContext { id, upload_id, offset, length, mut checksum, mut target } = context;
    let (body, idle) = crate::api::body::idle(body, app.options.idle_timeout);
    let mut stream = body.into_data_stream();
    let mut buffer = BytesMut::new();
    let mut received = offset;
    loop {
        let frame = stream.next().await;
        let done = frame.is_none();
        if let Some(frame) = frame {
            let Ok(frame) = frame else {
                // The connection broke or stalled: keep what is durable (a chunk with a
                // checksum is all or nothing); the client asks HEAD and resumes.
                let committed = if checksum.is_none() {
                    let pending = buffer.split().freeze();
                    let written = match &mut target {
                        _ if pending.is_empty() => Ok(()),
                        Parked::Transfer(session) => session.write(pending).await.map(drop),
                        Parked::Partial(upload) => {
                            upload.write(pending).await.map_err(ApiError::from)
                        }
                    };
                    match written {
                        Ok(()) => checkpoint(&app, &mut target).await.ok(),
                        Err(_) => None,
                    }
                } else {
                    None
                };
                if committed.is_some() {
                    app.held.hold(upload_id, target);
                }
                if idle.fired() {
                    let mut response = crate::api::http::timed_out(&app, id, committed);
                    tus_headers(&mut response);
                    return Err(response);
                }
                return Err(tus_error(StatusCode::BAD_REQUEST, "the request body was interrupted"));
            };
            received += frame.len() as u64;
            if received > length {
                return Err(tus_error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "the chunk goes past Upload-Length",
                ));
            }
            if let Some(c) = checksum.as_mut() {
                c.update(&frame);
            }
            buffer.extend_from_slice(&frame);
        }
        if buffer.len() >= BUFFER || (done && !buffer.is_empty()) {
            let chunk = buffer.split().freeze();
            match &mut target {
                Parked::Transfer(session) => {
                    session.write(chunk).await.map_err(api)?;
                }
                Parked::Partial(upload) => {
                    if let Err(e) = upload.write(chunk).await {
                        // Out of space: the partial goes, as a transfer's upload does.
                        if e.is_storage_full() {
                            drop(target);
                            let _ = app.storage.abort_upload(&upload_id).await;
                        }
                        return Err(api(e));
                    }
                }
            }
        }
        if done {
            break;
        }
    }
    if let Some(c) = checksum
        && !c.matches()
    {
        // Dropping the live upload forgets the bytes after the committed offset.
        return Err(tus_error(
            StatusCode::from_u16(460).expect("valid status"),
            "Checksum Mismatch",
        ));
    }
    // The last bytes: completing fsyncs and commits in one step (no checkpoint before it).
    if let Parked::Transfer(session) = target {
        if session.offset() == length {
            session.finish().await.map_err(api)?;
            return Ok(respond(StatusCode::NO_CONTENT, &[("upload-offset", length.to_string())]));
        }
        target = Parked::Transfer(session);
    }
    let committed = checkpoint(&app, &mut target).await?;
    app.held.hold(upload_id, target);
    let expires = app.now().saturating_add(EXPIRATION).to_http_date();
    Ok(respond(
        StatusCode::NO_CONTENT,
        &[("upload-offset", committed.to_string()), ("upload-expires", expires)],
    ))
}

async fn checkpoint(app: &App, target: &mut Parked) -> Result<u64, Response> {
    match target {
        Parked::Transfer(session) => session.checkpoint().await.map_err(api),
        Parked::Partial(upload) => upload.checkpoint(app.now()).await.map_err(api),
    }
}

/// The partial upload an `Upload-Concat: final` URL names, if it is one of transfer `id`'s:
/// `[scheme://host]{BASE}/filetransfer/upload/tus/{id}/[partial/]{partial}`.
pub(crate) fn partial_of(url: &str, id: FileTransferId) -> Option<&str> {
    let path =
        url.split_once("://").map_or(url, |(_, rest)| rest.find('/').map_or(rest, |i| &rest[i..]));
    let prefix = format!("{BASE}/filetransfer/upload/tus/{id}/");
    path.strip_prefix(&prefix)
        .map(|p| p.strip_prefix("partial/").unwrap_or(p))
        .filter(|p| !p.is_empty() && !p.contains('/'))
}

/// `Upload-Concat: final;<url> <url>…`: the partials, in order, become the transfer's file.
async fn concatenate(
    app: &Arc<App>,
    caller: &crate::auth::Caller,
    id: FileTransferId,
    list: &str,
) -> Result<Response, Response> {
    let mut partials = Vec::new();
    for url in list.split_whitespace() {
        let partial = partial_of(url, id).ok_or_else(|| {
            tus_error(StatusCode::BAD_REQUEST, "every partial must belong to this file transfer")
        })?;
        let upload_id = UploadId::partial(id, partial);
        let record = app
            .storage
            .upload(&upload_id)
            .map_err(api)?
            .ok_or_else(|| tus_error(StatusCode::BAD_REQUEST, "unknown partial upload"))?;
        if record.length != Some(record.committed) {
            return Err(tus_error(StatusCode::BAD_REQUEST, "a partial upload is not complete"));
        }
        partials.push((upload_id, record.committed));
    }
    if partials.is_empty() {
        return Err(tus_error(
            StatusCode::BAD_REQUEST,
            "Upload-Concat: final needs partial uploads",
        ));
    }
    let total: u64 = partials.iter().map(|(_, n)| n).sum();
    // The final size is checked too (Altinn checks only the partials).
    let mut session = app.begin_upload(caller, id, None, Some(total)).await.map_err(api)?;
    for (upload_id, _) in &partials {
        app.held.release(upload_id);
        let mut range = app.storage.read_upload(upload_id).await.map_err(api)?;
        while let Some(chunk) =
            range.next_chunk(BUFFER).await.map_err(|e| api(ApiError::internal(e)))?
        {
            session.write(chunk).await.map_err(api)?;
        }
    }
    session.finish().await.map_err(api)?;
    for (upload_id, _) in &partials {
        let _ = app.storage.abort_upload(upload_id).await;
    }
    Ok(respond(
        StatusCode::CREATED,
        &[
            ("location", format!("{BASE}/filetransfer/upload/tus/{id}")),
            ("upload-offset", total.to_string()),
        ],
    ))
}

async fn terminate(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    terminate_of(&app, &headers, &id, None).await.unwrap_or_else(|r| r)
}

async fn terminate_partial(
    State(app): State<Arc<App>>,
    Path((id, partial)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    terminate_of(&app, &headers, &id, Some(&partial)).await.unwrap_or_else(|r| r)
}

/// DELETE: the upload and its bytes go; the transfer stays `UploadStarted` for a new upload.
async fn terminate_of(
    app: &Arc<App>,
    headers: &HeaderMap,
    id: &str,
    partial: Option<&str>,
) -> Result<Response, Response> {
    let caller = caller_for(app, headers)?;
    check_version(headers)?;
    let id = transfer_id(id)?;
    own_transfer(app, &caller, id)?;
    let upload_id =
        partial.map_or_else(|| UploadId::for_transfer(id), |p| UploadId::partial(id, p));
    app.held.release(&upload_id);
    app.storage.abort_upload(&upload_id).await.map_err(api)?;
    Ok(respond(StatusCode::NO_CONTENT, &[]))
}
