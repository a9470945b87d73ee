//! The boot GDT and the segment descriptors KVM wants in `sregs`.
//!
//! Descriptor layout: Intel SDM Vol. 3A §3.4.5 "Segment Descriptors".

use kvm_bindings::kvm_segment;

/// Flags of a 64-bit code segment: present, DPL 0, execute/read,
/// accessed, long mode (L), 4 KiB granularity.
pub const CODE64_FLAGS: u16 = 0xa09b;
/// Flags of a 32-bit code segment (PVH entry): as above with D/B instead
/// of L.
pub const CODE32_FLAGS: u16 = 0xc09b;
/// Flags of a data segment: present, DPL 0, read/write, accessed, 32-bit,
/// 4 KiB granularity.
pub const DATA_FLAGS: u16 = 0xc093;
/// Flags of a 32/64-bit TSS: present, busy.
pub const TSS_FLAGS: u16 = 0x808b;

/// Selector index of the code segment in the boot GDT.
pub const CODE_INDEX: u8 = 1;
/// Selector index of the data segment in the boot GDT.
pub const DATA_INDEX: u8 = 2;
/// Selector index of the TSS in the boot GDT.
pub const TSS_INDEX: u8 = 3;

/// Encodes a segment descriptor from its flags, base and 20-bit limit.
pub fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    let (flags, base, limit) = (u64::from(flags), u64::from(base), u64::from(limit));
    ((base & 0xff00_0000) << 32)
        | ((flags & 0xf0ff) << 40)
        | ((limit & 0x000f_0000) << 32)
        | ((base & 0x00ff_ffff) << 16)
        | (limit & 0xffff)
}

fn base(entry: u64) -> u64 {
    ((entry >> 16) & 0x00ff_ffff) | ((entry >> 32) & 0xff00_0000)
}

fn limit(entry: u64) -> u32 {
    let raw = ((entry & 0xffff) | ((entry >> 32) & 0x000f_0000)) as u32;
    // With 4 KiB granularity the limit counts pages.
    if (entry >> 55) & 1 == 1 {
        (raw << 12) | 0xfff
    } else {
        raw
    }
}

/// The `kvm_segment` KVM expects for the descriptor `entry` at `index`.
pub fn kvm_segment_from_gdt(entry: u64, index: u8) -> kvm_segment {
    let bit = |n: u32| ((entry >> n) & 1) as u8;
    kvm_segment {
        base: base(entry),
        limit: limit(entry),
        selector: u16::from(index) * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present: bit(47),
        dpl: ((entry >> 45) & 0x3) as u8,
        db: bit(54),
        s: bit(44),
        l: bit(53),
        g: bit(55),
        avl: bit(52),
        padding: 0,
        unusable: u8::from(bit(47) == 0),
    }
}

/// The boot GDT: null, code, data, TSS.
pub fn boot_gdt(code_flags: u16) -> [u64; 4] {
    [
        0,
        gdt_entry(code_flags, 0, 0xfffff),
        gdt_entry(DATA_FLAGS, 0, 0xfffff),
        gdt_entry(TSS_FLAGS, 0, 0xfffff),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_the_well_known_flat_segments() {
        // The values Linux's own boot GDT uses for these segments.
        assert_eq!(gdt_entry(CODE64_FLAGS, 0, 0xfffff), 0x00af_9b00_0000_ffff);
        assert_eq!(gdt_entry(CODE32_FLAGS, 0, 0xfffff), 0x00cf_9b00_0000_ffff);
        assert_eq!(gdt_entry(DATA_FLAGS, 0, 0xfffff), 0x00cf_9300_0000_ffff);
    }

    #[test]
    fn base_and_limit_round_trip() {
        let e = gdt_entry(0x0093, 0x1234_5678, 0xabcde);
        let s = kvm_segment_from_gdt(e, 2);
        assert_eq!(s.base, 0x1234_5678);
        assert_eq!(s.limit, 0xabcde, "byte granularity keeps the raw limit");
        assert_eq!(s.selector, 0x10);
    }

    #[test]
    fn long_mode_code_segment_fields() {
        let gdt = boot_gdt(CODE64_FLAGS);
        let cs = kvm_segment_from_gdt(gdt[1], CODE_INDEX);
        assert_eq!((cs.l, cs.db, cs.g, cs.present, cs.s), (1, 0, 1, 1, 1));
        assert_eq!(cs.type_, 0xb);
        assert_eq!(cs.limit, 0xffff_ffff);
        assert_eq!(cs.selector, 8);
        assert_eq!(cs.unusable, 0);
        let ds = kvm_segment_from_gdt(gdt[2], DATA_INDEX);
        assert_eq!((ds.l, ds.db, ds.type_), (0, 1, 3));
        let tss = kvm_segment_from_gdt(gdt[3], TSS_INDEX);
        assert_eq!((tss.s, tss.type_, tss.selector), (0, 0xb, 0x18));
        assert_eq!(kvm_segment_from_gdt(0, 0).unusable, 1);
    }
}
