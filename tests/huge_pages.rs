//! Huge pages end to end: `huge_pages: "2M"` boots a guest whose RAM is
//! hugetlb in `/proc/PID/smaps`, a host with too few free huge pages gets
//! a 400 naming how many are needed and free, and base-page guest RAM gets
//! transparent huge pages unless `--no-guest-thp` says not to.

mod common;

use common::*;

/// The smaps fields of `pid`'s mappings, summed over every mapping.
fn smaps_total(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
    text.lines()
        .filter_map(|l| l.strip_prefix(field))
        .filter_map(|rest| rest.trim_start_matches(':').split_whitespace().next())
        .map(|kb| kb.parse::<u64>().unwrap())
        .sum()
}

#[test]
fn a_guest_with_huge_pages_runs_on_hugetlb_memory() {
    if !kvm_available("a_guest_with_huge_pages_runs_on_hugetlb_memory") {
        return;
    }
    // 64 MiB of guest RAM: 32 pages.
    let Some(_pool) =
        testkit::HugePages::reserve("a_guest_with_huge_pages_runs_on_hugetlb_memory", 32)
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("api.sock");
    let mut vm = spawn_podvm(&["serve", "--api-sock", sock.to_str().unwrap()]);
    let out = stream_stdout(&mut vm.0);
    wait_for_path(&sock);
    let (code, body) = http(
        &sock,
        "PUT",
        "/machine-config",
        r#"{"vcpu_count": 1, "mem_size_mib": 64, "huge_pages": "2M"}"#,
    );
    assert_eq!(code, 204, "{body}");
    let boot = format!(
        r#"{{"kernel_image_path": "{}", "boot_args": "console=ttyS0"}}"#,
        guest("counter").display()
    );
    assert_eq!(http(&sock, "PUT", "/boot-source", &boot).0, 204);
    action(&sock, "InstanceStart");
    let mut seen = String::new();
    // The guest runs (its counter ticks) from huge-page memory.
    wait_output(&out, &mut seen, "\n");
    let pid = vm.0.id();
    let hugetlb = smaps_total(pid, "Shared_Hugetlb") + smaps_total(pid, "Private_Hugetlb");
    assert!(
        hugetlb >= 2048,
        "the guest touched huge pages: {hugetlb} KiB hugetlb"
    );
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
    assert!(
        text.contains("KernelPageSize:     2048 kB"),
        "a 2 MiB-page mapping"
    );
    let (_, config) = http(&sock, "GET", "/machine-config", "");
    assert!(config.contains(r#""huge_pages":"2M""#), "{config}");
    action(&sock, "Shutdown");
    assert_eq!(wait_exit(&mut vm.0), 0);
}

#[test]
fn too_few_free_huge_pages_are_a_400_with_the_numbers() {
    if !kvm_available("too_few_free_huge_pages_are_a_400_with_the_numbers") {
        return;
    }
    let Some(_pool) =
        testkit::HugePages::reserve("too_few_free_huge_pages_are_a_400_with_the_numbers", 1)
    else {
        return;
    };
    let free: u64 =
        std::fs::read_to_string("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
    let resv: u64 =
        std::fs::read_to_string("/sys/kernel/mm/hugepages/hugepages-2048kB/resv_hugepages")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
    let free = free - resv;
    let needed = (free + 1).max(8);
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("api.sock");
    let _vm = spawn_podvm(&["serve", "--api-sock", sock.to_str().unwrap()]);
    wait_for_path(&sock);
    let body = format!(
        r#"{{"vcpu_count": 1, "mem_size_mib": {}, "huge_pages": "2M"}}"#,
        2 * needed
    );
    let (code, reply) = http(&sock, "PUT", "/machine-config", &body);
    assert_eq!(code, 400, "{reply}");
    assert!(reply.contains("fault_message"), "{reply}");
    assert!(
        reply.contains(&format!(
            "needs {needed} free 2 MiB huge pages, the host has {free}"
        )),
        "{reply}"
    );
    // An unknown size is refused naming the field.
    let (code, reply) = http(
        &sock,
        "PUT",
        "/machine-config",
        r#"{"vcpu_count": 1, "mem_size_mib": 64, "huge_pages": "1G"}"#,
    );
    assert_eq!(code, 400, "{reply}");
    assert!(reply.contains("huge_pages"), "{reply}");
}

/// The `ShmemPmdMapped` total of `pid` and whether its guest RAM is the
/// private tmpfs's file (`/podvm-guest-ram (deleted)`) or a memfd.
fn guest_ram_backing(pid: u32) -> (u64, String) {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let line = maps
        .lines()
        .find(|l| l.contains("podvm-guest-ram"))
        .unwrap_or_else(|| panic!("no guest RAM mapping in\n{maps}"));
    let name = line
        .split_whitespace()
        .skip(5)
        .collect::<Vec<_>>()
        .join(" ");
    (smaps_total(pid, "ShmemPmdMapped"), name)
}

/// Boots the counter guest with `flags` added to `podvm run`, waits for
/// its first tick and returns what backs its RAM.
fn boot_counter(flags: &[&str]) -> (u64, String) {
    let kernel = guest("counter");
    let mut args = vec![
        "run",
        "--kernel",
        kernel.to_str().unwrap(),
        "--memory",
        "64",
    ];
    args.extend_from_slice(flags);
    let mut vm = spawn_podvm(&args);
    let out = stream_stdout(&mut vm.0);
    let mut seen = String::new();
    wait_output(&out, &mut seen, "\n");
    let found = guest_ram_backing(vm.0.id());
    vm.0.kill().unwrap();
    vm.0.wait().unwrap();
    found
}

#[test]
fn base_page_guest_ram_gets_transparent_huge_pages_unless_told_not_to() {
    let name = "base_page_guest_ram_gets_transparent_huge_pages_unless_told_not_to";
    if !kvm_available(name) || !testkit::need_root(name) {
        return;
    }
    let setting = std::fs::read_to_string(vmm::memory::SHMEM_THP_SETTING).unwrap_or_default();
    if setting.contains("[deny]") || setting.contains("[force]") {
        testkit::skip(
            testkit::Need::HugePages,
            name,
            format_args!("the host's shmem THP setting overrides podvm's: {setting}"),
        );
        return;
    }
    // As root, podvm can mount its private tmpfs whatever the host's shmem
    // setting.
    let (pmd, file) = boot_counter(&[]);
    assert_eq!(file, "/podvm-guest-ram (deleted)");
    assert!(
        pmd >= 2048,
        "a 2 MiB page of guest RAM mapped whole: {pmd} KiB"
    );
    let (pmd, file) = boot_counter(&["--no-guest-thp"]);
    assert_eq!(file, "/memfd:podvm-guest-ram (deleted)");
    assert_eq!(pmd, 0, "no huge page with --no-guest-thp");
}
