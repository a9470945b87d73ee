//! `podvm` command-line behaviour: help texts, and every configuration
//! error refused with exit code 2 and one line naming the problem, before
//! any VM is created.

mod common;

use common::*;

fn assert_usage_error(out: &RunOutput, expected: &str) {
    assert_eq!(out.code(), 2, "{out:?}");
    assert_eq!(out.stdout, "", "{out:?}");
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {out:?}");
    assert!(
        lines[0].starts_with("error: ") && lines[0].contains(expected),
        "expected {expected:?} in {:?}",
        lines[0]
    );
}

#[test]
fn help_explains_every_flag() {
    let out = run_podvm(&["--help"]);
    assert_eq!(out.code(), 0);
    for word in ["run", "doctor", "--log-level"] {
        assert!(
            out.stdout.contains(word),
            "{word} missing from podvm --help"
        );
    }
    let out = run_podvm(&["run", "--help"]);
    assert_eq!(out.code(), 0);
    for flag in [
        "--kernel",
        "--initrd",
        "--cmdline",
        "--vcpus",
        "--memory",
        "--serial",
        "--log-level",
    ] {
        assert!(
            out.stdout.contains(flag),
            "{flag} missing from podvm run --help"
        );
    }
    assert!(out
        .stdout
        .contains("console=ttyS0 reboot=k panic=1 pci=off"));
    assert!(out.stdout.contains("[default: 128]"));
}

#[test]
fn missing_kernel_file() {
    let out = run_podvm(&["run", "--kernel", "/nonexistent/vmlinux"]);
    assert_usage_error(
        &out,
        "kernel /nonexistent/vmlinux: No such file or directory",
    );
}

#[test]
fn file_that_is_not_a_kernel() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.txt");
    std::fs::write(&path, "just some text, certainly not a kernel\n".repeat(40)).unwrap();
    let out = run_podvm(&["run", "--kernel", path.to_str().unwrap()]);
    assert_usage_error(&out, "not a kernel image");
}

#[test]
fn vcpu_count_limits() {
    let hello = guest("hello");
    let k = hello.to_str().unwrap();
    let out = run_podvm(&["run", "--kernel", k, "--vcpus", "0"]);
    assert_usage_error(&out, "--vcpus: vcpu_count must be at least 1");
    let out = run_podvm(&["run", "--kernel", k, "--vcpus", "255"]);
    assert_usage_error(
        &out,
        "--vcpus: vcpu_count 255 is more than this host supports (254)",
    );
    // Not a number a vCPU count can be: clap's own usage error, also 2.
    let out = run_podvm(&["run", "--kernel", k, "--vcpus", "1000"]);
    assert_eq!(out.code(), 2);
}

#[test]
fn memory_too_small() {
    let hello = guest("hello");
    let out = run_podvm(&["run", "--kernel", hello.to_str().unwrap(), "--memory", "8"]);
    assert_usage_error(&out, "--memory: mem_size_mib 8 is too small");
}

#[test]
fn memory_too_small_for_the_kernel_or_initrd() {
    let dir = tempfile::tempdir().unwrap();
    // An ELF kernel whose one segment needs 64 MiB from 1 MiB.
    let big = dir.path().join("big-vmlinux");
    std::fs::write(&big, elf_with_memsz(64 << 20)).unwrap();
    let out = run_podvm(&["run", "--kernel", big.to_str().unwrap(), "--memory", "32"]);
    assert_usage_error(&out, "needs memory up to 65 MiB, but the guest has 32 MiB");

    let initrd = dir.path().join("initrd");
    std::fs::write(&initrd, vec![0u8; 20 << 20]).unwrap();
    let hello = guest("hello");
    let out = run_podvm(&[
        "run",
        "--kernel",
        hello.to_str().unwrap(),
        "--memory",
        "16",
        "--initrd",
        initrd.to_str().unwrap(),
    ]);
    assert_usage_error(&out, "(20480 KiB) does not fit between the kernel and the highest address it may use (0x1000000)");
}

#[test]
fn initrd_that_is_not_a_file() {
    let hello = guest("hello");
    let dir = tempfile::tempdir().unwrap();
    let out = run_podvm(&[
        "run",
        "--kernel",
        hello.to_str().unwrap(),
        "--initrd",
        dir.path().to_str().unwrap(),
    ]);
    assert_usage_error(&out, "not a regular file");
}

#[test]
fn kernel_entry_outside_the_mapped_gib() {
    if !kvm_available("kernel_entry_outside_the_mapped_gib") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let high = dir.path().join("high-vmlinux");
    std::fs::write(&high, elf_at(0x5000_0000, 1)).unwrap();
    let out = run_podvm(&[
        "run",
        "--kernel",
        high.to_str().unwrap(),
        "--memory",
        "2048",
    ]);
    assert_usage_error(
        &out,
        "64-bit entry point 0x50000000 is above the identity-mapped first GiB",
    );
}

#[test]
fn missing_initrd_file() {
    let hello = guest("hello");
    let out = run_podvm(&[
        "run",
        "--kernel",
        hello.to_str().unwrap(),
        "--initrd",
        "/nonexistent/initrd",
    ]);
    assert_usage_error(
        &out,
        "initrd /nonexistent/initrd: No such file or directory",
    );
}

#[test]
fn command_line_too_long() {
    let hello = guest("hello");
    let long = "x".repeat(2048);
    let out = run_podvm(&[
        "run",
        "--kernel",
        hello.to_str().unwrap(),
        "--cmdline",
        &long,
    ]);
    assert_usage_error(
        &out,
        "--cmdline: kernel command line is 2048 bytes long; the limit is 2047 bytes",
    );
}

#[test]
fn serial_file_that_cannot_be_created() {
    let hello = guest("hello");
    let out = run_podvm(&[
        "run",
        "--kernel",
        hello.to_str().unwrap(),
        "--serial",
        "file=/nonexistent/dir/console.log",
    ]);
    assert_usage_error(
        &out,
        "serial output /nonexistent/dir/console.log: No such file or directory",
    );
}

#[test]
fn bad_flag_values_are_usage_errors() {
    for args in [
        &["run", "--kernel", "/k", "--serial", "stderr"][..],
        &["run", "--kernel", "/k", "--memory", "lots"],
        &["run"],
        &["run", "--kernel", "/k", "--unknown"],
    ] {
        let out = run_podvm(args);
        assert_eq!(out.code(), 2, "{args:?}: {out:?}");
        assert!(out.stderr.starts_with("error: "), "{args:?}: {out:?}");
    }
}

/// A minimal x86_64 ELF executable at 1 MiB whose segment occupies
/// `memsz` bytes of memory.
fn elf_with_memsz(memsz: u64) -> Vec<u8> {
    elf_at(0x10_0000, memsz)
}

/// A minimal x86_64 ELF executable loaded and entered at `addr`.
fn elf_at(addr: u64, memsz: u64) -> Vec<u8> {
    let mut f = vec![0u8; 64 + 56];
    f[..4].copy_from_slice(b"\x7fELF");
    f[4] = 2; // 64-bit
    f[5] = 1; // little-endian
    f[6] = 1;
    f[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    f[18..20].copy_from_slice(&62u16.to_le_bytes()); // x86_64
    f[20..24].copy_from_slice(&1u32.to_le_bytes());
    f[24..32].copy_from_slice(&addr.to_le_bytes());
    f[32..40].copy_from_slice(&64u64.to_le_bytes());
    f[52..54].copy_from_slice(&64u16.to_le_bytes());
    f[54..56].copy_from_slice(&56u16.to_le_bytes());
    f[56..58].copy_from_slice(&1u16.to_le_bytes());
    let ph = &mut f[64..120];
    ph[0..4].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    ph[8..16].copy_from_slice(&120u64.to_le_bytes());
    ph[16..24].copy_from_slice(&addr.to_le_bytes());
    ph[24..32].copy_from_slice(&addr.to_le_bytes());
    ph[32..40].copy_from_slice(&1u64.to_le_bytes());
    ph[40..48].copy_from_slice(&memsz.to_le_bytes());
    f.push(0xf4);
    f
}

#[test]
fn doctor_reports_how_guests_run() {
    let out = run_podvm(&["doctor"]);
    if !kvm_available("doctor_reports_how_guests_run") {
        assert_eq!(out.code(), 1, "{out:?}");
        assert!(out.stdout.contains("[FAIL] /dev/kvm"), "{out:?}");
        return;
    }
    assert_eq!(out.code(), 0, "{out:?}");
    for check in [
        "/dev/kvm",
        "KVM API version: 12",
        "KVM capabilities: all",
        "/dev/net/tun",
    ] {
        assert!(out.stdout.contains(check), "{check} missing: {out:?}");
    }
    let speed = out
        .stdout
        .lines()
        .find(|l| l.contains("guest execution: "))
        .unwrap_or_else(|| panic!("no guest execution line: {out:?}"));
    assert!(
        speed.contains("hardware-accelerated") || speed.contains("will not reach user space"),
        "{speed}"
    );
    assert!(
        out.stdout.trim_end().ends_with("on this host.")
            || out.stdout.contains("with the limits above.")
    );
}
