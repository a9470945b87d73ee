//! Event-loop glue of the network device.
//!
//! The backend fd (the tap) is watched edge-triggered while the device is
//! active. Edge triggering is what lets frames wait in the tap without a
//! busy loop: when the driver has posted no receive buffers the device
//! leaves the tap readable and is not woken again until another frame
//! arrives (one cheap look, no read) or the driver notifies the receiveq
//! with new buffers, which resumes reading. Level triggering would wake the
//! loop for as long as the tap stays readable, or need an `epoll_ctl` on
//! every stall and resume. The price is the rule that every pass reads
//! until the tap is empty, the buffers run out, the pass reschedules
//! itself through the receiveq's event, or the receive rate limiter
//! refuses a frame and its refill timer is armed to resume reading — which
//! `process_rxq` and `Net::process_rx` keep.
//!
//! Each direction's rate limiter has a refill timer, watched while the
//! device is active; its expiry serves that direction again.

use std::os::fd::AsRawFd;

use event_manager::{EventOps, Events, MutEventSubscriber};
use vmm_sys_util::epoll::EventSet;

use super::{Net, NetBackend, RX_QUEUE, TX_QUEUE};
use crate::virtio::state::{handle_event, QueueHandler, BACKEND_EVENT};

/// Event data of the receive rate limiter's refill timer.
const RX_LIMITER_EVENT: u32 = BACKEND_EVENT - 1;
/// Event data of the transmit rate limiter's refill timer.
const TX_LIMITER_EVENT: u32 = BACKEND_EVENT - 2;

impl<B: NetBackend + AsRawFd> QueueHandler for Net<B> {
    fn process_queue(&mut self, index: usize, _ops: &mut EventOps) {
        match index {
            // The driver posted receive buffers (or a pass rescheduled
            // itself).
            RX_QUEUE => self.process_rx(),
            TX_QUEUE => self.process_tx(),
            other => log::warn!("{}: no queue {other}", self.common.name()),
        }
    }

    fn activated(&mut self, ops: &mut EventOps) {
        let tap = self.backend.as_raw_fd();
        let events = EventSet::IN | EventSet::EDGE_TRIGGERED;
        if let Err(e) = self.common.watch(ops, tap, BACKEND_EVENT, events) {
            log::error!("{}: cannot watch the tap: {e}", self.common.name());
        }
        for (timer, data) in [
            (self.rx_timer.as_raw_fd(), RX_LIMITER_EVENT),
            (self.tx_timer.as_raw_fd(), TX_LIMITER_EVENT),
        ] {
            if let Err(e) = self.common.watch(ops, timer, data, EventSet::IN) {
                log::error!(
                    "{}: cannot watch a rate limiter's timer: {e}",
                    self.common.name()
                );
            }
        }
        // Frames queued before activation was noticed.
        self.process_tx();
        self.process_rx();
    }

    fn process_event(&mut self, data: u32, _events: EventSet, _ops: &mut EventOps) {
        match data {
            // The tap has frames.
            BACKEND_EVENT => self.process_rx(),
            RX_LIMITER_EVENT => {
                self.rx_timer.expired(&mut self.rx.limiter);
                self.process_rx();
            }
            TX_LIMITER_EVENT => {
                self.tx_timer.expired(&mut self.tx.limiter);
                self.process_tx();
            }
            other => log::warn!("{}: unexpected event {other}", self.common.name()),
        }
    }
}

impl<B: NetBackend + AsRawFd> MutEventSubscriber for Net<B> {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        handle_event(self, events, ops);
    }

    fn init(&mut self, ops: &mut EventOps) {
        self.common.init(ops);
    }
}

#[cfg(test)]
mod tests {
    use event_manager::{EventManager, SubscriberOps};
    use vm_memory::{Bytes, GuestAddress};
    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

    use super::*;
    use crate::virtio::net::test_utils::{
        frame, test_irq, test_mem, FakeBackend, TestQueue, WRITE,
    };
    use crate::virtio::{Activation, VirtioDevice, INT_VRING, VIRTIO_F_VERSION_1};

    type Manager = EventManager<Net<FakeBackend>>;

    /// Dispatches every ready event without waiting; returns how many.
    fn turn(manager: &mut Manager) -> usize {
        let mut total = 0;
        loop {
            let n = manager.run_with_timeout(0).unwrap();
            if n == 0 {
                return total;
            }
            total += n;
            assert!(total < 100, "the event loop keeps waking up");
        }
    }

    #[test]
    fn frames_flow_both_ways_and_wait_in_the_backend_for_buffers() {
        let mem = test_mem();
        let mut rxq = TestQueue::new(&mem, 0, 16);
        let mut txq = TestQueue::new(&mem, 0x4000, 16);
        let evts = [
            EventFd::new(EFD_NONBLOCK).unwrap(),
            EventFd::new(EFD_NONBLOCK).unwrap(),
        ];
        let irq = test_irq();
        let mut manager = Manager::new().unwrap();
        let net = Net::new("eth0".into(), FakeBackend::new(), [2, 0, 0, 0, 0, 1]).unwrap();
        let id = manager.add_subscriber(net);

        // A frame waits in the tap before the driver has posted anything.
        let early = frame(100, 1);
        {
            let net = manager.subscriber_mut(id).unwrap();
            net.backend.arrive(early.clone());
            net.set_acked_features(1 << VIRTIO_F_VERSION_1);
            net.activate(Activation {
                mem: mem.clone(),
                queues: vec![rxq.create_queue(), txq.create_queue()],
                queue_evts: evts.iter().map(|e| e.try_clone().unwrap()).collect(),
                irq: irq.clone(),
            })
            .unwrap();
        }
        // Activation, then the tap's readiness: nothing is read, and the
        // loop goes quiet.
        assert!(turn(&mut manager) >= 1);
        assert_eq!(manager.run_with_timeout(0).unwrap(), 0);
        assert_eq!(
            manager.subscriber_mut(id).unwrap().backend.incoming.len(),
            1
        );
        assert_eq!(rxq.used_idx(), 0);
        assert_eq!(irq.status(), 0);
        // More frames arriving wake the device, which still leaves them.
        manager
            .subscriber_mut(id)
            .unwrap()
            .backend
            .arrive(frame(60, 2));
        turn(&mut manager);
        assert_eq!(
            manager.subscriber_mut(id).unwrap().backend.incoming.len(),
            2
        );

        // The driver posts two buffers and notifies: both frames arrive.
        rxq.add_chains(&[(0x1_0000, 2048, WRITE), (0x2_0000, 2048, WRITE)]);
        evts[0].write(1).unwrap();
        turn(&mut manager);
        assert_eq!(rxq.used_idx(), 2);
        assert_eq!(rxq.used(0), (0, early.len() as u32));
        assert_eq!(irq.status(), INT_VRING);
        let mut got = vec![0u8; early.len()];
        mem.read_slice(&mut got, GuestAddress(0x1_0000)).unwrap();
        assert_eq!(got[12..], early[12..]);

        // With a buffer posted, the tap's readiness alone delivers.
        rxq.add_chains(&[(0x3_0000, 2048, WRITE)]);
        manager
            .subscriber_mut(id)
            .unwrap()
            .backend
            .arrive(frame(70, 3));
        turn(&mut manager);
        assert_eq!(rxq.used_idx(), 3);

        // Transmission on the driver's notification.
        let out = frame(1514, 4);
        mem.write_slice(&out, GuestAddress(0x5_0000)).unwrap();
        txq.add_chain(&[(0x5_0000, out.len() as u32, 0)]);
        evts[1].write(1).unwrap();
        turn(&mut manager);
        assert_eq!(txq.used_idx(), 1);
        assert_eq!(
            manager.subscriber_mut(id).unwrap().backend.written,
            vec![out]
        );
        let counters = manager.subscriber_mut(id).unwrap().counters();
        assert_eq!((counters.rx.frames, counters.tx.frames), (3, 1));

        // After a reset the device watches nothing but its state.
        manager.subscriber_mut(id).unwrap().reset();
        turn(&mut manager);
        rxq.add_chains(&[(0x4_0000, 2048, WRITE)]);
        evts[0].write(1).unwrap();
        manager
            .subscriber_mut(id)
            .unwrap()
            .backend
            .arrive(frame(80, 5));
        assert_eq!(turn(&mut manager), 0);
        assert_eq!(rxq.used_idx(), 3);
    }

    #[test]
    fn a_throttled_receive_side_leaves_frames_in_the_tap_and_its_timer_resumes_reading() {
        use crate::rate_limiter::{BucketConfig, BucketUpdate, ManualClock, RateLimiter};
        let mem = test_mem();
        let mut rxq = TestQueue::new(&mem, 0, 16);
        let mut txq = TestQueue::new(&mem, 0x4000, 16);
        let evts = [
            EventFd::new(EFD_NONBLOCK).unwrap(),
            EventFd::new(EFD_NONBLOCK).unwrap(),
        ];
        let mut manager = Manager::new().unwrap();
        let clock = ManualClock::new();
        let mut net = Net::new("eth0".into(), FakeBackend::new(), [2, 0, 0, 0, 0, 1]).unwrap();
        // One frame per 20 ms each way.
        let one_per_20ms = || {
            RateLimiter::new(
                None,
                Some(BucketConfig::new(1, 0, 20).unwrap()),
                Box::new(clock.clone()),
            )
        };
        net.set_rx_rate_limiter(one_per_20ms());
        net.set_tx_rate_limiter(one_per_20ms());
        let id = manager.add_subscriber(net);
        rxq.add_chains(&[(0x1_0000, 2048, WRITE); 3]);
        let frames: Vec<Vec<u8>> = (0..3).map(|i| frame(100, i)).collect();
        {
            let net = manager.subscriber_mut(id).unwrap();
            // All three frames arrive at once: one edge for all of them.
            net.backend.incoming.extend(frames.iter().cloned());
            net.backend.evt.write(1).unwrap();
            net.set_acked_features(1 << VIRTIO_F_VERSION_1);
            net.activate(Activation {
                mem: mem.clone(),
                queues: vec![rxq.create_queue(), txq.create_queue()],
                queue_evts: evts.iter().map(|e| e.try_clone().unwrap()).collect(),
                irq: test_irq(),
            })
            .unwrap();
        }
        turn(&mut manager);
        assert_eq!(rxq.used_idx(), 1);
        // One frame held by the device, one in the tap; the loop is quiet.
        assert_eq!(
            manager.subscriber_mut(id).unwrap().backend.incoming.len(),
            1
        );
        assert_eq!(manager.run_with_timeout(0).unwrap(), 0);
        // The timer alone brings the rest in, one per refill.
        for delivered in [2, 3] {
            clock.advance(std::time::Duration::from_millis(20));
            assert_eq!(manager.run_with_timeout(10_000).unwrap(), 1);
            assert_eq!(rxq.used_idx(), delivered);
        }
        assert!(manager
            .subscriber_mut(id)
            .unwrap()
            .backend
            .incoming
            .is_empty());
        // In order, none lost.
        for (i, f) in frames.iter().enumerate() {
            assert_eq!(rxq.used(i as u16), (i as u32, f.len() as u32));
        }

        // Transmission: two frames, the second throttled; an update that
        // lifts the limit sends it without waiting for the timer.
        let out = frame(60, 9);
        mem.write_slice(&out, GuestAddress(0x5_0000)).unwrap();
        txq.add_chains(&[(0x5_0000, out.len() as u32, 0); 2]);
        evts[1].write(1).unwrap();
        turn(&mut manager);
        assert_eq!(txq.used_idx(), 1);
        manager
            .subscriber_mut(id)
            .unwrap()
            .update_tx_rate_limiter(BucketUpdate::Keep, BucketUpdate::Disable);
        turn(&mut manager);
        assert_eq!(txq.used_idx(), 2);
        let net = manager.subscriber_mut(id).unwrap();
        assert_eq!(net.backend.written, vec![out.clone(), out]);
        assert_eq!(net.tx_rate_limiter().counters().delayed_requests, 1);
        assert_eq!(net.rx_rate_limiter().counters().delayed_requests, 2);
    }
}
