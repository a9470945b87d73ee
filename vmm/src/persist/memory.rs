//! Guest memory in a snapshot: written to a sparse file, restored by
//! mapping that file copy-on-write.
//!
//! **Full** ([`write_full_memory`]): the file gets the size of guest
//! memory, and only pages the guest (or the VMM) ever populated and that
//! do not read as all zeros are written, at their offset; the others stay
//! holes, which read as zeros. (Transparent huge pages populate guest
//! memory 2 MiB at a time, most of it zeros the guest never wrote.)
//! Which pages are populated comes from `/proc/self/pagemap` (present or
//! swapped out; `mincore(2)` would miss swapped pages) and, for memory
//! mapped from a file, from the data extents of that file: for memory
//! restored from a snapshot, the snapshot's pages the guest has not
//! touched yet; for a booted VM's memfd (shmem), every page the guest or
//! the VMM touched, swapped out or not. A hugetlbfs memfd has no extents
//! (`SEEK_DATA` finds all of it data): its pages are never swapped, and
//! every one of them is in this process's page tables once touched (KVM
//! faults guest pages in through them), so pagemap alone is exact, in
//! whole 2 MiB pages.
//!
//! **Diff** ([`write_diff_memory`]): only the pages written since the last
//! snapshot, into the previous snapshot's memory file. The guest's writes
//! come from KVM's dirty log (memory registered with
//! `Vm::register_memory_with_dirty_log`); KVM does not see the VMM's own
//! writes (used rings, buffers a device fills), which come from the
//! memory's bitmap ([`VmmWriteLog`]): precise with vm-memory's
//! `AtomicBitmap`; with no bitmap (`()`, the memory of a running VM),
//! conservatively every page the VMM may have written: for memory mapped
//! privately (restored from a snapshot) the pages this process holds
//! copies of, and for a shared memfd (a booted VM), whose pages are never
//! private copies, every populated page — a diff of a booted VM is as
//! large as a full snapshot of it, written into the base file (as it was
//! with anonymous memory, all of whose populated pages are private).
//!
//! **Restore** ([`restore_guest_memory`]): each region is mapped
//! `MAP_PRIVATE` from the file. No page is read at load; the guest faults
//! pages in from the page cache as it touches them, and clones restored
//! from one file share every page none of them wrote.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use vm_memory::bitmap::{AtomicBitmap, Bitmap, NewBitmap};
use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{
    Address, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
    GuestRegionMmap, MmapRegion,
};

use super::page_set::{
    add_file_data, open_pagemap, pagemap_pages, PageSet, PAGEMAP_FILE_OR_SHARED, PAGEMAP_PRESENT,
    PAGEMAP_SWAPPED,
};
use crate::vstate::vm::{Vm, VmError};

/// The page size of guest memory, of KVM's dirty log and of the memory
/// file (x86_64).
pub const PAGE_SIZE: usize = 4096;

/// Guest memory could not be written to or restored from a file.
#[derive(Debug, thiserror::Error)]
pub enum MemorySnapshotError {
    /// The working set could not be populated.
    #[error("cannot populate the working set: {0}")]
    Prefetch(#[source] io::Error),
    /// The memory file could not be resized.
    #[error("cannot size the memory file to {size} bytes: {source}")]
    Resize {
        /// The size wanted.
        size: u64,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// Guest pages could not be written to the memory file.
    #[error("cannot write guest memory at {guest_addr:#x} to the memory file: {source}")]
    WritePages {
        /// Guest address of the first page of the run.
        guest_addr: u64,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// `/proc/self/pagemap` could not be read.
    #[error("cannot read /proc/self/pagemap to find the guest's pages: {0}")]
    Pagemap(#[source] io::Error),
    /// The data extents of a memory file could not be read.
    #[error("cannot find the data in the file backing guest memory: {0}")]
    FileExtents(#[source] io::Error),
    /// The memory file could not be examined.
    #[error("cannot examine the memory file: {0}")]
    Stat(#[source] io::Error),
    /// A full snapshot was asked into the file guest memory is mapped from.
    #[error(
        "the memory file is the one guest memory is mapped from; a full snapshot needs a new file"
    )]
    TargetBacksMemory,
    /// A diff was asked for memory KVM does not log.
    #[error("a diff snapshot needs dirty page tracking (track_dirty_pages), which this VM does not have")]
    NoDirtyLog,
    /// A diff was asked into a file that is not a memory file of this VM.
    #[error("the memory file for a diff is {found} bytes, guest memory needs {expected}: not this VM's previous snapshot")]
    DiffTargetSize {
        /// Its size.
        found: u64,
        /// Guest memory's size.
        expected: u64,
    },
    /// KVM's dirty log could not be read.
    #[error("{0}")]
    DirtyLog(#[source] VmError),
    /// The saved layout is unusable.
    #[error("saved memory layout is invalid: region {index} ({base:#x}, {size:#x} bytes at file offset {offset:#x}) {reason}")]
    BadLayout {
        /// Which region.
        index: usize,
        /// Its guest address.
        base: u64,
        /// Its size.
        size: u64,
        /// Its file offset.
        offset: u64,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The saved layout has no region.
    #[error("saved memory layout has no region")]
    NoRegions,
    /// The memory file is shorter than the layout needs.
    #[error("memory file is {len} bytes, the snapshot's memory needs {needed}")]
    FileTooShort {
        /// Its size.
        len: u64,
        /// The size the layout needs.
        needed: u64,
    },
    /// A region could not be mapped from the file.
    #[error("cannot map {size} bytes of guest memory from the memory file: {source}")]
    Map {
        /// The region's size.
        size: u64,
        /// The mapping error.
        #[source]
        source: vm_memory::mmap::MmapRegionError,
    },
    /// The mapped regions do not form guest memory.
    #[error("cannot assemble the restored guest memory: {0}")]
    Assemble(#[source] vm_memory::GuestRegionCollectionError),
}

/// Where one guest memory region lies in the memory file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestRegionState {
    /// Guest physical address of the region.
    pub base_address: u64,
    /// Its size in bytes.
    pub size: u64,
    /// Where it starts in the memory file.
    pub offset: u64,
}

/// The layout of guest memory in its snapshot file: the regions of
/// `memory::ram_regions`, one after the other.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryState {
    /// The regions, in guest address order.
    pub regions: Vec<GuestRegionState>,
}

impl MemoryState {
    /// The layout of `mem` in a memory file.
    pub fn describe<B: Bitmap>(mem: &GuestMemoryMmap<B>) -> MemoryState {
        let mut offset = 0;
        let regions = mem
            .iter()
            .map(|r| {
                let region = GuestRegionState {
                    base_address: r.start_addr().raw_value(),
                    size: r.len(),
                    offset,
                };
                offset += r.len();
                region
            })
            .collect();
        MemoryState { regions }
    }

    /// Bytes of the memory file: the end of its last region.
    pub fn file_size(&self) -> u64 {
        self.regions
            .iter()
            .map(|r| r.offset.saturating_add(r.size))
            .max()
            .unwrap_or(0)
    }

    /// Checks that the layout can be mapped: page-aligned, non-empty
    /// regions in guest address order, overlapping neither in the guest
    /// nor in the file.
    pub fn validate(&self) -> Result<(), MemorySnapshotError> {
        if self.regions.is_empty() {
            return Err(MemorySnapshotError::NoRegions);
        }
        let page = PAGE_SIZE as u64;
        let mut file_ranges: Vec<(u64, u64)> = Vec::new();
        for (index, r) in self.regions.iter().enumerate() {
            let bad = |reason| MemorySnapshotError::BadLayout {
                index,
                base: r.base_address,
                size: r.size,
                offset: r.offset,
                reason,
            };
            if r.size == 0 {
                return Err(bad("is empty"));
            }
            if r.base_address % page != 0 || r.size % page != 0 || r.offset % page != 0 {
                return Err(bad("is not page-aligned"));
            }
            if r.size > usize::MAX as u64 {
                return Err(bad("is too large to map"));
            }
            let (Some(_), Some(file_end)) = (
                r.base_address.checked_add(r.size),
                r.offset.checked_add(r.size),
            ) else {
                return Err(bad("wraps around the address space"));
            };
            if let Some(prev) = index.checked_sub(1).map(|i| &self.regions[i]) {
                if r.base_address < prev.base_address + prev.size {
                    return Err(bad("overlaps or precedes the region before it"));
                }
            }
            if file_ranges
                .iter()
                .any(|&(start, end)| r.offset < end && start < file_end)
            {
                return Err(bad("overlaps another region in the file"));
            }
            file_ranges.push((r.offset, file_end));
        }
        Ok(())
    }
}

/// What a memory snapshot wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryWriteStats {
    /// Pages written.
    pub pages: u64,
    /// Runs of consecutive pages (one `pwrite` each, at most).
    pub runs: u64,
}

impl MemoryWriteStats {
    /// Bytes written.
    pub fn bytes(&self) -> u64 {
        self.pages * PAGE_SIZE as u64
    }
}

/// What the bitmap of guest memory (vm-memory's `Bitmap`, marked on every
/// write the VMM makes through `Bytes`) knows about the VMM's own writes.
pub trait VmmWriteLog: Bitmap {
    /// The pages of the region the VMM wrote since the last call, one bit
    /// per 4 KiB page in KVM's dirty-log layout (bit `i % 64` of word
    /// `i / 64` is page `i`), forgetting them as they are taken; `None`
    /// when this bitmap does not record writes.
    fn take_written_pages(&self) -> Option<Vec<u64>>;
}

impl VmmWriteLog for () {
    fn take_written_pages(&self) -> Option<Vec<u64>> {
        None
    }
}

impl VmmWriteLog for AtomicBitmap {
    fn take_written_pages(&self) -> Option<Vec<u64>> {
        // vm-memory sizes the bitmap's pages from sysconf: 4 KiB on x86_64,
        // the page size of KVM's log.
        Some(self.get_and_reset())
    }
}

impl<B: VmmWriteLog> VmmWriteLog for Option<B> {
    fn take_written_pages(&self) -> Option<Vec<u64>> {
        self.as_ref().and_then(B::take_written_pages)
    }
}

/// Writes `len` bytes of host memory at `ptr` to `file` at `offset`.
///
/// # Safety
///
/// `ptr..ptr + len` must be mapped and readable for the whole call.
unsafe fn pwrite_all(file: &File, ptr: *const u8, len: usize, offset: u64) -> io::Result<()> {
    let mut done = 0;
    while done < len {
        // SAFETY: the caller guarantees the range is mapped; the kernel
        // only reads from it, so no Rust reference to memory the guest may
        // change is ever formed.
        let n = unsafe {
            libc::pwrite(
                file.as_raw_fd(),
                ptr.add(done).cast(),
                len - done,
                (offset + done as u64) as libc::off_t,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(io::Error::from(io::ErrorKind::WriteZero));
        }
        done += n as usize;
    }
    Ok(())
}

/// Writes the pages of `set` of `region` to `file` at `file_offset`.
fn write_pages<B: Bitmap>(
    region: &GuestRegionMmap<B>,
    set: &PageSet,
    file: &File,
    file_offset: u64,
    stats: &mut MemoryWriteStats,
) -> Result<(), MemorySnapshotError> {
    let mapping: &MmapRegion<B> = region;
    for (first, count) in set.runs() {
        let start = first * PAGE_SIZE;
        let len = count * PAGE_SIZE;
        let guest_addr = region.start_addr().raw_value() + start as u64;
        // SAFETY: `start + len` is within the region (the set has one bit
        // per page of it), which stays mapped while `region` is borrowed.
        unsafe {
            pwrite_all(
                file,
                mapping.as_ptr().add(start),
                len,
                file_offset + start as u64,
            )
        }
        .map_err(|source| MemorySnapshotError::WritePages { guest_addr, source })?;
        stats.pages += count as u64;
        stats.runs += 1;
    }
    Ok(())
}

fn same_file(a: &File, b: &File) -> Result<bool, MemorySnapshotError> {
    let a = a.metadata().map_err(MemorySnapshotError::Stat)?;
    let b = b.metadata().map_err(MemorySnapshotError::Stat)?;
    Ok(a.dev() == b.dev() && a.ino() == b.ino())
}

/// The pages of `region` that hold data: populated in this process, or
/// data in the file the region is mapped from.
fn populated_pages<B: Bitmap>(
    pagemap: &File,
    region: &GuestRegionMmap<B>,
) -> Result<PageSet, MemorySnapshotError> {
    let pages = region.len() as usize / PAGE_SIZE;
    let mapping: &MmapRegion<B> = region;
    let mut set = pagemap_pages(pagemap, mapping.as_ptr() as usize, pages, |e| {
        e & (PAGEMAP_PRESENT | PAGEMAP_SWAPPED) != 0
    })
    .map_err(MemorySnapshotError::Pagemap)?;
    match region.file_offset() {
        // SEEK_DATA finds all of a hugetlbfs file data; pagemap is exact
        // there (see the module docs).
        Some(_) if mapping.is_hugetlbfs() == Some(true) => {}
        Some(backing) => add_file_data(backing.file(), backing.start(), region.len(), &mut set)
            .map_err(MemorySnapshotError::FileExtents)?,
        None => {}
    }
    Ok(set)
}

/// The pages of `region` the VMM may have written, for a diff of memory
/// whose bitmap does not record the VMM's writes: for a private mapping,
/// the pages this process holds privately (every page it wrote, and no
/// page it only read from a backing file); for a shared one (a memfd),
/// whose pages are the file's whether written or read, every populated
/// page.
fn maybe_vmm_written_pages<B: Bitmap>(
    pagemap: &File,
    region: &GuestRegionMmap<B>,
) -> Result<PageSet, MemorySnapshotError> {
    let pages = region.len() as usize / PAGE_SIZE;
    let mapping: &MmapRegion<B> = region;
    if mapping.flags() & libc::MAP_SHARED != 0 {
        return populated_pages(pagemap, region);
    }
    pagemap_pages(pagemap, mapping.as_ptr() as usize, pages, |e| {
        e & PAGEMAP_SWAPPED != 0 || (e & PAGEMAP_PRESENT != 0 && e & PAGEMAP_FILE_OR_SHARED == 0)
    })
    .map_err(MemorySnapshotError::Pagemap)
}

/// Restarts dirty tracking: KVM's log (when `vm` logs) and the VMM's
/// bitmap, so that the next diff holds what is written from now on.
fn restart_tracking<B: VmmWriteLog>(
    mem: &GuestMemoryMmap<B>,
    vm: Option<&Vm>,
) -> Result<(), MemorySnapshotError> {
    for (slot, region) in mem.iter().enumerate() {
        if let Some(vm) = vm.filter(|vm| vm.logs_dirty_pages()) {
            // KVM_GET_DIRTY_LOG clears the log it returns.
            vm.dirty_log(slot as u32, region.len())
                .map_err(MemorySnapshotError::DirtyLog)?;
        }
        let mapping: &MmapRegion<B> = region;
        mapping.bitmap().take_written_pages();
    }
    Ok(())
}

/// Writes all of guest memory to `file`, a new memory file (its old
/// contents are discarded, so never a file a VM is restored from): sized
/// to the memory, with only the populated pages that are not all zeros
/// written. Then restarts dirty tracking, so that the next
/// [`write_diff_memory`] is relative to this snapshot; pass the VM whose
/// log to restart as `vm` (`None` for memory no VM maps).
///
/// Every vCPU must be paused (and their state saved: saving one may
/// complete an instruction that writes memory) and devices quiet.
pub fn write_full_memory<B: VmmWriteLog>(
    mem: &GuestMemoryMmap<B>,
    file: &File,
    vm: Option<&Vm>,
) -> Result<MemoryWriteStats, MemorySnapshotError> {
    for region in mem.iter() {
        if let Some(backing) = region.file_offset() {
            // Truncating that file would pull the pages out from under the
            // guest (SIGBUS on the next touch of a page not yet copied).
            if same_file(backing.file(), file)? {
                return Err(MemorySnapshotError::TargetBacksMemory);
            }
        }
    }
    let layout = MemoryState::describe(mem);
    let size = layout.file_size();
    let resize = |size| move |source| MemorySnapshotError::Resize { size, source };
    // Truncate first so that no page of an old file survives as data.
    file.set_len(0).map_err(resize(0))?;
    file.set_len(size).map_err(resize(size))?;
    let pagemap = open_pagemap()?;
    let mut stats = MemoryWriteStats::default();
    for (region, state) in mem.iter().zip(&layout.regions) {
        let mut pages = populated_pages(&pagemap, region)?;
        pages.remove_zero_pages(region);
        write_pages(region, &pages, file, state.offset, &mut stats)?;
    }
    restart_tracking(mem, vm)?;
    Ok(stats)
}

/// Writes the pages written since the last snapshot into `file`, that
/// snapshot's memory file (full, or full plus earlier diffs): the pages
/// KVM logged for the guest, and those the VMM wrote (from the memory's
/// bitmap; with no bitmap, every page it may have written: see the module
/// docs).
/// Then restarts dirty tracking.
///
/// `vm` must log dirty pages (`Vm::register_memory_with_dirty_log`).
/// Writing into a file other VMs are restored from changes their memory
/// too: copy it first. The same preconditions as [`write_full_memory`]
/// apply.
pub fn write_diff_memory<B: VmmWriteLog>(
    mem: &GuestMemoryMmap<B>,
    file: &File,
    vm: &Vm,
) -> Result<MemoryWriteStats, MemorySnapshotError> {
    if !vm.logs_dirty_pages() {
        return Err(MemorySnapshotError::NoDirtyLog);
    }
    let layout = MemoryState::describe(mem);
    let found = file.metadata().map_err(MemorySnapshotError::Stat)?.len();
    if found != layout.file_size() {
        return Err(MemorySnapshotError::DiffTargetSize {
            found,
            expected: layout.file_size(),
        });
    }
    let pagemap = open_pagemap()?;
    let mut stats = MemoryWriteStats::default();
    for (slot, (region, state)) in mem.iter().zip(&layout.regions).enumerate() {
        let pages = region.len() as usize / PAGE_SIZE;
        let mut dirty = PageSet::new(pages);
        let guest = vm
            .dirty_log(slot as u32, region.len())
            .map_err(MemorySnapshotError::DirtyLog)?;
        dirty.union_words(&guest);
        let mapping: &MmapRegion<B> = region;
        match mapping.bitmap().take_written_pages() {
            Some(vmm) => dirty.union_words(&vmm),
            None => dirty.union_words(&maybe_vmm_written_pages(&pagemap, region)?.words),
        }
        write_pages(region, &dirty, file, state.offset, &mut stats)?;
    }
    Ok(stats)
}

/// Maps guest memory laid out as `state` from `file` (a memory file
/// [`write_full_memory`] wrote, and [`write_diff_memory`] may have
/// updated), each region `MAP_PRIVATE`: guest writes stay in this process
/// and the file is never changed. Checks the layout and the file's size
/// first; on error nothing stays mapped.
pub fn restore_guest_memory<B: NewBitmap>(
    file: File,
    state: &MemoryState,
) -> Result<GuestMemoryMmap<B>, MemorySnapshotError> {
    state.validate()?;
    let len = file.metadata().map_err(MemorySnapshotError::Stat)?.len();
    if len < state.file_size() {
        return Err(MemorySnapshotError::FileTooShort {
            len,
            needed: state.file_size(),
        });
    }
    let file = Arc::new(file);
    let regions = state
        .regions
        .iter()
        .enumerate()
        .map(|(index, r)| {
            let size = r.size as usize;
            let map_err = |source| MemorySnapshotError::Map {
                size: r.size,
                source,
            };
            let mapping = MmapRegionBuilder::new_with_bitmap(size, B::with_len(size))
                .with_file_offset(FileOffset::from_arc(file.clone(), r.offset))
                .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
                .with_mmap_flags(libc::MAP_PRIVATE | libc::MAP_NORESERVE)
                .build()
                .map_err(map_err)?;
            GuestRegionMmap::new(mapping, GuestAddress(r.base_address)).ok_or(
                MemorySnapshotError::BadLayout {
                    index,
                    base: r.base_address,
                    size: r.size,
                    offset: r.offset,
                    reason: "wraps around the address space",
                },
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    GuestMemoryMmap::from_regions(regions).map_err(MemorySnapshotError::Assemble)
}

#[cfg(test)]
#[path = "memory_tests.rs"]
mod tests;
