//! Guest RAM: anonymous host memory split around the MMIO gap below 4 GiB.

use vm_memory::{GuestAddress, GuestMemoryMmap};

use crate::arch::x86_64::layout::{MMIO_GAP_END, MMIO_GAP_START};

/// Guest memory could not be created.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// The host refused to map the memory.
    #[error("cannot map {size_mib} MiB of guest memory: {source}")]
    Map {
        /// Requested size in MiB.
        size_mib: u64,
        /// The mapping error.
        #[source]
        source: vm_memory::mmap::FromRangesError,
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

/// Maps `mem_size` bytes of guest RAM. Pages are allocated on first touch,
/// so an idle guest costs only what it used.
pub fn create_guest_memory(mem_size: u64) -> Result<GuestMemoryMmap, MemoryError> {
    GuestMemoryMmap::from_ranges(&ram_regions(mem_size)).map_err(|source| MemoryError::Map {
        size_mib: mem_size >> 20,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestMemoryBackend};

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
}
