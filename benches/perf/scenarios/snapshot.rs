//! `snapshot`: a Full snapshot of a paused idle VM (32 MiB), and its
//! restore into a fresh process: `PUT /snapshot/create` latency, and
//! `PUT /snapshot/load` with `resume_vm` → running (and exec of the new
//! process → running). A VMM whose `/snapshot/create` answers 400 with a
//! fault message saying snapshots are not supported (podvm:
//! `{"fault_message":"snapshots are not supported yet"}`) is marked as not
//! offering snapshots; any other 400 (a bad request: a bug of the suite or
//! of the VMM) fails the scenario.

use std::time::Instant;

use serde_json::json;

use super::{Ctx, Sample, Scenario};
use crate::vmm::{Instance, VmConfig, Vmm};
use crate::PerfError;

/// The fault message of a reply saying that snapshots are not supported:
/// a 400 whose `fault_message` says "not supported" (or "unsupported").
pub fn not_supported(status: u16, body: &str) -> Option<String> {
    if status != 400 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    let msg = v["fault_message"].as_str()?;
    let lower = msg.to_ascii_lowercase();
    (lower.contains("snapshot")
        && (lower.contains("not supported") || lower.contains("unsupported")))
    .then(|| msg.to_string())
}

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
        if let Some(why) = not_supported(reply.status, &reply.body) {
            return Err(PerfError::Unsupported(format!(
                "PUT /snapshot/create answers {}: {why}",
                reply.status
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_not_supported_fault_marks_the_vmm() {
        assert_eq!(
            not_supported(
                400,
                r#"{"fault_message":"snapshots are not supported yet"}"#
            )
            .as_deref(),
            Some("snapshots are not supported yet")
        );
        assert!(not_supported(
            400,
            r#"{"fault_message":"Snapshot operations are unsupported"}"#
        )
        .is_some());
        // Other bad requests are failures, not a missing feature.
        assert_eq!(
            not_supported(
                400,
                r#"{"fault_message":"Cannot create snapshot: the VM is not paused"}"#
            ),
            None
        );
        assert_eq!(
            not_supported(400, r#"{"fault_message":"unknown field `snapshot_typ`"}"#),
            None
        );
        assert_eq!(not_supported(400, "not json"), None);
        assert_eq!(
            not_supported(
                500,
                r#"{"fault_message":"snapshots are not supported yet"}"#
            ),
            None
        );
        assert_eq!(not_supported(204, ""), None);
    }
}
