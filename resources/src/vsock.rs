//! The vsock device: the channel between the pod's agent in the guest and
//! the host, with its host side on a Unix socket (Firecracker's "hybrid"
//! vsock).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The longest path of a Unix socket (`sun_path` holds 108 bytes with the
/// terminating NUL).
pub const UDS_PATH_MAX_LEN: usize = 107;

/// User input for the vsock device (Firecracker's `vsock`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VsockConfig {
    /// The guest's context id: 3 and up (0 to 2 are the hypervisor, local
    /// and host ones; `u32::MAX` means any).
    pub guest_cid: u32,
    /// The Unix socket host processes connect to (`CONNECT <port>\n`);
    /// a guest connection to host port P goes to `<uds_path>_P`.
    pub uds_path: PathBuf,
}
