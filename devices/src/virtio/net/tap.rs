//! A Linux tap device opened through `/dev/net/tun`, speaking
//! `virtio_net_hdr_v1` (Documentation/networking/tuntap.rst).

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use vm_memory::bitmap::BitmapSlice;
use vm_memory::VolatileSlice;

use super::{NetBackend, VNET_HDR_LEN};

/// The clone device that hands out tap file descriptors.
const TUN_PATH: &str = "/dev/net/tun";
/// Longest interface name Linux accepts (`IFNAMSIZ` − 1).
const TAP_NAME_MAX_LEN: usize = libc::IFNAMSIZ - 1;
/// Most segments one `writev` takes (`UIO_MAXIOV`).
const MAX_IOVECS: usize = 1024;

/// A tap could not be opened or configured. Each message names the tap.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// The name is empty, too long or contains a NUL byte.
    #[error("tap {name:?}: the name must be 1 to {TAP_NAME_MAX_LEN} bytes without NUL")]
    InvalidName {
        /// The name asked for.
        name: String,
    },
    /// `/dev/net/tun` cannot be opened.
    #[error("tap {name:?}: cannot open {TUN_PATH}: {source}")]
    OpenTun {
        /// The tap.
        name: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// `TUNSETIFF` failed: the tap is in use, or creating it is not allowed.
    #[error("tap {name:?}: cannot attach: {source}")]
    SetIff {
        /// The tap.
        name: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// `TUNSETVNETHDRSZ` failed.
    #[error("tap {name:?}: cannot set the vnet header size: {source}")]
    SetVnetHdrSize {
        /// The tap.
        name: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// `TUNSETOFFLOAD` failed.
    #[error("tap {name:?}: cannot set offloads {flags:#x}: {source}")]
    SetOffload {
        /// The tap.
        name: String,
        /// The `TUN_F_*` flags asked for.
        flags: u32,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// Scratch `iovec`s for one `writev`.
#[derive(Default)]
struct Iovecs(Vec<libc::iovec>);

// SAFETY: the pointers in the vector are only used by the `writev` of the
// `write_vectored` call that stored them, and the vector is emptied before
// that call returns, so no pointer ever crosses a thread.
unsafe impl Send for Iovecs {}

/// An open tap device: non-blocking, without packet information, with a
/// 12-byte vnet header on every frame. Closing it detaches podvm (a tap
/// that podvm created disappears then).
pub struct Tap {
    file: File,
    name: String,
    iovecs: Iovecs,
}

impl Tap {
    /// Opens the tap `name`, creating it when it does not exist (which
    /// needs `CAP_NET_ADMIN`).
    pub fn open(name: &str) -> Result<Tap, TapError> {
        if name.is_empty() || name.len() > TAP_NAME_MAX_LEN || name.contains('\0') {
            return Err(TapError::InvalidName {
                name: name.to_string(),
            });
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(TUN_PATH)
            .map_err(|source| TapError::OpenTun {
                name: name.to_string(),
                source,
            })?;

        // SAFETY: `ifreq` is plain data (a name and a union of integers and
        // pointers) for which all zeroes is a valid value.
        let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
        // The name fits with its terminating NUL: checked above.
        for (dst, src) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
            *dst = src as libc::c_char;
        }
        ifr.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as i16;
        // SAFETY: TUNSETIFF reads and writes one `ifreq`, which outlives the
        // call; the fd is open.
        let ret = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut ifr) };
        if ret < 0 {
            return Err(TapError::SetIff {
                name: name.to_string(),
                source: io::Error::last_os_error(),
            });
        }

        let hdr_len = VNET_HDR_LEN as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads one `int`, which outlives the call.
        let ret = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETVNETHDRSZ, &hdr_len) };
        if ret < 0 {
            return Err(TapError::SetVnetHdrSize {
                name: name.to_string(),
                source: io::Error::last_os_error(),
            });
        }

        // The kernel's name for it (a name with `%d` is a pattern).
        let name: Vec<u8> = ifr
            .ifr_name
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        let tap = Tap {
            file,
            name: String::from_utf8_lossy(&name).into_owned(),
            iovecs: Iovecs(Vec::with_capacity(64)),
        };
        // A tap that existed before may keep offloads from its last user;
        // the guest has accepted none yet.
        tap.set_offload(0)?;
        Ok(tap)
    }

    /// Sets the offloads (`TUN_F_CSUM`, `TUN_F_TSO4`, `TUN_F_TSO6`,
    /// `TUN_F_UFO`) the tap may hand to the guest: frames with a partial
    /// checksum or GSO metadata in their vnet header. Without `TUN_F_CSUM`
    /// the kernel checksums and segments everything before it reaches the
    /// tap.
    pub fn set_offload(&self, flags: u32) -> Result<(), TapError> {
        // SAFETY: TUNSETOFFLOAD takes its argument by value; the fd is open.
        let ret = unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                libc::TUNSETOFFLOAD,
                libc::c_ulong::from(flags),
            )
        };
        if ret < 0 {
            return Err(TapError::SetOffload {
                name: self.name.clone(),
                flags,
                source: io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    /// The tap's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

impl NetBackend for Tap {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // One read(2) returns exactly one frame.
        (&self.file).read(buf)
    }

    fn write_vectored<'a, B: BitmapSlice + 'a>(
        &mut self,
        frame: impl Iterator<Item = VolatileSlice<'a, B>>,
    ) -> io::Result<usize> {
        let iovecs = &mut self.iovecs.0;
        iovecs.clear();
        for slice in frame {
            // Without vm-memory's `xen` feature the guard maps nothing: the
            // pointer stays valid as long as the guest memory, which is
            // borrowed for 'a.
            let ptr = slice.ptr_guard().as_ptr();
            iovecs.push(libc::iovec {
                iov_base: ptr as *mut libc::c_void,
                iov_len: slice.len(),
            });
        }
        if iovecs.len() > MAX_IOVECS {
            iovecs.clear();
            return Err(io::Error::from_raw_os_error(libc::EMSGSIZE));
        }
        // SAFETY: each iovec describes guest memory that stays mapped for 'a,
        // beyond this call; writev only reads it. The count is at most
        // MAX_IOVECS, so it fits a c_int.
        let ret = unsafe {
            libc::writev(
                self.file.as_raw_fd(),
                iovecs.as_ptr(),
                iovecs.len() as libc::c_int,
            )
        };
        iovecs.clear();
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(ret as usize)
    }

    fn set_offload(&mut self, flags: u32) -> io::Result<()> {
        Tap::set_offload(self, flags).map_err(|e| match e {
            TapError::SetOffload { source, .. } => source,
            other => io::Error::other(other),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_names_are_refused_before_any_syscall() {
        for name in ["", "a-name-of-16byte", "nul\0inside"] {
            let err = Tap::open(name).err().expect("a bad name is refused");
            assert!(matches!(err, TapError::InvalidName { .. }), "{err}");
            assert!(err.to_string().starts_with(&format!("tap {name:?}: ")));
        }
    }

    /// Opens and closes a tap of its own (no address, link down: it sends
    /// nothing anywhere), in a network namespace of its own: the test runs
    /// on a thread that leaves the host's namespace first.
    #[test]
    fn opens_a_tap_reads_nothing_and_sets_offloads() {
        if !testkit::need_net("opens_a_tap_reads_nothing_and_sets_offloads") {
            return;
        }
        std::thread::spawn(tap_in_a_private_namespace)
            .join()
            .unwrap();
    }

    fn tap_in_a_private_namespace() {
        // SAFETY: unshare only changes this thread's network namespace.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            testkit::skip(
                testkit::Need::Net,
                "opens_a_tap_reads_nothing_and_sets_offloads",
                format_args!(
                    "cannot create a network namespace: {}",
                    io::Error::last_os_error()
                ),
            );
            return;
        }
        let name = format!("podvmt{}", std::process::id());
        let mut tap = Tap::open(&name).unwrap();
        assert_eq!(tap.name(), name);
        let mut buf = [0u8; 64];
        let err = NetBackend::read(&mut tap, &mut buf).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        tap.set_offload(libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6)
            .unwrap();
        tap.set_offload(0).unwrap();
        // TSO without checksum offload is refused by the kernel.
        let err = tap.set_offload(libc::TUN_F_TSO4).unwrap_err();
        assert!(err.to_string().contains(&format!("tap {name:?}")), "{err}");

        // A second open of the same single-queue tap is busy, and the
        // error names the tap and what failed.
        let err = Tap::open(&name).err().expect("the tap is in use");
        assert!(matches!(err, TapError::SetIff { .. }), "{err}");
        assert_eq!(
            err.to_string(),
            format!("tap {name:?}: cannot attach: Device or resource busy (os error 16)")
        );
    }
}
