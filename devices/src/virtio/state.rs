//! The part every virtio device shares: holding its activation, and
//! keeping its event-loop registrations in step with it.
//!
//! `activate` and `reset` run on a vCPU thread; they only change the state
//! and write `state_evt`. The device's event handler, on the VMM thread,
//! then calls [`DeviceState::sync`], which adds or removes the queue events
//! (and any device-specific fds, such as a tap) from the event loop.

use std::os::fd::{AsRawFd, RawFd};

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
    /// Queue events currently in the event loop.
    registered: Vec<RawFd>,
}

impl DeviceState {
    /// An inactive device.
    pub fn new() -> std::io::Result<Self> {
        Ok(DeviceState {
            active: None,
            state_evt: EventFd::new(EFD_NONBLOCK)?,
            registered: Vec::new(),
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
    pub fn reset(&mut self) -> bool {
        self.active = None;
        if let Err(e) = self.state_evt.write(1) {
            log::warn!("virtio: cannot signal a device reset: {e}");
        }
        true
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
        let mut wanted: Vec<(RawFd, u32, EventSet)> = Vec::new();
        if let Some(a) = &self.active {
            for (i, evt) in a.queue_evts.iter().enumerate() {
                wanted.push((evt.as_raw_fd(), i as u32, EventSet::IN));
            }
            if let Some((fd, set)) = backend {
                wanted.push((fd, BACKEND_EVENT, set));
            }
        }
        let was_active = !self.registered.is_empty();
        for fd in self.registered.drain(..) {
            // The fd may already be closed (an old activation's duplicate):
            // epoll forgets closed fds by itself.
            let _ = ops.remove(Events::empty_raw(fd));
        }
        for (fd, data, set) in wanted {
            match ops.add(Events::with_data_raw(fd, data, set)) {
                Ok(()) => self.registered.push(fd),
                Err(e) => log::error!("virtio: cannot watch a queue event: {e:?}"),
            }
        }
        !was_active && !self.registered.is_empty()
    }
}
