//! The gRPC front-end: thin handlers that authenticate, unpack, call [`App`] and convert.

use std::sync::Arc;

use proto::prost_types;
use proto::v1 as pb;
use proto::v1::file_transfer_service_server::FileTransferService;
use proto::v1::resource_service_server::ResourceService;
use storage::model::*;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::app::{App, InitializeRequest, SearchQuery};
use crate::auth::Caller;
use crate::error::ApiError;
use std::collections::HashMap;
use tonic::Code;
use tonic_types::{ErrorDetails, StatusExt};

/// Download message size: large enough to keep per-message overhead small, well under the
/// 4 MiB default decode limit of clients.
const DOWNLOAD_CHUNK: usize = 1024 * 1024;

fn caller<T>(app: &App, request: &Request<T>) -> Result<Caller, Status> {
    let header = request.metadata().get("authorization").and_then(|v| v.to_str().ok());
    app.auth.authenticate(header).map_err(|e| ApiError::from(e).into())
}

/// Gives the Upload call's request body an idle timeout (see `crate::api::body`): a client that
/// stops sending bytes but keeps its stream open is cut off, however large its messages.
pub async fn idle_uploads(
    axum::extract::State(app): axum::extract::State<Arc<App>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    const UPLOAD: &str = "/ferry.v1.FileTransferService/Upload";
    if request.uri().path() != UPLOAD {
        return next.run(request).await;
    }
    let (mut parts, body) = request.into_parts();
    let (body, idle) = crate::api::body::idle(body, app.options.idle_timeout);
    parts.extensions.insert(idle);
    next.run(axum::extract::Request::from_parts(parts, body)).await
}

/// If `status` is tonic's refusal of a message over the size limit: what to tell the client.
fn too_large_message(status: &Status) -> Option<String> {
    (status.code() == tonic::Code::OutOfRange
        && status.message().contains("message length too large"))
    .then(|| {
        format!(
            "a message larger than the limit of {} bytes was refused ({}): send data in chunks of at most 1 MiB",
            crate::MAX_MESSAGE,
            status.message()
        )
    })
}

/// Gives tonic's refusal of an oversized request message, which happens before any handler
/// runs, the code gRPC prescribes (RESOURCE_EXHAUSTED, not OUT_OF_RANGE) and a message that
/// names the limit. Such refusals are trailers-only responses: the status is in the headers.
pub async fn oversized_requests(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let mut response = next.run(request).await;
    let headers = response.headers();
    let refused = headers.get("grpc-status").is_some_and(|v| v == "11")
        && headers.get("grpc-message").and_then(|v| v.to_str().ok()).is_some_and(|m| {
            m.contains("message%20length%20too%20large") || m.contains("message length too large")
        });
    if refused {
        let status = Status::new(tonic::Code::OutOfRange, "message length too large");
        let message = too_large_message(&status).expect("a refusal");
        let headers = response.headers_mut();
        headers.insert("grpc-status", axum::http::HeaderValue::from_static("8"));
        if let Ok(value) = axum::http::HeaderValue::from_str(&percent_encode(&message)) {
            headers.insert("grpc-message", value);
        }
    }
    response
}

/// gRPC's percent-encoding of `grpc-message` (everything outside printable ASCII and `%`).
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn transfer_id(text: &str) -> Result<FileTransferId, Status> {
    text.parse().map_err(|e: IdError| ApiError::invalid(e.to_string()).into())
}

fn ts(t: Timestamp) -> prost_types::Timestamp {
    let micros = t.as_unix_micros();
    prost_types::Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: (micros.rem_euclid(1_000_000) * 1000) as i32,
    }
}

fn from_ts(t: &prost_types::Timestamp) -> Timestamp {
    Timestamp::from_unix_micros(t.seconds * 1_000_000 + i64::from(t.nanos) / 1000)
}

/// Proto status = Altinn id + 1 (0 is "unspecified").
pub fn status_to_proto(s: FileTransferStatus) -> pb::FileTransferStatus {
    pb::FileTransferStatus::try_from(i32::from(s.id()) + 1)
        .unwrap_or(pb::FileTransferStatus::Unspecified)
}

fn status_from_proto(v: i32) -> Result<FileTransferStatus, Status> {
    u8::try_from(v - 1)
        .ok()
        .and_then(FileTransferStatus::from_id)
        .ok_or_else(|| ApiError::invalid(format!("unknown file transfer status {v}")).into())
}

fn recipient_status_to_proto(s: RecipientFileTransferStatus) -> i32 {
    i32::from(s.id()) + 1
}

fn recipient_status_from_proto(v: i32) -> Result<RecipientFileTransferStatus, Status> {
    u8::try_from(v - 1)
        .ok()
        .and_then(RecipientFileTransferStatus::from_id)
        .ok_or_else(|| ApiError::invalid(format!("unknown recipient status {v}")).into())
}

/// The overview of a transfer (Altinn `FileTransferOverviewExt`).
pub fn overview(t: &FileTransfer) -> pb::FileTransferOverview {
    let latest = t.latest_status();
    let recipients = crate::app::recipient_views(t)
        .into_iter()
        .map(|r| pb::RecipientStatus {
            recipient: r.party.to_string(),
            current_recipient_file_transfer_status_code: recipient_status_to_proto(r.status),
            current_recipient_file_transfer_status_text: r.status.default_text().to_owned(),
            current_recipient_file_transfer_status_changed: Some(ts(r.changed)),
        })
        .collect();
    pb::FileTransferOverview {
        file_transfer_id: t.id.to_string(),
        resource_id: t.resource_id.to_string(),
        file_name: t.file_name.clone(),
        senders_file_transfer_reference: t.senders_reference.clone(),
        checksum: crate::app::checksum_of(t).map(|m| m.to_hex()).unwrap_or_default(),
        use_virus_scan: t.use_virus_scan,
        file_transfer_size: t.content.map_or(0, |c| c.size),
        file_transfer_status: status_to_proto(t.status()) as i32,
        file_transfer_status_text: t.status_text().to_owned(),
        file_transfer_status_changed: Some(ts(latest.at)),
        created: Some(ts(t.created)),
        expiration_time: Some(ts(t.expiration_time)),
        sender: t.sender.to_string(),
        recipients,
        property_list: t.property_list.clone().into_iter().collect(),
        published: t.published_at().map(ts),
        blake3: t.content.map(|c| c.blake3.to_hex()).unwrap_or_default(),
    }
}

/// The gRPC `FileTransferService`.
#[derive(Debug, Clone)]
pub struct FileTransferApi {
    app: Arc<App>,
}

impl FileTransferApi {
    /// Serves `app`.
    pub fn new(app: Arc<App>) -> Self {
        Self { app }
    }
}

#[tonic::async_trait]
impl FileTransferService for FileTransferApi {
    async fn initialize_file_transfer(
        &self,
        request: Request<pb::InitializeFileTransferRequest>,
    ) -> Result<Response<pb::InitializeFileTransferResponse>, Status> {
        let caller = caller(&self.app, &request)?;
        let r = request.into_inner();
        let req = InitializeRequest {
            file_name: r.file_name,
            resource_id: r.resource_id,
            senders_file_transfer_reference: r.senders_file_transfer_reference,
            sender: r.sender,
            recipients: r.recipients,
            property_list: r.property_list.into_iter().collect(),
            checksum: r.checksum,
            disable_virus_scan: r.disable_virus_scan.unwrap_or(false),
            idempotency_key: Some(r.idempotency_key).filter(|k| !k.is_empty()),
            blake3: r.blake3,
        };
        let id = self.app.initialize(&caller, req).await?;
        Ok(Response::new(pb::InitializeFileTransferResponse { file_transfer_id: id.to_string() }))
    }

    type UploadStream = ReceiverStream<Result<pb::UploadResponse, Status>>;

    async fn upload(
        &self,
        request: Request<Streaming<pb::UploadRequest>>,
    ) -> Result<Response<Self::UploadStream>, Status> {
        use pb::upload_request::Message as In;
        use pb::upload_response::Message as Out;
        let caller = caller(&self.app, &request)?;
        // Set by `idle_uploads` around this call's request body.
        let idle =
            request.extensions().get::<crate::api::body::Idle>().cloned().unwrap_or_default();
        let idle_secs = self.app.options.idle_timeout.as_secs();
        let mut stream = request.into_inner();
        let first = stream.message().await.map_err(|status| {
            if idle.fired() {
                Status::unavailable(format!("no `start` message within {idle_secs} s"))
            } else {
                status
            }
        })?;
        let start = match first.and_then(|m| m.message) {
            Some(In::Start(start)) => start,
            _ => return Err(ApiError::invalid("the first upload message must be `start`").into()),
        };
        let id = transfer_id(&start.file_transfer_id)?;
        let mut session =
            self.app.begin_upload(&caller, id, Some(start.offset), start.length).await?;
        let (tx, rx) = mpsc::channel(16);
        let app = self.app.clone();
        self.app.spawn(async move {
            let ack = |committed| {
                Ok(pb::UploadResponse {
                    message: Some(Out::Ack(pb::UploadAck {
                        committed_offset: committed,
                    })),
                })
            };
            loop {
                let next = tokio::select! {
                    () = app.shutdown.cancelled() => {
                        // Shutting down: make what arrived durable and tell the client where
                        // to resume.
                        let message = match session.checkpoint().await {
                            Ok(committed) => format!(
                                "the server is shutting down; {committed} bytes are durable, resume from there"
                            ),
                            Err(e) => format!("the server is shutting down: {e}"),
                        };
                        let _ = tx.send(Err(Status::unavailable(message))).await;
                        return;
                    }
                    next = stream.message() => next,
                };
                match next {
                    Ok(Some(pb::UploadRequest {
                        message: Some(In::Data(data)),
                    })) => match session.write(data).await {
                        Ok(Some(committed)) => {
                            let _ = tx.send(ack(committed)).await;
                        }
                        Ok(None) => {}
                        Err(e) => {
                            let _ = tx.send(Err(e.into())).await;
                            return;
                        }
                    },
                    Ok(Some(pb::UploadRequest { message: Some(In::Finish(_)) })) => break,
                    Ok(Some(_)) => {
                        let error = ApiError::invalid("only data or finish may follow `start`");
                        let _ = tx.send(Err(error.into())).await;
                        return;
                    }
                    Ok(None) => {
                        // Ended without `finish`: an interruption, never a complete file.
                        let message = match session.checkpoint().await {
                            Ok(committed) => format!(
                                "the upload stream ended without `finish`; {committed} bytes are durable, resume from there"
                            ),
                            Err(e) => format!("the upload stream ended without `finish`: {e}"),
                        };
                        let _ = tx.send(Err(Status::aborted(message))).await;
                        return;
                    }
                    Err(status) => {
                        // A message over the limit, or the client went away: keep what arrived
                        // durable so it can resume, and say why (a gone client hears nothing).
                        tracing::info!(transfer = %id, %status, "upload interrupted");
                        let committed = match session.checkpoint().await {
                            Ok(committed) => committed,
                            Err(e) => {
                                tracing::warn!(transfer = %id, error = %e, "checkpoint after interruption failed");
                                session.committed()
                            }
                        };
                        let status = match too_large_message(&status) {
                            Some(limit) => Status::resource_exhausted(format!(
                                "{limit}; {committed} bytes are durable, resume from there"
                            )),
                            // The client stopped sending but kept the stream open
                            // ([limits] idle_timeout_secs).
                            None if idle.fired() => Status::unavailable(format!(
                                "no data for {idle_secs} s; {committed} bytes are durable, resume from there"
                            )),
                            None => status,
                        };
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                }
            }
            // No checkpoint first: completing fsyncs the file and commits in one step, and a
            // checkpoint just before it would cost a second fsync and commit for nothing.
            let result = session.finish().await.map(|r| {
                let t = r.transfer;
                let content = t.content.expect("a finished upload has content");
                (content.size, pb::UploadResponse {
                    message: Some(Out::Result(pb::UploadResult {
                        file_transfer_id: t.id.to_string(),
                        size: content.size,
                        blake3: content.blake3.to_hex(),
                        checksum: content.md5.map(|m| m.to_hex()).unwrap_or_default(),
                        status: status_to_proto(t.status()) as i32,
                        status_text: t.status_text().to_owned(),
                    })),
                })
            });
            match result {
                Ok((size, result)) => {
                    if tx.send(ack(size)).await.is_ok() {
                        let _ = tx.send(Ok(result)).await;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e.into())).await;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn get_upload_status(
        &self,
        request: Request<pb::GetUploadStatusRequest>,
    ) -> Result<Response<pb::GetUploadStatusResponse>, Status> {
        let caller = caller(&self.app, &request)?;
        let id = transfer_id(&request.get_ref().file_transfer_id)?;
        let (committed, status) = self.app.upload_status(&caller, id)?;
        Ok(Response::new(pb::GetUploadStatusResponse {
            committed_offset: committed,
            status: status_to_proto(status) as i32,
        }))
    }

    type DownloadStream = ReceiverStream<Result<pb::DownloadResponse, Status>>;

    async fn download(
        &self,
        request: Request<pb::DownloadRequest>,
    ) -> Result<Response<Self::DownloadStream>, Status> {
        use pb::download_response::Message as Out;
        let caller = caller(&self.app, &request)?;
        let r = request.into_inner();
        let id = transfer_id(&r.file_transfer_id)?;
        let mut download = self.app.download(&caller, id, r.offset, r.length).await?;
        let (tx, rx) = mpsc::channel(8);
        let header = pb::DownloadHeader {
            file_name: download.file_name.clone(),
            file_size: download.content.size,
            offset: download.offset,
            length: download.range.remaining(),
            blake3: download.content.blake3.to_hex(),
            checksum: download.content.md5.map(|m| m.to_hex()).unwrap_or_default(),
        };
        let app = self.app.clone();
        self.app.spawn(async move {
            if tx
                .send(Ok(pb::DownloadResponse {
                    message: Some(Out::Header(header)),
                }))
                .await
                .is_err()
            {
                return;
            }
            loop {
                let next = tokio::select! {
                    () = app.shutdown.cancelled() => {
                        let status = Status::unavailable("the server is shutting down; resume the download");
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                    next = download.range.next_chunk(DOWNLOAD_CHUNK) => next,
                };
                if let Ok(Some(data)) = &next {
                    app.metrics.download_bytes.fetch_add(data.len() as u64, std::sync::atomic::Ordering::Relaxed);
                }
                let message = match next {
                    Ok(Some(data)) => Ok(pb::DownloadResponse {
                        message: Some(Out::Data(data)),
                    }),
                    Ok(None) => return,
                    Err(e) => Err(ApiError::internal(e).into()),
                };
                let failed = message.is_err();
                if tx.send(message).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn confirm_download(
        &self,
        request: Request<pb::ConfirmDownloadRequest>,
    ) -> Result<Response<pb::ConfirmDownloadResponse>, Status> {
        let caller = caller(&self.app, &request)?;
        let id = transfer_id(&request.get_ref().file_transfer_id)?;
        self.app.confirm_download(&caller, id).await?;
        Ok(Response::new(pb::ConfirmDownloadResponse {}))
    }

    async fn get_file_transfer(
        &self,
        request: Request<pb::GetFileTransferRequest>,
    ) -> Result<Response<pb::FileTransferOverview>, Status> {
        let caller = caller(&self.app, &request)?;
        let id = transfer_id(&request.get_ref().file_transfer_id)?;
        Ok(Response::new(overview(&self.app.transfer(&caller, id)?)))
    }

    async fn get_file_transfer_details(
        &self,
        request: Request<pb::GetFileTransferRequest>,
    ) -> Result<Response<pb::FileTransferStatusDetails>, Status> {
        let caller = caller(&self.app, &request)?;
        let id = transfer_id(&request.get_ref().file_transfer_id)?;
        let t = self.app.transfer(&caller, id)?;
        Ok(Response::new(pb::FileTransferStatusDetails {
            overview: Some(overview(&t)),
            file_transfer_status_history: t
                .status_history
                .iter()
                .map(|e| pb::FileTransferStatusEvent {
                    file_transfer_status: status_to_proto(e.status) as i32,
                    file_transfer_status_text: e.display_text().to_owned(),
                    file_transfer_status_changed: Some(ts(e.at)),
                })
                .collect(),
            recipient_file_transfer_status_history: t
                .recipient_history
                .iter()
                .map(|e| pb::RecipientStatusEvent {
                    recipient: e.recipient.to_string(),
                    recipient_file_transfer_status_code: recipient_status_to_proto(e.status),
                    recipient_file_transfer_status_text: e.status.default_text().to_owned(),
                    recipient_file_transfer_status_changed: Some(ts(e.at)),
                })
                .collect(),
        }))
    }

    async fn search_file_transfers(
        &self,
        request: Request<pb::SearchFileTransfersRequest>,
    ) -> Result<Response<pb::SearchFileTransfersResponse>, Status> {
        let caller = caller(&self.app, &request)?;
        let r = request.into_inner();
        let query = SearchQuery {
            resource_id: r.resource_id,
            status: r.status.map(status_from_proto).transpose()?,
            recipient_status: r.recipient_status.map(recipient_status_from_proto).transpose()?,
            from: r.from.as_ref().map(from_ts),
            to: r.to.as_ref().map(from_ts),
            order_ascending: r.order_ascending,
            as_recipient: match pb::Role::try_from(r.role).unwrap_or(pb::Role::Unspecified) {
                pb::Role::Unspecified => None,
                pb::Role::Sender => Some(false),
                pb::Role::Recipient => Some(true),
            },
            page_token: Some(r.page_token).filter(|t| !t.is_empty()),
            page_size: Some(r.page_size as usize).filter(|n| *n > 0),
        };
        let (ids, next) = self.app.search(&caller, query)?;
        Ok(Response::new(pb::SearchFileTransfersResponse {
            file_transfer_ids: ids.iter().map(ToString::to_string).collect(),
            next_page_token: next.unwrap_or_default(),
        }))
    }
}

/// The gRPC `ResourceService`.
#[derive(Debug, Clone)]
pub struct ResourceApi {
    app: Arc<App>,
}

impl ResourceApi {
    /// Serves `app`.
    pub fn new(app: Arc<App>) -> Self {
        Self { app }
    }
}

fn parties(list: &[String]) -> Result<Vec<Party>, Status> {
    list.iter()
        .map(|p| Party::parse(p).map_err(|e| ApiError::invalid(e.to_string()).into()))
        .collect()
}

/// ISO-8601 for a duration, in the largest whole unit (`P30D`, `PT2H`, `PT90M`, `PT45S`).
fn iso_duration(d: std::time::Duration) -> String {
    let secs = d.as_secs();
    match secs {
        0 => "PT0S".to_owned(),
        s if s.is_multiple_of(86_400) => format!("P{}D", s / 86_400),
        s if s.is_multiple_of(3600) => format!("PT{}H", s / 3600),
        s if s.is_multiple_of(60) => format!("PT{}M", s / 60),
        s => format!("PT{s}S"),
    }
}

/// A resource as the API shows it.
pub fn resource_to_proto(r: &ResourceConfig) -> pb::Resource {
    pb::Resource {
        resource_id: r.id.to_string(),
        service_owner: r.service_owner.to_string(),
        max_file_transfer_size: r.max_file_transfer_size,
        file_transfer_time_to_live: iso_duration(r.time_to_live()),
        purge_file_transfer_after_all_recipients_confirmed: r
            .purge_file_transfer_after_all_recipients_confirmed,
        purge_file_transfer_grace_period: iso_duration(r.grace_period()),
        use_manifest_file_shim: r.use_manifest_file_shim,
        external_service_code_legacy: r.external_service_code_legacy.clone(),
        external_service_edition_code_legacy: r.external_service_edition_code_legacy,
        required_party: r.required_party.as_ref().map(ToString::to_string),
        approved_for_disabled_virus_scan: r.approved_for_disabled_virus_scan,
        access: Some(pb::AccessRules {
            senders: r.access.senders.iter().map(ToString::to_string).collect(),
            recipients: r.access.recipients.iter().map(ToString::to_string).collect(),
        }),
    }
}

#[tonic::async_trait]
impl ResourceService for ResourceApi {
    async fn register_service_owner(
        &self,
        request: Request<pb::RegisterServiceOwnerRequest>,
    ) -> Result<Response<pb::RegisterServiceOwnerResponse>, Status> {
        let caller = caller(&self.app, &request)?;
        self.app.register_service_owner(&caller, request.into_inner().name).await?;
        Ok(Response::new(pb::RegisterServiceOwnerResponse {}))
    }

    async fn get_service_owner(
        &self,
        request: Request<pb::GetServiceOwnerRequest>,
    ) -> Result<Response<pb::ServiceOwner>, Status> {
        let caller = caller(&self.app, &request)?;
        let owner = self.app.service_owner(&caller)?;
        Ok(Response::new(pb::ServiceOwner { id: owner.id.to_string(), name: owner.name }))
    }

    async fn put_resource(
        &self,
        request: Request<pb::PutResourceRequest>,
    ) -> Result<Response<pb::PutResourceResponse>, Status> {
        let caller = caller(&self.app, &request)?;
        let r = request.into_inner();
        let update = ResourceUpdate {
            max_file_transfer_size: r.max_file_transfer_size,
            file_transfer_time_to_live: r.file_transfer_time_to_live,
            purge_file_transfer_after_all_recipients_confirmed: r
                .purge_file_transfer_after_all_recipients_confirmed,
            purge_file_transfer_grace_period: r.purge_file_transfer_grace_period,
            use_manifest_file_shim: r.use_manifest_file_shim,
            external_service_code_legacy: r.external_service_code_legacy,
            external_service_edition_code_legacy: r.external_service_edition_code_legacy,
            required_party: r
                .required_party
                .map(|p| {
                    Party::parse_lenient(&p)
                        .map_err(|e| Status::from(ApiError::invalid(e.to_string())))
                })
                .transpose()?,
            access: r
                .access
                .map(|a| {
                    Ok::<_, Status>(AccessRules {
                        senders: parties(&a.senders)?,
                        recipients: parties(&a.recipients)?,
                    })
                })
                .transpose()?,
        };
        self.app.put_resource(&caller, &r.resource_id, update).await?;
        Ok(Response::new(pb::PutResourceResponse {}))
    }

    async fn get_resource(
        &self,
        request: Request<pb::GetResourceRequest>,
    ) -> Result<Response<pb::Resource>, Status> {
        let caller = caller(&self.app, &request)?;
        let resource = self.app.resource(&caller, &request.get_ref().resource_id)?;
        Ok(Response::new(resource_to_proto(&resource)))
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Self {
        let code = match e.kind {
            crate::error::Kind::Unauthenticated => Code::Unauthenticated,
            crate::error::Kind::PermissionDenied => Code::PermissionDenied,
            crate::error::Kind::NotFound => Code::NotFound,
            crate::error::Kind::InvalidArgument => Code::InvalidArgument,
            crate::error::Kind::FailedPrecondition => Code::FailedPrecondition,
            crate::error::Kind::AlreadyExists => Code::AlreadyExists,
            crate::error::Kind::OutOfRange => Code::OutOfRange,
            crate::error::Kind::Unavailable => Code::Unavailable,
            crate::error::Kind::ResourceExhausted => Code::ResourceExhausted,
            crate::error::Kind::Internal => Code::Internal,
        };
        match e.code_string() {
            Some(altinn) => {
                let details = ErrorDetails::with_error_info(
                    altinn.clone(),
                    "ferry",
                    HashMap::from([("http_status".to_owned(), e.http_status.to_string())]),
                );
                Status::with_error_details(code, format!("{altinn}: {}", e.message), details)
            }
            None => Status::new(code, e.message),
        }
    }
}

/// Reads the Altinn error code (`BRO-000NN`) from a status, if it carries one.
pub fn altinn_code_of(status: &Status) -> Option<String> {
    status.get_details_error_info().map(|info| info.reason)
}
