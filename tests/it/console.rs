//! The web console in a real browser: `tests/console/console.test.mjs` (playwright-core driving
//! Debian's headless `chromium`) against a real `ferry serve --dev` and a real clamd, with a
//! real OpenID Connect provider on loopback (`tests/console/oidc-provider.mjs`,
//! node-oidc-provider) configured as `[console.oidc]` for the production sign-in. Node,
//! the test's `node_modules` (`npm ci` in tests/console) and `/usr/bin/chromium` must be there
//! (`scripts/test` installs them): missing, the test fails, it never skips. Screenshots go to
//! `target/console-screenshots/`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use integration_tests::TestClamd;

/// The whole browser suite's bound (the script bounds itself a little below it).
const SUITE_TIMEOUT: Duration = Duration::from_secs(180);

#[test]
fn the_console_works_end_to_end_in_headless_chromium() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned();
    let scripts = root.join("tests/console");
    assert!(
        scripts.join("node_modules/playwright-core").exists(),
        "run `npm ci` in tests/console (scripts/test does)"
    );
    let clamd = TestClamd::start();
    let dir = tempfile::tempdir().unwrap();
    let free = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (port, oidc_port) = (free(), free());
    let ferry_url = format!("http://127.0.0.1:{port}");
    let mut provider = Command::new("node")
        .arg(scripts.join("oidc-provider.mjs"))
        .arg(oidc_port.to_string())
        .arg(&ferry_url)
        .current_dir(&scripts)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("node runs the OpenID Connect provider");
    // It prints "ready" once it listens (after its development-mode warnings); what it prints
    // later is read too, so it never writes into a closed pipe.
    let mut lines =
        std::io::BufRead::lines(std::io::BufReader::new(provider.stdout.take().unwrap()));
    let ready = lines.by_ref().take(20).map_while(Result::ok).any(|line| line.trim() == "ready");
    assert!(ready, "the OpenID Connect provider did not start");
    std::thread::spawn(move || lines.for_each(drop));
    // The provider as production would list it: a trusted issuer (ID tokens verified from its
    // JWKS, audience = the client), exchangeable for a session, and the console's provider.
    let issuer = format!("http://127.0.0.1:{oidc_port}");
    let config = dir.path().join("ferry.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[[auth.issuers]]
issuer = "{issuer}"
jwks_url = "{issuer}/jwks"
audience = "ferry-console"

[auth.exchange]
issuers = ["{issuer}"]

[webhooks]
allow_loopback = true
# One quick retry, so a failing endpoint's delivery becomes a dead letter within the test.
retry_ladder_secs = [0.2]
poll_ms = 50

[console.oidc]
issuer = "{issuer}"
client_id = "ferry-console"
client_secret = "console-test-secret"
scopes = ["openid", "altinn"]
name = "the test provider"
"#
        ),
    )
    .unwrap();
    let (mut server, cli) =
        super::cli::serve_on(&clamd, dir.path(), port, &["--config".as_ref(), config.as_os_str()]);
    let screenshots = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("console-screenshots");
    let started = Instant::now();
    let mut node = Command::new("node")
        .arg(scripts.join("console.test.mjs"))
        .current_dir(&scripts)
        .env("FERRY_URL", &cli.server)
        .env("SCREENSHOTS", &screenshots)
        .env("WORK", dir.path())
        .env("OIDC_PROVIDER", &issuer)
        .stdin(Stdio::null())
        .spawn()
        .expect("node runs the browser tests (apt-get install nodejs)");
    let status = loop {
        if let Some(status) = node.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > SUITE_TIMEOUT {
            let _ = node.kill();
            break node.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = server.kill();
    let _ = server.wait();
    let _ = provider.kill();
    let _ = provider.wait();
    eprintln!("browser suite: {:.1} s", started.elapsed().as_secs_f64());
    assert!(status.success(), "the browser suite failed ({status}); see its output above");
}
