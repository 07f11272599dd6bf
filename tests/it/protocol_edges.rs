//! gRPC protocol edges (issue 12, items 5, 6 and 10): messages over the size limit, data past
//! the declared length, and a stream that stalls. A real tonic client against a real server.
//! (The HTTP side of these edges is in `http_edges`.)

use bytes::Bytes;
use client::v1 as pb;
use integration_tests::{TestClamd, TestServer, payload};
use pb::file_transfer_service_client::FileTransferServiceClient;
use pb::upload_request::Message as In;
use tonic::Code;

const OWNER: &str = "991825827";
const SENDER: &str = "910753614";
const RECIPIENT: &str = "986252932";
const ALL: &[&str] = &["altinn:broker.write", "altinn:broker.read", "altinn:serviceowner"];
const MIB: usize = 1024 * 1024;

struct Setup {
    server: TestServer,
    sender: client::Client,
    raw: FileTransferServiceClient<tonic::transport::Channel>,
    token: String,
    _dir: tempfile::TempDir,
    _clamd: TestClamd,
}

async fn setup(tweak: impl FnOnce(&mut server::Config)) -> Setup {
    let clamd = TestClamd::start();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(dir.path(), &clamd.address(), 0, tweak).await;
    let c = |org: &str| server.client(server.token(org, ALL));
    integration_tests::owner_with_resource(&c(OWNER), "res", &[SENDER], &[RECIPIENT]).await;
    let channel =
        tonic::transport::Endpoint::from_shared(server.url()).unwrap().connect().await.unwrap();
    // No client-side limit: the server's own limit is under test.
    let raw = FileTransferServiceClient::new(channel)
        .max_encoding_message_size(usize::MAX)
        .max_decoding_message_size(usize::MAX);
    let token = server.token(SENDER, ALL);
    Setup { sender: c(SENDER), server, raw, token, _dir: dir, _clamd: clamd }
}

impl Setup {
    async fn new_transfer(&self) -> String {
        integration_tests::initialize_transfer(&self.sender, "res", SENDER, &[RECIPIENT])
            .await
            .unwrap()
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        let bearer = format!("Bearer {}", self.token).parse().unwrap();
        request.metadata_mut().insert("authorization", bearer);
        request
    }

    /// One Upload call with `messages`; returns the responses up to the status that ended it.
    async fn upload(
        &self,
        messages: Vec<In>,
    ) -> (Vec<pb::upload_response::Message>, Result<(), tonic::Status>) {
        let stream = tokio_stream::iter(
            messages.into_iter().map(|m| pb::UploadRequest { message: Some(m) }),
        );
        let mut raw = self.raw.clone();
        let mut responses = match raw.upload(self.request(stream)).await {
            Ok(r) => r.into_inner(),
            Err(status) => return (Vec::new(), Err(status)),
        };
        let mut got = Vec::new();
        loop {
            match responses.message().await {
                Ok(Some(m)) => got.extend(m.message),
                Ok(None) => return (got, Ok(())),
                Err(status) => return (got, Err(status)),
            }
        }
    }

    async fn committed(&self, id: &str) -> u64 {
        self.sender.upload_status(id).await.unwrap().committed_offset
    }
}

fn start(id: &str, offset: u64, length: Option<u64>) -> In {
    In::Start(pb::UploadStart { file_transfer_id: id.into(), offset, length })
}

fn finish() -> In {
    In::Finish(pb::UploadFinish {})
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_over_the_limit_is_refused_with_resource_exhausted_every_time() {
    let s = setup(|_| {}).await;
    for size in [2 * MIB, 5 * MIB] {
        let id = s.new_transfer().await;
        let first = Bytes::from(payload(1, 300_000));
        let (_, result) = s
            .upload(vec![
                start(&id, 0, None),
                In::Data(first),
                In::Data(Bytes::from(vec![7u8; size])),
                finish(),
            ])
            .await;
        let status = result.expect_err("an oversized message never looks like success");
        assert_eq!(status.code(), Code::ResourceExhausted, "{size}: {status:?}");
        assert!(status.message().contains("2097152"), "names the limit: {status:?}");
        // What came before it is durable, to resume from.
        assert_eq!(s.committed(&id).await, 300_000, "{size}");
    }
    // A unary request over the limit: the same code, the same message.
    let mut raw = s.raw.clone();
    let status = raw
        .initialize_file_transfer(s.request(pb::InitializeFileTransferRequest {
            file_name: "x".repeat(3 * MIB),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("2097152"), "{status:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bytes_past_the_declared_length_are_never_committed() {
    let s = setup(|_| {}).await;
    let id = s.new_transfer().await;
    let a = Bytes::from(payload(2, MIB));
    let b = Bytes::from(payload(3, MIB));
    let (_, result) = s
        .upload(vec![
            start(&id, 0, Some(MIB as u64)),
            In::Data(a.clone()),
            In::Data(b.clone()),
            finish(),
        ])
        .await;
    let status = result.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("declared length is 1048576"), "{status:?}");
    assert_eq!(s.committed(&id).await, MIB as u64, "only the declared bytes are kept");

    // The old trick no longer publishes a 2 MiB file: the upload continues at 1 MiB.
    let (_, result) = s.upload(vec![start(&id, 2 * MIB as u64, None), finish()]).await;
    assert_eq!(result.unwrap_err().code(), Code::FailedPrecondition);
    let (_, result) = s.upload(vec![start(&id, MIB as u64, Some(MIB as u64)), finish()]).await;
    result.unwrap();
    let recipient = s.server.client(s.server.token(RECIPIENT, ALL));
    assert_eq!(recipient.wait_settled(&id, "res").await.unwrap(), "no.altinn.broker.published");
    let (_, got) = recipient.download_range(&id, 0, None).await.unwrap();
    assert!(got == a, "the published file is the declared megabyte");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_upload_stream_is_cut_off_while_others_are_served_and_resumes() {
    let s = setup(|c| c.limits.idle_timeout_secs = 2).await;
    let data = Bytes::from(payload(4, 3 * MIB));
    let id = s.new_transfer().await;
    // `start` and 300 kB, then nothing: the stream stays open.
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::UploadRequest>(4);
    tx.send(pb::UploadRequest { message: Some(start(&id, 0, Some(data.len() as u64))) })
        .await
        .unwrap();
    tx.send(pb::UploadRequest { message: Some(In::Data(data.slice(..300_000))) }).await.unwrap();
    let mut raw = s.raw.clone();
    let request = s.request(tokio_stream::wrappers::ReceiverStream::new(rx));
    let started = std::time::Instant::now();
    let stalled = tokio::spawn(async move {
        let mut responses = raw.upload(request).await?.into_inner();
        while responses.message().await?.is_some() {}
        Ok::<_, tonic::Status>(())
    });

    // Meanwhile another upload goes through.
    let other = s.new_transfer().await;
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &data).unwrap();
    s.sender.upload_file(&other, file.path(), &mut |_| {}).await.unwrap();

    let status = tokio::time::timeout(std::time::Duration::from_secs(20), stalled)
        .await
        .expect("the stalled stream is cut off in time")
        .unwrap()
        .unwrap_err();
    let waited = started.elapsed();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("300000 bytes are durable"), "{status:?}");
    assert!(waited >= std::time::Duration::from_secs(2), "{waited:?}");
    drop(tx);
    // It resumes from there.
    assert_eq!(s.committed(&id).await, 300_000);
    let (_, result) = s
        .upload(vec![
            start(&id, 300_000, Some(data.len() as u64)),
            In::Data(data.slice(300_000..300_000 + MIB)),
            In::Data(data.slice(300_000 + MIB..)),
            finish(),
        ])
        .await;
    result.unwrap();
    let recipient = s.server.client(s.server.token(RECIPIENT, ALL));
    assert_eq!(recipient.wait_settled(&id, "res").await.unwrap(), "no.altinn.broker.published");
    let (_, got) = recipient.download_range(&id, 0, None).await.unwrap();
    assert!(got == data);

    // A stream that never sends `start` is cut off too.
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::UploadRequest>(1);
    let mut raw = s.raw.clone();
    let result = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        raw.upload(s.request(tokio_stream::wrappers::ReceiverStream::new(rx))),
    )
    .await
    .expect("cut off in time");
    let status = match result {
        Err(status) => status,
        Ok(response) => response.into_inner().message().await.unwrap_err(),
    };
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    drop(tx);
}

/// A gRPC `start` that is refused (the upload does not continue at that offset: 409 /
/// FAILED_PRECONDITION) changes nothing: the transfer stays `Initialized` (Altinn validates
/// before it records `UploadStarted`, which beginning an upload commits with its record).
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_start_leaves_the_transfer_initialized() {
    let s = setup(|_| {}).await;
    let id = s.new_transfer().await;
    let (_, result) = s.upload(vec![start(&id, 5, Some(10)), finish()]).await;
    assert_eq!(result.unwrap_err().code(), Code::FailedPrecondition);
    let overview = s.sender.overview(&id).await.unwrap();
    assert_eq!(
        overview.file_transfer_status,
        pb::FileTransferStatus::Initialized as i32,
        "a refused upload request does not start the upload"
    );
}
