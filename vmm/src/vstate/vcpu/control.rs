//! How the VMM thread and a vCPU thread agree on running, pausing and
//! stopping ([`VcpuControl`]), and the VMM's handle on a running vCPU
//! thread ([`VcpuHandle`]).

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vmm_sys_util::signal::Killable;

use super::{vcpu_kick_signal, VcpuError};
use crate::persist::vcpu::{VcpuState, VcpuStateSupport};
use crate::vstate::exit::ExitCounters;

/// What the VMM wants a vCPU thread to do.
pub(super) const WANT_RUN: u8 = 0;
pub(super) const WANT_PAUSE: u8 = 1;
pub(super) const WANT_STOP: u8 = 2;

/// The VMM's requests to one vCPU thread and its acknowledgements. The
/// thread reads `want` after every exit (one atomic load); only a pause or
/// stop takes the lock.
#[derive(Default)]
pub(super) struct VcpuControl {
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
    pub(super) fn wanted(&self) -> u8 {
        self.want.load(Ordering::Acquire)
    }

    pub(super) fn set(&self, want: u8) {
        let _parked = self.parked.lock().unwrap_or_else(|e| e.into_inner());
        self.want.store(want, Ordering::Release);
        self.changed.notify_all();
    }

    /// On the vCPU thread: parks while a pause is wanted, answering the
    /// VMM's save requests with `save`. Returns false when the thread must
    /// stop instead of running on.
    pub(super) fn park_while_paused(
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
    pub(super) index: u8,
    pub(super) thread: JoinHandle<()>,
    pub(super) control: Arc<VcpuControl>,
    pub(super) exits: Arc<ExitCounters>,
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
