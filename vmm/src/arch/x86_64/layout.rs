//! Where things live in guest physical memory. Low-memory addresses follow
//! the Linux x86 boot protocol and the choices Firecracker made for them, so
//! guests written for one Linux-protocol VMM run on another.

/// GDT used while booting (four 8-byte entries).
pub const BOOT_GDT_START: u64 = 0x500;
/// IDT used while booting: a single null entry, limit 0.
pub const BOOT_IDT_START: u64 = 0x520;
/// PVH `hvm_start_info` structure.
pub const PVH_INFO_START: u64 = 0x6000;
/// PVH module list (the initrd).
pub const PVH_MODLIST_START: u64 = 0x6040;
/// PVH memory map table.
pub const PVH_MEMMAP_START: u64 = 0x7000;
/// Linux `boot_params` ("zero page"); RSI points here on 64-bit entry.
pub const ZERO_PAGE_START: u64 = 0x7000;
/// Initial stack pointer of the boot vCPU.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Page-map level-4 table of the boot page tables.
pub const PML4_START: u64 = 0x9000;
/// Page-directory-pointer table of the boot page tables.
pub const PDPTE_START: u64 = 0xa000;
/// Page directory of the boot page tables (512 × 2 MiB = the first GiB).
pub const PDE_START: u64 = 0xb000;
/// End of the memory the boot page tables identity-map (the first GiB).
pub const IDENTITY_MAPPED_END: u64 = 1 << 30;
/// Kernel command line.
pub const CMDLINE_START: u64 = 0x20000;
/// Room reserved for the command line, NUL included.
pub const CMDLINE_MAX_SIZE: usize = 2048;
/// End of conventional ("low") memory below the legacy VGA hole.
pub const LOW_RAM_END: u64 = 0xa0000;
/// The BIOS area at the top of the first MiB: the ACPI tables (from
/// 0xe0000), the VM generation id (0xef000) and the MP table (from
/// 0xf0000) live here, where guests scan for them, and the e820 map marks
/// it reserved.
pub const BIOS_AREA_START: u64 = 0xe0000;
/// End of the BIOS area (and of the first MiB).
pub const BIOS_AREA_END: u64 = 0x10_0000;
/// The VM generation id (16 bytes, see `devices::legacy::VmGenId`) at the
/// start of the page between the ACPI tables and the MP table, reserved in
/// the e820 map with the rest of the BIOS area so that the guest never
/// uses it as RAM. The DSDT's `VGEN` device gives the guest this address.
pub const VMGENID_START: u64 = 0xef000;
/// The MP floating pointer and configuration table.
pub const MPTABLE_START: u64 = 0xf0000;
/// Start of memory above the first MiB, where kernels are loaded.
pub const HIGH_MEMORY_START: u64 = 0x10_0000;
/// Start of the MMIO gap below 4 GiB (virtio-mmio devices live here).
pub const MMIO_GAP_START: u64 = 0xd000_0000;
/// End of the MMIO gap: RAM resumes at 4 GiB.
pub const MMIO_GAP_END: u64 = 1 << 32;
/// IOAPIC registers.
pub const IOAPIC_START: u64 = 0xfec0_0000;
/// Local APIC registers.
pub const APIC_START: u64 = 0xfee0_0000;
/// Three pages KVM needs for the TSS of real-mode emulation on Intel,
/// placed inside the MMIO gap where no RAM or device is.
pub const KVM_TSS_ADDRESS: u64 = 0xfffb_d000;
/// The highest address an initrd may end at for a kernel that does not say
/// (boot protocol's default `initrd_addr_max`).
pub const DEFAULT_INITRD_ADDR_MAX: u64 = 0x37ff_ffff;
