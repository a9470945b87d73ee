//! Tests of `device.rs`: the fixtures and the request semantics here; the
//! device as a whole (features, config space, file backend, event loop,
//! budget) in `device_level_tests.rs`.

use std::sync::{Arc, Mutex};

use virtio_queue::desc::{split::Descriptor as RawDescriptor, RawDescriptor as Raw};
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::*;
use crate::virtio::{ActivateError, Activation, INT_VRING};

const NEXT: u16 = 1;
const WRITE: u16 = 2;
const R: u16 = 0;
const W: u16 = WRITE;

const HDR: u64 = 0x1_0000;
const DATA: u64 = 0x2_0000;
const STATUS: u64 = 0x8_0000;
/// 16 sectors.
const DISK_LEN: usize = 16 * 512;

/// What a fake disk holds and what happened to it.
#[derive(Default)]
struct FakeState {
    data: Vec<u8>,
    flushes: usize,
    fail: bool,
}

/// A memory-backed disk that tests can inspect and make fail.
#[derive(Clone, Default)]
struct FakeDisk(Arc<Mutex<FakeState>>);

impl FakeDisk {
    /// A disk of `len` bytes, byte `i` holding `i * 7 % 251`.
    fn with_pattern(len: usize) -> Self {
        let disk = FakeDisk::default();
        disk.state().data = (0..len).map(pattern).collect();
        disk
    }

    fn state(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.0.lock().unwrap()
    }

    fn range(&self, start: usize, len: usize) -> Vec<u8> {
        self.state().data[start..start + len].to_vec()
    }

    fn checked(&self, offset: u64, len: usize) -> io::Result<std::ops::Range<usize>> {
        let s = self.state();
        if s.fail {
            return Err(io::Error::other("injected failure"));
        }
        let start = offset as usize;
        if start + len > s.data.len() {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(start..start + len)
    }
}

impl DiskBackend for FakeDisk {
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let r = self.checked(offset, buf.len())?;
        buf.copy_from_slice(&self.state().data[r]);
        Ok(())
    }
    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        let r = self.checked(offset, buf.len())?;
        self.state().data[r].copy_from_slice(buf);
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.checked(0, 0)?;
        self.state().flushes += 1;
        Ok(())
    }
    fn size(&self) -> io::Result<u64> {
        Ok(self.state().data.len() as u64)
    }
}

fn pattern(i: usize) -> u8 {
    (i * 7 % 251) as u8
}

fn mem() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x40_0000)]).unwrap()
}

fn disk(fake: &FakeDisk, read_only: bool) -> Disk {
    Disk::new("rootfs".into(), Box::new(fake.clone()), read_only).unwrap()
}

fn irq() -> IrqLine {
    IrqLine::new(EventFd::new(EFD_NONBLOCK).unwrap())
}

fn write_header(mem: &GuestMemoryMmap, addr: u64, request_type: u32, sector: u64) {
    let mut b = [0u8; 16];
    b[..4].copy_from_slice(&request_type.to_le_bytes());
    b[8..].copy_from_slice(&sector.to_le_bytes());
    mem.write_slice(&b, GuestAddress(addr)).unwrap();
}

/// Puts one chain of `(addr, len, flags)` at descriptor index `first`
/// and makes it available.
fn push_chain(vq: &MockSplitQueue<GuestMemoryMmap>, first: u16, descs: Chain) {
    let raw: Vec<Raw> = descs
        .iter()
        .enumerate()
        .map(|(i, &(addr, len, flags))| {
            let i = i as u16;
            let last = usize::from(i) + 1 == descs.len();
            let (flags, next) = if last {
                (flags, 0)
            } else {
                (flags | NEXT, first + i + 1)
            };
            Raw::from(RawDescriptor::new(addr, len, flags, next))
        })
        .collect();
    vq.add_desc_chains(&raw, first).unwrap();
}

/// A chain as `(addr, len, flags)` per descriptor.
type Chain<'a> = &'a [(u64, u32, u16)];

/// What the device answered to one request.
#[derive(Debug, PartialEq)]
struct Answer {
    used_len: u32,
    /// The byte at STATUS (0xff when the device did not write it).
    status: u8,
}

/// Runs one request through a fresh queue.
fn run(mem: &GuestMemoryMmap, disk: &mut Disk, descs: Chain) -> Answer {
    mem.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
    let vq = MockSplitQueue::new(mem, 16);
    push_chain(&vq, 0, descs);
    let mut q: Queue = vq.create_queue().unwrap();
    let irq = irq();
    process_requestq(&mut q, mem, disk, &irq).unwrap();
    assert_eq!(vq.used().idx().load(), 1, "every request is returned");
    assert_eq!(irq.status(), INT_VRING);
    Answer {
        used_len: vq.used().ring().ref_at(0).unwrap().load().len(),
        status: mem.read_obj(GuestAddress(STATUS)).unwrap(),
    }
}

fn answer(used_len: u32, status: u8) -> Answer {
    Answer { used_len, status }
}

fn ioerr() -> Answer {
    answer(1, VIRTIO_BLK_S_IOERR)
}

fn read_guest(mem: &GuestMemoryMmap, addr: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
    v
}

/// An IN of `len` bytes at `sector` into one buffer at DATA.
fn read_request(mem: &GuestMemoryMmap, disk: &mut Disk, sector: u64, len: u32) -> Answer {
    write_header(mem, HDR, VIRTIO_BLK_T_IN, sector);
    run(mem, disk, &[(HDR, 16, R), (DATA, len, W), (STATUS, 1, W)])
}

/// An OUT of `len` bytes from DATA to `sector`.
fn write_request(mem: &GuestMemoryMmap, disk: &mut Disk, sector: u64, len: u32) -> Answer {
    write_header(mem, HDR, VIRTIO_BLK_T_OUT, sector);
    run(mem, disk, &[(HDR, 16, R), (DATA, len, R), (STATUS, 1, W)])
}

#[test]
fn in_reads_sectors_into_every_data_buffer() {
    let m = mem();
    let fake = FakeDisk::with_pattern(DISK_LEN);
    let mut d = disk(&fake, false);
    write_header(&m, HDR, VIRTIO_BLK_T_IN, 1);
    let got = run(
        &m,
        &mut d,
        &[
            (HDR, 16, R),
            (DATA, 512, W),
            (DATA + 0x1000, 1024, W),
            (STATUS, 1, W),
        ],
    );
    assert_eq!(got, answer(1536 + 1, VIRTIO_BLK_S_OK));
    assert_eq!(read_guest(&m, DATA, 512), fake.range(512, 512));
    assert_eq!(read_guest(&m, DATA + 0x1000, 1024), fake.range(1024, 1024));
}

#[test]
fn out_writes_guest_data_to_the_disk() {
    let m = mem();
    let fake = FakeDisk::with_pattern(DISK_LEN);
    let mut d = disk(&fake, false);
    m.write_slice(&[0xa5; 512], GuestAddress(DATA)).unwrap();
    m.write_slice(&[0x5a; 512], GuestAddress(DATA + 0x1000))
        .unwrap();
    write_header(&m, HDR, VIRTIO_BLK_T_OUT, 2);
    let got = run(
        &m,
        &mut d,
        &[
            (HDR, 16, R),
            (DATA, 512, R),
            (DATA + 0x1000, 512, R),
            (STATUS, 1, W),
        ],
    );
    assert_eq!(got, answer(1, VIRTIO_BLK_S_OK));
    assert_eq!(fake.range(1024, 512), vec![0xa5; 512]);
    assert_eq!(fake.range(1536, 512), vec![0x5a; 512]);
    assert_eq!(
        fake.range(512, 512),
        (512..1024).map(pattern).collect::<Vec<_>>()
    );
    assert_eq!(fake.range(2048, 1), vec![pattern(2048)]);
}

#[test]
fn requests_larger_than_the_bounce_buffer_move_in_pieces() {
    let m = mem();
    let len = (MAX_CHUNK + MAX_CHUNK / 2) as usize;
    // Clear of the header and status.
    let big = 0x10_0000;
    let fake = FakeDisk::with_pattern(len + 4096);
    let mut d = disk(&fake, false);
    write_header(&m, HDR, VIRTIO_BLK_T_IN, 8);
    let descs = [(HDR, 16, R), (big, len as u32, W), (STATUS, 1, W)];
    assert_eq!(run(&m, &mut d, &descs), answer(len as u32 + 1, 0));
    assert!(read_guest(&m, big, len) == fake.range(4096, len));
    assert!(d.bounce.len() as u64 <= MAX_CHUNK);

    let data: Vec<u8> = (0..len).map(|i| (i % 13) as u8).collect();
    m.write_slice(&data, GuestAddress(big)).unwrap();
    write_header(&m, HDR, VIRTIO_BLK_T_OUT, 0);
    let descs = [(HDR, 16, R), (big, len as u32, R), (STATUS, 1, W)];
    assert_eq!(run(&m, &mut d, &descs), answer(1, 0));
    assert!(fake.range(0, len) == data);
}

#[test]
fn header_data_and_status_may_share_descriptors() {
    let m = mem();
    let fake = FakeDisk::with_pattern(DISK_LEN);
    let mut d = disk(&fake, false);
    // OUT: header and data in one device-readable buffer.
    write_header(&m, HDR, VIRTIO_BLK_T_OUT, 3);
    m.write_slice(&[0x77; 512], GuestAddress(HDR + 16)).unwrap();
    let got = run(&m, &mut d, &[(HDR, 16 + 512, R), (STATUS, 1, W)]);
    assert_eq!(got, answer(1, VIRTIO_BLK_S_OK));
    assert_eq!(fake.range(1536, 512), vec![0x77; 512]);
    // IN: data and status in one device-writable buffer; the status is
    // its last byte.
    write_header(&m, HDR, VIRTIO_BLK_T_IN, 3);
    let got = run(&m, &mut d, &[(HDR, 16, R), (STATUS - 512, 513, W)]);
    assert_eq!(got, answer(513, VIRTIO_BLK_S_OK));
    assert_eq!(read_guest(&m, STATUS - 512, 512), vec![0x77; 512]);
}

#[test]
fn flush_reaches_the_backend() {
    let m = mem();
    let fake = FakeDisk::with_pattern(DISK_LEN);
    let mut d = disk(&fake, false);
    write_header(&m, HDR, VIRTIO_BLK_T_FLUSH, 0);
    let got = run(&m, &mut d, &[(HDR, 16, R), (STATUS, 1, W)]);
    assert_eq!(got, answer(1, VIRTIO_BLK_S_OK));
    assert_eq!(fake.state().flushes, 1);
    // So does the VMM's flush at shutdown, through the device.
    let mut block = Block::with_backend("rootfs".into(), Box::new(fake.clone()), false).unwrap();
    block.flush().unwrap();
    assert_eq!(fake.state().flushes, 2);
}

#[test]
fn get_id_pads_a_short_id_and_truncates_a_long_one() {
    let m = mem();
    let fake = FakeDisk::with_pattern(DISK_LEN);
    for (id, want) in [
        ("rootfs", *b"rootfs\0\0\0\0\0\0\0\0\0\0\0\0\0\0"),
        ("a-drive-id-longer-than-20", *b"a-drive-id-longer-th"),
    ] {
        let mut d = Disk::new(id.into(), Box::new(fake.clone()), false).unwrap();
        m.write_slice(&[0xee; 32], GuestAddress(DATA)).unwrap();
        write_header(&m, HDR, VIRTIO_BLK_T_GET_ID, 0);
        let got = run(&m, &mut d, &[(HDR, 16, R), (DATA, 32, W), (STATUS, 1, W)]);
        assert_eq!(got, answer(21, VIRTIO_BLK_S_OK));
        assert_eq!(read_guest(&m, DATA, 20), want);
        assert_eq!(read_guest(&m, DATA + 20, 12), vec![0xee; 12]);
    }
}

#[test]
fn get_id_into_a_short_buffer_fails() {
    let m = mem();
    let mut d = disk(&FakeDisk::with_pattern(DISK_LEN), false);
    write_header(&m, HDR, VIRTIO_BLK_T_GET_ID, 0);
    let got = run(&m, &mut d, &[(HDR, 16, R), (DATA, 19, W), (STATUS, 1, W)]);
    assert_eq!(got, ioerr());
}

#[test]
fn a_swapped_backend_changes_capacity_and_content() {
    struct Sized(u64);
    impl DiskBackend for Sized {
        fn read_at(&mut self, buf: &mut [u8], _offset: u64) -> io::Result<()> {
            buf.fill(0x5a);
            Ok(())
        }
        fn write_at(&mut self, _buf: &[u8], _offset: u64) -> io::Result<()> {
            Ok(())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
        fn size(&self) -> io::Result<u64> {
            Ok(self.0)
        }
    }
    let mut block = Block::with_backend("d".into(), Box::new(Sized(8 * 512)), false).unwrap();
    assert_eq!(block.capacity_sectors(), 8);
    assert_eq!(block.swap_backend(Box::new(Sized(32 * 512))).unwrap(), 32);
    assert_eq!(block.capacity_sectors(), 32);
    let mut cap = [0u8; 8];
    block.read_config(0, &mut cap);
    assert_eq!(u64::from_le_bytes(cap), 32);
    assert_eq!(block.id(), "d");
}

#[test]
fn counters_survive_a_swapped_backend() {
    let m = mem();
    let fake = FakeDisk::with_pattern(DISK_LEN);
    let mut block = Block::with_backend("d".into(), Box::new(fake.clone()), false).unwrap();
    assert_eq!(read_request(&m, &mut block.disk, 1, 512), answer(513, 0));
    assert_eq!(read_request(&m, &mut block.disk, 99, 512), ioerr());
    let before = block.counters();
    assert_eq!(
        (before.reads, before.read_bytes, before.errors),
        (1, 512, 1)
    );
    let bigger = FakeDisk::with_pattern(2 * DISK_LEN);
    assert_eq!(block.swap_backend(Box::new(bigger.clone())).unwrap(), 32);
    assert_eq!(block.counters(), before);
    // The new backend serves, and the counts go on from where they were.
    assert_eq!(read_request(&m, &mut block.disk, 20, 512), answer(513, 0));
    assert_eq!(read_guest(&m, DATA, 512), bigger.range(20 * 512, 512));
    assert_eq!(block.counters().reads, 2);
    // The old image was flushed.
    assert_eq!(fake.state().flushes, 1);
    // A backend whose size cannot be read is refused; the disk stays.
    struct NoSize;
    impl DiskBackend for NoSize {
        fn read_at(&mut self, _buf: &mut [u8], _offset: u64) -> io::Result<()> {
            unreachable!("never served")
        }
        fn write_at(&mut self, _buf: &[u8], _offset: u64) -> io::Result<()> {
            unreachable!("never served")
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
        fn size(&self) -> io::Result<u64> {
            Err(io::Error::other("no size"))
        }
    }
    assert!(matches!(
        block.swap_backend(Box::new(NoSize)),
        Err(BlockError::ReadDiskSize(_))
    ));
    assert_eq!(block.capacity_sectors(), 32);
    assert_eq!(
        bigger.state().flushes,
        0,
        "nothing flushed before the refusal"
    );
    assert_eq!(read_request(&m, &mut block.disk, 20, 512), answer(513, 0));
}

#[test]
fn read_only_drive_refuses_writes_and_serves_reads() {
    let m = mem();
    let fake = FakeDisk::with_pattern(DISK_LEN);
    let mut d = disk(&fake, true);
    m.write_slice(&[0x11; 512], GuestAddress(DATA)).unwrap();
    assert_eq!(write_request(&m, &mut d, 0, 512), ioerr());
    assert_eq!(
        fake.range(0, 512),
        (0..512).map(pattern).collect::<Vec<_>>()
    );
    assert_eq!(
        read_request(&m, &mut d, 0, 512),
        answer(513, VIRTIO_BLK_S_OK)
    );
    assert_eq!(read_guest(&m, DATA, 512), fake.range(0, 512));
    write_header(&m, HDR, VIRTIO_BLK_T_FLUSH, 0);
    assert_eq!(
        run(&m, &mut d, &[(HDR, 16, R), (STATUS, 1, W)]),
        answer(1, VIRTIO_BLK_S_OK)
    );
}

#[test]
fn requests_beyond_the_capacity_fail() {
    let m = mem();
    let fake = FakeDisk::with_pattern(DISK_LEN);
    let mut d = disk(&fake, false);
    assert_eq!(
        read_request(&m, &mut d, 15, 512),
        answer(513, 0),
        "last sector"
    );
    assert_eq!(
        read_request(&m, &mut d, 16, 512),
        ioerr(),
        "one past the end"
    );
    assert_eq!(
        read_request(&m, &mut d, 15, 1024),
        ioerr(),
        "runs over the end"
    );
    assert_eq!(write_request(&m, &mut d, 16, 512), ioerr());
    // `sector * 512` and `offset + len` overflow u64.
    assert_eq!(read_request(&m, &mut d, u64::MAX, 512), ioerr());
    assert_eq!(read_request(&m, &mut d, u64::MAX / 512, 1024), ioerr());
    assert_eq!(write_request(&m, &mut d, 1 << 55, 512), ioerr());
    assert_eq!(
        fake.range(0, DISK_LEN),
        (0..DISK_LEN).map(pattern).collect::<Vec<_>>()
    );
}

#[test]
fn data_that_is_not_whole_sectors_fails() {
    let m = mem();
    let fake = FakeDisk::with_pattern(DISK_LEN);
    let mut d = disk(&fake, false);
    assert_eq!(read_request(&m, &mut d, 0, 100), ioerr());
    assert_eq!(read_request(&m, &mut d, 0, 513), ioerr());
    assert_eq!(write_request(&m, &mut d, 0, 511), ioerr());
    assert_eq!(
        fake.range(0, 512),
        (0..512).map(pattern).collect::<Vec<_>>()
    );
}

#[test]
fn unknown_request_types_are_unsupported() {
    let m = mem();
    let mut d = disk(&FakeDisk::with_pattern(DISK_LEN), false);
    // DISCARD (11) and WRITE_ZEROES (13) are not offered; 0xdead is
    // nothing.
    for ty in [11, 13, 0xdead] {
        write_header(&m, HDR, ty, 0);
        let got = run(&m, &mut d, &[(HDR, 16, R), (STATUS, 1, W)]);
        assert_eq!(got, answer(1, VIRTIO_BLK_S_UNSUPP));
    }
}

#[test]
fn backend_errors_are_io_errors() {
    let m = mem();
    let fake = FakeDisk::with_pattern(DISK_LEN);
    let mut d = disk(&fake, false);
    fake.state().fail = true;
    assert_eq!(read_request(&m, &mut d, 0, 512), ioerr());
    assert_eq!(write_request(&m, &mut d, 0, 512), ioerr());
    write_header(&m, HDR, VIRTIO_BLK_T_FLUSH, 0);
    assert_eq!(run(&m, &mut d, &[(HDR, 16, R), (STATUS, 1, W)]), ioerr());
    // A disk that shrank under the guest.
    fake.state().fail = false;
    fake.state().data.truncate(1024);
    assert_eq!(read_request(&m, &mut d, 4, 512), ioerr());
}

#[test]
fn malformed_chains_are_answered_with_io_errors() {
    let m = mem();
    let fake = FakeDisk::with_pattern(DISK_LEN);
    let mut d = disk(&fake, false);
    write_header(&m, HDR, VIRTIO_BLK_T_IN, 0);
    let cases: &[(&str, Chain)] = &[
        ("no header", &[(STATUS, 1, W)]),
        ("header too short", &[(HDR, 8, R), (STATUS, 1, W)]),
        (
            "header outside memory",
            &[(0x4000_0000, 16, R), (STATUS, 1, W)],
        ),
        (
            "data outside memory",
            &[(HDR, 16, R), (0x3f_ff00, 512, W), (STATUS, 1, W)],
        ),
        (
            "address wraps around",
            &[(HDR, 16, R), (u64::MAX - 100, 512, W), (STATUS, 1, W)],
        ),
        (
            "IN with device-readable data",
            &[(HDR, 16, R), (DATA, 512, R), (STATUS, 1, W)],
        ),
        (
            "readable after writable",
            &[
                (HDR, 16, R),
                (DATA, 512, W),
                (DATA + 0x1000, 512, R),
                (STATUS, 1, W),
            ],
        ),
    ];
    for (what, descs) in cases {
        assert_eq!(run(&m, &mut d, descs), ioerr(), "{what}");
    }
    // OUT with device-writable data: refused, disk unchanged.
    write_header(&m, HDR, VIRTIO_BLK_T_OUT, 0);
    let got = run(&m, &mut d, &[(HDR, 16, R), (DATA, 512, W), (STATUS, 1, W)]);
    assert_eq!(got, ioerr());
    assert_eq!(
        fake.range(0, 512),
        (0..512).map(pattern).collect::<Vec<_>>()
    );
}

#[test]
fn chains_without_a_usable_status_byte_are_returned_empty() {
    let m = mem();
    let fake = FakeDisk::with_pattern(DISK_LEN);
    let mut d = disk(&fake, false);
    write_header(&m, HDR, VIRTIO_BLK_T_OUT, 0);
    m.write_slice(&[0x42; 512], GuestAddress(DATA)).unwrap();
    let no_status = answer(0, 0xff);
    // No device-writable byte: the "status" descriptor is read-only.
    let got = run(&m, &mut d, &[(HDR, 16, R), (DATA, 512, R), (STATUS, 1, R)]);
    assert_eq!(got, no_status);
    assert_eq!(run(&m, &mut d, &[(HDR, 16, R)]), no_status, "header only");
    // The status byte outside guest memory.
    let got = run(&m, &mut d, &[(HDR, 16, R), (0x4000_0000, 1, W)]);
    assert_eq!(got.used_len, 0);
    // None of them reached the disk.
    assert_eq!(
        fake.range(0, 512),
        (0..512).map(pattern).collect::<Vec<_>>()
    );
}

#[test]
fn a_descriptor_loop_and_a_bad_head_index_do_not_stop_the_queue() {
    let m = mem();
    let fake = FakeDisk::with_pattern(DISK_LEN);
    let mut d = disk(&fake, false);
    let vq = MockSplitQueue::new(&m, 16);
    // Descriptor 0 chains to itself forever.
    vq.desc_table()
        .store(0, Raw::from(RawDescriptor::new(HDR, 16, NEXT, 0)))
        .unwrap();
    let ring = vq.avail().ring();
    ring.ref_at(0).unwrap().store(0);
    // Head index beyond the queue.
    ring.ref_at(1).unwrap().store(200);
    vq.avail().idx().store(2);
    write_header(&m, HDR, VIRTIO_BLK_T_IN, 0);
    push_chain(&vq, 4, &[(HDR, 16, R), (DATA, 512, W), (STATUS, 1, W)]);
    let mut q: Queue = vq.create_queue().unwrap();
    let irq = irq();
    process_requestq(&mut q, &m, &mut d, &irq).unwrap();
    // The loop and the good request are returned; the bad head cannot be.
    assert_eq!(vq.used().idx().load(), 2);
    let used = |i| vq.used().ring().ref_at(i).unwrap().load();
    assert_eq!((used(0).id(), used(0).len()), (0, 0));
    assert_eq!((used(1).id(), used(1).len()), (4, 513));
    assert_eq!(irq.event().read().unwrap(), 1);
}

/// Descriptor flag: the buffer is a table of descriptors
/// (VIRTIO_F_INDIRECT_DESC, never offered).
const INDIRECT: u16 = 4;
/// Where tests put an indirect table.
const TABLE: u64 = 0x9_0000;

/// Writes `descs` as an indirect table at TABLE, linked in order.
fn write_table(mem: &GuestMemoryMmap, descs: Chain) {
    for (i, &(addr, len, flags)) in descs.iter().enumerate() {
        let (flags, next) = if i + 1 < descs.len() {
            (flags | NEXT, i as u16 + 1)
        } else {
            (flags, 0)
        };
        let d = Raw::from(RawDescriptor::new(addr, len, flags, next));
        mem.write_obj(d, GuestAddress(TABLE + 16 * i as u64))
            .unwrap();
    }
}

#[test]
fn chains_with_an_indirect_descriptor_are_dropped_and_counted() {
    let m = mem();
    let fake = FakeDisk::with_pattern(DISK_LEN);
    let mut d = disk(&fake, false);
    write_header(&m, HDR, VIRTIO_BLK_T_IN, 1);
    write_table(&m, &[(HDR, 16, R), (DATA, 512, W), (STATUS, 1, W)]);
    m.write_slice(&[0xee; 512], GuestAddress(DATA)).unwrap();
    // The whole request in a table of its own (as Linux sends it when the
    // feature is offered; it never is), then a table after a direct
    // header. The end of either chain is not known, nor where its status
    // byte lies: nothing is written.
    for descs in [
        &[(TABLE, 48, INDIRECT)][..],
        &[(HDR, 16, R), (TABLE, 48, INDIRECT)],
    ] {
        assert_eq!(run(&m, &mut d, descs), answer(0, 0xff));
    }
    assert_eq!(read_guest(&m, DATA, 512), vec![0xee; 512]);
    assert_eq!(d.counters.errors, 2);
    assert_eq!(d.counters.reads, 0);
}

/// An IN request of `segments` 512-byte data buffers (all at DATA), in a
/// 512-entry queue so that it may exceed the device's queue size.
fn long_read(m: &GuestMemoryMmap, d: &mut Disk, segments: usize) -> Answer {
    m.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
    write_header(m, HDR, VIRTIO_BLK_T_IN, 0);
    let mut descs = vec![(HDR, 16, R)];
    descs.extend(std::iter::repeat_n((DATA, 512, W), segments));
    descs.push((STATUS, 1, W));
    let vq = MockSplitQueue::new(m, 512);
    push_chain(&vq, 0, &descs);
    let mut q: Queue = vq.create_queue().unwrap();
    process_requestq(&mut q, m, d, &irq()).unwrap();
    assert_eq!(vq.used().idx().load(), 1);
    Answer {
        used_len: vq.used().ring().ref_at(0).unwrap().load().len(),
        status: m.read_obj(GuestAddress(STATUS)).unwrap(),
    }
}

#[test]
fn a_request_of_more_than_seg_max_segments_is_dropped_and_the_buffers_stay_small() {
    let m = mem();
    let seg_max = usize::from(BLOCK_QUEUE_SIZE - NON_DATA_DESCRIPTORS);
    let fake = FakeDisk::with_pattern((seg_max + 1) * 512);
    let mut d = disk(&fake, false);
    // As many data segments as the device advertises: served.
    let len = seg_max as u32 * 512;
    assert_eq!(
        long_read(&m, &mut d, seg_max),
        answer(len + 1, VIRTIO_BLK_S_OK)
    );
    // One more: refused before anything is read or written.
    assert_eq!(long_read(&m, &mut d, seg_max + 1), answer(0, 0xff));
    assert_eq!(d.counters.reads, 1);
    assert_eq!(d.counters.errors, 1);
    assert!(d.bufs.segments_capacity() <= seg_max + 2);
}

/// The used ring's `flags`: VRING_USED_F_NO_NOTIFY (1) while the device
/// asks the driver not to notify.
fn used_flags(mem: &GuestMemoryMmap, vq: &MockSplitQueue<GuestMemoryMmap>) -> u16 {
    u16::from_le(mem.read_obj(vq.used_addr()).unwrap())
}

#[test]
fn a_head_index_past_the_queue_is_counted_and_skipped() {
    let m = mem();
    let fake = FakeDisk::with_pattern(DISK_LEN);
    let mut d = disk(&fake, false);
    let vq = MockSplitQueue::new(&m, 16);
    // An entry naming descriptor 16 of a 16-entry table, then a request.
    vq.avail().ring().ref_at(0).unwrap().store(16);
    vq.avail().idx().store(1);
    write_header(&m, HDR, VIRTIO_BLK_T_IN, 1);
    push_chain(&vq, 0, &[(HDR, 16, R), (DATA, 512, W), (STATUS, 1, W)]);
    let mut q: Queue = vq.create_queue().unwrap();
    let irq = irq();
    assert!(!process_requestq(&mut q, &m, &mut d, &irq).unwrap());
    assert_eq!(vq.used().idx().load(), 1);
    let used = vq.used().ring().ref_at(0).unwrap().load();
    assert_eq!((used.id(), used.len()), (0, 513));
    assert_eq!(read_guest(&m, DATA, 512), fake.range(512, 512));
    assert_eq!(used_flags(&m, &vq), 0, "the driver may notify again");
    assert_eq!(d.counters.errors, 1);
    assert_eq!(d.counters.reads, 1);
}

#[test]
fn a_broken_available_ring_is_an_error_not_a_panic() {
    let m = mem();
    let mut d = disk(&FakeDisk::with_pattern(DISK_LEN), false);
    let vq = MockSplitQueue::new(&m, 16);
    // The driver claims more new entries than the queue holds.
    vq.avail().idx().store(100);
    let mut q: Queue = vq.create_queue().unwrap();
    let irq = irq();
    assert!(process_requestq(&mut q, &m, &mut d, &irq).is_err());
    assert_eq!(vq.used().idx().load(), 0);
    assert_eq!(irq.status(), 0);
    assert_eq!(used_flags(&m, &vq), 0, "the driver may notify again");
}

#[test]
fn a_batch_interrupts_once() {
    let m = mem();
    let fake = FakeDisk::with_pattern(DISK_LEN);
    let mut d = disk(&fake, false);
    let vq = MockSplitQueue::new(&m, 16);
    for i in 0..3u16 {
        let base = u64::from(i) * 0x1000;
        write_header(&m, HDR + base, VIRTIO_BLK_T_IN, u64::from(i));
        push_chain(
            &vq,
            i * 3,
            &[
                (HDR + base, 16, R),
                (DATA + base, 512, W),
                (STATUS + base, 1, W),
            ],
        );
    }
    let mut q: Queue = vq.create_queue().unwrap();
    let irq = irq();
    process_requestq(&mut q, &m, &mut d, &irq).unwrap();
    assert_eq!(vq.used().idx().load(), 3);
    for i in 0..3usize {
        let base = i as u64 * 0x1000;
        assert_eq!(read_guest(&m, DATA + base, 512), fake.range(i * 512, 512));
        assert_eq!(vq.used().ring().ref_at(i).unwrap().load().len(), 513);
    }
    assert_eq!(irq.event().read().unwrap(), 1);
    // Nothing new: no interrupt.
    process_requestq(&mut q, &m, &mut d, &irq).unwrap();
    assert!(irq.event().read().is_err());
}

#[path = "device_level_tests.rs"]
mod device_level;
