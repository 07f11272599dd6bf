//! A private PostgreSQL cluster for the tests: `initdb` in a temporary directory, a free
//! loopback port, the real server from Debian's `postgresql` package (`scripts/test` installs
//! it). PostgreSQL refuses to run as root, so as root the cluster belongs to the `postgres`
//! user and its programs run through `runuser`.
//!
//! One cluster per test process ([`PgCluster::shared`]); each store a test opens gets a schema
//! of its own ([`PgCluster::fresh_schema`]), so tests never see each other's records. A
//! watchdog process stops the cluster and deletes its directory when the test process has
//! exited (a `static` is never dropped), or [`PgCluster`]'s `Drop` does for a cluster of its own
//! ([`PgCluster::start`]), which fault tests stop and start.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// A running PostgreSQL cluster on loopback.
#[derive(Debug)]
pub struct PgCluster {
    dir: TempDir,
    port: u16,
    bin: PathBuf,
    run_as: Option<&'static str>,
}

/// The directory of PostgreSQL's programs: `FERRY_PG_BIN`, else the newest
/// `/usr/lib/postgresql/<version>/bin`.
fn pg_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("FERRY_PG_BIN") {
        return path.into();
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).unwrap_or_else(|| {
        panic!("PostgreSQL is not installed: `apt-get install postgresql` (scripts/test does)")
    })
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

impl PgCluster {
    /// The cluster of this test process, started on first use.
    pub fn shared() -> &'static PgCluster {
        static SHARED: OnceLock<PgCluster> = OnceLock::new();
        SHARED.get_or_init(|| {
            let cluster = Self::start();
            cluster.watch_process(std::process::id());
            cluster
        })
    }

    /// A cluster of its own, stopped and deleted when dropped.
    pub fn start() -> Self {
        let dir = tempfile::Builder::new().prefix("ferry-pg-").tempdir().expect("temp dir");
        let run_as = is_root().then_some("postgres");
        if run_as.is_some() {
            let status = Command::new("chown")
                .args(["postgres:", &dir.path().display().to_string()])
                .status()
                .expect("chown");
            assert!(status.success(), "chown of the cluster directory to postgres failed");
        }
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
            probe.local_addr().expect("local addr").port()
        };
        let cluster = Self { dir, port, bin: pg_bin(), run_as };
        let data = cluster.data_dir();
        cluster.run(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "ferry",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--no-instructions",
            ],
        );
        // Loopback only, the socket in the cluster's own directory, small but real settings:
        // fsync and synchronous_commit stay on (the durability tests rely on them).
        let conf = format!(
            "listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{dir}'\n\
             max_connections = 200\nshared_buffers = 64MB\nlog_min_messages = warning\n",
            dir = cluster.dir.path().display()
        );
        let conf_path = Path::new(&data).join("postgresql.auto.conf");
        let mut existing = std::fs::read_to_string(&conf_path).unwrap_or_default();
        existing.push_str(&conf);
        std::fs::write(&conf_path, existing).expect("writing postgresql.auto.conf");
        cluster.start_server();
        cluster
    }

    fn data_dir(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        match self.run_as {
            Some(user) => {
                let mut command = Command::new("runuser");
                command.args(["-u", user, "--"]).arg(path);
                command
            }
            None => Command::new(path),
        }
    }

    fn run(&self, program: &str, args: &[&str]) {
        let output = self.command(program).args(args).output().expect(program);
        assert!(
            output.status.success(),
            "{program} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Starts the server (after [`PgCluster::stop`]) and waits until it accepts connections.
    pub fn start_server(&self) {
        let log = self.dir.path().join("server.log").display().to_string();
        self.run("pg_ctl", &["-D", &self.data_dir(), "-l", &log, "-w", "-t", "60", "start"]);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "PostgreSQL did not listen within 30 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server at once (`-m immediate`: as a crash would, recovery on the next start).
    pub fn stop(&self) {
        self.run("pg_ctl", &["-D", &self.data_dir(), "-m", "immediate", "-w", "stop"]);
    }

    /// The URL of database `postgres` as user `ferry`.
    pub fn url(&self) -> String {
        format!("postgres://ferry@127.0.0.1:{}/postgres", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A schema name no other store of this process has used.
    pub fn fresh_schema() -> String {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        format!("t{}_{n}", std::process::id())
    }

    /// A detached process that stops the cluster and deletes it once `pid` has exited.
    fn watch_process(&self, pid: u32) {
        let pg_ctl = self.bin.join("pg_ctl").display().to_string();
        let stop = match self.run_as {
            Some(user) => format!("runuser -u {user} -- {pg_ctl}"),
            None => pg_ctl,
        };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; \
             {stop} -D '{data}' -m immediate -w stop >/dev/null 2>&1; rm -rf '{dir}'",
            data = self.data_dir(),
            dir = self.dir.path().display()
        );
        // Never waited for: it must outlive this process (init reaps it).
        #[allow(clippy::zombie_processes)]
        Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting the cluster's watchdog");
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .args(["-D", &self.data_dir(), "-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The metadata backend the tests' servers run on: `FERRY_TEST_METADATA=postgres` puts every
/// [`crate::TestServer`] and every `ferry serve` the tests spawn on the shared cluster (the
/// backend matrix of `scripts/test`); unset or `redb`, they use redb as before. Returns the URL
/// and the schema for a server whose data directory is `data_dir`: the schema is derived from
/// the directory, so a server restarted on the same directory finds its records again.
pub fn metadata_for(data_dir: &Path) -> Option<(String, String)> {
    match std::env::var("FERRY_TEST_METADATA").as_deref() {
        Ok("postgres") => {
            let digest = blake3::hash(data_dir.as_os_str().as_encoded_bytes());
            let schema = format!("d_{}", &digest.to_hex()[..20]);
            Some((PgCluster::shared().url(), schema))
        }
        Ok("redb") | Ok("") | Err(_) => None,
        Ok(other) => panic!("FERRY_TEST_METADATA={other}: use postgres or redb"),
    }
}

/// [`metadata_for`] as the environment of a `ferry serve` the tests spawn (`Command::envs`).
pub fn metadata_env(data_dir: &Path) -> Vec<(&'static str, String)> {
    metadata_for(data_dir).map_or_else(Vec::new, |(url, schema)| {
        vec![("FERRY_METADATA", url), ("FERRY_METADATA_SCHEMA", schema)]
    })
}
