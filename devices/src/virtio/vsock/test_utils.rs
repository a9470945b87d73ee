//! Fixtures shared by the vsock device's tests: guest memory, the driver's
//! side of the three queues, a fake clock, and packet builders.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::mock::{MockSplitQueue, UsedRing};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::chain::DescTable;
use super::event_handler::readiness;
use super::muxer::{Clock, FdOp, Muxer, MuxerOptions};
use super::packet::{Header, HDR_LEN, TYPE_STREAM};
use super::queues::{process_rxq, process_txq, Scratch};
use super::HOST_CID;
use crate::virtio::IrqLine;

/// Descriptor flag: another descriptor follows (spec §2.7.5).
pub const NEXT: u16 = 1;
/// Descriptor flag: device-writable.
pub const WRITE: u16 = 2;
/// Descriptor flag: the buffer is an indirect descriptor table.
pub const INDIRECT: u16 = 4;
/// Where a [`TestQueue`]'s used ring lies, from the queue's start.
const USED_RING_OFFSET: u64 = 0x2000;
/// The guest's CID in tests.
pub const GUEST_CID: u64 = 3;

/// 16 MiB of guest memory at 0: queues in the first MiB, buffers above.
pub fn test_mem() -> GuestMemoryMmap {
    GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x100_0000)]).unwrap()
}

/// An interrupt line on a fresh eventfd.
pub fn test_irq() -> IrqLine {
    IrqLine::new(EventFd::new(EFD_NONBLOCK).unwrap())
}

/// A clock that only moves when told.
#[derive(Clone)]
pub struct FakeClock(Arc<Mutex<Instant>>);

impl FakeClock {
    pub fn new() -> Self {
        FakeClock(Arc::new(Mutex::new(Instant::now())))
    }

    pub fn advance(&self, by: Duration) {
        *self.0.lock().unwrap() += by;
    }

    pub fn clock(&self) -> Clock {
        let t = self.0.clone();
        Arc::new(move || *t.lock().unwrap())
    }
}

/// Options with `max` connections and `clock`.
pub fn options(max: usize, clock: &FakeClock) -> MuxerOptions {
    MuxerOptions {
        max_connections: max,
        clock: clock.clock(),
        ..Default::default()
    }
}

/// The driver's side of a split queue of at most 256 entries, in the
/// 12 KiB from `start`: a [`MockSplitQueue`] for the descriptor table and
/// the available ring, which it posts to with wrap-around, and a used ring
/// of its own (the mock's overlaps the end of its available ring).
pub struct TestQueue<'a> {
    vq: MockSplitQueue<'a, GuestMemoryMmap>,
    used: UsedRing<'a, GuestMemoryMmap>,
    used_addr: GuestAddress,
    size: u16,
    next_desc: u16,
}

impl<'a> TestQueue<'a> {
    pub fn new(mem: &'a GuestMemoryMmap, start: u64, size: u16) -> Self {
        assert!(size <= 256);
        let used_addr = GuestAddress(start + USED_RING_OFFSET);
        TestQueue {
            vq: MockSplitQueue::create(mem, GuestAddress(start), size),
            used: UsedRing::new(mem, used_addr, size),
            used_addr,
            size,
            next_desc: 0,
        }
    }

    /// The device's view of the queue.
    pub fn create_queue(&self) -> Queue {
        let mut q: Queue = self.vq.create_queue().unwrap();
        q.set_used_ring_address(
            Some(self.used_addr.0 as u32),
            Some((self.used_addr.0 >> 32) as u32),
        );
        q
    }

    /// The descriptor table, as the device walks it.
    pub fn desc_table(&self) -> DescTable {
        DescTable {
            addr: self.vq.desc_table_addr(),
            size: self.size,
        }
    }

    /// Writes descriptor `index` directly.
    pub fn set_desc(&self, index: u16, d: RawDescriptor) {
        self.vq.desc_table().store(index, d).unwrap();
    }

    /// Makes `head` available.
    pub fn publish(&self, head: u16) {
        let idx = self.vq.avail().idx().load();
        self.vq
            .avail()
            .ring()
            .ref_at(usize::from(idx % self.size))
            .unwrap()
            .store(head);
        self.vq.avail().idx().store(idx.wrapping_add(1));
    }

    /// Posts one chain of `(addr, len, flags)` buffers, linked in order;
    /// returns its head.
    pub fn add_chain(&mut self, buffers: &[(u64, u32, u16)]) -> u16 {
        let head = self.next_desc;
        for (i, &(addr, len, flags)) in buffers.iter().enumerate() {
            let index = self.next_desc;
            self.next_desc = (self.next_desc + 1) % self.size;
            let (flags, next) = if i + 1 < buffers.len() {
                (flags | NEXT, self.next_desc)
            } else {
                (flags, 0)
            };
            self.set_desc(
                index,
                RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next)),
            );
        }
        self.publish(head);
        head
    }

    /// The available ring's index.
    pub fn avail_idx(&self) -> u16 {
        self.vq.avail().idx().load()
    }

    /// The used ring's index.
    pub fn used_idx(&self) -> u16 {
        self.used.idx().load()
    }

    /// The `n`th used element ever, as (chain head, length).
    pub fn used(&self, n: u16) -> (u32, u32) {
        let e = self
            .used
            .ring()
            .ref_at(usize::from(n % self.size))
            .unwrap()
            .load();
        (e.id(), e.len())
    }
}

/// A guest packet header on the connection from guest port `src_port` to
/// host port `dst_port`.
pub fn guest_hdr(op: u16, src_port: u32, dst_port: u32) -> Header {
    Header {
        src_cid: GUEST_CID,
        dst_cid: HOST_CID,
        src_port,
        dst_port,
        len: 0,
        type_: TYPE_STREAM,
        op,
        flags: 0,
        buf_alloc: 256 * 1024,
        fwd_cnt: 0,
    }
}

/// `hdr` followed by `payload`, with `len` set.
pub fn packet_bytes(hdr: &Header, payload: &[u8]) -> Vec<u8> {
    let mut h = *hdr;
    h.len = payload.len() as u32;
    let mut v = h.to_bytes().to_vec();
    v.extend_from_slice(payload);
    v
}

/// Where buffers are carved from.
const BUF_START: u64 = 0x10_0000;
const BUF_END: u64 = 0x100_0000;
/// Event data of the listener in a [`Rig`]'s epoll set.
const LISTENER: u32 = u32::MAX - 1;

/// The driver's side of a vsock device: memory and the receive, transmit
/// and event queues, with helpers to post packets and buffers and to read
/// what the device returned.
pub struct Driver<'a> {
    pub mem: &'a GuestMemoryMmap,
    pub rxq: TestQueue<'a>,
    pub txq: TestQueue<'a>,
    pub evq: TestQueue<'a>,
    /// Buffers of each posted receive chain, by head.
    rx_buffers: HashMap<u16, Vec<(u64, u32)>>,
    rx_seen: u16,
    /// Next free guest address for buffers (wraps).
    next_buf: u64,
}

impl<'a> Driver<'a> {
    /// Queues of 256 entries (the event queue: 16).
    pub fn new(mem: &'a GuestMemoryMmap) -> Self {
        Driver {
            mem,
            rxq: TestQueue::new(mem, 0, 256),
            txq: TestQueue::new(mem, 0x4000, 256),
            evq: TestQueue::new(mem, 0x8000, 16),
            rx_buffers: HashMap::new(),
            rx_seen: 0,
            next_buf: BUF_START,
        }
    }

    /// The device's view of the three queues, in order.
    pub fn queues(&self) -> Vec<Queue> {
        vec![
            self.rxq.create_queue(),
            self.txq.create_queue(),
            self.evq.create_queue(),
        ]
    }

    /// A fresh guest buffer of `len` bytes.
    pub fn alloc(&mut self, len: u32) -> u64 {
        let len = u64::from(len).next_multiple_of(64).max(64);
        if self.next_buf + len > BUF_END {
            self.next_buf = BUF_START;
        }
        let at = self.next_buf;
        self.next_buf += len;
        at
    }

    /// Posts raw bytes as a transmit chain split at `cuts` (offsets).
    pub fn post_tx_bytes(&mut self, bytes: &[u8], cuts: &[usize]) {
        let mut bounds = vec![0];
        bounds.extend_from_slice(cuts);
        bounds.push(bytes.len());
        let mut bufs = Vec::new();
        for w in bounds.windows(2) {
            let piece = &bytes[w[0]..w[1]];
            let at = self.alloc(piece.len() as u32);
            self.mem.write_slice(piece, GuestAddress(at)).unwrap();
            bufs.push((at, piece.len() as u32, 0));
        }
        self.txq.add_chain(&bufs);
    }

    /// Posts one packet (one buffer) for transmission.
    pub fn post_tx(&mut self, hdr: &Header, payload: &[u8]) {
        self.post_tx_bytes(&packet_bytes(hdr, payload), &[]);
    }

    /// Posts `count` receive buffers of `len` bytes each (one descriptor).
    pub fn post_rx(&mut self, count: usize, len: u32) {
        for _ in 0..count {
            self.post_rx_chain(&[len]);
        }
    }

    /// Posts one receive chain of buffers of the given sizes.
    pub fn post_rx_chain(&mut self, sizes: &[u32]) {
        let with_flags: Vec<(u32, u16)> = sizes.iter().map(|&l| (l, WRITE)).collect();
        self.post_rx_flags(&with_flags);
    }

    /// Posts one receive chain of buffers of the given sizes and flags.
    pub fn post_rx_flags(&mut self, buffers: &[(u32, u16)]) {
        let bufs: Vec<(u64, u32, u16)> = buffers
            .iter()
            .map(|&(l, f)| (self.alloc(l), l, f))
            .collect();
        let head = self.rxq.add_chain(&bufs);
        self.rx_buffers
            .insert(head, bufs.iter().map(|&(a, l, _)| (a, l)).collect());
    }

    /// The packets delivered since the last look.
    pub fn received(&mut self) -> Vec<(Header, Vec<u8>)> {
        let mut out = Vec::new();
        while self.rx_seen != self.rxq.used_idx() {
            let (head, len) = self.rxq.used(self.rx_seen);
            self.rx_seen = self.rx_seen.wrapping_add(1);
            let bufs = self
                .rx_buffers
                .remove(&(head as u16))
                .expect("a used head the test posted");
            let mut bytes = Vec::new();
            for (addr, l) in bufs {
                let mut b = vec![0u8; l as usize];
                self.mem.read_slice(&mut b, GuestAddress(addr)).unwrap();
                bytes.extend(b);
            }
            bytes.truncate(len as usize);
            if bytes.len() < HDR_LEN {
                out.push((Header::default(), bytes));
                continue;
            }
            let mut raw = [0u8; HDR_LEN];
            raw.copy_from_slice(&bytes[..HDR_LEN]);
            let h = Header::from_bytes(&raw);
            assert_eq!(h.len as usize, bytes.len() - HDR_LEN, "used length");
            out.push((h, bytes[HDR_LEN..].to_vec()));
        }
        out
    }
}

/// A [`Driver`] and the device's side of the receive and transmit queues
/// (queues, muxer, scratch, interrupt, and an epoll set standing for the
/// event loop), driven by hand.
pub struct Rig<'a> {
    pub driver: Driver<'a>,
    pub rx: Queue,
    pub tx: Queue,
    pub muxer: Muxer,
    pub scratch: Scratch,
    pub irq: IrqLine,
    /// The muxer's descriptors, edge-triggered, as the device's handler
    /// watches them.
    epoll: Epoll,
    watched: HashMap<u32, RawFd>,
}

impl<'a> std::ops::Deref for Rig<'a> {
    type Target = Driver<'a>;
    fn deref(&self) -> &Driver<'a> {
        &self.driver
    }
}

impl<'a> std::ops::DerefMut for Rig<'a> {
    fn deref_mut(&mut self) -> &mut Driver<'a> {
        &mut self.driver
    }
}

impl<'a> Rig<'a> {
    /// A driver on `mem` and `muxer`.
    pub fn new(mem: &'a GuestMemoryMmap, muxer: Muxer) -> Self {
        let driver = Driver::new(mem);
        let rx = driver.rxq.create_queue();
        let tx = driver.txq.create_queue();
        Rig {
            driver,
            rx,
            tx,
            muxer,
            scratch: Scratch::new(),
            irq: test_irq(),
            epoll: Epoll::new().unwrap(),
            watched: HashMap::new(),
        }
    }

    /// Posts one packet and runs the transmit queue.
    pub fn send(&mut self, hdr: &Header, payload: &[u8]) {
        self.driver.post_tx(hdr, payload);
        self.run_tx();
    }

    /// Runs the transmit queue once; asserts every chain came back.
    pub fn run_tx(&mut self) {
        process_txq(
            &mut self.tx,
            self.driver.mem,
            &mut self.muxer,
            &mut self.scratch,
            &self.irq,
        )
        .unwrap();
        assert_eq!(self.driver.txq.used_idx(), self.driver.txq.avail_idx());
    }

    /// Runs the receive queue once.
    pub fn run_rx(&mut self) -> bool {
        process_rxq(
            &mut self.rx,
            self.driver.mem,
            &mut self.muxer,
            &mut self.scratch,
            &self.irq,
        )
        .unwrap()
    }

    /// Watches the listener, as the device does once active.
    pub fn listen(&mut self) {
        let fd = self.muxer.listener_fd();
        let ev = EpollEvent::new(
            EventSet::IN | EventSet::EDGE_TRIGGERED,
            (u64::from(LISTENER) << 32) | fd as u64,
        );
        self.epoll.ctl(ControlOperation::Add, fd, ev).unwrap();
    }

    /// Applies the muxer's watch-list changes.
    fn apply_fd_ops(&mut self) {
        for op in self.muxer.take_fd_ops() {
            match op {
                FdOp::Add { fd, token } => {
                    let set = EventSet::IN
                        | EventSet::OUT
                        | EventSet::READ_HANG_UP
                        | EventSet::EDGE_TRIGGERED;
                    let ev = EpollEvent::new(set, (u64::from(token) << 32) | fd as u64);
                    self.epoll.ctl(ControlOperation::Add, fd, ev).unwrap();
                    assert!(self.watched.insert(token, fd).is_none(), "token reused");
                }
                FdOp::Remove(stream) => {
                    let fd = stream.as_raw_fd();
                    self.epoll
                        .ctl(ControlOperation::Delete, fd, EpollEvent::default())
                        .unwrap();
                    self.watched.retain(|_, f| *f != fd);
                }
            }
        }
    }

    /// Descriptors the muxer has in the event loop now.
    pub fn watched(&self) -> usize {
        self.watched.len()
    }

    /// One turn of the event loop: the muxer's descriptors that are ready
    /// are handed to it, then the receive queue runs; repeated until
    /// nothing is ready. Returns the number of events.
    pub fn turn(&mut self) -> usize {
        let mut total = 0;
        loop {
            self.apply_fd_ops();
            let mut events = [EpollEvent::default(); 64];
            let n = self.epoll.wait(0, &mut events).unwrap();
            for ev in &events[..n] {
                let token = (ev.data() >> 32) as u32;
                if token == LISTENER {
                    self.muxer.accept_host_connections();
                } else if self.watched.contains_key(&token) {
                    self.muxer.on_fd_event(token, readiness(ev.event_set()));
                }
                self.apply_fd_ops();
            }
            self.run_rx();
            self.apply_fd_ops();
            if n == 0 {
                return total;
            }
            total += n;
            assert!(total < 10_000, "the event loop keeps waking up");
        }
    }
}
