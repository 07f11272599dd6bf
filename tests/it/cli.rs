//! The README's quickstart, run with the real `ferry` binary against a real server and clamd.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use integration_tests::{TestClamd, payload};

/// The `ferry` binary of this build (cargo builds every workspace binary for the tests).
fn ferry() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let path = dir.join("ferry");
    assert!(
        path.exists(),
        "{} is missing: build the workspace (cargo build -p server)",
        path.display()
    );
    path
}

struct Cli {
    server: String,
    data_dir: PathBuf,
}

impl Cli {
    fn run(&self, token: Option<&str>, args: &[&str]) -> String {
        let mut command = Command::new(ferry());
        command.args(args).env("FERRY_SERVER", &self.server).env("FERRY_DATA_DIR", &self.data_dir);
        if let Some(token) = token {
            command.env("FERRY_TOKEN", token);
        }
        let output = command.output().unwrap();
        assert!(
            output.status.success(),
            "ferry {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap().trim().to_owned()
    }
}

#[test]
fn the_readme_quickstart_works_with_the_cli() {
    let clamd = TestClamd::start();
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut server = Command::new(ferry())
        .args(["serve", "--dev", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(&data_dir)
        .arg("--clamd")
        .arg(clamd.address().to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let cli = Cli { server: format!("http://127.0.0.1:{port}"), data_dir: data_dir.clone() };

    let owner = cli.run(None, &["token", "--org", "991825827", "--scopes", "altinn:serviceowner"]);
    let sender = cli.run(
        None,
        &["token", "--org", "910753614", "--scopes", "altinn:broker.write", "altinn:broker.read"],
    );
    let recipient =
        cli.run(None, &["token", "--org", "986252932", "--scopes", "altinn:broker.read"]);
    cli.run(Some(&owner), &["serviceowner", "register", "--name", "Example owner"]);
    cli.run(
        Some(&owner),
        &[
            "resource",
            "put",
            "example",
            "--ttl",
            "P30D",
            "--senders",
            "910753614",
            "--recipients",
            "986252932",
        ],
    );
    assert!(cli.run(Some(&owner), &["resource", "get", "example"]).contains("0192:986252932"));

    let file = dir.path().join("example.bin");
    let data = payload(77, 5_000_000);
    std::fs::write(&file, &data).unwrap();
    let id = cli.run(
        Some(&sender),
        &["send", file.to_str().unwrap(), "--resource", "example", "--to", "986252932"],
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cli.run(Some(&sender), &["status", &id]).contains("file_transfer_status: Published") {
        assert!(Instant::now() < deadline, "not published");
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = dir.path().join("example.out");
    cli.run(Some(&recipient), &["download", &id, "-o", out.to_str().unwrap()]);
    assert!(std::fs::read(&out).unwrap() == data);
    cli.run(Some(&recipient), &["confirm", &id]);
    let details = cli.run(Some(&recipient), &["status", &id, "--details"]);
    assert!(details.contains("AllConfirmedDownloaded"), "{details}");
    assert_eq!(cli.run(Some(&recipient), &["search", "--resource", "example"]), id);

    // A partial download resumes: keep the first half as the .part file.
    let again = dir.path().join("again.out");
    std::fs::write(client::part_path(&again), &data[..2_500_000]).unwrap();
    cli.run(Some(&recipient), &["download", &id, "-o", again.to_str().unwrap()]);
    assert!(std::fs::read(&again).unwrap() == data);

    // SIGTERM stops the server cleanly.
    let status = Command::new("kill").arg(server.id().to_string()).status().unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = server.try_wait().unwrap() {
            assert!(status.success(), "ferry serve exited with {status}");
            break;
        }
        assert!(Instant::now() < deadline, "ferry serve ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}
