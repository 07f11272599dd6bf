//! The Ferry server: the only crate that knows about the network, configuration and signals.
//!
//! At this stage it opens the storage (recovering from any crash), connects to clamd, and
//! serves liveness and readiness over HTTP. The file transfer APIs (gRPC, Altinn REST) are
//! added on top of [`App`] by later work.
//!
//! `run(config, listener, shutdown)` is the whole server: `main` only parses flags, sets up
//! logging and passes a signal future; tests call `run` on a port-0 listener.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use scanner::{Clamd, ClamdAddress, ClamdOptions};
use storage::{Storage, StorageOptions};
use tokio::net::TcpListener;

/// Everything the server needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// Data directory (index, blobs, temporaries).
    pub data_dir: PathBuf,
    /// Where clamd listens.
    pub clamd: ClamdAddress,
}

/// The running application: storage and scanner, shared by every front-end.
#[derive(Debug, Clone)]
pub struct App {
    /// The storage engine.
    pub storage: Storage,
    /// The clamd client.
    pub scanner: Clamd,
}

impl App {
    /// Opens the storage and sets up the scanner client.
    pub async fn open(config: &Config) -> anyhow::Result<Self> {
        let storage = Storage::open(StorageOptions::new(&config.data_dir)).await?;
        let scanner = Clamd::new(ClamdOptions::new(config.clamd.clone()));
        Ok(Self { storage, scanner })
    }

    /// Readiness: the storage answers and clamd answers PING. Returns clamd's version.
    pub async fn readiness(&self) -> Result<String, String> {
        self.storage
            .upload_offset(&storage::model::UploadId::from_stored("readiness-probe"))
            .map_err(|e| format!("storage: {e}"))?;
        self.scanner
            .version()
            .await
            .map_err(|e| format!("scanner: {e}"))
    }
}

/// Runs the server on `listener` until `shutdown` completes.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let app = App::open(&config).await?;
    let recovery = app.storage.recovery();
    tracing::info!(data_dir = %config.data_dir.display(), ?recovery, "storage open");
    match app.readiness().await {
        Ok(version) => tracing::info!(clamd = %config.clamd, %version, "scanner ready"),
        // Not fatal: transfers wait in UploadProcessing until clamd is back.
        Err(reason) => tracing::warn!(clamd = %config.clamd, %reason, "scanner not ready"),
    }
    let router = Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/health/ready", get(ready))
        .with_state(Arc::new(app));
    tracing::info!(addr = %listener.local_addr()?, "listening");
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await?;
    tracing::info!("stopped");
    Ok(())
}

async fn ready(State(app): State<Arc<App>>) -> impl IntoResponse {
    match app.readiness().await {
        Ok(version) => (
            StatusCode::OK,
            axum::Json(
                serde_json::json!({ "status": "ready", "storage": "ok", "scanner": version }),
            ),
        ),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({ "status": "not ready", "reason": reason })),
        ),
    }
}
