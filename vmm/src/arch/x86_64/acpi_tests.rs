use super::*;

const SERIAL: PioDevice = PioDevice {
    ports: &[(0x3f8, 8)],
    irq: 4,
};
const I8042: PioDevice = PioDevice {
    ports: &[(0x60, 1), (0x64, 1)],
    irq: 1,
};

const GENID: GenerationId = GenerationId {
    addr: 0xef000,
    gsi: 3,
};

const POWER: PowerPorts = PowerPorts {
    sleep_control: 0x600,
    sleep_status: 0x601,
    reset: 0x602,
    reset_value: 1,
    s5_sleep_type: 5,
};

fn platform(vcpu_count: u8, virtio: &[MmioDevice]) -> AcpiTables {
    create_acpi_tables(&AcpiPlatform {
        vcpu_count,
        virtio,
        serial: SERIAL,
        i8042: I8042,
        power: POWER,
        reserved_ports: &[(0x3f0, 1)],
        vmgenid: Some(GENID),
    })
    .unwrap()
}

fn slots(n: u32) -> Vec<MmioDevice> {
    (0..n)
        .map(|i| MmioDevice {
            base: 0xd000_0000 + u64::from(i) * 0x1000,
            len: 0x1000,
            gsi: 5 + i,
        })
        .collect()
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

fn sum(b: &[u8]) -> u8 {
    b.iter().fold(0u8, |s, x| s.wrapping_add(*x))
}

/// The table at `addr`.
fn at(t: &AcpiTables, addr: u64) -> &[u8] {
    &t.tables.iter().find(|(a, _)| *a == addr).unwrap().1
}

/// Follows RSDP → XSDT → tables like a guest does; returns them by
/// signature, checking each header's length and checksum on the way.
fn walk(t: &AcpiTables) -> Vec<([u8; 4], Vec<u8>)> {
    let rsdp = at(t, t.rsdp_addr());
    assert_eq!(&rsdp[0..8], b"RSD PTR ");
    assert_eq!(rsdp.len(), 36);
    assert_eq!(sum(&rsdp[0..20]), 0, "RSDP v1 checksum");
    assert_eq!(sum(rsdp), 0, "RSDP extended checksum");
    assert_eq!(rsdp[15], 2, "RSDP revision");
    let xsdt = at(t, u64_at(rsdp, 24));
    let mut found = vec![(*b"XSDT", xsdt.to_vec())];
    let entries = (u32_at(xsdt, 4) as usize - 36) / 8;
    for i in 0..entries {
        let table = at(t, u64_at(xsdt, 36 + 8 * i));
        found.push((table[0..4].try_into().unwrap(), table.to_vec()));
    }
    let fadt = &found.iter().find(|(s, _)| s == b"FACP").unwrap().1;
    let dsdt = at(t, u64_at(fadt, 140));
    found.push((*b"DSDT", dsdt.to_vec()));
    for (sig, table) in &found {
        let name = String::from_utf8_lossy(sig);
        assert_eq!(u32_at(table, 4) as usize, table.len(), "{name} length");
        assert_eq!(sum(table), 0, "{name} checksum");
        assert_eq!(&table[10..16], b"PODVM ", "{name} OEM id");
    }
    found
}

fn table(t: &AcpiTables, sig: &[u8; 4]) -> Vec<u8> {
    walk(t).into_iter().find(|(s, _)| s == sig).unwrap().1
}

#[test]
fn every_table_is_reachable_with_valid_checksums() {
    let t = platform(2, &slots(3));
    let sigs: Vec<[u8; 4]> = walk(&t).into_iter().map(|(s, _)| s).collect();
    assert_eq!(sigs, [*b"XSDT", *b"FACP", *b"APIC", *b"DSDT"]);
    // Inside the ACPI area, non-overlapping, RSDP first at 16-byte
    // alignment where a scanning guest finds it.
    assert_eq!(t.tables[0].0, ACPI_START);
    assert_eq!(ACPI_START % 16, 0);
    let mut spans: Vec<(u64, u64)> = t
        .tables
        .iter()
        .map(|(a, b)| (*a, a + b.len() as u64))
        .collect();
    spans.sort();
    for w in spans.windows(2) {
        assert!(w[0].1 <= w[1].0, "tables overlap: {spans:x?}");
    }
    assert!(spans.last().unwrap().1 <= ACPI_END);
}

#[test]
fn fadt_is_hardware_reduced_with_an_i8042_and_no_rtc() {
    let fadt = table(&platform(1, &[]), b"FACP");
    assert_eq!(fadt.len(), 276, "ACPI 6.x FADT length");
    let flags = u32_at(&fadt, 112);
    assert_ne!(flags & (1 << 20), 0, "HW_REDUCED_ACPI");
    assert_ne!(flags & 1, 0, "WBINVD (required of new platforms)");
    let boot_arch = u16::from_le_bytes([fadt[109], fadt[110]]);
    assert_eq!(
        boot_arch,
        IAPC_8042 | IAPC_VGA_NOT_PRESENT | IAPC_MSI_NOT_SUPPORTED | IAPC_CMOS_RTC_NOT_PRESENT
    );
    assert_eq!(u32_at(&fadt, 40), 0, "32-bit DSDT pointer unused");
    assert_ne!(flags & (1 << 10), 0, "RESET_REG_SUP");
    // Generic addresses: space 1 (I/O), 8 bits, offset 0, byte access.
    let gas = |off: usize| (fadt[off..off + 4].to_vec(), u64_at(&fadt, off + 4));
    assert_eq!(gas(116), (vec![1, 8, 0, 1], 0x602), "RESET_REG");
    assert_eq!(fadt[128], 1, "RESET_VALUE");
    assert_eq!(gas(244), (vec![1, 8, 0, 1], 0x600), "SLEEP_CONTROL_REG");
    assert_eq!(gas(256), (vec![1, 8, 0, 1], 0x601), "SLEEP_STATUS_REG");
}

/// The MADT's interrupt-controller structures as (type, bytes).
fn madt_entries(madt: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut entries = Vec::new();
    let mut off = 44;
    while off < madt.len() {
        let len = madt[off + 1] as usize;
        entries.push((madt[off], madt[off..off + len].to_vec()));
        off += len;
    }
    assert_eq!(off, madt.len(), "structures fill the table exactly");
    entries
}

#[test]
fn madt_lists_every_vcpu_the_ioapic_overrides_and_nmi() {
    for vcpus in [1u8, 2, 4, 254] {
        let madt = table(&platform(vcpus, &[]), b"APIC");
        assert_eq!(u32_at(&madt, 36), 0xfee0_0000, "LAPIC address");
        assert_eq!(u32_at(&madt, 40), MADT_PCAT_COMPAT);
        let entries = madt_entries(&madt);
        let lapics: Vec<_> = entries.iter().filter(|(t, _)| *t == 0).collect();
        assert_eq!(lapics.len(), vcpus as usize);
        for (i, (_, e)) in lapics.iter().enumerate() {
            // uid, APIC id, flags = enabled.
            assert_eq!((e[2], e[3], u32_at(e, 4)), (i as u8, i as u8, 1));
        }
        let ioapics: Vec<_> = entries.iter().filter(|(t, _)| *t == 1).collect();
        assert_eq!(ioapics.len(), 1);
        let io = &ioapics[0].1;
        assert_eq!(io[2], vcpus, "IOAPIC id follows the APIC ids");
        assert_eq!((u32_at(io, 4), u32_at(io, 8)), (0xfec0_0000, 0));
        let isos: Vec<(u8, u32, u16)> = entries
            .iter()
            .filter(|(t, _)| *t == 2)
            .map(|(_, e)| (e[3], u32_at(e, 4), u16::from_le_bytes([e[8], e[9]])))
            .collect();
        assert_eq!(isos, [(1, 1, 0b0101), (4, 4, 0b0101)]);
        let nmis: Vec<_> = entries.iter().filter(|(t, _)| *t == 4).collect();
        assert_eq!(nmis.len(), 1);
        assert_eq!((nmis[0].1[2], nmis[0].1[5]), (0xff, 1), "all CPUs, LINT1");
    }
}

/// Whether `needle` occurs in `haystack`.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn dsdt_describes_each_virtio_device_the_serial_port_and_the_i8042() {
    let devices = slots(19);
    let dsdt = table(&platform(1, &devices), b"DSDT");
    assert_eq!(dsdt[8], DSDT_REVISION);
    let body = &dsdt[36..];
    // Name (_S5_, Package (2) {5, 5}), then Scope (\_SB_).
    assert_eq!(&body[..12], b"\x08_S5_\x12\x06\x02\x0a\x05\x0a\x05");
    let body = &body[12..];
    assert_eq!(body[0], 0x10, "ScopeOp");
    assert!(contains(body, b"\\_SB_"));
    for (i, d) in devices.iter().enumerate() {
        let name = format!("V{i:03X}");
        // ExtOpPrefix DeviceOp … name, then _HID "LNRO0005".
        assert!(contains(body, name.as_bytes()), "{name}");
        // Memory32Fixed: tag 0x86, length 9, RW, base, length.
        let mut window = vec![0x86, 9, 0, 1];
        window.extend_from_slice(&(d.base as u32).to_le_bytes());
        window.extend_from_slice(&0x1000u32.to_le_bytes());
        assert!(contains(body, &window), "{name} window");
        // Extended interrupt: tag 0x89, length 6, consumer + edge,
        // one interrupt, the GSI.
        let mut irq = vec![0x89, 6, 0, 0b0011, 1];
        irq.extend_from_slice(&d.gsi.to_le_bytes());
        assert!(contains(body, &irq), "{name} interrupt");
    }
    let hids = body
        .windows(VIRTIO_MMIO_HID.len())
        .filter(|w| *w == VIRTIO_MMIO_HID.as_bytes())
        .count();
    assert_eq!(hids, 19);
    // COM1: PNP0501 as an EISA id, I/O 0x3f8 length 8, IRQ 4.
    assert!(contains(body, b"COM1"));
    assert!(
        contains(body, &[0x0c, 0x41, 0xd0, 0x05, 0x01]),
        "EISAID PNP0501"
    );
    assert!(contains(body, &[0x47, 1, 0xf8, 3, 0xf8, 3, 1, 8]));
    assert!(contains(body, &[0x89, 6, 0, 0b0011, 1, 4, 0, 0, 0]));
    // The i8042: PNP0303, ports 0x60 and 0x64, IRQ 1.
    assert!(contains(body, b"PS2K"));
    assert!(
        contains(body, &[0x0c, 0x41, 0xd0, 0x03, 0x03]),
        "EISAID PNP0303"
    );
    assert!(contains(body, &[0x47, 1, 0x60, 0, 0x60, 0, 1, 1]));
    assert!(contains(body, &[0x47, 1, 0x64, 0, 0x64, 0, 1, 1]));
    assert!(contains(body, &[0x89, 6, 0, 0b0011, 1, 1, 0, 0, 0]));
    // The motherboard resources: PNP0C02 holding the power-control
    // ports and the boot timer, with no interrupt.
    let res = body
        .windows(4)
        .position(|w| w == b"RES0")
        .expect("the RES0 device");
    let res = &body[res..];
    assert!(
        contains(res, &[0x0c, 0x41, 0xd0, 0x0c, 0x02]),
        "EISAID PNP0C02"
    );
    for port in [0x600u16, 0x601, 0x602, 0x3f0] {
        let [lo, hi] = port.to_le_bytes();
        assert!(contains(res, &[0x47, 1, lo, hi, lo, hi, 1, 1]), "{port:#x}");
    }
}

#[test]
fn device_aml_is_exactly_the_expected_encoding() {
    let aml = virtio_device_aml(
        2,
        &MmioDevice {
            base: 0xd000_2000,
            len: 0x1000,
            gsi: 7,
        },
    );
    let mut want = vec![0x5b, 0x82]; // ExtOpPrefix, DeviceOp
    let mut body = b"V002".to_vec();
    body.extend_from_slice(b"\x08_HID\x0dLNRO0005\x00"); // Name(_HID, "LNRO0005")
    body.extend_from_slice(b"\x08_UID\x0a\x02"); // Name(_UID, 2)
    body.extend_from_slice(b"\x08_CRS\x11"); // Name(_CRS, Buffer
    let template = [
        0x86, 9, 0, 1, 0x00, 0x20, 0x00, 0xd0, 0x00, 0x10, 0x00, 0x00, // Memory32Fixed
        0x89, 6, 0, 0b0011, 1, 7, 0, 0, 0, // Interrupt
        0x79, 0, // EndTag
    ];
    body.push(1 + 2 + template.len() as u8); // PkgLength
    body.extend_from_slice(&[0x0a, template.len() as u8]); // BufferSize
    body.extend_from_slice(&template);
    want.push(1 + body.len() as u8); // PkgLength (one byte)
    want.extend_from_slice(&body);
    assert_eq!(aml, want);
}

#[test]
fn vmgenid_device_is_exactly_the_expected_encoding() {
    let aml = vmgenid_aml(&GenerationId {
        addr: 0x1_2345_6008,
        gsi: 3,
    });
    let mut body = b"VGEN".to_vec();
    body.extend_from_slice(b"\x08_HID\x0dVMGENCTR\x00"); // Name(_HID, "VMGENCTR")
    body.extend_from_slice(b"\x08_CID\x0dVM_Gen_Counter\x00"); // Name(_CID, …)
    body.extend_from_slice(b"\x08_DDN\x0dVM_Gen_Counter\x00"); // Name(_DDN, …)
                                                               // Method(ADDR, 0, NotSerialized) { Return(Package(2) { low, high }) }:
                                                               // MethodOp, PkgLength 20, name, flags 0, ReturnOp, PackageOp,
                                                               // PkgLength 12, 2 elements, two DWordConsts.
    body.extend_from_slice(b"\x14\x14ADDR\x00\xa4\x12\x0c\x02");
    body.extend_from_slice(&[0x0c, 0x08, 0x60, 0x45, 0x23, 0x0c, 0x01, 0, 0, 0]);
    // ExtOpPrefix, DeviceOp, a two-byte PkgLength (body + 2 > 63):
    // low nibble in the first byte (with bit 6: one more byte follows).
    let len = body.len() + 2;
    let mut want = vec![0x5b, 0x82, 0x40 | (len & 0xf) as u8, (len >> 4) as u8];
    want.extend_from_slice(&body);
    assert_eq!(aml, want);
    // A low address still takes two DWordConsts: the package's shape,
    // which the test guest parses, never changes.
    let aml = vmgenid_aml(&GENID);
    assert!(contains(
        &aml,
        b"ADDR\x00\xa4\x12\x0c\x02\x0c\x00\xf0\x0e\x00\x0c\x00\x00\x00\x00"
    ));
}

#[test]
fn the_event_device_notifies_vgen_on_its_interrupt() {
    let aml = ged_aml(&GenerationId {
        addr: 0xef000,
        gsi: 9,
    });
    let mut body = b"GED_".to_vec();
    body.extend_from_slice(b"\x08_HID\x0dACPI0013\x00"); // Name(_HID, "ACPI0013")
    body.extend_from_slice(b"\x08_UID\x00"); // Name(_UID, 0)
                                             // Name(_CRS, ResourceTemplate { Interrupt(consumer, edge, high,
                                             // exclusive) { 9 } }): Buffer, PkgLength 14, size 11, descriptor,
                                             // EndTag.
    body.extend_from_slice(b"\x08_CRS\x11\x0e\x0a\x0b");
    body.extend_from_slice(&[0x89, 6, 0, 0b0011, 1, 9, 0, 0, 0, 0x79, 0]);
    // Method(_EVT, 1, Serialized) { If (Arg0 == 9) { Notify(\_SB_.VGEN,
    // 0x80) } }: MethodOp, PkgLength 25, name, flags (1 argument,
    // serialized), IfOp, PkgLength 18, LEqualOp Arg0 9, NotifyOp,
    // root + dual name path, 0x80.
    body.extend_from_slice(b"\x14\x19_EVT\x09\xa0\x12\x93\x68\x0a\x09");
    body.extend_from_slice(b"\x86\\\x2e_SB_VGEN\x0a\x80");
    let len = body.len() + 2;
    let mut want = vec![0x5b, 0x82, 0x40 | (len & 0xf) as u8, (len >> 4) as u8];
    want.extend_from_slice(&body);
    assert_eq!(aml, want);
}

#[test]
fn dsdt_has_the_vm_generation_id_and_its_event_device_only_when_asked() {
    let dsdt = table(&platform(1, &slots(2)), b"DSDT");
    let body = &dsdt[36..];
    // Both in \_SB_, after the virtio devices, exactly as encoded.
    let vgen = vmgenid_aml(&GENID);
    let ged = ged_aml(&GENID);
    let at = |aml: &[u8]| body.windows(aml.len()).position(|w| w == aml);
    let (vgen_at, ged_at) = (at(&vgen).expect("VGEN"), at(&ged).expect("GED_"));
    let last_virtio = body.windows(4).position(|w| w == b"V001").unwrap();
    assert!(last_virtio < vgen_at && vgen_at < ged_at);
    assert_eq!(
        body.windows(8).filter(|w| *w == b"VMGENCTR").count(),
        1,
        "one VM generation id device"
    );
    // The GSI of the GED's interrupt is in its _CRS.
    assert!(contains(&ged, &[0x89, 6, 0, 0b0011, 1, 3, 0, 0, 0]));

    let none = create_acpi_tables(&AcpiPlatform {
        vcpu_count: 1,
        virtio: &[],
        serial: SERIAL,
        i8042: I8042,
        power: POWER,
        reserved_ports: &[],
        vmgenid: None,
    })
    .unwrap();
    let dsdt = table(&none, b"DSDT");
    assert!(!contains(&dsdt, b"VGEN") && !contains(&dsdt, b"ACPI0013"));
}

#[test]
fn the_largest_machine_fits_the_acpi_area() {
    let t = platform(254, &slots(19));
    let end = t
        .tables
        .iter()
        .map(|(a, b)| a + b.len() as u64)
        .max()
        .unwrap();
    assert!(end <= ACPI_END, "{end:#x}");
}
