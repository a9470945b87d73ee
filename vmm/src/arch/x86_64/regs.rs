//! The boot state of a vCPU: identity page tables, GDT/IDT, special
//! registers for long mode (Linux 64-bit entry) or flat protected mode
//! (PVH entry), general registers and the FPU.

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_sregs};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use super::gdt::{
    boot_gdt, kvm_segment_from_gdt, CODE32_FLAGS, CODE64_FLAGS, CODE_INDEX, DATA_INDEX, TSS_INDEX,
};
use super::layout::*;

/// CR0.PE: protected mode.
const X86_CR0_PE: u64 = 1 << 0;
/// CR0.ET: extension type (always 1 on modern CPUs).
const X86_CR0_ET: u64 = 1 << 4;
/// CR0.PG: paging.
const X86_CR0_PG: u64 = 1 << 31;
/// CR4.PAE: physical address extension (required by long mode).
const X86_CR4_PAE: u64 = 1 << 5;
/// EFER.LME: long mode enable.
const EFER_LME: u64 = 1 << 8;
/// EFER.LMA: long mode active.
const EFER_LMA: u64 = 1 << 10;
/// RFLAGS bit 1 is reserved and always set; interrupts stay disabled.
const RFLAGS_RESERVED: u64 = 0x2;
/// Page table entry: present, writable.
const PTE_PRESENT_RW: u64 = 0x3;
/// Page directory entry: present, writable, 2 MiB page.
const PDE_PRESENT_RW_HUGE: u64 = 0x83;
/// x87 control word after FNINIT: all exceptions masked.
const FPU_CONTROL_WORD: u16 = 0x37f;
/// MXCSR after reset: all SIMD exceptions masked.
const MXCSR_DEFAULT: u32 = 0x1f80;

/// How the boot vCPU enters the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootEntry {
    /// Linux 64-bit boot protocol: long mode, paging on, RSI → zero page.
    Linux64 {
        /// Entry point.
        entry: u64,
    },
    /// PVH: 32-bit protected mode, paging off, RBX → `hvm_start_info`.
    Pvh {
        /// Entry point.
        entry: u64,
    },
}

impl BootEntry {
    /// The entry point address.
    pub fn address(&self) -> u64 {
        match *self {
            BootEntry::Linux64 { entry } | BootEntry::Pvh { entry } => entry,
        }
    }
}

/// Writes page tables identity-mapping the first GiB with 2 MiB pages.
pub fn setup_page_tables<M: GuestMemoryBackend>(mem: &M) -> vm_memory::guest_memory::Result<()> {
    mem.write_obj(PDPTE_START | PTE_PRESENT_RW, GuestAddress(PML4_START))?;
    mem.write_obj(PDE_START | PTE_PRESENT_RW, GuestAddress(PDPTE_START))?;
    let mut pd = [0u8; 4096];
    for (i, slot) in pd.chunks_exact_mut(8).enumerate() {
        let entry = ((i as u64) << 21) | PDE_PRESENT_RW_HUGE;
        slot.copy_from_slice(&entry.to_le_bytes());
    }
    mem.write_slice(&pd, GuestAddress(PDE_START))
}

/// Writes the boot GDT and an empty IDT for `entry`.
pub fn setup_gdt_idt<M: GuestMemoryBackend>(
    mem: &M,
    entry: BootEntry,
) -> vm_memory::guest_memory::Result<()> {
    let gdt = boot_gdt(code_flags(entry));
    for (i, e) in gdt.iter().enumerate() {
        mem.write_obj(*e, GuestAddress(BOOT_GDT_START + 8 * i as u64))?;
    }
    mem.write_obj(0u64, GuestAddress(BOOT_IDT_START))
}

fn code_flags(entry: BootEntry) -> u16 {
    match entry {
        BootEntry::Linux64 { .. } => CODE64_FLAGS,
        BootEntry::Pvh { .. } => CODE32_FLAGS,
    }
}

/// The special registers for `entry`, starting from the vCPU's reset
/// state `base` (which keeps KVM's APIC base and other fields).
pub fn boot_sregs(mut sregs: kvm_sregs, entry: BootEntry) -> kvm_sregs {
    let gdt = boot_gdt(code_flags(entry));
    let code = kvm_segment_from_gdt(gdt[usize::from(CODE_INDEX)], CODE_INDEX);
    let data = kvm_segment_from_gdt(gdt[usize::from(DATA_INDEX)], DATA_INDEX);
    let tss = kvm_segment_from_gdt(gdt[usize::from(TSS_INDEX)], TSS_INDEX);

    sregs.gdt.base = BOOT_GDT_START;
    sregs.gdt.limit = (std::mem::size_of_val(&gdt) - 1) as u16;
    sregs.idt.base = BOOT_IDT_START;
    sregs.idt.limit = 0;
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = tss;

    sregs.cr0 = X86_CR0_PE | X86_CR0_ET;
    match entry {
        BootEntry::Linux64 { .. } => {
            sregs.cr3 = PML4_START;
            sregs.cr4 = X86_CR4_PAE;
            sregs.cr0 |= X86_CR0_PG;
            sregs.efer = EFER_LME | EFER_LMA;
        }
        BootEntry::Pvh { .. } => {
            sregs.cr3 = 0;
            sregs.cr4 = 0;
            sregs.efer = 0;
        }
    }
    sregs
}

/// The general registers for `entry`.
pub fn boot_regs(entry: BootEntry) -> kvm_regs {
    match entry {
        BootEntry::Linux64 { entry } => kvm_regs {
            rflags: RFLAGS_RESERVED,
            rip: entry,
            rsp: BOOT_STACK_POINTER,
            rbp: BOOT_STACK_POINTER,
            rsi: ZERO_PAGE_START,
            ..Default::default()
        },
        BootEntry::Pvh { entry } => kvm_regs {
            rflags: RFLAGS_RESERVED,
            rip: entry,
            rbx: PVH_INFO_START,
            ..Default::default()
        },
    }
}

/// The FPU state after FNINIT, with SSE exceptions masked.
pub fn boot_fpu() -> kvm_fpu {
    kvm_fpu {
        fcw: FPU_CONTROL_WORD,
        mxcsr: MXCSR_DEFAULT,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryMmap;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap()
    }

    #[test]
    fn page_tables_identity_map_the_first_gib() {
        let m = mem();
        setup_page_tables(&m).unwrap();
        let pml4: u64 = m.read_obj(GuestAddress(PML4_START)).unwrap();
        assert_eq!(pml4, PDPTE_START | 3);
        let pdpte: u64 = m.read_obj(GuestAddress(PDPTE_START)).unwrap();
        assert_eq!(pdpte, PDE_START | 3);
        for i in [0u64, 1, 255, 511] {
            let pde: u64 = m.read_obj(GuestAddress(PDE_START + i * 8)).unwrap();
            assert_eq!(pde, (i << 21) | 0x83, "entry {i}");
        }
    }

    #[test]
    fn gdt_and_idt_are_written() {
        let m = mem();
        setup_gdt_idt(&m, BootEntry::Linux64 { entry: 0 }).unwrap();
        let code: u64 = m.read_obj(GuestAddress(BOOT_GDT_START + 8)).unwrap();
        assert_eq!(code, 0x00af_9b00_0000_ffff);
        let idt: u64 = m.read_obj(GuestAddress(BOOT_IDT_START)).unwrap();
        assert_eq!(idt, 0);
        setup_gdt_idt(&m, BootEntry::Pvh { entry: 0 }).unwrap();
        let code: u64 = m.read_obj(GuestAddress(BOOT_GDT_START + 8)).unwrap();
        assert_eq!(code, 0x00cf_9b00_0000_ffff);
    }

    #[test]
    fn long_mode_sregs() {
        let s = boot_sregs(
            kvm_sregs::default(),
            BootEntry::Linux64 { entry: 0x100_0000 },
        );
        assert_eq!(s.cr0 & (X86_CR0_PE | X86_CR0_PG), X86_CR0_PE | X86_CR0_PG);
        assert_eq!(s.cr3, PML4_START);
        assert_ne!(s.cr4 & X86_CR4_PAE, 0);
        assert_eq!(s.efer, EFER_LME | EFER_LMA);
        assert_eq!((s.cs.l, s.cs.selector, s.ds.selector), (1, 8, 0x10));
        assert_eq!((s.gdt.base, s.gdt.limit), (BOOT_GDT_START, 31));
        assert_eq!((s.idt.base, s.idt.limit), (BOOT_IDT_START, 0));
    }

    #[test]
    fn pvh_sregs_are_flat_protected_mode() {
        let s = boot_sregs(kvm_sregs::default(), BootEntry::Pvh { entry: 0x100_0000 });
        assert_eq!(s.cr0 & X86_CR0_PG, 0);
        assert_ne!(s.cr0 & X86_CR0_PE, 0);
        assert_eq!((s.cr3, s.cr4, s.efer), (0, 0, 0));
        assert_eq!((s.cs.l, s.cs.db, s.cs.limit), (0, 1, 0xffff_ffff));
    }

    #[test]
    fn entry_registers() {
        let r = boot_regs(BootEntry::Linux64 { entry: 0x20_0000 });
        assert_eq!(
            (r.rip, r.rsi, r.rsp, r.rflags),
            (0x20_0000, ZERO_PAGE_START, BOOT_STACK_POINTER, 2)
        );
        let r = boot_regs(BootEntry::Pvh { entry: 0x30_0000 });
        assert_eq!((r.rip, r.rbx, r.rflags), (0x30_0000, PVH_INFO_START, 2));
        let f = boot_fpu();
        assert_eq!((f.fcw, f.mxcsr), (0x37f, 0x1f80));
    }
}
