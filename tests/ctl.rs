//! `podvm ctl` end to end: a `podvm serve --api-sock` driven by `podvm ctl`
//! commands, checking their standard output, standard error and exit codes.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::*;

fn spawn_serve(sock: &Path) -> KillOnDrop {
    let child = podvm()
        .args([
            "serve",
            "--api-sock",
            sock.to_str().unwrap(),
            "--id",
            "pod-9",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_path(sock);
    KillOnDrop(child)
}

/// Runs `podvm ctl --api-sock SOCK <args…>`, with `stdin` as its input.
fn ctl_with_input(sock: &Path, args: &[&str], stdin: &str) -> RunOutput {
    let mut child = podvm()
        .args(["ctl", "--api-sock", sock.to_str().unwrap()])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn podvm ctl");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).unwrap();
    drop(input);
    wait_with_deadline(child)
}

fn ctl(sock: &Path, args: &[&str]) -> RunOutput {
    ctl_with_input(sock, args, "")
}

/// Asserts that `out` succeeded and returns its stdout as JSON.
fn json(out: &RunOutput) -> serde_json::Value {
    assert_eq!(out.code(), 0, "{out:?}");
    assert_eq!(out.stderr, "", "{out:?}");
    serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {out:?}"))
}

/// Asserts that `out` succeeded with a 204: nothing on either stream.
fn empty(out: &RunOutput) {
    assert_eq!(out.code(), 0, "{out:?}");
    assert_eq!(
        (out.stdout.as_str(), out.stderr.as_str()),
        ("", ""),
        "{out:?}"
    );
}

/// Asserts that `out` failed with exit 1 and one `error: …` line; returns
/// the message.
fn fault(out: &RunOutput) -> &str {
    assert_eq!(out.code(), 1, "{out:?}");
    assert_eq!(out.stdout, "", "{out:?}");
    assert_eq!(out.stderr.lines().count(), 1, "{out:?}");
    out.stderr
        .trim_end()
        .strip_prefix("error: ")
        .unwrap_or_else(|| panic!("no `error: ` prefix: {out:?}"))
}

#[test]
fn queries_configuration_and_errors_without_a_guest() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("api.sock");
    let mut vm = spawn_serve(&sock);

    let out = ctl(&sock, &["info"]);
    let info = json(&out);
    assert_eq!(info["id"], "pod-9");
    assert_eq!(info["state"], "Not started");
    assert!(
        out.stdout.contains("\n  \"id\": \"pod-9\""),
        "pretty: {out:?}"
    );

    let config = json(&ctl(&sock, &["config"]));
    assert_eq!(config["machine-config"]["mem_size_mib"], 128, "{config}");

    empty(&ctl(
        &sock,
        &[
            "put",
            "/machine-config",
            r#"{"vcpu_count": 2, "mem_size_mib": 256}"#,
        ],
    ));
    empty(&ctl_with_input(
        &sock,
        &["patch", "/machine-config", "-"],
        r#"{"vcpu_count": 3}"#,
    ));
    let machine = json(&ctl(&sock, &["get", "/machine-config"]));
    assert_eq!(
        (&machine["vcpu_count"], &machine["mem_size_mib"]),
        (&3.into(), &256.into()),
        "{machine}"
    );

    // Error statuses: exit 1 with the fault message, and podvm serves on.
    let out = ctl(&sock, &["get", "/no/such/path"]);
    assert_eq!(fault(&out), "no such path: /no/such/path");
    let out = ctl(&sock, &["put", "/machine-config", "{"]);
    assert!(fault(&out).starts_with("machine-config"), "{out:?}");
    let out = ctl(&sock, &["put", "/machine-config", "{"]);
    assert!(!fault(&out).contains('\n'));
    let out = ctl(&sock, &["start"]);
    assert_eq!(
        fault(&out),
        "InstanceStart: no boot source was configured (PUT /boot-source)"
    );
    let out = ctl(&sock, &["pause"]);
    assert_eq!(fault(&out), "cannot pause: the VM is not running");
    let out = ctl(&sock, &["resume"]);
    assert_eq!(fault(&out), "cannot resume: the VM is not paused");
    // Refused before boot.
    let out = ctl(&sock, &["ctrl-alt-del"]);
    assert_eq!(
        fault(&out),
        "cannot send Ctrl+Alt+Del: the VM is not running"
    );
    // An empty body read from standard input.
    let out = ctl_with_input(&sock, &["put", "/machine-config", "-"], "");
    assert_eq!(
        fault(&out),
        "machine-config: EOF while parsing a value at line 1 column 0"
    );
    assert_eq!(json(&ctl(&sock, &["info"]))["state"], "Not started");

    empty(&ctl(&sock, &["shutdown"]));
    assert_eq!(wait_exit(&mut vm.0), 0);
    assert!(!sock.exists());
}

#[test]
fn an_unreachable_socket_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("nobody.sock");
    let out = ctl(&sock, &["info"]);
    let msg = fault(&out);
    let want = format!("--api-sock {}: cannot connect: ", sock.display());
    assert!(msg.starts_with(&want), "{out:?}");
}

#[test]
fn bad_usage_exits_2() {
    for args in [
        &["ctl", "info"][..],
        &["ctl", "--api-sock", "/s"],
        &["ctl", "--api-sock", "/s", "reboot"],
        &["ctl", "--api-sock", "/s", "put", "/entropy"],
    ] {
        let out = run_podvm(args);
        assert_eq!(out.code(), 2, "{args:?}: {out:?}");
        assert_eq!(out.stdout, "", "{out:?}");
    }
}

#[test]
fn start_pause_resume_and_shutdown_a_guest() {
    if !kvm_available("start_pause_resume_and_shutdown_a_guest") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("api.sock");
    let mut vm = spawn_serve(&sock);
    let out = stream_stdout(&mut vm.0);
    let boot = format!(
        r#"{{"kernel_image_path": "{}"}}"#,
        guest("counter").display()
    );
    empty(&ctl_with_input(&sock, &["put", "/boot-source", "-"], &boot));
    empty(&ctl(&sock, &["start"]));
    let mut seen = String::new();
    wait_output(&out, &mut seen, "tick 2\n");
    assert_eq!(json(&ctl(&sock, &["info"]))["state"], "Running");
    assert_eq!(
        fault(&ctl(&sock, &["start"])),
        "InstanceStart: the VM is already running"
    );

    empty(&ctl(&sock, &["pause"]));
    assert_eq!(json(&ctl(&sock, &["info"]))["state"], "Paused");
    // Drain what was printed before the pause took effect (a VM that did
    // not pause never goes quiet: a failure, not a hang); then nothing.
    drain_until_quiet(&out, &mut seen, Duration::from_millis(100), "pause");
    assert!(
        out.recv_timeout(Duration::from_millis(300)).is_err(),
        "no output while paused"
    );
    let ticks = seen.matches("tick").count();
    empty(&ctl(&sock, &["resume"]));
    wait_output(&out, &mut seen, &format!("tick {}\n", ticks + 1));
    assert_eq!(
        fault(&ctl(&sock, &["resume"])),
        "cannot resume: the VM is not paused"
    );

    empty(&ctl(&sock, &["shutdown"]));
    assert_eq!(wait_exit(&mut vm.0), 0);
    assert!(!sock.exists());
}
