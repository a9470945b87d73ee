//! The boot information a kernel reads on entry: the e820 memory map, the
//! Linux `boot_params` zero page (64-bit boot protocol) and the PVH
//! `hvm_start_info` (PVH entry).
//!
//! References: Linux `Documentation/arch/x86/boot.rst` and
//! `zero-page.rst`; Xen's `arch-x86/hvm/start_info.h` for PVH.

use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use super::layout::*;

/// e820 type of usable RAM.
pub const E820_RAM: u32 = 1;
/// e820 type of reserved memory.
pub const E820_RESERVED: u32 = 2;

/// `boot_flag` value of a valid setup header.
const BOOT_FLAG: u16 = 0xaa55;
/// `header` magic of a setup header: "HdrS".
const HDRS_MAGIC: u32 = 0x5372_6448;
/// `type_of_loader` for a boot loader without an assigned id.
const UNDEFINED_LOADER: u8 = 0xff;
/// `kernel_alignment` podvm reports for ELF kernels (16 MiB, as Linux's
/// default `CONFIG_PHYSICAL_ALIGN` on x86_64 is at most that).
const KERNEL_ALIGNMENT: u32 = 0x0100_0000;
/// Magic of `hvm_start_info` ("xEn3" with the top bit flipped).
const PVH_START_MAGIC: u32 = 0x336e_c578;
/// Maximum number of e820 entries in the zero page.
const E820_MAX_ENTRIES_ZEROPAGE: usize = 128;

/// One entry of the guest's physical memory map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct E820Entry {
    /// First address.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// [`E820_RAM`] or [`E820_RESERVED`].
    pub kind: u32,
}

/// The memory map for a guest with `mem_size` bytes of RAM: conventional
/// memory below 640 KiB, the reserved BIOS area holding the MP table, RAM
/// from 1 MiB up to the MMIO gap and the rest above 4 GiB.
pub fn e820_map(mem_size: u64) -> Vec<E820Entry> {
    let ram = |addr, end: u64| E820Entry {
        addr,
        size: end - addr,
        kind: E820_RAM,
    };
    let mut map = vec![
        ram(0, LOW_RAM_END.min(mem_size)),
        E820Entry {
            addr: BIOS_AREA_START,
            size: BIOS_AREA_END - BIOS_AREA_START,
            kind: E820_RESERVED,
        },
    ];
    if mem_size > HIGH_MEMORY_START {
        map.push(ram(HIGH_MEMORY_START, mem_size.min(MMIO_GAP_START)));
    }
    if mem_size > MMIO_GAP_START {
        map.push(ram(
            MMIO_GAP_END,
            MMIO_GAP_END + (mem_size - MMIO_GAP_START),
        ));
    }
    map
}

/// Where the initrd was put.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InitrdPlacement {
    /// Guest physical address of its first byte.
    pub addr: u64,
    /// Its size in bytes.
    pub size: u64,
}

/// The Linux zero page for a kernel entered through the 64-bit boot
/// protocol. `setup_header` is the header a bzImage carries (copied into
/// the zero page as the protocol asks); ELF kernels have none.
/// `rsdp_addr` is where the ACPI RSDP is (0: no ACPI tables).
pub fn linux_boot_params(
    e820: &[E820Entry],
    cmdline_len: usize,
    initrd: Option<InitrdPlacement>,
    setup_header: Option<setup_header>,
    rsdp_addr: u64,
) -> boot_params {
    let mut params = boot_params {
        acpi_rsdp_addr: rsdp_addr,
        ..Default::default()
    };
    if let Some(hdr) = setup_header {
        params.hdr = hdr;
    } else {
        params.hdr.boot_flag = BOOT_FLAG;
        params.hdr.header = HDRS_MAGIC;
        params.hdr.kernel_alignment = KERNEL_ALIGNMENT;
    }
    params.hdr.type_of_loader = UNDEFINED_LOADER;
    params.hdr.cmd_line_ptr = CMDLINE_START as u32;
    params.hdr.cmdline_size = cmdline_len as u32;
    if let Some(initrd) = initrd {
        params.hdr.ramdisk_image = initrd.addr as u32;
        params.hdr.ramdisk_size = initrd.size as u32;
        params.ext_ramdisk_image = (initrd.addr >> 32) as u32;
        params.ext_ramdisk_size = (initrd.size >> 32) as u32;
    }
    for (slot, e) in params
        .e820_table
        .iter_mut()
        .zip(e820.iter().take(E820_MAX_ENTRIES_ZEROPAGE))
    {
        *slot = boot_e820_entry {
            addr: e.addr,
            size: e.size,
            r#type: e.kind,
        };
    }
    params.e820_entries = e820.len().min(E820_MAX_ENTRIES_ZEROPAGE) as u8;
    params
}

/// The PVH start info, its memory map and module list for a kernel entered
/// through its PVH entry point.
pub fn pvh_start_info(
    e820: &[E820Entry],
    initrd: Option<InitrdPlacement>,
    rsdp_addr: u64,
) -> (
    hvm_start_info,
    Vec<hvm_memmap_table_entry>,
    Option<hvm_modlist_entry>,
) {
    let memmap: Vec<_> = e820
        .iter()
        .map(|e| hvm_memmap_table_entry {
            addr: e.addr,
            size: e.size,
            type_: e.kind,
            reserved: 0,
        })
        .collect();
    let module = initrd.map(|i| hvm_modlist_entry {
        paddr: i.addr,
        size: i.size,
        ..Default::default()
    });
    let info = hvm_start_info {
        magic: PVH_START_MAGIC,
        version: 1,
        nr_modules: u32::from(module.is_some()),
        modlist_paddr: if module.is_some() {
            PVH_MODLIST_START
        } else {
            0
        },
        cmdline_paddr: CMDLINE_START,
        memmap_paddr: PVH_MEMMAP_START,
        memmap_entries: memmap.len() as u32,
        rsdp_paddr: rsdp_addr,
        ..Default::default()
    };
    (info, memmap, module)
}

/// Writes the PVH structures at their fixed addresses.
pub fn write_pvh_start_info<M: GuestMemoryBackend>(
    mem: &M,
    e820: &[E820Entry],
    initrd: Option<InitrdPlacement>,
    rsdp_addr: u64,
) -> vm_memory::guest_memory::Result<()> {
    let (info, memmap, module) = pvh_start_info(e820, initrd, rsdp_addr);
    mem.write_obj(info, GuestAddress(PVH_INFO_START))?;
    if let Some(module) = module {
        mem.write_obj(module, GuestAddress(PVH_MODLIST_START))?;
    }
    let entry_size = std::mem::size_of::<hvm_memmap_table_entry>() as u64;
    for (i, entry) in memmap.into_iter().enumerate() {
        mem.write_obj(
            entry,
            GuestAddress(PVH_MEMMAP_START + i as u64 * entry_size),
        )?;
    }
    Ok(())
}

/// Total usable RAM in a memory map.
pub fn ram_bytes(e820: &[E820Entry]) -> u64 {
    e820.iter()
        .filter(|e| e.kind == E820_RAM)
        .map(|e| e.size)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn small_guest_map() {
        let map = e820_map(128 * MIB);
        assert_eq!(
            map,
            vec![
                E820Entry {
                    addr: 0,
                    size: 0xa0000,
                    kind: E820_RAM
                },
                E820Entry {
                    addr: 0xe0000,
                    size: 0x20000,
                    kind: E820_RESERVED
                },
                E820Entry {
                    addr: MIB,
                    size: 127 * MIB,
                    kind: E820_RAM
                },
            ]
        );
        // Everything but the legacy hole (640 KiB .. 1 MiB) is RAM.
        assert_eq!(ram_bytes(&map), 128 * MIB - 0x60000);
    }

    #[test]
    fn large_guest_map_skips_the_mmio_gap() {
        let mem = 4096 * MIB;
        let map = e820_map(mem);
        assert_eq!(map.len(), 4);
        assert_eq!(map[2].addr + map[2].size, MMIO_GAP_START);
        assert_eq!(map[3].addr, 1 << 32);
        assert_eq!(map[3].size, mem - MMIO_GAP_START);
        assert_eq!(ram_bytes(&map), mem - 0x60000);
        for w in map.windows(2) {
            assert!(w[0].addr + w[0].size <= w[1].addr, "sorted, disjoint");
        }
    }

    #[test]
    fn gap_boundary_exactly() {
        let map = e820_map(MMIO_GAP_START);
        assert_eq!(map.len(), 3);
        assert_eq!(map[2].addr + map[2].size, MMIO_GAP_START);
    }

    #[test]
    fn zero_page_for_elf_kernels() {
        let map = e820_map(64 * MIB);
        let initrd = InitrdPlacement {
            addr: 0x3f0_0000,
            size: 0x1234,
        };
        let p = linux_boot_params(&map, 42, Some(initrd), None, 0xe0000);
        assert_eq!({ p.hdr.boot_flag }, 0xaa55);
        assert_eq!({ p.hdr.header }, HDRS_MAGIC);
        assert_eq!({ p.hdr.type_of_loader }, 0xff);
        assert_eq!({ p.hdr.cmd_line_ptr }, CMDLINE_START as u32);
        assert_eq!({ p.hdr.cmdline_size }, 42);
        assert_eq!({ p.hdr.ramdisk_image }, 0x3f0_0000);
        assert_eq!({ p.hdr.ramdisk_size }, 0x1234);
        assert_eq!(p.e820_entries, 3);
        assert_eq!({ p.e820_table[2].addr }, MIB);
        assert_eq!({ p.e820_table[2].size }, 63 * MIB);
        assert_eq!({ p.e820_table[1].r#type }, E820_RESERVED);
        assert_eq!({ p.acpi_rsdp_addr }, 0xe0000);
    }

    #[test]
    fn zero_page_keeps_a_bzimage_header() {
        let hdr = setup_header {
            setup_sects: 7,
            version: 0x020f,
            loadflags: 1,
            ..Default::default()
        };
        let p = linux_boot_params(&e820_map(64 * MIB), 1, None, Some(hdr), 0);
        assert_eq!(p.hdr.setup_sects, 7);
        assert_eq!({ p.hdr.version }, 0x020f);
        assert_eq!({ p.hdr.type_of_loader }, 0xff);
        assert_eq!({ p.hdr.ramdisk_image }, 0);
    }

    #[test]
    fn pvh_start_info_describes_memory_and_initrd() {
        let map = e820_map(256 * MIB);
        let (info, memmap, module) = pvh_start_info(
            &map,
            Some(InitrdPlacement {
                addr: 0x800_0000,
                size: 4096,
            }),
            0xe0000,
        );
        assert_eq!(info.magic, PVH_START_MAGIC);
        assert_eq!(info.version, 1);
        assert_eq!(info.nr_modules, 1);
        assert_eq!(info.modlist_paddr, PVH_MODLIST_START);
        assert_eq!(info.cmdline_paddr, CMDLINE_START);
        assert_eq!(info.memmap_entries, 3);
        assert_eq!(memmap[2].size, 255 * MIB);
        assert_eq!(module.unwrap().paddr, 0x800_0000);
        assert_eq!(info.rsdp_paddr, 0xe0000);
        let (info, _, module) = pvh_start_info(&map, None, 0);
        assert_eq!(
            (info.nr_modules, info.modlist_paddr, info.rsdp_paddr),
            (0, 0, 0)
        );
        assert!(module.is_none());
    }

    #[test]
    fn pvh_structures_land_at_their_addresses() {
        let mem =
            vm_memory::GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let map = e820_map(64 * MIB);
        write_pvh_start_info(&mem, &map, None, 0).unwrap();
        let info: hvm_start_info = mem.read_obj(GuestAddress(PVH_INFO_START)).unwrap();
        assert_eq!(info.memmap_entries, 3);
        let third: hvm_memmap_table_entry = mem
            .read_obj(GuestAddress(PVH_MEMMAP_START + 2 * 24))
            .unwrap();
        assert_eq!(third.addr, MIB);
    }
}
