//! Guest RAM: a shmem file (`ram_file`: a file on podvm's private
//! huge-page tmpfs, or a memfd), mapped shared and split around the MMIO
//! gap below 4 GiB, backed by transparent or base pages, or by 2 MiB
//! hugetlbfs pages.
//!
//! A file rather than anonymous memory so that another process (a future
//! vhost-user device) can be handed the guest's RAM as a file descriptor:
//! each region's [`FileOffset`] holds it. Without `huge_pages` its pages
//! are allocated on first touch, so an idle guest costs only what it used
//! (in 2 MiB steps where it gets transparent huge pages), and its
//! populated pages are the file's data (what a snapshot finds with
//! `SEEK_DATA`). With huge pages (`MFD_HUGETLB`) the whole size is reserved
//! from the host's pool when it is mapped, so a VM either gets all its
//! huge pages at build time or fails to build, and never faults on a
//! missing one later.

use std::io;
use std::path::Path;
use std::sync::Arc;

use resources::{HugePageConfig, HUGE_PAGE_2M};
use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{FileOffset, GuestAddress, GuestMemoryMmap, GuestRegionMmap};

use crate::arch::x86_64::layout::{MMIO_GAP_END, MMIO_GAP_START};

mod ram_file;

pub use ram_file::{
    prepare as prepare_ram_backing, shmem_thp_setting, BasePageBacking, GUEST_RAM_MEMFD_NAME,
    SHMEM_THP_SETTING,
};

/// Where the kernel counts 2 MiB huge pages (`free_hugepages`,
/// `resv_hugepages`, `nr_hugepages`).
pub const HUGEPAGES_2M_SYSFS: &str = "/sys/kernel/mm/hugepages/hugepages-2048kB";

/// Guest memory could not be created.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// `memfd_create` failed.
    #[error("cannot create the memfd for guest memory: {0}")]
    CreateMemfd(#[source] io::Error),
    /// The file could not be sized.
    #[error("cannot size guest memory's file to {size_mib} MiB: {source}")]
    SizeMemfd {
        /// Requested size in MiB.
        size_mib: u64,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The host refused to map the memory.
    #[error("cannot map {size_mib} MiB of guest memory: {source}")]
    Map {
        /// Size of the region in MiB.
        size_mib: u64,
        /// The mapping error.
        #[source]
        source: vm_memory::mmap::MmapRegionError,
    },
    /// The mapped regions do not form guest memory.
    #[error("cannot assemble guest memory: {0}")]
    Assemble(#[source] vm_memory::GuestRegionCollectionError),
    /// Memory to back with huge pages that is not a whole number of them.
    #[error("{size_mib} MiB of guest memory is not a whole number of 2 MiB huge pages")]
    NotHugePageMultiple {
        /// Requested size in MiB.
        size_mib: u64,
    },
    /// The host has fewer free huge pages than the guest needs.
    #[error(
        "huge_pages \"2M\": guest memory needs {needed} free 2 MiB huge pages, the host has {free} \
         ({HUGEPAGES_2M_SYSFS}: free_hugepages minus resv_hugepages); reserve more through \
         /proc/sys/vm/nr_hugepages"
    )]
    NotEnoughHugePages {
        /// Huge pages the guest's memory takes.
        needed: u64,
        /// Huge pages free and not reserved by other mappings.
        free: u64,
    },
    /// The huge pages could not be reserved, and how many are free is
    /// unknown.
    #[error("huge_pages \"2M\": cannot reserve {needed} 2 MiB huge pages for guest memory ({HUGEPAGES_2M_SYSFS} unreadable: {count}): {source}")]
    ReserveHugePages {
        /// Huge pages the guest's memory takes.
        needed: u64,
        /// Why the free count could not be read.
        count: io::Error,
        /// The mapping error.
        #[source]
        source: vm_memory::mmap::MmapRegionError,
    },
}

/// The guest physical ranges backing `mem_size` bytes of RAM: from 0 up to
/// the MMIO gap, and the rest from 4 GiB.
pub fn ram_regions(mem_size: u64) -> Vec<(GuestAddress, usize)> {
    let low = mem_size.min(MMIO_GAP_START);
    let mut regions = vec![(GuestAddress(0), low as usize)];
    if mem_size > MMIO_GAP_START {
        regions.push((
            GuestAddress(MMIO_GAP_END),
            (mem_size - MMIO_GAP_START) as usize,
        ));
    }
    regions
}

// The low region ends at the gap, and the high one starts at that offset
// of the file: a hugetlbfs mapping must start at a huge-page offset.
const _: () = assert!(MMIO_GAP_START.is_multiple_of(HUGE_PAGE_2M));

fn read_count(path: &Path) -> io::Result<u64> {
    let text = std::fs::read_to_string(path)?;
    text.trim().parse().map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {text:?}: {e}", path.display()),
        )
    })
}

/// The 2 MiB huge pages a new mapping can reserve now: free ones not
/// promised to other mappings (`free_hugepages − resv_hugepages`), from
/// sysfs or, where only `/proc` is mounted (a jail), from `/proc/meminfo`
/// when 2 MiB is the default huge page size.
pub fn free_huge_pages_2m() -> io::Result<u64> {
    let sysfs = Path::new(HUGEPAGES_2M_SYSFS);
    let from_sysfs = read_count(&sysfs.join("free_hugepages"))
        .and_then(|free| Ok((free, read_count(&sysfs.join("resv_hugepages"))?)));
    let (free, reserved) = match from_sysfs {
        Ok(counts) => counts,
        Err(sysfs_err) => {
            let meminfo = std::fs::read_to_string("/proc/meminfo").map_err(|_| sysfs_err)?;
            let field = |key: &str| -> Option<u64> {
                meminfo.lines().find_map(|l| {
                    let rest = l.strip_prefix(key)?.strip_prefix(':')?;
                    rest.split_whitespace().next()?.parse().ok()
                })
            };
            match (
                field("Hugepagesize"),
                field("HugePages_Free"),
                field("HugePages_Rsvd"),
            ) {
                (Some(2048), Some(free), Some(reserved)) => (free, reserved),
                _ => {
                    return Err(io::Error::new(
                        io::ErrorKind::NotFound,
                        "no 2 MiB huge page counts in sysfs or /proc/meminfo",
                    ))
                }
            }
        }
    };
    Ok(free.saturating_sub(reserved))
}

/// Checks that `mem_size` bytes can be backed as `huge_pages` says on this
/// host now: a whole number of huge pages, and that many free. The host
/// may change before the memory is mapped; [`create_guest_memory_with`]
/// checks again. A free count that cannot be read is not an error here:
/// mapping the memory then tells.
pub fn check_huge_pages(mem_size: u64, huge_pages: HugePageConfig) -> Result<(), MemoryError> {
    let Some(page) = huge_pages.huge_page_size() else {
        return Ok(());
    };
    if !mem_size.is_multiple_of(page) {
        return Err(MemoryError::NotHugePageMultiple {
            size_mib: mem_size >> 20,
        });
    }
    let needed = mem_size / page;
    match free_huge_pages_2m() {
        Ok(free) if free < needed => Err(MemoryError::NotEnoughHugePages { needed, free }),
        Ok(_) => Ok(()),
        Err(e) => {
            log::debug!("cannot count the free huge pages: {e}");
            Ok(())
        }
    }
}

/// Maps `mem_size` bytes of guest RAM backed by base pages (see
/// [`create_guest_memory_with`]).
pub fn create_guest_memory(mem_size: u64) -> Result<GuestMemoryMmap, MemoryError> {
    create_guest_memory_with(mem_size, HugePageConfig::None)
}

/// Maps `mem_size` bytes of guest RAM from a new file, shared: backed by
/// base pages allocated on first touch, or by 2 MiB huge pages all
/// reserved now (`huge_pages`: [`MemoryError::NotEnoughHugePages`] when
/// the host has too few).
pub fn create_guest_memory_with(
    mem_size: u64,
    huge_pages: HugePageConfig,
) -> Result<GuestMemoryMmap, MemoryError> {
    check_huge_pages(mem_size, huge_pages)?;
    let huge = huge_pages.huge_page_size().is_some();
    let file = Arc::new(ram_file::create(mem_size, huge)?);
    // Base pages: nothing to reserve (shmem charges pages as they are
    // allocated). Huge pages: no MAP_NORESERVE, so that the mapping
    // reserves every huge page of the region or fails.
    let flags = if huge {
        libc::MAP_SHARED
    } else {
        libc::MAP_SHARED | libc::MAP_NORESERVE
    };
    let mut offset = 0u64;
    let mut regions = Vec::new();
    for (base, size) in ram_regions(mem_size) {
        let mapping = MmapRegionBuilder::new(size)
            .with_file_offset(FileOffset::from_arc(file.clone(), offset))
            .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
            .with_mmap_flags(flags)
            .with_hugetlbfs(huge)
            .build()
            .map_err(|source| map_error(source, size as u64, mem_size, huge_pages))?;
        if !huge {
            advise_huge_pages(&mapping, size, ram_file::wants_thp());
        }
        offset += size as u64;
        regions.push(
            GuestRegionMmap::new(mapping, base)
                .expect("ram_regions gives regions below the top of the address space"),
        );
    }
    GuestMemoryMmap::from_regions(regions).map_err(MemoryError::Assemble)
}

/// Asks for transparent huge pages on a base-page region, or refuses
/// them (`want`: `MADV_HUGEPAGE`, else `MADV_NOHUGEPAGE`). Asking is what a
/// memfd needs to get them on a host whose shmem THP setting is `advise`
/// (the private tmpfs gives them without asking); refusing keeps a memfd
/// on 4 KiB pages even where the host's setting (`always`, `within_size`,
/// or the per-size `hugepages-2048kB/shmem_enabled`) would give it huge
/// ones (`--no-guest-thp`).
fn advise_huge_pages(mapping: &vm_memory::MmapRegion, size: usize, want: bool) {
    let advice = if want {
        libc::MADV_HUGEPAGE
    } else {
        libc::MADV_NOHUGEPAGE
    };
    // SAFETY: the range is exactly the new mapping; the advice changes no
    // content and no protection.
    let rc = unsafe { libc::madvise(mapping.as_ptr().cast(), size, advice) };
    if rc != 0 {
        log::debug!(
            "guest memory: cannot advise on transparent huge pages: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// How much of guest memory one release job frees.
const RELEASE_CHUNK: u64 = 32 << 20;

/// Gives every page of guest memory back to the host now, on up to
/// `threads` threads at once (the kernel frees pages about as fast per
/// thread as the exit of the process would, so several threads cut the
/// time it takes): the file's pages are punched out of it, a private
/// mapping's own pages dropped (the balloon's
/// [`devices::virtio::balloon::discard::discard`]). The memory reads as
/// zeros afterwards: call it only once no vCPU runs and no device will
/// touch guest memory again. Returns the bytes released (holes count
/// too); a range the host refuses is logged and skipped.
pub fn release_guest_memory(mem: &GuestMemoryMmap, threads: usize) -> u64 {
    use devices::virtio::balloon::discard::{discard, region_page_sizes};
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
    use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
    let sizes = region_page_sizes(mem);
    let jobs: Vec<(GuestAddress, u64)> = mem
        .iter()
        .flat_map(|r| {
            let (start, len) = (r.start_addr().0, r.len());
            (0..len.div_ceil(RELEASE_CHUNK)).map(move |i| {
                let at = i * RELEASE_CHUNK;
                (GuestAddress(start + at), RELEASE_CHUNK.min(len - at))
            })
        })
        .collect();
    let next = AtomicUsize::new(0);
    let freed = AtomicU64::new(0);
    let work = || {
        while let Some(&(addr, len)) = jobs.get(next.fetch_add(1, Ordering::Relaxed)) {
            match discard(mem, &sizes, addr, len) {
                Ok(n) => {
                    freed.fetch_add(n, Ordering::Relaxed);
                }
                Err(e) => log::warn!("guest memory: {e}"),
            }
        }
    };
    std::thread::scope(|s| {
        for i in 1..threads.clamp(1, jobs.len().max(1)) {
            let spawned = std::thread::Builder::new()
                .name(format!("mem-release-{i}"))
                .spawn_scoped(s, work);
            if let Err(e) = spawned {
                log::debug!("guest memory: one release thread fewer: {e}");
            }
        }
        work();
    });
    freed.into_inner()
}

/// What a failed mapping of a `size`-byte region means: for huge pages,
/// that the host could not reserve them (`ENOMEM`).
fn map_error(
    source: vm_memory::mmap::MmapRegionError,
    size: u64,
    mem_size: u64,
    huge_pages: HugePageConfig,
) -> MemoryError {
    let enomem = matches!(&source, vm_memory::mmap::MmapRegionError::Mmap(e)
        if e.raw_os_error() == Some(libc::ENOMEM));
    match huge_pages.huge_page_size() {
        Some(page) if enomem => {
            let needed = mem_size / page;
            match free_huge_pages_2m() {
                Ok(free) => MemoryError::NotEnoughHugePages { needed, free },
                Err(count) => MemoryError::ReserveHugePages {
                    needed,
                    count,
                    source,
                },
            }
        }
        _ => MemoryError::Map {
            size_mib: size >> 20,
            source,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestMemoryBackend, GuestMemoryRegion, MmapRegion};

    #[test]
    fn regions_split_around_the_gap() {
        assert_eq!(ram_regions(128 << 20), vec![(GuestAddress(0), 128 << 20)]);
        assert_eq!(
            ram_regions(MMIO_GAP_START),
            vec![(GuestAddress(0), MMIO_GAP_START as usize)]
        );
        assert_eq!(
            ram_regions(4 << 30),
            vec![
                (GuestAddress(0), MMIO_GAP_START as usize),
                (GuestAddress(1 << 32), ((4 << 30) - MMIO_GAP_START) as usize)
            ]
        );
    }

    #[test]
    fn memory_above_the_gap_is_usable() {
        let mem = create_guest_memory(4 << 30).unwrap();
        assert_eq!(mem.num_regions(), 2);
        mem.write_obj(0xabcdu32, GuestAddress(1 << 32)).unwrap();
        assert_eq!(mem.read_obj::<u32>(GuestAddress(1 << 32)).unwrap(), 0xabcd);
        assert!(mem.write_obj(0u32, GuestAddress(MMIO_GAP_START)).is_err());
    }

    /// The `/proc/self/maps` line of the mapping at `addr`.
    fn maps_line(addr: usize) -> String {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        maps.lines()
            .find(|l| {
                let (start, _) = l.split_once('-').unwrap();
                usize::from_str_radix(start, 16).unwrap() == addr
            })
            .unwrap_or_else(|| panic!("no mapping at {addr:#x} in\n{maps}"))
            .to_string()
    }

    #[test]
    fn released_guest_memory_is_back_on_the_host_and_reads_zero() {
        use std::os::unix::fs::MetadataExt;
        // Both regions (around the MMIO gap), several jobs each.
        let mem = create_guest_memory(MMIO_GAP_START + (64 << 20)).unwrap();
        let file = mem.iter().next().unwrap().file_offset().unwrap().file();
        for addr in [
            0u64,
            100 << 20,
            MMIO_GAP_START - 4096,
            1 << 32,
            (1 << 32) + (63 << 20),
        ] {
            mem.write_obj(0x5au8, GuestAddress(addr)).unwrap();
        }
        let allocated = || file.metadata().unwrap().blocks() * 512;
        // Five pages, each 4 KiB or a transparent 2 MiB one.
        assert!(
            [5 * 4096, 5 << 21].contains(&allocated()),
            "{}",
            allocated()
        );
        let freed = release_guest_memory(&mem, 3);
        assert_eq!(
            freed,
            MMIO_GAP_START + (64 << 20),
            "every byte, freed or a hole"
        );
        assert_eq!(allocated(), 0);
        assert_eq!(mem.read_obj::<u8>(GuestAddress(1 << 32)).unwrap(), 0);
        assert_eq!(
            release_guest_memory(&mem, 1),
            freed,
            "again: nothing to do, no error"
        );
    }

    #[test]
    fn guest_memory_is_one_shared_memfd_whose_pages_are_the_files() {
        let mem = create_guest_memory(4 << 30).unwrap();
        let regions: Vec<_> = mem.iter().collect();
        let (low, high) = (regions[0], regions[1]);
        assert!(Arc::ptr_eq(
            low.file_offset().unwrap().arc(),
            high.file_offset().unwrap().arc()
        ));
        assert_eq!(low.file_offset().unwrap().start(), 0);
        assert_eq!(high.file_offset().unwrap().start(), MMIO_GAP_START);
        let mapping: &MmapRegion = low;
        assert_ne!(mapping.flags() & libc::MAP_SHARED, 0);
        let line = maps_line(mapping.as_ptr() as usize);
        assert!(line.contains(" rw-s "), "{line}");
        eprintln!("{line}");
        // A write through the mapping is a page of the file.
        mem.write_obj(0x5au8, GuestAddress(1 << 32)).unwrap();
        let mut byte = [0u8];
        std::os::unix::fs::FileExt::read_exact_at(
            low.file_offset().unwrap().file(),
            &mut byte,
            MMIO_GAP_START,
        )
        .unwrap();
        assert_eq!(byte, [0x5a]);
        use std::os::unix::fs::MetadataExt;
        let meta = low.file_offset().unwrap().file().metadata().unwrap();
        assert_eq!(meta.len(), 4 << 30);
        assert!(
            [4096, 2 << 20].contains(&(meta.blocks() * 512)),
            "one page allocated (4 KiB or a transparent huge page): {}",
            meta.blocks() * 512
        );
    }

    #[test]
    fn huge_page_memory_is_a_whole_number_of_pages() {
        let err = create_guest_memory_with(17 << 20, HugePageConfig::Hugetlbfs2M).unwrap_err();
        assert_eq!(
            err.to_string(),
            "17 MiB of guest memory is not a whole number of 2 MiB huge pages"
        );
        // Base pages take what they are given.
        check_huge_pages(17 << 20, HugePageConfig::None).unwrap();
    }

    #[test]
    fn too_few_free_huge_pages_are_refused_with_the_numbers() {
        let Some(pool) =
            testkit::HugePages::reserve("too_few_free_huge_pages_are_refused_with_the_numbers", 2)
        else {
            return;
        };
        let free = free_huge_pages_2m().unwrap();
        assert!(free >= 2, "{free} free after reserving 2");
        let needed = free + 1;
        let size = needed * HUGE_PAGE_2M;
        let err = check_huge_pages(size, HugePageConfig::Hugetlbfs2M).unwrap_err();
        assert!(
            matches!(err, MemoryError::NotEnoughHugePages { needed: n, free: f } if n == needed && f == free),
            "{err:?}"
        );
        assert!(
            err.to_string().starts_with(&format!(
                "huge_pages \"2M\": guest memory needs {needed} free 2 MiB huge pages, the host has {free} ("
            )),
            "{err}"
        );
        assert!(matches!(
            create_guest_memory_with(size, HugePageConfig::Hugetlbfs2M),
            Err(MemoryError::NotEnoughHugePages { .. })
        ));
        drop(pool);
    }

    #[test]
    fn huge_page_memory_is_hugetlb_and_reserved_when_mapped() {
        let Some(_pool) =
            testkit::HugePages::reserve("huge_page_memory_is_hugetlb_and_reserved_when_mapped", 8)
        else {
            return;
        };
        let before = free_huge_pages_2m().unwrap();
        let mem = create_guest_memory_with(16 << 20, HugePageConfig::Hugetlbfs2M).unwrap();
        // Reserved at once, though no page is touched yet.
        assert_eq!(free_huge_pages_2m().unwrap(), before - 8);
        mem.write_obj(1u64, GuestAddress(0x1000)).unwrap();
        mem.write_obj(1u64, GuestAddress(5 << 20)).unwrap();
        let region = mem.iter().next().unwrap();
        assert_eq!(region.is_hugetlbfs(), Some(true));
        let mapping: &MmapRegion = region;
        let addr = mapping.as_ptr() as usize;
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let start = format!("{addr:x}-");
        // The mapping's header line, then its "Key: value" lines.
        let mut lines = smaps.lines().skip_while(|l| !l.starts_with(&start));
        let entry: Vec<&str> = lines
            .next()
            .into_iter()
            .chain(lines.take_while(|l| {
                l.split_whitespace()
                    .next()
                    .is_some_and(|key| key.ends_with(':'))
            }))
            .collect();
        let field = |key: &str| -> u64 {
            entry
                .iter()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .unwrap_or_else(|| panic!("no {key} in {entry:#?}"))
        };
        assert!(entry[0].contains("/memfd:podvm-guest-ram"), "{}", entry[0]);
        assert_eq!(field("KernelPageSize"), 2048);
        // Two huge pages touched, mapped by this process alone (the
        // kernel counts a hugetlb page as shared when more than one
        // process maps it, whatever the mapping's flags).
        assert_eq!(
            (field("Private_Hugetlb"), field("Shared_Hugetlb")),
            (4096, 0),
            "{entry:#?}"
        );
        drop(mem);
        assert_eq!(free_huge_pages_2m().unwrap(), before, "given back");
    }
}
