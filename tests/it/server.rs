use std::time::Duration;

use integration_tests::{TestClamd, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A plain HTTP/1.1 GET over a real socket; returns (status, body).
async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response.split(' ').nth(1).unwrap().parse().unwrap();
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_server_reports_readiness_of_storage_and_scanner() {
    let mut clamd = TestClamd::start();
    let dir = tempfile::tempdir().unwrap();
    let mut server = TestServer::start_in(dir.path(), &clamd.address(), 0, |_| {}).await;
    let addr = server.addr;

    let (status, body) = get(addr, "/health").await;
    assert_eq!((status, body.as_str()), (200, "ok"));
    let (status, body) = get(addr, "/health/ready").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("ClamAV "), "{body}");
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    match integration_tests::pg::metadata_for(dir.path()) {
        None => {
            assert!(dir.path().join("index.redb").exists());
            assert_eq!(ready["metadata"], "redb", "{body}");
        }
        Some(_) => assert_eq!(ready["metadata"], "postgresql", "{body}"),
    }
    assert_eq!(ready["blobs"], "local", "{body}");

    // A frozen clamd (it accepts, never answers): readiness still answers, at once.
    clamd.pause();
    let started = std::time::Instant::now();
    let (status, body) = get(addr, "/health/ready").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("no answer within"), "{body}");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    clamd.resume();

    // Without clamd the server stays alive but is not ready.
    clamd.stop();
    let (status, body) = get(addr, "/health/ready").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("scanner"), "{body}");
    assert_eq!(get(addr, "/health").await.0, 200);
    tokio::time::timeout(Duration::from_secs(10), server.stop()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_health_and_reflection_answer_on_the_same_port() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let clamd = TestClamd::start();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(dir.path(), &clamd.address(), 0, |_| {}).await;
    let channel =
        tonic::transport::Endpoint::from_shared(server.url()).unwrap().connect().await.unwrap();

    let mut health = HealthClient::new(channel.clone());
    for service in
        ["", "ferry.v1.FileTransferService", "ferry.v1.ResourceService", "ferry.v1.EventService"]
    {
        let status = health
            .check(HealthCheckRequest { service: service.into() })
            .await
            .unwrap_or_else(|e| panic!("health of {service:?}: {e:?}"))
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }

    let mut reflection = ServerReflectionClient::new(channel.clone());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection answer: {response:?}");
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.contains(&"ferry.v1.FileTransferService".to_owned()), "{names:?}");
    assert!(names.contains(&"ferry.v1.ResourceService".to_owned()), "{names:?}");

    // The older protocol version, which Python's grpcio-reflection and older grpcurl speak.
    {
        use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
        use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
        let mut reflection = ServerReflectionClient::new(channel);
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut responses = reflection
            .server_reflection_info(tokio_stream::iter(vec![request]))
            .await
            .expect("v1alpha reflection is served")
            .into_inner();
        let response = responses.message().await.unwrap().unwrap();
        let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
            panic!("unexpected v1alpha reflection answer: {response:?}");
        };
        let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
        assert!(names.contains(&"ferry.v1.EventService".to_owned()), "{names:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_paths_are_404() {
    let clamd = TestClamd::start();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(dir.path(), &clamd.address(), 0, |_| {}).await;
    let http = reqwest::Client::new();
    let r = http.get(format!("{}/nothing/here", server.url())).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.text().await.unwrap().trim(), "not found");
    // `/` is the web console: its sign-in page for someone not signed in.
    let r = http.get(server.url()).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.url().path().ends_with("/console/signin"), "{}", r.url());
    for path in ["/broker/api/v1/nothing", "/broker/api/v2/filetransfer"] {
        let r = http.get(format!("{}{path}", server.url())).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
        assert_eq!(r.headers()["content-type"], "application/problem+json", "{path}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["status"], 404);
        assert!(body["detail"].as_str().unwrap().contains(path), "{body}");
    }
    // An unknown gRPC method is still gRPC's UNIMPLEMENTED.
    let channel =
        tonic::transport::Endpoint::from_shared(server.url()).unwrap().connect().await.unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let status = grpc
        .unary::<(), (), _>(
            tonic::Request::new(()),
            "/ferry.v1.Nothing/Here".parse().unwrap(),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented, "{status:?}");
}
