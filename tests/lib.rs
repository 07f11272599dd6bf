//! Shared test harness: deterministic payloads, fresh storages, private clamd instances and a
//! private PostgreSQL cluster ([`pg`]).
//!
//! Every clamd here is real: the `clamd` binary of the machine, started from the project's own
//! config template and test signature database, on a socket in a temporary directory. Tests
//! that need clamd fail (not skip) when it is missing: `scripts/clamd install` provides it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use scanner::{Clamd, ClamdAddress, ClamdOptions};
use storage::{Storage, StorageOptions};
use tempfile::TempDir;

pub mod pg;

/// Boundary sizes for blob tests: empty, one byte, around the write chunk, and several MiB.
pub const CHUNK: usize = 256 * 1024;
/// See [`CHUNK`].
pub const INTERESTING_SIZES: &[usize] =
    &[0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * 1024 * 1024 + 7, 8 * 1024 * 1024];

/// `len` pseudo-random bytes from `seed` (BLAKE3 in XOF mode: fast and reproducible).
pub fn payload(seed: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    blake3::Hasher::new().update(&seed.to_le_bytes()).finalize_xof().fill(&mut out);
    out
}

/// The EICAR test file, assembled at run time so no source file carries it whole.
pub fn eicar() -> Vec<u8> {
    let head = "X5O!P%@AP[4\\PZX54(P^)7CC)7}$";
    let tail = "EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";
    format!("{head}{tail}").into_bytes()
}

/// Splits `data` into `Bytes` chunks of `size` (the last may be shorter).
pub fn chunks(data: &[u8], size: usize) -> Vec<Bytes> {
    data.chunks(size.max(1)).map(Bytes::copy_from_slice).collect()
}

/// Opens the storage of a server's data directory on the backend the tests run on
/// ([`pg::metadata_for`]: PostgreSQL in the backend matrix, redb otherwise), as the server
/// would: tests that inspect a server's storage after it stopped see what it stored.
pub async fn open_storage(options: StorageOptions) -> Storage {
    match pg::metadata_for(&options.root) {
        Some((url, schema)) => {
            let pg = storage::PgOptions { schema, ..storage::PgOptions::new(url) };
            Storage::open_on_postgres(options, pg).await.expect("open storage on PostgreSQL")
        }
        None => Storage::open(options).await.expect("open storage"),
    }
}

/// A storage in a fresh temporary directory, durable like production.
pub async fn temp_storage() -> (TempDir, Storage) {
    let dir = tempfile::tempdir().expect("temp dir");
    let storage = Storage::open(StorageOptions::new(dir.path())).await.expect("open storage");
    (dir, storage)
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// Limits for a private clamd (clamd's own config syntax: `100M`, `4000M`, …).
#[derive(Debug, Clone)]
pub struct ClamdLimits {
    /// `StreamMaxLength`.
    pub stream_max: &'static str,
    /// `MaxFileSize`.
    pub max_file: &'static str,
    /// `MaxScanSize`.
    pub max_scan: &'static str,
    /// Also listen on TCP (127.0.0.1, a free port) besides the unix socket.
    pub tcp: bool,
}

impl Default for ClamdLimits {
    fn default() -> Self {
        Self { stream_max: "200M", max_file: "200M", max_scan: "200M", tcp: false }
    }
}

impl ClamdLimits {
    /// The project's own clamd configuration (`scripts/clamd`): streams up to clamd's own
    /// 2 GiB − 3 ceiling.
    pub fn project() -> Self {
        Self { stream_max: "4000M", max_file: "4000M", max_scan: "4000M", tcp: false }
    }
}

/// Tests of files past 2 GiB (minutes in a debug build) run only with `FERRY_LARGE_TESTS=1`,
/// which CI sets; without it they say what they skip.
pub fn large_tests_wanted(what: &str) -> bool {
    let wanted = std::env::var_os("FERRY_LARGE_TESTS").is_some();
    if !wanted {
        eprintln!("SKIPPED: set FERRY_LARGE_TESTS=1 to {what}");
    }
    wanted
}

/// A private clamd, killed when dropped.
#[derive(Debug)]
pub struct TestClamd {
    child: Option<Child>,
    dir: TempDir,
    tcp_port: Option<u16>,
}

fn clamd_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("FERRY_CLAMD_BIN") {
        return path.into();
    }
    for candidate in ["/usr/sbin/clamd", "/usr/local/sbin/clamd", "/usr/bin/clamd"] {
        if Path::new(candidate).exists() {
            return candidate.into();
        }
    }
    panic!("clamd is not installed: run `scripts/clamd install` (these tests need a real clamd)");
}

impl TestClamd {
    /// Starts a clamd with default limits and waits until it answers PING.
    pub fn start() -> Self {
        Self::start_with(ClamdLimits::default())
    }

    /// Starts a clamd with `limits`.
    pub fn start_with(limits: ClamdLimits) -> Self {
        let dir = tempfile::Builder::new().prefix("ferry-clamd-").tempdir().expect("temp dir");
        std::fs::create_dir_all(dir.path().join("tmp")).expect("clamd tmp dir");
        let template =
            std::fs::read_to_string(repo_root().join("scanner/clamd/clamd.conf.template"))
                .expect("clamd config template");
        let db = repo_root().join("scanner/clamd/db");
        let config = template
            .replace("@DIR@", &dir.path().display().to_string())
            .replace("@DBDIR@", &db.display().to_string())
            .replace("@STREAM_MAX@", limits.stream_max)
            .replace("@MAX_FILE@", limits.max_file)
            .replace("@MAX_SCAN@", limits.max_scan);
        // A port another clamd (or anything) holds would make clamd fail to start: take one the
        // kernel just handed out.
        let tcp_port = limits.tcp.then(|| {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
            probe.local_addr().expect("local addr").port()
        });
        let config = match tcp_port {
            Some(port) => format!("{config}TCPSocket {port}\nTCPAddr 127.0.0.1\n"),
            None => config,
        };
        let config_path = dir.path().join("clamd.conf");
        std::fs::write(&config_path, config).expect("write clamd config");
        let child = spawn_clamd(&config_path, dir.path());
        let mut clamd = Self { child: Some(child), dir, tcp_port };
        clamd.wait_ready();
        clamd
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let socket = self.dir.path().join("clamd.sock");
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("clamd exited during start-up ({status}):\n{}", self.output());
            }
            if ping_blocking(&socket) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("clamd did not answer PING within 60 s:\n{}", self.output());
    }

    fn output(&self) -> String {
        let read =
            |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!("{}{}", read("clamd.out"), read("clamd.log"))
    }

    /// The socket address.
    pub fn address(&self) -> ClamdAddress {
        ClamdAddress::Unix(self.dir.path().join("clamd.sock"))
    }

    /// The TCP address, if started with `tcp: true`.
    pub fn tcp_address(&self) -> Option<ClamdAddress> {
        self.tcp_port.map(|port| ClamdAddress::Tcp(format!("127.0.0.1:{port}")))
    }

    /// clamd's process id (for the benchmarks' CPU accounting).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("clamd running").id()
    }

    /// A client with default options.
    pub fn client(&self) -> Clamd {
        Clamd::new(ClamdOptions::new(self.address()))
    }

    /// A client with options adjusted by `f`.
    pub fn client_with(&self, f: impl FnOnce(&mut ClamdOptions)) -> Clamd {
        let mut options = ClamdOptions::new(self.address());
        f(&mut options);
        Clamd::new(options)
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("clamd running").id();
        let status = Command::new("kill").arg(signal).arg(pid.to_string()).status().expect("kill");
        assert!(status.success(), "kill {signal} {pid} failed");
    }

    /// Freezes clamd (SIGSTOP): it accepts nothing and answers nothing until resumed.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Thaws a paused clamd (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// Stops clamd for good.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn spawn_clamd(config_path: &Path, dir: &Path) -> Child {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("clamd.out"))
        .expect("clamd output file");
    Command::new(clamd_binary())
        .arg("-c")
        .arg(config_path)
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("dup"))
        .stderr(out)
        .spawn()
        .expect("spawn clamd")
}

impl TestClamd {
    /// Starts a stopped clamd again, on the same socket with the same configuration.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "clamd is running");
        let _ = std::fs::remove_file(self.dir.path().join("clamd.sock"));
        self.child = Some(spawn_clamd(&self.dir.path().join("clamd.conf"), self.dir.path()));
        self.wait_ready();
    }
}

/// PING over a plain blocking socket: start-up runs outside and inside async tests alike.
fn ping_blocking(socket: &Path) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::os::unix::net::UnixStream::connect(socket) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut reply = [0u8; 5];
    stream.write_all(b"zPING\0").is_ok()
        && stream.read_exact(&mut reply).is_ok()
        && &reply == b"PONG\0"
}

impl Drop for TestClamd {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            // A paused clamd must be thawed to die promptly.
            let _ = Command::new("kill").arg("-CONT").arg(child.id().to_string()).status();
        }
        self.stop();
    }
}

/// Lets the scanner read an upload while it is written (the server has the same adapter).
#[derive(Debug)]
pub struct TailSource(pub storage::BlobTail);

impl scanner::ByteSource for TailSource {
    async fn next_chunk(&mut self, max: usize) -> std::io::Result<Option<Bytes>> {
        self.0.next_chunk(max).await
    }
}

/// A Ferry server on loopback in development mode, with its own data directory.
#[derive(Debug)]
pub struct TestServer {
    /// Where it listens.
    pub addr: std::net::SocketAddr,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// The development key it trusts.
    pub dev_key: server::auth::DevKey,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestServer {
    /// Starts a server in `data_dir` on `port` (0: any), scanning with `clamd`. `tweak` may adjust
    /// the configuration.
    pub async fn start_in(
        data_dir: &Path,
        clamd: &ClamdAddress,
        port: u16,
        tweak: impl FnOnce(&mut server::Config),
    ) -> Self {
        let mut config =
            server::Config { data_dir: data_dir.to_path_buf(), dev: true, ..Default::default() };
        config.clamd.address = clamd.to_string();
        config.clamd.retry_max_secs = 1;
        // The database the test clamds load: large files' hash signatures are checked in it.
        config.clamd.database_dir = Some(repo_root().join("scanner/clamd/db"));
        if let Some((url, schema)) = pg::metadata_for(data_dir) {
            config.storage.metadata = url;
            config.storage.metadata_schema = schema;
        }
        tweak(&mut config);
        install_tls_provider();
        let dev_key = server::auth::DevKey::load_or_create(data_dir).expect("dev key");
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server::run(config, listener, async {
            let _ = stopped.await;
        }));
        let mut server = Self {
            addr,
            data_dir: data_dir.to_path_buf(),
            dev_key,
            stop: Some(stop),
            task: Some(task),
        };
        // Ready when it accepts connections; a server that failed to start says why.
        for _ in 0..500 {
            if server.task.as_ref().is_some_and(|t| t.is_finished()) {
                let result = server.task.take().expect("task").await;
                panic!("the server stopped during start-up: {result:?}");
            }
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        server
    }

    /// Stops it gracefully and waits.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let result = tokio::time::timeout(Duration::from_secs(20), task).await;
            assert!(
                matches!(result, Ok(Ok(Ok(())))),
                "the server did not stop cleanly: {result:?}"
            );
        }
    }

    /// `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A development token for `org` (9 digits) with `scopes`.
    pub fn token(&self, org: &str, scopes: &[&str]) -> String {
        let party = storage::model::Party::parse_lenient(org).expect("org number");
        self.dev_key.mint(&party, scopes, 3600)
    }

    /// A client with `token`.
    pub fn client(&self, token: impl Into<String>) -> client::Client {
        client::Client::connect_lazy(&self.url(), token).expect("client")
    }

    /// Files under a directory of the data dir (e.g. "blobs", "tmp").
    pub fn files_in(&self, sub: &str) -> usize {
        fn walk(dir: &Path) -> usize {
            std::fs::read_dir(dir)
                .map(|entries| {
                    entries
                        .map(|e| {
                            let e = e.expect("entry");
                            if e.file_type().expect("type").is_dir() { walk(&e.path()) } else { 1 }
                        })
                        .sum()
                })
                .unwrap_or(0)
        }
        walk(&self.data_dir.join(sub))
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Installs rustls's crypto provider for this process (HTTP clients in the tests share the
/// server's TLS build, which brings no provider of its own).
pub fn install_tls_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A loopback TCP proxy that cuts connections: the first `cuts` connections to carry more than
/// `after` bytes from the target are closed right there, in both directions (a dropped network
/// path mid-transfer, which a real server cannot be asked to produce). Later connections pass
/// untouched. Stops accepting when dropped.
#[derive(Debug)]
pub struct CuttingProxy {
    /// Where clients connect.
    pub addr: std::net::SocketAddr,
    /// Connections cut so far.
    pub cut: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl CuttingProxy {
    /// Proxies to `target`.
    pub fn start(target: std::net::SocketAddr, after: u64, cuts: usize) -> Self {
        use std::io::{Read, Write};
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let cut = std::sync::Arc::new(AtomicUsize::new(0));
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let (cut_count, stopping) = (cut.clone(), stop.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let Ok(upstream) = std::net::TcpStream::connect(target) else { continue };
                let (mut c_read, mut u_write) = (client.try_clone().expect("clone"), upstream);
                let mut u_read = u_write.try_clone().expect("clone");
                let mut c_write = client;
                std::thread::spawn(move || std::io::copy(&mut c_read, &mut u_write));
                let cut_count = cut_count.clone();
                std::thread::spawn(move || {
                    let mut sent = 0u64;
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        let n = match u_read.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        let room = after.saturating_sub(sent);
                        if (n as u64) > room
                            && cut_count
                                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| {
                                    (c < cuts).then_some(c + 1)
                                })
                                .is_ok()
                        {
                            let _ = c_write.write_all(&buf[..room as usize]);
                            break;
                        }
                        if c_write.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        sent += n as u64;
                    }
                    let _ = c_write.shutdown(std::net::Shutdown::Both);
                    let _ = u_read.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        Self { addr, cut, stop }
    }
}

impl Drop for CuttingProxy {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(self.addr); // wakes the accept loop
    }
}

/// Registers `owner`'s organisation as a service owner and configures `resource` so that
/// `senders` may send and `recipients` may receive (9-digit organisation numbers).
pub async fn owner_with_resource(
    owner: &client::Client,
    resource: &str,
    senders: &[&str],
    recipients: &[&str],
) {
    let parties = |orgs: &[&str]| orgs.iter().map(|o| format!("0192:{o}")).collect();
    owner.register_service_owner("Owner").await.expect("register the service owner");
    owner
        .put_resource(client::v1::PutResourceRequest {
            resource_id: resource.into(),
            access: Some(client::v1::AccessRules {
                senders: parties(senders),
                recipients: parties(recipients),
            }),
            ..Default::default()
        })
        .await
        .expect("configure the resource");
}

/// Initializes a transfer on `resource` from `from` to `to` (9-digit organisation numbers).
pub async fn initialize_transfer(
    sender: &client::Client,
    resource: &str,
    from: &str,
    to: &[&str],
) -> Result<String, tonic::Status> {
    sender
        .initialize(client::v1::InitializeFileTransferRequest {
            file_name: "f.bin".into(),
            resource_id: resource.into(),
            senders_file_transfer_reference: "r".into(),
            sender: format!("0192:{from}"),
            recipients: to.iter().map(|o| format!("0192:{o}")).collect(),
            ..Default::default()
        })
        .await
}

/// A real, small filesystem (tmpfs) for "disk full" tests, unmounted when dropped. Mounting
/// needs root (CI runs as root); elsewhere [`SmallFs::mount`] says why and returns `None`.
#[derive(Debug)]
pub struct SmallFs {
    dir: TempDir,
}

impl SmallFs {
    /// Mounts a tmpfs of `mib` MiB on a fresh temporary directory.
    pub fn mount(mib: u64) -> Option<Self> {
        let uid = Command::new("id").arg("-u").output().expect("id -u");
        if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
            eprintln!("SKIPPED: mounting a small filesystem needs root (CI runs as root)");
            return None;
        }
        let dir = tempfile::tempdir().expect("mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(status.success(), "mount -t tmpfs failed: {status}");
        Some(Self { dir })
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills the filesystem with a file of zeros until it is full (or `leave` bytes are left),
    /// and returns that file's path: delete it to free the space again.
    pub fn fill(&self, name: &str, leave: u64) -> PathBuf {
        use std::io::Write as _;
        let path = self.path().join(name);
        let mut file = std::fs::File::create(&path).expect("filler");
        let block = vec![0u8; 64 * 1024];
        loop {
            let free = free_bytes(self.path());
            if free <= leave {
                break;
            }
            let n = (free - leave).min(block.len() as u64) as usize;
            if file.write_all(&block[..n]).is_err() {
                break;
            }
        }
        path
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

/// Free bytes of the filesystem holding `path` (`df`'s "available").
pub fn free_bytes(path: &Path) -> u64 {
    let out = Command::new("df").args(["--output=avail", "-B1"]).arg(path).output().expect("df");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .expect("df prints the available bytes")
}
