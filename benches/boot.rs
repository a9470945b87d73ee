//! Boot-path benchmarks: how long building a VM takes inside the VMM, and
//! how long a user waits from `exec` of `podvm run` to the guest's first
//! serial byte and to the process's exit, with the hello test guest; and
//! with real kernels (when `resources/guest/prepare.sh` made them), the
//! VMM-side setup time: `exec` → the guest's first instruction.
//!
//! `cargo bench --bench boot`. Needs /dev/kvm; without it, says so and
//! measures nothing.

// criterion's macros generate undocumented public functions.
#![allow(missing_docs)]

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use resources::{BootSourceConfig, MachineConfig, SerialConfig, VmSpec};
use vmm::{BuildContext, Vmm};

fn hello() -> PathBuf {
    PathBuf::from(env!("PODVM_TEST_GUESTS")).join("hello")
}

fn kvm_usable() -> bool {
    let ok = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    if !ok {
        testkit::skip(
            testkit::Need::Kvm,
            "boot benchmarks",
            "/dev/kvm is not available",
        );
    }
    ok
}

fn spec(mem_size_mib: usize) -> VmSpec {
    VmSpec {
        machine: MachineConfig {
            vcpu_count: 1,
            mem_size_mib,
            smt: false,
            track_dirty_pages: false,
            huge_pages: resources::HugePageConfig::None,
        },
        boot_source: BootSourceConfig {
            kernel_image_path: hello(),
            boot_args: None,
            initrd_path: None,
        },
        serial: SerialConfig::Off,
        drives: Vec::new(),
        net: Vec::new(),
        entropy: false,
        entropy_rate_limiter: None,
        vsock: None,
        balloon: None,
    }
}

/// Building the VM: checks, guest memory, kernel load, KVM VM, irqchip,
/// memory slots, devices and configured vCPUs. Dropping it (closing the VM
/// is slow on some hosts) is not timed.
fn vm_build(c: &mut Criterion) {
    if !kvm_usable() {
        return;
    }
    let mut g = c.benchmark_group("vm_build");
    g.sample_size(30);
    for mib in [128usize, 1024] {
        let spec = spec(mib);
        g.bench_function(format!("{mib}MiB"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    let vmm = Vmm::build(
                        &spec,
                        &BuildContext {
                            start_time: Instant::now(),
                        },
                    )
                    .expect("build the hello VM");
                    total += start.elapsed();
                    drop(vmm);
                }
                total
            })
        });
    }
    g.finish();
}

/// `exec` of `podvm run` → first byte of guest output on its stdout, and
/// → process exit.
fn process_boot(c: &mut Criterion) {
    if !kvm_usable() {
        return;
    }
    let bin = env!("CARGO_BIN_EXE_podvm");
    let kernel = hello();
    let dir = tempfile::tempdir().expect("a temp dir");
    let config = dir.path().join("vm.json");
    std::fs::write(
        &config,
        format!(
            r#"{{"boot-source": {{"kernel_image_path": "{}"}},
                "machine-config": {{"vcpu_count": 1, "mem_size_mib": 128}}}}"#,
            kernel.display()
        ),
    )
    .expect("write the config file");
    let flags: Vec<std::ffi::OsString> = vec!["run".into(), "--kernel".into(), kernel.into()];
    let from_file: Vec<std::ffi::OsString> = vec![
        "serve".into(),
        "--no-api".into(),
        "--config-file".into(),
        config.into(),
    ];
    let run = |args: &[std::ffi::OsString], until_first_byte: bool| -> Duration {
        let start = Instant::now();
        let mut child = Command::new(bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn podvm");
        let mut stdout = child.stdout.take().expect("piped");
        let mut byte = [0u8; 1];
        stdout.read_exact(&mut byte).expect("guest output");
        let first_byte = start.elapsed();
        let mut rest = Vec::new();
        stdout.read_to_end(&mut rest).expect("guest output");
        let status = child.wait().expect("wait for podvm");
        let exited = start.elapsed();
        assert!(status.success(), "podvm failed: {status}");
        if until_first_byte {
            first_byte
        } else {
            exited
        }
    };
    let mut g = c.benchmark_group("process");
    g.sample_size(30);
    g.bench_function("exec_to_first_serial_byte", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| run(&flags, true)).sum())
    });
    g.bench_function("config_file_exec_to_first_serial_byte", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| run(&from_file, true)).sum())
    });
    g.bench_function("exec_to_exit", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| run(&flags, false)).sum())
    });
    g.finish();
}

/// Where `resources/guest/prepare.sh` put the guest images.
fn guest_images() -> PathBuf {
    std::env::var_os("PODVM_GUEST_IMAGES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/guest-images"))
}

/// `CLOCK_MONOTONIC` in nanoseconds, the clock podvm stamps its first
/// guest entry with.
fn monotonic_ns() -> u128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u128 * 1_000_000_000 + ts.tv_nsec as u128
}

/// `exec` of `podvm run` with a real kernel → vCPU 0's first `KVM_RUN`,
/// from podvm's debug line `vcpu 0: entering the guest (CLOCK_MONOTONIC N
/// ns)`. This is everything the VMM does before the kernel runs (loading a
/// 50 MB vmlinux dominates); what the kernel does next is not the VMM's.
fn kernel_setup(c: &mut Criterion) {
    if !kvm_usable() {
        return;
    }
    let images = guest_images();
    let bin = env!("CARGO_BIN_EXE_podvm");
    let mut g = c.benchmark_group("kernel_setup");
    g.sample_size(20);
    for (name, rel) in [
        ("stock", "stock/vmlinux"),
        ("minimal", "podvm-kernel/vmlinux"),
    ] {
        let kernel = images.join(rel);
        if !kernel.exists() {
            eprintln!(
                "SKIPPED kernel_setup/{name}: {} is missing (run resources/guest/prepare.sh)",
                kernel.display()
            );
            continue;
        }
        let once = || -> Duration {
            let start = monotonic_ns();
            let mut child = Command::new(bin)
                .args([
                    "run",
                    "--vcpus",
                    "2",
                    "--memory",
                    "256",
                    "--log-level",
                    "debug",
                ])
                .arg("--kernel")
                .arg(&kernel)
                .args(["--cmdline", "console=ttyS0 reboot=k panic=1"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn podvm");
            let stderr = BufReader::new(child.stderr.take().expect("piped"));
            let entered = stderr
                .lines()
                .map_while(Result::ok)
                .find_map(|l| {
                    let rest = l.split("entering the guest (CLOCK_MONOTONIC ").nth(1)?;
                    rest.split(' ').next()?.parse::<u128>().ok()
                })
                .expect("podvm logs vCPU 0's first guest entry");
            let _ = child.kill();
            let _ = child.wait();
            Duration::from_nanos((entered - start) as u64)
        };
        g.bench_function(format!("exec_to_first_instruction_{name}"), |b| {
            b.iter_custom(|iters| (0..iters).map(|_| once()).sum())
        });
    }
    g.finish();
}

/// The boot-timer result (`guest-boot-time`: podvm's start → the tiny
/// init's write to port 0x3f0) with each kernel, where guests run on
/// hardware virtualization; where `podvm doctor` reports emulation, Linux
/// cannot reach user space and this says so and measures nothing.
fn kernel_boot(c: &mut Criterion) {
    if !kvm_usable() {
        return;
    }
    let bin = env!("CARGO_BIN_EXE_podvm");
    let doctor = Command::new(bin)
        .arg("doctor")
        .output()
        .expect("podvm doctor");
    if !String::from_utf8_lossy(&doctor.stdout).contains("guest execution: hardware-accelerated") {
        testkit::skip(
            testkit::Need::HardwareVirt,
            "kernel_boot",
            "podvm doctor reports that KVM emulates guests here; Linux cannot reach user space",
        );
        return;
    }
    let images = guest_images();
    let mut g = c.benchmark_group("kernel_boot");
    g.sample_size(10);
    let stock = images.join("stock");
    let (vmlinux, initrd) = (stock.join("vmlinux"), stock.join("initramfs.cpio"));
    let (minimal, rootfs) = (
        images.join("podvm-kernel/vmlinux"),
        images.join("rootfs.ext4"),
    );
    let root_disk = format!("path={},ro,root", rootfs.display());
    let cases = [
        (
            "stock",
            vec![&vmlinux, &initrd],
            vec![
                "--kernel".as_ref(),
                vmlinux.as_os_str(),
                "--initrd".as_ref(),
                initrd.as_os_str(),
            ],
        ),
        (
            "minimal",
            vec![&minimal, &rootfs],
            vec![
                "--kernel".as_ref(),
                minimal.as_os_str(),
                "--disk".as_ref(),
                root_disk.as_ref(),
            ],
        ),
    ];
    for (name, needs, args) in cases {
        if let Some(missing) = needs.iter().find(|p| !p.exists()) {
            eprintln!(
                "SKIPPED kernel_boot/{name}: {} is missing (run resources/guest/prepare.sh --kernel)",
                missing.display()
            );
            continue;
        }
        let once = || -> Duration {
            let out = Command::new(bin)
                .args([
                    "run",
                    "--vcpus",
                    "2",
                    "--memory",
                    "256",
                    "--log-level",
                    "info",
                ])
                .args(&args)
                .args([
                    "--cmdline",
                    "console=ttyS0 reboot=k panic=1 i8042.noaux quiet",
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .output()
                .expect("run podvm");
            let stderr = String::from_utf8_lossy(&out.stderr);
            let us: u64 = stderr
                .lines()
                .find_map(|l| l.strip_prefix("podvm: info: guest-boot-time = "))
                .and_then(|v| v.strip_suffix(" us"))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no guest-boot-time from the {name} kernel: {stderr}"));
            Duration::from_micros(us)
        };
        g.bench_function(format!("boot_timer_{name}"), |b| {
            b.iter_custom(|iters| (0..iters).map(|_| once()).sum())
        });
    }
    g.finish();
}

criterion_group!(benches, vm_build, process_boot, kernel_setup, kernel_boot);
criterion_main!(benches);
