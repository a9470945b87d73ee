//! What a pod-VM is made of: the VM spec types (machine configuration, boot
//! source, drives, network interfaces, entropy device, serial console, the
//! devices' rate limiters), their validation, and their JSON shapes.
//!
//! This crate is plain data. Field names follow Firecracker's API
//! (`vcpu_count`, `mem_size_mib`, `kernel_image_path`, …) so that the same
//! types serve the command line, the config file and the control API.

pub mod action;
mod balloon;
mod boot_source;
mod config_file;
mod drive;
pub mod firecracker;
mod machine;
mod net;
mod rate_limiter;
mod serial;
pub mod snapshot;
mod spec;
mod vsock;

pub use balloon::{BalloonAction, BalloonConfig, BalloonStatsUpdate, BalloonUpdate, HintingStart};
pub use boot_source::{
    insert_kernel_args, split_init_args, BootSourceConfig, DEFAULT_KERNEL_CMDLINE,
    MAX_KERNEL_CMDLINE_LEN,
};
pub use config_file::{
    parse_config_file, parse_config_file_contents, ConfigFileContents, ConfigFileError,
};
pub use drive::{CacheType, DriveConfig, DRIVE_ID_MAX_LEN};
pub use machine::{
    HugePageConfig, MachineConfig, HUGE_PAGE_2M, MAX_SUPPORTED_VCPUS, MIN_MEM_SIZE_MIB,
};
pub use net::{MacAddr, MacAddrParseError, NetConfig, TAP_NAME_MAX_LEN};
pub use rate_limiter::{
    RateLimiterConfig, RateLimiterError, TokenBucketConfig, MAX_REFILL_TIME_MS,
};
pub use serial::{SerialConfig, SerialConfigParseError};
pub use spec::{SpecError, VmSpec, MAX_VIRTIO_DEVICES};
pub use vsock::{VsockConfig, UDS_PATH_MAX_LEN};
