//! The Intel MultiProcessor table (MP spec 1.4, chapter 4): tells guests
//! without ACPI how many CPUs there are, their APIC ids, and how ISA
//! interrupts reach the IOAPIC.
//!
//! Layout written at [`MPTABLE_START`]: the 16-byte floating pointer
//! structure, then the configuration table header and its entries.

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use super::layout::{APIC_START, BIOS_AREA_END, IOAPIC_START, MPTABLE_START};

/// MP spec revision 1.4.
const SPEC_REV: u8 = 4;
/// Local APIC version reported for every processor (integrated APIC).
const APIC_VERSION: u8 = 0x14;
/// IOAPIC version (82093AA-compatible).
const IOAPIC_VERSION: u8 = 0x11;
/// CPU signature: family 6, as a generic modern x86 processor.
const CPU_SIGNATURE: u32 = 0x600;
/// Feature flags: FPU (bit 0) and on-chip APIC (bit 9).
const CPU_FEATURES: u32 = 0x201;
/// Processor entry flags.
const CPU_ENABLED: u8 = 1;
const CPU_BOOTSTRAP: u8 = 2;
/// Entry types (MP spec table 4-3).
const ENTRY_PROCESSOR: u8 = 0;
const ENTRY_BUS: u8 = 1;
const ENTRY_IOAPIC: u8 = 2;
const ENTRY_IO_INTERRUPT: u8 = 3;
const ENTRY_LOCAL_INTERRUPT: u8 = 4;
/// Interrupt types (MP spec table 4-9).
const INT_TYPE_INT: u8 = 0;
const INT_TYPE_NMI: u8 = 1;
const INT_TYPE_EXTINT: u8 = 3;
/// IOAPIC input pins routed one to one from ISA IRQs (the IOAPIC has 24).
pub const IOAPIC_PINS: u8 = 24;

/// Size of the floating pointer structure.
const FLOATING_POINTER_LEN: usize = 16;
/// Size of the configuration table header.
const HEADER_LEN: usize = 44;

/// The MP table cannot be written.
#[derive(Debug, thiserror::Error)]
pub enum MptableError {
    /// Too many vCPUs for the area reserved for the table.
    #[error("MP table for {0} vCPUs does not fit below 1 MiB")]
    TooLarge(u8),
    /// Guest memory refused the write.
    #[error("cannot write the MP table to guest memory")]
    Write(#[source] vm_memory::GuestMemoryError),
}

fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |s, b| s.wrapping_add(*b))
        .wrapping_neg()
}

/// The MP floating pointer and configuration table for `vcpu_count` vCPUs
/// whose APIC ids are 0..vcpu_count, vCPU 0 being the bootstrap
/// processor, as the bytes that go at [`MPTABLE_START`].
pub fn mptable_bytes(vcpu_count: u8) -> Vec<u8> {
    let ioapic_id = vcpu_count;
    let mut entries: Vec<u8> = Vec::new();
    let mut count: u16 = 0;
    for cpu in 0..vcpu_count {
        let flags = CPU_ENABLED | if cpu == 0 { CPU_BOOTSTRAP } else { 0 };
        entries.extend_from_slice(&[ENTRY_PROCESSOR, cpu, APIC_VERSION, flags]);
        entries.extend_from_slice(&CPU_SIGNATURE.to_le_bytes());
        entries.extend_from_slice(&CPU_FEATURES.to_le_bytes());
        entries.extend_from_slice(&[0; 8]);
        count += 1;
    }
    entries.extend_from_slice(&[ENTRY_BUS, 0]);
    entries.extend_from_slice(b"ISA   ");
    count += 1;
    entries.extend_from_slice(&[ENTRY_IOAPIC, ioapic_id, IOAPIC_VERSION, 1]);
    entries.extend_from_slice(&(IOAPIC_START as u32).to_le_bytes());
    count += 1;
    for irq in 0..IOAPIC_PINS {
        // type, interrupt type, flags (conforming polarity and trigger,
        // u16), source bus, source IRQ, destination IOAPIC, its pin.
        entries.extend_from_slice(&[
            ENTRY_IO_INTERRUPT,
            INT_TYPE_INT,
            0,
            0,
            0,
            irq,
            ioapic_id,
            irq,
        ]);
        count += 1;
    }
    // ExtINT on every LAPIC's LINT0, NMI on every LAPIC's LINT1.
    entries.extend_from_slice(&[ENTRY_LOCAL_INTERRUPT, INT_TYPE_EXTINT, 0, 0, 0, 0, 0xff, 0]);
    entries.extend_from_slice(&[ENTRY_LOCAL_INTERRUPT, INT_TYPE_NMI, 0, 0, 0, 0, 0xff, 1]);
    count += 2;

    let table_addr = MPTABLE_START + FLOATING_POINTER_LEN as u64;
    let mut header = Vec::with_capacity(HEADER_LEN);
    header.extend_from_slice(b"PCMP");
    header.extend_from_slice(&((HEADER_LEN + entries.len()) as u16).to_le_bytes());
    header.push(SPEC_REV);
    header.push(0); // checksum, below
    header.extend_from_slice(b"PODVM   ");
    header.extend_from_slice(b"POD-VM      ");
    header.extend_from_slice(&0u32.to_le_bytes()); // OEM table pointer
    header.extend_from_slice(&0u16.to_le_bytes()); // OEM table size
    header.extend_from_slice(&count.to_le_bytes());
    header.extend_from_slice(&(APIC_START as u32).to_le_bytes());
    header.extend_from_slice(&[0; 4]); // extended table length, checksum, reserved
    debug_assert_eq!(header.len(), HEADER_LEN);
    let mut table = header;
    table.extend_from_slice(&entries);
    table[7] = checksum(&table);

    let mut fp = Vec::with_capacity(FLOATING_POINTER_LEN);
    fp.extend_from_slice(b"_MP_");
    fp.extend_from_slice(&(table_addr as u32).to_le_bytes());
    fp.push(1); // length in 16-byte paragraphs
    fp.push(SPEC_REV);
    fp.push(0); // checksum, below
    fp.extend_from_slice(&[0; 5]); // features: no default configuration
    fp[10] = checksum(&fp);

    fp.extend_from_slice(&table);
    fp
}

/// Writes the MP table for `vcpu_count` vCPUs into guest memory.
pub fn setup_mptable<M: GuestMemoryBackend>(mem: &M, vcpu_count: u8) -> Result<(), MptableError> {
    let bytes = mptable_bytes(vcpu_count);
    if MPTABLE_START + bytes.len() as u64 > BIOS_AREA_END {
        return Err(MptableError::TooLarge(vcpu_count));
    }
    mem.write_slice(&bytes, GuestAddress(MPTABLE_START))
        .map_err(MptableError::Write)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryMmap;

    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |s, x| s.wrapping_add(*x))
    }

    #[test]
    fn checksums_and_header_fields_are_right() {
        for n in [1u8, 2, 7, 254] {
            let b = mptable_bytes(n);
            assert_eq!(&b[..4], b"_MP_");
            assert_eq!(sum(&b[..16]), 0, "floating pointer checksum, {n} cpus");
            let table_addr = u32::from_le_bytes(b[4..8].try_into().unwrap());
            assert_eq!(u64::from(table_addr), MPTABLE_START + 16);
            let t = &b[16..];
            assert_eq!(&t[..4], b"PCMP");
            let len = u16::from_le_bytes([t[4], t[5]]) as usize;
            assert_eq!(len, t.len());
            assert_eq!(sum(t), 0, "table checksum, {n} cpus");
            let count = u16::from_le_bytes([t[34], t[35]]);
            assert_eq!(count, u16::from(n) + 2 + 24 + 2);
            assert_eq!(
                u32::from_le_bytes(t[36..40].try_into().unwrap()),
                0xfee0_0000
            );
        }
    }

    #[test]
    fn processors_are_listed_with_the_bsp_first() {
        let b = mptable_bytes(3);
        let entries = &b[16 + HEADER_LEN..];
        for cpu in 0..3 {
            let e = &entries[cpu * 20..cpu * 20 + 20];
            assert_eq!(e[0], ENTRY_PROCESSOR);
            assert_eq!(e[1], cpu as u8, "APIC id");
            let expect = if cpu == 0 { 3 } else { 1 };
            assert_eq!(e[3], expect, "flags");
        }
        let ioapic = &entries[60 + 8..60 + 16];
        assert_eq!(ioapic[0], ENTRY_IOAPIC);
        assert_eq!(ioapic[1], 3, "IOAPIC id follows the CPUs");
        assert_eq!(
            u32::from_le_bytes(ioapic[4..8].try_into().unwrap()),
            0xfec0_0000
        );
    }

    #[test]
    fn fits_for_the_most_vcpus_and_lands_in_memory() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        setup_mptable(&mem, 254).unwrap();
        let mut sig = [0u8; 4];
        mem.read_slice(&mut sig, GuestAddress(MPTABLE_START))
            .unwrap();
        assert_eq!(&sig, b"_MP_");
    }
}
