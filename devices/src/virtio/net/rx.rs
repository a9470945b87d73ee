//! The receive path: frames read from the backend into the buffers the
//! driver posts on the receiveq (spec §5.1.6.3, §5.1.6.4).
//!
//! Flow control: a frame is read only when the driver has posted at least
//! one buffer, so while it posts none, frames wait in the tap's queue (and
//! the kernel, not podvm, drops what overflows it). A frame read before it
//! turned out not to fit the posted buffers is held here until the driver
//! posts more. A frame the rate limiter refuses is held the same way (it
//! was read to learn its size), the frames behind it wait in the tap, and
//! the pass ends until the limiter's refill timer brings the device back.

use std::io;
use std::sync::atomic::Ordering;

use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_ECN, VIRTIO_NET_F_GUEST_TSO4,
    VIRTIO_NET_F_GUEST_TSO6, VIRTIO_NET_F_GUEST_UFO, VIRTIO_NET_F_MRG_RXBUF,
    VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_ECN, VIRTIO_NET_HDR_GSO_NONE,
    VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6, VIRTIO_NET_HDR_GSO_UDP,
};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemory, Permissions};

use super::{NetBackend, MAX_FRAME_LEN, MAX_SEGMENTS, VNET_HDR_LEN};

use crate::rate_limiter::RateLimiter;
use crate::virtio::guest_mem::{in_guest, write_guest};
use crate::virtio::queue::{interrupt_if_wanted, log_this, skip_bad_head, take, Avail, Chain};
use crate::virtio::{ChainError, IrqLine};

/// Most frames taken from the backend in one call, so that a busy tap
/// cannot hold the event loop.
const RX_BUDGET: usize = 256;
/// Offset of `flags` in `virtio_net_hdr_v1` (spec §5.1.6).
const HDR_FLAGS: usize = 0;
/// Offset of `gso_type` in `virtio_net_hdr_v1`.
const HDR_GSO_TYPE: usize = 1;
/// Offset of `num_buffers` in `virtio_net_hdr_v1`.
const HDR_NUM_BUFFERS: usize = 10;
/// Offset of `idx` in the used ring (spec §2.7.8, `struct virtq_used`).
const USED_IDX: u64 = 2;
/// Offset of `ring[0]` in the used ring.
const USED_RING: u64 = 4;
/// Size of one `struct virtq_used_elem` (`le32 id; le32 len`).
const USED_ELEM_SIZE: u64 = 8;

/// What the receive side has done.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RxCounters {
    /// Frames given to the driver.
    pub frames: u64,
    /// Their bytes, vnet headers excluded.
    pub bytes: u64,
    /// Frames dropped: shorter than the vnet header, larger than the
    /// driver's buffers could ever hold (or spread over more than
    /// 1024 of them), or carrying an offload the driver did
    /// not accept (queued in the tap under earlier features).
    pub dropped: u64,
    /// Receive chains returned empty as malformed (read-only or indirect
    /// descriptors, buffers outside guest memory or smaller than the vnet
    /// header), and available-ring entries that name no chain.
    pub malformed: u64,
    /// Times a frame had to wait for the driver to post more buffers.
    pub deferred: u64,
    /// Failed reads from the backend, and receive chains lost to a broken
    /// available ring.
    pub errors: u64,
}

/// A chain taken for the frame being placed.
#[derive(Clone, Copy, Debug)]
struct RxChain {
    head: u16,
    /// End of its buffers in `Rx::segments`.
    segments_end: usize,
}

/// The receive side: the frame buffer, the negotiated options, counters.
pub struct Rx {
    /// One frame from the backend; allocated once.
    frame: Vec<u8>,
    /// Length of the frame held in `frame` waiting for buffers or for
    /// the rate limiter; 0 if none.
    held: usize,
    /// Whether the rate limiter let the held frame through.
    admitted: bool,
    /// Chains and buffers taken for the frame being placed, reused;
    /// allocated once for the most a frame may take (each chain holds at
    /// least one buffer).
    chains: Vec<RxChain>,
    segments: Vec<(GuestAddress, usize)>,
    /// VIRTIO_NET_F_MRG_RXBUF: a frame may span several chains.
    mrg_rxbuf: bool,
    /// VIRTIO_NET_F_GUEST_CSUM: the header's flags may reach the driver.
    guest_csum: bool,
    /// The negotiated features, for the GSO types the driver accepts.
    features: u64,
    /// What happened so far.
    pub counters: RxCounters,
    /// Every frame takes one operation and its bytes, the vnet header
    /// included (as Firecracker counts them).
    pub limiter: RateLimiter,
}

impl Default for Rx {
    fn default() -> Self {
        Self::new()
    }
}

impl Rx {
    /// A receive side holding nothing, with no features negotiated.
    pub fn new() -> Self {
        Rx {
            frame: vec![0; MAX_FRAME_LEN],
            held: 0,
            admitted: false,
            chains: Vec::with_capacity(MAX_SEGMENTS),
            segments: Vec::with_capacity(MAX_SEGMENTS),
            mrg_rxbuf: false,
            guest_csum: false,
            features: 0,
            counters: RxCounters::default(),
            limiter: RateLimiter::unlimited(),
        }
    }

    /// Applies the negotiated features: VIRTIO_NET_F_MRG_RXBUF, and the
    /// GUEST_* offloads that say which headers the driver takes.
    pub fn set_features(&mut self, features: u64) {
        self.features = features;
        self.mrg_rxbuf = self.has(VIRTIO_NET_F_MRG_RXBUF);
        self.guest_csum = self.has(VIRTIO_NET_F_GUEST_CSUM);
    }

    fn has(&self, bit: u32) -> bool {
        self.features & (1 << bit) != 0
    }

    /// Why the driver cannot take the held frame's header, if it cannot: a
    /// checksum or GSO request it did not negotiate (spec §5.1.6.4.1: the
    /// device MUST NOT set NEEDS_CSUM without GUEST_CSUM; §5.1.6.4.2:
    /// gso_type MUST be NONE unless the matching GUEST_* was negotiated).
    fn unacceptable_offload(&self) -> Option<&'static str> {
        let flags = u32::from(self.frame[HDR_FLAGS]);
        if flags & VIRTIO_NET_HDR_F_NEEDS_CSUM != 0 && !self.guest_csum {
            return Some("a partial checksum without GUEST_CSUM");
        }
        let gso = u32::from(self.frame[HDR_GSO_TYPE]);
        if gso & VIRTIO_NET_HDR_GSO_ECN != 0 && !self.has(VIRTIO_NET_F_GUEST_ECN) {
            return Some("GSO with ECN without GUEST_ECN");
        }
        let accepted = match gso & !VIRTIO_NET_HDR_GSO_ECN {
            VIRTIO_NET_HDR_GSO_NONE => true,
            VIRTIO_NET_HDR_GSO_TCPV4 => self.has(VIRTIO_NET_F_GUEST_TSO4),
            VIRTIO_NET_HDR_GSO_TCPV6 => self.has(VIRTIO_NET_F_GUEST_TSO6),
            VIRTIO_NET_HDR_GSO_UDP => self.has(VIRTIO_NET_F_GUEST_UFO),
            // UDP_L4 needs GUEST_USO4/6, never offered; others are unknown.
            _ => false,
        };
        (!accepted).then_some("a GSO type the driver did not accept")
    }

    /// Whether a frame is waiting for the driver's buffers.
    pub fn holds_frame(&self) -> bool {
        self.held != 0
    }

    /// Drops the held frame and the features (device reset).
    pub(super) fn reset(&mut self) {
        self.held = 0;
        self.set_features(0);
    }
}

/// Why a receive chain was returned empty.
#[derive(Debug, thiserror::Error)]
enum BadChain {
    #[error("it has a device-readable descriptor")]
    ReadOnly,
    #[error("a buffer lies outside guest memory")]
    OutsideMemory,
    #[error("it is smaller than the {VNET_HDR_LEN}-byte virtio-net header")]
    TooSmall,
    #[error(transparent)]
    Chain(#[from] ChainError),
}

/// Why no buffers were taken from a receive chain.
enum NotTaken {
    /// The chain is malformed: it goes back to the driver empty.
    Malformed(BadChain),
    /// With it, the frame's buffers would be more than [`MAX_SEGMENTS`]:
    /// the chain stays for a frame that takes fewer.
    TooScattered,
}

impl From<BadChain> for NotTaken {
    fn from(e: BadChain) -> Self {
        NotTaken::Malformed(e)
    }
}

impl From<ChainError> for NotTaken {
    fn from(e: ChainError) -> Self {
        NotTaken::Malformed(e.into())
    }
}

/// What became of the held frame.
enum Placement {
    /// It is in the driver's buffers.
    Delivered,
    /// Malformed chains were handed back empty; the frame is still held.
    ReturnedMalformed,
    /// The posted buffers are not enough for now; the frame is still held.
    NoRoom,
    /// It cannot fit: `room` bytes are all the buffers could take.
    TooBig { room: usize },
    /// It would take more than [`MAX_SEGMENTS`] buffers.
    TooScattered,
}

/// Records the writable buffers of `chain` in `segments`, up to `want`
/// bytes; returns their size and the number of descriptors seen. The
/// frame's buffers, those of earlier chains included, stay within
/// [`MAX_SEGMENTS`], so `segments` never grows.
fn collect<M: GuestMemory>(
    chain: Chain<'_, M>,
    mem: &M,
    segments: &mut Vec<(GuestAddress, usize)>,
    want: usize,
) -> Result<(usize, usize), NotTaken> {
    let mut room = 0usize;
    let mut descs = 0;
    for desc in chain {
        let desc = desc?;
        descs += 1;
        if !desc.is_write_only() {
            return Err(BadChain::ReadOnly.into());
        }
        let len = desc.len() as usize;
        if len == 0 {
            continue;
        }
        if !in_guest(mem, desc.addr(), len, Permissions::Write) {
            return Err(BadChain::OutsideMemory.into());
        }
        if segments.len() == MAX_SEGMENTS {
            return Err(NotTaken::TooScattered);
        }
        segments.push((desc.addr(), len));
        room += len;
        if room >= want {
            break;
        }
    }
    // Each buffer must hold at least the header (spec §5.1.6.3.1).
    if room < VNET_HDR_LEN {
        return Err(BadChain::TooSmall.into());
    }
    Ok((room, descs))
}

/// Writes a used-ring element `nth` places after the next one, without
/// publishing it.
fn write_used<M: GuestMemory>(
    queue: &Queue,
    mem: &M,
    nth: u16,
    head: u16,
    len: u32,
) -> Result<(), virtio_queue::Error> {
    // The queue size is a power of two, so wrapping at 2^16 keeps the slot.
    let slot = queue.next_used().wrapping_add(nth) % queue.size();
    let addr = GuestAddress(queue.used_ring())
        .checked_add(USED_RING + u64::from(slot) * USED_ELEM_SIZE)
        .ok_or(virtio_queue::Error::AddressOverflow)?;
    let elem = u64::from(head) | (u64::from(len) << 32);
    write_guest(mem, addr, &elem.to_le_bytes()).map_err(virtio_queue::Error::GuestMemory)
}

/// Publishes `count` elements written by [`write_used`] with one store of
/// the used index, so that the driver sees all chains of a frame at once: a
/// driver reading `num_buffers` takes the following chains right away
/// (Linux drops the frame when they are not there yet). The device offers
/// no VIRTIO_F_EVENT_IDX, so `Queue::needs_notification` does not need
/// the count that `Queue::add_used` would keep.
fn publish_used<M: GuestMemory>(
    queue: &mut Queue,
    mem: &M,
    count: u16,
) -> Result<(), virtio_queue::Error> {
    let next = queue.next_used().wrapping_add(count);
    let addr = GuestAddress(queue.used_ring())
        .checked_add(USED_IDX)
        .ok_or(virtio_queue::Error::AddressOverflow)?;
    // Release: the frame and the elements are visible before the index.
    mem.store(next.to_le(), addr, Ordering::Release)
        .map_err(virtio_queue::Error::GuestMemory)?;
    queue.set_next_used(next);
    Ok(())
}

/// Whether the driver has posted buffers the device has not taken.
fn has_buffers<M: GuestMemory>(queue: &Queue, mem: &M) -> Result<bool, virtio_queue::Error> {
    Ok(queue.avail_idx(mem, Ordering::Acquire)?.0 != queue.next_avail())
}

/// Places the held frame in the driver's buffers: one chain without
/// MRG_RXBUF, as many as it takes with it.
fn place<M: GuestMemory>(
    queue: &mut Queue,
    mem: &M,
    rx: &mut Rx,
) -> Result<Placement, virtio_queue::Error> {
    let len = rx.held;
    let mut start = queue.next_avail();
    rx.chains.clear();
    rx.segments.clear();
    let mut room = 0;
    let mut descs = 0;
    while room < len {
        let chain = match take(queue, mem, MAX_SEGMENTS) {
            Ok(Some(Avail::Chain(chain))) => Some(chain),
            Ok(Some(Avail::BadHead(head))) => {
                skip_bad_head(&mut rx.counters.malformed, head, queue, "virtio-net");
                if rx.chains.is_empty() {
                    // Nothing taken yet: the next attempt starts after it,
                    // so that it is counted once.
                    start = queue.next_avail();
                    continue;
                }
                // The chains taken before it go back empty, as for a
                // malformed chain, so that no later attempt meets it again.
                for taken in rx.chains.drain(..) {
                    queue.add_used(mem, taken.head, 0)?;
                }
                return Ok(Placement::ReturnedMalformed);
            }
            Ok(None) => None,
            Err(e) => {
                // A broken available ring (the driver moved its index too
                // far) after some chains were taken: hand them back empty,
                // rather than lose them, before giving up.
                for taken in rx.chains.drain(..) {
                    queue.add_used(mem, taken.head, 0)?;
                }
                rx.counters.errors += 1;
                return Err(e);
            }
        };
        let Some(chain) = chain else {
            // Leave the chains taken so far to the next attempt.
            queue.set_next_avail(start);
            // With every descriptor of the ring posted, the driver cannot
            // post more until the device uses some: the frame never fits.
            if descs >= usize::from(queue.size()) {
                return Ok(Placement::TooBig { room });
            }
            return Ok(Placement::NoRoom);
        };
        let head = chain.head_index();
        match collect(chain, mem, &mut rx.segments, len - room) {
            Ok((size, n)) => {
                room += size;
                descs += n;
                rx.chains.push(RxChain {
                    head,
                    segments_end: rx.segments.len(),
                });
            }
            Err(NotTaken::TooScattered) => {
                // The chains stay for a frame that takes fewer buffers.
                queue.set_next_avail(start);
                return Ok(Placement::TooScattered);
            }
            Err(NotTaken::Malformed(e)) => {
                // Hand back, empty, the bad chain and those taken before
                // it (each on its own, as empty frames a driver discards);
                // the frame waits for the next ones.
                for taken in rx.chains.drain(..) {
                    queue.add_used(mem, taken.head, 0)?;
                }
                queue.add_used(mem, head, 0)?;
                if log_this(&mut rx.counters.malformed) {
                    log::warn!(
                        "virtio-net: returned a malformed receive chain: {e} ({} so far)",
                        rx.counters.malformed
                    );
                }
                return Ok(Placement::ReturnedMalformed);
            }
        }
        if room < len && !rx.mrg_rxbuf {
            // One chain must hold the whole frame; the chain stays for a
            // smaller one.
            queue.set_next_avail(start);
            return Ok(Placement::TooBig { room });
        }
    }

    // At most the queue size (≤ 2^15) chains were taken.
    let count = rx.chains.len() as u16;
    rx.frame[HDR_NUM_BUFFERS..HDR_NUM_BUFFERS + 2].copy_from_slice(&count.to_le_bytes());
    if !rx.guest_csum {
        // Without GUEST_CSUM the flags must be zero (spec §5.1.6.4.1).
        rx.frame[HDR_FLAGS] = 0;
    }
    let frame = &rx.frame[..len];
    let mut done = 0;
    let mut first = 0;
    for (nth, chain) in rx.chains.iter().enumerate() {
        let mut used = 0;
        for &(addr, size) in &rx.segments[first..chain.segments_end] {
            let n = size.min(len - done);
            if let Err(e) = write_guest(mem, addr, &frame[done..done + n]) {
                // Cannot happen: the range was checked and guest memory
                // does not change under a running device.
                log::warn!("virtio-net: cannot write a received frame: {e}");
            }
            done += n;
            used += n;
        }
        first = chain.segments_end;
        // `used` ≤ MAX_FRAME_LEN fits a u32; `nth` < count fits a u16.
        write_used(queue, mem, nth as u16, chain.head, used as u32)?;
    }
    publish_used(queue, mem, count)?;
    rx.counters.frames += 1;
    rx.counters.bytes += (len - VNET_HDR_LEN) as u64;
    Ok(Placement::Delivered)
}

/// Moves frames from `backend` into the driver's receive buffers until the
/// backend has none, the driver's buffers run out (the frame then waits in
/// the backend, or in `rx` if it was already read), the rate limiter
/// refuses a frame (it waits in `rx`, and [`RateLimiter::take_wait`] says
/// for how long), or the budget is spent. Interrupts once for the batch when the driver wants it. Returns true
/// when it stopped at its budget: the caller must call again later.
pub fn process_rxq<M: GuestMemory, B: NetBackend>(
    queue: &mut Queue,
    mem: &M,
    backend: &mut B,
    rx: &mut Rx,
    irq: &IrqLine,
) -> Result<bool, virtio_queue::Error> {
    let mut frames = 0;
    let mut used_any = false;
    let mut more = false;
    loop {
        if rx.held == 0 {
            if frames == RX_BUDGET {
                more = true;
                break;
            }
            // Flow control: no buffers, no read.
            if !has_buffers(queue, mem)? {
                break;
            }
            match backend.read(&mut rx.frame) {
                Ok(n) if n < VNET_HDR_LEN => {
                    frames += 1;
                    if log_this(&mut rx.counters.dropped) {
                        log::warn!(
                            "virtio-net: dropped a {n}-byte frame from the backend ({} so far)",
                            rx.counters.dropped
                        );
                    }
                    continue;
                }
                Ok(n) => {
                    frames += 1;
                    rx.held = n;
                    rx.admitted = false;
                    if let Some(why) = rx.unacceptable_offload() {
                        rx.held = 0;
                        if log_this(&mut rx.counters.dropped) {
                            log::warn!(
                                "virtio-net: dropped a {n}-byte frame with {why} ({} so far)",
                                rx.counters.dropped
                            );
                        }
                        continue;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    if log_this(&mut rx.counters.errors) {
                        log::warn!(
                            "virtio-net: cannot read from the backend: {e} ({} so far)",
                            rx.counters.errors
                        );
                    }
                    // The tap is gone (link down): nothing more to read.
                    if e.raw_os_error() == Some(libc::EBADFD) {
                        break;
                    }
                    // An error with one frame: the others queued behind it
                    // must still be read, as an edge-triggered event will
                    // not come again for them. The budget bounds the tries.
                    frames += 1;
                    continue;
                }
            }
        }
        if !rx.admitted {
            if !rx.limiter.consume(rx.held as u64) {
                // The frame waits here, the others in the backend, until
                // the refill timer brings the device back.
                break;
            }
            rx.admitted = true;
        }
        match place(queue, mem, rx)? {
            Placement::Delivered => {
                rx.held = 0;
                used_any = true;
            }
            Placement::ReturnedMalformed => used_any = true,
            Placement::NoRoom => {
                rx.counters.deferred += 1;
                break;
            }
            Placement::TooScattered => {
                if log_this(&mut rx.counters.dropped) {
                    log::warn!(
                        "virtio-net: dropped a {}-byte frame: the receive buffers would be more \
                         than {MAX_SEGMENTS} ({} so far)",
                        rx.held,
                        rx.counters.dropped
                    );
                }
                rx.held = 0;
            }
            Placement::TooBig { room } => {
                if log_this(&mut rx.counters.dropped) {
                    log::warn!(
                        "virtio-net: dropped a {}-byte frame: the receive buffers hold \
                         {room} bytes ({} so far)",
                        rx.held,
                        rx.counters.dropped
                    );
                }
                rx.held = 0;
            }
        }
    }
    interrupt_if_wanted(queue, mem, irq, used_any, "virtio-net")?;
    Ok(more)
}

#[cfg(test)]
#[path = "rx_tests.rs"]
mod tests;
