//! What the device fuzz targets share: guest memory filled from the
//! input, a queue whose rings lie where the input says, and disks that
//! check every access the device model makes.

use std::io;
use std::os::fd::FromRawFd;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};

use devices::virtio::block::DiskBackend;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Guest RAM from 0: small, so that addresses the fuzzer makes up land
/// in it often.
pub const LOW_LEN: usize = 0x1_0000;
/// A second RAM region after a hole, so that buffers may straddle the end
/// of one region or lie in the hole.
pub const HIGH_BASE: u64 = 0x2_0000;
/// Its length.
pub const HIGH_LEN: usize = 0x1000;
/// Disk size: 64 sectors.
pub const DISK_LEN: usize = 64 * 512;

/// Reads input bytes front to back; past the end it yields zeros.
pub struct Input<'a>(pub &'a [u8]);

impl Input<'_> {
    /// The next byte.
    pub fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    /// The next little-endian u16.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    /// The next little-endian u32.
    pub fn u32(&mut self) -> u32 {
        u32::from(self.u16()) | (u32::from(self.u16()) << 16)
    }

    /// The next little-endian u64.
    pub fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | (u64::from(self.u32()) << 32)
    }

    /// Whatever is left.
    pub fn rest(&mut self) -> &[u8] {
        std::mem::take(&mut self.0)
    }
}

/// Guest memory of two regions with a hole between them, filled from
/// `bytes` (low region first).
pub fn guest_memory(bytes: &[u8]) -> GuestMemoryMmap {
    let mem = GuestMemoryMmap::from_ranges(&[
        (GuestAddress(0), LOW_LEN),
        (GuestAddress(HIGH_BASE), HIGH_LEN),
    ])
    .expect("map guest memory");
    let (low, high) = bytes.split_at(bytes.len().min(LOW_LEN));
    mem.write_slice(low, GuestAddress(0)).expect("fits");
    let high = &high[..high.len().min(HIGH_LEN)];
    mem.write_slice(high, GuestAddress(HIGH_BASE)).expect("fits");
    mem
}

/// A queue of up to `max` entries laid out as the input says (size, ring
/// addresses, event index, where the device is in the rings). `None` when
/// the transport would refuse it at DRIVER_OK: the device never sees
/// such a queue.
pub fn queue(input: &mut Input<'_>, max: u16, mem: &GuestMemoryMmap) -> Option<Queue> {
    let mut q = Queue::new(max).expect("a power of two");
    let shape = input.u8();
    let size = 1u16 << (shape % 9);
    q.try_set_size(size.min(max)).ok()?;
    q.set_event_idx(shape & 0x80 != 0);
    // Offsets into the low region, scaled to the rings' alignments, or
    // (when the top bit is set) into the high region.
    let place = |v: u16, align: u64| -> GuestAddress {
        let base = if v & 0x8000 != 0 { HIGH_BASE } else { 0 };
        GuestAddress(base + (u64::from(v & 0x7fff) * align) % LOW_LEN as u64)
    };
    q.try_set_desc_table_address(place(input.u16(), 16)).ok()?;
    q.try_set_avail_ring_address(place(input.u16(), 2)).ok()?;
    q.try_set_used_ring_address(place(input.u16(), 4)).ok()?;
    q.set_next_avail(input.u16());
    q.set_next_used(input.u16());
    q.set_ready(true);
    q.is_valid(mem).then_some(q)
}

/// A memory-backed disk that panics on any access outside it, and on any
/// write when it is read-only: either is a bug of the device model, which
/// must refuse such requests itself.
#[derive(Clone)]
pub struct CheckedDisk {
    /// The bytes.
    pub data: Arc<Mutex<Vec<u8>>>,
    /// Whether the device was made read-only.
    pub read_only: bool,
    /// Make every call fail (a broken host disk).
    pub fail: bool,
}

impl CheckedDisk {
    /// A disk of [`DISK_LEN`] bytes, byte `i` = `i % 251`.
    pub fn new(read_only: bool, fail: bool) -> Self {
        CheckedDisk {
            data: Arc::new(Mutex::new(pattern())),
            read_only,
            fail,
        }
    }

    fn range(&self, offset: u64, len: usize) -> std::ops::Range<usize> {
        let end = offset.checked_add(len as u64).expect("offset + len overflows");
        assert!(end <= DISK_LEN as u64, "access {offset}+{len} past the {DISK_LEN}-byte disk");
        offset as usize..end as usize
    }
}

/// The disk's initial contents.
pub fn pattern() -> Vec<u8> {
    (0..DISK_LEN).map(|i| (i % 251) as u8).collect()
}

impl DiskBackend for CheckedDisk {
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let r = self.range(offset, buf.len());
        if self.fail {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        buf.copy_from_slice(&self.data.lock().unwrap()[r]);
        Ok(())
    }

    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        assert!(!self.read_only, "write to a read-only disk");
        let r = self.range(offset, buf.len());
        if self.fail {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        self.data.lock().unwrap()[r].copy_from_slice(buf);
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.fail {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        Ok(())
    }

    fn size(&self) -> io::Result<u64> {
        Ok(DISK_LEN as u64)
    }
}

/// An anonymous in-memory file of [`DISK_LEN`] bytes holding [`pattern`]:
/// the production backend (`File`: `preadv`/`pwritev` straight into guest
/// memory) without touching the file system.
pub fn memfd_disk() -> std::fs::File {
    // SAFETY: a NUL-terminated name and no flags; the result is checked.
    let fd = unsafe { libc::memfd_create(c"podvm-fuzz-disk".as_ptr(), 0) };
    assert!(fd >= 0, "memfd_create: {}", io::Error::last_os_error());
    // SAFETY: `fd` was just created and is owned by nothing else.
    let file = unsafe { std::fs::File::from_raw_fd(fd) };
    file.write_all_at(&pattern(), 0).expect("fill the memfd");
    file
}
