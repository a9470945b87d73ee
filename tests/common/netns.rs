//! A network namespace holding a tap, made and deleted by a test: tap
//! devices and any traffic of the tests stay inside it.

use std::ffi::CString;
use std::process::{Command, Stdio};

use super::DEADLINE;

/// EtherType the test guests and the tests use (IEEE 802 local
/// experimental).
pub const ETHERTYPE: u16 = 0x88b5;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The tap every test namespace holds.
pub const TAP: &str = "podvmtap0";

/// A network namespace, deleted on drop.
pub struct NetNs {
    /// Its name (for `ip netns exec`).
    pub name: String,
}

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl NetNs {
    /// A namespace holding an up tap named [`TAP`], or `None` when this
    /// host cannot make one (skipped through [`testkit::need_net`]: a
    /// failure under `PODVM_REQUIRE_NET=1` / `PODVM_REQUIRE_ALL=1`).
    pub fn with_tap(test: &str) -> Option<NetNs> {
        static N: AtomicUsize = AtomicUsize::new(0);
        if !testkit::need_net(test) {
            return None;
        }
        let name = format!(
            "podvm-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        assert!(ip(&["netns", "add", &name]), "ip netns add {name}");
        let ns = NetNs { name };
        // No IPv6 autoconfiguration chatter on the tap.
        let _ = ns.exec(&["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]);
        let _ = ns.exec(&["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"]);
        assert!(ns.exec(&["ip", "tuntap", "add", "dev", TAP, "mode", "tap"]));
        assert!(ns.exec(&["ip", "link", "set", TAP, "up"]));
        Some(ns)
    }

    pub fn exec(&self, cmd: &[&str]) -> bool {
        let mut args = vec!["netns", "exec", &self.name];
        args.extend_from_slice(cmd);
        ip(&args)
    }

    /// Moves the calling thread into the namespace.
    pub fn enter(&self) {
        let path = format!("/run/netns/{}", self.name);
        let f = std::fs::File::open(&path).unwrap();
        use std::os::fd::AsRawFd;
        // SAFETY: setns on a namespace fd only changes this thread's
        // network namespace.
        let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        ip(&["netns", "del", &self.name]);
    }
}

/// A raw packet socket on the tap (inside the namespace the calling
/// thread is in).
pub struct PacketSocket(i32);

impl PacketSocket {
    pub fn open(ifname: &str) -> PacketSocket {
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
    pub fn recv_ours(&self) -> Vec<u8> {
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

    pub fn send(&self, frame: &[u8]) {
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
