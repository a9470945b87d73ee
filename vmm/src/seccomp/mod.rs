//! Seccomp: one allow-list of system calls per kind of podvm thread (the
//! VMM thread, the API thread, each vCPU thread), installed on each thread
//! before it handles anything a guest or a client sends, and before any
//! guest instruction runs.
//!
//! A call outside the list raises `SIGSYS` (`SECCOMP_RET_TRAP`); the
//! handler writes one line naming the thread and the call on standard
//! error and ends the process with [`BAD_SYSCALL_EXIT_CODE`], as
//! Firecracker does. The handler itself only calls `write` and
//! `exit_group`, which every list allows.
//!
//! The lists are in [`rules`] with the reason for each call; `docs/seccomp.md`
//! says the same for users. `--no-seccomp` runs without filters,
//! `--seccomp-filter FILE` replaces them with a seccompiler JSON file (the
//! format of Firecracker's `resources/seccomp/*.json`) with one filter per
//! thread kind: `vmm`, `api`, `vcpu`.
//!
//! Filters stack: a vCPU thread is started by the VMM thread after that
//! thread installed its own filter, so a vCPU runs under both, and only
//! calls both allow get through.

mod names;
pub mod rules;

use std::cell::Cell;
use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Once};

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};

/// The exit code of a process stopped for a forbidden system call
/// (Firecracker's `BadSyscall`).
pub const BAD_SYSCALL_EXIT_CODE: i32 = 148;

/// The kinds of podvm thread, each with its own filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ThreadKind {
    /// The main thread: the event loop, the devices, VM construction.
    Vmm,
    /// The API thread: HTTP on the control socket.
    Api,
    /// A vCPU thread: `KVM_RUN` and device register accesses.
    Vcpu,
}

impl ThreadKind {
    /// Every kind, in a fixed order.
    pub const ALL: [ThreadKind; 3] = [ThreadKind::Vmm, ThreadKind::Api, ThreadKind::Vcpu];

    /// The name of its filter in a filter file, and in messages.
    pub fn name(self) -> &'static str {
        match self {
            ThreadKind::Vmm => "vmm",
            ThreadKind::Api => "api",
            ThreadKind::Vcpu => "vcpu",
        }
    }

    fn code(self) -> u8 {
        match self {
            ThreadKind::Vmm => 1,
            ThreadKind::Api => 2,
            ThreadKind::Vcpu => 3,
        }
    }
}

/// The filters could not be built, read or installed.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// podvm's own rules did not compile (a bug in [`rules`]).
    #[error("cannot build the {kind} seccomp filter: {source}")]
    Build {
        /// Which filter.
        kind: &'static str,
        /// What seccompiler said.
        #[source]
        source: seccompiler::BackendError,
    },
    /// The filter file cannot be read.
    #[error("--seccomp-filter {}: {source}", path.display())]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The filter file is not a valid seccompiler JSON filter file.
    #[error("--seccomp-filter {}: {source}", path.display())]
    CompileFile {
        /// The file.
        path: PathBuf,
        /// What seccompiler said.
        #[source]
        source: seccompiler::Error,
    },
    /// The filter file lacks a thread kind's filter.
    #[error("--seccomp-filter {}: no {kind:?} filter (it needs \"vmm\", \"api\" and \"vcpu\")", path.display())]
    MissingFilter {
        /// The file.
        path: PathBuf,
        /// The missing kind.
        kind: &'static str,
    },
    /// The `SIGSYS` handler could not be installed.
    #[error("cannot install the SIGSYS handler: {0}")]
    Handler(#[source] io::Error),
    /// The kernel refused the filter.
    #[error("cannot install the {kind} seccomp filter: {source}")]
    Install {
        /// Which filter.
        kind: &'static str,
        /// What seccompiler said.
        #[source]
        source: seccompiler::Error,
    },
}

/// A compiled filter for each thread kind.
#[derive(Clone, Debug)]
pub struct SeccompFilters {
    programs: Arc<HashMap<ThreadKind, BpfProgram>>,
}

impl SeccompFilters {
    /// podvm's own filters ([`rules`]): a call outside a list traps.
    pub fn builtin() -> Result<Self, SeccompError> {
        let mut programs = HashMap::new();
        for kind in ThreadKind::ALL {
            let filter = SeccompFilter::new(
                rules::rules(kind),
                SeccompAction::Trap,
                SeccompAction::Allow,
                TargetArch::x86_64,
            )
            .and_then(BpfProgram::try_from)
            .map_err(|source| SeccompError::Build {
                kind: kind.name(),
                source,
            })?;
            programs.insert(kind, filter);
        }
        Ok(SeccompFilters {
            programs: Arc::new(programs),
        })
    }

    /// The filters of a seccompiler JSON file with a `vmm`, an `api` and a
    /// `vcpu` filter.
    pub fn from_json_file(path: &Path) -> Result<Self, SeccompError> {
        let file = std::fs::File::open(path).map_err(|source| SeccompError::ReadFile {
            path: path.to_path_buf(),
            source,
        })?;
        let mut map = seccompiler::compile_from_json(io::BufReader::new(file), TargetArch::x86_64)
            .map_err(|source| SeccompError::CompileFile {
                path: path.to_path_buf(),
                source,
            })?;
        let mut programs = HashMap::new();
        for kind in ThreadKind::ALL {
            let program = map
                .remove(kind.name())
                .ok_or_else(|| SeccompError::MissingFilter {
                    path: path.to_path_buf(),
                    kind: kind.name(),
                })?;
            programs.insert(kind, program);
        }
        Ok(SeccompFilters {
            programs: Arc::new(programs),
        })
    }

    /// The compiled filter of `kind`.
    pub fn program(&self, kind: ThreadKind) -> &BpfProgram {
        self.programs
            .get(&kind)
            .expect("every SeccompFilters holds a program for every kind")
    }

    /// Installs the filter of `kind` on the calling thread, for good.
    /// From then on a forbidden call by this thread ends the process with
    /// a message naming `kind` (and `index`, for a vCPU).
    pub fn apply(&self, kind: ThreadKind, index: u8) -> Result<(), SeccompError> {
        install_sigsys_handler()?;
        THREAD.with(|t| t.set((kind.code(), index)));
        seccompiler::apply_filter(self.program(kind)).map_err(|source| SeccompError::Install {
            kind: kind.name(),
            source,
        })
    }
}

/// Makes every thread allocate from glibc's main heap (`M_ARENA_MAX` = 1).
/// Call it first thing in `main`, before any thread starts: a thread keeps
/// the heap it first allocated from.
///
/// glibc gives other threads heaps ("arenas") of their own, and when one
/// of those shrinks after a large free, glibc reads
/// `/proc/sys/vm/overcommit_memory` (`shrink_heap` →
/// `check_may_shrink_heap`): an `openat` that the API and vCPU filters
/// forbid, so an API client that sent a 1 MiB header, or kept thousands of
/// connections open, ended podvm with exit code 148. The main heap shrinks
/// with `brk`, which every filter allows.
pub fn use_one_malloc_arena() {
    #[cfg(target_env = "gnu")]
    {
        // SAFETY: mallopt only changes the allocator's tuning; it is
        // called before any other thread exists.
        let ok = unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
        if ok != 1 {
            log::warn!("seccomp: cannot limit malloc to one arena");
        }
    }
}

/// Installs `filters`' filter of `kind` on the calling thread, or nothing
/// when seccomp is off (`--no-seccomp`).
pub fn apply(
    filters: Option<&SeccompFilters>,
    kind: ThreadKind,
    index: u8,
) -> Result<(), SeccompError> {
    match filters {
        Some(f) => f.apply(kind, index),
        None => Ok(()),
    }
}

thread_local! {
    /// The calling thread's kind code and vCPU index, for the `SIGSYS`
    /// handler (a const-initialised `Cell` without a destructor: reading
    /// it from a signal handler never allocates).
    static THREAD: Cell<(u8, u8)> = const { Cell::new((0, 0)) };
}

/// Offsets in the kernel's `siginfo_t` for `SIGSYS` (`_sigsys`, after the
/// three ints and the padding that aligns the union to 8 bytes).
const SI_SYSCALL_OFFSET: usize = 24;

fn install_sigsys_handler() -> Result<(), SeccompError> {
    static INSTALL: Once = Once::new();
    let mut result = Ok(());
    INSTALL.call_once(|| {
        // SAFETY: sigaction is plain data, zeroed is a valid start; the
        // handler only reads its siginfo and a thread-local, and calls
        // write(2) and _exit(2), both async-signal-safe.
        let rc = unsafe {
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = sigsys_handler as *const () as libc::sighandler_t;
            act.sa_flags = libc::SA_SIGINFO;
            libc::sigemptyset(&mut act.sa_mask);
            libc::sigaction(libc::SIGSYS, &act, std::ptr::null_mut())
        };
        if rc != 0 {
            result = Err(SeccompError::Handler(io::Error::last_os_error()));
        }
    });
    result
}

/// A fixed buffer that a signal handler can format into.
struct Line {
    buf: [u8; 160],
    len: usize,
}

impl Line {
    fn push(&mut self, s: &[u8]) {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s[..n]);
        self.len += n;
    }

    fn push_dec(&mut self, mut v: u64) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.push(&digits[i..]);
    }
}

/// The message for a forbidden call `nr` made by a thread of kind code
/// `kind` (vCPU `index`).
fn message(kind: u8, index: u8, nr: u32) -> Line {
    let mut line = Line {
        buf: [0; 160],
        len: 0,
    };
    line.push(b"error: seccomp: the ");
    match kind {
        1 => line.push(b"vmm"),
        2 => line.push(b"api"),
        3 => {
            line.push(b"vcpu");
            line.push_dec(u64::from(index));
        }
        // A thread that has not installed its own filter yet runs under
        // the one it inherited from the thread that created it.
        _ => line.push(b"new"),
    }
    line.push(b" thread made a forbidden system call: ");
    line.push(syscall_name(nr).as_bytes());
    line.push(b" (");
    line.push_dec(u64::from(nr));
    line.push(b"); podvm stops\n");
    line
}

/// The name of x86_64 system call `nr`, or `"unknown"`.
pub fn syscall_name(nr: u32) -> &'static str {
    names::SYSCALL_NAMES
        .binary_search_by_key(&nr, |&(n, _)| n)
        .map_or("unknown", |i| names::SYSCALL_NAMES[i].1)
}

extern "C" fn sigsys_handler(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for SIGSYS, whose
    // `_sigsys._syscall` int sits at SI_SYSCALL_OFFSET.
    let nr = unsafe {
        *(info
            .cast::<u8>()
            .add(SI_SYSCALL_OFFSET)
            .cast::<libc::c_int>())
    };
    let (kind, index) = THREAD.with(Cell::get);
    let line = message(kind, index, nr as u32);
    // SAFETY: write(2) from a valid buffer and _exit(2) are
    // async-signal-safe; nothing else runs here.
    unsafe {
        libc::write(libc::STDERR_FILENO, line.buf.as_ptr().cast(), line.len);
        libc::_exit(BAD_SYSCALL_EXIT_CODE);
    }
}

#[cfg(test)]
mod tests;
