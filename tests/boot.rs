//! Boots the tiny test guests (tests/guests/) in real KVM VMs through the
//! `podvm run` binary and checks what they saw and how podvm ended.

mod common;

use std::io::Write;
use std::process::Stdio;

use common::*;

const MIB: u64 = 1 << 20;

#[test]
fn hello_guest_prints_and_resets_cleanly() {
    if !kvm_available("hello_guest_prints_and_resets_cleanly") {
        return;
    }
    let out = run_guest("hello", &[]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert_eq!(out.lines(), ["Hello from podvm guest"], "{out:?}");
    assert_eq!(
        out.stderr, "",
        "a clean run logs nothing at the default level"
    );
}

#[test]
fn bzimage_kernels_boot() {
    if !kvm_available("bzimage_kernels_boot") {
        return;
    }
    let out = run_guest("hello.bzimage", &[]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert_eq!(out.lines(), ["Hello from podvm bzImage guest"], "{out:?}");
}

/// Usable RAM podvm reports for a guest of `mib` MiB: all of it but the
/// legacy hole between 640 KiB and 1 MiB.
fn expected_ram(mib: u64) -> u64 {
    mib * MIB - (0x10_0000 - 0xa_0000)
}

#[test]
fn boot_params_carry_e820_cmdline_and_initrd() {
    if !kvm_available("boot_params_carry_e820_cmdline_and_initrd") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let initrd = dir.path().join("initrd.img");
    let content: Vec<u8> = (0u8..16).chain(std::iter::repeat_n(0xab, 8000)).collect();
    std::fs::write(&initrd, &content).unwrap();
    let cmdline = "console=ttyS0 reboot=k panic=1 pci=off podvm.tag=t42 x=\"a b\"";
    let out = run_guest(
        "bootparams",
        &[
            "--memory",
            "96",
            "--cmdline",
            cmdline,
            "--initrd",
            initrd.to_str().unwrap(),
        ],
    );
    assert_eq!(out.code(), 0, "{out:?}");
    assert_eq!(out.value("cmdline"), Some(cmdline), "{out:?}");
    assert_eq!(
        out.value("cmdline-size"),
        Some(cmdline.len().to_string().as_str())
    );
    assert_eq!(out.value("hdr-magic"), Some("HdrS"));
    assert_eq!(out.value("boot-flag"), Some("aa55"));
    assert_eq!(out.value("zero-page"), Some("0x7000"));
    assert_eq!(
        out.value("e820-ram-total"),
        Some(expected_ram(96).to_string().as_str()),
        "{out:?}"
    );
    let e820: Vec<&str> = out
        .lines()
        .into_iter()
        .filter_map(|l| l.strip_prefix("e820: "))
        .collect();
    assert_eq!(
        e820,
        ["0x0 0xa0000 1", "0xe0000 0x20000 2", "0x100000 0x5f00000 1"]
    );
    // The ACPI tables: the kernel is told where the RSDP is, and it is
    // there (where a scanning kernel also finds it).
    assert_eq!(out.value("acpi-rsdp"), Some("0xe0000"), "{out:?}");
    assert_eq!(out.value("acpi-rsdp-sig"), Some("RSD PTR "), "{out:?}");
    // The initrd sits page-aligned at the top of RAM, with its content.
    let initrd_line = out.value("initrd").expect("initrd line");
    let size = content.len() as u64;
    let addr = (96 * MIB - size) & !0xfff;
    assert_eq!(initrd_line, format!("{addr:#x} {size:#x}"));
    let head = out.value("initrd-head").expect("initrd head");
    assert_eq!(head, "000102030405060708090a0b0c0d0e0f");
    assert_eq!(out.value("cmdline-tag"), Some("t42"));
    assert!(out.lines().contains(&"bootparams-done"));
}

#[test]
fn memory_sizes_from_the_smallest_to_past_the_mmio_gap() {
    if !kvm_available("memory_sizes_from_the_smallest_to_past_the_mmio_gap") {
        return;
    }
    for mib in [16u64, 3328, 4096] {
        let m = mib.to_string();
        let out = run_guest("bootparams", &["--memory", &m]);
        assert_eq!(out.code(), 0, "{mib} MiB: {out:?}");
        assert_eq!(
            out.value("e820-ram-total"),
            Some(expected_ram(mib).to_string().as_str()),
            "{mib} MiB: {out:?}"
        );
        let entries: usize = out.value("e820-entries").unwrap().parse().unwrap();
        // RAM above 3.25 GiB moves past the MMIO gap to 4 GiB.
        assert_eq!(entries, if mib > 3328 { 4 } else { 3 }, "{mib} MiB");
        if mib > 3328 {
            let high = format!("0x100000000 {:#x} 1", (mib - 3328) * MIB);
            assert!(
                out.lines().contains(&format!("e820: {high}").as_str()),
                "{out:?}"
            );
        }
    }
}

#[test]
fn every_vcpu_is_started_by_init_sipi() {
    if !kvm_available("every_vcpu_is_started_by_init_sipi") {
        return;
    }
    for n in [1u8, 2, 3, 8] {
        let out = run_guest("smp", &["--vcpus", &n.to_string()]);
        assert_eq!(out.code(), 0, "{n} vCPUs: {out:?}");
        assert_eq!(
            out.value("mptable"),
            Some(format!("{n} cpus").as_str()),
            "{out:?}"
        );
        for id in 0..n {
            assert!(
                out.lines().contains(&format!("cpu {id} up").as_str()),
                "vCPU {id} of {n} did not report: {out:?}"
            );
        }
        assert_eq!(out.value("smp"), Some(format!("{n} cpus up").as_str()));
    }
}

#[test]
fn boot_timer_reports_the_guest_boot_time() {
    if !kvm_available("boot_timer_reports_the_guest_boot_time") {
        return;
    }
    let out = run_guest("boottimer", &["--log-level", "info"]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert_eq!(out.lines(), ["boottimer-start", "boottimer-done"]);
    let us: u64 = out
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("podvm: info: guest-boot-time = "))
        .and_then(|v| v.strip_suffix(" us"))
        .unwrap_or_else(|| panic!("no boot time logged: {out:?}"))
        .parse()
        .unwrap();
    assert!(us > 0);
}

#[test]
fn acpi_power_off_and_reset_end_the_vm_cleanly() {
    if !kvm_available("acpi_power_off_and_reset_end_the_vm_cleanly") {
        return;
    }
    for (op, last, logged) in [
        ("off", "acpi-poweroff", "podvm: info: guest powered off"),
        ("reset", "acpi-reset-write", "podvm: info: guest reset"),
    ] {
        let cmdline = format!("acpi.op={op}");
        let out = run_guest(
            "acpi_power",
            &["--log-level", "info", "--cmdline", &cmdline],
        );
        assert_eq!(out.code(), 0, "{op}: {out:?}");
        // The guest found the ports in the FADT and S5 in the DSDT.
        assert_eq!(
            out.lines(),
            [
                "acpi-sleep-control: 0x600",
                "acpi-reset: 0x602 0x1",
                "acpi-s5: 0x5",
                last
            ],
            "{op}: {out:?}"
        );
        assert!(out.stderr.lines().any(|l| l == logged), "{op}: {out:?}");
    }
}

#[test]
fn acpi_tables_describe_every_virtio_device_where_it_is() {
    if !kvm_available("acpi_tables_describe_every_virtio_device_where_it_is") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let disks: Vec<String> = ["a", "b"]
        .iter()
        .map(|name| {
            let disk = dir.path().join(name);
            std::fs::write(&disk, [0u8; 4096]).unwrap();
            format!("path={}", disk.display())
        })
        .collect();
    let out = run_guest(
        "acpi_devices",
        &["--disk", &disks[0], "--disk", &disks[1], "--rng"],
    );
    assert_eq!(out.code(), 0, "{out:?}");
    // In slot order: the drives (virtio id 2), then the entropy device (4),
    // each where its registers answer with the virtio magic.
    assert_eq!(
        out.lines(),
        [
            "acpi-virtio: 0xd0000000 gsi=5 magic=0x74726976 id=2",
            "acpi-virtio: 0xd0001000 gsi=6 magic=0x74726976 id=2",
            "acpi-virtio: 0xd0002000 gsi=7 magic=0x74726976 id=4",
            "acpi-virtio-count: 3",
        ],
        "{out:?}"
    );
    // No device: no LNRO0005 entry.
    let out = run_guest("acpi_devices", &[]);
    assert_eq!(out.lines(), ["acpi-virtio-count: 0"], "{out:?}");
}

#[test]
fn triple_fault_exits_3_with_the_rip() {
    if !kvm_available("triple_fault_exits_3_with_the_rip") {
        return;
    }
    let out = run_guest("triplefault", &[]);
    assert_eq!(out.code(), 3, "{out:?}");
    assert_eq!(out.lines(), ["about to triple fault"]);
    let line = out.stderr.trim_end();
    assert!(
        line.starts_with("error: guest triple-faulted at RIP=0x10"),
        "{line:?}"
    );
}

#[test]
fn unemulatable_instruction_exits_4_with_its_bytes() {
    if !kvm_available("unemulatable_instruction_exits_4_with_its_bytes") {
        return;
    }
    let out = run_guest("sse", &[]);
    match out.code() {
        // Under KVM's instruction emulator (HOST.md) SSE cannot run.
        4 => {
            assert_eq!(out.lines(), ["sse-start"]);
            let line = out.stderr.trim_end();
            assert!(line.starts_with("error: KVM could not emulate"), "{line}");
            assert!(line.contains("(bytes at RIP: 66 0f d4 c1"), "{line}");
            assert!(line.contains("podvm doctor"), "{line}");
        }
        // With hardware virtualization it simply runs.
        0 => assert_eq!(out.lines(), ["sse-start", "sse-ok"]),
        other => panic!("unexpected exit code {other}: {out:?}"),
    }
}

#[test]
fn stdin_reaches_the_guest_console() {
    if !kvm_available("stdin_reaches_the_guest_console") {
        return;
    }
    let mut child = podvm()
        .args(["run", "--kernel", guest("echo").to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // More than the 64-byte receive FIFO, so flow control is exercised, and
    // a Ctrl-A, which only a terminal treats as podvm's escape.
    let line = "a line typed on the host that is longer than the UART FIFO holds \x01x and more.";
    assert!(line.len() > 64);
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{line}\n").as_bytes())
        .unwrap();
    let out = wait_with_deadline(child);
    assert_eq!(out.code(), 0, "{out:?}");
    assert_eq!(out.lines(), ["echo-ready", &format!("echo: {line}")]);
}

#[test]
fn serial_output_to_a_file_or_nowhere() {
    if !kvm_available("serial_output_to_a_file_or_nowhere") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("console.log");
    let out = run_guest("hello", &["--serial", &format!("file={}", log.display())]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert_eq!(out.stdout, "");
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "Hello from podvm guest\n"
    );
    let out = run_guest("hello", &["--serial", "off"]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert_eq!(out.stdout, "");
}

#[test]
fn pvh_kernels_enter_in_32_bit_mode_with_start_info() {
    if !kvm_available("pvh_kernels_enter_in_32_bit_mode_with_start_info") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let initrd = dir.path().join("initrd");
    std::fs::write(&initrd, [7u8; 23]).unwrap();
    let out = run_guest(
        "pvh",
        &[
            "--memory",
            "6144",
            "--cmdline",
            "console=ttyS0 hello=pvh",
            "--initrd",
            initrd.to_str().unwrap(),
        ],
    );
    assert_eq!(out.code(), 0, "{out:?}");
    assert_eq!(out.value("pvh-entry"), Some("32-bit"), "{out:?}");
    assert_eq!(out.value("pvh-magic"), Some("336ec578"));
    assert_eq!(out.value("pvh-version"), Some("1"));
    assert_eq!(out.value("cmdline"), Some("console=ttyS0 hello=pvh"));
    assert_eq!(out.value("memmap-entries"), Some("4"));
    assert_eq!(
        out.value("memmap-ram-total"),
        Some(expected_ram(6144).to_string().as_str())
    );
    assert!(
        out.lines().contains(&"memmap: 0x100000000 0xb0000000 1"),
        "{out:?}"
    );
    assert_eq!(out.value("modules"), Some("1"));
    assert_eq!(out.value("module"), Some("0xcffff000 0x17"));
    assert_eq!(out.value("rsdp"), Some("0xe0000"), "{out:?}");
    assert_eq!(out.value("rsdp-sig"), Some("RSD PTR "), "{out:?}");
    assert!(out.lines().contains(&"pvh-done"));
}

#[test]
fn sigterm_stops_the_vm_in_order() {
    if !kvm_available("sigterm_stops_the_vm_in_order") {
        return;
    }
    let mut guard = KillOnDrop(
        podvm()
            .args(["run", "--kernel", guest("counter").to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let child = &mut guard.0;
    // Wait (with a deadline) until the guest runs, then ask podvm to stop.
    let out = stream_stdout(child);
    let mut seen = String::new();
    wait_output(&out, &mut seen, "tick 1\n");
    // SAFETY: sends a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = wait_status(child);
    assert_eq!(
        status.code(),
        Some(128 + libc::SIGTERM),
        "an exit, not a death by signal"
    );
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(err.trim_end(), "podvm: stopped by SIGTERM");
}
