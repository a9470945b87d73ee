//! `podvm-perf`: the performance suite. Runs scenarios (startup, boot,
//! pause/resume, destroy, memory, density, API, block, net, snapshot)
//! against podvm and, with `--target`, side by side against another VMM
//! that speaks Firecracker's API, alternating the two on every repetition.
//! Prints a table, and optionally writes every sample as JSON and a box
//! plot per scenario as SVG.
//!
//! ```text
//! cargo build --release --bins
//! target/release/podvm-perf --target /path/to/firecracker --json perf.json --plot plots/
//! ```

mod http;
mod netns;
mod procfs;
mod report;
mod results;
mod scenarios;
mod stats;
mod vmm;

use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use serde_json::json;

use results::{ScenarioResult, Side, Status};
use scenarios::Ctx;
use vmm::{Flavor, Vmm};

/// The harness's errors.
#[derive(Debug, thiserror::Error)]
pub enum PerfError {
    /// An operating-system call failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// A VMM or guest did not do what the scenario expects.
    #[error("{0}")]
    Failed(String),
    /// The VMM cannot run this scenario.
    #[error("not supported: {0}")]
    Unsupported(String),
    /// This host cannot run this scenario.
    #[error("skipped: {0}")]
    Skipped(String),
}

impl PerfError {
    /// An I/O error while doing `what`.
    pub fn io(what: String, source: io::Error) -> PerfError {
        PerfError::Io { what, source }
    }
}

/// How the `--target` binary is driven.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum TargetFlavor {
    /// Firecracker's command line (`--api-sock`, `--config-file`, `--no-api`).
    Firecracker,
    /// podvm's (`serve …`): compare two podvm builds.
    Podvm,
}

/// The podvm performance suite: measures podvm, side by side with any
/// Firecracker-API VMM.
#[derive(Parser, Debug)]
#[command(name = "podvm-perf")]
struct Args {
    /// Repetitions of each scenario (a warm-up run comes first and is not
    /// counted).
    #[arg(long, default_value_t = 20)]
    reps: usize,
    /// Repetitions of the slow scenarios (destroy, density), whose single
    /// runs take seconds on emulating hosts.
    #[arg(long, default_value_t = 5)]
    slow_reps: usize,
    /// Run only this scenario (repeatable); `--list` names them.
    #[arg(long = "scenario", value_name = "NAME")]
    scenarios: Vec<String>,
    /// List the scenarios and exit.
    #[arg(long)]
    list: bool,
    /// The podvm binary (default: `podvm` next to this executable).
    #[arg(long, value_name = "PATH")]
    podvm: Option<PathBuf>,
    /// Another VMM to compare with, run alternately with podvm.
    #[arg(long, value_name = "PATH")]
    target: Option<PathBuf>,
    /// How the target is driven.
    #[arg(long, value_enum, default_value_t = TargetFlavor::Firecracker)]
    target_flavor: TargetFlavor,
    /// The test guests (default: the ones built with this harness).
    #[arg(long, value_name = "DIR")]
    guests: Option<PathBuf>,
    /// Pod-VM counts of the density scenario, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "10,50,100,200")]
    density: Vec<usize>,
    /// Small sizes everywhere (smoke tests): the numbers are not comparable.
    #[arg(long)]
    quick: bool,
    /// Write every sample as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Run nothing: read the results of an earlier `--json FILE` and print
    /// (and with --markdown / --plot, write) them again.
    #[arg(long, value_name = "FILE")]
    from_json: Option<PathBuf>,
    /// Write the medians as a Markdown table to FILE.
    #[arg(long, value_name = "FILE")]
    markdown: Option<PathBuf>,
    /// Write one SVG box plot per scenario into DIR.
    #[arg(long, value_name = "DIR")]
    plot: Option<PathBuf>,
}

/// The scratch directory, removed on drop.
struct WorkDir(PathBuf);

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// PIDs of running processes whose executable has the file name of `exe`
/// (any build of the same VMM: other runs skew the numbers too).
fn running(exe: &Path) -> Vec<u32> {
    let Some(name) = exe.file_name() else {
        return Vec::new();
    };
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/exe"))
                .is_ok_and(|p| p.file_name() == Some(name))
        })
        .collect()
}

fn host_json() -> serde_json::Value {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")?
                .split_once(':')
                .map(|(_, v)| v.trim())
        })
        .unwrap_or("?")
        .to_string();
    let cpus = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let mem = procfs::kib_field(&read("/proc/meminfo"), "MemTotal").unwrap_or(0);
    json!({"kernel": read("/proc/sys/kernel/osrelease").trim(), "cpu_model": model,
           "cpus": cpus, "mem_total_kib": mem})
}

/// The 1, 5 and 15 minute load averages.
fn loadavg() -> Vec<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .filter_map(|w| w.parse().ok())
        .collect()
}

fn run_scenario(
    sc: &dyn scenarios::Scenario,
    ctx: &Ctx,
    vmms: &[Vmm],
    reps: usize,
) -> ScenarioResult {
    let mut sides: Vec<Side> = vmms.iter().map(|v| Side::new(v.label)).collect();
    // Checked afresh for every scenario: a VMM left over by another run
    // may come or go between scenarios.
    let others = vmms
        .iter()
        .map(|v| (v.label.to_string(), running(&v.path)))
        .collect();
    // Repetition 0 is the warm-up. The VMMs alternate which goes first, so
    // both see the same machine state on average.
    for rep in 0..=reps {
        let mut order: Vec<usize> = (0..vmms.len()).collect();
        if rep % 2 == 1 {
            order.reverse();
        }
        for i in order {
            if sides[i].status != Status::Ran {
                continue;
            }
            match sc.run(ctx, &vmms[i]) {
                Ok(samples) if rep > 0 => sides[i].record(samples),
                Ok(_) => {}
                Err(PerfError::Unsupported(r)) => sides[i].status = Status::Unsupported(r),
                Err(PerfError::Skipped(r)) => sides[i].status = Status::Skipped(r),
                Err(e) => sides[i].status = Status::Failed(e.to_string()),
            }
        }
        eprint!("\r{}: {rep}/{reps}", sc.name());
    }
    eprintln!();
    ScenarioResult {
        name: sc.name(),
        about: sc.about(),
        reps,
        sides,
        others,
    }
}

/// Writes the `--json` (when `meta` is given: a fresh run), `--markdown`
/// and `--plot` outputs; false if any could not be written.
fn outputs(args: &Args, results: &[ScenarioResult], meta: Option<serde_json::Value>) -> bool {
    let mut ok = true;
    if let (Some(path), Some(meta)) = (&args.json, meta) {
        let doc = report::json(results, meta);
        let text = serde_json::to_string_pretty(&doc).expect("JSON values serialize");
        if let Err(e) = std::fs::write(path, text) {
            eprintln!("error: cannot write {}: {e}", path.display());
            ok = false;
        }
    }
    if let Some(path) = &args.markdown {
        if let Err(e) = std::fs::write(path, report::markdown(results)) {
            eprintln!("error: cannot write {}: {e}", path.display());
            ok = false;
        }
    }
    if let Some(dir) = &args.plot {
        if let Err(e) = report::write_plots(dir, results) {
            eprintln!("error: cannot write plots into {}: {e}", dir.display());
            ok = false;
        }
    }
    ok
}

fn main() -> ExitCode {
    let args = Args::parse();
    let all = scenarios::all();
    if args.list {
        for s in &all {
            println!("{:<10} {}", s.name(), s.about());
        }
        return ExitCode::SUCCESS;
    }
    if let Some(path) = &args.from_json {
        let results = std::fs::read(path)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
            .and_then(|doc| report::from_json(&doc));
        return match results {
            Ok(results) => {
                print!("{}", report::table(&results));
                if outputs(&args, &results, None) {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }
            Err(e) => {
                eprintln!("error: {}: {e}", path.display());
                ExitCode::from(2)
            }
        };
    }
    for name in &args.scenarios {
        if !all.iter().any(|s| s.name() == name) {
            eprintln!("error: unknown scenario {name:?} (see --list)");
            return ExitCode::from(2);
        }
    }
    let podvm = args.podvm.clone().unwrap_or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|p| Some(p.parent()?.join("podvm")))
            .unwrap_or_else(|| "podvm".into())
    });
    if !podvm.exists() {
        eprintln!(
            "error: no podvm binary at {} (build it: cargo build --release --bins, or pass --podvm)",
            podvm.display()
        );
        return ExitCode::from(2);
    }
    let mut vmms = vec![Vmm {
        flavor: Flavor::Podvm,
        path: podvm,
        label: "podvm",
    }];
    if let Some(t) = &args.target {
        if !t.exists() {
            eprintln!("error: no target binary at {}", t.display());
            return ExitCode::from(2);
        }
        vmms.push(Vmm {
            flavor: match args.target_flavor {
                TargetFlavor::Firecracker => Flavor::Firecracker,
                TargetFlavor::Podvm => Flavor::Podvm,
            },
            path: t.clone(),
            label: "target",
        });
    }
    for v in &vmms {
        let pids = running(&v.path);
        if !pids.is_empty() {
            eprintln!(
                "warning: {} {:?} processes already run (pids {pids:?}): they skew the numbers",
                pids.len(),
                v.path.file_name().unwrap_or_default()
            );
        }
    }
    let work = std::env::temp_dir().join(format!("podvm-perf-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&work) {
        eprintln!("error: cannot create {}: {e}", work.display());
        return ExitCode::FAILURE;
    }
    let work = WorkDir(work);
    let ctx = Ctx {
        guests: args
            .guests
            .clone()
            .unwrap_or_else(|| env!("PODVM_TEST_GUESTS").into()),
        work: work.0.clone(),
        quick: args.quick,
        density: args.density.clone(),
    };
    let load_start = loadavg();
    if load_start.first().is_some_and(|l| *l > 0.5) {
        eprintln!(
            "warning: the machine is not idle (load average {load_start:?}): numbers will be noisy"
        );
    }
    let mut results = Vec::new();
    for sc in &all {
        if !args.scenarios.is_empty() && !args.scenarios.iter().any(|n| n == sc.name()) {
            continue;
        }
        let reps = if sc.slow() { args.slow_reps } else { args.reps };
        results.push(run_scenario(sc.as_ref(), &ctx, &vmms, reps.max(1)));
    }
    println!(
        "podvm-perf: {} reps ({} for slow scenarios), load average {:?} at start, {:?} at end",
        args.reps,
        args.slow_reps,
        load_start,
        loadavg()
    );
    print!("{}", report::table(&results));
    let meta = json!({
        "tool": "podvm-perf",
        "command": std::env::args().collect::<Vec<_>>(),
        "unix_time": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        "host": host_json(),
        "loadavg_start": load_start,
        "loadavg_end": loadavg(),
        "reps": args.reps,
        "slow_reps": args.slow_reps,
        "quick": args.quick,
        "vmms": vmms.iter().map(|v| (v.label.to_string(), json!({
            "path": v.path, "flavor": format!("{:?}", v.flavor)}))).collect::<serde_json::Map<_, _>>(),
    });
    let mut ok = outputs(&args, &results, Some(meta));
    let failed = results
        .iter()
        .flat_map(|r| &r.sides)
        .any(|s| matches!(s.status, Status::Failed(_)));
    if failed {
        eprintln!("error: some scenarios failed (see the table)");
        ok = false;
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
