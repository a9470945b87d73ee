//! `podvm doctor`: can this host run pod-VMs, and how fast?
//!
//! Each check prints one line: `ok`, `warn` (podvm runs, a feature does
//! not) or `FAIL` (podvm cannot run). The exit code is 0 when podvm can run
//! guests here at all.

use std::fs::OpenOptions;
use std::io;
use std::path::Path;
use std::process::ExitCode;

use kvm_ioctls::{Cap, Kvm};
use vmm::probe::probe_guest_speed;

use crate::exit::EXIT_FAILURE;

/// The KVM API version every modern kernel reports.
const KVM_API_VERSION: i32 = 12;

/// Capabilities podvm cannot run without, and what each is for.
const REQUIRED_CAPS: &[(Cap, &str)] = &[
    (Cap::Irqchip, "in-kernel interrupt controller"),
    (Cap::Pit2, "in-kernel timer (PIT)"),
    (Cap::UserMemory, "guest memory slots"),
    (Cap::SetTssAddr, "TSS address"),
    (Cap::Irqfd, "device interrupts through eventfds"),
    (Cap::Ioeventfd, "device notifications through eventfds"),
    (Cap::ExtCpuid, "guest CPUID"),
    (Cap::MpState, "SMP start-up (INIT/SIPI)"),
    (Cap::ImmediateExit, "pausing vCPUs without races"),
];

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Status {
    Ok,
    Warn,
    Fail,
}

struct Report {
    worst: Status,
}

impl Report {
    fn line(&mut self, status: Status, what: &str, detail: &str) {
        let tag = match status {
            Status::Ok => "ok  ",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        };
        println!("[{tag}] {what}: {detail}");
        self.worst = self.worst.max(status);
    }
}

fn open_rw(path: &str) -> io::Result<std::fs::File> {
    OpenOptions::new().read(true).write(true).open(path)
}

fn check_kvm(report: &mut Report) -> Option<Kvm> {
    if !Path::new("/dev/kvm").exists() {
        report.line(
            Status::Fail,
            "/dev/kvm",
            "not found: KVM is not available (load kvm_intel or kvm_amd, or enable nested virtualization for this VM)",
        );
        return None;
    }
    if let Err(e) = open_rw("/dev/kvm") {
        let hint = if e.kind() == io::ErrorKind::PermissionDenied {
            " (add this user to the group owning /dev/kvm, usually `kvm`)"
        } else {
            ""
        };
        report.line(Status::Fail, "/dev/kvm", &format!("cannot open: {e}{hint}"));
        return None;
    }
    let kvm = match Kvm::new() {
        Ok(kvm) => kvm,
        Err(e) => {
            report.line(Status::Fail, "/dev/kvm", &format!("cannot open: {e}"));
            return None;
        }
    };
    report.line(Status::Ok, "/dev/kvm", "present, readable and writable");
    let version = kvm.get_api_version();
    if version == KVM_API_VERSION {
        report.line(Status::Ok, "KVM API version", &version.to_string());
    } else {
        report.line(
            Status::Fail,
            "KVM API version",
            &format!("{version}, podvm needs {KVM_API_VERSION}"),
        );
        return None;
    }
    let missing: Vec<String> = REQUIRED_CAPS
        .iter()
        .filter(|(cap, _)| !kvm.check_extension(*cap))
        .map(|(cap, what)| format!("{cap:?} ({what})"))
        .collect();
    if missing.is_empty() {
        report.line(
            Status::Ok,
            "KVM capabilities",
            &format!(
                "all {} present; up to {} vCPUs per VM",
                REQUIRED_CAPS.len(),
                kvm.get_max_vcpus()
            ),
        );
    } else {
        report.line(
            Status::Fail,
            "KVM capabilities",
            &format!("missing {}", missing.join(", ")),
        );
        return None;
    }
    if Path::new("/sys/module/kvm_pvm").exists() {
        report.line(
            Status::Warn,
            "KVM backend",
            "kvm_pvm (pagetable-based virtual machine): no hardware virtualization behind /dev/kvm",
        );
    }
    Some(kvm)
}

fn check_tun(report: &mut Report) {
    match open_rw("/dev/net/tun") {
        Ok(_) => report.line(
            Status::Ok,
            "/dev/net/tun",
            "present: tap network devices work",
        ),
        Err(e) => report.line(
            Status::Warn,
            "/dev/net/tun",
            &format!("cannot open ({e}): pod-VMs cannot have network devices"),
        ),
    }
}

fn check_guest_speed(report: &mut Report, kvm: &Kvm) {
    match probe_guest_speed(kvm) {
        Ok(r) if r.hardware_accelerated() => report.line(
            Status::Ok,
            "guest execution",
            &format!(
                "hardware-accelerated ({:.0} million instructions/s): Linux guests boot to user space",
                r.instructions_per_sec / 1e6
            ),
        ),
        Ok(r) => report.line(
            Status::Warn,
            "guest execution",
            &format!(
                "KVM's instruction emulator, not hardware ({:.2} million instructions/s, SSE {}): \
                 Linux guests will not reach user space on this host; tiny test guests and every \
                 VMM feature still work",
                r.instructions_per_sec / 1e6,
                if r.sse_works { "works" } else { "cannot run" }
            ),
        ),
        Err(e) => report.line(
            Status::Fail,
            "guest execution",
            &format!("cannot run a test guest: {e}"),
        ),
    }
}

/// How guest RAM can be backed here: transparent huge pages from podvm's
/// private tmpfs (or, without one, for a memfd as the host's shmem
/// setting allows), and the free 2 MiB huge pages for `huge_pages: "2M"`.
/// Neither is needed: the line is never a warning.
fn check_memory(report: &mut Report) {
    use vmm::memory::{prepare_ram_backing, shmem_thp_setting, BasePageBacking, SHMEM_THP_SETTING};
    let backing = prepare_ram_backing(None, true);
    let thp = match (&backing, shmem_thp_setting()) {
        (BasePageBacking::HugeTmpfs, _) => "transparent huge pages (a private tmpfs, \
             huge=within_size): 2 MiB pages where the guest touches a whole one (faster guests \
             and teardown, more memory for a sparse guest)"
            .to_string(),
        (BasePageBacking::Memfd(why), Some(m)) if backing.transparent_huge_pages() => format!(
            "transparent huge pages for a memfd (shmem_enabled {m}; no private tmpfs: {why})"
        ),
        (BasePageBacking::Memfd(why), Some(m)) => format!(
            "base pages: no private huge-page tmpfs ({why}) and shmem_enabled {m} \
             (`echo advise > {SHMEM_THP_SETTING}` gives a memfd transparent 2 MiB pages: a \
             1 GiB pod-VM's teardown 4x faster)"
        ),
        (BasePageBacking::BasePagesOnly, _) => "base pages (asked for)".to_string(),
        (BasePageBacking::Memfd(why), None) => format!(
            "base pages (no private huge-page tmpfs: {why}; no transparent huge pages for shmem \
             on this kernel)"
        ),
    };
    let huge = match vmm::memory::free_huge_pages_2m() {
        Ok(n) => format!("{n} free 2 MiB huge pages for huge_pages \"2M\""),
        Err(e) => format!("no 2 MiB huge pages for huge_pages \"2M\" ({e})"),
    };
    report.line(Status::Ok, "guest memory", &format!("{thp}; {huge}"));
}

/// Runs every check and prints the report.
pub fn run() -> ExitCode {
    let mut report = Report { worst: Status::Ok };
    let kvm = check_kvm(&mut report);
    check_tun(&mut report);
    check_memory(&mut report);
    if let Some(kvm) = &kvm {
        check_guest_speed(&mut report, kvm);
    }
    match report.worst {
        Status::Fail => {
            println!("podvm cannot run pod-VMs on this host.");
            ExitCode::from(EXIT_FAILURE)
        }
        Status::Warn => {
            println!("podvm can run pod-VMs on this host, with the limits above.");
            ExitCode::SUCCESS
        }
        Status::Ok => {
            println!("podvm can run pod-VMs on this host.");
            ExitCode::SUCCESS
        }
    }
}
