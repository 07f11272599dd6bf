//! The ceilings every Ferry figure is divided by, measured in the same run on the same bytes:
//! a bare tonic server (the same service definition, the same tuning as Ferry's, no work behind
//! it), the disk, BLAKE3, and clamd's own INSTREAM.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use proto::v1::file_transfer_service_server::{FileTransferService, FileTransferServiceServer};
use proto::v1::{self as pb, download_response, upload_request, upload_response};
use tokio_stream::{Stream, StreamExt, wrappers::ReceiverStream};
use tonic::{Request, Response, Status, Streaming};

type Reply<T> = Result<Response<T>, Status>;
type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Discards uploads; serves downloads of one file from the page cache, in 1 MiB messages.
#[derive(Debug)]
struct Bare {
    file: PathBuf,
}

#[tonic::async_trait]
impl FileTransferService for Bare {
    type UploadStream = BoxStream<pb::UploadResponse>;
    type DownloadStream = BoxStream<pb::DownloadResponse>;

    async fn upload(
        &self,
        request: Request<Streaming<pb::UploadRequest>>,
    ) -> Reply<Self::UploadStream> {
        let mut stream = request.into_inner();
        let mut size = 0u64;
        while let Some(message) = stream.next().await {
            match message?.message {
                Some(upload_request::Message::Data(data)) => size += data.len() as u64,
                Some(upload_request::Message::Finish(_)) => break,
                _ => {}
            }
        }
        let result = pb::UploadResponse {
            message: Some(upload_response::Message::Result(pb::UploadResult {
                size,
                ..Default::default()
            })),
        };
        Ok(Response::new(Box::pin(tokio_stream::once(Ok(result)))))
    }

    async fn download(&self, _: Request<pb::DownloadRequest>) -> Reply<Self::DownloadStream> {
        let mut file =
            std::fs::File::open(&self.file).map_err(|e| Status::internal(e.to_string()))?;
        let length = file.metadata().map_err(|e| Status::internal(e.to_string()))?.len();
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let header = pb::DownloadResponse {
            message: Some(download_response::Message::Header(pb::DownloadHeader {
                length,
                file_size: length,
                ..Default::default()
            })),
        };
        tokio::task::spawn_blocking(move || {
            if tx.blocking_send(Ok(header)).is_err() {
                return;
            }
            loop {
                let mut buf = BytesMut::zeroed(1024 * 1024);
                let n = match file.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => n,
                    Err(e) => {
                        let _ = tx.blocking_send(Err(Status::internal(e.to_string())));
                        return;
                    }
                };
                buf.truncate(n);
                let data = download_response::Message::Data(buf.freeze());
                if tx.blocking_send(Ok(pb::DownloadResponse { message: Some(data) })).is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn initialize_file_transfer(
        &self,
        _: Request<pb::InitializeFileTransferRequest>,
    ) -> Reply<pb::InitializeFileTransferResponse> {
        Ok(Response::new(pb::InitializeFileTransferResponse { file_transfer_id: "bare".into() }))
    }

    async fn get_upload_status(
        &self,
        _: Request<pb::GetUploadStatusRequest>,
    ) -> Reply<pb::GetUploadStatusResponse> {
        Err(Status::unimplemented("bare server"))
    }

    async fn confirm_download(
        &self,
        _: Request<pb::ConfirmDownloadRequest>,
    ) -> Reply<pb::ConfirmDownloadResponse> {
        Err(Status::unimplemented("bare server"))
    }

    async fn get_file_transfer(
        &self,
        _: Request<pb::GetFileTransferRequest>,
    ) -> Reply<pb::FileTransferOverview> {
        Err(Status::unimplemented("bare server"))
    }

    async fn get_file_transfer_details(
        &self,
        _: Request<pb::GetFileTransferRequest>,
    ) -> Reply<pb::FileTransferStatusDetails> {
        Err(Status::unimplemented("bare server"))
    }

    async fn search_file_transfers(
        &self,
        _: Request<pb::SearchFileTransfersRequest>,
    ) -> Reply<pb::SearchFileTransfersResponse> {
        Err(Status::unimplemented("bare server"))
    }
}

/// A bare tonic server on loopback with Ferry's tuning (frames, windows, TCP_NODELAY); its URL.
pub(crate) async fn start_bare_server(file: PathBuf) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener).map(|s| {
        let s = s?;
        s.set_nodelay(true)?;
        Ok::<_, std::io::Error>(s)
    });
    let service = FileTransferServiceServer::new(Bare { file })
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX);
    tokio::spawn(
        tonic::transport::Server::builder()
            .max_frame_size(Some(1024 * 1024 - 1))
            .initial_stream_window_size(Some(8 * 1024 * 1024))
            .initial_connection_window_size(Some(16 * 1024 * 1024))
            .add_service(service)
            .serve_with_incoming(incoming),
    );
    Ok(format!("http://{addr}"))
}

/// Writes `chunks` to `path` and fdatasyncs it; seconds.
pub(crate) fn disk_write(path: &Path, chunks: &[Bytes]) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut file = std::fs::File::create(path)?;
    for chunk in chunks {
        file.write_all(chunk)?;
    }
    file.sync_data()?;
    Ok(started.elapsed().as_secs_f64())
}

/// BLAKE3 of `chunks` in memory on one thread; seconds.
pub(crate) fn blake3(chunks: &[Bytes]) -> f64 {
    let started = Instant::now();
    let mut hasher = blake3::Hasher::new();
    for chunk in chunks {
        hasher.update(chunk);
    }
    std::hint::black_box(hasher.finalize());
    started.elapsed().as_secs_f64()
}

/// clamd's own INSTREAM of `chunks` (sent from memory as fast as clamd takes them, verdict
/// included); seconds.
pub(crate) async fn clamd(clamd: &scanner::Clamd, chunks: &[Bytes]) -> anyhow::Result<f64> {
    let (tx, source) = scanner::ChannelSource::new(8);
    let chunks = chunks.to_vec();
    let feed = tokio::spawn(async move {
        for chunk in chunks {
            if tx.send(Ok(chunk)).await.is_err() {
                return;
            }
        }
    });
    let started = Instant::now();
    let verdict = clamd.scan(source).await?;
    let seconds = started.elapsed().as_secs_f64();
    feed.await?;
    anyhow::ensure!(verdict.is_clean(), "clamd did not find the bench bytes clean: {verdict:?}");
    Ok(seconds)
}

/// clamd's own rate for `count` scans of `data` from `concurrency` connections at once: the
/// ceiling of any scanned small-transfer rate; scans per second.
pub(crate) async fn clamd_small_scans(
    clamd: &scanner::Clamd,
    data: Bytes,
    count: usize,
    concurrency: usize,
) -> anyhow::Result<f64> {
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (clamd, data, next) = (clamd.clone(), data.clone(), next.clone());
            tokio::spawn(async move {
                while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < count {
                    let verdict = clamd.scan(data.clone()).await?;
                    anyhow::ensure!(verdict.is_clean(), "clamd: {verdict:?}");
                }
                Ok(())
            })
        })
        .collect();
    for worker in workers {
        worker.await??;
    }
    Ok(count as f64 / started.elapsed().as_secs_f64())
}
