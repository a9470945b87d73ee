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
#[path = "acpi_tests.rs"]
mod tests;
