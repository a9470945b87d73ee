//! `memory`: the VMM's own memory for an idle VM (the `perf_idle` guest,
//! 1 vCPU, 128 MiB, API socket open), from `/proc/PID/smaps_rollup` minus
//! the guest RAM (its mapping found in `/proc/PID/smaps` by its size, its
//! resident pages counted with `/proc/PID/pagemap`): RSS, anonymous
//! memory (`Anonymous`: what the VMM allocated itself), private
//! (`Private_Clean` + `Private_Dirty`) and PSS; and the peak RSS
//! (`VmHWM`, guest pages included).
//!
//! RSS and anonymous memory are the headline figures: they do not depend
//! on other processes. PSS divides the binary's and libraries' pages among
//! every process mapping them, and those pages count as private only while
//! no other process maps them, so both drop when other runs of the same
//! VMM are around (podvm: PSS 2.21 → 0.97 MiB, private 1.93 → 0.39 MiB
//! beside 3 idle podvm processes; RSS and anonymous unchanged); the table
//! and the JSON say whether any were.

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
        "VMM memory without guest RAM (RSS, anonymous, private, PSS), and peak RSS, idle 128 MiB VM"
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
            Sample::new("anon_without_guest_ram", MIB, mib(m.anon_overhead_kib())),
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
