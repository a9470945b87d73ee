//! The interrupt line of a virtio-mmio device: an interrupt status register
//! shared with the transport, and an `EventFd` wired to the device's GSI.

use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use vmm_sys_util::eventfd::EventFd;

/// InterruptStatus bit: a used ring was updated (spec §4.2.2).
pub const INT_VRING: u32 = 1;
/// InterruptStatus bit: the configuration changed.
pub const INT_CONFIG: u32 = 2;

/// A device's interrupt: sets a cause in InterruptStatus and raises the
/// line. Cheap to clone; all clones share the status.
#[derive(Debug, Clone)]
pub struct IrqLine {
    status: Arc<AtomicU32>,
    evt: Arc<EventFd>,
}

impl IrqLine {
    /// A line raising `evt` (an irqfd).
    pub fn new(evt: EventFd) -> Self {
        IrqLine {
            status: Arc::new(AtomicU32::new(0)),
            evt: Arc::new(evt),
        }
    }

    /// Records `cause` ([`INT_VRING`] or [`INT_CONFIG`]) and raises the line.
    pub fn trigger(&self, cause: u32) -> io::Result<()> {
        self.status.fetch_or(cause, Ordering::SeqCst);
        self.evt.write(1)
    }

    /// The pending causes.
    pub fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }

    /// Clears the causes the driver acknowledged.
    pub fn ack(&self, causes: u32) {
        self.status.fetch_and(!causes, Ordering::SeqCst);
    }

    /// Clears every cause (device reset).
    pub fn clear(&self) {
        self.status.store(0, Ordering::SeqCst);
    }

    /// The underlying event, for tests and the VMM's wiring.
    pub fn event(&self) -> &EventFd {
        &self.evt
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmm_sys_util::eventfd::EFD_NONBLOCK;

    #[test]
    fn trigger_ack_clear() {
        let line = IrqLine::new(EventFd::new(EFD_NONBLOCK).unwrap());
        let other = line.clone();
        line.trigger(INT_VRING).unwrap();
        other.trigger(INT_CONFIG).unwrap();
        assert_eq!(line.status(), INT_VRING | INT_CONFIG);
        assert_eq!(line.event().read().unwrap(), 2);
        line.ack(INT_VRING);
        assert_eq!(other.status(), INT_CONFIG);
        line.clear();
        assert_eq!(line.status(), 0);
    }
}
