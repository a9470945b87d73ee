//! virtio-balloon (virtio v1.2 §5.5, device id 5): guest memory the guest
//! gives up goes back to the host, with Firecracker's options and API.
//!
//! - **Inflate / deflate**: the host sets a target (`num_pages`); the
//!   driver puts pages in the balloon on the inflate queue and takes them
//!   back on the deflate queue, and writes how many it holds (`actual`).
//!   Inflated pages are freed on the host at once ([`discard`]).
//! - **Statistics** (`stats_polling_interval_s` > 0): the driver posts one
//!   buffer of its memory statistics; the device records it and holds it,
//!   and gives it back every interval so that the driver fills it again.
//! - **Free page reporting**: the driver reports ranges of free memory
//!   (Linux: 2 MiB and up, once they have stayed free a while), which are
//!   freed on the host. An idle guest hands back the page cache its
//!   workload left behind without anyone choosing a target.
//! - **Free page hinting**: on the host's request (a new command id), the
//!   driver hints free ranges, freed on the host while the run lasts, until
//!   the host says DONE.
//!
//! Ranges outside guest RAM free nothing and are counted; the device keeps
//! running whatever the driver sends.

mod device;
pub mod discard;
mod event_handler;
mod partial;
mod queues;
pub mod stats;

pub use device::{
    Balloon, BalloonCounters, BalloonError, BalloonOptions, BalloonState, HintingState, QueueRoles,
    BALLOON_QUEUE_SIZE, DEFLATE_QUEUE, FREE_PAGE_HINT_DONE, FREE_PAGE_HINT_STOP, INFLATE_QUEUE,
    PAGES_PER_MIB, VIRTIO_BALLOON_F_DEFLATE_ON_OOM, VIRTIO_BALLOON_F_FREE_PAGE_HINT,
    VIRTIO_BALLOON_F_PAGE_REPORTING, VIRTIO_BALLOON_F_STATS_VQ,
};
pub use stats::GuestStats;
