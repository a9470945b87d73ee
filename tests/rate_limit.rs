//! Rate limiters end to end: test guests drive a throttled disk and a
//! throttled entropy device; every request is served (late, never
//! dropped), the data is right, and the metrics count the throttling.
//! A running drive's limiter is changed and refused through the API.

mod common;

use common::*;

const SECTOR: usize = 512;

#[test]
fn a_throttled_disk_serves_every_request_late_and_counts_it() {
    if !kvm_available("a_throttled_disk_serves_every_request_late_and_counts_it") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bytes: Vec<u8> = (0..32 * SECTOR).map(|i| (i * 7) as u8).collect();
    let disk = dir.path().join("data.img");
    std::fs::write(&disk, &bytes).unwrap();
    // One request per 40 ms: the guest posts its next request within a
    // few milliseconds of the last answer, so each one after the first
    // waits for the refill timer.
    let config = serde_json::json!({
        "boot-source": {
            "kernel_image_path": guest("virtio_blk"),
            "boot_args": "console=ttyS0 blk.read=0:8 blk.write=8:8:171 blk.flush=1 blk.read2=8:8",
        },
        "machine-config": {"vcpu_count": 1, "mem_size_mib": 64},
        "drives": [{
            "drive_id": "data", "path_on_host": disk, "is_root_device": false,
            "is_read_only": false,
            "rate_limiter": {"ops": {"size": 1, "refill_time": 40}},
        }],
    });
    let (out, m) = serve_config_file(dir.path(), config);
    assert_eq!(out.code(), 0, "{out:?}");
    for key in [
        "blk-read-status",
        "blk-write-status",
        "blk-flush-status",
        "blk-read2-status",
    ] {
        assert_eq!(out.value(key), Some("0"), "{key}: {out:?}");
    }
    assert_eq!(
        out.value("blk-read-fnv"),
        Some(fnv1a(&bytes[..8 * SECTOR]).as_str()),
        "{out:?}"
    );
    // The guest writes fill, fill + 1, ... (mod 256).
    let mut expect = bytes.clone();
    for (i, b) in expect[8 * SECTOR..16 * SECTOR].iter_mut().enumerate() {
        *b = (171 + i) as u8;
    }
    assert_eq!(
        out.value("blk-read2-fnv"),
        Some(fnv1a(&expect[8 * SECTOR..16 * SECTOR]).as_str()),
        "{out:?}"
    );
    // Exactly sectors 8..16 changed.
    assert!(
        std::fs::read(&disk).unwrap() == expect,
        "the image holds the write"
    );

    let b = &m["block"]["data"];
    assert_eq!(b["errors"], 0, "{m}");
    assert_eq!(
        (b["reads"].clone(), b["writes"].clone()),
        (2.into(), 1.into())
    );
    let throttled = b["throttled"].as_u64().unwrap();
    let delayed = b["delayed_requests"].as_u64().unwrap();
    assert!(throttled >= 2, "the limiter stopped the queue: {m}");
    assert!(delayed >= 2, "requests were served late: {m}");
}

#[test]
fn an_unlimited_disk_is_never_throttled() {
    if !kvm_available("an_unlimited_disk_is_never_throttled") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("data.img");
    std::fs::write(&disk, vec![0u8; 32 * SECTOR]).unwrap();
    let config = serde_json::json!({
        "boot-source": {
            "kernel_image_path": guest("virtio_blk"),
            "boot_args": "console=ttyS0 blk.read=0:8 blk.write=8:8:171 blk.flush=1 blk.read2=8:8",
        },
        "machine-config": {"vcpu_count": 1, "mem_size_mib": 64},
        "drives": [{
            "drive_id": "data", "path_on_host": disk, "is_root_device": false,
            "is_read_only": false, "rate_limiter": null,
        }],
    });
    let (out, m) = serve_config_file(dir.path(), config);
    assert_eq!(out.code(), 0, "{out:?}");
    let b = &m["block"]["data"];
    assert_eq!(
        (b["throttled"].clone(), b["delayed_requests"].clone()),
        (0.into(), 0.into()),
        "{m}"
    );
}

#[test]
fn a_throttled_entropy_device_serves_both_requests() {
    if !kvm_available("a_throttled_entropy_device_serves_both_requests") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // 64 bytes per 40 ms: the guest's second 64-byte request waits.
    let config = serde_json::json!({
        "boot-source": {
            "kernel_image_path": guest("virtio_rng"),
            "boot_args": "console=ttyS0",
        },
        "machine-config": {"vcpu_count": 1, "mem_size_mib": 64},
        "entropy": {"rate_limiter": {"bandwidth": {"size": 64, "refill_time": 40}}},
    });
    let (out, m) = serve_config_file(dir.path(), config);
    assert_eq!(out.code(), 0, "{out:?}");
    assert_eq!(out.value("rng-len"), Some("64"), "{out:?}");
    let second = out.value("rng-bytes2").expect("a second answer");
    assert_eq!(second.len(), 128, "{out:?}");
    assert_ne!(second, "0".repeat(128));
    let e = &m["entropy"];
    assert!(e["throttled"].as_u64().unwrap() >= 1, "{m}");
    assert_eq!(e["delayed_requests"], 1, "{m}");
    assert_eq!(e["delayed_bytes"], 64, "{m}");
}

#[test]
fn a_running_drive_gets_a_new_rate_limiter_and_bad_ones_are_refused() {
    if !kvm_available("a_running_drive_gets_a_new_rate_limiter_and_bad_ones_are_refused") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("api.sock");
    let disk = dir.path().join("a.img");
    std::fs::write(&disk, vec![0u8; 8 * SECTOR]).unwrap();
    let mut vm = spawn_podvm(&["serve", "--api-sock", sock.to_str().unwrap()]);
    let out = stream_stdout(&mut vm.0);
    wait_for_path(&sock);
    let boot = format!(
        r#"{{"kernel_image_path": "{}", "boot_args": "console=ttyS0 blk.read=0:1 blk.wait_config=1 blk.hold=1"}}"#,
        guest("virtio_blk").display()
    );
    assert_eq!(http(&sock, "PUT", "/boot-source", &boot).0, 204);
    let drive = format!(
        r#"{{"drive_id": "data", "path_on_host": "{}", "is_root_device": false}}"#,
        disk.display()
    );
    assert_eq!(http(&sock, "PUT", "/drives/data", &drive).0, 204);
    action(&sock, "InstanceStart");
    let mut seen = String::new();
    wait_output(&out, &mut seen, "blk-waiting-config\n");

    // PATCH /drives/data with `limiter` as its rate_limiter.
    let patch = |limiter: &str| {
        let body = format!(r#"{{"drive_id": "data", "rate_limiter": {limiter}}}"#);
        http(&sock, "PATCH", "/drives/data", &body)
    };
    let vm_config = || -> serde_json::Value {
        serde_json::from_str(&http(&sock, "GET", "/vm/config", "").1).unwrap()
    };

    // A bucket with a size and no refill time is refused, naming it.
    let (code, body) = patch(r#"{"bandwidth": {"size": 4096, "refill_time": 0}}"#);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("bandwidth.refill_time 0"), "{body}");
    let (code, body) = patch(r#"{"ops": {"size": "ten", "refill_time": 1}}"#);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("fault_message"), "{body}");

    let (code, body) = patch(r#"{"ops": {"size": 100, "one_time_burst": 5, "refill_time": 1000}}"#);
    assert_eq!(code, 204, "{body}");
    let config = vm_config();
    assert_eq!(
        config["drives"][0]["rate_limiter"],
        serde_json::json!({"ops": {"size": 100, "one_time_burst": 5, "refill_time": 1000}}),
        "{config}"
    );
    // A bucket of size 0 turns that bucket off; the other stays.
    let (code, body) = patch(
        r#"{"bandwidth": {"size": 1048576, "refill_time": 100}, "ops": {"size": 0, "refill_time": 0}}"#,
    );
    assert_eq!(code, 204, "{body}");
    let config = vm_config();
    let limiter = &config["drives"][0]["rate_limiter"];
    assert_eq!(limiter["bandwidth"]["size"], 1048576, "{config}");
    assert!(
        limiter.get("ops").is_none() || limiter["ops"].is_null() || limiter["ops"]["size"] == 0,
        "{config}"
    );
    // The VM is still running and serving the API.
    let (code, _) = http(&sock, "GET", "/", "");
    assert_eq!(code, 200);
}
