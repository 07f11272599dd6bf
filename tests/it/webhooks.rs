//! Webhook subscriptions and deliveries in the storage engine: exactly-once fan-out, retries,
//! dead letters, disabling and replay. (The HTTP delivery worker builds on these.)

use std::time::Duration;

use integration_tests::temp_storage;
use storage::model::*;
use storage::webhooks::{Outcome, Subscription};

use crate::index::{new_transfer, party};

fn subscription(consumer: u32, resource: &str, type_filter: Option<&str>) -> Subscription {
    Subscription {
        id: 0,
        consumer: party(consumer),
        end_point: "http://127.0.0.1:1/hook".into(),
        resource_filter: ResourceId::parse(resource).unwrap(),
        subject_filter: party(consumer),
        type_filter: type_filter.map(str::to_owned),
        created: Timestamp::now(),
        validated: false,
        disabled: None,
        secrets: vec!["whsec_test".into()],
        from_seq: 0,
        failing_since: None,
    }
}

#[tokio::test]
async fn fan_out_is_exactly_once_and_only_to_validated_matching_subscriptions() {
    let (_dir, storage) = temp_storage().await;
    // Events before the subscription existed are not its business.
    storage.insert_transfer(new_transfer("res", 1, &[2], true)).await.unwrap();
    let sender_sub = storage.create_subscription(subscription(1, "res", None)).await.unwrap();
    let recipient_sub = storage
        .create_subscription(subscription(2, "res", Some("no.altinn.broker.published")))
        .await
        .unwrap();
    let other_resource = storage.create_subscription(subscription(1, "other", None)).await.unwrap();
    let now = Timestamp::now();
    storage.insert_transfer(new_transfer("res", 1, &[2], true)).await.unwrap();
    // Not validated yet: nothing goes out, and the cursor still moves past those events.
    assert_eq!(storage.fan_out(now, 100).await.unwrap(), 0);
    for id in [sender_sub.id, recipient_sub.id, other_resource.id] {
        storage.modify_subscription(id, |s| s.validated = true).await.unwrap();
    }
    let t = new_transfer("res", 1, &[2], true);
    storage.insert_transfer(t.clone()).await.unwrap();
    assert_eq!(storage.fan_out(now, 100).await.unwrap(), 1, "the sender's initialized event");
    assert_eq!(storage.fan_out(now, 100).await.unwrap(), 0, "fanned out twice");
    // Publishing addresses the sender and the recipient; the recipient filters on `published`.
    storage.update_transfer(t.id, |t| Ok(t.start_upload(Timestamp::now())?)).await.unwrap();
    let mut upload =
        storage.open_upload(UploadId::for_transfer(t.id), Timestamp::now()).await.unwrap();
    upload.write(bytes::Bytes::from_static(b"data")).await.unwrap();
    storage.complete_upload(t.id, upload, Timestamp::now()).await.unwrap();
    storage
        .update_transfer(t.id, |t| Ok(t.record_scan(&ScanOutcome::Clean, Timestamp::now())?))
        .await
        .unwrap();
    assert_eq!(
        storage.fan_out(now, 100).await.unwrap(),
        3,
        "uploadprocessing + published to the sender, published to the recipient"
    );
    let due = storage.due_deliveries(now, 100).unwrap();
    let mut seen: Vec<(u64, &str)> =
        due.iter().map(|(_, s, e)| (s.id, e.kind.type_string())).collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            (sender_sub.id, "no.altinn.broker.filetransferinitialized"),
            (sender_sub.id, "no.altinn.broker.published"),
            (sender_sub.id, "no.altinn.broker.uploadprocessing"),
            (recipient_sub.id, "no.altinn.broker.published"),
        ]
    );
}

#[tokio::test]
async fn failed_deliveries_retry_then_die_and_replay_and_410_disables() {
    let (_dir, storage) = temp_storage().await;
    let sub = storage.create_subscription(subscription(1, "res", None)).await.unwrap();
    storage.modify_subscription(sub.id, |s| s.validated = true).await.unwrap();
    for _ in 0..3 {
        storage.insert_transfer(new_transfer("res", 1, &[2], true)).await.unwrap();
    }
    let now = Timestamp::now();
    assert_eq!(storage.fan_out(now, 100).await.unwrap(), 3);
    let due = storage.due_deliveries(now, 100).unwrap();
    let (first, second) = (due[0].0.id, due[1].0.id);

    // Success removes; a failure waits for its retry time.
    storage.record_delivery(first, Outcome::Delivered, now).await.unwrap();
    let later = now.saturating_add(Duration::from_secs(10));
    storage
        .record_delivery(second, Outcome::Retry { at: later, error: "500".into() }, now)
        .await
        .unwrap();
    let due_now: Vec<u64> =
        storage.due_deliveries(now, 100).unwrap().iter().map(|(d, _, _)| d.id).collect();
    assert!(!due_now.contains(&first) && !due_now.contains(&second));
    let (retried, _, _) = storage
        .due_deliveries(later, 100)
        .unwrap()
        .into_iter()
        .find(|(d, _, _)| d.id == second)
        .unwrap();
    assert_eq!((retried.attempts, retried.last_error.as_deref()), (1, Some("500")));
    assert!(storage.subscription(sub.id).unwrap().unwrap().failing_since.is_some());

    // Out of attempts: a dead letter, kept and replayable.
    storage
        .record_delivery(second, Outcome::GiveUp { error: "still 500".into() }, later)
        .await
        .unwrap();
    assert_eq!(storage.dead_letters(sub.id).unwrap().len(), 1);

    // 410 Gone: the subscription stops, everything pending joins the dead letters.
    let third = storage.due_deliveries(later, 100).unwrap()[0].0.id;
    storage
        .record_delivery(third, Outcome::Disable { reason: "410 Gone".into() }, later)
        .await
        .unwrap();
    let disabled = storage.subscription(sub.id).unwrap().unwrap();
    assert_eq!(disabled.disabled.as_deref(), Some("410 Gone"));
    assert_eq!(storage.dead_letters(sub.id).unwrap().len(), 2);
    assert!(storage.due_deliveries(later, 100).unwrap().is_empty());
    // New events do not go to a disabled subscription.
    storage.insert_transfer(new_transfer("res", 1, &[2], true)).await.unwrap();
    assert_eq!(storage.fan_out(later, 100).await.unwrap(), 0);

    // Replay: re-enabled, dead letters due again with fresh attempts.
    assert_eq!(storage.replay_dead_letters(sub.id, later).await.unwrap(), 2);
    let replayed = storage.due_deliveries(later, 100).unwrap();
    assert_eq!(replayed.len(), 2);
    assert!(replayed.iter().all(|(d, s, _)| d.attempts == 0 && s.disabled.is_none()));
    // Deleting the subscription takes its deliveries with it.
    storage.delete_subscription(sub.id).await.unwrap();
    assert!(storage.due_deliveries(later, 100).unwrap().is_empty());
    assert!(storage.subscription(sub.id).unwrap().is_none());
}

/// A webhook receiver on loopback: records every request and answers with the next scripted
/// status (200 once the script is used up; 503 comes with `Retry-After: 1`).
#[derive(Clone, Default)]
struct Receiver {
    got: std::sync::Arc<std::sync::Mutex<Vec<(axum::http::HeaderMap, serde_json::Value)>>>,
    script: std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<u16>>>,
    /// Milliseconds to stall before answering (a slow endpoint).
    stall_ms: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Receiver {
    async fn start(&self) -> String {
        let me = self.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: bytes::Bytes| {
                let me = me.clone();
                async move {
                    let stall = me.stall_ms.load(std::sync::atomic::Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(stall)).await;
                    let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
                    me.got.lock().unwrap().push((headers, json));
                    let status = me.script.lock().unwrap().pop_front().unwrap_or(200);
                    let status = axum::http::StatusCode::from_u16(status).unwrap();
                    // An overloaded endpoint says when to come back.
                    let retry_after = (status == 503).then_some([("retry-after", "1")]);
                    (status, axum::response::AppendHeaders(retry_after.into_iter().flatten()))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}/hook")
    }

    async fn wait_for(
        &self,
        event_type: &str,
        n: usize,
    ) -> Vec<(axum::http::HeaderMap, serde_json::Value)> {
        for _ in 0..400 {
            let got: Vec<_> = self
                .got
                .lock()
                .unwrap()
                .iter()
                .filter(|(_, b)| b["type"] == event_type)
                .cloned()
                .collect();
            if got.len() >= n {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!(
            "no {n} × {event_type}: {:?}",
            self.got.lock().unwrap().iter().map(|(_, b)| b["type"].clone()).collect::<Vec<_>>()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn webhooks_validate_sign_retry_disable_and_replay() {
    use integration_tests::{TestClamd, TestServer, payload};
    const R1: &str = "986252932";
    let clamd = TestClamd::start();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(dir.path(), &clamd.address(), 0, |c| {
        c.webhooks.allow_loopback = true;
        c.webhooks.retry_ladder_secs = vec![0.2, 0.2];
        c.webhooks.poll_ms = 50;
    })
    .await;
    let c = |org: &str| server.client(server.token(org, ALL));
    integration_tests::owner_with_resource(&c(OWNER), "res", &[SENDER], &[R1]).await;

    let receiver = Receiver::default();
    let hook = receiver.start().await;
    let http = reqwest::Client::new();
    let api = |path: &str| format!("{}/events/api/v1/subscriptions{path}", server.url());
    let r1_token = server.token(R1, ALL);
    // SSRF: private addresses are refused before any traffic; other parties' subjects too.
    for (body, status) in [
        (
            serde_json::json!({ "endPoint": "http://10.0.0.1/hook", "resourceFilter": "urn:altinn:resource:res" }),
            400,
        ),
        (
            serde_json::json!({ "endPoint": "http://169.254.169.254/latest", "resourceFilter": "urn:altinn:resource:res" }),
            400,
        ),
        (
            serde_json::json!({ "endPoint": hook, "resourceFilter": "urn:altinn:resource:res", "subjectFilter": format!("0192:{SENDER}") }),
            403,
        ),
    ] {
        let r = http.post(api("")).bearer_auth(&r1_token).json(&body).send().await.unwrap();
        assert_eq!(r.status(), status, "{body}");
    }
    let r = http
        .post(api(""))
        .bearer_auth(&r1_token)
        .json(&serde_json::json!({ "endPoint": hook, "resourceFilter": "urn:altinn:resource:res" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let sub: serde_json::Value = r.json().await.unwrap();
    let (id, secret) = (sub["id"].as_u64().unwrap(), sub["secret"].as_str().unwrap().to_owned());
    // The handshake, then validated.
    receiver.wait_for("platform.events.validatesubscription", 1).await;
    for _ in 0..100 {
        let view: serde_json::Value = http
            .get(api(&format!("/{id}")))
            .bearer_auth(&r1_token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if view["validated"] == true {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // Another party cannot see it.
    let r = http
        .get(api(&format!("/{id}")))
        .bearer_auth(server.token(SENDER, ALL))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // A published transfer reaches R1: the first attempt fails (500), the retry succeeds.
    receiver.script.lock().unwrap().push_back(500);
    let send = |seed: u64| {
        let sender = c(SENDER);
        async move {
            let t = sender
                .initialize(client::v1::InitializeFileTransferRequest {
                    file_name: "w.bin".into(),
                    resource_id: "res".into(),
                    senders_file_transfer_reference: "r".into(),
                    sender: format!("0192:{SENDER}"),
                    recipients: vec![format!("0192:{R1}")],
                    ..Default::default()
                })
                .await
                .unwrap();
            let file = tempfile::NamedTempFile::new().unwrap();
            std::fs::write(file.path(), payload(seed, 10_000)).unwrap();
            sender.upload_file(&t, file.path(), &mut |_| {}).await.unwrap();
            t
        }
    };
    let first = send(1).await;
    let got = receiver.wait_for("no.altinn.broker.published", 2).await;
    let (headers, body) = &got[1];
    assert_eq!(body["resourceinstance"], first.as_str());
    assert_eq!(body["subject"], format!("urn:altinn:organization:identifier-no:{R1}"));
    assert_eq!(body["data"]["Role"], "Recipient");
    assert_eq!(headers["webhook-id"].to_str().unwrap(), body["id"].as_str().unwrap());
    // The signature verifies with the subscription's secret.
    let timestamp: i64 = headers["webhook-timestamp"].to_str().unwrap().parse().unwrap();
    let expected = server::app::webhooks::signature(
        &[secret],
        body["id"].as_str().unwrap(),
        timestamp,
        &serde_json::to_vec(body).unwrap(),
    );
    assert_eq!(headers["webhook-signature"].to_str().unwrap(), expected);

    // 410 Gone disables the subscription; replay re-enables it and delivers.
    receiver.script.lock().unwrap().push_back(410);
    let second = send(2).await;
    let got = receiver.wait_for("no.altinn.broker.published", 3).await;
    assert_eq!(got[2].1["resourceinstance"], second.as_str());
    let mut disabled = serde_json::Value::Null;
    for _ in 0..100 {
        disabled = http
            .get(api(&format!("/{id}")))
            .bearer_auth(&r1_token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if disabled["disabled"].is_string() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(disabled["disabled"].as_str().unwrap().contains("410"), "{disabled}");
    // Its deliveries: the 410 one is a dead letter, with the endpoint's status; only its owner
    // sees them.
    let deliveries = |token: String| {
        let http = http.clone();
        let url = api(&format!("/{id}/deliveries?limit=10"));
        async move { http.get(url).bearer_auth(token).send().await.unwrap() }
    };
    let listed: serde_json::Value = deliveries(r1_token.clone()).await.json().await.unwrap();
    assert_eq!(listed["pendingCount"], 0, "{listed}");
    assert_eq!(listed["deadLetterCount"], 1, "{listed}");
    let dead = &listed["deadLetters"][0];
    assert_eq!(dead["state"], "dead");
    assert_eq!(dead["responseCode"], 410);
    assert_eq!(dead["attempts"], 1);
    assert_eq!(dead["type"], "no.altinn.broker.published");
    assert_eq!(dead["resourceinstance"], second.as_str());
    assert!(dead["nextAttempt"].is_null());
    assert!(dead["lastError"].as_str().unwrap().contains("410 Gone"), "{dead}");
    assert_eq!(deliveries(server.token(SENDER, ALL)).await.status(), 404);
    let bad = http.get(api(&format!("/{id}/deliveries?limit=lots"))).bearer_auth(&r1_token);
    assert_eq!(bad.send().await.unwrap().status(), 400);
    assert_eq!(deliveries(server.token(R1, &["altinn:serviceowner"])).await.status(), 403);
    let r = http.post(api(&format!("/{id}/replay"))).bearer_auth(&r1_token).send().await.unwrap();
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["replayed"], 1);
    let got = receiver.wait_for("no.altinn.broker.published", 4).await;
    assert_eq!(got[3].1["resourceinstance"], second.as_str());
    // Delivered: no longer listed (delivered events leave no record).
    let mut listed = serde_json::Value::Null;
    for _ in 0..100 {
        listed = deliveries(r1_token.clone()).await.json().await.unwrap();
        if listed["pendingCount"] == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!((&listed["pendingCount"], &listed["deadLetterCount"]), (&0.into(), &0.into()));
    // Deleting ends it.
    assert_eq!(
        http.delete(api(&format!("/{id}"))).bearer_auth(&r1_token).send().await.unwrap().status(),
        200
    );
    assert_eq!(
        http.get(api(&format!("/{id}"))).bearer_auth(&r1_token).send().await.unwrap().status(),
        404
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_endpoint_does_not_hold_back_others_and_rotation_signs_with_both_secrets() {
    let (_clamd, _dir, server) = sender_server(|c| c.webhooks.timeout_secs = 30).await;
    let (slow, fast) = (Receiver::default(), Receiver::default());
    let (slow_hook, fast_hook) = (slow.start().await, fast.start().await);
    let http = reqwest::Client::new();
    let token = server.token(SENDER, ALL);
    let mut ids = Vec::new();
    for (receiver, hook) in [(&slow, &slow_hook), (&fast, &fast_hook)] {
        ids.push(subscribe(&server, &token, receiver, hook).await);
    }
    // The slow endpoint now stalls 10 s per request.
    slow.stall_ms.store(10_000, std::sync::atomic::Ordering::SeqCst);
    let sender = server.client(token.clone());
    // One event: the slow endpoint now holds a delivery for 10 s.
    initialize(&sender).await.unwrap();
    fast.wait_for("no.altinn.broker.filetransferinitialized", 1).await;
    // Eight more while it stalls: they reach the fast endpoint without waiting for the slow one
    // (a dispatcher that awaits its batch would hold them for the 10 s).
    let started = std::time::Instant::now();
    for _ in 0..8 {
        initialize(&sender).await.unwrap();
    }
    fast.wait_for("no.altinn.broker.filetransferinitialized", 9).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the stalled endpoint held the others back"
    );

    // Rotation: the new secret signs first, the old one still signs.
    let fast_id = ids[1]["id"].as_u64().unwrap();
    let old_secret = ids[1]["secret"].as_str().unwrap().to_owned();
    let r = http
        .post(format!("{}/events/api/v1/subscriptions/{fast_id}/secret", server.url()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let new_secret =
        r.json::<serde_json::Value>().await.unwrap()["secret"].as_str().unwrap().to_owned();
    let after = initialize(&sender).await.unwrap();
    let got = fast.wait_for("no.altinn.broker.filetransferinitialized", 10).await;
    // Deliveries run concurrently (up to 4 in flight): the event of the transfer initialized
    // after the rotation need not be the last to arrive.
    let (headers, body) = got
        .iter()
        .find(|(_, body)| body["resourceinstance"] == after.as_str())
        .unwrap_or_else(|| {
            let ids: Vec<_> =
                got.iter().map(|(_, b)| (b["resourceinstance"].clone(), b["id"].clone())).collect();
            panic!("no event of {after} yet: {ids:?}")
        });
    let timestamp: i64 = headers["webhook-timestamp"].to_str().unwrap().parse().unwrap();
    let expected = server::app::webhooks::signature(
        &[new_secret, old_secret],
        body["id"].as_str().unwrap(),
        timestamp,
        &serde_json::to_vec(body).unwrap(),
    );
    assert_eq!(headers["webhook-signature"].to_str().unwrap(), expected);
    assert_eq!(expected.split(' ').count(), 2);
    slow.stall_ms.store(0, std::sync::atomic::Ordering::SeqCst);
}

const OWNER: &str = "991825827";
const SENDER: &str = "910753614";
const ALL: &[&str] = &["altinn:broker.write", "altinn:broker.read", "altinn:serviceowner"];

/// A server (webhooks on loopback, polled every 50 ms) with resource `res` that SENDER may send
/// on.
async fn sender_server(
    configure: impl FnOnce(&mut server::config::Config),
) -> (integration_tests::TestClamd, tempfile::TempDir, integration_tests::TestServer) {
    let clamd = integration_tests::TestClamd::start();
    let dir = tempfile::tempdir().unwrap();
    let server = integration_tests::TestServer::start_in(dir.path(), &clamd.address(), 0, |c| {
        c.webhooks.allow_loopback = true;
        c.webhooks.poll_ms = 50;
        configure(c);
    })
    .await;
    let owner = server.client(server.token(OWNER, ALL));
    integration_tests::owner_with_resource(&owner, "res", &[SENDER], &[]).await;
    (clamd, dir, server)
}

/// Subscribes `hook` to `res` and waits until the handshake validated it.
async fn subscribe(
    server: &integration_tests::TestServer,
    token: &str,
    receiver: &Receiver,
    hook: &str,
) -> serde_json::Value {
    let api = format!("{}/events/api/v1/subscriptions", server.url());
    let http = reqwest::Client::new();
    let r = http
        .post(&api)
        .bearer_auth(token)
        .json(&serde_json::json!({ "endPoint": hook, "resourceFilter": "urn:altinn:resource:res" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let sub: serde_json::Value = r.json().await.unwrap();
    receiver.wait_for("platform.events.validatesubscription", 1).await;
    wait_for_view(server, token, sub["id"].as_u64().unwrap(), |v| v["validated"] == true).await;
    sub
}

/// Polls the subscription's view until `done` holds (5 s at most) and returns it.
async fn wait_for_view(
    server: &integration_tests::TestServer,
    token: &str,
    id: u64,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let url = format!("{}/events/api/v1/subscriptions/{id}", server.url());
    let mut view = serde_json::Value::Null;
    for _ in 0..200 {
        view = reqwest::Client::new()
            .get(&url)
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if done(&view) {
            return view;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("subscription {id} never reached the expected state: {view}");
}

async fn initialize(sender: &client::Client) -> Result<String, tonic::Status> {
    integration_tests::initialize_transfer(sender, "res", SENDER, &[OWNER]).await
}

#[tokio::test(flavor = "multi_thread")]
async fn retry_after_replaces_the_ladder_delay_and_a_subscription_failing_too_long_is_disabled() {
    // The ladder alone would wait 30 s between attempts; the test only passes if Retry-After is
    // honoured. A subscription failing for more than 2 s is disabled.
    let (_clamd, _dir, server) = sender_server(|c| {
        c.webhooks.retry_ladder_secs = vec![30.0; 8];
        c.webhooks.disable_after_secs = 2;
    })
    .await;
    let receiver = Receiver::default();
    let hook = receiver.start().await;
    let token = server.token(SENDER, ALL);
    let id = subscribe(&server, &token, &receiver, &hook).await["id"].as_u64().unwrap();
    let sender = server.client(token.clone());
    const TYPE: &str = "no.altinn.broker.filetransferinitialized";

    // 503 + Retry-After: 1, then 200: the retry comes after about a second, not 30.
    receiver.script.lock().unwrap().push_back(503);
    initialize(&sender).await.unwrap();
    receiver.wait_for(TYPE, 1).await;
    let first = std::time::Instant::now();
    let got = receiver.wait_for(TYPE, 2).await;
    assert!(first.elapsed() >= Duration::from_millis(900), "retried before Retry-After");
    assert_eq!(got[0].1["id"], got[1].1["id"], "the retry carries the same event");
    assert_eq!(got[0].0["webhook-id"], got[1].0["webhook-id"]);
    assert!(wait_for_view(&server, &token, id, |_| true).await["disabled"].is_null());

    // Now it fails on every attempt: after 2 s of failures the subscription is disabled, with
    // the reason in its view, and later events are not sent to it.
    receiver.script.lock().unwrap().extend([503; 20]);
    initialize(&sender).await.unwrap();
    let view = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            let v = wait_for_view(&server, &token, id, |_| true).await;
            if !v["disabled"].is_null() {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the failing subscription was never disabled");
    let reason = view["disabled"].as_str().unwrap();
    assert!(reason.contains("more than 2 seconds") && reason.contains("503"), "{reason}");
    let attempts = receiver.wait_for(TYPE, 3).await.len() - 2;
    assert!((3..=5).contains(&attempts), "{attempts} attempts in about 2 s at 1 s apart");
    let before = receiver.got.lock().unwrap().len();
    initialize(&sender).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.got.lock().unwrap().len(), before, "a disabled subscription got an event");
}

#[tokio::test(flavor = "multi_thread")]
async fn events_committed_before_a_kill_9_are_delivered_after_the_restart() {
    // The real binary, so the crash is a real SIGKILL between the state changes and their
    // deliveries (the endpoint refuses until then): duplicates are allowed, loss is not.
    const TRANSFERS: usize = 5;
    const TYPE: &str = "no.altinn.broker.filetransferinitialized";
    integration_tests::install_tls_provider();
    let clamd = integration_tests::TestClamd::start();
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    std::fs::create_dir_all(&data_dir).unwrap();
    let key = server::auth::DevKey::load_or_create(&data_dir).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}");
    let config = dir.path().join("ferry.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\ndata_dir = {:?}\ndev = true\n\n[clamd]\naddress = \
             \"{}\"\n\n[webhooks]\nallow_loopback = true\npoll_ms = 50\nretry_ladder_secs = \
             [0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2]\n",
            data_dir.to_str().unwrap(),
            clamd.address()
        ),
    )
    .unwrap();
    let start = || {
        let child = std::process::Command::new(crate::cli::ferry())
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .envs(integration_tests::pg::metadata_env(&data_dir))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "the server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        child
    };
    let mut server = start();
    let token =
        |org: &str| key.mint(&storage::model::Party::parse_lenient(org).unwrap(), ALL, 3600);
    let owner = client::Client::connect_lazy(&url, token(OWNER)).unwrap();
    integration_tests::owner_with_resource(&owner, "res", &[SENDER], &[]).await;
    let receiver = Receiver::default();
    let hook = receiver.start().await;
    let r = reqwest::Client::new()
        .post(format!("{url}/events/api/v1/subscriptions"))
        .bearer_auth(token(SENDER))
        .json(&serde_json::json!({ "endPoint": hook, "resourceFilter": "urn:altinn:resource:res" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    receiver.wait_for("platform.events.validatesubscription", 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await; // marked validated

    // The endpoint refuses everything; the transfers' events are committed, not delivered.
    receiver.script.lock().unwrap().extend([500; 10_000]);
    let sender = client::Client::connect_lazy(&url, token(SENDER)).unwrap();
    let mut ids = std::collections::HashSet::new();
    for _ in 0..TRANSFERS {
        ids.insert(initialize(&sender).await.unwrap());
    }
    receiver.wait_for(TYPE, 1).await; // at least one attempt failed: deliveries are pending
    server.kill().unwrap(); // SIGKILL
    server.wait().unwrap();

    // Restarted, with the endpoint accepting: every event arrives.
    receiver.script.lock().unwrap().clear();
    let mark = receiver.got.lock().unwrap().len();
    let mut server = start();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let delivered = loop {
        let delivered: std::collections::HashSet<String> = receiver.got.lock().unwrap()[mark..]
            .iter()
            .filter(|(_, b)| b["type"] == TYPE)
            .map(|(_, b)| b["resourceinstance"].as_str().unwrap().to_owned())
            .collect();
        if delivered.len() == TRANSFERS || std::time::Instant::now() > deadline {
            break delivered;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(delivered, ids, "an event committed before the crash was lost");
    server.kill().unwrap();
    server.wait().unwrap();
}
