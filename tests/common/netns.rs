//! A network namespace holding a tap, made and deleted by a test: tap
//! devices and any traffic of the tests stay inside it.

use std::process::{Command, Stdio};
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
