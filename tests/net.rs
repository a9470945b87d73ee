//! virtio-net end to end, inside a network namespace the test creates: the
//! net test guest sends a frame that the test captures on the tap, then
//! receives a frame the test injects. No traffic leaves the namespace.

mod common;

use std::ffi::CString;
use std::process::{Command, Stdio};

use std::time::Duration;

use common::netns::{NetNs, TAP};
use common::*;

/// EtherType the guest and the test use (IEEE 802 local experimental).
const ETHERTYPE: u16 = 0x88b5;
const GUEST_MAC: [u8; 6] = [0x06, 0x00, 0x00, 0x00, 0x00, 0x2a];

/// A raw packet socket on the tap (inside the namespace the calling
/// thread is in).
struct PacketSocket(i32);

impl PacketSocket {
    fn open(ifname: &str) -> PacketSocket {
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain socket creation.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto)) };
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let name = CString::new(ifname).unwrap();
        // SAFETY: valid NUL-terminated name.
        let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
        assert_ne!(index, 0, "no interface {ifname}");
        // SAFETY: sockaddr_ll is plain data.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = proto;
        addr.sll_ifindex = index as i32;
        // SAFETY: binds the socket to a valid address of the right size.
        let rc = unsafe {
            libc::bind(
                fd,
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
        let tv = libc::timeval {
            tv_sec: DEADLINE.as_secs() as i64,
            tv_usec: 0,
        };
        // SAFETY: sets a receive timeout from a valid timeval.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            )
        };
        PacketSocket(fd)
    }

    /// The next frame with our EtherType (each `recv` is bounded by the
    /// socket's timeout, the whole search by [`DEADLINE`]).
    fn recv_ours(&self) -> Vec<u8> {
        let mut buf = [0u8; 2048];
        let deadline = std::time::Instant::now() + DEADLINE;
        loop {
            assert!(
                std::time::Instant::now() < deadline,
                "no frame with our EtherType from the guest within {DEADLINE:?}"
            );
            // SAFETY: receives into a buffer of the given size.
            let n = unsafe { libc::recv(self.0, buf.as_mut_ptr().cast(), buf.len(), 0) };
            assert!(
                n >= 0,
                "no frame from the guest: {}",
                std::io::Error::last_os_error()
            );
            let frame = &buf[..n as usize];
            if frame.len() >= 14 && u16::from_be_bytes([frame[12], frame[13]]) == ETHERTYPE {
                return frame.to_vec();
            }
        }
    }

    fn send(&self, frame: &[u8]) {
        // SAFETY: sends from a valid buffer.
        let n = unsafe { libc::send(self.0, frame.as_ptr().cast(), frame.len(), 0) };
        assert_eq!(
            n,
            frame.len() as isize,
            "send: {}",
            std::io::Error::last_os_error()
        );
    }
}

impl Drop for PacketSocket {
    fn drop(&mut self) {
        // SAFETY: closes the fd this struct owns.
        unsafe { libc::close(self.0) };
    }
}

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
