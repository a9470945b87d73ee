//! A container's root filesystem: a directory given as is (host mode), or
//! an ext4 block device mounted under the container's state directory
//! (in a guest).

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

fn c_path(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path holds a NUL byte"))
}

/// Mounts the ext4 filesystem on `device` at `target` (created if missing).
pub fn mount_ext4(device: &Path, target: &Path) -> io::Result<()> {
    std::fs::create_dir_all(target)?;
    let (src, dst) = (c_path(device)?, c_path(target)?);
    // SAFETY: all three strings are valid NUL-terminated C strings that
    // outlive the call; ext4 takes no data argument here (null).
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            dst.as_ptr(),
            c"ext4".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Detaches the filesystem mounted at `target` (lazily: busy is fine).
pub fn unmount(target: &Path) -> io::Result<()> {
    let dst = c_path(target)?;
    // SAFETY: `dst` is a valid NUL-terminated C string that outlives the call.
    let rc = unsafe { libc::umount2(dst.as_ptr(), libc::MNT_DETACH) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Where a container's rootfs comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootfsSource {
    /// A directory that already holds it.
    Dir(PathBuf),
    /// A block device holding an ext4 rootfs, to be mounted.
    Device(PathBuf),
}

impl RootfsSource {
    /// The source a CreateContainer request names: the device if set,
    /// else the path; `None` when it names neither.
    pub fn from_request(rootfs_path: &str, rootfs_device: &str) -> Option<RootfsSource> {
        if !rootfs_device.is_empty() {
            Some(RootfsSource::Device(rootfs_device.into()))
        } else if !rootfs_path.is_empty() {
            Some(RootfsSource::Dir(rootfs_path.into()))
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_device_wins_and_neither_is_none() {
        assert_eq!(
            RootfsSource::from_request("/a", "/dev/vdb"),
            Some(RootfsSource::Device("/dev/vdb".into()))
        );
        assert_eq!(
            RootfsSource::from_request("/a", ""),
            Some(RootfsSource::Dir("/a".into()))
        );
        assert_eq!(RootfsSource::from_request("", ""), None);
    }
}
