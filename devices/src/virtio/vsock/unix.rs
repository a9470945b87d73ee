//! The few Unix-socket calls std does not offer: a connect that never
//! blocks, a send that never raises SIGPIPE, and a non-blocking peek.

use std::ffi::OsStr;
use std::io;
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::Path;

/// Connects a non-blocking Unix stream socket to `path`. A Unix-domain
/// connect completes at once or fails (EAGAIN when the listener's backlog
/// is full), so it never leaves the event loop waiting.
pub fn connect_nonblocking(path: &Path) -> io::Result<UnixStream> {
    let bytes = OsStr::as_bytes(path.as_os_str());
    // SAFETY: an all-zero sockaddr_un is a valid (empty) address.
    let mut addr: libc::sockaddr_un = unsafe { mem::zeroed() };
    // The path and its terminating NUL must fit sun_path.
    if bytes.len() >= addr.sun_path.len() {
        return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    if bytes.contains(&0) {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (dst, &src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = src as libc::c_char;
    }
    // SAFETY: plain system call; the result is checked.
    let fd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let len = mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
    // SAFETY: `addr` is a valid sockaddr_un of at least `len` bytes that
    // outlives the call.
    let ret = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast(),
            len as libc::socklen_t,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(UnixStream::from(fd))
}

/// Sends what it can of `buf` without blocking and without SIGPIPE (a
/// peer that went away is an EPIPE error here, not a signal).
pub fn send(stream: &UnixStream, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for reads of `buf.len()` bytes.
    let n = unsafe {
        libc::send(
            stream.as_raw_fd(),
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // n ≥ 0 and ≤ buf.len().
    Ok(n as usize)
}

/// Copies what is waiting in `stream` into `buf` without consuming it and
/// without blocking.
pub fn peek(stream: &UnixStream, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
    let n = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Makes `fd` non-blocking.
pub fn set_nonblocking(fd: &impl AsRawFd) -> io::Result<()> {
    // SAFETY: F_GETFL/F_SETFL on an open descriptor touch no memory.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixListener;

    #[test]
    fn connect_send_and_peek() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let listener = UnixListener::bind(&path).unwrap();
        let a = connect_nonblocking(&path).unwrap();
        let (mut b, _) = listener.accept().unwrap();
        assert_eq!(send(&a, b"hello").unwrap(), 5);
        let mut buf = [0u8; 16];
        b.set_nonblocking(true).unwrap();
        assert_eq!(peek(&b, &mut buf).unwrap(), 5);
        assert_eq!(peek(&b, &mut buf[..2]).unwrap(), 2);
        assert_eq!(b.read(&mut buf).unwrap(), 5, "peeking consumed nothing");
        assert_eq!(&buf[..5], b"hello");
        assert_eq!(
            peek(&b, &mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        // A peer that is gone: EPIPE, no signal.
        drop(b);
        let e = send(&a, b"x").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EPIPE));
        // And the other way: the accepted side stays usable.
        let c = connect_nonblocking(&path).unwrap();
        let (mut d, _) = listener.accept().unwrap();
        d.write_all(b"ok").unwrap();
        let mut two = [0u8; 2];
        // Non-blocking, but a Unix socket's bytes arrive with the write.
        (&c).read_exact(&mut two).unwrap();
        assert_eq!(&two, b"ok");
    }

    #[test]
    fn connect_failures_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        assert_eq!(
            connect_nonblocking(&missing).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        let long = dir.path().join("x".repeat(200));
        assert_eq!(
            connect_nonblocking(&long).unwrap_err().raw_os_error(),
            Some(libc::ENAMETOOLONG)
        );
        // A socket file nobody listens on any more.
        let path = dir.path().join("gone");
        drop(UnixListener::bind(&path).unwrap());
        assert_eq!(
            connect_nonblocking(&path).unwrap_err().kind(),
            io::ErrorKind::ConnectionRefused
        );
    }

    #[test]
    fn a_full_backlog_fails_instead_of_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let listener = UnixListener::bind(&path).unwrap();
        // Listening again changes the backlog: the smallest there is.
        // SAFETY: plain system call on an open socket.
        assert_eq!(unsafe { libc::listen(listener.as_raw_fd(), 0) }, 0);
        // Nobody accepts: connections pile up until the backlog is full,
        // then connecting fails at once.
        let mut held = Vec::new();
        let err = loop {
            match connect_nonblocking(&path) {
                Ok(s) => held.push(s),
                Err(e) => break e,
            }
            assert!(held.len() < 100, "the backlog never filled");
        };
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn nonblocking_flag() {
        let (a, _b) = UnixStream::pair().unwrap();
        set_nonblocking(&a).unwrap();
        let mut buf = [0u8; 1];
        assert_eq!(
            (&a).read(&mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
    }
}
