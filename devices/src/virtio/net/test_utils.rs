//! Fixtures shared by the network device's tests: a memory-backed backend,
//! guest memory, frames and descriptor helpers.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, RawFd};

use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::mock::{MockSplitQueue, UsedRing};
use virtio_queue::{Queue, QueueT};
use vm_memory::bitmap::BitmapSlice;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap, VolatileSlice};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::{NetBackend, VNET_HDR_LEN};
use crate::virtio::IrqLine;

/// Descriptor flag: another descriptor follows (spec §2.7.5).
const NEXT: u16 = 1;
/// Descriptor flag: device-writable.
pub const WRITE: u16 = 2;
/// Descriptor flag: the buffer is a table of descriptors
/// (VIRTIO_F_INDIRECT_DESC, never offered).
pub const INDIRECT: u16 = 4;
/// Where a [`TestQueue`]'s used ring lies, from the queue's start.
const USED_RING_OFFSET: u64 = 0x2000;

/// A backend in memory: frames to be read, frames written, the offloads
/// asked for. Its event is readable whenever tests say a frame arrived.
pub struct FakeBackend {
    /// Frames the device will read, oldest first.
    pub incoming: VecDeque<Vec<u8>>,
    /// Frames the device wrote.
    pub written: Vec<Vec<u8>>,
    /// The last offloads set.
    pub offload: Option<u32>,
    /// Refuse every write.
    pub fail_writes: bool,
    /// Fail this many reads (EIO) before reading frames again.
    pub failing_reads: usize,
    /// Readiness, for the event loop.
    pub evt: EventFd,
}

impl FakeBackend {
    pub fn new() -> Self {
        FakeBackend {
            incoming: VecDeque::new(),
            written: Vec::new(),
            offload: None,
            fail_writes: false,
            failing_reads: 0,
            evt: EventFd::new(EFD_NONBLOCK).unwrap(),
        }
    }

    /// Queues `frame` and signals readiness, as a tap does.
    pub fn arrive(&mut self, frame: Vec<u8>) {
        self.incoming.push_back(frame);
        self.evt.write(1).unwrap();
    }
}

impl NetBackend for FakeBackend {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.failing_reads > 0 {
            self.failing_reads -= 1;
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        let Some(frame) = self.incoming.pop_front() else {
            return Err(io::ErrorKind::WouldBlock.into());
        };
        let n = frame.len().min(buf.len());
        buf[..n].copy_from_slice(&frame[..n]);
        Ok(n)
    }

    fn write_vectored<'a, B: BitmapSlice + 'a>(
        &mut self,
        frame: impl Iterator<Item = VolatileSlice<'a, B>>,
    ) -> io::Result<usize> {
        if self.fail_writes {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        let mut bytes = Vec::new();
        for slice in frame {
            let at = bytes.len();
            bytes.resize(at + slice.len(), 0);
            slice.copy_to(&mut bytes[at..]);
        }
        let n = bytes.len();
        self.written.push(bytes);
        Ok(n)
    }

    fn set_offload(&mut self, flags: u32) -> io::Result<()> {
        self.offload = Some(flags);
        Ok(())
    }
}

impl AsRawFd for FakeBackend {
    fn as_raw_fd(&self) -> RawFd {
        self.evt.as_raw_fd()
    }
}

/// 1 MiB of guest memory at 0.
pub fn test_mem() -> GuestMemoryMmap {
    GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap()
}

/// An interrupt line on a fresh eventfd.
pub fn test_irq() -> IrqLine {
    IrqLine::new(EventFd::new(EFD_NONBLOCK).unwrap())
}

/// The driver's side of a split queue of at most 256 entries, in the
/// 12 KiB from `start`: a [`MockSplitQueue`] for the descriptor table and
/// the available ring, which it posts to with wrap-around, and a used ring
/// of its own (the mock's overlaps the end of its available ring).
pub struct TestQueue<'a> {
    mem: &'a GuestMemoryMmap,
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
            mem,
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

    /// Posts one chain of `(addr, len, flags)` buffers, linked in order.
    pub fn add_chain(&mut self, buffers: &[(u64, u32, u16)]) {
        let head = self.next_desc;
        for (i, &(addr, len, flags)) in buffers.iter().enumerate() {
            let index = self.next_desc;
            self.next_desc = (self.next_desc + 1) % self.size;
            let (flags, next) = if i + 1 < buffers.len() {
                (flags | NEXT, self.next_desc)
            } else {
                (flags, 0)
            };
            let d = RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next));
            self.vq.desc_table().store(index, d).unwrap();
        }
        self.add_head(head);
    }

    /// Writes `buffers` as an indirect table at `table`, linked in order,
    /// and posts a chain of one descriptor referring to it.
    pub fn add_indirect_chain(&mut self, table: u64, buffers: &[(u64, u32, u16)]) {
        for (i, &(addr, len, flags)) in buffers.iter().enumerate() {
            let (flags, next) = if i + 1 < buffers.len() {
                (flags | NEXT, i as u16 + 1)
            } else {
                (flags, 0)
            };
            let d = RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next));
            self.mem
                .write_obj(d, GuestAddress(table + 16 * i as u64))
                .unwrap();
        }
        self.add_chain(&[(table, 16 * buffers.len() as u32, INDIRECT)]);
    }

    /// Makes the chain at `head` available (again), or, with a head past
    /// the queue size, puts an entry there that names no chain.
    pub fn add_head(&mut self, head: u16) {
        let idx = self.vq.avail().idx().load();
        self.vq
            .avail()
            .ring()
            .ref_at(usize::from(idx % self.size))
            .unwrap()
            .store(head);
        self.vq.avail().idx().store(idx.wrapping_add(1));
    }

    /// Moves the available index `n` entries ahead without filling them
    /// (a driver breaking its ring when `n` exceeds the queue size).
    pub fn skip_avail(&self, n: u16) {
        let idx = self.vq.avail().idx().load();
        self.vq.avail().idx().store(idx.wrapping_add(n));
    }

    /// The used ring's `flags`: VRING_USED_F_NO_NOTIFY (1) while the device
    /// asks the driver not to notify.
    pub fn used_flags(&self) -> u16 {
        u16::from_le(self.mem.read_obj(self.used_addr).unwrap())
    }

    /// Sets the available ring's `flags` (VRING_AVAIL_F_NO_INTERRUPT is 1).
    pub fn set_avail_flags(&self, flags: u16) {
        self.mem
            .write_obj(flags.to_le(), self.vq.avail_addr())
            .unwrap();
    }

    /// Posts one single-buffer chain per `(addr, len, flags)`.
    pub fn add_chains(&mut self, buffers: &[(u64, u32, u16)]) {
        for &b in buffers {
            self.add_chain(&[b]);
        }
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

/// A frame of `len` bytes after the vnet header: the header carries
/// `flags` and a recognizable `gso_size`, the payload counts from `seed`.
pub fn frame(len: usize, seed: u8) -> Vec<u8> {
    let mut f = vec![0u8; VNET_HDR_LEN + len];
    f[0] = 0x02; // VIRTIO_NET_HDR_F_DATA_VALID
    f[4..6].copy_from_slice(&1448u16.to_le_bytes()); // gso_size
    for (i, b) in f[VNET_HDR_LEN..].iter_mut().enumerate() {
        *b = seed.wrapping_add(i as u8);
    }
    f
}
