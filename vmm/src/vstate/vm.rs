//! The KVM virtual machine: its file descriptor, guest memory
//! registration, in-kernel irqchip and PIT.

use kvm_bindings::{
    kvm_irqchip, kvm_pit_config, kvm_userspace_memory_region, KVM_IRQCHIP_PIC_MASTER,
    KVM_IRQCHIP_PIC_SLAVE, KVM_PIT_SPEAKER_DUMMY,
};
use kvm_ioctls::{Kvm, VmFd};
use vm_memory::{Address, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;

use crate::arch::x86_64::layout::KVM_TSS_ADDRESS;

/// A VM-level KVM operation failed.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// `KVM_CREATE_VM` failed.
    #[error("cannot create the KVM VM: {0}")]
    Create(#[source] kvm_ioctls::Error),
    /// `KVM_SET_TSS_ADDR` failed.
    #[error("cannot set the TSS address: {0}")]
    SetTssAddress(#[source] kvm_ioctls::Error),
    /// `KVM_CREATE_IRQCHIP` failed.
    #[error("cannot create the in-kernel irqchip: {0}")]
    CreateIrqchip(#[source] kvm_ioctls::Error),
    /// `KVM_CREATE_PIT2` failed.
    #[error("cannot create the in-kernel PIT: {0}")]
    CreatePit(#[source] kvm_ioctls::Error),
    /// Reading or writing the 8259 PICs' state failed.
    #[error("cannot set up the 8259 PICs: {0}")]
    SetupPic(#[source] kvm_ioctls::Error),
    /// `KVM_SET_USER_MEMORY_REGION` failed.
    #[error("cannot register {} MiB of guest memory at {addr:#x} with KVM: {source}", size >> 20)]
    SetMemoryRegion {
        /// Guest address of the region.
        addr: u64,
        /// Size of the region.
        size: u64,
        /// The KVM error.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// `KVM_IRQFD` failed.
    #[error("cannot register an irqfd for GSI {gsi}: {source}")]
    RegisterIrqfd {
        /// The interrupt line.
        gsi: u32,
        /// The KVM error.
        #[source]
        source: kvm_ioctls::Error,
    },
}

/// A KVM VM with an in-kernel irqchip and PIT.
pub struct Vm {
    fd: VmFd,
}

impl Vm {
    /// Creates an empty VM.
    pub fn new(kvm: &Kvm) -> Result<Self, VmError> {
        let fd = kvm.create_vm().map_err(VmError::Create)?;
        Ok(Vm { fd })
    }

    /// Creates the TSS area, the in-kernel irqchip and the PIT. The
    /// irqchip must exist before any vCPU is created. Register guest memory
    /// first: once an irqchip exists, KVM makes the first memory-slot update
    /// wait for an SRCU grace period, which costs milliseconds on some
    /// hosts, while before it the same update takes microseconds.
    pub fn setup_irqchip(&self) -> Result<(), VmError> {
        self.fd
            .set_tss_address(KVM_TSS_ADDRESS as usize)
            .map_err(VmError::SetTssAddress)?;
        self.fd.create_irq_chip().map_err(VmError::CreateIrqchip)?;
        self.mask_pics()?;
        // Port 0x61 reads show the PIT's channel-2 gate and output; the
        // speaker itself is a dummy.
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        self.fd.create_pit2(pit).map_err(VmError::CreatePit)
    }

    /// Leaves the 8259 PICs as a BIOS would: vectors from 0x20 (master) and
    /// 0x28 (slave), every line masked. KVM creates them unmasked with
    /// vector base 0, and KVM also routes GSIs 0–15 to them; a guest that
    /// never programs the PICs (Linux on a hardware-reduced ACPI platform
    /// installs a null PIC) but leaves LINT0 in ExtINT mode would otherwise
    /// take device interrupts as CPU exceptions 1–15.
    fn mask_pics(&self) -> Result<(), VmError> {
        for (chip_id, base) in [
            (KVM_IRQCHIP_PIC_MASTER, 0x20),
            (KVM_IRQCHIP_PIC_SLAVE, 0x28),
        ] {
            let mut chip = kvm_irqchip {
                chip_id,
                ..Default::default()
            };
            self.fd.get_irqchip(&mut chip).map_err(VmError::SetupPic)?;
            // SAFETY: for the PIC chip ids KVM fills (and reads) the `pic`
            // member of the union; every bit pattern is a valid u8 array.
            let pic = unsafe { &mut chip.chip.pic };
            pic.irq_base = base;
            pic.imr = 0xff;
            self.fd.set_irqchip(&chip).map_err(VmError::SetupPic)?;
        }
        Ok(())
    }

    /// The VM file descriptor.
    pub fn fd(&self) -> &VmFd {
        &self.fd
    }

    /// Makes `mem` the guest's RAM, one memory slot per region.
    pub fn register_memory(&self, mem: &GuestMemoryMmap) -> Result<(), VmError> {
        for (slot, region) in mem.iter().enumerate() {
            let addr = region.start_addr().raw_value();
            let host = region.as_ptr() as u64;
            let size = region.len();
            let region = kvm_userspace_memory_region {
                slot: slot as u32,
                guest_phys_addr: addr,
                memory_size: size,
                userspace_addr: host,
                flags: 0,
            };
            // SAFETY: the host range is a live mapping owned by `mem`, which
            // the VMM keeps alive for as long as the VM exists (the VM is
            // dropped before or with the memory); slots do not overlap
            // because guest memory regions do not.
            unsafe { self.fd.set_user_memory_region(region) }
                .map_err(|source| VmError::SetMemoryRegion { addr, size, source })?;
        }
        Ok(())
    }

    /// Routes writes to `evt` to interrupt line `gsi`.
    pub fn register_irqfd(&self, evt: &EventFd, gsi: u32) -> Result<(), VmError> {
        self.fd
            .register_irqfd(evt, gsi)
            .map_err(|source| VmError::RegisterIrqfd { gsi, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pics_start_masked_with_bios_vectors() {
        if !testkit::need_kvm("the_pics_start_masked_with_bios_vectors") {
            return;
        }
        let kvm = Kvm::new().expect("/dev/kvm opened a moment ago");
        let vm = Vm::new(&kvm).unwrap();
        vm.setup_irqchip().unwrap();
        for (chip_id, base) in [
            (KVM_IRQCHIP_PIC_MASTER, 0x20),
            (KVM_IRQCHIP_PIC_SLAVE, 0x28),
        ] {
            let mut chip = kvm_irqchip {
                chip_id,
                ..Default::default()
            };
            vm.fd().get_irqchip(&mut chip).unwrap();
            // SAFETY: KVM filled the `pic` member for a PIC chip id.
            let pic = unsafe { chip.chip.pic };
            assert_eq!((pic.imr, pic.irq_base), (0xff, base), "chip {chip_id}");
        }
    }
}
