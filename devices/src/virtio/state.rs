//! The part every virtio device shares: holding its activation, and
//! keeping its event-loop registrations in step with it.
//!
//! `activate` and `reset` run on a vCPU thread; they only change the state
//! and write `state_evt`. The device's event handler, on the VMM thread,
//! then calls [`DeviceState::sync`], which adds or removes the queue events
//! (and any device-specific fds, such as a tap) from the event loop.

use std::os::fd::RawFd;

use event_manager::{EventOps, Events};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::{ActivateError, Activation};

/// Event data of the state-change event; queue events carry their index.
pub const STATE_EVENT: u32 = u32::MAX;
/// Event data of a device's own fd (a tap, a backing file).
pub const BACKEND_EVENT: u32 = u32::MAX - 1;

/// Activation state and event-loop registration of a virtio device.
pub struct DeviceState {
    active: Option<Activation>,
    state_evt: EventFd,
    /// Queue events currently in the event loop, as duplicates owned here:
    /// an activation dropped by a reset closes its own descriptors, and
    /// epoll can only forget a registration through a descriptor that is
    /// still open.
    registered_queues: Vec<EventFd>,
    /// The backend fd currently in the event loop (owned by the device).
    registered_backend: Option<RawFd>,
}

impl DeviceState {
    /// An inactive device.
    pub fn new() -> std::io::Result<Self> {
        Ok(DeviceState {
            active: None,
            state_evt: EventFd::new(EFD_NONBLOCK)?,
            registered_queues: Vec::new(),
            registered_backend: None,
        })
    }

    /// The activation, when the device is active.
    pub fn active(&mut self) -> Option<&mut Activation> {
        self.active.as_mut()
    }

    /// Whether the device is active.
    pub fn is_active(&self) -> bool {
        self.active.is_some()
    }

    /// Stores `activation` after checking it has `queues` ready queues,
    /// and signals the event handler.
    pub fn activate(&mut self, activation: Activation, queues: usize) -> Result<(), ActivateError> {
        let ready = activation
            .queues
            .iter()
            .filter(|q| virtio_queue::QueueT::ready(*q))
            .count();
        if ready < queues || activation.queue_evts.len() < queues {
            return Err(ActivateError::Queues {
                need: queues,
                got: ready,
            });
        }
        self.active = Some(activation);
        self.state_evt.write(1).map_err(ActivateError::Signal)
    }

    /// Drops the activation and signals the event handler.
    pub fn reset(&mut self) {
        self.active = None;
        // The write fails only when the counter is full (EAGAIN): the event
        // is readable then, so the handler syncs anyway.
        if let Err(e) = self.state_evt.write(1) {
            log::warn!("virtio: cannot signal a device reset: {e}");
        }
    }

    /// Registers the state-change event (from `init`).
    pub fn init(&self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::with_data(
            &self.state_evt,
            STATE_EVENT,
            EventSet::IN,
        )) {
            log::error!("virtio: cannot watch a device's state: {e:?}");
        }
    }

    /// Handles the state-change event: consumes it and brings the event
    /// loop's view in line with the activation. `backend` is an extra fd
    /// watched while active. Returns whether the device just became active.
    pub fn sync(&mut self, ops: &mut EventOps, backend: Option<(RawFd, EventSet)>) -> bool {
        let _ = self.state_evt.read();
        let was_active = !self.registered_queues.is_empty();
        for evt in self.registered_queues.drain(..) {
            if let Err(e) = ops.remove(Events::empty(&evt)) {
                log::warn!("virtio: cannot stop watching a queue event: {e:?}");
            }
        }
        if let Some(fd) = self.registered_backend.take() {
            if let Err(e) = ops.remove(Events::empty_raw(fd)) {
                log::warn!("virtio: cannot stop watching a device backend: {e:?}");
            }
        }
        let Some(a) = &self.active else {
            return false;
        };
        for (i, evt) in a.queue_evts.iter().enumerate() {
            let own = match evt.try_clone() {
                Ok(own) => own,
                Err(e) => {
                    log::error!("virtio: cannot duplicate a queue event: {e}");
                    continue;
                }
            };
            match ops.add(Events::with_data(&own, i as u32, EventSet::IN)) {
                Ok(()) => self.registered_queues.push(own),
                Err(e) => log::error!("virtio: cannot watch a queue event: {e:?}"),
            }
        }
        if let Some((fd, set)) = backend {
            match ops.add(Events::with_data_raw(fd, BACKEND_EVENT, set)) {
                Ok(()) => self.registered_backend = Some(fd),
                Err(e) => log::error!("virtio: cannot watch a device backend: {e:?}"),
            }
        }
        !was_active && !self.registered_queues.is_empty()
    }
}

/// A device with one queue, all of whose work is serving that queue.
pub trait SingleQueueDevice {
    /// Its activation state.
    fn state(&mut self) -> &mut DeviceState;
    /// Serves the queue.
    fn process_queue(&mut self);
    /// Its name, for logs.
    fn name(&self) -> String;
}

/// The event handling of a [`SingleQueueDevice`]: state changes bring the
/// event loop in line (and serve requests posted before activation was
/// noticed); queue events are consumed and served.
pub fn single_queue_event<D: SingleQueueDevice>(dev: &mut D, events: Events, ops: &mut EventOps) {
    match events.data() {
        STATE_EVENT => {
            if dev.state().sync(ops, None) {
                dev.process_queue();
            }
        }
        0 => {
            if let Some(a) = dev.state().active() {
                let _ = a.queue_evts[0].read();
            }
            dev.process_queue();
        }
        other => log::warn!("{}: unexpected event {other}", dev.name()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::IrqLine;
    use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
    use std::sync::{Arc, Mutex};
    use virtio_queue::{Queue, QueueT};
    use vm_memory::{GuestAddress, GuestMemoryMmap};

    /// A device that only counts the queue events it is handed.
    struct Counter {
        state: DeviceState,
        queue_events: usize,
    }

    impl MutEventSubscriber for Counter {
        fn process(&mut self, events: Events, ops: &mut EventOps) {
            match events.data() {
                STATE_EVENT => {
                    self.state.sync(ops, None);
                }
                _ => {
                    self.queue_events += 1;
                    if let Some(a) = self.state.active() {
                        let _ = a.queue_evts[0].read();
                    }
                }
            }
        }

        fn init(&mut self, ops: &mut EventOps) {
            self.state.init(ops);
        }
    }

    fn activation(evt: &EventFd) -> Activation {
        let mut q = Queue::new(16).unwrap();
        q.set_ready(true);
        Activation {
            mem: GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap(),
            queues: vec![q],
            queue_evts: vec![evt.try_clone().unwrap()],
            irq: IrqLine::new(EventFd::new(EFD_NONBLOCK).unwrap()),
        }
    }

    #[test]
    fn queue_events_are_watched_only_while_active() {
        // The transport's own queue event; the device gets duplicates.
        let queue_evt = EventFd::new(EFD_NONBLOCK).unwrap();
        let dev = Arc::new(Mutex::new(Counter {
            state: DeviceState::new().unwrap(),
            queue_events: 0,
        }));
        let mut em: EventManager<Arc<Mutex<dyn MutEventSubscriber + Send>>> =
            EventManager::new().unwrap();
        em.add_subscriber(dev.clone());

        dev.lock()
            .unwrap()
            .state
            .activate(activation(&queue_evt), 1)
            .unwrap();
        em.run_with_timeout(0).unwrap();
        queue_evt.write(1).unwrap();
        em.run_with_timeout(0).unwrap();
        assert_eq!(dev.lock().unwrap().queue_events, 1);

        // After a reset, a notification (the driver poking a dead queue)
        // is not dispatched, once or repeatedly.
        dev.lock().unwrap().state.reset();
        em.run_with_timeout(0).unwrap();
        queue_evt.write(1).unwrap();
        for _ in 0..3 {
            em.run_with_timeout(0).unwrap();
        }
        assert_eq!(dev.lock().unwrap().queue_events, 1);

        // Activated again, it is watched again.
        let _ = queue_evt.read();
        dev.lock()
            .unwrap()
            .state
            .activate(activation(&queue_evt), 1)
            .unwrap();
        em.run_with_timeout(0).unwrap();
        queue_evt.write(1).unwrap();
        em.run_with_timeout(0).unwrap();
        assert_eq!(dev.lock().unwrap().queue_events, 2);
    }

    #[test]
    fn a_reset_whose_signal_finds_the_counter_full_still_stops_the_watching() {
        let queue_evt = EventFd::new(EFD_NONBLOCK).unwrap();
        let dev = Arc::new(Mutex::new(Counter {
            state: DeviceState::new().unwrap(),
            queue_events: 0,
        }));
        let mut em: EventManager<Arc<Mutex<dyn MutEventSubscriber + Send>>> =
            EventManager::new().unwrap();
        em.add_subscriber(dev.clone());
        dev.lock()
            .unwrap()
            .state
            .activate(activation(&queue_evt), 1)
            .unwrap();
        em.run_with_timeout(0).unwrap();
        {
            let mut d = dev.lock().unwrap();
            // The largest count an eventfd holds: the reset's write fails.
            d.state.state_evt.write(u64::MAX - 1).unwrap();
            assert!(d.state.state_evt.write(1).is_err());
            d.state.reset();
        }
        em.run_with_timeout(0).unwrap();
        queue_evt.write(1).unwrap();
        assert_eq!(em.run_with_timeout(0).unwrap(), 0);
        assert_eq!(dev.lock().unwrap().queue_events, 0);
    }

    #[test]
    fn activation_needs_ready_queues() {
        let evt = EventFd::new(EFD_NONBLOCK).unwrap();
        let mut a = activation(&evt);
        a.queues[0].set_ready(false);
        let mut s = DeviceState::new().unwrap();
        assert!(matches!(
            s.activate(a, 1),
            Err(ActivateError::Queues { need: 1, got: 0 })
        ));
        assert!(!s.is_active());
    }
}
