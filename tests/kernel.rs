//! The slow suite: real Linux kernels (issue 5). Every test here is
//! `#[ignore]`d so that `cargo test` stays fast; run them with
//!
//! ```sh
//! resources/guest/prepare.sh          # downloads and builds the images
//! cargo test --release --test kernel -- --ignored
//! ```
//!
//! Images are looked up in `$PODVM_GUEST_IMAGES` (default
//! `target/guest-images`), where `resources/guest/prepare.sh` puts them.
//! A missing image fails the test with the command that makes it.
//!
//! On hosts whose KVM only emulates guests (HOST.md) a kernel gets through
//! early boot — the command line, the e820 map, the ACPI tables and the
//! CPUs it found — and then stops on an instruction KVM cannot emulate.
//! The early-boot tests check exactly that part and stop the VM. The
//! full-boot tests need hardware virtualization: they ask `podvm doctor`,
//! and where it reports emulation they say so and skip.

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::mpsc;

use common::{kvm_available, podvm, spawn_podvm, stream_stdout, wait_output};

const MIB: u64 = 1 << 20;

/// Where `prepare.sh` puts the guest images.
fn images() -> PathBuf {
    std::env::var_os("PODVM_GUEST_IMAGES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/guest-images"))
}

/// An image under [`images`]; panics with how to make it if it is missing.
fn image(rel: &str) -> PathBuf {
    let p = images().join(rel);
    assert!(
        p.exists(),
        "{} is missing: run resources/guest/prepare.sh first (or set PODVM_GUEST_IMAGES)",
        p.display()
    );
    p
}

/// Debian's cloud kernel: ACPI only (no MP-table parser), virtio-mmio a
/// module without command-line devices, so it finds them in the DSDT.
fn stock_cloud_kernel() -> PathBuf {
    image("stock/vmlinux")
}

/// Debian's generic kernel: it also parses the MP table.
fn stock_generic_kernel() -> PathBuf {
    image("stock-generic/vmlinux")
}

/// Early-boot options: print from the first instruction on, and stop
/// instead of hanging if the kernel panics.
const EARLY: &str = "console=ttyS0 earlyprintk=serial reboot=k panic=1 i8042.noaux";

/// Boots `kernel` with `args` and collects its console until `until`
/// appears, then stops the VM. Returns the console lines.
fn early_boot(kernel: &PathBuf, args: &[&str], until: &str) -> Vec<String> {
    let mut all: Vec<&std::ffi::OsStr> = vec!["run".as_ref(), "--kernel".as_ref(), kernel.as_ref()];
    all.extend(args.iter().map(std::ffi::OsStr::new));
    let mut child = spawn_podvm(&all);
    let rx: mpsc::Receiver<String> = stream_stdout(&mut child.0);
    let mut seen = String::new();
    wait_output(&rx, &mut seen, until);
    // The rest of the line `until` is on.
    while !seen[seen.find(until).unwrap()..].contains('\n') {
        match rx.recv_timeout(common::DEADLINE) {
            Ok(chunk) => seen.push_str(&chunk),
            Err(_) => break,
        }
    }
    drop(child);
    seen.lines()
        .map(|l| strip_timestamp(l).to_string())
        .collect()
}

/// `[    1.234567] text` → `text`.
fn strip_timestamp(line: &str) -> &str {
    match line.strip_prefix('[').and_then(|l| l.split_once("] ")) {
        Some((_, text)) => text,
        None => line,
    }
}

fn line_with<'a>(lines: &'a [String], needle: &str) -> Option<&'a str> {
    lines
        .iter()
        .find(|l| l.contains(needle))
        .map(String::as_str)
}

/// Usable RAM in the `BIOS-e820:` lines the kernel printed.
fn e820_usable(lines: &[String]) -> u64 {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix("BIOS-e820: [mem "))
        .filter(|l| l.ends_with("] usable"))
        .map(|l| {
            let range = l.split(']').next().unwrap();
            let (a, b) = range.split_once('-').unwrap();
            let parse = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap();
            parse(b) + 1 - parse(a)
        })
        .sum()
}

/// RAM podvm gives a guest of `mib` MiB below the MMIO gap: all of it but
/// the legacy hole from 640 KiB to 1 MiB.
fn expected_usable(mib: u64) -> u64 {
    mib * MIB - 0x60000
}

#[test]
#[ignore = "slow suite: boots Debian's kernel (about half a minute here)"]
fn stock_kernel_finds_the_acpi_tables_and_every_vcpu() {
    if !kvm_available("stock_kernel_finds_the_acpi_tables_and_every_vcpu") {
        return;
    }
    let kernel = stock_cloud_kernel();
    let disk = tempfile::NamedTempFile::new().unwrap();
    disk.as_file().set_len(MIB).unwrap();
    let disk_arg = format!("path={}", disk.path().display());
    let lines = early_boot(
        &kernel,
        &[
            "--vcpus",
            "2",
            "--memory",
            "256",
            "--disk",
            &disk_arg,
            "--rng",
            "--cmdline",
            EARLY,
        ],
        "smpboot: Allowing",
    );
    let all = lines.join("\n");
    // Our exact command line: the user's, then one entry per virtio
    // device (the disk is not a root device).
    let cmdline =
        format!("{EARLY} virtio_mmio.device=4K@0xd0000000:5 virtio_mmio.device=4K@0xd0001000:6");
    assert_eq!(
        line_with(&lines, "Command line: "),
        Some(format!("Command line: {cmdline}").as_str()),
        "{all}"
    );
    assert_eq!(e820_usable(&lines), expected_usable(256), "{all}");
    // The kernel found every table, the RSDP where podvm put it.
    let rsdp = line_with(&lines, "ACPI: RSDP ").expect("the RSDP line");
    assert!(rsdp.starts_with("ACPI: RSDP 0x00000000000E0000 "), "{rsdp}");
    for table in ["XSDT", "FACP", "DSDT", "APIC"] {
        let line = line_with(&lines, &format!("ACPI: {table} 0x"));
        let line = line.unwrap_or_else(|| panic!("no ACPI {table} line in:\n{all}"));
        assert!(line.contains("PODVM"), "{line}");
    }
    // It took the CPUs and the IOAPIC from the MADT.
    assert!(
        line_with(&lines, "Using ACPI (MADT) for SMP configuration").is_some(),
        "{all}"
    );
    assert!(
        line_with(
            &lines,
            "IOAPIC[0]: apic_id 2, version 17, address 0xfec00000, GSI 0-23"
        )
        .is_some(),
        "{all}"
    );
    assert!(
        line_with(
            &lines,
            "INT_SRC_OVR (bus 0 bus_irq 4 global_irq 4 high edge)"
        )
        .is_some(),
        "{all}"
    );
    assert_eq!(
        line_with(&lines, "smpboot: Allowing "),
        Some("smpboot: Allowing 2 CPUs, 0 hotplug CPUs"),
        "{all}"
    );
}

#[test]
#[ignore = "slow suite: boots Debian's kernel (about half a minute here)"]
fn stock_kernel_without_acpi_uses_the_mp_table() {
    if !kvm_available("stock_kernel_without_acpi_uses_the_mp_table") {
        return;
    }
    // Debian's cloud kernel has no MP-table parser (CONFIG_X86_MPPARSE is
    // off); its generic kernel has one.
    let kernel = stock_generic_kernel();
    let cmdline = format!("{EARLY} acpi=off");
    let lines = early_boot(
        &kernel,
        &["--vcpus", "2", "--memory", "256", "--cmdline", &cmdline],
        "smpboot: Allowing",
    );
    let all = lines.join("\n");
    assert_eq!(
        line_with(&lines, "Command line: "),
        Some(format!("Command line: {cmdline}").as_str()),
        "{all}"
    );
    assert_eq!(e820_usable(&lines), expected_usable(256), "{all}");
    assert!(line_with(&lines, "ACPI: RSDP").is_none(), "{all}");
    assert!(
        line_with(&lines, "found SMP MP-table at [mem 0x000f0000-0x000f000f]").is_some(),
        "{all}"
    );
    assert!(
        line_with(&lines, "Processor #1").is_some(),
        "the second vCPU from the MP table:\n{all}"
    );
    assert!(
        line_with(
            &lines,
            "IOAPIC[0]: apic_id 2, version 17, address 0xfec00000, GSI 0-23"
        )
        .is_some(),
        "{all}"
    );
    assert_eq!(
        line_with(&lines, "smpboot: Allowing "),
        Some("smpboot: Allowing 2 CPUs, 0 hotplug CPUs"),
        "{all}"
    );
}

/// Whether guests run on hardware virtualization here, as `podvm doctor`
/// measures it. Where they do not, says why the caller skips.
fn hardware_accelerated(test: &str) -> bool {
    let out = podvm().arg("doctor").output().expect("run podvm doctor");
    let report = String::from_utf8_lossy(&out.stdout);
    let fast = report
        .lines()
        .any(|l| l.contains("guest execution: hardware-accelerated"));
    if !fast {
        testkit::skip(
            testkit::Need::HardwareVirt,
            test,
            "podvm doctor reports that KVM emulates guests on this host \
             (HOST.md), so a Linux guest cannot reach user space here",
        );
    }
    fast
}

/// FNV-1a 64, the checksum the tiny init prints for a disk.
fn fnv1a64(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The init's line for `disk`, `dev` being its name in the guest.
fn disk_line(dev: &str, disk: &PathBuf) -> String {
    let data = std::fs::read(disk).unwrap();
    format!(
        "podvm-init: disk {dev} bytes={} fnv1a64={:016x}",
        data.len(),
        fnv1a64(&data)
    )
}

/// Boots `args` to the end inside a fresh network namespace holding the
/// tap; returns the console and the boot time podvm logged.
fn full_boot(test: &str, args: &[String]) -> Option<(String, u64)> {
    let ns = common::netns::NetNs::with_tap(test)?;
    let child = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.name,
            env!("CARGO_BIN_EXE_podvm"),
            "run",
        ])
        .args(args)
        .args(["--log-level", "info", "--net"])
        .arg(format!("tap={}", common::netns::TAP))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn podvm");
    let out = common::wait_with_deadline(child);
    assert_eq!(out.code(), 0, "{out:?}");
    let boot_us = out
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("podvm: info: guest-boot-time = "))
        .and_then(|v| v.strip_suffix(" us"))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no boot time logged: {out:?}"));
    Some((out.stdout, boot_us))
}

/// The init's checks, in the order it prints them.
fn assert_init_ran(console: &str, disk: &str) {
    let lines: Vec<&str> = console.lines().map(strip_timestamp).collect();
    let pos = |want: &str| {
        lines
            .iter()
            .position(|l| l.trim_end() == want)
            .unwrap_or_else(|| panic!("{want:?} not on the console:\n{console}"))
    };
    let ready = pos("podvm-init: ready");
    let disk = pos(disk);
    let net = pos("podvm-init: net eth0 10.0.0.2/24 up");
    let done = pos("podvm-init: done");
    assert!(ready < disk && disk < net && net < done, "{console}");
}

/// Boots `kernel` (with `boot` files: `--initrd`, disks before the data
/// disk) to the init, which checks the data disk (`data_dev` in the guest)
/// and configures eth0; checks what it printed and reports the boot time.
fn boot_to_init(test: &str, kernel: &std::path::Path, boot: &[String], data_dev: &str) {
    let data = image("data.ext4");
    let mut args: Vec<String> = vec![
        "--kernel".into(),
        kernel.display().to_string(),
        "--memory".into(),
        "256".into(),
        "--vcpus".into(),
        "2".into(),
    ];
    args.extend_from_slice(boot);
    args.extend([
        "--disk".into(),
        format!("path={},ro", data.display()),
        "--cmdline".into(),
        format!(
            "console=ttyS0 reboot=k panic=1 i8042.noaux podvm.check_disk={data_dev} \
             podvm.ip=10.0.0.2/24"
        ),
    ]);
    let Some((console, boot_us)) = full_boot(test, &args) else {
        return;
    };
    assert_init_ran(&console, &disk_line(data_dev, &data));
    eprintln!("{test}: guest-boot-time = {boot_us} us");
}

#[test]
#[ignore = "slow suite: needs hardware virtualization"]
fn stock_kernel_boots_to_the_init_with_disk_and_network() {
    let test = "stock_kernel_boots_to_the_init_with_disk_and_network";
    if !kvm_available(test) || !hardware_accelerated(test) {
        return;
    }
    let initrd = image("stock/initramfs.cpio");
    let boot = ["--initrd".into(), initrd.display().to_string()];
    boot_to_init(test, &stock_cloud_kernel(), &boot, "/dev/vda");
}

#[test]
#[ignore = "slow suite: needs hardware virtualization and the minimal kernel"]
fn minimal_kernel_boots_to_the_init_with_disk_and_network() {
    let test = "minimal_kernel_boots_to_the_init_with_disk_and_network";
    if !kvm_available(test) || !hardware_accelerated(test) {
        return;
    }
    let kernel = images().join("podvm-kernel/vmlinux");
    assert!(
        kernel.exists(),
        "{} is missing: run resources/guest/prepare.sh --kernel",
        kernel.display()
    );
    let rootfs = image("rootfs.ext4");
    let boot = [
        "--disk".into(),
        format!("path={},ro,root", rootfs.display()),
    ];
    boot_to_init(test, &kernel, &boot, "/dev/vdb");
}
