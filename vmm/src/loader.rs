//! Loading the guest's kernel, initrd and command line.
//!
//! [`probe_kernel`] reads only the image headers, so that a kernel that is
//! not one, or that does not fit in the guest's memory, is refused before
//! any VM exists. [`load_kernel`] then loads it with `linux-loader`.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use linux_loader::loader::bootparam::setup_header;
use linux_loader::loader::elf::{Elf, PvhBootCapability};
use linux_loader::loader::{BzImage, KernelLoader};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use crate::arch::x86_64::boot_params::InitrdPlacement;
use crate::arch::x86_64::layout::{
    CMDLINE_MAX_SIZE, CMDLINE_START, DEFAULT_INITRD_ADDR_MAX, HIGH_MEMORY_START, MMIO_GAP_START,
};
use crate::arch::x86_64::regs::BootEntry;

/// ELF magic.
const ELF_MAGIC: &[u8; 4] = b"\x7fELF";
/// `EI_CLASS` of 64-bit ELF files.
const ELFCLASS64: u8 = 2;
/// `EI_DATA` of little-endian ELF files.
const ELFDATA2LSB: u8 = 1;
/// `e_machine` of x86_64.
const EM_X86_64: u16 = 62;
/// Program header type of a loadable segment.
const PT_LOAD: u32 = 1;
/// Offset of the setup header in a bzImage.
const SETUP_HEADER_OFFSET: u64 = 0x1f1;
/// "HdrS" at 0x202.
const HDRS_MAGIC: u32 = 0x5372_6448;
/// The 64-bit entry point's offset from a bzImage's load address.
const BZIMAGE_64BIT_ENTRY_OFFSET: u64 = 0x200;
/// xloadflags bit: the kernel has a 64-bit entry point at offset 0x200.
const XLF_KERNEL_64: u16 = 1;
/// Initrds are placed on page boundaries.
const PAGE_SIZE: u64 = 4096;

/// The kernel image could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    /// The kernel file cannot be opened or read.
    #[error("kernel {}: {source}", path.display())]
    OpenKernel {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The initrd cannot be opened or read.
    #[error("initrd {}: {source}", path.display())]
    OpenInitrd {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The kernel file is neither an ELF vmlinux nor a bzImage.
    #[error("kernel {}: not a kernel image (expected an x86_64 ELF vmlinux or a bzImage)", path.display())]
    NotAKernel {
        /// The file.
        path: PathBuf,
    },
    /// The kernel file is an ELF file of the wrong kind.
    #[error("kernel {}: {what}", path.display())]
    BadElf {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        what: &'static str,
    },
    /// The kernel file is a bzImage podvm cannot boot.
    #[error("kernel {}: bzImage {what}", path.display())]
    BadBzImage {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        what: &'static str,
    },
    /// The 64-bit entry point is outside the identity-mapped first GiB.
    #[error("kernel {}: 64-bit entry point {entry:#x} is above the identity-mapped first GiB", path.display())]
    EntryNotMapped {
        /// The file.
        path: PathBuf,
        /// The entry point.
        entry: u64,
    },
    /// The initrd is not a regular file.
    #[error("initrd {}: not a regular file", path.display())]
    InitrdNotAFile {
        /// The file.
        path: PathBuf,
    },
    /// The kernel does not fit where it wants to be loaded.
    #[error(
        "kernel {} needs memory up to {} MiB, but the guest has {} MiB below the MMIO gap",
        path.display(), end.div_ceil(1 << 20), low_mem >> 20
    )]
    KernelTooLarge {
        /// The file.
        path: PathBuf,
        /// End of the kernel's memory.
        end: u64,
        /// Low memory available.
        low_mem: u64,
    },
    /// The kernel wants to be loaded below 1 MiB.
    #[error("kernel {}: loads at {addr:#x}, below 1 MiB", path.display())]
    KernelTooLow {
        /// The file.
        path: PathBuf,
        /// Its load address.
        addr: u64,
    },
    /// No room for the initrd between the kernel and the end of low memory.
    #[error(
        "initrd {} ({} KiB) does not fit between the kernel and the highest address it may use ({top:#x})",
        path.display(), size.div_ceil(1024)
    )]
    InitrdTooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// The end of the memory it may occupy.
        top: u64,
    },
    /// `linux-loader` refused the image.
    #[error("kernel {}: cannot load: {source}", path.display())]
    Load {
        /// The file.
        path: PathBuf,
        /// The loader's error.
        #[source]
        source: linux_loader::loader::Error,
    },
    /// Writing the initrd or command line to guest memory failed.
    #[error("cannot write {what} to guest memory: {source}")]
    GuestMemory {
        /// What was being written.
        what: &'static str,
        /// The memory error.
        #[source]
        source: vm_memory::GuestMemoryError,
    },
    /// The command line does not fit its area.
    #[error("kernel command line is {0} bytes long; the limit is {max} bytes", max = CMDLINE_MAX_SIZE - 1)]
    CmdlineTooLong(usize),
}

impl LoaderError {
    /// Whether the user can fix this by changing the configuration (as
    /// opposed to a host failure while loading).
    pub fn is_config_error(&self) -> bool {
        !matches!(self, LoaderError::GuestMemory { .. })
    }
}

/// The kernel image formats podvm boots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelFormat {
    /// An ELF `vmlinux`.
    Elf,
    /// A `bzImage`.
    BzImage,
}

/// What the image headers say about a kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelInfo {
    /// The image format.
    pub format: KernelFormat,
    /// Lowest guest address the kernel occupies.
    pub start: u64,
    /// One past the highest guest address the kernel occupies (including
    /// what it needs to decompress or initialise, when the header says).
    pub end: u64,
    /// Highest address an initrd may end at.
    pub initrd_addr_max: u64,
}

fn read_at<R: Read + Seek>(r: &mut R, offset: u64, buf: &mut [u8]) -> io::Result<()> {
    r.seek(SeekFrom::Start(offset))?;
    r.read_exact(buf)
}

fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().expect("8 bytes"))
}

/// Reads the headers of the kernel image in `image`.
pub fn probe_kernel<R: Read + Seek>(image: &mut R, path: &Path) -> Result<KernelInfo, LoaderError> {
    let open_err = |source| LoaderError::OpenKernel {
        path: path.to_path_buf(),
        source,
    };
    let size = image.seek(SeekFrom::End(0)).map_err(open_err)?;
    let mut ident = [0u8; 64];
    if size >= 64 {
        read_at(image, 0, &mut ident).map_err(open_err)?;
    }
    if size >= 64 && &ident[..4] == ELF_MAGIC {
        return probe_elf(image, &ident, path);
    }
    let mut hdr = [0u8; 0x80];
    if size >= SETUP_HEADER_OFFSET + hdr.len() as u64 {
        read_at(image, SETUP_HEADER_OFFSET, &mut hdr).map_err(open_err)?;
        // Offsets below are from 0x1f1; Linux boot.rst gives them from 0.
        if u32_at(&hdr, 0x202 - 0x1f1) == HDRS_MAGIC {
            return probe_bzimage(&hdr, size, path);
        }
    }
    Err(LoaderError::NotAKernel {
        path: path.to_path_buf(),
    })
}

fn probe_elf<R: Read + Seek>(
    image: &mut R,
    ehdr: &[u8; 64],
    path: &Path,
) -> Result<KernelInfo, LoaderError> {
    let bad = |what| LoaderError::BadElf {
        path: path.to_path_buf(),
        what,
    };
    if ehdr[4] != ELFCLASS64 || ehdr[5] != ELFDATA2LSB || u16_at(ehdr, 18) != EM_X86_64 {
        return Err(bad("not a 64-bit x86_64 ELF file"));
    }
    let phoff = u64_at(ehdr, 32);
    let phentsize = u64::from(u16_at(ehdr, 54));
    let phnum = u64::from(u16_at(ehdr, 56));
    if phentsize < 56 || phnum == 0 {
        return Err(bad("has no program headers"));
    }
    let (mut start, mut end) = (u64::MAX, 0u64);
    for i in 0..phnum {
        let mut ph = [0u8; 56];
        read_at(image, phoff + i * phentsize, &mut ph)
            .map_err(|_| bad("has truncated program headers"))?;
        if u32_at(&ph, 0) != PT_LOAD {
            continue;
        }
        let paddr = u64_at(&ph, 24);
        let memsz = u64_at(&ph, 40);
        start = start.min(paddr);
        end = end.max(
            paddr
                .checked_add(memsz)
                .ok_or(bad("has a segment past the end of memory"))?,
        );
    }
    if end == 0 {
        return Err(bad("has no loadable segment"));
    }
    Ok(KernelInfo {
        format: KernelFormat::Elf,
        start,
        end,
        initrd_addr_max: u64::MAX,
    })
}

fn probe_bzimage(hdr: &[u8], file_size: u64, path: &Path) -> Result<KernelInfo, LoaderError> {
    let field = |linux_offset: usize| linux_offset - 0x1f1;
    let setup_sects = match hdr[field(0x1f1)] {
        0 => 4,
        n => u64::from(n),
    };
    let version = u16_at(hdr, field(0x206));
    let code32_start = u64::from(u32_at(hdr, field(0x214)));
    let payload = file_size.saturating_sub((setup_sects + 1) * 512);
    // init_size (protocol 2.10+) is the memory the kernel needs from its
    // load address to run, decompression included.
    let init_size = if version >= 0x020a {
        u64::from(u32_at(hdr, field(0x260)))
    } else {
        0
    };
    let initrd_addr_max = if version >= 0x0203 {
        u64::from(u32_at(hdr, field(0x22c)))
    } else {
        DEFAULT_INITRD_ADDR_MAX
    };
    // A 64-bit entry point at load address + 0x200 exists only when the
    // kernel says so (protocol 2.12+, XLF_KERNEL_64).
    let xloadflags = if version >= 0x020c {
        u16_at(hdr, field(0x236))
    } else {
        0
    };
    if xloadflags & XLF_KERNEL_64 == 0 {
        return Err(LoaderError::BadBzImage {
            path: path.to_path_buf(),
            what: "has no 64-bit entry point (boot protocol 2.12+ with XLF_KERNEL_64 needed)",
        });
    }
    // A relocatable kernel decompresses at max(load address, pref_address)
    // and needs init_size bytes from there.
    let pref_address = if version >= 0x020a {
        u64_at(hdr, field(0x258))
    } else {
        code32_start
    };
    let run_start = code32_start.max(pref_address);
    Ok(KernelInfo {
        format: KernelFormat::BzImage,
        start: code32_start,
        end: (code32_start + payload).max(run_start.saturating_add(init_size)),
        initrd_addr_max,
    })
}

/// Checks that the kernel fits in `mem_size` bytes of guest RAM.
pub fn check_kernel_fits(info: &KernelInfo, mem_size: u64, path: &Path) -> Result<(), LoaderError> {
    if info.start < HIGH_MEMORY_START {
        return Err(LoaderError::KernelTooLow {
            path: path.to_path_buf(),
            addr: info.start,
        });
    }
    let low_mem = mem_size.min(MMIO_GAP_START);
    if info.end > low_mem {
        return Err(LoaderError::KernelTooLarge {
            path: path.to_path_buf(),
            end: info.end,
            low_mem,
        });
    }
    Ok(())
}

/// Where an initrd of `size` bytes goes: page-aligned at the top of low
/// memory (below the MMIO gap and the kernel's `initrd_addr_max`), above
/// the kernel.
pub fn place_initrd(
    info: &KernelInfo,
    mem_size: u64,
    size: u64,
    path: &Path,
) -> Result<InitrdPlacement, LoaderError> {
    let top = mem_size
        .min(MMIO_GAP_START)
        .min(info.initrd_addr_max.saturating_add(1));
    let too_large = || LoaderError::InitrdTooLarge {
        path: path.to_path_buf(),
        size,
        top,
    };
    let addr = top.checked_sub(size).ok_or_else(too_large)? & !(PAGE_SIZE - 1);
    if addr < info.end.next_multiple_of(PAGE_SIZE) {
        return Err(too_large());
    }
    Ok(InitrdPlacement { addr, size })
}

/// A kernel in guest memory.
#[derive(Clone, Copy, Debug)]
pub struct LoadedKernel {
    /// How the boot vCPU enters it.
    pub entry: BootEntry,
    /// The setup header of a bzImage, for the zero page.
    pub setup_header: Option<setup_header>,
}

/// Loads the kernel image in `file` into `mem`.
pub fn load_kernel(
    mem: &GuestMemoryMmap,
    file: &mut File,
    info: &KernelInfo,
    path: &Path,
) -> Result<LoadedKernel, LoaderError> {
    let load_err = |source| LoaderError::Load {
        path: path.to_path_buf(),
        source,
    };
    let highmem = Some(GuestAddress(HIGH_MEMORY_START));
    match info.format {
        KernelFormat::Elf => {
            let r = Elf::load(mem, None, file, highmem).map_err(load_err)?;
            let entry = match r.pvh_boot_cap {
                PvhBootCapability::PvhEntryPresent(addr) => BootEntry::Pvh {
                    entry: addr.raw_value(),
                },
                _ => BootEntry::Linux64 {
                    entry: r.kernel_load.raw_value(),
                },
            };
            Ok(LoadedKernel {
                entry,
                setup_header: None,
            })
        }
        KernelFormat::BzImage => {
            let r = BzImage::load(mem, None, file, highmem).map_err(load_err)?;
            Ok(LoadedKernel {
                entry: BootEntry::Linux64 {
                    entry: r.kernel_load.raw_value() + BZIMAGE_64BIT_ENTRY_OFFSET,
                },
                setup_header: r.setup_header,
            })
        }
    }
}

/// Copies the initrd in `file` (at `path`) to its place in guest memory.
pub fn load_initrd<M: GuestMemoryBackend>(
    mem: &M,
    file: &mut File,
    path: &Path,
    placement: InitrdPlacement,
) -> Result<(), LoaderError> {
    let read_err = |source| LoaderError::OpenInitrd {
        path: path.to_path_buf(),
        source,
    };
    file.seek(SeekFrom::Start(0)).map_err(read_err)?;
    mem.read_exact_volatile_from(GuestAddress(placement.addr), file, placement.size as usize)
        .map_err(|e| match e {
            vm_memory::GuestMemoryError::IOError(io) => read_err(io),
            source => LoaderError::GuestMemory {
                what: "the initrd",
                source,
            },
        })
}

/// Writes the NUL-terminated command line at its fixed address.
pub fn load_cmdline<M: GuestMemoryBackend>(mem: &M, cmdline: &str) -> Result<(), LoaderError> {
    if cmdline.len() >= CMDLINE_MAX_SIZE {
        return Err(LoaderError::CmdlineTooLong(cmdline.len()));
    }
    let mut bytes = Vec::with_capacity(cmdline.len() + 1);
    bytes.extend_from_slice(cmdline.as_bytes());
    bytes.push(0);
    mem.write_slice(&bytes, GuestAddress(CMDLINE_START))
        .map_err(|source| LoaderError::GuestMemory {
            what: "the command line",
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    const MIB: u64 = 1 << 20;

    /// A minimal ELF64 x86_64 executable: one PT_LOAD of `code` at `paddr`.
    pub(crate) fn tiny_elf(paddr: u64, code: &[u8], memsz: u64) -> Vec<u8> {
        let mut f = vec![0u8; 64 + 56];
        f[..4].copy_from_slice(ELF_MAGIC);
        f[4] = ELFCLASS64;
        f[5] = ELFDATA2LSB;
        f[6] = 1;
        f[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        f[18..20].copy_from_slice(&EM_X86_64.to_le_bytes());
        f[20..24].copy_from_slice(&1u32.to_le_bytes());
        f[24..32].copy_from_slice(&paddr.to_le_bytes()); // e_entry
        f[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
        f[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
        f[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
        f[56..58].copy_from_slice(&1u16.to_le_bytes()); // e_phnum
        let ph = &mut f[64..120];
        ph[0..4].copy_from_slice(&PT_LOAD.to_le_bytes());
        ph[4..8].copy_from_slice(&5u32.to_le_bytes()); // R+X
        ph[8..16].copy_from_slice(&120u64.to_le_bytes()); // p_offset
        ph[16..24].copy_from_slice(&paddr.to_le_bytes()); // p_vaddr
        ph[24..32].copy_from_slice(&paddr.to_le_bytes()); // p_paddr
        ph[32..40].copy_from_slice(&(code.len() as u64).to_le_bytes());
        ph[40..48].copy_from_slice(&memsz.to_le_bytes());
        ph[48..56].copy_from_slice(&0x1000u64.to_le_bytes());
        f.extend_from_slice(code);
        f
    }

    /// A minimal bzImage: 1 setup sector + boot sector, then `payload`.
    fn tiny_bzimage(payload: &[u8], init_size: u32) -> Vec<u8> {
        let mut f = vec![0u8; 2 * 512];
        f[0x1f1] = 1; // setup_sects
        f[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
        f[0x202..0x206].copy_from_slice(&HDRS_MAGIC.to_le_bytes());
        f[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
        f[0x211] = 1; // LOADED_HIGH
        f[0x214..0x218].copy_from_slice(&0x10_0000u32.to_le_bytes());
        f[0x22c..0x230].copy_from_slice(&0x37ff_ffffu32.to_le_bytes());
        f[0x236..0x238].copy_from_slice(&XLF_KERNEL_64.to_le_bytes());
        f[0x258..0x260].copy_from_slice(&0x10_0000u64.to_le_bytes()); // pref_address
        f[0x260..0x264].copy_from_slice(&init_size.to_le_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn mem(size: u64) -> GuestMemoryMmap {
        crate::memory::create_guest_memory(size).unwrap()
    }

    fn temp_file(bytes: &[u8]) -> File {
        use std::io::Write;
        let mut f = tempfile();
        f.write_all(bytes).unwrap();
        f
    }

    fn tempfile() -> File {
        // An unlinked file in the temp dir.
        let path = std::env::temp_dir().join(format!(
            "podvm-loader-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        f
    }

    #[test]
    fn probes_an_elf_kernel() {
        let img = tiny_elf(0x100_0000, &[0xf4; 16], 0x2000);
        let info = probe_kernel(&mut Cursor::new(img), Path::new("k")).unwrap();
        assert_eq!(info.format, KernelFormat::Elf);
        assert_eq!((info.start, info.end), (0x100_0000, 0x100_2000));
    }

    #[test]
    fn probes_a_bzimage() {
        let img = tiny_bzimage(&[0x90; 1024], 0x40_0000);
        let info = probe_kernel(&mut Cursor::new(img), Path::new("k")).unwrap();
        assert_eq!(info.format, KernelFormat::BzImage);
        assert_eq!((info.start, info.end), (MIB, MIB + 0x40_0000));
        assert_eq!(info.initrd_addr_max, 0x37ff_ffff);
    }

    #[test]
    fn bzimage_needs_a_64_bit_entry_and_room_at_its_preferred_address() {
        let mut img = tiny_bzimage(&[0x90; 1024], 0x40_0000);
        // Relocatable kernels run from pref_address: 16 MiB + init_size.
        img[0x258..0x260].copy_from_slice(&0x100_0000u64.to_le_bytes());
        let info = probe_kernel(&mut Cursor::new(img.clone()), Path::new("k")).unwrap();
        assert_eq!(info.end, 0x100_0000 + 0x40_0000);
        assert!(check_kernel_fits(&info, 16 * MIB, Path::new("k")).is_err());
        img[0x236] = 0;
        let err = probe_kernel(&mut Cursor::new(img), Path::new("k")).unwrap_err();
        assert!(err.to_string().contains("no 64-bit entry point"), "{err}");
    }

    #[test]
    fn refuses_what_is_not_a_kernel() {
        for img in [vec![], b"#!/bin/sh\necho hi\n".to_vec(), vec![0u8; 4096]] {
            let err = probe_kernel(&mut Cursor::new(img), Path::new("/x")).unwrap_err();
            assert!(matches!(err, LoaderError::NotAKernel { .. }), "{err}");
            assert_eq!(
                err.to_string(),
                "kernel /x: not a kernel image (expected an x86_64 ELF vmlinux or a bzImage)"
            );
        }
        let mut elf32 = tiny_elf(MIB, &[0], 1);
        elf32[4] = 1;
        let err = probe_kernel(&mut Cursor::new(elf32), Path::new("/x")).unwrap_err();
        assert_eq!(err.to_string(), "kernel /x: not a 64-bit x86_64 ELF file");
    }

    #[test]
    fn kernel_must_fit_in_memory() {
        let info = KernelInfo {
            format: KernelFormat::Elf,
            start: 16 * MIB,
            end: 40 * MIB,
            initrd_addr_max: u64::MAX,
        };
        assert!(check_kernel_fits(&info, 64 * MIB, Path::new("k")).is_ok());
        let err = check_kernel_fits(&info, 32 * MIB, Path::new("k")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "kernel k needs memory up to 40 MiB, but the guest has 32 MiB below the MMIO gap"
        );
        let low = KernelInfo {
            start: 0x8000,
            ..info
        };
        assert!(matches!(
            check_kernel_fits(&low, 64 * MIB, Path::new("k")),
            Err(LoaderError::KernelTooLow { addr: 0x8000, .. })
        ));
    }

    #[test]
    fn initrd_goes_to_the_top_of_low_memory() {
        let info = KernelInfo {
            format: KernelFormat::Elf,
            start: MIB,
            end: 2 * MIB,
            initrd_addr_max: u64::MAX,
        };
        let p = place_initrd(&info, 64 * MIB, 5000, Path::new("i")).unwrap();
        assert_eq!(p.addr, 64 * MIB - 8192);
        assert_eq!(p.addr % 4096, 0);
        // Above the gap, the initrd still stays below it.
        let p = place_initrd(&info, 8 << 30, MIB, Path::new("i")).unwrap();
        assert_eq!(p.addr + MIB, MMIO_GAP_START);
        // initrd_addr_max is respected.
        let capped = KernelInfo {
            initrd_addr_max: 0x37ff_ffff,
            ..info
        };
        let p = place_initrd(&capped, 2 << 30, MIB, Path::new("i")).unwrap();
        assert_eq!(p.addr + MIB, 0x3800_0000);
        // Too big to fit after the kernel.
        let err = place_initrd(&info, 16 * MIB, 15 * MIB, Path::new("i")).unwrap_err();
        assert!(matches!(err, LoaderError::InitrdTooLarge { .. }), "{err}");
        assert!(place_initrd(&info, 16 * MIB, 32 * MIB, Path::new("i")).is_err());
    }

    #[test]
    fn loads_an_elf_kernel_into_memory() {
        let code = [0xb0, 0x41, 0xe6, 0xe9, 0xf4];
        let img = tiny_elf(2 * MIB, &code, code.len() as u64);
        let mut f = temp_file(&img);
        let m = mem(16 * MIB);
        let info = probe_kernel(&mut f, Path::new("k")).unwrap();
        let k = load_kernel(&m, &mut f, &info, Path::new("k")).unwrap();
        assert_eq!(k.entry, BootEntry::Linux64 { entry: 2 * MIB });
        assert!(k.setup_header.is_none());
        let mut got = [0u8; 5];
        m.read_slice(&mut got, GuestAddress(2 * MIB)).unwrap();
        assert_eq!(got, code);
    }

    #[test]
    fn loads_a_bzimage_into_memory() {
        let payload: Vec<u8> = (0..2048u32).map(|i| i as u8).collect();
        let img = tiny_bzimage(&payload, 0x1000);
        let mut f = temp_file(&img);
        let m = mem(16 * MIB);
        let info = probe_kernel(&mut f, Path::new("k")).unwrap();
        let k = load_kernel(&m, &mut f, &info, Path::new("k")).unwrap();
        assert_eq!(k.entry, BootEntry::Linux64 { entry: MIB + 0x200 });
        let hdr = k.setup_header.unwrap();
        assert_eq!({ hdr.version }, 0x020f);
        let mut got = vec![0u8; payload.len()];
        m.read_slice(&mut got, GuestAddress(MIB)).unwrap();
        assert_eq!(got, payload);
    }

    #[test]
    fn initrd_and_cmdline_are_written() {
        let m = mem(16 * MIB);
        let mut f = temp_file(b"initrd-content");
        let p = InitrdPlacement {
            addr: 8 * MIB,
            size: 14,
        };
        load_initrd(&m, &mut f, Path::new("i"), p).unwrap();
        let mut got = [0u8; 14];
        m.read_slice(&mut got, GuestAddress(8 * MIB)).unwrap();
        assert_eq!(&got, b"initrd-content");

        load_cmdline(&m, "console=ttyS0").unwrap();
        let mut c = [0u8; 14];
        m.read_slice(&mut c, GuestAddress(CMDLINE_START)).unwrap();
        assert_eq!(&c, b"console=ttyS0\0");
        assert!(matches!(
            load_cmdline(&m, &"x".repeat(CMDLINE_MAX_SIZE)),
            Err(LoaderError::CmdlineTooLong(2048))
        ));
    }
}
