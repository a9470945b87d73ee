//! Guest console output that never blocks the guest or the VMM.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use event_manager::{EventOps, Events, MutEventSubscriber};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// Most bytes of output queued while the reader does not keep up; beyond
/// it output is dropped (and said so once), as a real UART would overrun.
pub const OUTPUT_BACKLOG_SIZE: usize = 256 * 1024;
/// How long the final flush waits for a slow reader.
const FINAL_FLUSH_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Backlog {
    bytes: VecDeque<u8>,
    dropped: u64,
}

fn lock(b: &Mutex<Backlog>) -> std::sync::MutexGuard<'_, Backlog> {
    b.lock().unwrap_or_else(|e| e.into_inner())
}

/// Writes `buf` to a non-blocking `fd`, returning how much went out
/// (0 when it would block).
fn write_some(fd: &File, buf: &[u8]) -> io::Result<usize> {
    loop {
        match (&*fd).write(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Writes as much of the backlog as the reader takes now. Returns whether
/// the backlog is empty.
fn drain(fd: &File, backlog: &Mutex<Backlog>) -> io::Result<bool> {
    let mut b = lock(backlog);
    while !b.bytes.is_empty() {
        let n = write_some(fd, b.bytes.as_slices().0)?;
        if n == 0 {
            return Ok(false);
        }
        b.bytes.drain(..n);
    }
    Ok(true)
}

/// The serial console's output sink on a terminal or pipe.
pub struct ConsoleOutput {
    fd: File,
    backlog: Arc<Mutex<Backlog>>,
    wake: Arc<EventFd>,
}

/// The event-loop half of [`ConsoleOutput`]: drains the backlog when the
/// reader catches up.
pub struct ConsoleDrain {
    fd: File,
    backlog: Arc<Mutex<Backlog>>,
    wake: Arc<EventFd>,
    watching_out: bool,
}

impl ConsoleOutput {
    /// An output on the non-blocking `fd` and its drain.
    pub fn new(fd: File) -> io::Result<(ConsoleOutput, ConsoleDrain)> {
        let backlog = Arc::new(Mutex::new(Backlog::default()));
        let wake = Arc::new(EventFd::new(EFD_NONBLOCK)?);
        let drain_fd = fd.try_clone()?;
        Ok((
            ConsoleOutput {
                fd,
                backlog: backlog.clone(),
                wake: wake.clone(),
            },
            ConsoleDrain {
                fd: drain_fd,
                backlog,
                wake,
                watching_out: false,
            },
        ))
    }
}

impl Write for ConsoleOutput {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut b = lock(&self.backlog);
        let mut rest = buf;
        if b.bytes.is_empty() {
            let n = write_some(&self.fd, buf)?;
            rest = &buf[n..];
            if rest.is_empty() {
                return Ok(buf.len());
            }
        }
        let room = OUTPUT_BACKLOG_SIZE - b.bytes.len();
        let keep = rest.len().min(room);
        b.bytes.extend(&rest[..keep]);
        if keep < rest.len() {
            if b.dropped == 0 {
                log::warn!("serial: the console reader is not keeping up; dropping guest output");
            }
            b.dropped += (rest.len() - keep) as u64;
        }
        drop(b);
        self.wake.write(1)?;
        Ok(buf.len())
    }

    /// Waits (up to a second) for the backlog to reach the reader.
    fn flush(&mut self) -> io::Result<()> {
        let deadline = Instant::now() + FINAL_FLUSH_TIMEOUT;
        while !drain(&self.fd, &self.backlog)? {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the console reader did not take the last output",
                ));
            }
            let mut pfd = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLOUT,
                revents: 0,
            };
            // SAFETY: polls one valid pollfd.
            unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(1000) as i32) };
        }
        Ok(())
    }
}

impl ConsoleDrain {
    fn set_watch_out(&mut self, ops: &mut EventOps, watch: bool) {
        if self.watching_out == watch {
            return;
        }
        let events = Events::new(&self.fd, EventSet::OUT);
        let res = if watch {
            ops.add(events)
        } else {
            ops.remove(events)
        };
        match res {
            Ok(()) => self.watching_out = watch,
            Err(e) => log::warn!("serial: cannot watch the console: {e:?}"),
        }
    }
}

impl MutEventSubscriber for ConsoleDrain {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        if events.fd() == self.wake.as_raw_fd() {
            let _ = self.wake.read();
        }
        match drain(&self.fd, &self.backlog) {
            Ok(empty) => self.set_watch_out(ops, !empty),
            Err(e) => {
                log::warn!("serial: cannot write guest output: {e}; dropping it");
                lock(&self.backlog).bytes.clear();
                self.set_watch_out(ops, false);
            }
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(self.wake.as_ref(), EventSet::IN)) {
            log::warn!("serial: cannot watch console output: {e:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::AsFd;

    fn nonblocking_pipe() -> (std::io::PipeReader, ConsoleOutput, ConsoleDrain) {
        let (r, w) = std::io::pipe().unwrap();
        let (fd, nb) = super::super::own_description(w.as_fd(), true).unwrap();
        assert!(nb);
        let (out, drain) = ConsoleOutput::new(fd).unwrap();
        (r, out, drain)
    }

    #[test]
    fn writes_go_straight_through_while_the_reader_keeps_up() {
        let (mut r, mut out, _drain) = nonblocking_pipe();
        out.write_all(b"hello").unwrap();
        let mut got = [0u8; 5];
        r.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello");
        assert!(out.wake.read().is_err(), "no wake-up needed");
    }

    #[test]
    fn a_stalled_reader_never_blocks_the_writer() {
        let (mut r, mut out, drain) = nonblocking_pipe();
        // Far more than a pipe holds (64 KiB by default).
        let chunk = vec![b'x'; 4096];
        let start = Instant::now();
        for _ in 0..200 {
            out.write_all(&chunk).unwrap();
        }
        assert!(start.elapsed() < Duration::from_secs(10));
        let queued = lock(&out.backlog).bytes.len();
        assert!(queued > 0 && queued <= OUTPUT_BACKLOG_SIZE);
        assert!(lock(&out.backlog).dropped > 0);
        // The reader catches up: draining delivers the backlog in order.
        let reader = std::thread::spawn(move || {
            let mut all = Vec::new();
            r.read_to_end(&mut all).unwrap();
            all
        });
        while !drain_for_test(&drain) {}
        drop(out);
        drop(drain);
        let all = reader.join().unwrap();
        assert!(all.iter().all(|&b| b == b'x'));
        assert!(all.len() >= OUTPUT_BACKLOG_SIZE);
    }

    fn drain_for_test(d: &ConsoleDrain) -> bool {
        drain(&d.fd, &d.backlog).unwrap()
    }

    #[test]
    fn order_is_kept_once_output_is_queued() {
        let (mut r, mut out, drain) = nonblocking_pipe();
        lock(&out.backlog).bytes.extend(b"first ");
        out.write_all(b"second").unwrap();
        assert!(drain_for_test(&drain));
        let mut got = [0u8; 12];
        r.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"first second");
    }
}
