//! The guest's memory statistics, as the stats queue brings them (virtio
//! v1.2 §5.5.6.3): entries of a le16 tag and a le64 value, packed.

use serde::{Deserialize, Serialize};

/// Bytes of one entry: `struct virtio_balloon_stat { le16 tag; le64 val; }`,
/// packed.
pub const STAT_ENTRY_LEN: usize = 10;
/// Most entries read from one buffer: a driver knows 16 tags today.
pub const MAX_STAT_ENTRIES: usize = 256;

/// The last value the guest gave for each tag it knows, as Firecracker's
/// `GET /balloon/statistics` names them (tags 0 to 15 of Linux's
/// `virtio_balloon.h`); a tag the guest never sent is absent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestStats {
    /// Memory swapped in, bytes (tag 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub swap_in: Option<u64>,
    /// Memory swapped out, bytes (tag 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub swap_out: Option<u64>,
    /// Major page faults (tag 2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub major_faults: Option<u64>,
    /// Minor page faults (tag 3).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub minor_faults: Option<u64>,
    /// Memory used for nothing, bytes (tag 4).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub free_memory: Option<u64>,
    /// All memory the guest has, bytes (tag 5).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_memory: Option<u64>,
    /// Memory available to new work without swapping, bytes (tag 6).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub available_memory: Option<u64>,
    /// Memory quickly reclaimable (page cache), bytes (tag 7).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_caches: Option<u64>,
    /// Successful hugetlb allocations (tag 8).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hugetlb_allocations: Option<u64>,
    /// Failed hugetlb allocations (tag 9).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hugetlb_failures: Option<u64>,
    /// OOM killer invocations (tag 10).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oom_kill: Option<u64>,
    /// Allocations that stalled (tag 11).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alloc_stall: Option<u64>,
    /// Pages scanned by kswapd (tag 12).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub async_scan: Option<u64>,
    /// Pages scanned directly (tag 13).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direct_scan: Option<u64>,
    /// Pages reclaimed by kswapd (tag 14).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub async_reclaim: Option<u64>,
    /// Pages reclaimed directly (tag 15).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direct_reclaim: Option<u64>,
}

impl GuestStats {
    /// Records one entry; a tag this device does not know is passed over
    /// (a newer driver may send more). Returns whether it was known.
    pub fn record(&mut self, tag: u16, value: u64) -> bool {
        let slot = match tag {
            0 => &mut self.swap_in,
            1 => &mut self.swap_out,
            2 => &mut self.major_faults,
            3 => &mut self.minor_faults,
            4 => &mut self.free_memory,
            5 => &mut self.total_memory,
            6 => &mut self.available_memory,
            7 => &mut self.disk_caches,
            8 => &mut self.hugetlb_allocations,
            9 => &mut self.hugetlb_failures,
            10 => &mut self.oom_kill,
            11 => &mut self.alloc_stall,
            12 => &mut self.async_scan,
            13 => &mut self.direct_scan,
            14 => &mut self.async_reclaim,
            15 => &mut self.direct_reclaim,
            _ => return false,
        };
        *slot = Some(value);
        true
    }

    /// Records every whole entry of `bytes` (a trailing part entry is
    /// ignored), at most [`MAX_STAT_ENTRIES`]. Returns the entries read.
    pub fn record_all(&mut self, bytes: &[u8]) -> usize {
        let mut n = 0;
        for entry in bytes.chunks_exact(STAT_ENTRY_LEN).take(MAX_STAT_ENTRIES) {
            let tag = u16::from_le_bytes([entry[0], entry[1]]);
            let mut value = [0u8; 8];
            value.copy_from_slice(&entry[2..]);
            self.record(tag, u64::from_le_bytes(value));
            n += 1;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(tag: u16, value: u64) -> Vec<u8> {
        let mut e = tag.to_le_bytes().to_vec();
        e.extend_from_slice(&value.to_le_bytes());
        e
    }

    #[test]
    fn entries_are_packed_tag_value_pairs_and_unknown_tags_pass() {
        let mut bytes = entry(4, 1 << 20);
        bytes.extend(entry(5, 256 << 20));
        bytes.extend(entry(99, 7));
        bytes.extend(entry(3, 42));
        bytes.extend([1, 2, 3]); // a part entry
        let mut s = GuestStats::default();
        assert_eq!(s.record_all(&bytes), 4);
        assert_eq!(s.free_memory, Some(1 << 20));
        assert_eq!(s.total_memory, Some(256 << 20));
        assert_eq!(s.minor_faults, Some(42));
        assert_eq!(s.swap_in, None);
        let json = serde_json::to_value(s).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"free_memory": 1 << 20, "total_memory": 256 << 20, "minor_faults": 42})
        );
        assert!(!s.record(16, 1));
        for tag in 0..16 {
            assert!(s.record(tag, u64::from(tag)), "tag {tag}");
        }
        assert_eq!(s.direct_reclaim, Some(15));
        assert_eq!(s.swap_in, Some(0));
    }

    #[test]
    fn a_buffer_gives_at_most_the_entry_limit() {
        let bytes: Vec<u8> = (0..MAX_STAT_ENTRIES + 10)
            .flat_map(|i| entry(3, i as u64))
            .collect();
        let mut s = GuestStats::default();
        assert_eq!(s.record_all(&bytes), MAX_STAT_ENTRIES);
        assert_eq!(s.minor_faults, Some(MAX_STAT_ENTRIES as u64 - 1));
    }
}
