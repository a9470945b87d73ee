//! The working set of a restored VM: the pages it touched since the
//! restore, recorded so that the next load of the same snapshot can map
//! them in before the guest runs (`record_working_set`,
//! `prefetch_working_set`).

use std::io;

use vm_memory::bitmap::Bitmap;
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion, MmapRegion};

use super::memory::{MemorySnapshotError, PAGE_SIZE};
use super::page_set::{
    open_pagemap, pagemap_pages, PageSet, PAGEMAP_FILE_OR_SHARED, PAGEMAP_PRESENT,
};

/// The guest pages touched since a restore: for each region, runs of
/// `(first page, count)` the guest only read (`read`) and runs it wrote
/// (`written`: copies of the file's pages it made). What a later load of
/// the same snapshot populates before the guest runs
/// ([`prefetch_working_set`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WorkingSet {
    /// Per memory region, in region order: pages read.
    pub read: Vec<Vec<(u64, u64)>>,
    /// Per memory region, in region order: pages written.
    pub written: Vec<Vec<(u64, u64)>>,
}

impl WorkingSet {
    /// Pages in the set.
    pub fn pages(&self) -> u64 {
        self.read
            .iter()
            .chain(&self.written)
            .flatten()
            .map(|&(_, n)| n)
            .sum()
    }
}

/// The pages of `mem` present in this process's page tables now — for
/// memory restored from a file, those the guest (or podvm) touched since —
/// split into those still the file's (read) and private copies (written).
pub fn record_working_set<B: Bitmap>(
    mem: &GuestMemoryMmap<B>,
) -> Result<WorkingSet, MemorySnapshotError> {
    let pagemap = open_pagemap()?;
    let mut set = WorkingSet::default();
    let runs = |p: PageSet| -> Vec<(u64, u64)> {
        p.runs()
            .into_iter()
            .map(|(first, n)| (first as u64, n as u64))
            .collect()
    };
    for region in mem.iter() {
        let pages = region.len() as usize / PAGE_SIZE;
        let mapping: &MmapRegion<B> = region;
        let addr = mapping.as_ptr() as usize;
        let read = pagemap_pages(&pagemap, addr, pages, |e| {
            e & PAGEMAP_PRESENT != 0 && e & PAGEMAP_FILE_OR_SHARED != 0
        })
        .map_err(MemorySnapshotError::Pagemap)?;
        let written = pagemap_pages(&pagemap, addr, pages, |e| {
            e & PAGEMAP_PRESENT != 0 && e & PAGEMAP_FILE_OR_SHARED == 0
        })
        .map_err(MemorySnapshotError::Pagemap)?;
        set.read.push(runs(read));
        set.written.push(runs(written));
    }
    Ok(set)
}

/// Maps the pages of `set` into this process's page tables now, so that
/// the guest does not stop on a fault for each of them when it runs: the
/// pages it read as the file's (`MADV_POPULATE_READ`), the pages it wrote
/// as private copies already (`MADV_POPULATE_WRITE`: the copy a write
/// would make, made before). Runs outside a region are ignored. Returns
/// the pages populated.
pub fn prefetch_working_set<B: Bitmap>(
    mem: &GuestMemoryMmap<B>,
    set: &WorkingSet,
) -> Result<u64, MemorySnapshotError> {
    let mut done = 0;
    for (advice, lists) in [
        (libc::MADV_POPULATE_READ, &set.read),
        (libc::MADV_POPULATE_WRITE, &set.written),
    ] {
        for (region, runs) in mem.iter().zip(lists) {
            let pages = region.len() / PAGE_SIZE as u64;
            let mapping: &MmapRegion<B> = region;
            for &(first, count) in runs {
                let Some(end) = first.checked_add(count).filter(|&end| end <= pages) else {
                    continue;
                };
                let len = ((end - first) as usize) * PAGE_SIZE;
                // SAFETY: the range lies inside the region's mapping
                // (checked above), which stays mapped while `region` is
                // borrowed; populating it changes no byte of it (a
                // private copy holds the file's bytes).
                let rc = unsafe {
                    libc::madvise(
                        mapping.as_ptr().add(first as usize * PAGE_SIZE).cast(),
                        len,
                        advice,
                    )
                };
                if rc != 0 {
                    return Err(MemorySnapshotError::Prefetch(io::Error::last_os_error()));
                }
                done += end - first;
            }
        }
    }
    Ok(done)
}
