//! The Ferry server: the only crate that knows about the network, configuration and signals.
//!
//! Arrows run one way, `api → app → storage/scanner` (checked by `scripts/check-modules`):
//! - [`app`]: the use cases, one file per area, independent of transport.
//! - [`api`]: the front-ends (gRPC, the Altinn REST facade, TUS, events, Watch, webhooks, the
//!   token exchange, OpenAPI, the web console for people at `/`), thin over the use cases.
//! - beside them: [`auth`] (bearer tokens, scopes, the caller's organisation, development keys),
//!   [`tokens`] (Ferry's own signing keys), [`error`] (one classification of failures),
//!   [`metrics`], [`config`] (the TOML configuration), [`cli`] (what the `ferry` client prints).
//!
//! `run(config, listener, shutdown)` is the whole server: `main` parses flags, sets up logging
//! and passes a signal future; tests call `run` on a port-0 listener.

pub mod api;
pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod metrics;
pub mod tokens;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use proto::v1::file_transfer_service_server::FileTransferServiceServer;
use proto::v1::resource_service_server::ResourceServiceServer;
use scanner::Clamd;
use storage::{Storage, StorageOptions};
use tokio::net::TcpListener;

use api::{events, exchange, grpc, openapi, rest, tus, watch, webhooks};
pub use app::App;
use app::lifecycle;
pub use config::Config;

/// Largest gRPC message accepted on every service: a 1 MiB data chunk plus framing headroom.
/// A larger message is refused with RESOURCE_EXHAUSTED (see `grpc::oversized_requests`).
pub const MAX_MESSAGE: usize = 2 * 1024 * 1024;

/// How long start-up waits for the readiness check it logs.
const STARTUP_PROBE: Duration = Duration::from_secs(3);

/// Opens storage, keys and scanner as `config` says.
pub async fn open_app(config: &Config) -> anyhow::Result<Arc<App>> {
    let lifecycle = storage::Lifecycle {
        stuck_upload_after: Duration::from_secs(config.lifecycle.stuck_upload_secs),
        scan_timeout: Duration::from_secs(config.lifecycle.scan_timeout_secs),
    };
    // Inline files are read whole into memory and never reach the checks of files too long
    // for one clamd stream: keep them far below it.
    anyhow::ensure!(
        config.storage.inline_max_bytes <= storage::MAX_INLINE_MAX,
        "[storage] inline_max_bytes is {}: at most {} (1 MiB)",
        config.storage.inline_max_bytes,
        storage::MAX_INLINE_MAX
    );
    let options = StorageOptions {
        lifecycle,
        min_free_bytes: config.storage.min_free_bytes,
        inline_max: config.storage.inline_max_bytes,
        ..StorageOptions::new(&config.data_dir)
    };
    let storage = match config.storage.metadata_backend()? {
        config::MetadataBackend::Redb => Storage::open(options).await?,
        config::MetadataBackend::Postgres(pg) => {
            tracing::info!(
                url = %config::redact_url(&pg.url),
                schema = %pg.schema,
                "metadata in PostgreSQL"
            );
            Storage::open_on_postgres(options, pg).await?
        }
    };
    let dev_key =
        if config.dev { Some(auth::DevKey::load_or_create(&config.data_dir)?) } else { None };
    let authenticator =
        auth::Authenticator::load(&config.auth.issuers, dev_key.as_ref(), config.leeway())?;
    let clamd_options = config.clamd_options()?;
    let options = app::AppOptions {
        global_max_upload: config.limits.max_upload_bytes,
        scan_retry_max: Duration::from_secs(config.clamd.retry_max_secs),
        unscanned_resources: config.clamd.unscanned_resources.clone(),
        idle_timeout: Duration::from_secs(config.limits.idle_timeout_secs.max(1)),
    };
    let public_url =
        config.public_url.clone().unwrap_or_else(|| format!("http://{}", config.listen));
    let token_issuer = token_issuer(config, dev_key.as_ref(), &public_url)?;
    let mut app = App::new(storage, Clamd::new(clamd_options), authenticator, options)
        .with_lifecycle(lifecycle, public_url)
        .with_webhooks(config.webhooks.clone());
    if let Some(issuer) = token_issuer {
        app = app.with_token_issuer(issuer)?;
    }
    Ok(Arc::new(app))
}

/// The token exchange's issuer, if `[auth.exchange]` turns it on (development mode always
/// does, exchanging development tokens and signing with the development key).
fn token_issuer(
    config: &Config,
    dev_key: Option<&auth::DevKey>,
    public_url: &str,
) -> anyhow::Result<Option<tokens::TokenIssuer>> {
    use anyhow::Context as _;
    let settings = &config.auth.exchange;
    let mut accepts = settings.issuers.clone();
    if dev_key.is_some() && !accepts.iter().any(|i| i == auth::DEV_ISSUER) {
        accepts.push(auth::DEV_ISSUER.to_owned());
    }
    if accepts.is_empty() {
        return Ok(None);
    }
    let signing = match (&settings.signing_key_file, dev_key) {
        (Some(path), _) => tokens::SigningKey::from_pkcs8_pem(
            &std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?,
        )
        .with_context(|| path.display().to_string())?,
        (None, Some(dev)) => tokens::SigningKey::from_pkcs8_pem(dev.pem())?,
        (None, None) => anyhow::bail!(
            "[auth.exchange] issuers is set: set [auth.exchange] signing_key_file too (a PKCS#8 EC P-256 private key)"
        ),
    };
    let previous = settings
        .verification_key_files
        .iter()
        .map(|path| {
            let pem = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            tokens::TokenIssuer::public_key_from_pem(&pem)
                .with_context(|| path.display().to_string())
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let issuer = settings.issuer.clone().unwrap_or_else(|| {
        format!("{}/authentication/api/v1/openid/", public_url.trim_end_matches('/'))
    });
    Ok(Some(tokens::TokenIssuer::new(issuer, signing, previous, accepts, settings.ttl_secs)))
}

/// The accepted connections, with Nagle's algorithm off. The builder's `tcp_nodelay` applies
/// only to listeners tonic binds itself; without this, a small response waited for the peer's
/// delayed ACK (40 ms on Linux), which made every small upload take 44 ms.
fn incoming(
    listener: tokio::net::TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt as _;
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|accepted| {
        let stream = accepted?;
        if let Err(e) = stream.set_nodelay(true) {
            tracing::warn!(error = %e, "could not turn off Nagle's algorithm");
        }
        Ok(stream)
    })
}

/// Runs the server on `listener` until `shutdown` completes. In-flight uploads stay resumable:
/// their committed offsets are durable whatever happens to the connection.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let mut config = config;
    if config.public_url.is_none() {
        // Where this server really listens (the configured address may say port 0).
        config.public_url = Some(format!("http://{}", listener.local_addr()?));
    }
    let app = open_app(&config).await?;
    tracing::info!(data_dir = %config.data_dir.display(), recovery = ?app.storage.recovery(), dev = config.dev, "storage open");
    // Only logged, so bounded: a frozen clamd (it accepts and never answers) held start-up, even
    // `/health`, for the scanner's connect + write timeouts (65 s).
    match tokio::time::timeout(STARTUP_PROBE, app.readiness()).await {
        Ok(readiness) => {
            match &readiness.scanner {
                Ok(version) => {
                    tracing::info!(clamd = %config.clamd.address, %version, "scanner ready")
                }
                // Not fatal: transfers wait in UploadProcessing until clamd is back.
                Err(reason) => {
                    tracing::warn!(clamd = %config.clamd.address, %reason, "scanner not ready")
                }
            }
            if let Err(reason) = &readiness.storage {
                tracing::warn!(%reason, "storage not ready for uploads");
            }
        }
        Err(_) => tracing::warn!(
            clamd = %config.clamd.address,
            "readiness did not answer within {STARTUP_PROBE:?} (clamd not answering?); serving anyway"
        ),
    }
    if app.auth.has_jwks_urls() {
        // Issuers' JWKS URLs: fetched before serving, then refreshed (key rotations): every
        // `jwks_refresh_secs`, after a failure with backoff from 5 s, and at most every 30 s
        // when a token names a key id its issuer did not have.
        let client = app::webhooks::http_client(Duration::from_secs(30));
        let mut fetched = refresh_jwks(&app, &client).await;
        let refresher = app.clone();
        let every = Duration::from_secs(config.auth.jwks_refresh_secs.max(10));
        app.spawn(async move {
            let mut retry = Duration::from_secs(5);
            loop {
                let wait = if fetched { every } else { retry.min(every) };
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = async {
                        tokio::time::sleep(Duration::from_secs(30)).await;
                        refresher.auth.refresh_wanted().await;
                    } => {}
                }
                fetched = refresh_jwks(&refresher, &client).await;
                retry = if fetched { Duration::from_secs(5) } else { (retry * 2).min(every) };
            }
        });
    }
    app.resume_pending().await?;
    app.spawn(app::webhooks::run_forever(app.clone()));
    app.spawn(lifecycle::run_forever(
        app.clone(),
        Duration::from_secs(config.lifecycle.interval_secs.max(1)),
    ));

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<FileTransferServiceServer<grpc::FileTransferApi>>().await;
    health.set_serving::<ResourceServiceServer<grpc::ResourceApi>>().await;
    health
        .set_serving::<proto::v1::event_service_server::EventServiceServer<watch::EventApi>>()
        .await;
    // Both reflection versions: grpcurl and most tools speak v1; Python's grpcio-reflection and
    // older tools only v1alpha.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;

    // gRPC services get the gRPC-Web translation; REST, TUS and health do not (tonic-web
    // refuses plain HTTP/1.1 requests it does not understand).
    let grpc = tonic::service::Routes::new(
        FileTransferServiceServer::new(grpc::FileTransferApi::new(app.clone()))
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE),
    )
    .add_service(
        ResourceServiceServer::new(grpc::ResourceApi::new(app.clone()))
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE),
    )
    .add_service(
        proto::v1::event_service_server::EventServiceServer::new(watch::EventApi::new(
            app.clone(),
            Duration::from_secs(config.limits.watch_stall_secs),
        ))
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE),
    )
    .add_service(health_service)
    .add_service(reflection_v1)
    .add_service(reflection_v1alpha)
    .into_axum_router()
    .layer(axum::middleware::from_fn_with_state(app.clone(), grpc::idle_uploads))
    .layer(axum::middleware::from_fn(grpc::oversized_requests))
    .layer(tonic_web::GrpcWebLayer::new());
    let http = {
        let ready_app = app.clone();
        let metrics_app = app.clone();
        Router::new()
            .route("/health", get(|| async { "ok" }))
            .route("/health/ready", get(move || ready(ready_app.clone())))
            .merge(rest::router(app.clone()))
            .merge(tus::router(app.clone()))
            .merge(events::router(app.clone()))
            .merge(webhooks::router(app.clone()))
            .merge(exchange::router(app.clone()))
            .merge(api::console::router(app.clone(), &config))
            .route("/metrics", get(move || metrics(metrics_app.clone())))
            // Swagger UI, and the document itself at /broker/api/v1/openapi.json.
            .merge(
                utoipa_swagger_ui::SwaggerUi::new("/broker/api/v1/swagger")
                    .external_url_unchecked("/broker/api/v1/openapi.json", openapi::document()),
            )
    };
    let all = grpc
        .merge(http)
        .fallback(not_found)
        // Browsers: CORS as configured (gRPC-Web is translated on the gRPC routes above).
        .layer(tower::util::option_layer(cors_layer(&config.cors)))
        // Outside CORS, which would answer every OPTIONS itself and hide TUS discovery.
        .layer(axum::middleware::from_fn(tus::discovery))
        .layer(axum::middleware::from_fn_with_state(app.clone(), count_requests));
    let routes = tonic::service::Routes::from(all);

    tracing::info!(addr = %listener.local_addr()?, "listening");
    tonic::transport::Server::builder()
        .accept_http1(true)
        // Larger frames and windows roughly double loopback throughput (platform notes).
        .max_frame_size(Some(1024 * 1024 - 1))
        // A stream's window is what the server may hold of it unwritten: 2 MiB covers a
        // checkpoint's fsync on loopback at full speed, where 8 MiB only parked bytes in memory
        // (8 concurrent uploads: peak RSS 225 -> 133 MiB). Adaptive windows cut memory too but
        // let a rejected client stream end in a broken pipe instead of its status.
        .initial_stream_window_size(Some(2 * 1024 * 1024))
        .initial_connection_window_size(Some(4 * 1024 * 1024))
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming(listener), shutdown)
        .await?;
    // Uploads checkpoint and end (resumable), scans stop (resumed at the next start).
    app.close(Duration::from_secs(30)).await;
    // Connection tasks drop their handles to the app shortly after the server stops; wait for
    // them so the index is closed (and its lock released) when `run` returns.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while Arc::strong_count(&app) > 1 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    if Arc::strong_count(&app) > 1 || app.storage.handle_count() > 1 {
        tracing::warn!(
            app_refs = Arc::strong_count(&app),
            storage_handles = app.storage.handle_count(),
            "still referenced at shutdown"
        );
    }
    drop(app);
    tracing::info!("stopped");
    Ok(())
}

/// Fetches the issuers' JWKS URLs; a failure keeps the keys fetched before and is logged.
/// Whether every fetch succeeded.
async fn refresh_jwks(app: &App, client: &reqwest::Client) -> bool {
    let failures = app.auth.refresh_jwks(client).await;
    for (url, error) in &failures {
        tracing::warn!(%url, error = %format!("{error:#}"), "could not fetch a JWKS");
    }
    failures.is_empty()
}

/// An unknown path: 404. Under `/broker/` a ProblemDetails (as the API's other errors); a gRPC
/// call to an unknown method gets gRPC's UNIMPLEMENTED; elsewhere plain text.
async fn not_found(request: axum::extract::Request) -> axum::response::Response {
    let path = request.uri().path();
    let grpc = request
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/grpc"));
    if grpc {
        return tonic::Status::unimplemented(format!("no such method: {path}")).into_http();
    }
    if path.starts_with("/broker/") {
        return api::http::problem_details(
            StatusCode::NOT_FOUND,
            &format!("no such endpoint: {path}; see /broker/api/v1/openapi.json"),
        );
    }
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}

/// CORS for the configured origins; none configured, no layer.
fn cors_layer(config: &config::CorsConfig) -> Option<tower_http::cors::CorsLayer> {
    use tower_http::cors::{AllowOrigin, Any, CorsLayer};
    if config.allowed_origins.is_empty() {
        return None;
    }
    let origins: Vec<axum::http::HeaderValue> =
        config.allowed_origins.iter().filter_map(|o| o.parse().ok()).collect();
    let layer = CorsLayer::new()
        .allow_methods(Any)
        .allow_headers(Any)
        .expose_headers(Any)
        .max_age(Duration::from_secs(3600));
    Some(if config.allowed_origins.iter().any(|o| o == "*") {
        layer.allow_origin(Any)
    } else {
        layer.allow_origin(AllowOrigin::list(origins))
    })
}

async fn metrics(app: Arc<App>) -> impl IntoResponse {
    let transfers = app.transfers_by_status().unwrap_or_default();
    (
        [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(&transfers),
    )
}

/// `/health/ready`: 200 when every request can be served, 503 (with what is wrong) when the
/// index cannot commit, free space is below the reserve (a load balancer stops sending
/// uploads), or clamd does not answer.
async fn ready(app: Arc<App>) -> impl IntoResponse {
    let r = app.readiness().await;
    let mut body = serde_json::json!({
        "status": if r.is_ready() { "ready" } else { "not ready" },
        "storage": match &r.storage { Ok(()) => "ok".to_owned(), Err(e) => e.clone() },
        "metadata": r.backends.0,
        "blobs": r.backends.1,
        "scanner": match &r.scanner { Ok(v) => v.clone(), Err(e) => format!("unavailable: {e}") },
    });
    if let Some(space) = r.space {
        body["freeBytes"] = space.free.into();
        body["minFreeBytes"] = space.min_free.into();
    }
    let status = if r.is_ready() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, axum::Json(body))
}

/// Middleware counting requests by matched route (gRPC: the method path) and status.
async fn count_requests(
    axum::extract::State(app): axum::extract::State<Arc<App>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let path = request.uri().path().to_owned();
    let route = match request.extensions().get::<axum::extract::MatchedPath>() {
        // gRPC services are mounted under a wildcard: their method path is the bounded label.
        Some(matched) if !matched.as_str().contains('*') => matched.as_str().to_owned(),
        _ if path.matches('/').count() == 2 && !path.starts_with("/broker") => path,
        _ => "other".to_owned(),
    };
    let response = next.run(request).await;
    app.metrics.request(&route, response.status().as_u16());
    response
}
