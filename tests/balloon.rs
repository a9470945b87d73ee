//! virtio-balloon end to end, with the `virtio_balloon` test guest (a
//! polling balloon driver): inflating gives the guest's pages back to the
//! host and deflating returns them (zeroed); statistics come at the
//! polling interval; reported and hinted free ranges are dropped on the
//! host; a hostile driver gets nothing dropped outside its RAM and the VMM
//! keeps serving; the calls a running VM refuses are 400s.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use common::*;

const MIB_KB: u64 = 1024;

/// A `podvm serve` of the balloon guest, its console's input piped.
struct Pod {
    vm: KillOnDrop,
    stdin: ChildStdin,
    out: Receiver<String>,
    seen: String,
    sock: PathBuf,
    metrics: PathBuf,
    _dir: tempfile::TempDir,
}

impl Pod {
    /// The guest booted with `balloon` and the guest's `args`, ready.
    fn start(balloon: serde_json::Value, args: &str) -> Pod {
        Pod::start_on(balloon, args, "None")
    }

    /// As [`Pod::start`], guest RAM backed by `huge_pages` pages.
    fn start_on(balloon: serde_json::Value, args: &str, huge_pages: &str) -> Pod {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("vm.json");
        std::fs::write(
            &config,
            serde_json::json!({
                "boot-source": {"kernel_image_path": guest("virtio_balloon"),
                                "boot_args": format!("console=ttyS0 {args}")},
                "machine-config": {"vcpu_count": 1, "mem_size_mib": 256,
                                   "huge_pages": huge_pages},
                "balloon": balloon,
                "metrics": {"metrics_path": dir.path().join("metrics.json")},
            })
            .to_string(),
        )
        .unwrap();
        let mut pod = Pod::spawn(dir, Some(&config));
        pod.wait("balloon-ready\n");
        pod
    }

    /// `podvm serve` in `dir`, with the config file `config` if given.
    fn spawn(dir: tempfile::TempDir, config: Option<&Path>) -> Pod {
        let sock = dir.path().join("api.sock");
        let metrics = dir.path().join("metrics.json");
        let mut cmd = podvm();
        cmd.arg("serve").arg("--api-sock").arg(&sock);
        if let Some(config) = config {
            cmd.arg("--config-file").arg(config);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn podvm");
        let stdin = child.stdin.take().unwrap();
        let out = stream_stdout(&mut child);
        let pod = Pod {
            vm: KillOnDrop(child),
            stdin,
            out,
            seen: String::new(),
            sock,
            metrics,
            _dir: dir,
        };
        if config.is_none() {
            wait_for_path(&pod.sock);
        }
        pod
    }

    fn wait(&mut self, needle: &str) {
        wait_output(&self.out, &mut self.seen, needle);
    }

    /// Types a command byte on the guest's console.
    fn key(&mut self, c: u8) {
        self.stdin.write_all(&[c]).unwrap();
        self.stdin.flush().unwrap();
    }

    fn call(&self, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
        let (code, reply) = http(&self.sock, method, path, body);
        let json = if reply.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&reply).unwrap_or_else(|e| panic!("{reply}: {e}"))
        };
        (code, json)
    }

    fn ok(&self, method: &str, path: &str, body: &str) -> serde_json::Value {
        let (code, json) = self.call(method, path, body);
        assert!(code == 200 || code == 204, "{method} {path}: {code} {json}");
        json
    }

    fn refused(&self, method: &str, path: &str, body: &str, why: &str) {
        let (code, json) = self.call(method, path, body);
        assert_eq!(code, 400, "{method} {path}: {json}");
        let msg = json["fault_message"].as_str().unwrap_or_default();
        assert!(msg.contains(why), "{method} {path}: {msg:?} lacks {why:?}");
    }

    /// Guest memory resident in podvm (its memfd's pages), KiB.
    fn guest_rss_kb(&self) -> u64 {
        rss_shmem_kb(self.vm.0.id())
    }

    fn balloon_metrics(&self) -> serde_json::Value {
        action(&self.sock, "FlushMetrics");
        last_metrics(&self.metrics)["balloon"].clone()
    }

    /// Ends the guest; podvm exits 0.
    fn quit(mut self) {
        self.key(b'q');
        self.wait("balloon-bye\n");
        assert_eq!(wait_exit(&mut self.vm.0), 0, "{}", tail(&self.seen));
    }
}

fn rss_shmem_kb(pid: u32) -> u64 {
    status_kb(pid, "RssShmem")
}

/// A `/proc/PID/status` figure, kB.
fn status_kb(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {status}"))
}

/// A statistic, once the guest has sent it.
fn stat(stats: &serde_json::Value, key: &str) -> Option<u64> {
    stats[key].as_u64()
}

#[test]
fn inflating_frees_host_memory_deflating_returns_it_and_statistics_come_each_interval() {
    if !kvm_available("inflating_frees_host_memory") {
        return;
    }
    let mut pod = Pod::start(
        serde_json::json!({"amount_mib": 0, "deflate_on_oom": true,
                           "stats_polling_interval_s": 1}),
        "balloon.touch=32",
    );
    assert!(pod.seen.contains("balloon-touched: 8192\n"), "{}", pod.seen);
    let touched = pod.guest_rss_kb();
    assert!(touched >= 32 * MIB_KB, "{touched} kB resident");

    pod.ok("PATCH", "/balloon", r#"{"amount_mib": 16}"#);
    pod.wait("balloon-actual: 4096 zero=0\n");
    let inflated = pod.guest_rss_kb();
    assert!(
        touched - inflated >= 16 * MIB_KB - 64,
        "resident {touched} kB -> {inflated} kB after inflating 16 MiB"
    );
    assert_eq!(
        pod.ok("GET", "/balloon", ""),
        serde_json::json!({"amount_mib": 16, "deflate_on_oom": true,
            "stats_polling_interval_s": 1, "free_page_hinting": false,
            "free_page_reporting": false})
    );

    // Statistics: the guest's buffer comes back every second; it counts
    // its sends in minor_faults.
    let stats = pod.ok("GET", "/balloon/statistics", "");
    assert_eq!(stats["target_pages"], 4096);
    assert_eq!(stats["target_mib"], 16);
    let first = stat(&stats, "minor_faults").expect("the first statistics");
    let (mut last, started, deadline) = (first, Instant::now(), Instant::now() + DEADLINE);
    while last < first + 2 {
        assert!(Instant::now() < deadline, "statistics stopped at {last}");
        std::thread::sleep(Duration::from_millis(100));
        let s = pod.ok("GET", "/balloon/statistics", "");
        last = stat(&s, "minor_faults").unwrap();
        assert_eq!(s["actual_pages"], 4096, "{s}");
        assert_eq!(s["total_memory"], 32 << 20);
        if last > first {
            // Sent after the inflation.
            assert_eq!(s["free_memory"], 16 << 20, "{s}");
        }
    }
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "two updates {:?} apart with a 1 s interval",
        started.elapsed()
    );
    // A new interval asks for statistics at once.
    pod.ok(
        "PATCH",
        "/balloon/statistics",
        r#"{"stats_polling_interval_s": 30}"#,
    );
    let asked = Instant::now();
    while stat(&pod.ok("GET", "/balloon/statistics", ""), "minor_faults").unwrap() == last {
        assert!(asked.elapsed() < DEADLINE, "no statistics after the change");
        std::thread::sleep(Duration::from_millis(20));
    }

    // Deflating: the pages the guest takes back read 0 (they were freed).
    pod.ok("PATCH", "/balloon", r#"{"amount_mib": 4}"#);
    pod.wait("balloon-actual: 1024 zero=3072\n");
    assert!(pod.guest_rss_kb() >= inflated + 12 * MIB_KB - 64);

    pod.refused(
        "PATCH",
        "/balloon/statistics",
        r#"{"stats_polling_interval_s": 0}"#,
        "cannot be turned on or off after InstanceStart",
    );
    pod.refused(
        "PUT",
        "/balloon",
        r#"{"amount_mib": 1, "deflate_on_oom": false}"#,
        "balloon cannot be changed after InstanceStart",
    );
    pod.refused(
        "PATCH",
        "/balloon",
        r#"{"amount_mib": 300}"#,
        "amount_mib 300 is more than the guest's 256 MiB",
    );
    pod.refused(
        "PATCH",
        "/balloon/hinting/start",
        "",
        "free page hinting is not enabled",
    );
    pod.refused(
        "GET",
        "/balloon/hinting/status",
        "",
        "free page hinting is not enabled",
    );
    let m = pod.balloon_metrics();
    assert_eq!(m["inflated_pages"], 4096, "{m}");
    assert_eq!(m["deflated_pages"], 3072);
    assert_eq!(m["inflated_bytes_freed"], 16 << 20);
    assert_eq!(
        (m["pages_outside"].clone(), m["malformed"].clone()),
        (0.into(), 0.into())
    );
    assert!(m["stats_updates"].as_u64().unwrap() >= 3, "{m}");
    assert_eq!(m["actual_pages"], 1024);
    pod.quit();
}

#[test]
fn reported_and_hinted_free_ranges_go_back_to_the_host() {
    if !kvm_available("reported_and_hinted_free_ranges") {
        return;
    }
    let mut pod = Pod::start(
        serde_json::json!({"amount_mib": 0, "deflate_on_oom": false,
                           "free_page_reporting": true, "free_page_hinting": true}),
        "balloon.touch=32 balloon.report_at=16 balloon.report=8 balloon.hint_at=24 balloon.hint=8",
    );
    let touched = pod.guest_rss_kb();
    assert!(touched >= 32 * MIB_KB, "{touched} kB resident");
    pod.refused(
        "GET",
        "/balloon/statistics",
        "",
        "balloon statistics: not enabled",
    );
    assert_eq!(
        pod.ok("GET", "/balloon/hinting/status", ""),
        serde_json::json!({"host_cmd": 0})
    );

    pod.key(b'r');
    pod.wait("balloon-reported: 8\n");
    let reported = pod.guest_rss_kb();
    assert!(
        touched - reported >= 8 * MIB_KB - 64,
        "resident {touched} kB -> {reported} kB after reporting 8 MiB"
    );

    pod.ok("PATCH", "/balloon/hinting/start", "{}");
    pod.wait("balloon-hinted: 2\n");
    // The guest's STOP is acknowledged by podvm itself (the default).
    pod.wait("balloon-hint-done\n");
    let hinted = pod.guest_rss_kb();
    assert!(
        reported - hinted >= 8 * MIB_KB - 64,
        "resident {reported} kB -> {hinted} kB after hinting 8 MiB"
    );
    assert_eq!(
        pod.ok("GET", "/balloon/hinting/status", ""),
        serde_json::json!({"host_cmd": 1, "guest_cmd": 0})
    );
    let m = pod.balloon_metrics();
    assert_eq!(m["reported_bytes_freed"], 8 << 20, "{m}");
    assert_eq!(m["hinted_bytes_freed"], 8 << 20);
    assert_eq!(m["reported_ranges"], 1);
    assert_eq!(m["hinted_ranges"], 1);
    // What was freed reads 0 in the guest: 16 MiB of its 32.
    pod.key(b'c');
    pod.wait("balloon-zero-pages: 4096\n");
    // A second run without the acknowledgement waits for the stop.
    pod.ok(
        "PATCH",
        "/balloon/hinting/start",
        r#"{"acknowledge_on_stop": false}"#,
    );
    pod.wait("balloon-hinted: 3\n");
    assert_eq!(
        pod.ok("GET", "/balloon/hinting/status", ""),
        serde_json::json!({"host_cmd": 3, "guest_cmd": 0})
    );
    pod.ok("PATCH", "/balloon/hinting/stop", "");
    let done = pod.seen.matches("balloon-hint-done\n").count();
    wait_until(&mut pod, |seen| {
        seen.matches("balloon-hint-done\n").count() > done
    });
    pod.quit();
}

/// Collects output until `cond` holds (bounded by [`DEADLINE`]).
fn wait_until(pod: &mut Pod, cond: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !cond(&pod.seen) {
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = pod
            .out
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("never came; output ends {:?}", tail(&pod.seen)));
        pod.seen.push_str(&chunk);
    }
}

#[test]
fn a_hostile_balloon_driver_frees_nothing_outside_its_ram_and_the_vmm_goes_on() {
    if !kvm_available("a_hostile_balloon_driver") {
        return;
    }
    let mut pod = Pod::start(
        serde_json::json!({"amount_mib": 0, "deflate_on_oom": false,
                           "free_page_reporting": true}),
        "balloon.touch=4 balloon.ram_end=0x10000000",
    );
    pod.key(b'x');
    // RAM's last page, next to a report across the end of RAM, kept.
    pod.wait("balloon-hostile-done: 0x5a\n");
    let m = pod.balloon_metrics();
    assert_eq!(m["pages_outside"], 3, "{m}");
    assert_eq!(m["inflated_pages"], 2, "the base page, once per request");
    assert_eq!(m["malformed"], 4, "a 6-byte list and three bad reports");
    assert_eq!(m["reported_bytes_freed"], 0);
    assert_eq!(m["discard_failures"], 0);
    // Still serving, and the balloon still works.
    pod.ok("GET", "/", "");
    pod.ok("PATCH", "/balloon", r#"{"amount_mib": 1}"#);
    pod.wait("balloon-actual: 256 zero=0\n");
    pod.quit();
}

#[test]
fn a_restored_balloon_keeps_its_size_and_statistics_and_frees_its_private_copies() {
    if !kvm_available("a_restored_balloon") {
        return;
    }
    let mut pod = Pod::start(
        serde_json::json!({"amount_mib": 8, "deflate_on_oom": true,
                           "stats_polling_interval_s": 1}),
        "balloon.touch=32",
    );
    pod.wait("balloon-actual: 2048 zero=0\n");
    let snap = tempfile::tempdir().unwrap();
    let (state, mem) = (snap.path().join("vm.state"), snap.path().join("vm.mem"));
    pod.ok("PATCH", "/vm", r#"{"state": "Paused"}"#);
    let body = serde_json::json!({"snapshot_type": "Full", "snapshot_path": state,
                                  "mem_file_path": mem});
    pod.ok("PUT", "/snapshot/create", &body.to_string());
    drop(pod);

    let mut pod = Pod::spawn(tempfile::tempdir().unwrap(), None);
    let load = serde_json::json!({"snapshot_path": state, "mem_file_path": mem,
                                  "resume_vm": true});
    pod.ok("PUT", "/snapshot/load", &load.to_string());
    assert_eq!(pod.ok("GET", "/balloon", "")["amount_mib"], 8);
    // The statistics buffer the device held comes back at the next poll.
    let stats = pod.ok("GET", "/balloon/statistics", "");
    assert_eq!(stats["actual_pages"], 2048, "{stats}");
    let before = stat(&stats, "minor_faults").unwrap();
    let deadline = Instant::now() + DEADLINE;
    while stat(&pod.ok("GET", "/balloon/statistics", ""), "minor_faults").unwrap() == before {
        assert!(Instant::now() < deadline, "no statistics after the restore");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The guest takes its pages back (they were freed before the snapshot,
    // so they read 0) and writes them: private copies of the memory file.
    let pid = pod.vm.0.id();
    let anon = status_kb(pid, "RssAnon");
    pod.ok("PATCH", "/balloon", r#"{"amount_mib": 0}"#);
    pod.wait("balloon-actual: 0 zero=2048\n");
    let used = status_kb(pid, "RssAnon");
    assert!(used >= anon + 8 * MIB_KB - 64, "{anon} kB -> {used} kB");
    // Inflating them again drops those copies.
    pod.ok("PATCH", "/balloon", r#"{"amount_mib": 8}"#);
    pod.wait("balloon-actual: 2048 zero=0\n");
    let freed = status_kb(pid, "RssAnon");
    assert!(used - freed >= 8 * MIB_KB - 64, "{used} kB -> {freed} kB");
    pod.quit();
}

#[test]
fn on_huge_pages_whole_huge_pages_go_back_once_ballooned_or_reported() {
    if !kvm_available("on_huge_pages_whole_huge_pages_go_back") {
        return;
    }
    // 256 MiB of guest RAM: 128 huge pages.
    let Some(_pool) = testkit::HugePages::reserve("on_huge_pages_whole_huge_pages_go_back", 128)
    else {
        return;
    };
    let mut pod = Pod::start_on(
        serde_json::json!({"amount_mib": 0, "deflate_on_oom": false,
                           "free_page_reporting": true}),
        "balloon.touch=32 balloon.report_at=16 balloon.report=8",
        "2M",
    );
    let pid = pod.vm.0.id();
    let hugetlb = status_kb(pid, "HugetlbPages");
    assert!(hugetlb >= 32 * MIB_KB, "{hugetlb} kB of huge pages");
    // Inflated 1 MiB at a time: each huge page goes with its last page.
    pod.ok("PATCH", "/balloon", r#"{"amount_mib": 5}"#);
    pod.wait("balloon-actual: 1280 zero=0\n");
    let inflated = status_kb(pid, "HugetlbPages");
    assert_eq!(hugetlb - inflated, 4 * MIB_KB, "two whole huge pages");
    pod.key(b'r');
    pod.wait("balloon-reported: 8\n");
    assert_eq!(inflated - status_kb(pid, "HugetlbPages"), 8 * MIB_KB);
    let m = pod.balloon_metrics();
    assert_eq!(m["inflated_bytes_freed"], 4 << 20, "{m}");
    assert_eq!(m["reported_bytes_freed"], 8 << 20);
    pod.quit();
}
