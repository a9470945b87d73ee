//! Guest memory accesses on a device's hot path. vm-memory's general path
//! (`Bytes` and `check_range` on `GuestMemory`) walks a slice iterator
//! built for ranges that span regions or go through an IOMMU; on plain
//! memory a range inside one region -- nearly every buffer -- is one
//! lookup and one copy, several times cheaper for the small accesses
//! requests and frames are made of. Ranges across regions take the
//! general path.

use vm_memory::{
    ByteValued, Bytes, GuestAddress, GuestMemory, GuestMemoryBackend, GuestMemoryError, Permissions,
};

/// Whether `len` bytes at `addr` are guest memory the device may `access`.
pub fn in_guest<M: GuestMemory>(
    mem: &M,
    addr: GuestAddress,
    len: usize,
    access: Permissions,
) -> bool {
    let direct = mem.physical_memory().map(|pm| pm.get_slice(addr, len));
    matches!(direct, Some(Ok(_))) || mem.check_range(addr, len, access)
}

/// Copies guest memory at `addr` into `buf`.
pub fn read_guest<M: GuestMemory>(
    mem: &M,
    addr: GuestAddress,
    buf: &mut [u8],
) -> Result<(), GuestMemoryError> {
    if let Some(Ok(slice)) = mem
        .physical_memory()
        .map(|pm| pm.get_slice(addr, buf.len()))
    {
        slice.copy_to(buf);
        return Ok(());
    }
    mem.read_slice(buf, addr)
}

/// Copies `buf` into guest memory at `addr`.
pub fn write_guest<M: GuestMemory>(
    mem: &M,
    addr: GuestAddress,
    buf: &[u8],
) -> Result<(), GuestMemoryError> {
    if let Some(Ok(slice)) = mem
        .physical_memory()
        .map(|pm| pm.get_slice(addr, buf.len()))
    {
        slice.copy_from(buf);
        return Ok(());
    }
    mem.write_slice(buf, addr)
}

/// Reads a `T` from guest memory at `addr` (a descriptor, a ring entry).
pub fn read_obj_guest<T: ByteValued, M: GuestMemory>(
    mem: &M,
    addr: GuestAddress,
) -> Result<T, GuestMemoryError> {
    // SAFETY: a `ByteValued` type is valid for any bytes, zeros included.
    let mut value: T = unsafe { std::mem::zeroed() };
    read_guest(mem, addr, value.as_mut_slice())?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryMmap;

    /// Two adjacent regions: [0, 64 KiB) and [64 KiB, 128 KiB).
    fn two_regions() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[
            (GuestAddress(0), 0x1_0000),
            (GuestAddress(0x1_0000), 0x1_0000),
        ])
        .unwrap()
    }

    #[test]
    fn ranges_inside_one_region_across_two_and_outside() {
        let m = two_regions();
        assert!(in_guest(&m, GuestAddress(0x100), 0x100, Permissions::Read));
        assert!(
            in_guest(&m, GuestAddress(0xff00), 0x200, Permissions::Write),
            "across"
        );
        assert!(
            !in_guest(&m, GuestAddress(0x1_ff00), 0x200, Permissions::Read),
            "past the end"
        );
        assert!(
            !in_guest(&m, GuestAddress(u64::MAX - 1), 4, Permissions::Read),
            "wrapping"
        );
    }

    #[test]
    fn copies_go_through_one_region_or_several() {
        let m = two_regions();
        let data: Vec<u8> = (0..=255).collect();
        for addr in [0x100, 0xff80] {
            write_guest(&m, GuestAddress(addr), &data).unwrap();
            let mut back = [0u8; 256];
            read_guest(&m, GuestAddress(addr), &mut back).unwrap();
            assert_eq!(back[..], data[..], "at {addr:#x}");
        }
        assert!(write_guest(&m, GuestAddress(0x1_ff80), &data).is_err());
        let word: u64 = read_obj_guest(&m, GuestAddress(0xfffc)).unwrap();
        assert_eq!(
            word,
            u64::from_le_bytes([0x7c, 0x7d, 0x7e, 0x7f, 0x80, 0x81, 0x82, 0x83])
        );
        assert!(read_guest(&m, GuestAddress(0x2_0000), &mut [0u8; 1]).is_err());
    }
}
