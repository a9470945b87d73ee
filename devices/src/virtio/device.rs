//! What a virtio device model provides to the transport.

use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use super::{IrqLine, VirtioCommon};

/// Everything a device needs to run, handed over when the driver sets
/// DRIVER_OK.
pub struct Activation {
    /// Guest memory.
    pub mem: GuestMemoryMmap,
    /// The queues as the driver set them up, in queue-index order.
    pub queues: Vec<Queue>,
    /// The notification event of each queue (KVM ioeventfds).
    pub queue_evts: Vec<EventFd>,
    /// The device's interrupt.
    pub irq: IrqLine,
}

/// A device could not be activated.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    /// The driver set up fewer queues than the device needs.
    #[error("the driver set up {got} queues, the device needs {need}")]
    Queues {
        /// Queues the device needs.
        need: usize,
        /// Queues the driver made ready.
        got: usize,
    },
    /// Signalling the event loop failed.
    #[error("cannot signal the device's event handler: {0}")]
    Signal(#[source] std::io::Error),
    /// A device-specific failure.
    #[error("{0}")]
    Device(String),
}

/// A virtio device model behind a [`super::MmioTransport`]. What every
/// device does the same way comes from its [`VirtioCommon`]; a device
/// overrides only what is its own.
pub trait VirtioDevice: Send {
    /// The part every device shares.
    fn common(&self) -> &VirtioCommon;
    /// The part every device shares, to change.
    fn common_mut(&mut self) -> &mut VirtioCommon;

    /// The virtio device id ([`super::device_type`]).
    fn device_type(&self) -> u32 {
        self.common().device_type()
    }
    /// The largest size of each queue the device has.
    fn queue_max_sizes(&self) -> &[u16] {
        self.common().queue_max_sizes()
    }
    /// The features the device offers.
    fn avail_features(&self) -> u64 {
        self.common().avail_features()
    }
    /// Records the features the driver accepted (a subset of the offered
    /// ones; called when the driver sets FEATURES_OK).
    fn set_acked_features(&mut self, features: u64) {
        self.common_mut().set_acked_features(features);
    }
    /// Reads the device-specific configuration space at `offset`.
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        self.common().read_config(offset, data);
    }
    /// Writes the device-specific configuration space at `offset`. By
    /// default every field is read-only: the write is ignored (block,
    /// spec §5.2.4, without VIRTIO_BLK_F_CONFIG_WCE; net, §5.1.4.2; rng has
    /// no configuration space).
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        log::debug!(
            "{}: ignored {}-byte config write at {offset:#x}",
            self.common().name(),
            data.len()
        );
    }
    /// Starts the device. Runs on a vCPU thread: store, signal, return.
    fn activate(&mut self, activation: Activation) -> Result<(), ActivateError> {
        self.common_mut().activate(activation)
    }
    /// Stops the device, dropping its queues, so that it can be activated
    /// again. A reset cannot fail: the driver's write of 0 to the status
    /// resets the device (spec §2.4), and every device here stops by
    /// forgetting its activation.
    fn reset(&mut self) {
        self.common_mut().reset();
    }
}
