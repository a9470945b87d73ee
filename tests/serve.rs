//! `podvm serve --no-api --config-file`: a VM described in Firecracker's
//! JSON configuration format, as orchestrators write it.

mod common;

use common::*;

fn write_config(dir: &std::path::Path, json: &str) -> String {
    let path = dir.join("vm.json");
    std::fs::write(&path, json).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn boots_from_a_firecracker_config_file() {
    if !kvm_available("boots_from_a_firecracker_config_file") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("data.img");
    std::fs::write(&disk, vec![0u8; 64 * 512]).unwrap();
    let cfg = write_config(
        dir.path(),
        &format!(
            r#"{{
              "boot-source": {{"kernel_image_path": "{}",
                               "boot_args": "console=ttyS0 blk.read=0:1"}},
              "machine-config": {{"vcpu_count": 2, "mem_size_mib": 96, "smt": false}},
              "drives": [{{"drive_id": "rootfs", "path_on_host": "{}",
                           "is_root_device": true, "is_read_only": false,
                           "cache_type": "Unsafe", "io_engine": "Sync"}}],
              "entropy": {{}}
            }}"#,
            guest("virtio_blk").display(),
            disk.display()
        ),
    );
    let out = run_podvm(&["serve", "--no-api", "--config-file", &cfg]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert_eq!(out.value("blk-id"), Some("rootfs"));
    assert_eq!(out.value("blk-capacity"), Some("64"));
    assert_eq!(out.value("blk-read-status"), Some("0"));
}

#[test]
fn bad_config_files_exit_2_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let hello = guest("hello");
    let cases = [
        ("{", "--config-file"),
        (
            r#"{"boot-source": {"kernel_image_path": "/k"}, "extra": 1}"#,
            "unknown field `extra`",
        ),
        (
            r#"{"boot-source": {"kernel_image_path": "/k"}, "vsock": {"guest_cid": 3, "uds_path": "/v"}}"#,
            "\"vsock\" (yet) is not supported by podvm",
        ),
    ];
    for (json, want) in cases {
        let cfg = write_config(dir.path(), json);
        let out = run_podvm(&["serve", "--no-api", "--config-file", &cfg]);
        assert_eq!(out.code(), 2, "{json}: {out:?}");
        let line = out.stderr.trim_end();
        assert!(
            line.starts_with("error: --config-file ") && line.contains(want),
            "{line}"
        );
    }
    // A valid file whose VM is invalid fails like `run` does.
    let cfg = write_config(
        dir.path(),
        &format!(
            r#"{{"boot-source": {{"kernel_image_path": "{}"}},
                "machine-config": {{"vcpu_count": 0, "mem_size_mib": 128}}}}"#,
            hello.display()
        ),
    );
    let out = run_podvm(&["serve", "--no-api", "--config-file", &cfg]);
    assert_eq!(out.code(), 2, "{out:?}");
    assert_eq!(
        out.stderr.trim_end(),
        "error: vcpu_count must be at least 1"
    );
    let out = run_podvm(&["serve", "--no-api", "--config-file", "/nonexistent.json"]);
    assert_eq!(out.code(), 2);
    assert!(out
        .stderr
        .contains("/nonexistent.json: No such file or directory"));
    // Neither an API socket nor --no-api: a usage error naming the flag.
    let out = run_podvm(&["serve", "--config-file", &cfg]);
    assert_eq!(out.code(), 2);
    assert!(out.stderr.contains("--api-sock"), "{out:?}");
    // --no-api needs a config file.
    let out = run_podvm(&["serve", "--no-api"]);
    assert_eq!(out.code(), 2);
    assert!(out.stderr.contains("--config-file"), "{out:?}");
}
