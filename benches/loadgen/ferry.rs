//! A Ferry server in its own process (the release `ferry` binary), so its memory can be measured
//! apart from the load generator's, with a fresh data directory and the shared private clamd.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;

pub(crate) const OWNER: &str = "991825827";
pub(crate) const SENDER: &str = "910753614";
pub(crate) const RECIPIENT: &str = "986252932";
const ALL: &[&str] = &["altinn:broker.write", "altinn:broker.read", "altinn:serviceowner"];
/// Scanned like any resource.
pub(crate) const SCANNED: &str = "bench";
/// Approved by the operator for unscanned transfers (the size sweep goes past clamd's 2 GiB).
pub(crate) const UNSCANNED: &str = "bench-unscanned";

/// A running server; killed and its data directory removed on drop.
#[derive(Debug)]
pub(crate) struct FerryProcess {
    child: Child,
    pub(crate) url: String,
    dev_key: server::auth::DevKey,
    _dir: tempfile::TempDir,
}

impl FerryProcess {
    /// Starts `binary` with a fresh data directory under `scratch`, scanning with `clamd`, and
    /// configures the owner and both resources.
    pub(crate) async fn start(binary: &Path, scratch: &Path, clamd: &str) -> anyhow::Result<Self> {
        Self::start_with(binary, scratch, clamd, scanner::CLAMD_MAX_STREAM).await
    }

    /// [`FerryProcess::start`], with `max_stream_bytes`: files longer than it are scanned in
    /// segments of that length.
    pub(crate) async fn start_with(
        binary: &Path,
        scratch: &Path,
        clamd: &str,
        max_stream_bytes: u64,
    ) -> anyhow::Result<Self> {
        Self::launch(binary, scratch, clamd, max_stream_bytes, &[], Duration::from_secs(30)).await
    }

    /// [`FerryProcess::start`], with `ferry` run by `wrapper` (e.g. `valgrind --tool=callgrind`:
    /// the wrapper's process is the server's, so [`FerryProcess::pid`] is the one to signal), and
    /// `ready_within` to answer its readiness probe.
    pub(crate) async fn start_wrapped(
        binary: &Path,
        scratch: &Path,
        clamd: &str,
        wrapper: &[String],
        ready_within: Duration,
    ) -> anyhow::Result<Self> {
        let max = scanner::CLAMD_MAX_STREAM;
        Self::launch(binary, scratch, clamd, max, wrapper, ready_within).await
    }

    async fn launch(
        binary: &Path,
        scratch: &Path,
        clamd: &str,
        max_stream_bytes: u64,
        wrapper: &[String],
        ready_within: Duration,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir_in(scratch).context("data directory")?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let data = dir.path().join("data");
        let config = dir.path().join("ferry.toml");
        // The signature directory the private clamd loads: files over one stream are checked
        // against its hash signatures.
        let db = integration_tests::repo_root().join("scanner/clamd/db");
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:{port}\"\ndata_dir = {data:?}\ndev = true\n\n[clamd]\n\
                 address = \"{clamd}\"\nunscanned_resources = [\"{UNSCANNED}\"]\n\
                 database_dir = {db:?}\nmax_stream_bytes = {max_stream_bytes}\n"
            ),
        )?;
        let dev_key = server::auth::DevKey::load_or_create(&data).context("dev key")?;
        let log = std::fs::File::create(dir.path().join("ferry.log"))?;
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(binary);
                c
            }
            None => Command::new(binary),
        };
        let child = command
            .args(["serve", "--config"])
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let mut server =
            Self { child, url: format!("http://127.0.0.1:{port}"), dev_key, _dir: dir };
        server.wait_ready(ready_within).await?;
        let owner = server.client(OWNER);
        owner.register_service_owner("Bench").await?;
        for resource in [SCANNED, UNSCANNED] {
            owner
                .put_resource(client::v1::PutResourceRequest {
                    resource_id: resource.into(),
                    access: Some(client::v1::AccessRules {
                        senders: vec![format!("0192:{SENDER}")],
                        recipients: vec![format!("0192:{RECIPIENT}")],
                    }),
                    ..Default::default()
                })
                .await?;
        }
        Ok(server)
    }

    async fn wait_ready(&mut self, within: Duration) -> anyhow::Result<()> {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                bail!("ferry exited during start-up ({status}); see its log");
            }
            let ready = http.get(format!("{}/health/ready", self.url)).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        bail!("ferry was not ready within {within:?}")
    }

    pub(crate) fn token(&self, org: &str) -> String {
        let party = storage::model::Party::parse_lenient(org).expect("org number");
        self.dev_key.mint(&party, ALL, 24 * 3600)
    }

    /// A client for `org` on its own connection.
    pub(crate) fn client(&self, org: &str) -> client::Client {
        client::Client::connect_lazy(&self.url, self.token(org)).expect("client")
    }

    /// Peak resident memory of the server process so far (VmHWM), in bytes.
    pub(crate) fn peak_rss(&self) -> anyhow::Result<u64> {
        peak_rss(self.child.id())
    }

    /// The server's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for FerryProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Peak resident memory of process `pid` so far (VmHWM in /proc/PID/status), in bytes.
pub(crate) fn peak_rss(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).context("no VmHWM")?;
    let kib: u64 = line.split_whitespace().nth(1).context("VmHWM value")?.parse()?;
    Ok(kib * 1024)
}

/// CPU seconds (user + system, all threads) process `pid` has used so far; `None` is this
/// process. /proc/PID/stat counts in USER_HZ ticks, which Linux fixes at 100 per second.
pub(crate) fn cpu_seconds(pid: Option<u32>) -> anyhow::Result<f64> {
    let path = pid.map_or_else(|| "/proc/self/stat".to_owned(), |p| format!("/proc/{p}/stat"));
    let stat = std::fs::read_to_string(path)?;
    // The command name (field 2) may hold spaces; the fields after it are plain numbers.
    let rest = stat.rsplit_once(')').context("/proc stat format")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let ticks: u64 = fields
        .get(11..13)
        .context("/proc stat fields")?
        .iter()
        .try_fold(0u64, |sum, f| anyhow::Ok(sum + f.parse::<u64>()?))?;
    Ok(ticks as f64 / 100.0)
}

/// CPU seconds (user + system) of the three processes that share the machine during a
/// measurement: the server under test, clamd and this load generator.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cpu {
    pub(crate) server: f64,
    pub(crate) clamd: f64,
    pub(crate) client: f64,
}

impl Cpu {
    /// The three counters now.
    pub(crate) fn now(server: u32, clamd: u32) -> anyhow::Result<Self> {
        Ok(Self {
            server: cpu_seconds(Some(server))?,
            clamd: cpu_seconds(Some(clamd))?,
            client: cpu_seconds(None)?,
        })
    }

    /// What each used since `self` was read.
    pub(crate) fn since(self, server: u32, clamd: u32) -> anyhow::Result<Self> {
        let now = Self::now(server, clamd)?;
        Ok(Self {
            server: now.server - self.server,
            clamd: now.clamd - self.clamd,
            client: now.client - self.client,
        })
    }

    pub(crate) fn total(self) -> f64 {
        self.server + self.clamd + self.client
    }
}

/// The machine's cores (2 on the project's VM): what the three processes share.
pub(crate) fn cores() -> f64 {
    std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64)
}

/// Initializes a transfer of `resource` from the sender to the recipient.
pub(crate) async fn initialize(
    sender: &client::Client,
    resource: &str,
    name: &str,
) -> anyhow::Result<String> {
    Ok(sender
        .initialize(client::v1::InitializeFileTransferRequest {
            file_name: name.into(),
            resource_id: resource.into(),
            senders_file_transfer_reference: "bench".into(),
            sender: format!("0192:{SENDER}"),
            recipients: vec![format!("0192:{RECIPIENT}")],
            disable_virus_scan: Some(resource == UNSCANNED),
            ..Default::default()
        })
        .await?)
}

/// Uploads `chunks` over gRPC as transfer `id`; returns when the last byte is durable.
pub(crate) async fn upload(
    sender: &client::Client,
    id: &str,
    chunks: Vec<Bytes>,
) -> anyhow::Result<client::v1::UploadResult> {
    let total = chunks.iter().map(|c| c.len() as u64).sum();
    let mut chunks = chunks.into_iter();
    let next = move || std::future::ready(Ok(chunks.next()));
    Ok(sender.upload_once(id, 0, Some(total), next, &mut |_| {}).await?)
}

/// Waits until transfer `id` is published (polling every 2 ms); fails if it fails.
pub(crate) async fn published(sender: &client::Client, id: &str) -> anyhow::Result<()> {
    published_polling(sender, id, Duration::from_millis(2)).await
}

/// [`published`], asking every `every`.
pub(crate) async fn published_polling(
    sender: &client::Client,
    id: &str,
    every: Duration,
) -> anyhow::Result<()> {
    use client::v1::FileTransferStatus as S;
    let deadline = Instant::now() + Duration::from_secs(1800);
    loop {
        let overview = sender.overview(id).await?;
        match S::try_from(overview.file_transfer_status) {
            Ok(S::Published) => return Ok(()),
            Ok(S::Failed) => bail!("{id} failed: {}", overview.file_transfer_status_text),
            _ if Instant::now() > deadline => bail!("{id} not published after 30 min"),
            _ => tokio::time::sleep(every).await,
        }
    }
}

/// Where the `ferry` binary is: `--ferry`, else beside this executable.
pub(crate) fn binary(explicit: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let path = match explicit {
        Some(p) => p,
        None => std::env::current_exe()?.with_file_name("ferry"),
    };
    if !path.exists() {
        bail!(
            "{} not found: build it (cargo build --release -p server) or pass --ferry",
            path.display()
        );
    }
    Ok(path)
}
