//! Event-loop glue of the entropy device: its one queue, and the timer
//! that brings the queue back after the rate limiter refused a request.

use std::os::fd::AsRawFd;

use event_manager::{EventOps, Events, MutEventSubscriber};
use vmm_sys_util::epoll::EventSet;

use super::Rng;
use crate::virtio::state::{handle_event, QueueHandler, BACKEND_EVENT};

/// Event data of the rate limiter's refill timer.
const LIMITER_EVENT: u32 = BACKEND_EVENT - 1;

impl QueueHandler for Rng {
    fn process_queue(&mut self, _index: usize, _ops: &mut EventOps) {
        self.process();
    }

    fn activated(&mut self, ops: &mut EventOps) {
        let timer = self.timer.as_raw_fd();
        if let Err(e) = self.common.watch(ops, timer, LIMITER_EVENT, EventSet::IN) {
            log::error!("virtio-rng: cannot watch the rate limiter's timer: {e}");
        }
        // Requests posted before activation was noticed.
        self.process();
    }

    fn process_event(&mut self, data: u32, _events: EventSet, _ops: &mut EventOps) {
        match data {
            LIMITER_EVENT => self.refill_timer_expired(),
            other => log::warn!("virtio-rng: unexpected event {other}"),
        }
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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use event_manager::{EventManager, SubscriberOps};
    use virtio_queue::desc::{split::Descriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{GuestAddress, GuestMemoryMmap};
    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

    use super::*;
    use crate::rate_limiter::{BucketConfig, BucketUpdate, ManualClock, RateLimiter};
    use crate::virtio::{Activation, IrqLine, VirtioDevice};

    const WRITE: u16 = 2;

    #[test]
    fn a_bandwidth_limited_rng_serves_requests_in_order_as_tokens_come() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let vq = MockSplitQueue::new(&mem, 16);
        // Four requests of 64 bytes; 128 bytes per 10 ms.
        let descs: Vec<RawDescriptor> = (0..4)
            .map(|i| RawDescriptor::from(Descriptor::new(0x8000 + 0x100 * i, 64, WRITE, 0)))
            .collect();
        vq.add_desc_chains(&descs, 0).unwrap();
        let clock = ManualClock::new();
        let mut rng = Rng::with_source(Box::new(|b: &mut [u8]| {
            b.fill(0xaa);
            Ok(())
        }))
        .unwrap();
        rng.set_rate_limiter(RateLimiter::new(
            Some(BucketConfig::new(128, 0, 10).unwrap()),
            None,
            Box::new(clock.clone()),
        ));
        let rng = Arc::new(Mutex::new(rng));
        let mut events = EventManager::<Arc<Mutex<Rng>>>::new().unwrap();
        events.add_subscriber(rng.clone());
        rng.lock()
            .unwrap()
            .activate(Activation {
                mem: mem.clone(),
                queues: vec![vq.create_queue().unwrap()],
                queue_evts: vec![EventFd::new(EFD_NONBLOCK).unwrap()],
                irq: IrqLine::new(EventFd::new(EFD_NONBLOCK).unwrap()),
            })
            .unwrap();
        assert_eq!(events.run_with_timeout(0).unwrap(), 1);
        assert_eq!(vq.used().idx().load(), 2);
        assert_eq!(events.run_with_timeout(0).unwrap(), 0, "no busy loop");
        clock.advance(Duration::from_millis(10));
        assert_eq!(events.run_with_timeout(10_000).unwrap(), 1);
        assert_eq!(vq.used().idx().load(), 4);
        let heads: Vec<u32> = (0..4)
            .map(|i| vq.used().ring().ref_at(i).unwrap().load().id())
            .collect();
        assert_eq!(heads, [0, 1, 2, 3]);
        let c = rng.lock().unwrap().rate_limiter().counters();
        assert_eq!(
            (c.throttled, c.delayed_requests, c.delayed_bytes),
            (1, 1, 64)
        );

        // An update to no limit at all serves new requests at once.
        rng.lock()
            .unwrap()
            .update_rate_limiter(BucketUpdate::Disable, BucketUpdate::Keep);
        assert!(!rng.lock().unwrap().rate_limiter().is_limited());
    }
}
