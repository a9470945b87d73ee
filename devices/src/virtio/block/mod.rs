//! virtio-blk: a disk backed by a raw image file (virtio spec v1.2 §5.2).
//!
//! [`Block`] is the device the VMM puts behind a virtio-mmio transport. Its
//! request handling lives in [`process_requestq`] over a [`Disk`], a plain
//! function that tests and benchmarks drive with a mock queue; the bytes
//! come from a [`DiskBackend`] (a `File`, or a fake).

mod backend;
mod device;
mod event_handler;
mod request;

pub use backend::{DiskBackend, GuestBuffers};
pub use device::{
    process_requestq, Block, BlockCounters, BlockError, Disk, BLOCK_QUEUE_SIZE,
    VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO, VIRTIO_BLK_F_SEG_MAX,
};
pub use request::{
    RequestError, SECTOR_SIZE, VIRTIO_BLK_ID_BYTES, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK,
    VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN,
    VIRTIO_BLK_T_OUT,
};
