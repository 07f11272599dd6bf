//! `ferry`: the Ferry server and its tools.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use server::Config;

#[derive(Debug, Parser)]
#[command(name = "ferry", version, about = "Ferry: a managed file transfer broker")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the server is and who we are.
#[derive(Debug, clap::Args)]
struct Conn {
    /// Server URL.
    #[arg(long, env = "FERRY_SERVER", default_value = "http://127.0.0.1:8080", global = true)]
    server: String,
    /// Bearer token (e.g. from `ferry token`).
    #[arg(long, env = "FERRY_TOKEN", default_value = "", hide_env_values = true, global = true)]
    token: String,
}

impl Conn {
    fn client(&self) -> anyhow::Result<client::Client> {
        client::Client::connect_lazy(&self.server, self.token.clone())
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the server.
    Serve {
        /// TOML configuration file (see server/config.example.toml).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Data directory (overrides the config and FERRY_DATA_DIR).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// clamd address: unix:/path or tcp:host:port (overrides the config and FERRY_CLAMD).
        #[arg(long)]
        clamd: Option<String>,
        /// Address to listen on (overrides the config and FERRY_LISTEN).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Development mode: create and trust a signing key in the data directory.
        #[arg(long)]
        dev: bool,
    },
    /// Service owner registration.
    Serviceowner {
        #[command(subcommand)]
        command: ServiceOwnerCommand,
        #[command(flatten)]
        conn: Conn,
    },
    /// Resource configuration.
    Resource {
        #[command(subcommand)]
        command: ResourceCommand,
        #[command(flatten)]
        conn: Conn,
    },
    /// Initializes a transfer and uploads FILE (resumes after a dropped connection).
    Send {
        /// The file.
        file: PathBuf,
        /// Resource id.
        #[arg(long)]
        resource: String,
        /// Recipients (0192:… or 9 digits), one or more.
        #[arg(long = "to", num_args = 1.., required = true)]
        to: Vec<String>,
        /// Sender; defaults to the token's organisation.
        #[arg(long)]
        sender: Option<String>,
        /// Sender's reference.
        #[arg(long, default_value = "ferry-cli")]
        reference: String,
        /// Continue an earlier `send` of this transfer id instead of initializing a new one.
        #[arg(long)]
        resume: Option<String>,
        /// After the upload, follow the transfer's events until it is published (exit 0) or
        /// fails (exit 1).
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Shows a transfer.
    Status {
        /// Transfer id.
        id: String,
        /// With full status histories.
        #[arg(long)]
        details: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Downloads a transfer's file (resumes a partial download).
    Download {
        /// Transfer id.
        id: String,
        /// Where to write it.
        #[arg(short, long)]
        output: PathBuf,
        #[command(flatten)]
        conn: Conn,
    },
    /// Confirms a download.
    Confirm {
        /// Transfer id.
        id: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Searches transfers of a resource (all pages).
    Search {
        /// Resource id.
        #[arg(long)]
        resource: String,
        /// Only as sender or recipient.
        #[arg(long, value_parser = ["sender", "recipient"])]
        role: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Receives a resource's transfers into a directory: downloads (resumable, verified), writes
    /// atomically, confirms. Follows events until stopped; `--once` reconciles and exits.
    Receive {
        /// Resource id.
        #[arg(long)]
        resource: String,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Receive what is waiting now, then exit.
        #[arg(long)]
        once: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Prints a development token signed with the key in the data directory.
    Token {
        /// Data directory of a server started with --dev.
        #[arg(long, env = "FERRY_DATA_DIR", default_value = ".ferry/data")]
        data_dir: PathBuf,
        /// Organisation number (9 digits, or 0192:…).
        #[arg(long)]
        org: String,
        /// Scopes, e.g. altinn:broker.write altinn:broker.read altinn:serviceowner.
        #[arg(long, num_args = 1.., required = true)]
        scopes: Vec<String>,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: i64,
    },
}

#[derive(Debug, Subcommand)]
enum ServiceOwnerCommand {
    /// Registers the token's organisation.
    Register {
        /// Display name.
        #[arg(long)]
        name: String,
    },
    /// Shows the token's service owner.
    Get,
}

#[derive(Debug, Subcommand)]
enum ResourceCommand {
    /// Creates or changes a resource (only given settings change).
    Put {
        /// Resource id.
        id: String,
        /// Largest file, bytes.
        #[arg(long)]
        max_size: Option<i64>,
        /// Time to live, ISO-8601 (e.g. P30D).
        #[arg(long)]
        ttl: Option<String>,
        /// Grace period after all confirmed, ISO-8601 (e.g. PT2H).
        #[arg(long)]
        grace: Option<String>,
        /// Parties that may send (replaces the list).
        #[arg(long, num_args = 0..)]
        senders: Option<Vec<String>>,
        /// Parties that may receive (replaces the list).
        #[arg(long, num_args = 0..)]
        recipients: Option<Vec<String>>,
    },
    /// Shows a resource.
    Get {
        /// Resource id.
        id: String,
    },
}

fn party_form(p: &str) -> String {
    if p.len() == 9 && p.bytes().all(|b| b.is_ascii_digit()) {
        format!("0192:{p}")
    } else {
        p.to_owned()
    }
}

#[allow(clippy::print_stdout)]
fn show(value: impl std::fmt::Debug) {
    println!("{value:#?}");
}

/// A one-line progress display on a terminal; silent otherwise.
struct Progress {
    total: u64,
    started: std::time::Instant,
    tty: bool,
}

impl Progress {
    fn new(total: u64) -> Self {
        use std::io::IsTerminal as _;
        Self { total, started: std::time::Instant::now(), tty: std::io::stderr().is_terminal() }
    }

    fn update(&mut self, done: u64) {
        if self.tty {
            let secs = self.started.elapsed().as_secs_f64().max(1e-3);
            let pct = if self.total == 0 { 100.0 } else { done as f64 * 100.0 / self.total as f64 };
            eprint!(
                "\r{done}/{} bytes durable ({pct:.0}%), {:.1} MiB/s   ",
                self.total,
                done as f64 / secs / 1048576.0
            );
        }
    }
}

async fn run_client(command: Command) -> anyhow::Result<()> {
    use client::v1 as pb;
    let fail = |s: tonic::Status| anyhow::anyhow!(client::describe(&s));
    match command {
        Command::Serviceowner { command, conn } => {
            let c = conn.client()?;
            match command {
                ServiceOwnerCommand::Register { name } => {
                    c.register_service_owner(&name).await.map_err(fail)?
                }
                ServiceOwnerCommand::Get => show(c.service_owner().await.map_err(fail)?),
            }
        }
        Command::Resource { command, conn } => {
            let c = conn.client()?;
            match command {
                ResourceCommand::Put { id, max_size, ttl, grace, senders, recipients } => {
                    let access =
                        (senders.is_some() || recipients.is_some()).then(|| pb::AccessRules {
                            senders: senders
                                .unwrap_or_default()
                                .iter()
                                .map(|p| party_form(p))
                                .collect(),
                            recipients: recipients
                                .unwrap_or_default()
                                .iter()
                                .map(|p| party_form(p))
                                .collect(),
                        });
                    c.put_resource(pb::PutResourceRequest {
                        resource_id: id,
                        max_file_transfer_size: max_size,
                        file_transfer_time_to_live: ttl,
                        purge_file_transfer_grace_period: grace,
                        access,
                        ..Default::default()
                    })
                    .await
                    .map_err(fail)?;
                }
                ResourceCommand::Get { id } => show(c.resource(&id).await.map_err(fail)?),
            }
        }
        Command::Send { file, resource, to, sender, reference, resume, wait, conn } => {
            let c = conn.client()?;
            let id = match resume {
                Some(id) => id,
                None => {
                    let sender = sender
                        .or_else(|| c.token_org())
                        .ok_or_else(|| anyhow::anyhow!("give --sender"))?;
                    let file_name = file
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    c.initialize(pb::InitializeFileTransferRequest {
                        file_name,
                        resource_id: resource.clone(),
                        senders_file_transfer_reference: reference,
                        sender: party_form(&sender),
                        recipients: to.iter().map(|p| party_form(p)).collect(),
                        ..Default::default()
                    })
                    .await
                    .map_err(fail)?
                }
            };
            eprintln!("file transfer {id}");
            let total = std::fs::metadata(&file)?.len();
            let mut progress = Progress::new(total);
            let started = std::time::Instant::now();
            let result = c.upload_file(&id, &file, &mut |done| progress.update(done)).await?;
            let secs = started.elapsed().as_secs_f64();
            eprintln!(
                "\nuploaded {} bytes in {secs:.2} s ({:.1} MiB/s): {:?} {}",
                result.size,
                result.size as f64 / secs.max(1e-9) / 1048576.0,
                pb::FileTransferStatus::try_from(result.status).unwrap_or_default(),
                result.status_text
            );
            #[allow(clippy::print_stdout)]
            {
                println!("{id}");
            }
            if wait {
                let settled = c.wait_settled(&id, &resource).await?;
                eprintln!("{settled}");
                if settled.ends_with("uploadfailed") {
                    let overview = c.overview(&id).await.map_err(fail)?;
                    anyhow::bail!("transfer {id} failed: {}", overview.file_transfer_status_text);
                }
            }
        }
        Command::Status { id, details, conn } => {
            let c = conn.client()?;
            if details {
                show(c.details(&id).await.map_err(fail)?)
            } else {
                show(c.overview(&id).await.map_err(fail)?)
            }
        }
        Command::Download { id, output, conn } => {
            let header = conn.client()?.download_file(&id, &output).await?;
            eprintln!(
                "downloaded {} ({} bytes, blake3 {})",
                output.display(),
                header.file_size,
                header.blake3
            );
        }
        Command::Confirm { id, conn } => conn.client()?.confirm(&id).await.map_err(fail)?,
        Command::Search { resource, role, conn } => {
            let c = conn.client()?;
            let role = match role.as_deref() {
                Some("sender") => pb::Role::Sender,
                Some("recipient") => pb::Role::Recipient,
                _ => pb::Role::Unspecified,
            } as i32;
            let mut page_token = String::new();
            loop {
                let page = c
                    .search(pb::SearchFileTransfersRequest {
                        resource_id: resource.clone(),
                        role,
                        page_token,
                        ..Default::default()
                    })
                    .await
                    .map_err(fail)?;
                #[allow(clippy::print_stdout)]
                for id in &page.file_transfer_ids {
                    println!("{id}");
                }
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
        }
        Command::Receive { resource, out, once, conn } => {
            let receiver = client::receive::Receiver::new(conn.client()?, resource, out)?;
            let print = |path: &std::path::Path| {
                #[allow(clippy::print_stdout)]
                {
                    println!("{}", path.display());
                }
            };
            if once {
                let done = receiver.reconcile().await?;
                done.downloaded.iter().for_each(|p| print(p));
                eprintln!(
                    "received {} new file(s), confirmed {}",
                    done.downloaded.len(),
                    done.confirmed
                );
            } else {
                receiver.run(print).await?;
            }
        }
        Command::Serve { .. } | Command::Token { .. } => unreachable!("handled in main"),
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Serve { config, data_dir, clamd, listen, dev } => {
            let mut config = Config::load(config.as_deref())?;
            if let Some(d) = data_dir {
                config.data_dir = d;
            }
            if let Some(c) = clamd {
                config.clamd.address = c;
            }
            if let Some(l) = listen {
                config.listen = l;
            }
            config.dev |= dev;
            let listener = tokio::net::TcpListener::bind(config.listen).await?;
            server::run(config, listener, shutdown_signal()).await
        }
        Command::Token { data_dir, org, scopes, ttl } => {
            let org = storage::model::Party::parse_lenient(&org)?;
            let key = server::auth::DevKey::load_or_create(&data_dir)?;
            let scopes: Vec<&str> = scopes.iter().map(String::as_str).collect();
            let token = key.mint(&org, &scopes, ttl);
            #[allow(clippy::print_stdout)]
            {
                println!("{token}");
            }
            Ok(())
        }
        other => run_client(other).await,
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
