//! Virtio devices over the virtio-mmio transport (virtio spec v1.2).
//!
//! A device model implements [`VirtioDevice`]: its type, features, config
//! space, and what to do when the driver activates or resets it. What is
//! the same in every device (features, queue sizes, the bounded config
//! space, the activation, a pass's bookkeeping) lives in its
//! [`VirtioCommon`], which the trait's default methods use; a device
//! overrides only what is its own. The [`MmioTransport`] turns guest
//! register accesses into those calls. Queue notifications arrive on
//! `EventFd`s (KVM ioeventfds, registered by the VMM) and interrupts leave
//! through an [`IrqLine`] (a KVM irqfd).
//!
//! Activation happens on a vCPU thread (the driver's write of DRIVER_OK), so
//! a device's `activate` only stores what it was given and signals its
//! event-loop handler; the handler, on the VMM thread, starts watching the
//! queues ([`state::handle_event`], driving a [`state::QueueHandler`]).
//! Taking chains off a queue, and the checks on every descriptor, are the
//! same for every device too (`queue.rs`).

pub mod balloon;
pub mod block;
mod common;
mod device;
mod guest_mem;
mod interrupt;
mod mmio;
pub mod net;
pub mod persist;
mod queue;
pub mod rng;
pub mod state;
pub mod vsock;

pub use common::{CommonState, VirtioCommon};
pub use device::{ActivateError, Activation, VirtioDevice};
pub use interrupt::{IrqLine, INT_CONFIG, INT_VRING};
pub use mmio::{MmioTransport, TransportCounters, MMIO_REGION_SIZE, QUEUE_NOTIFY_OFFSET};
pub use queue::ChainError;

/// Device status bits (virtio spec §2.1).
pub mod status {
    /// The guest found the device.
    pub const ACKNOWLEDGE: u32 = 1;
    /// The guest has a driver for it.
    pub const DRIVER: u32 = 2;
    /// The driver is ready: the device is live.
    pub const DRIVER_OK: u32 = 4;
    /// The driver accepted the features.
    pub const FEATURES_OK: u32 = 8;
    /// The device hit an error it cannot recover from without a reset.
    pub const DEVICE_NEEDS_RESET: u32 = 64;
    /// The driver gave up on the device.
    pub const FAILED: u32 = 128;
}

/// Feature bit: the device complies with virtio 1.x (spec §6).
pub const VIRTIO_F_VERSION_1: u32 = 32;

/// Virtio device ids (spec §5).
pub mod device_type {
    /// Network card.
    pub const NET: u32 = 1;
    /// Block device.
    pub const BLOCK: u32 = 2;
    /// Entropy source.
    pub const RNG: u32 = 4;
    /// Memory balloon.
    pub const BALLOON: u32 = 5;
    /// Socket device (vsock).
    pub const VSOCK: u32 = 19;
}
