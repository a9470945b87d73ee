//! Tests of the block device as a whole: features, config space, the file
//! backend, the event loop and the per-pass budget.

use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};

use event_manager::{EventManager, SubscriberOps};
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::*;

#[test]
fn features_offer_read_only_only_for_read_only_drives() {
    let fake = FakeDisk::with_pattern(DISK_LEN);
    let base = (1u64 << VIRTIO_F_VERSION_1)
        | (1 << VIRTIO_BLK_F_FLUSH)
        | (1 << VIRTIO_BLK_F_SEG_MAX)
        | (1 << VIRTIO_BLK_F_BLK_SIZE);
    let rw = Block::with_backend("a".into(), Box::new(fake.clone()), false).unwrap();
    assert_eq!(rw.avail_features(), base);
    let ro = Block::with_backend("b".into(), Box::new(fake), true).unwrap();
    assert_eq!(ro.avail_features(), base | (1 << VIRTIO_BLK_F_RO));
    assert_eq!(ro.device_type(), 2);
    assert_eq!(ro.queue_max_sizes(), &[256]);
}

#[test]
fn config_space_reads_at_any_offset_and_width() {
    // 1 PiB + 3 sectors + a partial one, so that the capacity uses
    // its high half.
    let size = (1 << 50) + 3 * 512 + 100;
    let backend = SizeOnly(FakeDisk::default(), size);
    let block = Block::with_backend("cfg".into(), Box::new(backend), false).unwrap();
    let capacity = (1u64 << 41) + 3;
    assert_eq!(block.capacity_sectors(), capacity);
    let read = |offset: u64, len: usize| {
        let mut b = vec![0xffu8; len];
        block.read_config(offset, &mut b);
        b
    };
    assert_eq!(read(0, 8), capacity.to_le_bytes());
    assert_eq!(read(0, 4), 3u32.to_le_bytes());
    assert_eq!(read(4, 4), (1u32 << 9).to_le_bytes());
    assert_eq!(read(8, 4), [0; 4], "size_max");
    assert_eq!(read(12, 4), 254u32.to_le_bytes(), "seg_max");
    assert_eq!(read(16, 4), [0; 4], "geometry");
    assert_eq!(read(20, 4), 512u32.to_le_bytes(), "blk_size");
    assert_eq!(read(21, 1), [2], "odd byte");
    assert_eq!(read(3, 3), capacity.to_le_bytes()[3..6]);
    assert_eq!(read(22, 4), [0, 0, 0, 0], "straddles the end");
    assert_eq!(read(20, 8), [0, 2, 0, 0, 0, 0, 0, 0]);
    assert_eq!(read(24, 4), [0; 4], "past the end");
    assert_eq!(read(u64::MAX, 4), [0; 4]);
}

/// A backend that only reports a size (no data behind it).
struct SizeOnly(FakeDisk, u64);

impl DiskBackend for SizeOnly {
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.0.read_at(buf, offset)
    }
    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_at(buf, offset)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
    fn size(&self) -> io::Result<u64> {
        Ok(self.1)
    }
}

#[test]
fn config_writes_are_ignored() {
    let mut block = Block::with_backend(
        "cfg".into(),
        Box::new(FakeDisk::with_pattern(DISK_LEN)),
        false,
    )
    .unwrap();
    block.write_config(0, &[0xff; 8]);
    let mut b = [0u8; 8];
    block.read_config(0, &mut b);
    assert_eq!(u64::from_le_bytes(b), 16);
}

#[test]
fn file_backend_reads_back_what_the_guest_wrote() {
    let m = mem();
    let file = tempfile::tempfile().unwrap();
    // A size that is not whole sectors: the tail is not addressable.
    file.set_len(8 * 512 + 100).unwrap();
    let block = Block::new("file".into(), file.try_clone().unwrap(), false).unwrap();
    assert_eq!(block.capacity_sectors(), 8);
    assert_eq!(block.id(), "file");
    let mut d = Disk::new("file".into(), Box::new(file.try_clone().unwrap()), false).unwrap();
    let data: Vec<u8> = (0..1024).map(|i| (i % 256) as u8).collect();
    m.write_slice(&data, GuestAddress(DATA)).unwrap();
    assert_eq!(write_request(&m, &mut d, 6, 1024), answer(1, 0));
    assert_eq!(write_request(&m, &mut d, 7, 1024), ioerr(), "into the tail");
    m.write_slice(&[0; 1024], GuestAddress(DATA)).unwrap();
    assert_eq!(read_request(&m, &mut d, 6, 1024), answer(1025, 0));
    assert_eq!(read_guest(&m, DATA, 1024), data);
    let mut on_disk = vec![0u8; 1024];
    file.read_exact_at(&mut on_disk, 6 * 512).unwrap();
    assert_eq!(on_disk, data);
    write_header(&m, HDR, VIRTIO_BLK_T_FLUSH, 0);
    assert_eq!(
        run(&m, &mut d, &[(HDR, 16, R), (STATUS, 1, W)]),
        answer(1, 0)
    );
    d.flush().unwrap();
}

#[test]
fn no_host_address_outlives_the_request_that_used_it() {
    let m = mem();
    let file = tempfile::tempfile().unwrap();
    file.set_len(8 * 512).unwrap();
    let mut d = Disk::new("file".into(), Box::new(file.try_clone().unwrap()), false).unwrap();
    // Straight between guest memory and the file: the host ranges of the
    // guest's buffers are handed to the kernel, and forgotten after.
    assert_eq!(write_request(&m, &mut d, 0, 1024), answer(1, 0));
    assert_eq!(d.bufs.iovecs_held(), 0);
    assert_eq!(read_request(&m, &mut d, 0, 1024), answer(1025, 0));
    assert_eq!(d.bufs.iovecs_held(), 0);
    // Also after a failed transfer: the file shrank under the guest.
    file.set_len(2 * 512).unwrap();
    assert_eq!(read_request(&m, &mut d, 4, 1024), ioerr());
    assert_eq!(d.bufs.iovecs_held(), 0);
}

#[test]
fn file_backend_moves_scattered_and_region_spanning_buffers() {
    // Two regions; a buffer across their boundary at 0x10_0000 takes
    // vm-memory's general path.
    let m = GuestMemoryMmap::from_ranges(&[
        (GuestAddress(0), 0x10_0000),
        (GuestAddress(0x10_0000), 0x10_0000),
    ])
    .unwrap();
    let file = tempfile::tempfile().unwrap();
    file.set_len(64 * 512).unwrap();
    let mut d = Disk::new("file".into(), Box::new(file.try_clone().unwrap()), false).unwrap();
    let data: Vec<u8> = (0..2048).map(|i| (i * 3 % 256) as u8).collect();
    // OUT: header and the first 512 data bytes in one descriptor, then
    // 1024 bytes across the region boundary, then 512 more.
    write_header(&m, HDR, VIRTIO_BLK_T_OUT, 5);
    m.write_slice(&data[..512], GuestAddress(HDR + 16)).unwrap();
    m.write_slice(&data[512..1536], GuestAddress(0xf_fe00))
        .unwrap();
    m.write_slice(&data[1536..], GuestAddress(DATA)).unwrap();
    let descs = [
        (HDR, 16 + 512, R),
        (0xf_fe00, 1024, R),
        (DATA, 512, R),
        (STATUS, 1, W),
    ];
    assert_eq!(run(&m, &mut d, &descs), answer(1, 0));
    let mut on_disk = vec![0u8; 2048];
    file.read_exact_at(&mut on_disk, 5 * 512).unwrap();
    assert!(on_disk == data);
    // IN: scattered the other way, the status sharing the last buffer.
    write_header(&m, HDR, VIRTIO_BLK_T_IN, 5);
    m.write_slice(&[0; 2048], GuestAddress(0xf_fc00)).unwrap();
    let descs = [(HDR, 16, R), (0xf_fc00, 1536, W), (STATUS - 512, 513, W)];
    assert_eq!(run(&m, &mut d, &descs), answer(2049, 0));
    assert!(read_guest(&m, 0xf_fc00, 1536) == data[..1536]);
    assert!(read_guest(&m, STATUS - 512, 512) == data[1536..]);
    // Past the end of a file that shrank under the guest.
    file.set_len(6 * 512).unwrap();
    assert_eq!(read_request(&m, &mut d, 5, 1024), ioerr());
}

#[test]
fn event_loop_serves_the_queue_while_active() {
    let m = mem();
    let fake = FakeDisk::with_pattern(DISK_LEN);
    let vq = MockSplitQueue::new(&m, 16);
    write_header(&m, HDR, VIRTIO_BLK_T_IN, 1);
    push_chain(&vq, 0, &[(HDR, 16, R), (DATA, 512, W), (STATUS, 1, W)]);
    let block = Arc::new(Mutex::new(
        Block::with_backend("ev".into(), Box::new(fake.clone()), false).unwrap(),
    ));
    let mut events = EventManager::<Arc<Mutex<Block>>>::new().unwrap();
    events.add_subscriber(block.clone());
    let kick = EventFd::new(EFD_NONBLOCK).unwrap();
    let irq = irq();
    let activation = Activation {
        mem: m.clone(),
        queues: vec![vq.create_queue().unwrap()],
        queue_evts: vec![kick.try_clone().unwrap()],
        irq: irq.clone(),
    };
    block.lock().unwrap().activate(activation).unwrap();
    // The state event: the device starts watching its queue and serves
    // what was posted before.
    assert_eq!(events.run_with_timeout(1000).unwrap(), 1);
    assert_eq!(vq.used().idx().load(), 1);
    assert_eq!(read_guest(&m, DATA, 512), fake.range(512, 512));
    assert_eq!(irq.status(), INT_VRING);

    // A queue notification.
    write_header(&m, HDR + 0x100, VIRTIO_BLK_T_IN, 2);
    push_chain(
        &vq,
        3,
        &[(HDR + 0x100, 16, R), (DATA, 512, W), (STATUS, 1, W)],
    );
    kick.write(1).unwrap();
    assert_eq!(events.run_with_timeout(1000).unwrap(), 1);
    assert_eq!(vq.used().idx().load(), 2);
    assert_eq!(read_guest(&m, DATA, 512), fake.range(1024, 512));
    assert!(kick.read().is_err(), "the handler consumed the kick");

    // After a reset the queue is no longer served.
    block.lock().unwrap().reset();
    assert_eq!(events.run_with_timeout(1000).unwrap(), 1);
    push_chain(&vq, 6, &[(HDR, 16, R), (DATA, 512, W), (STATUS, 1, W)]);
    kick.write(1).unwrap();
    events.run_with_timeout(0).unwrap();
    assert_eq!(vq.used().idx().load(), 2);
}

#[test]
fn activation_needs_the_request_queue() {
    let m = mem();
    let mut block = Block::with_backend(
        "q".into(),
        Box::new(FakeDisk::with_pattern(DISK_LEN)),
        false,
    )
    .unwrap();
    let activation = Activation {
        mem: m,
        queues: vec![Queue::new(BLOCK_QUEUE_SIZE).unwrap()],
        queue_evts: vec![EventFd::new(EFD_NONBLOCK).unwrap()],
        irq: irq(),
    };
    assert!(matches!(
        block.activate(activation),
        Err(ActivateError::Queues { need: 1, got: 0 })
    ));
}

/// Makes `n` FLUSH requests available in a 512-entry queue, all the
/// same chain at descriptor 0.
fn many_flushes(m: &GuestMemoryMmap, n: u16) -> MockSplitQueue<'_, GuestMemoryMmap> {
    let vq = MockSplitQueue::new(m, 512);
    write_header(m, HDR, VIRTIO_BLK_T_FLUSH, 0);
    push_chain(&vq, 0, &[(HDR, 16, R), (STATUS, 1, W)]);
    for i in 0..n {
        vq.avail().ring().ref_at(usize::from(i)).unwrap().store(0);
    }
    vq.avail().idx().store(n);
    vq
}

#[test]
fn a_pass_serves_at_most_the_budget_and_asks_to_come_back() {
    let m = mem();
    let mut d = disk(&FakeDisk::with_pattern(DISK_LEN), false);
    let n = REQUEST_BUDGET as u16 + 44;
    let vq = many_flushes(&m, n);
    let mut q: Queue = vq.create_queue().unwrap();
    let irq = irq();
    assert!(process_requestq(&mut q, &m, &mut d, &irq).unwrap());
    assert_eq!(usize::from(vq.used().idx().load()), REQUEST_BUDGET);
    assert!(!process_requestq(&mut q, &m, &mut d, &irq).unwrap());
    assert_eq!(vq.used().idx().load(), n);
}

#[test]
fn a_device_over_its_budget_kicks_its_own_queue_event() {
    let m = mem();
    let fake = FakeDisk::with_pattern(DISK_LEN);
    let n = REQUEST_BUDGET as u16 + 1;
    let vq = many_flushes(&m, n);
    let mut block = Block::with_backend("b".into(), Box::new(fake), false).unwrap();
    let kick = EventFd::new(EFD_NONBLOCK).unwrap();
    let activation = Activation {
        mem: m.clone(),
        queues: vec![vq.create_queue().unwrap()],
        queue_evts: vec![kick.try_clone().unwrap()],
        irq: irq(),
    };
    block.activate(activation).unwrap();
    block.process();
    assert_eq!(usize::from(vq.used().idx().load()), REQUEST_BUDGET);
    assert_eq!(kick.read().unwrap(), 1, "the device comes back later");
    block.process();
    assert_eq!(vq.used().idx().load(), n);
    assert!(kick.read().is_err());
}

#[test]
fn no_interrupt_when_the_driver_asks_for_none() {
    let m = mem();
    let mut d = disk(&FakeDisk::with_pattern(DISK_LEN), false);
    let vq = MockSplitQueue::new(&m, 16);
    write_header(&m, HDR, VIRTIO_BLK_T_FLUSH, 0);
    push_chain(&vq, 0, &[(HDR, 16, R), (STATUS, 1, W)]);
    // VRING_AVAIL_F_NO_INTERRUPT (spec §2.7.7).
    m.write_obj(1u16.to_le(), vq.avail_addr()).unwrap();
    let mut q: Queue = vq.create_queue().unwrap();
    let irq = irq();
    process_requestq(&mut q, &m, &mut d, &irq).unwrap();
    assert_eq!(vq.used().idx().load(), 1);
    assert_eq!(irq.status(), 0);
}

/// A limiter of `ops` operations and `bytes` bytes (either 0: none) per
/// `refill_ms`, on a clock the test moves.
fn limiter(
    ops: u64,
    bytes: u64,
    refill_ms: u64,
) -> (RateLimiter, crate::rate_limiter::ManualClock) {
    use crate::rate_limiter::{BucketConfig, ManualClock};
    let clock = ManualClock::new();
    let bucket = |size| (size > 0).then(|| BucketConfig::new(size, 0, refill_ms).unwrap());
    let l = RateLimiter::new(bucket(bytes), bucket(ops), Box::new(clock.clone()));
    (l, clock)
}

/// Posts `n` one-sector reads of sectors 0, 1, … into DATA + 512 * i, each
/// its own three-descriptor chain with its own header and status.
fn post_reads(m: &GuestMemoryMmap, vq: &MockSplitQueue<GuestMemoryMmap>, n: u16, len: u32) {
    for i in 0..n {
        let hdr = HDR + 0x100 * u64::from(i);
        write_header(m, hdr, VIRTIO_BLK_T_IN, u64::from(i));
        push_chain(
            vq,
            3 * i,
            &[
                (hdr, 16, R),
                (DATA + u64::from(len) * u64::from(i), len, W),
                (STATUS + u64::from(i), 1, W),
            ],
        );
    }
}

/// The used ring's heads, in order.
fn used_heads(vq: &MockSplitQueue<GuestMemoryMmap>) -> Vec<u32> {
    (0..vq.used().idx().load())
        .map(|i| vq.used().ring().ref_at(usize::from(i)).unwrap().load().id())
        .collect()
}

#[test]
fn an_ops_limited_queue_stops_when_out_of_tokens_and_resumes_in_order_after_the_refill() {
    let m = mem();
    let fake = FakeDisk::with_pattern(DISK_LEN);
    let mut d = disk(&fake, false);
    let (l, clock) = limiter(1, 0, 100);
    d.set_rate_limiter(l);
    let vq = MockSplitQueue::new(&m, 16);
    post_reads(&m, &vq, 3, 512);
    let mut q: Queue = vq.create_queue().unwrap();
    let irq = irq();

    // One token: one request; the next stays at the head of the ring.
    assert!(!process_requestq(&mut q, &m, &mut d, &irq).unwrap());
    assert_eq!(used_heads(&vq), [0]);
    assert_eq!(q.next_avail(), 1, "the refused request is still queued");
    assert_eq!(irq.status(), INT_VRING);
    assert_eq!(
        d.limiter.take_wait(),
        Some(std::time::Duration::from_millis(100))
    );
    // Until the timer fires, a notification serves nothing.
    assert!(!process_requestq(&mut q, &m, &mut d, &irq).unwrap());
    assert_eq!(used_heads(&vq), [0]);
    // Half a refill is not enough.
    clock.advance(std::time::Duration::from_millis(50));
    d.limiter.unblock();
    process_requestq(&mut q, &m, &mut d, &irq).unwrap();
    assert_eq!(used_heads(&vq), [0]);
    assert_eq!(
        d.limiter.take_wait(),
        Some(std::time::Duration::from_millis(50))
    );
    for served in [2, 3] {
        clock.advance(std::time::Duration::from_millis(100));
        d.limiter.unblock();
        process_requestq(&mut q, &m, &mut d, &irq).unwrap();
        assert_eq!(vq.used().idx().load(), served);
    }
    // Every request answered, in order, with its own sector.
    assert_eq!(used_heads(&vq), [0, 3, 6]);
    for i in 0..3u64 {
        let status: u8 = m.read_obj(GuestAddress(STATUS + i)).unwrap();
        assert_eq!(status, VIRTIO_BLK_S_OK);
        assert_eq!(
            read_guest(&m, DATA + 512 * i, 512),
            fake.range(512 * i as usize, 512)
        );
    }
    let c = d.rate_limiter().counters();
    assert_eq!(
        (c.throttled, c.delayed_requests, c.delayed_bytes),
        (3, 2, 1024)
    );
    assert_eq!(d.counters.reads, 3);
}

#[test]
fn a_bandwidth_limit_counts_data_bytes_and_lets_a_request_larger_than_the_bucket_go_when_full() {
    let m = mem();
    let mut d = disk(&FakeDisk::with_pattern(DISK_LEN), false);
    // 1024 bytes per 100 ms.
    let (l, clock) = limiter(0, 1024, 100);
    d.set_rate_limiter(l);
    let vq = MockSplitQueue::new(&m, 16);
    // Two 512-byte reads fit; a flush costs no bytes and goes too.
    post_reads(&m, &vq, 2, 512);
    write_header(&m, HDR + 0x800, VIRTIO_BLK_T_FLUSH, 0);
    push_chain(&vq, 6, &[(HDR + 0x800, 16, R), (STATUS + 8, 1, W)]);
    // Then 2048 bytes: more than the bucket holds.
    write_header(&m, HDR + 0x900, VIRTIO_BLK_T_IN, 4);
    push_chain(
        &vq,
        8,
        &[
            (HDR + 0x900, 16, R),
            (DATA + 0x1000, 2048, W),
            (STATUS + 9, 1, W),
        ],
    );
    // And 512 more after it.
    write_header(&m, HDR + 0xa00, VIRTIO_BLK_T_IN, 9);
    push_chain(
        &vq,
        11,
        &[
            (HDR + 0xa00, 16, R),
            (DATA + 0x2000, 512, W),
            (STATUS + 10, 1, W),
        ],
    );
    let mut q: Queue = vq.create_queue().unwrap();
    let irq = irq();
    let ms = std::time::Duration::from_millis;
    process_requestq(&mut q, &m, &mut d, &irq).unwrap();
    assert_eq!(used_heads(&vq), [0, 3, 6]);
    // The large one waits for a full bucket: 100 ms.
    assert_eq!(d.limiter.take_wait(), Some(ms(100)));
    clock.advance(ms(100));
    d.limiter.unblock();
    process_requestq(&mut q, &m, &mut d, &irq).unwrap();
    assert_eq!(used_heads(&vq), [0, 3, 6, 8]);
    // It left the bucket 1024 in debt: the next 512 wait 150 ms.
    assert_eq!(d.limiter.take_wait(), Some(ms(150)));
    clock.advance(ms(150));
    d.limiter.unblock();
    process_requestq(&mut q, &m, &mut d, &irq).unwrap();
    assert_eq!(used_heads(&vq), [0, 3, 6, 8, 11]);
    let c = d.rate_limiter().counters();
    assert_eq!((c.delayed_requests, c.delayed_bytes), (2, 2048 + 512));
}

#[test]
fn requests_without_a_status_byte_cost_nothing() {
    let m = mem();
    let mut d = disk(&FakeDisk::with_pattern(DISK_LEN), false);
    let (l, _clock) = limiter(1, 0, 100);
    d.set_rate_limiter(l);
    let vq = MockSplitQueue::new(&m, 16);
    // No device-writable byte: dropped, free; then a request that takes
    // the one token.
    push_chain(&vq, 0, &[(HDR, 16, R)]);
    post_reads_at(&m, &vq, 1);
    let mut q: Queue = vq.create_queue().unwrap();
    process_requestq(&mut q, &m, &mut d, &irq()).unwrap();
    assert_eq!(used_heads(&vq), [0, 1]);
    assert_eq!(d.counters.errors, 1);
    assert!(!d.limiter.is_blocked());
}

/// One one-sector read at descriptor `first`.
fn post_reads_at(m: &GuestMemoryMmap, vq: &MockSplitQueue<GuestMemoryMmap>, first: u16) {
    write_header(m, HDR + 0x400, VIRTIO_BLK_T_IN, 0);
    push_chain(
        vq,
        first,
        &[(HDR + 0x400, 16, R), (DATA, 512, W), (STATUS, 1, W)],
    );
}

/// A device in an event loop of its own, the loop, and its queue's
/// notification.
type InALoop = (Arc<Mutex<Block>>, EventManager<Arc<Mutex<Block>>>, EventFd);

/// A block device limited by `l`, active on `vq` in an event loop.
fn limited_block_in_a_loop(
    m: &GuestMemoryMmap,
    vq: &MockSplitQueue<GuestMemoryMmap>,
    l: RateLimiter,
) -> InALoop {
    let fake = FakeDisk::with_pattern(DISK_LEN);
    let mut block = Block::with_backend("rl".into(), Box::new(fake), false).unwrap();
    block.set_rate_limiter(l);
    let block = Arc::new(Mutex::new(block));
    let mut events = EventManager::<Arc<Mutex<Block>>>::new().unwrap();
    events.add_subscriber(block.clone());
    let kick = EventFd::new(EFD_NONBLOCK).unwrap();
    let activation = Activation {
        mem: m.clone(),
        queues: vec![vq.create_queue().unwrap()],
        queue_evts: vec![kick.try_clone().unwrap()],
        irq: irq(),
    };
    block.lock().unwrap().activate(activation).unwrap();
    (block, events, kick)
}

#[test]
fn a_throttled_device_waits_on_its_timer_without_spinning_and_the_timer_resumes_it() {
    let m = mem();
    let vq = MockSplitQueue::new(&m, 16);
    post_reads(&m, &vq, 3, 512);
    // One operation per 20 ms.
    let (l, clock) = limiter(1, 0, 20);
    let (block, mut events, kick) = limited_block_in_a_loop(&m, &vq, l);
    // Activation serves the first request; the limiter refuses the second
    // and the timer is armed.
    assert_eq!(events.run_with_timeout(0).unwrap(), 1);
    assert_eq!(used_heads(&vq), [0]);
    assert!(block.lock().unwrap().timer.is_armed());
    // Nothing else is ready: no busy loop. A notification from the driver
    // is consumed and serves nothing.
    assert_eq!(events.run_with_timeout(0).unwrap(), 0);
    kick.write(1).unwrap();
    assert_eq!(events.run_with_timeout(0).unwrap(), 1);
    assert_eq!(used_heads(&vq), [0]);
    // The tokens come, then the timer fires and the queue moves.
    for served in [2, 3] {
        clock.advance(std::time::Duration::from_millis(20));
        assert_eq!(events.run_with_timeout(10_000).unwrap(), 1);
        assert_eq!(vq.used().idx().load(), served);
    }
    assert_eq!(used_heads(&vq), [0, 3, 6]);
    // The queue is empty: the timer is not armed again.
    assert!(!block.lock().unwrap().timer.is_armed());
    assert_eq!(block.lock().unwrap().rate_limiter().counters().throttled, 2);
}

#[test]
fn an_update_while_throttled_serves_the_waiting_requests_under_the_new_limits() {
    use crate::rate_limiter::BucketUpdate;
    let m = mem();
    let vq = MockSplitQueue::new(&m, 16);
    post_reads(&m, &vq, 3, 512);
    // One operation per hour: without the update, nothing more goes.
    let (l, _clock) = limiter(1, 0, 3_600_000);
    let (block, mut events, _kick) = limited_block_in_a_loop(&m, &vq, l);
    assert_eq!(events.run_with_timeout(0).unwrap(), 1);
    assert_eq!(used_heads(&vq), [0]);
    // No more operations limit: the device looks at its queue again.
    block
        .lock()
        .unwrap()
        .update_rate_limiter(BucketUpdate::Keep, BucketUpdate::Disable);
    assert!(!block.lock().unwrap().timer.is_armed());
    assert_eq!(events.run_with_timeout(0).unwrap(), 1);
    assert_eq!(used_heads(&vq), [0, 3, 6]);
    let c = block.lock().unwrap().rate_limiter().counters();
    assert_eq!((c.throttled, c.delayed_requests), (1, 1));
}
