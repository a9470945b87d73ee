//! Virtio devices over the virtio-mmio transport (virtio spec v1.2).
//!
//! A device model implements [`VirtioDevice`]: its type, features, config
//! space, and what to do when the driver activates or resets it. The
//! [`MmioTransport`] turns guest register accesses into those calls. Queue
//! notifications arrive on `EventFd`s (KVM ioeventfds, registered by the
//! VMM) and interrupts leave through an [`IrqLine`] (a KVM irqfd).
//!
//! Activation happens on a vCPU thread (the driver's write of DRIVER_OK), so
//! a device's `activate` only stores what it was given and signals its
//! event-loop handler; the handler, on the VMM thread, starts watching the
//! queues.

pub mod block;
mod device;
mod interrupt;
mod mmio;
pub mod net;
pub mod rng;
pub mod state;
pub mod vsock;

use std::sync::atomic::{fence, Ordering};

use virtio_bindings::virtio_ring::VRING_AVAIL_F_NO_INTERRUPT;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemory};

pub use device::{ActivateError, Activation, VirtioDevice};
pub use interrupt::{IrqLine, INT_CONFIG, INT_VRING};
pub use mmio::{MmioTransport, MMIO_REGION_SIZE, QUEUE_NOTIFY_OFFSET};

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

/// Counts one more occurrence of something a guest caused and says whether
/// to log it: the 1st, 2nd, 4th, 8th… time, so that a misbehaving guest
/// cannot flood the host's log.
pub(crate) fn log_this(counter: &mut u64) -> bool {
    *counter += 1;
    counter.is_power_of_two()
}

/// Acts on the result of a bounded pass over a queue: a pass that stopped
/// at its budget kicks the queue's own event, so the event loop comes back
/// to it after other work; a broken ring is logged, rate-limited through
/// `errors`. `device` names the device and queue, and is only built when
/// something is logged.
pub(crate) fn finish_pass(
    result: Result<bool, virtio_queue::Error>,
    queue_evt: &vmm_sys_util::eventfd::EventFd,
    errors: &mut u64,
    device: impl FnOnce() -> String,
) {
    match result {
        Ok(false) => {}
        Ok(true) => {
            if let Err(e) = queue_evt.write(1) {
                log::warn!("{}: cannot reschedule the queue: {e}", device());
            }
        }
        Err(e) => {
            if log_this(errors) {
                log::warn!("{}: {e}", device());
            }
        }
    }
}

/// Whether the driver wants an interrupt for the chains just used. With
/// VIRTIO_F_EVENT_IDX that is `Queue::needs_notification`; without it the
/// driver may set VRING_AVAIL_F_NO_INTERRUPT in the available ring's
/// `flags` (spec §2.7.7), which virtio-queue 0.18 does not look at.
pub(crate) fn should_interrupt<M: GuestMemory>(
    queue: &mut Queue,
    mem: &M,
) -> Result<bool, virtio_queue::Error> {
    if queue.event_idx_enabled() {
        return queue.needs_notification(mem);
    }
    // The used ring writes must be visible before the driver's flags are
    // read (spec §2.7.7.1), as `needs_notification` does.
    fence(Ordering::SeqCst);
    // `flags` is the available ring's first field.
    let flags: u16 = mem
        .load(GuestAddress(queue.avail_ring()), Ordering::Acquire)
        .map_err(virtio_queue::Error::GuestMemory)?;
    Ok(u32::from(u16::from_le(flags)) & VRING_AVAIL_F_NO_INTERRUPT == 0)
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
    /// Socket device (vsock).
    pub const VSOCK: u32 = 19;
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::GuestMemoryMmap;

    #[test]
    fn no_interrupt_flag_suppresses_interrupts_without_event_idx() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let vq = MockSplitQueue::new(&mem, 16);
        let mut q: Queue = vq.create_queue().unwrap();
        assert!(should_interrupt(&mut q, &mem).unwrap());
        mem.write_obj(1u16.to_le(), vq.avail_addr()).unwrap();
        assert!(!should_interrupt(&mut q, &mem).unwrap());
        mem.write_obj(0u16, vq.avail_addr()).unwrap();
        assert!(should_interrupt(&mut q, &mem).unwrap());
    }
}
