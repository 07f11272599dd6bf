//! Scenario "instructions" (issue 15): the server's instructions per small life cycle, a figure
//! that stays put on a noisy machine (valgrind counts instructions, not time; perf's
//! `instructions` event is `<not supported>` on this VM).
//!
//! `ferry serve` runs under `valgrind --tool=callgrind`; clamd runs outside it (its work is not
//! Ferry's cost). One client runs the small scenario's life cycle (initialize, upload 4 KiB,
//! wait for `Published` on the Watch stream, download, confirm) back to back: a warm-up first,
//! then `callgrind_control --zero`, the measured life cycles, and `callgrind_control --dump`.
//! So the count excludes start-up and warm-up: it is the measured window's total Ir divided by
//! the number of life cycles. One client, because concurrency changes how many calls share an
//! index commit, and the count should move only when the code does. The window also holds what
//! the server does while idle (timers, the webhook dispatcher's pacing): measured apart, over a
//! pause as long as the window, and reported beside it.
//!
//! The top functions by inclusive and by self Ir (`callgrind_annotate`) go to a text file next
//! to the JSON report.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};

use crate::Settings;
use crate::ferry::{FerryProcess, RECIPIENT, SENDER};
use crate::report::Report;
use crate::small::{self, Published};

/// Functions listed per ranking in the profile file.
const TOP: usize = 15;

/// Whether `program` can be started (callgrind_annotate's `--version` exits with 255).
fn found(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Life cycles: (warm-up, measured).
fn cycles(settings: &Settings, quick: bool) -> (usize, usize) {
    match (settings.instruction_cycles, quick) {
        (Some(n), _) => (n.div_ceil(5).max(2), n),
        (None, true) => (3, 5),
        (None, false) => (20, 200),
    }
}

/// Runs the scenario `settings.reps` times (each with a fresh server under callgrind); the
/// profile of the last repetition is written to `profile`.
pub(crate) async fn run(
    settings: &Settings,
    quick: bool,
    profile: &Path,
    report: &mut Report,
) -> anyhow::Result<()> {
    if !found("valgrind") || !found("callgrind_control") || !found("callgrind_annotate") {
        eprintln!(
            "instructions: SKIPPED, valgrind is not installed (apt-get install valgrind); \
             perf's instructions event is not supported on this VM"
        );
        return Ok(());
    }
    let (warm_up, measured) = cycles(settings, quick);
    let (mut per_cycle, mut idle_per_cycle, mut window_s) = (Vec::new(), Vec::new(), Vec::new());
    let mut last_dump = None;
    let out = tempfile::tempdir_in(&settings.scratch).context("callgrind directory")?;
    for rep in 0..settings.reps {
        eprintln!(
            "instructions: repetition {} of {}, {warm_up} + {measured} life cycles under callgrind",
            rep + 1,
            settings.reps
        );
        let dir = out.path().join(format!("rep{rep}"));
        std::fs::create_dir_all(&dir)?;
        let wrapper = vec![
            "valgrind".to_owned(),
            "--tool=callgrind".to_owned(),
            format!("--callgrind-out-file={}/callgrind.out", dir.display()),
            "--vgdb=yes".to_owned(),
            "--quiet".to_owned(),
        ];
        let server = FerryProcess::start_wrapped(
            &settings.ferry,
            &settings.scratch,
            &settings.clamd_address,
            &wrapper,
            Duration::from_secs(600),
        )
        .await?;
        let pid = server.pid();
        let published = Arc::new(Mutex::new(Published::default()));
        let follower = tokio::spawn(small::follow(server.client(SENDER), published.clone()));
        let (sender, recipient) = (server.client(SENDER), server.client(RECIPIENT));
        let life_cycles = |from: usize, n: usize| {
            let (sender, recipient, published) = (&sender, &recipient, published.clone());
            async move {
                for i in from..from + n {
                    let seed = 0x6972_0000 ^ i as u64;
                    let data = benches::payload_chunks(seed, small::SIZE, small::SIZE).remove(0);
                    small::life_cycle(sender, recipient, &published, data).await;
                }
            }
        };
        life_cycles(0, warm_up).await;
        callgrind_control(&["--zero"], pid)?;
        let started = Instant::now();
        life_cycles(warm_up, measured).await;
        let seconds = started.elapsed().as_secs_f64();
        let window = dump(&dir, pid, "measured")?;
        // The same span of time with nothing to do: what the window holds that is not the
        // life cycles' work.
        callgrind_control(&["--zero"], pid)?;
        tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
        let idle = dump(&dir, pid, "idle")?;
        follower.abort();
        drop(server);
        let (total, idle_total) = (total_ir(&window)?, total_ir(&idle)?);
        eprintln!(
            "instructions: {total} Ir in {measured} life cycles ({seconds:.1} s), {} per cycle; \
             idle over as long: {idle_total} Ir",
            total / measured as u64
        );
        per_cycle.push(total as f64 / measured as f64);
        idle_per_cycle.push(idle_total as f64 / measured as f64);
        window_s.push(seconds);
        last_dump = Some(window);
    }
    report.add("instructions.server_ir_per_life_cycle", "Ir", per_cycle, None);
    report.add("instructions.idle_ir_per_life_cycle", "Ir", idle_per_cycle, None);
    report.add("instructions.window_under_callgrind", "s", window_s, None);
    if let Some(dump) = last_dump {
        if let Some(dir) = profile.parent() {
            std::fs::create_dir_all(dir)?;
        }
        // The whole dump too, for `callgrind_annotate` or KCachegrind.
        let kept = profile.with_extension("out");
        std::fs::copy(&dump, &kept)?;
        std::fs::write(profile, annotate(&kept, measured)?)?;
        eprintln!(
            "instructions: top functions in {}, the whole dump in {}",
            profile.display(),
            kept.display()
        );
    }
    Ok(())
}

fn callgrind_control(args: &[&str], pid: u32) -> anyhow::Result<()> {
    let output = Command::new("callgrind_control")
        .args(args)
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .output()
        .context("callgrind_control")?;
    ensure!(
        output.status.success(),
        "callgrind_control {args:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

/// Asks callgrind for a dump of the counts since the last zero; the new dump file.
fn dump(dir: &Path, pid: u32, hint: &str) -> anyhow::Result<PathBuf> {
    let before = dumps(dir)?;
    callgrind_control(&[&format!("--dump={hint}")], pid)?;
    // callgrind_control returns once the request is taken; the file follows.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let new: Vec<_> = dumps(dir)?.into_iter().filter(|p| !before.contains(p)).collect();
        if let [file] = new.as_slice() {
            // Written whole once its totals line is there.
            if total_ir(file).is_ok() {
                return Ok(file.clone());
            }
        }
        ensure!(Instant::now() < deadline, "no callgrind dump in {} after 120 s", dir.display());
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn dumps(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    Ok(std::fs::read_dir(dir)?.filter_map(|e| e.ok().map(|e| e.path())).collect())
}

/// The dump's total Ir (its `totals:` line, or `summary:`).
fn total_ir(file: &Path) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(file)?;
    let line = text
        .lines()
        .find(|l| l.starts_with("totals:"))
        .or_else(|| text.lines().find(|l| l.starts_with("summary:")))
        .context("no totals line yet")?;
    Ok(line.split_whitespace().nth(1).context("totals value")?.parse()?)
}

/// The top functions by inclusive Ir (`callgrind_annotate`'s own lines) and by self Ir (read
/// from the dump here: callgrind_annotate 3.19's `--inclusive=no` lists a dump taken with
/// `callgrind_control --dump` by inclusive cost all the same, every thread's root at 100 %).
fn annotate(dump: &Path, cycles: usize) -> anyhow::Result<String> {
    let total = total_ir(dump)?;
    let mut text = format!(
        "ferry serve under callgrind: {cycles} small life cycles (one client, 4 KiB, scanned),\n\
         after a warm-up; {total} Ir in the window, {} Ir per life cycle.\n\
         (callgrind_annotate --inclusive=yes on {})\n",
        total / cycles as u64,
        dump.display()
    );
    let output = Command::new("callgrind_annotate")
        .args(["--inclusive=yes", "--auto=no"])
        .arg(dump)
        .output()
        .context("callgrind_annotate")?;
    ensure!(output.status.success(), "callgrind_annotate failed ({})", output.status);
    // Threads' roots (clone, start_thread, …) hold the whole total: they say nothing.
    let lines: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .skip_while(|l| !l.contains("file:function"))
        .skip(2)
        .filter(|l| !l.trim().is_empty() && !l.contains("(100.0%)"))
        .take(TOP)
        .map(readable)
        .collect();
    text.push_str(&format!("\nTop {TOP} by inclusive Ir\n{}\n", lines.join("\n")));
    text.push_str(&format!("\nTop {TOP} by self Ir\n"));
    for (ir, name) in self_costs(&std::fs::read_to_string(dump)?).into_iter().take(TOP) {
        let share = 100.0 * ir as f64 / total.max(1) as f64;
        text.push_str(&format!("{ir:>14} ({share:>5.2}%)  {name}\n"));
    }
    Ok(text)
}

/// An annotate line without the crate registry's and the toolchain's path prefixes and the
/// object file in brackets.
fn readable(line: &str) -> String {
    let line = line.rsplit_once(" [").map_or(line, |(l, _)| l);
    let mut out = line.to_owned();
    for marker in ["/index.crates.io-", "/rustc/"] {
        while let Some(start) = out.find(marker) {
            let from = out[..start].rfind(' ').map_or(0, |i| i + 1);
            let rest = &out[start + marker.len()..];
            let end = rest.find('/').map_or(rest.len(), |i| i + 1);
            out.replace_range(from..start + marker.len() + end, "");
        }
    }
    out
}

/// Self Ir per function name in a callgrind dump, largest first. The format: `fn=(id) name`
/// (or `fn=(id)` once named) opens a function, `cfn=` names a callee in the same id space,
/// cost lines are `<position> <Ir>`, and the cost line right after a `calls=` line is the
/// call's inclusive cost, not the caller's own.
fn self_costs(dump: &str) -> Vec<(u64, String)> {
    use std::collections::HashMap;
    let mut names: HashMap<String, String> = HashMap::new();
    let mut name_of = |spec: &str| -> String {
        let spec = spec.trim();
        match spec.strip_prefix('(').and_then(|s| s.split_once(')')) {
            Some((id, rest)) if !rest.trim().is_empty() => {
                names.insert(id.to_owned(), rest.trim().to_owned());
                rest.trim().to_owned()
            }
            Some((id, _)) => names.get(id).cloned().unwrap_or_else(|| format!("({id})")),
            None => spec.to_owned(),
        }
    };
    let mut costs: HashMap<String, u64> = HashMap::new();
    let (mut current, mut after_call) = (None::<String>, false);
    for line in dump.lines() {
        if let Some(spec) = line.strip_prefix("fn=") {
            current = Some(name_of(spec));
        } else if let Some(spec) = line.strip_prefix("cfn=") {
            name_of(spec);
        } else if line.starts_with("calls=") {
            after_call = true;
        } else if line.starts_with(|c: char| c.is_ascii_digit() || "+-*".contains(c)) {
            if std::mem::take(&mut after_call) {
                continue;
            }
            let ir = line.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok());
            if let (Some(f), Some(ir)) = (&current, ir) {
                *costs.entry(f.clone()).or_default() += ir;
            }
        }
    }
    let mut out: Vec<(u64, String)> = costs.into_iter().map(|(f, ir)| (ir, f)).collect();
    out.sort_unstable_by(|a, b| b.cmp(a));
    out
}
