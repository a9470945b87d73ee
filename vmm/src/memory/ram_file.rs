//! The file guest RAM lives in: a shmem file either way, so that another
//! process (a future vhost-user device) can be handed it as a descriptor.
//!
//! - Huge pages (`huge_pages: "2M"`): a `MFD_HUGETLB` memfd.
//! - Base pages: an unlinked file on a private tmpfs mounted with
//!   `huge=within_size`, so guest RAM gets transparent 2 MiB pages
//!   wherever the guest touches one, whatever the host's shmem THP setting
//!   (`shmem_enabled` governs only the kernel's internal mount, which
//!   memfds live on; Debian ships it `never`). KVM maps such memory with
//!   2 MiB entries, and the kernel frees it a huge page at a time: a 1 GiB
//!   pod-VM is gone 4x sooner than on base pages. The mount is never
//!   attached to any directory (`fsopen`/`fsmount`): only this process
//!   reaches it, through one descriptor made before podvm drops its
//!   privileges or installs its seccomp filters ([`prepare`]).
//! - Base pages where that mount cannot be made (no `CAP_SYS_ADMIN`, a
//!   kernel without the mount API, `shmem_enabled` `deny`): a plain memfd,
//!   which gets transparent huge pages only when the host's setting allows
//!   them for memfds.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::OnceLock;

use super::MemoryError;

/// The name guest RAM's memfd has (`/memfd:podvm-guest-ram` in
/// `/proc/PID/maps`).
pub const GUEST_RAM_MEMFD_NAME: &str = "podvm-guest-ram";

/// Where the host says whether memfds get transparent huge pages.
pub const SHMEM_THP_SETTING: &str = "/sys/kernel/mm/transparent_hugepage/shmem_enabled";

/// What backs the guest RAM of a base-page VM built by this process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BasePageBacking {
    /// A file on podvm's private `huge=within_size` tmpfs: transparent
    /// 2 MiB pages.
    HugeTmpfs,
    /// A memfd that asks for transparent huge pages (`MADV_HUGEPAGE`);
    /// why the tmpfs could not be used.
    Memfd(String),
    /// A memfd with base pages only, as asked (`--no-guest-thp`:
    /// `MADV_NOHUGEPAGE`): the smallest footprint for a guest that touches
    /// its memory sparsely.
    BasePagesOnly,
}

impl BasePageBacking {
    /// Whether the guest's pages will be transparent 2 MiB pages where it
    /// touches whole ones.
    pub fn transparent_huge_pages(&self) -> bool {
        match self {
            BasePageBacking::HugeTmpfs => true,
            BasePageBacking::Memfd(_) => {
                matches!(
                    shmem_thp_setting().as_deref(),
                    Some("advise" | "always" | "within_size" | "force")
                )
            }
            BasePageBacking::BasePagesOnly => shmem_thp_setting().as_deref() == Some("force"),
        }
    }
}

/// The host's shmem THP setting (the selected word of
/// [`SHMEM_THP_SETTING`]), if the kernel has one.
pub fn shmem_thp_setting() -> Option<String> {
    let text = std::fs::read_to_string(SHMEM_THP_SETTING).ok()?;
    text.split_whitespace()
        .find_map(|w| w.strip_prefix('[')?.strip_suffix(']').map(str::to_string))
}

/// What this process's base-page guest RAM is made in.
enum Prepared {
    /// The private tmpfs's mount.
    HugeTmpfs(OwnedFd),
    /// Memfds asking for THP; why there is no tmpfs.
    Memfd(String),
    /// Memfds, base pages only.
    BasePagesOnly,
}

static PREPARED: OnceLock<Prepared> = OnceLock::new();

/// What [`prepare`] found, or the default (transparent huge pages where
/// they can be had) if it was never called.
fn prepared() -> &'static Prepared {
    PREPARED.get_or_init(|| make(None, true))
}

fn make(owner: Option<(u32, u32)>, thp: bool) -> Prepared {
    if !thp {
        return Prepared::BasePagesOnly;
    }
    match mount_huge_tmpfs(owner) {
        Ok(fd) => Prepared::HugeTmpfs(fd),
        Err(e) => Prepared::Memfd(e.to_string()),
    }
}

/// Decides how base-page guest RAM is backed in this process, and makes
/// the private huge-page tmpfs now if `thp` (transparent huge pages
/// wanted) and it can be made, its root owned by `owner` (`uid`, `gid`;
/// `None`: this process's user): call it while the process still has its
/// privileges and no seccomp filter (the jail, for the user it is about to
/// become, and the launch path do). Later calls, and guest memory built
/// without one, use what the first call decided.
pub fn prepare(owner: Option<(u32, u32)>, thp: bool) -> BasePageBacking {
    if let Some(made) = PREPARED.get() {
        if matches!(made, Prepared::BasePagesOnly) == thp {
            log::warn!(
                "guest memory: its backing was decided before it was asked for {}",
                if thp {
                    "with huge pages"
                } else {
                    "without huge pages"
                }
            );
        }
    }
    match PREPARED.get_or_init(|| make(owner, thp)) {
        Prepared::HugeTmpfs(_) => BasePageBacking::HugeTmpfs,
        Prepared::Memfd(why) => BasePageBacking::Memfd(why.clone()),
        Prepared::BasePagesOnly => BasePageBacking::BasePagesOnly,
    }
}

/// Whether base-page guest RAM asks for transparent huge pages.
pub(super) fn wants_thp() -> bool {
    !matches!(prepared(), Prepared::BasePagesOnly)
}

// The mount API's constants (linux/mount.h), which the libc crate does not
// export for x86_64 glibc.
const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;
const MOUNT_ATTR_NOSUID: libc::c_uint = 0x2;
const MOUNT_ATTR_NODEV: libc::c_uint = 0x4;
const MOUNT_ATTR_NOEXEC: libc::c_uint = 0x8;

/// A syscall's descriptor, or its error naming `what`.
fn fd_or_error(rc: libc::c_long, what: &str) -> io::Result<OwnedFd> {
    if rc < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("{what}: {e}")));
    }
    // SAFETY: the kernel just returned this descriptor and nothing else
    // owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(rc as libc::c_int) })
}

/// Mounts a tmpfs with `huge=within_size`, unlimited in size (guest
/// memory's size is podvm's to choose; the memory cgroup still counts
/// every page), its root `owner`'s, and attached nowhere; returns the
/// mount's descriptor.
fn mount_huge_tmpfs(owner: Option<(u32, u32)>) -> io::Result<OwnedFd> {
    if shmem_thp_setting().as_deref() == Some("deny") {
        return Err(io::Error::other(format!(
            "{SHMEM_THP_SETTING} is deny: no transparent huge pages for any shmem"
        )));
    }
    let tmpfs = c"tmpfs";
    // SAFETY: fsopen(2) reads only the NUL-terminated name.
    let rc = unsafe { libc::syscall(libc::SYS_fsopen, tmpfs.as_ptr(), FSOPEN_CLOEXEC) };
    let fs = fd_or_error(rc, "fsopen tmpfs")?;
    for (key, value) in [
        (c"huge", c"within_size"),
        (c"size", c"0"),
        (c"nr_inodes", c"0"),
        (c"mode", c"0700"),
    ] {
        set_string(&fs, key, value)?;
    }
    if let Some((uid, gid)) = owner {
        for (key, id) in [(c"uid", uid), (c"gid", gid)] {
            let id = CString::new(id.to_string()).expect("digits have no NUL");
            set_string(&fs, key, &id)?;
        }
    }
    let null = std::ptr::null::<libc::c_char>();
    // SAFETY: fsconfig(2) on our own context; the create command takes no
    // key or value.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            null,
            null,
            0,
        )
    };
    if rc < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("create the tmpfs: {e}")));
    }
    // SAFETY: fsmount(2) on the created context; the kernel returns a new
    // descriptor for the detached mount.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_fsmount,
            fs.as_raw_fd(),
            FSMOUNT_CLOEXEC,
            MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC,
        )
    };
    fd_or_error(rc, "fsmount the tmpfs")
}

/// Sets one string option of a filesystem context.
fn set_string(fs: &OwnedFd, key: &CStr, value: &CStr) -> io::Result<()> {
    // SAFETY: fsconfig(2) reads the two NUL-terminated strings, which
    // outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_SET_STRING,
            key.as_ptr(),
            value.as_ptr(),
            0,
        )
    };
    if rc < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!(
                "tmpfs option {}={}: {e}",
                key.to_string_lossy(),
                value.to_string_lossy()
            ),
        ));
    }
    Ok(())
}

/// Creates the file for `mem_size` bytes of guest RAM (hugetlbfs when
/// `huge`), sized but with nothing allocated.
pub(super) fn create(mem_size: u64, huge: bool) -> Result<File, MemoryError> {
    let file = if huge {
        memfd(true)?
    } else {
        match on_huge_tmpfs() {
            Some(Ok(file)) => file,
            Some(Err(e)) => {
                log::debug!("guest memory on a memfd: {e}");
                memfd(false)?
            }
            None => memfd(false)?,
        }
    };
    // Only sets the size: no page is allocated (nor, for hugetlbfs,
    // reserved) until the file is mapped.
    file.set_len(mem_size)
        .map_err(|source| MemoryError::SizeMemfd {
            size_mib: mem_size >> 20,
            source,
        })?;
    Ok(file)
}

/// An unlinked file named [`GUEST_RAM_MEMFD_NAME`] on the private tmpfs
/// (`/podvm-guest-ram (deleted)` in `/proc/PID/maps`; another guest RAM
/// of this process at the same time gets `podvm-guest-ram.N`); `None`:
/// there is no tmpfs.
fn on_huge_tmpfs() -> Option<io::Result<File>> {
    let Prepared::HugeTmpfs(mount) = prepared() else {
        return None;
    };
    let mut n = 0u32;
    let (fd, name) = loop {
        let name = match n {
            0 => CString::new(GUEST_RAM_MEMFD_NAME),
            n => CString::new(format!("{GUEST_RAM_MEMFD_NAME}.{n}")),
        }
        .expect("the name has no NUL byte");
        // SAFETY: openat(2) on the mount's root with a NUL-terminated name
        // that outlives the call.
        let fd = unsafe {
            libc::openat(
                mount.as_raw_fd(),
                name.as_ptr(),
                libc::O_CREAT | libc::O_EXCL | libc::O_RDWR | libc::O_CLOEXEC,
                0o600,
            )
        };
        let e = io::Error::last_os_error();
        match fd {
            fd if fd >= 0 => break (fd, name),
            _ if e.raw_os_error() == Some(libc::EEXIST) && n < 1024 => n += 1,
            _ => return Some(Err(io::Error::new(e.kind(), format!("tmpfs file: {e}")))),
        }
    };
    // SAFETY: the descriptor was just created and nothing else owns it.
    let file = unsafe { File::from_raw_fd(fd) };
    // SAFETY: unlinkat(2) of the name just created, on the same mount.
    if unsafe { libc::unlinkat(mount.as_raw_fd(), name.as_ptr(), 0) } != 0 {
        let e = io::Error::last_os_error();
        return Some(Err(io::Error::new(
            e.kind(),
            format!("tmpfs file: unlink: {e}"),
        )));
    }
    Some(Ok(file))
}

/// A new memfd named [`GUEST_RAM_MEMFD_NAME`], on hugetlbfs when `huge`.
fn memfd(huge: bool) -> Result<File, MemoryError> {
    let mut flags = libc::MFD_CLOEXEC;
    if huge {
        flags |= libc::MFD_HUGETLB | libc::MFD_HUGE_2MB;
    }
    let name = CString::new(GUEST_RAM_MEMFD_NAME).expect("the name has no NUL byte");
    // SAFETY: `name` is a NUL-terminated string that outlives the call;
    // the kernel reads only it.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), flags) };
    if fd < 0 {
        return Err(MemoryError::CreateMemfd(io::Error::last_os_error()));
    }
    // SAFETY: the descriptor was just created and nothing else owns it.
    Ok(unsafe { File::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn base_page_ram_is_an_unlinked_shmem_file_that_allocates_on_touch() {
        let file = create(64 << 20, false).unwrap();
        let meta = file.metadata().unwrap();
        assert_eq!(meta.len(), 64 << 20);
        assert_eq!(meta.blocks(), 0, "nothing allocated before a touch");
        // SAFETY: `statfs` is plain integers: all zeros is a valid value.
        let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: fstatfs(2) writes only the struct it is given.
        assert_eq!(unsafe { libc::fstatfs(file.as_raw_fd(), &mut fs) }, 0);
        assert_eq!(fs.f_type, libc::TMPFS_MAGIC, "memfds are tmpfs files too");
    }

    #[test]
    fn base_pages_only_is_asked_for_and_makes_no_mount() {
        assert!(matches!(make(None, false), Prepared::BasePagesOnly));
    }

    #[test]
    fn the_private_tmpfs_gives_transparent_huge_pages_when_it_can_be_made() {
        let backing = prepare(None, true);
        // SAFETY: geteuid has no preconditions and cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        if !root || shmem_thp_setting().as_deref() == Some("deny") {
            assert!(matches!(backing, BasePageBacking::Memfd(_)), "{backing:?}");
            return;
        }
        if let BasePageBacking::Memfd(why) = &backing {
            if why.contains("Operation not permitted") {
                // Root without CAP_SYS_ADMIN (a container).
                testkit::skip(
                    testkit::Need::Root,
                    "the_private_tmpfs_gives_transparent_huge_pages_when_it_can_be_made",
                    why,
                );
                return;
            }
        }
        assert_eq!(backing, BasePageBacking::HugeTmpfs);
        assert!(backing.transparent_huge_pages());
        // A write through the shared mapping allocates a whole 2 MiB page,
        // of a file no name reaches.
        let mem = crate::memory::create_guest_memory(8 << 20).unwrap();
        use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};
        mem.write_obj(1u8, GuestAddress(3 << 20)).unwrap();
        let ram = mem.iter().next().unwrap().file_offset().unwrap().file();
        assert_eq!(ram.metadata().unwrap().blocks() * 512, 2 << 20);
        assert_eq!(ram.metadata().unwrap().nlink(), 0);
    }
}
