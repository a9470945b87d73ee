//! The controller's event loop: actions from the API thread answered
//! between device events, periodic metrics, and the timers the controller
//! arms ([`serve_actions`]).

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};

use event_manager::{EventOps, Events, MutEventSubscriber};
use resources::action::ActionRequest;
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;

use super::Controller;
use crate::runtime::{EventLoop, RunError, RunningVm};
use crate::{VmExit, Vmm};

/// The receiving end of the API's actions.
pub struct ActionQueue {
    /// Requests from the API thread.
    pub requests: Receiver<ActionRequest>,
    /// Written by the API thread after each request.
    pub kick: EventFd,
}

/// How often metrics are flushed without being asked.
const METRICS_PERIOD: std::time::Duration = std::time::Duration::from_secs(60);

/// How long after a load with `prefetch` the pages the guest touched are
/// recorded as the snapshot's working set.
pub(super) const WORKING_SET_WINDOW: std::time::Duration = std::time::Duration::from_secs(1);

/// Marks something as due after `first`, then every `period` (metrics
/// flushes, the working-set record).
pub(super) struct DueTimer {
    timer: vmm_sys_util::timerfd::TimerFd,
    due: Arc<AtomicBool>,
}

impl DueTimer {
    pub(super) fn new(
        due: Arc<AtomicBool>,
        first: std::time::Duration,
        period: Option<std::time::Duration>,
    ) -> std::io::Result<Self> {
        let mut timer = vmm_sys_util::timerfd::TimerFd::new()?;
        timer.reset(first, period)?;
        Ok(DueTimer { timer, due })
    }
}

impl MutEventSubscriber for DueTimer {
    fn process(&mut self, _events: Events, _ops: &mut EventOps) {
        let _ = self.timer.wait();
        self.due.store(true, Ordering::Release);
    }

    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(&self.timer, EventSet::IN)) {
            log::warn!("cannot watch the metrics timer: {e:?}");
        }
    }
}

/// Wakes the event loop when actions are waiting.
struct ActionWatcher {
    kick: EventFd,
    pending: Arc<AtomicBool>,
}

impl MutEventSubscriber for ActionWatcher {
    fn process(&mut self, _events: Events, _ops: &mut EventOps) {
        let _ = self.kick.read();
        self.pending.store(true, Ordering::Release);
    }

    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(&self.kick, EventSet::IN)) {
            log::error!("cannot watch for API requests: {e:?}");
        }
    }
}

/// Runs the event loop, answering actions from `queue` between events,
/// until the VM ends (or a `Shutdown` action). `prebuilt` is a VM already
/// built from a config file, started before serving.
pub fn serve_actions(
    mut controller: Controller,
    queue: ActionQueue,
    mut event_loop: EventLoop,
    prebuilt: Option<Vmm>,
) -> Result<VmExit, RunError> {
    let pending = Arc::new(AtomicBool::new(false));
    let kick_fd = queue.kick.as_raw_fd();
    log::debug!("serving API actions (kick fd {kick_fd})");
    event_loop.add(Arc::new(Mutex::new(ActionWatcher {
        kick: queue.kick,
        pending: pending.clone(),
    })));
    // Metrics are also flushed every minute (as Firecracker does).
    let flush_due = Arc::new(AtomicBool::new(false));
    match DueTimer::new(flush_due.clone(), METRICS_PERIOD, Some(METRICS_PERIOD)) {
        Ok(t) => event_loop.add(Arc::new(Mutex::new(t))),
        Err(e) => log::warn!("no periodic metrics: {e}"),
    }
    if let Some(vmm) = prebuilt {
        let input = controller.serial_input.take();
        let seccomp = controller.seccomp.clone();
        controller.running = Some(RunningVm::start(
            vmm,
            input,
            &mut event_loop,
            seccomp.as_ref(),
            false,
        )?);
    }
    let result = loop {
        if let Some(exit) = event_loop.outcome() {
            break Ok(exit);
        }
        if let Err(e) = event_loop.run_once() {
            break Err(e);
        }
        controller.record_working_set_if_due();
        if flush_due.swap(false, Ordering::AcqRel) && controller.metrics.is_some() {
            if let Err(e) = controller.flush_metrics() {
                log::warn!("cannot write metrics: {e}");
            }
        }
        if pending.swap(false, Ordering::AcqRel) {
            while let Ok(req) = queue.requests.try_recv() {
                let result = controller.handle(req.action, &mut event_loop);
                req.reply.send(result);
            }
        }
    };
    controller.stop()?;
    result
}
