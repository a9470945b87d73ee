//! `memory`: the VMM's own memory for an idle VM (the `perf_idle` guest,
//! 1 vCPU, 128 MiB, API socket open): RSS, private (`Private_Clean` +
//! `Private_Dirty`) and PSS of the whole process from
//! `/proc/PID/smaps_rollup` minus those of the guest RAM mapping
//! (found in `/proc/PID/smaps` by its size, its resident pages counted
//! with `/proc/PID/pagemap`), and the peak RSS (`VmHWM`,
//! guest pages included). RSS and private are the headline figures: PSS
//! divides the binary's and libraries' pages among every process mapping
//! them, so it drops when other runs of the same VMM are around (podvm:
//! 2.08 MiB alone, 0.91 MiB beside 3 idle podvm processes); the table
//! says whether any were.

use super::{Ctx, Sample, Scenario, MIB};
use crate::procfs;
use crate::vmm::{Instance, VmConfig, Vmm};
use crate::PerfError;

/// Guest RAM of the idle VM, MiB.
const GUEST_MIB: u64 = 128;

/// The memory scenario.
pub struct Memory;

impl Scenario for Memory {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn about(&self) -> &'static str {
        "VMM memory without guest RAM (RSS, private, PSS), and peak RSS, idle 128 MiB VM"
    }

    fn run(&self, ctx: &Ctx, vmm: &Vmm) -> Result<Vec<Sample>, PerfError> {
        let cfg = VmConfig::new(ctx.guest("perf_idle")?, GUEST_MIB);
        let file = ctx.path(vmm, "json");
        cfg.write_config(&file)?;
        let sock = ctx.path(vmm, "sock");
        let mut vm = Instance::spawn(vmm.api_command(&sock, Some(&file)), Some(sock))?;
        vm.wait_output("idle-ready")?;
        let m = procfs::vmm_memory(vm.pid(), GUEST_MIB)
            .map_err(|e| PerfError::io(format!("memory of {}", vm.pid()), e))?;
        let mib = |kib: u64| kib as f64 / 1024.0;
        let _ = std::fs::remove_file(file);
        Ok(vec![
            Sample::new("rss_without_guest_ram", MIB, mib(m.rss_overhead_kib())),
            Sample::new(
                "private_without_guest_ram",
                MIB,
                mib(m.private_overhead_kib()),
            ),
            Sample::new("pss_without_guest_ram", MIB, mib(m.pss_overhead_kib())),
            Sample::new("peak_rss_whole_process", MIB, mib(m.peak_rss_kib)),
            Sample::new("guest_ram_resident", MIB, mib(m.guest.rss_kib)),
        ])
    }
}
