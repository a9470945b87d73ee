//! The machine configuration: vCPUs, memory size and how it is backed,
//! SMT.

use serde::{Deserialize, Serialize};

/// The smallest guest memory podvm accepts, in MiB. Below this the fixed
/// low-memory layout (zero page, page tables, command line, MP table) and a
/// kernel do not fit together.
pub const MIN_MEM_SIZE_MIB: usize = 16;

/// The most vCPUs podvm supports, whatever KVM allows: the MP table and
/// APIC ids are 8 bits wide and 0xff is the broadcast id.
pub const MAX_SUPPORTED_VCPUS: u8 = 254;

/// The size of a 2 MiB huge page, in bytes.
pub const HUGE_PAGE_2M: u64 = 2 << 20;

/// How guest RAM is backed (Firecracker's `huge_pages`): with the host's
/// base pages, or with 2 MiB hugetlbfs pages the host has reserved
/// (`/proc/sys/vm/nr_hugepages`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub enum HugePageConfig {
    /// Base pages (4 KiB on x86_64).
    #[default]
    None,
    /// 2 MiB hugetlbfs pages: the memory size must be a multiple of
    /// 2 MiB, and the host must have that many free huge pages.
    #[serde(rename = "2M")]
    Hugetlbfs2M,
}

impl<'de> Deserialize<'de> for HugePageConfig {
    /// `"None"` or `"2M"`; anything else is refused naming the field (a
    /// derived enum would only say "unknown variant").
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = String::deserialize(d)?;
        match value.as_str() {
            "None" => Ok(HugePageConfig::None),
            "2M" => Ok(HugePageConfig::Hugetlbfs2M),
            other => Err(serde::de::Error::custom(format_args!(
                "huge_pages {other:?}: expected \"None\" or \"2M\" (2 MiB hugetlbfs pages)"
            ))),
        }
    }
}

impl HugePageConfig {
    /// The size of the huge pages in bytes, or `None` for base pages.
    pub fn huge_page_size(self) -> Option<u64> {
        match self {
            HugePageConfig::None => None,
            HugePageConfig::Hugetlbfs2M => Some(HUGE_PAGE_2M),
        }
    }

    /// The value as the API writes it: `"None"` or `"2M"`.
    pub fn as_str(self) -> &'static str {
        match self {
            HugePageConfig::None => "None",
            HugePageConfig::Hugetlbfs2M => "2M",
        }
    }
}

/// User input describing the virtual machine's CPUs and memory
/// (Firecracker's `machine-config`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineConfig {
    /// Number of vCPUs.
    pub vcpu_count: u8,
    /// Guest memory size in MiB.
    pub mem_size_mib: usize,
    /// Simultaneous multithreading: two threads per core in the CPU topology
    /// the guest sees.
    #[serde(default)]
    pub smt: bool,
    /// Whether KVM logs the pages the guest writes, so that `Diff`
    /// snapshots can hold only those.
    #[serde(default)]
    pub track_dirty_pages: bool,
    /// What backs guest RAM (absent from snapshots older than the field:
    /// base pages).
    #[serde(default)]
    pub huge_pages: HugePageConfig,
}

impl Default for MachineConfig {
    fn default() -> Self {
        MachineConfig {
            vcpu_count: 1,
            mem_size_mib: 128,
            smt: false,
            track_dirty_pages: false,
            huge_pages: HugePageConfig::None,
        }
    }
}

impl MachineConfig {
    /// Guest memory size in bytes.
    pub fn mem_size_bytes(&self) -> u64 {
        (self.mem_size_mib as u64) << 20
    }

    /// How many huge pages guest RAM takes (`None` for base pages), when
    /// its size is a whole number of them.
    pub fn huge_pages_needed(&self) -> Option<u64> {
        let page = self.huge_pages.huge_page_size()?;
        let size = self.mem_size_bytes();
        size.is_multiple_of(page).then_some(size / page)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documented_ones() {
        let m = MachineConfig::default();
        assert_eq!((m.vcpu_count, m.mem_size_mib, m.smt), (1, 128, false));
        assert_eq!(m.mem_size_bytes(), 128 << 20);
    }

    #[test]
    fn json_uses_firecracker_names_and_refuses_unknown_fields() {
        let m: MachineConfig =
            serde_json::from_str(r#"{"vcpu_count": 2, "mem_size_mib": 256}"#).unwrap();
        assert_eq!(m.vcpu_count, 2);
        assert_eq!(m.mem_size_mib, 256);
        assert!(!m.smt);
        let err = serde_json::from_str::<MachineConfig>(
            r#"{"vcpu_count": 2, "mem_size_mib": 256, "bogus": 1}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
    }

    #[test]
    fn huge_pages_use_firecracker_values_and_count_whole_pages() {
        let m: MachineConfig =
            serde_json::from_str(r#"{"vcpu_count": 1, "mem_size_mib": 128, "huge_pages": "2M"}"#)
                .unwrap();
        assert_eq!(m.huge_pages, HugePageConfig::Hugetlbfs2M);
        assert_eq!(m.huge_pages_needed(), Some(64));
        assert_eq!(
            serde_json::to_value(m).unwrap()["huge_pages"],
            serde_json::json!("2M")
        );
        let odd = MachineConfig {
            mem_size_mib: 129,
            huge_pages: HugePageConfig::Hugetlbfs2M,
            ..MachineConfig::default()
        };
        assert_eq!(odd.huge_pages_needed(), None);
        assert_eq!(MachineConfig::default().huge_pages_needed(), None);
        assert_eq!(
            serde_json::to_value(MachineConfig::default()).unwrap()["huge_pages"],
            serde_json::json!("None")
        );
        // A spec saved before the field existed has base pages.
        let old: MachineConfig =
            serde_json::from_str(r#"{"vcpu_count": 1, "mem_size_mib": 128}"#).unwrap();
        assert_eq!(old.huge_pages, HugePageConfig::None);
        let err = serde_json::from_str::<HugePageConfig>(r#""1G""#).unwrap_err();
        assert!(
            err.to_string()
                .contains(r#"huge_pages "1G": expected "None" or "2M""#),
            "{err}"
        );
        assert_eq!(HugePageConfig::Hugetlbfs2M.as_str(), "2M");
        assert_eq!(HugePageConfig::None.as_str(), "None");
    }
}
