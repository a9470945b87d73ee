//! The i8042 keyboard controller at 0x60/0x64, modelled for its one job in
//! a micro-VM: the guest's "pulse reset line" command (0xfe to port 0x64)
//! ends the VM cleanly.

use vm_superio::I8042Device;

use super::{read_byte_register, write_byte_register};
use crate::bus::BusDevice;
use crate::EventFdTrigger;

/// Offset of the command/status port (0x64) from the data port (0x60).
pub const COMMAND_OFFSET: u64 = 4;

/// The i8042 controller; `reset` is raised when the guest resets the CPU.
pub struct I8042 {
    inner: I8042Device<EventFdTrigger>,
}

impl I8042 {
    /// A controller raising `reset` on the CPU-reset command.
    pub fn new(reset: EventFdTrigger) -> Self {
        I8042 {
            inner: I8042Device::new(reset),
        }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        read_byte_register(offset, data, |off| self.inner.read(off));
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        write_byte_register(offset, data, |off, value| {
            if let Err(e) = self.inner.write(off, value) {
                log::error!("i8042: cannot signal the guest's reset: {e}");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

    #[test]
    fn reset_command_raises_the_reset_event() {
        let evt = EventFd::new(EFD_NONBLOCK).unwrap();
        let mut dev = I8042::new(EventFdTrigger::new(evt.try_clone().unwrap()));
        dev.write(0, &[0xfe]);
        assert!(evt.read().is_err(), "a data-port write must not reset");
        dev.write(COMMAND_OFFSET, &[0xaa]);
        assert!(evt.read().is_err(), "other commands must not reset");
        dev.write(COMMAND_OFFSET, &[0xfe]);
        assert_eq!(evt.read().unwrap(), 1);
        let mut status = [0xffu8; 1];
        dev.read(COMMAND_OFFSET, &mut status);
        assert_eq!(
            status[0], 0,
            "input buffer empty so Linux may send commands"
        );
    }
}
