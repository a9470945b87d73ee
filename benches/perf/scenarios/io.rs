//! `block` / `net`: guest-driven throughput through the real virtio
//! devices.
//!
//! The headline figures come from `uperf_blk` and `uperf_net`, whose
//! measured loops run in guest user mode (CPL3), which this host's KVM
//! runs natively while it emulates kernel-mode code (HOST.md): each keeps
//! a queue depth of requests or frames in flight, publishes a batch per
//! QueueNotify write (an ioeventfd) and polls the used ring, so the VMM's
//! device path is what they measure. Each guest runs its phases in one VM
//! and prints a line before and after each; the harness reads the VMM's
//! per-thread CPU time (`schedstat`) at both lines, and rates come from
//! the guest's own time-stamp counter (the host's rate, calibrated once).
//! Per phase: requests (frames) per second, MiB/s, and host CPU seconds
//! per GiB moved, of all the VMM's threads (`host_cpu`: the vCPU thread
//! spinning on the used ring included) and of its threads but the vCPUs
//! (`device_cpu`: event loop, device emulation, tap and file I/O).
//!
//! - block: 4 KiB random reads, 128 KiB sequential reads and writes of a
//!   64 MiB image (page cache), and flushes (after one untimed flush of
//!   what the writes left dirty; the drive is `cache_type: Writeback`, so
//!   Firecracker offers FLUSH too). Queue depth [`BLK_QD`], [`BLK_BATCH`]
//!   per notify.
//! - net: transmit of 64- and 1514-byte frames to a tap in a network
//!   namespace, then receive of frames that a generator thread inside that
//!   namespace writes into the tap as fast as it can (a packet socket,
//!   `sendmmsg` of [`GEN_BURST`] frames at a time; what the VMM does not
//!   read in time the tap drops). Queue depth [`NET_QD`], [`NET_BATCH`] per
//!   notify.
//!
//! The `cpl0_*` figures are the older guests `perf_blk` / `perf_net`: one
//! request or frame in flight, driven from emulated kernel mode, so they
//! measure this host's instruction emulator more than the VMM.
//! On 2 cores the spinning vCPU takes one: the VMM's threads and the
//! receive generator share the other.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{Ctx, Sample, Scenario, CPU_S_PER_GIB, MIB_S, PER_S, US};
use crate::netns::{NetNs, TAP};
use crate::procfs;
use crate::vmm::{Instance, VmConfig, Vmm};
use crate::PerfError;

const GIB: f64 = (1u64 << 30) as f64;
const MIB: f64 = (1u64 << 20) as f64;

/// The size of the block scenario's disk image.
const DISK_BYTES: usize = 64 << 20;

/// Block requests in flight (at most 85: 3 descriptors each, 256 entries).
const BLK_QD: usize = 64;
/// Block requests per notify.
const BLK_BATCH: usize = 16;
/// Frames (buffers) in flight: the whole ring.
const NET_QD: usize = 256;
/// Frames per notify.
const NET_BATCH: usize = 64;
/// Frames per `sendmmsg` of the receive generator.
const GEN_BURST: usize = 64;
/// The frame lengths of the net phases (without the 12-byte virtio header).
const NET_LENS: [usize; 2] = [64, 1514];
/// The EtherType of every frame (local experimental: the host drops them).
const ETHERTYPE: u16 = 0x88b5;

/// The host's (and so the guests') time-stamp counter rate, measured once.
fn tsc_hz() -> f64 {
    static HZ: OnceLock<f64> = OnceLock::new();
    *HZ.get_or_init(|| {
        let (t0, c0) = (Instant::now(), rdtsc());
        std::thread::sleep(Duration::from_millis(200));
        let (t1, c1) = (Instant::now(), rdtsc());
        c1.wrapping_sub(c0) as f64 / t1.duration_since(t0).as_secs_f64()
    })
}

fn rdtsc() -> u64 {
    // SAFETY: rdtsc only reads the time-stamp counter; every x86_64 CPU
    // has it.
    unsafe { std::arch::x86_64::_rdtsc() }
}

/// One phase of a `uperf_*` guest.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Phase {
    /// Requests (frames) the guest counted.
    requests: f64,
    /// Data (frame) bytes.
    bytes: f64,
    /// The phase's time by the guest's TSC, seconds.
    secs: f64,
    /// CPU seconds of all the VMM's threads between the two lines.
    cpu_all: f64,
    /// The same without the vCPU threads.
    cpu_non_vcpu: f64,
}

/// The numbers of a `uperf-done: <name> ` line: requests, bytes, TSC
/// ticks, notifies, other completions.
fn parse_done(rest: &str) -> Option<[u64; 5]> {
    let mut it = rest.split_whitespace().map(|w| w.parse::<u64>());
    let mut out = [0; 5];
    for v in &mut out {
        *v = it.next()?.ok()?;
    }
    it.next().is_none().then_some(out)
}

fn cpu(pid: u32) -> Result<procfs::ThreadsCpu, PerfError> {
    procfs::threads_cpu(pid).map_err(|e| PerfError::io(format!("/proc/{pid}/task"), e))
}

/// Follows a `uperf_*` guest through `names`, in order. `hook(name, true)`
/// runs once a phase has started, `hook(name, false)` once it ended.
fn run_phases(
    vm: &mut Instance,
    names: &[String],
    mut hook: impl FnMut(&str, bool) -> Result<(), PerfError>,
) -> Result<Vec<Phase>, PerfError> {
    let mut out = Vec::new();
    for name in names {
        vm.wait_output(&format!("uperf-phase: {name}\n"))?;
        let c0 = cpu(vm.pid())?;
        hook(name, true)?;
        let prefix = format!("uperf-done: {name} ");
        vm.wait_output(&prefix)?;
        let c1 = cpu(vm.pid())?;
        hook(name, false)?;
        let line = vm.wait_line(&prefix)?;
        let Some([requests, bytes, ticks, _notifies, _other]) = parse_done(&line) else {
            return Err(PerfError::Failed(format!("bad {prefix:?} line: {line:?}")));
        };
        out.push(Phase {
            requests: requests as f64,
            bytes: bytes as f64,
            secs: ticks as f64 / tsc_hz(),
            cpu_all: c1.all_ns.saturating_sub(c0.all_ns) as f64 / 1e9,
            cpu_non_vcpu: c1.non_vcpu_ns.saturating_sub(c0.non_vcpu_ns) as f64 / 1e9,
        });
    }
    Ok(out)
}

/// Rate, throughput and CPU per GiB of one phase: `<fig>_<per_s>`,
/// `<fig>_throughput`, `<fig>_host_cpu_per_gib`, `<fig>_device_cpu_per_gib`.
fn data_figures(fig: &str, per_s: &str, p: &Phase) -> Vec<Sample> {
    let gib = p.bytes / GIB;
    vec![
        Sample::new(format!("{fig}_{per_s}"), PER_S, p.requests / p.secs),
        Sample::new(format!("{fig}_throughput"), MIB_S, p.bytes / MIB / p.secs),
        Sample::new(
            format!("{fig}_host_cpu_per_gib"),
            CPU_S_PER_GIB,
            p.cpu_all / gib,
        ),
        Sample::new(
            format!("{fig}_device_cpu_per_gib"),
            CPU_S_PER_GIB,
            p.cpu_non_vcpu / gib,
        ),
    ]
}

/// Runs an old CPL0 throughput guest until its done line: (bytes, items,
/// seconds, CPU seconds of the VMM).
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

/// Writes `cfg` as a config file; with `writeback`, its drives are
/// `cache_type: Writeback` (Firecracker offers FLUSH only then; podvm
/// always does, and always honours it).
fn write_config(cfg: &VmConfig, path: &Path, writeback: bool) -> Result<(), PerfError> {
    let mut doc = cfg.config_file();
    if writeback {
        for d in doc["drives"].as_array_mut().into_iter().flatten() {
            d["cache_type"] = "Writeback".into();
        }
    }
    std::fs::write(path, doc.to_string())
        .map_err(|e| PerfError::io(format!("write {}", path.display()), e))
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
        "virtio-blk from a CPL3 guest: 4 KiB random reads, 128 KiB sequential reads and writes, flushes (queue depth 64, 16 per notify); cpl0_*: 64 KiB reads one at a time, emulated guest"
    }

    fn run(&self, ctx: &Ctx, vmm: &Vmm) -> Result<Vec<Sample>, PerfError> {
        let (rand, seq, flush) = if ctx.quick {
            (2000, 200, 100)
        } else {
            (100_000, 8000, 5000)
        };
        let mut cfg = VmConfig::new(ctx.guest("uperf_blk")?, 128);
        cfg.extra_args = format!(
            "perf.qd={BLK_QD} perf.batch={BLK_BATCH} perf.randread={rand} \
             perf.seqread={seq} perf.seqwrite={seq} perf.flush={flush}"
        );
        cfg.drives.push(("rootfs".into(), disk(ctx)?));
        let file = ctx.path(vmm, "json");
        write_config(&cfg, &file, true)?;
        let mut vm = Instance::spawn(vmm.no_api_command(&file), None)?;
        let names = ["randread", "seqread", "seqwrite", "flush"].map(String::from);
        let phases = run_phases(&mut vm, &names, |_, _| Ok(()))?;
        drop(vm);
        let _ = std::fs::remove_file(&file);
        let mut out = data_figures("randread_4k", "requests_per_s", &phases[0]);
        out.extend(data_figures("seqread_128k", "requests_per_s", &phases[1]));
        out.extend(data_figures("seqwrite_128k", "requests_per_s", &phases[2]));
        let f = &phases[3];
        out.push(Sample::new(
            "flush_requests_per_s",
            PER_S,
            f.requests / f.secs,
        ));
        out.push(Sample::new(
            "flush_host_cpu_per_request",
            US,
            f.cpu_all / f.requests * 1e6,
        ));
        out.push(Sample::new(
            "flush_device_cpu_per_request",
            US,
            f.cpu_non_vcpu / f.requests * 1e6,
        ));

        let reqs = if ctx.quick { 50 } else { 1000 };
        let mut cfg = VmConfig::new(ctx.guest("perf_blk")?, 128);
        cfg.extra_args = format!("perf.reqs={reqs} perf.sectors=128");
        cfg.drives.push(("rootfs".into(), disk(ctx)?));
        write_config(&cfg, &file, false)?;
        let mut vm = Instance::spawn(vmm.no_api_command(&file), None)?;
        let (bytes, items, secs, cpu) = measure(&mut vm, "perf-blk-start", "perf-blk-done: ")?;
        drop(vm);
        let _ = std::fs::remove_file(file);
        out.extend([
            Sample::new("cpl0_read_throughput", MIB_S, bytes / MIB / secs),
            Sample::new("cpl0_read_requests_per_s", PER_S, items / secs),
            Sample::new(
                "cpl0_read_host_cpu_per_gib",
                CPU_S_PER_GIB,
                cpu / (bytes / GIB),
            ),
        ]);
        Ok(out)
    }
}

/// Writes `len`-byte broadcast frames into [`TAP`] from inside the network
/// namespace of process `pid` (the VMM's) as fast as it can, on its own
/// thread, until dropped.
struct Generator {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<std::io::Result<u64>>>,
}

impl Generator {
    fn start(pid: u32, len: usize) -> Generator {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || generate(pid, len, &flag));
        Generator {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops the thread; the frames it sent.
    fn finish(mut self) -> Result<u64, PerfError> {
        self.stop.store(true, Ordering::Relaxed);
        let t = self.thread.take().expect("joined only here or on drop");
        match t.join() {
            Ok(r) => r.map_err(|e| PerfError::io("receive generator".into(), e)),
            Err(_) => Err(PerfError::Failed("the receive generator panicked".into())),
        }
    }
}

impl Drop for Generator {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn last_os_error(what: &str) -> std::io::Error {
    let e = std::io::Error::last_os_error();
    std::io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// The generator thread: joins `pid`'s network namespace (this thread
/// only), binds a packet socket to the tap (protocol 0: it receives
/// nothing) and sends until `stop`.
fn generate(pid: u32, len: usize, stop: &AtomicBool) -> std::io::Result<u64> {
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
    // SAFETY: setns(2) on a valid namespace fd; it moves only this thread.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(last_os_error("setns"));
    }
    // SAFETY: plain socket creation.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
    if fd < 0 {
        return Err(last_os_error("socket(AF_PACKET)"));
    }
    // SAFETY: fd is a fresh socket that nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let name = std::ffi::CString::new(TAP).expect("the tap name has no NUL");
    // SAFETY: a valid NUL-terminated name.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        return Err(last_os_error(TAP));
    }
    // SAFETY: sockaddr_ll is plain data; all zero is a valid value.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_ifindex = index as i32;
    // SAFETY: binds the socket to a valid address of the right size.
    let rc = unsafe {
        libc::bind(
            sock.as_raw_fd(),
            (&addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if rc != 0 {
        return Err(last_os_error("bind"));
    }
    let mut frame = vec![0u8; len];
    frame[..6].fill(0xff);
    frame[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
    frame[12..14].copy_from_slice(&ETHERTYPE.to_be_bytes());
    let mut iov = libc::iovec {
        iov_base: frame.as_mut_ptr().cast(),
        iov_len: len,
    };
    // SAFETY: mmsghdr is plain data; all zero is a valid value.
    let mut msgs: Vec<libc::mmsghdr> = (0..GEN_BURST)
        .map(|_| unsafe { std::mem::zeroed() })
        .collect();
    for m in &mut msgs {
        m.msg_hdr.msg_iov = &mut iov;
        m.msg_hdr.msg_iovlen = 1;
    }
    let mut sent = 0u64;
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: every message points at `iov`, which points at `frame`;
        // both outlive the call.
        let n = unsafe { libc::sendmmsg(sock.as_raw_fd(), msgs.as_mut_ptr(), GEN_BURST as u32, 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            // A full device queue (ENOBUFS) only means: faster than the VMM.
            if e.raw_os_error() != Some(libc::ENOBUFS) && e.kind() != std::io::ErrorKind::WouldBlock
            {
                return Err(std::io::Error::new(e.kind(), format!("sendmmsg: {e}")));
            }
        } else {
            sent += n as u64;
        }
    }
    Ok(sent)
}

/// The net scenario.
pub struct Net;

impl Scenario for Net {
    fn name(&self) -> &'static str {
        "net"
    }

    fn about(&self) -> &'static str {
        "virtio-net from a CPL3 guest: transmit and receive of 64- and 1514-byte frames through a tap (256 in flight, 64 per notify); cpl0_*: 1514-byte frames one at a time, emulated guest"
    }

    fn run(&self, ctx: &Ctx, vmm: &Vmm) -> Result<Vec<Sample>, PerfError> {
        let (tx, rx) = if ctx.quick {
            (5000, 2000)
        } else {
            (500_000, 200_000)
        };
        let ns = NetNs::new()?;
        let lens = NET_LENS.map(|l| l.to_string()).join(":");
        let mut cfg = VmConfig::new(ctx.guest("uperf_net")?, 128);
        cfg.extra_args = format!(
            "perf.qd={NET_QD} perf.batch={NET_BATCH} perf.tx={lens} perf.tx_frames={tx} \
             perf.rx={lens} perf.rx_frames={rx}"
        );
        cfg.nets.push(("eth0".into(), TAP.into()));
        let file = ctx.path(vmm, "json");
        cfg.write_config(&file)?;
        let mut cmd = vmm.no_api_command(&file);
        ns.enter_on_spawn(&mut cmd);
        let mut vm = Instance::spawn(cmd, None)?;
        let pid = vm.pid();
        let names: Vec<String> = ["tx", "rx"]
            .iter()
            .flat_map(|d| NET_LENS.iter().map(move |l| format!("{d}{l}")))
            .collect();
        let mut generator = None;
        let phases = run_phases(&mut vm, &names, |name, started| {
            let Some(len) = name.strip_prefix("rx") else {
                return Ok(());
            };
            if started {
                let len = len.parse().expect("rx phases are named rx<len>");
                generator = Some(Generator::start(pid, len));
            } else if let Some(g) = generator.take() {
                g.finish()?;
            }
            Ok(())
        })?;
        drop(vm);
        let mut out = Vec::new();
        for (name, p) in names.iter().zip(&phases) {
            out.extend(data_figures(name, "frames_per_s", p));
        }

        let frames = if ctx.quick { 50 } else { 1000 };
        let mut cfg = VmConfig::new(ctx.guest("perf_net")?, 128);
        cfg.extra_args = format!("perf.frames={frames} perf.len=1514");
        cfg.nets.push(("eth0".into(), TAP.into()));
        cfg.write_config(&file)?;
        let mut cmd = vmm.no_api_command(&file);
        ns.enter_on_spawn(&mut cmd);
        let mut vm = Instance::spawn(cmd, None)?;
        let (bytes, items, secs, cpu) = measure(&mut vm, "perf-net-start", "perf-net-done: ")?;
        drop(vm);
        let _ = std::fs::remove_file(file);
        out.extend([
            Sample::new("cpl0_tx_frames_per_s", PER_S, items / secs),
            Sample::new("cpl0_tx_throughput", MIB_S, bytes / MIB / secs),
            Sample::new(
                "cpl0_tx_host_cpu_per_gib",
                CPU_S_PER_GIB,
                cpu / (bytes / GIB),
            ),
        ]);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn done_lines() {
        assert_eq!(
            parse_done("2000 8192000 193438562 32 0"),
            Some([2000, 8192000, 193438562, 32, 0])
        );
        assert_eq!(parse_done("1 2 3 4"), None);
        assert_eq!(parse_done("1 2 3 4 5 6"), None);
        assert_eq!(parse_done("1 2 x 4 5"), None);
    }

    #[test]
    fn figures_of_a_phase() {
        let p = Phase {
            requests: 1000.0,
            bytes: GIB,
            secs: 0.5,
            cpu_all: 1.0,
            cpu_non_vcpu: 0.25,
        };
        let f = data_figures("seqread_128k", "requests_per_s", &p);
        let get = |n: &str| {
            f.iter()
                .find(|s| s.figure == n)
                .map(|s| s.value.clone())
                .unwrap()
        };
        use super::super::Value::Num;
        assert_eq!(get("seqread_128k_requests_per_s"), Num(2000.0));
        assert_eq!(get("seqread_128k_throughput"), Num(2048.0));
        assert_eq!(get("seqread_128k_host_cpu_per_gib"), Num(1.0));
        assert_eq!(get("seqread_128k_device_cpu_per_gib"), Num(0.25));
    }
}
