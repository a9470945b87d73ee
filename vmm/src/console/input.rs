//! Host input typed into the guest's serial console.
//!
//! Input is read into a bounded host-side buffer and fed to the UART's
//! 64-byte receive FIFO whenever the guest drains it. On a terminal podvm
//! keeps reading even when the buffer is full (dropping what does not fit,
//! as a UART overruns), so that its escape, Ctrl-A then `x`, always works.
//! Pipes and files are never read further than the buffer holds: their
//! data waits in the kernel, and the escape is not interpreted (binary
//! input passes through unchanged).

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};

use devices::legacy::Serial;
use event_manager::{EventOps, Events, MutEventSubscriber};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;

/// Ctrl-A: on a terminal, the next key is a command to podvm. `x` ends the
/// VM; Ctrl-A again sends one Ctrl-A to the guest.
pub const ESCAPE_BYTE: u8 = 0x01;
/// Most bytes of input held for a guest that is not reading.
pub const INPUT_BUFFER_SIZE: usize = 4096;

/// Copies host input into the serial console.
pub struct SerialInput<W: Write + Send> {
    source: File,
    tty: bool,
    /// Epoll refuses regular files and some character devices; those are
    /// read whenever the buffer has room instead of when they are readable.
    pollable: bool,
    watching: bool,
    eof: bool,
    escape_pending: bool,
    overrun_reported: bool,
    pending: VecDeque<u8>,
    serial: Arc<Mutex<Serial<W>>>,
    buffer_ready: EventFd,
    on_quit: Box<dyn FnMut() + Send>,
}

impl<W: Write + Send> SerialInput<W> {
    /// Input from `source` (a terminal when `tty`) into `serial`, whose
    /// `buffer_ready` event says the FIFO emptied. `on_quit` runs when the
    /// user types the escape and `x`.
    pub fn new(
        source: File,
        tty: bool,
        serial: Arc<Mutex<Serial<W>>>,
        buffer_ready: EventFd,
        on_quit: Box<dyn FnMut() + Send>,
    ) -> Self {
        SerialInput {
            source,
            tty,
            pollable: true,
            watching: false,
            eof: false,
            escape_pending: false,
            overrun_reported: false,
            pending: VecDeque::with_capacity(INPUT_BUFFER_SIZE),
            serial,
            buffer_ready,
            on_quit,
        }
    }

    /// Reads what the source has now into the buffer. Returns whether
    /// anything was read.
    fn read_source(&mut self) -> bool {
        let room = INPUT_BUFFER_SIZE - self.pending.len();
        if room == 0 && !self.tty {
            return false;
        }
        let mut buf = [0u8; 1024];
        let want = if room == 0 {
            buf.len()
        } else {
            room.min(buf.len())
        };
        match self.source.read(&mut buf[..want]) {
            Ok(0) => {
                self.eof = true;
                false
            }
            Ok(n) => {
                for &b in &buf[..n] {
                    self.accept(b);
                }
                true
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => true,
            Err(e) => {
                log::warn!("serial: cannot read input, ignoring it from now on: {e}");
                self.eof = true;
                false
            }
        }
    }

    /// Takes one input byte: the escape sequence on a terminal, else the
    /// buffer.
    fn accept(&mut self, b: u8) {
        if self.tty {
            if self.escape_pending {
                self.escape_pending = false;
                match b {
                    b'x' | b'X' => return (self.on_quit)(),
                    ESCAPE_BYTE => {}
                    other => {
                        self.push(ESCAPE_BYTE);
                        self.push(other);
                        return;
                    }
                }
            } else if b == ESCAPE_BYTE {
                self.escape_pending = true;
                return;
            }
        }
        self.push(b);
    }

    fn push(&mut self, b: u8) {
        if self.pending.len() < INPUT_BUFFER_SIZE {
            self.pending.push_back(b);
        } else if !self.overrun_reported {
            log::warn!("serial: the guest is not reading its console; dropping typed input");
            self.overrun_reported = true;
        }
    }

    /// Moves buffered bytes into the FIFO, as many as fit.
    fn feed(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let mut serial = self.serial.lock().unwrap_or_else(|e| e.into_inner());
        let n = serial.input_capacity().min(self.pending.len());
        if n == 0 {
            return;
        }
        self.pending.make_contiguous();
        let taken = match serial.enqueue_input(&self.pending.as_slices().0[..n]) {
            Ok(taken) => taken,
            Err(e) => {
                log::warn!("serial: cannot queue guest input: {e}");
                0
            }
        };
        self.pending.drain(..taken);
    }

    fn set_watching(&mut self, ops: &mut EventOps, watch: bool) {
        if !self.pollable || self.watching == watch {
            return;
        }
        let events = Events::new(&self.source, EventSet::IN);
        let res = if watch {
            ops.add(events)
        } else {
            ops.remove(events)
        };
        match res {
            Ok(()) => self.watching = watch,
            Err(e) => log::warn!("serial: cannot watch input: {e:?}"),
        }
    }

    fn service(&mut self, ops: &mut EventOps, readable: bool) {
        if readable && !self.eof {
            self.read_source();
        }
        if !self.pollable {
            // Regular files: read whenever there is room.
            while !self.eof && self.pending.len() < INPUT_BUFFER_SIZE && self.read_source() {}
        }
        self.feed();
        let watch = !self.eof && (self.tty || self.pending.len() < INPUT_BUFFER_SIZE);
        self.set_watching(ops, watch);
    }
}

impl<W: Write + Send> MutEventSubscriber for SerialInput<W> {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let readable = if events.fd() == self.buffer_ready.as_raw_fd() {
            let _ = self.buffer_ready.read();
            false
        } else {
            let set = events.event_set();
            if set.contains(EventSet::HANG_UP) && !set.contains(EventSet::IN) {
                self.eof = true;
            }
            true
        };
        self.service(ops, readable);
    }

    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(&self.buffer_ready, EventSet::IN)) {
            log::warn!("serial: cannot watch the input FIFO: {e:?}");
        }
        match ops.add(Events::new(&self.source, EventSet::IN)) {
            Ok(()) => self.watching = true,
            Err(event_manager::Error::Epoll(e)) if e.errno() == libc::EPERM => {
                self.pollable = false;
                self.service(ops, false);
            }
            Err(e) => log::warn!("serial: cannot watch input: {e:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use devices::legacy::SerialInputEvents;
    use devices::EventFdTrigger;
    use std::sync::atomic::{AtomicBool, Ordering};
    use vmm_sys_util::eventfd::EFD_NONBLOCK;

    type TestSerial = Arc<Mutex<Serial<Vec<u8>>>>;

    fn input(tty: bool) -> (SerialInput<Vec<u8>>, TestSerial, Arc<AtomicBool>) {
        let serial = Arc::new(Mutex::new(Serial::new(
            EventFdTrigger::new(EventFd::new(EFD_NONBLOCK).unwrap()),
            SerialInputEvents::new(EventFd::new(EFD_NONBLOCK).unwrap()),
            Vec::new(),
        )));
        let quit = Arc::new(AtomicBool::new(false));
        let q = quit.clone();
        let (r, _w) = std::io::pipe().unwrap();
        let i = SerialInput::new(
            File::from(std::os::fd::OwnedFd::from(r)),
            tty,
            serial.clone(),
            EventFd::new(EFD_NONBLOCK).unwrap(),
            Box::new(move || q.store(true, Ordering::SeqCst)),
        );
        (i, serial, quit)
    }

    fn take_fifo(serial: &Arc<Mutex<Serial<Vec<u8>>>>) -> Vec<u8> {
        use devices::BusDevice;
        let mut s = serial.lock().unwrap();
        let mut out = Vec::new();
        loop {
            let mut lsr = [0u8; 1];
            s.read(5, &mut lsr);
            if lsr[0] & 1 == 0 {
                return out;
            }
            let mut b = [0u8; 1];
            s.read(0, &mut b);
            out.push(b[0]);
        }
    }

    #[test]
    fn escape_x_quits_on_a_terminal_only() {
        let (mut i, serial, quit) = input(true);
        for b in b"ab\x01xc" {
            i.accept(*b);
        }
        assert!(quit.load(Ordering::SeqCst));
        i.feed();
        assert_eq!(take_fifo(&serial), b"abc");

        let (mut i, serial, quit) = input(false);
        for b in b"ab\x01xc" {
            i.accept(*b);
        }
        assert!(!quit.load(Ordering::SeqCst));
        i.feed();
        assert_eq!(take_fifo(&serial), b"ab\x01xc", "pipes pass bytes through");
    }

    #[test]
    fn escape_escape_sends_one_escape_and_others_pass() {
        let (mut i, serial, quit) = input(true);
        for b in b"\x01\x01\x01q" {
            i.accept(*b);
        }
        assert!(!quit.load(Ordering::SeqCst));
        i.feed();
        assert_eq!(take_fifo(&serial), b"\x01\x01q");
    }

    #[test]
    fn no_byte_is_lost_across_fifo_refills() {
        let (mut i, serial, _) = input(false);
        let data: Vec<u8> = (0..200u8).collect();
        for b in &data {
            i.accept(*b);
        }
        let mut got = Vec::new();
        for _ in 0..10 {
            i.feed();
            got.extend(take_fifo(&serial));
        }
        assert_eq!(got, data);
    }

    #[test]
    fn a_full_buffer_drops_on_a_terminal_and_still_sees_the_escape() {
        let (mut i, _serial, quit) = input(true);
        for _ in 0..INPUT_BUFFER_SIZE + 100 {
            i.accept(b'k');
        }
        assert_eq!(i.pending.len(), INPUT_BUFFER_SIZE);
        i.accept(ESCAPE_BYTE);
        i.accept(b'x');
        assert!(quit.load(Ordering::SeqCst));
    }
}
