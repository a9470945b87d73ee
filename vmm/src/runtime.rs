//! Running a built VM: the event loop and how a VM ends ([`EventLoop`],
//! [`VmExit`]), and the running VM itself ([`RunningVm`]: start the vCPUs
//! and device handlers, pause, resume, stop — vCPUs first, then the disks
//! and the console are flushed). The loop that drives it is
//! [`crate::controller::serve_actions`].

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use event_manager::{EventManager, EventOps, Events, MutEventSubscriber, SubscriberOps};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use vm_memory::GuestMemoryMmap;

use crate::builder::VirtioDevices;
use crate::console::SerialInput;
use crate::device_manager::LegacyDevices;
use crate::seccomp::SeccompFilters;
use crate::snapshot::SnapshotSupport;
use crate::vstate::vcpu::{VcpuError, VcpuHandle, VcpuStopReason, VcpuStopped};
use crate::vstate::vm::Vm;
use crate::{ConsoleInput, Vmm};

/// How the guest ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmExit {
    /// The guest reset itself (i8042 or KVM system event): a clean end.
    Reset,
    /// The guest powered off: a clean end.
    PowerOff,
    /// The user ended the VM from the console (Ctrl-A x).
    UserQuit,
    /// A `Shutdown` action through the API: vCPUs stopped, disks flushed.
    ApiShutdown,
    /// A vCPU triple-faulted.
    TripleFault {
        /// The vCPU.
        vcpu: u8,
        /// Its instruction pointer.
        rip: u64,
    },
    /// KVM could not emulate a guest instruction.
    EmulationFailure {
        /// The vCPU.
        vcpu: u8,
        /// Linear address of the instruction.
        rip: u64,
        /// Its bytes, when known.
        insn: Vec<u8>,
    },
    /// podvm was asked to stop by a signal (SIGTERM, SIGINT or SIGHUP): the
    /// vCPUs were stopped and the disks flushed.
    Signal(i32),
    /// Another vCPU failure.
    VcpuFailed {
        /// The vCPU.
        vcpu: u8,
        /// What happened.
        reason: String,
    },
}

impl VmExit {
    /// The process exit code this ending maps to: 0 for a clean end, 3 for
    /// a triple fault, 4 for an emulation failure, 128 + the signal number
    /// when stopped by a signal, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            VmExit::Reset | VmExit::PowerOff | VmExit::UserQuit | VmExit::ApiShutdown => 0,
            VmExit::TripleFault { .. } => 3,
            VmExit::EmulationFailure { .. } => 4,
            VmExit::Signal(sig) => 128 + sig,
            VmExit::VcpuFailed { .. } => 1,
        }
    }

    fn from_vcpu(stopped: VcpuStopped) -> Option<VmExit> {
        let vcpu = stopped.index;
        Some(match stopped.reason {
            VcpuStopReason::Stopped => return None,
            VcpuStopReason::Reset => VmExit::Reset,
            VcpuStopReason::PowerOff => VmExit::PowerOff,
            VcpuStopReason::TripleFault { rip } => VmExit::TripleFault { vcpu, rip },
            VcpuStopReason::EmulationFailure { rip, insn } => {
                VmExit::EmulationFailure { vcpu, rip, insn }
            }
            VcpuStopReason::InternalError { suberror } => VmExit::VcpuFailed {
                vcpu,
                reason: format!("KVM internal error (suberror {suberror})"),
            },
            VcpuStopReason::FailEntry { reason } => VmExit::VcpuFailed {
                vcpu,
                reason: format!("KVM could not enter the guest (hardware reason {reason:#x})"),
            },
            VcpuStopReason::Unexpected(what) => VmExit::VcpuFailed {
                vcpu,
                reason: format!("unexpected {what} exit"),
            },
            VcpuStopReason::Seccomp(e) => VmExit::VcpuFailed { vcpu, reason: e },
            VcpuStopReason::Kvm(e) => VmExit::VcpuFailed {
                vcpu,
                reason: format!("KVM_RUN failed: {e}"),
            },
        })
    }
}

impl fmt::Display for VmExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VmExit::Reset => f.write_str("guest reset"),
            VmExit::PowerOff => f.write_str("guest powered off"),
            VmExit::UserQuit => f.write_str("ended from the console (Ctrl-A x)"),
            VmExit::ApiShutdown => f.write_str("shut down through the API"),
            VmExit::TripleFault { vcpu, rip } => {
                write!(f, "guest triple-faulted at RIP={rip:#x} on vCPU {vcpu}")
            }
            VmExit::EmulationFailure { vcpu, rip, insn } => {
                write!(f, "KVM could not emulate the guest instruction at RIP={rip:#x} on vCPU {vcpu} (bytes at RIP:")?;
                if insn.is_empty() {
                    f.write_str(" unknown")?;
                }
                for b in insn {
                    write!(f, " {b:02x}")?;
                }
                f.write_str("); this host's KVM may be emulating guests instead of running them: run `podvm doctor`")
            }
            VmExit::Signal(sig) => match *sig {
                libc::SIGTERM => f.write_str("stopped by SIGTERM"),
                libc::SIGINT => f.write_str("stopped by SIGINT"),
                libc::SIGHUP => f.write_str("stopped by SIGHUP"),
                other => write!(f, "stopped by signal {other}"),
            },
            VmExit::VcpuFailed { vcpu, reason } => write!(f, "vCPU {vcpu}: {reason}"),
        }
    }
}

/// The VM could not be run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The event loop could not be created or polled.
    #[error("event loop: {0:?}")]
    EventLoop(event_manager::Error),
    /// An `EventFd` could not be created.
    #[error("cannot create an eventfd: {0}")]
    EventFd(#[source] io::Error),
    /// A vCPU could not be started.
    #[error("{0}")]
    Vcpu(#[from] VcpuError),
    /// vCPUs did not pause or resume in time.
    #[error("the vCPUs did not pause or resume within {} s", PAUSE_TIMEOUT.as_secs())]
    PauseTimeout,
    /// A disk could not be flushed when the VM stopped.
    #[error("{0}")]
    Flush(#[from] crate::builder::FlushError),
    /// The stop signals could not be routed to the event loop.
    #[error("cannot watch for stop signals: {0}")]
    Signals(#[source] io::Error),
}

type Outcome = Arc<Mutex<Option<VmExit>>>;

fn set_outcome(outcome: &Outcome, exit: VmExit) {
    let mut o = outcome.lock().unwrap_or_else(|e| e.into_inner());
    // The first ending wins: a reset followed by vCPUs reporting that they
    // were stopped is still a reset.
    o.get_or_insert(exit);
}

/// Watches the reset and power-off lines and the vCPUs' reports.
struct ExitMonitor {
    reset_evt: EventFd,
    power_off_evt: EventFd,
    vcpu_exit_evt: EventFd,
    reports: Receiver<VcpuStopped>,
    outcome: Outcome,
}

impl MutEventSubscriber for ExitMonitor {
    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        if events.fd() == self.reset_evt.as_raw_fd() {
            let _ = self.reset_evt.read();
            set_outcome(&self.outcome, VmExit::Reset);
        } else if events.fd() == self.power_off_evt.as_raw_fd() {
            let _ = self.power_off_evt.read();
            set_outcome(&self.outcome, VmExit::PowerOff);
        } else if events.fd() == self.vcpu_exit_evt.as_raw_fd() {
            let _ = self.vcpu_exit_evt.read();
            while let Ok(stopped) = self.reports.try_recv() {
                if let Some(exit) = VmExit::from_vcpu(stopped) {
                    set_outcome(&self.outcome, exit);
                }
            }
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        for evt in [&self.reset_evt, &self.power_off_evt, &self.vcpu_exit_evt] {
            if let Err(e) = ops.add(Events::new(evt, EventSet::IN)) {
                log::error!("cannot watch a VM exit event: {e:?}");
            }
        }
    }
}

/// The signals that stop podvm in an orderly way.
const STOP_SIGNALS: [i32; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP];

/// Receives the stop signals as events: they are blocked in every thread
/// (the mask is set before the vCPU threads exist, which inherit it) and
/// read from a signalfd, so a stop always goes through the same orderly
/// path: stop the vCPUs, flush the disks, restore the terminal, exit.
struct SignalWatcher {
    fd: File,
    outcome: Outcome,
}

impl SignalWatcher {
    fn new(outcome: Outcome) -> io::Result<Self> {
        // SAFETY: sigset_t is plain data initialised by sigemptyset; the
        // calls only read and write it and this thread's signal mask.
        let fd = unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for sig in STOP_SIGNALS {
                libc::sigaddset(&mut set, sig);
            }
            if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
            libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC)
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the fd was just created and is owned by nobody else.
        let fd = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        Ok(SignalWatcher { fd, outcome })
    }
}

impl MutEventSubscriber for SignalWatcher {
    fn process(&mut self, _events: Events, _ops: &mut EventOps) {
        let mut info = [0u8; std::mem::size_of::<libc::signalfd_siginfo>()];
        while let Ok(n) = self.fd.read(&mut info) {
            if n != info.len() {
                break;
            }
            let signo = u32::from_ne_bytes(info[..4].try_into().expect("4 bytes")) as i32;
            log::info!("received signal {signo}: stopping the VM");
            set_outcome(&self.outcome, VmExit::Signal(signo));
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(&self.fd, EventSet::IN)) {
            log::error!("cannot watch for stop signals: {e:?}");
        }
    }
}

/// An event-loop subscriber shared with the event manager.
pub type Subscriber = Arc<Mutex<dyn MutEventSubscriber + Send>>;

/// The VMM thread's event loop and how the VM ended, once it has.
pub struct EventLoop {
    manager: EventManager<Subscriber>,
    outcome: Outcome,
}

impl EventLoop {
    /// A loop that already routes the stop signals (so create it before
    /// any other thread exists: they inherit the blocked signal mask).
    pub fn new() -> Result<Self, RunError> {
        let outcome: Outcome = Arc::new(Mutex::new(None));
        let mut manager: EventManager<Subscriber> =
            EventManager::new().map_err(RunError::EventLoop)?;
        let signals = SignalWatcher::new(outcome.clone()).map_err(RunError::Signals)?;
        manager.add_subscriber(Arc::new(Mutex::new(signals)));
        Ok(EventLoop { manager, outcome })
    }

    /// Adds an event handler.
    pub fn add(&mut self, subscriber: Subscriber) {
        self.manager.add_subscriber(subscriber);
    }

    /// How the VM ended, when it has.
    pub fn outcome(&self) -> Option<VmExit> {
        self.outcome
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Records how the VM ended (the first ending wins).
    pub fn set_outcome(&self, exit: VmExit) {
        set_outcome(&self.outcome, exit);
    }

    /// Waits for and handles one batch of events.
    pub fn run_once(&mut self) -> Result<(), RunError> {
        self.manager.run().map(|_| ()).map_err(RunError::EventLoop)
    }

    /// Handles the events already pending, without waiting (a snapshot
    /// first lets the devices take what the driver posted).
    pub fn run_pending(&mut self) -> Result<(), RunError> {
        self.manager
            .run_with_timeout(0)
            .map(|_| ())
            .map_err(RunError::EventLoop)
    }
}

/// A VM whose vCPUs run (or are paused).
pub struct RunningVm {
    // Field order is drop order: the VM goes before the memory it maps.
    pub(crate) vm: Vm,
    pub(crate) handles: Vec<VcpuHandle>,
    pub(crate) legacy: LegacyDevices,
    pub(crate) virtio: VirtioDevices,
    pub(crate) memory: GuestMemoryMmap,
    pub(crate) snapshot: SnapshotSupport,
    paused: bool,
}

/// How long a pause or resume may take before it is an error.
const PAUSE_TIMEOUT: Duration = Duration::from_secs(5);

impl RunningVm {
    /// Starts the vCPUs of `vmm` (each under the vCPU filter of
    /// `seccomp`; parked, with `paused`), its device handlers and console
    /// in `event_loop`.
    pub fn start(
        vmm: Vmm,
        serial_input: Option<ConsoleInput>,
        event_loop: &mut EventLoop,
        seccomp: Option<&SeccompFilters>,
        paused: bool,
    ) -> Result<RunningVm, RunError> {
        let Vmm {
            vm,
            vcpus,
            legacy,
            console_drain,
            virtio,
            memory,
            snapshot,
        } = vmm;
        let outcome = event_loop.outcome.clone();
        let vcpu_exit_evt = EventFd::new(EFD_NONBLOCK).map_err(RunError::EventFd)?;
        let (report_tx, report_rx) = channel();
        let monitor = ExitMonitor {
            reset_evt: legacy.reset_evt.try_clone().map_err(RunError::EventFd)?,
            power_off_evt: legacy
                .power_off_evt
                .try_clone()
                .map_err(RunError::EventFd)?,
            vcpu_exit_evt: vcpu_exit_evt.try_clone().map_err(RunError::EventFd)?,
            reports: report_rx,
            outcome: outcome.clone(),
        };
        event_loop.add(Arc::new(Mutex::new(monitor)));
        for device in &virtio.subscribers {
            event_loop.add(device.clone());
        }
        if let Some(drain) = console_drain {
            event_loop.add(Arc::new(Mutex::new(drain)));
        }
        if let Some(ConsoleInput { file, tty }) = serial_input {
            let quit = outcome.clone();
            let input = SerialInput::new(
                file,
                tty,
                legacy.serial.clone(),
                legacy
                    .serial_input_ready
                    .try_clone()
                    .map_err(RunError::EventFd)?,
                Box::new(move || set_outcome(&quit, VmExit::UserQuit)),
            );
            event_loop.add(Arc::new(Mutex::new(input)));
        }

        let mut handles: Vec<VcpuHandle> = Vec::with_capacity(vcpus.len());
        for vcpu in vcpus {
            let evt = vcpu_exit_evt.try_clone().map_err(RunError::EventFd)?;
            match vcpu.start(report_tx.clone(), evt, seccomp.cloned(), paused) {
                Ok(h) => handles.push(h),
                Err(e) => {
                    stop_vcpus(handles);
                    return Err(e.into());
                }
            }
        }
        Ok(RunningVm {
            vm,
            handles,
            legacy,
            virtio,
            memory,
            snapshot,
            paused,
        })
    }

    /// Presses and releases Ctrl+Alt+Del on the guest's keyboard (the
    /// i8042), raising IRQ 1; a Linux guest reboots in answer.
    pub fn send_ctrl_alt_del(&self) -> Result<(), devices::legacy::I8042Error> {
        self.legacy
            .i8042
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .trigger_ctrl_alt_del()
    }

    /// Replaces drive `id`'s backing file with `path`; the guest gets a
    /// config-change interrupt. Returns the new capacity in sectors.
    pub fn swap_drive(
        &self,
        id: &str,
        path: &std::path::Path,
    ) -> Result<u64, crate::builder::SwapError> {
        self.virtio.swap_drive(id, path)
    }

    /// Changes drive `id`'s rate limiter, bucket by bucket (`PATCH`).
    pub fn update_drive_rate_limiter(
        &self,
        id: &str,
        update: &resources::RateLimiterConfig,
    ) -> Result<(), crate::builder::LimiterUpdateError> {
        self.virtio.update_drive_rate_limiter(id, update)
    }

    /// Changes interface `id`'s rate limiters, bucket by bucket (`PATCH`).
    pub fn update_net_rate_limiters(
        &self,
        id: &str,
        rx: Option<&resources::RateLimiterConfig>,
        tx: Option<&resources::RateLimiterConfig>,
    ) -> Result<(), crate::builder::LimiterUpdateError> {
        self.virtio.update_net_rate_limiters(id, rx, tx)
    }

    /// The VM's counters: vCPU exits by reason, devices, console bytes.
    pub fn metrics(&self) -> serde_json::Value {
        let mut exits = serde_json::Map::new();
        for h in &self.handles {
            for (reason, n) in h.exits().snapshot() {
                let total = exits.get(reason).and_then(|v| v.as_u64()).unwrap_or(0) + n;
                exits.insert(reason.to_string(), total.into());
            }
        }
        let mut v = self.virtio.metrics();
        v["vcpu_exits"] = exits.into();
        let serial = self.legacy.serial.lock().unwrap_or_else(|e| e.into_inner());
        v["serial"] = serde_json::json!({ "bytes_out": serial.bytes_out() });
        v
    }

    /// Whether the vCPUs are paused.
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Pauses every vCPU; returns once none is in `KVM_RUN`.
    pub fn pause(&mut self) -> Result<(), RunError> {
        for h in &self.handles {
            h.request_pause();
        }
        for h in &self.handles {
            if !h.wait_paused(PAUSE_TIMEOUT) {
                return Err(RunError::PauseTimeout);
            }
        }
        self.paused = true;
        Ok(())
    }

    /// Lets every vCPU run again; returns once all left their pause.
    pub fn resume(&mut self) -> Result<(), RunError> {
        for h in &self.handles {
            if !h.resume(PAUSE_TIMEOUT) {
                return Err(RunError::PauseTimeout);
            }
        }
        self.paused = false;
        Ok(())
    }

    /// Stops the vCPUs, flushes the disks and the console, and drops the
    /// VM.
    pub fn stop(self) -> Result<(), RunError> {
        let RunningVm {
            vm,
            handles,
            legacy,
            virtio,
            memory,
            ..
        } = self;
        stop_vcpus(handles);
        // Everything the guest wrote reaches the disk before podvm exits;
        // if it cannot, podvm must not report a clean end.
        let flushed = virtio.flush_disks();
        if let Err(e) = legacy
            .serial
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .output()
            .flush()
        {
            log::warn!("serial: cannot flush output: {e}");
        }
        release(vm, &memory);
        flushed?;
        Ok(())
    }
}

/// Ends the VM and gives its memory back, both at once: the host frees
/// the guest's pages on as many threads as it has CPUs (up to 4) while
/// the VM's own teardown runs, instead of all of it in the one exiting
/// thread. Nothing runs the guest any more.
fn release(vm: Vm, memory: &GuestMemoryMmap) {
    let started = std::time::Instant::now();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    let freed = std::thread::scope(|s| {
        let dropped = std::thread::Builder::new()
            .name("vm-release".into())
            .spawn_scoped(s, move || drop(vm));
        if let Err(e) = dropped {
            log::debug!("the VM is released in line: {e}");
        }
        crate::memory::release_guest_memory(memory, threads)
    });
    log::debug!(
        "released the VM and {} MiB of guest memory in {} us",
        freed >> 20,
        started.elapsed().as_micros()
    );
}

fn stop_vcpus(handles: Vec<VcpuHandle>) {
    for h in &handles {
        h.stop();
    }
    for h in handles {
        h.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes() {
        assert_eq!(VmExit::Reset.exit_code(), 0);
        assert_eq!(VmExit::PowerOff.exit_code(), 0);
        assert_eq!(VmExit::TripleFault { vcpu: 0, rip: 1 }.exit_code(), 3);
        assert_eq!(VmExit::Signal(libc::SIGTERM).exit_code(), 143);
        let emu = VmExit::EmulationFailure {
            vcpu: 1,
            rip: 0x10_0000,
            insn: vec![0x66, 0x0f, 0xd4, 0xc1],
        };
        assert_eq!(emu.exit_code(), 4);
        assert_eq!(
            emu.to_string(),
            "KVM could not emulate the guest instruction at RIP=0x100000 on vCPU 1 \
             (bytes at RIP: 66 0f d4 c1); this host's KVM may be emulating guests instead of \
             running them: run `podvm doctor`"
        );
        assert_eq!(
            VmExit::TripleFault {
                vcpu: 0,
                rip: 0x1234
            }
            .to_string(),
            "guest triple-faulted at RIP=0x1234 on vCPU 0"
        );
    }

    #[test]
    fn vcpu_reports_map_to_exits() {
        let r = |reason| VmExit::from_vcpu(VcpuStopped { index: 2, reason });
        assert_eq!(r(VcpuStopReason::Stopped), None);
        assert_eq!(r(VcpuStopReason::Reset), Some(VmExit::Reset));
        assert_eq!(
            r(VcpuStopReason::TripleFault { rip: 9 }),
            Some(VmExit::TripleFault { vcpu: 2, rip: 9 })
        );
        let failed = r(VcpuStopReason::InternalError { suberror: 3 }).unwrap();
        assert_eq!(failed.exit_code(), 1);
        assert_eq!(
            failed.to_string(),
            "vCPU 2: KVM internal error (suberror 3)"
        );
    }

    #[test]
    fn first_outcome_wins() {
        let o: Outcome = Arc::new(Mutex::new(None));
        set_outcome(&o, VmExit::Reset);
        set_outcome(&o, VmExit::TripleFault { vcpu: 0, rip: 0 });
        assert_eq!(*o.lock().unwrap(), Some(VmExit::Reset));
    }
}
