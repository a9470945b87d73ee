//! Queue processing of the vsock device (spec §5.10.6): plain functions
//! over (queue, memory, muxer, interrupt), so tests drive them with mock
//! queues.
//!
//! - transmitq: every chain is one packet from the guest, header and
//!   payload split over its device-readable buffers any way the driver
//!   likes; each is handed to the muxer and returned with length 0. The
//!   queue is always drained (within a budget): flow control works per
//!   connection through credit, never by stalling the queue.
//! - receiveq: each chain is a device-writable buffer for one packet from
//!   the muxer; a chain is only taken when the muxer has something, and
//!   put back when that turns out to be nothing after all.
//! - eventq: buffers for `struct virtio_vsock_event`, used for
//!   VIRTIO_VSOCK_EVENT_TRANSPORT_RESET.

use std::fmt;

use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{GuestAddress, GuestMemory};

use super::chain::{self, ChainError, DescTable, Segment};
use super::muxer::Muxer;
use super::packet::{Header, EVENT_LEN, EVENT_TRANSPORT_RESET, HDR_LEN};
use super::MAX_PAYLOAD;
use crate::virtio::queue::should_interrupt;
use crate::virtio::{IrqLine, INT_VRING};

/// Most chains taken from a queue in one pass, so that a busy guest or
/// host cannot hold the event loop.
const BUDGET: usize = 256;

/// Buffers reused by every pass.
pub struct Scratch {
    segments: Vec<Segment>,
    payload: Vec<u8>,
}

impl Default for Scratch {
    fn default() -> Self {
        Self::new()
    }
}

impl Scratch {
    /// Room for one packet of the largest payload.
    pub fn new() -> Self {
        Scratch {
            segments: Vec::with_capacity(16),
            payload: vec![0; MAX_PAYLOAD],
        }
    }
}

/// Why a transmit chain is not a packet.
#[derive(Debug, thiserror::Error)]
pub enum TxError {
    /// The chain itself is broken.
    #[error("transmit chain: {0}")]
    Chain(#[source] ChainError),
    /// Fewer bytes than a header.
    #[error("a {0}-byte transmit chain is shorter than the 44-byte header")]
    Short(usize),
    /// `len` over the largest payload.
    #[error("a payload of {0} bytes is over the {MAX_PAYLOAD}-byte limit")]
    TooLong(u32),
    /// `len` beyond the chain.
    #[error("a payload of {len} bytes in a chain holding {room} after the header")]
    Truncated {
        /// The header's `len`.
        len: u32,
        /// Bytes after the header.
        room: usize,
    },
    /// Guest memory could not be read.
    #[error("cannot read the packet: {0}")]
    Memory(#[source] vm_memory::GuestMemoryError),
}

/// What a transmit chain held: a packet, or why not (with its header when
/// that much could be read, so that the muxer can answer it).
pub enum TxPacket {
    /// A packet; its payload is the first `len` bytes of the scratch
    /// payload buffer.
    Packet(Header),
    /// A broken packet.
    Malformed(Option<Header>, TxError),
}

/// Reads the packet in the transmit chain at `head`.
pub fn read_tx_packet<M: GuestMemory>(
    mem: &M,
    table: DescTable,
    head: u16,
    scratch: &mut Scratch,
) -> TxPacket {
    scratch.segments.clear();
    let walked = chain::walk(
        mem,
        table,
        head,
        false,
        HDR_LEN + MAX_PAYLOAD,
        &mut scratch.segments,
    );
    let mut raw = [0u8; HDR_LEN];
    let n = match chain::read_from(mem, &scratch.segments, 0, &mut raw) {
        Ok(n) => n,
        Err(e) => return TxPacket::Malformed(None, TxError::Memory(e)),
    };
    if n < HDR_LEN {
        let e = match walked {
            Err(e) => TxError::Chain(e),
            Ok(_) => TxError::Short(n),
        };
        return TxPacket::Malformed(None, e);
    }
    let hdr = Header::from_bytes(&raw);
    let room = match walked {
        Ok(total) => total.saturating_sub(HDR_LEN),
        Err(e) => return TxPacket::Malformed(Some(hdr), TxError::Chain(e)),
    };
    let len = hdr.len as usize;
    if len > MAX_PAYLOAD {
        return TxPacket::Malformed(Some(hdr), TxError::TooLong(hdr.len));
    }
    if len > room {
        return TxPacket::Malformed(Some(hdr), TxError::Truncated { len: hdr.len, room });
    }
    match chain::read_from(mem, &scratch.segments, HDR_LEN, &mut scratch.payload[..len]) {
        Ok(n) if n == len => TxPacket::Packet(hdr),
        Ok(_) => TxPacket::Malformed(Some(hdr), TxError::Truncated { len: hdr.len, room }),
        Err(e) => TxPacket::Malformed(Some(hdr), TxError::Memory(e)),
    }
}

fn table_of(queue: &Queue) -> DescTable {
    DescTable {
        addr: GuestAddress(queue.desc_table()),
        size: queue.size(),
    }
}

fn interrupt<M: GuestMemory>(
    queue: &mut Queue,
    mem: &M,
    irq: &IrqLine,
) -> Result<(), virtio_queue::Error> {
    if should_interrupt(queue, mem)? {
        if let Err(e) = irq.trigger(INT_VRING) {
            log::warn!("virtio-vsock: cannot interrupt the guest: {e}");
        }
    }
    Ok(())
}

/// Hands every packet the driver queued for transmission to `muxer`, up
/// to the budget, and returns the chains. Returns true when it stopped at
/// its budget: the caller must call again later.
pub fn process_txq<M: GuestMemory>(
    queue: &mut Queue,
    mem: &M,
    muxer: &mut Muxer,
    scratch: &mut Scratch,
    irq: &IrqLine,
) -> Result<bool, virtio_queue::Error> {
    let table = table_of(queue);
    let mut used = 0;
    let mut more = false;
    loop {
        if used == BUDGET {
            more = true;
            break;
        }
        let Some(chain) = queue.iter(mem)?.next() else {
            break;
        };
        let head = chain.head_index();
        match read_tx_packet(mem, table, head, scratch) {
            TxPacket::Packet(hdr) => {
                let payload = &scratch.payload[..hdr.len as usize];
                muxer.on_guest_packet(&hdr, payload);
            }
            TxPacket::Malformed(Some(hdr), e) => muxer.malformed_packet(&hdr, &e),
            TxPacket::Malformed(None, e) => muxer.malformed_chain(&e),
        }
        queue.add_used(mem, head, 0)?;
        used += 1;
    }
    if used > 0 {
        interrupt(queue, mem, irq)?;
    }
    Ok(more)
}

/// Why a receive chain was returned empty.
struct BadRxChain(Option<ChainError>, usize);

impl fmt::Display for BadRxChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(e) => write!(f, "receive chain: {e}"),
            None => write!(
                f,
                "a {}-byte receive chain is smaller than the 44-byte header",
                self.1
            ),
        }
    }
}

/// Delivers what the muxer has for the guest into the driver's receive
/// buffers, until it has nothing, the buffers run out, or the budget is
/// spent. Returns true when it stopped at its budget.
pub fn process_rxq<M: GuestMemory>(
    queue: &mut Queue,
    mem: &M,
    muxer: &mut Muxer,
    scratch: &mut Scratch,
    irq: &IrqLine,
) -> Result<bool, virtio_queue::Error> {
    let table = table_of(queue);
    let mut used = 0;
    let mut more = false;
    while muxer.has_rx() {
        if used == BUDGET {
            more = true;
            break;
        }
        let Some(chain) = queue.iter(mem)?.next() else {
            // No buffers: the driver's next notification resumes.
            break;
        };
        let head = chain.head_index();
        scratch.segments.clear();
        let room = match chain::walk(
            mem,
            table,
            head,
            true,
            HDR_LEN + MAX_PAYLOAD,
            &mut scratch.segments,
        ) {
            Ok(room) if room >= HDR_LEN => room,
            Ok(room) => {
                muxer.malformed_chain(&BadRxChain(None, room));
                queue.add_used(mem, head, 0)?;
                used += 1;
                continue;
            }
            Err(e) => {
                muxer.malformed_chain(&BadRxChain(Some(e), 0));
                queue.add_used(mem, head, 0)?;
                used += 1;
                continue;
            }
        };
        let Some((hdr, n)) = muxer.next_rx(&mut scratch.payload[..room - HDR_LEN]) else {
            // Nothing after all: the chain goes back for later.
            queue.set_next_avail(queue.next_avail().wrapping_sub(1));
            break;
        };
        let mut written = chain::write_to(mem, &scratch.segments, 0, &hdr.to_bytes());
        if n > 0 && written.is_ok() {
            written = chain::write_to(mem, &scratch.segments, HDR_LEN, &scratch.payload[..n]);
        }
        if let Err(e) = written {
            // Cannot happen: the buffers were checked and guest memory
            // does not change under a running device.
            log::warn!("virtio-vsock: cannot write a received packet: {e}");
        }
        // HDR_LEN + n ≤ HDR_LEN + MAX_PAYLOAD fits a u32.
        queue.add_used(mem, head, (HDR_LEN + n) as u32)?;
        used += 1;
    }
    if used > 0 {
        interrupt(queue, mem, irq)?;
    }
    Ok(more)
}

/// Posts a VIRTIO_VSOCK_EVENT_TRANSPORT_RESET in the driver's next event
/// buffer, when `*pending`; clears it once posted. Buffers too small for
/// the event are returned empty and counted through `muxer`.
pub fn process_eventq<M: GuestMemory>(
    queue: &mut Queue,
    mem: &M,
    pending: &mut bool,
    muxer: &mut Muxer,
    irq: &IrqLine,
) -> Result<(), virtio_queue::Error> {
    let table = table_of(queue);
    let mut used = false;
    let mut segments = Vec::new();
    while *pending {
        let Some(chain) = queue.iter(mem)?.next() else {
            break;
        };
        let head = chain.head_index();
        segments.clear();
        let len = match chain::walk(mem, table, head, true, EVENT_LEN, &mut segments) {
            Ok(room) if room >= EVENT_LEN => {
                let event = EVENT_TRANSPORT_RESET.to_le_bytes();
                match chain::write_to(mem, &segments, 0, &event) {
                    Ok(_) => {
                        *pending = false;
                        EVENT_LEN as u32
                    }
                    Err(e) => {
                        log::warn!("virtio-vsock: cannot write an event: {e}");
                        0
                    }
                }
            }
            Ok(room) => {
                muxer.malformed_chain(&format_args!(
                    "a {room}-byte event buffer is smaller than an event"
                ));
                0
            }
            Err(e) => {
                muxer.malformed_chain(&format_args!("event chain: {e}"));
                0
            }
        };
        queue.add_used(mem, head, len)?;
        used = true;
    }
    if used {
        interrupt(queue, mem, irq)?;
    }
    Ok(())
}

#[cfg(test)]
#[path = "queues_tests.rs"]
mod tests;
