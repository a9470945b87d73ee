//! An unbuffered writer on the process's standard output, for the serial
//! console: every guest byte reaches the terminal when the guest writes it,
//! and nothing is left in a buffer when the process exits.

use std::io::{self, Write};

/// Writes straight to file descriptor 1.
pub struct RawStdout;

impl Write for RawStdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            // SAFETY: writes from a valid buffer of `buf.len()` bytes to fd
            // 1; the kernel does not keep the pointer.
            let n = unsafe { libc::write(libc::STDOUT_FILENO, buf.as_ptr().cast(), buf.len()) };
            if n >= 0 {
                return Ok(n as usize);
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
