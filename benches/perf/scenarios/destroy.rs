//! `destroy`: tearing down a VM whose guest touched all its memory (the
//! `perf_touch` guest), with 128 MiB and 1 GiB of RAM, backed by base
//! pages and by 2 MiB huge pages (`huge_pages: "2M"`, figures ending in
//! `_2m`): the guest's i8042 reset → process reaped (`perf.reset=1`: the
//! guest resets right after its `touch-done` line; timed from that line's
//! first byte, the same way on both VMMs, without the API), `Shutdown` →
//! process exit (podvm's API extension; Firecracker has no such action,
//! so the figure is marked for it), and SIGKILL → exit reaped.
//!
//! For `Shutdown` and SIGKILL also the time until the host has the
//! guest's memory back (`…_memory_back_…`), so that a faster exit cannot
//! come from work moved past it: polled after the reap, until the host's
//! available memory has risen by [`BACK_SHARE`] of the guest's size over
//! what it was just before the end was asked for (base pages; the
//! threshold leaves room for what other processes do meanwhile), or
//! until the huge pages are free again (`free_hugepages` back to what it
//! was before the VM started: hugetlb pages never count in
//! `MemAvailable`). Available memory is `MemAvailable` plus the free
//! pages on the per-CPU lists (`count` in `/proc/zoneinfo`): a freed page
//! goes there first, where `MemFree` does not count it (this kernel grows
//! those lists to hundreds of MiB while a big process exits, and drains
//! them over seconds), yet any allocation on that CPU takes it at once.
//!
//! The huge page figures need root: the scenario adds the pages it needs
//! to the pool (`nr_hugepages` of 2 MiB pages) for the run and puts the
//! pool back as it was afterwards.

use std::path::Path;
use std::time::{Duration, Instant};

use super::{Ctx, Sample, Scenario, MS};
use crate::procfs;
use crate::vmm::{Instance, VmConfig, Vmm};
use crate::PerfError;

/// The destroy scenario.
pub struct Destroy;

/// The share of the guest's RAM `MemAvailable` must get back.
const BACK_SHARE: f64 = 0.8;

/// How long the host may take to get the memory back after the reap
/// before the run fails.
const BACK_DEADLINE: Duration = Duration::from_secs(5);

/// The kernel's pool of 2 MiB huge pages.
const HUGEPAGES_2M: &str = "/sys/kernel/mm/hugepages/hugepages-2048kB";

impl Destroy {
    fn sizes(ctx: &Ctx) -> [u64; 2] {
        if ctx.quick {
            [32, 64]
        } else {
            [128, 1024]
        }
    }
}

fn hugepage_count(name: &str) -> std::io::Result<u64> {
    let text = std::fs::read_to_string(Path::new(HUGEPAGES_2M).join(name))?;
    text.trim()
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// 2 MiB huge pages added to the pool for one run, given back on drop.
struct HugePagePool {
    restore: u64,
}

impl HugePagePool {
    /// Adds `pages` free pages to the pool, or says why it cannot.
    fn reserve(pages: u64) -> Result<HugePagePool, String> {
        let restore = hugepage_count("nr_hugepages").map_err(|e| format!("{HUGEPAGES_2M}: {e}"))?;
        let pool = HugePagePool { restore };
        std::fs::write(
            Path::new(HUGEPAGES_2M).join("nr_hugepages"),
            (restore + pages).to_string(),
        )
        .map_err(|e| format!("cannot grow the huge page pool (root?): {e}"))?;
        let free = hugepage_count("free_hugepages").unwrap_or(0);
        if free < pages {
            return Err(format!(
                "the kernel found {free} of the {pages} free 2 MiB huge pages needed"
            ));
        }
        Ok(pool)
    }
}

impl Drop for HugePagePool {
    fn drop(&mut self) {
        let _ = std::fs::write(
            Path::new(HUGEPAGES_2M).join("nr_hugepages"),
            self.restore.to_string(),
        );
    }
}

/// `MemAvailable` plus the pages on the per-CPU free lists, KiB.
fn available_kib() -> Result<u64, PerfError> {
    let available =
        procfs::host_available_kib().map_err(|e| PerfError::io("read /proc/meminfo".into(), e))?;
    let zoneinfo = std::fs::read_to_string("/proc/zoneinfo")
        .map_err(|e| PerfError::io("read /proc/zoneinfo".into(), e))?;
    let pcp_pages: u64 = zoneinfo
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("count:"))
        .filter_map(|v| v.trim().parse::<u64>().ok())
        .sum();
    Ok(available + pcp_pages * 4)
}

/// What "the host has the memory back" means for one VM.
#[derive(Clone, Copy)]
enum Backing {
    /// [`available_kib`] has reached this.
    Available(u64),
    /// `free_hugepages` has reached this.
    HugePages(u64),
}

impl Backing {
    /// The target for a guest of `mib` MiB about to end, read now.
    fn target(huge: bool, mib: u64, free_before_start: u64) -> Result<Backing, PerfError> {
        if huge {
            return Ok(Backing::HugePages(free_before_start));
        }
        let now = available_kib()?;
        Ok(Backing::Available(
            now + (mib as f64 * 1024.0 * BACK_SHARE) as u64,
        ))
    }

    fn reached(self) -> bool {
        match self {
            Backing::Available(kib) => available_kib().is_ok_and(|now| now >= kib),
            Backing::HugePages(n) => hugepage_count("free_hugepages").is_ok_and(|now| now >= n),
        }
    }

    /// Polls until the memory is back; when it was.
    fn wait(self, what: &str) -> Result<Instant, PerfError> {
        let t = Instant::now();
        loop {
            if self.reached() {
                return Ok(Instant::now());
            }
            if t.elapsed() > BACK_DEADLINE {
                let now = match self {
                    Backing::Available(_) => {
                        format!("available {:?} KiB", available_kib().ok())
                    }
                    Backing::HugePages(_) => {
                        format!("free_hugepages {:?}", hugepage_count("free_hugepages").ok())
                    }
                };
                return Err(PerfError::Failed(format!(
                    "{what}: the host did not get the guest's memory back within {} s after the reap ({now})",
                    BACK_DEADLINE.as_secs()
                )));
            }
            std::thread::sleep(Duration::from_micros(50));
        }
    }
}

/// The three ends of one guest size and backing.
fn one_size(
    ctx: &Ctx,
    vmm: &Vmm,
    mib: u64,
    huge: bool,
    out: &mut Vec<Sample>,
) -> Result<(), PerfError> {
    let suffix = if huge { "mib_2m" } else { "mib" };
    let cfg = VmConfig::new(ctx.guest("perf_touch")?, mib);
    let write = |cfg: &VmConfig| -> Result<std::path::PathBuf, PerfError> {
        let mut json = cfg.config_file();
        if huge {
            json["machine-config"]["huge_pages"] = "2M".into();
        }
        let file = ctx.path(vmm, "json");
        std::fs::write(&file, json.to_string())
            .map_err(|e| PerfError::io(format!("write {}", file.display()), e))?;
        Ok(file)
    };
    let free_hugepages = || {
        if huge {
            hugepage_count("free_hugepages")
                .map_err(|e| PerfError::io(format!("read {HUGEPAGES_2M}"), e))
        } else {
            Ok(0)
        }
    };
    let file = write(&cfg)?;

    let figure = format!("shutdown_to_exit_{mib}{suffix}");
    let back_figure = format!("shutdown_to_memory_back_{mib}{suffix}");
    if vmm.has_shutdown_action() {
        let free = free_hugepages()?;
        let sock = ctx.path(vmm, "sock");
        let mut vm = Instance::spawn(vmm.api_command(&sock, Some(&file)), Some(sock))?;
        vm.wait_output("touch-done")?;
        let mut conn = vm.conn()?;
        let back = Backing::target(huge, mib, free)?;
        let t0 = Instant::now();
        vm.expect(
            &mut conn,
            "PUT",
            "/actions",
            r#"{"action_type": "Shutdown"}"#,
            204,
        )?;
        let (_, t1) = vm.wait_exit()?;
        let t2 = back.wait(&figure)?;
        out.push(Sample::ms(figure, t0, t1));
        out.push(Sample::ms(back_figure, t0, t2));
    } else {
        let why = "no Shutdown action in Firecracker's API (its exit path: reset_to_exit_*)";
        out.push(Sample::unsupported(figure, MS, why));
        out.push(Sample::unsupported(back_figure, MS, why));
    }

    let mut reset_cfg = cfg.clone();
    reset_cfg.extra_args = "perf.reset=1".into();
    let reset_file = write(&reset_cfg)?;
    let mut vm = Instance::spawn(vmm.no_api_command(&reset_file), None)?;
    let t0 = vm.wait_output("touch-done")?;
    let (status, t1) = vm.wait_exit()?;
    if !status.success() {
        return Err(PerfError::Failed(format!(
            "exit after the guest's reset: {status}: {}",
            vm.stderr_tail()
        )));
    }
    out.push(Sample::ms(format!("reset_to_exit_{mib}{suffix}"), t0, t1));
    let _ = std::fs::remove_file(reset_file);

    let free = free_hugepages()?;
    let mut vm = Instance::spawn(vmm.no_api_command(&file), None)?;
    vm.wait_output("touch-done")?;
    let back = Backing::target(huge, mib, free)?;
    let figure = format!("sigkill_to_reaped_{mib}{suffix}");
    let (t0, t1) = vm.kill()?;
    let t2 = back.wait(&figure)?;
    out.push(Sample::ms(figure, t0, t1));
    out.push(Sample::ms(
        format!("sigkill_to_memory_back_{mib}{suffix}"),
        t0,
        t2,
    ));
    let _ = std::fs::remove_file(file);
    Ok(())
}

impl Scenario for Destroy {
    fn name(&self) -> &'static str {
        "destroy"
    }

    fn about(&self) -> &'static str {
        "guest reset -> exit, Shutdown -> exit, SIGKILL -> reaped, and -> host memory back; guests that touched all their RAM, base and 2 MiB pages"
    }

    fn slow(&self) -> bool {
        true
    }

    fn run(&self, ctx: &Ctx, vmm: &Vmm) -> Result<Vec<Sample>, PerfError> {
        let mut out = Vec::new();
        let sizes = Destroy::sizes(ctx);
        for mib in sizes {
            one_size(ctx, vmm, mib, false, &mut out)?;
        }
        // One VM at a time: the largest one's pages, and a few for the
        // boot tables' rounding.
        let pages = sizes[1] / 2 + 4;
        match HugePagePool::reserve(pages) {
            Ok(_pool) => {
                for mib in sizes {
                    one_size(ctx, vmm, mib, true, &mut out)?;
                }
            }
            Err(why) => {
                for mib in sizes {
                    for figure in [
                        "shutdown_to_exit",
                        "shutdown_to_memory_back",
                        "reset_to_exit",
                        "sigkill_to_reaped",
                        "sigkill_to_memory_back",
                    ] {
                        out.push(Sample::unsupported(
                            format!("{figure}_{mib}mib_2m"),
                            MS,
                            format!("no huge pages on this host: {why}"),
                        ));
                    }
                }
            }
        }
        Ok(out)
    }
}
