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
            r#"{"boot-source": {"kernel_image_path": "/k"}, "mmds-config": {}}"#,
            "\"mmds-config\" (yet) is not supported by podvm",
        ),
        (
            r#"{"boot-source": {"kernel_image_path": "/k"}, "balloon": {"amount_mib": 1}}"#,
            "missing field `deflate_on_oom`",
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

#[test]
fn the_config_files_logger_and_metrics_sections_take_effect() {
    if !kvm_available("the_config_files_logger_and_metrics_sections_take_effect") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("podvm.log");
    let metrics = dir.path().join("podvm.metrics");
    let cfg = write_config(
        dir.path(),
        &format!(
            r#"{{"boot-source": {{"kernel_image_path": "{}"}},
                "logger": {{"log_path": "{}", "level": "Info"}},
                "metrics": {{"metrics_path": "{}"}}}}"#,
            guest("boottimer").display(),
            log.display(),
            metrics.display()
        ),
    );
    let out = run_podvm(&["serve", "--no-api", "--config-file", &cfg]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert_eq!(out.lines(), ["boottimer-start", "boottimer-done"]);
    // The info-level boot time went to the log file, not to stderr.
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("guest-boot-time = "), "{logged}");
    assert!(!out.stderr.contains("guest-boot-time"), "{out:?}");
    // The last counters were written at exit: one JSON object.
    let written = std::fs::read_to_string(&metrics).unwrap();
    let last: serde_json::Value =
        serde_json::from_str(written.lines().last().expect("a metrics line")).unwrap();
    assert!(last["utc_timestamp_ms"].as_u64().unwrap() > 0, "{written}");
    // Both console lines, newlines included, went out through the UART.
    assert_eq!(last["serial"]["bytes_out"], 31, "{written}");
    assert!(
        last["vcpu_exits"]["io_out"].as_u64().unwrap() >= 31,
        "{written}"
    );

    // A metrics path that cannot be opened is a configuration error.
    let cfg = write_config(
        dir.path(),
        &format!(
            r#"{{"boot-source": {{"kernel_image_path": "{}"}},
                "metrics": {{"metrics_path": "/nonexistent/dir/m"}}}}"#,
            guest("hello").display()
        ),
    );
    let out = run_podvm(&["serve", "--no-api", "--config-file", &cfg]);
    assert_eq!(out.code(), 2, "{out:?}");
    assert_eq!(
        out.stderr.trim_end(),
        "error: --config-file: metrics: cannot open /nonexistent/dir/m: No such file or directory (os error 2)"
    );
}
