//! Ferry's Rust client.
//!
//! [`Client`] wraps the generated gRPC stubs with a bearer token and adds what every caller
//! would otherwise write again: uploading a file that resumes from the server's committed offset
//! after a dropped connection or a server restart, and downloading into a `.part` file that
//! resumes where it stopped and is checked against the file's BLAKE3 before it is renamed into
//! place.
//!
//! Architecture invariant: depends on `proto` only, not on the server or storage.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use proto::v1 as pb;
use proto::v1::file_transfer_service_client::FileTransferServiceClient;
use proto::v1::resource_service_client::ResourceServiceClient;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

pub use proto::v1;

pub mod receive;

/// Upload chunk size: large messages keep per-message overhead low (the server accepts 2 MiB).
pub const UPLOAD_CHUNK: usize = 1024 * 1024;
/// Largest message the client accepts.
pub const MAX_MESSAGE: usize = 2 * 1024 * 1024;
/// Attempts before a resumable operation gives up.
pub const MAX_ATTEMPTS: u32 = 8;

/// A connection to a Ferry server with a bearer token.
#[derive(Debug, Clone)]
pub struct Client {
    transfers: FileTransferServiceClient<Channel>,
    resources: ResourceServiceClient<Channel>,
    events: proto::v1::event_service_client::EventServiceClient<Channel>,
    token: String,
}

/// Whether a failed call may succeed if repeated (connection trouble, server restarting).
pub fn is_retryable(status: &Status) -> bool {
    matches!(status.code(), Code::Unavailable | Code::Cancelled | Code::Unknown | Code::Aborted)
        || (status.code() == Code::Internal && status.message().contains("h2"))
}

impl Client {
    /// Connects lazily to `url` (e.g. `http://127.0.0.1:8080`): the first call connects, and a
    /// lost connection is re-established by the next call.
    pub fn connect_lazy(url: &str, token: impl Into<String>) -> anyhow::Result<Self> {
        let channel = Endpoint::from_shared(url.to_owned())
            .with_context(|| format!("bad server URL {url}"))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .initial_stream_window_size(8 * 1024 * 1024)
            .initial_connection_window_size(16 * 1024 * 1024)
            .http2_adaptive_window(false)
            .connect_lazy();
        Ok(Self {
            transfers: FileTransferServiceClient::new(channel.clone())
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
            resources: ResourceServiceClient::new(channel.clone()),
            events: proto::v1::event_service_client::EventServiceClient::new(channel),
            token: token.into(),
        })
    }

    /// The same connection with another token.
    pub fn with_token(&self, token: impl Into<String>) -> Self {
        Self { token: token.into(), ..self.clone() }
    }

    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        if let Ok(value) = format!("Bearer {}", self.token).parse() {
            request.metadata_mut().insert("authorization", value);
        }
        request
    }

    /// The organisation the token names (read from its claims, unverified: it is our own token).
    pub fn token_org(&self) -> Option<String> {
        use base64::Engine as _;
        let payload = self.token.split('.').nth(1)?;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).ok()?;
        let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
        let id = claims
            .pointer("/authorization_details/systemuser_org/ID")
            .or_else(|| claims.get("urn:altinn:orgNumber"))
            .or_else(|| claims.pointer("/consumer/ID"))?
            .as_str()?;
        let digits = id.rsplit(':').next()?;
        Some(format!("0192:{digits}"))
    }

    // --- service owners and resources ---

    /// Registers the token's organisation as a service owner.
    pub async fn register_service_owner(&self, name: &str) -> Result<(), Status> {
        let request = self.request(pb::RegisterServiceOwnerRequest { name: name.to_owned() });
        self.resources.clone().register_service_owner(request).await.map(drop)
    }

    /// The token's service owner.
    pub async fn service_owner(&self) -> Result<pb::ServiceOwner, Status> {
        let request = self.request(pb::GetServiceOwnerRequest {});
        Ok(self.resources.clone().get_service_owner(request).await?.into_inner())
    }

    /// Creates or changes a resource.
    pub async fn put_resource(&self, resource: pb::PutResourceRequest) -> Result<(), Status> {
        self.resources.clone().put_resource(self.request(resource)).await.map(drop)
    }

    /// A resource's configuration.
    pub async fn resource(&self, id: &str) -> Result<pb::Resource, Status> {
        let request = self.request(pb::GetResourceRequest { resource_id: id.to_owned() });
        Ok(self.resources.clone().get_resource(request).await?.into_inner())
    }

    // --- transfers ---

    /// Initializes a transfer; returns its id.
    pub async fn initialize(
        &self,
        request: pb::InitializeFileTransferRequest,
    ) -> Result<String, Status> {
        let response =
            self.transfers.clone().initialize_file_transfer(self.request(request)).await?;
        Ok(response.into_inner().file_transfer_id)
    }

    /// The committed offset and status of a transfer's upload.
    pub async fn upload_status(&self, id: &str) -> Result<pb::GetUploadStatusResponse, Status> {
        let request = self.request(pb::GetUploadStatusRequest { file_transfer_id: id.to_owned() });
        Ok(self.transfers.clone().get_upload_status(request).await?.into_inner())
    }

    /// One upload attempt: sends `total - offset` bytes read by `next_chunk` from `offset`, and
    /// reports acknowledged offsets to `on_ack`. Returns the result, or the status that ended
    /// the attempt.
    pub async fn upload_once<F, Fut>(
        &self,
        id: &str,
        offset: u64,
        total: Option<u64>,
        mut next_chunk: F,
        on_ack: &mut (dyn FnMut(u64) + Send),
    ) -> Result<pb::UploadResult, Status>
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = std::io::Result<Option<Bytes>>> + Send,
    {
        use pb::upload_request::Message as In;
        use pb::upload_response::Message as Out;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let start = pb::UploadRequest {
            message: Some(In::Start(pb::UploadStart {
                file_transfer_id: id.to_owned(),
                offset,
                length: total,
            })),
        };
        tx.send(start).await.map_err(|_| Status::internal("upload channel closed"))?;
        let mut producer = AbortOnDrop(tokio::spawn(async move {
            loop {
                match next_chunk().await {
                    Ok(Some(data)) => {
                        let message = pb::UploadRequest { message: Some(In::Data(data)) };
                        if tx.send(message).await.is_err() {
                            return Ok(());
                        }
                    }
                    // Only a complete read sends `finish`; anything else ends the stream without
                    // it, which the server treats as an interruption.
                    Ok(None) => {
                        let finish =
                            pb::UploadRequest { message: Some(In::Finish(pb::UploadFinish {})) };
                        let _ = tx.send(finish).await;
                        return Ok(());
                    }
                    Err(e) => return Err(e),
                }
            }
        }));
        let mut responses = self
            .transfers
            .clone()
            .upload(self.request(ReceiverStream::new(rx)))
            .await?
            .into_inner();
        let mut result = None;
        while let Some(message) = responses.message().await? {
            match message.message {
                Some(Out::Ack(ack)) => on_ack(ack.committed_offset),
                Some(Out::Result(r)) => result = Some(r),
                None => {}
            }
        }
        match (&mut producer.0).await {
            Ok(Err(e)) => return Err(Status::aborted(format!("reading the input failed: {e}"))),
            Err(e) => return Err(Status::aborted(format!("reader task failed: {e}"))),
            Ok(Ok(())) => {}
        }
        result.ok_or_else(|| Status::unavailable("the server ended the upload without a result"))
    }

    /// Uploads `path` as the file of transfer `id`, resuming from the server's committed offset
    /// after connection trouble, up to [`MAX_ATTEMPTS`] times. `progress` gets durable offsets.
    pub async fn upload_file(
        &self,
        id: &str,
        path: &Path,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> anyhow::Result<pb::UploadResult> {
        let total = tokio::fs::metadata(path)
            .await
            .with_context(|| format!("reading {}", path.display()))?
            .len();
        let mut attempt = 0;
        loop {
            let offset = match self.upload_status(id).await {
                Ok(status) => status.committed_offset,
                Err(s) if is_retryable(&s) && attempt < MAX_ATTEMPTS => {
                    attempt += 1;
                    tokio::time::sleep(retry_delay(attempt)).await;
                    continue;
                }
                Err(s) => return Err(anyhow::Error::new(s.clone()).context(describe(&s))),
            };
            progress(offset);
            let mut file = tokio::fs::File::open(path).await?;
            file.seek(std::io::SeekFrom::Start(offset)).await?;
            let file = std::sync::Arc::new(tokio::sync::Mutex::new(file));
            let next_chunk = move || {
                let file = file.clone();
                async move {
                    let mut buf = vec![0u8; UPLOAD_CHUNK];
                    let mut file = file.lock().await;
                    let mut filled = 0;
                    while filled < buf.len() {
                        let n = file.read(&mut buf[filled..]).await?;
                        if n == 0 {
                            break;
                        }
                        filled += n;
                    }
                    buf.truncate(filled);
                    Ok((filled > 0).then(|| Bytes::from(buf)))
                }
            };
            match self.upload_once(id, offset, Some(total), next_chunk, progress).await {
                Ok(result) => return Ok(result),
                Err(s) if is_retryable(&s) && attempt < MAX_ATTEMPTS => {
                    attempt += 1;
                    tracing::info!(status = %s, attempt, "upload interrupted; resuming");
                    tokio::time::sleep(retry_delay(attempt)).await;
                }
                Err(s) => return Err(anyhow::Error::new(s.clone()).context(describe(&s))),
            }
        }
    }

    /// Downloads `length` bytes (or the rest) from `offset`: the header and the bytes.
    pub async fn download_range(
        &self,
        id: &str,
        offset: u64,
        length: Option<u64>,
    ) -> Result<(pb::DownloadHeader, Vec<u8>), Status> {
        let mut out = Vec::new();
        let header = self.download_into(id, offset, length, &mut out).await?;
        Ok((header, out))
    }

    /// Downloads `length` bytes (or the rest) from `offset` into `sink`; returns the header.
    /// Fails if fewer bytes arrive than the header announced.
    pub async fn download_into(
        &self,
        id: &str,
        offset: u64,
        length: Option<u64>,
        sink: &mut (impl tokio::io::AsyncWrite + Unpin),
    ) -> Result<pb::DownloadHeader, Status> {
        self.download_into_reporting(id, offset, length, sink, &mut |_| {}).await
    }

    /// [`Client::download_into`], telling `progress` the offset reached after each chunk.
    async fn download_into_reporting(
        &self,
        id: &str,
        offset: u64,
        length: Option<u64>,
        sink: &mut (impl tokio::io::AsyncWrite + Unpin),
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<pb::DownloadHeader, Status> {
        use pb::download_response::Message as Out;
        let request =
            self.request(pb::DownloadRequest { file_transfer_id: id.to_owned(), offset, length });
        let mut stream = self.transfers.clone().download(request).await?.into_inner();
        let mut header = None;
        let mut received = 0u64;
        while let Some(message) = stream.message().await? {
            match message.message {
                Some(Out::Header(h)) => header = Some(h),
                Some(Out::Data(data)) => {
                    received += data.len() as u64;
                    sink.write_all(&data)
                        .await
                        .map_err(|e| Status::aborted(format!("writing failed: {e}")))?;
                    progress(offset + received);
                }
                None => {}
            }
        }
        let header =
            header.ok_or_else(|| Status::unavailable("download ended without a header"))?;
        if received != header.length {
            return Err(Status::unavailable(format!(
                "download cut short at {received} of {} bytes",
                header.length
            )));
        }
        Ok(header)
    }

    /// Downloads a transfer's file to `path`, resuming a `path.part` left by an earlier
    /// attempt, verifying the BLAKE3 of the whole file, then renaming it into place.
    pub async fn download_file(&self, id: &str, path: &Path) -> anyhow::Result<pb::DownloadHeader> {
        self.download_file_with_progress(id, path, &mut |_| {}).await
    }

    /// [`Client::download_file`], telling `progress` how many bytes of the file are here
    /// (a resumed download starts at what the `.part` held).
    pub async fn download_file_with_progress(
        &self,
        id: &str,
        path: &Path,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> anyhow::Result<pb::DownloadHeader> {
        let part = part_path(path);
        let mut attempt = 0;
        loop {
            let offset = tokio::fs::metadata(&part).await.map(|m| m.len()).unwrap_or(0);
            let mut file =
                tokio::fs::OpenOptions::new().create(true).append(true).open(&part).await?;
            progress(offset);
            let result = self.download_into_reporting(id, offset, None, &mut file, progress).await;
            file.sync_all().await?;
            drop(file);
            match result {
                Ok(header) => {
                    let actual = blake3_of(&part).await?;
                    if actual != header.blake3 {
                        tokio::fs::remove_file(&part).await?;
                        bail!(
                            "the downloaded file's BLAKE3 {actual} differs from the server's {}",
                            header.blake3
                        );
                    }
                    tokio::fs::rename(&part, path).await?;
                    return Ok(header);
                }
                // Asked past the end: the .part is already complete.
                Err(s) if s.code() == Code::OutOfRange && offset > 0 => {
                    let overview = self.overview(id).await?;
                    if offset == overview.file_transfer_size
                        && blake3_of(&part).await? == overview.blake3
                    {
                        tokio::fs::rename(&part, path).await?;
                        return Ok(pb::DownloadHeader {
                            file_name: overview.file_name,
                            file_size: overview.file_transfer_size,
                            offset,
                            length: 0,
                            blake3: overview.blake3,
                            checksum: overview.checksum,
                        });
                    }
                    tokio::fs::remove_file(&part).await?;
                    bail!(
                        "{} does not match the file on the server; removed it, try again",
                        part.display()
                    );
                }
                Err(s) if is_retryable(&s) && attempt < MAX_ATTEMPTS => {
                    attempt += 1;
                    tokio::time::sleep(retry_delay(attempt)).await;
                }
                Err(s) => return Err(anyhow::Error::new(s.clone()).context(describe(&s))),
            }
        }
    }

    /// Confirms the download.
    pub async fn confirm(&self, id: &str) -> Result<(), Status> {
        let request = self.request(pb::ConfirmDownloadRequest { file_transfer_id: id.to_owned() });
        self.transfers.clone().confirm_download(request).await.map(drop)
    }

    /// The overview.
    pub async fn overview(&self, id: &str) -> Result<pb::FileTransferOverview, Status> {
        let request = self.request(pb::GetFileTransferRequest { file_transfer_id: id.to_owned() });
        Ok(self.transfers.clone().get_file_transfer(request).await?.into_inner())
    }

    /// The overview with histories.
    pub async fn details(&self, id: &str) -> Result<pb::FileTransferStatusDetails, Status> {
        let request = self.request(pb::GetFileTransferRequest { file_transfer_id: id.to_owned() });
        Ok(self.transfers.clone().get_file_transfer_details(request).await?.into_inner())
    }

    /// Follows the caller's events: a replay after `request.after`, then live ones.
    pub async fn watch(
        &self,
        request: pb::WatchRequest,
    ) -> Result<tonic::Streaming<pb::WatchResponse>, Status> {
        Ok(self.events.clone().watch(self.request(request)).await?.into_inner())
    }

    /// Waits for transfer `id` to be published or to fail, following the caller's events;
    /// returns the event type that settled it.
    pub async fn wait_settled(&self, id: &str, resource_id: &str) -> anyhow::Result<String> {
        let settled = ["no.altinn.broker.published", "no.altinn.broker.uploadfailed"];
        let request = pb::WatchRequest {
            after: "0".into(),
            resource_id: resource_id.to_owned(),
            types: settled.iter().map(|t| (*t).to_owned()).collect(),
            heartbeat_seconds: 30,
        };
        let mut stream = self
            .watch(request)
            .await
            .map_err(|s| anyhow::Error::new(s.clone()).context(describe(&s)))?;
        while let Some(message) = stream
            .message()
            .await
            .map_err(|s| anyhow::Error::new(s.clone()).context(describe(&s)))?
        {
            if let Some(pb::watch_response::Message::Event(e)) = message.message
                && e.resourceinstance == id
            {
                return Ok(e.r#type);
            }
        }
        bail!("the event stream ended before transfer {id} settled")
    }

    /// One page of search results.
    pub async fn search(
        &self,
        query: pb::SearchFileTransfersRequest,
    ) -> Result<pb::SearchFileTransfersResponse, Status> {
        Ok(self.transfers.clone().search_file_transfers(self.request(query)).await?.into_inner())
    }
}

/// Aborts a task when dropped: a cancelled upload must stop feeding its stream.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Where a download in progress is kept.
pub fn part_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".part");
    path.with_file_name(name)
}

async fn blake3_of(path: &Path) -> anyhow::Result<String> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut hasher = blake3::Hasher::new();
        hasher.update_reader(std::fs::File::open(&path)?)?;
        Ok(hasher.finalize().to_hex().to_string())
    })
    .await?
}

fn retry_delay(attempt: u32) -> Duration {
    Duration::from_millis(200 * u64::from(attempt.min(10)))
}

/// A status as a one-line message, with the Altinn code where there is one.
pub fn describe(status: &Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}
