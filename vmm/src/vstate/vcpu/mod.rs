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
use std::sync::mpsc::Sender;
use std::sync::{Arc, Once};

use kvm_bindings::{
    kvm_run, CpuId, MsrList, KVM_INTERNAL_ERROR_EMULATION,
    KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES,
};
use kvm_ioctls::{VcpuFd, VmFd};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::signal::{register_signal_handler, SIGRTMIN};

use super::exit::{handle_exit, ExitAction, ExitCounters, IoBuses, StopKind};
use crate::arch::x86_64::cpuid::{filter_cpuid, Topology};
use crate::arch::x86_64::interrupts::set_lint;
use crate::arch::x86_64::msr::supported_boot_msrs;
use crate::arch::x86_64::regs::{boot_fpu, boot_regs, boot_sregs, BootEntry};
use crate::persist::vcpu::{
    restore_vcpu_state, save_vcpu_state, VcpuState, VcpuStateError, VcpuStateSupport,
};
use crate::seccomp::{self, SeccompFilters, ThreadKind};

mod control;

pub use control::VcpuHandle;
use control::{VcpuControl, WANT_PAUSE, WANT_RUN};

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

#[cfg(test)]
mod tests;
