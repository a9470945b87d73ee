//! The model-specific registers a vCPU boots with: syscall/sysenter MSRs
//! cleared, the TSC at zero, fast string operations on, MTRRs on with
//! write-back as the default memory type.

use kvm_bindings::{kvm_msr_entry, MsrList, Msrs};

/// IA32_SYSENTER_CS.
pub const MSR_IA32_SYSENTER_CS: u32 = 0x174;
/// IA32_SYSENTER_ESP.
pub const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
/// IA32_SYSENTER_EIP.
pub const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
/// IA32_STAR: syscall segment selectors.
pub const MSR_STAR: u32 = 0xc000_0081;
/// IA32_LSTAR: 64-bit syscall entry.
pub const MSR_LSTAR: u32 = 0xc000_0082;
/// IA32_CSTAR: compatibility-mode syscall entry.
pub const MSR_CSTAR: u32 = 0xc000_0083;
/// IA32_FMASK: syscall RFLAGS mask.
pub const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
/// IA32_KERNEL_GS_BASE.
pub const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
/// IA32_TIME_STAMP_COUNTER.
pub const MSR_IA32_TSC: u32 = 0x10;
/// IA32_MISC_ENABLE.
pub const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
/// IA32_MISC_ENABLE bit 0: fast string operations.
pub const MISC_ENABLE_FAST_STRING: u64 = 1;
/// IA32_MTRR_DEF_TYPE.
pub const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
/// MTRR_DEF_TYPE: MTRRs enabled (bit 11), default type write-back (6).
pub const MTRR_ENABLE_WRITEBACK: u64 = (1 << 11) | 6;

/// The boot MSR values, in the order they are set.
pub fn boot_msr_entries() -> Vec<kvm_msr_entry> {
    [
        (MSR_IA32_SYSENTER_CS, 0),
        (MSR_IA32_SYSENTER_ESP, 0),
        (MSR_IA32_SYSENTER_EIP, 0),
        (MSR_STAR, 0),
        (MSR_CSTAR, 0),
        (MSR_KERNEL_GS_BASE, 0),
        (MSR_SYSCALL_MASK, 0),
        (MSR_LSTAR, 0),
        (MSR_IA32_TSC, 0),
        (MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING),
        (MSR_MTRR_DEF_TYPE, MTRR_ENABLE_WRITEBACK),
    ]
    .into_iter()
    .map(|(index, data)| kvm_msr_entry {
        index,
        data,
        ..Default::default()
    })
    .collect()
}

/// MSRs KVM always emulates although `KVM_GET_MSR_INDEX_LIST` does not
/// list them (it lists only MSRs it saves for migration): the MTRR default
/// type and MISC_ENABLE.
const ALWAYS_EMULATED: [u32; 2] = [MSR_MTRR_DEF_TYPE, MSR_IA32_MISC_ENABLE];

/// The boot MSRs this host's KVM can take: those it reports
/// (`KVM_GET_MSR_INDEX_LIST`; setting others fails on some hosts), then
/// the always-emulated ones. `KVM_SET_MSRS` stops at the first MSR it
/// refuses, so these come last.
pub fn supported_boot_msrs(supported: &MsrList) -> Msrs {
    let (always, listed): (Vec<_>, Vec<_>) = boot_msr_entries().into_iter().partition(|e| {
        ALWAYS_EMULATED.contains(&e.index) && !supported.as_slice().contains(&e.index)
    });
    let entries: Vec<_> = listed
        .into_iter()
        .filter(|e| supported.as_slice().contains(&e.index))
        .chain(always)
        .collect();
    Msrs::from_entries(&entries).expect("the boot MSR list is far below the FAM capacity")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_supported_msrs_are_kept_and_emulated_ones_come_last() {
        let supported = MsrList::from_entries(&[MSR_IA32_TSC, MSR_LSTAR, 0x1234]).unwrap();
        let msrs = supported_boot_msrs(&supported);
        let got: Vec<_> = msrs.as_slice().iter().map(|e| (e.index, e.data)).collect();
        assert_eq!(
            got,
            vec![
                (MSR_LSTAR, 0),
                (MSR_IA32_TSC, 0),
                (MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING),
                (MSR_MTRR_DEF_TYPE, MTRR_ENABLE_WRITEBACK),
            ]
        );
    }

    #[test]
    fn boot_msrs_reach_a_real_vcpu() {
        if !testkit::need_kvm("boot_msrs_reach_a_real_vcpu") {
            return;
        }
        let kvm = kvm_ioctls::Kvm::new().expect("/dev/kvm opened a moment ago");
        let vm = kvm.create_vm().unwrap();
        let vcpu = vm.create_vcpu(0).unwrap();
        let msrs = supported_boot_msrs(&kvm.get_msr_index_list().unwrap());
        assert_eq!(vcpu.set_msrs(&msrs).unwrap(), msrs.as_slice().len());
        let mut read = Msrs::from_entries(&[
            kvm_msr_entry {
                index: MSR_MTRR_DEF_TYPE,
                ..Default::default()
            },
            kvm_msr_entry {
                index: MSR_IA32_MISC_ENABLE,
                ..Default::default()
            },
        ])
        .unwrap();
        assert_eq!(vcpu.get_msrs(&mut read).unwrap(), 2);
        assert_eq!(read.as_slice()[0].data, MTRR_ENABLE_WRITEBACK);
        assert_ne!(read.as_slice()[1].data & MISC_ENABLE_FAST_STRING, 0);
    }

    #[test]
    fn all_boot_msrs_are_distinct() {
        let mut idx: Vec<_> = boot_msr_entries().iter().map(|e| e.index).collect();
        idx.sort_unstable();
        idx.dedup();
        assert_eq!(idx.len(), boot_msr_entries().len());
    }
}
