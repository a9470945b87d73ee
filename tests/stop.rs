//! What stopping a VM leaves behind: however podvm is told to stop (a
//! signal, the API's `Shutdown`), everything the guest wrote to a disk is
//! in the image file *and on the disk* — no page of it still dirty in the
//! host's page cache — before podvm exits.

mod common;

use std::io::Write;
use std::path::Path;

use common::*;

const SECTOR: usize = 512;
/// The guest writes 16 sectors from sector 8, byte i = (7 + i) & 0xff.
const WRITE: &str = "blk.write=8:16:7";

/// A 64-sector image of zeros, already on the disk (no dirty page).
fn clean_image(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("disk.img");
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(&[0u8; 64 * SECTOR]).unwrap();
    f.sync_all().unwrap();
    assert_eq!(cachestat(&path).dirty, 0);
    path
}

/// The image holds the guest's write, and none of it waits in the page
/// cache for writeback.
fn assert_written_and_durable(img: &Path) {
    let bytes = std::fs::read(img).unwrap();
    let want: Vec<u8> = (0..16 * SECTOR).map(|i| (7 + i) as u8).collect();
    assert_eq!(&bytes[8 * SECTOR..24 * SECTOR], want.as_slice());
    assert!(bytes[..8 * SECTOR].iter().all(|&b| b == 0));
    let stat = cachestat(img);
    assert_eq!(
        (stat.dirty, stat.writeback),
        (0, 0),
        "podvm exited with the guest's writes not yet on the disk: {stat:?}"
    );
}

/// The guest's write is in the page cache, not yet on the disk: what makes
/// the check after the stop mean something. (The kernel writes dirty
/// pages back on its own only after about 30 s.)
fn assert_dirty_now(img: &Path) {
    let stat = cachestat(img);
    assert!(
        stat.dirty > 0,
        "the guest's write left no dirty page: {stat:?}"
    );
}

#[test]
fn sigterm_makes_the_guests_writes_durable() {
    if !kvm_available("sigterm_makes_the_guests_writes_durable") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = clean_image(dir.path());
    let mut vm = spawn_podvm(&[
        "run".to_string(),
        "--kernel".into(),
        guest("virtio_blk").display().to_string(),
        "--disk".into(),
        format!("path={}", img.display()),
        "--cmdline".into(),
        format!("console=ttyS0 {WRITE} blk.hold=1"),
    ]);
    let out = stream_stdout(&mut vm.0);
    let mut seen = String::new();
    wait_output(&out, &mut seen, "blk-done\n");
    assert!(seen.contains("blk-write-status: 0"), "{seen}");
    assert_dirty_now(&img);
    // SAFETY: sends a signal to our own child process.
    unsafe { libc::kill(vm.0.id() as i32, libc::SIGTERM) };
    assert_eq!(wait_exit(&mut vm.0), 128 + libc::SIGTERM);
    assert_written_and_durable(&img);
}

#[test]
fn api_shutdown_makes_the_guests_writes_durable() {
    if !kvm_available("api_shutdown_makes_the_guests_writes_durable") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = clean_image(dir.path());
    let sock = dir.path().join("api.sock");
    let config = dir.path().join("vm.json");
    std::fs::write(
        &config,
        serde_json::json!({
            "boot-source": {
                "kernel_image_path": guest("virtio_blk"),
                "boot_args": format!("console=ttyS0 {WRITE} blk.hold=1"),
            },
            "drives": [{"drive_id": "data", "path_on_host": img,
                        "is_root_device": false, "is_read_only": false}],
        })
        .to_string(),
    )
    .unwrap();
    let mut vm = spawn_podvm(&[
        "serve".as_ref(),
        "--api-sock".as_ref(),
        sock.as_os_str(),
        "--config-file".as_ref(),
        config.as_os_str(),
    ]);
    let out = stream_stdout(&mut vm.0);
    let mut seen = String::new();
    wait_output(&out, &mut seen, "blk-done\n");
    assert_dirty_now(&img);
    wait_for_path(&sock);
    action(&sock, "Shutdown");
    // The 204 comes once the disks are flushed: durable before the exit.
    assert_written_and_durable(&img);
    assert_eq!(wait_exit(&mut vm.0), 0);
}
