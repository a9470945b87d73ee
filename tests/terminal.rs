//! `podvm run` on a terminal: raw mode while the guest owns the console
//! (keys, Ctrl-C included, go to the guest unprocessed), Ctrl-A x ends the
//! VM, and the terminal's settings are restored on exit.

mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;

/// A pseudo-terminal pair: (controller, terminal).
fn openpty() -> (File, OwnedFd) {
    let (mut controller, mut terminal) = (0, 0);
    // SAFETY: openpty writes two fds into the pointers; the other
    // arguments may be null.
    let rc = unsafe {
        libc::openpty(
            &mut controller,
            &mut terminal,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both fds were just created and are owned by nobody else.
    unsafe {
        (
            File::from_raw_fd(controller),
            OwnedFd::from_raw_fd(terminal),
        )
    }
}

fn termios(fd: &OwnedFd) -> libc::termios {
    // SAFETY: plain data filled by tcgetattr from a valid terminal fd.
    unsafe {
        let mut t = std::mem::zeroed();
        assert_eq!(libc::tcgetattr(fd.as_raw_fd(), &mut t), 0);
        t
    }
}

/// Reads the controller side in the background, sending what it gets.
fn reader(mut controller: File) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        // EIO ends the loop once podvm exits and the terminal closes.
        while let Ok(n) = controller.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    rx
}

/// Collects output until it contains `needle`.
fn wait_for(rx: &mpsc::Receiver<Vec<u8>>, seen: &mut String, needle: &str) {
    let deadline = Instant::now() + DEADLINE;
    while !seen.contains(needle) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(chunk) => seen.push_str(&String::from_utf8_lossy(&chunk)),
            Err(_) => {
                let tail: String = seen
                    .chars()
                    .rev()
                    .take(300)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                panic!("{needle:?} never appeared; terminal ended with {tail:?}")
            }
        }
    }
}

#[test]
fn raw_mode_ctrl_c_to_guest_ctrl_a_x_and_restore() {
    if !kvm_available("raw_mode_ctrl_c_to_guest_ctrl_a_x_and_restore") {
        return;
    }
    let (controller, terminal) = openpty();
    let before = termios(&terminal);
    assert_ne!(before.c_lflag & libc::ICANON, 0, "a new pty starts cooked");
    let mut writer = controller.try_clone().unwrap();
    let rx = reader(controller);
    let stdio = || Stdio::from(terminal.try_clone().unwrap());
    let mut child = KillOnDrop(
        podvm()
            .args(["run", "--kernel", guest("counter").to_str().unwrap()])
            .stdin(stdio())
            .stdout(stdio())
            .stderr(stdio())
            .spawn()
            .unwrap(),
    );

    let mut seen = String::new();
    // The terminal turns the guest's "\n" into "\r\n".
    wait_for(&rx, &mut seen, "tick 1\r\n");
    let raw = termios(&terminal);
    assert_eq!(raw.c_lflag & (libc::ICANON | libc::ECHO | libc::ISIG), 0);

    // Ctrl-C belongs to the guest now: podvm keeps running.
    writer.write_all(b"\x03").unwrap();
    let after_ctrl_c = seen.len();
    wait_for(&rx, &mut seen, "tick 3\r\n");
    assert!(seen.len() > after_ctrl_c);
    assert!(
        child.0.try_wait().unwrap().is_none(),
        "Ctrl-C must not end podvm"
    );

    // More than the UART and podvm's input buffer hold, for a guest that
    // never reads: the escape must still get through.
    writer.write_all(&vec![b'k'; 5000]).unwrap();
    writer.write_all(b"\x01x").unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(start.elapsed() < DEADLINE, "Ctrl-A x did not end the VM");
        std::thread::sleep(Duration::from_millis(5));
    };
    assert_eq!(status.code(), Some(0));
    let after = termios(&terminal);
    assert_eq!(after.c_lflag, before.c_lflag, "local modes restored");
    assert_eq!(after.c_iflag, before.c_iflag, "input modes restored");
    // SAFETY: F_GETFL only reads the status flags.
    let flags = unsafe { libc::fcntl(terminal.as_raw_fd(), libc::F_GETFL) };
    assert_eq!(flags & libc::O_NONBLOCK, 0, "the terminal is left blocking");
}
