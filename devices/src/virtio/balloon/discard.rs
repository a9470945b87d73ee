//! Giving guest pages back to the host: the pages a balloon holds and the
//! free pages a guest reports.
//!
//! How depends on what backs the range: guest RAM of a booted VM is a
//! shmem file (a memfd, or a file on podvm's private tmpfs) mapped shared,
//! whose pages only a hole punched in the file frees (`MADV_DONTNEED`
//! would only unmap them; a transparent huge page a hole cuts into is
//! split, and its other pages kept); a restored VM's memory is the
//! snapshot's memory file mapped privately, whose private copies
//! `MADV_DONTNEED` drops (the guest then reads the file's page again,
//! which a balloon's page may hold: its content is undefined, virtio
//! v1.2 §5.5.6.1); anonymous memory is dropped with `MADV_DONTNEED` too.
//! A hugetlbfs memfd frees only whole huge pages, so a range is first
//! shrunk to the huge pages it covers.

use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;

use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

/// The guest's page size, in which balloon page frame numbers count.
pub const PAGE_SIZE: u64 = 4096;

/// A range could not be given back.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DiscardError {
    /// The range does not lie inside one region of guest RAM.
    #[error("{len:#x} bytes at {addr:#x} are not inside guest memory")]
    Outside {
        /// Guest address.
        addr: u64,
        /// Length in bytes.
        len: u64,
    },
    /// The host refused.
    #[error("cannot give {len:#x} bytes at {addr:#x} back to the host: {errno}")]
    Host {
        /// Guest address.
        addr: u64,
        /// Length in bytes.
        len: u64,
        /// What the system call said.
        errno: String,
    },
}

/// The page size of each region of `mem` as the host frees it: a
/// hugetlbfs memfd's huge page size, 4 KiB otherwise. Read once, on the
/// VMM thread, when the device starts.
pub fn region_page_sizes(mem: &GuestMemoryMmap) -> Vec<u64> {
    mem.iter()
        .map(|region| {
            region
                .file_offset()
                .filter(|_| region.flags() & libc::MAP_SHARED != 0)
                .and_then(|fo| fo.file().metadata().ok())
                .map_or(PAGE_SIZE, |m| m.blksize().max(PAGE_SIZE))
        })
        .collect()
}

/// Gives the `len` bytes at `addr` back to the host, which must lie inside
/// one region of `mem` (whose page sizes `page_sizes` holds, in region
/// order). Returns the bytes actually freed: a range is shrunk to whole
/// pages of its region first, so a part of a huge page is kept.
pub fn discard(
    mem: &GuestMemoryMmap,
    page_sizes: &[u64],
    addr: GuestAddress,
    len: u64,
) -> Result<u64, DiscardError> {
    let outside = || DiscardError::Outside { addr: addr.0, len };
    let (index, region) = mem
        .iter()
        .enumerate()
        .find(|(_, r)| addr >= r.start_addr() && addr.0 - r.start_addr().0 < r.len())
        .ok_or_else(outside)?;
    let offset = addr.0 - region.start_addr().0;
    let end = offset.checked_add(len).ok_or_else(outside)?;
    if end > region.len() {
        return Err(outside());
    }
    let page = page_sizes.get(index).copied().unwrap_or(PAGE_SIZE);
    let start = offset.div_ceil(page) * page;
    let stop = end / page * page;
    if stop <= start {
        return Ok(0);
    }
    let bytes = stop - start;
    let host_err = |e: std::io::Error| DiscardError::Host {
        addr: addr.0,
        len,
        errno: e.to_string(),
    };
    match region.file_offset() {
        Some(fo) if region.flags() & libc::MAP_SHARED != 0 => {
            let at = fo.start() + start;
            // SAFETY: fallocate on an open fd; it changes only the file's
            // pages in the range, which are this region's.
            let rc = unsafe {
                libc::fallocate(
                    fo.file().as_raw_fd(),
                    libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                    at as libc::off_t,
                    bytes as libc::off_t,
                )
            };
            if rc != 0 {
                return Err(host_err(std::io::Error::last_os_error()));
            }
        }
        _ => {
            // `start..stop` lies inside the region's mapping.
            let host = region.as_ptr().wrapping_add(start as usize);
            // SAFETY: the range is inside the region's own mapping, which
            // lives as long as `mem`; the guest gave its pages up, and
            // dropping them leaves the mapping valid (it faults in again).
            let rc = unsafe { libc::madvise(host.cast(), bytes as usize, libc::MADV_DONTNEED) };
            if rc != 0 {
                return Err(host_err(std::io::Error::last_os_error()));
            }
        }
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use vm_memory::{Bytes, FileOffset, GuestRegionMmap, MmapRegion};

    /// KiB of the `len` bytes at `addr` in memory (`mincore`): an
    /// anonymous mapping may be merged with its neighbours, so smaps
    /// cannot tell.
    fn resident_kib(addr: *const u8, len: usize) -> u64 {
        let mut v = vec![0u8; len / 4096];
        // SAFETY: `addr..addr+len` is one mapping of the test's guest
        // memory; `v` has a byte per page.
        let rc = unsafe { libc::mincore(addr as *mut _, len, v.as_mut_ptr()) };
        assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
        v.iter().filter(|b| *b & 1 != 0).count() as u64 * 4
    }

    fn memfd_memory(size: usize) -> GuestMemoryMmap {
        let name = std::ffi::CString::new("discard-test").unwrap();
        // SAFETY: a new memfd from a valid name.
        let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
        assert!(fd >= 0);
        // SAFETY: the fd was just created and is owned here.
        let file: std::fs::File = unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) };
        file.set_len(size as u64).unwrap();
        let region = MmapRegion::from_file(FileOffset::from_arc(Arc::new(file), 0), size).unwrap();
        GuestMemoryMmap::from_regions(vec![GuestRegionMmap::new(region, GuestAddress(0)).unwrap()])
            .unwrap()
    }

    #[test]
    fn a_memfd_range_is_punched_out_and_reads_zero() {
        let mem = memfd_memory(64 * PAGE_SIZE as usize);
        mem.write_slice(&[0xaa; 64 * 4096], GuestAddress(0))
            .unwrap();
        let host = mem.find_region(GuestAddress(0)).unwrap().as_ptr();
        assert_eq!(resident_kib(host, 64 * 4096), 256);
        let sizes = region_page_sizes(&mem);
        assert_eq!(sizes, [PAGE_SIZE]);
        // 16 pages from page 8, and a part page at each end that stays.
        let freed = discard(&mem, &sizes, GuestAddress(8 * 4096 - 100), 16 * 4096 + 200).unwrap();
        assert_eq!(freed, 16 * 4096);
        assert_eq!(resident_kib(host, 64 * 4096), 256 - 64);
        let mut b = [0u8; 4096];
        mem.read_slice(&mut b, GuestAddress(8 * 4096)).unwrap();
        assert_eq!(b, [0; 4096]);
        mem.read_slice(&mut b, GuestAddress(7 * 4096)).unwrap();
        assert_eq!(b, [0xaa; 4096], "the part page before is kept");
        mem.read_slice(&mut b, GuestAddress(24 * 4096)).unwrap();
        assert_eq!(b, [0xaa; 4096]);
    }

    #[test]
    fn anonymous_memory_is_dropped() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        mem.write_slice(&[7; 0x10_0000], GuestAddress(0)).unwrap();
        let sizes = region_page_sizes(&mem);
        assert_eq!(
            discard(&mem, &sizes, GuestAddress(0), 0x8_0000),
            Ok(0x8_0000)
        );
        let host = mem.find_region(GuestAddress(0)).unwrap().as_ptr();
        assert_eq!(resident_kib(host, 0x10_0000), 512);
        assert_eq!(mem.read_obj::<u8>(GuestAddress(0x1000)).unwrap(), 0);
        assert_eq!(mem.read_obj::<u8>(GuestAddress(0x8_0000)).unwrap(), 7);
    }

    #[test]
    fn ranges_outside_one_region_drop_nothing() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[
            (GuestAddress(0), 0x10_0000),
            (GuestAddress(0x20_0000), 0x10_0000),
        ])
        .unwrap();
        mem.write_slice(&[7; 0x10_0000], GuestAddress(0)).unwrap();
        let sizes = region_page_sizes(&mem);
        for (addr, len) in [
            (0x10_0000, 0x1000),        // in the hole
            (0xf_f000, 0x2000),         // across the end of a region
            (0x30_0000, 0x1000),        // past the end of memory
            (0x1000, u64::MAX),         // overflowing
            (u64::MAX - 0xfff, 0x1000), // at the top of the address space
        ] {
            assert_eq!(
                discard(&mem, &sizes, GuestAddress(addr), len),
                Err(DiscardError::Outside { addr, len }),
                "{addr:#x}+{len:#x}"
            );
        }
        assert_eq!(mem.read_obj::<u8>(GuestAddress(0xf_f000)).unwrap(), 7);
        assert_eq!(
            discard(&mem, &sizes, GuestAddress(0x20_0000), 0x1000),
            Ok(0x1000)
        );
    }

    #[test]
    fn huge_pages_free_only_whole_huge_pages() {
        // The page size comes from the region; a 2 MiB one is asked for.
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x60_0000)]).unwrap();
        let sizes = [0x20_0000];
        assert_eq!(
            discard(&mem, &sizes, GuestAddress(0x1000), 0x20_0000),
            Ok(0)
        );
        assert_eq!(
            discard(&mem, &sizes, GuestAddress(0x1000), 0x40_0000),
            Ok(0x20_0000)
        );
    }
}
