//! The ACPI power-control ports of a hardware-reduced platform: the sleep
//! control and status registers and the reset register that the FADT points
//! at (ACPI 6.5, 4.8.3.7 and 4.8.3.6). A guest that powers off through ACPI
//! writes `SLP_TYP` for S5 with `SLP_EN`; one that reboots through ACPI
//! writes the reset value. Either ends the VM cleanly, with no need for
//! `reboot=k` on the kernel command line.

use vm_superio::Trigger;

use super::{read_byte_register, write_byte_register};
use crate::bus::BusDevice;
use crate::EventFdTrigger;

/// Offset of the sleep control register.
pub const SLEEP_CONTROL_OFFSET: u8 = 0;
/// Offset of the sleep status register.
pub const SLEEP_STATUS_OFFSET: u8 = 1;
/// Offset of the reset register.
pub const RESET_OFFSET: u8 = 2;
/// Number of ports the device occupies.
pub const ACPI_POWER_PORTS: u8 = 3;
/// The value that resets the machine when written to the reset register.
pub const RESET_VALUE: u8 = 1;
/// The `SLP_TYP` value that the DSDT's `\_S5` package gives for soft-off.
pub const S5_SLEEP_TYPE: u8 = 5;

/// Sleep control: `SLP_EN` starts the transition (ACPI 6.5, table 4.19).
const SLP_EN: u8 = 1 << 5;
/// Sleep control: `SLP_TYP` in bits 2–4.
const SLP_TYP_SHIFT: u8 = 2;
const SLP_TYP_MASK: u8 = 0b111;

/// The power-control ports.
pub struct AcpiPowerControl {
    reset: EventFdTrigger,
    power_off: EventFdTrigger,
}

impl AcpiPowerControl {
    /// Writes `reset` when the guest resets, `power_off` when it powers off.
    pub fn new(reset: EventFdTrigger, power_off: EventFdTrigger) -> Self {
        AcpiPowerControl { reset, power_off }
    }

    fn signal(trigger: &EventFdTrigger, what: &str) {
        if let Err(e) = trigger.trigger() {
            log::error!("cannot signal the guest's ACPI {what}: {e}");
        }
    }
}

impl BusDevice for AcpiPowerControl {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        // No register reads back anything: WAK_STS (status bit 7) stays
        // clear because the VM never wakes from a sleep state.
        read_byte_register(offset, data, |_| 0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        write_byte_register(offset, data, |off, value| match off {
            SLEEP_CONTROL_OFFSET if value & SLP_EN != 0 => {
                let sleep_type = (value >> SLP_TYP_SHIFT) & SLP_TYP_MASK;
                if sleep_type == S5_SLEEP_TYPE {
                    Self::signal(&self.power_off, "power-off");
                } else {
                    // Only S5 is described; other states are not supported.
                    log::debug!("guest asked for ACPI sleep type {sleep_type}: ignored");
                }
            }
            RESET_OFFSET if value == RESET_VALUE => Self::signal(&self.reset, "reset"),
            _ => {}
        });
    }
}

#[cfg(test)]
mod tests {
    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

    use super::*;

    fn device() -> (AcpiPowerControl, EventFd, EventFd) {
        let reset = EventFd::new(EFD_NONBLOCK).unwrap();
        let off = EventFd::new(EFD_NONBLOCK).unwrap();
        let dev = AcpiPowerControl::new(
            EventFdTrigger::new(reset.try_clone().unwrap()),
            EventFdTrigger::new(off.try_clone().unwrap()),
        );
        (dev, reset, off)
    }

    fn fired(evt: &EventFd) -> bool {
        evt.read().is_ok()
    }

    #[test]
    fn s5_with_slp_en_powers_off() {
        let (mut dev, reset, off) = device();
        // What Linux's acpi_hw_extended_sleep writes for \_S5 = 5.
        dev.write(0, &[(S5_SLEEP_TYPE << 2) | SLP_EN]);
        assert!(fired(&off));
        assert!(!fired(&reset));
    }

    #[test]
    fn other_sleep_writes_do_nothing() {
        let (mut dev, reset, off) = device();
        dev.write(0, &[S5_SLEEP_TYPE << 2]); // no SLP_EN
        dev.write(0, &[(3 << 2) | SLP_EN]); // S3: not described
        dev.write(1, &[0xff]); // the status register
        assert!(!fired(&off));
        assert!(!fired(&reset));
    }

    #[test]
    fn the_reset_value_resets_and_nothing_else_does() {
        let (mut dev, reset, off) = device();
        dev.write(2, &[0]);
        dev.write(2, &[2]);
        assert!(!fired(&reset));
        dev.write(2, &[RESET_VALUE]);
        assert!(fired(&reset));
        assert!(!fired(&off));
    }

    #[test]
    fn registers_read_as_zero() {
        let (mut dev, _, _) = device();
        for offset in 0..3 {
            let mut b = [0xaa; 2];
            dev.read(offset, &mut b);
            assert_eq!(b, [0, 0]);
        }
    }
}
