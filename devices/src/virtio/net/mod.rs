//! virtio-net: a network card backed by a host tap device (virtio spec v1.2
//! §5.1).
//!
//! Frames travel between the guest and the tap with the 12-byte
//! `virtio_net_hdr_v1` in front, unchanged: the tap speaks the same header
//! (`IFF_VNET_HDR` with `TUNSETVNETHDRSZ` 12), so checksum and segmentation
//! offloads pass straight through. The device only sets `num_buffers` on
//! received frames.
//!
//! The model ([`Net`]) and the queue processing ([`process_txq`],
//! [`process_rxq`]) are generic over a [`NetBackend`], so tests run them on
//! a memory-backed fake; [`Tap`] is the real one.

mod backend;
mod device;
mod event_handler;
mod rx;
mod tap;
#[cfg(test)]
mod test_utils;
mod tx;

pub use backend::NetBackend;
pub use device::{random_mac, Net, NetCounters, NetError, NET_QUEUE_SIZE};
pub use rx::{process_rxq, Rx, RxCounters};
pub use tap::{Tap, TapError};
pub use tx::{process_txq, Tx, TxCounters};

/// Size of `virtio_net_hdr_v1`, which precedes every frame in both
/// directions (spec §5.1.6: with VIRTIO_F_VERSION_1 the header always
/// includes `num_buffers`).
pub const VNET_HDR_LEN: usize = 12;

/// Largest frame, header included, that the device moves in either
/// direction: a 64 KiB GSO packet, its Ethernet header and the vnet header
/// (as Firecracker and QEMU).
pub const MAX_FRAME_LEN: usize = 65536 + 14 + VNET_HDR_LEN;

/// Most buffers one frame may take in either direction: what one
/// `writev` takes (`UIO_MAXIOV`). This also bounds the device's lists of
/// buffers, which are kept from frame to frame.
pub(crate) const MAX_SEGMENTS: usize = 1024;

/// Index of the receive queue (spec §5.1.2).
pub const RX_QUEUE: usize = 0;
/// Index of the transmit queue.
pub const TX_QUEUE: usize = 1;
