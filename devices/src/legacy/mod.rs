//! Legacy PC devices: the 8250 serial port, the i8042 controller (its
//! reset line and an injectable keyboard), the boot-timer port and the
//! ACPI power-control ports, and the VM generation id (not on a bus: it
//! lives in guest memory).

mod acpi_power;
mod boot_timer;
mod i8042;
mod serial;
mod vmgenid;

pub use acpi_power::{
    AcpiPowerControl, ACPI_POWER_PORTS, RESET_OFFSET as ACPI_RESET_OFFSET,
    RESET_VALUE as ACPI_RESET_VALUE, S5_SLEEP_TYPE,
    SLEEP_CONTROL_OFFSET as ACPI_SLEEP_CONTROL_OFFSET,
    SLEEP_STATUS_OFFSET as ACPI_SLEEP_STATUS_OFFSET,
};
pub use boot_timer::{BootTimer, BOOT_TIMER_MAGIC};
pub use i8042::{
    I8042Error, I8042State, OutByte, PendingParam, COMMAND_OFFSET as I8042_COMMAND_OFFSET, I8042,
};
pub use serial::{Serial, SerialInputEvents, SerialRestoreError, SerialSnapshot};
pub use vmgenid::{vmgenid_hex, VmGenId, VmGenIdError, VmGenIdState, VMGENID_LEN};

/// Reads a device with one-byte registers: a wider access sees the
/// register in its low byte and zeros above; an offset past 255 reads 0.
fn read_byte_register(offset: u64, data: &mut [u8], read: impl FnOnce(u8) -> u8) {
    data.fill(0);
    if let (Some(first), Ok(off)) = (data.first_mut(), u8::try_from(offset)) {
        *first = read(off);
    }
}

/// Writes a device with one-byte registers: the low byte of the access
/// goes to the register; empty accesses and offsets past 255 do nothing.
fn write_byte_register(offset: u64, data: &[u8], write: impl FnOnce(u8, u8)) {
    if let (Some(&value), Ok(off)) = (data.first(), u8::try_from(offset)) {
        write(off, value);
    }
}
