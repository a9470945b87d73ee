//! virtio-net end to end, inside a network namespace the test creates: the
//! net test guest sends a frame that the test captures on the tap, then
//! receives a frame the test injects. No traffic leaves the namespace.

mod common;

use std::process::{Command, Stdio};

use std::time::Duration;

use common::netns::{NetNs, PacketSocket, TAP};
use common::*;

use common::netns::ETHERTYPE;
const GUEST_MAC: [u8; 6] = [0x06, 0x00, 0x00, 0x00, 0x00, 0x2a];

#[test]
fn frames_cross_the_tap_both_ways() {
    if !kvm_available("frames_cross_the_tap_both_ways") {
        return;
    }
    let Some(ns) = NetNs::with_tap("frames_cross_the_tap_both_ways") else {
        return;
    };
    // The capture socket exists before the guest sends anything.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let capture = std::thread::scope(|s| {
        let handle = s.spawn(|| {
            ns.enter();
            let sock = PacketSocket::open(TAP);
            ready_tx.send(()).unwrap();
            let sent_by_guest = sock.recv_ours();
            let mut reply = Vec::new();
            reply.extend_from_slice(&GUEST_MAC);
            reply.extend_from_slice(&[0x06, 0, 0, 0, 0, 0x01]);
            reply.extend_from_slice(&ETHERTYPE.to_be_bytes());
            reply.extend_from_slice(b"hello-from-the-host");
            reply.resize(60, 0);
            sock.send(&reply);
            sent_by_guest
        });
        ready_rx.recv_timeout(Duration::from_secs(30)).unwrap();
        let kernel = guest("virtio_net");
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns.name,
                env!("CARGO_BIN_EXE_podvm"),
                "run",
            ])
            .arg("--kernel")
            .arg(&kernel)
            .args([
                "--cmdline",
                "console=ttyS0 net.rx=1 net.tag=t42",
                "--net",
                &format!("tap={TAP},mac=06:00:00:00:00:2a"),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = wait_with_deadline(child);
        (out, handle.join().unwrap())
    });
    let (out, frame) = capture;
    assert_eq!(out.code(), 0, "{out:?}");
    assert_eq!(out.value("net-mac"), Some("06:00:00:00:00:2a"));
    assert_eq!(out.value("net-tx"), Some("done"));
    // What the guest sent, as the host saw it on the tap.
    assert_eq!(&frame[..6], &[0xff; 6], "broadcast destination");
    assert_eq!(&frame[6..12], &GUEST_MAC, "the guest's MAC as source");
    assert!(frame[14..].starts_with(b"podvm-tx t42"), "{frame:x?}");
    // What the host sent, as the guest saw it.
    assert_eq!(out.value("net-rx-len"), Some("60"), "{out:?}");
    assert_eq!(out.value("net-rx-text"), Some("hello-from-the-host"));
    let head = out.value("net-rx-head").unwrap();
    assert!(
        head.starts_with("0600000000 2a".replace(' ', "").as_str()),
        "{head}"
    );
}
