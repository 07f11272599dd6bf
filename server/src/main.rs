//! `ferry`: the Ferry server and its tools.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{CommandFactory as _, Parser, Subcommand};
use server::Config;
use server::cli::{self as out, Output};

#[derive(Debug, Parser)]
#[command(
    name = "ferry",
    version,
    about = "Ferry: a managed file transfer broker",
    after_help = "Exit codes: 0 success, 1 failed (e.g. send --wait saw the transfer fail), 2 usage, \
                  3 not found, 4 not allowed, 5 server or network error, 6 verification failed."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the server is, who we are, how to print.
#[derive(Debug, clap::Args)]
struct Conn {
    /// Server URL.
    #[arg(long, env = "FERRY_SERVER", default_value = "http://127.0.0.1:8080", global = true)]
    server: String,
    /// Bearer token (e.g. from `ferry token`).
    #[arg(long, env = "FERRY_TOKEN", default_value = "", hide_env_values = true, global = true)]
    token: String,
    /// What to print: human (aligned, for people) or json (one document on stdout, Altinn's
    /// names).
    #[arg(long, value_enum, default_value = "human", global = true)]
    format: Output,
    /// Same as --format json.
    #[arg(long, global = true)]
    json: bool,
}

impl Conn {
    fn client(&self) -> anyhow::Result<client::Client> {
        client::Client::connect_lazy(&self.server, self.token.clone())
    }

    fn output(&self) -> Output {
        if self.json { Output::Json } else { self.format }
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
    #[command(
        after_help = "Example:\n  FERRY_TOKEN=$OWNER ferry serviceowner register --name 'Digdir'"
    )]
    Serviceowner {
        #[command(subcommand)]
        command: ServiceOwnerCommand,
        #[command(flatten)]
        conn: Conn,
    },
    /// Resource configuration.
    #[command(
        after_help = "Example:\n  ferry resource put example --ttl P30D --senders 910753614 --recipients 986252932\n  ferry resource get example --json"
    )]
    Resource {
        #[command(subcommand)]
        command: ResourceCommand,
        #[command(flatten)]
        conn: Conn,
    },
    /// Initializes a transfer and uploads FILE (resumes after a dropped connection).
    #[command(
        after_help = "Example:\n  ferry send report.pdf --resource example --to 986252932 --wait"
    )]
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
    #[command(
        after_help = "Example:\n  ferry status 0b6ad2a2-8c3f-4b53-9f0e-0d7e6c2b1a11 --details\n  ferry status $ID --json | jq -r .fileTransferStatus"
    )]
    Status {
        /// Transfer id.
        id: String,
        /// With full status histories.
        #[arg(long)]
        details: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Downloads a transfer's file (resumes a partial download, verifies BLAKE3).
    #[command(after_help = "Example:\n  ferry download $ID -o report.pdf && ferry confirm $ID")]
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
    #[command(after_help = "Example:\n  ferry confirm $ID")]
    Confirm {
        /// Transfer id.
        id: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Searches transfers of a resource (all pages).
    #[command(after_help = "Example:\n  ferry search --resource example --role recipient")]
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
    /// Shell completions: `ferry completions bash > /etc/bash_completion.d/ferry`.
    #[command(after_help = "Example:\n  ferry completions zsh > ~/.zfunc/_ferry")]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Prints a development token signed with the key in the data directory.
    #[command(
        after_help = "Example:\n  ferry token --org 910753614 --scopes altinn:broker.write altinn:broker.read"
    )]
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

/// Prints `human` or `json` as `output` says.
#[allow(clippy::print_stdout)]
fn print(output: Output, human: impl FnOnce() -> String, json: impl FnOnce() -> serde_json::Value) {
    match output {
        Output::Human => print!("{}", human()),
        Output::Json => println!("{:#}", json()),
    }
}

/// The machine's time zone for human output (UTC if it cannot be read).
fn local_zone() -> jiff::tz::TimeZone {
    jiff::tz::TimeZone::try_system().unwrap_or(jiff::tz::TimeZone::UTC)
}

/// Progress on stderr: a bar with bytes, rate and ETA on a terminal; a plain line every few
/// seconds otherwise (logs stay readable).
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    total: u64,
    last_line: std::time::Instant,
    first: bool,
    verb: String,
}

impl Progress {
    fn new(total: u64, verb: impl Into<String>) -> Self {
        let verb = verb.into();
        use std::io::IsTerminal as _;
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(total);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
                )
                .expect("a valid template")
                .progress_chars("=> "),
            );
            bar.set_message(verb.clone());
            bar
        });
        Self { bar, total, last_line: std::time::Instant::now(), first: true, verb }
    }

    /// `done` bytes are durable (or received).
    fn update(&mut self, done: u64) {
        if self.first && done > 0 {
            // Where a resumed transfer starts.
            let note = format!("resuming at {} of {}", out::size(done), out::size(self.total));
            match &self.bar {
                Some(bar) => bar.println(note),
                None => eprintln!("{note}"),
            }
        }
        self.first = false;
        match &self.bar {
            Some(bar) => bar.set_position(done),
            None if self.last_line.elapsed() >= std::time::Duration::from_secs(5) => {
                self.last_line = std::time::Instant::now();
                eprintln!("{} {} of {}", self.verb, out::size(done), out::size(self.total));
            }
            None => {}
        }
    }

    /// A phase after the bytes (scanning, publishing).
    fn phase(&self, text: &str) {
        match &self.bar {
            Some(bar) => bar.set_message(text.to_owned()),
            None => eprintln!("{text}"),
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }
}

impl Drop for Progress {
    /// A bar left behind (an error, or a callback dropped by its caller) stays as drawn last.
    fn drop(&mut self) {
        if let Some(bar) = self.bar.as_ref().filter(|bar| !bar.is_finished()) {
            bar.abandon();
        }
    }
}

async fn run_client(command: Command) -> anyhow::Result<()> {
    use client::v1 as pb;
    let fail = anyhow::Error::new;
    let zone = local_zone();
    match command {
        Command::Serviceowner { command, conn } => {
            let c = conn.client()?;
            match command {
                ServiceOwnerCommand::Register { name } => {
                    c.register_service_owner(&name).await.map_err(fail)?
                }
                ServiceOwnerCommand::Get => {
                    let owner = c.service_owner().await.map_err(fail)?;
                    print(
                        conn.output(),
                        || out::service_owner_human(&owner),
                        || out::service_owner_json(&owner),
                    );
                }
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
                ResourceCommand::Get { id } => {
                    let resource = c.resource(&id).await.map_err(fail)?;
                    print(
                        conn.output(),
                        || out::resource_human(&resource),
                        || out::resource_json(&resource),
                    );
                }
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
            let mut progress = Progress::new(total, "uploading");
            let started = std::time::Instant::now();
            let result = c.upload_file(&id, &file, &mut |done| progress.update(done)).await?;
            let secs = started.elapsed().as_secs_f64();
            progress.finish();
            eprintln!(
                "uploaded {} in {secs:.2} s ({}/s): {} ({})",
                out::size(result.size),
                out::size((result.size as f64 / secs.max(1e-9)) as u64),
                out::status_name(result.status),
                result.status_text
            );
            let mut settled = None;
            if wait {
                progress.phase("scanning and publishing");
                settled = Some(c.wait_settled(&id, &resource).await?);
            }
            let overview = c.overview(&id).await.map_err(fail)?;
            match conn.output() {
                Output::Json => print(conn.output(), String::new, || out::overview_json(&overview)),
                #[allow(clippy::print_stdout)]
                Output::Human => println!("{id}"),
            }
            if let Some(settled) = settled {
                if settled.ends_with("uploadfailed") {
                    anyhow::bail!("transfer {id} failed: {}", overview.file_transfer_status_text);
                }
                eprintln!(
                    "{}: {}",
                    out::status_name(overview.file_transfer_status),
                    overview.file_transfer_status_text
                );
            }
        }
        Command::Status { id, details, conn } => {
            let c = conn.client()?;
            if details {
                let d = c.details(&id).await.map_err(fail)?;
                print(conn.output(), || out::details_human(&d, &zone), || out::details_json(&d));
            } else {
                let o = c.overview(&id).await.map_err(fail)?;
                print(conn.output(), || out::overview_human(&o, &zone), || out::overview_json(&o));
            }
        }
        Command::Download { id, output, conn } => {
            let c = conn.client()?;
            let total = c.overview(&id).await.map_err(fail)?.file_transfer_size;
            let mut progress = Progress::new(total, "downloading");
            let header = c
                .download_file_with_progress(&id, &output, &mut |done| progress.update(done))
                .await?;
            progress.finish();
            eprintln!(
                "downloaded {} ({}, blake3 {})",
                output.display(),
                out::size(header.file_size),
                header.blake3
            );
            if conn.output() == Output::Json {
                print(conn.output(), String::new, || {
                    serde_json::json!({
                        "fileTransferId": id,
                        "path": output.display().to_string(),
                        "fileTransferSize": header.file_size,
                        "blake3": header.blake3,
                    })
                });
            }
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
            let mut ids = Vec::new();
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
                ids.extend(page.file_transfer_ids);
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
            // One overview per row, eight at a time.
            use futures_util::StreamExt as _;
            let rows: Vec<pb::FileTransferOverview> = futures_util::stream::iter(ids)
                .map(|id| {
                    let c = c.clone();
                    async move { c.overview(&id).await }
                })
                .buffered(8)
                .collect::<Vec<_>>()
                .await
                .into_iter()
                .collect::<Result<_, _>>()
                .map_err(fail)?;
            print(
                conn.output(),
                || out::search_table(&rows, &zone),
                || serde_json::Value::Array(rows.iter().map(out::overview_json).collect()),
            );
        }
        Command::Receive { resource, out, once, conn } => {
            // One bar per file, named by it (plain lines when stderr is not a terminal).
            let receiver = client::receive::Receiver::new(conn.client()?, resource, out)?
                .with_progress(|file_name, total| {
                    let mut progress = Progress::new(total, format!("receiving {file_name}"));
                    Box::new(move |done| progress.update(done))
                });
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
        Command::Serve { .. } | Command::Token { .. } | Command::Completions { .. } => {
            unreachable!("handled in main")
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let command = match Cli::try_parse() {
        Ok(cli) => cli.command,
        Err(e) => {
            let _ = e.print();
            let code = if e.use_stderr() { out::EXIT_USAGE } else { 0 };
            return std::process::ExitCode::from(code as u8);
        }
    };
    let server = matches!(command, Command::Serve { .. });
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(
            // Client commands speak for themselves; the server logs.
            |_| if server { "info".into() } else { "warn".into() },
        ))
        .with_writer(std::io::stderr)
        .init();
    match run(command).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One sentence: the server's message, not a `Status { … }` dump.
            match e.chain().find_map(|e| e.downcast_ref::<tonic::Status>()) {
                Some(status) => eprintln!("ferry: {}", client::describe(status)),
                None => eprintln!("ferry: {e:#}"),
            }
            std::process::ExitCode::from(out::exit_code(&e) as u8)
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "ferry", &mut std::io::stdout());
            Ok(())
        }
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
