//! `podvm serve --jail DIR --uid U --gid G [--cgroup PATH] [--netns PATH]`:
//! the process confines itself before it reads its configuration or
//! serves a request, as Firecracker's jailer does for Firecracker, but in
//! the one binary.
//!
//! In order, while still single-threaded:
//! 1. joins the network namespace `--netns` names and the cgroup v2
//!    `--cgroup` names (writing its pid to `cgroup.procs`);
//! 2. enters new mount, PID and IPC namespaces, and forks: the child goes
//!    on as PID 1 of the new PID namespace; the parent only forwards the
//!    stop signals to it and exits with its exit code;
//! 3. (child) makes every mount private, bind-mounts `DIR` on itself and
//!    `pivot_root`s into it (the old root detached), mounts a fresh
//!    `/proc` (podvm reads `/proc/self`), and creates the device nodes a VM
//!    needs (`/dev/kvm`, `/dev/net/tun`) owned by `U:G`;
//! 4. drops every capability from its bounding set, switches to `U:G` with
//!    no supplementary groups, checks that no capability is left, and asks
//!    to be killed when the parent ends (a SIGKILL of the podvm the
//!    orchestrator started ends the jailed one too).
//!
//! From then on every path — the config file, the API socket, kernels,
//! disks, logs, snapshots — is a path inside `DIR`.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};

use clap::Args;

/// The jail flags of `podvm serve`.
#[derive(Debug, Args)]
pub struct JailArgs {
    /// Confine podvm to DIR (new mount, PID and IPC namespaces, DIR as
    /// the root, no capabilities, running as --uid:--gid); every path
    /// given afterwards (config file, API socket, kernel, disks) is inside
    /// DIR.
    #[arg(long, value_name = "DIR", requires_all = ["uid", "gid"])]
    pub jail: Option<PathBuf>,

    /// The user the jailed podvm runs as.
    #[arg(long, value_name = "UID", requires = "jail")]
    pub uid: Option<u32>,

    /// The group the jailed podvm runs as.
    #[arg(long, value_name = "GID", requires = "jail")]
    pub gid: Option<u32>,

    /// A cgroup v2 directory for the jailed podvm to join (it must exist).
    #[arg(long, value_name = "PATH", requires = "jail")]
    pub cgroup: Option<PathBuf>,

    /// A network namespace for the jailed podvm to join, such as
    /// /run/netns/NAME (its taps live there).
    #[arg(long, value_name = "PATH", requires = "jail")]
    pub netns: Option<PathBuf>,
}

/// A jail could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum JailError {
    /// A step failed.
    #[error("--jail {}: cannot {what}: {source}", dir.display())]
    Step {
        /// The jail.
        dir: PathBuf,
        /// What was being done.
        what: String,
        /// The system error.
        #[source]
        source: io::Error,
    },
    /// Capabilities were still held after dropping them.
    #[error("--jail {}: capabilities are still held after dropping them", dir.display())]
    CapabilitiesLeft {
        /// The jail.
        dir: PathBuf,
    },
}

/// Where a jailed run goes on after [`enter`].
pub enum Jailed {
    /// This process is the jailed child: go on serving.
    Child,
    /// This process was the parent: the child ended with this code.
    ParentDone(u8),
}

/// The child's pid, for the parent's signal forwarding.
static CHILD: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward(sig: libc::c_int) {
    let child = CHILD.load(Ordering::Relaxed);
    if child > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(child, sig) };
    }
}

/// A no-op handler: with it installed, signals from the parent's PID
/// namespace reach the child, which is the init of its own (the kernel
/// drops those an init leaves at their default action); the event loop
/// blocks them and reads them from its signalfd as usual.
extern "C" fn ignore(_: libc::c_int) {}

const STOP_SIGNALS: [libc::c_int; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP];

/// A system call's result as an `io::Result`.
fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn cstring(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

/// Confines this process as `args` say (see the module docs). Must run
/// before any other thread exists.
pub fn enter(args: &JailArgs, guest_thp: bool) -> Result<Jailed, JailError> {
    let dir = args.jail.clone().expect("enter is called with --jail");
    let (uid, gid) = (
        args.uid.expect("clap requires --uid with --jail"),
        args.gid.expect("clap requires --gid with --jail"),
    );
    let step = |what: &str| {
        let dir = dir.clone();
        let what = what.to_string();
        move |source| JailError::Step { dir, what, source }
    };
    let dir = std::fs::canonicalize(&dir).map_err(step("resolve it"))?;
    if !dir.is_dir() {
        return Err(step("use it")(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a directory",
        )));
    }
    if let Some(ns) = &args.netns {
        let f = std::fs::File::open(ns).map_err(step(&format!("open {}", ns.display())))?;
        // SAFETY: setns on an open namespace fd.
        check(unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&f), libc::CLONE_NEWNET) })
            .map_err(step(&format!(
                "join the network namespace {}",
                ns.display()
            )))?;
    }
    if let Some(cg) = &args.cgroup {
        let procs = cg.join("cgroup.procs");
        std::fs::write(&procs, std::process::id().to_string())
            .map_err(step(&format!("join the cgroup {}", cg.display())))?;
    }
    // SAFETY: unshare changes only this (single-threaded) process.
    check(unsafe { libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWIPC) })
        .map_err(step("create mount, PID and IPC namespaces"))?;
    // The child learns that the parent is gone if it goes before the
    // child has asked to be killed with it: the pipe's write end closes.
    let (alive_r, alive_w) = pipe().map_err(step("make the parent-alive pipe"))?;
    // SAFETY: single-threaded: the child gets a copy of everything.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(step("fork into the new PID namespace")(
            io::Error::last_os_error(),
        ));
    }
    if pid > 0 {
        drop(alive_r);
        let code = wait_for(pid);
        drop(alive_w);
        return Ok(Jailed::ParentDone(code));
    }
    drop(alive_w);
    for sig in STOP_SIGNALS {
        // SAFETY: installs a handler that does nothing.
        unsafe { libc::signal(sig, ignore as *const () as libc::sighandler_t) };
    }
    // Guest RAM's private tmpfs needs CAP_SYS_ADMIN and sysfs: now, for
    // the user podvm is about to become.
    let backing = vmm::memory::prepare_ram_backing(Some((uid, gid)), guest_thp);
    log::debug!("guest RAM on base pages: {backing:?}");
    enter_root(&dir, uid, gid).map_err(|(what, source)| JailError::Step {
        dir: dir.clone(),
        what,
        source,
    })?;
    drop_privileges(uid, gid).map_err(|(what, source)| JailError::Step {
        dir: dir.clone(),
        what,
        source,
    })?;
    if capabilities_held().map_err(step("read the capabilities left"))? {
        return Err(JailError::CapabilitiesLeft { dir });
    }
    // Killed with its parent (SIGKILL cannot be forwarded), asked for after
    // the change of user, which clears the request.
    die_with_parent(alive_r).map_err(step("ask to end with its parent"))?;
    Ok(Jailed::Child)
}

/// A pipe's read and write ends, close-on-exec.
fn pipe() -> io::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    use std::os::fd::FromRawFd;
    let mut fds = [0; 2];
    // SAFETY: pipe2(2) writes two descriptors into the array.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: both descriptors are new and owned by nobody else.
    Ok(unsafe {
        (
            std::os::fd::OwnedFd::from_raw_fd(fds[0]),
            std::os::fd::OwnedFd::from_raw_fd(fds[1]),
        )
    })
}

/// Asks the kernel to SIGKILL this process when its parent ends, then
/// checks, through `alive` (the read end of a pipe only the parent still
/// writes to), that the parent had not already ended before the request.
fn die_with_parent(alive: std::os::fd::OwnedFd) -> io::Result<()> {
    // SAFETY: PR_SET_PDEATHSIG takes a signal number.
    check(unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) })?;
    let mut pfd = libc::pollfd {
        fd: std::os::fd::AsRawFd::as_raw_fd(&alive),
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: poll(2) of one descriptor this function owns, no waiting.
        match check(unsafe { libc::poll(&mut pfd, 1, 0) }) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            result => break result?,
        }
    }
    if pfd.revents & (libc::POLLHUP | libc::POLLIN) != 0 {
        return Err(io::Error::other("the parent podvm has already ended"));
    }
    Ok(())
}

/// The parent: forwards the stop signals to `child` and returns its exit
/// code (128 + N when a signal N ended it).
fn wait_for(child: libc::pid_t) -> u8 {
    CHILD.store(child, Ordering::Relaxed);
    for sig in STOP_SIGNALS {
        // SAFETY: installs a handler that only calls kill(2).
        unsafe { libc::signal(sig, forward as *const () as libc::sighandler_t) };
    }
    let mut status = 0;
    loop {
        // SAFETY: waits for our own child.
        let rc = unsafe { libc::waitpid(child, &mut status, 0) };
        if rc == child {
            break;
        }
        if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return crate::exit::EXIT_FAILURE;
        }
    }
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status) as u8
    } else {
        (128 + libc::WTERMSIG(status)) as u8
    }
}

type StepResult = Result<(), (String, io::Error)>;

fn at(what: &str) -> impl FnOnce(io::Error) -> (String, io::Error) + '_ {
    move |e| (what.to_string(), e)
}

/// Makes `dir` the root of this mount namespace, with `/proc` and the
/// device nodes a VM needs.
fn enter_root(dir: &Path, uid: u32, gid: u32) -> StepResult {
    let root = CString::new("/").expect("no NUL");
    let none = std::ptr::null::<libc::c_char>();
    // SAFETY: mount(2) with valid NUL-terminated strings or nulls.
    check(unsafe {
        libc::mount(
            none,
            root.as_ptr(),
            none,
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        )
    })
    .map_err(at("make the mounts private"))?;
    let jail = cstring(dir).map_err(at("name the jail"))?;
    // SAFETY: as above.
    check(unsafe {
        libc::mount(
            jail.as_ptr(),
            jail.as_ptr(),
            none,
            libc::MS_BIND | libc::MS_REC,
            std::ptr::null(),
        )
    })
    .map_err(at("bind-mount the jail on itself"))?;
    std::env::set_current_dir(dir).map_err(at("enter the jail"))?;
    let old = ".podvm-old-root";
    std::fs::create_dir_all(old).map_err(at("make a place for the old root"))?;
    let (dot, old_c) = (
        CString::new(".").expect("no NUL"),
        CString::new(old).expect("no NUL"),
    );
    // SAFETY: pivot_root(2) with valid paths.
    check(unsafe {
        libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), old_c.as_ptr()) as libc::c_int
    })
    .map_err(at("pivot_root into the jail"))?;
    std::env::set_current_dir("/").map_err(at("enter the new root"))?;
    let old_abs = CString::new(format!("/{old}")).expect("no NUL");
    // SAFETY: umount2(2) of the old root, detached.
    check(unsafe { libc::umount2(old_abs.as_ptr(), libc::MNT_DETACH) })
        .map_err(at("detach the old root"))?;
    let _ = std::fs::remove_dir(format!("/{old}"));

    std::fs::create_dir_all("/proc").map_err(at("make /proc"))?;
    let (proc_src, proc_dst) = (
        CString::new("proc").expect("no NUL"),
        CString::new("/proc").expect("no NUL"),
    );
    // SAFETY: mounts a procfs of this PID namespace on /proc.
    check(unsafe {
        libc::mount(
            proc_src.as_ptr(),
            proc_dst.as_ptr(),
            proc_src.as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            std::ptr::null(),
        )
    })
    .map_err(at("mount /proc"))?;
    std::fs::create_dir_all("/dev/net").map_err(at("make /dev/net"))?;
    for (path, major, minor) in [("/dev/kvm", 10, 232), ("/dev/net/tun", 10, 200)] {
        let _ = std::fs::remove_file(path);
        let c = CString::new(path).expect("no NUL");
        // SAFETY: mknod(2) of a character device node; chown(2) of it.
        check(unsafe {
            libc::mknod(
                c.as_ptr(),
                libc::S_IFCHR | 0o600,
                libc::makedev(major, minor),
            )
        })
        .map_err(at(&format!("create {path}")))?;
        // SAFETY: as above.
        check(unsafe { libc::chown(c.as_ptr(), uid, gid) })
            .map_err(at(&format!("chown {path}")))?;
    }
    Ok(())
}

/// Drops every capability from the bounding set and becomes `uid:gid`
/// with no supplementary groups (which clears the others).
fn drop_privileges(uid: u32, gid: u32) -> StepResult {
    for cap in 0..=63 {
        // SAFETY: PR_CAPBSET_DROP takes a capability number; EINVAL past
        // the last one the kernel knows.
        let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) };
        if rc < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL) {
            return Err((
                format!("drop capability {cap} from the bounding set"),
                io::Error::last_os_error(),
            ));
        }
    }
    // SAFETY: setgroups with an empty list.
    check(unsafe { libc::setgroups(0, std::ptr::null()) })
        .map_err(at("drop the supplementary groups"))?;
    // SAFETY: set*id(2) with plain ids.
    check(unsafe { libc::setresgid(gid, gid, gid) }).map_err(at("switch to the group"))?;
    // SAFETY: as above.
    check(unsafe { libc::setresuid(uid, uid, uid) }).map_err(at("switch to the user"))?;
    // A uid 0 keeps its capabilities through setresuid: clear them all.
    let header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [CapData::default(); 2];
    // SAFETY: capset(2) with a v3 header and two data words.
    check(unsafe {
        libc::syscall(libc::SYS_capset, &header as *const CapHeader, data.as_ptr()) as libc::c_int
    })
    .map_err(at("clear the capabilities"))?;
    // SAFETY: PR_SET_NO_NEW_PRIVS takes plain integers.
    check(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) })
        .map_err(at("forbid new privileges"))?;
    Ok(())
}

/// `_LINUX_CAPABILITY_VERSION_3`.
const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// `struct __user_cap_header_struct`.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

/// `struct __user_cap_data_struct`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Whether any capability is still effective, permitted, inheritable,
/// ambient or in the bounding set (from `/proc/self/status`).
fn capabilities_held() -> io::Result<bool> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    Ok(status.lines().any(|l| {
        ["CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:"]
            .iter()
            .any(|k| l.starts_with(k) && !l[k.len()..].trim().trim_start_matches('0').is_empty())
    }))
}
