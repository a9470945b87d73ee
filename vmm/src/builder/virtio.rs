//! The virtio devices of a spec: which goes in which MMIO slot, their
//! host backends (opened before any VM exists, so that a missing image or
//! tap is a configuration error), their creation with their rate limiters,
//! their metrics, and the changes a `PATCH` makes to them.

use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use devices::rate_limiter::{BucketConfig, BucketError, BucketUpdate, MonotonicClock, RateLimiter};
use devices::virtio::block::{Block, BlockError};
use devices::virtio::net::{random_mac, Net, NetError, Tap, TapError};
use devices::virtio::rng::Rng;
use devices::virtio::vsock::{Vsock, VsockError};
use resources::{DriveConfig, RateLimiterConfig, TokenBucketConfig, VmSpec};
use vm_memory::GuestMemoryMmap;

use super::BuildError;
use crate::device_manager::{attach_virtio_device, DeviceError, MmioSlot, Subscriber};
use crate::vstate::vm::Vm;
use devices::virtio::MmioTransport;

/// The kinds of virtio device, in the order they take MMIO slots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VirtioSlotKind {
    /// The `n`-th drive of [`ordered_drives`].
    Drive(usize),
    /// The `n`-th network interface.
    Net(usize),
    /// The entropy device.
    Rng,
    /// The vsock device.
    Vsock,
    /// The memory balloon.
    Balloon,
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
    let vsock = spec.vsock.is_some().then_some(VirtioSlotKind::Vsock);
    let balloon = spec.balloon.is_some().then_some(VirtioSlotKind::Balloon);
    drives
        .chain(nets)
        .chain(rng)
        .chain(vsock)
        .chain(balloon)
        .collect()
}

/// A rate limiter's bucket cannot be made (the configuration checks refuse
/// such a bucket before it gets here).
#[derive(Debug, thiserror::Error)]
#[error("{device}: {field}.{bucket}: {source}")]
pub struct LimiterError {
    /// The device: `drive "rootfs"`, `network interface "eth0"`, `entropy`.
    pub device: String,
    /// Its field: `rate_limiter`, `rx_rate_limiter`, `tx_rate_limiter`.
    pub field: &'static str,
    /// `bandwidth` or `ops`.
    pub bucket: &'static str,
    /// What is wrong.
    #[source]
    pub source: BucketError,
}

/// The device's bucket for `b`: none for size 0 (Firecracker's "no
/// limit"). `err` names the bucket in an error.
fn bucket_of(
    b: &TokenBucketConfig,
    err: impl FnOnce(BucketError) -> LimiterError,
) -> Result<Option<BucketConfig>, LimiterError> {
    if !b.is_limit() {
        return Ok(None);
    }
    BucketConfig::new(b.size, b.one_time_burst.unwrap_or(0), b.refill_time)
        .map(Some)
        .map_err(err)
}

/// A device's rate-limiter field (`drive "d"`, `rate_limiter`), which
/// errors about its buckets name.
struct LimiterField {
    device: String,
    field: &'static str,
}

impl LimiterField {
    fn new(device: String, field: &'static str) -> Self {
        LimiterField { device, field }
    }

    fn error(&self, bucket: &'static str) -> impl FnOnce(BucketError) -> LimiterError + '_ {
        move |source| LimiterError {
            device: self.device.clone(),
            field: self.field,
            bucket,
            source,
        }
    }

    /// The limiter of `cfg` (none: no limit) on the host's clock.
    fn limiter(&self, cfg: Option<&RateLimiterConfig>) -> Result<RateLimiter, LimiterError> {
        let cfg = cfg.copied().unwrap_or_default();
        let bandwidth = match &cfg.bandwidth {
            Some(b) => bucket_of(b, self.error("bandwidth"))?,
            None => None,
        };
        let ops = match &cfg.ops {
            Some(b) => bucket_of(b, self.error("ops"))?,
            None => None,
        };
        Ok(RateLimiter::new(
            bandwidth,
            ops,
            Box::new(MonotonicClock::new()),
        ))
    }

    /// What `update` (a `PATCH`) does to each bucket: one not given stays,
    /// one of size 0 goes, another replaces it.
    fn update(&self, update: &RateLimiterConfig) -> Result<[BucketUpdate; 2], LimiterError> {
        let one = |b: Option<&TokenBucketConfig>, name| match b {
            None => Ok(BucketUpdate::Keep),
            Some(b) => Ok(
                bucket_of(b, self.error(name))?.map_or(BucketUpdate::Disable, BucketUpdate::Set)
            ),
        };
        Ok([
            one(update.bandwidth.as_ref(), "bandwidth")?,
            one(update.ops.as_ref(), "ops")?,
        ])
    }
}

/// A running device's rate limiter could not be changed.
#[derive(Debug, thiserror::Error)]
pub enum LimiterUpdateError {
    /// No drive has that id.
    #[error("drive {0:?}: no such drive")]
    NoDrive(String),
    /// No network interface has that id.
    #[error("network interface {0:?}: no such interface")]
    NoInterface(String),
    /// A bucket cannot be made.
    #[error(transparent)]
    Bucket(#[from] LimiterError),
}

/// A disk's data could not be made durable when the VM stopped.
#[derive(Debug, thiserror::Error)]
#[error("drive {id:?}: cannot flush to disk: {source}")]
pub struct FlushError {
    /// The drive.
    pub id: String,
    /// The I/O error.
    #[source]
    pub source: io::Error,
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
    /// A disk path is neither a regular file nor a block device.
    #[error("drive {id:?}: {} is not a regular file or block device", path.display())]
    NotADisk {
        /// The drive.
        id: String,
        /// The path.
        path: PathBuf,
    },
    /// Another drive or process has the image open.
    #[error("drive {id:?}: {} is in use by another drive or process: {source}", path.display())]
    Locked {
        /// The drive.
        id: String,
        /// The image.
        path: PathBuf,
        /// The locking error.
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
    /// The vsock device cannot be created (its socket cannot be bound).
    #[error("vsock: {0}")]
    Vsock(#[source] VsockError),
    /// A network device cannot be created.
    #[error("network interface {iface:?}: {source}")]
    Net {
        /// The interface.
        iface: String,
        /// What went wrong.
        #[source]
        source: NetError,
    },
    /// A rate limiter cannot be made.
    #[error(transparent)]
    RateLimiter(#[from] LimiterError),
}

/// Opens every disk image (read-write unless read-only) and tap.
pub fn open_device_backends(spec: &VmSpec) -> Result<DeviceBackends, BackendError> {
    let disks = ordered_drives(spec)
        .into_iter()
        .map(open_disk)
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
    /// The transport of each block device (same order), for config-change
    /// interrupts.
    pub block_transports: Vec<Arc<Mutex<MmioTransport>>>,
    /// The network devices, for metrics.
    pub nets: Vec<Arc<Mutex<Net>>>,
    /// The vsock device, for metrics (and, later, its snapshot state).
    pub vsock: Option<Arc<Mutex<Vsock>>>,
    /// The entropy device, for metrics and rate-limiter updates.
    pub rng: Option<Arc<Mutex<Rng>>>,
    /// The balloon, for the API's balloon calls, metrics and snapshots.
    pub balloon: Option<super::BalloonHandle>,
    /// Where each device was attached, in slot order (for the ACPI tables).
    pub slots: Vec<MmioSlot>,
    /// Every device's transport, in slot order (for snapshots).
    pub transports: Vec<Arc<Mutex<MmioTransport>>>,
}

/// A drive's backing file could not be swapped.
#[derive(Debug, thiserror::Error)]
pub enum SwapError {
    /// No drive has that id.
    #[error("drive {0:?}: no such drive")]
    NoDrive(String),
    /// The new file cannot be used.
    #[error("{0}")]
    Backend(#[from] BackendError),
}

impl VirtioDevices {
    /// Replaces the backing file of drive `id` with `path` (read-only if the
    /// drive is) and tells the guest its configuration changed.
    pub fn swap_drive(&self, id: &str, path: &std::path::Path) -> Result<u64, SwapError> {
        let (block, transport) = self
            .blocks
            .iter()
            .zip(&self.block_transports)
            .find(|(b, _)| b.lock().unwrap_or_else(|e| e.into_inner()).id() == id)
            .ok_or_else(|| SwapError::NoDrive(id.to_string()))?;
        let mut b = block.lock().unwrap_or_else(|e| e.into_inner());
        let config = DriveConfig {
            drive_id: id.to_string(),
            path_on_host: path.to_path_buf(),
            is_root_device: false,
            is_read_only: b.read_only(),
            ..Default::default()
        };
        let file = open_disk(&config)?;
        let capacity = b
            .swap_backend(Box::new(file))
            .map_err(|source| BackendError::Disk {
                id: id.to_string(),
                source,
            })?;
        drop(b);
        transport
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .config_changed();
        Ok(capacity)
    }

    /// Changes the rate limiter of drive `id` with `update` (`PATCH`:
    /// bucket by bucket); waiting requests are looked at again at once.
    pub fn update_drive_rate_limiter(
        &self,
        id: &str,
        update: &RateLimiterConfig,
    ) -> Result<(), LimiterUpdateError> {
        let block = self
            .blocks
            .iter()
            .find(|b| b.lock().unwrap_or_else(|e| e.into_inner()).id() == id)
            .ok_or_else(|| LimiterUpdateError::NoDrive(id.to_string()))?;
        let field = LimiterField::new(format!("drive {id:?}"), "rate_limiter");
        let [bandwidth, ops] = field.update(update)?;
        block
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .update_rate_limiter(bandwidth, ops);
        Ok(())
    }

    /// Changes the rate limiters of interface `id` (`PATCH`: bucket by
    /// bucket; a direction not given stays as it is). Nothing changes when
    /// either update is refused.
    pub fn update_net_rate_limiters(
        &self,
        id: &str,
        rx: Option<&RateLimiterConfig>,
        tx: Option<&RateLimiterConfig>,
    ) -> Result<(), LimiterUpdateError> {
        let net = self
            .nets
            .iter()
            .find(|n| n.lock().unwrap_or_else(|e| e.into_inner()).id() == id)
            .ok_or_else(|| LimiterUpdateError::NoInterface(id.to_string()))?;
        let device = format!("network interface {id:?}");
        let rx_field = LimiterField::new(device.clone(), "rx_rate_limiter");
        let tx_field = LimiterField::new(device, "tx_rate_limiter");
        let rx = rx.map(|u| rx_field.update(u)).transpose()?;
        let tx = tx.map(|u| tx_field.update(u)).transpose()?;
        let mut n = net.lock().unwrap_or_else(|e| e.into_inner());
        if let Some([bandwidth, ops]) = rx {
            n.update_rx_rate_limiter(bandwidth, ops);
        }
        if let Some([bandwidth, ops]) = tx {
            n.update_tx_rate_limiter(bandwidth, ops);
        }
        Ok(())
    }

    /// Writes every disk's data to stable storage. Every disk is flushed
    /// even when one fails; the first failure is returned.
    pub fn flush_disks(&self) -> Result<(), FlushError> {
        let mut first = Ok(());
        for block in &self.blocks {
            let mut b = block.lock().unwrap_or_else(|e| e.into_inner());
            if let Err(source) = b.flush() {
                let e = FlushError {
                    id: b.id().to_string(),
                    source,
                };
                log::error!("{e}");
                if first.is_ok() {
                    first = Err(e);
                }
            }
        }
        first
    }
}

/// Removes a Unix socket file nobody listens on any more (a podvm that was
/// killed leaves its vsock socket behind), as the API socket's is replaced;
/// one a live process serves on stays, and binding it fails naming it.
fn remove_stale_socket(path: &std::path::Path) {
    use std::os::unix::fs::FileTypeExt;
    let is_socket = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket());
    if is_socket && std::os::unix::net::UnixStream::connect(path).is_err() {
        if let Err(e) = std::fs::remove_file(path) {
            log::warn!(
                "vsock: cannot remove the stale socket {}: {e}",
                path.display()
            );
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
        out.slots.push(slot);
        match kind {
            VirtioSlotKind::Rng => {
                let mut rng =
                    Rng::new().map_err(|e| DeviceError::Create(format!("entropy device: {e}")))?;
                let field = LimiterField::new("entropy".into(), "rate_limiter");
                rng.set_rate_limiter(
                    field
                        .limiter(spec.entropy_rate_limiter.as_ref())
                        .map_err(BackendError::from)?,
                );
                let rng = Arc::new(Mutex::new(rng));
                let transport =
                    attach_virtio_device(vm, mmio, mem, slot, "the entropy device", rng.clone())?;
                out.transports.push(transport);
                out.subscribers.push(rng.clone());
                out.rng = Some(rng);
            }
            VirtioSlotKind::Balloon => {
                let cfg = spec.balloon.as_ref().expect("a balloon slot has a config");
                let mem_mib = u32::try_from(spec.machine.mem_size_mib).unwrap_or(u32::MAX);
                let balloon = super::balloon::attach_balloon(vm, mmio, mem, slot, cfg, mem_mib)?;
                out.transports.push(balloon.transport());
                out.subscribers.push(balloon.subscriber());
                out.balloon = Some(balloon);
            }
            VirtioSlotKind::Vsock => {
                let cfg = spec
                    .vsock
                    .as_ref()
                    .expect("a vsock slot has a vsock config");
                remove_stale_socket(&cfg.uds_path);
                let vsock = Vsock::new(u64::from(cfg.guest_cid), cfg.uds_path.clone())
                    .map_err(BackendError::Vsock)?;
                let vsock = Arc::new(Mutex::new(vsock));
                let transport =
                    attach_virtio_device(vm, mmio, mem, slot, "the vsock device", vsock.clone())?;
                out.transports.push(transport);
                out.subscribers.push(vsock.clone());
                out.vsock = Some(vsock);
            }
            VirtioSlotKind::Drive(i) => {
                let d = drives[i];
                let disk = disks.next().expect("one disk opened per drive");
                let mut block =
                    Block::new(d.drive_id.clone(), disk, d.is_read_only).map_err(|source| {
                        BackendError::Disk {
                            id: d.drive_id.clone(),
                            source,
                        }
                    })?;
                let field = LimiterField::new(format!("drive {:?}", d.drive_id), "rate_limiter");
                block.set_rate_limiter(
                    field
                        .limiter(d.rate_limiter.as_ref())
                        .map_err(BackendError::from)?,
                );
                let block = Arc::new(Mutex::new(block));
                let transport =
                    attach_virtio_device(vm, mmio, mem, slot, "a block device", block.clone())?;
                out.subscribers.push(block.clone());
                out.blocks.push(block);
                out.block_transports.push(transport.clone());
                out.transports.push(transport);
            }
            VirtioSlotKind::Net(i) => {
                let n = &spec.net[i];
                let tap = taps.next().expect("one tap opened per interface");
                let mac = n.guest_mac.map_or_else(random_mac, |m| m.0);
                let mut net =
                    Net::new(n.iface_id.clone(), tap, mac).map_err(|source| BackendError::Net {
                        iface: n.iface_id.clone(),
                        source,
                    })?;
                let device = format!("network interface {:?}", n.iface_id);
                let rx = LimiterField::new(device.clone(), "rx_rate_limiter")
                    .limiter(n.rx_rate_limiter.as_ref())
                    .map_err(BackendError::from)?;
                let tx = LimiterField::new(device, "tx_rate_limiter")
                    .limiter(n.tx_rate_limiter.as_ref())
                    .map_err(BackendError::from)?;
                net.set_rx_rate_limiter(rx);
                net.set_tx_rate_limiter(tx);
                let net = Arc::new(Mutex::new(net));
                let transport =
                    attach_virtio_device(vm, mmio, mem, slot, "a network device", net.clone())?;
                out.transports.push(transport);
                out.subscribers.push(net.clone());
                out.nets.push(net);
            }
        }
    }
    Ok(out)
}

#[path = "virtio_metrics.rs"]
mod metrics;

#[path = "virtio_disk_image.rs"]
mod disk_image;

pub use disk_image::open_disk;

#[cfg(test)]
mod tests {
    use super::*;
    use devices::virtio::block::DiskBackend;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A disk that counts flushes and can be told to fail them.
    struct CountingDisk {
        flushes: Arc<AtomicUsize>,
        fail: bool,
    }

    impl DiskBackend for CountingDisk {
        fn read_at(&mut self, buf: &mut [u8], _offset: u64) -> io::Result<()> {
            buf.fill(0);
            Ok(())
        }
        fn write_at(&mut self, _buf: &[u8], _offset: u64) -> io::Result<()> {
            Ok(())
        }
        fn flush(&mut self) -> io::Result<()> {
            self.flushes.fetch_add(1, Ordering::SeqCst);
            if self.fail {
                Err(io::Error::from_raw_os_error(libc::EIO))
            } else {
                Ok(())
            }
        }
        fn size(&self) -> io::Result<u64> {
            Ok(1 << 20)
        }
    }

    fn block(
        id: &str,
        fail: bool,
        read_only: bool,
        flushes: &Arc<AtomicUsize>,
    ) -> Arc<Mutex<Block>> {
        let disk = CountingDisk {
            flushes: flushes.clone(),
            fail,
        };
        Arc::new(Mutex::new(
            Block::with_backend(id.into(), Box::new(disk), read_only).unwrap(),
        ))
    }

    #[test]
    fn stopping_flushes_every_writable_disk_and_reports_failures() {
        let flushes = Arc::new(AtomicUsize::new(0));
        let devices = VirtioDevices {
            blocks: vec![
                block("a", false, false, &flushes),
                block("bad", true, false, &flushes),
                block("c", false, false, &flushes),
                block("ro", true, true, &flushes),
            ],
            ..Default::default()
        };
        let err = devices.flush_disks().unwrap_err();
        assert_eq!(err.id, "bad");
        assert_eq!(
            err.to_string(),
            "drive \"bad\": cannot flush to disk: Input/output error (os error 5)"
        );
        // All three writable disks were flushed, the read-only one not.
        assert_eq!(flushes.load(Ordering::SeqCst), 3);

        let ok = VirtioDevices {
            blocks: vec![block("a", false, false, &flushes)],
            ..Default::default()
        };
        assert!(ok.flush_disks().is_ok());
    }

    fn bucket(size: u64, refill_time: u64) -> Option<TokenBucketConfig> {
        Some(TokenBucketConfig {
            size,
            one_time_burst: None,
            refill_time,
        })
    }

    #[test]
    fn configured_buckets_become_device_buckets_and_size_zero_is_none() {
        let field = LimiterField::new("drive \"d\"".into(), "rate_limiter");
        let l = field
            .limiter(Some(&RateLimiterConfig {
                bandwidth: Some(TokenBucketConfig {
                    size: 4096,
                    one_time_burst: Some(512),
                    refill_time: 100,
                }),
                ops: bucket(0, 0),
            }))
            .unwrap();
        let bw = l.bandwidth().unwrap().config();
        assert_eq!((bw.size(), bw.one_time_burst()), (4096, 512));
        assert_eq!(bw.refill_time(), std::time::Duration::from_millis(100));
        assert!(l.ops().is_none());
        assert!(!field.limiter(None).unwrap().is_limited());
        let err = field
            .limiter(Some(&RateLimiterConfig {
                bandwidth: None,
                ops: bucket(1, 0),
            }))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "drive \"d\": rate_limiter.ops: refill_time must be at least 1 ms"
        );
        let update = field
            .update(&RateLimiterConfig {
                bandwidth: bucket(0, 0),
                ops: None,
            })
            .unwrap();
        assert_eq!(update, [BucketUpdate::Disable, BucketUpdate::Keep]);
    }

    #[test]
    fn limiter_updates_reach_the_named_device_and_metrics_count_throttling() {
        let flushes = Arc::new(AtomicUsize::new(0));
        let devices = VirtioDevices {
            blocks: vec![block("a", false, false, &flushes)],
            ..Default::default()
        };
        let update = RateLimiterConfig {
            bandwidth: None,
            ops: bucket(1, 1000),
        };
        devices.update_drive_rate_limiter("a", &update).unwrap();
        let b = devices.blocks[0].lock().unwrap();
        assert_eq!(b.rate_limiter().ops().unwrap().config().size(), 1);
        drop(b);
        assert_eq!(
            devices
                .update_drive_rate_limiter("b", &update)
                .unwrap_err()
                .to_string(),
            "drive \"b\": no such drive"
        );
        assert_eq!(
            devices
                .update_net_rate_limiters("eth0", Some(&update), None)
                .unwrap_err()
                .to_string(),
            "network interface \"eth0\": no such interface"
        );
        let bad = RateLimiterConfig {
            bandwidth: bucket(1, 0),
            ops: None,
        };
        assert!(matches!(
            devices.update_drive_rate_limiter("a", &bad),
            Err(LimiterUpdateError::Bucket(_))
        ));
        let m = devices.metrics();
        for key in ["throttled", "delayed_requests", "delayed_bytes"] {
            assert_eq!(m["block"]["a"][key], 0, "{key}");
        }
    }
}
