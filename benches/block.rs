//! Block device benchmarks: virtio-blk requests served by the device model
//! from a mock queue in guest memory, with a real 64 MiB temp file behind
//! it, next to the bare `pread`/`pwrite` of the same sizes at the same
//! offsets (what the model issues) and to a backend that does no I/O (the
//! model's own cost: queue, descriptors, header, status; the file backend
//! moves data straight between guest memory and the file, so there is no
//! copy to count).
//!
//! Each iteration is one queue notification carrying [`BATCH`] requests;
//! the driver's side (writing the sector numbers and the available ring)
//! is inside the timing and is a few ns per request. The file sits in the
//! page cache, so these are CPU costs, not disk speeds.
//!
//! `cargo bench --bench block`.

// criterion's macros generate undocumented public functions.
#![allow(missing_docs)]

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use devices::virtio::block::{
    process_requestq, Disk, DiskBackend, GuestBuffers, VIRTIO_BLK_S_OK, VIRTIO_BLK_T_IN,
    VIRTIO_BLK_T_OUT,
};
use devices::virtio::IrqLine;
use std::sync::atomic::Ordering;
use virtio_queue::desc::{split::Descriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::Queue;

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, VolatileSlice};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// Size of the backing file.
const DISK_SIZE: u64 = 64 << 20;
/// Requests per queue notification (3 descriptors each).
const BATCH: usize = 64;
/// The device's queue size.
const QUEUE_SIZE: u16 = 256;
/// Guest memory layout: the queue at 0, then headers, statuses, data.
const HEADERS: u64 = 0x1_0000;
const STATUSES: u64 = 0x2_0000;
const DATA: u64 = 0x10_0000;
const LARGEST: usize = 128 << 10;
const MEM_SIZE: usize = DATA as usize + BATCH * LARGEST;

const NEXT: u16 = 1;
const WRITE: u16 = 2;

/// The disk offsets of successive requests: uniformly random whole
/// blocks, or one block after the other.
struct Offsets {
    block: u64,
    state: u64,
    random: bool,
    next: u64,
}

impl Offsets {
    fn new(block: usize, random: bool) -> Self {
        Offsets {
            block: block as u64,
            state: 0x9e37_79b9_7f4a_7c15,
            random,
            next: 0,
        }
    }

    fn next(&mut self) -> u64 {
        let blocks = DISK_SIZE / self.block;
        let index = if self.random {
            // xorshift64*: cheap and reproducible.
            self.state ^= self.state >> 12;
            self.state ^= self.state << 25;
            self.state ^= self.state >> 27;
            (self.state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) % blocks
        } else {
            let i = self.next;
            self.next = (self.next + 1) % blocks;
            i
        };
        index * self.block
    }
}

/// A backend that moves no bytes, and takes guest memory directly as the
/// file backend does.
struct NullDisk;

impl DiskBackend for NullDisk {
    fn read_at(&mut self, _buf: &mut [u8], _offset: u64) -> io::Result<()> {
        Ok(())
    }
    fn write_at(&mut self, _buf: &[u8], _offset: u64) -> io::Result<()> {
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
    fn size(&self) -> io::Result<u64> {
        Ok(DISK_SIZE)
    }
    fn read_to_guest(&mut self, _dst: &GuestBuffers<'_>, _offset: u64) -> Option<io::Result<()>> {
        Some(Ok(()))
    }
    fn write_from_guest(
        &mut self,
        _src: &GuestBuffers<'_>,
        _offset: u64,
    ) -> Option<io::Result<()>> {
        Some(Ok(()))
    }
}

/// A queue of [`BATCH`] request chains laid out once in guest memory,
/// re-posted on every iteration with new sector numbers.
struct Rig<'a> {
    mem: &'a GuestMemoryMmap,
    /// Kept for its layout in guest memory.
    _vq: MockSplitQueue<'a, GuestMemoryMmap>,
    /// The request headers, and the available ring from its `idx` on:
    /// written through slices, so that the driver's side costs little.
    headers: VolatileSlice<'a>,
    avail: VolatileSlice<'a>,
    queue: Queue,
    disk: Disk,
    irq: IrqLine,
    offsets: Offsets,
    avail_idx: u16,
}

impl<'a> Rig<'a> {
    fn new(
        mem: &'a GuestMemoryMmap,
        backend: Box<dyn DiskBackend>,
        request_type: u32,
        block: usize,
        random: bool,
    ) -> Self {
        let vq = MockSplitQueue::new(mem, QUEUE_SIZE);
        let data_flags = if request_type == VIRTIO_BLK_T_IN {
            WRITE
        } else {
            0
        };
        for i in 0..BATCH {
            let head = (3 * i) as u16;
            let header = HEADERS + 16 * i as u64;
            mem.write_obj(request_type.to_le(), GuestAddress(header))
                .unwrap();
            let descs = [
                Descriptor::new(header, 16, NEXT, head + 1),
                Descriptor::new(
                    DATA + (i * block) as u64,
                    block as u32,
                    data_flags | NEXT,
                    head + 2,
                ),
                Descriptor::new(STATUSES + i as u64, 1, WRITE, 0),
            ];
            for (j, d) in descs.into_iter().enumerate() {
                vq.desc_table()
                    .store(head + j as u16, RawDescriptor::from(d))
                    .unwrap();
            }
        }
        let queue = vq.create_queue().unwrap();
        let disk = Disk::new("bench".into(), backend, false).unwrap();
        let irq = IrqLine::new(EventFd::new(EFD_NONBLOCK).unwrap());
        let headers = mem.get_slice(GuestAddress(HEADERS), 16 * BATCH).unwrap();
        let avail_idx = vq.avail_addr().0 + 2;
        let avail = mem
            .get_slice(GuestAddress(avail_idx), 2 + 2 * usize::from(QUEUE_SIZE))
            .unwrap();
        let mut rig = Rig {
            mem,
            _vq: vq,
            headers,
            avail,
            queue,
            disk,
            irq,
            offsets: Offsets::new(block, random),
            avail_idx: 0,
        };
        rig.check();
        rig
    }

    /// Posts [`BATCH`] requests and has the device serve them.
    fn batch(&mut self) {
        for i in 0..BATCH {
            let sector = self.offsets.next() / 512;
            self.headers.write_obj(sector.to_le(), 16 * i + 8).unwrap();
            let slot = usize::from(self.avail_idx.wrapping_add(i as u16) % QUEUE_SIZE);
            self.avail
                .write_obj(((3 * i) as u16).to_le(), 2 + 2 * slot)
                .unwrap();
        }
        self.avail_idx = self.avail_idx.wrapping_add(BATCH as u16);
        self.avail
            .store(self.avail_idx.to_le(), 0, Ordering::Release)
            .unwrap();
        process_requestq(&mut self.queue, self.mem, &mut self.disk, &self.irq).unwrap();
    }

    /// Serves one batch and checks every request succeeded, so that the
    /// timings are of real work.
    fn check(&mut self) {
        self.mem
            .write_slice(&[0xff; BATCH], GuestAddress(STATUSES))
            .unwrap();
        self.batch();
        let mut statuses = [0u8; BATCH];
        self.mem
            .read_slice(&mut statuses, GuestAddress(STATUSES))
            .unwrap();
        assert!(statuses.iter().all(|&s| s == VIRTIO_BLK_S_OK));
    }
}

/// The 64 MiB backing file, written once so it is allocated and cached.
fn backing_file() -> File {
    let file = tempfile::tempfile().unwrap();
    let chunk: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    for i in 0..DISK_SIZE / chunk.len() as u64 {
        file.write_all_at(&chunk, i * chunk.len() as u64).unwrap();
    }
    file.sync_all().unwrap();
    file
}

/// Benchmarks one request kind three ways: through the device model onto
/// the file, the bare syscalls, and the device model with no I/O.
fn compare(
    g: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>,
    file: &File,
    request_type: u32,
    block: usize,
    random: bool,
) {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
    let mut rig = Rig::new(
        &mem,
        Box::new(file.try_clone().unwrap()),
        request_type,
        block,
        random,
    );
    g.bench_function("device", |b| b.iter(|| rig.batch()));
    drop(rig);

    let mut offsets = Offsets::new(block, random);
    let mut buf = vec![0x5au8; block];
    let syscall = if request_type == VIRTIO_BLK_T_IN {
        "pread"
    } else {
        "pwrite"
    };
    g.bench_function(syscall, |b| {
        b.iter(|| {
            for _ in 0..BATCH {
                let offset = offsets.next();
                if request_type == VIRTIO_BLK_T_IN {
                    file.read_exact_at(&mut buf, offset).unwrap();
                } else {
                    file.write_all_at(&buf, offset).unwrap();
                }
            }
        })
    });

    let mut rig = Rig::new(&mem, Box::new(NullDisk), request_type, block, random);
    g.bench_function("device_no_io", |b| b.iter(|| rig.batch()));
}

fn block_requests(c: &mut Criterion) {
    let file = backing_file();
    let cases = [
        ("block_4k_randread", VIRTIO_BLK_T_IN, 4 << 10, true),
        ("block_4k_randwrite", VIRTIO_BLK_T_OUT, 4 << 10, true),
        ("block_128k_seqread", VIRTIO_BLK_T_IN, 128 << 10, false),
        ("block_128k_seqwrite", VIRTIO_BLK_T_OUT, 128 << 10, false),
    ];
    for (name, request_type, block, random) in cases {
        let mut g = c.benchmark_group(name);
        if block == LARGEST {
            g.throughput(Throughput::Bytes((BATCH * block) as u64));
        } else {
            g.throughput(Throughput::Elements(BATCH as u64));
        }
        compare(&mut g, &file, request_type, block, random);
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = block_requests
}
criterion_main!(benches);
