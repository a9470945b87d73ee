use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd};

use super::*;

/// Runs `body` in a forked child whose stderr is a pipe; returns its exit
/// status (`waitpid` form) and what it wrote on stderr. The child does
/// only async-signal-safe work besides `body`.
fn in_child(body: impl FnOnce()) -> (i32, String) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the two-element array.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: fork in a test process; the child only runs `body` and
    // exits without returning into the test harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", io::Error::last_os_error());
    if pid == 0 {
        // SAFETY: in the child, redirect stderr into the pipe.
        unsafe { libc::dup2(fds[1], libc::STDERR_FILENO) };
        body();
        // SAFETY: leave without running the harness's destructors.
        unsafe { libc::_exit(0) };
    }
    // SAFETY: the write end belongs to this process; close our copy.
    unsafe { libc::close(fds[1]) };
    // SAFETY: the read end is ours alone from here on.
    let mut read_end = unsafe { std::fs::File::from_raw_fd(fds[0]) };
    let mut err = String::new();
    read_end.read_to_string(&mut err).unwrap();
    let mut status = 0;
    // SAFETY: waits for our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    let _ = read_end.as_raw_fd();
    (status, err)
}

fn exit_code(status: i32) -> Option<i32> {
    libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status))
}

/// `execve` of `/bin/true`, from the calling thread (an allowed call would
/// replace the child, which then exits 0).
fn exec_true() {
    let path = c"/bin/true";
    let argv = [path.as_ptr(), std::ptr::null()];
    let envp: [*const libc::c_char; 1] = [std::ptr::null()];
    // SAFETY: a NUL-terminated path and argument/environment arrays.
    unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
}

#[test]
fn each_filter_kills_a_forbidden_call_and_names_the_thread_and_the_call() {
    let filters = SeccompFilters::builtin().unwrap();
    for (kind, index, forbidden, name) in [
        (ThreadKind::Vcpu, 3u8, libc::SYS_execve, "execve"),
        (ThreadKind::Vmm, 0, libc::SYS_execve, "execve"),
        (ThreadKind::Api, 0, libc::SYS_openat, "openat"),
    ] {
        let (status, err) = in_child(|| {
            filters.apply(kind, index).unwrap();
            // An allowed call still works under the filter.
            // SAFETY: gettid has no preconditions.
            unsafe { libc::syscall(libc::SYS_gettid) };
            if forbidden == libc::SYS_execve {
                exec_true();
            } else {
                // SAFETY: openat of a NUL-terminated path.
                unsafe { libc::openat(libc::AT_FDCWD, c"/".as_ptr(), libc::O_RDONLY) };
            }
        });
        assert_eq!(
            exit_code(status),
            Some(BAD_SYSCALL_EXIT_CODE),
            "{kind:?}: {err}"
        );
        let thread = match kind {
            ThreadKind::Vcpu => format!("vcpu{index}"),
            other => other.name().to_string(),
        };
        assert_eq!(
            err,
            format!(
                "error: seccomp: the {thread} thread made a forbidden system call: {name} ({forbidden}); podvm stops\n"
            )
        );
    }
}

#[test]
fn a_vcpu_may_only_issue_its_own_ioctls() {
    let filters = SeccompFilters::builtin().unwrap();
    let (status, err) = in_child(|| {
        filters.apply(ThreadKind::Vcpu, 0).unwrap();
        // TCGETS on stdin: an ioctl, but not one of KVM's vCPU requests.
        // SAFETY: termios is plain data, valid when zeroed.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: TCGETS writes a termios into the buffer it is given.
        unsafe { libc::ioctl(libc::STDIN_FILENO, libc::TCGETS, &mut t) };
    });
    assert_eq!(exit_code(status), Some(BAD_SYSCALL_EXIT_CODE), "{err}");
    assert!(err.contains("forbidden system call: ioctl (16)"), "{err}");
}

#[test]
fn without_filters_nothing_is_forbidden() {
    let (status, err) = in_child(|| {
        apply(None, ThreadKind::Vcpu, 0).unwrap();
        exec_true();
    });
    assert_eq!(exit_code(status), Some(0), "{err}");
}

#[test]
fn syscall_names() {
    assert_eq!(syscall_name(0), "read");
    assert_eq!(syscall_name(59), "execve");
    assert_eq!(syscall_name(435), "clone3");
    assert_eq!(syscall_name(100_000), "unknown");
}

#[test]
fn filter_files_need_every_thread_kind() {
    let dir = tempfile::tempdir().unwrap();
    let filter = |calls: &[&str]| {
        let calls: Vec<String> = calls
            .iter()
            .map(|c| format!(r#"{{"syscall": "{c}"}}"#))
            .collect();
        format!(
            r#"{{"default_action": "trap", "filter_action": "allow", "filter": [{}]}}"#,
            calls.join(", ")
        )
    };
    let all = format!(
        r#"{{"vmm": {}, "api": {}, "vcpu": {}}}"#,
        filter(&["read", "write"]),
        filter(&["read"]),
        filter(&["ioctl"])
    );
    let path = dir.path().join("filters.json");
    std::fs::write(&path, &all).unwrap();
    let f = SeccompFilters::from_json_file(&path).unwrap();
    assert!(!f.program(ThreadKind::Vcpu).is_empty());

    std::fs::write(
        &path,
        format!(
            r#"{{"vmm": {}, "api": {}}}"#,
            filter(&["read"]),
            filter(&["read"])
        ),
    )
    .unwrap();
    let err = SeccompFilters::from_json_file(&path)
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        format!(
            "--seccomp-filter {}: no \"vcpu\" filter (it needs \"vmm\", \"api\" and \"vcpu\")",
            path.display()
        )
    );
    std::fs::write(&path, "{").unwrap();
    let err = SeccompFilters::from_json_file(&path)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(&format!("--seccomp-filter {}: ", path.display())),
        "{err}"
    );
    let missing = dir.path().join("nope.json");
    let err = SeccompFilters::from_json_file(&missing)
        .unwrap_err()
        .to_string();
    assert!(
        err.ends_with("No such file or directory (os error 2)"),
        "{err}"
    );
}

/// `docs/seccomp.md` lists every allowed call of every thread kind with
/// its reason, as the rules do: its tables, from the first one to the end
/// of the page, are exactly the rules'.
#[test]
fn the_documentation_lists_every_allowed_call() {
    let doc_path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/seccomp.md");
    let doc = std::fs::read_to_string(doc_path).unwrap();
    let tables = &doc[doc.find("### `vmm`").expect("the vmm table")..];
    let want = rules::markdown_tables();
    assert_eq!(
        tables.trim_end(),
        want.trim_end(),
        "docs/seccomp.md is out of date"
    );
    for kind in ThreadKind::ALL {
        for allowed in rules::allowed(kind) {
            let name = format!("`{}`", syscall_name(allowed.nr as u32));
            assert!(want.contains(&name), "{kind:?}: {name}");
        }
    }
}

#[test]
fn apply_installs_the_filter_it_is_given() {
    let filters = SeccompFilters::builtin().unwrap();
    let (status, err) = in_child(|| {
        apply(Some(&filters), ThreadKind::Vcpu, 1).unwrap();
        exec_true();
    });
    assert_eq!(exit_code(status), Some(BAD_SYSCALL_EXIT_CODE), "{err}");
    assert!(err.starts_with("error: seccomp: the vcpu1 thread"), "{err}");
}

#[test]
fn a_message_longer_than_its_buffer_is_cut_not_overrun() {
    let mut line = Line {
        buf: [0; 160],
        len: 150,
    };
    line.push(&[b'x'; 20]);
    assert_eq!(line.len, 160);
    assert!(line.buf[150..].iter().all(|&b| b == b'x'));
    let mut line = Line {
        buf: [0; 160],
        len: 0,
    };
    line.push_dec(0);
    line.push(b" ");
    line.push_dec(18_446_744_073_709_551_615);
    assert_eq!(&line.buf[..line.len], b"0 18446744073709551615");
}
