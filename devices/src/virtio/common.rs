//! The part of a virtio device that is the same in every device: what it
//! offers and what the driver accepted, its queues' sizes, its
//! configuration space, its activation and event-loop registrations, and
//! the bookkeeping of a pass over a queue. A device model holds one
//! [`VirtioCommon`] and keeps only what makes it different.

use std::io;
use std::os::fd::RawFd;

use event_manager::EventOps;
use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::epoll::EventSet;

use super::queue::finish_pass;
use super::state::{DeviceState, WatchError};
use super::{ActivateError, Activation, IrqLine};

/// What every virtio device is besides its own model, as plain data: what
/// a snapshot saves of the common part (with the queues' `QueueState`s,
/// taken from the activation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommonState {
    /// The virtio device id ([`super::device_type`]).
    pub device_type: u32,
    /// The largest size of each queue, in queue-index order.
    pub queue_max_sizes: Vec<u16>,
    /// The features the device offers.
    pub avail_features: u64,
    /// The features the driver accepted (0 until it does).
    pub acked_features: u64,
    /// The device-specific configuration space (spec §4.2.2, from offset
    /// 0x100 of the register window).
    pub config_space: Vec<u8>,
}

/// The common part of a virtio device: its [`CommonState`], its activation
/// and event-loop registrations, and its name for logs.
pub struct VirtioCommon {
    state: CommonState,
    activation: DeviceState,
    /// How logs name the device: `virtio-blk "rootfs"`.
    name: String,
    /// Broken-ring errors, for rate-limited logs.
    queue_errors: u64,
}

impl VirtioCommon {
    /// The common part of a device of `device_type` named `name` in logs,
    /// with a queue of each of `queue_max_sizes` (powers of two), offering
    /// `avail_features`, its configuration space holding `config_space`.
    pub fn new(
        name: String,
        device_type: u32,
        queue_max_sizes: &[u16],
        avail_features: u64,
        config_space: Vec<u8>,
    ) -> io::Result<Self> {
        Ok(VirtioCommon {
            state: CommonState {
                device_type,
                queue_max_sizes: queue_max_sizes.to_vec(),
                avail_features,
                acked_features: 0,
                config_space,
            },
            activation: DeviceState::new()?,
            name,
            queue_errors: 0,
        })
    }

    /// The plain data of the common part.
    pub fn state(&self) -> &CommonState {
        &self.state
    }

    /// How logs name the device.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The virtio device id.
    pub fn device_type(&self) -> u32 {
        self.state.device_type
    }

    /// The largest size of each queue.
    pub fn queue_max_sizes(&self) -> &[u16] {
        &self.state.queue_max_sizes
    }

    /// The features the device offers.
    pub fn avail_features(&self) -> u64 {
        self.state.avail_features
    }

    /// The features the driver accepted.
    pub fn acked_features(&self) -> u64 {
        self.state.acked_features
    }

    /// Records the features the driver accepted; any the device does not
    /// offer are dropped (the transport refuses them already).
    pub fn set_acked_features(&mut self, features: u64) {
        self.state.acked_features = features & self.state.avail_features;
    }

    /// The configuration space, for a device to update (a disk's new
    /// capacity). The transport tells the driver of a change.
    pub fn config_space_mut(&mut self) -> &mut [u8] {
        &mut self.state.config_space
    }

    /// Reads the configuration space at `offset`: any width at any offset,
    /// and zeros past its end.
    pub fn read_config(&self, offset: u64, data: &mut [u8]) {
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        for (i, byte) in data.iter_mut().enumerate() {
            *byte = start
                .checked_add(i)
                .and_then(|at| self.state.config_space.get(at))
                .copied()
                .unwrap_or(0);
        }
    }

    /// Stores `activation` after checking every queue is ready, and
    /// signals the event handler.
    pub fn activate(&mut self, activation: Activation) -> Result<(), ActivateError> {
        let queues = self.state.queue_max_sizes.len();
        self.activation.activate(activation, queues)
    }

    /// Forgets the activation and the accepted features, and signals the
    /// event handler.
    pub fn reset(&mut self) {
        self.state.acked_features = 0;
        self.activation.reset();
    }

    /// Passes over a queue that found its ring broken, so far.
    pub fn queue_errors(&self) -> u64 {
        self.queue_errors
    }

    /// The activation, when the device is active.
    pub fn active(&mut self) -> Option<&mut Activation> {
        self.activation.active()
    }

    /// Whether the device is active.
    pub fn is_active(&self) -> bool {
        self.activation.is_active()
    }

    /// Runs `pass` (one bounded pass over queue `index`, returning whether
    /// it stopped at its budget) when the device is active, and acts on its
    /// result: a pass cut at its budget kicks the queue's own event, so that
    /// the event loop comes back to it after other work; a broken ring is
    /// logged, now and then.
    pub fn run_pass(
        &mut self,
        index: usize,
        pass: impl FnOnce(&mut Queue, &GuestMemoryMmap, &IrqLine) -> Result<bool, virtio_queue::Error>,
    ) {
        let Some(Activation {
            mem,
            queues,
            queue_evts,
            irq,
        }) = self.activation.active()
        else {
            return;
        };
        let result = pass(&mut queues[index], mem, irq);
        let name = &self.name;
        finish_pass(result, &queue_evts[index], &mut self.queue_errors, || {
            format!("{name} queue {index}")
        });
    }

    /// Registers the state-change event (from the subscriber's `init`).
    pub fn init(&self, ops: &mut EventOps) {
        self.activation.init(ops);
    }

    /// Handles the state-change event: brings the event loop's view in line
    /// with the activation (no fd of the device stays watched from before).
    /// Returns whether the device is active: it was just activated.
    pub fn sync(&mut self, ops: &mut EventOps) -> bool {
        self.activation.sync(ops)
    }

    /// Consumes the notification of queue `index`.
    pub fn consume_queue_event(&self, index: usize) {
        self.activation.consume_queue_event(index);
    }

    /// Watches a device's own `fd` (a tap, a connection) with `data` in the
    /// event loop until [`VirtioCommon::unwatch`] or the next state change.
    /// `data` must be neither a queue index nor
    /// [`super::state::STATE_EVENT`].
    pub fn watch(
        &mut self,
        ops: &mut EventOps,
        fd: RawFd,
        data: u32,
        events: EventSet,
    ) -> Result<(), WatchError> {
        let queues = self.state.queue_max_sizes.len();
        self.activation.watch(ops, queues, fd, data, events)
    }

    /// Stops watching a device's own `fd`.
    pub fn unwatch(&mut self, ops: &mut EventOps, fd: RawFd) -> Result<(), WatchError> {
        self.activation.unwatch(ops, fd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtio_queue::QueueT;
    use vm_memory::GuestAddress;
    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

    fn common() -> VirtioCommon {
        VirtioCommon::new("virtio-test".into(), 9, &[16, 8], 0b1011, b"abc".to_vec()).unwrap()
    }

    #[test]
    fn identity_features_and_plain_state() {
        let mut c = common();
        assert_eq!(c.name(), "virtio-test");
        assert_eq!(c.device_type(), 9);
        assert_eq!(c.queue_max_sizes(), &[16, 8]);
        assert_eq!(c.avail_features(), 0b1011);
        // Features never offered are not recorded.
        c.set_acked_features(0b0111);
        assert_eq!(c.acked_features(), 0b0011);
        let snapshot = c.state().clone();
        assert_eq!(
            snapshot,
            CommonState {
                device_type: 9,
                queue_max_sizes: vec![16, 8],
                avail_features: 0b1011,
                acked_features: 0b0011,
                config_space: b"abc".to_vec(),
            }
        );
        c.reset();
        assert_eq!(c.acked_features(), 0);
        assert_ne!(c.state(), &snapshot);
    }

    #[test]
    fn config_space_reads_are_bounded() {
        let mut c = common();
        let read = |c: &VirtioCommon, offset: u64, len: usize| {
            let mut b = vec![0xffu8; len];
            c.read_config(offset, &mut b);
            b
        };
        assert_eq!(read(&c, 0, 3), b"abc");
        assert_eq!(read(&c, 1, 4), [b'b', b'c', 0, 0]);
        assert_eq!(read(&c, 3, 2), [0, 0]);
        assert_eq!(read(&c, u64::MAX, 4), [0; 4]);
        c.config_space_mut()[1] = b'X';
        assert_eq!(read(&c, 0, 3), b"aXc");
    }

    #[test]
    fn a_pass_runs_only_while_active_and_a_full_one_comes_back() {
        let mut c = common();
        let mut runs = 0;
        c.run_pass(0, |_, _, _| {
            runs += 1;
            Ok(true)
        });
        assert_eq!(runs, 0, "inactive");
        assert!(c.active().is_none());
        let evts: Vec<EventFd> = (0..2)
            .map(|_| EventFd::new(EFD_NONBLOCK).unwrap())
            .collect();
        let mut queues: Vec<Queue> = [16, 8].iter().map(|&n| Queue::new(n).unwrap()).collect();
        for q in &mut queues {
            q.set_ready(true);
        }
        c.activate(Activation {
            mem: GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x1_0000)]).unwrap(),
            queues,
            queue_evts: evts.iter().map(|e| e.try_clone().unwrap()).collect(),
            irq: IrqLine::new(EventFd::new(EFD_NONBLOCK).unwrap()),
        })
        .unwrap();
        assert!(c.is_active());
        assert_eq!(c.active().map(|a| a.queues.len()), Some(2));
        c.run_pass(1, |q, _, _| {
            runs += 1;
            assert_eq!(q.max_size(), 8, "the queue asked for");
            Ok(true)
        });
        assert_eq!(runs, 1);
        assert_eq!(evts[1].read().unwrap(), 1, "kicked to come back");
        c.run_pass(1, |_, _, _| Ok(false));
        assert!(evts[1].read().is_err());
        c.run_pass(0, |_, _, _| Err(virtio_queue::Error::InvalidAvailRingIndex));
        assert!(
            evts[0].read().is_err(),
            "a broken ring is not retried at once"
        );
        assert_eq!(c.queue_errors, 1);
    }

    #[test]
    fn activation_needs_every_queue() {
        let mut c = common();
        let mut q = Queue::new(16).unwrap();
        q.set_ready(true);
        let evt = EventFd::new(EFD_NONBLOCK).unwrap();
        let result = c.activate(Activation {
            mem: GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x1_0000)]).unwrap(),
            queues: vec![q, Queue::new(8).unwrap()],
            queue_evts: vec![evt.try_clone().unwrap(), evt],
            irq: IrqLine::new(EventFd::new(EFD_NONBLOCK).unwrap()),
        });
        assert!(matches!(
            result,
            Err(ActivateError::Queues { need: 2, got: 1 })
        ));
        assert!(!c.is_active());
    }
}
