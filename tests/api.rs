//! The control API end to end: `podvm serve --api-sock` driven over its
//! Unix socket with real HTTP, as firecracker-go-sdk drives Firecracker.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::netns::{NetNs, TAP};
use common::*;

fn spawn_serve(sock: &Path, extra: &[&str]) -> KillOnDrop {
    spawn_serve_in(None, sock, extra)
}

/// `podvm serve`, inside network namespace `ns` when given.
fn spawn_serve_in(ns: Option<&NetNs>, sock: &Path, extra: &[&str]) -> KillOnDrop {
    let mut args = vec![
        "serve",
        "--api-sock",
        sock.to_str().unwrap(),
        "--id",
        "pod-7",
    ];
    args.extend_from_slice(extra);
    let mut cmd = match ns {
        Some(ns) => {
            let mut c = std::process::Command::new("ip");
            c.args(["netns", "exec", &ns.name, env!("CARGO_BIN_EXE_podvm")]);
            c
        }
        None => podvm(),
    };
    let child = cmd
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_path(sock);
    KillOnDrop(child)
}

fn sock_in(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("api.sock")
}

#[test]
fn go_sdk_call_order_boots_the_guest() {
    if !kvm_available("go_sdk_call_order_boots_the_guest") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sock = sock_in(&dir);
    let disk = dir.path().join("rootfs.img");
    std::fs::write(&disk, vec![0u8; 64 * 512]).unwrap();
    // The network interface's tap lives in a namespace the test makes.
    let ns = NetNs::with_tap("go_sdk_call_order_boots_the_guest (network part)");
    let mut vm = spawn_serve_in(ns.as_ref(), &sock, &[]);
    let out = stream_stdout(&mut vm.0);

    let (code, body) = http(&sock, "GET", "/", "");
    assert_eq!(code, 200, "{body}");
    let info: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(info["id"], "pod-7");
    assert_eq!(info["state"], "Not started");
    assert_eq!(info["app_name"], "podvm");

    // firecracker-go-sdk's order: logger, metrics, machine-config,
    // boot-source, drives, network-interfaces, InstanceStart.
    let log = dir.path().join("podvm.log");
    let metrics = dir.path().join("metrics.json");
    let mut calls = vec![
        (
            "PUT",
            "/logger".to_string(),
            format!(r#"{{"log_path": "{}", "level": "Info"}}"#, log.display()),
        ),
        (
            "PUT",
            "/metrics".to_string(),
            format!(r#"{{"metrics_path": "{}"}}"#, metrics.display()),
        ),
        (
            "PUT",
            "/machine-config".to_string(),
            r#"{"vcpu_count": 2, "mem_size_mib": 128, "smt": false}"#.to_string(),
        ),
        (
            "PUT",
            "/boot-source".to_string(),
            format!(
                r#"{{"kernel_image_path": "{}", "boot_args": "console=ttyS0 blk.read=0:1"}}"#,
                guest("virtio_blk").display()
            ),
        ),
        (
            "PUT",
            "/drives/rootfs".to_string(),
            format!(
                r#"{{"drive_id": "rootfs", "path_on_host": "{}", "is_root_device": true, "is_read_only": false}}"#,
                disk.display()
            ),
        ),
    ];
    if ns.is_some() {
        calls.push((
            "PUT",
            "/network-interfaces/eth0".to_string(),
            format!(r#"{{"iface_id": "eth0", "guest_mac": "06:00:ac:10:00:02", "host_dev_name": "{TAP}"}}"#),
        ));
    }
    calls.push((
        "PUT",
        "/actions".to_string(),
        r#"{"action_type": "InstanceStart"}"#.to_string(),
    ));
    for (method, path, body) in &calls {
        let (code, reply) = http(&sock, method, path, body);
        assert_eq!(code, 204, "{method} {path}: {reply}");
    }
    let mut seen = String::new();
    wait_output(&out, &mut seen, "blk-done");
    assert!(seen.contains("blk-id: rootfs"), "{seen}");
    assert!(seen.contains("blk-read-status: 0"), "{seen}");
    // The guest resets: podvm exits 0 and removes its socket.
    assert_eq!(wait_exit(&mut vm.0), 0);
    assert!(!sock.exists(), "the socket is removed on exit");
}

#[test]
fn pause_stops_the_guest_and_resume_continues_it() {
    if !kvm_available("pause_stops_the_guest_and_resume_continues_it") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sock = sock_in(&dir);
    let mut vm = spawn_serve(&sock, &[]);
    let out = stream_stdout(&mut vm.0);
    let boot = format!(
        r#"{{"kernel_image_path": "{}"}}"#,
        guest("counter").display()
    );
    assert_eq!(http(&sock, "PUT", "/boot-source", &boot).0, 204);
    assert_eq!(
        http(
            &sock,
            "PUT",
            "/actions",
            r#"{"action_type": "InstanceStart"}"#
        )
        .0,
        204
    );
    let mut seen = String::new();
    wait_output(&out, &mut seen, "tick 2\n");

    let (code, body) = http(&sock, "PATCH", "/vm", r#"{"state": "Paused"}"#);
    assert_eq!(code, 204, "{body}");
    let (_, info) = http(&sock, "GET", "/", "");
    assert!(info.contains(r#""state":"Paused""#), "{info}");
    // Drain what was printed before the pause took effect (a VM that did
    // not pause never goes quiet: a failure, not a hang), then check
    // that nothing more comes for a while (the guest ticks every ~25 ms).
    drain_until_quiet(&out, &mut seen, Duration::from_millis(100), "pause");
    assert!(
        out.recv_timeout(Duration::from_millis(400)).is_err(),
        "no output while paused"
    );
    let ticks_before = seen.matches("tick").count();

    assert_eq!(
        http(&sock, "PATCH", "/vm", r#"{"state": "Resumed"}"#).0,
        204
    );
    let next = format!("tick {}\n", ticks_before + 1);
    wait_output(&out, &mut seen, &next);

    // Pausing twice, or resuming a running VM, is an error, and the VMM
    // keeps serving.
    let (code, body) = http(&sock, "PATCH", "/vm", r#"{"state": "Resumed"}"#);
    assert_eq!(code, 400);
    assert!(body.contains("fault_message"), "{body}");

    assert_eq!(
        http(&sock, "PUT", "/actions", r#"{"action_type": "Shutdown"}"#).0,
        204
    );
    assert_eq!(wait_exit(&mut vm.0), 0);
    assert!(!sock.exists());
}

#[test]
fn errors_leave_the_vmm_serving() {
    let dir = tempfile::tempdir().unwrap();
    let sock = sock_in(&dir);
    let mut vm = spawn_serve(&sock, &[]);
    let cases = [
        ("PUT", "/machine-config", "{", 400),
        (
            "PUT",
            "/machine-config",
            r#"{"vcpu_count": 0, "mem_size_mib": 128}"#,
            400,
        ),
        (
            "PUT",
            "/machine-config",
            r#"{"vcpu_count": 1, "mem_size_mib": 128, "cpus": 2}"#,
            400,
        ),
        (
            "PUT",
            "/actions",
            r#"{"action_type": "InstanceStart"}"#,
            400,
        ),
        ("PATCH", "/vm", r#"{"state": "Paused"}"#, 400),
        ("GET", "/no/such/path", "", 404),
    ];
    for (method, path, body, want) in cases {
        let (code, reply) = http(&sock, method, path, body);
        assert_eq!(code, want, "{method} {path} {body}: {reply}");
        if want != 404 || !reply.is_empty() {
            let v: serde_json::Value = serde_json::from_str(&reply)
                .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {reply:?}"));
            assert!(v["fault_message"].is_string(), "{reply}");
        }
    }
    let (code, body) = http(&sock, "GET", "/machine-config", "");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains(r#""mem_size_mib":128"#), "{body}");
    assert_eq!(
        http(&sock, "PUT", "/actions", r#"{"action_type": "Shutdown"}"#).0,
        204
    );
    assert_eq!(wait_exit(&mut vm.0), 0);
}

#[test]
fn a_config_file_starts_the_vm_at_once_and_a_live_socket_is_refused() {
    if !kvm_available("a_config_file_starts_the_vm_at_once_and_a_live_socket_is_refused") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sock = sock_in(&dir);
    let cfg = dir.path().join("vm.json");
    std::fs::write(
        &cfg,
        format!(
            r#"{{"boot-source": {{"kernel_image_path": "{}"}}}}"#,
            guest("counter").display()
        ),
    )
    .unwrap();
    let mut vm = spawn_serve(&sock, &["--config-file", cfg.to_str().unwrap()]);
    let out = stream_stdout(&mut vm.0);
    let mut seen = String::new();
    wait_output(&out, &mut seen, "tick 1\n");
    let (_, info) = http(&sock, "GET", "/", "");
    assert!(info.contains(r#""state":"Running""#), "{info}");
    // Configuration after boot is refused.
    let (code, body) = http(
        &sock,
        "PUT",
        "/machine-config",
        r#"{"vcpu_count": 2, "mem_size_mib": 256}"#,
    );
    assert_eq!(code, 400);
    assert!(body.contains("after InstanceStart"), "{body}");

    // A second podvm on the same socket is refused.
    let second = run_podvm(&["serve", "--api-sock", sock.to_str().unwrap()]);
    assert_eq!(second.code(), 2, "{second:?}");
    assert!(
        second.stderr.contains("another process is serving on it"),
        "{second:?}"
    );

    assert_eq!(
        http(&sock, "PUT", "/actions", r#"{"action_type": "Shutdown"}"#).0,
        204
    );
    assert_eq!(wait_exit(&mut vm.0), 0);

    // A stale socket file (nobody serving) is replaced.
    std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let mut vm = spawn_serve(&sock, &[]);
    assert_eq!(http(&sock, "GET", "/", "").0, 200);
    assert_eq!(
        http(&sock, "PUT", "/actions", r#"{"action_type": "Shutdown"}"#).0,
        204
    );
    assert_eq!(wait_exit(&mut vm.0), 0);
}

#[test]
fn vsock_is_configured_before_boot() {
    let dir = tempfile::tempdir().unwrap();
    let sock = sock_in(&dir);
    let mut vm = spawn_serve(&sock, &[]);
    let (code, body) = http(
        &sock,
        "PUT",
        "/vsock",
        r#"{"guest_cid": 2, "uds_path": "/run/v.sock"}"#,
    );
    assert_eq!(code, 400);
    assert!(
        body.contains("vsock guest_cid 2 is reserved: it must be from 3 to 4294967294"),
        "{body}"
    );
    let uds = dir.path().join("v.sock");
    let put = format!(
        r#"{{"vsock_id": "v0", "guest_cid": 7, "uds_path": "{}"}}"#,
        uds.display()
    );
    let (code, body) = http(&sock, "PUT", "/vsock", &put);
    assert_eq!(code, 204, "{body}");
    let (_, config) = http(&sock, "GET", "/vm/config", "");
    let config: serde_json::Value = serde_json::from_str(&config).unwrap();
    assert_eq!(
        config["vsock"],
        serde_json::json!({"guest_cid": 7, "uds_path": uds})
    );
    action(&sock, "Shutdown");
    assert_eq!(wait_exit(&mut vm.0), 0);
}

#[test]
fn the_logger_can_be_sent_to_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let sock = sock_in(&dir);
    let log = dir.path().join("podvm.log");
    let mut vm = spawn_serve(&sock, &[]);
    let body = format!(
        r#"{{"log_path": "{}", "level": "Info", "show_level": true}}"#,
        log.display()
    );
    let (code, reply) = http(&sock, "PUT", "/logger", &body);
    assert_eq!(code, 204, "{reply}");
    let (code, reply) = http(&sock, "PUT", "/logger", r#"{"level": "Loud"}"#);
    assert_eq!(code, 400);
    assert!(reply.contains("invalid level"), "{reply}");
    assert_eq!(
        http(&sock, "PUT", "/actions", r#"{"action_type": "Shutdown"}"#).0,
        204
    );
    assert_eq!(wait_exit(&mut vm.0), 0);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("podvm: info: shut down through the API"),
        "{text:?}"
    );
}

#[test]
fn run_can_serve_the_api_while_the_vm_runs() {
    if !kvm_available("run_can_serve_the_api_while_the_vm_runs") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sock = sock_in(&dir);
    let child = podvm()
        .args([
            "run",
            "--kernel",
            guest("counter").to_str().unwrap(),
            "--api-sock",
        ])
        .arg(&sock)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut vm = KillOnDrop(child);
    wait_for_path(&sock);
    let (code, info) = http(&sock, "GET", "/", "");
    assert_eq!(code, 200);
    assert!(info.contains(r#""state":"Running""#), "{info}");
    assert_eq!(http(&sock, "PATCH", "/vm", r#"{"state": "Paused"}"#).0, 204);
    assert_eq!(
        http(&sock, "PATCH", "/vm", r#"{"state": "Resumed"}"#).0,
        204
    );
    assert_eq!(
        http(&sock, "PUT", "/actions", r#"{"action_type": "Shutdown"}"#).0,
        204
    );
    assert_eq!(wait_exit(&mut vm.0), 0);
    assert!(!sock.exists());
}

#[test]
fn a_running_drive_gets_a_new_backing_file() {
    if !kvm_available("a_running_drive_gets_a_new_backing_file") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sock = sock_in(&dir);
    let (a, b) = (dir.path().join("a.img"), dir.path().join("b.img"));
    std::fs::write(&a, vec![0u8; 4 * 512]).unwrap();
    std::fs::write(&b, vec![0u8; 16 * 512]).unwrap();
    let mut vm = spawn_serve(&sock, &[]);
    let out = stream_stdout(&mut vm.0);
    // The guest reads the capacity, then waits for a configuration-change
    // interrupt and reads it again.
    let boot = format!(
        r#"{{"kernel_image_path": "{}", "boot_args": "console=ttyS0 blk.read=0:1 blk.wait_config=1 blk.hold=1"}}"#,
        guest("virtio_blk").display()
    );
    assert_eq!(http(&sock, "PUT", "/boot-source", &boot).0, 204);
    let drive = format!(
        r#"{{"drive_id": "data", "path_on_host": "{}", "is_root_device": false, "is_read_only": false}}"#,
        a.display()
    );
    assert_eq!(http(&sock, "PUT", "/drives/data", &drive).0, 204);
    let metrics = dir.path().join("metrics.json");
    let cfg = format!(r#"{{"metrics_path": "{}"}}"#, metrics.display());
    assert_eq!(http(&sock, "PUT", "/metrics", &cfg).0, 204);
    assert_eq!(
        http(
            &sock,
            "PUT",
            "/actions",
            r#"{"action_type": "InstanceStart"}"#
        )
        .0,
        204
    );
    let mut seen = String::new();
    wait_output(&out, &mut seen, "blk-waiting-config\n");
    assert_eq!(value_in(&seen, "blk-capacity"), Some("4"), "{seen}");

    // Refusals first: the drive keeps its file and the guest waits on.
    let (code, body) = http(
        &sock,
        "PATCH",
        "/drives/data",
        r#"{"drive_id": "data", "path_on_host": "/nonexistent/c.img"}"#,
    );
    assert_eq!(code, 400);
    assert!(body.contains("cannot open /nonexistent/c.img"), "{body}");
    let (code, body) = http(
        &sock,
        "PATCH",
        "/drives/other",
        r#"{"drive_id": "other", "path_on_host": "/x"}"#,
    );
    assert_eq!(code, 400);
    assert!(body.contains("no such drive"), "{body}");

    let patch = format!(
        r#"{{"drive_id": "data", "path_on_host": "{}"}}"#,
        b.display()
    );
    let (code, body) = http(&sock, "PATCH", "/drives/data", &patch);
    assert_eq!(code, 204, "{body}");
    // The guest got the interrupt and sees the new file's size.
    wait_output(&out, &mut seen, "blk-done\n");
    assert_eq!(value_in(&seen, "blk-config-change"), Some("16"), "{seen}");
    let (_, config) = http(&sock, "GET", "/vm/config", "");
    assert!(config.contains(&b.display().to_string()), "{config}");

    // The drive's counters survived the swap.
    action(&sock, "FlushMetrics");
    let m = last_metrics(&metrics);
    assert_eq!(m["block"]["data"]["reads"], 1, "{m}");
    assert_eq!(m["block"]["data"]["read_bytes"], 512, "{m}");

    assert_eq!(
        http(&sock, "PUT", "/actions", r#"{"action_type": "Shutdown"}"#).0,
        204
    );
    assert_eq!(wait_exit(&mut vm.0), 0);
}

/// The value after `key: ` on a line of `text`.
fn value_in<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let prefix = format!("{key}: ");
    text.lines().find_map(|l| l.strip_prefix(prefix.as_str()))
}

#[test]
fn metrics_are_flushed_as_json_lines() {
    if !kvm_available("metrics_are_flushed_as_json_lines") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sock = sock_in(&dir);
    let metrics = dir.path().join("metrics.json");
    let disk = dir.path().join("d.img");
    std::fs::write(&disk, vec![0u8; 8 * 512]).unwrap();
    let mut vm = spawn_serve(&sock, &[]);
    let out = stream_stdout(&mut vm.0);
    let (code, body) = http(
        &sock,
        "PUT",
        "/actions",
        r#"{"action_type": "FlushMetrics"}"#,
    );
    assert_eq!(code, 400, "not configured yet: {body}");
    let cfg = format!(r#"{{"metrics_path": "{}"}}"#, metrics.display());
    assert_eq!(http(&sock, "PUT", "/metrics", &cfg).0, 204);
    // Two reads (2 sectors, then 1), one write (3 sectors), one flush, then
    // the guest halts.
    let boot = format!(
        r#"{{"kernel_image_path": "{}", "boot_args": "console=ttyS0 blk.read=0:2 blk.write=4:3:9 blk.flush=1 blk.read2=4:1 blk.hold=1"}}"#,
        guest("virtio_blk").display()
    );
    assert_eq!(http(&sock, "PUT", "/boot-source", &boot).0, 204);
    let drive = format!(
        r#"{{"drive_id": "data", "path_on_host": "{}", "is_root_device": false, "is_read_only": false}}"#,
        disk.display()
    );
    assert_eq!(http(&sock, "PUT", "/drives/data", &drive).0, 204);
    assert_eq!(
        http(
            &sock,
            "PUT",
            "/actions",
            r#"{"action_type": "InstanceStart"}"#
        )
        .0,
        204
    );
    let mut seen = String::new();
    wait_output(&out, &mut seen, "blk-done\n");
    action(&sock, "FlushMetrics");
    action(&sock, "Shutdown");
    assert_eq!(wait_exit(&mut vm.0), 0);

    let m = last_metrics(&metrics);
    assert_eq!(m["api"]["instance_start"], 1, "{m}");
    assert_eq!(m["api"]["flush_metrics"], 2, "{m}");
    assert!(m["vcpu_exits"]["io_out"].as_u64().unwrap() > 0, "{m}");
    // Everything the guest printed up to its halt went through the UART.
    assert_eq!(m["serial"]["bytes_out"], seen.len(), "{m}");
    let blk = &m["block"]["data"];
    assert_eq!(
        (
            &blk["reads"],
            &blk["read_bytes"],
            &blk["writes"],
            &blk["write_bytes"],
            &blk["flushes"],
            &blk["errors"]
        ),
        (
            &2.into(),
            &(3 * 512).into(),
            &1.into(),
            &(3 * 512).into(),
            &1.into(),
            &0.into()
        ),
        "{m}"
    );
    assert!(m["utc_timestamp_ms"].as_u64().unwrap() > 0);
}

#[test]
fn every_body_endpoint_refuses_every_class_of_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let sock = sock_in(&dir);
    let mut vm = spawn_serve(&sock, &[]);
    // (method, path, a body with a wrong type, one missing a required
    // field, the field the error must name).
    let endpoints = [
        (
            "PUT",
            "/machine-config",
            r#"{"vcpu_count": "two", "mem_size_mib": 128}"#,
            r#"{"vcpu_count": 1}"#,
            "mem_size_mib",
        ),
        (
            "PATCH",
            "/machine-config",
            r#"{"vcpu_count": "two"}"#,
            "",
            "",
        ),
        (
            "PUT",
            "/boot-source",
            r#"{"kernel_image_path": 7}"#,
            r#"{"boot_args": "x"}"#,
            "kernel_image_path",
        ),
        (
            "PUT",
            "/drives/rootfs",
            r#"{"drive_id": "rootfs", "path_on_host": 1, "is_root_device": true}"#,
            r#"{"drive_id": "rootfs", "path_on_host": "/x"}"#,
            "is_root_device",
        ),
        (
            "PATCH",
            "/drives/rootfs",
            r#"{"drive_id": 5}"#,
            r#"{"path_on_host": "/x"}"#,
            "drive_id",
        ),
        (
            "PUT",
            "/network-interfaces/eth0",
            r#"{"iface_id": "eth0", "host_dev_name": 3}"#,
            r#"{"iface_id": "eth0"}"#,
            "host_dev_name",
        ),
        (
            "PUT",
            "/actions",
            r#"{"action_type": 1}"#,
            "{}",
            "action_type",
        ),
        ("PATCH", "/vm", r#"{"state": true}"#, "{}", "state"),
        ("PUT", "/logger", r#"{"level": 3}"#, "", ""),
        (
            "PUT",
            "/metrics",
            r#"{"metrics_path": 3}"#,
            "{}",
            "metrics_path",
        ),
        (
            "PUT",
            "/vsock",
            r#"{"guest_cid": "three", "uds_path": "/v"}"#,
            r#"{"guest_cid": 3}"#,
            "uds_path",
        ),
    ];
    let still_serving = |what: &str| {
        let (code, body) = http(&sock, "GET", "/", "");
        assert_eq!(code, 200, "not serving after {what}: {body}");
    };
    for (method, path, wrong_type, missing, field) in endpoints {
        let mut cases = vec![("malformed JSON", "{".to_string(), String::new())];
        cases.push(("wrong type", wrong_type.to_string(), String::new()));
        // An unknown field next to a valid-looking one.
        cases.push((
            "unknown field",
            r#"{"definitely_not_a_field": 1}"#.to_string(),
            "definitely_not_a_field".to_string(),
        ));
        if !missing.is_empty() {
            cases.push(("missing field", missing.to_string(), field.to_string()));
        }
        for (class, body, must_name) in cases {
            let what = format!("{method} {path} ({class})");
            let (code, reply) = http(&sock, method, path, &body);
            assert_eq!(code, 400, "{what}: {reply}");
            let v: serde_json::Value = serde_json::from_str(&reply)
                .unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {reply}"));
            let msg = v["fault_message"]
                .as_str()
                .unwrap_or_else(|| panic!("{what}: {reply}"));
            assert!(
                msg.contains(&must_name),
                "{what}: {msg:?} does not name {must_name:?}"
            );
            still_serving(&what);
        }
    }
    // Ids that disagree with the path.
    for (method, path, body) in [
        (
            "PUT",
            "/drives/a",
            r#"{"drive_id": "b", "path_on_host": "/x", "is_root_device": false}"#,
        ),
        (
            "PUT",
            "/network-interfaces/a",
            r#"{"iface_id": "b", "host_dev_name": "t"}"#,
        ),
    ] {
        let (code, reply) = http(&sock, method, path, body);
        assert_eq!(code, 400, "{path}: {reply}");
        let v: serde_json::Value = serde_json::from_str(&reply).unwrap();
        let msg = v["fault_message"].as_str().unwrap();
        assert!(msg.contains("\"b\"") && msg.contains("\"a\""), "{msg}");
        still_serving(path);
    }
    // Wrong method, unknown path, too large a body.
    assert_eq!(http(&sock, "DELETE", "/machine-config", "").0, 405);
    assert_eq!(http(&sock, "GET", "/nope", "").0, 404);
    let huge = format!(r#"{{"kernel_image_path": "{}"}}"#, "x".repeat(60_000));
    assert_eq!(http(&sock, "PUT", "/boot-source", &huge).0, 413);
    still_serving("413");
    assert_eq!(
        http(&sock, "PUT", "/actions", r#"{"action_type": "Shutdown"}"#).0,
        204
    );
    assert_eq!(wait_exit(&mut vm.0), 0);
}
