//! Event-loop glue of the entropy device: its one queue is all it serves.

use event_manager::{EventOps, Events, MutEventSubscriber};

use super::Rng;
use crate::virtio::state::{handle_event, QueueHandler};

impl QueueHandler for Rng {
    fn process_queue(&mut self, _index: usize, _ops: &mut EventOps) {
        self.process();
    }
}

impl MutEventSubscriber for Rng {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        handle_event(self, events, ops);
    }

    fn init(&mut self, ops: &mut EventOps) {
        self.common.init(ops);
    }
}
