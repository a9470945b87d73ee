//! The VM generation id: its 16 bytes at [`VMGENID_ADDR`] in guest memory
//! and the Generic Event Device's interrupt line, [`GED_GSI`], an irqfd
//! that the DSDT's `GED_` turns into `Notify(\_SB_.VGEN, 0x80)`.
//!
//! Why GSI 3: the virtio-mmio slots take GSIs 5 to 23 in attach order
//! (`FIRST_VIRTIO_GSI`, `resources::MAX_VIRTIO_DEVICES` = 19), and 0–2 and
//! 4 are the PIT, the keyboard, the PIC cascade and COM1. Pin 3 is ISA
//! IRQ 3, COM2's line on a PC, and podvm has no COM2, so nothing else
//! raises it, no virtio slot is given up for it, and its ISA default
//! (edge, active high, identity-mapped: no MADT override is needed) is
//! what an irqfd pulse is and what the GED's `_CRS` says. Linux probes
//! the legacy COM2 port (0x2f8), finds no UART there, so it never starts
//! that port or requests IRQ 3 for it.

use devices::legacy::{VmGenId, VmGenIdState};
use devices::EventFdTrigger;
use vm_memory::{GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::{DeviceError, FIRST_VIRTIO_GSI, I8042_KBD_IRQ, SERIAL_IRQ};
use crate::arch::x86_64::acpi::ACPI_END;
use crate::arch::x86_64::layout::{MPTABLE_START, VMGENID_START};
use crate::vstate::vm::Vm;

/// Guest physical address of the VM generation id.
pub const VMGENID_ADDR: u64 = VMGENID_START;
/// The Generic Event Device's interrupt line (see the module docs).
pub const GED_GSI: u32 = 3;

// The line is no legacy device's (0-2: PIT, keyboard, cascade; COM1) and
// below the virtio slots'; the id lies between the ACPI tables and the MP
// table, in the reserved BIOS area.
const _: () = assert!(
    GED_GSI > 2 && GED_GSI != SERIAL_IRQ && GED_GSI != I8042_KBD_IRQ && GED_GSI < FIRST_VIRTIO_GSI
);
const _: () = assert!(VMGENID_ADDR >= ACPI_END && VMGENID_ADDR + 16 <= MPTABLE_START);

/// Writes a fresh VM generation id into `mem` at [`VMGENID_ADDR`] and
/// wires its change notification to [`GED_GSI`].
pub fn attach_vmgenid(vm: &Vm, mem: &GuestMemoryMmap) -> Result<VmGenId, DeviceError> {
    VmGenId::new(mem, GuestAddress(VMGENID_ADDR), ged_irq(vm)?).map_err(DeviceError::VmGenId)
}

/// The VM generation id of a VM restored from `state`: a new id at the
/// snapshot's address, its notification wired to [`GED_GSI`]. Raising it
/// is the caller's last step of the restore (see `VmGenId::notify`).
pub fn restore_vmgenid(
    vm: &Vm,
    mem: &GuestMemoryMmap,
    state: &VmGenIdState,
) -> Result<VmGenId, DeviceError> {
    VmGenId::restore_from_state(state, mem, ged_irq(vm)?).map_err(DeviceError::VmGenId)
}

/// An irqfd on the Generic Event Device's line.
fn ged_irq(vm: &Vm) -> Result<EventFdTrigger, DeviceError> {
    let irq = EventFd::new(EFD_NONBLOCK)
        .map_err(|e| DeviceError::EventFd("the VM generation id interrupt", e))?;
    vm.register_irqfd(&irq, GED_GSI)
        .map_err(|e| DeviceError::Irq("the VM generation id", e))?;
    Ok(EventFdTrigger::new(irq))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use kvm_bindings::{kvm_irqchip, KVM_IRQCHIP_PIC_MASTER};
    use kvm_ioctls::Kvm;
    use vm_memory::Bytes;

    use super::*;
    use crate::arch::x86_64::boot_params::{e820_map, E820_RESERVED};
    use crate::memory::create_guest_memory;

    /// The master PIC's interrupt request register. KVM routes GSIs 0–15
    /// to the PICs as well as to the IOAPIC; an edge on a masked PIC line
    /// stays in IRR, so it shows that an irqfd pulse reached the line.
    fn pic_irr(vm: &Vm) -> u8 {
        let mut chip = kvm_irqchip {
            chip_id: KVM_IRQCHIP_PIC_MASTER,
            ..Default::default()
        };
        vm.fd().get_irqchip(&mut chip).unwrap();
        // SAFETY: KVM filled the `pic` member for a PIC chip id.
        unsafe { chip.chip.pic.irr }
    }

    #[test]
    fn the_id_is_in_reserved_memory_and_a_change_raises_gsi_3() {
        if !testkit::need_kvm("the_id_is_in_reserved_memory_and_a_change_raises_gsi_3") {
            return;
        }
        let kvm = Kvm::new().expect("/dev/kvm opened a moment ago");
        let vm = Vm::new(&kvm).unwrap();
        vm.setup_irqchip().unwrap();
        let mem = create_guest_memory(16 << 20).unwrap();
        let mut genid = attach_vmgenid(&vm, &mem).unwrap();
        assert_eq!(genid.addr(), GuestAddress(VMGENID_ADDR));
        let mut id = [0u8; 16];
        mem.read_slice(&mut id, genid.addr()).unwrap();
        assert_eq!(id, genid.id());
        assert_eq!(pic_irr(&vm) & (1 << GED_GSI), 0, "no interrupt at boot");

        let old = genid.id();
        genid.regenerate(&mem).unwrap();
        mem.read_slice(&mut id, genid.addr()).unwrap();
        assert_ne!(id, old);
        assert_eq!(id, genid.id());
        // KVM injects an irqfd's interrupt from a work queue: wait for it.
        let deadline = Instant::now() + Duration::from_secs(10);
        while pic_irr(&vm) & (1 << GED_GSI) == 0 {
            assert!(Instant::now() < deadline, "GSI {GED_GSI} never raised");
            std::thread::yield_now();
        }
        assert_eq!(pic_irr(&vm) & !(1 << GED_GSI), 0, "only GSI {GED_GSI}");
    }

    #[test]
    fn the_id_is_reserved_in_the_e820_map_whatever_the_memory_size() {
        for mem in [1u64 << 20, 128 << 20, 8 << 30] {
            let map = e820_map(mem);
            assert!(
                map.iter().any(|e| e.kind == E820_RESERVED
                    && e.addr <= VMGENID_ADDR
                    && VMGENID_ADDR + 16 <= e.addr + e.size),
                "{map:x?}"
            );
        }
    }
}
