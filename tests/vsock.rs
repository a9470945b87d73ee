//! virtio-vsock end to end, with Firecracker's hybrid (Unix socket) host
//! side: the `virtio_vsock` test guest (a polling vsock driver) accepts a
//! host connection made with `CONNECT <port>`, echoes a line upper-cased
//! and connects to a host listener on `<uds_path>_<port>`; a host that
//! closes mid-line ends the guest's connection; a guest that stops
//! reading stops podvm from reading the host socket, and nothing is lost
//! when it reads again.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;

/// Connects to the device's socket and asks for guest port `port`;
/// returns the stream and the host port podvm answered `OK` with.
fn connect_to_guest(uds: &Path, port: u32) -> (BufReader<UnixStream>, u32) {
    let stream = UnixStream::connect(uds).unwrap_or_else(|e| panic!("{}: {e}", uds.display()));
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut stream = BufReader::new(stream);
    writeln!(stream.get_mut(), "CONNECT {port}").unwrap();
    let mut ok = String::new();
    stream.read_line(&mut ok).unwrap();
    let host_port = ok
        .strip_prefix("OK ")
        .and_then(|p| p.trim_end().parse().ok())
        .unwrap_or_else(|| panic!("not an OK line: {ok:?}"));
    (stream, host_port)
}

fn value<'a>(seen: &'a str, key: &str) -> Option<&'a str> {
    let prefix = format!("{key}: ");
    seen.lines().find_map(|l| l.strip_prefix(prefix.as_str()))
}

#[test]
fn a_host_and_the_guest_talk_both_ways() {
    if !kvm_available("a_host_and_the_guest_talk_both_ways") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let uds = dir.path().join("v.sock");
    // Where the guest's connection to host port 5000 goes, made first.
    let listener = UnixListener::bind(format!("{}_5000", uds.display())).unwrap();
    let metrics = dir.path().join("metrics.json");
    let config = dir.path().join("vm.json");
    std::fs::write(
        &config,
        serde_json::json!({
            "boot-source": {"kernel_image_path": guest("virtio_vsock"),
                            "boot_args": "console=ttyS0"},
            "vsock": {"guest_cid": 3, "uds_path": uds},
            "metrics": {"metrics_path": metrics},
        })
        .to_string(),
    )
    .unwrap();
    let mut vm = spawn_podvm(&[
        "serve".as_ref(),
        "--no-api".as_ref(),
        "--config-file".as_ref(),
        config.as_os_str(),
    ]);
    let out = stream_stdout(&mut vm.0);
    let mut seen = String::new();
    wait_output(&out, &mut seen, "vsock-listen: 1024\n");
    assert_eq!(value(&seen, "vsock-cid"), Some("3"), "{seen}");

    // Host -> guest: CONNECT, a line, its echo.
    let (mut stream, host_port) = connect_to_guest(&uds, 1024);
    stream.get_mut().write_all(b"hello vsock\n").unwrap();
    let mut echo = String::new();
    stream.read_line(&mut echo).unwrap();
    assert_eq!(echo, "HELLO VSOCK\n");
    wait_output(&out, &mut seen, "vsock-echoed: 12\n");
    assert_eq!(
        value(&seen, "vsock-accepted"),
        Some(host_port.to_string().as_str())
    );
    assert_eq!(value(&seen, "vsock-line"), Some("hello vsock"));
    // The host closes: the guest sees its connection end.
    drop(stream);

    // Guest -> host: the guest connects to port 5000.
    let (from_guest, _) = listener.accept().unwrap();
    from_guest.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut line = String::new();
    BufReader::new(&from_guest).read_line(&mut line).unwrap();
    assert_eq!(line, "hello from guest\n");
    drop(from_guest);
    wait_output(&out, &mut seen, "vsock-done\n");
    assert_eq!(wait_exit(&mut vm.0), 0, "{seen}");
    let ends: Vec<&str> = seen
        .lines()
        .filter(|l| l.starts_with("vsock-shutdown") || *l == "vsock-rst")
        .collect();
    assert_eq!(ends.len(), 2, "both connections ended by the host: {seen}");
    assert_eq!(value(&seen, "vsock-connected"), Some("5000"), "{seen}");

    // The device's socket went with podvm; the counters saw it all.
    assert!(!uds.exists(), "the socket is removed on exit");
    let m = last_metrics(&metrics);
    let v = &m["vsock"];
    assert_eq!(v["host_connections"], 1, "{m}");
    assert_eq!(v["guest_connections"], 1, "{m}");
    assert_eq!(v["bytes_from_guest"], 12 + 17, "{m}");
    assert_eq!(v["bytes_to_guest"], 12, "{m}");
    assert_eq!(v["active_connections"], 0, "{m}");
    assert_eq!(v["malformed"], 0, "{m}");
}

#[test]
fn a_host_that_closes_mid_line_ends_the_guest_connection_and_nobody_listening_is_refused() {
    if !kvm_available(
        "a_host_that_closes_mid_line_ends_the_guest_connection_and_nobody_listening_is_refused",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let uds = dir.path().join("v.sock");
    // A socket a killed podvm left behind is replaced.
    drop(UnixListener::bind(&uds).unwrap());
    let mut vm = spawn_podvm(&[
        "run".to_string(),
        "--kernel".into(),
        guest("virtio_vsock").display().to_string(),
        "--vsock".into(),
        format!("cid=42,uds={}", uds.display()),
    ]);
    let out = stream_stdout(&mut vm.0);
    let mut seen = String::new();
    wait_output(&out, &mut seen, "vsock-listen: 1024\n");
    assert_eq!(value(&seen, "vsock-cid"), Some("42"));
    // A malformed CONNECT line: the socket is closed, nothing else.
    let mut bad = UnixStream::connect(&uds).unwrap();
    bad.set_read_timeout(Some(DEADLINE)).unwrap();
    bad.write_all(b"CONNECT to-the-guest\n").unwrap();
    // Closed without an answer: EOF, or a reset when podvm closed it with
    // the line's bytes unread.
    let mut rest = Vec::new();
    match bad.read_to_end(&mut rest) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("a malformed CONNECT line got {other:?}: {rest:?}"),
    }

    let (mut stream, _) = connect_to_guest(&uds, 1024);
    stream.get_mut().write_all(b"partial").unwrap();
    // Let the bytes reach the guest before the host goes.
    let deadline = Instant::now() + DEADLINE;
    while !seen.contains("vsock-accepted") {
        assert!(Instant::now() < deadline);
        drain_until_quiet(&out, &mut seen, Duration::from_millis(50), "accept");
    }
    std::thread::sleep(Duration::from_millis(300));
    drop(stream);
    wait_output(&out, &mut seen, "vsock-done\n");
    assert_eq!(wait_exit(&mut vm.0), 0, "{seen}");
    assert_eq!(value(&seen, "vsock-line-cut"), Some("7"), "{seen}");
    assert!(
        seen.contains("vsock-shutdown: 3") || seen.contains("vsock-rst"),
        "{seen}"
    );
    // Nobody listens at <uds>_5000: the guest's connection is refused.
    assert_eq!(value(&seen, "vsock-refused"), Some("5000"), "{seen}");
}

/// Byte `i` of the slow guest's stream.
fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

#[test]
fn a_guest_that_stops_reading_holds_the_host_back_and_loses_nothing() {
    if !kvm_available("a_guest_that_stops_reading_holds_the_host_back_and_loses_nothing") {
        return;
    }
    const BYTES: usize = 1 << 20;
    let dir = tempfile::tempdir().unwrap();
    let uds: PathBuf = dir.path().join("v.sock");
    let mut vm = spawn_podvm(&[
        "run".to_string(),
        "--kernel".into(),
        guest("virtio_vsock").display().to_string(),
        "--vsock".into(),
        format!("cid=3,uds={}", uds.display()),
        "--cmdline".into(),
        format!("console=ttyS0 vsock.mode=slow vsock.bytes={BYTES} vsock.credit=4096 vsock.pause=3000000"),
    ]);
    let out = stream_stdout(&mut vm.0);
    let mut seen = String::new();
    wait_output(&out, &mut seen, "vsock-listen: 1024\n");
    let (stream, _) = connect_to_guest(&uds, 1024);
    let mut stream = stream.into_inner();
    wait_output(&out, &mut seen, "vsock-pause: 3000000\n");

    // The guest has no receive buffers: whatever the host writes waits in
    // the socket and podvm's bounded buffer, and the host's writes stop
    // long before the whole stream is out.
    let data = pattern(BYTES);
    stream.set_nonblocking(true).unwrap();
    let mut sent = 0;
    let stalled = Instant::now() + Duration::from_millis(500);
    while Instant::now() < stalled && sent < BYTES {
        match stream.write(&data[sent..]) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(e) => panic!("write: {e}"),
        }
    }
    assert!(
        !seen.contains("vsock-resume"),
        "the guest resumed too early to tell: {seen}"
    );
    assert!(
        sent < BYTES / 2,
        "{sent} of {BYTES} bytes went in while the guest read nothing"
    );

    // Once the guest reads again, everything arrives, in order (the guest
    // checks every byte and the credit it gave).
    stream.set_nonblocking(false).unwrap();
    stream.write_all(&data[sent..]).unwrap();
    wait_output(&out, &mut seen, "vsock-done\n");
    assert_eq!(wait_exit(&mut vm.0), 0, "{seen}");
    assert_eq!(
        value(&seen, "vsock-received"),
        Some(BYTES.to_string().as_str()),
        "{seen}"
    );
    assert!(seen.contains("vsock-closed"), "{seen}");
}

#[test]
fn a_restored_guest_is_reachable_on_the_socket_its_load_names() {
    if !kvm_available("a_restored_guest_is_reachable_on_the_socket_its_load_names") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let uds = dir.path().join("v.sock");
    let (state, mem) = (dir.path().join("vm.state"), dir.path().join("vm.mem"));
    let sock = dir.path().join("api.sock");
    let mut vm = spawn_podvm(&["serve".as_ref(), "--api-sock".as_ref(), sock.as_os_str()]);
    let out = stream_stdout(&mut vm.0);
    wait_for_path(&sock);
    let boot = serde_json::json!({"kernel_image_path": guest("virtio_vsock"), "boot_args": "console=ttyS0"});
    assert_eq!(http(&sock, "PUT", "/boot-source", &boot.to_string()).0, 204);
    let vsock = serde_json::json!({"guest_cid": 3, "uds_path": uds});
    assert_eq!(http(&sock, "PUT", "/vsock", &vsock.to_string()).0, 204);
    action(&sock, "InstanceStart");
    let mut seen = String::new();
    wait_output(&out, &mut seen, "vsock-listen: 1024\n");
    assert_eq!(http(&sock, "PATCH", "/vm", r#"{"state": "Paused"}"#).0, 204);
    let create = serde_json::json!({"snapshot_path": state, "mem_file_path": mem});
    let (code, body) = http(&sock, "PUT", "/snapshot/create", &create.to_string());
    assert_eq!(code, 204, "{body}");
    action(&sock, "Shutdown");
    assert_eq!(wait_exit(&mut vm.0), 0);

    // The clone's device listens where its load says; the guest, still
    // waiting for a connection, echoes a line through it.
    let clone_uds = dir.path().join("clone.sock");
    let sock = dir.path().join("clone-api.sock");
    let mut vm = spawn_podvm(&["serve".as_ref(), "--api-sock".as_ref(), sock.as_os_str()]);
    let out = stream_stdout(&mut vm.0);
    wait_for_path(&sock);
    let load = serde_json::json!({
        "snapshot_path": state, "mem_file_path": mem, "resume_vm": true,
        "vsock_override": {"uds_path": clone_uds},
    });
    let (code, body) = http(&sock, "PUT", "/snapshot/load", &load.to_string());
    assert_eq!(code, 204, "{body}");
    let (mut stream, _) = connect_to_guest(&clone_uds, 1024);
    stream.get_mut().write_all(b"restored\n").unwrap();
    let mut echo = String::new();
    stream.read_line(&mut echo).unwrap();
    assert_eq!(echo, "RESTORED\n");
    let mut after = String::new();
    wait_output(&out, &mut after, "vsock-echoed: 9\n");
    drop(stream);
    action(&sock, "Shutdown");
    assert_eq!(wait_exit(&mut vm.0), 0);
    assert!(!clone_uds.exists());
}
