//! `density`: K pod-VMs started at once (back to back, no API: config
//! files, idle 32 MiB guests): time from the first exec until every guest
//! has printed `idle-ready`, host memory used per VM (the drop of
//! `MemAvailable`, which also counts KVM's kernel memory but moves with
//! everything else on the host; the sum of the processes' private memory,
//! guest pages included: what one more VM costs, the pages all K share
//! not counted; and the sum of their PSS, which also depends on other
//! processes mapping the same files), and
//! the time to SIGKILL them all (every signal sent first) and reap them all.

use std::time::Instant;

use super::{Ctx, Sample, Scenario, MIB};
use crate::procfs;
use crate::vmm::{Instance, VmConfig, Vmm};
use crate::PerfError;

/// Guest RAM of each pod-VM, MiB.
const GUEST_MIB: u64 = 32;

/// The density scenario.
pub struct Density;

impl Scenario for Density {
    fn name(&self) -> &'static str {
        "density"
    }

    fn about(&self) -> &'static str {
        "K idle 32 MiB pod-VMs at once: time until all run, host memory per VM, kill-all time"
    }

    fn slow(&self) -> bool {
        true
    }

    fn run(&self, ctx: &Ctx, vmm: &Vmm) -> Result<Vec<Sample>, PerfError> {
        let cfg = VmConfig::new(ctx.guest("perf_idle")?, GUEST_MIB);
        let file = ctx.path(vmm, "json");
        cfg.write_config(&file)?;
        let mut out = Vec::new();
        let mib = |kib: f64| kib / 1024.0;
        for &k in &ctx.density {
            let before =
                procfs::host_available_kib().map_err(|e| PerfError::io("meminfo".into(), e))?;
            let t0 = Instant::now();
            let mut vms = Vec::with_capacity(k);
            for _ in 0..k {
                vms.push(Instance::spawn(vmm.no_api_command(&file), None)?);
            }
            let mut last = t0;
            for vm in &mut vms {
                last = last.max(vm.wait_output("idle-ready")?);
            }
            out.push(Sample::ms(format!("{k}_vms_all_running"), t0, last));
            let after =
                procfs::host_available_kib().map_err(|e| PerfError::io("meminfo".into(), e))?;
            let (mut pss, mut private) = (0u64, 0u64);
            for vm in &vms {
                let u = procfs::rollup(vm.pid())
                    .map_err(|e| PerfError::io(format!("smaps_rollup of {}", vm.pid()), e))?;
                pss += u.pss_kib;
                private += u.private_kib;
            }
            out.push(Sample::new(
                format!("{k}_vms_host_mem_per_vm"),
                MIB,
                // Signed: on a busy host the page cache moves too, and a
                // negative value says so instead of hiding it.
                mib((before as f64 - after as f64) / k as f64),
            ));
            out.push(Sample::new(
                format!("{k}_vms_private_per_vm"),
                MIB,
                mib(private as f64 / k as f64),
            ));
            out.push(Sample::new(
                format!("{k}_vms_pss_per_vm"),
                MIB,
                mib(pss as f64 / k as f64),
            ));
            // SIGKILL to every VM first, then reap them all: the kernel
            // tears them down in parallel, as a host killing a pod would.
            let t_kill = Instant::now();
            for vm in &mut vms {
                vm.send_kill()?;
            }
            let mut last = t_kill;
            for vm in &mut vms {
                last = vm.reap()?;
            }
            out.push(Sample::ms(format!("{k}_vms_kill_all"), t_kill, last));
        }
        let _ = std::fs::remove_file(file);
        Ok(out)
    }
}
