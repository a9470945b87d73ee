//! Which pages of guest memory a snapshot holds: one bit per 4 KiB page,
//! filled from `/proc/self/pagemap`, from a backing file's data extents,
//! from KVM's dirty log, and thinned of pages that read as zeros.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

use vm_memory::bitmap::Bitmap;
use vm_memory::{GuestMemoryRegion, GuestRegionMmap, MmapRegion};

use super::memory::{MemorySnapshotError, PAGE_SIZE};

/// `/proc/self/pagemap` entry bits (Documentation/admin-guide/mm/pagemap.rst).
pub(super) const PAGEMAP_PRESENT: u64 = 1 << 63;
pub(super) const PAGEMAP_SWAPPED: u64 = 1 << 62;
pub(super) const PAGEMAP_FILE_OR_SHARED: u64 = 1 << 61;
/// Pagemap entries read at a time (512 KiB).
const PAGEMAP_BATCH: usize = 65536;

/// One bit per page of a region, in KVM's dirty-log layout (bit `i % 64`
/// of word `i / 64` is page `i`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct PageSet {
    pub(super) words: Vec<u64>,
    pages: usize,
}

impl PageSet {
    pub(super) fn new(pages: usize) -> Self {
        PageSet {
            words: vec![0; pages.div_ceil(64)],
            pages,
        }
    }

    pub(super) fn insert(&mut self, page: usize) {
        self.words[page / 64] |= 1 << (page % 64);
    }

    pub(super) fn contains(&self, page: usize) -> bool {
        self.words[page / 64] & (1 << (page % 64)) != 0
    }

    pub(super) fn insert_range(&mut self, first: usize, end: usize) {
        for page in first..end.min(self.pages) {
            self.insert(page);
        }
    }

    /// Adds every page of `words`, a bitmap in the same layout.
    pub(super) fn union_words(&mut self, words: &[u64]) {
        for (mine, theirs) in self.words.iter_mut().zip(words) {
            *mine |= theirs;
        }
        if let Some(last) = self.words.last_mut() {
            if !self.pages.is_multiple_of(64) {
                *last &= (1 << (self.pages % 64)) - 1;
            }
        }
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Removes the pages of `region` (the region this set describes) that
    /// read as all zeros: what a new, sparse memory file need not hold,
    /// since its holes read as zeros too. Guest memory backed by
    /// transparent huge pages is populated 2 MiB at a time, most of it
    /// never written by the guest.
    ///
    /// No vCPU may run and no device may write guest memory meanwhile
    /// (the snapshot's precondition).
    pub(super) fn remove_zero_pages<B: Bitmap>(&mut self, region: &GuestRegionMmap<B>) {
        let mapping: &MmapRegion<B> = region;
        let base = mapping.as_ptr();
        let len = (region.len() as usize).min(self.pages * PAGE_SIZE);
        for page in 0..len / PAGE_SIZE {
            if !self.contains(page) {
                continue;
            }
            // SAFETY: the page lies inside the mapping, which stays mapped
            // while `region` is borrowed, and is 4 KiB aligned (mappings are
            // page aligned), so it is 512 readable, aligned u64s; nothing
            // writes it during the call (the precondition above), so a
            // shared slice of it is not raced.
            let words = unsafe {
                std::slice::from_raw_parts(base.add(page * PAGE_SIZE).cast::<u64>(), PAGE_SIZE / 8)
            };
            if is_zero(words) {
                self.words[page / 64] &= !(1 << (page % 64));
            }
        }
    }

    /// The runs of consecutive pages, as (first page, page count).
    pub(super) fn runs(&self) -> Vec<(usize, usize)> {
        let mut runs = Vec::new();
        let mut page = 0;
        while page < self.pages {
            if self.words[page / 64] == 0 && page % 64 == 0 {
                page += 64;
                continue;
            }
            if !self.contains(page) {
                page += 1;
                continue;
            }
            let first = page;
            while page < self.pages && self.contains(page) {
                page += 1;
            }
            runs.push((first, page - first));
        }
        runs
    }
}

/// The pages of `[host_addr, host_addr + pages * PAGE_SIZE)` whose pagemap
/// entry passes `keep`.
pub(super) fn pagemap_pages(
    pagemap: &File,
    host_addr: usize,
    pages: usize,
    keep: impl Fn(u64) -> bool,
) -> io::Result<PageSet> {
    let mut set = PageSet::new(pages);
    let mut buf = vec![0u8; pages.min(PAGEMAP_BATCH) * 8];
    let first_entry = (host_addr / PAGE_SIZE) as u64 * 8;
    let mut done = 0;
    while done < pages {
        let n = (pages - done).min(PAGEMAP_BATCH);
        let chunk = &mut buf[..n * 8];
        pagemap.read_exact_at(chunk, first_entry + done as u64 * 8)?;
        for (i, entry) in chunk.chunks_exact(8).enumerate() {
            let mut word = [0u8; 8];
            word.copy_from_slice(entry);
            if keep(u64::from_le_bytes(word)) {
                set.insert(done + i);
            }
        }
        done += n;
    }
    Ok(set)
}

/// Adds to `set` the pages of `[start, start + len)` of `file` that hold
/// data (`SEEK_DATA`/`SEEK_HOLE`), page `0` being offset `start`.
pub(super) fn add_file_data(
    file: &File,
    start: u64,
    len: u64,
    set: &mut PageSet,
) -> io::Result<()> {
    let end = start + len;
    let seek = |pos: u64, whence: libc::c_int| -> io::Result<Option<u64>> {
        // SAFETY: lseek only moves the offset of a descriptor `file` owns
        // (no memory is passed); the position is within `off_t`'s range
        // because it is within the file's.
        let r = unsafe { libc::lseek(file.as_raw_fd(), pos as libc::off_t, whence) };
        if r >= 0 {
            return Ok(Some(r as u64));
        }
        let e = io::Error::last_os_error();
        // ENXIO: no data at or after `pos`.
        if e.raw_os_error() == Some(libc::ENXIO) {
            Ok(None)
        } else {
            Err(e)
        }
    };
    let mut pos = start;
    while pos < end {
        let Some(data) = seek(pos, libc::SEEK_DATA)? else {
            break;
        };
        if data >= end {
            break;
        }
        let hole = seek(data, libc::SEEK_HOLE)?.unwrap_or(end).min(end);
        let first = ((data - start) / PAGE_SIZE as u64) as usize;
        let last = (hole - start).div_ceil(PAGE_SIZE as u64) as usize;
        set.insert_range(first, last);
        pos = hole;
    }
    Ok(())
}

pub(super) fn open_pagemap() -> Result<File, MemorySnapshotError> {
    File::open("/proc/self/pagemap").map_err(MemorySnapshotError::Pagemap)
}
/// Whether every word is zero: 64 bytes at a time, stopping at the first
/// that is not (most pages that are not zero say so in their first bytes).
fn is_zero(words: &[u64]) -> bool {
    words
        .chunks(8)
        .all(|chunk| chunk.iter().fold(0, |acc, &w| acc | w) == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

    #[test]
    fn zero_pages_leave_the_set_and_others_stay() {
        let mem = crate::memory::create_guest_memory(4 << 20).unwrap();
        let region = mem.iter().next().unwrap();
        let mut set = PageSet::new(1024);
        set.insert_range(0, 1024);
        // A last byte, a first byte, and a page written back to zero.
        mem.write_obj(1u8, GuestAddress(0x1fff)).unwrap();
        mem.write_obj(1u8, GuestAddress(0x5000)).unwrap();
        mem.write_obj(1u8, GuestAddress(0x9000)).unwrap();
        mem.write_obj(0u8, GuestAddress(0x9000)).unwrap();
        mem.write_obj(1u8, GuestAddress((4 << 20) - 1)).unwrap();
        set.remove_zero_pages(region);
        assert_eq!(set.runs(), vec![(1, 1), (5, 1), (1023, 1)]);
    }

    #[test]
    fn only_all_zero_words_are_zero() {
        let mut words = [0u64; 512];
        assert!(is_zero(&words));
        for i in [0, 7, 8, 511] {
            words[i] = 1 << 63;
            assert!(!is_zero(&words), "word {i}");
            words[i] = 0;
        }
    }
}
