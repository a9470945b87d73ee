//! Block devices: the pod-VM's root disk and volumes.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// User input for one virtio-blk device (Firecracker's `drives` entry).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
}

/// Length of the id string a guest can read (virtio spec §5.2.6,
/// `VIRTIO_BLK_ID_BYTES`).
pub const DRIVE_ID_MAX_LEN: usize = 20;
