//! Descriptor chains as the vsock device reads them: walked by hand so
//! that indirect descriptors are refused rather than followed, and seen
//! as one byte range split over guest buffers any way the driver likes.
//!
//! `virtio_queue::DescriptorChain` follows VIRTQ_DESC_F_INDIRECT on its
//! own; the device does not offer VIRTIO_F_INDIRECT_DESC, so a driver that
//! uses one breaks the protocol (spec §2.7.5.3.1) and its chain is refused.

use vm_memory::{Address, Bytes, GuestAddress, GuestMemory, GuestMemoryError, Permissions};

use virtio_queue::desc::split::Descriptor;

/// Size of one split-ring descriptor (spec §2.7.5).
const DESC_SIZE: u64 = 16;

/// One guest buffer of a chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Where it starts.
    pub addr: GuestAddress,
    /// Its length (never 0).
    pub len: u32,
}

/// Why a chain cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// A descriptor refers to an indirect table.
    #[error("it uses an indirect descriptor, a feature the device does not offer")]
    Indirect,
    /// A `next` index is outside the descriptor table.
    #[error("descriptor index {0} is outside the queue")]
    BadIndex(u16),
    /// More descriptors than the queue holds: a loop.
    #[error("it has more descriptors than the queue holds")]
    TooLong,
    /// A buffer of the wrong direction (device-writable in a transmit
    /// chain, device-readable in a receive chain).
    #[error("it has a {0} descriptor")]
    WrongDirection(&'static str),
    /// A buffer is not in guest memory.
    #[error("a buffer lies outside guest memory")]
    OutsideMemory,
    /// The descriptor table could not be read.
    #[error("cannot read a descriptor: {0}")]
    ReadDescriptor(#[source] GuestMemoryError),
}

/// Where a queue's descriptor table is.
#[derive(Clone, Copy, Debug)]
pub struct DescTable {
    /// Guest address of the table.
    pub addr: GuestAddress,
    /// Entries in it (the queue size).
    pub size: u16,
}

/// Walks the chain starting at `head`, appending its buffers to `out`
/// until they hold `limit` bytes or the chain ends. `writable` says which
/// direction every buffer must have. Returns the bytes collected (at most
/// `limit` counted, though the last buffer may reach beyond it). On error
/// `out` keeps the buffers before the bad descriptor, so that a caller
/// may still read a header from them.
pub fn walk<M: GuestMemory>(
    mem: &M,
    table: DescTable,
    head: u16,
    writable: bool,
    limit: usize,
    out: &mut Vec<Segment>,
) -> Result<usize, ChainError> {
    let mut index = head;
    let mut total = 0usize;
    // A chain has at most `size` descriptors (spec §2.7.5.2); more is a
    // loop in the `next` links.
    for _ in 0..table.size {
        if index >= table.size {
            return Err(ChainError::BadIndex(index));
        }
        // index < size ≤ 2^15, so the offset fits easily.
        let at = table
            .addr
            .checked_add(u64::from(index) * DESC_SIZE)
            .ok_or(ChainError::OutsideMemory)?;
        let desc: Descriptor = mem.read_obj(at).map_err(ChainError::ReadDescriptor)?;
        if desc.refers_to_indirect_table() {
            return Err(ChainError::Indirect);
        }
        if desc.is_write_only() != writable {
            return Err(ChainError::WrongDirection(if writable {
                "device-readable"
            } else {
                "device-writable"
            }));
        }
        let len = desc.len();
        if len > 0 {
            let access = if writable {
                Permissions::Write
            } else {
                Permissions::Read
            };
            if !mem.check_range(desc.addr(), len as usize, access) {
                return Err(ChainError::OutsideMemory);
            }
            out.push(Segment {
                addr: desc.addr(),
                len,
            });
            total = total.saturating_add(len as usize);
        }
        if total >= limit || !desc.has_next() {
            return Ok(total.min(limit));
        }
        index = desc.next();
    }
    Err(ChainError::TooLong)
}

/// Calls `f` with each piece of the byte range `[offset, offset + len)` of
/// the buffers `segs`, as (guest address, offset into the range, length).
/// Stops where the buffers end.
fn pieces(
    segs: &[Segment],
    offset: usize,
    len: usize,
    mut f: impl FnMut(GuestAddress, usize, usize) -> Result<(), GuestMemoryError>,
) -> Result<usize, GuestMemoryError> {
    let mut skip = offset;
    let mut done = 0;
    for s in segs {
        if done == len {
            break;
        }
        let seg_len = s.len as usize;
        if skip >= seg_len {
            skip -= seg_len;
            continue;
        }
        let n = (seg_len - skip).min(len - done);
        // skip < seg_len ≤ u32::MAX, and the segment was checked to lie in
        // guest memory.
        f(s.addr.unchecked_add(skip as u64), done, n)?;
        done += n;
        skip = 0;
    }
    Ok(done)
}

/// Reads `buf.len()` bytes from offset `offset` of the range the buffers
/// make up; returns how many there were (fewer where the buffers end).
pub fn read_from<M: GuestMemory>(
    mem: &M,
    segs: &[Segment],
    offset: usize,
    buf: &mut [u8],
) -> Result<usize, GuestMemoryError> {
    let len = buf.len();
    pieces(segs, offset, len, |addr, at, n| {
        mem.read_slice(&mut buf[at..at + n], addr)
    })
}

/// Writes `data` at offset `offset` of the range the buffers make up;
/// returns how many bytes fitted.
pub fn write_to<M: GuestMemory>(
    mem: &M,
    segs: &[Segment],
    offset: usize,
    data: &[u8],
) -> Result<usize, GuestMemoryError> {
    pieces(segs, offset, data.len(), |addr, at, n| {
        mem.write_slice(&data[at..at + n], addr)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::vsock::test_utils::{test_mem, TestQueue, INDIRECT, NEXT, WRITE};
    use virtio_queue::desc::RawDescriptor;

    fn table(q: &TestQueue) -> DescTable {
        q.desc_table()
    }

    #[test]
    fn a_chain_is_its_buffers_in_order() {
        let mem = test_mem();
        let mut q = TestQueue::new(&mem, 0, 16);
        let head = q.add_chain(&[(0x1_0000, 10, 0), (0x2_0000, 0, 0), (0x3_0000, 50, 0)]);
        let mut segs = Vec::new();
        let n = walk(&mem, table(&q), head, false, 1000, &mut segs).unwrap();
        assert_eq!(n, 60);
        assert_eq!(
            segs,
            vec![
                Segment {
                    addr: GuestAddress(0x1_0000),
                    len: 10
                },
                Segment {
                    addr: GuestAddress(0x3_0000),
                    len: 50
                },
            ]
        );
        // The walk stops once it has `limit` bytes.
        segs.clear();
        assert_eq!(walk(&mem, table(&q), head, false, 5, &mut segs).unwrap(), 5);
        assert_eq!(segs.len(), 1);
    }

    #[test]
    fn bytes_cross_buffer_boundaries() {
        let mem = test_mem();
        let segs = [
            Segment {
                addr: GuestAddress(0x1_0000),
                len: 3,
            },
            Segment {
                addr: GuestAddress(0x2_0000),
                len: 1,
            },
            Segment {
                addr: GuestAddress(0x3_0000),
                len: 100,
            },
        ];
        let data: Vec<u8> = (0..50).collect();
        assert_eq!(write_to(&mem, &segs, 2, &data).unwrap(), 50);
        let mut at_1 = [0u8; 1];
        mem.read_slice(&mut at_1, GuestAddress(0x2_0000)).unwrap();
        assert_eq!(at_1, [1]);
        let mut back = vec![0u8; 50];
        assert_eq!(read_from(&mem, &segs, 2, &mut back).unwrap(), 50);
        assert_eq!(back, data);
        // Past the end: what there is.
        let mut long = vec![0u8; 200];
        assert_eq!(read_from(&mem, &segs, 100, &mut long).unwrap(), 4);
        assert_eq!(write_to(&mem, &segs, 104, &[1]).unwrap(), 0);
    }

    #[test]
    fn indirect_descriptors_are_refused_after_what_came_before() {
        let mem = test_mem();
        let mut q = TestQueue::new(&mem, 0, 16);
        let head = q.add_chain(&[(0x1_0000, 44, 0), (0x2_0000, 32, INDIRECT)]);
        let mut segs = Vec::new();
        assert!(matches!(
            walk(&mem, table(&q), head, false, 1000, &mut segs),
            Err(ChainError::Indirect)
        ));
        assert_eq!(segs.len(), 1, "the buffer before it is kept");
        // An indirect head: nothing.
        let head = q.add_chain(&[(0x2_0000, 32, INDIRECT)]);
        segs.clear();
        assert!(matches!(
            walk(&mem, table(&q), head, false, 1000, &mut segs),
            Err(ChainError::Indirect)
        ));
        assert!(segs.is_empty());
    }

    #[test]
    fn loops_bad_links_directions_and_memory_are_refused() {
        let mem = test_mem();
        let q = TestQueue::new(&mem, 0, 4);
        let t = table(&q);
        let mut segs = Vec::new();
        // 0 -> 1 -> 0 -> ...
        q.set_desc(
            0,
            RawDescriptor::from(Descriptor::new(0x1_0000, 1, NEXT, 1)),
        );
        q.set_desc(
            1,
            RawDescriptor::from(Descriptor::new(0x1_0000, 1, NEXT, 0)),
        );
        assert!(matches!(
            walk(&mem, t, 0, false, 1000, &mut segs),
            Err(ChainError::TooLong)
        ));
        q.set_desc(
            2,
            RawDescriptor::from(Descriptor::new(0x1_0000, 1, NEXT, 9)),
        );
        assert!(matches!(
            walk(&mem, t, 2, false, 1000, &mut segs),
            Err(ChainError::BadIndex(9))
        ));
        assert!(matches!(
            walk(&mem, t, 7, false, 1000, &mut segs),
            Err(ChainError::BadIndex(7))
        ));
        q.set_desc(
            3,
            RawDescriptor::from(Descriptor::new(0x1_0000, 8, WRITE, 0)),
        );
        assert!(matches!(
            walk(&mem, t, 3, false, 1000, &mut segs),
            Err(ChainError::WrongDirection(_))
        ));
        assert_eq!(walk(&mem, t, 3, true, 1000, &mut segs).unwrap(), 8);
        q.set_desc(
            3,
            RawDescriptor::from(Descriptor::new(0x7fff_ff00, 8, 0, 0)),
        );
        assert!(matches!(
            walk(&mem, t, 3, false, 1000, &mut segs),
            Err(ChainError::OutsideMemory)
        ));
        // A table outside memory.
        let far = DescTable {
            addr: GuestAddress(0x7fff_0000),
            size: 4,
        };
        assert!(matches!(
            walk(&mem, far, 0, false, 1000, &mut segs),
            Err(ChainError::ReadDescriptor(_))
        ));
        let wrapping = DescTable {
            addr: GuestAddress(u64::MAX - 8),
            size: 4,
        };
        assert!(walk(&mem, wrapping, 3, false, 1000, &mut segs).is_err());
    }
}
