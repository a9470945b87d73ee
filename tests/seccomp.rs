//! Seccomp end to end: every thread of a running `podvm run` and `podvm
//! serve` is filtered (mode 2), `--no-seccomp` turns that off, and
//! `--seccomp-filter FILE` replaces the filters — a call a filter forbids
//! ends podvm with exit code 148 and a line naming the thread and the call.

mod common;

use std::path::Path;

use common::*;

/// The `Seccomp:` mode of every thread of process `pid`, by thread name.
fn seccomp_modes(pid: u32) -> Vec<(String, String)> {
    let mut modes = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap().path();
        let Ok(status) = std::fs::read_to_string(task.join("status")) else {
            continue; // a thread that ended meanwhile
        };
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_string())
                .unwrap_or_default()
        };
        modes.push((field("Name:"), field("Seccomp:")));
    }
    modes.sort();
    modes
}

/// Asserts every thread of `pid` runs in seccomp mode `mode`, and that the
/// threads named `expected` are among them.
fn assert_all_threads(pid: u32, mode: &str, expected: &[&str]) {
    let modes = seccomp_modes(pid);
    for name in expected {
        assert!(
            modes.iter().any(|(n, _)| n == name),
            "no {name} thread: {modes:?}"
        );
    }
    assert!(
        modes.iter().all(|(_, m)| m == mode),
        "not every thread in seccomp mode {mode}: {modes:?}"
    );
}

#[test]
fn every_thread_of_run_and_serve_is_filtered() {
    if !kvm_available("every_thread_of_run_and_serve_is_filtered") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let counter = guest("counter").display().to_string();

    // `run`, with the API on the side: the VMM, API and vCPU threads.
    let sock = dir.path().join("run.sock");
    let mut vm = spawn_podvm(&[
        "run",
        "--kernel",
        &counter,
        "--vcpus",
        "2",
        "--api-sock",
        sock.to_str().unwrap(),
    ]);
    let out = stream_stdout(&mut vm.0);
    let mut seen = String::new();
    wait_output(&out, &mut seen, "tick 1\n");
    assert_all_threads(vm.0.id(), "2", &["podvm", "api", "vcpu0", "vcpu1"]);
    action(&sock, "Shutdown");
    assert_eq!(wait_exit(&mut vm.0), 0);

    // `serve`, configured and started through the API.
    let sock = dir.path().join("serve.sock");
    let mut vm = spawn_podvm(&["serve", "--api-sock", sock.to_str().unwrap()]);
    let out = stream_stdout(&mut vm.0);
    wait_for_path(&sock);
    let boot = format!(r#"{{"kernel_image_path": "{counter}"}}"#);
    assert_eq!(http(&sock, "PUT", "/boot-source", &boot).0, 204);
    action(&sock, "InstanceStart");
    let mut seen = String::new();
    wait_output(&out, &mut seen, "tick 1\n");
    assert_all_threads(vm.0.id(), "2", &["podvm", "api", "vcpu0"]);
    action(&sock, "Shutdown");
    assert_eq!(wait_exit(&mut vm.0), 0);

    // `--no-seccomp`: none is.
    let mut vm = spawn_podvm(&["run", "--kernel", &counter, "--no-seccomp"]);
    let out = stream_stdout(&mut vm.0);
    let mut seen = String::new();
    wait_output(&out, &mut seen, "tick 1\n");
    assert_all_threads(vm.0.id(), "0", &["podvm", "vcpu0"]);
}

/// A seccompiler JSON filter that allows everything but `forbidden`.
fn all_but(forbidden: &str) -> String {
    format!(
        r#"{{"default_action": "allow", "filter_action": "trap",
            "filter": [{{"syscall": "{forbidden}"}}]}}"#
    )
}

fn write_filters(path: &Path, vmm: &str, api: &str, vcpu: &str) {
    std::fs::write(
        path,
        format!(r#"{{"vmm": {vmm}, "api": {api}, "vcpu": {vcpu}}}"#),
    )
    .unwrap();
}

#[test]
fn a_filter_file_replaces_the_filters_and_a_forbidden_call_ends_podvm() {
    if !kvm_available("a_filter_file_replaces_the_filters_and_a_forbidden_call_ends_podvm") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("filters.json");
    // The vCPU thread may not even run the guest.
    write_filters(
        &file,
        &all_but("execve"),
        &all_but("execve"),
        &all_but("ioctl"),
    );
    let out = run_guest("hello", &["--seccomp-filter", file.to_str().unwrap()]);
    assert_eq!(out.code(), 148, "{out:?}");
    assert_eq!(
        out.stderr,
        "error: seccomp: the vcpu0 thread made a forbidden system call: ioctl (16); podvm stops\n"
    );
    assert_eq!(out.stdout, "");

    // The same file with a harmless vCPU filter runs the guest.
    write_filters(
        &file,
        &all_but("execve"),
        &all_but("execve"),
        &all_but("execve"),
    );
    let out = run_guest("hello", &["--seccomp-filter", file.to_str().unwrap()]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert_eq!(out.lines(), ["Hello from podvm guest"]);
}

#[test]
fn a_bad_filter_file_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("filters.json");
    std::fs::write(&file, format!(r#"{{"vmm": {}}}"#, all_but("execve"))).unwrap();
    let out = run_podvm(&[
        "run",
        "--kernel",
        "/nonexistent",
        "--seccomp-filter",
        file.to_str().unwrap(),
    ]);
    assert_eq!(out.code(), 2, "{out:?}");
    assert_eq!(
        out.stderr,
        format!(
            "error: --seccomp-filter {}: no \"api\" filter (it needs \"vmm\", \"api\" and \"vcpu\")\n",
            file.display()
        )
    );
    let out = run_podvm(&[
        "run",
        "--kernel",
        "/k",
        "--no-seccomp",
        "--seccomp-filter",
        "/f",
    ]);
    assert_eq!(out.code(), 2, "{out:?}");
}

/// Regression: glibc shrinking the API thread's own heap after a large
/// free read `/proc/sys/vm/overcommit_memory` (`openat`, which the API
/// filter forbids), so one request with a 1 MiB header ended podvm with
/// exit code 148. Every thread now allocates from the main heap.
#[test]
fn a_huge_request_header_does_not_trip_the_api_filter() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("api.sock");
    let mut vm = spawn_podvm(&["serve".as_ref(), "--api-sock".as_ref(), sock.as_os_str()]);
    wait_for_path(&sock);
    for _ in 0..3 {
        let mut s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        let header = format!("X-Big: {}\r\n", "a".repeat(1 << 20));
        // The server stops reading at its limit and answers or closes.
        let _ = write!(s, "GET / HTTP/1.1\r\nHost: x\r\n{header}\r\n");
        let _ = s.read_to_end(&mut Vec::new());
    }
    assert!(
        matches!(vm.0.try_wait(), Ok(None)),
        "podvm ended: {:?}",
        vm.0.try_wait()
    );
    let (code, body) = http(&sock, "GET", "/", "");
    assert_eq!(code, 200, "{body}");
}
