//! `block` / `net`: guest-driven throughput through the real virtio
//! devices. The polling guests `perf_blk` (sequential reads of a 64 MiB
//! image, 64 KiB per request) and `perf_net` (1514-byte frames to a tap in
//! a network namespace) print a start and a done marker; the harness times
//! the span between them and reads the VMM's CPU time (all its threads,
//! the vCPU's included) at both. One request or frame is in flight at a
//! time. On hosts whose KVM emulates guests the guest's own instructions
//! dominate these numbers.

use std::path::PathBuf;

use super::{Ctx, Sample, Scenario, CPU_S_PER_GIB, MIB_S, PER_S};
use crate::netns::{NetNs, TAP};
use crate::procfs;
use crate::vmm::{Instance, VmConfig, Vmm};
use crate::PerfError;

const GIB: f64 = (1u64 << 30) as f64;
const MIB: f64 = (1u64 << 20) as f64;

/// The size of the block scenario's disk image.
const DISK_BYTES: usize = 64 << 20;

/// Runs a throughput guest until its done line: (bytes, items, seconds,
/// CPU seconds of the VMM).
fn measure(vm: &mut Instance, start: &str, done: &str) -> Result<(f64, f64, f64, f64), PerfError> {
    let t0 = vm.wait_output(start)?;
    let cpu0 = procfs::cpu_ns(vm.pid()).map_err(|e| PerfError::io("schedstat".into(), e))?;
    let line = vm.wait_line(done)?;
    let t1 = vm.wait_output(done)?;
    let cpu1 = procfs::cpu_ns(vm.pid()).map_err(|e| PerfError::io("schedstat".into(), e))?;
    let mut nums = line.split_whitespace().map(|w| w.parse::<f64>());
    let (Some(Ok(items)), Some(Ok(bytes))) = (nums.next(), nums.next()) else {
        return Err(PerfError::Failed(format!("bad {done:?} line: {line:?}")));
    };
    Ok((
        bytes,
        items,
        (t1 - t0).as_secs_f64(),
        cpu1.saturating_sub(cpu0) as f64 / 1e9,
    ))
}

/// The block scenario.
pub struct Block;

fn disk(ctx: &Ctx) -> Result<PathBuf, PerfError> {
    let p = ctx.work.join("perf-disk.img");
    if !p.exists() {
        // Real data, not a sparse file: reads come from the page cache.
        let data: Vec<u8> = (0..DISK_BYTES).map(|i| (i * 7 + i / 4096) as u8).collect();
        std::fs::write(&p, data).map_err(|e| PerfError::io(format!("write {}", p.display()), e))?;
    }
    Ok(p)
}

impl Scenario for Block {
    fn name(&self) -> &'static str {
        "block"
    }

    fn about(&self) -> &'static str {
        "guest-driven virtio-blk sequential reads, 64 KiB requests, polling guest"
    }

    fn run(&self, ctx: &Ctx, vmm: &Vmm) -> Result<Vec<Sample>, PerfError> {
        let reqs = if ctx.quick { 50 } else { 1000 };
        let mut cfg = VmConfig::new(ctx.guest("perf_blk")?, 128);
        cfg.extra_args = format!("perf.reqs={reqs} perf.sectors=128");
        cfg.drives.push(("rootfs".into(), disk(ctx)?));
        let file = ctx.path(vmm, "json");
        cfg.write_config(&file)?;
        let mut vm = Instance::spawn(vmm.no_api_command(&file), None)?;
        let (bytes, items, secs, cpu) = measure(&mut vm, "perf-blk-start", "perf-blk-done: ")?;
        let _ = std::fs::remove_file(file);
        Ok(vec![
            Sample::new("read_throughput", MIB_S, bytes / MIB / secs),
            Sample::new("read_requests_per_s", PER_S, items / secs),
            Sample::new("read_host_cpu_per_gib", CPU_S_PER_GIB, cpu / (bytes / GIB)),
        ])
    }
}

/// The net scenario.
pub struct Net;

impl Scenario for Net {
    fn name(&self) -> &'static str {
        "net"
    }

    fn about(&self) -> &'static str {
        "guest-driven virtio-net transmit of 1514-byte frames to a tap, polling guest"
    }

    fn run(&self, ctx: &Ctx, vmm: &Vmm) -> Result<Vec<Sample>, PerfError> {
        let frames = if ctx.quick { 50 } else { 1000 };
        let ns = NetNs::new()?;
        let mut cfg = VmConfig::new(ctx.guest("perf_net")?, 128);
        cfg.extra_args = format!("perf.frames={frames} perf.len=1514");
        cfg.nets.push(("eth0".into(), TAP.into()));
        let file = ctx.path(vmm, "json");
        cfg.write_config(&file)?;
        let mut cmd = vmm.no_api_command(&file);
        ns.enter_on_spawn(&mut cmd);
        let mut vm = Instance::spawn(cmd, None)?;
        let (bytes, items, secs, cpu) = measure(&mut vm, "perf-net-start", "perf-net-done: ")?;
        drop(vm);
        let _ = std::fs::remove_file(file);
        Ok(vec![
            Sample::new("tx_frames_per_s", PER_S, items / secs),
            Sample::new("tx_throughput", MIB_S, bytes / MIB / secs),
            Sample::new("tx_host_cpu_per_gib", CPU_S_PER_GIB, cpu / (bytes / GIB)),
        ])
    }
}
