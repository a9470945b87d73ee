//! Puts devices on the buses and wires their interrupts and notifications:
//! the legacy PC devices on port I/O, virtio devices in the MMIO gap, the
//! VM generation id in guest memory.

mod legacy;
mod virtio;
mod vmgenid;

pub use legacy::*;
pub use virtio::*;
pub use vmgenid::*;

use std::io;

use devices::legacy::VmGenIdError;
use devices::BusError;

use crate::vstate::vm::VmError;

/// A device could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// An `EventFd` could not be created.
    #[error("cannot create an eventfd for {0}: {1}")]
    EventFd(&'static str, #[source] io::Error),
    /// The device's range is taken.
    #[error("cannot place {0} on the bus: {1}")]
    Bus(&'static str, #[source] BusError),
    /// Its interrupt cannot be wired.
    #[error("cannot wire the interrupt of {0}: {1}")]
    Irq(&'static str, #[source] VmError),
    /// Its queue notifications cannot be wired.
    #[error("cannot register the queue notifications of {0}: {1}")]
    Ioevent(&'static str, #[source] kvm_ioctls::Error),
    /// The device model could not be created.
    #[error("{0}")]
    Create(String),
    /// The VM generation id could not be written.
    #[error("{0}")]
    VmGenId(#[source] VmGenIdError),
}
