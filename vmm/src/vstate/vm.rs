//! The KVM virtual machine: its file descriptor, guest memory
//! registration, in-kernel irqchip and PIT.

use std::sync::atomic::{AtomicBool, Ordering};

use kvm_bindings::{
    kvm_irqchip, kvm_pit_config, kvm_userspace_memory_region, KVM_IRQCHIP_PIC_MASTER,
    KVM_IRQCHIP_PIC_SLAVE, KVM_MEM_LOG_DIRTY_PAGES, KVM_PIT_SPEAKER_DUMMY,
};
use kvm_ioctls::{Kvm, VmFd};
use vm_memory::bitmap::Bitmap;
use vm_memory::{Address, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;

use crate::arch::x86_64::layout::KVM_TSS_ADDRESS;
use crate::persist::vm::{restore_vm_state, save_vm_state, VmState, VmStateError};

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
    /// `KVM_GET_DIRTY_LOG` failed.
    #[error("cannot read KVM's dirty page log of memory slot {slot}: {source}")]
    DirtyLog {
        /// The memory slot.
        slot: u32,
        /// The KVM error.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// Saving or restoring the irqchip, PIT or clock failed.
    #[error("{0}")]
    State(#[source] VmStateError),
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
    /// Whether guest memory was registered with KVM's dirty page log.
    dirty_log: AtomicBool,
}

impl Vm {
    /// Creates an empty VM.
    pub fn new(kvm: &Kvm) -> Result<Self, VmError> {
        let fd = kvm.create_vm().map_err(VmError::Create)?;
        Ok(Vm {
            fd,
            dirty_log: AtomicBool::new(false),
        })
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

    /// Makes `mem` the guest's RAM, one memory slot per region (slot `i`
    /// is the `i`th region).
    pub fn register_memory<B: Bitmap>(&self, mem: &GuestMemoryMmap<B>) -> Result<(), VmError> {
        self.set_memory_slots(mem, 0)
    }

    /// Makes `mem` the guest's RAM as [`Vm::register_memory`] does, with
    /// KVM logging the pages the guest writes (`track_dirty_pages`), for
    /// diff snapshots. Logging costs the guest a write fault on the first
    /// write to each page after every snapshot.
    pub fn register_memory_with_dirty_log<B: Bitmap>(
        &self,
        mem: &GuestMemoryMmap<B>,
    ) -> Result<(), VmError> {
        self.set_memory_slots(mem, KVM_MEM_LOG_DIRTY_PAGES)?;
        self.dirty_log.store(true, Ordering::Release);
        Ok(())
    }

    /// Whether KVM logs the guest's writes to its memory.
    pub fn logs_dirty_pages(&self) -> bool {
        self.dirty_log.load(Ordering::Acquire)
    }

    /// The pages of memory slot `slot` (`size` bytes) the guest wrote
    /// since the last call, one bit per 4 KiB page (bit `i % 64` of word
    /// `i / 64` is page `i`); KVM clears its log as it returns it.
    pub fn dirty_log(&self, slot: u32, size: u64) -> Result<Vec<u64>, VmError> {
        self.fd
            .get_dirty_log(slot, size as usize)
            .map_err(|source| VmError::DirtyLog { slot, source })
    }

    /// The state of the irqchip, PIT and KVM clock. Every vCPU must be
    /// paused.
    pub fn save_state(&self) -> Result<VmState, VmError> {
        save_vm_state(&self.fd).map_err(VmError::State)
    }

    /// Restores the irqchip, PIT and clock of a snapshot into this VM,
    /// after [`Vm::setup_irqchip`] and before any vCPU runs.
    pub fn restore_state(&self, state: &VmState) -> Result<(), VmError> {
        restore_vm_state(&self.fd, state).map_err(VmError::State)
    }

    fn set_memory_slots<B: Bitmap>(
        &self,
        mem: &GuestMemoryMmap<B>,
        flags: u32,
    ) -> Result<(), VmError> {
        for (slot, region) in mem.iter().enumerate() {
            let addr = region.start_addr().raw_value();
            let host = region.as_ptr() as u64;
            let size = region.len();
            let region = kvm_userspace_memory_region {
                slot: slot as u32,
                guest_phys_addr: addr,
                memory_size: size,
                userspace_addr: host,
                flags,
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
