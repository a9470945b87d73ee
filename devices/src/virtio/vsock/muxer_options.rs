//! What a vsock [`Muxer`](super::muxer::Muxer) is configured with and
//! what it reports: its options and deadlines, its errors, its counters,
//! and the descriptor operations it asks of the event loop.

use std::fmt;
use std::io;
use std::os::fd::RawFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::connection::LINGER_TIMEOUT;

/// Where time comes from (tests inject a fake).
pub type Clock = Arc<dyn Fn() -> Instant + Send + Sync>;

/// Connections per VM unless told otherwise (host- and guest-initiated
/// together, those still being set up included).
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// How long a host process has to send its whole CONNECT line, unless
/// told otherwise.
pub const CONNECT_LINE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the guest has to answer a host's connection request, unless
/// told otherwise.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the muxer waits for each side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// For a host process to send its whole CONNECT line.
    pub connect_line: Duration,
    /// For the guest to answer a host's connection request.
    pub request: Duration,
    /// For the guest's RST after podvm shut a connection down both ways,
    /// and for a slow host to take the guest's last bytes after the
    /// guest's SHUTDOWN.
    pub linger: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect_line: CONNECT_LINE_TIMEOUT,
            request: REQUEST_TIMEOUT,
            linger: LINGER_TIMEOUT,
        }
    }
}

/// Tunables of a [`Muxer`].
#[derive(Clone)]
pub struct MuxerOptions {
    /// Connections allowed at once (see [`DEFAULT_MAX_CONNECTIONS`]).
    pub max_connections: usize,
    /// The time source.
    pub clock: Clock,
    /// The deadlines.
    pub timeouts: Timeouts,
}

impl Default for MuxerOptions {
    fn default() -> Self {
        MuxerOptions {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            clock: Arc::new(Instant::now),
            timeouts: Timeouts::default(),
        }
    }
}

impl fmt::Debug for MuxerOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MuxerOptions")
            .field("max_connections", &self.max_connections)
            .field("timeouts", &self.timeouts)
            .finish_non_exhaustive()
    }
}

/// The host side could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum MuxerError {
    /// The Unix socket could not be created at `uds_path`.
    #[error("cannot listen on {}: {source}", path.display())]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The listening socket could not be made non-blocking.
    #[error("cannot make the socket at {} non-blocking: {source}", path.display())]
    Nonblocking {
        /// The socket path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// What the device has done, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VsockCounters {
    /// Host-initiated connections the guest accepted.
    pub host_connections: u64,
    /// Guest-initiated connections podvm connected to a host socket.
    pub guest_connections: u64,
    /// Connections open now (those being set up included).
    pub active_connections: u64,
    /// Payload bytes delivered to the guest.
    pub bytes_to_guest: u64,
    /// Payload bytes received from the guest.
    pub bytes_from_guest: u64,
    /// RST packets delivered to the guest.
    pub rsts_sent: u64,
    /// Guest packets and descriptor chains that broke the protocol.
    pub malformed: u64,
    /// Connections refused because the VM had as many as allowed.
    pub refused_by_limit: u64,
    /// Guest requests whose host socket (`<uds_path>_<port>`) could not
    /// be reached.
    pub connect_failures: u64,
    /// Host connections closed for a malformed or late CONNECT line.
    pub bad_connect_lines: u64,
}

/// A change to the event loop's watch list.
#[derive(Debug)]
pub enum FdOp {
    /// Watch `fd` (edge-triggered, in and out) with event data `token`.
    Add {
        /// The descriptor.
        fd: RawFd,
        /// Its event data.
        token: u32,
    },
    /// Stop watching this stream, then close it (by dropping it).
    Remove(UnixStream),
}

/// What epoll reported for a stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Readiness {
    /// EPOLLIN (or EPOLLERR: a read reports the error).
    pub readable: bool,
    /// EPOLLOUT (or EPOLLERR).
    pub writable: bool,
    /// EPOLLRDHUP: the peer sends no more.
    pub read_closed: bool,
    /// EPOLLHUP: the peer closed both directions.
    pub hup: bool,
}
