//! Shared fixtures for the integration tests: the test guests, the podvm
//! binary, and running it with a deadline.

#![allow(dead_code)]

pub mod netns;

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// How long any guest may take. The guests run a few hundred thousand
/// instructions at most; even KVM's instruction emulator (HOST.md) runs
/// them in a few seconds. This only bounds a hang.
pub const DEADLINE: Duration = Duration::from_secs(120);

/// Path of a test guest built by build.rs from tests/guests/.
pub fn guest(name: &str) -> PathBuf {
    let p = PathBuf::from(env!("PODVM_TEST_GUESTS")).join(name);
    assert!(p.exists(), "test guest {} was not built", p.display());
    p
}

/// The podvm binary under test.
pub fn podvm() -> Command {
    Command::new(env!("CARGO_BIN_EXE_podvm"))
}

/// Whether KVM can be used here. When it cannot, the caller skips its test
/// through the one skip helper ([`testkit::skip`]): `SKIPPED: …` on
/// stderr, or a failure under `PODVM_REQUIRE_KVM=1` / `PODVM_REQUIRE_ALL=1`.
pub fn kvm_available(test: &str) -> bool {
    testkit::need_kvm(test)
}

/// What a finished podvm run left.
#[derive(Debug)]
pub struct RunOutput {
    /// Its exit status.
    pub status: ExitStatus,
    /// Everything it wrote on stdout (the guest's console by default).
    pub stdout: String,
    /// Everything it wrote on stderr (logs and errors).
    pub stderr: String,
}

impl RunOutput {
    /// The exit code; panics when the process was killed by a signal.
    pub fn code(&self) -> i32 {
        self.status
            .code()
            .unwrap_or_else(|| panic!("podvm died by a signal: {self:?}"))
    }

    /// Lines of the guest console.
    pub fn lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }

    /// The value after `key: ` on the console, if a line has it.
    pub fn value(&self, key: &str) -> Option<&str> {
        let prefix = format!("{key}: ");
        self.stdout
            .lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
    }
}

fn drain<R: Read + Send + 'static>(mut r: R) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// Waits for `child` until [`DEADLINE`], killing it past that.
pub fn wait_with_deadline(mut child: Child) -> RunOutput {
    let out = drain(child.stdout.take().expect("stdout piped"));
    let err = drain(child.stderr.take().expect("stderr piped"));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for podvm") {
            break status;
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "podvm did not finish within {DEADLINE:?}; stdout so far: {:?}",
                out.join().unwrap_or_default()
            );
        }
        thread::sleep(Duration::from_millis(5));
    };
    RunOutput {
        status,
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    }
}

/// Runs `podvm` with `args`, no input, until it exits.
pub fn run_podvm(args: &[&str]) -> RunOutput {
    let child = podvm()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn podvm");
    wait_with_deadline(child)
}

/// Runs `podvm serve --config-file` over `config` (written into `dir`,
/// the API socket beside it) until it exits; returns its output and the
/// last line of the metrics file, which `config` gets in `dir` too.
pub fn serve_config_file(
    dir: &std::path::Path,
    mut config: serde_json::Value,
) -> (RunOutput, serde_json::Value) {
    let metrics = dir.join("metrics.json");
    config["metrics"] = serde_json::json!({ "metrics_path": metrics });
    let path = dir.join("config.json");
    std::fs::write(&path, config.to_string()).unwrap();
    let child = podvm()
        .arg("serve")
        .arg("--api-sock")
        .arg(dir.join("api.sock"))
        .arg("--config-file")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn podvm");
    let out = wait_with_deadline(child);
    let metrics = last_metrics(&metrics);
    (out, metrics)
}

/// FNV-1a, 32-bit: what the virtio test guests print over the bytes they
/// read.
pub fn fnv1a(bytes: &[u8]) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in bytes {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("{h:08x}")
}

/// Runs guest `name` with `podvm run --kernel <guest> <extra…>`.
pub fn run_guest(name: &str, extra: &[&str]) -> RunOutput {
    let kernel = guest(name);
    let mut args = vec!["run", "--kernel", kernel.to_str().expect("utf-8 path")];
    args.extend_from_slice(extra);
    run_podvm(&args)
}

/// A child process that is killed if the test ends (or panics) before it
/// exits, so that a failing test never leaves a VM running.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Starts `podvm <args…>` with no input and both outputs piped, killed
/// when the test ends.
pub fn spawn_podvm<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> KillOnDrop {
    KillOnDrop(
        podvm()
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn podvm"),
    )
}

/// `PUT /actions {"action_type": <action>}` must answer 204.
pub fn action(sock: &std::path::Path, action: &str) {
    let body = format!(r#"{{"action_type": "{action}"}}"#);
    let (code, reply) = http(sock, "PUT", "/actions", &body);
    assert_eq!(code, 204, "{action}: {reply}");
}

/// The last line of a metrics file, as JSON.
pub fn last_metrics(path: &std::path::Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let line = text.lines().last().expect("a metrics line");
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

/// One HTTP/1.1 request over the API socket (a fresh connection, closed
/// after the reply); returns the status code and the body.
pub fn http(sock: &std::path::Path, method: &str, path: &str, body: &str) -> (u16, String) {
    use std::io::Write;
    let mut s = std::os::unix::net::UnixStream::connect(sock)
        .unwrap_or_else(|e| panic!("connect {}: {e}", sock.display()));
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    // A server may answer (413) and close before reading all of a large
    // body; what it answered is still read below.
    let _ = write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Accept: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut raw = Vec::new();
    // A server refusing a body it did not read (413) may reset the
    // connection after its reply: keep what arrived.
    if let Err(e) = s.read_to_end(&mut raw) {
        assert!(!raw.is_empty(), "no reply to {method} {path}: {e}");
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"));
    (status, rest.to_string())
}

/// Waits (bounded by [`DEADLINE`]) until something accepts connections on
/// the socket at `path`.
pub fn wait_for_path(path: &std::path::Path) {
    let start = Instant::now();
    while std::os::unix::net::UnixStream::connect(path).is_err() {
        assert!(
            start.elapsed() < DEADLINE,
            "nothing serves on {}",
            path.display()
        );
        thread::sleep(Duration::from_millis(2));
    }
}

/// Streams a child's stdout into a channel of chunks.
pub fn stream_stdout(child: &mut Child) -> mpsc::Receiver<String> {
    let mut out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = out.read(&mut buf) {
            if n == 0
                || tx
                    .send(String::from_utf8_lossy(&buf[..n]).into_owned())
                    .is_err()
            {
                break;
            }
        }
    });
    rx
}

/// Collects chunks until `seen` contains `needle` (bounded by [`DEADLINE`]).
pub fn wait_output(rx: &mpsc::Receiver<String>, seen: &mut String, needle: &str) {
    let deadline = Instant::now() + DEADLINE;
    while !seen.contains(needle) {
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("{needle:?} never appeared; output ends {:?}", tail(seen)));
        seen.push_str(&chunk);
    }
}

/// About the last 200 bytes of `s`, cut at a character boundary.
pub fn tail(s: &str) -> &str {
    let mut start = s.len().saturating_sub(200);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// Collects chunks until none has come for `quiet` (bounded by
/// [`DEADLINE`]: output that never stops fails the test, naming `what`).
pub fn drain_until_quiet(
    rx: &mpsc::Receiver<String>,
    seen: &mut String,
    quiet: Duration,
    what: &str,
) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        match rx.recv_timeout(quiet) {
            Ok(chunk) => seen.push_str(&chunk),
            Err(mpsc::RecvTimeoutError::Timeout) => return,
            // The writer is gone: nothing more can come.
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
        assert!(
            Instant::now() < deadline,
            "{what}: the output never went quiet for {quiet:?}; it ends {:?}",
            tail(seen)
        );
    }
}

/// Waits (bounded by [`DEADLINE`]) for `child` to exit; its status.
pub fn wait_status(child: &mut Child) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().expect("wait for podvm") {
            return s;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "podvm did not exit within {DEADLINE:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits (bounded by [`DEADLINE`]) for `child` to exit; its exit code.
pub fn wait_exit(child: &mut Child) -> i32 {
    let status = wait_status(child);
    status
        .code()
        .unwrap_or_else(|| panic!("podvm died by a signal: {status:?}"))
}

/// Page-cache state of a whole file (`cachestat(2)`, Linux 6.5+): how
/// many of its pages are cached, dirty (written, not yet on the disk) and
/// under writeback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheStat {
    /// Pages in the page cache.
    pub cached: u64,
    /// Of those, pages written but not yet written back.
    pub dirty: u64,
    /// Pages being written back right now.
    pub writeback: u64,
}

/// [`CacheStat`] of the file at `path`.
pub fn cachestat(path: &std::path::Path) -> CacheStat {
    use std::os::fd::AsRawFd;
    /// `struct cachestat_range` (include/uapi/linux/mman.h).
    #[repr(C)]
    struct Range {
        off: u64,
        len: u64,
    }
    /// `struct cachestat`.
    #[repr(C)]
    #[derive(Default)]
    struct Stat {
        nr_cache: u64,
        nr_dirty: u64,
        nr_writeback: u64,
        nr_evicted: u64,
        nr_recently_evicted: u64,
    }
    /// x86_64's number for cachestat.
    const SYS_CACHESTAT: libc::c_long = 451;
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    // Length 0: to the end of the file.
    let range = Range { off: 0, len: 0 };
    let mut stat = Stat::default();
    // SAFETY: cachestat reads `range` and writes `stat`, both valid and
    // of the kernel's layout, for an open fd.
    let rc = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            file.as_raw_fd(),
            &range as *const Range,
            &mut stat as *mut Stat,
            0,
        )
    };
    assert_eq!(
        rc,
        0,
        "cachestat {}: {} (needs Linux 6.5 or later)",
        path.display(),
        std::io::Error::last_os_error()
    );
    CacheStat {
        cached: stat.nr_cache,
        dirty: stat.nr_dirty,
        writeback: stat.nr_writeback,
    }
}
