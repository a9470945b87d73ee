//! ACPI tables: how a guest kernel that does not read devices from its
//! command line (a stock distribution kernel, whose virtio-mmio driver is a
//! module) finds the vCPUs, the IOAPIC and every device.
//!
//! The platform is *hardware-reduced* ACPI (ACPI 6.5, section 4.1): no PM
//! timer, no SCI, no fixed-feature registers, as Firecracker and Cloud
//! Hypervisor describe their micro-VMs. The tables are RSDP → XSDT →
//! {FADT → DSDT, MADT}; the DSDT holds one `LNRO0005` device per
//! virtio-mmio slot (the ACPI id Linux's `virtio_mmio` driver matches),
//! COM1 and the i8042, and the VM generation id (`VGEN`) with the Generic
//! Event Device (`GED_`) whose interrupt tells the guest that the id
//! changed. Encoding is rust-vmm's `acpi_tables` crate.
//!
//! Everything lives in [`ACPI_START`]..[`ACPI_END`], inside the BIOS area
//! the e820 map reserves, with the RSDP first: on a 16-byte boundary below
//! 1 MiB where a guest that is not told its address scans for it (ACPI
//! 6.5, 5.2.5.1). Kernels are also told directly (`acpi_rsdp_addr` in
//! `boot_params`, `rsdp_paddr` in the PVH start info).

use acpi_tables::aml::{
    self, Arg, Device, EISAName, Equal, If, Interrupt, Memory32Fixed, Method, Name, Notify,
    Package, Path, ResourceTemplate, Return, Scope, IO,
};
use acpi_tables::fadt::{FADTBuilder, Flags};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};
use acpi_tables::madt::{
    EnabledStatus, IoApic, LocalInterruptController, ProcessorLocalApic, MADT,
};
use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;
use acpi_tables::xsdt::XSDT;
use acpi_tables::{Aml, AmlSink};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};
use zerocopy::byteorder::{LE, U16, U32};
use zerocopy::{Immutable, IntoBytes};

use super::layout::{APIC_START, BIOS_AREA_START, IOAPIC_START, MPTABLE_START, VMGENID_START};

/// First byte of the ACPI area.
pub const ACPI_START: u64 = BIOS_AREA_START;
/// Where the RSDP is: first in the ACPI area.
pub const RSDP_ADDR: u64 = ACPI_START;
/// End of the ACPI area: the VM generation id's page follows (then the MP
/// table).
pub const ACPI_END: u64 = VMGENID_START;
// That page is a whole page of its own below the MP table.
const _: () =
    assert!(VMGENID_START.is_multiple_of(0x1000) && VMGENID_START + 0x1000 <= MPTABLE_START);

/// OEM id in every table header (6 bytes).
const OEM_ID: [u8; 6] = *b"PODVM ";
/// OEM revision in every table header.
const OEM_REVISION: u32 = 1;
/// DSDT compliance revision 2: integers are 64-bit (ACPI 6.5, 19.6.29).
const DSDT_REVISION: u8 = 2;
/// Alignment of each table after the RSDP.
const TABLE_ALIGN: u64 = 16;

/// FADT `IAPC_BOOT_ARCH` (ACPI 6.5, table 5.11): the i8042 is present
/// (without this bit Linux probes it only through its `PNP0303` device),
/// there is no VGA, no MSI and no CMOS RTC.
const IAPC_8042: u16 = 1 << 1;
const IAPC_VGA_NOT_PRESENT: u16 = 1 << 2;
const IAPC_MSI_NOT_SUPPORTED: u16 = 1 << 3;
const IAPC_CMOS_RTC_NOT_PRESENT: u16 = 1 << 5;

/// MADT flag: the platform also has dual 8259 PICs (KVM's irqchip does).
const MADT_PCAT_COMPAT: u32 = 1;
/// MADT interrupt-controller structure types (ACPI 6.5, table 5.21).
const MADT_INTERRUPT_SOURCE_OVERRIDE: u8 = 2;
const MADT_LOCAL_APIC_NMI: u8 = 4;
/// MPS INTI flags: active high, edge triggered (ACPI 6.5, table 5.26).
const MPS_INTI_EDGE_HIGH: u16 = 0b0101;
/// Processor UID meaning "every processor" in a Local APIC NMI entry.
const ALL_PROCESSORS: u8 = 0xff;

/// ACPI id of a virtio-mmio device (Linux: `virtio_mmio_acpi_match`).
const VIRTIO_MMIO_HID: &str = "LNRO0005";

/// `_HID` of the VM generation id device: the first id of Linux's
/// `vmgenid_acpi_ids` (`drivers/virt/vmgenid.c`).
const VMGENID_HID: &str = "VMGENCTR";
/// Its `_CID` and `_DDN`, as Microsoft's specification names the device
/// (Windows matches the `_CID`; Linux's second id, `VM_GEN_COUNTER`, is
/// this one after ACPICA upper-cases string ids).
const VMGENID_CID: &str = "VM_Gen_Counter";
/// Namespace path of the VM generation id device.
const VMGENID_PATH: &str = "\\_SB_.VGEN";
/// `_HID` of the Generic Event Device (ACPI 6.5, 5.6.9; Linux's
/// `drivers/acpi/evged.c`).
const GED_HID: &str = "ACPI0013";
/// The notification that the id changed: 0x80, the first device-specific
/// value, which Linux's driver receives through its `ACPI_DEVICE_NOTIFY`
/// handler (specification, "Generation ID change notification").
const VMGENID_CHANGED: u8 = 0x80;

/// The IOAPIC's id: after the vCPUs' APIC ids, as in the MP table.
pub fn ioapic_id(vcpu_count: u8) -> u8 {
    vcpu_count
}

/// A virtio-mmio device as the DSDT describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioDevice {
    /// Guest physical address of its registers.
    pub base: u64,
    /// Length of its register window.
    pub len: u64,
    /// Its interrupt line (a GSI on the IOAPIC).
    pub gsi: u32,
}

/// A legacy port-I/O device as the DSDT describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PioDevice {
    /// I/O port ranges as (first port, count).
    pub ports: &'static [(u16, u8)],
    /// Its ISA interrupt line.
    pub irq: u32,
}

/// The power-control ports the FADT points at (see
/// `devices::legacy::AcpiPowerControl`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PowerPorts {
    /// The sleep control register's port.
    pub sleep_control: u16,
    /// The sleep status register's port.
    pub sleep_status: u16,
    /// The reset register's port.
    pub reset: u16,
    /// The value that resets when written to `reset`.
    pub reset_value: u8,
    /// The `SLP_TYP` of S5 (soft-off), for the DSDT's `\_S5` package.
    pub s5_sleep_type: u8,
}

/// The VM generation id as the DSDT describes it: where the 16 bytes are,
/// and the interrupt line of the Generic Event Device that notifies the
/// guest when they change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GenerationId {
    /// Guest physical address of the id.
    pub addr: u64,
    /// The Generic Event Device's interrupt (a GSI on the IOAPIC).
    pub gsi: u32,
}

/// What the tables describe.
#[derive(Clone, Debug)]
pub struct AcpiPlatform<'a> {
    /// Number of vCPUs; their APIC ids are 0..vcpu_count.
    pub vcpu_count: u8,
    /// The virtio-mmio devices, in slot order.
    pub virtio: &'a [MmioDevice],
    /// COM1.
    pub serial: PioDevice,
    /// The i8042 (keyboard controller, used for reset).
    pub i8042: PioDevice,
    /// How the guest powers off and resets through ACPI.
    pub power: PowerPorts,
    /// Other ports the VMM decodes (the boot timer): reserved through a
    /// `PNP0C02` device so that the guest allocates them to nothing else.
    pub reserved_ports: &'static [(u16, u8)],
    /// The VM generation id, if the VM has one.
    pub vmgenid: Option<GenerationId>,
}

/// Errors writing the ACPI tables.
#[derive(Debug, thiserror::Error)]
pub enum AcpiError {
    /// The tables need more room than the ACPI area has.
    #[error("the ACPI tables need {0} bytes, more than the {room} bytes reserved for them", room = ACPI_END - ACPI_START)]
    TooLarge(u64),
    /// Writing them into guest memory failed.
    #[error("cannot write the ACPI tables into guest memory: {0}")]
    Write(#[source] vm_memory::GuestMemoryError),
}

/// Every table as bytes at its guest physical address, the RSDP first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcpiTables {
    /// (address, bytes) of each table.
    pub tables: Vec<(u64, Vec<u8>)>,
}

impl AcpiTables {
    /// Guest physical address of the RSDP, for `boot_params` / PVH.
    pub fn rsdp_addr(&self) -> u64 {
        RSDP_ADDR
    }

    /// Copies every table into guest memory.
    pub fn write_to<M: GuestMemoryBackend>(&self, mem: &M) -> Result<(), AcpiError> {
        for (addr, bytes) in &self.tables {
            mem.write_slice(bytes, GuestAddress(*addr))
                .map_err(AcpiError::Write)?;
        }
        Ok(())
    }
}

/// Interrupt Source Override (ACPI 6.5, 5.2.12.5).
#[repr(C, packed)]
#[derive(Clone, Copy, IntoBytes, Immutable)]
struct InterruptSourceOverride {
    r#type: u8,
    length: u8,
    bus: u8,
    source: u8,
    gsi: U32<LE>,
    flags: U16<LE>,
}

impl Aml for InterruptSourceOverride {
    fn to_aml_bytes(&self, sink: &mut dyn AmlSink) {
        sink.vec(self.as_bytes());
    }
}

/// Local APIC NMI (ACPI 6.5, 5.2.12.7).
#[repr(C, packed)]
#[derive(Clone, Copy, IntoBytes, Immutable)]
struct LocalApicNmi {
    r#type: u8,
    length: u8,
    processor_uid: u8,
    flags: U16<LE>,
    lint: u8,
}

impl Aml for LocalApicNmi {
    fn to_aml_bytes(&self, sink: &mut dyn AmlSink) {
        sink.vec(self.as_bytes());
    }
}

fn table_id(name: &[u8; 4]) -> [u8; 8] {
    let mut id = *b"PODVM   ";
    id[4..].copy_from_slice(name);
    id
}

fn aml_bytes(aml: &dyn Aml) -> Vec<u8> {
    let mut bytes = Vec::new();
    aml.to_aml_bytes(&mut bytes);
    bytes
}

/// The MADT: one Local APIC per vCPU, the IOAPIC at GSI base 0, explicit
/// edge/active-high overrides for the ISA lines of COM1 and the i8042,
/// and NMI on every LAPIC's LINT1 (as the MP table and the LAPIC setup).
fn madt(platform: &AcpiPlatform) -> Vec<u8> {
    let mut madt = MADT::new(
        OEM_ID,
        table_id(b"APIC"),
        OEM_REVISION,
        LocalInterruptController::Address(APIC_START as u32),
    );
    for cpu in 0..platform.vcpu_count {
        madt.add_structure(ProcessorLocalApic::new(cpu, cpu, EnabledStatus::Enabled));
    }
    madt.add_structure(IoApic::new(
        ioapic_id(platform.vcpu_count),
        IOAPIC_START as u32,
        0,
    ));
    // KVM routes GSI n to IOAPIC pin n (no IRQ0 → pin 2 remap), so the
    // overrides only state the trigger mode, identity-mapped.
    for irq in [platform.i8042.irq, platform.serial.irq] {
        madt.add_structure(InterruptSourceOverride {
            r#type: MADT_INTERRUPT_SOURCE_OVERRIDE,
            length: 10,
            bus: 0,
            source: irq as u8,
            gsi: irq.into(),
            flags: MPS_INTI_EDGE_HIGH.into(),
        });
    }
    madt.add_structure(LocalApicNmi {
        r#type: MADT_LOCAL_APIC_NMI,
        length: 6,
        processor_uid: ALL_PROCESSORS,
        flags: 0.into(),
        lint: 1,
    });
    let mut bytes = aml_bytes(&madt);
    // The crate writes flags 0; set PCAT_COMPAT and fix the checksum.
    bytes[40..44].copy_from_slice(&MADT_PCAT_COMPAT.to_le_bytes());
    set_checksum(&mut bytes, 9);
    bytes
}

/// Recomputes the byte at `offset` so that `bytes` sums to zero.
fn set_checksum(bytes: &mut [u8], offset: usize) {
    bytes[offset] = 0;
    let sum = bytes.iter().fold(0u8, |s, b| s.wrapping_add(*b));
    bytes[offset] = sum.wrapping_neg();
}

/// A one-byte register at I/O port `port`.
fn io_byte_register(port: u16) -> GAS {
    GAS::new(
        AddressSpace::SystemIo,
        8,
        0,
        AccessSize::ByteAccess,
        u64::from(port),
    )
}

/// The FADT of a hardware-reduced platform pointing at the DSDT, with the
/// sleep registers (power-off through `\_S5`) and the reset register.
/// There are no fixed power or sleep buttons.
fn fadt(dsdt_addr: u64, power: &PowerPorts) -> Vec<u8> {
    let mut builder = FADTBuilder::new(OEM_ID, table_id(b"FACP"), OEM_REVISION)
        .dsdt_64(dsdt_addr)
        .flag(Flags::Wbinvd)
        .flag(Flags::HwReducedAcpi)
        .flag(Flags::ResetRegSup)
        .flag(Flags::PwrButton)
        .flag(Flags::SlpButton);
    builder.iapc_boot_arch =
        (IAPC_8042 | IAPC_VGA_NOT_PRESENT | IAPC_MSI_NOT_SUPPORTED | IAPC_CMOS_RTC_NOT_PRESENT)
            .into();
    builder.sleep_control_reg = io_byte_register(power.sleep_control);
    builder.sleep_status_reg = io_byte_register(power.sleep_status);
    builder.reset_reg = io_byte_register(power.reset);
    builder.reset_value = power.reset_value;
    aml_bytes(&builder.finalize())
}

/// A device on the ISA ports: `_HID`, `_UID` and its ports and interrupt.
fn pio_device_aml(name: &str, hid: &str, ports: &[(u16, u8)], irq: Option<u32>) -> Vec<u8> {
    let ports: Vec<IO> = ports
        .iter()
        .map(|&(port, count)| IO::new(port, port, 1, count))
        .collect();
    let irq = irq.map(|irq| Interrupt::new(true, true, false, false, irq));
    let mut resources: Vec<&dyn Aml> = ports.iter().map(|p| p as &dyn Aml).collect();
    resources.extend(irq.as_ref().map(|i| i as &dyn Aml));
    let hid = EISAName::new(hid);
    let crs = ResourceTemplate::new(resources);
    aml_bytes(&Device::new(
        Path::new(name),
        vec![
            &Name::new("_HID".into(), &hid),
            &Name::new("_UID".into(), &aml::ZERO),
            &Name::new("_CRS".into(), &crs),
        ],
    ))
}

/// One `LNRO0005` device: its register window and its interrupt.
/// The interrupt is edge-triggered, active high: an irqfd pulses it.
fn virtio_device_aml(index: usize, device: &MmioDevice) -> Vec<u8> {
    let uid = index as u64;
    let window = Memory32Fixed::new(true, device.base as u32, device.len as u32);
    let irq = Interrupt::new(true, true, false, false, device.gsi);
    let crs = ResourceTemplate::new(vec![&window, &irq]);
    aml_bytes(&Device::new(
        Path::new(&format!("V{index:03X}")),
        vec![
            &Name::new("_HID".into(), &VIRTIO_MMIO_HID),
            &Name::new("_UID".into(), &uid),
            &Name::new("_CRS".into(), &crs),
        ],
    ))
}

/// An integer always encoded as a `DWordConst` (ACPI 6.5, 20.2.3), where
/// the crate's integers take the shortest encoding. The `ADDR` package
/// then has the same shape whatever the address, which is what the test
/// guest (`tests/guests/vmgenid.S`) parses.
struct DWordConst(u32);

/// AML `DWordPrefix`.
const DWORD_PREFIX: u8 = 0x0c;

impl Aml for DWordConst {
    fn to_aml_bytes(&self, sink: &mut dyn AmlSink) {
        sink.byte(DWORD_PREFIX);
        sink.vec(&self.0.to_le_bytes());
    }
}

/// The VM generation id device (Microsoft's "Virtual Machine Generation
/// ID" specification): `_HID`, `_CID`, `_DDN`, and `ADDR` returning
/// `Package { low 32 bits, high 32 bits }` of the id's address, which is
/// what Linux's driver evaluates.
fn vmgenid_aml(genid: &GenerationId) -> Vec<u8> {
    let low = DWordConst(genid.addr as u32);
    let high = DWordConst((genid.addr >> 32) as u32);
    let addr = Package::new(vec![&low, &high]);
    let ret = Return::new(&addr);
    aml_bytes(&Device::new(
        Path::new("VGEN"),
        vec![
            &Name::new("_HID".into(), &VMGENID_HID),
            &Name::new("_CID".into(), &VMGENID_CID),
            &Name::new("_DDN".into(), &VMGENID_CID),
            &Method::new("ADDR".into(), 0, false, vec![&ret]),
        ],
    ))
}

/// The Generic Event Device of a hardware-reduced platform (ACPI 6.5,
/// 5.6.9): its one interrupt (edge, active high: an irqfd pulses it) runs
/// `_EVT` with the GSI, which notifies `VGEN` that the id changed.
fn ged_aml(genid: &GenerationId) -> Vec<u8> {
    let irq = Interrupt::new(true, true, false, false, genid.gsi);
    let crs = ResourceTemplate::new(vec![&irq]);
    let vgen = Path::new(VMGENID_PATH);
    let notify = Notify::new(&vgen, &VMGENID_CHANGED);
    let is_vgen = Equal::new(&Arg(0), &genid.gsi);
    let on_vgen = If::new(&is_vgen, vec![&notify]);
    aml_bytes(&Device::new(
        Path::new("GED_"),
        vec![
            &Name::new("_HID".into(), &GED_HID),
            &Name::new("_UID".into(), &aml::ZERO),
            &Name::new("_CRS".into(), &crs),
            &Method::new("_EVT".into(), 1, true, vec![&on_vgen]),
        ],
    ))
}

/// The DSDT: every device under `\_SB`.
fn dsdt(platform: &AcpiPlatform) -> Vec<u8> {
    // The power-control ports and the other VMM ports, reserved on the
    // motherboard so that nothing else is given them.
    let power = &platform.power;
    let mut reserved: Vec<(u16, u8)> = vec![
        (power.sleep_control, 1),
        (power.sleep_status, 1),
        (power.reset, 1),
    ];
    reserved.extend_from_slice(platform.reserved_ports);
    let (serial, i8042) = (&platform.serial, &platform.i8042);
    let mut devices = vec![
        pio_device_aml("COM1", "PNP0501", serial.ports, Some(serial.irq)),
        pio_device_aml("PS2K", "PNP0303", i8042.ports, Some(i8042.irq)),
        pio_device_aml("RES0", "PNP0C02", &reserved, None),
    ];
    devices.extend(
        platform
            .virtio
            .iter()
            .enumerate()
            .map(|(i, d)| virtio_device_aml(i, d)),
    );
    if let Some(genid) = &platform.vmgenid {
        devices.push(vmgenid_aml(genid));
        devices.push(ged_aml(genid));
    }
    let raw: Vec<RawAml> = devices.into_iter().map(RawAml).collect();
    let children: Vec<&dyn Aml> = raw.iter().map(|r| r as &dyn Aml).collect();
    // \_S5: the SLP_TYP values (a and b) that soft-off writes.
    let s5_type = platform.power.s5_sleep_type;
    let s5_package = Package::new(vec![&s5_type, &s5_type]);
    let s5 = Name::new("_S5_".into(), &s5_package);
    let mut sdt = Sdt::new(
        *b"DSDT",
        36,
        DSDT_REVISION,
        OEM_ID,
        table_id(b"DSDT"),
        OEM_REVISION,
    );
    s5.to_aml_bytes(&mut sdt);
    Scope::new("\\_SB_".into(), children).to_aml_bytes(&mut sdt);
    sdt.update_checksum();
    sdt.as_slice().to_vec()
}

/// Already-encoded AML, to nest in a scope.
struct RawAml(Vec<u8>);

impl Aml for RawAml {
    fn to_aml_bytes(&self, sink: &mut dyn AmlSink) {
        sink.vec(&self.0);
    }
}

fn align(addr: u64) -> u64 {
    addr.next_multiple_of(TABLE_ALIGN)
}

/// Lays out every table for `platform` in the ACPI area.
pub fn create_acpi_tables(platform: &AcpiPlatform) -> Result<AcpiTables, AcpiError> {
    let rsdp_len = Rsdp::len() as u64;
    let dsdt = dsdt(platform);
    let dsdt_addr = align(RSDP_ADDR + rsdp_len);
    let fadt_addr = align(dsdt_addr + dsdt.len() as u64);
    let fadt = fadt(dsdt_addr, &platform.power);
    let madt_addr = align(fadt_addr + fadt.len() as u64);
    let madt = madt(platform);
    let xsdt_addr = align(madt_addr + madt.len() as u64);
    let mut xsdt = XSDT::new(OEM_ID, table_id(b"XSDT"), OEM_REVISION);
    xsdt.add_entry(fadt_addr);
    xsdt.add_entry(madt_addr);
    let xsdt = aml_bytes(&xsdt);
    let end = xsdt_addr + xsdt.len() as u64;
    if end > ACPI_END {
        return Err(AcpiError::TooLarge(end - ACPI_START));
    }
    let rsdp = aml_bytes(&Rsdp::new(OEM_ID, xsdt_addr));
    Ok(AcpiTables {
        tables: vec![
            (RSDP_ADDR, rsdp),
            (dsdt_addr, dsdt),
            (fadt_addr, fadt),
            (madt_addr, madt),
            (xsdt_addr, xsdt),
        ],
    })
}

#[cfg(test)]
mod tests {
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
}
