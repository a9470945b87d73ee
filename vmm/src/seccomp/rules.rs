//! The allow-lists: for each thread kind, every system call podvm's code
//! (and the Rust and C runtimes under it) makes on that thread, each with
//! why. `docs/seccomp.md` is the same list for users; a test keeps the two
//! in step.
//!
//! A vCPU thread runs under the VMM filter (inherited from the thread that
//! created it) and its own: the VMM list therefore also holds what a vCPU
//! thread needs, and the vCPU list is what narrows it (the `ioctl`s).

use std::collections::BTreeMap;

use kvm_bindings::{
    kvm_cpuid2, kvm_debugregs, kvm_fpu, kvm_lapic_state, kvm_mp_state, kvm_msrs, kvm_regs,
    kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave, KVMIO,
};
use seccompiler::{SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompRule};
use vmm_sys_util::ioctl::{ioctl_expr, _IOC_NONE, _IOC_READ, _IOC_WRITE};

use super::ThreadKind;

/// One allowed call: its number, and why the thread makes it.
#[derive(Clone, Copy, Debug)]
pub struct Allowed {
    /// The system call.
    pub nr: libc::c_long,
    /// Why it is needed.
    pub why: &'static str,
}

const fn a(nr: libc::c_long, why: &'static str) -> Allowed {
    Allowed { nr, why }
}

/// What every podvm thread calls: memory allocation (malloc's heap and
/// arenas), the futexes behind locks and channels, thread set-up and
/// teardown, and what the `SIGSYS` handler itself calls.
const COMMON: &[Allowed] = &[
    a(libc::SYS_brk, "malloc grows the main heap"),
    a(
        libc::SYS_mmap,
        "malloc arenas and large blocks, thread stacks",
    ),
    a(libc::SYS_munmap, "free of large blocks, thread stacks"),
    a(libc::SYS_mprotect, "malloc arenas grow"),
    a(
        libc::SYS_mremap,
        "realloc of large blocks (buffers that grow)",
    ),
    a(
        libc::SYS_madvise,
        "free returns memory; glibc returns a finished thread's stack",
    ),
    a(libc::SYS_futex, "Mutex, Condvar, thread join, channels"),
    a(
        libc::SYS_sched_yield,
        "std's channels back off under contention",
    ),
    a(
        libc::SYS_rt_sigprocmask,
        "thread start-up and teardown (glibc)",
    ),
    a(
        libc::SYS_sigaltstack,
        "Rust's stack-overflow guard, set up and removed per thread",
    ),
    a(
        libc::SYS_write,
        "logs on stderr, the console, eventfd signals",
    ),
    a(libc::SYS_close, "closing descriptors"),
    a(libc::SYS_exit, "a thread ends"),
    a(libc::SYS_gettid, "thread start and end (glibc)"),
    a(
        libc::SYS_rt_sigreturn,
        "return from the vCPU kick's handler (vCPU threads run under the VMM filter too)",
    ),
    a(
        libc::SYS_exit_group,
        "the process ends (also from the SIGSYS handler)",
    ),
];

/// The VMM thread: the event loop, every device's host side, and, with
/// the API, building the VM on `InstanceStart` and stopping it.
const VMM: &[Allowed] = &[
    a(
        libc::SYS_read,
        "eventfds, timerfds, the signalfd, taps, console input, kernel loading",
    ),
    a(libc::SYS_writev, "frames to the tap, console output"),
    a(libc::SYS_pread64, "disk reads through the bounce buffer"),
    a(libc::SYS_pwrite64, "disk writes through the bounce buffer"),
    a(libc::SYS_preadv, "disk reads straight into guest memory"),
    a(libc::SYS_pwritev, "disk writes straight from guest memory"),
    a(libc::SYS_lseek, "kernel loading, disk sizes"),
    a(libc::SYS_fdatasync, "guest flushes, flush on stop"),
    a(
        libc::SYS_openat,
        "images, taps, /dev/kvm, log and metrics files (API mode)",
    ),
    a(libc::SYS_statx, "file sizes and kinds"),
    a(
        libc::SYS_fcntl,
        "non-blocking mode, CLOEXEC duplicates, image locks",
    ),
    a(
        libc::SYS_ioctl,
        "KVM VM and vCPU set-up, tap set-up, terminal modes",
    ),
    a(libc::SYS_epoll_ctl, "watching device and queue events"),
    a(libc::SYS_epoll_wait, "the event loop"),
    a(
        libc::SYS_eventfd2,
        "queue notifications, irqfds, VM exit events",
    ),
    a(
        libc::SYS_timerfd_create,
        "the metrics timer, rate limiters' refill timers",
    ),
    a(
        libc::SYS_timerfd_settime,
        "the metrics timer, arming and disarming rate limiters' refill timers",
    ),
    a(libc::SYS_clone3, "vCPU threads"),
    a(
        libc::SYS_clone,
        "vCPU threads, where glibc falls back from clone3",
    ),
    a(libc::SYS_set_robust_list, "a new thread (glibc)"),
    a(libc::SYS_rseq, "a new thread (glibc)"),
    a(libc::SYS_sched_getaffinity, "a new thread (std)"),
    a(
        libc::SYS_prctl,
        "naming a new thread; a new vCPU thread's PR_SET_NO_NEW_PRIVS",
    ),
    a(
        libc::SYS_seccomp,
        "a new vCPU thread installs its own filter on top of this one",
    ),
    a(libc::SYS_rt_sigaction, "the vCPU kick handler"),
    a(
        libc::SYS_tgkill,
        "kicking vCPUs out of KVM_RUN (pthread_kill)",
    ),
    a(libc::SYS_getpid, "kicking vCPUs (pthread_kill)"),
    a(
        libc::SYS_getrandom,
        "random MAC addresses, HashMap seeds, VM generation ids",
    ),
    a(
        libc::SYS_unlink,
        "removing the API and vsock sockets on exit",
    ),
    a(
        libc::SYS_unlinkat,
        "guest memory: the private tmpfs's file has no name once it is open",
    ),
    a(
        libc::SYS_ftruncate,
        "sizing guest memory's file; snapshots: sizing the memory file (its untouched pages stay holes)",
    ),
    a(
        libc::SYS_fallocate,
        "balloon: pages the guest gives up go back to the host (a hole punched in guest memory's file)",
    ),
    a(
        libc::SYS_memfd_create,
        "guest memory on huge pages, or on base pages where the private tmpfs cannot be made; built on InstanceStart (API mode)",
    ),
    a(
        libc::SYS_bind,
        "vsock: the device's socket, when the API builds the VM",
    ),
    a(
        libc::SYS_listen,
        "vsock: the device's socket, when the API builds the VM",
    ),
    a(
        libc::SYS_accept4,
        "vsock: host processes connecting to the device's socket",
    ),
    a(
        libc::SYS_socket,
        "vsock: guest connections to <uds_path>_<port>",
    ),
    a(
        libc::SYS_connect,
        "vsock: guest connections to <uds_path>_<port>",
    ),
    a(libc::SYS_recvfrom, "vsock: bytes from host streams"),
    a(libc::SYS_sendto, "vsock: bytes to host streams"),
    a(
        libc::SYS_shutdown,
        "vsock: a guest that shuts down one direction",
    ),
];

/// The API thread: accepting connections on the control socket, reading
/// requests, writing answers.
const API: &[Allowed] = &[
    a(libc::SYS_accept4, "new connections"),
    a(libc::SYS_recvfrom, "requests"),
    a(libc::SYS_writev, "answers"),
    a(libc::SYS_shutdown, "closing connections"),
    a(libc::SYS_epoll_ctl, "tokio's reactor"),
    a(libc::SYS_epoll_wait, "tokio's reactor"),
    a(libc::SYS_fcntl, "non-blocking sockets"),
    a(libc::SYS_getrandom, "HashMap seeds"),
];

/// The vCPU threads: `KVM_RUN`, and the device registers the guest
/// touches (the console, the i8042, the virtio-mmio transports).
const VCPU: &[Allowed] = &[a(
    libc::SYS_fcntl,
    "duplicating queue events when a driver activates a device",
)];

/// `KVM_RUN` (linux/kvm.h: `_IO(KVMIO, 0x80)`).
pub const KVM_RUN: u64 = ioctl_expr(_IOC_NONE, KVMIO, 0x80, 0) as u64;
/// `KVM_GET_REGS` (`_IOR(KVMIO, 0x81, struct kvm_regs)`).
pub const KVM_GET_REGS: u64 = ioctl_expr(
    _IOC_READ,
    KVMIO,
    0x81,
    std::mem::size_of::<kvm_regs>() as u32,
) as u64;
/// `KVM_GET_SREGS` (`_IOR(KVMIO, 0x83, struct kvm_sregs)`).
pub const KVM_GET_SREGS: u64 = ioctl_expr(
    _IOC_READ,
    KVMIO,
    0x83,
    std::mem::size_of::<kvm_sregs>() as u32,
) as u64;

/// `_IOR(KVMIO, nr, T)`.
const fn kvm_ior<T>(nr: u32) -> u64 {
    ioctl_expr(_IOC_READ, KVMIO, nr, std::mem::size_of::<T>() as u32) as u64
}

/// `_IOWR(KVMIO, nr, T)`.
const fn kvm_iowr<T>(nr: u32) -> u64 {
    ioctl_expr(
        _IOC_READ | _IOC_WRITE,
        KVMIO,
        nr,
        std::mem::size_of::<T>() as u32,
    ) as u64
}

/// What a paused vCPU reads of itself for a snapshot (linux/kvm.h).
const SNAPSHOT: &str = "a snapshot reads the paused vCPU's state on its own thread";

/// The `ioctl` requests a vCPU thread makes: running the guest, reading
/// the registers an error report names, and reading its whole state for a
/// snapshot.
const VCPU_IOCTLS: &[(u64, &str)] = &[
    (KVM_RUN, "running the guest; a snapshot finishes the last I/O exit"),
    (KVM_GET_REGS, "the RIP of a triple fault or an emulation failure; snapshots"),
    (KVM_GET_SREGS, "the code segment base of an emulation failure; snapshots"),
    (kvm_iowr::<kvm_msrs>(0x88), SNAPSHOT),
    (kvm_ior::<kvm_fpu>(0x8c), SNAPSHOT),
    (kvm_ior::<kvm_lapic_state>(0x8e), SNAPSHOT),
    (kvm_iowr::<kvm_cpuid2>(0x91), SNAPSHOT),
    (kvm_ior::<kvm_mp_state>(0x98), SNAPSHOT),
    (kvm_ior::<kvm_vcpu_events>(0x9f), SNAPSHOT),
    (kvm_ior::<kvm_debugregs>(0xa1), SNAPSHOT),
    (ioctl_expr(_IOC_NONE, KVMIO, 0xa3, 0) as u64, SNAPSHOT),
    (kvm_ior::<kvm_xsave>(0xa4), SNAPSHOT),
    (kvm_ior::<kvm_xcrs>(0xa6), SNAPSHOT),
    (
        libc::TUNSETOFFLOAD,
        "a network device's tap offloads follow the features the driver accepts (set while the guest writes them)",
    ),
];

/// The allow-list of `kind`, with reasons: [`COMMON`] and the kind's own.
pub fn allowed(kind: ThreadKind) -> Vec<Allowed> {
    let own = match kind {
        ThreadKind::Vmm => VMM,
        ThreadKind::Api => API,
        ThreadKind::Vcpu => VCPU,
    };
    COMMON.iter().chain(own).copied().collect()
}

/// The `ioctl` requests allowed on `kind`'s threads, when restricted (the
/// VMM thread's are not: it sets up KVM, taps and terminals).
pub fn allowed_ioctls(kind: ThreadKind) -> Option<&'static [(u64, &'static str)]> {
    match kind {
        ThreadKind::Vcpu => Some(VCPU_IOCTLS),
        ThreadKind::Vmm | ThreadKind::Api => None,
    }
}

/// The seccompiler rules of `kind`.
pub fn rules(kind: ThreadKind) -> BTreeMap<i64, Vec<SeccompRule>> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = allowed(kind)
        .into_iter()
        .map(|allowed| (allowed.nr, Vec::new()))
        .collect();
    if let Some(ioctls) = allowed_ioctls(kind) {
        let per_request = ioctls
            .iter()
            .map(|&(request, _)| {
                let cond =
                    SeccompCondition::new(1, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, request)
                        .expect("argument 1 with a 32-bit value is a valid condition");
                SeccompRule::new(vec![cond]).expect("a one-condition rule is valid")
            })
            .collect();
        rules.insert(libc::SYS_ioctl, per_request);
    }
    rules
}

/// The lists as `docs/seccomp.md` shows them: one table per thread kind.
pub fn markdown_tables() -> String {
    let mut out = String::new();
    for kind in ThreadKind::ALL {
        out.push_str(&format!(
            "### `{}`\n\n| system call | why |\n|---|---|\n",
            kind.name()
        ));
        for allowed in allowed(kind) {
            let name = super::syscall_name(allowed.nr as u32);
            if allowed.nr == libc::SYS_ioctl && allowed_ioctls(kind).is_some() {
                continue;
            }
            out.push_str(&format!("| `{name}` | {} |\n", allowed.why));
        }
        if let Some(ioctls) = allowed_ioctls(kind) {
            for (request, why) in ioctls {
                out.push_str(&format!("| `ioctl` {request:#x} | {why} |\n"));
            }
        }
        out.push('\n');
    }
    out
}
