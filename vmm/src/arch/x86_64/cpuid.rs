//! The CPUID a vCPU reports: what KVM supports (`KVM_GET_SUPPORTED_CPUID`),
//! filtered so each vCPU sees its own APIC id, a topology of exactly the
//! configured vCPUs, and the hypervisor bit with KVM's signature.
//!
//! Leaf layouts: Intel SDM Vol. 2A, CPUID; AMD APM Vol. 3, Appendix E.

use kvm_bindings::{kvm_cpuid_entry2, CpuId};

/// Leaf 1: version and feature information.
const LEAF_FEATURES: u32 = 0x1;
/// Leaf 4: deterministic cache parameters (Intel).
const LEAF_CACHE_PARAMS: u32 = 0x4;
/// Leaf 0xa: architectural performance monitoring (Intel).
const LEAF_PMU: u32 = 0xa;
/// Leaf 0xb: extended topology enumeration (Intel).
const LEAF_EXT_TOPOLOGY: u32 = 0xb;
/// Leaf 0x1f: V2 extended topology enumeration (Intel).
const LEAF_EXT_TOPOLOGY_V2: u32 = 0x1f;
/// Leaf 0x4000_0000: hypervisor vendor signature.
const LEAF_HYPERVISOR: u32 = 0x4000_0000;
/// Leaf 0x8000_0008: address sizes and core count (AMD: ECX[7:0] = NC).
const LEAF_AMD_SIZES: u32 = 0x8000_0008;
/// Leaf 0x8000_001e: extended APIC id, core and node ids (AMD).
const LEAF_AMD_EXT_APIC: u32 = 0x8000_001e;

/// Leaf 1 ECX bit 31: running under a hypervisor.
const ECX_HYPERVISOR: u32 = 1 << 31;
/// Leaf 1 EDX bit 28: the package holds more than one logical processor.
const EDX_HTT: u32 = 1 << 28;
/// Leaf 0xb/0x1f ECX[15:8] level types.
const LEVEL_TYPE_SMT: u32 = 1;
const LEVEL_TYPE_CORE: u32 = 2;

/// "KVMKVMKVM\0\0\0" as the EBX, ECX, EDX of the hypervisor leaf.
const KVM_SIGNATURE: [u32; 3] = [0x4b4d_564b, 0x564b_4d56, 0x0000_004d];

/// The CPU topology every vCPU reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Topology {
    /// Number of vCPUs (all in one package).
    pub vcpu_count: u8,
    /// Threads per core: 2 with SMT, else 1.
    pub threads_per_core: u8,
}

impl Topology {
    /// The topology for `vcpu_count` vCPUs, with or without SMT.
    pub fn new(vcpu_count: u8, smt: bool) -> Self {
        Topology {
            vcpu_count,
            threads_per_core: if smt { 2 } else { 1 },
        }
    }

    /// Bits of the APIC id below the core id.
    fn smt_shift(&self) -> u32 {
        ceil_log2(u32::from(self.threads_per_core))
    }

    /// Bits of the APIC id below the package id.
    fn package_shift(&self) -> u32 {
        ceil_log2(u32::from(self.vcpu_count))
    }
}

fn ceil_log2(n: u32) -> u32 {
    if n <= 1 {
        0
    } else {
        32 - (n - 1).leading_zeros()
    }
}

fn set_bits(reg: &mut u32, hi: u32, lo: u32, value: u32) {
    let mask = (((1u64 << (hi - lo + 1)) - 1) as u32) << lo;
    *reg = (*reg & !mask) | ((value << lo) & mask);
}

fn filter_entry(entry: &mut kvm_cpuid_entry2, apic_id: u8, topo: Topology) {
    let id = u32::from(apic_id);
    match entry.function {
        LEAF_FEATURES => {
            set_bits(&mut entry.ebx, 31, 24, id);
            // Maximum addressable logical processor ids in the package
            // (an 8-bit field).
            set_bits(
                &mut entry.ebx,
                23,
                16,
                (1u32 << topo.package_shift()).min(0xff),
            );
            // CLFLUSH line size in 8-byte units.
            set_bits(&mut entry.ebx, 15, 8, 8);
            entry.ecx |= ECX_HYPERVISOR;
            if topo.vcpu_count > 1 {
                entry.edx |= EDX_HTT;
            } else {
                entry.edx &= !EDX_HTT;
            }
        }
        LEAF_CACHE_PARAMS if entry.eax & 0x1f != 0 => {
            // Addressable core ids per package minus one (a 6-bit field).
            let core_ids = 1u32 << (topo.package_shift() - topo.smt_shift());
            set_bits(&mut entry.eax, 31, 26, (core_ids - 1).min(63));
            // Logical processors sharing this cache minus one: L1/L2 are
            // per core, L3 and above shared by the package.
            let level = (entry.eax >> 5) & 0x7;
            let sharing = if level <= 2 {
                u32::from(topo.threads_per_core)
            } else {
                u32::from(topo.vcpu_count)
            };
            set_bits(&mut entry.eax, 25, 14, sharing - 1);
        }
        LEAF_PMU => {
            // No virtual PMU: guests must not program performance counters.
            entry.eax = 0;
            entry.ebx = 0;
            entry.ecx = 0;
            entry.edx = 0;
        }
        LEAF_EXT_TOPOLOGY | LEAF_EXT_TOPOLOGY_V2 => {
            entry.edx = id;
            match entry.index {
                0 => {
                    entry.eax = topo.smt_shift();
                    entry.ebx = u32::from(topo.threads_per_core);
                    entry.ecx = (LEVEL_TYPE_SMT << 8) | entry.index;
                }
                1 => {
                    entry.eax = topo.package_shift();
                    entry.ebx = u32::from(topo.vcpu_count);
                    entry.ecx = (LEVEL_TYPE_CORE << 8) | entry.index;
                }
                _ => {
                    entry.eax = 0;
                    entry.ebx = 0;
                    entry.ecx = entry.index;
                }
            }
        }
        LEAF_HYPERVISOR => {
            entry.ebx = KVM_SIGNATURE[0];
            entry.ecx = KVM_SIGNATURE[1];
            entry.edx = KVM_SIGNATURE[2];
        }
        LEAF_AMD_SIZES => {
            set_bits(&mut entry.ecx, 7, 0, u32::from(topo.vcpu_count) - 1);
            set_bits(&mut entry.ecx, 15, 12, topo.package_shift());
        }
        LEAF_AMD_EXT_APIC => {
            entry.eax = id;
            set_bits(&mut entry.ebx, 7, 0, id >> topo.smt_shift());
            set_bits(&mut entry.ebx, 15, 8, u32::from(topo.threads_per_core) - 1);
            set_bits(&mut entry.ecx, 7, 0, 0);
        }
        _ => {}
    }
}

/// Adapts the host-supported CPUID for the vCPU whose APIC id is
/// `apic_id`.
pub fn filter_cpuid(cpuid: &mut CpuId, apic_id: u8, topo: Topology) {
    let has_hypervisor_leaf = cpuid
        .as_slice()
        .iter()
        .any(|e| e.function == LEAF_HYPERVISOR);
    for entry in cpuid.as_mut_slice() {
        filter_entry(entry, apic_id, topo);
    }
    if !has_hypervisor_leaf {
        let entry = kvm_cpuid_entry2 {
            function: LEAF_HYPERVISOR,
            ebx: KVM_SIGNATURE[0],
            ecx: KVM_SIGNATURE[1],
            edx: KVM_SIGNATURE[2],
            ..Default::default()
        };
        // A full CpuId keeps its entries; the signature is then missing,
        // which guests tolerate (KVM always reports this leaf anyway).
        let _ = cpuid.push(entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(function: u32, index: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            eax: 0xffff_ffff,
            ebx: 0xffff_ffff,
            ecx: 0xffff_ffff,
            edx: 0xffff_ffff,
            ..Default::default()
        }
    }

    fn host_cpuid() -> CpuId {
        CpuId::from_entries(&[
            leaf(LEAF_FEATURES, 0),
            // A level-1 data cache and a level-3 unified cache.
            kvm_cpuid_entry2 {
                function: LEAF_CACHE_PARAMS,
                index: 0,
                eax: (1 << 5) | 1,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: LEAF_CACHE_PARAMS,
                index: 3,
                eax: (3 << 5) | 3,
                ..Default::default()
            },
            leaf(LEAF_PMU, 0),
            leaf(LEAF_EXT_TOPOLOGY, 0),
            leaf(LEAF_EXT_TOPOLOGY, 1),
            leaf(LEAF_EXT_TOPOLOGY, 2),
            leaf(LEAF_AMD_SIZES, 0),
        ])
        .unwrap()
    }

    fn find(c: &CpuId, function: u32, index: u32) -> kvm_cpuid_entry2 {
        *c.as_slice()
            .iter()
            .find(|e| e.function == function && e.index == index)
            .unwrap()
    }

    #[test]
    fn leaf_1_carries_apic_id_and_hypervisor_bit() {
        let mut c = host_cpuid();
        filter_cpuid(&mut c, 3, Topology::new(4, false));
        let e = find(&c, LEAF_FEATURES, 0);
        assert_eq!(e.ebx >> 24, 3);
        assert_eq!((e.ebx >> 16) & 0xff, 4);
        assert_eq!((e.ebx >> 8) & 0xff, 8);
        assert_ne!(e.ecx & ECX_HYPERVISOR, 0);
        assert_ne!(e.edx & EDX_HTT, 0);

        let mut c = host_cpuid();
        filter_cpuid(&mut c, 0, Topology::new(1, false));
        assert_eq!(find(&c, LEAF_FEATURES, 0).edx & EDX_HTT, 0);
    }

    #[test]
    fn extended_topology_describes_the_vcpus() {
        let mut c = host_cpuid();
        filter_cpuid(&mut c, 5, Topology::new(6, true));
        let smt = find(&c, LEAF_EXT_TOPOLOGY, 0);
        assert_eq!((smt.eax, smt.ebx, smt.ecx, smt.edx), (1, 2, 0x100, 5));
        let core = find(&c, LEAF_EXT_TOPOLOGY, 1);
        assert_eq!((core.eax, core.ebx, core.ecx, core.edx), (3, 6, 0x201, 5));
        let end = find(&c, LEAF_EXT_TOPOLOGY, 2);
        assert_eq!((end.eax, end.ebx, end.ecx, end.edx), (0, 0, 2, 5));
    }

    #[test]
    fn caches_pmu_and_amd_leaves() {
        let mut c = host_cpuid();
        filter_cpuid(&mut c, 0, Topology::new(4, true));
        let l1 = find(&c, LEAF_CACHE_PARAMS, 0);
        assert_eq!(l1.eax >> 26, 1, "two cores");
        assert_eq!(
            (l1.eax >> 14) & 0xfff,
            1,
            "L1 shared by the core's 2 threads"
        );
        let l3 = find(&c, LEAF_CACHE_PARAMS, 3);
        assert_eq!((l3.eax >> 14) & 0xfff, 3, "L3 shared by all 4");
        let pmu = find(&c, LEAF_PMU, 0);
        assert_eq!((pmu.eax, pmu.ebx, pmu.ecx, pmu.edx), (0, 0, 0, 0));
        let amd = find(&c, LEAF_AMD_SIZES, 0);
        assert_eq!(amd.ecx & 0xff, 3);
    }

    #[test]
    fn hypervisor_signature_is_added_or_rewritten() {
        let mut c = host_cpuid();
        filter_cpuid(&mut c, 0, Topology::new(1, false));
        let h = find(&c, LEAF_HYPERVISOR, 0);
        let mut sig = Vec::new();
        for r in [h.ebx, h.ecx, h.edx] {
            sig.extend_from_slice(&r.to_le_bytes());
        }
        assert_eq!(&sig, b"KVMKVMKVM\0\0\0");
        let n = c.as_slice().len();
        filter_cpuid(&mut c, 0, Topology::new(1, false));
        assert_eq!(c.as_slice().len(), n, "not added twice");
    }

    #[test]
    fn fields_saturate_for_many_vcpus() {
        let mut c = host_cpuid();
        filter_cpuid(&mut c, 200, Topology::new(254, false));
        let e = find(&c, LEAF_FEATURES, 0);
        assert_eq!((e.ebx >> 16) & 0xff, 0xff);
        assert_eq!(e.ebx >> 24, 200);
        assert_eq!(find(&c, LEAF_CACHE_PARAMS, 0).eax >> 26, 63);
    }

    #[test]
    fn log2_rounds_up() {
        assert_eq!(
            [1, 2, 3, 4, 5, 8, 9, 254].map(ceil_log2),
            [0, 1, 2, 2, 3, 3, 4, 8]
        );
    }
}
