//! `destroy`: tearing down a VM whose guest touched all its memory (the
//! `perf_touch` guest), with 128 MiB and 1 GiB of RAM: `Shutdown` →
//! process exit (podvm's API extension; Firecracker has no such action,
//! so the figure is marked for it), and SIGKILL → exit reaped.

use std::time::Instant;

use super::{Ctx, Sample, Scenario, MS};
use crate::vmm::{Instance, VmConfig, Vmm};
use crate::PerfError;

/// The destroy scenario.
pub struct Destroy;

impl Destroy {
    fn sizes(ctx: &Ctx) -> [u64; 2] {
        if ctx.quick {
            [32, 64]
        } else {
            [128, 1024]
        }
    }
}

impl Scenario for Destroy {
    fn name(&self) -> &'static str {
        "destroy"
    }

    fn about(&self) -> &'static str {
        "Shutdown -> process exit, SIGKILL -> exit reaped; guests that touched all their RAM"
    }

    fn slow(&self) -> bool {
        true
    }

    fn run(&self, ctx: &Ctx, vmm: &Vmm) -> Result<Vec<Sample>, PerfError> {
        let mut out = Vec::new();
        for mib in Destroy::sizes(ctx) {
            let cfg = VmConfig::new(ctx.guest("perf_touch")?, mib);
            let file = ctx.path(vmm, "json");
            cfg.write_config(&file)?;
            let figure = format!("shutdown_to_exit_{mib}mib");
            if vmm.has_shutdown_action() {
                let sock = ctx.path(vmm, "sock");
                let mut vm = Instance::spawn(vmm.api_command(&sock, Some(&file)), Some(sock))?;
                vm.wait_output("touch-done")?;
                let mut conn = vm.conn()?;
                let t0 = Instant::now();
                vm.expect(
                    &mut conn,
                    "PUT",
                    "/actions",
                    r#"{"action_type": "Shutdown"}"#,
                    204,
                )?;
                let (_, t1) = vm.wait_exit()?;
                out.push(Sample::ms(figure, t0, t1));
            } else {
                out.push(Sample::unsupported(
                    figure,
                    MS,
                    "no Shutdown action in Firecracker's API (its exit path: boot/first_byte_to_exit_guest_resets)",
                ));
            }
            let mut vm = Instance::spawn(vmm.no_api_command(&file), None)?;
            vm.wait_output("touch-done")?;
            let (t0, t1) = vm.kill()?;
            out.push(Sample::ms(format!("sigkill_to_reaped_{mib}mib"), t0, t1));
            let _ = std::fs::remove_file(file);
        }
        Ok(out)
    }
}
