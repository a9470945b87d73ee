//! The host side of the serial console: where guest output goes and where
//! typed input comes from.
//!
//! podvm never changes the file status flags of the descriptors it
//! inherited (they are usually shared with the shell and other programs):
//! it opens its own non-blocking description of a terminal or pipe through
//! `/proc/self/fd/N`. Guest output is written straight through while the
//! reader keeps up, and queued (bounded) for the event loop to drain when it
//! does not, so a stalled reader never blocks a vCPU or the VMM thread.

mod input;
mod output;

pub use input::{SerialInput, ESCAPE_BYTE, INPUT_BUFFER_SIZE};
pub use output::{ConsoleDrain, ConsoleOutput, OUTPUT_BACKLOG_SIZE};

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};

/// A descriptor of our own for what `fd` refers to: a new non-blocking
/// open file description for terminals, pipes and sockets, or a duplicate
/// for regular files and other kinds (whose reads and writes never block,
/// and whose shared offset must be kept). Returns the file and whether it
/// is non-blocking.
pub fn own_description(fd: BorrowedFd<'_>, write: bool) -> io::Result<(File, bool)> {
    let dup = || -> io::Result<File> { Ok(File::from(fd.try_clone_to_owned()?)) };
    let file = dup()?;
    let kind = file.metadata()?.file_type();
    if !(kind.is_fifo() || kind.is_char_device() || kind.is_socket()) {
        return Ok((file, false));
    }
    let path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd));
    match OpenOptions::new()
        .read(!write)
        .write(write)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(&path)
    {
        Ok(own) => Ok((own, true)),
        // Sockets cannot be reopened; fall back to the blocking duplicate.
        Err(e) => {
            log::debug!("console: cannot reopen {path}: {e}; using a blocking duplicate");
            Ok((file, false))
        }
    }
}

/// Whether `fd` is a terminal.
pub fn is_tty(fd: impl AsFd) -> bool {
    // SAFETY: isatty only inspects the descriptor.
    unsafe { libc::isatty(std::os::fd::AsRawFd::as_raw_fd(&fd.as_fd())) == 1 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    fn flags(f: &impl AsRawFd) -> i32 {
        // SAFETY: F_GETFL only reads the status flags.
        unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GETFL) }
    }

    #[test]
    fn pipes_get_their_own_non_blocking_description() {
        let (r, w) = std::io::pipe().unwrap();
        let (own, nonblocking) = own_description(r.as_fd(), false).unwrap();
        assert!(nonblocking);
        assert_ne!(flags(&own) & libc::O_NONBLOCK, 0);
        assert_eq!(flags(&r) & libc::O_NONBLOCK, 0, "the original is untouched");
        let (own_w, _) = own_description(w.as_fd(), true).unwrap();
        assert_ne!(flags(&own_w) & libc::O_NONBLOCK, 0);
        assert_eq!(flags(&w) & libc::O_NONBLOCK, 0);
    }

    #[test]
    fn regular_files_are_duplicated() {
        let f = tempfile_in_tmp();
        let (own, nonblocking) = own_description(f.as_fd(), true).unwrap();
        assert!(!nonblocking);
        assert_eq!(flags(&own) & libc::O_NONBLOCK, 0);
    }

    fn tempfile_in_tmp() -> File {
        let path = std::env::temp_dir().join(format!("podvm-console-{}", std::process::id()));
        let f = File::create(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        f
    }
}
