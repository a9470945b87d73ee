//! virtio-vsock (virtio spec v1.2 §5.10) with its host side on Unix
//! sockets: Firecracker's "hybrid" vsock, so the host needs no
//! vhost-vsock.
//!
//! - [`packet`]: the 44-byte `virtio_vsock_hdr`.
//! - `chain`: descriptor chains walked by hand (indirect descriptors are
//!   refused), header and payload split over buffers any way.
//! - `connect_line`: the `CONNECT <port>\n` line host processes send.
//! - `connection`: one stream connection: handshake, credit, shutdown.
//! - [`Muxer`]: every connection, the listener, routing, deadlines; it
//!   knows nothing of the event loop and says what to watch through
//!   [`FdOp`]s.
//! - [`process_txq`], [`process_rxq`], [`process_eventq`]: the queues.
//! - [`Vsock`]: the device model for the transport and its event-loop
//!   glue (the only parts that know `DeviceState`).
//!
//! The VMM creates a [`Vsock`], puts it behind an `MmioTransport`
//! (device id 19, three queues) and adds the same `Arc<Mutex<Vsock>>` to
//! the event loop: its `init` watches its state event and timer, and it
//! adds and removes the listener and every connection's stream itself.

mod chain;
mod connect_line;
mod connection;
mod device;
mod event_handler;
mod muxer;
mod muxer_options;
pub mod packet;
mod queues;
#[cfg(test)]
mod test_utils;
mod unix;

pub use connect_line::{parse as parse_connect_line, Line, LineError, MAX_LINE};
pub use connection::{ConnKey, CONN_BUF_SIZE, CREDIT_UPDATE_THRESHOLD, LINGER_TIMEOUT};
pub use device::{Vsock, VsockError, VSOCK_QUEUE_SIZE};
pub use event_handler::TIMER_EVENT;
pub use muxer::{
    guest_target, Clock, FdOp, Muxer, MuxerError, MuxerOptions, Readiness, Timeouts, VsockCounters,
    CONNECT_LINE_TIMEOUT, DEFAULT_MAX_CONNECTIONS, FIRST_LOCAL_PORT, FIRST_TOKEN, LAST_TOKEN,
    REQUEST_TIMEOUT,
};
pub use queues::{
    process_eventq, process_rxq, process_txq, read_tx_packet, Scratch, TxError, TxPacket,
};

/// The host's CID: every guest packet must go there (spec §5.10.4).
pub const HOST_CID: u64 = 2;
/// Largest payload of one packet, in either direction (as Linux's
/// VIRTIO_VSOCK_MAX_PKT_BUF_SIZE): bounds what one chain makes the device
/// copy.
pub const MAX_PAYLOAD: usize = 64 * 1024;

/// Index of the receive queue (spec §5.10.2).
pub const RX_QUEUE: usize = 0;
/// Index of the transmit queue.
pub const TX_QUEUE: usize = 1;
/// Index of the event queue.
pub const EVENT_QUEUE: usize = 2;
