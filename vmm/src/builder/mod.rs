//! Building a VM from its spec: one short, linear recipe of small steps
//! (check → memory → kernel → VM → devices → vCPUs), each a public function
//! that can be tested on its own.
//!
//! Every check a user can fail (bad spec, missing or invalid kernel, too
//! little memory, unwritable serial file) runs before any VM is created.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use kvm_bindings::{CpuId, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::Kvm;
use resources::{
    insert_kernel_args, split_init_args, SerialConfig, SpecError, VmSpec, MAX_KERNEL_CMDLINE_LEN,
};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::arch::x86_64::acpi::{
    create_acpi_tables, AcpiError, AcpiPlatform, GenerationId, MmioDevice, PioDevice, PowerPorts,
    RSDP_ADDR,
};
use crate::arch::x86_64::boot_params::{
    e820_map, linux_boot_params, write_pvh_start_info, InitrdPlacement,
};
use crate::arch::x86_64::cpuid::Topology;
use crate::arch::x86_64::layout::{IDENTITY_MAPPED_END, ZERO_PAGE_START};
use crate::arch::x86_64::mptable::{setup_mptable, MptableError};
use crate::arch::x86_64::regs::{setup_gdt_idt, setup_page_tables, BootEntry};
use crate::console::{own_description, ConsoleDrain, ConsoleOutput};
use crate::device_manager::{
    attach_legacy_devices, DeviceError, MmioSlot, SerialOutput, ACPI_POWER_PORT, BOOT_TIMER_PORT,
    GED_GSI, I8042_KBD_IRQ, I8042_PORT, SERIAL_IRQ, SERIAL_PORT, SERIAL_PORT_LEN, VMGENID_ADDR,
};
use crate::loader::{
    check_kernel_fits, load_cmdline, load_initrd, load_kernel, place_initrd, probe_kernel,
    KernelInfo, LoaderError,
};
use crate::memory::{create_guest_memory_with, MemoryError};
use crate::vstate::exit::IoBuses;
use crate::vstate::vcpu::{Vcpu, VcpuError};
use crate::vstate::vm::{Vm, VmError};
use crate::Vmm;
use devices::legacy::{
    ACPI_RESET_OFFSET, ACPI_RESET_VALUE, ACPI_SLEEP_CONTROL_OFFSET, ACPI_SLEEP_STATUS_OFFSET,
    S5_SLEEP_TYPE,
};
use devices::virtio::MMIO_REGION_SIZE;

mod balloon;
mod virtio;

pub use balloon::BalloonHandle;

pub use virtio::{
    attach_virtio_devices, open_device_backends, ordered_drives, virtio_layout, BackendError,
    DeviceBackends, FlushError, LimiterError, LimiterUpdateError, SwapError, VirtioDevices,
    VirtioSlotKind,
};

/// Path of the KVM device.
pub const KVM_PATH: &str = "/dev/kvm";

/// The VM could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// `/dev/kvm` cannot be opened.
    #[error("cannot open {KVM_PATH}: {0} (run `podvm doctor`)")]
    OpenKvm(#[source] kvm_ioctls::Error),
    /// The spec is invalid.
    #[error("{0}")]
    Spec(#[from] SpecError),
    /// The kernel or initrd cannot be used.
    #[error("{0}")]
    Loader(#[from] LoaderError),
    /// The serial output file cannot be opened.
    #[error("serial output {}: {source}", path.display())]
    SerialFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// `KVM_GET_SUPPORTED_CPUID` or `KVM_GET_MSR_INDEX_LIST` failed.
    #[error("cannot query KVM's {what}: {source}")]
    KvmQuery {
        /// What was being queried.
        what: &'static str,
        /// The KVM error.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// Guest memory could not be created.
    #[error("{0}")]
    Memory(#[from] MemoryError),
    /// Writing boot structures to guest memory failed.
    #[error("cannot write {what} to guest memory: {source}")]
    BootSetup {
        /// What was being written.
        what: &'static str,
        /// The memory error.
        #[source]
        source: vm_memory::GuestMemoryError,
    },
    /// The ACPI tables could not be written.
    #[error("{0}")]
    Acpi(#[from] AcpiError),
    /// The MP table could not be written.
    #[error("{0}")]
    Mptable(#[from] MptableError),
    /// A VM-level KVM call failed.
    #[error("{0}")]
    Vm(#[from] VmError),
    /// A device could not be set up.
    #[error("{0}")]
    Device(#[from] DeviceError),
    /// A vCPU could not be created or configured.
    #[error("{0}")]
    Vcpu(#[from] VcpuError),
    /// A device backend (disk image, tap) cannot be used.
    #[error("{0}")]
    Backend(#[from] BackendError),
    /// The command line with the device entries podvm adds is too long.
    #[error(
        "kernel command line with podvm's device entries is {0} bytes long; the limit is {MAX_KERNEL_CMDLINE_LEN} bytes"
    )]
    CmdlineWithDevicesTooLong(usize),
}

impl BuildError {
    /// Whether the user's configuration is at fault (exit code 2) rather
    /// than the host (exit code 1).
    pub fn is_config_error(&self) -> bool {
        match self {
            BuildError::Spec(_)
            | BuildError::SerialFile { .. }
            | BuildError::Backend(_)
            | BuildError::CmdlineWithDevicesTooLong(_) => true,
            BuildError::Loader(e) => e.is_config_error(),
            _ => false,
        }
    }
}

/// Host inputs of a build that are not part of the spec.
pub struct BuildContext {
    /// When the VMM process started (for the boot timer).
    pub start_time: Instant,
}

/// The files of a spec, opened and checked.
pub struct BootFiles {
    /// The kernel image.
    pub kernel: File,
    /// What its headers say.
    pub kernel_info: KernelInfo,
    /// The initrd and where it goes.
    pub initrd: Option<(File, InitrdPlacement)>,
}

/// Opens `/dev/kvm` and checks the vCPU count against its limit.
pub fn open_kvm(spec: &VmSpec) -> Result<Kvm, BuildError> {
    let kvm = Kvm::new().map_err(BuildError::OpenKvm)?;
    spec.validate(kvm.get_max_vcpus() as u32)?;
    Ok(kvm)
}

/// Opens the kernel and initrd and checks that both fit in guest memory.
pub fn open_boot_files(spec: &VmSpec) -> Result<BootFiles, LoaderError> {
    let boot = &spec.boot_source;
    let mem_size = spec.machine.mem_size_bytes();
    let path = &boot.kernel_image_path;
    let mut kernel = File::open(path).map_err(|source| LoaderError::OpenKernel {
        path: path.clone(),
        source,
    })?;
    let kernel_info = probe_kernel(&mut kernel, path)?;
    check_kernel_fits(&kernel_info, mem_size, path)?;
    let initrd = match &boot.initrd_path {
        None => None,
        Some(path) => {
            let open_err = |source| LoaderError::OpenInitrd {
                path: path.clone(),
                source,
            };
            let file = File::open(path).map_err(open_err)?;
            let meta = file.metadata().map_err(open_err)?;
            if !meta.is_file() {
                return Err(LoaderError::InitrdNotAFile { path: path.clone() });
            }
            let size = meta.len();
            let placement = place_initrd(&kernel_info, mem_size, size, path)?;
            Some((file, placement))
        }
    };
    Ok(BootFiles {
        kernel,
        kernel_info,
        initrd,
    })
}

/// The command line the guest gets: the user's kernel parameters, then
/// `root=/dev/vda` (`root=PARTUUID=<uuid>` for a drive with a `partuuid`;
/// and `ro` or `rw`, unless the user gave one) for a root
/// drive unless the user chose a root, then one entry per virtio device,
/// then whatever the user passes to init after ` -- `.
pub fn kernel_cmdline(spec: &VmSpec) -> Result<String, BuildError> {
    let user = spec.boot_source.cmdline();
    let (kernel_args, _) = split_init_args(user);
    let has = |p: &dyn Fn(&str) -> bool| kernel_args.split_whitespace().any(p);
    let mut extra: Vec<String> = Vec::new();
    if let Some(root) = ordered_drives(spec).first().filter(|d| d.is_root_device) {
        if !has(&|w| w.starts_with("root=")) {
            // Firecracker's `partuuid`: boot from that partition of the
            // root disk rather than the whole disk.
            extra.push(match &root.partuuid {
                Some(uuid) => format!("root=PARTUUID={uuid}"),
                None => "root=/dev/vda".into(),
            });
            if !has(&|w| w == "ro" || w == "rw") {
                extra.push(if root.is_read_only { "ro" } else { "rw" }.into());
            }
        }
    }
    extra.extend((0..virtio_layout(spec).len()).map(|i| MmioSlot::nth(i).cmdline_entry()));
    let cmdline = insert_kernel_args(user, &extra.join(" "));
    if cmdline.len() > MAX_KERNEL_CMDLINE_LEN {
        return Err(BuildError::CmdlineWithDevicesTooLong(cmdline.len()));
    }
    Ok(cmdline)
}

/// Opens where the serial console writes; for a terminal or pipe, also the
/// event-loop half that drains output the reader was not ready for.
pub fn open_serial_output(
    config: &SerialConfig,
) -> Result<(SerialOutput, Option<ConsoleDrain>), BuildError> {
    Ok(match config {
        SerialConfig::Stdout => {
            let stdout_err = |source| BuildError::SerialFile {
                path: "standard output".into(),
                source,
            };
            let (file, nonblocking) =
                own_description(io::stdout().as_fd(), true).map_err(stdout_err)?;
            if nonblocking {
                let (out, drain) = ConsoleOutput::new(file).map_err(stdout_err)?;
                (Box::new(out), Some(drain))
            } else {
                (Box::new(file), None)
            }
        }
        SerialConfig::Off => (Box::new(io::sink()), None),
        SerialConfig::File(path) => (
            Box::new(File::create(path).map_err(|source| BuildError::SerialFile {
                path: path.clone(),
                source,
            })?),
            None,
        ),
    })
}

/// Loads the kernel, initrd and command line and writes every boot
/// structure the kernel reads but the ACPI tables ([`write_acpi_tables`],
/// once the devices they describe exist). Returns how the boot vCPU enters it.
pub fn load_guest(
    mem: &GuestMemoryMmap,
    spec: &VmSpec,
    cmdline: &str,
    files: &mut BootFiles,
) -> Result<BootEntry, BuildError> {
    let kernel_path = &spec.boot_source.kernel_image_path;
    let kernel = load_kernel(mem, &mut files.kernel, &files.kernel_info, kernel_path)?;
    if let BootEntry::Linux64 { entry } = kernel.entry {
        if entry >= IDENTITY_MAPPED_END {
            return Err(LoaderError::EntryNotMapped {
                path: kernel_path.clone(),
                entry,
            }
            .into());
        }
    }
    let initrd = match &mut files.initrd {
        Some((file, placement)) => {
            let path = spec
                .boot_source
                .initrd_path
                .as_deref()
                .unwrap_or(Path::new(""));
            load_initrd(mem, file, path, *placement)?;
            Some(*placement)
        }
        None => None,
    };
    load_cmdline(mem, cmdline)?;

    let e820 = e820_map(spec.machine.mem_size_bytes());
    // The tables themselves are written once the devices exist
    // (`write_acpi_tables`); where they start is fixed.
    let rsdp = RSDP_ADDR;
    let write_err = |what| move |source| BuildError::BootSetup { what, source };
    match kernel.entry {
        BootEntry::Linux64 { .. } => {
            let params = linux_boot_params(&e820, cmdline.len(), initrd, kernel.setup_header, rsdp);
            mem.write_obj(params, GuestAddress(ZERO_PAGE_START))
                .map_err(write_err("the zero page"))?;
            setup_page_tables(mem).map_err(write_err("the page tables"))?;
        }
        BootEntry::Pvh { .. } => {
            write_pvh_start_info(mem, &e820, initrd, rsdp)
                .map_err(write_err("the PVH start info"))?;
        }
    }
    setup_gdt_idt(mem, kernel.entry).map_err(write_err("the GDT"))?;
    setup_mptable(mem, spec.machine.vcpu_count)?;
    Ok(kernel.entry)
}

/// Writes the ACPI tables describing `spec`'s vCPUs, the virtio devices
/// attached in `slots`, and the legacy devices [`attach_legacy_devices`]
/// creates, at [`RSDP_ADDR`].
pub fn write_acpi_tables(
    mem: &GuestMemoryMmap,
    spec: &VmSpec,
    slots: &[MmioSlot],
) -> Result<(), BuildError> {
    let virtio: Vec<MmioDevice> = slots
        .iter()
        .map(|slot| MmioDevice {
            base: slot.base,
            len: MMIO_REGION_SIZE,
            gsi: slot.gsi,
        })
        .collect();
    create_acpi_tables(&acpi_platform(spec, &virtio))?.write_to(mem)?;
    Ok(())
}

/// What the ACPI tables describe for `spec`: its vCPUs, `virtio`, and the
/// legacy devices [`attach_legacy_devices`] creates (the VM generation id
/// among them).
fn acpi_platform<'a>(spec: &VmSpec, virtio: &'a [MmioDevice]) -> AcpiPlatform<'a> {
    AcpiPlatform {
        vcpu_count: spec.machine.vcpu_count,
        virtio,
        serial: PioDevice {
            ports: &[(SERIAL_PORT as u16, SERIAL_PORT_LEN as u8)],
            irq: SERIAL_IRQ,
        },
        i8042: PioDevice {
            // The data and the command/status port; 0x61–0x63 are not its.
            ports: &[(I8042_PORT as u16, 1), (I8042_PORT as u16 + 4, 1)],
            irq: I8042_KBD_IRQ,
        },
        power: PowerPorts {
            sleep_control: (ACPI_POWER_PORT + u64::from(ACPI_SLEEP_CONTROL_OFFSET)) as u16,
            sleep_status: (ACPI_POWER_PORT + u64::from(ACPI_SLEEP_STATUS_OFFSET)) as u16,
            reset: (ACPI_POWER_PORT + u64::from(ACPI_RESET_OFFSET)) as u16,
            reset_value: ACPI_RESET_VALUE,
            s5_sleep_type: S5_SLEEP_TYPE,
        },
        reserved_ports: &[(BOOT_TIMER_PORT as u16, 1)],
        vmgenid: Some(GenerationId {
            addr: VMGENID_ADDR,
            gsi: GED_GSI,
        }),
    }
}

/// Creates and configures every vCPU.
pub fn create_vcpus(
    kvm: &Kvm,
    vm: &Vm,
    spec: &VmSpec,
    io: &Arc<IoBuses>,
    mem: &GuestMemoryMmap,
    entry: BootEntry,
) -> Result<Vec<Vcpu>, BuildError> {
    let cpuid: CpuId = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(|source| BuildError::KvmQuery {
            what: "supported CPUID",
            source,
        })?;
    let msrs = kvm
        .get_msr_index_list()
        .map_err(|source| BuildError::KvmQuery {
            what: "MSR index list",
            source,
        })?;
    let topology = Topology::new(spec.machine.vcpu_count, spec.machine.smt);
    let vcpus = (0..spec.machine.vcpu_count)
        .map(|index| Vcpu::new(vm.fd(), index, io.clone(), mem.clone()))
        .collect::<Result<Vec<_>, _>>()?;
    // Configure only once every vCPU exists: setting each LAPIC then makes
    // KVM rebuild its APIC map with all of them, without which INIT/SIPI
    // from the guest may miss the last-created vCPU.
    for vcpu in &vcpus {
        vcpu.configure(&cpuid, &msrs, topology, entry)?;
    }
    Ok(vcpus)
}

impl Vmm {
    /// Builds the VM described by `spec`, ready to run.
    pub fn build(spec: &VmSpec, ctx: &BuildContext) -> Result<Vmm, BuildError> {
        let mut step = StepTimer::new();
        // Everything the user can get wrong is checked first, without KVM.
        spec.validate(u32::MAX)?;
        let mut files = open_boot_files(spec)?;
        let (serial_out, console_drain) = open_serial_output(&spec.serial)?;
        let cmdline = kernel_cmdline(spec)?;
        let backends = open_device_backends(spec)?;
        step.done("checks and files");
        let kvm = open_kvm(spec)?;
        step.done("open /dev/kvm");

        let memory =
            create_guest_memory_with(spec.machine.mem_size_bytes(), spec.machine.huge_pages)?;
        step.done("guest memory");
        let entry = load_guest(&memory, spec, &cmdline, &mut files)?;
        step.done("kernel and boot structures");

        let vm = Vm::new(&kvm)?;
        step.done("KVM VM");
        if spec.machine.track_dirty_pages {
            vm.register_memory_with_dirty_log(&memory)?;
        } else {
            vm.register_memory(&memory)?;
        }
        step.done("memory slots");
        vm.setup_irqchip()?;
        step.done("irqchip and PIT");
        let mut io = IoBuses::default();
        let legacy =
            attach_legacy_devices(&vm, &mut io.pio, &memory, serial_out, ctx.start_time, None)?;
        let virtio = attach_virtio_devices(&vm, &mut io.mmio, &memory, spec, backends)?;
        let io = Arc::new(io);
        step.done("devices");
        write_acpi_tables(&memory, spec, &virtio.slots)?;
        step.done("ACPI tables");
        let vcpus = create_vcpus(&kvm, &vm, spec, &io, &memory, entry)?;
        step.done("vCPUs");

        Ok(Vmm::new(
            vm,
            memory,
            vcpus,
            legacy,
            console_drain,
            virtio,
            crate::snapshot::SnapshotSupport::new(kvm),
        ))
    }
}

/// Logs how long each build step took, at debug level.
struct StepTimer {
    last: Instant,
}

impl StepTimer {
    fn new() -> Self {
        StepTimer {
            last: Instant::now(),
        }
    }

    fn done(&mut self, step: &str) {
        let now = Instant::now();
        log::debug!("build: {step}: {} us", (now - self.last).as_micros());
        self.last = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use resources::{DriveConfig, MachineConfig};

    fn spec(cmdline: &str, drives: Vec<DriveConfig>) -> VmSpec {
        VmSpec {
            machine: MachineConfig::default(),
            boot_source: resources::BootSourceConfig {
                kernel_image_path: "/k".into(),
                boot_args: Some(cmdline.into()),
                initrd_path: None,
            },
            serial: SerialConfig::Off,
            drives,
            net: Vec::new(),
            entropy: false,
            entropy_rate_limiter: None,
            vsock: None,
            balloon: None,
        }
    }

    #[test]
    fn a_root_partuuid_names_the_partition_before_the_init_arguments() {
        let root = DriveConfig {
            drive_id: "root".into(),
            path_on_host: "/r".into(),
            is_root_device: true,
            is_read_only: true,
            partuuid: Some("0eaa91a0-01".into()),
            ..Default::default()
        };
        assert_eq!(
            kernel_cmdline(&spec("console=ttyS0 -- single", vec![root.clone()])).unwrap(),
            "console=ttyS0 root=PARTUUID=0eaa91a0-01 ro virtio_mmio.device=4K@0xd0000000:5 -- single"
        );
        // A root= of the user's own wins.
        assert_eq!(
            kernel_cmdline(&spec("root=/dev/vdb1", vec![root])).unwrap(),
            "root=/dev/vdb1 virtio_mmio.device=4K@0xd0000000:5"
        );
    }
}
