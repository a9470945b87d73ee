//! Virtio devices end to end: test guests with a polling virtio-mmio driver
//! (tests/guests/virtio_*.S) drive podvm's block, network and entropy
//! devices, and the tests check what reached the host.

mod common;

use std::path::Path;

use common::*;

const SECTOR: usize = 512;

/// A disk image of `sectors` sectors with a recognisable pattern.
fn make_image(dir: &Path, name: &str, sectors: usize) -> (std::path::PathBuf, Vec<u8>) {
    let bytes: Vec<u8> = (0..sectors * SECTOR)
        .map(|i| ((i / SECTOR) as u8).wrapping_mul(31) ^ (i as u8))
        .collect();
    let path = dir.join(name);
    std::fs::write(&path, &bytes).unwrap();
    (path, bytes)
}

fn blk_run(disks: &[String], cmdline_extra: &str) -> RunOutput {
    let mut args: Vec<String> = vec!["--cmdline".into(), format!("console=ttyS0 {cmdline_extra}")];
    for d in disks {
        args.push("--disk".into());
        args.push(d.clone());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run_guest("virtio_blk", &args)
}

#[test]
fn block_reads_return_the_image_content() {
    if !kvm_available("block_reads_return_the_image_content") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (img, bytes) = make_image(dir.path(), "data.img", 2048);
    let out = blk_run(
        &[format!("path={},id=data-volume", img.display())],
        "blk.read=3:8",
    );
    assert_eq!(out.code(), 0, "{out:?}");
    assert_eq!(out.value("blk-devices"), Some("1"));
    assert_eq!(out.value("blk-capacity"), Some("2048"));
    assert_eq!(out.value("blk-ro"), Some("0"));
    assert_eq!(out.value("blk-id"), Some("data-volume"));
    assert_eq!(out.value("blk-id-status"), Some("0"));
    assert_eq!(out.value("blk-read-status"), Some("0"));
    let expect = fnv1a(&bytes[3 * SECTOR..11 * SECTOR]);
    assert_eq!(out.value("blk-read-fnv"), Some(expect.as_str()), "{out:?}");
    assert!(out.lines().contains(&"blk-done"));
}

#[test]
fn block_writes_reach_the_file_and_read_back() {
    if !kvm_available("block_writes_reach_the_file_and_read_back") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (img, mut bytes) = make_image(dir.path(), "rw.img", 256);
    let out = blk_run(
        &[format!("path={}", img.display())],
        "blk.write=10:4:7 blk.flush=1 blk.read2=10:4",
    );
    assert_eq!(out.code(), 0, "{out:?}");
    assert_eq!(out.value("blk-write-status"), Some("0"), "{out:?}");
    assert_eq!(out.value("blk-flush-status"), Some("0"));
    for (i, b) in bytes[10 * SECTOR..14 * SECTOR].iter_mut().enumerate() {
        *b = (7 + i) as u8;
    }
    assert_eq!(
        std::fs::read(&img).unwrap(),
        bytes,
        "the file holds the guest's write"
    );
    let expect = fnv1a(&bytes[10 * SECTOR..14 * SECTOR]);
    assert_eq!(out.value("blk-read2-fnv"), Some(expect.as_str()));
    assert_eq!(out.value("blk-id"), Some("disk0"), "default id");
}

#[test]
fn read_only_drives_refuse_writes() {
    if !kvm_available("read_only_drives_refuse_writes") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (img, bytes) = make_image(dir.path(), "ro.img", 64);
    let out = blk_run(
        &[format!("path={},ro", img.display())],
        "blk.write=1:1:9 blk.read2=1:1",
    );
    assert_eq!(out.code(), 0, "{out:?}");
    assert_eq!(out.value("blk-ro"), Some("1"));
    assert_eq!(out.value("blk-write-status"), Some("1"), "IOERR");
    assert_eq!(out.value("blk-read2-status"), Some("0"));
    assert_eq!(std::fs::read(&img).unwrap(), bytes, "file unchanged");
}

#[test]
fn requests_past_the_end_get_an_error_status() {
    if !kvm_available("requests_past_the_end_get_an_error_status") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (img, _) = make_image(dir.path(), "small.img", 16);
    let out = blk_run(&[format!("path={}", img.display())], "blk.read=14:4");
    assert_eq!(out.code(), 0, "{out:?}");
    assert_eq!(out.value("blk-capacity"), Some("16"));
    assert_eq!(out.value("blk-read-status"), Some("1"), "{out:?}");
}

#[test]
fn several_drives_with_the_root_first() {
    if !kvm_available("several_drives_with_the_root_first") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (data, _) = make_image(dir.path(), "data.img", 32);
    let (root, root_bytes) = make_image(dir.path(), "root.img", 64);
    let disks = [
        format!("path={},id=data", data.display()),
        format!("path={},id=rootfs,root,ro", root.display()),
    ];
    // The root drive takes the first slot (/dev/vda) whatever the order given.
    let out = blk_run(&disks, "blk.read=0:2");
    assert_eq!(out.code(), 0, "{out:?}");
    assert_eq!(out.value("blk-devices"), Some("2"));
    assert_eq!(out.value("blk-id"), Some("rootfs"));
    assert_eq!(
        out.value("blk-read-fnv"),
        Some(fnv1a(&root_bytes[..2 * SECTOR]).as_str())
    );
    let out = blk_run(&disks, "blk.dev=1");
    assert_eq!(out.value("blk-id"), Some("data"), "{out:?}");

    // The guest's command line names the root and announces both devices.
    let kernel = guest("bootparams");
    let out = run_podvm(&[
        "run",
        "--kernel",
        kernel.to_str().unwrap(),
        "--cmdline",
        "console=ttyS0",
        "--disk",
        &disks[0],
        "--disk",
        &disks[1],
    ]);
    assert_eq!(
        out.value("cmdline"),
        Some(
            "console=ttyS0 root=/dev/vda ro virtio_mmio.device=4K@0xd0000000:5 \
             virtio_mmio.device=4K@0xd0001000:6"
        ),
        "{out:?}"
    );
}

#[test]
fn device_entries_go_before_the_init_arguments() {
    if !kvm_available("device_entries_go_before_the_init_arguments") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (img, _) = make_image(dir.path(), "root.img", 8);
    let kernel = guest("bootparams");
    let out = run_podvm(&[
        "run",
        "--kernel",
        kernel.to_str().unwrap(),
        "--cmdline",
        "console=ttyS0 ro -- single",
        "--disk",
        &format!("path={},root", img.display()),
        "--rng",
    ]);
    assert_eq!(
        out.value("cmdline"),
        Some(
            "console=ttyS0 ro root=/dev/vda virtio_mmio.device=4K@0xd0000000:5 \
             virtio_mmio.device=4K@0xd0001000:6 -- single"
        ),
        "{out:?}"
    );
}

#[test]
fn entropy_device_gives_random_bytes() {
    if !kvm_available("entropy_device_gives_random_bytes") {
        return;
    }
    let out = run_guest("virtio_rng", &["--rng"]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert_eq!(out.value("rng-len"), Some("64"));
    let a = out.value("rng-bytes").unwrap();
    let b = out.value("rng-bytes2").unwrap();
    assert_eq!(a.len(), 128);
    assert_ne!(a, "0".repeat(128));
    assert_ne!(a, b);
}

#[test]
fn device_configuration_errors_exit_2() {
    let hello = guest("hello");
    let k = hello.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (img, _) = make_image(dir.path(), "a.img", 8);
    let img = img.display().to_string();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["--disk".into(), "path=/nonexistent/a.img,id=rootfs".into()],
            "drive \"rootfs\": cannot open /nonexistent/a.img: No such file or directory",
        ),
        (
            vec![
                "--disk".into(),
                format!("path={img},id=x"),
                "--disk".into(),
                format!("path={img},id=x"),
            ],
            "--disk: drive \"x\": the id is used twice",
        ),
        (
            vec!["--disk".into(), format!("path={img},color=red")],
            "unknown or malformed option \"color=red\"",
        ),
        (
            vec!["--net".into(), "tap=tap0,mac=01:02".into()],
            "invalid MAC address",
        ),
        (
            vec!["--disk".into(), format!("path={},ro", dir.path().display())],
            "is not a regular file or block device",
        ),
        (
            vec![
                "--disk".into(),
                format!("path={img},id=a"),
                "--disk".into(),
                format!("path={img},id=b"),
            ],
            "is in use by another drive or process",
        ),
        (
            // An interface that exists and is not a tap; nothing is sent.
            vec!["--net".into(), "tap=lo".into()],
            "network interface \"eth0\": tap \"lo\": cannot",
        ),
        (
            vec!["--net".into(), "tap=a-tap-name-that-is-too-long".into()],
            "tap name \"a-tap-name-that-is-too-long\" must be 1 to 15 bytes",
        ),
    ];
    // A FIFO would block a plain open for ever.
    let fifo = dir.path().join("fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: creates a FIFO at a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let mut cases = cases;
    cases.push((
        vec!["--disk".into(), format!("path={},ro", fifo.display())],
        "is not a regular file or block device",
    ));
    for (extra, want) in cases {
        let mut args = vec!["run", "--kernel", k];
        args.extend(extra.iter().map(String::as_str));
        let out = run_podvm(&args);
        assert_eq!(out.code(), 2, "{extra:?}: {out:?}");
        let line = out.stderr.trim_end();
        assert!(!line.contains('\n'), "one line: {line:?}");
        assert!(
            line.starts_with("error: ") && line.contains(want),
            "{extra:?}: {line}"
        );
    }
}
