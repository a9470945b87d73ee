//! The one connector between the shim and the agent.
//!
//! * `vsock` — in a guest: the agent listens on AF_VSOCK ports.
//! * `hvsock:<path>` — from the host to a podvm guest: podvm's hybrid vsock
//!   Unix socket, each connection opened with `CONNECT <port>\n` and
//!   answered `OK <host port>\n` (Firecracker's protocol).
//! * `unix:<dir>` — host mode: the agent is a host process and port `P` is
//!   the Unix socket `<dir>/agent-P.sock`.
//!
//! Both sides get plain connected stream sockets, returned as
//! [`UnixStream`]s: a vsock socket is wrapped in one too, which is sound for
//! what is used here (read, write, shutdown, timeouts, the raw fd).

use std::fmt;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use crate::API_PORT;

/// How long the hybrid vsock handshake may take before it is given up.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the agent is, as seen from one side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transport {
    /// Host mode: port `P` is the Unix socket `<dir>/agent-P.sock`.
    UnixDir(PathBuf),
    /// A podvm guest reached through the VM's hybrid vsock socket.
    HybridVsock(PathBuf),
    /// Inside a guest: AF_VSOCK (listening only).
    Vsock,
}

/// Why a transport string was refused.
#[derive(Debug, PartialEq, Eq)]
pub struct ParseTransportError(String);

impl fmt::Display for ParseTransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "transport {:?} is not unix:<dir>, hvsock:<path> or vsock",
            self.0
        )
    }
}

impl std::error::Error for ParseTransportError {}

impl FromStr for Transport {
    type Err = ParseTransportError;

    fn from_str(s: &str) -> Result<Transport, ParseTransportError> {
        let bad = || ParseTransportError(s.to_string());
        if s == "vsock" {
            return Ok(Transport::Vsock);
        }
        let (kind, path) = s.split_once(':').ok_or_else(bad)?;
        if path.is_empty() {
            return Err(bad());
        }
        match kind {
            "unix" => Ok(Transport::UnixDir(path.into())),
            "hvsock" => Ok(Transport::HybridVsock(path.into())),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Transport::UnixDir(dir) => write!(f, "unix:{}", dir.display()),
            Transport::HybridVsock(path) => write!(f, "hvsock:{}", path.display()),
            Transport::Vsock => f.write_str("vsock"),
        }
    }
}

/// The socket path of `port` in a host-mode agent's directory.
pub fn unix_port_path(dir: &Path, port: u32) -> PathBuf {
    dir.join(format!("agent-{port}.sock"))
}

/// A listening socket of the agent's.
#[derive(Debug)]
pub enum Listener {
    /// A Unix socket (host mode).
    Unix(UnixListener),
    /// An AF_VSOCK socket (in a guest).
    Vsock(OwnedFd),
}

impl Listener {
    /// Waits for and returns the next connection.
    pub fn accept(&self) -> io::Result<UnixStream> {
        match self {
            Listener::Unix(l) => l.accept().map(|(s, _)| s),
            Listener::Vsock(fd) => loop {
                // SAFETY: `fd` is a listening socket we own; null address
                // pointers ask accept4 for no peer address.
                let conn = unsafe {
                    libc::accept4(
                        fd.as_raw_fd(),
                        std::ptr::null_mut(),
                        std::ptr::null_mut(),
                        libc::SOCK_CLOEXEC,
                    )
                };
                if conn >= 0 {
                    // SAFETY: accept4 returned a new descriptor that nothing else owns.
                    return Ok(unsafe { UnixStream::from_raw_fd(conn) });
                }
                let err = io::Error::last_os_error();
                if err.kind() != io::ErrorKind::Interrupted {
                    return Err(err);
                }
            },
        }
    }

    /// Gives up ownership of the listening descriptor (for ttrpc's server).
    pub fn into_raw_fd(self) -> RawFd {
        match self {
            Listener::Unix(l) => l.into_raw_fd(),
            Listener::Vsock(fd) => fd.into_raw_fd(),
        }
    }
}

impl Transport {
    /// Listens on `port` (the agent's side).
    pub fn listen(&self, port: u32) -> io::Result<Listener> {
        match self {
            Transport::UnixDir(dir) => {
                let path = unix_port_path(dir, port);
                match std::fs::remove_file(&path) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
                UnixListener::bind(&path).map(Listener::Unix)
            }
            Transport::Vsock => vsock_listen(port).map(Listener::Vsock),
            Transport::HybridVsock(_) => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "a hybrid vsock socket is the host's side: the agent cannot listen on it",
            )),
        }
    }

    /// Connects to `port` (the shim's side).
    pub fn connect(&self, port: u32) -> io::Result<UnixStream> {
        match self {
            Transport::UnixDir(dir) => UnixStream::connect(unix_port_path(dir, port)),
            Transport::HybridVsock(path) => {
                let mut conn = UnixStream::connect(path)?;
                hybrid_handshake(&mut conn, port)?;
                Ok(conn)
            }
            Transport::Vsock => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "the guest side of vsock only listens",
            )),
        }
    }

    /// A ttrpc client of the agent's API.
    pub fn api_client(&self) -> io::Result<ttrpc::Client> {
        let conn = self.connect(API_PORT)?;
        ttrpc::Client::new(conn.into_raw_fd())
            .map_err(|e| io::Error::other(format!("ttrpc client: {e}")))
    }
}

/// Sends `CONNECT <port>` and reads the `OK <host port>` answer, byte by
/// byte so that nothing after it is consumed.
fn hybrid_handshake(conn: &mut UnixStream, port: u32) -> io::Result<()> {
    conn.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
    conn.write_all(format!("CONNECT {port}\n").as_bytes())?;
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < 64 {
        match conn.read(&mut byte) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionRefused,
                    format!(
                        "vsock port {port}: the VM closed the connection (nothing listens there)"
                    ),
                ))
            }
            Ok(_) if byte[0] == b'\n' => {
                conn.set_read_timeout(None)?;
                return match std::str::from_utf8(&line) {
                    Ok(l) if l.starts_with("OK ") => Ok(()),
                    _ => Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "vsock port {port}: unexpected answer {:?}",
                            String::from_utf8_lossy(&line)
                        ),
                    )),
                };
            }
            Ok(_) => line.push(byte[0]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        format!("vsock port {port}: answer too long"),
    ))
}

fn vsock_listen(port: u32) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: socket(2) returned a new descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_vm is plain old data; all-zero is a valid value.
    let mut addr: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    addr.svm_family = libc::AF_VSOCK as libc::sa_family_t;
    addr.svm_port = port;
    addr.svm_cid = libc::VMADDR_CID_ANY;
    // SAFETY: `addr` is a valid sockaddr_vm of the size passed.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            &addr as *const libc::sockaddr_vm as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a bound socket we own.
    if unsafe { libc::listen(fd.as_raw_fd(), 128) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;

    #[test]
    fn transports_parse_and_print() {
        for s in ["unix:/run/a", "hvsock:/run/v.sock", "vsock"] {
            assert_eq!(s.parse::<Transport>().unwrap().to_string(), s);
        }
        for bad in ["", "unix:", "tcp:1.2.3.4", "vsock:3", "/run/a"] {
            assert!(bad.parse::<Transport>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn unix_dir_listen_and_connect_meet() {
        let dir = tempfile::tempdir().unwrap();
        let t = Transport::UnixDir(dir.path().into());
        let l = t.listen(7).unwrap();
        assert!(unix_port_path(dir.path(), 7).exists());
        let mut c = t.connect(7).unwrap();
        let mut s = l.accept().unwrap();
        c.write_all(b"hi").unwrap();
        let mut buf = [0u8; 2];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hi");
        // A stale socket file is replaced, not an error.
        drop(l);
        t.listen(7).unwrap();
    }

    /// A stand-in for podvm's hybrid vsock socket: answers CONNECT lines.
    fn fake_vmm(dir: &Path, answer: &'static str) -> (PathBuf, std::thread::JoinHandle<String>) {
        let path = dir.join("v.sock");
        let l = UnixListener::bind(&path).unwrap();
        let h = std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            let mut r = io::BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            (&s).write_all(answer.as_bytes()).unwrap();
            // A client that refused the answer may have hung up already.
            let _ = (&s).write_all(b"after");
            line
        });
        (path, h)
    }

    #[test]
    fn hybrid_vsock_sends_connect_and_keeps_what_follows_ok() {
        let dir = tempfile::tempdir().unwrap();
        let (path, h) = fake_vmm(dir.path(), "OK 1073741824\n");
        let mut c = Transport::HybridVsock(path).connect(1025).unwrap();
        assert_eq!(h.join().unwrap(), "CONNECT 1025\n");
        let mut rest = [0u8; 5];
        c.read_exact(&mut rest).unwrap();
        assert_eq!(&rest, b"after");
    }

    #[test]
    fn hybrid_vsock_refusal_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let (path, h) = fake_vmm(dir.path(), "NO\n");
        let err = Transport::HybridVsock(path).connect(1024).unwrap_err();
        h.join().unwrap();
        assert!(err.to_string().contains("unexpected answer"), "{err}");
        assert!(Transport::Vsock.connect(1).is_err());
        assert!(Transport::HybridVsock("/x".into()).listen(1).is_err());
    }
}
