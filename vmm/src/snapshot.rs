//! Snapshots of a whole pod-VM, and VMs restored from them: the VMM's
//! payload (the configuration, the KVM state of [`crate::persist`], every
//! device's state) around the memory file.
//!
//! A snapshot is taken of a paused VM ([`RunningVm::snapshot`]): pending
//! device work is handled first, the disks are flushed, the vCPUs and the
//! VM are saved, guest memory is written (all of it, sparse, or only what
//! changed since the last snapshot), then the state file. A restore
//! ([`Vmm::restore`]) builds the same machine from the state file: guest
//! memory mapped copy-on-write from the memory file, the devices attached
//! to the same backends (a network interface may get another tap) and put
//! back where they were, every vCPU given its state, and a new VM
//! generation id announced to the guest. Nothing of a failed restore
//! stays behind: it is one function returning a value.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kvm_ioctls::Kvm;
use resources::{MacAddr, VmSpec};
use serde::{Deserialize, Serialize};

use crate::builder::{
    attach_virtio_devices, open_device_backends, open_kvm, open_serial_output, BuildError,
};
use crate::device_manager::{attach_legacy_devices, DeviceError, LegacyState};
use crate::persist::{
    read_state_file, restore_guest_memory, write_diff_memory, write_full_memory, write_state_file,
    CaptureError, HostCpu, MachineState, MemorySnapshotError, StateFileError, VcpuStateError,
    VcpuStateSupport,
};
use crate::runtime::RunningVm;
use crate::vstate::exit::IoBuses;
use crate::vstate::vcpu::{Vcpu, VcpuError};
use crate::vstate::vm::{Vm, VmError};
use crate::{BuildContext, Vmm};
use devices::virtio::persist::{RestoreError, TransportState};

/// How long a vCPU may take to hand over its state.
const SAVE_TIMEOUT: Duration = Duration::from_secs(5);

/// What a VM keeps for taking snapshots of it.
pub struct SnapshotSupport {
    /// The KVM system fd (CPUID and MSR queries at snapshot time).
    kvm: Kvm,
}

impl SnapshotSupport {
    /// Support for VMs of `kvm`.
    pub fn new(kvm: Kvm) -> Self {
        SnapshotSupport { kvm }
    }
}

/// Everything a snapshot's state file holds besides the KVM container's
/// header.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SnapshotPayload {
    /// The VM's configuration (network interfaces with the MAC address
    /// the guest has).
    pub spec: VmSpec,
    /// vCPUs, VM, memory layout.
    pub machine: MachineState,
    /// The devices.
    pub devices: DevicesState,
}

/// Every device's state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DevicesState {
    /// The UART and the i8042.
    pub legacy: LegacyState,
    /// Each virtio-mmio device, in slot order.
    pub virtio: Vec<TransportState>,
    /// The balloon's own state (target, statistics, hinting), if it has
    /// one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balloon: Option<devices::virtio::balloon::BalloonState>,
}

/// What kind of snapshot to take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotKind {
    /// All of guest memory, into a new memory file.
    Full,
    /// Only what changed since the last snapshot, into its memory file.
    Diff,
}

/// A snapshot could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The VM runs.
    #[error("the VM is not paused (PATCH /vm {{\"state\": \"Paused\"}} first)")]
    NotPaused,
    /// A Diff needs dirty-page tracking.
    #[error("a Diff snapshot needs track_dirty_pages in machine-config (or in the snapshot load that made this VM)")]
    NoDirtyTracking,
    /// Pending device work could not be handled.
    #[error("cannot finish the devices' pending work: {0}")]
    Devices(String),
    /// A disk could not be flushed.
    #[error("{0}")]
    Flush(#[from] crate::builder::FlushError),
    /// The host's CPU or KVM could not be queried.
    #[error("{0}")]
    Support(#[from] VcpuStateError),
    /// The vCPUs or the VM could not be saved.
    #[error("{0}")]
    Capture(#[from] CaptureError),
    /// The memory file cannot be opened or created.
    #[error("memory file {}: {source}", path.display())]
    OpenMemoryFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Guest memory could not be written.
    #[error("memory file {}: {source}", path.display())]
    Memory {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: MemorySnapshotError,
    },
    /// The state file could not be written.
    #[error("{0}")]
    StateFile(#[from] StateFileError),
}

/// What a snapshot wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotStats {
    /// Guest pages written to the memory file.
    pub pages: u64,
    /// How long it took.
    pub elapsed: Duration,
}

impl RunningVm {
    /// Takes a snapshot of this paused VM, described by `spec`: the state
    /// file at `state_path`, guest memory in `mem_path` (created for a
    /// `Full` snapshot, updated for a `Diff`). The caller has let the
    /// devices handle what was pending.
    pub fn snapshot(
        &mut self,
        spec: &VmSpec,
        kind: SnapshotKind,
        state_path: &Path,
        mem_path: &Path,
    ) -> Result<SnapshotStats, SnapshotError> {
        let start = Instant::now();
        if !self.is_paused() {
            return Err(SnapshotError::NotPaused);
        }
        if kind == SnapshotKind::Diff && !self.vm.logs_dirty_pages() {
            return Err(SnapshotError::NoDirtyTracking);
        }
        // What the guest wrote is on the disk with the snapshot.
        self.virtio.flush_disks()?;
        let support = Arc::new(VcpuStateSupport::probe(&self.snapshot.kvm, self.vm.fd())?);
        let host = HostCpu::detect(&self.snapshot.kvm)?;
        let machine = MachineState::capture(
            &self.vm,
            &self.handles,
            &self.memory,
            &support,
            SAVE_TIMEOUT,
        )?;
        let devices = DevicesState {
            legacy: self.legacy.save_state(),
            virtio: self
                .virtio
                .transports
                .iter()
                .map(|t| t.lock().unwrap_or_else(|e| e.into_inner()).save_state())
                .collect(),
            balloon: self.virtio.balloon.as_ref().map(|b| b.save_state()),
        };
        // Memory after the vCPUs: saving one may finish an instruction
        // that writes it.
        let open_err = |source| SnapshotError::OpenMemoryFile {
            path: mem_path.to_path_buf(),
            source,
        };
        let mem_err = |source| SnapshotError::Memory {
            path: mem_path.to_path_buf(),
            source,
        };
        let stats = match kind {
            SnapshotKind::Full => {
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(mem_path)
                    .map_err(open_err)?;
                write_full_memory(&self.memory, &file, Some(&self.vm)).map_err(mem_err)?
            }
            SnapshotKind::Diff => {
                let file = OpenOptions::new()
                    .write(true)
                    .open(mem_path)
                    .map_err(open_err)?;
                write_diff_memory(&self.memory, &file, &self.vm).map_err(mem_err)?
            }
        };
        let payload = SnapshotPayload {
            spec: self.spec_as_the_guest_sees_it(spec),
            machine,
            devices,
        };
        write_state_file(state_path, &payload, &host)?;
        Ok(SnapshotStats {
            pages: stats.pages,
            elapsed: start.elapsed(),
        })
    }

    /// `spec`, with each network interface's MAC address the one the
    /// guest has (a random one was chosen at boot when none was given).
    fn spec_as_the_guest_sees_it(&self, spec: &VmSpec) -> VmSpec {
        let mut spec = spec.clone();
        for (n, net) in spec.net.iter_mut().zip(&self.virtio.nets) {
            let mac = net.lock().unwrap_or_else(|e| e.into_inner()).mac();
            n.guest_mac = Some(MacAddr(mac));
        }
        spec
    }
}

/// A snapshot could not be loaded. Nothing of it stays behind.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The state file is unreadable, damaged or from another host.
    #[error("{0}")]
    StateFile(#[from] StateFileError),
    /// The memory file cannot be opened.
    #[error("memory file {}: {source}", path.display())]
    OpenMemoryFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The memory file does not fit the state file.
    #[error("memory file {}: {source}", path.display())]
    Memory {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: MemorySnapshotError,
    },
    /// A network override names an interface the snapshot does not have.
    #[error("network_overrides: the snapshot has no network interface {0:?}")]
    NoSuchInterface(String),
    /// The snapshot's configuration or devices do not fit together.
    #[error("the snapshot's devices do not match its configuration: {0}")]
    Devices(String),
    /// The VM could not be put together.
    #[error("{0}")]
    Build(#[from] BuildError),
    /// A device could not be put back where it was.
    #[error("{0}")]
    RestoreDevice(#[from] RestoreError),
    /// The VM's state could not be restored.
    #[error("{0}")]
    Vm(#[from] VmError),
    /// A vCPU's state could not be restored.
    #[error("{0}")]
    Vcpu(#[from] VcpuError),
}

impl LoadError {
    /// Whether the request is at fault (a bad file, path or override)
    /// rather than the host.
    pub fn is_config_error(&self) -> bool {
        match self {
            LoadError::StateFile(_)
            | LoadError::OpenMemoryFile { .. }
            | LoadError::Memory { .. }
            | LoadError::NoSuchInterface(_)
            | LoadError::Devices(_)
            | LoadError::RestoreDevice(_) => true,
            LoadError::Build(e) => e.is_config_error(),
            LoadError::Vm(_) | LoadError::Vcpu(_) => false,
        }
    }
}

/// What a restore needs besides the files.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// Taps for the restored VM's interfaces: `(iface_id, host_dev_name)`
    /// (a clone gets its own).
    pub network_overrides: Vec<(String, String)>,
    /// Whether KVM logs the pages the restored guest writes (for Diff
    /// snapshots of it).
    pub track_dirty_pages: bool,
}

/// Reads and checks a state file (magic, version, checksum, CPU vendor)
/// against this host's KVM.
pub fn read_snapshot(state_path: &Path) -> Result<SnapshotPayload, LoadError> {
    let kvm = Kvm::new().map_err(|e| LoadError::Build(BuildError::OpenKvm(e)))?;
    let host = HostCpu::detect(&kvm)?;
    let (_, payload) = read_state_file(state_path, &host)?;
    Ok(payload)
}

impl Vmm {
    /// Builds the VM a snapshot describes, ready to run where it stopped:
    /// guest memory mapped copy-on-write from `mem_path` (no page is
    /// copied), devices on their backends (the taps `options` name) and in
    /// their saved state, every vCPU with its saved state. A vsock device's
    /// connections are gone: the guest is told so (transport reset).
    pub fn restore(
        payload: SnapshotPayload,
        mem_path: &Path,
        options: &LoadOptions,
        ctx: &BuildContext,
    ) -> Result<Vmm, LoadError> {
        let SnapshotPayload {
            mut spec,
            machine,
            devices,
        } = payload;
        for (iface, tap) in &options.network_overrides {
            let n = spec
                .net
                .iter_mut()
                .find(|n| &n.iface_id == iface)
                .ok_or_else(|| LoadError::NoSuchInterface(iface.clone()))?;
            n.host_dev_name = tap.clone();
        }
        spec.machine.track_dirty_pages = options.track_dirty_pages;
        if machine.vcpus.len() != usize::from(spec.machine.vcpu_count) {
            return Err(LoadError::Devices(format!(
                "{} vCPU states for vcpu_count {}",
                machine.vcpus.len(),
                spec.machine.vcpu_count
            )));
        }
        let slots = crate::builder::virtio_layout(&spec).len();
        if devices.virtio.len() != slots {
            return Err(LoadError::Devices(format!(
                "{} virtio device states for {slots} devices",
                devices.virtio.len()
            )));
        }
        spec.validate(u32::MAX).map_err(BuildError::from)?;
        let mem_file = File::open(mem_path).map_err(|source| LoadError::OpenMemoryFile {
            path: mem_path.to_path_buf(),
            source,
        })?;
        let memory = restore_guest_memory(mem_file, &machine.memory).map_err(|source| {
            LoadError::Memory {
                path: mem_path.to_path_buf(),
                source,
            }
        })?;
        let (serial_out, console_drain) = open_serial_output(&spec.serial)?;
        let backends = open_device_backends(&spec).map_err(BuildError::from)?;
        let kvm = open_kvm(&spec)?;

        let vm = Vm::new(&kvm).map_err(BuildError::from)?;
        if spec.machine.track_dirty_pages {
            vm.register_memory_with_dirty_log(&memory)
        } else {
            vm.register_memory(&memory)
        }
        .map_err(BuildError::from)?;
        vm.setup_irqchip().map_err(BuildError::from)?;
        vm.restore_state(&machine.vm)?;
        let mut io = IoBuses::default();
        let legacy = attach_legacy_devices(
            &vm,
            &mut io.pio,
            &memory,
            serial_out,
            ctx.start_time,
            Some(&devices.legacy),
        )
        .map_err(BuildError::from)?;
        let virtio = attach_virtio_devices(&vm, &mut io.mmio, &memory, &spec, backends)?;
        for (transport, state) in virtio.transports.iter().zip(&devices.virtio) {
            transport
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .restore_state(state)?;
        }
        match (&virtio.balloon, &devices.balloon) {
            (Some(b), Some(state)) => b.restore_state(state).map_err(LoadError::Devices)?,
            (None, None) => {}
            (Some(_), None) => {
                return Err(LoadError::Devices("the balloon's state is missing".into()))
            }
            (None, Some(_)) => {
                return Err(LoadError::Devices(
                    "a balloon state for a VM without a balloon".into(),
                ))
            }
        }
        if let Some(vsock) = &virtio.vsock {
            // Its host streams did not survive; the guest's connections end.
            vsock
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .transport_reset();
        }
        let io = Arc::new(io);
        let support = VcpuStateSupport::probe(&kvm, vm.fd())
            .map_err(|e| LoadError::Devices(e.to_string()))?;
        // Every vCPU exists before any gets its LAPIC (KVM's APIC map).
        let vcpus = (0..spec.machine.vcpu_count)
            .map(|index| Vcpu::new(vm.fd(), index, io.clone(), memory.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        for (vcpu, state) in vcpus.iter().zip(&machine.vcpus) {
            vcpu.restore_state(state, &support)?;
        }
        // The guest learns of its new generation id last: restoring the
        // irqchip or a LAPIC would drop an interrupt raised before it.
        legacy
            .vmgenid
            .notify()
            .map_err(|e| BuildError::from(DeviceError::VmGenId(e)))?;
        Ok(Vmm::new(
            vm,
            memory,
            vcpus,
            legacy,
            console_drain,
            virtio,
            SnapshotSupport::new(kvm),
        ))
    }
}
