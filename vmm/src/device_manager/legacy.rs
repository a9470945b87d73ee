//! The legacy devices on the port-I/O bus: serial, i8042, boot timer; and
//! the VM generation id, which is in guest memory rather than on a bus.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use devices::legacy::{
    AcpiPowerControl, BootTimer, I8042State, Serial, SerialInputEvents, SerialSnapshot, VmGenId,
    VmGenIdState, ACPI_POWER_PORTS, I8042,
};
use devices::{Bus, EventFdTrigger};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::{attach_vmgenid, restore_vmgenid, DeviceError};
use crate::vstate::vm::Vm;

/// COM1 base port.
pub const SERIAL_PORT: u64 = 0x3f8;
/// COM1 register count.
pub const SERIAL_PORT_LEN: u64 = 8;
/// COM1's ISA interrupt line.
pub const SERIAL_IRQ: u32 = 4;
/// i8042 data port; the command/status port is 0x64.
pub const I8042_PORT: u64 = 0x60;
/// i8042 ports 0x60..=0x64.
pub const I8042_PORT_LEN: u64 = 5;
/// The keyboard's ISA interrupt line.
pub const I8042_KBD_IRQ: u32 = 1;
/// The boot-timer port (Firecracker's `MAGIC_IOPORT_SIGNAL_GUEST_BOOT_COMPLETE`).
pub const BOOT_TIMER_PORT: u64 = 0x3f0;
/// The ACPI power-control ports (sleep control, sleep status, reset), which
/// the FADT points at; free in the PC's port map.
pub const ACPI_POWER_PORT: u64 = 0x600;

/// Where the serial console writes.
pub type SerialOutput = Box<dyn Write + Send>;

/// The legacy devices and the events the VMM thread watches for them.
pub struct LegacyDevices {
    /// The serial console.
    pub serial: Arc<Mutex<Serial<SerialOutput>>>,
    /// Written when the guest drained the serial input FIFO.
    pub serial_input_ready: EventFd,
    /// The i8042 controller and its keyboard (Ctrl+Alt+Del injection).
    pub i8042: Arc<Mutex<I8042>>,
    /// Written when the guest resets through the i8042 or ACPI.
    pub reset_evt: EventFd,
    /// Written when the guest powers off through ACPI.
    pub power_off_evt: EventFd,
    /// The boot timer.
    pub boot_timer: Arc<Mutex<BootTimer>>,
    /// The VM generation id.
    pub vmgenid: VmGenId,
}

/// The legacy devices' state, as a snapshot keeps it (the ACPI power
/// control and the boot timer hold none).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LegacyState {
    /// The UART.
    pub serial: SerialSnapshot,
    /// The i8042.
    pub i8042: I8042State,
    /// The VM generation id (none in a snapshot of a podvm without one).
    /// A restore keeps its address and never its id.
    #[serde(default)]
    pub vmgenid: Option<VmGenIdState>,
}

impl LegacyDevices {
    /// Their state, for a snapshot.
    pub fn save_state(&self) -> LegacyState {
        LegacyState {
            serial: self
                .serial
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .save_state(),
            i8042: self
                .i8042
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .save_state(),
            vmgenid: Some(self.vmgenid.state()),
        }
    }
}

fn eventfd(what: &'static str) -> Result<EventFd, DeviceError> {
    EventFd::new(EFD_NONBLOCK).map_err(|e| DeviceError::EventFd(what, e))
}

fn clone(evt: &EventFd, what: &'static str) -> Result<EventFd, DeviceError> {
    evt.try_clone().map_err(|e| DeviceError::EventFd(what, e))
}

/// Creates the serial port, i8042 and boot timer on `pio` and the VM
/// generation id in `mem`; serial output goes to `serial_out`, boot time
/// counts from `start`. With `restore` (a snapshot's), the UART and the
/// i8042 start where they were and the VM generation id is a new one at
/// the old address (the caller raises its interrupt with
/// `VmGenId::notify` once the irqchip and every vCPU are restored).
pub fn attach_legacy_devices(
    vm: &Vm,
    pio: &mut Bus,
    mem: &GuestMemoryMmap,
    serial_out: SerialOutput,
    start: Instant,
    restore: Option<&LegacyState>,
) -> Result<LegacyDevices, DeviceError> {
    let serial_irq = eventfd("the serial interrupt")?;
    vm.register_irqfd(&serial_irq, SERIAL_IRQ)
        .map_err(|e| DeviceError::Irq("the serial port", e))?;
    let serial_input_ready = eventfd("serial input")?;
    let trigger = EventFdTrigger::new(serial_irq);
    let events = SerialInputEvents::new(clone(&serial_input_ready, "serial input")?);
    let serial = match restore {
        Some(state) => Serial::from_state(&state.serial, trigger, events, serial_out)
            .map_err(|e| DeviceError::Create(e.to_string()))?,
        None => Serial::new(trigger, events, serial_out),
    };
    let serial = Arc::new(Mutex::new(serial));
    pio.insert(SERIAL_PORT, SERIAL_PORT_LEN, serial.clone())
        .map_err(|e| DeviceError::Bus("the serial port", e))?;

    let reset_evt = eventfd("the i8042 reset")?;
    let kbd_irq = eventfd("the keyboard interrupt")?;
    vm.register_irqfd(&kbd_irq, I8042_KBD_IRQ)
        .map_err(|e| DeviceError::Irq("the i8042", e))?;
    let mut i8042 = I8042::new(
        EventFdTrigger::new(clone(&reset_evt, "the i8042 reset")?),
        EventFdTrigger::new(kbd_irq),
    );
    if let Some(state) = restore {
        i8042.restore_state(&state.i8042);
    }
    let i8042 = Arc::new(Mutex::new(i8042));
    pio.insert(I8042_PORT, I8042_PORT_LEN, i8042.clone())
        .map_err(|e| DeviceError::Bus("the i8042", e))?;

    let power_off_evt = eventfd("the ACPI power-off")?;
    let acpi_power = Arc::new(Mutex::new(AcpiPowerControl::new(
        EventFdTrigger::new(clone(&reset_evt, "the ACPI reset")?),
        EventFdTrigger::new(clone(&power_off_evt, "the ACPI power-off")?),
    )));
    pio.insert(ACPI_POWER_PORT, u64::from(ACPI_POWER_PORTS), acpi_power)
        .map_err(|e| DeviceError::Bus("the ACPI power control", e))?;

    let boot_timer = Arc::new(Mutex::new(BootTimer::new(start)));
    pio.insert(BOOT_TIMER_PORT, 1, boot_timer.clone())
        .map_err(|e| DeviceError::Bus("the boot timer", e))?;

    // A restored VM may be one of many clones of the snapshot: it gets a
    // new id, at the address its guest knows.
    let vmgenid = match restore.and_then(|r| r.vmgenid.as_ref()) {
        Some(state) => restore_vmgenid(vm, mem, state)?,
        None => attach_vmgenid(vm, mem)?,
    };

    Ok(LegacyDevices {
        serial,
        serial_input_ready,
        i8042,
        reset_evt,
        power_off_evt,
        boot_timer,
        vmgenid,
    })
}

#[cfg(test)]
mod tests {
    use kvm_ioctls::Kvm;
    use vm_memory::{Bytes, GuestAddress};

    use super::*;
    use crate::device_manager::VMGENID_ADDR;
    use crate::memory::create_guest_memory;

    /// The legacy devices of a fresh VM (with `restore`), and its memory.
    fn attach(restore: Option<&LegacyState>) -> (LegacyDevices, GuestMemoryMmap) {
        let kvm = Kvm::new().expect("/dev/kvm opened a moment ago");
        let vm = Vm::new(&kvm).unwrap();
        vm.setup_irqchip().unwrap();
        let mem = create_guest_memory(16 << 20).unwrap();
        let legacy = attach_legacy_devices(
            &vm,
            &mut Bus::default(),
            &mem,
            Box::new(std::io::sink()),
            Instant::now(),
            restore,
        )
        .unwrap();
        (legacy, mem)
    }

    fn id_in(mem: &GuestMemoryMmap, addr: u64) -> [u8; 16] {
        let mut id = [0u8; 16];
        mem.read_slice(&mut id, GuestAddress(addr)).unwrap();
        id
    }

    #[test]
    fn a_snapshot_keeps_the_vm_generation_id_and_a_restore_replaces_it() {
        if !testkit::need_kvm("a_snapshot_keeps_the_vm_generation_id_and_a_restore_replaces_it") {
            return;
        }
        let (original, _) = attach(None);
        let saved = original.save_state();
        let genid = saved.vmgenid.expect("the id is in the snapshot");
        assert_eq!(genid, original.vmgenid.state());
        assert_eq!(genid.addr, VMGENID_ADDR);

        // Two clones of one snapshot: same address, each a new id of its own.
        let (a, mem_a) = attach(Some(&saved));
        let (b, _) = attach(Some(&saved));
        assert_eq!(a.vmgenid.addr().0, genid.addr);
        assert_ne!(a.vmgenid.id(), genid.id);
        assert_ne!(b.vmgenid.id(), genid.id);
        assert_ne!(a.vmgenid.id(), b.vmgenid.id());
        assert_eq!(id_in(&mem_a, genid.addr), a.vmgenid.id());
    }

    #[test]
    fn a_snapshot_without_a_vm_generation_id_restores_with_a_new_one() {
        if !testkit::need_kvm("a_snapshot_without_a_vm_generation_id_restores_with_a_new_one") {
            return;
        }
        let (original, _) = attach(None);
        // A state file written before the device existed has no such field.
        let mut json = serde_json::to_value(original.save_state()).unwrap();
        json.as_object_mut().unwrap().remove("vmgenid").unwrap();
        let old: LegacyState = serde_json::from_value(json).unwrap();
        assert_eq!(old.vmgenid, None);
        let (restored, mem) = attach(Some(&old));
        assert_eq!(restored.vmgenid.addr().0, VMGENID_ADDR);
        assert_eq!(id_in(&mem, VMGENID_ADDR), restored.vmgenid.id());
        assert_ne!(restored.vmgenid.id(), original.vmgenid.id());
    }
}
