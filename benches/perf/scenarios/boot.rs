//! `boot`: configuration calls + `InstanceStart` → first serial byte of
//! the `hello` guest (1 vCPU, 128 MiB); exec → first serial byte with a
//! config file and no API; and exec → exit of that VM (the guest resets at
//! once), and first serial byte → exit (about the guest's reset → exit: the
//! VMM's own exit path, which `destroy`'s `Shutdown` figure compares with).

use std::time::Instant;

use super::{Ctx, Sample, Scenario};
use crate::vmm::{Instance, VmConfig, Vmm};
use crate::PerfError;

/// The boot scenario.
pub struct Boot;

impl Scenario for Boot {
    fn name(&self) -> &'static str {
        "boot"
    }

    fn about(&self) -> &'static str {
        "API config + InstanceStart -> first serial byte; exec -> first byte / exit with a config file"
    }

    fn run(&self, ctx: &Ctx, vmm: &Vmm) -> Result<Vec<Sample>, PerfError> {
        let cfg = VmConfig::new(ctx.guest("hello")?, 128);
        let mut out = Vec::new();

        let sock = ctx.path(vmm, "sock");
        let mut vm = Instance::spawn(vmm.api_command(&sock, None), Some(sock))?;
        vm.wait_accepting()?;
        let mut conn = vm.conn()?;
        let t0 = Instant::now();
        for (method, path, body) in cfg.api_calls() {
            vm.expect(&mut conn, method, &path, &body, 204)?;
        }
        let t_start = Instant::now();
        vm.expect(
            &mut conn,
            "PUT",
            "/actions",
            r#"{"action_type": "InstanceStart"}"#,
            204,
        )?;
        let t1 = vm.first_output()?;
        out.push(Sample::ms("api_config_and_start_to_first_byte", t0, t1));
        out.push(Sample::ms("instance_start_to_first_byte", t_start, t1));
        drop(vm);

        let file = ctx.path(vmm, "json");
        cfg.write_config(&file)?;
        let mut vm = Instance::spawn(vmm.no_api_command(&file), None)?;
        let t1 = vm.first_output()?;
        out.push(Sample::ms("exec_to_first_byte_config_file", vm.spawned, t1));
        let (status, t2) = vm.wait_exit()?;
        if !status.success() {
            return Err(PerfError::Failed(format!(
                "the hello guest's VMM exited with {status}: {}",
                vm.stderr_tail()
            )));
        }
        out.push(Sample::ms("exec_to_exit_guest_resets", vm.spawned, t2));
        // The hello guest resets right after its one line: this is the
        // VMM's exit path (reset seen → vCPUs stopped → VM closed → exit).
        out.push(Sample::ms("first_byte_to_exit_guest_resets", t1, t2));
        let _ = std::fs::remove_file(file);
        Ok(out)
    }
}
