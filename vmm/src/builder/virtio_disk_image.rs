//! Opening a drive's disk image: read-write unless read-only, never
//! blocking on a FIFO, only regular files and block devices, locked
//! against other writers, and without access-time updates where podvm may.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};

use resources::DriveConfig;

use super::BackendError;

/// Opens a disk image: read-write unless read-only; never blocking on a
/// FIFO; only regular files and block devices; locked (shared for
/// read-only drives, exclusive otherwise) so that no other drive or
/// process writes it at the same time.
pub fn open_disk(d: &DriveConfig) -> Result<File, BackendError> {
    let id = || d.drive_id.clone();
    let path = || d.path_on_host.clone();
    let file = OpenOptions::new()
        .read(true)
        .write(!d.is_read_only)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(&d.path_on_host)
        .map_err(|source| BackendError::OpenDisk {
            id: id(),
            path: path(),
            source,
        })?;
    let kind = file
        .metadata()
        .map_err(|source| BackendError::OpenDisk {
            id: id(),
            path: path(),
            source,
        })?
        .file_type();
    if !(kind.is_file() || kind.is_block_device()) {
        return Err(BackendError::NotADisk {
            id: id(),
            path: path(),
        });
    }
    lock_image(&file, d.is_read_only).map_err(|source| BackendError::Locked {
        id: id(),
        path: path(),
        source,
    })?;
    skip_atime(&file, &d.drive_id);
    Ok(file)
}

/// Stops the kernel from looking at (and, without `relatime`, updating)
/// the image's access time on every read the guest makes (`O_NOATIME`,
/// about 6% of a 4 KiB read from the page cache). Only the file's owner
/// (or a holder of `CAP_FOWNER`) may; elsewhere reads go on as before.
fn skip_atime(file: &File, id: &str) {
    let fd = file.as_raw_fd();
    // SAFETY: F_GETFL and F_SETFL take and return plain integers on an
    // open descriptor.
    let rc = unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 {
            flags
        } else {
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NOATIME)
        }
    };
    if rc < 0 {
        log::debug!(
            "drive {id}: reads update its access time: {}",
            io::Error::last_os_error()
        );
    }
}

/// Takes an open-file-description lock on the whole image: it lasts as
/// long as the file is open, and conflicts with other opens in this
/// process as well as in others.
fn lock_image(file: &File, shared: bool) -> io::Result<()> {
    let lock = libc::flock {
        l_type: if shared { libc::F_RDLCK } else { libc::F_WRLCK } as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    // SAFETY: F_OFD_SETLK reads a valid flock struct; the fd is open.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &lock) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_its_owner_opens_skips_access_times() {
        let image = tempfile::NamedTempFile::new().unwrap();
        image.as_file().set_len(1 << 20).unwrap();
        for read_only in [true, false] {
            let config = DriveConfig {
                drive_id: "d".into(),
                path_on_host: image.path().to_str().unwrap().into(),
                is_read_only: read_only,
                ..Default::default()
            };
            let file = open_disk(&config).unwrap();
            // SAFETY: F_GETFL on an open descriptor.
            let flags = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETFL) };
            assert_ne!(flags & libc::O_NOATIME, 0, "read_only {read_only}");
            assert_ne!(flags & libc::O_NONBLOCK, 0, "the other flags stay");
        }
    }
}
