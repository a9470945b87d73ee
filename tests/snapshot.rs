//! Snapshots end to end: a paused VM is saved (`PUT /snapshot/create`),
//! its process ends, and a new process loads it (`PUT /snapshot/load`) and
//! goes on where it stopped; bad snapshots are refused, each with its
//! reason, and the process can load a good one afterwards.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

/// `podvm serve --api-sock <dir>/<name>.sock`, accepting.
fn serve(dir: &Path, name: &str) -> (KillOnDrop, PathBuf) {
    serve_logging(dir, name, "warn")
}

/// [`serve`] at log level `level` (`info` logs each snapshot's size).
fn serve_logging(dir: &Path, name: &str, level: &str) -> (KillOnDrop, PathBuf) {
    let sock = dir.join(format!("{name}.sock"));
    let vm = spawn_podvm(&[
        "--log-level".as_ref(),
        level.as_ref(),
        "serve".as_ref(),
        "--api-sock".as_ref(),
        sock.as_os_str(),
    ]);
    wait_for_path(&sock);
    (vm, sock)
}

/// The guest pages the snapshots of a process wrote, from its info log.
fn pages_written(vm: &mut KillOnDrop) -> Vec<u64> {
    let mut err = String::new();
    std::io::Read::read_to_string(&mut vm.0.stderr.take().unwrap(), &mut err).unwrap();
    err.lines()
        .filter_map(|l| l.split(" written (").nth(1))
        .filter_map(|rest| rest.split(' ').next()?.parse().ok())
        .collect()
}

fn put(sock: &Path, path: &str, body: &str) {
    let (code, reply) = http(sock, "PUT", path, body);
    assert_eq!(code, 204, "PUT {path} {body}: {reply}");
}

fn patch_vm(sock: &Path, state: &str) {
    let (code, reply) = http(sock, "PATCH", "/vm", &format!(r#"{{"state": "{state}"}}"#));
    assert_eq!(code, 204, "{state}: {reply}");
}

fn create(sock: &Path, kind: &str, state: &Path, mem: &Path) -> (u16, String) {
    let body = serde_json::json!({
        "snapshot_type": kind, "snapshot_path": state, "mem_file_path": mem,
    });
    http(sock, "PUT", "/snapshot/create", &body.to_string())
}

fn load_body(state: &Path, mem: &Path, resume: bool) -> String {
    serde_json::json!({
        "snapshot_path": state,
        "mem_backend": {"backend_type": "File", "backend_path": mem},
        "resume_vm": resume,
    })
    .to_string()
}

/// The tick numbers in `text`, in order (a line cut by a pause is
/// completed by the restored VM's first bytes).
fn ticks(text: &str) -> Vec<u64> {
    text.lines()
        .filter_map(|l| l.strip_prefix("tick ").and_then(|n| n.parse().ok()))
        .collect()
}

/// A counter guest booted through the API, paused after `n` ticks, and
/// saved to `state`/`mem`; returns what it printed. Its process is gone.
fn saved_counter(dir: &Path, n: u64, state: &Path, mem: &Path) -> String {
    let (mut vm, sock) = serve(dir, "original");
    let out = stream_stdout(&mut vm.0);
    let boot = format!(
        r#"{{"kernel_image_path": "{}"}}"#,
        guest("counter").display()
    );
    put(&sock, "/boot-source", &boot);
    action(&sock, "InstanceStart");
    let mut seen = String::new();
    wait_output(&out, &mut seen, &format!("tick {n}\n"));
    patch_vm(&sock, "Paused");
    drain_until_quiet(&out, &mut seen, Duration::from_millis(100), "pause");
    let (code, reply) = create(&sock, "Full", state, mem);
    assert_eq!(code, 204, "{reply}");
    // The original goes away for good before the copy runs.
    action(&sock, "Shutdown");
    assert_eq!(wait_exit(&mut vm.0), 0);
    drain_until_quiet(&out, &mut seen, Duration::from_millis(50), "exit");
    seen
}

#[test]
fn a_restored_vm_counts_on_from_where_it_was_saved() {
    if !kvm_available("a_restored_vm_counts_on_from_where_it_was_saved") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (state, mem) = (dir.path().join("vm.state"), dir.path().join("vm.mem"));
    let before = saved_counter(dir.path(), 3, &state, &mem);
    let last = *ticks(&before).last().unwrap();

    let (mut vm, sock) = serve(dir.path(), "restored");
    let out = stream_stdout(&mut vm.0);
    put(&sock, "/snapshot/load", &load_body(&state, &mem, true));
    let (_, info) = http(&sock, "GET", "/", "");
    assert!(info.contains(r#""state":"Running""#), "{info}");
    let mut after = String::new();
    wait_output(&out, &mut after, &format!("tick {}\n", last + 3));
    // No reboot: the count goes on from the saved one, with no gap.
    let all = ticks(&format!("{before}{after}"));
    let expected: Vec<u64> = (0..all.len() as u64).collect();
    assert_eq!(all, expected, "before: {before:?} after: {after:?}");
    assert!(!after.contains("tick 0\n"), "{after}");
    // The configuration came with it.
    let (_, config) = http(&sock, "GET", "/vm/config", "");
    assert!(config.contains("counter"), "{config}");
    action(&sock, "Shutdown");
    assert_eq!(wait_exit(&mut vm.0), 0);
}

#[test]
fn a_load_without_resume_stays_paused_until_resumed() {
    if !kvm_available("a_load_without_resume_stays_paused_until_resumed") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (state, mem) = (dir.path().join("vm.state"), dir.path().join("vm.mem"));
    let before = saved_counter(dir.path(), 1, &state, &mem);
    let last = *ticks(&before).last().unwrap();
    let (mut vm, sock) = serve(dir.path(), "restored");
    let out = stream_stdout(&mut vm.0);
    put(&sock, "/snapshot/load", &load_body(&state, &mem, false));
    let (_, info) = http(&sock, "GET", "/", "");
    assert!(info.contains(r#""state":"Paused""#), "{info}");
    assert!(
        out.recv_timeout(Duration::from_millis(300)).is_err(),
        "a paused VM prints nothing"
    );
    patch_vm(&sock, "Resumed");
    let mut after = String::new();
    wait_output(&out, &mut after, &format!("tick {}\n", last + 1));
    action(&sock, "Shutdown");
    assert_eq!(wait_exit(&mut vm.0), 0);
}

#[test]
fn bad_snapshots_are_refused_with_the_reason_and_a_good_one_loads_after() {
    if !kvm_available("bad_snapshots_are_refused_with_the_reason_and_a_good_one_loads_after") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (state, mem) = (dir.path().join("vm.state"), dir.path().join("vm.mem"));
    saved_counter(dir.path(), 1, &state, &mem);
    let good = std::fs::read(&state).unwrap();
    let bad = |name: &str, bytes: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let truncated = bad("truncated.state", &good[..good.len() / 2]);
    let mut flipped = good.clone();
    let at = flipped.len() - 10;
    flipped[at] ^= 0x40;
    let corrupted = bad("corrupted.state", &flipped);
    let mut magic = good.clone();
    magic[0] = b'X';
    let not_ours = bad("magic.state", &magic);
    let mut version = good.clone();
    version[8] = version[8].wrapping_add(1);
    let new_version = bad("version.state", &version);
    let short_mem = dir.path().join("short.mem");
    std::fs::write(&short_mem, vec![0u8; 4096]).unwrap();

    let (mut vm, sock) = serve(dir.path(), "restored");
    let out = stream_stdout(&mut vm.0);
    for (state_file, mem_file, reason) in [
        (&truncated, &mem, "truncated"),
        (&corrupted, &mem, "checksum"),
        (&not_ours, &mem, "not a podvm snapshot"),
        (&new_version, &mem, "version"),
        (&dir.path().join("missing.state"), &mem, "No such file"),
        (&state, &short_mem, "short.mem"),
        (&state, &dir.path().join("missing.mem"), "missing.mem"),
    ] {
        let (code, body) = http(
            &sock,
            "PUT",
            "/snapshot/load",
            &load_body(state_file, mem_file, true),
        );
        assert_eq!(code, 400, "{}: {body}", state_file.display());
        assert!(
            body.to_lowercase().contains(&reason.to_lowercase()),
            "{}: {body} does not say {reason:?}",
            state_file.display()
        );
        let (_, info) = http(&sock, "GET", "/", "");
        assert!(info.contains("Not started"), "{info}");
    }
    // Creating needs a paused VM of this process.
    let (code, body) = create(&sock, "Full", &dir.path().join("x"), &dir.path().join("y"));
    assert_eq!(code, 400);
    assert!(body.contains("not running"), "{body}");
    // And the good one still loads in the same process.
    put(&sock, "/snapshot/load", &load_body(&state, &mem, true));
    let mut after = String::new();
    wait_output(&out, &mut after, "tick ");
    // A second load is refused: this process runs a VM now.
    let (code, body) = http(
        &sock,
        "PUT",
        "/snapshot/load",
        &load_body(&state, &mem, true),
    );
    assert_eq!(code, 400);
    assert!(body.contains("runs a VM already"), "{body}");
    action(&sock, "Shutdown");
    assert_eq!(wait_exit(&mut vm.0), 0);
}

#[test]
fn a_restored_guest_keeps_using_its_disk() {
    if !kvm_available("a_restored_guest_keeps_using_its_disk") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (state, mem) = (dir.path().join("vm.state"), dir.path().join("vm.mem"));
    let disk = dir.path().join("d.img");
    std::fs::write(&disk, vec![0u8; 64 * 512]).unwrap();
    let (mut vm, sock) = serve(dir.path(), "original");
    let out = stream_stdout(&mut vm.0);
    let boot = serde_json::json!({
        "kernel_image_path": guest("virtio_blk"),
        "boot_args": "console=ttyS0 blk.write=8:4:9 blk.read2=8:4 blk.wait_config=1 blk.read3=8:4 blk.hold=1",
    });
    put(&sock, "/boot-source", &boot.to_string());
    let drive =
        serde_json::json!({"drive_id": "data", "path_on_host": disk, "is_root_device": false});
    put(&sock, "/drives/data", &drive.to_string());
    action(&sock, "InstanceStart");
    let mut before = String::new();
    wait_output(&out, &mut before, "blk-waiting-config\n");
    patch_vm(&sock, "Paused");
    let (code, reply) = create(&sock, "Full", &state, &mem);
    assert_eq!(code, 204, "{reply}");
    action(&sock, "Shutdown");
    assert_eq!(wait_exit(&mut vm.0), 0);
    let written: Vec<u8> = (0..4 * 512).map(|i| (9 + i) as u8).collect();
    let image = std::fs::read(&disk).unwrap();
    assert_eq!(
        &image[8 * 512..12 * 512],
        written.as_slice(),
        "on the disk at the snapshot"
    );
    let fnv_before = before
        .lines()
        .find_map(|l| l.strip_prefix("blk-read2-fnv: "))
        .unwrap()
        .to_string();

    // The restored guest still waits for its configuration change: a
    // bigger copy of the disk gives it one, and it reads its data back
    // through the restored queue.
    let bigger = dir.path().join("bigger.img");
    let mut copy = image.clone();
    copy.resize(128 * 512, 0);
    std::fs::write(&bigger, &copy).unwrap();
    let (mut vm, sock) = serve(dir.path(), "restored");
    let out = stream_stdout(&mut vm.0);
    put(&sock, "/snapshot/load", &load_body(&state, &mem, true));
    let patch = serde_json::json!({"drive_id": "data", "path_on_host": bigger});
    let (code, reply) = http(&sock, "PATCH", "/drives/data", &patch.to_string());
    assert_eq!(code, 204, "{reply}");
    let mut after = String::new();
    wait_output(&out, &mut after, "blk-done\n");
    assert!(after.contains("blk-config-change: 128\n"), "{after}");
    assert!(after.contains("blk-read3-status: 0\n"), "{after}");
    assert!(
        after.contains(&format!("blk-read3-fnv: {fnv_before}\n")),
        "{after} (before: {fnv_before})"
    );
    action(&sock, "Shutdown");
    assert_eq!(wait_exit(&mut vm.0), 0);
}

#[test]
fn a_snapshot_of_a_big_idle_guest_holds_what_it_touched() {
    if !kvm_available("a_snapshot_of_a_big_idle_guest_holds_what_it_touched") {
        return;
    }
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let (state, mem) = (dir.path().join("vm.state"), dir.path().join("vm.mem"));
    let (mut vm, sock) = serve(dir.path(), "idle");
    let out = stream_stdout(&mut vm.0);
    put(
        &sock,
        "/machine-config",
        r#"{"vcpu_count": 1, "mem_size_mib": 1024}"#,
    );
    let boot = format!(
        r#"{{"kernel_image_path": "{}"}}"#,
        guest("perf_idle").display()
    );
    put(&sock, "/boot-source", &boot);
    action(&sock, "InstanceStart");
    let mut seen = String::new();
    wait_output(&out, &mut seen, "idle-ready\n");
    patch_vm(&sock, "Paused");
    let (code, reply) = create(&sock, "Full", &state, &mem);
    assert_eq!(code, 204, "{reply}");
    action(&sock, "Shutdown");
    assert_eq!(wait_exit(&mut vm.0), 0);
    let meta = std::fs::metadata(&mem).unwrap();
    assert_eq!(meta.len(), 1 << 30, "the whole guest, in apparent size");
    let allocated = meta.blocks() * 512;
    assert!(allocated > 0, "the kernel's pages at least");
    assert!(
        allocated < 4 << 20,
        "an idle guest's memory file allocates {allocated} bytes"
    );
}

#[test]
fn a_diff_snapshot_holds_only_the_pages_written_since_the_last_one() {
    if !kvm_available("a_diff_snapshot_holds_only_the_pages_written_since_the_last_one") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (s1, m1) = (dir.path().join("1.state"), dir.path().join("1.mem"));
    let before = saved_counter(dir.path(), 2, &s1, &m1);
    // The diff goes into a copy: m1 stays what clones of s1 map.
    let m2 = dir.path().join("2.mem");
    std::fs::copy(&m1, &m2).unwrap();
    let s2 = dir.path().join("2.state");

    let (mut vm, sock) = serve_logging(dir.path(), "tracked", "info");
    let out = stream_stdout(&mut vm.0);
    let load = serde_json::json!({
        "snapshot_path": s1, "mem_file_path": m2, "resume_vm": true, "track_dirty_pages": true,
    });
    put(&sock, "/snapshot/load", &load.to_string());
    let last = *ticks(&before).last().unwrap();
    let mut middle = String::new();
    wait_output(&out, &mut middle, &format!("tick {}\n", last + 2));
    patch_vm(&sock, "Paused");
    drain_until_quiet(&out, &mut middle, Duration::from_millis(100), "pause");
    let (code, reply) = create(&sock, "Diff", &s2, &m2);
    assert_eq!(code, 204, "{reply}");
    action(&sock, "Shutdown");
    assert_eq!(wait_exit(&mut vm.0), 0);
    let pages = pages_written(&mut vm);
    assert_eq!(pages.len(), 1, "one snapshot logged");
    assert!(
        pages[0] > 0 && pages[0] < 64,
        "a counter that ran a few ticks dirtied {} pages",
        pages[0]
    );

    // Base plus diff restores to where the diff was taken.
    let (mut vm, sock) = serve(dir.path(), "from-diff");
    let out = stream_stdout(&mut vm.0);
    put(&sock, "/snapshot/load", &load_body(&s2, &m2, true));
    let last = *ticks(&format!("{before}{middle}")).last().unwrap();
    let mut after = String::new();
    wait_output(&out, &mut after, &format!("tick {}\n", last + 1));
    let all = ticks(&format!("{before}{middle}{after}"));
    assert_eq!(all, (0..all.len() as u64).collect::<Vec<_>>());
    action(&sock, "Shutdown");
    assert_eq!(wait_exit(&mut vm.0), 0);

    // A Diff without dirty tracking is refused naming it.
    let (mut vm, sock) = serve(dir.path(), "untracked");
    put(&sock, "/snapshot/load", &load_body(&s2, &m2, false));
    let (code, body) = create(&sock, "Diff", &dir.path().join("3.state"), &m2);
    assert_eq!(code, 400);
    assert!(body.contains("track_dirty_pages"), "{body}");
    action(&sock, "Shutdown");
    assert_eq!(wait_exit(&mut vm.0), 0);
}

#[test]
fn ctl_snapshots_and_run_restores() {
    if !kvm_available("ctl_snapshots_and_run_restores") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (state, mem) = (dir.path().join("vm.state"), dir.path().join("vm.mem"));
    let counter = guest("counter").display().to_string();
    let sock = dir.path().join("run.sock");
    let mut vm = spawn_podvm(&[
        "run",
        "--kernel",
        &counter,
        "--api-sock",
        sock.to_str().unwrap(),
    ]);
    let out = stream_stdout(&mut vm.0);
    let mut before = String::new();
    wait_output(&out, &mut before, "tick 2\n");
    let ctl = |args: &[&str]| {
        let mut all = vec!["ctl", "--api-sock", sock.to_str().unwrap()];
        all.extend_from_slice(args);
        let out = run_podvm(&all);
        assert_eq!(out.code(), 0, "{args:?}: {out:?}");
    };
    ctl(&["pause"]);
    drain_until_quiet(&out, &mut before, Duration::from_millis(100), "pause");
    ctl(&[
        "snapshot",
        "create",
        state.to_str().unwrap(),
        mem.to_str().unwrap(),
    ]);
    ctl(&["shutdown"]);
    assert_eq!(wait_exit(&mut vm.0), 0);
    let last = *ticks(&before).last().unwrap();

    let mut vm = spawn_podvm(&[
        "run",
        "--restore",
        state.to_str().unwrap(),
        "--mem-file",
        mem.to_str().unwrap(),
    ]);
    let out = stream_stdout(&mut vm.0);
    let mut after = String::new();
    wait_output(&out, &mut after, &format!("tick {}\n", last + 2));
    let all = ticks(&format!("{before}{after}"));
    assert_eq!(all, (0..all.len() as u64).collect::<Vec<_>>());
    // SAFETY: sends a signal to our own child process.
    unsafe { libc::kill(vm.0.id() as i32, libc::SIGTERM) };
    assert_eq!(wait_exit(&mut vm.0), 128 + libc::SIGTERM);

    // A restore needs its memory file, and takes no VM flag.
    let out = run_podvm(&["run", "--restore", state.to_str().unwrap()]);
    assert_eq!(out.code(), 2, "{out:?}");
    let out = run_podvm(&[
        "run",
        "--restore",
        state.to_str().unwrap(),
        "--mem-file",
        mem.to_str().unwrap(),
        "--memory",
        "256",
    ]);
    assert_eq!(out.code(), 2, "{out:?}");
    let out = run_podvm(&[
        "run",
        "--restore",
        dir.path().join("nope.state").to_str().unwrap(),
        "--mem-file",
        mem.to_str().unwrap(),
    ]);
    assert_eq!(out.code(), 2, "{out:?}");
    assert!(
        out.stderr.starts_with("error: --restore ") && out.stderr.contains("nope.state"),
        "{out:?}"
    );
}

/// Resident KiB of the mappings of `file` in process `pid` (its guest
/// memory, for a restored VM).
fn resident_kib_of(pid: u32, file: &Path) -> u64 {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
    let name = file.to_str().unwrap();
    let mut total = 0;
    let mut in_mapping = false;
    for line in smaps.lines() {
        // A mapping's header: `start-end perms offset dev inode [path]`.
        let mut words = line.split_whitespace();
        let is_header = words.next().is_some_and(|w| w.contains('-'))
            && words.next().is_some_and(|p| p.len() == 4);
        if is_header {
            in_mapping = line.ends_with(name);
        } else if let Some(kib) = line.strip_prefix("Rss:").filter(|_| in_mapping) {
            total += kib
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .unwrap();
        }
    }
    total
}

#[test]
fn prefetch_records_the_working_set_and_maps_it_on_later_loads() {
    if !kvm_available("prefetch_records_the_working_set_and_maps_it_on_later_loads") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (state, mem) = (dir.path().join("vm.state"), dir.path().join("vm.mem"));
    saved_counter(dir.path(), 1, &state, &mem);
    let ws = dir.path().join("vm.state.ws");
    let with_prefetch = |resume: bool| {
        serde_json::json!({
            "snapshot_path": state, "mem_file_path": mem, "resume_vm": resume, "prefetch": true,
        })
        .to_string()
    };

    // The first load records what the guest touches in its first second.
    let (mut vm, sock) = serve(dir.path(), "recording");
    put(&sock, "/snapshot/load", &with_prefetch(true));
    let deadline = std::time::Instant::now() + DEADLINE;
    while !ws.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "no working set recorded"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    action(&sock, "Shutdown");
    assert_eq!(wait_exit(&mut vm.0), 0);
    let set: serde_json::Value = serde_json::from_slice(&std::fs::read(&ws).unwrap()).unwrap();
    let pages: u64 = ["read", "written"]
        .iter()
        .flat_map(|k| set[k].as_array().unwrap())
        .flat_map(|r| r.as_array().unwrap())
        .map(|run| run[1].as_u64().unwrap())
        .sum();
    assert!(pages > 0, "{set}");

    // A later load maps those pages before the guest runs; one without
    // prefetch maps none.
    let (mut vm, sock) = serve(dir.path(), "prefetched");
    put(&sock, "/snapshot/load", &with_prefetch(false));
    let prefetched = resident_kib_of(vm.0.id(), &mem);
    action(&sock, "Shutdown");
    assert_eq!(wait_exit(&mut vm.0), 0);
    let (mut vm, sock) = serve(dir.path(), "plain");
    put(&sock, "/snapshot/load", &load_body(&state, &mem, false));
    let plain = resident_kib_of(vm.0.id(), &mem);
    action(&sock, "Shutdown");
    assert_eq!(wait_exit(&mut vm.0), 0);
    assert!(
        prefetched >= pages * 4 && plain < prefetched,
        "{pages} pages recorded; resident after a prefetching load {prefetched} KiB, after a plain one {plain} KiB"
    );
}

/// `podvm serve` inside network namespace `ns`.
fn serve_in(ns: &common::netns::NetNs, dir: &Path, name: &str) -> (KillOnDrop, PathBuf) {
    let sock = dir.join(format!("{name}.sock"));
    let child = std::process::Command::new("ip")
        .args(["netns", "exec", &ns.name, env!("CARGO_BIN_EXE_podvm")])
        .args(["serve", "--api-sock"])
        .arg(&sock)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_path(&sock);
    (KillOnDrop(child), sock)
}

#[test]
fn a_clone_gets_its_own_tap_and_receives_on_it() {
    use common::netns::{NetNs, PacketSocket, ETHERTYPE, TAP};
    if !kvm_available("a_clone_gets_its_own_tap_and_receives_on_it") {
        return;
    }
    let Some(ns) = NetNs::with_tap("a_clone_gets_its_own_tap_and_receives_on_it") else {
        return;
    };
    const CLONE_TAP: &str = "podvmtap1";
    assert!(ns.exec(&["ip", "tuntap", "add", "dev", CLONE_TAP, "mode", "tap"]));
    assert!(ns.exec(&["ip", "link", "set", CLONE_TAP, "up"]));
    let mac = [0x06, 0, 0, 0, 0, 0x2b];
    let dir = tempfile::tempdir().unwrap();
    let (state, mem) = (dir.path().join("vm.state"), dir.path().join("vm.mem"));

    // The original sends its frame on its tap, then waits to receive one.
    let (mut vm, sock) = serve_in(&ns, dir.path(), "original");
    let out = stream_stdout(&mut vm.0);
    let boot = serde_json::json!({
        "kernel_image_path": guest("virtio_net"), "boot_args": "console=ttyS0 net.rx=1",
    });
    put(&sock, "/boot-source", &boot.to_string());
    let nic = format!(
        r#"{{"iface_id": "eth0", "host_dev_name": "{TAP}", "guest_mac": "06:00:00:00:00:2b"}}"#
    );
    put(&sock, "/network-interfaces/eth0", &nic);
    action(&sock, "InstanceStart");
    let mut before = String::new();
    wait_output(&out, &mut before, "net-tx: done\n");
    patch_vm(&sock, "Paused");
    let (code, reply) = create(&sock, "Full", &state, &mem);
    assert_eq!(code, 204, "{reply}");
    action(&sock, "Shutdown");
    assert_eq!(wait_exit(&mut vm.0), 0);

    // The clone runs on another tap; a frame sent there reaches its guest.
    let (mut vm, sock) = serve_in(&ns, dir.path(), "clone");
    let out = stream_stdout(&mut vm.0);
    let load = serde_json::json!({
        "snapshot_path": state, "mem_file_path": mem, "resume_vm": true,
        "network_overrides": [{"iface_id": "eth0", "host_dev_name": CLONE_TAP}],
    });
    put(&sock, "/snapshot/load", &load.to_string());
    let (_, config) = http(&sock, "GET", "/vm/config", "");
    assert!(config.contains(CLONE_TAP), "{config}");
    std::thread::scope(|s| {
        s.spawn(|| {
            ns.enter();
            let tap = PacketSocket::open(CLONE_TAP);
            let mut frame = Vec::new();
            frame.extend_from_slice(&mac);
            frame.extend_from_slice(&[0x06, 0, 0, 0, 0, 0x01]);
            frame.extend_from_slice(&ETHERTYPE.to_be_bytes());
            frame.extend_from_slice(b"hello-clone");
            frame.resize(60, 0);
            tap.send(&frame);
        });
    });
    let mut after = String::new();
    wait_output(&out, &mut after, "net-done\n");
    assert!(after.contains("net-rx-text: hello-clone\n"), "{after}");
    assert_eq!(wait_exit(&mut vm.0), 0);
}
