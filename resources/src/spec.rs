//! The whole VM spec and its validation.

use crate::{
    BootSourceConfig, MachineConfig, SerialConfig, MAX_KERNEL_CMDLINE_LEN, MAX_SUPPORTED_VCPUS,
    MIN_MEM_SIZE_MIB,
};

/// Everything needed to build a pod-VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmSpec {
    /// vCPUs and memory.
    pub machine: MachineConfig,
    /// Kernel, initrd and command line.
    pub boot_source: BootSourceConfig,
    /// Serial console destination.
    pub serial: SerialConfig,
}

/// A spec that cannot describe a VM, found without touching the host.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    /// `vcpu_count` is zero.
    #[error("vcpu_count must be at least 1")]
    ZeroVcpus,
    /// More vCPUs than the host (or podvm) supports.
    #[error("vcpu_count {requested} is more than this host supports ({max})")]
    TooManyVcpus {
        /// What was asked for.
        requested: u8,
        /// The limit.
        max: u32,
    },
    /// SMT needs an even number of vCPUs (two threads per core).
    #[error("smt needs an even vcpu_count (two threads per core), got {0}")]
    SmtOddVcpus(u8),
    /// Too little memory for the fixed layout and a kernel.
    #[error("mem_size_mib {0} is too small: podvm needs at least {MIN_MEM_SIZE_MIB} MiB")]
    MemoryTooSmall(usize),
    /// More memory than the address space can hold.
    #[error("mem_size_mib {0} is too large")]
    MemoryTooLarge(usize),
    /// The kernel command line does not fit.
    #[error("kernel command line is {0} bytes long; the limit is {MAX_KERNEL_CMDLINE_LEN} bytes")]
    CmdlineTooLong(usize),
    /// The kernel command line contains a NUL byte.
    #[error("kernel command line contains a NUL byte")]
    CmdlineNul,
}

impl SpecError {
    /// The configuration field at fault, in the API's terms.
    pub fn field(&self) -> &'static str {
        match self {
            SpecError::ZeroVcpus | SpecError::TooManyVcpus { .. } => "vcpu_count",
            SpecError::SmtOddVcpus(_) => "smt",
            SpecError::MemoryTooSmall(_) | SpecError::MemoryTooLarge(_) => "mem_size_mib",
            SpecError::CmdlineTooLong(_) | SpecError::CmdlineNul => "boot_args",
        }
    }
}

impl VmSpec {
    /// Checks everything that can be checked without opening files or KVM.
    /// `max_vcpus` is the host's limit (`KVM_CAP_MAX_VCPUS`).
    pub fn validate(&self, max_vcpus: u32) -> Result<(), SpecError> {
        let m = &self.machine;
        let max = max_vcpus.min(u32::from(MAX_SUPPORTED_VCPUS));
        if m.vcpu_count == 0 {
            return Err(SpecError::ZeroVcpus);
        }
        if u32::from(m.vcpu_count) > max {
            return Err(SpecError::TooManyVcpus {
                requested: m.vcpu_count,
                max,
            });
        }
        if m.smt && !m.vcpu_count.is_multiple_of(2) {
            return Err(SpecError::SmtOddVcpus(m.vcpu_count));
        }
        if m.mem_size_mib < MIN_MEM_SIZE_MIB {
            return Err(SpecError::MemoryTooSmall(m.mem_size_mib));
        }
        // Keep the guest physical address space within 46 bits (64 TiB),
        // below what every x86_64 host CPU's MAXPHYADDR covers.
        if m.mem_size_mib > (1 << 26) {
            return Err(SpecError::MemoryTooLarge(m.mem_size_mib));
        }
        let cmdline = self.boot_source.cmdline();
        if cmdline.len() > MAX_KERNEL_CMDLINE_LEN {
            return Err(SpecError::CmdlineTooLong(cmdline.len()));
        }
        if cmdline.contains('\0') {
            return Err(SpecError::CmdlineNul);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> VmSpec {
        VmSpec {
            machine: MachineConfig::default(),
            boot_source: BootSourceConfig {
                kernel_image_path: "/vmlinux".into(),
                boot_args: None,
                initrd_path: None,
            },
            serial: SerialConfig::Stdout,
        }
    }

    #[test]
    fn default_spec_is_valid() {
        assert_eq!(spec().validate(255), Ok(()));
    }

    #[test]
    fn every_error_is_found() {
        type Change = Box<dyn Fn(&mut VmSpec)>;
        let cases: Vec<(Change, SpecError)> = vec![
            (Box::new(|s| s.machine.vcpu_count = 0), SpecError::ZeroVcpus),
            (
                Box::new(|s| s.machine.vcpu_count = 9),
                SpecError::TooManyVcpus {
                    requested: 9,
                    max: 8,
                },
            ),
            (
                Box::new(|s| {
                    s.machine.vcpu_count = 3;
                    s.machine.smt = true
                }),
                SpecError::SmtOddVcpus(3),
            ),
            (
                Box::new(|s| s.machine.mem_size_mib = 15),
                SpecError::MemoryTooSmall(15),
            ),
            (
                Box::new(|s| s.machine.mem_size_mib = (1 << 26) + 1),
                SpecError::MemoryTooLarge((1 << 26) + 1),
            ),
            (
                Box::new(|s| s.boot_source.boot_args = Some("x".repeat(2048))),
                SpecError::CmdlineTooLong(2048),
            ),
            (
                Box::new(|s| s.boot_source.boot_args = Some("a\0b".into())),
                SpecError::CmdlineNul,
            ),
        ];
        for (change, want) in cases {
            let mut s = spec();
            change(&mut s);
            assert_eq!(s.validate(8), Err(want));
        }
    }

    #[test]
    fn limits_are_inclusive() {
        let mut s = spec();
        s.machine.vcpu_count = 8;
        s.machine.mem_size_mib = MIN_MEM_SIZE_MIB;
        s.boot_source.boot_args = Some("x".repeat(MAX_KERNEL_CMDLINE_LEN));
        assert_eq!(s.validate(8), Ok(()));
    }

    #[test]
    fn podvm_caps_vcpus_below_the_broadcast_apic_id() {
        let mut s = spec();
        s.machine.vcpu_count = 255;
        assert_eq!(
            s.validate(1024),
            Err(SpecError::TooManyVcpus {
                requested: 255,
                max: 254
            })
        );
    }
}
