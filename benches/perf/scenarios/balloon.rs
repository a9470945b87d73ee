//! `balloon`: the host memory of an idle pod-VM whose guest touched 512
//! MiB and then reports it free (free page reporting, the `virtio_balloon`
//! guest's `r` command, typed on its console): the VMM's RSS once the
//! guest touched it, the time from the command until the RSS is under 32
//! MiB (the guest sends the report, the VMM frees the range), and the RSS
//! 2 s after the command.

use std::time::{Duration, Instant};

use super::{Ctx, Sample, Scenario, MIB, MS};
use crate::procfs;
use crate::vmm::{Instance, VmConfig, Vmm};
use crate::PerfError;

/// Where an idle pod-VM's memory should be back under.
const GOAL_KIB: u64 = 32 * 1024;
/// How long after the report the memory is looked at.
const WINDOW: Duration = Duration::from_secs(2);

/// The balloon scenario.
pub struct BalloonReport;

impl Scenario for BalloonReport {
    fn name(&self) -> &'static str {
        "balloon"
    }

    fn about(&self) -> &'static str {
        "RSS of a pod-VM that touched 512 MiB, and after its guest reports it free (free page reporting)"
    }

    fn slow(&self) -> bool {
        true
    }

    fn run(&self, ctx: &Ctx, vmm: &Vmm) -> Result<Vec<Sample>, PerfError> {
        let touch: u64 = if ctx.quick { 64 } else { 512 };
        // The guest uses memory from 64 MiB up.
        let mem = touch + 128;
        let mut cfg = VmConfig::new(ctx.guest("virtio_balloon")?, mem);
        cfg.extra_args = format!(
            "balloon.touch={touch} balloon.report_at=0 balloon.report={touch} balloon.ram_end={}",
            mem << 20
        );
        cfg.balloon = Some(serde_json::json!({
            "amount_mib": 0, "deflate_on_oom": false, "free_page_reporting": true
        }));
        let file = ctx.path(vmm, "json");
        cfg.write_config(&file)?;
        let mut vm = Instance::spawn_interactive(vmm.no_api_command(&file), None)?;
        vm.wait_output("balloon-ready")?;
        let rss = |vm: &Instance| {
            procfs::rollup(vm.pid())
                .map(|u| u.rss_kib)
                .map_err(|e| PerfError::io(format!("memory of {}", vm.pid()), e))
        };
        let touched = rss(&vm)?;
        let reported = Instant::now();
        vm.type_input(b"r")?;
        let mut under = None;
        while reported.elapsed() < WINDOW {
            // The time once a read has seen it under, not before the read:
            // reading a big process's RSS takes a while, during which the
            // guest goes on reporting.
            if under.is_none() && rss(&vm)? < GOAL_KIB {
                under = Some(Instant::now());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let after = rss(&vm)?;
        vm.wait_output("balloon-reported")?;
        vm.type_input(b"q")?;
        vm.wait_output("balloon-bye")?;
        vm.wait_exit()?;
        let _ = std::fs::remove_file(file);
        let mib = |kib: u64| kib as f64 / 1024.0;
        let figure = format!("command_to_under_32mib_{touch}mib");
        Ok(vec![
            Sample::new(format!("rss_touched_{touch}mib"), MIB, mib(touched)),
            match under {
                Some(t) => Sample::ms(figure, reported, t),
                None => Sample::unsupported(
                    figure,
                    MS,
                    format!("still {:.1} MiB 2 s after the command", mib(after)),
                ),
            },
            Sample::new(format!("rss_2s_after_command_{touch}mib"), MIB, mib(after)),
        ])
    }
}
