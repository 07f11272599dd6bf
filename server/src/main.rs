//! `ferry`: the Ferry server binary.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use scanner::ClamdAddress;
use server::Config;

#[derive(Debug, Parser)]
#[command(
    name = "ferry",
    version,
    about = "Ferry: a managed file transfer broker"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the server.
    Serve {
        /// Data directory: index, blobs and temporaries (one directory is a whole deployment).
        #[arg(long, env = "FERRY_DATA_DIR", default_value = ".ferry/data")]
        data_dir: PathBuf,
        /// clamd address: unix:/path/to/clamd.sock or tcp:host:port.
        #[arg(
            long,
            env = "FERRY_CLAMD",
            default_value = "unix:.ferry/clamd/clamd.sock"
        )]
        clamd: ClamdAddress,
        /// Address to listen on.
        #[arg(long, env = "FERRY_LISTEN", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    match Cli::parse().command {
        Command::Serve {
            data_dir,
            clamd,
            listen,
        } => {
            let listener = tokio::net::TcpListener::bind(listen).await?;
            server::run(Config { data_dir, clamd }, listener, shutdown_signal()).await
        }
    }
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}
