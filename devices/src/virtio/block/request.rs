//! The layout of a virtio-blk request (virtio spec v1.2 §5.2.6) and the
//! guest buffers that carry it.
//!
//! A request is one descriptor chain: device-readable bytes (a 16-byte
//! header `{type: le32, reserved: le32, sector: le64}`, then the data of a
//! write), followed by device-writable bytes (the data of a read, then one
//! status byte). With VIRTIO_F_VERSION_1 the driver may split those bytes
//! over descriptors as it likes (§2.7.4, message framing), so they are
//! handled here as two byte streams, never as "descriptor 0 is the header".

use std::io;

use virtio_queue::desc::split::Descriptor;
use vm_memory::bitmap::BitmapSlice;
use vm_memory::{
    Address, GuestAddress, GuestMemory, GuestMemoryBackend, GuestMemoryError, Permissions,
    VolatileSlice,
};

use super::backend::GuestBuffers;
use crate::virtio::guest_mem::{in_guest, read_guest, write_guest};
use crate::virtio::ChainError;

/// Sectors are 512 bytes whatever the disk's block size (§5.2.6).
pub const SECTOR_SIZE: u64 = 512;
/// log2 of [`SECTOR_SIZE`].
pub const SECTOR_SHIFT: u32 = 9;
/// Length of the GET_ID string (§5.2.6, `VIRTIO_BLK_ID_BYTES`).
pub const VIRTIO_BLK_ID_BYTES: usize = 20;

/// Request type: read sectors into the device-writable buffers (§5.2.6).
pub const VIRTIO_BLK_T_IN: u32 = 0;
/// Request type: write the device-readable data to sectors (§5.2.6).
pub const VIRTIO_BLK_T_OUT: u32 = 1;
/// Request type: make completed writes durable (§5.2.6).
pub const VIRTIO_BLK_T_FLUSH: u32 = 4;
/// Request type: read the device id string (§5.2.6).
pub const VIRTIO_BLK_T_GET_ID: u32 = 8;

/// Status: success (§5.2.6).
pub const VIRTIO_BLK_S_OK: u8 = 0;
/// Status: the request failed (§5.2.6).
pub const VIRTIO_BLK_S_IOERR: u8 = 1;
/// Status: the device does not know the request type (§5.2.6).
pub const VIRTIO_BLK_S_UNSUPP: u8 = 2;

/// Length of the request header.
pub const HEADER_LEN: u64 = 16;

/// Why a request was answered with `VIRTIO_BLK_S_IOERR`.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// A descriptor points outside guest memory.
    #[error("descriptor {addr:#x}+{len:#x} is outside guest memory")]
    OutsideMemory {
        /// Guest address of the buffer.
        addr: u64,
        /// Its length.
        len: u32,
    },
    /// The chain has a device-readable descriptor after a device-writable
    /// one (§2.7.4.2 forbids it).
    #[error("device-readable descriptor after a device-writable one")]
    ReadableAfterWritable,
    /// The device-readable part is shorter than the header.
    #[error("request header is {0} bytes, needs 16")]
    ShortHeader(u64),
    /// Data travels in the wrong direction for the request type.
    #[error("{what} request carries {len} bytes of {direction} data")]
    WrongDirection {
        /// The request type.
        what: &'static str,
        /// The unexpected bytes.
        len: u64,
        /// "device-readable" or "device-writable".
        direction: &'static str,
    },
    /// Read or write data that is not whole sectors.
    #[error("data length {0} is not a multiple of 512")]
    DataLength(u64),
    /// Sectors beyond the end of the disk.
    #[error("{len} bytes at sector {sector} end beyond the disk's {capacity} sectors")]
    BeyondCapacity {
        /// First sector.
        sector: u64,
        /// Data length in bytes.
        len: u64,
        /// Disk capacity in sectors.
        capacity: u64,
    },
    /// A write to a read-only drive.
    #[error("write to a read-only drive")]
    ReadOnly,
    /// The GET_ID buffer cannot hold the id.
    #[error("GET_ID buffer is {0} bytes, needs 20")]
    IdBuffer(u64),
    /// Copying between guest memory and the bounce buffer failed.
    #[error("cannot access guest memory: {0}")]
    AccessGuestMemory(#[source] GuestMemoryError),
    /// The disk read failed.
    #[error("cannot read the disk at byte {offset}: {source}")]
    ReadDisk {
        /// Byte offset on the disk.
        offset: u64,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The disk write failed.
    #[error("cannot write the disk at byte {offset}: {source}")]
    WriteDisk {
        /// Byte offset on the disk.
        offset: u64,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The flush failed.
    #[error("cannot flush the disk: {0}")]
    FlushDisk(#[source] io::Error),
}

/// The fixed part of a request (`struct virtio_blk_req` without data and
/// status, §5.2.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestHeader {
    /// `VIRTIO_BLK_T_*`.
    pub request_type: u32,
    /// First sector of the transfer (512-byte units).
    pub sector: u64,
}

impl RequestHeader {
    /// Decodes the little-endian header bytes.
    pub fn from_bytes(bytes: &[u8; HEADER_LEN as usize]) -> Self {
        let (ty, rest) = bytes.split_at(4);
        let sector = &rest[4..];
        RequestHeader {
            request_type: u32::from_le_bytes(ty.try_into().expect("4 header bytes")),
            sector: u64::from_le_bytes(sector.try_into().expect("8 header bytes")),
        }
    }
}

/// One descriptor's buffer.
#[derive(Clone, Copy, Debug)]
struct Segment {
    addr: GuestAddress,
    len: u32,
    writable: bool,
}

/// The buffers of one request, in chain order. One value serves every
/// request of a device, so that collecting a chain does not allocate.
#[derive(Debug, Default)]
pub struct RequestBuffers {
    segments: Vec<Segment>,
    /// Where the chain went wrong, when it did: its end is not known.
    broken: Option<ChainError>,
    /// Index of the first device-writable segment.
    first_writable: usize,
    readable_len: u64,
    writable_len: u64,
    /// The first problem found while collecting.
    fault: Option<RequestError>,
    /// Host ranges of the data, for [`RequestBuffers::guest_buffers`].
    iovecs: Iovecs,
}

/// Host address ranges, kept between requests only for their allocation.
#[derive(Debug, Default)]
struct Iovecs(Vec<libc::iovec>);

// SAFETY: the vector holds host addresses only while
// `RequestBuffers::with_guest_buffers` runs, on the thread serving the
// request, which hands them to the kernel and never dereferences them
// itself; it is emptied before that function returns (by a guard, so also
// when a backend panics). Between requests it holds no pointer at all, so
// moving it to another thread moves only an allocation.
unsafe impl Send for Iovecs {}

/// Empties the host ranges when dropped: no address outlives the transfer
/// that used it.
struct ClearOnDrop<'a>(&'a mut Vec<libc::iovec>);

impl Drop for ClearOnDrop<'_> {
    fn drop(&mut self) {
        self.0.clear();
    }
}

impl RequestBuffers {
    /// Empty buffers, with room for requests of `segments` descriptors.
    pub fn with_capacity(segments: usize) -> Self {
        RequestBuffers {
            segments: Vec::with_capacity(segments),
            ..Self::default()
        }
    }

    /// Records the buffers of `chain`, checking each lies in guest memory
    /// and that device-readable ones come first. A chain that goes wrong
    /// part-way has no known end: it has no status byte
    /// ([`RequestBuffers::broken`]).
    pub fn collect<M: GuestMemory>(
        &mut self,
        mem: &M,
        chain: impl Iterator<Item = Result<Descriptor, ChainError>>,
    ) {
        self.segments.clear();
        self.broken = None;
        self.first_writable = usize::MAX;
        self.readable_len = 0;
        self.writable_len = 0;
        self.fault = None;
        // The chain ends after at most the device's descriptors per request
        // (indirect tables are refused) and before 4 GiB in total, so the
        // list does not grow beyond its capacity, nor the u64 sums without
        // bound.
        for desc in chain {
            let desc = match desc {
                Ok(desc) => desc,
                Err(e) => {
                    self.broken = Some(e);
                    break;
                }
            };
            let seg = Segment {
                addr: desc.addr(),
                len: desc.len(),
                writable: desc.is_write_only(),
            };
            let access = if seg.writable {
                if self.first_writable == usize::MAX {
                    self.first_writable = self.segments.len();
                }
                self.writable_len += u64::from(seg.len);
                Permissions::Write
            } else {
                if self.first_writable != usize::MAX && self.fault.is_none() {
                    self.fault = Some(RequestError::ReadableAfterWritable);
                }
                self.readable_len += u64::from(seg.len);
                Permissions::Read
            };
            if !in_guest(mem, seg.addr, seg.len as usize, access) && self.fault.is_none() {
                self.fault = Some(RequestError::OutsideMemory {
                    addr: seg.addr.raw_value(),
                    len: seg.len,
                });
            }
            self.segments.push(seg);
        }
        if self.first_writable == usize::MAX {
            self.first_writable = self.segments.len();
        }
    }

    /// How many segments the list holds without growing, for tests that
    /// check it stays bounded.
    #[cfg(test)]
    pub(super) fn segments_capacity(&self) -> usize {
        self.segments.capacity()
    }

    /// How many host ranges are held between transfers, for tests (none
    /// should be).
    #[cfg(test)]
    pub(super) fn iovecs_held(&self) -> usize {
        self.iovecs.0.len()
    }

    /// Where the chain went wrong, if it did.
    pub fn broken(&self) -> Option<ChainError> {
        self.broken
    }

    /// The first problem found by [`RequestBuffers::collect`], taken.
    pub fn take_fault(&mut self) -> Option<RequestError> {
        self.fault.take()
    }

    /// Bytes in device-readable buffers.
    pub fn readable_len(&self) -> u64 {
        self.readable_len
    }

    /// Bytes in device-writable buffers.
    pub fn writable_len(&self) -> u64 {
        self.writable_len
    }

    /// Where the status byte goes: the last device-writable byte. None
    /// when there is none, or when the chain broke before its end.
    pub fn status_addr(&self) -> Option<GuestAddress> {
        if self.broken.is_some() {
            return None;
        }
        self.segments
            .iter()
            .rev()
            .find(|s| s.writable && s.len > 0)
            .and_then(|s| s.addr.checked_add(u64::from(s.len) - 1))
    }

    /// Reads the request header from the start of the device-readable
    /// bytes.
    pub fn header<M: GuestMemory>(&self, mem: &M) -> Result<RequestHeader, RequestError> {
        if self.readable_len < HEADER_LEN {
            return Err(RequestError::ShortHeader(self.readable_len));
        }
        let mut bytes = [0u8; HEADER_LEN as usize];
        self.gather(mem, 0, &mut bytes)?;
        Ok(RequestHeader::from_bytes(&bytes))
    }

    /// Runs `op` on the guest memory holding `len` bytes starting `skip`
    /// bytes into the device-readable bytes, or the device-writable ones
    /// when `writable`, for a backend to move without a copy; the host
    /// addresses are forgotten as soon as `op` returns. Device-writable
    /// memory is marked dirty first (a failed transfer leaves it marked:
    /// harmless).
    pub fn with_guest_buffers<M: GuestMemory, R>(
        &mut self,
        mem: &M,
        writable: bool,
        skip: u64,
        len: usize,
        op: impl FnOnce(&GuestBuffers<'_>) -> R,
    ) -> Result<R, RequestError> {
        let (segments, access) = if writable {
            (&self.segments[self.first_writable..], Permissions::Write)
        } else {
            (&self.segments[..self.first_writable], Permissions::Read)
        };
        let iovecs = ClearOnDrop(&mut self.iovecs.0);
        let mut moved = 0;
        for (addr, n) in pieces(segments, skip, len) {
            let direct = mem.physical_memory().map(|pm| pm.get_slice(addr, n));
            if let Some(Ok(slice)) = direct {
                moved += push_iovec(iovecs.0, &slice, writable);
                continue;
            }
            let slices = mem
                .get_slices(addr, n, access)
                .map_err(RequestError::AccessGuestMemory)?;
            for slice in slices {
                let slice = slice.map_err(RequestError::AccessGuestMemory)?;
                moved += push_iovec(iovecs.0, &slice, writable);
            }
        }
        short_transfer(len - moved)?;
        // SAFETY: every range is a slice of `mem`, which stays borrowed
        // (hence mapped) while `op` runs, and the ranges are forgotten
        // before `mem` is released; empty ones were left out. Without
        // vm-memory's `xen` feature a slice's pointer guard maps nothing,
        // so its address is valid beyond the guard.
        let bufs = unsafe { GuestBuffers::new(iovecs.0) };
        Ok(op(&bufs))
    }

    /// Copies device-readable bytes, starting `skip` bytes in, into `buf`.
    pub fn gather<M: GuestMemory>(
        &self,
        mem: &M,
        skip: u64,
        buf: &mut [u8],
    ) -> Result<(), RequestError> {
        let readable = &self.segments[..self.first_writable];
        let mut rest = buf;
        for (addr, len) in pieces(readable, skip, rest.len()) {
            let (head, tail) = std::mem::take(&mut rest).split_at_mut(len);
            read_guest(mem, addr, head).map_err(RequestError::AccessGuestMemory)?;
            rest = tail;
        }
        short_transfer(rest.len())
    }

    /// Copies `buf` into the device-writable bytes, starting `skip` bytes
    /// in.
    pub fn scatter<M: GuestMemory>(
        &self,
        mem: &M,
        skip: u64,
        buf: &[u8],
    ) -> Result<(), RequestError> {
        let writable = &self.segments[self.first_writable..];
        let mut rest = buf;
        for (addr, len) in pieces(writable, skip, rest.len()) {
            let (head, tail) = rest.split_at(len);
            write_guest(mem, addr, head).map_err(RequestError::AccessGuestMemory)?;
            rest = tail;
        }
        short_transfer(rest.len())
    }
}

/// Adds `slice` to `iovecs` unless it is empty, marking it dirty first if
/// the device writes it. Returns its length.
fn push_iovec<B: BitmapSlice>(
    iovecs: &mut Vec<libc::iovec>,
    slice: &VolatileSlice<B>,
    dirty: bool,
) -> usize {
    if slice.is_empty() {
        return 0;
    }
    if dirty {
        slice.bitmap().mark_dirty(0, slice.len());
    }
    iovecs.push(libc::iovec {
        iov_base: slice.ptr_guard_mut().as_ptr().cast(),
        iov_len: slice.len(),
    });
    slice.len()
}

/// The guest ranges that hold `count` bytes of `segments` starting `skip`
/// bytes in.
fn pieces(
    segments: &[Segment],
    mut skip: u64,
    mut count: usize,
) -> impl Iterator<Item = (GuestAddress, usize)> + '_ {
    segments.iter().filter_map(move |seg| {
        let len = u64::from(seg.len);
        if count == 0 || skip >= len {
            skip = skip.saturating_sub(len);
            return None;
        }
        // `skip < len <= u32::MAX`, so `n` fits. A segment outside guest
        // memory wraps to an address the copy refuses, never a panic.
        let n = (len - skip).min(count as u64) as usize;
        let addr = GuestAddress(seg.addr.raw_value().wrapping_add(skip));
        skip = 0;
        count -= n;
        Some((addr, n))
    })
}

/// Callers size their transfers from the same segments, so a shortfall is
/// a bug; it is still answered with an error, not a panic.
fn short_transfer(missing: usize) -> Result<(), RequestError> {
    if missing == 0 {
        return Ok(());
    }
    Err(RequestError::AccessGuestMemory(
        GuestMemoryError::PartialBuffer {
            expected: missing,
            completed: 0,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestMemoryMmap};

    const WRITE: u16 = 2;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap()
    }

    fn collect(mem: &GuestMemoryMmap, descs: &[(u64, u32, u16)]) -> RequestBuffers {
        let mut bufs = RequestBuffers::with_capacity(4);
        let chain = descs
            .iter()
            .map(|&(addr, len, flags)| Ok(Descriptor::new(addr, len, flags, 0)));
        bufs.collect(mem, chain);
        bufs
    }

    #[test]
    fn header_decodes_little_endian() {
        let mut b = [0u8; 16];
        b[0] = 8;
        b[4] = 0xff;
        b[8..].copy_from_slice(&0x0102_0304_0506_0708u64.to_le_bytes());
        let h = RequestHeader::from_bytes(&b);
        assert_eq!(h.request_type, 8);
        assert_eq!(h.sector, 0x0102_0304_0506_0708);
    }

    #[test]
    fn header_and_data_may_share_and_split_descriptors() {
        let m = mem();
        // Header split 10 + 6, the second descriptor also holding data.
        m.write_slice(&[1, 0, 0, 0, 0, 0, 0, 0, 7, 0], GuestAddress(0x1000))
            .unwrap();
        m.write_slice(&[0, 0, 0, 0, 0, 0, 0xaa, 0xbb], GuestAddress(0x2000))
            .unwrap();
        let bufs = collect(&m, &[(0x1000, 10, 0), (0x2000, 8, 0), (0x3000, 3, WRITE)]);
        assert!(bufs.fault.is_none());
        assert_eq!(bufs.readable_len(), 18);
        assert_eq!(bufs.writable_len(), 3);
        let h = bufs.header(&m).unwrap();
        assert_eq!((h.request_type, h.sector), (VIRTIO_BLK_T_OUT, 7));
        let mut data = [0u8; 2];
        bufs.gather(&m, HEADER_LEN, &mut data).unwrap();
        assert_eq!(data, [0xaa, 0xbb]);
        bufs.scatter(&m, 1, &[5, 6]).unwrap();
        let mut out = [0u8; 3];
        m.read_slice(&mut out, GuestAddress(0x3000)).unwrap();
        assert_eq!(out, [0, 5, 6]);
        assert_eq!(bufs.status_addr(), Some(GuestAddress(0x3002)));
    }

    #[test]
    fn faults_are_recorded_in_chain_order() {
        let m = mem();
        let mut bufs = collect(&m, &[(0x1000, 16, WRITE), (0x2000, 16, 0)]);
        assert!(matches!(
            bufs.take_fault(),
            Some(RequestError::ReadableAfterWritable)
        ));
        let mut bufs = collect(&m, &[(0xfff0, 32, 0), (0x2000, 1, WRITE)]);
        assert!(matches!(
            bufs.take_fault(),
            Some(RequestError::OutsideMemory {
                addr: 0xfff0,
                len: 32
            })
        ));
        assert_eq!(bufs.status_addr(), Some(GuestAddress(0x2000)));
    }

    #[test]
    fn status_is_the_last_writable_byte_skipping_empty_descriptors() {
        let m = mem();
        let bufs = collect(
            &m,
            &[(0x1000, 16, 0), (0x2000, 4, WRITE), (0x3000, 0, WRITE)],
        );
        assert_eq!(bufs.status_addr(), Some(GuestAddress(0x2003)));
        let bufs = collect(&m, &[(0x1000, 16, 0)]);
        assert_eq!(bufs.status_addr(), None);
    }

    #[test]
    fn a_chain_broken_part_way_has_no_status_byte() {
        let m = mem();
        let mut bufs = RequestBuffers::with_capacity(4);
        let chain = [
            Ok(Descriptor::new(0x1000, 16, 0, 0)),
            Ok(Descriptor::new(0x2000, 1, WRITE, 0)),
            Err(ChainError::Indirect { index: 2 }),
            Ok(Descriptor::new(0x3000, 1, WRITE, 0)),
        ];
        bufs.collect(&m, chain.into_iter());
        assert_eq!(bufs.broken(), Some(ChainError::Indirect { index: 2 }));
        assert_eq!(bufs.status_addr(), None);
        assert_eq!(bufs.writable_len(), 1, "nothing after the break");
        // The next request starts afresh.
        bufs.collect(&m, [Ok(Descriptor::new(0x2000, 1, WRITE, 0))].into_iter());
        assert_eq!(bufs.broken(), None);
        assert_eq!(bufs.status_addr(), Some(GuestAddress(0x2000)));
    }

    #[test]
    fn transfers_longer_than_the_buffers_fail() {
        let m = mem();
        let bufs = collect(&m, &[(0x1000, 4, 0), (0x2000, 4, WRITE)]);
        let mut big = [0u8; 8];
        assert!(bufs.gather(&m, 0, &mut big).is_err());
        assert!(bufs.scatter(&m, 2, &[0; 3]).is_err());
        assert!(matches!(bufs.header(&m), Err(RequestError::ShortHeader(4))));
    }
}
