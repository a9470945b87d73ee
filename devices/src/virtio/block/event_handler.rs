//! Event-loop glue of the block device.

use event_manager::{EventOps, Events, MutEventSubscriber};

use super::Block;
use crate::virtio::state::{single_queue_event, DeviceState, SingleQueueDevice};

impl SingleQueueDevice for Block {
    fn state(&mut self) -> &mut DeviceState {
        &mut self.state
    }

    fn process_queue(&mut self) {
        self.process();
    }

    fn name(&self) -> String {
        format!("virtio-blk {:?}", self.id())
    }
}

impl MutEventSubscriber for Block {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        single_queue_event(self, events, ops);
    }

    fn init(&mut self, ops: &mut EventOps) {
        self.state.init(ops);
    }
}
