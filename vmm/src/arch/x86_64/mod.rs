//! x86_64 guest platform: memory layout, boot structures (GDT, page
//! tables, `boot_params`, PVH start info, ACPI tables, MP table) and vCPU setup (CPUID,
//! MSRs, registers, LAPIC).

pub mod acpi;
pub mod boot_params;
pub mod cpuid;
pub mod gdt;
pub mod interrupts;
pub mod layout;
pub mod mptable;
pub mod msr;
pub mod regs;
