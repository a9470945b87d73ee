//! Event-loop glue of the balloon: its queues, and the statistics timer.

use std::os::fd::AsRawFd;

use event_manager::{EventOps, Events, MutEventSubscriber};
use vmm_sys_util::epoll::EventSet;

use super::Balloon;
use crate::virtio::state::{handle_event, QueueHandler, BACKEND_EVENT};

/// Event data of the statistics timer.
const STATS_TIMER_EVENT: u32 = BACKEND_EVENT;

impl QueueHandler for Balloon {
    fn process_queue(&mut self, index: usize, _ops: &mut EventOps) {
        self.process(index);
    }

    fn activated(&mut self, ops: &mut EventOps) {
        self.learn_memory();
        if self.roles.stats.is_some() {
            let timer = self.timer.as_raw_fd();
            if let Err(e) = self
                .common
                .watch(ops, timer, STATS_TIMER_EVENT, EventSet::IN)
            {
                log::error!("virtio-balloon: cannot watch the statistics timer: {e}");
            }
            if let Err(e) = self.arm_timer() {
                log::error!("virtio-balloon: {e}");
            }
        }
        // Buffers posted before activation was noticed.
        for index in 0..self.common.queue_max_sizes().len() {
            self.process(index);
        }
    }

    fn process_event(&mut self, data: u32, _events: EventSet, _ops: &mut EventOps) {
        match data {
            STATS_TIMER_EVENT => self.stats_timer_expired(),
            other => log::warn!("virtio-balloon: unexpected event {other}"),
        }
    }
}

impl MutEventSubscriber for Balloon {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        handle_event(self, events, ops);
    }

    fn init(&mut self, ops: &mut EventOps) {
        self.common.init(ops);
    }
}
