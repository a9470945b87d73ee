//! virtio-rng: an entropy source filled from the host's `getrandom`
//! (virtio spec v1.2 §5.4).

mod device;
mod event_handler;

pub use device::{host_entropy, process_requestq, Entropy, EntropySource, Rng, RNG_QUEUE_SIZE};
