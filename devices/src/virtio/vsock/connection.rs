//! One stream connection between a guest port and a host Unix stream: the
//! handshake, credit-based flow control both ways (spec §5.10.6.3), the
//! orderly shutdown, and the guest's bytes waiting for a slow host.
//!
//! Flow control, host → guest: bytes are read from the Unix stream only
//! when the guest has credit for them (`peer_buf_alloc - (tx_cnt -
//! peer_fwd_cnt)`) and a receive buffer to put them in, straight into that
//! packet. While it has neither, they stay in the kernel's socket buffer
//! and the host's writes block: nothing is buffered here.
//!
//! Guest → host: the device always consumes the transmit queue, so one
//! slow host cannot stall the others' connections. What a host does not
//! take at once waits in `to_host`, which the guest's credit bounds:
//! podvm advertises [`CONN_BUF_SIZE`] of `buf_alloc` and counts in
//! `fwd_cnt` only what the host took. A guest that sends beyond its credit
//! breaks the protocol and the connection is reset.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use super::packet::{op, Header, SHUTDOWN_BOTH, SHUTDOWN_RCV, SHUTDOWN_SEND, TYPE_STREAM};
use super::{unix, HOST_CID};

/// Receive buffer space podvm advertises per connection (`buf_alloc`):
/// the most guest bytes ever waiting here for one host socket.
pub const CONN_BUF_SIZE: u32 = 128 * 1024;
/// A CREDIT_UPDATE goes to the guest once the host has taken this many
/// bytes since the last `fwd_cnt` the guest saw. It is at most
/// [`CONN_BUF_SIZE`], so a guest that used all its credit always hears of
/// new credit once the host drained what it sent.
pub const CREDIT_UPDATE_THRESHOLD: u32 = CONN_BUF_SIZE / 2;
/// How long the guest has to answer a SHUTDOWN of both directions with
/// the RST that ends the connection, and how long podvm waits for a slow
/// host to take the guest's last bytes after the guest's SHUTDOWN, unless
/// told otherwise.
pub const LINGER_TIMEOUT: Duration = Duration::from_secs(2);

/// A connection's ports: podvm's side (the host port, CID 2) and the
/// guest's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnKey {
    /// The port on the host side.
    pub local_port: u32,
    /// The guest's port.
    pub peer_port: u32,
}

/// Who asked for the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A host process, with `CONNECT <port>`.
    Host,
    /// The guest, with a REQUEST to CID 2.
    Guest,
}

/// Why a connection ends with an RST to the guest.
#[derive(Debug)]
pub enum ResetReason {
    /// The guest broke the protocol (counted as a malformed packet).
    Protocol(&'static str),
    /// The host socket failed.
    Host(io::Error),
    /// A deadline passed.
    Timeout(&'static str),
    /// An orderly end: the guest shut both directions down and everything
    /// it sent reached the host.
    Done,
}

/// What the muxer must do with a connection after an event.
#[derive(Debug)]
pub enum Verdict {
    /// Nothing more.
    Keep,
    /// The guest accepted a host-initiated connection.
    Established,
    /// Tear it down and send an RST to the guest.
    Reset(ResetReason),
    /// Tear it down silently (the guest reset it).
    Close,
}

/// What a connection has for the guest's next receive buffer.
#[derive(Debug)]
pub enum RxOutcome {
    /// A packet: its header, and for RW its payload length in the buffer.
    Packet(Header, usize),
    /// Nothing for now.
    Nothing,
    /// The host socket failed: tear it down with an RST.
    Reset(ResetReason),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Host-initiated: the REQUEST is pending or sent, the guest's
    /// RESPONSE is awaited.
    AwaitingResponse,
    /// Data may flow.
    Established,
}

/// One connection.
pub struct Connection {
    key: ConnKey,
    guest_cid: u64,
    origin: Origin,
    /// Its event-loop token.
    pub token: u32,
    stream: UnixStream,
    state: State,
    /// The stream may have bytes (or EOF, or an error) to read: set by
    /// edge-triggered readiness, cleared when a read would block.
    host_readable: bool,
    /// The stream may take bytes: cleared when a write would block.
    host_writable: bool,
    /// The host sends no more (a read returned 0).
    host_eof: bool,
    /// The host closed its end entirely (EPOLLHUP).
    host_hup: bool,
    /// The guest sends no more (SHUTDOWN with SEND).
    guest_no_send: bool,
    /// The guest receives no more (SHUTDOWN with RCV).
    guest_no_recv: bool,
    /// The host stream's write side is shut (after the guest's SEND
    /// shutdown, once its bytes reached the host).
    host_write_shut: bool,
    /// SHUTDOWN flags already sent to the guest.
    shutdown_sent: u32,
    /// The guest shut both directions down: RST once `to_host` drained.
    closing: bool,
    /// Payload bytes sent to the guest (free-running).
    tx_cnt: u32,
    /// The guest's receive buffer space, from its last packet.
    peer_buf_alloc: u32,
    /// Bytes the guest consumed, from its last packet (free-running).
    peer_fwd_cnt: u32,
    /// Payload bytes received from the guest (free-running).
    rx_cnt: u32,
    /// Of those, the bytes the host took (free-running).
    fwd_cnt: u32,
    /// `fwd_cnt` as last sent to the guest.
    last_fwd_cnt_sent: u32,
    /// Bytes for the host that it has not taken yet.
    to_host: VecDeque<u8>,
    /// How many bytes at the front of `to_host` are podvm's own (the
    /// `OK <port>` line), not the guest's.
    own_bytes: usize,
    request_pending: bool,
    response_pending: bool,
    credit_update_pending: bool,
    /// Whether the muxer has it in its queue for the receive path.
    pub in_rx_queue: bool,
    /// When a timeout ends it, if one is running.
    pub deadline: Option<Instant>,
    /// The deadline the muxer last put in its timer heap.
    pub tracked_deadline: Option<Instant>,
    /// How long a shutdown may take (see [`LINGER_TIMEOUT`]).
    linger: Duration,
}

impl Connection {
    fn new(
        stream: UnixStream,
        token: u32,
        key: ConnKey,
        guest_cid: u64,
        origin: Origin,
        state: State,
        linger: Duration,
    ) -> Self {
        Connection {
            key,
            guest_cid,
            origin,
            token,
            stream,
            state,
            host_readable: false,
            host_writable: true,
            host_eof: false,
            host_hup: false,
            guest_no_send: false,
            guest_no_recv: false,
            host_write_shut: false,
            shutdown_sent: 0,
            closing: false,
            tx_cnt: 0,
            peer_buf_alloc: 0,
            peer_fwd_cnt: 0,
            rx_cnt: 0,
            fwd_cnt: 0,
            last_fwd_cnt_sent: 0,
            to_host: VecDeque::new(),
            own_bytes: 0,
            request_pending: false,
            response_pending: false,
            credit_update_pending: false,
            in_rx_queue: false,
            deadline: None,
            tracked_deadline: None,
            linger,
        }
    }

    /// A connection a host process asked for with `CONNECT`: a REQUEST to
    /// the guest is pending. Bytes the host sent after its CONNECT line
    /// may already wait in the stream.
    pub fn host_initiated(
        stream: UnixStream,
        token: u32,
        key: ConnKey,
        guest_cid: u64,
        linger: Duration,
    ) -> Self {
        let mut c = Self::new(
            stream,
            token,
            key,
            guest_cid,
            Origin::Host,
            State::AwaitingResponse,
            linger,
        );
        c.request_pending = true;
        c.host_readable = true;
        c
    }

    /// A connection the guest asked for with `request`, connected to the
    /// host's listener: a RESPONSE is pending.
    pub fn guest_initiated(
        stream: UnixStream,
        token: u32,
        key: ConnKey,
        guest_cid: u64,
        request: &Header,
        linger: Duration,
    ) -> Self {
        let mut c = Self::new(
            stream,
            token,
            key,
            guest_cid,
            Origin::Guest,
            State::Established,
            linger,
        );
        c.response_pending = true;
        c.peer_buf_alloc = request.buf_alloc;
        c.peer_fwd_cnt = request.fwd_cnt;
        c
    }

    /// Who asked for it.
    pub fn origin(&self) -> Origin {
        self.origin
    }

    /// Gives up the host stream, ending the connection.
    pub fn into_stream(self) -> UnixStream {
        self.stream
    }

    /// Bytes the guest may still send to us without overrunning
    /// `to_host`, as the guest would compute it from our latest counters.
    fn buffered_from_guest(&self) -> u32 {
        self.rx_cnt.wrapping_sub(self.fwd_cnt)
    }

    /// Bytes the guest can take now. A guest reporting more consumed than
    /// was sent gets nothing rather than a wrapped-around huge credit.
    pub fn peer_credit(&self) -> u32 {
        let in_flight = self.tx_cnt.wrapping_sub(self.peer_fwd_cnt);
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    /// Whether host bytes should be read for the guest now.
    fn can_send_data(&self) -> bool {
        self.state == State::Established
            && self.host_readable
            && !self.host_eof
            && !self.guest_no_recv
            && self.peer_credit() > 0
    }

    /// The SHUTDOWN flags the guest should have been told by now.
    fn shutdown_due(&self) -> u32 {
        if !self.host_eof {
            return 0;
        }
        if self.host_hup {
            SHUTDOWN_BOTH
        } else {
            SHUTDOWN_SEND
        }
    }

    /// Whether it has something for the guest's receive queue.
    pub fn has_pending_rx(&self) -> bool {
        self.request_pending
            || self.response_pending
            || self.can_send_data()
            || self.shutdown_due() & !self.shutdown_sent != 0
            || self.credit_update_pending
    }

    /// A header from us to the guest on this connection, carrying our
    /// current credit (which makes a separate CREDIT_UPDATE unnecessary).
    fn header(&mut self, op: u16, flags: u32, len: u32) -> Header {
        self.last_fwd_cnt_sent = self.fwd_cnt;
        self.credit_update_pending = false;
        Header {
            src_cid: HOST_CID,
            dst_cid: self.guest_cid,
            src_port: self.key.local_port,
            dst_port: self.key.peer_port,
            len,
            type_: TYPE_STREAM,
            op,
            flags,
            buf_alloc: CONN_BUF_SIZE,
            fwd_cnt: self.fwd_cnt,
        }
    }

    /// Flags a CREDIT_UPDATE once the host took enough since the guest
    /// last heard.
    fn check_credit_update(&mut self) {
        if self.fwd_cnt.wrapping_sub(self.last_fwd_cnt_sent) >= CREDIT_UPDATE_THRESHOLD {
            self.credit_update_pending = true;
        }
    }

    /// Counts `n` bytes taken by the host, podvm's own first.
    fn taken_by_host(&mut self, n: usize) {
        let own = n.min(self.own_bytes);
        self.own_bytes -= own;
        // n - own ≤ CONN_BUF_SIZE: it fits a u32.
        self.fwd_cnt = self.fwd_cnt.wrapping_add((n - own) as u32);
    }

    /// Writes what it can of `to_host`. Then, with it drained, carries out
    /// the guest's shutdown.
    fn flush(&mut self) -> Verdict {
        while self.host_writable && !self.to_host.is_empty() {
            let (front, _) = self.to_host.as_slices();
            match unix::send(&self.stream, front) {
                Ok(n) => {
                    self.to_host.drain(..n);
                    self.taken_by_host(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.host_writable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Verdict::Reset(ResetReason::Host(e)),
            }
        }
        self.check_credit_update();
        if !self.to_host.is_empty() {
            return Verdict::Keep;
        }
        // Give back what a burst made the buffer grow to.
        if self.to_host.capacity() > 4096 {
            self.to_host = VecDeque::new();
        }
        if self.closing {
            return Verdict::Reset(ResetReason::Done);
        }
        if self.guest_no_send && !self.host_write_shut {
            self.host_write_shut = true;
            // The host may have closed already: nothing to tell it then.
            let _ = self.stream.shutdown(Shutdown::Write);
        }
        Verdict::Keep
    }

    /// Queues `data` for the host and writes what it can.
    fn send_to_host(&mut self, data: &[u8]) -> Verdict {
        let mut data = data;
        if self.to_host.is_empty() && self.host_writable {
            // The common case: straight to the socket, no copy kept.
            loop {
                match unix::send(&self.stream, data) {
                    Ok(n) => {
                        self.taken_by_host(n);
                        data = &data[n..];
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        self.host_writable = false;
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Verdict::Reset(ResetReason::Host(e)),
                }
            }
        }
        self.to_host.extend(data);
        self.flush()
    }

    /// Handles a packet from the guest on this connection. Packets are
    /// already checked for CIDs, type, op and length.
    pub fn on_guest_packet(&mut self, hdr: &Header, payload: &[u8], now: Instant) -> Verdict {
        // Every packet carries the sender's credit (spec §5.10.6.3).
        self.peer_buf_alloc = hdr.buf_alloc;
        self.peer_fwd_cnt = hdr.fwd_cnt;
        match hdr.op {
            op::RESPONSE => {
                if self.state != State::AwaitingResponse {
                    return Verdict::Reset(ResetReason::Protocol(
                        "a RESPONSE on an established connection",
                    ));
                }
                self.state = State::Established;
                self.deadline = None;
                let line = format!("OK {}\n", self.key.local_port);
                self.own_bytes += line.len();
                match self.send_to_host(line.as_bytes()) {
                    Verdict::Keep => Verdict::Established,
                    other => other,
                }
            }
            op::RW => {
                if self.state != State::Established {
                    return Verdict::Reset(ResetReason::Protocol(
                        "data before the connection was accepted",
                    ));
                }
                if self.guest_no_send {
                    return Verdict::Reset(ResetReason::Protocol(
                        "data after a SHUTDOWN of sending",
                    ));
                }
                if payload.is_empty() {
                    return Verdict::Keep;
                }
                // payload ≤ MAX_PAYLOAD: the sum cannot overflow.
                if self.buffered_from_guest() as usize + payload.len() > CONN_BUF_SIZE as usize {
                    return Verdict::Reset(ResetReason::Protocol("data beyond the credit given"));
                }
                self.rx_cnt = self.rx_cnt.wrapping_add(payload.len() as u32);
                self.send_to_host(payload)
            }
            op::CREDIT_UPDATE => Verdict::Keep,
            op::CREDIT_REQUEST => {
                self.credit_update_pending = true;
                Verdict::Keep
            }
            op::SHUTDOWN => {
                if hdr.flags & SHUTDOWN_SEND != 0 {
                    self.guest_no_send = true;
                }
                if hdr.flags & SHUTDOWN_RCV != 0 && !self.guest_no_recv {
                    self.guest_no_recv = true;
                    // Unix streams tell the host: its writes now fail.
                    let _ = self.stream.shutdown(Shutdown::Read);
                }
                if self.guest_no_send && self.guest_no_recv {
                    self.closing = true;
                    if !self.to_host.is_empty() {
                        self.deadline = Some(now + self.linger);
                    }
                }
                self.flush()
            }
            op::RST => Verdict::Close,
            op::REQUEST => {
                Verdict::Reset(ResetReason::Protocol("a REQUEST on an existing connection"))
            }
            _ => Verdict::Reset(ResetReason::Protocol("an unknown op")),
        }
    }

    /// Handles readiness of the host stream (edge-triggered: each event
    /// says what changed, the flags keep it until I/O says otherwise).
    pub fn on_host_event(&mut self, readable: bool, writable: bool, hup: bool) -> Verdict {
        if readable || hup {
            self.host_readable = true;
        }
        if hup {
            self.host_hup = true;
            // Writes will fail now; let the flush find out.
            self.host_writable = true;
        }
        if writable {
            self.host_writable = true;
        }
        if self.to_host.is_empty() {
            return Verdict::Keep;
        }
        self.flush()
    }

    /// Produces the next packet for the guest, reading host bytes into
    /// `buf` (the payload room of the guest's receive buffer) when it has
    /// data and credit. `now` starts the linger deadline after a SHUTDOWN
    /// of both directions.
    pub fn next_rx(&mut self, buf: &mut [u8], now: Instant) -> RxOutcome {
        if self.request_pending {
            self.request_pending = false;
            return RxOutcome::Packet(self.header(op::REQUEST, 0, 0), 0);
        }
        if self.response_pending {
            self.response_pending = false;
            return RxOutcome::Packet(self.header(op::RESPONSE, 0, 0), 0);
        }
        if self.can_send_data() && !buf.is_empty() {
            let want = buf.len().min(self.peer_credit() as usize);
            loop {
                match (&self.stream).read(&mut buf[..want]) {
                    Ok(0) => {
                        self.host_eof = true;
                        break;
                    }
                    Ok(n) => {
                        // n ≤ MAX_PAYLOAD.
                        self.tx_cnt = self.tx_cnt.wrapping_add(n as u32);
                        return RxOutcome::Packet(self.header(op::RW, 0, n as u32), n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        self.host_readable = false;
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return RxOutcome::Reset(ResetReason::Host(e)),
                }
            }
        }
        let due = self.shutdown_due();
        if due & !self.shutdown_sent != 0 {
            self.shutdown_sent |= due;
            if self.shutdown_sent == SHUTDOWN_BOTH {
                self.deadline = Some(now + self.linger);
            }
            return RxOutcome::Packet(self.header(op::SHUTDOWN, due, 0), 0);
        }
        if self.credit_update_pending {
            return RxOutcome::Packet(self.header(op::CREDIT_UPDATE, 0, 0), 0);
        }
        RxOutcome::Nothing
    }

    /// Ends both directions of the host stream now, so that the host sees
    /// EOF before the event loop gets to close the descriptor.
    pub fn shut_host(&self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }

    /// Why the running deadline ends the connection.
    pub fn deadline_reason(&self) -> &'static str {
        if self.state == State::AwaitingResponse {
            "the guest did not answer the connection request"
        } else if self.closing {
            "the host did not take the guest's last bytes"
        } else {
            "the guest did not reset the connection after its shutdown"
        }
    }
}

#[cfg(test)]
#[path = "connection_tests.rs"]
mod tests;
