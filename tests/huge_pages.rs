//! Huge pages end to end: `huge_pages: "2M"` boots a guest whose RAM is
//! hugetlb in `/proc/PID/smaps`, and a host with too few free huge pages
//! gets a 400 naming how many are needed and free.

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
