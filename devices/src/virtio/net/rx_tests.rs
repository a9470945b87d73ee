//! Tests of `rx.rs`.
use super::*;
use crate::virtio::net::test_utils::{
    frame, test_irq, test_mem, FakeBackend, TestQueue, INDIRECT, WRITE,
};
use crate::virtio::INT_VRING;
use vm_memory::GuestMemoryMmap;

/// The receive side of one test: memory, the driver's queue, the
/// device's, the backend.
struct Harness<'a> {
    mem: &'a GuestMemoryMmap,
    tq: TestQueue<'a>,
    queue: Queue,
    rx: Rx,
    backend: FakeBackend,
    irq: IrqLine,
}

impl<'a> Harness<'a> {
    fn new(mem: &'a GuestMemoryMmap, size: u16, mrg_rxbuf: bool) -> Self {
        let tq = TestQueue::new(mem, 0, size);
        let queue = tq.create_queue();
        let mut rx = Rx::new();
        rx.set_features(features(mrg_rxbuf, true));
        Harness {
            mem,
            tq,
            queue,
            rx,
            backend: FakeBackend::new(),
            irq: test_irq(),
        }
    }

    /// Posts one single-buffer writable chain per `(addr, len)`.
    fn post(&mut self, buffers: &[(u64, u32)]) {
        for &(addr, len) in buffers {
            self.tq.add_chain(&[(addr, len, WRITE)]);
        }
    }

    fn run(&mut self) -> bool {
        process_rxq(
            &mut self.queue,
            self.mem,
            &mut self.backend,
            &mut self.rx,
            &self.irq,
        )
        .unwrap()
    }

    fn read(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        self.mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
        v
    }
}

/// The features with MRG_RXBUF and GUEST_CSUM as asked.
fn features(mrg_rxbuf: bool, guest_csum: bool) -> u64 {
    (u64::from(mrg_rxbuf) << VIRTIO_NET_F_MRG_RXBUF)
        | (u64::from(guest_csum) << VIRTIO_NET_F_GUEST_CSUM)
}

/// `f` as the driver should see it: `num_buffers` set.
fn with_num_buffers(f: &[u8], n: u16) -> Vec<u8> {
    let mut v = f.to_vec();
    v[10..12].copy_from_slice(&n.to_le_bytes());
    v
}

#[test]
fn a_frame_fills_one_chain_with_num_buffers_one() {
    let mem = test_mem();
    let mut h = Harness::new(&mem, 16, false);
    h.post(&[(0x1_0000, 2048)]);
    let f = frame(1514, 4);
    h.backend.incoming.push_back(f.clone());
    assert!(!h.run());
    assert_eq!(h.tq.used_idx(), 1);
    assert_eq!(h.tq.used(0), (0, f.len() as u32));
    assert_eq!(h.read(0x1_0000, f.len()), with_num_buffers(&f, 1));
    assert_eq!(h.irq.status(), INT_VRING);
    assert_eq!(h.rx.counters.frames, 1);
    assert_eq!(h.rx.counters.bytes, 1514);
    assert!(!h.rx.holds_frame());
}

#[test]
fn a_chain_of_several_buffers_takes_the_frame_in_order() {
    let mem = test_mem();
    let mut h = Harness::new(&mem, 16, false);
    h.tq.add_chain(&[
        (0x1_0000, 12, WRITE),
        (0x2_0000, 100, WRITE),
        (0x3_0000, 4096, WRITE),
    ]);
    let f = frame(1000, 8);
    h.backend.incoming.push_back(f.clone());
    h.run();
    let want = with_num_buffers(&f, 1);
    assert_eq!(h.read(0x1_0000, 12), want[..12]);
    assert_eq!(h.read(0x2_0000, 100), want[12..112]);
    assert_eq!(h.read(0x3_0000, want.len() - 112), want[112..]);
    assert_eq!(h.tq.used(0), (0, f.len() as u32));
}

#[test]
fn without_guest_csum_the_header_flags_are_cleared() {
    let mem = test_mem();
    let mut h = Harness::new(&mem, 16, false);
    h.rx.set_features(features(false, false));
    h.post(&[(0x1_0000, 2048)]);
    h.backend.incoming.push_back(frame(60, 0));
    h.run();
    assert_eq!(h.read(0x1_0000, 1), [0]);
    // With it, DATA_VALID reaches the driver.
    h.rx.set_features(features(false, true));
    h.post(&[(0x2_0000, 2048)]);
    h.backend.incoming.push_back(frame(60, 0));
    h.run();
    assert_eq!(h.read(0x2_0000, 1), [2]);
}

#[test]
fn mergeable_buffers_spread_a_frame_and_count_the_chains() {
    let mem = test_mem();
    let mut h = Harness::new(&mem, 16, true);
    h.post(&[
        (0x1_0000, 1000),
        (0x2_0000, 1000),
        (0x3_0000, 1000),
        (0x4_0000, 1000),
    ]);
    let f = frame(2500 - 12, 1);
    let small = frame(100, 2);
    h.backend.incoming.push_back(f.clone());
    h.backend.incoming.push_back(small.clone());
    h.run();
    // Three chains for the first frame, the fourth for the second.
    assert_eq!(h.tq.used_idx(), 4);
    assert_eq!(h.tq.used(0), (0, 1000));
    assert_eq!(h.tq.used(1), (1, 1000));
    assert_eq!(h.tq.used(2), (2, 500));
    assert_eq!(h.tq.used(3), (3, small.len() as u32));
    let want = with_num_buffers(&f, 3);
    assert_eq!(h.read(0x1_0000, 1000), want[..1000]);
    assert_eq!(h.read(0x2_0000, 1000), want[1000..2000]);
    assert_eq!(h.read(0x3_0000, 500), want[2000..]);
    assert_eq!(h.read(0x4_0000, small.len()), with_num_buffers(&small, 1));
    assert_eq!(h.rx.counters.frames, 2);
    // One interrupt for both.
    assert_eq!(h.irq.event().read().unwrap(), 1);
}

#[test]
fn with_no_buffers_the_frame_stays_in_the_backend() {
    let mem = test_mem();
    let mut h = Harness::new(&mem, 16, false);
    let f = frame(200, 6);
    h.backend.incoming.push_back(f.clone());
    assert!(!h.run());
    assert_eq!(h.backend.incoming.len(), 1, "the frame was not read");
    assert!(!h.rx.holds_frame());
    assert_eq!(h.tq.used_idx(), 0);
    assert_eq!(h.irq.status(), 0);
    // The driver posts a buffer (and notifies): the frame arrives.
    h.post(&[(0x1_0000, 2048)]);
    h.run();
    assert!(h.backend.incoming.is_empty());
    assert_eq!(h.tq.used(0), (0, f.len() as u32));
    assert_eq!(h.read(0x1_0000, f.len()), with_num_buffers(&f, 1));
}

#[test]
fn a_frame_waits_in_the_holding_buffer_for_enough_mergeable_buffers() {
    let mem = test_mem();
    let mut h = Harness::new(&mem, 16, true);
    h.post(&[(0x1_0000, 1000)]);
    let f = frame(2500 - 12, 3);
    h.backend.incoming.push_back(f.clone());
    h.backend.incoming.push_back(frame(50, 0));
    h.run();
    // Read, found too big for the one buffer, held; the next frame
    // stays in the backend; the buffer is not taken.
    assert!(h.rx.holds_frame());
    assert_eq!(h.backend.incoming.len(), 1);
    assert_eq!(h.tq.used_idx(), 0);
    assert_eq!(h.queue.next_avail(), 0);
    assert_eq!(h.rx.counters.deferred, 1);
    // Nothing changes while no buffers come.
    h.run();
    assert_eq!(h.tq.used_idx(), 0);
    h.post(&[(0x2_0000, 1000), (0x3_0000, 1000), (0x4_0000, 1000)]);
    h.run();
    assert_eq!(h.tq.used_idx(), 4);
    assert_eq!(h.read(0x1_0000, 12), with_num_buffers(&f, 3)[..12]);
    assert_eq!(h.tq.used(2), (2, 500));
    assert!(!h.rx.holds_frame());
    assert!(h.backend.incoming.is_empty());
    assert_eq!(h.rx.counters.dropped, 0);
}

#[test]
fn without_mergeable_buffers_a_frame_too_big_for_the_chain_is_dropped() {
    let mem = test_mem();
    let mut h = Harness::new(&mem, 16, false);
    h.post(&[(0x1_0000, 1526)]);
    h.backend.incoming.push_back(frame(9000, 0));
    let small = frame(1514, 1);
    h.backend.incoming.push_back(small.clone());
    h.run();
    // The big frame is gone; the chain it did not fit took the next.
    assert_eq!(h.rx.counters.dropped, 1);
    assert_eq!(h.tq.used_idx(), 1);
    assert_eq!(h.tq.used(0), (0, small.len() as u32));
    assert_eq!(h.read(0x1_0000, small.len()), with_num_buffers(&small, 1));
}

#[test]
fn a_frame_larger_than_the_whole_ring_is_dropped() {
    let mem = test_mem();
    let mut h = Harness::new(&mem, 4, true);
    h.post(&[
        (0x1_0000, 100),
        (0x2_0000, 100),
        (0x3_0000, 100),
        (0x4_0000, 100),
    ]);
    h.backend.incoming.push_back(frame(1000, 0));
    h.run();
    assert_eq!(
        h.rx.counters,
        RxCounters {
            dropped: 1,
            ..Default::default()
        }
    );
    assert!(!h.rx.holds_frame());
    assert_eq!(h.tq.used_idx(), 0);
    assert_eq!(h.queue.next_avail(), 0);
}

#[test]
fn malformed_chains_are_returned_empty_and_the_frame_goes_on() {
    let mem = test_mem();
    let mut h = Harness::new(&mem, 16, true);
    // Device-readable.
    h.tq.add_chain(&[(0x1_0000, 2048, 0)]);
    // Outside guest memory.
    h.tq.add_chain(&[(0x4000_0000, 2048, WRITE)]);
    // Smaller than the header.
    h.tq.add_chain(&[(0x1_0000, 8, WRITE)]);
    h.tq.add_chain(&[(0x2_0000, 2048, WRITE)]);
    let f = frame(100, 0);
    h.backend.incoming.push_back(f.clone());
    h.run();
    assert_eq!(h.rx.counters.malformed, 3);
    assert_eq!(h.tq.used_idx(), 4);
    for i in 0..3 {
        assert_eq!(h.tq.used(i), (u32::from(i), 0));
    }
    assert_eq!(h.tq.used(3), (3, f.len() as u32));
    assert_eq!(h.read(0x2_0000, f.len()), with_num_buffers(&f, 1));
}

#[test]
fn a_head_index_past_the_queue_is_skipped_and_counted() {
    let mem = test_mem();
    let mut h = Harness::new(&mem, 16, false);
    h.tq.add_head(16);
    h.post(&[(0x1_0000, 2048)]);
    let f = frame(100, 0);
    h.backend.incoming.push_back(f.clone());
    assert!(!h.run());
    assert_eq!(h.rx.counters.malformed, 1);
    assert_eq!(h.tq.used_idx(), 1);
    assert_eq!(h.tq.used(0), (0, f.len() as u32));
    assert_eq!(h.read(0x1_0000, f.len()), with_num_buffers(&f, 1));
    assert_eq!(h.irq.status(), INT_VRING);
}

#[test]
fn a_head_index_past_the_queue_among_mergeable_chains_is_counted_once() {
    let mem = test_mem();
    let mut h = Harness::new(&mem, 16, true);
    // A frame of three buffers' worth: one buffer, a bad entry, then (later)
    // two more buffers.
    h.post(&[(0x1_0000, 1000)]);
    h.tq.add_head(16);
    h.backend.incoming.push_back(frame(2500 - 12, 0));
    h.run();
    assert_eq!(h.rx.counters.malformed, 1);
    assert!(h.rx.holds_frame());
    // The buffer taken before the bad entry came back empty.
    assert_eq!(h.tq.used_idx(), 1);
    assert_eq!(h.tq.used(0), (0, 0));
    h.post(&[(0x2_0000, 1000), (0x3_0000, 1000), (0x4_0000, 1000)]);
    h.run();
    assert_eq!(h.rx.counters.malformed, 1, "counted once");
    assert_eq!(h.rx.counters.frames, 1);
    assert_eq!(h.tq.used_idx(), 4);
    assert_eq!(h.tq.used(3), (3, 500));
}

#[test]
fn chains_with_an_indirect_descriptor_are_returned_empty() {
    let mem = test_mem();
    let mut h = Harness::new(&mem, 16, true);
    // Buffers in a table of their own: the device never offered
    // VIRTIO_F_INDIRECT_DESC.
    h.tq.add_indirect_chain(0x8_0000, &[(0x1_0000, 2048, WRITE)]);
    // An indirect descriptor after a direct one.
    h.tq.add_chain(&[(0x1_0000, 12, WRITE), (0x8_0000, 16, INDIRECT)]);
    h.post(&[(0x2_0000, 2048)]);
    let f = frame(100, 0);
    h.backend.incoming.push_back(f.clone());
    h.run();
    assert_eq!(h.rx.counters.malformed, 2);
    assert_eq!(h.tq.used_idx(), 3);
    assert_eq!(h.tq.used(0), (0, 0));
    assert_eq!(h.tq.used(1), (1, 0));
    assert_eq!(h.tq.used(2), (3, f.len() as u32));
    assert_eq!(h.read(0x2_0000, f.len()), with_num_buffers(&f, 1));
    assert_eq!(
        h.read(0x1_0000, 12),
        [0; 12],
        "nothing went into the table's buffers"
    );
}

#[test]
fn a_frame_needing_more_buffers_than_the_cap_is_dropped_and_the_buffers_stay_small() {
    let mem = test_mem();
    let mut h = Harness::new(&mem, 256, true);
    // One chain of 200 one-byte buffers, made available 8 times: 1600
    // buffers in all, for a frame of 1500 bytes.
    let buffers: Vec<_> = (0..200u64).map(|i| (0x1_0000 + i, 1, WRITE)).collect();
    h.tq.add_chain(&buffers);
    for _ in 1..8 {
        h.tq.add_head(0);
    }
    h.backend.incoming.push_back(frame(1500 - 12, 0));
    let small = frame(100, 1);
    h.backend.incoming.push_back(small.clone());
    h.run();
    assert_eq!(h.rx.counters.dropped, 1);
    assert_eq!(h.rx.counters.frames, 1);
    // The small frame took the first chain; the big one took none.
    assert_eq!(h.tq.used_idx(), 1);
    assert_eq!(h.tq.used(0), (0, small.len() as u32));
    assert!(h.rx.segments.capacity() <= MAX_SEGMENTS);
}

#[test]
fn a_malformed_chain_after_good_ones_returns_them_all() {
    let mem = test_mem();
    let mut h = Harness::new(&mem, 16, true);
    h.tq.add_chain(&[(0x1_0000, 100, WRITE)]);
    h.tq.add_chain(&[(0x2_0000, 100, 0)]);
    h.backend.incoming.push_back(frame(500, 0));
    h.run();
    assert_eq!(h.tq.used_idx(), 2);
    assert_eq!(h.tq.used(0), (0, 0));
    assert_eq!(h.tq.used(1), (1, 0));
    assert!(h.rx.holds_frame());
    h.post(&[(0x3_0000, 2048)]);
    h.run();
    assert_eq!(h.tq.used_idx(), 3);
    assert_eq!(h.tq.used(2), (2, 512));
}

#[test]
fn frames_shorter_than_the_header_are_dropped() {
    let mem = test_mem();
    let mut h = Harness::new(&mem, 16, false);
    h.post(&[(0x1_0000, 2048)]);
    h.backend.incoming.push_back(vec![0; 5]);
    h.run();
    assert_eq!(h.rx.counters.dropped, 1);
    assert_eq!(h.tq.used_idx(), 0);
    assert_eq!(h.irq.status(), 0);
}

#[test]
fn a_full_budget_asks_to_be_called_again() {
    let mem = test_mem();
    let mut h = Harness::new(&mem, 256, false);
    let buffers: Vec<_> = (0..256u64).map(|i| (0x1_0000 + i * 128, 128)).collect();
    h.post(&buffers);
    for _ in 0..RX_BUDGET + 1 {
        h.backend.incoming.push_back(frame(60, 0));
    }
    assert!(h.run());
    assert_eq!(usize::from(h.tq.used_idx()), RX_BUDGET);
    assert_eq!(h.backend.incoming.len(), 1);
}

#[test]
fn the_used_ring_wraps_with_frames_across_the_end() {
    let mem = test_mem();
    let mut h = Harness::new(&mem, 4, true);
    // Frames of three chains each around a 4-entry ring: the second
    // frame takes slots 3, 0 and 1.
    h.post(&[(0x1_0000, 100); 4]);
    for n in 0..5u16 {
        let f = frame(250 - 12, n as u8);
        h.backend.incoming.push_back(f.clone());
        h.run();
        assert_eq!(h.tq.used_idx(), 3 * (n + 1));
        assert_eq!(h.tq.used(3 * n).1, 100);
        assert_eq!(h.tq.used(3 * n + 1).1, 100);
        assert_eq!(h.tq.used(3 * n + 2).1, 50);
        // The last chain holds the frame's end.
        let (head, _) = h.tq.used(3 * n + 2);
        assert_eq!(head, u32::from((3 * n + 2) % 4));
        h.post(&[(0x2_0000 + u64::from(n) * 0x1000, 100); 3]);
    }
    assert_eq!(h.read(0x2_3000, 50), frame(250 - 12, 4)[200..]);
    assert_eq!(h.rx.counters.frames, 5);
    assert_eq!(h.rx.counters.dropped, 0);
}

/// `frame(len, seed)` with the header's flags and gso_type set.
fn offload_frame(len: usize, flags: u8, gso_type: u8) -> Vec<u8> {
    let mut f = frame(len, 0);
    f[HDR_FLAGS] = flags;
    f[HDR_GSO_TYPE] = gso_type;
    f
}

#[test]
fn frames_with_offloads_the_driver_did_not_accept_are_dropped() {
    let mem = test_mem();
    let mut h = Harness::new(&mem, 16, false);
    let needs_csum = VIRTIO_NET_HDR_F_NEEDS_CSUM as u8;
    let tcpv4 = VIRTIO_NET_HDR_GSO_TCPV4 as u8;
    let tcpv6 = VIRTIO_NET_HDR_GSO_TCPV6 as u8;
    // After a reset, the driver took neither GUEST_CSUM nor TSO.
    h.rx.set_features(features(false, false));
    h.post(&[(0x1_0000, 2048)]);
    h.backend
        .incoming
        .push_back(offload_frame(60, needs_csum, 0));
    h.backend.incoming.push_back(offload_frame(60, 0, tcpv4));
    let plain = frame(60, 1);
    h.backend.incoming.push_back(plain.clone());
    h.run();
    assert_eq!(h.rx.counters.dropped, 2);
    assert_eq!(h.tq.used_idx(), 1);
    assert_eq!(h.tq.used(0), (0, plain.len() as u32));

    // With GUEST_CSUM and GUEST_TSO4, but not TSO6.
    h.rx.set_features(features(false, true) | (1 << VIRTIO_NET_F_GUEST_TSO4));
    h.post(&[(0x2_0000, 2048), (0x3_0000, 2048)]);
    let tso4 = offload_frame(60, needs_csum, tcpv4);
    h.backend
        .incoming
        .push_back(offload_frame(60, needs_csum, tcpv6));
    h.backend
        .incoming
        .push_back(offload_frame(60, needs_csum, tcpv4 | 0x80));
    h.backend.incoming.push_back(tso4.clone());
    h.run();
    assert_eq!(h.rx.counters.dropped, 4);
    assert_eq!(h.tq.used_idx(), 2);
    assert_eq!(h.read(0x2_0000, tso4.len()), with_num_buffers(&tso4, 1));
}

#[test]
fn a_failed_read_does_not_leave_the_next_frames_unread() {
    let mem = test_mem();
    let mut h = Harness::new(&mem, 16, false);
    h.post(&[(0x1_0000, 2048), (0x2_0000, 2048)]);
    h.backend.failing_reads = 1;
    h.backend.incoming.push_back(frame(60, 0));
    h.backend.incoming.push_back(frame(60, 1));
    assert!(!h.run());
    assert_eq!(h.rx.counters.errors, 1);
    assert_eq!(h.tq.used_idx(), 2);
    assert!(h.backend.incoming.is_empty());
}

#[test]
fn persistent_read_errors_stop_at_the_budget() {
    let mem = test_mem();
    let mut h = Harness::new(&mem, 16, false);
    h.post(&[(0x1_0000, 2048)]);
    h.backend.failing_reads = usize::MAX;
    assert!(h.run());
    assert_eq!(h.rx.counters.errors, RX_BUDGET as u64);
}

#[test]
fn no_interrupt_when_the_driver_asks_for_none() {
    let mem = test_mem();
    let mut h = Harness::new(&mem, 16, false);
    h.tq.set_avail_flags(1);
    h.post(&[(0x1_0000, 2048)]);
    h.backend.incoming.push_back(frame(60, 0));
    h.run();
    assert_eq!(h.tq.used_idx(), 1);
    assert_eq!(h.irq.status(), 0);
}

/// A limiter of `bytes` per `refill_ms` on a clock the test moves.
fn bytes_limiter(bytes: u64, refill_ms: u64) -> (RateLimiter, crate::rate_limiter::ManualClock) {
    use crate::rate_limiter::{BucketConfig, ManualClock};
    let clock = ManualClock::new();
    let l = RateLimiter::new(
        Some(BucketConfig::new(bytes, 0, refill_ms).unwrap()),
        None,
        Box::new(clock.clone()),
    );
    (l, clock)
}

#[test]
fn a_rate_limited_receive_side_holds_the_refused_frame_and_reads_no_further() {
    let mem = test_mem();
    let mut h = Harness::new(&mem, 16, false);
    // Room for two 100-byte frames (112 with their headers) per 10 ms.
    let (l, clock) = bytes_limiter(224, 10);
    h.rx.limiter = l;
    h.post(&[
        (0x1_0000, 2048),
        (0x2_0000, 2048),
        (0x3_0000, 2048),
        (0x4_0000, 2048),
    ]);
    let frames: Vec<Vec<u8>> = (0..4).map(|i| frame(100, i)).collect();
    for f in &frames {
        h.backend.incoming.push_back(f.clone());
    }
    assert!(!h.run());
    assert_eq!(h.tq.used_idx(), 2);
    // The third was read to learn its size and waits in the device; the
    // fourth is still in the backend.
    assert!(h.rx.holds_frame());
    assert_eq!(h.backend.incoming.len(), 1);
    assert_eq!(
        h.rx.limiter.take_wait(),
        Some(std::time::Duration::from_nanos(5_000_000))
    );
    // Blocked: another pass reads nothing.
    h.run();
    assert_eq!((h.tq.used_idx(), h.backend.incoming.len()), (2, 1));
    clock.advance(std::time::Duration::from_millis(10));
    h.rx.limiter.unblock();
    h.run();
    assert_eq!(h.tq.used_idx(), 4);
    assert!(!h.rx.holds_frame());
    assert!(h.backend.incoming.is_empty());
    // Every frame, in order, none lost.
    for (i, f) in frames.iter().enumerate() {
        let addr = 0x1_0000 * (i as u64 + 1);
        assert_eq!(h.tq.used(i as u16), (i as u32, f.len() as u32));
        assert_eq!(h.read(addr + 12, 100), f[12..]);
    }
    let c = h.rx.limiter.counters();
    assert_eq!(
        (c.throttled, c.delayed_requests, c.delayed_bytes),
        (1, 1, 112)
    );
}

#[test]
fn a_frame_admitted_but_waiting_for_buffers_is_not_charged_twice() {
    let mem = test_mem();
    let mut h = Harness::new(&mem, 16, true);
    // Exactly one frame's worth, refilled only after an hour.
    let (l, _clock) = bytes_limiter(112, 3_600_000);
    h.rx.limiter = l;
    // Buffers for part of the frame only: it is held for more.
    h.post(&[(0x1_0000, 64)]);
    h.backend.incoming.push_back(frame(100, 1));
    h.run();
    assert!(h.rx.holds_frame());
    assert_eq!(h.rx.limiter.counters().throttled, 0);
    // The driver posts a buffer that fits: the frame goes without new
    // tokens.
    h.post(&[(0x2_0000, 2048)]);
    h.run();
    assert!(!h.rx.holds_frame());
    assert_eq!(h.tq.used_idx(), 2, "one frame over two chains");
    assert_eq!(h.rx.limiter.counters().throttled, 0);
}
