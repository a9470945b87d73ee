//! The i8042 keyboard controller at 0x60/0x64 with a PS/2 keyboard behind
//! it, modelled just far enough for a micro-VM: Linux's i8042 and atkbd
//! drivers probe it successfully, the VMM can inject Ctrl+Alt+Del (which
//! such a guest answers by rebooting), and the guest's "pulse reset line"
//! command (0xfe to port 0x64) ends the VM cleanly.
//!
//! There is no mouse: the aux port answers the controller's own loop-back
//! command but any byte meant for a mouse is answered with a NAK, and no
//! aux interrupt (IRQ 12) is wired, so Linux gives up on the aux port.
//!
//! References: the IBM PC/AT Technical Reference (8042 commands and status
//! register) and Linux's `drivers/input/serio/i8042.h` and
//! `drivers/input/keyboard/atkbd.c` (what a guest actually sends).

use std::collections::VecDeque;
use std::io;

use vm_superio::Trigger;

use super::{read_byte_register, write_byte_register};
use crate::bus::BusDevice;
use crate::EventFdTrigger;

/// Offset of the data port (0x60) from the device's base.
pub const DATA_OFFSET: u64 = 0;
/// Offset of the command/status port (0x64) from the data port (0x60).
pub const COMMAND_OFFSET: u64 = 4;

// Status register bits (port 0x64 read; PC/AT TechRef, "Status Register").
/// Output buffer full: a byte waits at port 0x60.
const SR_OBF: u8 = 0x01;
/// System flag: set once the controller passed its self-test.
const SR_SYS: u8 = 0x04;
/// The last write went to the command port (0x64), not the data port.
const SR_CMD: u8 = 0x08;
/// Keyboard not inhibited (the keyboard lock switch is open).
const SR_UNLOCKED: u8 = 0x10;
/// The waiting byte comes from the aux (mouse) port.
const SR_AUX: u8 = 0x20;

// Command byte bits (controller RAM byte 0; Linux's `I8042_CTR_*`).
/// Raise IRQ 1 when a keyboard byte is in the output buffer.
const CB_KBD_INT: u8 = 0x01;
/// System flag, mirrored in the status register.
const CB_SYS: u8 = 0x04;
/// Keyboard port disabled.
const CB_KBD_DIS: u8 = 0x10;
/// Aux port disabled.
const CB_AUX_DIS: u8 = 0x20;
/// Translate the keyboard's set-2 scancodes to set 1.
const CB_XLATE: u8 = 0x40;
/// The command byte a PC BIOS leaves behind: translation on, keyboard
/// interrupt on, self-test passed. Translation being on is why the
/// scancodes injected below are set-1 codes.
const CB_DEFAULT: u8 = CB_XLATE | CB_SYS | CB_KBD_INT;

// Controller commands (port 0x64 write; Linux's `I8042_CMD_*`).
/// Read the command byte.
const CMD_READ_CTR: u8 = 0x20;
/// Write the command byte (next byte on port 0x60).
const CMD_WRITE_CTR: u8 = 0x60;
/// Disable the aux port.
const CMD_AUX_DISABLE: u8 = 0xa7;
/// Enable the aux port.
const CMD_AUX_ENABLE: u8 = 0xa8;
/// Test the aux interface: 0x00 means no error.
const CMD_AUX_TEST: u8 = 0xa9;
/// Controller self-test: answers 0x55.
const CMD_SELF_TEST: u8 = 0xaa;
/// Test the keyboard interface: 0x00 means no error.
const CMD_KBD_TEST: u8 = 0xab;
/// Disable the keyboard port.
const CMD_KBD_DISABLE: u8 = 0xad;
/// Enable the keyboard port.
const CMD_KBD_ENABLE: u8 = 0xae;
/// Read the output port.
const CMD_READ_OUTP: u8 = 0xd0;
/// Write the output port (next byte); bit 0 low resets the CPU.
const CMD_WRITE_OUTP: u8 = 0xd1;
/// Put the next byte in the output buffer as if the keyboard sent it.
const CMD_WRITE_KBD_OUTBUF: u8 = 0xd2;
/// Put the next byte in the output buffer as if the mouse sent it.
const CMD_WRITE_AUX_OUTBUF: u8 = 0xd3;
/// Send the next byte to the mouse.
const CMD_WRITE_AUX: u8 = 0xd4;
/// Pulse the CPU reset line.
const CMD_RESET_CPU: u8 = 0xfe;

/// Answer to a passed controller self-test.
const SELF_TEST_OK: u8 = 0x55;
/// Answer to a passed interface test.
const INTERFACE_OK: u8 = 0x00;
/// Output-port value: bit 0 is the CPU reset line (high = running), bit 1
/// the A20 gate.
const OUTP_DEFAULT: u8 = 0x03;
/// The reset line in the output port.
const OUTP_RESET_LINE: u8 = 0x01;

// Keyboard commands (port 0x60 write; Linux's `ATKBD_CMD_*`).
/// Set the LEDs (one parameter byte).
const KBD_SET_LEDS: u8 = 0xed;
/// Echo: answered with 0xee, not an ack.
const KBD_ECHO: u8 = 0xee;
/// Get or set the scancode set (one parameter byte; 0 = get).
const KBD_SCANCODE_SET: u8 = 0xf0;
/// Identify: ack, then the two ID bytes.
const KBD_GET_ID: u8 = 0xf2;
/// Set the typematic rate (one parameter byte).
const KBD_SET_REP: u8 = 0xf3;
/// Reset and run the basic assurance test: ack, then 0xaa.
const KBD_RESET: u8 = 0xff;

/// The keyboard's acknowledge byte.
const KBD_ACK: u8 = 0xfa;
/// The keyboard's "basic assurance test passed" byte.
const KBD_BAT_OK: u8 = 0xaa;
/// An MF2 keyboard's ID (what atkbd expects after 0xf2).
const KBD_ID: [u8; 2] = [0xab, 0x83];
/// The scancode set reported by "get set" (set 2, translated by us).
const KBD_CURRENT_SET: u8 = 0x02;
/// NAK: what a missing mouse's port answers.
const AUX_NAK: u8 = 0xfe;

/// Set-1 (translated) scancodes: key presses of Left Ctrl, Left Alt and
/// Delete (an extended key, hence the 0xe0 prefix), then their releases
/// (press code | 0x80) in reverse order, as a keyboard sends them.
const CTRL_ALT_DEL: [u8; 8] = [0x1d, 0x38, 0xe0, 0x53, 0xe0, 0xd3, 0xb8, 0x9d];

/// Bytes the output buffer holds; a real 8042 holds one, the keyboard
/// buffers the rest, which this ring stands in for.
const OUTPUT_BUFFER_LEN: usize = 16;

/// What went wrong injecting keys.
#[derive(Debug, thiserror::Error)]
pub enum I8042Error {
    /// The guest has not read enough of what was already queued.
    #[error("the i8042 output buffer is full: the guest is not reading its keyboard")]
    BufferFull,
    /// The keyboard interrupt could not be raised.
    #[error("cannot raise the keyboard interrupt: {0}")]
    RaiseInterrupt(#[source] io::Error),
}

/// What a byte written to port 0x60 means, after a command that takes one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum PendingParam {
    /// The next data byte is a keyboard command.
    None,
    /// The next data byte is the parameter of a controller command.
    Controller(u8),
    /// The next data byte is the parameter of a keyboard command.
    Keyboard(u8),
}

/// A byte waiting in the output buffer, and which port it came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OutByte {
    /// The byte.
    pub value: u8,
    /// Whether it is the auxiliary (mouse) port's.
    pub aux: bool,
}

/// The controller as a snapshot keeps it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct I8042State {
    /// The command byte.
    pub command_byte: u8,
    /// The output port.
    pub output_port: u8,
    /// Whether the last write went to the command port.
    pub last_write_was_command: bool,
    /// A command waiting for its parameter.
    pub pending: PendingParam,
    /// The output buffer.
    pub output: Vec<OutByte>,
    /// What the data port reads when the buffer is empty.
    pub last_read: u8,
}

/// The i8042 controller and its keyboard. `reset` is raised when the guest
/// resets the CPU, `kbd_irq` (IRQ 1) when a keyboard byte waits.
pub struct I8042 {
    reset: EventFdTrigger,
    kbd_irq: EventFdTrigger,
    command_byte: u8,
    output_port: u8,
    /// `SR_CMD`: where the last write went.
    last_write_was_command: bool,
    pending: PendingParam,
    output: VecDeque<OutByte>,
    /// What port 0x60 reads when the buffer is empty: the last byte read,
    /// as on real hardware.
    last_read: u8,
}

impl I8042 {
    /// A controller raising `reset` on the CPU-reset command and `kbd_irq`
    /// for keyboard bytes.
    pub fn new(reset: EventFdTrigger, kbd_irq: EventFdTrigger) -> Self {
        I8042 {
            reset,
            kbd_irq,
            command_byte: CB_DEFAULT,
            output_port: OUTP_DEFAULT,
            last_write_was_command: false,
            pending: PendingParam::None,
            output: VecDeque::with_capacity(OUTPUT_BUFFER_LEN),
            last_read: 0,
        }
    }

    /// The controller's state, for a snapshot.
    pub fn save_state(&self) -> I8042State {
        I8042State {
            command_byte: self.command_byte,
            output_port: self.output_port,
            last_write_was_command: self.last_write_was_command,
            pending: self.pending,
            output: self.output.iter().copied().collect(),
            last_read: self.last_read,
        }
    }

    /// Puts the controller where `state` left it; a byte waiting raises its
    /// interrupt again. An output buffer longer than the controller's is
    /// cut to it.
    pub fn restore_state(&mut self, state: &I8042State) {
        self.command_byte = state.command_byte;
        self.output_port = state.output_port;
        self.last_write_was_command = state.last_write_was_command;
        self.pending = state.pending;
        self.output = state
            .output
            .iter()
            .copied()
            .take(OUTPUT_BUFFER_LEN)
            .collect();
        self.last_read = state.last_read;
        if let Err(e) = self.raise_for_head() {
            log::warn!("i8042: cannot raise the keyboard interrupt: {e}");
        }
    }

    /// Queues Ctrl+Alt+Del, pressed then released, and raises IRQ 1 (if the
    /// guest enabled it). Nothing is queued unless all of it fits.
    pub fn trigger_ctrl_alt_del(&mut self) -> Result<(), I8042Error> {
        if OUTPUT_BUFFER_LEN - self.output.len() < CTRL_ALT_DEL.len() {
            return Err(I8042Error::BufferFull);
        }
        let was_empty = self.output.is_empty();
        self.output.extend(
            CTRL_ALT_DEL
                .iter()
                .map(|&value| OutByte { value, aux: false }),
        );
        if was_empty {
            self.raise_for_head().map_err(I8042Error::RaiseInterrupt)?;
        }
        Ok(())
    }

    /// The status register (port 0x64).
    fn status(&self) -> u8 {
        let mut status = SR_UNLOCKED;
        if let Some(head) = self.output.front() {
            status |= SR_OBF;
            if head.aux {
                status |= SR_AUX;
            }
        }
        if self.command_byte & CB_SYS != 0 {
            status |= SR_SYS;
        }
        if self.last_write_was_command {
            status |= SR_CMD;
        }
        status
    }

    /// Pops the output buffer (port 0x60); the next byte, if any, raises
    /// its interrupt in turn.
    fn read_data(&mut self) -> u8 {
        if let Some(byte) = self.output.pop_front() {
            self.last_read = byte.value;
            if let Err(e) = self.raise_for_head() {
                log::error!("i8042: cannot raise the keyboard interrupt: {e}");
            }
        }
        self.last_read
    }

    /// Queues a reply; raises its interrupt when it reaches the head. A
    /// guest that never reads loses replies past the buffer's size.
    fn push(&mut self, value: u8, aux: bool) {
        if self.output.len() >= OUTPUT_BUFFER_LEN {
            log::warn!("i8042: output buffer full, dropping {value:#04x}");
            return;
        }
        self.output.push_back(OutByte { value, aux });
        if self.output.len() == 1 {
            if let Err(e) = self.raise_for_head() {
                log::error!("i8042: cannot raise the keyboard interrupt: {e}");
            }
        }
    }

    /// Raises IRQ 1 if a keyboard byte is at the head of the buffer and the
    /// guest enabled the keyboard interrupt. Aux bytes would raise IRQ 12,
    /// which is not wired (command byte bit 1 is ignored).
    fn raise_for_head(&self) -> io::Result<()> {
        match self.output.front() {
            Some(head) if !head.aux && self.command_byte & CB_KBD_INT != 0 => {
                self.kbd_irq.trigger()
            }
            _ => Ok(()),
        }
    }

    fn signal_reset(&self) {
        if let Err(e) = self.reset.trigger() {
            log::error!("i8042: cannot signal the guest's reset: {e}");
        }
    }

    /// A controller command (port 0x64 write).
    fn write_command(&mut self, cmd: u8) {
        self.last_write_was_command = true;
        self.pending = PendingParam::None;
        match cmd {
            CMD_READ_CTR => self.push(self.command_byte, false),
            CMD_WRITE_CTR | CMD_WRITE_OUTP | CMD_WRITE_KBD_OUTBUF | CMD_WRITE_AUX_OUTBUF
            | CMD_WRITE_AUX => self.pending = PendingParam::Controller(cmd),
            CMD_AUX_DISABLE => self.command_byte |= CB_AUX_DIS,
            CMD_AUX_ENABLE => self.command_byte &= !CB_AUX_DIS,
            CMD_AUX_TEST | CMD_KBD_TEST => self.push(INTERFACE_OK, false),
            CMD_SELF_TEST => {
                self.command_byte |= CB_SYS;
                self.push(SELF_TEST_OK, false);
            }
            CMD_KBD_DISABLE => self.command_byte |= CB_KBD_DIS,
            CMD_KBD_ENABLE => self.command_byte &= !CB_KBD_DIS,
            CMD_READ_OUTP => self.push(self.output_port, false),
            CMD_RESET_CPU => self.signal_reset(),
            _ => log::debug!("i8042: ignoring controller command {cmd:#04x}"),
        }
    }

    /// A byte on the data port (port 0x60 write): a controller command's
    /// parameter, a keyboard command's parameter, or a keyboard command.
    fn write_data(&mut self, value: u8) {
        self.last_write_was_command = false;
        match std::mem::replace(&mut self.pending, PendingParam::None) {
            PendingParam::Controller(cmd) => self.controller_param(cmd, value),
            PendingParam::Keyboard(cmd) => {
                self.push(KBD_ACK, false);
                if cmd == KBD_SCANCODE_SET && value == 0 {
                    self.push(KBD_CURRENT_SET, false);
                }
            }
            PendingParam::None => self.keyboard_command(value),
        }
    }

    fn controller_param(&mut self, cmd: u8, value: u8) {
        match cmd {
            CMD_WRITE_CTR => {
                self.command_byte = value;
                // A byte already waiting interrupts now, as on hardware
                // whose IRQ line follows OBF once enabled.
                if let Err(e) = self.raise_for_head() {
                    log::error!("i8042: cannot raise the keyboard interrupt: {e}");
                }
            }
            CMD_WRITE_OUTP => {
                self.output_port = value;
                if value & OUTP_RESET_LINE == 0 {
                    self.signal_reset();
                }
            }
            CMD_WRITE_KBD_OUTBUF => self.push(value, false),
            CMD_WRITE_AUX_OUTBUF => self.push(value, true),
            // No mouse is attached: its port refuses everything.
            CMD_WRITE_AUX => self.push(AUX_NAK, true),
            _ => unreachable!("only commands with a parameter are pending"),
        }
    }

    fn keyboard_command(&mut self, cmd: u8) {
        match cmd {
            KBD_RESET => {
                self.output.retain(|b| b.aux);
                self.push(KBD_ACK, false);
                self.push(KBD_BAT_OK, false);
            }
            KBD_GET_ID => {
                self.push(KBD_ACK, false);
                for id in KBD_ID {
                    self.push(id, false);
                }
            }
            KBD_ECHO => self.push(KBD_ECHO, false),
            KBD_SET_LEDS | KBD_SET_REP | KBD_SCANCODE_SET => {
                self.pending = PendingParam::Keyboard(cmd);
                self.push(KBD_ACK, false);
            }
            // Enable/disable scanning, set defaults and the rest: acked.
            _ => self.push(KBD_ACK, false),
        }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        read_byte_register(offset, data, |off| match u64::from(off) {
            DATA_OFFSET => self.read_data(),
            COMMAND_OFFSET => self.status(),
            // 0x61..=0x63 are not the controller's.
            _ => 0,
        });
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        write_byte_register(offset, data, |off, value| match u64::from(off) {
            DATA_OFFSET => self.write_data(value),
            COMMAND_OFFSET => self.write_command(value),
            _ => {}
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

    /// Command byte: raise IRQ 12 for aux bytes (ignored by the model).
    const CB_AUX_INT: u8 = 0x02;

    struct Fixture {
        dev: I8042,
        reset: EventFd,
        irq: EventFd,
    }

    fn fixture() -> Fixture {
        let reset = EventFd::new(EFD_NONBLOCK).unwrap();
        let irq = EventFd::new(EFD_NONBLOCK).unwrap();
        let dev = I8042::new(
            EventFdTrigger::new(reset.try_clone().unwrap()),
            EventFdTrigger::new(irq.try_clone().unwrap()),
        );
        Fixture { dev, reset, irq }
    }

    /// How many times the eventfd was written since the last call.
    fn count(evt: &EventFd) -> u64 {
        evt.read().unwrap_or(0)
    }

    impl Fixture {
        fn status(&mut self) -> u8 {
            let mut b = [0u8];
            self.dev.read(COMMAND_OFFSET, &mut b);
            b[0]
        }

        fn command(&mut self, cmd: u8) {
            self.dev.write(COMMAND_OFFSET, &[cmd]);
        }

        fn data(&mut self, value: u8) {
            self.dev.write(DATA_OFFSET, &[value]);
        }

        /// Reads bytes while OBF is set, as Linux's `i8042_flush` does.
        fn drain(&mut self) -> Vec<u8> {
            let mut out = Vec::new();
            while self.status() & SR_OBF != 0 {
                let mut b = [0u8];
                self.dev.read(DATA_OFFSET, &mut b);
                out.push(b[0]);
                assert!(out.len() <= OUTPUT_BUFFER_LEN, "OBF never clears");
            }
            out
        }
    }

    #[test]
    fn reset_command_raises_the_reset_event() {
        let mut f = fixture();
        f.data(0xfe);
        assert_eq!(count(&f.reset), 0, "a data-port write must not reset");
        f.command(CMD_SELF_TEST);
        assert_eq!(count(&f.reset), 0, "other commands must not reset");
        f.command(CMD_RESET_CPU);
        assert_eq!(count(&f.reset), 1);
        assert_eq!(
            f.status() & 0x02,
            0,
            "input buffer empty so Linux may send commands"
        );
    }

    #[test]
    fn output_port_reset_line_resets() {
        let mut f = fixture();
        f.command(CMD_READ_OUTP);
        assert_eq!(f.drain(), [OUTP_DEFAULT]);
        f.command(CMD_WRITE_OUTP);
        f.data(OUTP_DEFAULT);
        assert_eq!(count(&f.reset), 0);
        f.command(CMD_WRITE_OUTP);
        f.data(OUTP_DEFAULT & !OUTP_RESET_LINE);
        assert_eq!(count(&f.reset), 1);
    }

    #[test]
    fn linux_i8042_probe_sequence_is_answered() {
        let mut f = fixture();
        assert_eq!(f.status(), SR_UNLOCKED | SR_SYS, "idle after the BIOS");
        assert!(f.drain().is_empty());

        f.command(CMD_SELF_TEST);
        assert_ne!(f.status() & SR_CMD, 0, "last write was a command");
        assert_eq!(f.drain(), [SELF_TEST_OK]);
        assert_eq!(count(&f.irq), 1, "the BIOS left IRQ 1 enabled");

        f.command(CMD_READ_CTR);
        assert_eq!(f.drain(), [CB_DEFAULT]);
        assert_eq!(count(&f.irq), 1);
        // Linux masks interrupts while it probes.
        let ctr = CB_DEFAULT & !(CB_KBD_INT | CB_AUX_INT);
        f.command(CMD_WRITE_CTR);
        f.data(ctr);
        assert_eq!(f.status() & SR_CMD, 0, "last write was data");
        f.command(CMD_READ_CTR);
        assert_eq!(f.drain(), [ctr]);

        f.command(CMD_KBD_TEST);
        assert_eq!(f.drain(), [INTERFACE_OK]);
        f.command(CMD_AUX_TEST);
        assert_eq!(f.drain(), [INTERFACE_OK]);

        f.command(CMD_KBD_DISABLE);
        f.command(CMD_AUX_DISABLE);
        f.command(CMD_READ_CTR);
        assert_eq!(f.drain(), [ctr | CB_KBD_DIS | CB_AUX_DIS]);
        f.command(CMD_KBD_ENABLE);
        f.command(CMD_AUX_ENABLE);
        f.command(CMD_READ_CTR);
        assert_eq!(f.drain(), [ctr]);

        // The aux loop-back answers on the aux side; a mouse is absent.
        f.command(CMD_WRITE_AUX_OUTBUF);
        f.data(0x5a);
        assert_eq!(f.status() & (SR_OBF | SR_AUX), SR_OBF | SR_AUX);
        assert_eq!(f.drain(), [0x5a]);
        f.command(CMD_WRITE_AUX);
        f.data(0xf2);
        assert_eq!(f.status() & SR_AUX, SR_AUX);
        assert_eq!(f.drain(), [AUX_NAK]);

        f.command(CMD_WRITE_KBD_OUTBUF);
        f.data(0x42);
        assert_eq!(f.status() & (SR_OBF | SR_AUX), SR_OBF);
        assert_eq!(f.drain(), [0x42]);
        assert_eq!(count(&f.irq), 0, "interrupts were masked throughout");
        assert_eq!(count(&f.reset), 0);
    }

    #[test]
    fn atkbd_commands_are_answered() {
        let mut f = fixture();
        f.data(KBD_RESET);
        assert_eq!(f.drain(), [KBD_ACK, KBD_BAT_OK]);
        f.data(KBD_GET_ID);
        assert_eq!(f.drain(), [KBD_ACK, 0xab, 0x83]);
        f.data(0xf5);
        assert_eq!(f.drain(), [KBD_ACK]);
        f.data(KBD_SET_LEDS);
        assert_eq!(f.drain(), [KBD_ACK]);
        f.data(0x07);
        assert_eq!(f.drain(), [KBD_ACK], "the parameter is acked too");
        f.data(KBD_SET_REP);
        f.data(0x00);
        assert_eq!(f.drain(), [KBD_ACK, KBD_ACK]);
        f.data(KBD_SCANCODE_SET);
        f.data(0);
        assert_eq!(f.drain(), [KBD_ACK, KBD_ACK, KBD_CURRENT_SET]);
        f.data(0xf4);
        f.data(KBD_ECHO);
        assert_eq!(f.drain(), [KBD_ACK, KBD_ECHO]);
        // A parameter's wait ends at the next controller command.
        f.data(KBD_SET_LEDS);
        f.command(CMD_READ_CTR);
        f.data(KBD_GET_ID);
        assert_eq!(f.drain(), [KBD_ACK, CB_DEFAULT, KBD_ACK, 0xab, 0x83]);
    }

    #[test]
    fn obf_follows_the_output_buffer_and_empty_reads_repeat() {
        let mut f = fixture();
        assert_eq!(f.status() & SR_OBF, 0);
        f.data(KBD_GET_ID);
        let mut b = [0u8];
        for want in [KBD_ACK, 0xab, 0x83] {
            assert_ne!(f.status() & SR_OBF, 0);
            f.dev.read(DATA_OFFSET, &mut b);
            assert_eq!(b[0], want);
        }
        assert_eq!(f.status() & SR_OBF, 0);
        f.dev.read(DATA_OFFSET, &mut b);
        assert_eq!(b[0], 0x83, "an empty buffer reads the last byte again");
        assert_eq!(f.status() & SR_OBF, 0);
    }

    #[test]
    fn full_buffer_drops_replies_without_panicking() {
        let mut f = fixture();
        for _ in 0..OUTPUT_BUFFER_LEN + 4 {
            f.data(KBD_ECHO);
        }
        assert_eq!(f.drain().len(), OUTPUT_BUFFER_LEN);
    }

    #[test]
    fn each_keyboard_byte_raises_irq1_when_enabled() {
        let mut f = fixture();
        f.data(KBD_GET_ID);
        assert_eq!(count(&f.irq), 1, "the first byte interrupts");
        let mut b = [0u8];
        f.dev.read(DATA_OFFSET, &mut b);
        assert_eq!(count(&f.irq), 1, "the next byte interrupts");
        f.dev.read(DATA_OFFSET, &mut b);
        assert_eq!(count(&f.irq), 1);
        f.dev.read(DATA_OFFSET, &mut b);
        assert_eq!(count(&f.irq), 0, "an empty buffer does not");

        f.command(CMD_WRITE_CTR);
        f.data(CB_DEFAULT & !CB_KBD_INT);
        f.data(KBD_ECHO);
        assert_eq!(count(&f.irq), 0, "masked");
        f.command(CMD_WRITE_CTR);
        f.data(CB_DEFAULT);
        assert_eq!(count(&f.irq), 1, "a waiting byte interrupts once unmasked");
        assert_eq!(f.drain(), [KBD_ECHO]);

        f.command(CMD_WRITE_AUX_OUTBUF);
        f.data(0x5a);
        assert_eq!(count(&f.irq), 0, "aux bytes are not IRQ 1's");
        f.drain();
    }

    #[test]
    fn ctrl_alt_del_is_queued_in_order_and_interrupts() {
        let mut f = fixture();
        f.dev.trigger_ctrl_alt_del().unwrap();
        assert_eq!(count(&f.irq), 1);
        assert_eq!(f.status() & (SR_OBF | SR_AUX), SR_OBF);
        assert_eq!(
            f.drain(),
            [0x1d, 0x38, 0xe0, 0x53, 0xe0, 0xd3, 0xb8, 0x9d],
            "Ctrl, Alt, Del pressed, then released"
        );
        assert_eq!(count(&f.irq), 7, "one interrupt per further byte");
        assert_eq!(count(&f.reset), 0);
    }

    #[test]
    fn ctrl_alt_del_needs_room_for_all_its_bytes() {
        let mut f = fixture();
        f.dev.trigger_ctrl_alt_del().unwrap();
        f.dev.trigger_ctrl_alt_del().unwrap();
        assert!(matches!(
            f.dev.trigger_ctrl_alt_del(),
            Err(I8042Error::BufferFull)
        ));
        assert_eq!(f.drain().len(), 2 * CTRL_ALT_DEL.len());
        f.dev.trigger_ctrl_alt_del().unwrap();
    }

    #[test]
    fn wide_and_odd_accesses_are_harmless() {
        let mut f = fixture();
        let mut wide = [0xffu8; 4];
        f.dev.read(COMMAND_OFFSET, &mut wide);
        assert_eq!(wide, [SR_UNLOCKED | SR_SYS, 0, 0, 0]);
        for off in 1..COMMAND_OFFSET {
            let mut b = [0xffu8; 2];
            f.dev.read(off, &mut b);
            assert_eq!(b, [0, 0]);
            f.dev.write(off, &[CMD_RESET_CPU]);
        }
        f.dev.read(0x1_0000, &mut wide);
        assert_eq!(wide, [0; 4]);
        f.dev.read(DATA_OFFSET, &mut []);
        f.dev.write(DATA_OFFSET, &[]);
        f.dev.write(0x1_0000 + COMMAND_OFFSET, &[CMD_RESET_CPU]);
        assert_eq!(count(&f.reset), 0);
        assert_eq!(f.status() & SR_OBF, 0);
        // A wide write uses its low byte.
        f.dev
            .write(COMMAND_OFFSET, &[CMD_RESET_CPU, 0x12, 0x34, 0x56]);
        assert_eq!(count(&f.reset), 1);
    }

    #[test]
    fn a_saved_controller_comes_back_with_its_buffer_and_raises_for_it() {
        let mut f = fixture();
        f.dev.trigger_ctrl_alt_del().unwrap();
        let mut b = [0u8];
        f.dev.read(DATA_OFFSET, &mut b);
        let first = b[0];
        let _ = count(&f.irq);
        let saved = f.dev.save_state();
        assert_eq!(saved.output.len(), CTRL_ALT_DEL.len() - 1);
        assert_eq!(saved.last_read, first);
        let mut g = fixture();
        g.dev.restore_state(&saved);
        assert_eq!(g.dev.save_state(), saved);
        assert_eq!(count(&g.irq), 1, "the waiting byte interrupts again");
        assert_eq!(g.drain(), &CTRL_ALT_DEL[1..]);
    }
}
