//! The web console in a real browser: `tests/console/console.test.mjs` (playwright-core driving
//! Debian's headless `chromium`) against a real `ferry serve --dev` and a real clamd. Node,
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
    let (mut server, cli) = super::cli::serve(&clamd, dir.path());
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
    eprintln!("browser suite: {:.1} s", started.elapsed().as_secs_f64());
    assert!(status.success(), "the browser suite failed ({status}); see its output above");
}
