//! Snapshot requests (`PUT /snapshot/create`, `PUT /snapshot/load`), in
//! Firecracker's shapes, and what they ask for once checked.

use std::path::PathBuf;

use serde::Deserialize;

use crate::firecracker::Unsupported;

/// `snapshot_type`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub enum SnapshotType {
    /// All of guest memory, into a new memory file.
    #[default]
    Full,
    /// The pages written since the last snapshot, into its memory file.
    Diff,
}

/// `PUT /snapshot/create` (Firecracker's `SnapshotCreateParams`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotCreateParams {
    /// Full or Diff.
    #[serde(default)]
    pub snapshot_type: SnapshotType,
    /// Where the state file goes.
    pub snapshot_path: PathBuf,
    /// Where guest memory goes.
    pub mem_file_path: PathBuf,
}

/// `mem_backend.backend_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
enum BackendType {
    File,
    Uffd,
}

/// `mem_backend` (Firecracker's `MemoryBackend`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct MemoryBackend {
    backend_type: BackendType,
    backend_path: PathBuf,
}

/// `network_overrides[]` (Firecracker's `NetworkOverride`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct NetworkOverride {
    iface_id: String,
    host_dev_name: String,
}

/// `vsock_override` (Firecracker's `VsockOverride`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct VsockOverride {
    uds_path: PathBuf,
}

/// `PUT /snapshot/load` as it arrives (Firecracker's
/// `SnapshotLoadParams`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotLoadRequest {
    snapshot_path: PathBuf,
    #[serde(default)]
    mem_file_path: Option<PathBuf>,
    #[serde(default)]
    mem_backend: Option<MemoryBackend>,
    #[serde(default)]
    enable_diff_snapshots: Option<bool>,
    #[serde(default)]
    track_dirty_pages: Option<bool>,
    #[serde(default)]
    resume_vm: Option<bool>,
    #[serde(default)]
    network_overrides: Option<Vec<NetworkOverride>>,
    #[serde(default)]
    vsock_override: Option<VsockOverride>,
    #[serde(default)]
    clock_realtime: Option<bool>,
    /// podvm extension: populate the pages the guest touched right after
    /// earlier loads of this snapshot before it runs.
    #[serde(default)]
    prefetch: Option<bool>,
}

/// A checked snapshot load.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotLoadParams {
    /// The state file.
    pub snapshot_path: PathBuf,
    /// The memory file.
    pub mem_file_path: PathBuf,
    /// Whether KVM logs the restored guest's writes (for Diff snapshots).
    pub track_dirty_pages: bool,
    /// Whether the VM runs at once (else it stays paused).
    pub resume_vm: bool,
    /// `(iface_id, host_dev_name)`: taps for the restored interfaces.
    pub network_overrides: Vec<(String, String)>,
    /// Another socket for the vsock device.
    pub vsock_uds_path: Option<PathBuf>,
    /// Working-set prefetch (podvm extension).
    pub prefetch: bool,
}

/// A load request that does not say where memory comes from, or asks for
/// what podvm cannot do.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotLoadError {
    /// Neither or both of `mem_file_path` and `mem_backend`.
    #[error("exactly one of mem_backend and mem_file_path must be given")]
    MemorySource,
    /// Something podvm does not do.
    #[error(transparent)]
    Unsupported(#[from] Unsupported),
}

impl SnapshotLoadRequest {
    /// The load this request asks for.
    pub fn into_params(self) -> Result<SnapshotLoadParams, SnapshotLoadError> {
        let mem_file_path = match (self.mem_file_path, self.mem_backend) {
            (Some(path), None) => path,
            (
                None,
                Some(MemoryBackend {
                    backend_type: BackendType::File,
                    backend_path,
                }),
            ) => backend_path,
            (
                None,
                Some(MemoryBackend {
                    backend_type: BackendType::Uffd,
                    ..
                }),
            ) => {
                return Err(Unsupported(
                    "mem_backend.backend_type \"Uffd\" (podvm maps the memory file itself)".into(),
                )
                .into())
            }
            _ => return Err(SnapshotLoadError::MemorySource),
        };
        if self.clock_realtime == Some(true) {
            return Err(Unsupported("clock_realtime: true (yet)".into()).into());
        }
        Ok(SnapshotLoadParams {
            snapshot_path: self.snapshot_path,
            mem_file_path,
            track_dirty_pages: self.track_dirty_pages.or(self.enable_diff_snapshots) == Some(true),
            resume_vm: self.resume_vm == Some(true),
            network_overrides: self
                .network_overrides
                .unwrap_or_default()
                .into_iter()
                .map(|o| (o.iface_id, o.host_dev_name))
                .collect(),
            vsock_uds_path: self.vsock_override.map(|v| v.uds_path),
            prefetch: self.prefetch == Some(true),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(json: &str) -> Result<SnapshotLoadParams, String> {
        let req: SnapshotLoadRequest = serde_json::from_str(json).map_err(|e| e.to_string())?;
        req.into_params().map_err(|e| e.to_string())
    }

    #[test]
    fn create_requests_default_to_full() {
        let c: SnapshotCreateParams =
            serde_json::from_str(r#"{"snapshot_path": "/s", "mem_file_path": "/m"}"#).unwrap();
        assert_eq!(c.snapshot_type, SnapshotType::Full);
        let c: SnapshotCreateParams = serde_json::from_str(
            r#"{"snapshot_type": "Diff", "snapshot_path": "/s", "mem_file_path": "/m"}"#,
        )
        .unwrap();
        assert_eq!(c.snapshot_type, SnapshotType::Diff);
        assert!(serde_json::from_str::<SnapshotCreateParams>(
            r#"{"snapshot_type": "Half", "snapshot_path": "/s", "mem_file_path": "/m"}"#
        )
        .is_err());
    }

    #[test]
    fn loads_take_either_memory_source_and_every_option() {
        let p = load(
            r#"{"snapshot_path": "/s", "mem_backend": {"backend_type": "File", "backend_path": "/m"},
                "resume_vm": true, "track_dirty_pages": true,
                "network_overrides": [{"iface_id": "eth0", "host_dev_name": "tap9"}],
                "vsock_override": {"uds_path": "/v2"}, "clock_realtime": false}"#,
        )
        .unwrap();
        assert_eq!(
            p,
            SnapshotLoadParams {
                snapshot_path: "/s".into(),
                mem_file_path: "/m".into(),
                track_dirty_pages: true,
                resume_vm: true,
                network_overrides: vec![("eth0".into(), "tap9".into())],
                vsock_uds_path: Some("/v2".into()),
                prefetch: false,
            }
        );
        let p = load(
            r#"{"snapshot_path": "/s", "mem_file_path": "/m", "enable_diff_snapshots": true}"#,
        )
        .unwrap();
        assert!(p.track_dirty_pages && !p.resume_vm);
        for (json, want) in [
            (r#"{"snapshot_path": "/s"}"#, "exactly one of mem_backend and mem_file_path must be given"),
            (
                r#"{"snapshot_path": "/s", "mem_file_path": "/m",
                    "mem_backend": {"backend_type": "File", "backend_path": "/m"}}"#,
                "exactly one of mem_backend and mem_file_path must be given",
            ),
            (
                r#"{"snapshot_path": "/s", "mem_backend": {"backend_type": "Uffd", "backend_path": "/u"}}"#,
                "mem_backend.backend_type \"Uffd\" (podvm maps the memory file itself) is not supported by podvm",
            ),
            (
                r#"{"snapshot_path": "/s", "mem_file_path": "/m", "clock_realtime": true}"#,
                "clock_realtime: true (yet) is not supported by podvm",
            ),
        ] {
            assert_eq!(load(json).unwrap_err(), want, "{json}");
        }
        assert!(
            load(r#"{"snapshot_path": "/s", "mem_file_path": "/m", "bogus": 1}"#)
                .unwrap_err()
                .contains("unknown field `bogus`")
        );
    }
}
