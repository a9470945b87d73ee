//! Hostile API clients against a running pod-VM: truncated requests,
//! requests dripped one byte at a time, thousands of connections at once,
//! huge headers, invalid UTF-8 in paths and bodies, deeply nested JSON, a
//! request line without an HTTP version, pipelined requests. After each,
//! the VMM still serves (`GET /` answers 200, "Running") and the guest
//! (`counter`) still ticks; the process never dies (seccomp included:
//! the API thread's filter is on, as by default).

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use common::*;

/// How long one hostile exchange may take before the test gives up on
/// the answer (the server may rightly never answer some of them).
const EXCHANGE: Duration = Duration::from_secs(10);

/// A `podvm serve` running the counter guest from a config file.
struct Vm {
    child: KillOnDrop,
    sock: PathBuf,
    rx: mpsc::Receiver<String>,
    seen: String,
    _dir: tempfile::TempDir,
}

impl Vm {
    /// Starts it and waits for its first ticks; `None` without KVM.
    fn start(test: &str) -> Option<Vm> {
        if !kvm_available(test) {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let config = serde_json::json!({
            "boot-source": {"kernel_image_path": guest("counter"), "boot_args": "console=ttyS0"},
            "machine-config": {"vcpu_count": 1, "mem_size_mib": 32},
        });
        let config_path = dir.path().join("config.json");
        std::fs::write(&config_path, config.to_string()).unwrap();
        let sock = dir.path().join("api.sock");
        let mut child = spawn_podvm(&[
            "serve".as_ref(),
            "--api-sock".as_ref(),
            sock.as_os_str(),
            "--config-file".as_ref(),
            config_path.as_os_str(),
        ]);
        let rx = stream_stdout(&mut child.0);
        let mut vm = Vm {
            child,
            sock,
            rx,
            seen: String::new(),
            _dir: dir,
        };
        wait_for_path(&vm.sock);
        wait_output(&vm.rx, &mut vm.seen, "tick 1\n");
        Some(vm)
    }

    /// The number of the last tick the guest printed.
    fn last_tick(&mut self) -> u64 {
        drain_now(&self.rx, &mut self.seen);
        self.seen
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("tick ").and_then(|n| n.parse().ok()))
            .expect("a tick line")
    }

    /// The VMM answers `GET /` with 200 and "Running", and the guest
    /// ticks twice more; the process is still there.
    fn check_alive(&mut self, after: &str) {
        assert!(
            matches!(self.child.0.try_wait(), Ok(None)),
            "podvm died after {after}: {:?}",
            self.child.0.try_wait()
        );
        let (code, body) = http(&self.sock, "GET", "/", "");
        assert_eq!(code, 200, "GET / after {after}: {body}");
        assert!(body.contains("\"Running\""), "after {after}: {body}");
        let next = self.last_tick() + 2;
        wait_output(&self.rx, &mut self.seen, &format!("tick {next}\n"));
    }

    fn connect(&mut self) -> UnixStream {
        let s = UnixStream::connect(&self.sock).unwrap_or_else(|e| {
            // Exit code 148: a seccomp filter ended it.
            panic!(
                "connect to the API socket: {e}; podvm: {:?}",
                self.child.0.try_wait()
            )
        });
        s.set_read_timeout(Some(EXCHANGE)).unwrap();
        s.set_write_timeout(Some(EXCHANGE)).unwrap();
        s
    }
}

/// Moves whatever output has arrived into `seen`, without waiting.
fn drain_now(rx: &mpsc::Receiver<String>, seen: &mut String) {
    while let Ok(chunk) = rx.try_recv() {
        seen.push_str(&chunk);
    }
}

/// Writes `bytes` on a fresh connection (all of it, or as much as the
/// server takes before it closes), closes the writing side and returns
/// what came back within [`EXCHANGE`].
fn exchange(vm: &mut Vm, bytes: &[u8]) -> Vec<u8> {
    let mut s = vm.connect();
    let _ = s.write_all(bytes);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply);
    reply
}

/// The status codes of the HTTP responses in `reply`, in order.
fn statuses(reply: &[u8]) -> Vec<u16> {
    let text = String::from_utf8_lossy(reply);
    text.match_indices("HTTP/1.1 ")
        .filter_map(|(i, m)| text[i + m.len()..].get(..3)?.parse().ok())
        .collect()
}

/// Every answer in `reply`, if any, is a client error.
fn refused(what: &str, reply: &[u8]) {
    for code in statuses(reply) {
        assert!(
            (400..500).contains(&code),
            "{what}: answered {code}: {:?}",
            String::from_utf8_lossy(reply)
        );
    }
}

#[test]
fn truncated_requests() {
    let Some(mut vm) = Vm::start("truncated_requests") else {
        return;
    };
    let cases: &[&[u8]] = &[
        b"G",
        b"GET / HT",
        b"GET / HTTP/1.1\r\nHost: x",
        b"PUT /actions HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"action_type\": \"Inst",
        b"PUT /machine-config HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n{\"vcpu",
        b"PATCH /vm HTTP/1.1\r\nContent-Length: 5",
    ];
    for case in cases {
        let reply = exchange(&mut vm, case);
        refused(&String::from_utf8_lossy(case), &reply);
    }
    // And connections dropped without their writing side closed first.
    for case in cases {
        let mut s = vm.connect();
        let _ = s.write_all(case);
        drop(s);
    }
    vm.check_alive("truncated requests");
}

#[test]
fn slow_drip_requests_do_not_stall_other_clients() {
    let Some(mut vm) = Vm::start("slow_drip_requests_do_not_stall_other_clients") else {
        return;
    };
    let request = b"GET / HTTP/1.1\r\nHost: x\r\nAccept: application/json\r\n\r\n";
    let mut slow = vm.connect();
    for (i, b) in request.iter().enumerate() {
        slow.write_all(&[*b])
            .expect("the server reads a slow client");
        std::thread::sleep(Duration::from_millis(10));
        // Others are served meanwhile.
        if i % 20 == 0 {
            let (code, body) = http(&vm.sock, "GET", "/", "");
            assert_eq!(code, 200, "while a client drips: {body}");
        }
    }
    let mut reply = [0u8; 12];
    slow.read_exact(&mut reply)
        .expect("an answer to the dripped request");
    assert_eq!(
        statuses(&reply),
        [200],
        "{:?}",
        String::from_utf8_lossy(&reply)
    );
    vm.check_alive("a slow-drip request");
}

/// The soft limit on open files of process `pid`.
fn open_files_limit(pid: u32) -> u64 {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|n| n.parse().ok())
        .expect("Max open files in /proc/PID/limits")
}

#[test]
fn thousands_of_connections() {
    let Some(mut vm) = Vm::start("thousands_of_connections") else {
        return;
    };
    // Below both processes' limits, with room for what each has open.
    let limit = open_files_limit(vm.child.0.id()).min(open_files_limit(std::process::id()));
    let n = 3000.min(limit.saturating_sub(200)) as usize;
    assert!(n >= 500, "open-file limit {limit} is too low for this test");
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        let mut s = vm.connect();
        // A third send half a request, a third a whole one, a third nothing.
        match i % 3 {
            0 => {
                let _ = s.write_all(b"GET / HTTP/1.1\r\nHo");
            }
            1 => {
                let _ = s.write_all(b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n");
            }
            _ => {}
        }
        conns.push(s);
    }
    // With all of them open the server still answers a new one.
    let (code, body) = http(&vm.sock, "GET", "/", "");
    assert_eq!(code, 200, "with {n} connections open: {body}");
    // Those that sent a whole request got their answer.
    let mut buf = [0u8; 12];
    conns[1].read_exact(&mut buf).unwrap();
    assert_eq!(statuses(&buf), [200]);
    drop(conns);
    vm.check_alive(&format!("{n} connections"));
}

#[test]
fn huge_headers() {
    let Some(mut vm) = Vm::start("huge_headers") else {
        return;
    };
    let big = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(1 << 20)
    );
    let reply = exchange(&mut vm, big.as_bytes());
    refused("a 1 MiB header", &reply);
    let mut many = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
    for i in 0..10_000 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let reply = exchange(&mut vm, many.as_bytes());
    refused("10000 headers", &reply);
    let long_path = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "d/".repeat(200_000));
    let reply = exchange(&mut vm, long_path.as_bytes());
    refused("a 400 KB path", &reply);
    vm.check_alive("huge headers");
}

#[test]
fn invalid_utf8_in_paths_and_bodies() {
    let Some(mut vm) = Vm::start("invalid_utf8_in_paths_and_bodies") else {
        return;
    };
    let reply = exchange(&mut vm, b"GET /\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n");
    refused("raw invalid UTF-8 in the path", &reply);
    let reply = exchange(
        &mut vm,
        b"PUT /drives/%ff%fe HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}",
    );
    assert_eq!(
        statuses(&reply),
        [400],
        "{:?}",
        String::from_utf8_lossy(&reply)
    );
    let body = b"{\"vcpu_count\": 1, \"smt\": \"\xff\xfe\x80\"}";
    let mut body_req = format!(
        "PUT /machine-config HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    body_req.extend_from_slice(body);
    let reply = exchange(&mut vm, &body_req);
    assert_eq!(
        statuses(&reply),
        [400],
        "{:?}",
        String::from_utf8_lossy(&reply)
    );
    assert!(
        String::from_utf8_lossy(&reply).contains("fault_message"),
        "{:?}",
        String::from_utf8_lossy(&reply)
    );
    let reply = exchange(
        &mut vm,
        b"GET / HTTP/1.1\r\nHost: \xff\xfe\r\nX-\xc3: \xc3\x28\r\n\r\n",
    );
    for code in statuses(&reply) {
        assert!(code == 200 || (400..500).contains(&code), "{code}");
    }
    vm.check_alive("invalid UTF-8");
}

#[test]
fn deeply_nested_json() {
    let Some(mut vm) = Vm::start("deeply_nested_json") else {
        return;
    };
    // Within the 51200-byte body limit: the JSON parser's depth limit.
    let (code, body) = http(&vm.sock, "PUT", "/machine-config", &"[".repeat(50_000));
    assert_eq!(code, 400, "{body}");
    let nested = format!(
        "{{\"vcpu_count\": {}1{}}}",
        "[".repeat(20_000),
        "]".repeat(20_000)
    );
    let (code, body) = http(&vm.sock, "PUT", "/machine-config", &nested);
    assert_eq!(code, 400, "{body}");
    // 100 000 of them: past the body limit, refused before it is read.
    let (code, body) = http(&vm.sock, "PUT", "/drives/a", &"[".repeat(100_000));
    assert_eq!(code, 413, "{body}");
    let (code, body) = http(&vm.sock, "PUT", "/snapshot/load", &"{\"a\":".repeat(10_000));
    assert_eq!(code, 400, "{body}");
    vm.check_alive("deeply nested JSON");
}

#[test]
fn request_lines_without_an_http_version() {
    let Some(mut vm) = Vm::start("request_lines_without_an_http_version") else {
        return;
    };
    for case in [
        &b"GET /\r\n\r\n"[..],
        b"GET\r\n\r\n",
        b"GET / HTTP/9.9\r\n\r\n",
        b"\r\n\r\n\r\n",
        b" / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1 extra\r\n\r\n",
        b"\x00\x01\x02\x03 / HTTP/1.1\r\n\r\n",
    ] {
        let reply = exchange(&mut vm, case);
        refused(&String::from_utf8_lossy(case), &reply);
    }
    vm.check_alive("request lines without an HTTP version");
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let Some(mut vm) = Vm::start("pipelined_requests_are_answered_in_order") else {
        return;
    };
    let mut batch = String::new();
    for _ in 0..50 {
        batch.push_str("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        batch.push_str("GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n");
        batch.push_str("PUT /version HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
    }
    batch.push_str("GET /version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut s = vm.connect();
    s.write_all(batch.as_bytes()).unwrap();
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).expect("the pipelined answers");
    let mut want = [200, 404, 405].repeat(50);
    want.push(200);
    assert_eq!(statuses(&reply), want);
    vm.check_alive("pipelined requests");
}
