//! Event-loop glue of the block device.

use event_manager::{EventOps, Events, MutEventSubscriber};

use super::Block;
use crate::virtio::state::STATE_EVENT;

impl MutEventSubscriber for Block {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        match events.data() {
            STATE_EVENT => {
                if self.state.sync(ops, None) {
                    // Requests posted before activation was noticed.
                    self.process();
                }
            }
            0 => {
                if let Some(a) = self.state.active() {
                    let _ = a.queue_evts[0].read();
                }
                self.process();
            }
            other => log::warn!("virtio-blk \"{}\": unexpected event {other}", self.id()),
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        self.state.init(ops);
    }
}
