//! Control-API benchmarks (`cargo bench --bench api`): `exec` of
//! `podvm serve` → socket accepting; one `GET /` round trip;
//! `InstanceStart` → first guest serial byte; pause and resume round trips
//! with 1 and 4 busy vCPUs; `Shutdown` → process exit. Needs /dev/kvm for
//! the VM figures; without it, says so and measures only the API ones.

// criterion's macros generate undocumented public functions.
#![allow(missing_docs)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{guest, http, podvm, KillOnDrop};
use criterion::{criterion_group, criterion_main, Criterion};

fn kvm_usable() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

/// Starts `podvm serve` and returns it once the socket accepts, with the
/// time that took.
fn start(sock: &Path) -> (KillOnDrop, Duration) {
    let _ = std::fs::remove_file(sock);
    let t = Instant::now();
    let child = podvm()
        .args(["serve", "--api-sock"])
        .arg(sock)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn podvm serve");
    while UnixStream::connect(sock).is_err() {
        std::thread::sleep(Duration::from_micros(50));
    }
    (KillOnDrop(child), t.elapsed())
}

fn shutdown(vm: &mut KillOnDrop, sock: &Path) -> Duration {
    let t = Instant::now();
    let (code, body) = http(sock, "PUT", "/actions", r#"{"action_type": "Shutdown"}"#);
    assert_eq!(code, 204, "{body}");
    vm.0.wait().expect("podvm exits");
    t.elapsed()
}

fn boot(sock: &Path, kernel: &Path, vcpus: u8, child: &mut Child) -> Duration {
    let mc = format!(r#"{{"vcpu_count": {vcpus}, "mem_size_mib": 128}}"#);
    assert_eq!(http(sock, "PUT", "/machine-config", &mc).0, 204);
    let bs = format!(r#"{{"kernel_image_path": "{}"}}"#, kernel.display());
    assert_eq!(http(sock, "PUT", "/boot-source", &bs).0, 204);
    let mut out = child.stdout.take().expect("stdout piped");
    let t = Instant::now();
    assert_eq!(
        http(
            sock,
            "PUT",
            "/actions",
            r#"{"action_type": "InstanceStart"}"#
        )
        .0,
        204
    );
    let mut byte = [0u8; 1];
    out.read_exact(&mut byte).expect("guest output");
    let took = t.elapsed();
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    took
}

fn sock_path() -> PathBuf {
    std::env::temp_dir().join(format!("podvm-bench-{}.sock", std::process::id()))
}

fn api(c: &mut Criterion) {
    let sock = sock_path();
    let mut g = c.benchmark_group("api");
    g.sample_size(20);
    g.bench_function("exec_to_socket_accepting", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    let (mut vm, t) = start(&sock);
                    shutdown(&mut vm, &sock);
                    t
                })
                .sum()
        })
    });
    let (mut vm, _) = start(&sock);
    g.bench_function("get_instance_info", |b| {
        b.iter(|| assert_eq!(http(&sock, "GET", "/", "").0, 200))
    });
    shutdown(&mut vm, &sock);
    g.finish();
}

fn vm(c: &mut Criterion) {
    if !kvm_usable() {
        testkit::skip(
            testkit::Need::Kvm,
            "VM benchmarks of the API",
            "/dev/kvm is not available",
        );
        return;
    }
    let sock = sock_path();
    let hello = guest("hello");
    let counter = guest("counter");
    let mut g = c.benchmark_group("api_vm");
    g.sample_size(20);
    g.bench_function("instance_start_to_first_serial_byte", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    let (mut vm, _) = start(&sock);
                    let t = boot(&sock, &hello, 1, &mut vm.0);
                    let _ = vm.0.wait();
                    t
                })
                .sum()
        })
    });
    for vcpus in [1u8, 4] {
        let (mut vm, _) = start(&sock);
        boot(&sock, &counter, vcpus, &mut vm.0);
        g.bench_function(format!("pause_resume_{vcpus}vcpu"), |b| {
            b.iter(|| {
                assert_eq!(http(&sock, "PATCH", "/vm", r#"{"state": "Paused"}"#).0, 204);
                assert_eq!(
                    http(&sock, "PATCH", "/vm", r#"{"state": "Resumed"}"#).0,
                    204
                );
            })
        });
        shutdown(&mut vm, &sock);
    }
    g.bench_function("shutdown_to_exit", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    let (mut vm, _) = start(&sock);
                    boot(&sock, &counter, 1, &mut vm.0);
                    shutdown(&mut vm, &sock)
                })
                .sum()
        })
    });
    g.finish();
}

criterion_group!(benches, api, vm);
criterion_main!(benches);
