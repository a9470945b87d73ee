//! A vCPU: its boot configuration and the thread that runs it.
//!
//! Each vCPU runs `KVM_RUN` in a loop on its own thread, dispatching device
//! accesses to the buses ([`handle_exit`]). It is stopped by setting its stop
//! flag and kicking it with [`VCPU_KICK_SIGNAL`]: the signal handler sets
//! `immediate_exit` in the vCPU's `kvm_run`, so a kick that lands just before
//! `KVM_RUN` is not lost. When a vCPU stops on its own (reset, triple fault,
//! emulation failure, KVM error) it reports why to the VMM thread over a
//! channel and wakes it through an `EventFd`; it never blocks on the VMM.
//!
//! Snapshots: a vCPU's KVM state is read on the thread that owns it. The
//! VMM asks a paused vCPU with [`VcpuHandle::save_state`]; the parked
//! thread lets KVM finish the instruction of its last I/O exit, reads the
//! state and hands it back, and stays parked. A restored state is given to
//! a vCPU before it starts, with [`Vcpu::restore_state`].

use std::cell::Cell;
use std::io;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex, Once};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kvm_bindings::{
    kvm_run, CpuId, MsrList, KVM_INTERNAL_ERROR_EMULATION,
    KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES,
};
use kvm_ioctls::{VcpuFd, VmFd};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::signal::{register_signal_handler, Killable, SIGRTMIN};

use super::exit::{handle_exit, ExitAction, ExitCounters, IoBuses, StopKind};
use crate::arch::x86_64::cpuid::{filter_cpuid, Topology};
use crate::arch::x86_64::interrupts::set_lint;
use crate::arch::x86_64::msr::supported_boot_msrs;
use crate::arch::x86_64::regs::{boot_fpu, boot_regs, boot_sregs, BootEntry};
use crate::persist::vcpu::{
    restore_vcpu_state, save_vcpu_state, VcpuState, VcpuStateError, VcpuStateSupport,
};
use crate::seccomp::{self, SeccompFilters, ThreadKind};

/// `CLOCK_MONOTONIC` in nanoseconds (the clock `std::time::Instant` reads).
pub fn monotonic_ns() -> u128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always
    // exists on Linux, so the call cannot fail.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u128 * 1_000_000_000 + ts.tv_nsec as u128
}

/// The signal that kicks a vCPU thread out of `KVM_RUN`.
pub fn vcpu_kick_signal() -> i32 {
    SIGRTMIN()
}

/// Documentation alias for the kick signal (a real-time signal, unused by
/// the C runtime).
pub const VCPU_KICK_SIGNAL: &str = "SIGRTMIN";

/// Most bytes of one x86 instruction.
const MAX_INSN_LEN: usize = 15;

/// Most `KVM_RUN`s a save spends finishing the I/O of the last exit: one,
/// unless that instruction needs several exits (a string I/O instruction
/// or an MMIO access crossing a page boundary).
const MAX_IO_COMPLETION_RUNS: usize = 16;

/// A vCPU could not be created or configured.
#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    /// `KVM_CREATE_VCPU` failed.
    #[error("cannot create vCPU {0}: {1}")]
    Create(u8, #[source] kvm_ioctls::Error),
    /// A configuration ioctl failed.
    #[error("cannot configure vCPU {index}: {what} failed: {source}")]
    Configure {
        /// The vCPU.
        index: u8,
        /// What was being set.
        what: &'static str,
        /// The KVM error.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// The vCPU thread could not be spawned.
    #[error("cannot start the thread of vCPU {0}: {1}")]
    Spawn(u8, #[source] io::Error),
    /// The kick signal handler could not be installed.
    #[error("cannot install the vCPU kick signal handler: {0}")]
    Signal(#[source] vmm_sys_util::errno::Error),
    /// The vCPU's KVM state could not be saved or restored.
    #[error("vCPU {index}: {source}")]
    State {
        /// The vCPU.
        index: u8,
        /// What failed.
        #[source]
        source: VcpuStateError,
    },
    /// The I/O of the vCPU's last exit could not be finished before a save.
    #[error("vCPU {index}: cannot finish its last I/O instruction before saving: {source}")]
    CompleteIo {
        /// The vCPU.
        index: u8,
        /// The KVM error.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// Finishing the last I/O instruction took more exits than any
    /// instruction needs.
    #[error("vCPU {0}: its last I/O instruction kept exiting instead of finishing before a save")]
    IoNotCompleted(u8),
    /// Finishing the last I/O instruction stopped the guest (a reset, a
    /// triple fault): the vCPU reports that stop when it is resumed.
    #[error("vCPU {0}: the guest stopped while its last I/O instruction was finished for a save")]
    StoppedDuringSave(u8),
    /// The state of a vCPU that is not paused was asked for.
    #[error("vCPU {0} is not paused: its state can only be saved while it is")]
    NotPaused(u8),
    /// The vCPU thread did not answer in time.
    #[error("vCPU {0} did not hand over its state in time")]
    SaveTimedOut(u8),
    /// The vCPU thread ended before it could answer.
    #[error("vCPU {0} has stopped: its state is gone")]
    Ended(u8),
}

/// Why a vCPU stopped.
#[derive(Debug)]
pub enum VcpuStopReason {
    /// The guest asked for a reset.
    Reset,
    /// The guest powered off.
    PowerOff,
    /// The vCPU triple-faulted.
    TripleFault {
        /// Instruction pointer at the fault.
        rip: u64,
    },
    /// KVM's instruction emulator could not run an instruction.
    EmulationFailure {
        /// Linear address of the instruction.
        rip: u64,
        /// Its bytes, when known.
        insn: Vec<u8>,
    },
    /// Another KVM internal error.
    InternalError {
        /// `KVM_INTERNAL_ERROR_*` suberror.
        suberror: u32,
    },
    /// KVM could not enter the guest.
    FailEntry {
        /// Hardware entry failure reason.
        reason: u64,
    },
    /// An exit podvm does not handle.
    Unexpected(&'static str),
    /// `KVM_RUN` itself failed.
    Kvm(kvm_ioctls::Error),
    /// The thread's seccomp filter could not be installed: the vCPU never
    /// entered the guest.
    Seccomp(String),
    /// The VMM asked the vCPU to stop.
    Stopped,
}

/// A vCPU's report to the VMM thread.
#[derive(Debug)]
pub struct VcpuStopped {
    /// Which vCPU.
    pub index: u8,
    /// Why it stopped.
    pub reason: VcpuStopReason,
}

thread_local! {
    // The `kvm_run` of the vCPU owned by this thread, for the kick handler.
    static KVM_RUN_PTR: Cell<*mut kvm_run> = const { Cell::new(std::ptr::null_mut()) };
}

extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // Only a plain store: async-signal-safe. The thread-local has a const
    // initializer and no destructor, so accessing it never allocates.
    let ptr = KVM_RUN_PTR.with(Cell::get);
    if !ptr.is_null() {
        // SAFETY: the pointer is set by the vCPU thread to its own mapped
        // `kvm_run`, which lives as long as the thread's `VcpuFd`, and is
        // cleared before that is dropped. The signal runs on that thread.
        unsafe { (*ptr).immediate_exit = 1 };
    }
}

/// Installs the kick handler (once per process).
pub fn install_kick_handler() -> Result<(), VcpuError> {
    static INSTALL: Once = Once::new();
    let mut result = Ok(());
    INSTALL.call_once(|| {
        result = register_signal_handler(vcpu_kick_signal(), kick_handler);
    });
    result.map_err(VcpuError::Signal)
}

/// One virtual CPU.
pub struct Vcpu {
    fd: VcpuFd,
    index: u8,
    io: Arc<IoBuses>,
    mem: GuestMemoryMmap,
    exits: Arc<ExitCounters>,
    /// A stop an exit asked for while the vCPU was paused (see
    /// `complete_pending_io`), reported once it is resumed.
    pending_stop: Option<StopKind>,
}

impl Vcpu {
    /// Creates vCPU `index` (its APIC id) in `vm`. The in-kernel irqchip
    /// must exist already.
    pub fn new(
        vm: &VmFd,
        index: u8,
        io: Arc<IoBuses>,
        mem: GuestMemoryMmap,
    ) -> Result<Self, VcpuError> {
        let fd = vm
            .create_vcpu(u64::from(index))
            .map_err(|e| VcpuError::Create(index, e))?;
        Ok(Vcpu {
            fd,
            index,
            io,
            mem,
            exits: Arc::default(),
            pending_stop: None,
        })
    }

    /// This vCPU's index and APIC id.
    pub fn index(&self) -> u8 {
        self.index
    }

    /// Sets CPUID, MSRs, LAPIC and the boot registers.
    pub fn configure(
        &self,
        supported_cpuid: &CpuId,
        supported_msrs: &MsrList,
        topology: Topology,
        entry: BootEntry,
    ) -> Result<(), VcpuError> {
        let err = |what| {
            let index = self.index;
            move |source| VcpuError::Configure {
                index,
                what,
                source,
            }
        };
        let mut cpuid = supported_cpuid.clone();
        filter_cpuid(&mut cpuid, self.index, topology);
        self.fd.set_cpuid2(&cpuid).map_err(err("KVM_SET_CPUID2"))?;

        let msrs = supported_boot_msrs(supported_msrs);
        let set = self.fd.set_msrs(&msrs).map_err(err("KVM_SET_MSRS"))?;
        if set != msrs.as_slice().len() {
            log::warn!(
                "vCPU {}: KVM set {set} of {} boot MSRs",
                self.index,
                msrs.as_slice().len()
            );
        }

        let mut lapic = self.fd.get_lapic().map_err(err("KVM_GET_LAPIC"))?;
        set_lint(&mut lapic);
        self.fd.set_lapic(&lapic).map_err(err("KVM_SET_LAPIC"))?;

        let sregs = self.fd.get_sregs().map_err(err("KVM_GET_SREGS"))?;
        self.fd
            .set_sregs(&boot_sregs(sregs, entry))
            .map_err(err("KVM_SET_SREGS"))?;
        self.fd
            .set_regs(&boot_regs(entry))
            .map_err(err("KVM_SET_REGS"))?;
        self.fd.set_fpu(&boot_fpu()).map_err(err("KVM_SET_FPU"))?;
        Ok(())
    }

    /// Reads this vCPU's KVM state, on the thread that owns it (use
    /// [`VcpuHandle::save_state`] once it runs). KVM first finishes the
    /// instruction of the last I/O exit (an `in` gets its data, MMIO its
    /// write-back): until then that state is inside KVM, not in any
    /// register ("the operation is complete only after userspace has
    /// re-entered the kernel with KVM_RUN", Documentation/virt/kvm/api.rst).
    pub fn save_state(&mut self, support: &VcpuStateSupport) -> Result<VcpuState, VcpuError> {
        self.complete_pending_io()?;
        save_vcpu_state(&self.fd, support).map_err(|source| VcpuError::State {
            index: self.index,
            source,
        })
    }

    /// Gives this vCPU, created but not started (and not configured), the
    /// state of a snapshot. Create every vCPU of the VM first: KVM
    /// rebuilds its APIC map as each LAPIC is set.
    pub fn restore_state(
        &self,
        state: &VcpuState,
        support: &VcpuStateSupport,
    ) -> Result<(), VcpuError> {
        restore_vcpu_state(&self.fd, state, support).map_err(|source| VcpuError::State {
            index: self.index,
            source,
        })
    }

    /// Re-enters KVM with `immediate_exit` set: KVM completes the pending
    /// I/O of the last exit and returns `EINTR` before running any guest
    /// instruction. An instruction that needs another exit to complete
    /// returns with it; that exit is handled as usual.
    fn complete_pending_io(&mut self) -> Result<(), VcpuError> {
        let index = self.index;
        let mut result = Err(VcpuError::IoNotCompleted(index));
        for _ in 0..MAX_IO_COMPLETION_RUNS {
            self.fd.set_kvm_immediate_exit(1);
            let action = match self.fd.run() {
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                    result = Ok(());
                    break;
                }
                Err(source) => {
                    result = Err(VcpuError::CompleteIo { index, source });
                    break;
                }
                Ok(exit) => {
                    self.exits.record(&exit);
                    handle_exit(exit, &self.io)
                }
            };
            if let ExitAction::Stop(kind) = action {
                self.pending_stop = Some(kind);
                result = Err(VcpuError::StoppedDuringSave(index));
                break;
            }
        }
        self.fd.set_kvm_immediate_exit(0);
        result
    }

    /// Starts the vCPU's thread, which installs the vCPU seccomp filter of
    /// `seccomp` (none: `--no-seccomp`) before it enters the guest. When it
    /// stops by itself it sends its report on `report` and writes
    /// `exit_evt`. With `paused`, the thread starts parked, as if paused
    /// before its first instruction (a restored VM that is not resumed).
    pub fn start(
        mut self,
        report: Sender<VcpuStopped>,
        exit_evt: EventFd,
        seccomp: Option<SeccompFilters>,
        paused: bool,
    ) -> Result<VcpuHandle, VcpuError> {
        install_kick_handler()?;
        let control = Arc::new(VcpuControl::default());
        if paused {
            control.set(WANT_PAUSE);
        }
        let exits = self.exits.clone();
        let thread_control = control.clone();
        let index = self.index;
        let thread = std::thread::Builder::new()
            .name(format!("vcpu{index}"))
            .spawn(move || {
                let reason = match seccomp::apply(seccomp.as_ref(), ThreadKind::Vcpu, index) {
                    Ok(()) => self.run_loop(&thread_control),
                    Err(e) => VcpuStopReason::Seccomp(e.to_string()),
                };
                let stopped_by_vmm = matches!(reason, VcpuStopReason::Stopped);
                // The VMM may be gone already when it is the one stopping us.
                let _ = report.send(VcpuStopped { index, reason });
                if !stopped_by_vmm {
                    if let Err(e) = exit_evt.write(1) {
                        log::error!("vCPU {index}: cannot signal the VMM: {e}");
                    }
                }
            })
            .map_err(|e| VcpuError::Spawn(index, e))?;
        Ok(VcpuHandle {
            index,
            thread,
            control,
            exits,
        })
    }

    fn run_loop(&mut self, control: &VcpuControl) -> VcpuStopReason {
        KVM_RUN_PTR.with(|p| p.set(self.fd.get_kvm_run() as *mut kvm_run));
        if self.index == 0 && log::log_enabled!(log::Level::Debug) {
            // An absolute clock, so that whoever started this process can
            // tell how long it took to reach the guest's first instruction.
            log::debug!(
                "vcpu 0: entering the guest (CLOCK_MONOTONIC {} ns)",
                monotonic_ns()
            );
        }
        let reason = loop {
            if control.wanted() != WANT_RUN
                && !control.park_while_paused(|support| self.save_state(support))
            {
                break VcpuStopReason::Stopped;
            }
            if let Some(kind) = self.pending_stop.take() {
                break self.stop_reason(kind);
            }
            let action = match self.fd.run() {
                Ok(exit) => {
                    self.exits.record(&exit);
                    handle_exit(exit, &self.io)
                }
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                    self.fd.set_kvm_immediate_exit(0);
                    continue;
                }
                Err(e) => break VcpuStopReason::Kvm(e),
            };
            if let ExitAction::Stop(kind) = action {
                break self.stop_reason(kind);
            }
        };
        KVM_RUN_PTR.with(|p| p.set(std::ptr::null_mut()));
        reason
    }

    fn stop_reason(&mut self, kind: StopKind) -> VcpuStopReason {
        match kind {
            StopKind::Reset => VcpuStopReason::Reset,
            StopKind::PowerOff => VcpuStopReason::PowerOff,
            StopKind::TripleFault => VcpuStopReason::TripleFault {
                rip: self.fd.get_regs().map(|r| r.rip).unwrap_or(0),
            },
            StopKind::InternalError => self.internal_error(),
            StopKind::FailEntry(reason) => VcpuStopReason::FailEntry { reason },
            StopKind::Unexpected(what) => VcpuStopReason::Unexpected(what),
        }
    }

    fn internal_error(&mut self) -> VcpuStopReason {
        let run = self.fd.get_kvm_run();
        // SAFETY: KVM_EXIT_INTERNAL_ERROR fills the `internal` member of the
        // exit union; `emulation_failure` shares its first two fields and
        // its flags are valid when ndata covers them.
        let (suberror, ndata, flags, insn) = unsafe {
            let internal = run.__bindgen_anon_1.internal;
            let emu = run.__bindgen_anon_1.emulation_failure;
            let insn = emu.__bindgen_anon_1.__bindgen_anon_1;
            (internal.suberror, internal.ndata, emu.flags, insn)
        };
        if suberror != KVM_INTERNAL_ERROR_EMULATION {
            return VcpuStopReason::InternalError { suberror };
        }
        let linear_rip = match (self.fd.get_regs(), self.fd.get_sregs()) {
            (Ok(r), Ok(s)) => s.cs.base.wrapping_add(r.rip),
            _ => 0,
        };
        let has_bytes = ndata >= 1
            && flags & u64::from(KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES) != 0;
        let insn = if has_bytes {
            insn.insn_bytes[..usize::from(insn.insn_size).min(MAX_INSN_LEN)].to_vec()
        } else {
            self.read_instruction(linear_rip)
        };
        VcpuStopReason::EmulationFailure {
            rip: linear_rip,
            insn,
        }
    }

    fn read_instruction(&self, linear: u64) -> Vec<u8> {
        let Ok(t) = self.fd.translate_gva(linear) else {
            return Vec::new();
        };
        if t.valid == 0 {
            return Vec::new();
        }
        let mut buf = [0u8; MAX_INSN_LEN];
        match self
            .mem
            .read_slice(&mut buf, GuestAddress(t.physical_address))
        {
            Ok(()) => buf.to_vec(),
            Err(_) => Vec::new(),
        }
    }
}

/// What the VMM wants a vCPU thread to do.
const WANT_RUN: u8 = 0;
const WANT_PAUSE: u8 = 1;
const WANT_STOP: u8 = 2;

/// The VMM's requests to one vCPU thread and its acknowledgements. The
/// thread reads `want` after every exit (one atomic load); only a pause or
/// stop takes the lock.
#[derive(Default)]
struct VcpuControl {
    want: AtomicU8,
    parked: Mutex<Parking>,
    changed: Condvar,
}

/// What the VMM and a parked vCPU thread exchange.
#[derive(Default)]
struct Parking {
    /// Whether the thread is parked (outside `KVM_RUN`, waiting).
    parked: bool,
    /// A save the VMM asked for and the thread has not started.
    save: Option<Arc<VcpuStateSupport>>,
    /// The thread's answer to the last save.
    saved: Option<Result<VcpuState, VcpuError>>,
}

impl VcpuControl {
    fn wanted(&self) -> u8 {
        self.want.load(Ordering::Acquire)
    }

    fn set(&self, want: u8) {
        let _parked = self.parked.lock().unwrap_or_else(|e| e.into_inner());
        self.want.store(want, Ordering::Release);
        self.changed.notify_all();
    }

    /// On the vCPU thread: parks while a pause is wanted, answering the
    /// VMM's save requests with `save`. Returns false when the thread must
    /// stop instead of running on.
    fn park_while_paused(
        &self,
        mut save: impl FnMut(&VcpuStateSupport) -> Result<VcpuState, VcpuError>,
    ) -> bool {
        let mut parking = self.parked.lock().unwrap_or_else(|e| e.into_inner());
        if self.wanted() == WANT_PAUSE {
            parking.parked = true;
            self.changed.notify_all();
            while self.wanted() == WANT_PAUSE {
                if let Some(support) = parking.save.take() {
                    // Under the lock: the VMM is waiting for this answer
                    // anyway, and a request it gave up on is never served.
                    parking.saved = Some(save(&support));
                    self.changed.notify_all();
                    continue;
                }
                parking = self
                    .changed
                    .wait(parking)
                    .unwrap_or_else(|e| e.into_inner());
            }
            parking.parked = false;
            self.changed.notify_all();
        }
        self.wanted() != WANT_STOP
    }

    /// On the VMM thread: waits until the thread is (or is no longer)
    /// parked, or it ended.
    fn wait_parked(&self, parked: bool, thread: &JoinHandle<()>, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = self.parked.lock().unwrap_or_else(|e| e.into_inner());
        while state.parked != parked && !thread.is_finished() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            // Short waits: a thread that ends does not notify.
            let step = left.min(Duration::from_millis(10));
            state = self
                .changed
                .wait_timeout(state, step)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }

    /// On the VMM thread: has the parked vCPU thread save its state.
    fn save(
        &self,
        index: u8,
        support: &Arc<VcpuStateSupport>,
        thread: &JoinHandle<()>,
        timeout: Duration,
    ) -> Result<VcpuState, VcpuError> {
        let deadline = Instant::now() + timeout;
        let mut parking = self.parked.lock().unwrap_or_else(|e| e.into_inner());
        if !parking.parked || self.wanted() != WANT_PAUSE {
            return Err(VcpuError::NotPaused(index));
        }
        parking.saved = None;
        parking.save = Some(support.clone());
        self.changed.notify_all();
        loop {
            if let Some(result) = parking.saved.take() {
                return result;
            }
            if thread.is_finished() {
                parking.save = None;
                return Err(VcpuError::Ended(index));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                parking.save = None;
                return Err(VcpuError::SaveTimedOut(index));
            }
            // Short waits: a thread that ends does not notify.
            let step = left.min(Duration::from_millis(10));
            parking = self
                .changed
                .wait_timeout(parking, step)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// The VMM's handle on a running vCPU thread.
pub struct VcpuHandle {
    index: u8,
    thread: JoinHandle<()>,
    control: Arc<VcpuControl>,
    exits: Arc<ExitCounters>,
}

impl VcpuHandle {
    /// The vCPU's exits so far.
    pub fn exits(&self) -> &ExitCounters {
        &self.exits
    }

    fn kick(&self) {
        if let Err(e) = self.thread.kill(vcpu_kick_signal()) {
            // The thread may have ended already.
            log::debug!("cannot kick a vCPU thread: {e}");
        }
    }

    /// Asks the vCPU to leave `KVM_RUN` and stop.
    pub fn stop(&self) {
        self.control.set(WANT_STOP);
        self.kick();
    }

    /// Asks the vCPU to leave `KVM_RUN` and wait; returns once it is out of
    /// `KVM_RUN` (or has ended), or false after `timeout`.
    pub fn pause(&self, timeout: Duration) -> bool {
        self.request_pause();
        self.wait_paused(timeout)
    }

    /// Asks the vCPU to pause without waiting (to pause several at once).
    pub fn request_pause(&self) {
        self.control.set(WANT_PAUSE);
        self.kick();
    }

    /// Waits until a requested pause took effect.
    pub fn wait_paused(&self, timeout: Duration) -> bool {
        self.control.wait_parked(true, &self.thread, timeout)
    }

    /// The KVM state of this vCPU, which must be paused ([`VcpuHandle::pause`]);
    /// it stays paused. Waits at most `timeout` for the vCPU thread.
    pub fn save_state(
        &self,
        support: &Arc<VcpuStateSupport>,
        timeout: Duration,
    ) -> Result<VcpuState, VcpuError> {
        self.control
            .save(self.index, support, &self.thread, timeout)
    }

    /// Lets a paused vCPU run again; returns once it left its pause, or
    /// false after `timeout`.
    pub fn resume(&self, timeout: Duration) -> bool {
        self.control.set(WANT_RUN);
        self.control.wait_parked(false, &self.thread, timeout)
    }

    /// Waits for the vCPU thread to end.
    pub fn join(self) {
        if self.thread.join().is_err() {
            log::error!("a vCPU thread panicked");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::x86_64::layout::HIGH_MEMORY_START;
    use crate::arch::x86_64::regs::{setup_gdt_idt, setup_page_tables};
    use crate::memory::create_guest_memory;
    use crate::persist::test_utils::without_tsc;
    use crate::persist::vcpu::VcpuStateSupport;
    use crate::vstate::vm::Vm;
    use devices::BusDevice;
    use kvm_bindings::KVM_MAX_CPUID_ENTRIES;
    use kvm_ioctls::Kvm;
    use std::sync::atomic::AtomicU64;
    use std::sync::mpsc::channel;
    use vmm_sys_util::eventfd::EFD_NONBLOCK;

    /// Counts the guest's writes to its port.
    struct Counter(Arc<AtomicU64>);

    impl BusDevice for Counter {
        fn read(&mut self, _offset: u64, data: &mut [u8]) {
            data.fill(0);
        }
        fn write(&mut self, _offset: u64, _data: &[u8]) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn wait_until(what: &str, cond: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn pause_holds_the_vcpu_out_of_the_guest_until_resume() {
        if !testkit::need_kvm("pause_holds_the_vcpu_out_of_the_guest_until_resume") {
            return;
        }
        let kvm = Kvm::new().expect("/dev/kvm opened a moment ago");
        // 1: out 0x80, al; jmp 1b
        let mem = create_guest_memory(16 << 20).unwrap();
        mem.write_slice(&[0xe6, 0x80, 0xeb, 0xfc], GuestAddress(HIGH_MEMORY_START))
            .unwrap();
        let entry = BootEntry::Linux64 {
            entry: HIGH_MEMORY_START,
        };
        setup_page_tables(&mem).unwrap();
        setup_gdt_idt(&mem, entry).unwrap();
        let vm = Vm::new(&kvm).unwrap();
        vm.register_memory(&mem).unwrap();
        vm.setup_irqchip().unwrap();
        let count = Arc::new(AtomicU64::new(0));
        let mut io = IoBuses::default();
        io.pio
            .insert(0x80, 1, Arc::new(Mutex::new(Counter(count.clone()))))
            .unwrap();
        let vcpu = Vcpu::new(vm.fd(), 0, Arc::new(io), mem.clone()).unwrap();
        let cpuid = kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).unwrap();
        let msrs = kvm.get_msr_index_list().unwrap();
        vcpu.configure(&cpuid, &msrs, Topology::new(1, false), entry)
            .unwrap();
        let (tx, _rx) = channel();
        let handle = vcpu
            .start(tx, EventFd::new(EFD_NONBLOCK).unwrap(), None, false)
            .unwrap();

        wait_until("the guest to run", || count.load(Ordering::SeqCst) > 10);
        assert!(handle.pause(Duration::from_secs(10)), "paused");
        let held = count.load(Ordering::SeqCst);
        // Absence of progress can only be observed over some time.
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(
            count.load(Ordering::SeqCst),
            held,
            "no guest code while paused"
        );

        assert!(handle.resume(Duration::from_secs(10)), "resumed");
        wait_until("the guest to run again", || {
            count.load(Ordering::SeqCst) > held + 10
        });

        // Stopping works from a pause as well.
        assert!(handle.pause(Duration::from_secs(10)));
        handle.stop();
        handle.join();
    }

    /// Answers a port read only when the test lets it.
    struct HeldPort {
        reading: Sender<()>,
        release: std::sync::mpsc::Receiver<u8>,
    }

    impl BusDevice for HeldPort {
        fn read(&mut self, _offset: u64, data: &mut [u8]) {
            let _ = self.reading.send(());
            data.fill(self.release.recv().unwrap_or(0));
        }
        fn write(&mut self, _offset: u64, _data: &[u8]) {}
    }

    #[test]
    fn a_saved_state_holds_the_result_of_the_last_port_read() {
        if !testkit::need_kvm("a_saved_state_holds_the_result_of_the_last_port_read") {
            return;
        }
        let kvm = Kvm::new().expect("/dev/kvm opened a moment ago");
        // in al, 0x80; 1: jmp 1b
        let mem = create_guest_memory(16 << 20).unwrap();
        mem.write_slice(&[0xe4, 0x80, 0xeb, 0xfe], GuestAddress(HIGH_MEMORY_START))
            .unwrap();
        let entry = BootEntry::Linux64 {
            entry: HIGH_MEMORY_START,
        };
        setup_page_tables(&mem).unwrap();
        setup_gdt_idt(&mem, entry).unwrap();
        let vm = Vm::new(&kvm).unwrap();
        vm.register_memory(&mem).unwrap();
        vm.setup_irqchip().unwrap();
        let (reading_tx, reading) = channel();
        let (release, release_rx) = channel();
        let mut io = IoBuses::default();
        let port = HeldPort {
            reading: reading_tx,
            release: release_rx,
        };
        io.pio.insert(0x80, 1, Arc::new(Mutex::new(port))).unwrap();
        let vcpu = Vcpu::new(vm.fd(), 0, Arc::new(io), mem.clone()).unwrap();
        let cpuid = kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).unwrap();
        let msrs = kvm.get_msr_index_list().unwrap();
        vcpu.configure(&cpuid, &msrs, Topology::new(1, false), entry)
            .unwrap();
        let support = Arc::new(VcpuStateSupport::probe(&kvm, vm.fd()).unwrap());
        let (tx, _rx) = channel();
        let handle = vcpu
            .start(tx, EventFd::new(EFD_NONBLOCK).unwrap(), None, false)
            .unwrap();

        // The pause lands while the device answers the `in`: the vCPU
        // parks right after the exit, before KVM has the data.
        reading
            .recv_timeout(Duration::from_secs(30))
            .expect("the guest reads its port");
        handle.request_pause();
        release.send(0x5a).unwrap();
        assert!(handle.wait_paused(Duration::from_secs(10)), "paused");
        let state = handle
            .save_state(&support, Duration::from_secs(10))
            .unwrap();
        assert_eq!(
            state.regs.rax & 0xff,
            0x5a,
            "al holds what the port returned"
        );
        assert_eq!(
            state.regs.rip,
            HIGH_MEMORY_START + 2,
            "rip is past the `in`"
        );
        // Saving again changes nothing but the ticking TSC: there is no
        // I/O left to finish.
        let again = handle
            .save_state(&support, Duration::from_secs(10))
            .unwrap();
        assert_eq!(again.regs, state.regs);
        assert_eq!(without_tsc(again), without_tsc(state));
        handle.stop();
        handle.join();
    }
}
