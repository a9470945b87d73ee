//! Legacy PC devices: the 8250 serial port, the i8042 controller (for its
//! reset line) and the boot-timer port.

mod boot_timer;
mod i8042;
mod serial;

pub use boot_timer::{BootTimer, BOOT_TIMER_MAGIC};
pub use i8042::{COMMAND_OFFSET as I8042_COMMAND_OFFSET, I8042};
pub use serial::{Serial, SerialInputEvents};
