//! The VM generation id as a guest sees it: the `vmgenid` test guest finds
//! it through the ACPI tables (the `VMGENCTR` device's `ADDR` package) and
//! reads it there; it must be what podvm wrote (logged at info level as
//! `vmgenid: <hex>`), different in every VM, with the Generic Event
//! Device's interrupt on GSI 3.
//!
//! That the id changes when a VM is restored, and that the guest sees the
//! change, is tested with the snapshot path: boot this guest with
//! `vmgenid.wait=1` (it prints `vmgenid-waiting` and polls), pause,
//! snapshot, load, resume; it then prints `vmgenid-changed: <new id>` (the
//! restored process's last `vmgenid:` log line) and `vmgenid-irq: 3`.

mod common;

use common::*;

/// The id the guest printed and the one podvm logged, checked to be one
/// well-formed id.
fn ids(out: &RunOutput) -> String {
    let guest = out
        .value("vmgenid")
        .unwrap_or_else(|| panic!("the guest printed no id: {out:?}"));
    assert_eq!(guest.len(), 32, "{guest:?}");
    assert!(
        guest
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)),
        "{guest:?}"
    );
    assert_ne!(guest, "0".repeat(32), "an id of zeros was never written");
    let logged: Vec<&str> = out
        .stderr
        .lines()
        .filter_map(|l| l.strip_prefix("podvm: info: vmgenid: "))
        .collect();
    assert_eq!(logged, [guest], "one id, the one podvm wrote: {out:?}");
    guest.to_string()
}

#[test]
fn the_guest_reads_the_id_podvm_wrote_where_acpi_says() {
    if !kvm_available("the_guest_reads_the_id_podvm_wrote_where_acpi_says") {
        return;
    }
    let out = run_guest("vmgenid", &["--log-level", "info"]);
    assert_eq!(out.code(), 0, "{out:?}");
    let id = ids(&out);
    assert_eq!(
        out.lines(),
        [
            "vmgenid-addr: 0xef000",
            &format!("vmgenid: {id}"),
            "vmgenid-ged-gsi: 3",
        ],
        "{out:?}"
    );
}

#[test]
fn every_vm_gets_its_own_id() {
    if !kvm_available("every_vm_gets_its_own_id") {
        return;
    }
    let first = ids(&run_guest("vmgenid", &["--log-level", "info"]));
    let second = ids(&run_guest("vmgenid", &["--log-level", "info"]));
    assert_ne!(first, second);
}

#[test]
fn the_id_and_its_interrupt_sit_beside_every_virtio_slot() {
    if !kvm_available("the_id_and_its_interrupt_sit_beside_every_virtio_slot") {
        return;
    }
    // The most virtio devices a VM can have (GSIs 5 to 23): the DSDT lists
    // them all before VGEN and GED_, whose line stays GSI 3.
    let dir = tempfile::tempdir().unwrap();
    let mut args: Vec<String> = vec!["--log-level".into(), "info".into(), "--rng".into()];
    for i in 0..resources::MAX_VIRTIO_DEVICES - 1 {
        let disk = dir.path().join(format!("d{i}"));
        std::fs::write(&disk, [0u8; 4096]).unwrap();
        args.push("--disk".into());
        args.push(format!("path={}", disk.display()));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_guest("vmgenid", &args);
    assert_eq!(out.code(), 0, "{out:?}");
    let id = ids(&out);
    assert_eq!(
        out.lines(),
        [
            "vmgenid-addr: 0xef000",
            &format!("vmgenid: {id}"),
            "vmgenid-ged-gsi: 3",
        ],
        "{out:?}"
    );
}

#[test]
fn a_guest_waiting_for_a_new_id_sees_none_on_a_plain_boot() {
    if !kvm_available("a_guest_waiting_for_a_new_id_sees_none_on_a_plain_boot") {
        return;
    }
    // Nothing regenerates the id of a VM that is not restored: the guest's
    // bounded wait ends, and neither the id nor its interrupt changed.
    let out = run_guest(
        "vmgenid",
        &["--log-level", "info", "--cmdline", "vmgenid.wait=1"],
    );
    assert_eq!(out.code(), 0, "{out:?}");
    let id = ids(&out);
    assert_eq!(
        out.lines(),
        [
            "vmgenid-addr: 0xef000",
            &format!("vmgenid: {id}"),
            "vmgenid-ged-gsi: 3",
            "vmgenid-waiting",
            "vmgenid-unchanged",
        ],
        "{out:?}"
    );
}
