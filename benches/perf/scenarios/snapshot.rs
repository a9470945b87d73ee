//! `snapshot`: a Full snapshot of a paused idle VM (32 MiB), and its
//! restore into a fresh process: `PUT /snapshot/create` latency, and
//! `PUT /snapshot/load` with `resume_vm` → running (and exec of the new
//! process → running). A VMM whose `/snapshot/create` answers 400 is
//! marked as not offering snapshots, with its fault message.

use std::time::Instant;

use serde_json::json;

use super::{Ctx, Sample, Scenario};
use crate::vmm::{Instance, VmConfig, Vmm};
use crate::PerfError;

/// The snapshot scenario.
pub struct Snapshot;

impl Scenario for Snapshot {
    fn name(&self) -> &'static str {
        "snapshot"
    }

    fn about(&self) -> &'static str {
        "snapshot create (paused idle 32 MiB VM) and restore-to-running latency"
    }

    fn run(&self, ctx: &Ctx, vmm: &Vmm) -> Result<Vec<Sample>, PerfError> {
        let cfg = VmConfig::new(ctx.guest("perf_idle")?, 32);
        let file = ctx.path(vmm, "json");
        cfg.write_config(&file)?;
        let state = ctx.path(vmm, "vmstate");
        let mem = ctx.path(vmm, "mem");
        let sock = ctx.path(vmm, "sock");
        let mut vm = Instance::spawn(vmm.api_command(&sock, Some(&file)), Some(sock))?;
        vm.wait_output("idle-ready")?;
        let mut conn = vm.conn()?;
        vm.expect(&mut conn, "PATCH", "/vm", r#"{"state": "Paused"}"#, 204)?;
        let body = json!({"snapshot_type": "Full", "snapshot_path": state, "mem_file_path": mem});
        let t0 = Instant::now();
        let reply = conn
            .request("PUT", "/snapshot/create", &body.to_string())
            .map_err(|e| PerfError::io("PUT /snapshot/create".into(), e))?;
        let t1 = Instant::now();
        if reply.status == 400 {
            return Err(PerfError::Unsupported(format!(
                "PUT /snapshot/create answers 400: {}",
                reply.body.trim()
            )));
        }
        if reply.status != 204 {
            return Err(PerfError::Failed(format!(
                "PUT /snapshot/create answered {} {}",
                reply.status, reply.body
            )));
        }
        drop(vm);

        let sock = ctx.path(vmm, "sock");
        let mut vm = Instance::spawn(vmm.api_command(&sock, None), Some(sock))?;
        vm.wait_accepting()?;
        let mut conn = vm.conn()?;
        let body = json!({
            "snapshot_path": state,
            "mem_backend": {"backend_type": "File", "backend_path": mem},
            "resume_vm": true,
        });
        let t2 = Instant::now();
        vm.expect(&mut conn, "PUT", "/snapshot/load", &body.to_string(), 204)?;
        let t3 = Instant::now();
        let info = vm.expect(&mut conn, "GET", "/", "", 200)?;
        if !info.contains("Running") {
            return Err(PerfError::Failed(format!(
                "restored VM is not running: {info}"
            )));
        }
        let spawned = vm.spawned;
        drop(vm);
        for p in [&file, &state, &mem] {
            let _ = std::fs::remove_file(p);
        }
        Ok(vec![
            Sample::ms("create_full", t0, t1),
            Sample::ms("load_to_running", t2, t3),
            Sample::ms("exec_to_restored_running", spawned, t3),
        ])
    }
}
