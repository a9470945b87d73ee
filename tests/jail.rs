//! `podvm serve --jail DIR --uid U --gid G`: the jailed podvm runs as U:G
//! with no capability, as PID 1 of its own PID namespace, sees only DIR
//! (every path is DIR's), and runs guests there; the stop signals and the
//! exit code pass through the parent.

mod common;

use std::os::unix::fs::chown;
use std::path::Path;

use common::*;

/// A jail holding the counter guest, owned by nobody.
fn jail_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(guest("counter"), dir.path().join("counter")).unwrap();
    chown(dir.path(), Some(65534), Some(65534)).unwrap();
    dir
}

/// The jailed child of podvm `pid`.
fn jailed_child(pid: u32) -> u32 {
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    children
        .split_whitespace()
        .next()
        .unwrap_or_else(|| panic!("podvm {pid} has no jailed child"))
        .parse()
        .unwrap()
}

/// The `/proc/PID/status` fields of the jailed child of podvm `pid`.
fn child_status(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{}/status", jailed_child(pid))).unwrap()
}

fn field<'a>(status: &'a str, key: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {key} in {status}"))
}

fn serve_jailed(dir: &Path) -> KillOnDrop {
    spawn_podvm(&[
        "serve".as_ref(),
        "--jail".as_ref(),
        dir.as_os_str(),
        "--uid".as_ref(),
        "65534".as_ref(),
        "--gid".as_ref(),
        "65534".as_ref(),
        "--api-sock".as_ref(),
        "/api.sock".as_ref(),
    ])
}

#[test]
fn a_jailed_podvm_runs_a_guest_unprivileged_inside_its_directory() {
    if !testkit::need_root("a_jailed_podvm_runs_a_guest_unprivileged_inside_its_directory")
        || !kvm_available("a_jailed_podvm_runs_a_guest_unprivileged_inside_its_directory")
    {
        return;
    }
    let dir = jail_dir();
    let mut vm = serve_jailed(dir.path());
    let out = stream_stdout(&mut vm.0);
    // The API socket is the jail's /api.sock.
    let sock = dir.path().join("api.sock");
    wait_for_path(&sock);
    let status = child_status(vm.0.id());
    assert_eq!(field(&status, "Uid:"), "65534\t65534\t65534\t65534");
    assert_eq!(field(&status, "Gid:"), "65534\t65534\t65534\t65534");
    for caps in ["CapEff:", "CapPrm:", "CapInh:", "CapBnd:", "CapAmb:"] {
        assert_eq!(field(&status, caps), "0000000000000000", "{caps}");
    }
    assert!(
        field(&status, "NSpid:").ends_with("\t1"),
        "PID 1 of its namespace: {status}"
    );

    // A host path outside the jail does not exist there.
    let host_kernel = guest("counter");
    let (code, body) = http(
        &sock,
        "PUT",
        "/boot-source",
        &format!(r#"{{"kernel_image_path": "{}"}}"#, host_kernel.display()),
    );
    if code == 204 {
        let (code, body) = http(
            &sock,
            "PUT",
            "/actions",
            r#"{"action_type": "InstanceStart"}"#,
        );
        assert_eq!(code, 400, "a host path reached from the jail: {body}");
        assert!(body.contains("No such file"), "{body}");
    } else {
        assert!(body.contains("No such file"), "{body}");
    }
    let (code, body) = http(
        &sock,
        "PUT",
        "/boot-source",
        r#"{"kernel_image_path": "/counter"}"#,
    );
    assert_eq!(code, 204, "{body}");
    action(&sock, "InstanceStart");
    let mut seen = String::new();
    wait_output(&out, &mut seen, "tick 1\n");
    // Once it runs a guest, every thread is filtered too.
    assert_eq!(field(&child_status(vm.0.id()), "Seccomp:"), "2");
    // Its guest RAM is on the private huge-page tmpfs it mounted before
    // it dropped its privileges, which its new user can create files in.
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", jailed_child(vm.0.id()))).unwrap();
    assert!(maps.contains("/podvm-guest-ram (deleted)"), "{maps}");
    action(&sock, "Shutdown");
    assert_eq!(wait_exit(&mut vm.0), 0);
}

#[test]
fn a_stop_signal_reaches_the_jailed_podvm_and_its_exit_code_comes_back() {
    if !testkit::need_root("a_stop_signal_reaches_the_jailed_podvm_and_its_exit_code_comes_back")
        || !kvm_available("a_stop_signal_reaches_the_jailed_podvm_and_its_exit_code_comes_back")
    {
        return;
    }
    let dir = jail_dir();
    let mut vm = serve_jailed(dir.path());
    let out = stream_stdout(&mut vm.0);
    let sock = dir.path().join("api.sock");
    wait_for_path(&sock);
    let (code, body) = http(
        &sock,
        "PUT",
        "/boot-source",
        r#"{"kernel_image_path": "/counter"}"#,
    );
    assert_eq!(code, 204, "{body}");
    action(&sock, "InstanceStart");
    let mut seen = String::new();
    wait_output(&out, &mut seen, "tick 1\n");
    // SAFETY: sends a signal to our own child process.
    unsafe { libc::kill(vm.0.id() as i32, libc::SIGTERM) };
    assert_eq!(wait_exit(&mut vm.0), 128 + libc::SIGTERM);
}

#[test]
fn a_jail_that_cannot_be_made_is_an_error_naming_it() {
    let out = run_podvm(&[
        "serve",
        "--jail",
        "/nonexistent/jail",
        "--uid",
        "65534",
        "--gid",
        "65534",
        "--api-sock",
        "/api.sock",
    ]);
    assert_eq!(out.code(), 1, "{out:?}");
    assert_eq!(
        out.stderr,
        "error: --jail /nonexistent/jail: cannot resolve it: No such file or directory (os error 2)\n"
    );
    // --uid and --gid come with --jail.
    assert_eq!(
        run_podvm(&["serve", "--jail", "/j", "--api-sock", "/s"]).code(),
        2
    );
    assert_eq!(
        run_podvm(&["serve", "--uid", "1", "--api-sock", "/s"]).code(),
        2
    );
}

#[test]
fn a_jailed_podvm_joins_the_cgroup_and_network_namespace_it_is_given() {
    if !testkit::need_root("a_jailed_podvm_joins_the_cgroup_and_network_namespace_it_is_given")
        || !testkit::need_net("a_jailed_podvm_joins_the_cgroup_and_network_namespace_it_is_given")
    {
        return;
    }
    // A cgroup v2 hierarchy: the unified one of a hybrid host, or the root.
    let unified = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.join("cgroup.procs").exists() && p.join("cgroup.controllers").exists())
        .expect("a cgroup v2 hierarchy");
    let name = format!("podvm-jail-test-{}", std::process::id());
    let cgroup = unified.join(&name);
    std::fs::create_dir(&cgroup).unwrap();
    let ns = common::netns::NetNs::with_tap("jail netns").expect("a network namespace");
    let dir = jail_dir();
    let mut vm = spawn_podvm(&[
        "serve".as_ref(),
        "--jail".as_ref(),
        dir.path().as_os_str(),
        "--uid".as_ref(),
        "65534".as_ref(),
        "--gid".as_ref(),
        "65534".as_ref(),
        "--cgroup".as_ref(),
        cgroup.as_os_str(),
        "--netns".as_ref(),
        format!("/run/netns/{}", ns.name).as_ref(),
        "--api-sock".as_ref(),
        "/api.sock".as_ref(),
    ]);
    let sock = dir.path().join("api.sock");
    wait_for_path(&sock);
    let children =
        std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", vm.0.id())).unwrap();
    let child: u32 = children.split_whitespace().next().unwrap().parse().unwrap();
    let in_cgroup = std::fs::read_to_string(format!("/proc/{child}/cgroup")).unwrap();
    assert!(
        in_cgroup.lines().any(|l| l == format!("0::/{name}")),
        "{in_cgroup}"
    );
    let netns = std::fs::read_link(format!("/proc/{child}/ns/net")).unwrap();
    let want = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(format!("/run/netns/{}", ns.name))
            .unwrap()
            .ino()
    };
    assert_eq!(netns.to_string_lossy(), format!("net:[{want}]"));
    action(&sock, "Shutdown");
    assert_eq!(wait_exit(&mut vm.0), 0);
    std::fs::remove_dir(&cgroup).unwrap();
}

#[test]
fn a_jailed_podvm_ends_when_its_parent_is_killed() {
    let name = "a_jailed_podvm_ends_when_its_parent_is_killed";
    if !testkit::need_root(name) || !kvm_available(name) {
        return;
    }
    let dir = jail_dir();
    let mut vm = serve_jailed(dir.path());
    wait_for_path(&dir.path().join("api.sock"));
    let child = jailed_child(vm.0.id());
    // SIGKILL cannot be forwarded: the kernel ends the child itself.
    vm.0.kill().unwrap();
    vm.0.wait().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let gone = || {
        std::fs::read_to_string(format!("/proc/{child}/stat"))
            .map(|stat| stat.contains(") Z "))
            .unwrap_or(true)
    };
    while !gone() {
        assert!(
            std::time::Instant::now() < deadline,
            "jailed podvm {child} still runs 10 s after its parent was killed"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}
