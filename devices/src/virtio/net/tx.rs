//! The transmit path: frames the driver queues on the transmitq, written
//! to the backend straight from guest memory (spec §5.1.6.2).

use virtio_queue::{Queue, QueueT};
use vm_memory::bitmap::MS;
use vm_memory::{GuestAddress, GuestMemory, GuestMemoryBackend, Permissions, VolatileSlice};

use super::{NetBackend, MAX_FRAME_LEN, MAX_SEGMENTS, VNET_HDR_LEN};

use crate::rate_limiter::RateLimiter;
use crate::virtio::guest_mem::in_guest;
use crate::virtio::queue::{drain, interrupt_if_wanted, log_this, next_to_serve, Chain};
use crate::virtio::{ChainError, IrqLine};

/// Most chains sent in one call, so that a driver that keeps queueing
/// cannot hold the event loop.
const TX_BUDGET: usize = 256;

/// What the transmit side has done.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxCounters {
    /// Frames written to the backend.
    pub frames: u64,
    /// Their bytes, vnet headers excluded.
    pub bytes: u64,
    /// Chains dropped as malformed (device-writable or indirect
    /// descriptors, buffers outside guest memory, too long or too short),
    /// and available-ring entries that name no chain.
    pub malformed: u64,
    /// Frames the backend refused.
    pub errors: u64,
}

/// The transmit side's scratch space and counters.
#[derive(Debug, Default)]
pub struct Tx {
    /// Guest buffers of the frame being sent, reused from frame to frame;
    /// allocated once for the most a chain may have.
    segments: Vec<(GuestAddress, usize)>,
    /// What happened so far.
    pub counters: TxCounters,
    /// Every frame takes one operation and its bytes, the vnet header
    /// included (as Firecracker counts them).
    pub limiter: RateLimiter,
}

impl Tx {
    /// A transmit side with nothing sent, and no rate limit.
    pub fn new() -> Self {
        Tx {
            segments: Vec::with_capacity(MAX_SEGMENTS),
            counters: TxCounters::default(),
            limiter: RateLimiter::unlimited(),
        }
    }
}

/// Why a transmit chain was dropped.
#[derive(Debug, thiserror::Error)]
enum BadChain {
    #[error("it has a device-writable descriptor")]
    Writable,
    #[error("a buffer lies outside guest memory")]
    OutsideMemory,
    #[error("it holds more than {MAX_FRAME_LEN} bytes")]
    TooLong,
    #[error("it is shorter than the {VNET_HDR_LEN}-byte virtio-net header")]
    TooShort,
    #[error(transparent)]
    Chain(#[from] ChainError),
}

/// Checks a transmit chain and records its buffers in `segments`; returns
/// the frame's length, header included. The chain has at most
/// [`MAX_SEGMENTS`] descriptors, so `segments` never grows.
fn gather<M: GuestMemory>(
    chain: Chain<'_, M>,
    mem: &M,
    segments: &mut Vec<(GuestAddress, usize)>,
) -> Result<usize, BadChain> {
    segments.clear();
    let mut total = 0usize;
    for desc in chain {
        let desc = desc?;
        if desc.is_write_only() {
            return Err(BadChain::Writable);
        }
        let len = desc.len() as usize;
        // Cannot overflow: `total` stays at most MAX_FRAME_LEN before each
        // addition of a u32.
        total += len;
        if total > MAX_FRAME_LEN {
            return Err(BadChain::TooLong);
        }
        if len == 0 {
            continue;
        }
        if !in_guest(mem, desc.addr(), len, Permissions::Read) {
            return Err(BadChain::OutsideMemory);
        }
        segments.push((desc.addr(), len));
    }
    if total < VNET_HDR_LEN {
        return Err(BadChain::TooShort);
    }
    Ok(total)
}

/// The slices of plain guest memory `pm` that hold `segments` (checked by
/// [`gather`]): one per buffer inside one region, straight from its region
/// (vm-memory's slice iterator costs several times more), else one per
/// region the buffer spans.
fn slices_of<'a, P: GuestMemoryBackend + ?Sized>(
    pm: &'a P,
    segments: &'a [(GuestAddress, usize)],
) -> impl Iterator<Item = VolatileSlice<'a, MS<'a, P>>> + 'a {
    segments.iter().flat_map(move |&(addr, len)| {
        let whole = pm.get_slice(addr, len).ok();
        let pieces = whole
            .is_none()
            .then(|| pm.get_slices(addr, len).map_while(Result::ok));
        whole.into_iter().chain(pieces.into_iter().flatten())
    })
}

/// Sends one chain's frame to `backend`, or drops it (counted, logged).
/// Returns false, having sent nothing, when the rate limiter refuses the
/// frame (a malformed chain costs nothing).
fn transmit<M: GuestMemory, B: NetBackend>(
    chain: Chain<'_, M>,
    mem: &M,
    backend: &mut B,
    tx: &mut Tx,
) -> bool {
    let len = match gather(chain, mem, &mut tx.segments) {
        Ok(len) if !tx.limiter.consume(len as u64) => return false,
        Ok(len) => len,
        Err(e) => {
            if log_this(&mut tx.counters.malformed) {
                log::warn!(
                    "virtio-net: dropped a transmit chain: {e} ({} so far)",
                    tx.counters.malformed
                );
            }
            return true;
        }
    };
    // Each checked buffer becomes one slice per memory region it spans; a
    // frame crossing no region boundary is written without a copy.
    let written = match mem.physical_memory() {
        Some(pm) => backend.write_vectored(slices_of(pm, &tx.segments)),
        None => backend.write_vectored(tx.segments.iter().flat_map(|&(addr, len)| {
            mem.get_slices(addr, len, Permissions::Read)
                .into_iter()
                .flatten()
                .map_while(Result::ok)
        })),
    };
    match written {
        Ok(_) => {
            tx.counters.frames += 1;
            tx.counters.bytes += (len - VNET_HDR_LEN) as u64;
        }
        Err(e) => {
            if log_this(&mut tx.counters.errors) {
                log::warn!(
                    "virtio-net: the backend refused a {len}-byte frame: {e} ({} so far)",
                    tx.counters.errors
                );
            }
        }
    }
    true
}

/// Sends every frame queued on the transmitq and returns the chains to the
/// driver (used length 0: the device writes nothing into them), with one
/// interrupt for the batch when the driver wants it. Returns true when it
/// stopped at its budget with frames possibly left: the caller must call
/// again later. A malformed chain is dropped (counted, logged) and the next
/// one sent; only a broken ring ends the pass early, and never with the
/// driver told not to notify. A frame the rate limiter refuses stays in
/// the ring and ends the pass until the refill
/// ([`RateLimiter::take_wait`]).
pub fn process_txq<M: GuestMemory, B: NetBackend>(
    queue: &mut Queue,
    mem: &M,
    backend: &mut B,
    tx: &mut Tx,
    irq: &IrqLine,
) -> Result<bool, virtio_queue::Error> {
    let mut used_any = false;
    let result = drain(queue, mem, |queue| {
        send_batch(queue, mem, backend, tx, &mut used_any)
    });
    interrupt_if_wanted(queue, mem, irq, used_any, "virtio-net")?;
    result
}

/// The loop of [`process_txq`]: sets `used_any` when a chain was
/// returned, and says whether the budget ran out.
fn send_batch<M: GuestMemory, B: NetBackend>(
    queue: &mut Queue,
    mem: &M,
    backend: &mut B,
    tx: &mut Tx,
    used_any: &mut bool,
) -> Result<bool, virtio_queue::Error> {
    let mut sent = 0;
    while let Some(chain) = next_to_serve(
        queue,
        mem,
        MAX_SEGMENTS,
        &mut tx.counters.malformed,
        "virtio-net",
    )? {
        let head = chain.head_index();
        if !transmit(chain, mem, backend, tx) {
            // Give the chain back to the queue, untouched, until the
            // refill.
            queue.set_next_avail(queue.next_avail().wrapping_sub(1));
            return Ok(false);
        }
        queue.add_used(mem, head, 0)?;
        *used_any = true;
        sent += 1;
        if sent == TX_BUDGET {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::net::test_utils::{
        frame, test_irq, test_mem, FakeBackend, TestQueue, INDIRECT, WRITE,
    };
    use crate::virtio::INT_VRING;
    use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor as Raw};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Bytes, GuestMemoryMmap};

    /// Runs the transmit path once over what `tq` holds.
    fn transmit_all(
        mem: &GuestMemoryMmap,
        tq: &TestQueue<'_>,
        backend: &mut FakeBackend,
    ) -> (Tx, IrqLine, bool) {
        let mut q = tq.create_queue();
        let mut tx = Tx::new();
        let irq = test_irq();
        let more = process_txq(&mut q, mem, backend, &mut tx, &irq).unwrap();
        (tx, irq, more)
    }

    #[test]
    fn single_buffer_frame_reaches_the_backend_byte_for_byte() {
        let mem = test_mem();
        let f = frame(1514, 7);
        mem.write_slice(&f, GuestAddress(0x1_0000)).unwrap();
        let mut tq = TestQueue::new(&mem, 0, 16);
        tq.add_chain(&[(0x1_0000, f.len() as u32, 0)]);
        let mut backend = FakeBackend::new();
        let (tx, irq, more) = transmit_all(&mem, &tq, &mut backend);
        assert_eq!(backend.written, vec![f]);
        assert_eq!(tq.used_idx(), 1);
        assert_eq!(tq.used(0), (0, 0));
        assert_eq!(irq.status(), INT_VRING);
        assert!(!more);
        assert_eq!(
            tx.counters,
            TxCounters {
                frames: 1,
                bytes: 1514,
                ..Default::default()
            }
        );
    }

    #[test]
    fn multi_buffer_frames_are_gathered_in_order() {
        let mem = test_mem();
        let a = frame(100, 1);
        let b = frame(60, 2);
        // Frame a: header alone, then its payload in two pieces.
        mem.write_slice(&a[..12], GuestAddress(0x1_0000)).unwrap();
        mem.write_slice(&a[12..50], GuestAddress(0x2_0000)).unwrap();
        mem.write_slice(&a[50..], GuestAddress(0x3_0000)).unwrap();
        mem.write_slice(&b, GuestAddress(0x4_0000)).unwrap();
        let mut tq = TestQueue::new(&mem, 0, 16);
        tq.add_chain(&[(0x1_0000, 12, 0), (0x2_0000, 38, 0), (0x3_0000, 62, 0)]);
        tq.add_chain(&[(0x4_0000, b.len() as u32, 0)]);
        let mut backend = FakeBackend::new();
        let (tx, irq, _) = transmit_all(&mem, &tq, &mut backend);
        assert_eq!(backend.written, vec![a, b]);
        assert_eq!(tq.used_idx(), 2);
        assert_eq!(tq.used(0), (0, 0));
        assert_eq!(tq.used(1), (3, 0));
        assert_eq!(tx.counters.frames, 2);
        assert_eq!(tx.counters.bytes, 160);
        // One interrupt for the batch.
        assert_eq!(irq.event().read().unwrap(), 1);
    }

    #[test]
    fn a_buffer_across_two_memory_regions_is_sent_whole() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[
            (GuestAddress(0), 0x8000),
            (GuestAddress(0x8000), 0x8000),
        ])
        .unwrap();
        let f = frame(100, 9);
        mem.write_slice(&f, GuestAddress(0x7fc0)).unwrap();
        let mut tq = TestQueue::new(&mem, 0, 16);
        tq.add_chain(&[(0x7fc0, f.len() as u32, 0)]);
        let mut backend = FakeBackend::new();
        transmit_all(&mem, &tq, &mut backend);
        assert_eq!(backend.written, vec![f]);
    }

    #[test]
    fn malformed_chains_are_dropped_and_returned_not_fatal() {
        let mem = test_mem();
        let good = frame(64, 3);
        mem.write_slice(&good, GuestAddress(0x1_0000)).unwrap();
        let mut tq = TestQueue::new(&mem, 0, 16);
        // A device-writable buffer.
        tq.add_chain(&[(0x1_0000, 76, WRITE)]);
        // Header fine, payload outside guest memory.
        tq.add_chain(&[(0x1_0000, 12, 0), (0x4000_0000, 64, 0)]);
        // Too long: one byte over the largest frame.
        tq.add_chain(&[(0x2_0000, MAX_FRAME_LEN as u32 + 1, 0)]);
        // Too long in two buffers that each fit guest memory.
        tq.add_chain(&[
            (0x2_0000, 0x8000, 0),
            (0x2_0000, 0x8000, 0),
            (0x2_0000, 27, 0),
        ]);
        // Shorter than the header.
        tq.add_chain(&[(0x1_0000, 11, 0)]);
        // Address overflow.
        tq.add_chain(&[(u64::MAX - 4, 76, 0)]);
        // And a good one after all that.
        tq.add_chain(&[(0x1_0000, good.len() as u32, 0)]);
        let mut backend = FakeBackend::new();
        let (tx, irq, _) = transmit_all(&mem, &tq, &mut backend);
        assert_eq!(backend.written, vec![good]);
        assert_eq!(tq.used_idx(), 7);
        for i in 0..7 {
            assert_eq!(tq.used(i).1, 0);
        }
        assert_eq!(tx.counters.malformed, 6);
        assert_eq!(tx.counters.frames, 1);
        assert_eq!(irq.status(), INT_VRING);
    }

    #[test]
    fn a_head_index_past_the_queue_is_skipped_and_notifications_come_back() {
        let mem = test_mem();
        let f = frame(60, 1);
        mem.write_slice(&f, GuestAddress(0x1_0000)).unwrap();
        let mut tq = TestQueue::new(&mem, 0, 16);
        // An entry naming descriptor 16 of a 16-entry table, then a frame.
        tq.add_head(16);
        tq.add_chain(&[(0x1_0000, f.len() as u32, 0)]);
        let mut backend = FakeBackend::new();
        let (tx, irq, more) = transmit_all(&mem, &tq, &mut backend);
        assert!(!more);
        assert_eq!(backend.written, vec![f]);
        // Only the frame's chain can be returned.
        assert_eq!(tq.used_idx(), 1);
        assert_eq!(tq.used(0), (0, 0));
        assert_eq!(tq.used_flags(), 0, "the driver may notify again");
        assert_eq!(tx.counters.malformed, 1);
        assert_eq!(tx.counters.frames, 1);
        assert_eq!(irq.status(), INT_VRING);
    }

    #[test]
    fn a_broken_available_ring_leaves_notifications_enabled() {
        let mem = test_mem();
        let tq = TestQueue::new(&mem, 0, 16);
        // More new entries than the queue holds.
        tq.skip_avail(100);
        let mut q = tq.create_queue();
        let mut backend = FakeBackend::new();
        let irq = test_irq();
        assert!(process_txq(&mut q, &mem, &mut backend, &mut Tx::new(), &irq).is_err());
        assert_eq!(tq.used_flags(), 0, "the driver may notify again");
        assert_eq!(irq.status(), 0);
    }

    #[test]
    fn a_chain_with_an_indirect_descriptor_is_dropped() {
        let mem = test_mem();
        let f = frame(60, 1);
        mem.write_slice(&f, GuestAddress(0x1_0000)).unwrap();
        let mut tq = TestQueue::new(&mem, 0, 16);
        // The frame, in a table of its own: the device never offered
        // VIRTIO_F_INDIRECT_DESC.
        tq.add_indirect_chain(0x8_0000, &[(0x1_0000, 12, 0), (0x1_000c, 60, 0)]);
        // An indirect descriptor after a direct one.
        tq.add_chain(&[(0x1_0000, 12, 0), (0x8_0000, 32, INDIRECT)]);
        tq.add_chain(&[(0x1_0000, f.len() as u32, 0)]);
        let mut backend = FakeBackend::new();
        let (tx, _, _) = transmit_all(&mem, &tq, &mut backend);
        assert_eq!(backend.written, vec![f]);
        assert_eq!(tq.used_idx(), 3);
        assert_eq!(tx.counters.malformed, 2);
    }

    #[test]
    fn a_chain_longer_than_the_cap_is_dropped_and_the_buffers_stay_small() {
        let mem = test_mem();
        let f = frame(60, 1);
        mem.write_slice(&f, GuestAddress(0x1_0000)).unwrap();
        // A ring larger than the device's, so that a chain can exceed the
        // cap without looping; clear of the frame.
        let vq = MockSplitQueue::create(&mem, GuestAddress(0x8_0000), 4096);
        let chain = |n: usize| {
            let mut descs = vec![Raw::from(SplitDescriptor::new(0x1_0000, 0, 0, 0)); n - 1];
            descs.push(Raw::from(SplitDescriptor::new(
                0x1_0000,
                f.len() as u32,
                0,
                0,
            )));
            descs
        };
        // Linked by `add_desc_chains`: each descriptor but the last gets
        // NEXT to the following one.
        let link = |descs: Vec<Raw>, first: u16| {
            let n = descs.len();
            descs
                .into_iter()
                .enumerate()
                .map(|(i, d)| {
                    let d = SplitDescriptor::from(d);
                    let (flags, next) = if i + 1 < n {
                        (1, first + i as u16 + 1)
                    } else {
                        (0, 0)
                    };
                    Raw::from(SplitDescriptor::new(d.addr().0, d.len(), flags, next))
                })
                .collect::<Vec<_>>()
        };
        vq.add_desc_chains(&link(chain(MAX_SEGMENTS + 1), 0), 0)
            .unwrap();
        let second = MAX_SEGMENTS as u16 + 1;
        vq.add_desc_chains(&link(chain(MAX_SEGMENTS), second), second)
            .unwrap();
        let mut q: Queue = vq.create_queue().unwrap();
        let mut tx = Tx::new();
        let mut backend = FakeBackend::new();
        process_txq(&mut q, &mem, &mut backend, &mut tx, &test_irq()).unwrap();
        // The chain of exactly the cap is sent.
        assert_eq!(backend.written, vec![f]);
        assert_eq!(vq.used().idx().load(), 2);
        assert_eq!(tx.counters.malformed, 1);
        assert!(tx.segments.capacity() <= MAX_SEGMENTS);
    }

    #[test]
    fn a_chain_of_just_the_header_is_sent_one_byte_less_is_not() {
        let mem = test_mem();
        let f = frame(0, 0);
        mem.write_slice(&f, GuestAddress(0x1_0000)).unwrap();
        let mut tq = TestQueue::new(&mem, 0, 16);
        tq.add_chain(&[(0x1_0000, VNET_HDR_LEN as u32, 0)]);
        tq.add_chain(&[(0x1_0000, VNET_HDR_LEN as u32 - 1, 0)]);
        let mut backend = FakeBackend::new();
        let (tx, _, _) = transmit_all(&mem, &tq, &mut backend);
        assert_eq!(backend.written, vec![f]);
        assert_eq!((tx.counters.frames, tx.counters.malformed), (1, 1));
    }

    #[test]
    fn a_chain_of_exactly_the_largest_frame_is_sent() {
        let mem = test_mem();
        let f = frame(MAX_FRAME_LEN - VNET_HDR_LEN, 5);
        mem.write_slice(&f, GuestAddress(0x2_0000)).unwrap();
        let mut tq = TestQueue::new(&mem, 0, 16);
        tq.add_chain(&[(0x2_0000, f.len() as u32, 0)]);
        let mut backend = FakeBackend::new();
        let (tx, _, _) = transmit_all(&mem, &tq, &mut backend);
        assert_eq!(backend.written, vec![f]);
        assert_eq!(tx.counters.malformed, 0);
    }

    #[test]
    fn backend_failures_are_counted_and_the_chain_returned() {
        let mem = test_mem();
        mem.write_slice(&frame(64, 0), GuestAddress(0x1_0000))
            .unwrap();
        let mut tq = TestQueue::new(&mem, 0, 16);
        tq.add_chain(&[(0x1_0000, 76, 0)]);
        let mut backend = FakeBackend::new();
        backend.fail_writes = true;
        let (tx, _, _) = transmit_all(&mem, &tq, &mut backend);
        assert_eq!(tq.used_idx(), 1);
        assert_eq!(tx.counters.errors, 1);
        assert_eq!(tx.counters.frames, 0);
    }

    #[test]
    fn an_empty_queue_raises_no_interrupt() {
        let mem = test_mem();
        let tq = TestQueue::new(&mem, 0, 16);
        let mut backend = FakeBackend::new();
        let (_, irq, more) = transmit_all(&mem, &tq, &mut backend);
        assert_eq!(irq.status(), 0);
        assert!(!more);
    }

    #[test]
    fn a_full_budget_asks_to_be_called_again() {
        let mem = test_mem();
        mem.write_slice(&frame(64, 0), GuestAddress(0x1_0000))
            .unwrap();
        let mut tq = TestQueue::new(&mem, 0, 256);
        let mut q = tq.create_queue();
        let mut tx = Tx::new();
        let irq = test_irq();
        let mut backend = FakeBackend::new();
        // Twice around the ring: the used ring wraps.
        for round in 1..=2u16 {
            tq.add_chains(&[(0x1_0000, 76, 0); TX_BUDGET]);
            assert!(process_txq(&mut q, &mem, &mut backend, &mut tx, &irq).unwrap());
            assert_eq!(tq.used_idx(), round * TX_BUDGET as u16);
        }
        // Nothing left: done.
        assert!(!process_txq(&mut q, &mem, &mut backend, &mut tx, &irq).unwrap());
        assert_eq!(backend.written.len(), 2 * TX_BUDGET);
    }

    #[test]
    fn no_interrupt_when_the_driver_asks_for_none() {
        let mem = test_mem();
        let f = frame(60, 3);
        mem.write_slice(&f, GuestAddress(0x1_0000)).unwrap();
        let mut tq = TestQueue::new(&mem, 0, 16);
        tq.set_avail_flags(1);
        tq.add_chain(&[(0x1_0000, f.len() as u32, 0)]);
        let mut backend = FakeBackend::new();
        let (_, irq, _) = transmit_all(&mem, &tq, &mut backend);
        assert_eq!(tq.used_idx(), 1);
        assert_eq!(irq.status(), 0);
    }

    #[test]
    fn a_rate_limited_transmit_side_sends_in_order_as_tokens_come() {
        use crate::rate_limiter::{BucketConfig, ManualClock};
        let mem = test_mem();
        let frames: Vec<Vec<u8>> = (0..3).map(|i| frame(60, i)).collect();
        let mut tq = TestQueue::new(&mem, 0, 16);
        // A malformed chain first: it costs nothing.
        tq.add_chain(&[(0x1_0000, 76, WRITE)]);
        for (i, f) in frames.iter().enumerate() {
            let addr = 0x1_0000 * (i as u64 + 2);
            mem.write_slice(f, GuestAddress(addr)).unwrap();
            tq.add_chain(&[(addr, f.len() as u32, 0)]);
        }
        let clock = ManualClock::new();
        let mut tx = Tx::new();
        // One frame per 100 ms.
        tx.limiter = RateLimiter::new(
            None,
            Some(BucketConfig::new(1, 0, 100).unwrap()),
            Box::new(clock.clone()),
        );
        let mut q = tq.create_queue();
        let mut backend = FakeBackend::new();
        let irq = test_irq();
        assert!(!process_txq(&mut q, &mem, &mut backend, &mut tx, &irq).unwrap());
        assert_eq!(tq.used_idx(), 2);
        assert_eq!(backend.written.len(), 1);
        assert_eq!(q.next_avail(), 2, "the refused frame is still queued");
        assert_eq!(
            tx.limiter.take_wait(),
            Some(std::time::Duration::from_millis(100))
        );
        for sent in [2, 3] {
            clock.advance(std::time::Duration::from_millis(100));
            tx.limiter.unblock();
            process_txq(&mut q, &mem, &mut backend, &mut tx, &irq).unwrap();
            assert_eq!(backend.written.len(), sent);
        }
        assert_eq!(backend.written, frames);
        assert_eq!(tx.counters.malformed, 1);
        let c = tx.limiter.counters();
        assert_eq!(
            (c.throttled, c.delayed_requests, c.delayed_bytes),
            (2, 2, 144)
        );
    }
}
