//! The virtio devices of a spec: which goes in which MMIO slot, their
//! host backends (opened before any VM exists, so that a missing image or
//! tap is a configuration error), and their creation.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use devices::virtio::block::{Block, BlockError};
use devices::virtio::net::{random_mac, Net, NetError, Tap, TapError};
use devices::virtio::rng::Rng;
use resources::{DriveConfig, VmSpec};
use vm_memory::GuestMemoryMmap;

use super::BuildError;
use crate::device_manager::{attach_virtio_device, DeviceError, MmioSlot, Subscriber};
use crate::vstate::vm::Vm;

/// The kinds of virtio device, in the order they take MMIO slots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VirtioSlotKind {
    /// The `n`-th drive of [`ordered_drives`].
    Drive(usize),
    /// The `n`-th network interface.
    Net(usize),
    /// The entropy device.
    Rng,
}

/// The drives in the order the guest sees them: the root drive first, so
/// that it is `/dev/vda`, then the others as given.
pub fn ordered_drives(spec: &VmSpec) -> Vec<&DriveConfig> {
    let (root, rest): (Vec<_>, Vec<_>) = spec.drives.iter().partition(|d| d.is_root_device);
    root.into_iter().chain(rest).collect()
}

/// Which virtio device goes in which MMIO slot.
pub fn virtio_layout(spec: &VmSpec) -> Vec<VirtioSlotKind> {
    let drives = (0..spec.drives.len()).map(VirtioSlotKind::Drive);
    let nets = (0..spec.net.len()).map(VirtioSlotKind::Net);
    let rng = spec.entropy.then_some(VirtioSlotKind::Rng);
    drives.chain(nets).chain(rng).collect()
}

/// The host side of the spec's devices, opened and checked.
pub struct DeviceBackends {
    /// Disk images, in [`ordered_drives`] order.
    pub disks: Vec<File>,
    /// Taps, in the spec's interface order.
    pub taps: Vec<Tap>,
}

/// A device backend could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// A disk image cannot be opened.
    #[error("drive {id:?}: cannot open {}: {source}", path.display())]
    OpenDisk {
        /// The drive.
        id: String,
        /// The image.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A disk image cannot be used.
    #[error("drive {id:?}: {source}")]
    Disk {
        /// The drive.
        id: String,
        /// What went wrong.
        #[source]
        source: BlockError,
    },
    /// A tap cannot be opened.
    #[error("network interface {iface:?}: {source}")]
    OpenTap {
        /// The interface.
        iface: String,
        /// What went wrong.
        #[source]
        source: TapError,
    },
    /// A network device cannot be created.
    #[error("network interface {iface:?}: {source}")]
    Net {
        /// The interface.
        iface: String,
        /// What went wrong.
        #[source]
        source: NetError,
    },
}

/// Opens every disk image (read-write unless read-only) and tap.
pub fn open_device_backends(spec: &VmSpec) -> Result<DeviceBackends, BackendError> {
    let disks = ordered_drives(spec)
        .into_iter()
        .map(|d| {
            OpenOptions::new()
                .read(true)
                .write(!d.is_read_only)
                .open(&d.path_on_host)
                .map_err(|source| BackendError::OpenDisk {
                    id: d.drive_id.clone(),
                    path: d.path_on_host.clone(),
                    source,
                })
        })
        .collect::<Result<_, _>>()?;
    let taps = spec
        .net
        .iter()
        .map(|n| {
            Tap::open(&n.host_dev_name).map_err(|source| BackendError::OpenTap {
                iface: n.iface_id.clone(),
                source,
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(DeviceBackends { disks, taps })
}

/// The virtio devices of a VM, for the event loop and for shutdown.
#[derive(Default)]
pub struct VirtioDevices {
    /// Every device's event handler.
    pub subscribers: Vec<Subscriber>,
    /// The block devices, flushed when the VM stops.
    pub blocks: Vec<Arc<Mutex<Block>>>,
}

impl VirtioDevices {
    /// Writes every disk's data to stable storage.
    pub fn flush_disks(&self) {
        for block in &self.blocks {
            let mut b = block.lock().unwrap_or_else(|e| e.into_inner());
            if let Err(e) = b.flush() {
                log::error!("drive {:?}: cannot flush to disk: {e}", b.id());
            }
        }
    }
}

/// Creates the spec's virtio devices in their MMIO slots.
pub fn attach_virtio_devices(
    vm: &Vm,
    mmio: &mut devices::Bus,
    mem: &GuestMemoryMmap,
    spec: &VmSpec,
    backends: DeviceBackends,
) -> Result<VirtioDevices, BuildError> {
    let mut out = VirtioDevices::default();
    let drives = ordered_drives(spec);
    let mut disks = backends.disks.into_iter();
    let mut taps = backends.taps.into_iter();
    for (index, kind) in virtio_layout(spec).into_iter().enumerate() {
        let slot = MmioSlot::nth(index);
        match kind {
            VirtioSlotKind::Rng => {
                let rng =
                    Arc::new(Mutex::new(Rng::new().map_err(|e| {
                        DeviceError::Create(format!("entropy device: {e}"))
                    })?));
                attach_virtio_device(vm, mmio, mem, slot, "the entropy device", rng.clone())?;
                out.subscribers.push(rng);
            }
            VirtioSlotKind::Drive(i) => {
                let d = drives[i];
                let disk = disks.next().expect("one disk opened per drive");
                let block =
                    Block::new(d.drive_id.clone(), disk, d.is_read_only).map_err(|source| {
                        BackendError::Disk {
                            id: d.drive_id.clone(),
                            source,
                        }
                    })?;
                let block = Arc::new(Mutex::new(block));
                attach_virtio_device(vm, mmio, mem, slot, "a block device", block.clone())?;
                out.subscribers.push(block.clone());
                out.blocks.push(block);
            }
            VirtioSlotKind::Net(i) => {
                let n = &spec.net[i];
                let tap = taps.next().expect("one tap opened per interface");
                let mac = n.guest_mac.map_or_else(random_mac, |m| m.0);
                let net =
                    Net::new(n.iface_id.clone(), tap, mac).map_err(|source| BackendError::Net {
                        iface: n.iface_id.clone(),
                        source,
                    })?;
                let net = Arc::new(Mutex::new(net));
                attach_virtio_device(vm, mmio, mem, slot, "a network device", net.clone())?;
                out.subscribers.push(net);
            }
        }
    }
    Ok(out)
}
