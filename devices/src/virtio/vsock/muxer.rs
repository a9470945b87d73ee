//! The host side of the device: every connection, the Unix listener at
//! `uds_path`, and the routing between the guest's packets and the host's
//! Unix streams (Firecracker's "hybrid" vsock).
//!
//! - Host → guest: a process connects to `uds_path` and sends `CONNECT
//!   <port>\n`; podvm sends the guest a REQUEST from a fresh host port and,
//!   on the guest's RESPONSE, answers `OK <host port>\n` on the stream.
//! - Guest → host: a REQUEST to CID 2 port P connects to `<uds_path>_P`;
//!   RESPONSE on success, RST on failure.
//!
//! The muxer knows nothing of the event loop: it says which descriptors
//! to watch or forget through [`FdOp`]s, each connection's events carry
//! its own token, and the caller hands readiness back with
//! [`Muxer::on_fd_event`]. Time comes from an injected [`Clock`]. A
//! stream leaves the muxer only inside an [`FdOp::Remove`], so that no
//! descriptor is closed while the event loop still watches it.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::ffi::OsString;
use std::fmt;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::connect_line::{self, Line, MAX_LINE};
use super::connection::{ConnKey, Connection, Origin, ResetReason, RxOutcome, Verdict};
use super::packet::{op, Header, TYPE_STREAM};
use super::{unix, HOST_CID};
use crate::virtio::queue::log_this;

pub use super::muxer_options::{
    Clock, FdOp, MuxerError, MuxerOptions, Readiness, Timeouts, VsockCounters,
    CONNECT_LINE_TIMEOUT, DEFAULT_MAX_CONNECTIONS, REQUEST_TIMEOUT,
};

/// First host port handed out for host-initiated connections (as
/// Firecracker): far from the ports guests usually listen on.
pub const FIRST_LOCAL_PORT: u32 = 1 << 30;
/// Most RSTs waiting for receive buffers (answers to bad packets); more
/// are dropped, so that a guest that sends garbage but never reads
/// cannot grow the queue.
const MAX_PENDING_RSTS: usize = 256;
/// Most connections accepted from the listener in one pass.
const ACCEPT_BUDGET: usize = 64;
/// Event-loop tokens of connections lie in [FIRST_TOKEN, LAST_TOKEN]; the
/// values around them are the device's own events.
pub const FIRST_TOKEN: u32 = 16;
/// The last connection token.
pub const LAST_TOKEN: u32 = u32::MAX - 16;

/// A host connection that has not sent its whole CONNECT line yet.
struct PendingHost {
    stream: UnixStream,
    deadline: Instant,
}

/// What an event-loop token stands for.
enum Slot {
    Pending(PendingHost),
    Conn(ConnKey),
}

/// The connections of one vsock device and its Unix listener.
pub struct Muxer {
    guest_cid: u64,
    uds_path: PathBuf,
    listener: UnixListener,
    /// Device and inode of the socket file we created, to remove it on
    /// drop only if it is still ours.
    socket_file: Option<(u64, u64)>,
    conns: HashMap<ConnKey, Connection>,
    slots: HashMap<u32, Slot>,
    pending_hosts: usize,
    next_token: u32,
    next_local_port: u32,
    /// Connections with something for the guest, served round-robin.
    rx_queue: VecDeque<ConnKey>,
    /// RSTs not tied to a live connection.
    rsts: VecDeque<Header>,
    fd_ops: Vec<FdOp>,
    /// Deadlines by time; entries that no longer match their slot's
    /// deadline are skipped when they come up.
    deadlines: BinaryHeap<Reverse<(Instant, u32)>>,
    counters: VsockCounters,
    /// Rate limits of log lines.
    logged_host_errors: u64,
    logged_timeouts: u64,
    logged_rst_drops: u64,
    options: MuxerOptions,
}

/// `<uds_path>_<port>`: where a guest connection to host port `port` goes.
pub fn guest_target(uds_path: &Path, port: u32) -> PathBuf {
    let mut s = OsString::from(uds_path.as_os_str());
    s.push(format!("_{port}"));
    PathBuf::from(s)
}

impl Muxer {
    /// Listens on `uds_path` (which must not exist) for a guest of CID
    /// `guest_cid`.
    pub fn new(
        guest_cid: u64,
        uds_path: PathBuf,
        options: MuxerOptions,
    ) -> Result<Self, MuxerError> {
        let listener = UnixListener::bind(&uds_path).map_err(|source| MuxerError::Bind {
            path: uds_path.clone(),
            source,
        })?;
        listener
            .set_nonblocking(true)
            .map_err(|source| MuxerError::Nonblocking {
                path: uds_path.clone(),
                source,
            })?;
        let socket_file = std::fs::symlink_metadata(&uds_path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        Ok(Muxer {
            guest_cid,
            uds_path,
            listener,
            socket_file,
            conns: HashMap::new(),
            slots: HashMap::new(),
            pending_hosts: 0,
            next_token: FIRST_TOKEN,
            next_local_port: FIRST_LOCAL_PORT,
            rx_queue: VecDeque::new(),
            rsts: VecDeque::new(),
            fd_ops: Vec::new(),
            deadlines: BinaryHeap::new(),
            counters: VsockCounters::default(),
            logged_host_errors: 0,
            logged_timeouts: 0,
            logged_rst_drops: 0,
            options,
        })
    }

    /// The guest's CID.
    pub fn guest_cid(&self) -> u64 {
        self.guest_cid
    }

    /// The listening socket's path.
    pub fn uds_path(&self) -> &Path {
        &self.uds_path
    }

    /// The listening socket, to watch (edge-triggered) for connections.
    pub fn listener_fd(&self) -> RawFd {
        self.listener.as_raw_fd()
    }

    /// What the device has done so far.
    pub fn counters(&self) -> VsockCounters {
        VsockCounters {
            active_connections: (self.conns.len() + self.pending_hosts) as u64,
            ..self.counters
        }
    }

    /// The muxer's idea of now.
    pub fn now(&self) -> Instant {
        (self.options.clock)()
    }

    /// The watch-list changes since the last call, in order.
    pub fn take_fd_ops(&mut self) -> Vec<FdOp> {
        std::mem::take(&mut self.fd_ops)
    }

    fn connection_count(&self) -> usize {
        self.conns.len() + self.pending_hosts
    }

    fn alloc_token(&mut self) -> u32 {
        // At most max_connections tokens are in use, far fewer than the
        // range: this ends.
        loop {
            let t = self.next_token;
            self.next_token = if t >= LAST_TOKEN { FIRST_TOKEN } else { t + 1 };
            if !self.slots.contains_key(&t) {
                return t;
            }
        }
    }

    fn alloc_local_port(&mut self, peer_port: u32) -> u32 {
        loop {
            let p = self.next_local_port;
            self.next_local_port = p.checked_add(1).unwrap_or(FIRST_LOCAL_PORT);
            let key = ConnKey {
                local_port: p,
                peer_port,
            };
            if !self.conns.contains_key(&key) {
                return p;
            }
        }
    }

    fn track_deadline(&mut self, key: ConnKey) {
        let Some(c) = self.conns.get_mut(&key) else {
            return;
        };
        if c.deadline != c.tracked_deadline {
            c.tracked_deadline = c.deadline;
            if let Some(d) = c.deadline {
                self.deadlines.push(Reverse((d, c.token)));
            }
        }
    }

    /// Puts `key` in the receive queue if it has something for the guest.
    fn schedule(&mut self, key: ConnKey) {
        if let Some(c) = self.conns.get_mut(&key) {
            if !c.in_rx_queue && c.has_pending_rx() {
                c.in_rx_queue = true;
                self.rx_queue.push_back(key);
            }
        }
    }

    /// Queues an RST to the guest's `peer_port` from host port
    /// `local_port` (of CID `src_cid`).
    fn queue_rst(&mut self, src_cid: u64, local_port: u32, peer_port: u32) {
        if self.rsts.len() >= MAX_PENDING_RSTS {
            if log_this(&mut self.logged_rst_drops) {
                log::warn!(
                    "vsock: the guest takes no packets; dropped an RST ({} so far)",
                    self.logged_rst_drops
                );
            }
            return;
        }
        self.rsts.push_back(Header {
            src_cid,
            dst_cid: self.guest_cid,
            src_port: local_port,
            dst_port: peer_port,
            type_: TYPE_STREAM,
            op: op::RST,
            ..Default::default()
        });
    }

    /// Ends connection `key`: its stream goes to the event loop to be
    /// forgotten and closed.
    fn remove(&mut self, key: ConnKey) {
        if let Some(c) = self.conns.remove(&key) {
            self.slots.remove(&c.token);
            if c.in_rx_queue {
                self.rx_queue.retain(|k| *k != key);
            }
            self.fd_ops.push(FdOp::Remove(c.into_stream()));
        }
    }

    /// Ends connection `key` with an RST to the guest.
    fn reset(&mut self, key: ConnKey) {
        self.remove(key);
        self.queue_rst(HOST_CID, key.local_port, key.peer_port);
    }

    /// Carries out what a connection decided.
    fn apply(&mut self, key: ConnKey, verdict: Verdict) {
        match verdict {
            Verdict::Keep => {}
            Verdict::Established => {
                self.counters.host_connections += 1;
                log::debug!("vsock: the guest accepted host connection {key:?}");
            }
            Verdict::Reset(why) => {
                match &why {
                    ResetReason::Protocol(what) => self.count_malformed(what),
                    ResetReason::Host(e) => {
                        if log_this(&mut self.logged_host_errors) {
                            log::info!(
                                "vsock: host socket of connection {key:?} failed: {e} ({} so far)",
                                self.logged_host_errors
                            );
                        }
                    }
                    ResetReason::Timeout(what) => {
                        if log_this(&mut self.logged_timeouts) {
                            log::info!(
                                "vsock: reset connection {key:?}: {what} in time ({} so far)",
                                self.logged_timeouts
                            );
                        }
                    }
                    ResetReason::Done => {}
                }
                self.reset(key);
                return;
            }
            Verdict::Close => {
                self.remove(key);
                return;
            }
        }
        self.track_deadline(key);
        self.schedule(key);
    }

    fn count_malformed(&mut self, why: &dyn fmt::Display) {
        if log_this(&mut self.counters.malformed) {
            log::warn!(
                "vsock: the guest sent a malformed packet: {why} ({} so far)",
                self.counters.malformed
            );
        }
    }

    /// Counts a descriptor chain that could not even be read as a
    /// packet, or a receive chain too small for one (no RST: there are no
    /// ports to answer).
    pub fn malformed_chain(&mut self, why: &dyn fmt::Display) {
        self.count_malformed(why);
    }

    /// Answers a malformed guest packet: counted, logged, and, unless it
    /// is an RST itself, answered with an RST that mirrors its addresses
    /// (ending our side of the connection it names, if any).
    pub fn malformed_packet(&mut self, hdr: &Header, why: &dyn fmt::Display) {
        self.count_malformed(why);
        if hdr.op == op::RST {
            return;
        }
        let key = ConnKey {
            local_port: hdr.dst_port,
            peer_port: hdr.src_port,
        };
        if hdr.dst_cid == HOST_CID {
            // The guest's socket for these ports gets the RST: ours goes.
            self.remove(key);
        }
        self.queue_rst(hdr.dst_cid, key.local_port, key.peer_port);
    }

    /// Handles one packet from the guest's transmit queue: `payload` is
    /// its `len` bytes.
    pub fn on_guest_packet(&mut self, hdr: &Header, payload: &[u8]) {
        if hdr.src_cid != self.guest_cid {
            return self.malformed_packet(hdr, &format_args!("source CID {}", hdr.src_cid));
        }
        if hdr.dst_cid != HOST_CID {
            return self.malformed_packet(hdr, &format_args!("destination CID {}", hdr.dst_cid));
        }
        if hdr.type_ != TYPE_STREAM {
            return self.malformed_packet(hdr, &format_args!("socket type {}", hdr.type_));
        }
        if !(op::REQUEST..=op::CREDIT_REQUEST).contains(&hdr.op) {
            return self.malformed_packet(hdr, &format_args!("op {}", hdr.op));
        }
        if hdr.op != op::RW && hdr.len != 0 {
            return self.malformed_packet(
                hdr,
                &format_args!("{} bytes of payload on a {}", hdr.len, hdr.op_name()),
            );
        }
        let key = ConnKey {
            local_port: hdr.dst_port,
            peer_port: hdr.src_port,
        };
        let now = self.now();
        let Some(conn) = self.conns.get_mut(&key) else {
            match hdr.op {
                op::REQUEST => self.guest_connect(hdr, key),
                // Never answer an RST with one.
                op::RST => {}
                _ => self
                    .malformed_packet(hdr, &format_args!("a {} for no connection", hdr.op_name())),
            }
            return;
        };
        let verdict = conn.on_guest_packet(hdr, payload, now);
        if hdr.op == op::RW && !matches!(verdict, Verdict::Reset(ResetReason::Protocol(_))) {
            self.counters.bytes_from_guest += payload.len() as u64;
        }
        self.apply(key, verdict);
    }

    /// A guest REQUEST to host port `key.local_port`: connects to
    /// `<uds_path>_<port>`.
    fn guest_connect(&mut self, hdr: &Header, key: ConnKey) {
        if self.connection_count() >= self.options.max_connections {
            self.counters.refused_by_limit += 1;
            log::debug!("vsock: refused guest connection {key:?}: at the connection limit");
            self.queue_rst(HOST_CID, key.local_port, key.peer_port);
            return;
        }
        let target = guest_target(&self.uds_path, key.local_port);
        match unix::connect_nonblocking(&target) {
            Ok(stream) => {
                let token = self.alloc_token();
                self.fd_ops.push(FdOp::Add {
                    fd: stream.as_raw_fd(),
                    token,
                });
                let conn = Connection::guest_initiated(
                    stream,
                    token,
                    key,
                    self.guest_cid,
                    hdr,
                    self.options.timeouts.linger,
                );
                self.slots.insert(token, Slot::Conn(key));
                self.conns.insert(key, conn);
                self.counters.guest_connections += 1;
                log::debug!("vsock: guest connection {key:?} to {}", target.display());
                self.schedule(key);
            }
            Err(e) => {
                self.counters.connect_failures += 1;
                log::debug!(
                    "vsock: guest connection {key:?}: cannot connect to {}: {e}",
                    target.display()
                );
                self.queue_rst(HOST_CID, key.local_port, key.peer_port);
            }
        }
    }

    /// Accepts host connections waiting on the listener. Returns true when
    /// it stopped at its budget with more possibly waiting: the caller
    /// must re-arm the (edge-triggered) listener.
    pub fn accept_host_connections(&mut self) -> bool {
        for _ in 0..ACCEPT_BUDGET {
            let stream = match self.listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Out of descriptors, say: the rest waits in the
                    // backlog for the next connection's edge.
                    if log_this(&mut self.logged_host_errors) {
                        log::warn!(
                            "vsock: cannot accept on {}: {e} ({} so far)",
                            self.uds_path.display(),
                            self.logged_host_errors
                        );
                    }
                    return false;
                }
            };
            if self.connection_count() >= self.options.max_connections {
                self.counters.refused_by_limit += 1;
                log::debug!("vsock: refused a host connection: at the connection limit");
                continue;
            }
            if let Err(e) = stream.set_nonblocking(true) {
                log::warn!("vsock: cannot make a host connection non-blocking: {e}");
                continue;
            }
            let token = self.alloc_token();
            let deadline = self.now() + self.options.timeouts.connect_line;
            self.fd_ops.push(FdOp::Add {
                fd: stream.as_raw_fd(),
                token,
            });
            self.slots
                .insert(token, Slot::Pending(PendingHost { stream, deadline }));
            self.pending_hosts += 1;
            self.deadlines.push(Reverse((deadline, token)));
        }
        true
    }

    /// Handles readiness of the stream with event-loop token `token`.
    pub fn on_fd_event(&mut self, token: u32, ready: Readiness) {
        match self.slots.get_mut(&token) {
            None => {}
            Some(Slot::Pending(_)) => self.read_connect_line(token, ready.read_closed || ready.hup),
            Some(Slot::Conn(key)) => {
                let key = *key;
                if let Some(conn) = self.conns.get_mut(&key) {
                    let verdict = conn.on_host_event(
                        ready.readable || ready.read_closed,
                        ready.writable,
                        ready.hup,
                    );
                    self.apply(key, verdict);
                }
            }
        }
    }

    /// Forgets a host connection that never became a vsock connection.
    fn drop_pending(&mut self, token: u32) {
        if let Some(Slot::Pending(p)) = self.slots.remove(&token) {
            self.pending_hosts -= 1;
            self.fd_ops.push(FdOp::Remove(p.stream));
        }
    }

    fn bad_line(&mut self, token: u32, why: &dyn fmt::Display) {
        if log_this(&mut self.counters.bad_connect_lines) {
            log::info!(
                "vsock: closed a connection on {}: {why} ({} so far)",
                self.uds_path.display(),
                self.counters.bad_connect_lines
            );
        }
        self.drop_pending(token);
    }

    /// Looks at what a pending host connection sent so far (`ended`: the
    /// host sends no more). The line is only peeked at until it is whole,
    /// so that bytes sent right after it stay in the stream for the guest.
    fn read_connect_line(&mut self, token: u32, ended: bool) {
        let Some(Slot::Pending(p)) = self.slots.get(&token) else {
            return;
        };
        let mut buf = [0u8; MAX_LINE];
        let n = match unix::peek(&p.stream, &mut buf) {
            Ok(0) => return self.drop_pending(token),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return,
            Err(_) => return self.drop_pending(token),
        };
        match connect_line::parse(&buf[..n]) {
            Line::Incomplete if ended => self.bad_line(token, &"it ended inside the CONNECT line"),
            Line::Incomplete => {}
            Line::Malformed(e) => self.bad_line(token, &format_args!("bad CONNECT line: {e}")),
            Line::Connect { port, len } => {
                // The bytes were peeked: reading them cannot block.
                let mut line = [0u8; MAX_LINE];
                match (&p.stream).read(&mut line[..len]) {
                    Ok(got) if got == len => self.host_connect(token, port),
                    _ => self.drop_pending(token),
                }
            }
        }
    }

    /// A host connection asked for guest port `port`.
    fn host_connect(&mut self, token: u32, port: u32) {
        let Some(Slot::Pending(p)) = self.slots.remove(&token) else {
            return;
        };
        self.pending_hosts -= 1;
        let local_port = self.alloc_local_port(port);
        let key = ConnKey {
            local_port,
            peer_port: port,
        };
        let mut conn = Connection::host_initiated(
            p.stream,
            token,
            key,
            self.guest_cid,
            self.options.timeouts.linger,
        );
        conn.deadline = Some(self.now() + self.options.timeouts.request);
        self.slots.insert(token, Slot::Conn(key));
        self.conns.insert(key, conn);
        log::debug!("vsock: host connection {key:?} asked for guest port {port}");
        self.track_deadline(key);
        self.schedule(key);
    }

    /// A connection's descriptor could not be watched: without events it
    /// would hang, so it ends.
    pub fn registration_failed(&mut self, token: u32) {
        match self.slots.get(&token) {
            Some(Slot::Pending(_)) => self.drop_pending(token),
            Some(Slot::Conn(key)) => {
                let key = *key;
                self.reset(key);
            }
            None => {}
        }
    }

    /// The earliest running deadline (possibly one that no longer
    /// applies: waking for it is harmless).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.peek().map(|Reverse((d, _))| *d)
    }

    /// Ends what ran out of time: host connections without a CONNECT
    /// line, requests the guest did not answer, shutdowns the guest did
    /// not finish with an RST, closes a host did not drain.
    pub fn expire(&mut self) {
        let now = self.now();
        while let Some(&Reverse((d, token))) = self.deadlines.peek() {
            if d > now {
                break;
            }
            self.deadlines.pop();
            match self.slots.get(&token) {
                Some(Slot::Pending(p)) if p.deadline == d => {
                    self.bad_line(token, &"no CONNECT line in time");
                }
                Some(Slot::Conn(key)) => {
                    let key = *key;
                    let Some(c) = self.conns.get_mut(&key) else {
                        continue;
                    };
                    if c.deadline == Some(d) {
                        c.deadline = None;
                        let why = c.deadline_reason();
                        self.apply(key, Verdict::Reset(ResetReason::Timeout(why)));
                    }
                }
                _ => {}
            }
        }
    }

    /// Whether there is something for the guest's receive queue.
    pub fn has_rx(&self) -> bool {
        !self.rsts.is_empty() || !self.rx_queue.is_empty()
    }

    /// The next packet for the guest: its header, and the length of the
    /// payload it put at the start of `buf` (whose size is the payload
    /// room of the receive buffer at hand). None when nothing is ready.
    pub fn next_rx(&mut self, buf: &mut [u8]) -> Option<(Header, usize)> {
        if let Some(h) = self.rsts.pop_front() {
            self.counters.rsts_sent += 1;
            return Some((h, 0));
        }
        let now = self.now();
        // Each queued connection gets one look: those with nothing after
        // all leave the queue.
        for _ in 0..self.rx_queue.len() {
            let key = self.rx_queue.pop_front()?;
            let Some(conn) = self.conns.get_mut(&key) else {
                continue;
            };
            conn.in_rx_queue = false;
            match conn.next_rx(buf, now) {
                RxOutcome::Packet(h, n) => {
                    if h.op == op::RW {
                        self.counters.bytes_to_guest += n as u64;
                    }
                    self.track_deadline(key);
                    self.schedule(key);
                    return Some((h, n));
                }
                RxOutcome::Nothing => self.schedule(key),
                RxOutcome::Reset(why) => {
                    self.apply(key, Verdict::Reset(why));
                    if let Some(h) = self.rsts.pop_front() {
                        self.counters.rsts_sent += 1;
                        return Some((h, 0));
                    }
                }
            }
        }
        None
    }

    /// Drops every connection (device reset, transport reset): each host
    /// stream is shut down now, so its peer sees the end at once, and
    /// closed once the event loop has forgotten it.
    pub fn drop_all(&mut self) {
        for (_, c) in self.conns.drain() {
            c.shut_host();
            self.fd_ops.push(FdOp::Remove(c.into_stream()));
        }
        for (_, slot) in self.slots.drain() {
            if let Slot::Pending(p) = slot {
                let _ = p.stream.shutdown(std::net::Shutdown::Both);
                self.fd_ops.push(FdOp::Remove(p.stream));
            }
        }
        self.pending_hosts = 0;
        self.rx_queue.clear();
        self.rsts.clear();
        self.deadlines.clear();
    }

    /// The number of connections of each origin, for tests and logs.
    pub fn connections(&self, origin: Origin) -> usize {
        self.conns.values().filter(|c| c.origin() == origin).count()
    }
}

impl Drop for Muxer {
    fn drop(&mut self) {
        // Remove the socket file if it is still the one we created.
        let ours = std::fs::symlink_metadata(&self.uds_path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        if ours.is_some() && ours == self.socket_file {
            let _ = std::fs::remove_file(&self.uds_path);
        }
    }
}

#[cfg(test)]
#[path = "muxer_tests.rs"]
mod tests;
