//! `snapshot`: Full snapshots of paused idle VMs (128 MiB and 1 GiB:
//! `PUT /snapshot/create` latency and the memory file's allocated size),
//! the restore of the 128 MiB one into a fresh process (`PUT
//! /snapshot/load` with `resume_vm` → running, and exec of the new process
//! → running), the host memory an idle clone costs (`Anonymous` of the
//! restored process: VMM heap plus the guest pages it copied), and a
//! restored guest that touches all its memory at once (64 MiB `perf_touch`
//! saved in its `perf.delay` wait, before it touched anything; what is left
//! of the wait runs in every restore alike): load → all touched, plain and — on
//! podvm, with its working-set prefetch (`"prefetch": true`, the load
//! after the one that recorded the set) — prefetched.
//!
//! A VMM whose `/snapshot/create` answers 400 with a fault message saying
//! snapshots are not supported is marked as not offering snapshots; any
//! other 400 (a bad request: a bug of the suite or of the VMM) fails the
//! scenario.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Instant;

use serde_json::json;

use super::{Ctx, Sample, Scenario, MIB, MS};
use crate::procfs;
use crate::vmm::{Flavor, Instance, VmConfig, Vmm};
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

/// Boots `cfg`, waits for `ready`, pauses and snapshots it into
/// `state`/`mem`; returns how long `PUT /snapshot/create` took. The VM is
/// gone afterwards.
fn boot_and_save(
    ctx: &Ctx,
    vmm: &Vmm,
    cfg: &VmConfig,
    ready: &str,
    state: &Path,
    mem: &Path,
) -> Result<f64, PerfError> {
    let file = ctx.path(vmm, "json");
    cfg.write_config(&file)?;
    let sock = ctx.path(vmm, "sock");
    let mut vm = Instance::spawn(vmm.api_command(&sock, Some(&file)), Some(sock))?;
    vm.wait_output(ready)?;
    let mut conn = vm.conn()?;
    vm.expect(&mut conn, "PATCH", "/vm", r#"{"state": "Paused"}"#, 204)?;
    let body = json!({"snapshot_type": "Full", "snapshot_path": state, "mem_file_path": mem});
    let t0 = Instant::now();
    let reply = conn
        .request("PUT", "/snapshot/create", &body.to_string())
        .map_err(|e| PerfError::io("PUT /snapshot/create".into(), e))?;
    let elapsed = t0.elapsed();
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
    let _ = std::fs::remove_file(file);
    Ok(elapsed.as_secs_f64() * 1e3)
}

/// A fresh process that loads `state`/`mem` and resumes (`extra`: more
/// load fields); returns it, when its load was sent and when answered.
fn load(
    ctx: &Ctx,
    vmm: &Vmm,
    state: &Path,
    mem: &Path,
    extra: serde_json::Value,
) -> Result<(Instance, Instant, Instant), PerfError> {
    let sock = ctx.path(vmm, "sock");
    let mut vm = Instance::spawn(vmm.api_command(&sock, None), Some(sock))?;
    vm.wait_accepting()?;
    let mut conn = vm.conn()?;
    let mut body = json!({
        "snapshot_path": state,
        "mem_backend": {"backend_type": "File", "backend_path": mem},
        "resume_vm": true,
    });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    let t0 = Instant::now();
    vm.expect(&mut conn, "PUT", "/snapshot/load", &body.to_string(), 204)?;
    let t1 = Instant::now();
    Ok((vm, t0, t1))
}

/// Allocated size of a file, MiB.
fn allocated_mib(path: &Path) -> Result<f64, PerfError> {
    let meta =
        std::fs::metadata(path).map_err(|e| PerfError::io(format!("{}", path.display()), e))?;
    Ok((meta.blocks() * 512) as f64 / (1 << 20) as f64)
}

impl Scenario for Snapshot {
    fn name(&self) -> &'static str {
        "snapshot"
    }

    fn about(&self) -> &'static str {
        "snapshot create (idle 128 MiB and 1 GiB), restore to running, idle clone memory, touch-all after restore (plain, prefetched)"
    }

    fn slow(&self) -> bool {
        true
    }

    fn run(&self, ctx: &Ctx, vmm: &Vmm) -> Result<Vec<Sample>, PerfError> {
        let mut samples = Vec::new();
        let idle = ctx.guest("perf_idle")?;
        let (state, mem) = (ctx.path(vmm, "vmstate"), ctx.path(vmm, "mem"));
        let sizes: &[u64] = if ctx.quick { &[128] } else { &[128, 1024] };
        for &mib in sizes.iter().rev() {
            let create = boot_and_save(
                ctx,
                vmm,
                &VmConfig::new(idle.clone(), mib),
                "idle-ready",
                &state,
                &mem,
            )?;
            samples.push(Sample::new(format!("create_full_{mib}mib"), MS, create));
            samples.push(Sample::new(
                format!("mem_file_allocated_{mib}mib"),
                MIB,
                allocated_mib(&mem)?,
            ));
        }
        // The 128 MiB snapshot is the last one written.
        let (mut vm, t0, t1) = load(ctx, vmm, &state, &mem, json!({}))?;
        let mut conn = vm.conn()?;
        let info = vm.expect(&mut conn, "GET", "/", "", 200)?;
        if !info.contains("Running") {
            return Err(PerfError::Failed(format!(
                "restored VM is not running: {info}"
            )));
        }
        samples.push(Sample::ms("load_to_running", t0, t1));
        samples.push(Sample::ms("exec_to_restored_running", vm.spawned, t1));
        std::thread::sleep(std::time::Duration::from_millis(200));
        let usage = procfs::rollup(vm.pid())
            .map_err(|e| PerfError::io(format!("memory of {}", vm.pid()), e))?;
        samples.push(Sample::new(
            "idle_clone_anonymous",
            MIB,
            usage.anon_kib as f64 / 1024.0,
        ));
        drop(vm);

        // A guest saved before it touched its memory.
        let mut touch = VmConfig::new(ctx.guest("perf_touch")?, 64);
        // Long enough (about half a second here, emulated) for the pause to land
        // inside it; the rest of it runs after every restore alike.
        touch.extra_args = "perf.delay=200000".into();
        boot_and_save(ctx, vmm, &touch, "touch-waiting", &state, &mem)?;
        let (mut vm, t0, _) = load(ctx, vmm, &state, &mem, json!({}))?;
        let done = vm.wait_output("touch-done")?;
        samples.push(Sample::ms("load_to_touched_all_64mib", t0, done));
        drop(vm);
        if vmm.flavor == Flavor::Podvm {
            let ws = format!("{}.ws", state.display());
            let _ = std::fs::remove_file(&ws);
            // The first load records the working set; the second uses it.
            let (vm, _, _) = load(ctx, vmm, &state, &mem, json!({"prefetch": true}))?;
            let deadline = Instant::now() + std::time::Duration::from_secs(30);
            while !Path::new(&ws).exists() {
                if Instant::now() > deadline {
                    return Err(PerfError::Failed("no working set was recorded".into()));
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            drop(vm);
            let (mut vm, t0, _) = load(ctx, vmm, &state, &mem, json!({"prefetch": true}))?;
            let done = vm.wait_output("touch-done")?;
            samples.push(Sample::ms("load_to_touched_all_64mib_prefetched", t0, done));
            let _ = std::fs::remove_file(&ws);
        } else {
            samples.push(Sample::unsupported(
                "load_to_touched_all_64mib_prefetched",
                MS,
                "no built-in working-set prefetch",
            ));
        }
        for p in [&state, &mem] {
            let _ = std::fs::remove_file(p);
        }
        Ok(samples)
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
