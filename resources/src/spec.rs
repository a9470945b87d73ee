//! The whole VM spec and its validation.

use std::collections::HashSet;

use crate::{
    BalloonConfig, BootSourceConfig, DriveConfig, MachineConfig, NetConfig, RateLimiterConfig,
    RateLimiterError, SerialConfig, VsockConfig, MAX_KERNEL_CMDLINE_LEN, MAX_SUPPORTED_VCPUS,
    MIN_MEM_SIZE_MIB, TAP_NAME_MAX_LEN, UDS_PATH_MAX_LEN,
};

/// Most virtio devices a VM can have: one interrupt line each, GSIs 5 to 23.
pub const MAX_VIRTIO_DEVICES: usize = 19;

/// Everything needed to build a pod-VM (and, in a snapshot, to restore
/// one).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VmSpec {
    /// vCPUs and memory.
    pub machine: MachineConfig,
    /// Kernel, initrd and command line.
    pub boot_source: BootSourceConfig,
    /// Serial console destination.
    pub serial: SerialConfig,
    /// Block devices, in the order the guest sees them (the root drive,
    /// if any, is moved first so it is `/dev/vda`).
    pub drives: Vec<DriveConfig>,
    /// Network interfaces.
    pub net: Vec<NetConfig>,
    /// Whether the guest gets a virtio-rng entropy device.
    pub entropy: bool,
    /// Limits on the entropy device's requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entropy_rate_limiter: Option<RateLimiterConfig>,
    /// The vsock device, if any.
    pub vsock: Option<VsockConfig>,
    /// The memory balloon, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balloon: Option<BalloonConfig>,
}

/// A spec that cannot describe a VM, found without touching the host.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    /// `vcpu_count` is zero.
    #[error("vcpu_count must be at least 1")]
    ZeroVcpus,
    /// More vCPUs than the host (or podvm) supports.
    #[error("vcpu_count {requested} is more than this host supports ({max})")]
    TooManyVcpus {
        /// What was asked for.
        requested: u8,
        /// The limit.
        max: u32,
    },
    /// SMT needs an even number of vCPUs (two threads per core).
    #[error("smt needs an even vcpu_count (two threads per core), got {0}")]
    SmtOddVcpus(u8),
    /// Too little memory for the fixed layout and a kernel.
    #[error("mem_size_mib {0} is too small: podvm needs at least {MIN_MEM_SIZE_MIB} MiB")]
    MemoryTooSmall(usize),
    /// More memory than the address space can hold.
    #[error("mem_size_mib {0} is too large")]
    MemoryTooLarge(usize),
    /// Memory backed by huge pages that is not a whole number of them.
    #[error("mem_size_mib {0} is not a whole number of 2 MiB huge pages (huge_pages \"2M\")")]
    MemoryNotHugePageMultiple(usize),
    /// The kernel command line does not fit.
    #[error("kernel command line is {0} bytes long; the limit is {MAX_KERNEL_CMDLINE_LEN} bytes")]
    CmdlineTooLong(usize),
    /// The kernel command line contains a NUL byte.
    #[error("kernel command line contains a NUL byte")]
    CmdlineNul,
    /// Two drives share an id.
    #[error("drive {0:?}: the id is used twice")]
    DuplicateDriveId(String),
    /// A drive id is empty or not plain text.
    #[error("drive {0:?}: ids must be 1 to 64 letters, digits, '-', '_' or '.'")]
    BadDriveId(String),
    /// More than one root drive.
    #[error("drive {0:?}: only one drive can be the root device")]
    SecondRootDrive(String),
    /// Two interfaces share an id.
    #[error("network interface {0:?}: the id is used twice")]
    DuplicateIfaceId(String),
    /// An interface id is empty or not plain text.
    #[error("network interface {0:?}: ids must be 1 to 64 letters, digits, '-', '_' or '.'")]
    BadIfaceId(String),
    /// A tap name Linux cannot have.
    #[error("network interface {iface:?}: tap name {tap:?} must be 1 to {TAP_NAME_MAX_LEN} bytes without '/' or whitespace")]
    BadTapName {
        /// The interface.
        iface: String,
        /// The tap name.
        tap: String,
    },
    /// Two interfaces use the same tap.
    #[error("network interface {iface:?}: tap {tap:?} is used by another interface")]
    DuplicateTap {
        /// The interface.
        iface: String,
        /// The tap name.
        tap: String,
    },
    /// Two interfaces share a MAC address.
    #[error("network interface {0:?}: its MAC address is used by another interface")]
    DuplicateMac(String),
    /// A guest CID that is reserved.
    #[error("vsock guest_cid {0} is reserved: it must be from 3 to 4294967294")]
    VsockCid(u32),
    /// A socket path that cannot be bound.
    #[error("vsock uds_path {0:?} must be 1 to {UDS_PATH_MAX_LEN} bytes")]
    VsockPath(String),
    /// A balloon target larger than guest memory.
    #[error("balloon amount_mib {amount} is more than mem_size_mib {memory}")]
    BalloonTooLarge {
        /// The target.
        amount: u32,
        /// Guest memory, MiB.
        memory: usize,
    },
    /// Too many virtio devices for the interrupt lines.
    #[error("{0} virtio devices: at most {MAX_VIRTIO_DEVICES} fit (one interrupt line each)")]
    TooManyDevices(usize),
    /// A rate limiter that cannot be honoured.
    #[error("{device}: {field}.{source}")]
    RateLimiter {
        /// The device: `drive "rootfs"`, `network interface "eth0"`,
        /// `entropy`.
        device: String,
        /// Its field: `rate_limiter`, `rx_rate_limiter`,
        /// `tx_rate_limiter`.
        field: &'static str,
        /// What is wrong, naming the bucket's field.
        source: RateLimiterError,
    },
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl SpecError {
    /// The configuration field at fault, in the API's terms.
    pub fn field(&self) -> &'static str {
        match self {
            SpecError::ZeroVcpus | SpecError::TooManyVcpus { .. } => "vcpu_count",
            SpecError::SmtOddVcpus(_) => "smt",
            SpecError::MemoryTooSmall(_)
            | SpecError::MemoryTooLarge(_)
            | SpecError::MemoryNotHugePageMultiple(_) => "mem_size_mib",
            SpecError::CmdlineTooLong(_) | SpecError::CmdlineNul => "boot_args",
            SpecError::DuplicateDriveId(_)
            | SpecError::BadDriveId(_)
            | SpecError::SecondRootDrive(_) => "drives",
            SpecError::DuplicateIfaceId(_)
            | SpecError::BadIfaceId(_)
            | SpecError::BadTapName { .. }
            | SpecError::DuplicateTap { .. }
            | SpecError::DuplicateMac(_) => "network-interfaces",
            SpecError::VsockCid(_) | SpecError::VsockPath(_) => "vsock",
            SpecError::BalloonTooLarge { .. } => "balloon",
            SpecError::TooManyDevices(_) => "devices",
            SpecError::RateLimiter { device, .. } if device.starts_with("drive") => "drives",
            SpecError::RateLimiter { device, .. } if device.starts_with("network") => {
                "network-interfaces"
            }
            SpecError::RateLimiter { .. } => "entropy",
        }
    }
}

impl VmSpec {
    /// Checks everything that can be checked without opening files or KVM.
    /// `max_vcpus` is the host's limit (`KVM_CAP_MAX_VCPUS`).
    pub fn validate(&self, max_vcpus: u32) -> Result<(), SpecError> {
        let m = &self.machine;
        let max = max_vcpus.min(u32::from(MAX_SUPPORTED_VCPUS));
        if m.vcpu_count == 0 {
            return Err(SpecError::ZeroVcpus);
        }
        if u32::from(m.vcpu_count) > max {
            return Err(SpecError::TooManyVcpus {
                requested: m.vcpu_count,
                max,
            });
        }
        if m.smt && !m.vcpu_count.is_multiple_of(2) {
            return Err(SpecError::SmtOddVcpus(m.vcpu_count));
        }
        if m.mem_size_mib < MIN_MEM_SIZE_MIB {
            return Err(SpecError::MemoryTooSmall(m.mem_size_mib));
        }
        // A generous static bound (64 TiB); the host's real limit (its
        // physical address width, KVM's memory-slot size) is found when
        // the memory is mapped and registered.
        if m.mem_size_mib > (1 << 26) {
            return Err(SpecError::MemoryTooLarge(m.mem_size_mib));
        }
        if m.huge_pages.huge_page_size().is_some() && m.huge_pages_needed().is_none() {
            return Err(SpecError::MemoryNotHugePageMultiple(m.mem_size_mib));
        }
        let cmdline = self.boot_source.cmdline();
        if cmdline.len() > MAX_KERNEL_CMDLINE_LEN {
            return Err(SpecError::CmdlineTooLong(cmdline.len()));
        }
        if cmdline.contains('\0') {
            return Err(SpecError::CmdlineNul);
        }
        self.validate_devices()
    }

    fn validate_rate_limiters(&self) -> Result<(), SpecError> {
        let drives = self.drives.iter().map(|d| {
            (
                format!("drive {:?}", d.drive_id),
                "rate_limiter",
                &d.rate_limiter,
            )
        });
        let nets = self.net.iter().flat_map(|n| {
            let device = format!("network interface {:?}", n.iface_id);
            [
                (device.clone(), "rx_rate_limiter", &n.rx_rate_limiter),
                (device, "tx_rate_limiter", &n.tx_rate_limiter),
            ]
        });
        let entropy = std::iter::once((
            "entropy".to_string(),
            "rate_limiter",
            &self.entropy_rate_limiter,
        ));
        for (device, field, limiter) in drives.chain(nets).chain(entropy) {
            if let Some(l) = limiter {
                l.check().map_err(|source| SpecError::RateLimiter {
                    device,
                    field,
                    source,
                })?;
            }
        }
        Ok(())
    }

    fn validate_devices(&self) -> Result<(), SpecError> {
        self.validate_rate_limiters()?;
        let mut ids = HashSet::new();
        let mut root = false;
        for d in &self.drives {
            if !valid_id(&d.drive_id) {
                return Err(SpecError::BadDriveId(d.drive_id.clone()));
            }
            if !ids.insert(d.drive_id.as_str()) {
                return Err(SpecError::DuplicateDriveId(d.drive_id.clone()));
            }
            if d.is_root_device && std::mem::replace(&mut root, true) {
                return Err(SpecError::SecondRootDrive(d.drive_id.clone()));
            }
        }
        let (mut ids, mut taps, mut macs) = (HashSet::new(), HashSet::new(), HashSet::new());
        for n in &self.net {
            if !valid_id(&n.iface_id) {
                return Err(SpecError::BadIfaceId(n.iface_id.clone()));
            }
            if !ids.insert(n.iface_id.as_str()) {
                return Err(SpecError::DuplicateIfaceId(n.iface_id.clone()));
            }
            let tap = &n.host_dev_name;
            if tap.is_empty()
                || tap.len() > TAP_NAME_MAX_LEN
                || tap
                    .chars()
                    .any(|c| c == '/' || c.is_whitespace() || c == '\0')
            {
                return Err(SpecError::BadTapName {
                    iface: n.iface_id.clone(),
                    tap: tap.clone(),
                });
            }
            if !taps.insert(tap.as_str()) {
                return Err(SpecError::DuplicateTap {
                    iface: n.iface_id.clone(),
                    tap: tap.clone(),
                });
            }
            if let Some(mac) = n.guest_mac {
                if !macs.insert(mac) {
                    return Err(SpecError::DuplicateMac(n.iface_id.clone()));
                }
            }
        }
        if let Some(v) = &self.vsock {
            if v.guest_cid < 3 || v.guest_cid == u32::MAX {
                return Err(SpecError::VsockCid(v.guest_cid));
            }
            let len = v.uds_path.as_os_str().len();
            if len == 0 || len > UDS_PATH_MAX_LEN {
                return Err(SpecError::VsockPath(v.uds_path.display().to_string()));
            }
        }
        if let Some(b) = &self.balloon {
            if b.amount_mib as usize > self.machine.mem_size_mib {
                return Err(SpecError::BalloonTooLarge {
                    amount: b.amount_mib,
                    memory: self.machine.mem_size_mib,
                });
            }
        }
        let devices = self.drives.len()
            + self.net.len()
            + usize::from(self.entropy)
            + usize::from(self.vsock.is_some())
            + usize::from(self.balloon.is_some());
        if devices > MAX_VIRTIO_DEVICES {
            return Err(SpecError::TooManyDevices(devices));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> VmSpec {
        VmSpec {
            machine: MachineConfig::default(),
            boot_source: BootSourceConfig {
                kernel_image_path: "/vmlinux".into(),
                boot_args: None,
                initrd_path: None,
            },
            serial: SerialConfig::Stdout,
            drives: Vec::new(),
            net: Vec::new(),
            entropy: false,
            entropy_rate_limiter: None,
            vsock: None,
            balloon: None,
        }
    }

    fn drive(id: &str, root: bool) -> DriveConfig {
        DriveConfig {
            drive_id: id.into(),
            path_on_host: "/img".into(),
            is_root_device: root,
            is_read_only: false,
            ..Default::default()
        }
    }

    fn nic(id: &str, tap: &str, mac: Option<[u8; 6]>) -> NetConfig {
        NetConfig {
            iface_id: id.into(),
            host_dev_name: tap.into(),
            guest_mac: mac.map(crate::MacAddr),
            ..Default::default()
        }
    }

    #[test]
    fn device_errors_are_found() {
        type Change = Box<dyn Fn(&mut VmSpec)>;
        let cases: Vec<(Change, SpecError)> = vec![
            (
                Box::new(|s| s.drives = vec![drive("a", false), drive("a", false)]),
                SpecError::DuplicateDriveId("a".into()),
            ),
            (
                Box::new(|s| s.drives = vec![drive("a b", false)]),
                SpecError::BadDriveId("a b".into()),
            ),
            (
                Box::new(|s| s.drives = vec![drive("a", true), drive("b", true)]),
                SpecError::SecondRootDrive("b".into()),
            ),
            (
                Box::new(|s| s.net = vec![nic("e", "t0", None), nic("e", "t1", None)]),
                SpecError::DuplicateIfaceId("e".into()),
            ),
            (
                Box::new(|s| s.net = vec![nic("e", "a-very-long-tap-name", None)]),
                SpecError::BadTapName {
                    iface: "e".into(),
                    tap: "a-very-long-tap-name".into(),
                },
            ),
            (
                Box::new(|s| s.net = vec![nic("e", "t0", None), nic("f", "t0", None)]),
                SpecError::DuplicateTap {
                    iface: "f".into(),
                    tap: "t0".into(),
                },
            ),
            (
                Box::new(|s| {
                    s.net = vec![nic("e", "t0", Some([2; 6])), nic("f", "t1", Some([2; 6]))]
                }),
                SpecError::DuplicateMac("f".into()),
            ),
            (
                Box::new(|s| {
                    s.drives = (0..19).map(|i| drive(&format!("d{i}"), false)).collect();
                    s.entropy = true;
                }),
                SpecError::TooManyDevices(20),
            ),
        ];
        for (change, want) in cases {
            let mut s = spec();
            change(&mut s);
            assert_eq!(s.validate(8), Err(want));
        }
        let mut s = spec();
        s.drives = vec![drive("root", true), drive("data", false)];
        s.net = vec![nic("eth0", "tap0", Some([6, 0, 0, 0, 0, 1]))];
        s.entropy = true;
        assert_eq!(s.validate(8), Ok(()));
    }

    #[test]
    fn rate_limiters_are_checked_and_the_error_names_device_and_field() {
        use crate::TokenBucketConfig;
        let no_refill = RateLimiterConfig {
            bandwidth: None,
            ops: Some(TokenBucketConfig {
                size: 1,
                one_time_burst: None,
                refill_time: 0,
            }),
        };
        let mut s = spec();
        s.drives = vec![drive("root", true)];
        s.net = vec![nic("eth0", "tap0", None)];
        s.entropy = true;
        assert_eq!(s.validate(8), Ok(()));
        type Break<'a> = Box<dyn Fn(&mut VmSpec) + 'a>;
        let cases: [(Break, &str, &str); 4] = [
            (
                Box::new(|s| s.drives[0].rate_limiter = Some(no_refill)),
                "drive \"root\": rate_limiter.ops.refill_time 0",
                "drives",
            ),
            (
                Box::new(|s| s.net[0].rx_rate_limiter = Some(no_refill)),
                "network interface \"eth0\": rx_rate_limiter.ops",
                "network-interfaces",
            ),
            (
                Box::new(|s| s.net[0].tx_rate_limiter = Some(no_refill)),
                "network interface \"eth0\": tx_rate_limiter.ops",
                "network-interfaces",
            ),
            (
                Box::new(|s| s.entropy_rate_limiter = Some(no_refill)),
                "entropy: rate_limiter.ops",
                "entropy",
            ),
        ];
        for (change, message, field) in cases {
            let mut bad = s.clone();
            change(&mut bad);
            let e = bad.validate(8).unwrap_err();
            assert!(e.to_string().starts_with(message), "{e}");
            assert_eq!(e.field(), field);
        }
    }

    #[test]
    fn default_spec_is_valid() {
        assert_eq!(spec().validate(255), Ok(()));
    }

    #[test]
    fn every_error_is_found() {
        type Change = Box<dyn Fn(&mut VmSpec)>;
        let cases: Vec<(Change, SpecError)> = vec![
            (Box::new(|s| s.machine.vcpu_count = 0), SpecError::ZeroVcpus),
            (
                Box::new(|s| s.machine.vcpu_count = 9),
                SpecError::TooManyVcpus {
                    requested: 9,
                    max: 8,
                },
            ),
            (
                Box::new(|s| {
                    s.machine.vcpu_count = 3;
                    s.machine.smt = true
                }),
                SpecError::SmtOddVcpus(3),
            ),
            (
                Box::new(|s| s.machine.mem_size_mib = 15),
                SpecError::MemoryTooSmall(15),
            ),
            (
                Box::new(|s| s.machine.mem_size_mib = (1 << 26) + 1),
                SpecError::MemoryTooLarge((1 << 26) + 1),
            ),
            (
                Box::new(|s| {
                    s.machine.mem_size_mib = 129;
                    s.machine.huge_pages = crate::HugePageConfig::Hugetlbfs2M;
                }),
                SpecError::MemoryNotHugePageMultiple(129),
            ),
            (
                Box::new(|s| s.boot_source.boot_args = Some("x".repeat(2048))),
                SpecError::CmdlineTooLong(2048),
            ),
            (
                Box::new(|s| s.boot_source.boot_args = Some("a\0b".into())),
                SpecError::CmdlineNul,
            ),
        ];
        for (change, want) in cases {
            let mut s = spec();
            change(&mut s);
            assert_eq!(s.validate(8), Err(want));
        }
    }

    #[test]
    fn huge_pages_need_a_whole_number_of_them() {
        let mut s = spec();
        s.machine.huge_pages = crate::HugePageConfig::Hugetlbfs2M;
        s.machine.mem_size_mib = 130;
        assert_eq!(s.validate(8), Ok(()));
        // Base pages take any size.
        s.machine.huge_pages = crate::HugePageConfig::None;
        s.machine.mem_size_mib = 129;
        assert_eq!(s.validate(8), Ok(()));
        assert_eq!(
            SpecError::MemoryNotHugePageMultiple(129).to_string(),
            "mem_size_mib 129 is not a whole number of 2 MiB huge pages (huge_pages \"2M\")"
        );
        assert_eq!(
            SpecError::MemoryNotHugePageMultiple(129).field(),
            "mem_size_mib"
        );
    }

    #[test]
    fn limits_are_inclusive() {
        let mut s = spec();
        s.machine.vcpu_count = 8;
        s.machine.mem_size_mib = MIN_MEM_SIZE_MIB;
        s.boot_source.boot_args = Some("x".repeat(MAX_KERNEL_CMDLINE_LEN));
        assert_eq!(s.validate(8), Ok(()));
    }

    #[test]
    fn podvm_caps_vcpus_below_the_broadcast_apic_id() {
        let mut s = spec();
        s.machine.vcpu_count = 255;
        assert_eq!(
            s.validate(1024),
            Err(SpecError::TooManyVcpus {
                requested: 255,
                max: 254
            })
        );
    }

    #[test]
    fn vsock_cids_and_paths_are_checked() {
        let with = |cid: u32, path: &str| {
            let mut s = spec();
            s.vsock = Some(VsockConfig {
                guest_cid: cid,
                uds_path: path.into(),
            });
            s.validate(8)
        };
        assert_eq!(with(3, "/run/v.sock"), Ok(()));
        assert_eq!(with(u32::MAX - 1, "/v"), Ok(()));
        for cid in [0, 1, 2, u32::MAX] {
            assert_eq!(with(cid, "/v"), Err(SpecError::VsockCid(cid)));
        }
        assert_eq!(with(3, ""), Err(SpecError::VsockPath(String::new())));
        let long = format!("/{}", "x".repeat(UDS_PATH_MAX_LEN));
        let err = with(3, &long).unwrap_err();
        assert_eq!(err.field(), "vsock");
        assert_eq!(
            err.to_string(),
            format!("vsock uds_path {long:?} must be 1 to 107 bytes")
        );
        assert_eq!(with(3, &long[..UDS_PATH_MAX_LEN]), Ok(()));
    }
}
