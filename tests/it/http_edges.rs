//! HTTP protocol edges (issue 12, items 7–11): TUS discovery through CORS, HTTP dates, errors
//! that say what to do, uploads however begun resumed over TUS (after a restart too), ASP.NET's
//! JSON leniency, stalled bodies cut off while others are served, and the events feed's scope.
//! A real server, a real HTTP client (reqwest) and a real tonic client.

use std::time::{Duration, Instant};

use bytes::Bytes;
use integration_tests::{TestClamd, TestServer, payload};
use serde_json::{Value, json};

const OWNER: &str = "991825827";
const SENDER: &str = "910753614";
const RECIPIENT: &str = "986252932";
const ALL: &[&str] = &["altinn:broker.write", "altinn:broker.read", "altinn:serviceowner"];

struct Setup {
    server: TestServer,
    http: reqwest::Client,
    clamd: TestClamd,
    _dir: tempfile::TempDir,
}

async fn setup(tweak: impl FnOnce(&mut server::Config)) -> Setup {
    let clamd = TestClamd::start();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(dir.path(), &clamd.address(), 0, tweak).await;
    let owner = server.client(server.token(OWNER, ALL));
    integration_tests::owner_with_resource(&owner, "res", &[SENDER], &[RECIPIENT]).await;
    Setup { server, http: reqwest::Client::new(), clamd, _dir: dir }
}

impl Setup {
    fn token(&self, org: &str) -> String {
        self.server.token(org, ALL)
    }

    fn url(&self, path: &str) -> String {
        format!("{}/broker/api/v1{path}", self.server.url())
    }

    fn tus_url(&self, id: &str) -> String {
        self.url(&format!("/filetransfer/upload/tus/{id}"))
    }

    fn tus(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, url)
            .bearer_auth(self.token(SENDER))
            .header("tus-resumable", "1.0.0")
    }

    async fn new_transfer(&self) -> String {
        let sender = self.server.client(self.token(SENDER));
        integration_tests::initialize_transfer(&sender, "res", SENDER, &[RECIPIENT]).await.unwrap()
    }

    /// HEAD: (Upload-Offset, Upload-Length).
    async fn head(&self, id: &str) -> (u64, Option<u64>) {
        let r = self.tus(reqwest::Method::HEAD, &self.tus_url(id)).send().await.unwrap();
        assert_eq!(r.status(), 200, "HEAD {id}");
        let number =
            |name: &str| r.headers().get(name).map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
        (number("upload-offset").unwrap(), number("upload-length"))
    }

    async fn patch(&self, id: &str, offset: u64, data: &[u8]) -> reqwest::Response {
        self.tus(reqwest::Method::PATCH, &self.tus_url(id))
            .header("content-type", "application/offset+octet-stream")
            .header("upload-offset", offset.to_string())
            .body(data.to_vec())
            .send()
            .await
            .unwrap()
    }

    /// Waits until `id` is Published and downloads it.
    async fn published(&self, id: &str) -> Vec<u8> {
        let recipient = self.server.client(self.token(RECIPIENT));
        assert_eq!(
            recipient.wait_settled(id, "res").await.unwrap(),
            "no.altinn.broker.published",
            "{id}"
        );
        recipient.download_range(id, 0, None).await.unwrap().1
    }
}

/// A streamed request body: `head` now, then whatever the test sends on the returned channel.
fn held_body(head: Vec<u8>) -> (reqwest::Body, tokio::sync::mpsc::Sender<std::io::Result<Bytes>>) {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
    tx.try_send(Ok(Bytes::from(head))).unwrap();
    (reqwest::Body::wrap_stream(tokio_stream::wrappers::ReceiverStream::new(rx)), tx)
}

#[tokio::test(flavor = "multi_thread")]
async fn tus_discovery_answers_through_cors_with_http_dates_and_errors_that_say_what_to_do() {
    let s = setup(|c| c.cors.allowed_origins = vec!["https://portal.example.no".into()]).await;
    let id = s.new_transfer().await;
    let main = s.tus_url(&id);
    let partial = format!("{main}/partial/abc");
    let discovery = |r: &reqwest::Response| {
        let h = r.headers();
        assert_eq!(h["tus-resumable"], "1.0.0");
        assert_eq!(h["tus-version"], "1.0.0");
        let extensions = h["tus-extension"].to_str().unwrap();
        for extension in ["creation", "termination", "expiration", "checksum", "concatenation"] {
            assert!(extensions.split(',').any(|e| e == extension), "{extensions}");
        }
        assert!(h["tus-checksum-algorithm"].to_str().unwrap().contains("sha256"));
        assert!(h["tus-max-size"].to_str().unwrap().parse::<u64>().unwrap() > 0);
    };
    for url in [&main, &partial] {
        // Plain discovery: no token needed, it describes the server.
        let r = s.http.request(reqwest::Method::OPTIONS, url).send().await.unwrap();
        assert!(r.status().is_success(), "{url}: {}", r.status());
        discovery(&r);
        // A browser's preflight: CORS's answer and TUS's together.
        let r = s
            .http
            .request(reqwest::Method::OPTIONS, url)
            .header("origin", "https://portal.example.no")
            .header("access-control-request-method", "PATCH")
            .header("access-control-request-headers", "upload-offset,tus-resumable,content-type")
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{url}: {}", r.status());
        assert_eq!(r.headers()["access-control-allow-origin"], "https://portal.example.no");
        assert!(r.headers().contains_key("access-control-allow-methods"));
        discovery(&r);
    }
    // An origin that is not allowed gets no CORS approval, but TUS still answers.
    let r = s
        .http
        .request(reqwest::Method::OPTIONS, &main)
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "PATCH")
        .send()
        .await
        .unwrap();
    assert!(!r.headers().contains_key("access-control-allow-origin"));
    discovery(&r);

    // Upload-Expires is an RFC 9110 HTTP date, on creation, PATCH and HEAD.
    let r = s.tus(reqwest::Method::POST, &main).header("upload-length", "10").send().await.unwrap();
    assert_eq!(r.status(), 201);
    let http_date = |r: &reqwest::Response| {
        let value = r.headers()["upload-expires"].to_str().unwrap().to_owned();
        // e.g. "Fri, 04 Dec 2026 16:20:00 GMT"
        let parts: Vec<&str> = value.split(' ').collect();
        assert_eq!(parts.len(), 6, "{value}");
        assert!(parts[0].ends_with(',') && parts[5] == "GMT", "{value}");
        assert!(
            ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
                .contains(&parts[2]),
            "{value}"
        );
        value
    };
    http_date(&r);
    let r = s.patch(&id, 0, b"hello").await;
    assert_eq!(r.status(), 204);
    http_date(&r);
    let r = s.tus(reqwest::Method::HEAD, &main).send().await.unwrap();
    http_date(&r);

    // 409: ProblemDetails with the offset to continue at.
    let r = s.patch(&id, 3, b"lo").await;
    assert_eq!(r.status(), 409);
    assert_eq!(r.headers()["upload-offset"], "5");
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let body: Value = r.json().await.unwrap();
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains("continues at 5") && detail.contains("HEAD"), "{detail}");

    // 401: says what is wrong with the token, and how to send one.
    let r = s.http.head(&main).header("tus-resumable", "1.0.0").send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = s
        .http
        .patch(&main)
        .header("tus-resumable", "1.0.0")
        .header("content-type", "application/offset+octet-stream")
        .header("upload-offset", "5")
        .body("world")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert!(body["detail"].as_str().unwrap().contains("Authorization: Bearer"), "{body}");
    let r = s
        .http
        .patch(&main)
        .bearer_auth("not-a-token")
        .header("tus-resumable", "1.0.0")
        .header("content-type", "application/offset+octet-stream")
        .header("upload-offset", "5")
        .body("world")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert!(body["detail"].as_str().unwrap().starts_with("invalid token"), "{body}");
    // 412: which version to send.
    let r = s.http.head(&main).bearer_auth(s.token(SENDER)).send().await.unwrap();
    assert_eq!(r.status(), 412);
    assert_eq!(r.headers()["tus-version"], "1.0.0");

    assert_eq!(s.patch(&id, 5, b"world").await.status(), 204);
    assert_eq!(s.published(&id).await, b"helloworld");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upload_however_begun_resumes_over_tus_and_grpc() {
    let mut s = setup(|_| {}).await;
    let data = payload(71, 3_000_000);

    // 1. A REST upload cut off by the client after 1 MB; the server restarts; TUS finds its
    //    length and finishes it.
    let rest = s.new_transfer().await;
    let (body, cable) = held_body(data[..1_000_000].to_vec());
    let cut = s
        .http
        .post(s.url(&format!("/filetransfer/{rest}/upload")))
        .bearer_auth(s.token(SENDER))
        .header("content-type", "application/octet-stream")
        .header("content-length", data.len().to_string())
        .body(body)
        .send();
    let cut = tokio::spawn(cut);
    // Once the server has begun the upload, the cable is pulled; it checkpoints what came.
    let deadline = Instant::now() + Duration::from_secs(20);
    let upload_exists = || async {
        let r = s.tus(reqwest::Method::HEAD, &s.tus_url(&rest)).send().await.unwrap();
        r.status() == 200
    };
    while !upload_exists().await {
        assert!(Instant::now() < deadline, "the REST upload never began");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cable.send(Err(std::io::Error::other("cable pulled"))).await.unwrap();
    let _ = cut.await;
    while s.head(&rest).await.0 == 0 {
        assert!(Instant::now() < deadline, "nothing was kept of the cut upload");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let port = s.server.addr.port();
    s.server.stop().await;
    s.server =
        TestServer::start_in(&s.server.data_dir.clone(), &s.clamd.address(), port, |_| {}).await;
    let (offset, length) = s.head(&rest).await;
    assert_eq!(length, Some(data.len() as u64), "the REST upload's length was recorded");
    assert!(offset > 0 && offset <= 1_000_000, "{offset}");
    let r = s.patch(&rest, offset, &data[offset as usize..]).await;
    assert_eq!(r.status(), 204, "{}", r.text().await.unwrap());
    assert!(s.published(&rest).await == data);

    // 2. A gRPC upload begun without a length: TUS takes the length from the PATCH.
    let sender = s.server.client(s.token(SENDER));
    let grpc = s.new_transfer().await;
    let mut first = Some(Bytes::copy_from_slice(&data[..500_000]));
    let interrupted = sender
        .upload_once(
            &grpc,
            0,
            None,
            move || {
                let chunk = first.take();
                async move {
                    match chunk {
                        Some(chunk) => Ok(Some(chunk)),
                        None => Err(std::io::Error::other("the sender crashed")),
                    }
                }
            },
            &mut |_| {},
        )
        .await;
    assert!(interrupted.is_err());
    let (offset, length) = s.head(&grpc).await;
    assert_eq!((offset, length), (500_000, None));
    let r = s.patch(&grpc, offset, &data[500_000..600_000]).await;
    assert_eq!(r.status(), 400, "no length anywhere: say so");
    assert!(r.text().await.unwrap().contains("Upload-Length"));
    let r = s
        .tus(reqwest::Method::PATCH, &s.tus_url(&grpc))
        .header("content-type", "application/offset+octet-stream")
        .header("upload-offset", "500000")
        .header("upload-length", data.len().to_string())
        .body(data[500_000..2_000_000].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204, "{}", r.text().await.unwrap());
    assert_eq!(s.head(&grpc).await, (2_000_000, Some(data.len() as u64)));

    // 3. ... and gRPC takes it back from the parked TUS session, without a restart.
    let rest_of = Bytes::copy_from_slice(&data[2_000_000..]);
    let mut once = Some(rest_of);
    let result = sender
        .upload_once(
            &grpc,
            2_000_000,
            Some(data.len() as u64),
            move || {
                let chunk = once.take();
                async move { Ok(chunk) }
            },
            &mut |_| {},
        )
        .await
        .expect("gRPC resumes a TUS upload");
    assert_eq!(result.size, data.len() as u64);
    assert!(s.published(&grpc).await == data);
    assert_eq!(s.server.files_in("tmp"), 0, "no temporaries left");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_upload_body_is_cut_off_while_others_are_served_and_resumes() {
    let s = setup(|c| c.limits.idle_timeout_secs = 2).await;
    let declared = 500_000usize;
    let data = payload(72, declared);

    // 1,000 of a declared 500,000 bytes, then nothing (the connection stays open).
    let stalled = s.new_transfer().await;
    let (body, keep_open) = held_body(data[..1_000].to_vec());
    let started = Instant::now();
    let request = s
        .http
        .post(s.url(&format!("/filetransfer/{stalled}/upload")))
        .bearer_auth(s.token(SENDER))
        .header("content-type", "application/octet-stream")
        .header("content-length", declared.to_string())
        .body(body)
        .send();
    let stalled_call = tokio::spawn(request);

    // Meanwhile another sender is served, start to end.
    let other = s.new_transfer().await;
    let r = s
        .http
        .post(s.url(&format!("/filetransfer/{other}/upload")))
        .bearer_auth(s.token(SENDER))
        .header("content-type", "application/octet-stream")
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(s.published(&other).await == data);

    let r = tokio::time::timeout(Duration::from_secs(20), stalled_call)
        .await
        .expect("the stalled upload is cut off in time")
        .unwrap()
        .unwrap();
    let waited = started.elapsed();
    assert_eq!(r.status(), 408);
    assert!(waited >= Duration::from_secs(2) && waited < Duration::from_secs(15), "{waited:?}");
    assert_eq!(r.headers()["connection"], "close");
    let body: Value = r.json().await.unwrap();
    assert!(body["detail"].as_str().unwrap().contains("resume from offset 1000"), "{body}");
    drop(keep_open);

    // The same over TUS: a PATCH that stalls is checkpointed and cut off.
    assert_eq!(s.head(&stalled).await, (1_000, Some(declared as u64)));
    let (body, keep_open) = held_body(data[1_000..50_000].to_vec());
    let r = tokio::time::timeout(
        Duration::from_secs(20),
        s.tus(reqwest::Method::PATCH, &s.tus_url(&stalled))
            .header("content-type", "application/offset+octet-stream")
            .header("upload-offset", "1000")
            .body(body)
            .send(),
    )
    .await
    .expect("the stalled PATCH is cut off in time")
    .unwrap();
    assert_eq!(r.status(), 408);
    assert_eq!(r.headers()["tus-resumable"], "1.0.0");
    drop(keep_open);
    assert_eq!(s.head(&stalled).await, (50_000, Some(declared as u64)));
    let r = s.patch(&stalled, 50_000, &data[50_000..]).await;
    assert_eq!(r.status(), 204);
    assert!(s.published(&stalled).await == data);
}

#[tokio::test(flavor = "multi_thread")]
async fn json_bodies_take_numbers_as_strings_and_names_in_any_case() {
    let s = setup(|_| {}).await;
    let owner = s.token(OWNER);
    let put =
        |body: Value| s.http.put(s.url("/resource/res")).bearer_auth(&owner).json(&body).send();
    let resource = || async {
        let r = s.http.get(s.url("/resource/res")).bearer_auth(&owner).send().await.unwrap();
        r.json::<Value>().await.unwrap()
    };
    // Altinn's Postman collection's Update Resource.
    let r = put(json!({
        "MaxFileTransferSize": "1112391230",
        "FileTransferTimeToLive": "P30D",
        "ExternalServiceCodeLegacy": "4000",
        "ExternalServiceEditionCodeLegacy": "2",
        "PURGEFILETRANSFERAFTERALLRECIPIENTSCONFIRMED": true,
    }))
    .await
    .unwrap();
    assert_eq!(r.status(), 204, "{}", r.text().await.unwrap());
    let got = resource().await;
    assert_eq!(got["maxFileTransferSize"], 1_112_391_230, "{got}");
    assert_eq!(got["externalServiceEditionCodeLegacy"], 2, "{got}");
    // Numbers as numbers still work; nested objects match in any case too.
    let r = put(json!({ "maxFileTransferSize": 1000000, "Access": { "Senders": [SENDER], "RECIPIENTS": [RECIPIENT] } }))
        .await
        .unwrap();
    assert_eq!(r.status(), 204, "{}", r.text().await.unwrap());
    // A string that is not a number is refused with ASP.NET's message; nothing changes.
    for bad in [
        json!({ "maxFileTransferSize": "a lot" }),
        json!({ "MaxFileTransferSize": "1.5" }),
        json!({ "maxFileTransferSize": true }),
    ] {
        let r = put(bad.clone()).await.unwrap();
        assert_eq!(r.status(), 400, "{bad}");
        let body: Value = r.json().await.unwrap();
        let message = body["errors"]["maxFileTransferSize"][0].as_str().unwrap_or_default();
        assert!(message.contains("could not be converted to System.Int64"), "{bad}: {body}");
    }
    let got = resource().await;
    assert_eq!(got["maxFileTransferSize"], 1_000_000, "{got}");

    // A webhook subscription in PascalCase; a number where a string belongs is refused.
    let subscriptions = format!("{}/events/api/v1/subscriptions", s.server.url());
    let r = s
        .http
        .post(&subscriptions)
        .bearer_auth(s.token(SENDER))
        .json(&json!({ "EndPoint": 42, "ResourceFilter": "urn:altinn:resource:res" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert!(body.to_string().contains("could not be converted to System.String"), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_events_feed_needs_an_events_or_broker_scope() {
    let s = setup(|_| {}).await;
    let feed = format!("{}/events/api/v1/events?after=0", s.server.url());
    let get =
        |scopes: &[&str]| s.http.get(&feed).bearer_auth(s.server.token(SENDER, scopes)).send();
    assert_eq!(get(&["altinn:serviceowner"]).await.unwrap().status(), 403);
    for scopes in
        [&["altinn:events.subscribe"][..], &["altinn:broker.read"], &["altinn:broker.write"]]
    {
        assert_eq!(get(scopes).await.unwrap().status(), 200, "{scopes:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn another_sender_cannot_touch_an_upload_parked_between_patches() {
    const OTHER: &str = "910000003";
    let s = setup(|_| {}).await;
    // Both may send on the resource; only SENDER owns the transfer.
    let owner = s.server.client(s.token(OWNER));
    let parties = |orgs: &[&str]| orgs.iter().map(|o| format!("0192:{o}")).collect();
    owner
        .put_resource(client::v1::PutResourceRequest {
            resource_id: "shared".into(),
            access: Some(client::v1::AccessRules {
                senders: parties(&[SENDER, OTHER]),
                recipients: parties(&[RECIPIENT]),
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    let sender = s.server.client(s.token(SENDER));
    let id = integration_tests::initialize_transfer(&sender, "shared", SENDER, &[RECIPIENT])
        .await
        .unwrap();
    let url = s.tus_url(&id);
    let r = s.tus(reqwest::Method::POST, &url).header("upload-length", "10").send().await.unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(s.patch(&id, 0, b"hello").await.status(), 204, "parked at 5");

    let as_other = |method: reqwest::Method| {
        s.http
            .request(method, &url)
            .bearer_auth(s.token(OTHER))
            .header("tus-resumable", "1.0.0")
            .header("content-type", "application/offset+octet-stream")
    };
    for offset in [0, 5] {
        let r = as_other(reqwest::Method::PATCH)
            .header("upload-offset", offset.to_string())
            .body("EVIL!")
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_client_error() && r.status() != 409,
            "offset {offset}: {}",
            r.status()
        );
        assert!(!r.headers().contains_key("upload-offset"), "no offset leaks to another party");
    }
    let r = as_other(reqwest::Method::HEAD).send().await.unwrap();
    assert!(r.status().is_client_error(), "HEAD: {}", r.status());
    let r = as_other(reqwest::Method::DELETE).send().await.unwrap();
    assert!(r.status().is_client_error(), "DELETE: {}", r.status());
    // The owner's upload is untouched and finishes with its own bytes.
    assert_eq!(s.head(&id).await, (5, Some(10)));
    assert_eq!(s.patch(&id, 5, b"world").await.status(), 204);
    let recipient = s.server.client(s.token(RECIPIENT));
    assert_eq!(recipient.wait_settled(&id, "shared").await.unwrap(), "no.altinn.broker.published");
    assert_eq!(recipient.download_range(&id, 0, None).await.unwrap().1, b"helloworld");
}
