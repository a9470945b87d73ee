//! The machine configuration: vCPUs, memory size, SMT.

use serde::{Deserialize, Serialize};

/// The smallest guest memory podvm accepts, in MiB. Below this the fixed
/// low-memory layout (zero page, page tables, command line, MP table) and a
/// kernel do not fit together.
pub const MIN_MEM_SIZE_MIB: usize = 16;

/// The most vCPUs podvm supports, whatever KVM allows: the MP table and
/// APIC ids are 8 bits wide and 0xff is the broadcast id.
pub const MAX_SUPPORTED_VCPUS: u8 = 254;

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
}

impl Default for MachineConfig {
    fn default() -> Self {
        MachineConfig {
            vcpu_count: 1,
            mem_size_mib: 128,
            smt: false,
            track_dirty_pages: false,
        }
    }
}

impl MachineConfig {
    /// Guest memory size in bytes.
    pub fn mem_size_bytes(&self) -> u64 {
        (self.mem_size_mib as u64) << 20
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
}
