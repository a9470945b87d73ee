//! The 8250 UART at 0x3f8, modelled by `vm_superio::Serial`.

use std::io::{self, Write};

use vm_superio::serial::SerialEvents;
use vmm_sys_util::eventfd::EventFd;

use super::{read_byte_register, write_byte_register};
use crate::bus::BusDevice;
use crate::EventFdTrigger;

/// Tells the VMM when the guest has drained the serial input FIFO, so that
/// it reads more from its input source (flow control: podvm never reads
/// host input it cannot queue).
#[derive(Debug)]
pub struct SerialInputEvents {
    buffer_ready: EventFd,
    bytes_out: std::sync::atomic::AtomicU64,
}

impl SerialInputEvents {
    /// `buffer_ready` is written whenever the input FIFO becomes empty.
    pub fn new(buffer_ready: EventFd) -> Self {
        SerialInputEvents {
            buffer_ready,
            bytes_out: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

impl SerialEvents for SerialInputEvents {
    fn buffer_read(&self) {}
    fn out_byte(&self) {
        self.bytes_out
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    fn tx_lost_byte(&self) {}
    fn in_buffer_empty(&self) {
        if let Err(e) = self.buffer_ready.write(1) {
            log::warn!("serial: cannot signal an empty input buffer: {e}");
        }
    }
}

/// The UART's registers and input FIFO, as a snapshot keeps them
/// (`vm_superio::serial::SerialState`, as plain serde data).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SerialSnapshot {
    /// Divisor latch, low byte.
    pub baud_divisor_low: u8,
    /// Divisor latch, high byte.
    pub baud_divisor_high: u8,
    /// Interrupt enable register.
    pub interrupt_enable: u8,
    /// Interrupt identification register.
    pub interrupt_identification: u8,
    /// Line control register.
    pub line_control: u8,
    /// Line status register.
    pub line_status: u8,
    /// Modem control register.
    pub modem_control: u8,
    /// Modem status register.
    pub modem_status: u8,
    /// Scratch register.
    pub scratch: u8,
    /// Bytes the guest has not read yet.
    pub in_buffer: Vec<u8>,
}

impl From<vm_superio::serial::SerialState> for SerialSnapshot {
    fn from(s: vm_superio::serial::SerialState) -> Self {
        SerialSnapshot {
            baud_divisor_low: s.baud_divisor_low,
            baud_divisor_high: s.baud_divisor_high,
            interrupt_enable: s.interrupt_enable,
            interrupt_identification: s.interrupt_identification,
            line_control: s.line_control,
            line_status: s.line_status,
            modem_control: s.modem_control,
            modem_status: s.modem_status,
            scratch: s.scratch,
            in_buffer: s.in_buffer,
        }
    }
}

impl From<&SerialSnapshot> for vm_superio::serial::SerialState {
    fn from(s: &SerialSnapshot) -> Self {
        vm_superio::serial::SerialState {
            baud_divisor_low: s.baud_divisor_low,
            baud_divisor_high: s.baud_divisor_high,
            interrupt_enable: s.interrupt_enable,
            interrupt_identification: s.interrupt_identification,
            line_control: s.line_control,
            line_status: s.line_status,
            modem_control: s.modem_control,
            modem_status: s.modem_status,
            scratch: s.scratch,
            in_buffer: s.in_buffer.clone(),
        }
    }
}

/// A saved UART that cannot be restored.
#[derive(Debug, thiserror::Error)]
#[error("the snapshot's serial console cannot be restored: {0}")]
pub struct SerialRestoreError(String);

/// The serial console: an 8250 whose output goes to `W`.
pub struct Serial<W: Write + Send> {
    inner: vm_superio::Serial<EventFdTrigger, SerialInputEvents, W>,
    output_failed: bool,
}

impl<W: Write + Send> Serial<W> {
    /// A UART raising `irq` and writing the guest's output to `out`.
    pub fn new(irq: EventFdTrigger, events: SerialInputEvents, out: W) -> Self {
        Serial {
            inner: vm_superio::Serial::with_events(irq, events, out),
            output_failed: false,
        }
    }

    /// A UART as `state` left it (a snapshot's), raising the interrupt
    /// that state has pending.
    pub fn from_state(
        state: &SerialSnapshot,
        irq: EventFdTrigger,
        events: SerialInputEvents,
        out: W,
    ) -> Result<Self, SerialRestoreError> {
        let inner = vm_superio::Serial::from_state(&state.into(), irq, events, out)
            .map_err(|e| SerialRestoreError(format!("{e:?}")))?;
        Ok(Serial {
            inner,
            output_failed: false,
        })
    }

    /// The UART's state, for a snapshot.
    pub fn save_state(&self) -> SerialSnapshot {
        self.inner.state().into()
    }

    /// How many more input bytes the receive FIFO can take now.
    pub fn input_capacity(&self) -> usize {
        self.inner.fifo_capacity()
    }

    /// Queues bytes for the guest to read; returns how many were taken.
    pub fn enqueue_input(&mut self, input: &[u8]) -> io::Result<usize> {
        self.inner
            .enqueue_raw_bytes(input)
            .map_err(|e| io::Error::other(format!("{e:?}")))
    }

    /// Bytes the guest has written to the console.
    pub fn bytes_out(&self) -> u64 {
        self.inner
            .events()
            .bytes_out
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The output sink.
    pub fn output(&mut self) -> &mut W {
        self.inner.writer_mut()
    }
}

impl<W: Write + Send> BusDevice for Serial<W> {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        read_byte_register(offset, data, |off| self.inner.read(off));
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        write_byte_register(offset, data, |off, value| {
            if let Err(e) = self.inner.write(off, value) {
                // A closed or full console must not stop the guest: report
                // it once and drop the output from then on.
                if !self.output_failed {
                    log::warn!("serial: guest output is being dropped: {e:?}");
                    self.output_failed = true;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmm_sys_util::eventfd::EFD_NONBLOCK;

    const THR: u64 = 0;
    const IER: u64 = 1;
    const LSR: u64 = 5;
    const LSR_DATA_READY: u8 = 0x01;
    const LSR_THR_EMPTY: u8 = 0x20;

    fn serial() -> (Serial<Vec<u8>>, EventFd, EventFd) {
        let irq = EventFd::new(EFD_NONBLOCK).unwrap();
        let ready = EventFd::new(EFD_NONBLOCK).unwrap();
        let s = Serial::new(
            EventFdTrigger::new(irq.try_clone().unwrap()),
            SerialInputEvents::new(ready.try_clone().unwrap()),
            Vec::new(),
        );
        (s, irq, ready)
    }

    #[test]
    fn guest_output_reaches_the_sink() {
        let (mut s, _irq, _) = serial();
        for b in b"hi\n" {
            s.write(THR, &[*b]);
        }
        assert_eq!(s.output(), b"hi\n");
        let mut lsr = [0u8; 1];
        s.read(LSR, &mut lsr);
        assert_ne!(lsr[0] & LSR_THR_EMPTY, 0);
    }

    #[test]
    fn input_is_readable_and_signals_when_drained() {
        let (mut s, irq, ready) = serial();
        // Enable the "received data available" interrupt.
        s.write(IER, &[0x01]);
        let cap = s.input_capacity();
        assert_eq!(s.enqueue_input(b"ab").unwrap(), 2);
        assert_eq!(s.input_capacity(), cap - 2);
        assert_eq!(irq.read().unwrap(), 1);
        let mut b = [0u8; 1];
        s.read(LSR, &mut b);
        assert_ne!(b[0] & LSR_DATA_READY, 0);
        s.read(THR, &mut b);
        assert_eq!(b[0], b'a');
        s.read(THR, &mut b);
        assert_eq!(b[0], b'b');
        assert_eq!(ready.read().unwrap(), 1);
        s.read(LSR, &mut b);
        assert_eq!(b[0] & LSR_DATA_READY, 0);
    }

    #[test]
    fn wide_and_out_of_range_accesses_are_harmless() {
        let (mut s, _, _) = serial();
        let mut wide = [0xffu8; 4];
        s.read(LSR, &mut wide);
        assert_eq!(&wide[1..], &[0, 0, 0]);
        s.write(0x1000, &[1]);
        s.write(THR, &[]);
        assert!(s.output().is_empty());
    }

    struct Broken;
    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::from(io::ErrorKind::BrokenPipe))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_broken_sink_does_not_stop_the_guest() {
        let irq = EventFd::new(EFD_NONBLOCK).unwrap();
        let ready = EventFd::new(EFD_NONBLOCK).unwrap();
        let mut s = Serial::new(
            EventFdTrigger::new(irq),
            SerialInputEvents::new(ready),
            Broken,
        );
        s.write(THR, b"x");
        s.write(THR, b"y");
        assert!(s.output_failed);
    }

    #[test]
    fn a_saved_uart_comes_back_with_its_registers_and_input() {
        let (mut s, _irq, _) = serial();
        s.write(3, &[0x03]); // LCR: 8N1
        s.write(7, &[0x5a]); // scratch
        s.enqueue_input(b"ab").unwrap();
        let saved = s.save_state();
        assert_eq!(saved.scratch, 0x5a);
        assert_eq!(saved.in_buffer, b"ab");
        let irq = EventFd::new(EFD_NONBLOCK).unwrap();
        let ready = EventFd::new(EFD_NONBLOCK).unwrap();
        let mut back = Serial::from_state(
            &saved,
            EventFdTrigger::new(irq),
            SerialInputEvents::new(ready),
            Vec::new(),
        )
        .unwrap();
        assert_eq!(back.save_state(), saved);
        let mut b = [0u8; 1];
        back.read(0, &mut b);
        assert_eq!(b[0], b'a');
        let mut too_much = saved.clone();
        too_much.in_buffer = vec![0; 1000];
        assert!(Serial::from_state(
            &too_much,
            EventFdTrigger::new(EventFd::new(EFD_NONBLOCK).unwrap()),
            SerialInputEvents::new(EventFd::new(EFD_NONBLOCK).unwrap()),
            Vec::<u8>::new(),
        )
        .is_err());
    }
}
