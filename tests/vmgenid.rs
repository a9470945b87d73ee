//! The VM generation id as a guest sees it: the `vmgenid` test guest finds
//! it through the ACPI tables (the `VMGENCTR` device's `ADDR` package) and
//! reads it there; it must be what podvm wrote (logged at info level as
//! `vmgenid: <hex>`), different in every VM, with the Generic Event
//! Device's interrupt on GSI 3.
//!
//! A VM restored from a snapshot gets a new id, and its guest sees it: the
//! guest, booted with `vmgenid.wait=1`, is paused and saved while it polls
//! the id; each restored copy prints `vmgenid-changed: <its new id>` and
//! `vmgenid-irq: 3` (the Generic Event Device's edge).

mod common;

use std::path::Path;
use std::time::Duration;

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

/// The value after `podvm: info: vmgenid: ` in each line of a log.
fn logged_ids(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter_map(|l| l.strip_prefix("podvm: info: vmgenid: "))
        .map(str::to_string)
        .collect()
}

/// Boots the guest with `vmgenid.wait=1` through the API, pauses it while
/// it polls and saves it to `state`/`mem`; returns the id it read.
fn saved_waiting_guest(dir: &Path, state: &Path, mem: &Path) -> String {
    let sock = dir.join("original.sock");
    let mut vm = spawn_podvm(&[
        "--log-level".as_ref(),
        "info".as_ref(),
        "serve".as_ref(),
        "--api-sock".as_ref(),
        sock.as_os_str(),
    ]);
    wait_for_path(&sock);
    let out = stream_stdout(&mut vm.0);
    let boot = serde_json::json!({
        "kernel_image_path": guest("vmgenid"),
        "boot_args": "vmgenid.wait=1",
    });
    let (code, reply) = http(&sock, "PUT", "/boot-source", &boot.to_string());
    assert_eq!(code, 204, "{reply}");
    action(&sock, "InstanceStart");
    let mut seen = String::new();
    // The guest polls for at most ~1 s of its own running time; paused, it
    // spends none of it.
    wait_output(&out, &mut seen, "vmgenid-waiting\n");
    let (code, reply) = http(&sock, "PATCH", "/vm", r#"{"state": "Paused"}"#);
    assert_eq!(code, 204, "{reply}");
    let body = serde_json::json!({
        "snapshot_type": "Full", "snapshot_path": state, "mem_file_path": mem,
    });
    let (code, reply) = http(&sock, "PUT", "/snapshot/create", &body.to_string());
    assert_eq!(code, 204, "{reply}");
    action(&sock, "Shutdown");
    assert_eq!(wait_exit(&mut vm.0), 0);
    drain_until_quiet(&out, &mut seen, Duration::from_millis(50), "exit");
    assert!(
        !seen.contains("vmgenid-unchanged"),
        "paused too late: {seen}"
    );
    let mut err = String::new();
    std::io::Read::read_to_string(&mut vm.0.stderr.take().unwrap(), &mut err).unwrap();
    let id = seen
        .lines()
        .find_map(|l| l.strip_prefix("vmgenid: "))
        .unwrap_or_else(|| panic!("no id read: {seen}"))
        .to_string();
    assert_eq!(logged_ids(&err), std::slice::from_ref(&id), "{err}");
    id
}

#[test]
fn every_restored_copy_gets_a_new_id_and_its_guest_is_told() {
    if !kvm_available("every_restored_copy_gets_a_new_id_and_its_guest_is_told") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (state, mem) = (dir.path().join("vm.state"), dir.path().join("vm.mem"));
    let original = saved_waiting_guest(dir.path(), &state, &mem);
    let mut copies = Vec::new();
    for _ in 0..2 {
        let out = run_podvm(&[
            "--log-level",
            "info",
            "run",
            "--restore",
            state.to_str().unwrap(),
            "--mem-file",
            mem.to_str().unwrap(),
        ]);
        assert_eq!(out.code(), 0, "{out:?}");
        // The guest goes on polling where it was saved: no reboot, the new
        // id, and the interrupt that announced it.
        let new = logged_ids(&out.stderr);
        assert_eq!(new.len(), 1, "{out:?}");
        assert_eq!(
            out.lines(),
            [
                format!("vmgenid-changed: {}", new[0]).as_str(),
                "vmgenid-irq: 3"
            ],
            "{out:?}"
        );
        assert_ne!(new[0], original);
        copies.push(new[0].clone());
    }
    assert_ne!(
        copies[0], copies[1],
        "two copies of one snapshot share an id"
    );
}

/// Ten clones of one snapshot at once: each sees its own new generation id
/// (the one podvm logged for it), none sees another's, and the memory file
/// they all map is left as it was (every write stays in its clone).
#[test]
fn ten_clones_at_once_each_get_their_own_id_and_share_nothing_they_write() {
    if !kvm_available("ten_clones_at_once_each_get_their_own_id_and_share_nothing_they_write") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (state, mem) = (dir.path().join("vm.state"), dir.path().join("vm.mem"));
    let original = saved_waiting_guest(dir.path(), &state, &mem);
    let before = std::fs::read(&mem).unwrap();
    let clones: Vec<std::process::Child> = (0..10)
        .map(|_| {
            podvm()
                .args(["--log-level", "info", "run", "--restore"])
                .arg(&state)
                .arg("--mem-file")
                .arg(&mem)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut ids = std::collections::BTreeSet::new();
    for child in clones {
        let out = wait_with_deadline(child);
        assert_eq!(out.code(), 0, "{out:?}");
        let logged = logged_ids(&out.stderr);
        assert_eq!(logged.len(), 1, "{out:?}");
        assert_eq!(
            out.lines(),
            [
                format!("vmgenid-changed: {}", logged[0]).as_str(),
                "vmgenid-irq: 3"
            ],
            "a clone saw an id that is not its own: {out:?}"
        );
        assert_ne!(logged[0], original);
        ids.insert(logged[0].clone());
    }
    assert_eq!(ids.len(), 10, "clones shared an id: {ids:?}");
    assert!(
        std::fs::read(&mem).unwrap() == before,
        "a clone's write reached the memory file the others map"
    );
}
