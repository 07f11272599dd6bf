//! `ferry-bench`: Ferry's load generator. It starts a private clamd and, per scenario, a fresh
//! `ferry` server process on loopback, measures the scenarios of issue 6 against ceilings
//! measured in the same run, prints a table and writes JSON.
//!
//! ```text
//! scripts/bench                 # the full suite (release build), about 10 minutes here
//! scripts/bench --quick         # small sizes, one repetition (CI)
//! scripts/bench --only large,small --reps 5
//! scripts/bench --only peer      # the same TUS work against the official tus Node.js server
//! scripts/bench --only instructions  # server instructions per small life cycle (callgrind)
//! ```

mod baseline;
mod ferry;
mod instructions;
mod large;
mod peer;
mod report;
mod rest;
mod segments;
mod small;

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

/// Ferry's benchmark suite (see BENCHMARKS.md).
#[derive(Debug, Parser)]
struct Args {
    /// Small sizes and one repetition: checks the suite works (CI), measures nothing useful.
    #[arg(long)]
    quick: bool,
    /// Repetitions of each measurement (default 3; 1 with --quick).
    #[arg(long)]
    reps: Option<usize>,
    /// Scenarios to run: large (1–4), small (5), sweep (6), memory (7), segments (a file over
    /// clamd's stream limit), peer (the same TUS work against the tus Node.js server),
    /// instructions (server instructions per small life cycle, under callgrind). Default all.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Size of a large file in MiB (default 1024; 16 with --quick).
    #[arg(long)]
    size_mib: Option<u64>,
    /// Size of the segmented file in MiB (default 5120, scanned as segments of clamd's 2 GiB − 3;
    /// 40 with --quick, in segments of 8 MiB).
    #[arg(long)]
    segments_mib: Option<u64>,
    /// Life cycles per client level in the small-transfer scenario (default 2,000; 50 quick).
    #[arg(long)]
    small_transfers: Option<usize>,
    /// Client counts of the small-transfer scenario (default 1,16,64; 1,8 with --quick).
    #[arg(long, value_delimiter = ',')]
    small_clients: Vec<usize>,
    /// Measured life cycles of the instruction count (default 200, after 20 of warm-up; 5 after
    /// 3 with --quick).
    #[arg(long)]
    instruction_cycles: Option<usize>,
    /// Where the JSON report goes.
    #[arg(long, default_value = "target/ferry-bench.json")]
    json: PathBuf,
    /// The `ferry` binary to run (default: the one beside this binary).
    #[arg(long, env = "FERRY_BIN")]
    ferry: Option<PathBuf>,
    /// Scratch directory for data directories and the disk ceiling (default: beside the build,
    /// so on the disk being measured).
    #[arg(long)]
    scratch: Option<PathBuf>,
}

/// What a run measures, resolved from the arguments.
#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) reps: usize,
    pub(crate) size: u64,
    /// The segmented file's size and its segment length.
    pub(crate) segmented: (u64, u64),
    pub(crate) sweep: Vec<u64>,
    /// The sweep's cost per byte is compared from this size up (below it, fixed costs rule).
    pub(crate) sweep_flat_from: u64,
    pub(crate) small_clients: Vec<usize>,
    pub(crate) small_transfers: usize,
    pub(crate) instruction_cycles: Option<usize>,
    pub(crate) ferry: PathBuf,
    pub(crate) scratch: PathBuf,
    pub(crate) clamd: scanner::Clamd,
    pub(crate) clamd_address: String,
    pub(crate) clamd_pid: u32,
}

const MIB: u64 = 1024 * 1024;

/// `1MiB`, `256MiB`, `4GiB`.
/// Resolves on SIGINT or SIGTERM, with the signal's name.
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) =
        (signal(SignalKind::interrupt()), signal(SignalKind::terminate()))
    else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

pub(crate) fn human(bytes: u64) -> String {
    if bytes >= 1024 * MIB && bytes.is_multiple_of(1024 * MIB) {
        format!("{}GiB", bytes / (1024 * MIB))
    } else {
        format!("{}MiB", bytes / MIB)
    }
}

fn machine() -> serde_json::Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|c| {
        c.lines()
            .find(|l| l.starts_with("model name"))
            .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
    });
    let kernel =
        std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|k| k.trim().to_owned()).ok();
    serde_json::json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu": cpu,
        "kernel": kernel,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    integration_tests::install_tls_provider();
    let quick = args.quick;
    let size = args.size_mib.unwrap_or(if quick { 16 } else { 1024 }) * MIB;
    let scratch = match args.scratch {
        Some(dir) => dir,
        None => std::env::current_exe()?
            .parent()
            .and_then(|p| p.parent())
            .context("the binary is not in a target directory")?
            .join("ferry-bench-tmp"),
    };
    std::fs::create_dir_all(&scratch)?;
    // The limits scripts/serve gives clamd (clamd itself stops at 2 GiB − 3 bytes).
    let clamd = integration_tests::TestClamd::start_with(integration_tests::ClamdLimits {
        stream_max: "4000M",
        max_file: "4000M",
        max_scan: "4000M",
        tcp: false,
    });
    let clamd_version = clamd.client().version().await.unwrap_or_default();
    let settings = Settings {
        reps: args.reps.unwrap_or(if quick { 1 } else { 3 }),
        size,
        segmented: match (args.segments_mib, quick) {
            (Some(mib), true) => (mib * MIB, 8 * MIB),
            (Some(mib), false) => (mib * MIB, scanner::CLAMD_MAX_STREAM),
            (None, true) => (40 * MIB, 8 * MIB),
            (None, false) => (5120 * MIB, scanner::CLAMD_MAX_STREAM),
        },
        sweep: if quick {
            vec![MIB, 4 * MIB, 16 * MIB]
        } else {
            vec![MIB, 16 * MIB, 256 * MIB, 1024 * MIB, 4096 * MIB]
        },
        sweep_flat_from: if quick { 4 * MIB } else { 256 * MIB },
        small_clients: match (args.small_clients.is_empty(), quick) {
            (false, _) => args.small_clients.clone(),
            (true, true) => vec![1, 8],
            (true, false) => vec![1, 16, 64],
        },
        small_transfers: args.small_transfers.unwrap_or(if quick { 50 } else { 2000 }),
        instruction_cycles: args.instruction_cycles,
        ferry: ferry::binary(args.ferry)?,
        scratch,
        clamd: clamd.client(),
        clamd_address: clamd.address().to_string(),
        clamd_pid: clamd.pid(),
    };
    let runs = |name: &str| args.only.is_empty() || args.only.iter().any(|o| o == name);
    println!(
        "ferry-bench: large files {}, {} repetition(s), {} cpus, {clamd_version}",
        human(size),
        settings.reps,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );
    let payload = large::Payload::new(size.min(1024 * MIB));
    // The instruction count's top functions, beside the JSON report.
    let profile = args.json.with_extension("callgrind.txt");
    let mut report = report::Report::default();
    let scenarios = async {
        if runs("large") {
            large::run(&settings, &payload, &mut report).await?;
        }
        if runs("small") {
            small::run(&settings, &mut report).await?;
        }
        if runs("sweep") {
            large::sweep(&settings, &payload, &mut report).await?;
        }
        if runs("memory") {
            large::memory(&settings, &payload, &mut report).await?;
        }
        if runs("segments") {
            segments::run(&settings, &payload, &mut report).await?;
        }
        if runs("peer") {
            peer::run(&settings, &payload, &mut report).await?;
        }
        if runs("instructions") {
            instructions::run(&settings, quick, &profile, &mut report).await?;
        }
        anyhow::Ok(())
    };
    // Ctrl-C or a kill must not leave the private clamd and a ferry server running: returning
    // drops the scenario (which stops its servers) and then clamd.
    tokio::select! {
        result = scenarios => result?,
        signal = interrupted() => anyhow::bail!("stopped by {signal}; its clamd and servers are stopped too"),
    }
    report.print();
    let json = report.json(serde_json::json!({
        "quick": quick,
        "reps": settings.reps,
        "large_file_bytes": size,
        "segmented_file_bytes": settings.segmented.0,
        "segment_bytes": settings.segmented.1,
        "sweep_bytes": settings.sweep,
        "small_clients": settings.small_clients,
        "small_transfers_per_level": settings.small_transfers,
        "instruction_cycles": settings.instruction_cycles,
        "clamd": clamd_version,
        "machine": machine(),
        "command": std::env::args().collect::<Vec<_>>().join(" "),
    }));
    if let Some(dir) = args.json.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.json, serde_json::to_string_pretty(&json)?)?;
    println!("\nJSON: {}", args.json.display());
    Ok(())
}
