//! Block devices: the pod-VM's root disk and volumes.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// User input for one virtio-blk device (Firecracker's `drives` entry;
/// requests arrive as [`crate::firecracker::FcDrive`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriveConfig {
    /// Unique id; the guest reads it with GET_ID.
    pub drive_id: String,
    /// Raw image file on the host.
    pub path_on_host: PathBuf,
    /// Whether this is the guest's root filesystem (`root=/dev/vda`).
    pub is_root_device: bool,
    /// Whether the guest may only read it.
    #[serde(default)]
    pub is_read_only: bool,
    /// For the root drive: boot from this partition
    /// (`root=PARTUUID=<uuid>`) rather than the whole disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partuuid: Option<String>,
    /// The caching mode the client asked for. podvm serves both the same
    /// way: it offers VIRTIO_BLK_F_FLUSH and makes every guest flush
    /// durable (`fdatasync`), which is what `Writeback` asks and safer
    /// than `Unsafe` needs.
    #[serde(default)]
    pub cache_type: CacheType,
    /// Limits on the drive's requests (bytes, operations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limiter: Option<crate::RateLimiterConfig>,
}

/// Firecracker's `cache_type` of a drive.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum CacheType {
    /// Firecracker: flushes are not passed to the host (its default).
    #[default]
    Unsafe,
    /// Firecracker: guest flushes reach the host's disk.
    Writeback,
}

/// Length of the id string a guest can read (virtio spec §5.2.6,
/// `VIRTIO_BLK_ID_BYTES`).
pub const DRIVE_ID_MAX_LEN: usize = 20;
