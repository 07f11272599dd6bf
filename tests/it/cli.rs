//! The README's quickstart, run with the real `ferry` binary against a real server and clamd.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use integration_tests::{TestClamd, payload};

/// The `ferry` binary of this build (cargo builds every workspace binary for the tests).
pub(crate) fn ferry() -> PathBuf {
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

pub(crate) struct Cli {
    pub(crate) server: String,
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

/// Starts `ferry serve` on a free port; returns the child and the CLI runner.
pub(crate) fn serve(clamd: &TestClamd, dir: &std::path::Path) -> (std::process::Child, Cli) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    serve_on(clamd, dir, port, &[])
}

/// [`serve`] on `port`, with `extra` arguments (e.g. `--config FILE`).
pub(crate) fn serve_on(
    clamd: &TestClamd,
    dir: &std::path::Path,
    port: u16,
    extra: &[&std::ffi::OsStr],
) -> (std::process::Child, Cli) {
    let data_dir = dir.join("data");
    let server = Command::new(ferry())
        .args(["serve", "--dev", "--listen", &format!("127.0.0.1:{port}")])
        .args(extra)
        .arg("--data-dir")
        .arg(&data_dir)
        .arg("--clamd")
        .arg(clamd.address().to_string())
        .envs(integration_tests::pg::metadata_env(&data_dir))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    (server, Cli { server: format!("http://127.0.0.1:{port}"), data_dir })
}

#[test]
fn the_readme_quickstart_works_with_the_cli() {
    let clamd = TestClamd::start();
    let dir = tempfile::tempdir().unwrap();
    let (mut server, cli) = serve(&clamd, dir.path());

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
    let status_of = |id: &str| -> serde_json::Value {
        serde_json::from_str(&cli.run(Some(&sender), &["status", id, "--json"])).unwrap()
    };
    while status_of(&id)["fileTransferStatus"] != "Published" {
        assert!(Instant::now() < deadline, "not published");
        std::thread::sleep(Duration::from_millis(100));
    }
    // For people: aligned lines with a readable size, no Debug dump.
    let human = cli.run(Some(&sender), &["status", &id]);
    assert!(human.contains("status:") && human.contains("Published"), "{human}");
    assert!(human.contains("4.8 MiB (5000000 bytes)"), "{human}");
    assert!(!human.contains("Some(") && !human.contains("Timestamp {"), "{human}");
    let json = status_of(&id);
    assert_eq!(json["fileTransferSize"], 5_000_000);
    assert_eq!(json["recipients"][0]["recipient"], "0192:986252932");
    let out = dir.path().join("example.out");
    cli.run(Some(&recipient), &["download", &id, "-o", out.to_str().unwrap()]);
    assert!(std::fs::read(&out).unwrap() == data);
    cli.run(Some(&recipient), &["confirm", &id]);
    let details = cli.run(Some(&recipient), &["status", &id, "--details"]);
    assert!(details.contains("AllConfirmedDownloaded"), "{details}");
    let table = cli.run(Some(&recipient), &["search", "--resource", "example"]);
    let rows: Vec<&str> = table.lines().collect();
    assert!(rows[0].starts_with("ID") && rows[0].contains("STATUS"), "{table}");
    assert!(rows.len() == 2 && rows[1].starts_with(&id), "{table}");
    assert!(rows[1].contains("example.bin") && rows[1].contains("AllConfirmedDownloaded"));
    let found: serde_json::Value = serde_json::from_str(
        &cli.run(Some(&recipient), &["search", "--resource", "example", "--json"]),
    )
    .unwrap();
    assert_eq!(found[0]["fileTransferId"], id.as_str());

    // Errors: one sentence and a documented exit code.
    let fails = |token: &str, args: &[&str]| {
        let output = Command::new(ferry())
            .args(args)
            .env("FERRY_SERVER", &cli.server)
            .env("FERRY_TOKEN", token)
            .output()
            .unwrap();
        (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
    };
    let (code, stderr) = fails(&recipient, &["status", "00000000-0000-4000-8000-000000000000"]);
    assert_eq!(code, Some(3), "not found: {stderr}");
    assert!(stderr.starts_with("ferry: NotFound") && !stderr.contains("Status {"), "{stderr}");
    assert_eq!(fails("not-a-token", &["status", &id]).0, Some(4), "not allowed");
    assert_eq!(fails(&recipient, &["status"]).0, Some(2), "usage");
    let (code, bash) = {
        let output = Command::new(ferry()).args(["completions", "bash"]).output().unwrap();
        (output.status.code(), String::from_utf8_lossy(&output.stdout).into_owned())
    };
    assert_eq!(code, Some(0));
    assert!(bash.contains("_ferry") && bash.contains("download"), "a bash completion script");

    // On a terminal (a real pseudo-terminal from util-linux's `script`), `send` and `receive`
    // draw progress bars that move: several positions, with a rate and an ETA.
    let on_terminal = |token: &str, args: String| {
        let command = format!("{} {args}", ferry().display());
        let output = Command::new("script")
            .args(["-qec", &command, "/dev/null"])
            .env("FERRY_SERVER", &cli.server)
            .env("FERRY_TOKEN", token)
            .env("TERM", "xterm-256color")
            .output()
            .expect("script (util-linux) runs the CLI under a pseudo-terminal");
        let screen = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(output.status.success(), "{screen}");
        // Drawn positions other than the start (0 B) and the end: the bar moved in between.
        let positions: std::collections::BTreeSet<&str> = screen
            .split("/143.05 MiB")
            .filter_map(|before| before.rsplit(['[', ']', ' ']).nth(1))
            .filter(|p| *p != "0" && *p != "143.05")
            .collect();
        assert!(!positions.is_empty(), "the bar moved through positions in between: {screen:?}");
        assert!(screen.contains("ETA") && screen.contains("MiB/s"), "{screen:?}");
        screen
    };
    let big = dir.path().join("big.bin");
    std::fs::write(&big, payload(78, 150_000_000)).unwrap();
    on_terminal(
        &sender,
        format!("send {} --resource example --to 986252932 --wait", big.display()),
    );
    let inbox = dir.path().join("inbox");
    let screen = on_terminal(
        &recipient,
        format!("receive --resource example --out {} --once", inbox.display()),
    );
    assert!(screen.contains("receiving big.bin"), "the bar names the file: {screen:?}");
    assert!(screen.contains("received 1 new file(s), confirmed 1"), "{screen:?}");

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

#[test]
fn ferry_receive_downloads_confirms_follows_survives_restarts_duplicates_and_cuts() {
    let clamd = TestClamd::start();
    let dir = tempfile::tempdir().unwrap();
    let (mut server, cli) = serve(&clamd, dir.path());
    let owner = cli.run(None, &["token", "--org", "991825827", "--scopes", "altinn:serviceowner"]);
    let sender = cli.run(
        None,
        &["token", "--org", "910753614", "--scopes", "altinn:broker.write", "altinn:broker.read"],
    );
    let recipient =
        cli.run(None, &["token", "--org", "986252932", "--scopes", "altinn:broker.read"]);
    cli.run(Some(&owner), &["serviceowner", "register", "--name", "Owner"]);
    cli.run(
        Some(&owner),
        &["resource", "put", "inbox", "--senders", "910753614", "--recipients", "986252932"],
    );
    let send = |seed: u64, name: &str| {
        let file = dir.path().join(name);
        let data = payload(seed, 300_000 + seed as usize);
        std::fs::write(&file, &data).unwrap();
        let id = cli.run(
            Some(&sender),
            &["send", file.to_str().unwrap(), "--resource", "inbox", "--to", "986252932", "--wait"],
        );
        (id, data)
    };
    let (a, data_a) = send(1, "a.bin");
    let (b, data_b) = send(2, "b.bin");
    let out = dir.path().join("inbox");
    let received = cli.run(
        Some(&recipient),
        &["receive", "--resource", "inbox", "--out", out.to_str().unwrap(), "--once"],
    );
    assert_eq!(received.lines().count(), 2, "{received}");
    assert!(std::fs::read(out.join(format!("{a}-a.bin"))).unwrap() == data_a);
    assert!(std::fs::read(out.join(format!("{b}-b.bin"))).unwrap() == data_b);
    for id in [&a, &b] {
        assert!(cli.run(Some(&sender), &["status", id]).contains("AllConfirmedDownloaded"));
    }
    // Nothing new: a second pass receives nothing.
    assert_eq!(
        cli.run(
            Some(&recipient),
            &["receive", "--resource", "inbox", "--out", out.to_str().unwrap(), "--once"]
        ),
        ""
    );

    // Following: a file sent while the agent runs arrives by itself.
    let follow = |server_url: &str| {
        Command::new(ferry())
            .args(["receive", "--resource", "inbox", "--out", out.to_str().unwrap()])
            .env("FERRY_SERVER", server_url)
            .env("FERRY_TOKEN", &recipient)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut agent = follow(&cli.server);
    std::thread::sleep(Duration::from_millis(500));
    let (c, data_c) = send(3, "c.bin");
    let path_c = out.join(format!("{c}-c.bin"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !path_c.exists() {
        assert!(Instant::now() < deadline, "the agent did not receive the new file");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(std::fs::read(&path_c).unwrap() == data_c);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cli.run(Some(&sender), &["status", &c]).contains("AllConfirmedDownloaded") {
        assert!(Instant::now() < deadline, "the agent did not confirm");
        std::thread::sleep(Duration::from_millis(50));
    }
    agent.kill().unwrap();
    agent.wait().unwrap();
    assert!(out.join(client::receive::CURSOR_FILE).exists());
    // A restarted agent continues from its cursor: no duplicates, no stray files.
    let mut again = follow(&cli.server);
    std::thread::sleep(Duration::from_millis(800));
    again.kill().unwrap();
    again.wait().unwrap();
    let mut files: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files.len(), 4, "{files:?}"); // three files and the cursor
    assert!(files.iter().all(|f| !f.ends_with(".part")), "{files:?}");

    // Duplicate events: rewound to the start, the agent is handed every published event again
    // and ignores them all (no download, no rewrite, no error).
    let mtimes = |names: &[String]| -> Vec<std::time::SystemTime> {
        names.iter().map(|f| std::fs::metadata(out.join(f)).unwrap().modified().unwrap()).collect()
    };
    let received_files: Vec<String> =
        files.iter().filter(|f| !f.starts_with(".ferry")).cloned().collect();
    let before = mtimes(&received_files);
    std::fs::write(out.join(client::receive::CURSOR_FILE), "0").unwrap();
    let mut replaying = follow(&cli.server);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(replaying.try_wait().unwrap().is_none(), "the agent stopped on duplicate events");
    replaying.kill().unwrap();
    replaying.wait().unwrap();
    assert_eq!(mtimes(&received_files), before, "a duplicate event rewrote a file");
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 4);

    // A connection cut mid-download: the agent reconnects, resumes, verifies and confirms.
    let (d, data_d) = send(4, "d.bin");
    let target = cli.server.trim_start_matches("http://").parse().unwrap();
    let proxy = integration_tests::CuttingProxy::start(target, 150_000, 1);
    let through_proxy = Cli { server: format!("http://{}", proxy.addr), data_dir: PathBuf::new() };
    let received = through_proxy.run(
        Some(&recipient),
        &["receive", "--resource", "inbox", "--out", out.to_str().unwrap(), "--once"],
    );
    assert_eq!(proxy.cut.load(std::sync::atomic::Ordering::SeqCst), 1, "nothing was cut");
    assert_eq!(received.lines().count(), 1, "{received}");
    assert!(std::fs::read(out.join(format!("{d}-d.bin"))).unwrap() == data_d);
    assert!(cli.run(Some(&sender), &["status", &d]).contains("AllConfirmedDownloaded"));
    server.kill().unwrap();
    server.wait().unwrap();
}
