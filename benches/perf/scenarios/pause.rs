//! `pause` / `resume`: `PATCH /vm` round trips on one keep-alive
//! connection while the `perf_spin` guest keeps every vCPU busy (1 and 4
//! vCPUs): the boot vCPU prints ticks, the others spin in a loop.

use std::time::Instant;

use super::{Ctx, Sample, Scenario, US};
use crate::vmm::{Instance, VmConfig, Vmm};
use crate::PerfError;

/// Pause/resume pairs per repetition (each waits for the guest to print
/// again after resuming).
const PAIRS: usize = 5;

/// The pause/resume scenario.
pub struct Pause;

impl Scenario for Pause {
    fn name(&self) -> &'static str {
        "pause"
    }

    fn about(&self) -> &'static str {
        "PATCH /vm Paused / Resumed round trips, 1 and 4 busy vCPUs (5 pairs per repetition)"
    }

    fn run(&self, ctx: &Ctx, vmm: &Vmm) -> Result<Vec<Sample>, PerfError> {
        let mut out = Vec::new();
        for vcpus in [1u8, 4] {
            let mut cfg = VmConfig::new(ctx.guest("perf_spin")?, 128);
            cfg.vcpus = vcpus;
            cfg.extra_args = format!("perf.cpus={vcpus}");
            let file = ctx.path(vmm, "json");
            cfg.write_config(&file)?;
            let sock = ctx.path(vmm, "sock");
            let mut vm = Instance::spawn(vmm.api_command(&sock, Some(&file)), Some(sock))?;
            vm.wait_output(&format!("spin-ready: {vcpus}\n"))?;
            vm.wait_output("tick 1\n")?;
            let mut conn = vm.conn()?;
            for i in 0..PAIRS {
                let t0 = Instant::now();
                vm.expect(&mut conn, "PATCH", "/vm", r#"{"state": "Paused"}"#, 204)?;
                let t1 = Instant::now();
                vm.expect(&mut conn, "PATCH", "/vm", r#"{"state": "Resumed"}"#, 204)?;
                let t2 = Instant::now();
                out.push(Sample::time(format!("pause_{vcpus}vcpu"), US, t1 - t0));
                out.push(Sample::time(format!("resume_{vcpus}vcpu"), US, t2 - t1));
                // The guest runs again before the next pair.
                vm.wait_output(&format!("tick {}\n", i + 2))?;
            }
            drop(vm);
            let _ = std::fs::remove_file(file);
        }
        Ok(out)
    }
}
