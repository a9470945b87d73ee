//! Event-loop glue of the block device: its one queue, and the timer that
//! brings the queue back after the rate limiter refused a request.

use std::os::fd::AsRawFd;

use event_manager::{EventOps, Events, MutEventSubscriber};
use vmm_sys_util::epoll::EventSet;

use super::Block;
use crate::virtio::state::{handle_event, QueueHandler, BACKEND_EVENT};

/// Event data of the rate limiter's refill timer.
pub(super) const LIMITER_EVENT: u32 = BACKEND_EVENT - 1;

impl QueueHandler for Block {
    fn process_queue(&mut self, _index: usize, _ops: &mut EventOps) {
        self.process();
    }

    fn activated(&mut self, ops: &mut EventOps) {
        let timer = self.timer.as_raw_fd();
        if let Err(e) = self.common.watch(ops, timer, LIMITER_EVENT, EventSet::IN) {
            log::error!(
                "{}: cannot watch the rate limiter's timer: {e}",
                self.common.name()
            );
        }
        // Requests posted before activation was noticed.
        self.process();
    }

    fn process_event(&mut self, data: u32, _events: EventSet, _ops: &mut EventOps) {
        match data {
            LIMITER_EVENT => self.refill_timer_expired(),
            other => log::warn!("{}: unexpected event {other}", self.common.name()),
        }
    }
}

impl MutEventSubscriber for Block {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        handle_event(self, events, ops);
    }

    fn init(&mut self, ops: &mut EventOps) {
        self.common.init(ops);
    }
}
