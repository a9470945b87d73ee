//! `destroy`: tearing down a VM whose guest touched all its memory (the
//! `perf_touch` guest), with 128 MiB and 1 GiB of RAM: the guest's i8042
//! reset → process reaped (`perf.reset=1`: the guest resets right after
//! its `touch-done` line; timed from that line's first byte, the same way
//! on both VMMs, without the API), `Shutdown` → process exit (podvm's API
//! extension; Firecracker has no such action, so the figure is marked for
//! it), and SIGKILL → exit reaped.

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
        "guest reset -> exit, Shutdown -> exit, SIGKILL -> reaped; guests that touched all their RAM"
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
                    "no Shutdown action in Firecracker's API (its exit path: reset_to_exit_*)",
                ));
            }
            let mut reset_cfg = cfg.clone();
            reset_cfg.extra_args = "perf.reset=1".into();
            let reset_file = ctx.path(vmm, "json");
            reset_cfg.write_config(&reset_file)?;
            let mut vm = Instance::spawn(vmm.no_api_command(&reset_file), None)?;
            let t0 = vm.wait_output("touch-done")?;
            let (status, t1) = vm.wait_exit()?;
            if !status.success() {
                return Err(PerfError::Failed(format!(
                    "exit after the guest's reset: {status}: {}",
                    vm.stderr_tail()
                )));
            }
            out.push(Sample::ms(format!("reset_to_exit_{mib}mib"), t0, t1));
            let _ = std::fs::remove_file(reset_file);
            let mut vm = Instance::spawn(vmm.no_api_command(&file), None)?;
            vm.wait_output("touch-done")?;
            let (t0, t1) = vm.kill()?;
            out.push(Sample::ms(format!("sigkill_to_reaped_{mib}mib"), t0, t1));
            let _ = std::fs::remove_file(file);
        }
        Ok(out)
    }
}
