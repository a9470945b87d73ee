//! A ranged bus: maps port-I/O or MMIO address ranges to devices.
//!
//! The bus is built once, before the vCPUs start, and then shared read-only
//! by every vCPU thread; each device sits behind its own mutex so that
//! vCPUs touching different devices never contend.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// A device that answers reads and writes to a range of addresses.
pub trait BusDevice: Send {
    /// Reads `data.len()` bytes at `offset` from the start of the device's
    /// range.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// Writes `data` at `offset` from the start of the device's range.
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// A range that cannot be added to the bus.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    /// The range has no length or wraps around the address space.
    #[error("invalid bus range {base:#x}+{len:#x}")]
    InvalidRange {
        /// Start of the range.
        base: u64,
        /// Length of the range.
        len: u64,
    },
    /// The range overlaps a range already on the bus.
    #[error("bus range {base:#x}+{len:#x} overlaps another device")]
    Overlap {
        /// Start of the range.
        base: u64,
        /// Length of the range.
        len: u64,
    },
}

#[derive(Clone)]
struct BusEntry {
    len: u64,
    device: Arc<Mutex<dyn BusDevice>>,
}

/// A set of non-overlapping address ranges, each served by a device.
#[derive(Clone, Default)]
pub struct Bus {
    // Keyed by the first address of each range.
    ranges: BTreeMap<u64, BusEntry>,
}

impl Bus {
    /// An empty bus.
    pub fn new() -> Self {
        Bus::default()
    }

    /// Adds `device` at `[base, base + len)`.
    pub fn insert(
        &mut self,
        base: u64,
        len: u64,
        device: Arc<Mutex<dyn BusDevice>>,
    ) -> Result<(), BusError> {
        let end = base
            .checked_add(len)
            .filter(|_| len > 0)
            .ok_or(BusError::InvalidRange { base, len })?;
        // The closest range starting before `end` is the only one that can
        // overlap, because ranges on the bus never overlap each other.
        if let Some((&other_base, other)) = self.ranges.range(..end).next_back() {
            if other_base + other.len > base {
                return Err(BusError::Overlap { base, len });
            }
        }
        self.ranges.insert(base, BusEntry { len, device });
        Ok(())
    }

    fn resolve(&self, addr: u64) -> Option<(u64, &BusEntry)> {
        let (&base, entry) = self.ranges.range(..=addr).next_back()?;
        let offset = addr - base;
        (offset < entry.len).then_some((offset, entry))
    }

    /// Reads from the device at `addr`; returns false when no device is
    /// there (the caller decides what an unclaimed read returns).
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.resolve(addr) {
            Some((offset, entry)) => {
                lock(&entry.device).read(offset, data);
                true
            }
            None => false,
        }
    }

    /// Writes to the device at `addr`; returns false when no device is
    /// there.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.resolve(addr) {
            Some((offset, entry)) => {
                lock(&entry.device).write(offset, data);
                true
            }
            None => false,
        }
    }
}

fn lock<'a>(
    device: &'a Mutex<dyn BusDevice + 'static>,
) -> std::sync::MutexGuard<'a, dyn BusDevice + 'static> {
    // A device whose handler panicked has already aborted the process
    // (release builds abort on panic); in tests, keep going with its state.
    device.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder {
        writes: Vec<(u64, Vec<u8>)>,
    }

    impl BusDevice for Recorder {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.writes.push((offset, data.to_vec()));
        }
    }

    #[test]
    fn dispatches_by_range_with_offsets() {
        let a = Arc::new(Mutex::new(Recorder::default()));
        let mut bus = Bus::new();
        bus.insert(0x3f8, 8, a.clone()).unwrap();
        let mut buf = [0u8; 1];
        assert!(bus.read(0x3fd, &mut buf));
        assert_eq!(buf, [5]);
        assert!(bus.write(0x3f8, b"x"));
        assert!(!bus.read(0x3f7, &mut buf));
        assert!(!bus.write(0x400, &[0]));
        assert_eq!(a.lock().unwrap().writes, vec![(0, vec![b'x'])]);
    }

    #[test]
    fn refuses_overlaps_and_empty_ranges() {
        let mut bus = Bus::new();
        let d = || Arc::new(Mutex::new(Recorder::default())) as Arc<Mutex<dyn BusDevice>>;
        bus.insert(0x10, 0x10, d()).unwrap();
        assert_eq!(
            bus.insert(0x18, 0x10, d()),
            Err(BusError::Overlap {
                base: 0x18,
                len: 0x10
            })
        );
        assert_eq!(
            bus.insert(0x8, 0x9, d()),
            Err(BusError::Overlap {
                base: 0x8,
                len: 0x9
            })
        );
        assert!(bus.insert(0x8, 0x8, d()).is_ok());
        assert!(bus.insert(0x20, 0x1, d()).is_ok());
        assert_eq!(
            bus.insert(0x30, 0, d()),
            Err(BusError::InvalidRange { base: 0x30, len: 0 })
        );
        assert_eq!(
            bus.insert(u64::MAX, 2, d()),
            Err(BusError::InvalidRange {
                base: u64::MAX,
                len: 2
            })
        );
    }
}
