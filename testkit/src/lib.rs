//! The one place that decides whether a test may skip.
//!
//! A test that cannot run on this host (no `/dev/kvm`, not root, no
//! iproute2, no guest-image tools, KVM emulating guests, no Firecracker
//! binary, no huge pages to be had) calls [`skip`] — or one of the `need_*` checks that call it —
//! and returns. [`skip`] then does one of two things:
//!
//! - when the switch for that kind of need is on ([`Need::switch`], or
//!   `PODVM_REQUIRE_ALL=1` for every kind), it panics: the test fails, as
//!   it must on a CI host that is supposed to have what the test needs;
//! - otherwise it writes `SKIPPED: <test>: <reason>` straight to the
//!   process's standard error, past libtest's output capture, so that a
//!   plain `cargo test` shows every skip beside the `ok` it reports, and
//!   `.ci/run` can count them.
//!
//! Tests that need 2 MiB huge pages reserve them with [`HugePages`],
//! which gives the host's pool back as it was when the test ends, even
//! when it fails.
//!
//! Only dev-dependencies use this crate: nothing of it is in podvm.

use std::fmt::Display;
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::Path;

/// What a test needs that a host may lack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// A usable `/dev/kvm`.
    Kvm,
    /// Root, iproute2 and `/dev/net/tun`: taps in a network namespace.
    Net,
    /// Root (namespaces, device nodes, another user).
    Root,
    /// The tools the guest-image recipes run (busybox-static, e2fsprogs…).
    GuestTools,
    /// Hardware-accelerated KVM (guests not run by the instruction
    /// emulator), for real Linux guests to reach user space.
    HardwareVirt,
    /// A Firecracker binary to compare against.
    Firecracker,
    /// Root and a kernel that can add 2 MiB huge pages to its pool.
    HugePages,
    /// Root, Debian's containerd (`containerd`, `ctr`) and runc: the
    /// shim's and the agent's tests.
    Containerd,
}

impl Need {
    /// The environment variable that turns a skip of this kind into a
    /// failure when set to `1`.
    pub fn switch(self) -> &'static str {
        match self {
            Need::Kvm => "PODVM_REQUIRE_KVM",
            Need::Net => "PODVM_REQUIRE_NET",
            Need::Root => "PODVM_REQUIRE_ROOT",
            Need::GuestTools => "PODVM_REQUIRE_GUEST_TOOLS",
            Need::HardwareVirt => "PODVM_REQUIRE_HW_VIRT",
            Need::Firecracker => "PODVM_REQUIRE_FIRECRACKER",
            Need::HugePages => "PODVM_REQUIRE_HUGEPAGES",
            Need::Containerd => "PODVM_REQUIRE_CONTAINERD",
        }
    }
}

/// The switch that makes every skip a failure.
pub const REQUIRE_ALL: &str = "PODVM_REQUIRE_ALL";

fn switched_on(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| v == "1")
}

/// Whether a skip of kind `need` must fail the test instead.
pub fn required(need: Need) -> bool {
    switched_on(REQUIRE_ALL) || switched_on(need.switch())
}

/// Skips `test` because `reason`: fails it when its kind of need is
/// required (see the module docs), else reports the skip on standard
/// error where `cargo test` shows it.
pub fn skip(need: Need, test: &str, reason: impl Display) {
    let line = skip_line(need, test, reason);
    // One write of the whole line, straight to the file descriptor:
    // libtest captures `eprintln!`, not writes to the `Stderr` handle.
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// The line [`skip`] writes; panics instead when the skip is not allowed.
fn skip_line(need: Need, test: &str, reason: impl Display) -> String {
    if required(need) {
        let switch = if switched_on(need.switch()) {
            need.switch()
        } else {
            REQUIRE_ALL
        };
        panic!("{test} cannot run here ({reason}) and {switch}=1 requires it to");
    }
    format!("SKIPPED: {test}: {reason}\n")
}

/// The first executable file named `name` in a `PATH` directory.
pub fn on_path(name: &str) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Whether this host can run containers the way containerd does: root,
/// `containerd`, `ctr` and `runc` on `PATH`; skips `test` (see [`skip`])
/// when it cannot.
pub fn need_containerd(test: &str) -> bool {
    if !is_root() {
        skip(Need::Containerd, test, "running containers needs root");
        return false;
    }
    for tool in ["containerd", "ctr", "runc"] {
        if on_path(tool).is_none() {
            skip(
                Need::Containerd,
                test,
                format_args!("{tool} is not installed (apt-get install containerd runc)"),
            );
            return false;
        }
    }
    true
}

/// Whether `/dev/kvm` can be opened for reading and writing; skips `test`
/// (see [`skip`]) when it cannot.
pub fn need_kvm(test: &str) -> bool {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        Ok(_) => true,
        Err(e) => {
            skip(Need::Kvm, test, format_args!("/dev/kvm is not usable: {e}"));
            false
        }
    }
}

/// Whether this process is root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Whether this process is root; skips `test` when not.
pub fn need_root(test: &str) -> bool {
    if is_root() {
        return true;
    }
    skip(Need::Root, test, "needs root");
    false
}

/// Whether taps can be made in a network namespace here (root,
/// `/dev/net/tun`, iproute2's `ip`); skips `test` when not.
pub fn need_net(test: &str) -> bool {
    let missing = net_missing();
    if let Some(what) = missing {
        skip(Need::Net, test, format_args!("needs {what}"));
        return false;
    }
    true
}

/// What is missing for taps in a network namespace, if anything.
fn net_missing() -> Option<&'static str> {
    if !is_root() {
        return Some("root");
    }
    if !Path::new("/dev/net/tun").exists() {
        return Some("/dev/net/tun");
    }
    let ip = std::process::Command::new("ip")
        .arg("-V")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    if !ip.is_ok_and(|s| s.success()) {
        return Some("iproute2 (the `ip` command)");
    }
    None
}

/// The kernel's pool of 2 MiB huge pages.
pub const HUGEPAGES_2M: &str = "/sys/kernel/mm/hugepages/hugepages-2048kB";

/// Held while a test has changed the huge page pool, by every test of
/// every process (an `flock`, which also excludes other threads of this
/// process: each reservation opens the file anew).
const HUGEPAGES_LOCK: &str = "/tmp/podvm-test-hugepages.lock";

fn read_count(name: &str) -> std::io::Result<u64> {
    let text = std::fs::read_to_string(Path::new(HUGEPAGES_2M).join(name))?;
    text.trim()
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

fn write_pool_size(pages: u64) -> std::io::Result<()> {
    std::fs::write(
        Path::new(HUGEPAGES_2M).join("nr_hugepages"),
        pages.to_string(),
    )
}

/// 2 MiB huge pages added to the host's pool for one test: the pool as it
/// was comes back when this is dropped (also when the test panics), and
/// no other test changes the pool meanwhile.
#[derive(Debug)]
pub struct HugePages {
    /// The pool size to restore.
    restore: u64,
    /// The lock, released after the pool is restored (fields drop in
    /// order, after `drop` ran).
    _lock: File,
}

impl HugePages {
    /// Adds `pages` free huge pages to the pool for `test`; skips the
    /// test (see [`skip`]) and returns `None` when this process cannot
    /// (not root, no 2 MiB pool, the kernel found too little contiguous
    /// memory).
    pub fn reserve(test: &str, pages: u64) -> Option<HugePages> {
        if !is_root() {
            skip(Need::HugePages, test, "reserving huge pages needs root");
            return None;
        }
        let lock = match File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(HUGEPAGES_LOCK)
        {
            Ok(f) => f,
            Err(e) => {
                skip(
                    Need::HugePages,
                    test,
                    format_args!("cannot open {HUGEPAGES_LOCK}: {e}"),
                );
                return None;
            }
        };
        // SAFETY: flock only takes a lock on a descriptor `lock` owns.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
            let e = std::io::Error::last_os_error();
            skip(
                Need::HugePages,
                test,
                format_args!("cannot lock {HUGEPAGES_LOCK}: {e}"),
            );
            return None;
        }
        let restore = match read_count("nr_hugepages") {
            Ok(n) => n,
            Err(e) => {
                skip(
                    Need::HugePages,
                    test,
                    format_args!("no 2 MiB huge page pool ({HUGEPAGES_2M}: {e})"),
                );
                return None;
            }
        };
        // From here on, dropping the guard restores the pool.
        let guard = HugePages {
            restore,
            _lock: lock,
        };
        if let Err(e) = write_pool_size(restore + pages) {
            skip(
                Need::HugePages,
                test,
                format_args!("cannot grow the huge page pool: {e}"),
            );
            return None;
        }
        let usable = read_count("free_hugepages")
            .and_then(|free| Ok(free.saturating_sub(read_count("resv_hugepages")?)));
        match usable {
            Ok(n) if n >= pages => Some(guard),
            Ok(n) => {
                skip(
                    Need::HugePages,
                    test,
                    format_args!("asked the kernel for {pages} more huge pages, {n} are usable"),
                );
                None
            }
            Err(e) => {
                skip(
                    Need::HugePages,
                    test,
                    format_args!("cannot count the free huge pages: {e}"),
                );
                None
            }
        }
    }
}

impl Drop for HugePages {
    fn drop(&mut self) {
        if let Err(e) = write_pool_size(self.restore) {
            let _ = writeln!(
                std::io::stderr().lock(),
                "testkit: cannot restore {HUGEPAGES_2M}/nr_hugepages to {}: {e}",
                self.restore
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The environment is process-wide: tests that read or set the
    /// switches take this first.
    static ENV: std::sync::Mutex<()> = std::sync::Mutex::new(());

    // One test covers every switch, in order.
    #[test]
    fn switches_turn_skips_into_failures() {
        let _env = ENV.lock().unwrap_or_else(|e| e.into_inner());
        for v in [REQUIRE_ALL, "PODVM_REQUIRE_KVM", "PODVM_REQUIRE_NET"] {
            std::env::remove_var(v);
        }
        assert!(!required(Need::Kvm));
        assert_eq!(
            skip_line(Need::Kvm, "t", format_args!("no {}", "kvm")),
            "SKIPPED: t: no kvm\n"
        );

        std::env::set_var("PODVM_REQUIRE_KVM", "1");
        assert!(required(Need::Kvm));
        assert!(!required(Need::Net), "one switch, one kind");
        let err = std::panic::catch_unwind(|| skip_line(Need::Kvm, "t", "no kvm")).unwrap_err();
        let msg = err.downcast_ref::<String>().unwrap();
        assert_eq!(
            msg,
            "t cannot run here (no kvm) and PODVM_REQUIRE_KVM=1 requires it to"
        );
        std::env::set_var("PODVM_REQUIRE_KVM", "0");
        assert!(!required(Need::Kvm), "only 1 switches it on");

        std::env::set_var(REQUIRE_ALL, "1");
        for need in [
            Need::Kvm,
            Need::Net,
            Need::Root,
            Need::GuestTools,
            Need::HardwareVirt,
            Need::Firecracker,
            Need::HugePages,
            Need::Containerd,
        ] {
            assert!(required(need), "{need:?}");
        }
        let err = std::panic::catch_unwind(|| skip_line(Need::Net, "t", "no tun")).unwrap_err();
        assert!(err
            .downcast_ref::<String>()
            .unwrap()
            .ends_with("and PODVM_REQUIRE_ALL=1 requires it to"));
        std::env::remove_var(REQUIRE_ALL);
        std::env::remove_var("PODVM_REQUIRE_KVM");
    }

    /// The checks agree with what this host has, looked at another way.
    #[test]
    fn checks_tell_what_this_host_has() {
        let _env = ENV.lock().unwrap_or_else(|e| e.into_inner());
        let kvm = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .is_ok();
        let uid = std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|v| v.split_whitespace().nth(1).map(str::to_string))
            .unwrap();
        assert_eq!(is_root(), uid == "0");
        let ip = std::process::Command::new("sh")
            .args(["-c", "command -v ip"])
            .output()
            .is_ok_and(|o| o.status.success());
        let tun = Path::new("/dev/net/tun").exists();
        let want_net = match (is_root(), tun, ip) {
            (false, _, _) => Some("root"),
            (true, false, _) => Some("/dev/net/tun"),
            (true, true, false) => Some("iproute2 (the `ip` command)"),
            (true, true, true) => None,
        };
        assert_eq!(net_missing(), want_net);
        // Without a switch on, the need_* checks only report: they return
        // whether the thing is there.
        if !required(Need::Kvm) {
            assert_eq!(need_kvm("testkit-self-check"), kvm);
        }
        if !required(Need::Net) {
            assert_eq!(need_net("testkit-self-check"), want_net.is_none());
        }
        if !required(Need::Root) {
            assert_eq!(need_root("testkit-self-check"), uid == "0");
        }
    }

    #[test]
    fn a_huge_page_reservation_gives_the_pool_back() {
        let _env = ENV.lock().unwrap_or_else(|e| e.into_inner());
        if required(Need::HugePages) && !is_root() {
            return; // reserve would panic: that is its job, not this test's
        }
        let Some(pool) = HugePages::reserve("a_huge_page_reservation_gives_the_pool_back", 2)
        else {
            return;
        };
        let restore = pool.restore;
        assert!(read_count("nr_hugepages").unwrap() >= restore + 2);
        assert!(read_count("free_hugepages").unwrap() >= 2);
        drop(pool);
        // With the lock (no reservation of another test under way), the
        // pool is what it was.
        let lock = File::options().write(true).open(HUGEPAGES_LOCK).unwrap();
        // SAFETY: flock only takes a lock on a descriptor `lock` owns.
        assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
        assert_eq!(read_count("nr_hugepages").unwrap(), restore);
    }
}
