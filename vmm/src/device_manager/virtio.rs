//! Virtio devices on the MMIO bus: one 4 KiB window and one interrupt line
//! each, announced to the guest on the kernel command line.

use std::sync::{Arc, Mutex};

use devices::virtio::{
    IrqLine, MmioTransport, VirtioDevice, MMIO_REGION_SIZE, QUEUE_NOTIFY_OFFSET,
};
use devices::Bus;
use event_manager::MutEventSubscriber;
use kvm_ioctls::IoEventAddress;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::DeviceError;
use crate::arch::x86_64::layout::MMIO_GAP_START;
use crate::vstate::vm::Vm;

/// First virtio-mmio window.
pub const VIRTIO_MMIO_BASE: u64 = MMIO_GAP_START;
/// Interrupt line of the first virtio device; GSIs 5 to 23 are free of
/// ISA devices' (0–4 are the timer, keyboard, cascade, COM2 and COM1).
pub const FIRST_VIRTIO_GSI: u32 = 5;

/// Where a virtio device lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioSlot {
    /// Base address of its register window.
    pub base: u64,
    /// Its interrupt line.
    pub gsi: u32,
}

impl MmioSlot {
    /// The slot of the `index`-th virtio device.
    pub fn nth(index: usize) -> MmioSlot {
        MmioSlot {
            base: VIRTIO_MMIO_BASE + index as u64 * MMIO_REGION_SIZE,
            gsi: FIRST_VIRTIO_GSI + index as u32,
        }
    }

    /// The kernel command-line entry that tells Linux about the device
    /// (`virtio_mmio.device=<size>@<base>:<irq>`).
    pub fn cmdline_entry(&self) -> String {
        format!("virtio_mmio.device=4K@{:#x}:{}", self.base, self.gsi)
    }
}

/// An event-loop subscriber, shared with the VMM thread's event manager.
pub type Subscriber = Arc<Mutex<dyn MutEventSubscriber + Send>>;

/// Puts `device` at `slot`: its interrupt line becomes an irqfd on the
/// slot's GSI, each queue's QueueNotify write an ioeventfd. Returns the
/// transport (for configuration changes).
pub fn attach_virtio_device(
    vm: &Vm,
    mmio: &mut Bus,
    mem: &GuestMemoryMmap,
    slot: MmioSlot,
    name: &'static str,
    device: Arc<Mutex<dyn VirtioDevice>>,
) -> Result<Arc<Mutex<MmioTransport>>, DeviceError> {
    let irq_evt = EventFd::new(EFD_NONBLOCK).map_err(|e| DeviceError::EventFd(name, e))?;
    vm.register_irqfd(&irq_evt, slot.gsi)
        .map_err(|e| DeviceError::Irq(name, e))?;
    let queues = device
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .queue_max_sizes()
        .len();
    let mut queue_evts = Vec::with_capacity(queues);
    for index in 0..queues {
        let evt = EventFd::new(EFD_NONBLOCK).map_err(|e| DeviceError::EventFd(name, e))?;
        // A 4-byte write of the queue's index to QueueNotify signals it.
        vm.fd()
            .register_ioevent(
                &evt,
                &IoEventAddress::Mmio(slot.base + QUEUE_NOTIFY_OFFSET),
                index as u32,
            )
            .map_err(|e| DeviceError::Ioevent(name, e))?;
        queue_evts.push(evt);
    }
    let transport = Arc::new(Mutex::new(MmioTransport::new(
        device,
        mem.clone(),
        IrqLine::new(irq_evt),
        queue_evts,
    )));
    mmio.insert(slot.base, MMIO_REGION_SIZE, transport.clone())
        .map_err(|e| DeviceError::Bus(name, e))?;
    Ok(transport)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_each_other() {
        assert_eq!(
            MmioSlot::nth(0),
            MmioSlot {
                base: 0xd000_0000,
                gsi: 5
            }
        );
        let s = MmioSlot::nth(3);
        assert_eq!((s.base, s.gsi), (0xd000_3000, 8));
        assert_eq!(
            MmioSlot::nth(0).cmdline_entry(),
            "virtio_mmio.device=4K@0xd0000000:5"
        );
        assert_eq!(MmioSlot::nth(18).gsi, 23);
    }
}
