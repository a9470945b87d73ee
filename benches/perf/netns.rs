//! A network namespace holding one tap, made and deleted by the harness:
//! the `net` scenario's tap and every frame its guests send stay inside it
//! (HOST.md's networking rule). The VMMs are started inside it.

use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use crate::PerfError;

/// The tap in every namespace of the harness.
pub const TAP: &str = "podvmperf0";

/// A namespace with an up tap [`TAP`], deleted on drop.
pub struct NetNs {
    name: String,
    fd: File,
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
    /// Makes the namespace, or says why this host cannot
    /// (`PerfError::Skipped`).
    pub fn new() -> Result<NetNs, PerfError> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        if !root || !ip(&["-V"]) || !std::path::Path::new("/dev/net/tun").exists() {
            return Err(PerfError::Skipped(
                "needs root, iproute2 and /dev/net/tun for a tap in a network namespace".into(),
            ));
        }
        remove_stale();
        let name = format!("podvm-perf-{}", std::process::id());
        let _ = ip(&["netns", "del", &name]);
        if !ip(&["netns", "add", &name]) {
            return Err(PerfError::Skipped(format!("ip netns add {name} failed")));
        }
        let fd = match File::open(format!("/run/netns/{name}")) {
            Ok(f) => f,
            Err(e) => {
                ip(&["netns", "del", &name]);
                return Err(PerfError::io(format!("open /run/netns/{name}"), e));
            }
        };
        let ns = NetNs { name, fd };
        let _ = ns.exec(&["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]);
        let _ = ns.exec(&["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"]);
        if !ns.exec(&["ip", "tuntap", "add", "dev", TAP, "mode", "tap"])
            || !ns.exec(&["ip", "link", "set", TAP, "up"])
        {
            return Err(PerfError::Failed(format!(
                "cannot make tap {TAP} in {}",
                ns.name
            )));
        }
        Ok(ns)
    }

    fn exec(&self, cmd: &[&str]) -> bool {
        let mut args = vec!["netns", "exec", &self.name];
        args.extend_from_slice(cmd);
        ip(&args)
    }

    /// Makes `cmd` start inside the namespace.
    pub fn enter_on_spawn(&self, cmd: &mut Command) {
        let fd: RawFd = self.fd.as_raw_fd();
        // SAFETY: the closure runs in the forked child before exec and only
        // calls setns(2), which is async-signal-safe; `fd` stays open in
        // the parent (and so in the child) for as long as `self` lives,
        // which outlives the spawn.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
}

/// Deletes the namespaces of earlier harness runs that ended without
/// cleaning up (killed mid-run): `podvm-perf-<pid>` whose process is gone.
fn remove_stale() {
    let Ok(dir) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix("podvm-perf-") else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !std::path::Path::new("/proc").join(pid).exists() {
            ip(&["netns", "del", &name]);
        }
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        ip(&["netns", "del", &self.name]);
    }
}
