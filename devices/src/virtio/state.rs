//! The part every virtio device shares with the event loop: holding its
//! activation, keeping its event-loop registrations in step with it, and
//! dispatching its events ([`handle_event`]).
//!
//! `activate` and `reset` run on a vCPU thread; they only change the state
//! and write `state_evt`. The device's event handler, on the VMM thread,
//! then calls [`DeviceState::sync`], which adds or removes the queue events
//! from the event loop, and drops the device's own fds (a tap, a
//! connection) that it watched: a device watches those again once it is
//! activated ([`QueueHandler::activated`]).

use std::os::fd::RawFd;

use event_manager::{EventOps, Events};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::{ActivateError, Activation, VirtioDevice};

/// Event data of the state-change event; queue events carry their index.
/// A device's own fds carry any other value.
pub const STATE_EVENT: u32 = u32::MAX;
/// Event data a device with one fd of its own (a tap) gives it.
pub const BACKEND_EVENT: u32 = u32::MAX - 1;

/// A device's own fd could not be watched, or unwatched.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The data is a queue index or [`STATE_EVENT`], which the shared
    /// handler dispatches itself.
    #[error("event data {0} is reserved for the queues and the state event")]
    ReservedData(u32),
    /// Only an active device watches fds of its own.
    #[error("the device is not active")]
    Inactive,
    /// The fd is not watched by the device.
    #[error("fd {0} is not watched")]
    NotWatched(RawFd),
    /// The event loop refused the change.
    #[error("cannot change the event loop: {0}")]
    EventLoop(#[source] event_manager::Error),
}

/// Activation state and event-loop registration of a virtio device.
pub struct DeviceState {
    active: Option<Activation>,
    state_evt: EventFd,
    /// Queue events currently in the event loop, as duplicates owned here:
    /// an activation dropped by a reset closes its own descriptors, and
    /// epoll can only forget a registration through a descriptor that is
    /// still open.
    registered_queues: Vec<EventFd>,
    /// The device's own fds currently in the event loop (owned by the
    /// device, which keeps them open while they are watched).
    watched: Vec<RawFd>,
}

impl DeviceState {
    /// An inactive device.
    pub fn new() -> std::io::Result<Self> {
        Ok(DeviceState {
            active: None,
            state_evt: EventFd::new(EFD_NONBLOCK)?,
            registered_queues: Vec::new(),
            watched: Vec::new(),
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
    /// loop's view in line with the activation. Every registration from
    /// before goes, the device's own fds included; the queue events of the
    /// activation, if there is one, are watched. Returns whether the
    /// device is active: it was just activated (or reset and activated
    /// again, both before the event loop looked).
    pub fn sync(&mut self, ops: &mut EventOps) -> bool {
        let _ = self.state_evt.read();
        for evt in self.registered_queues.drain(..) {
            if let Err(e) = ops.remove(Events::empty(&evt)) {
                log::warn!("virtio: cannot stop watching a queue event: {e:?}");
            }
        }
        for fd in self.watched.drain(..) {
            if let Err(e) = ops.remove(Events::empty_raw(fd)) {
                log::warn!("virtio: cannot stop watching a device's fd: {e:?}");
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
        true
    }

    /// Consumes the notification of queue `index`, through the event loop's
    /// own duplicate: also when a reset dropped the activation before the
    /// event loop caught up, so that the notification cannot wake it again.
    pub fn consume_queue_event(&self, index: usize) {
        if let Some(evt) = self.registered_queues.get(index) {
            let _ = evt.read();
        }
    }

    /// Watches `fd` with `data` in the event loop until
    /// [`DeviceState::unwatch`] or the next [`DeviceState::sync`]. The
    /// device has `queues` queues, whose indices, like [`STATE_EVENT`],
    /// `data` must not be.
    pub fn watch(
        &mut self,
        ops: &mut EventOps,
        queues: usize,
        fd: RawFd,
        data: u32,
        events: EventSet,
    ) -> Result<(), WatchError> {
        if data == STATE_EVENT || (data as usize) < queues {
            return Err(WatchError::ReservedData(data));
        }
        if self.active.is_none() {
            return Err(WatchError::Inactive);
        }
        ops.add(Events::with_data_raw(fd, data, events))
            .map_err(WatchError::EventLoop)?;
        self.watched.push(fd);
        Ok(())
    }

    /// Stops watching `fd`.
    pub fn unwatch(&mut self, ops: &mut EventOps, fd: RawFd) -> Result<(), WatchError> {
        let at = self
            .watched
            .iter()
            .position(|&w| w == fd)
            .ok_or(WatchError::NotWatched(fd))?;
        self.watched.swap_remove(at);
        ops.remove(Events::empty_raw(fd))
            .map_err(WatchError::EventLoop)
    }
}

/// The event-loop side of a virtio device, which [`handle_event`] drives:
/// what to do with its queues' notifications, on activation, and with its
/// own fds.
pub trait QueueHandler: VirtioDevice {
    /// Serves queue `index`: on its notification (already consumed), and
    /// on activation. `ops` lets the device watch or unwatch fds of its own
    /// ([`super::VirtioCommon::watch`]).
    fn process_queue(&mut self, index: usize, ops: &mut EventOps);

    /// The device was just activated and its queues are watched: watch its
    /// own fds, and serve what the driver posted before the event loop
    /// noticed. By default, serves every queue in order.
    fn activated(&mut self, ops: &mut EventOps) {
        for index in 0..self.queue_max_sizes().len() {
            self.process_queue(index, ops);
        }
    }

    /// One of the device's own fds, watched with `data`, has `events`.
    fn process_event(&mut self, data: u32, _events: EventSet, _ops: &mut EventOps) {
        log::warn!("{}: unexpected event {data}", self.common().name());
    }
}

/// Dispatches one event of a virtio device: state changes bring the event
/// loop in line (and, on activation, let the device start); queue
/// notifications are consumed and the queue served; the rest goes to the
/// device.
pub fn handle_event<D: QueueHandler + ?Sized>(dev: &mut D, events: Events, ops: &mut EventOps) {
    let data = events.data();
    if data == STATE_EVENT {
        if dev.common_mut().sync(ops) {
            dev.activated(ops);
        }
        return;
    }
    let index = data as usize;
    if index < dev.queue_max_sizes().len() {
        dev.common().consume_queue_event(index);
        dev.process_queue(index, ops);
        return;
    }
    dev.process_event(data, events.event_set(), ops);
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
                    self.state.sync(ops);
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

    type Loop = EventManager<Arc<Mutex<dyn MutEventSubscriber + Send>>>;

    /// An inactive [`Counter`] in an event loop of its own.
    fn counter_in_a_loop() -> (Arc<Mutex<Counter>>, Loop) {
        let dev = Arc::new(Mutex::new(Counter {
            state: DeviceState::new().unwrap(),
            queue_events: 0,
        }));
        let mut em = Loop::new().unwrap();
        em.add_subscriber(dev.clone());
        (dev, em)
    }

    /// Activates `dev` on `queue_evt` and lets the loop notice.
    fn activate_and_sync(dev: &Mutex<Counter>, em: &mut Loop, queue_evt: &EventFd) {
        let a = activation(queue_evt);
        dev.lock().unwrap().state.activate(a, 1).unwrap();
        em.run_with_timeout(0).unwrap();
    }

    #[test]
    fn queue_events_are_watched_only_while_active() {
        // The transport's own queue event; the device gets duplicates.
        let queue_evt = EventFd::new(EFD_NONBLOCK).unwrap();
        let (dev, mut em) = counter_in_a_loop();

        activate_and_sync(&dev, &mut em, &queue_evt);
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
        activate_and_sync(&dev, &mut em, &queue_evt);
        queue_evt.write(1).unwrap();
        em.run_with_timeout(0).unwrap();
        assert_eq!(dev.lock().unwrap().queue_events, 2);
    }

    #[test]
    fn a_reset_whose_signal_finds_the_counter_full_still_stops_the_watching() {
        let queue_evt = EventFd::new(EFD_NONBLOCK).unwrap();
        let (dev, mut em) = counter_in_a_loop();
        activate_and_sync(&dev, &mut em, &queue_evt);
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
        // A ready queue without its notification event is no better.
        let mut a = activation(&evt);
        a.queue_evts.clear();
        assert!(matches!(
            s.activate(a, 1),
            Err(ActivateError::Queues { need: 1, got: 1 })
        ));
        assert!(!s.is_active());
    }

    /// A two-queue device with an fd of its own, which it watches while
    /// serving queue 1 (as a device watches a connection it opened) and
    /// stops watching on its second event.
    struct Probe {
        common: crate::virtio::VirtioCommon,
        own: EventFd,
        watching: bool,
        served: Vec<usize>,
        events: Vec<u32>,
        /// What `watch` said to reserved data and while inactive.
        refusals: Vec<String>,
        unwatch_again: Option<String>,
    }

    impl crate::virtio::VirtioDevice for Probe {
        fn common(&self) -> &crate::virtio::VirtioCommon {
            &self.common
        }
        fn common_mut(&mut self) -> &mut crate::virtio::VirtioCommon {
            &mut self.common
        }
    }

    impl QueueHandler for Probe {
        fn process_queue(&mut self, index: usize, ops: &mut EventOps) {
            self.served.push(index);
            if index == 1 && !self.watching {
                let fd = std::os::fd::AsRawFd::as_raw_fd(&self.own);
                for data in [0, 1, STATE_EVENT] {
                    let e = self.common.watch(ops, fd, data, EventSet::IN).unwrap_err();
                    self.refusals.push(e.to_string());
                }
                // The first value past the queue indices is the device's.
                self.common.watch(ops, fd, 2, EventSet::IN).unwrap();
                self.watching = true;
            }
        }

        fn process_event(&mut self, data: u32, events: EventSet, ops: &mut EventOps) {
            assert_eq!(events, EventSet::IN);
            self.events.push(data);
            let _ = self.own.read();
            if self.events.len() == 2 {
                let fd = std::os::fd::AsRawFd::as_raw_fd(&self.own);
                self.common.unwatch(ops, fd).unwrap();
                self.unwatch_again = self.common.unwatch(ops, fd).err().map(|e| e.to_string());
            }
        }
    }

    impl MutEventSubscriber for Probe {
        fn process(&mut self, events: Events, ops: &mut EventOps) {
            handle_event(self, events, ops);
        }

        fn init(&mut self, ops: &mut EventOps) {
            self.common.init(ops);
            let fd = std::os::fd::AsRawFd::as_raw_fd(&self.own);
            let e = self.common.watch(ops, fd, 2, EventSet::IN).unwrap_err();
            self.refusals.push(e.to_string());
        }
    }

    fn two_queues(evts: &[EventFd]) -> Activation {
        let mut queues: Vec<Queue> = (0..2).map(|_| Queue::new(16).unwrap()).collect();
        for q in &mut queues {
            q.set_ready(true);
        }
        Activation {
            mem: GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap(),
            queues,
            queue_evts: evts.iter().map(|e| e.try_clone().unwrap()).collect(),
            irq: IrqLine::new(EventFd::new(EFD_NONBLOCK).unwrap()),
        }
    }

    #[test]
    fn handle_event_serves_queues_and_a_device_watches_fds_of_its_own_while_active() {
        let evts = [
            EventFd::new(EFD_NONBLOCK).unwrap(),
            EventFd::new(EFD_NONBLOCK).unwrap(),
        ];
        let dev = Arc::new(Mutex::new(Probe {
            common: crate::virtio::VirtioCommon::new("probe".into(), 9, &[16, 16], 0, Vec::new())
                .unwrap(),
            own: EventFd::new(EFD_NONBLOCK).unwrap(),
            watching: false,
            served: Vec::new(),
            events: Vec::new(),
            refusals: Vec::new(),
            unwatch_again: None,
        }));
        let mut em = Loop::new().unwrap();
        em.add_subscriber(dev.clone());
        let turn = |em: &mut EventManager<_>| em.run_with_timeout(0).unwrap();
        let own = dev.lock().unwrap().own.try_clone().unwrap();
        let own_fd = std::os::fd::AsRawFd::as_raw_fd(&dev.lock().unwrap().own);

        // Activation serves every queue; serving queue 1 watches the fd.
        crate::virtio::VirtioDevice::activate(&mut *dev.lock().unwrap(), two_queues(&evts))
            .unwrap();
        turn(&mut em);
        assert_eq!(dev.lock().unwrap().served, [0, 1]);
        assert_eq!(
            dev.lock().unwrap().refusals,
            [
                "the device is not active",
                "event data 0 is reserved for the queues and the state event",
                "event data 1 is reserved for the queues and the state event",
                "event data 4294967295 is reserved for the queues and the state event",
            ]
        );
        own.write(1).unwrap();
        assert_eq!(turn(&mut em), 1);
        assert_eq!(dev.lock().unwrap().events, [2]);
        // A notification is consumed and its queue served.
        evts[0].write(1).unwrap();
        assert_eq!(turn(&mut em), 1);
        assert_eq!(dev.lock().unwrap().served, [0, 1, 0]);
        assert!(evts[0].read().is_err(), "consumed");

        // A reset stops the watching of the queues and of the fd.
        crate::virtio::VirtioDevice::reset(&mut *dev.lock().unwrap());
        turn(&mut em);
        own.write(1).unwrap();
        evts[1].write(1).unwrap();
        assert_eq!(turn(&mut em), 0);
        let _ = (own.read(), evts[1].read());

        // Activated, reset and activated again before the event loop
        // looks: one activation, watched anew.
        {
            let mut d = dev.lock().unwrap();
            crate::virtio::VirtioDevice::activate(&mut *d, two_queues(&evts)).unwrap();
            crate::virtio::VirtioDevice::reset(&mut *d);
            crate::virtio::VirtioDevice::activate(&mut *d, two_queues(&evts)).unwrap();
            d.watching = false;
        }
        turn(&mut em);
        assert_eq!(dev.lock().unwrap().served, [0, 1, 0, 0, 1]);
        // The second event unwatches the fd, which then goes quiet.
        own.write(1).unwrap();
        assert_eq!(turn(&mut em), 1);
        assert_eq!(dev.lock().unwrap().events, [2, 2]);
        assert_eq!(
            dev.lock().unwrap().unwatch_again.as_deref(),
            Some(format!("fd {own_fd} is not watched").as_str())
        );
        own.write(1).unwrap();
        assert_eq!(turn(&mut em), 0);
    }

    #[test]
    fn a_queue_notification_after_an_unnoticed_reset_is_consumed() {
        let evts = [
            EventFd::new(EFD_NONBLOCK).unwrap(),
            EventFd::new(EFD_NONBLOCK).unwrap(),
        ];
        let mut s = DeviceState::new().unwrap();
        let mut em = Loop::new().unwrap();
        // The event loop's duplicates exist only once it synced.
        s.consume_queue_event(0);
        s.activate(two_queues(&evts), 2).unwrap();
        let dev = Arc::new(Mutex::new(Counter {
            state: s,
            queue_events: 0,
        }));
        em.add_subscriber(dev.clone());
        em.run_with_timeout(0).unwrap();
        dev.lock().unwrap().state.reset();
        evts[1].write(3).unwrap();
        dev.lock().unwrap().state.consume_queue_event(1);
        assert!(evts[1].read().is_err(), "read through the duplicate");
    }
}
