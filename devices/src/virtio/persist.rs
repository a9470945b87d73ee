//! Snapshot state of a virtio-mmio device: the transport's registers, the
//! driver's queues as the device last used them, and the interrupt status.
//! Plain data; the VMM puts it in its snapshot payload.

use serde::{Deserialize, Serialize};
use virtio_queue::QueueState;

/// One virtqueue: where the driver put it and how far the device got.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueSnapshot {
    /// The largest size the device offers.
    pub max_size: u16,
    /// The size the driver chose.
    pub size: u16,
    /// Whether the driver made it ready.
    pub ready: bool,
    /// Guest address of the descriptor table.
    pub desc_table: u64,
    /// Guest address of the available ring.
    pub avail_ring: u64,
    /// Guest address of the used ring.
    pub used_ring: u64,
    /// The next available-ring entry the device will take.
    pub next_avail: u16,
    /// The next used-ring entry the device will fill.
    pub next_used: u16,
    /// Whether VIRTIO_F_EVENT_IDX is in use.
    pub event_idx_enabled: bool,
}

impl From<QueueState> for QueueSnapshot {
    fn from(q: QueueState) -> Self {
        QueueSnapshot {
            max_size: q.max_size,
            size: q.size,
            ready: q.ready,
            desc_table: q.desc_table,
            avail_ring: q.avail_ring,
            used_ring: q.used_ring,
            next_avail: q.next_avail,
            next_used: q.next_used,
            event_idx_enabled: q.event_idx_enabled,
        }
    }
}

impl From<QueueSnapshot> for QueueState {
    fn from(q: QueueSnapshot) -> Self {
        QueueState {
            max_size: q.max_size,
            next_avail: q.next_avail,
            next_used: q.next_used,
            event_idx_enabled: q.event_idx_enabled,
            size: q.size,
            ready: q.ready,
            desc_table: q.desc_table,
            avail_ring: q.avail_ring,
            used_ring: q.used_ring,
        }
    }
}

/// A virtio-mmio device as a snapshot keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransportState {
    /// The virtio device id (checked on restore).
    pub device_type: u32,
    /// The device status register.
    pub status: u32,
    /// The features the driver accepted.
    pub acked_features: u64,
    /// DeviceFeaturesSel.
    pub device_features_sel: u32,
    /// DriverFeaturesSel.
    pub driver_features_sel: u32,
    /// QueueSel.
    pub queue_sel: u32,
    /// ConfigGeneration.
    pub config_generation: u32,
    /// Interrupt causes not yet acknowledged.
    pub interrupt_status: u32,
    /// Each queue: the device's own view while it is active (how far it
    /// got), the registers' otherwise.
    pub queues: Vec<QueueSnapshot>,
    /// Queues the driver wrote a value to that they cannot take.
    pub invalid_queues: Vec<bool>,
}

/// A transport state that does not fit the device it is restored into.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RestoreError {
    /// Another kind of device.
    #[error(
        "the snapshot has a virtio device of type {saved} where this VM has one of type {found}"
    )]
    DeviceType {
        /// In the snapshot.
        saved: u32,
        /// Here.
        found: u32,
    },
    /// Another number of queues, or a queue of another maximum size.
    #[error("the snapshot's virtio device of type {device_type} has queues {saved:?}, this one {found:?}")]
    Queues {
        /// The device type.
        device_type: u32,
        /// Maximum sizes in the snapshot.
        saved: Vec<u16>,
        /// Maximum sizes here.
        found: Vec<u16>,
    },
    /// A queue the saved state describes cannot be one.
    #[error(
        "virtio device of type {device_type}: queue {index} of the snapshot is invalid: {why}"
    )]
    Queue {
        /// The device type.
        device_type: u32,
        /// The queue.
        index: usize,
        /// What virtio-queue said.
        why: String,
    },
    /// The device refused the restored activation.
    #[error("virtio device of type {device_type}: cannot activate it again: {why}")]
    Activate {
        /// The device type.
        device_type: u32,
        /// Why.
        why: String,
    },
}
