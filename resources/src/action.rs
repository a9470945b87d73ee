//! The vocabulary between the control API and the VMM: what a client can
//! ask for ([`VmmAction`]) and what it gets back ([`ActionResult`]).
//!
//! The API thread turns each HTTP request into a `VmmAction` and sends it,
//! with its own reply channel ([`ActionRequest`]), to the VMM thread, which
//! alone touches the VM. Both sides depend on this plain-data module only.

use std::fmt;
use std::sync::mpsc::{channel, Receiver};

use serde::{Deserialize, Serialize};

use crate::{
    BootSourceConfig, DriveConfig, HugePageConfig, MachineConfig, NetConfig, RateLimiterConfig,
};

/// Partial update of the machine configuration (`PATCH /machine-config`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineConfigUpdate {
    /// New vCPU count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcpu_count: Option<u8>,
    /// New memory size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_size_mib: Option<usize>,
    /// New SMT setting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smt: Option<bool>,
    /// New dirty-page tracking setting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track_dirty_pages: Option<bool>,
    /// New backing of guest RAM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub huge_pages: Option<HugePageConfig>,
}

/// Swapping a drive's backing file, or changing its rate limiter
/// (`PATCH /drives/{id}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriveUpdate {
    /// The drive.
    pub drive_id: String,
    /// Its new backing file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_on_host: Option<std::path::PathBuf>,
    /// Its rate limiter's buckets that change: one given replaces the old
    /// one (size 0: no limit any more), one not given stays
    /// ([`RateLimiterConfig::applied_to`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limiter: Option<RateLimiterConfig>,
}

/// Changing a network interface's rate limiters
/// (`PATCH /network-interfaces/{id}`), bucket by bucket as for
/// [`DriveUpdate::rate_limiter`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkInterfaceUpdate {
    /// The interface.
    pub iface_id: String,
    /// Changes to the receive side's limiter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rx_rate_limiter: Option<RateLimiterConfig>,
    /// Changes to the transmit side's limiter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_rate_limiter: Option<RateLimiterConfig>,
}

/// `PUT /logger` (Firecracker's `Logger`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoggerConfig {
    /// File or named pipe the log goes to (appended).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_path: Option<std::path::PathBuf>,
    /// Error, Warning, Info, Debug, Trace or Off (case-insensitive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    /// Whether lines show their level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub show_level: Option<bool>,
    /// Whether lines show their source file and line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub show_log_origin: Option<bool>,
    /// Only records from this module path (prefix) are written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
}

/// `PUT /metrics` (Firecracker's `Metrics`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// File or named pipe that receives one JSON object per flush.
    pub metrics_path: std::path::PathBuf,
}

/// The VM's lifecycle state as `GET /` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum InstanceState {
    /// Configured (or not), not booted.
    #[serde(rename = "Not started")]
    NotStarted,
    /// vCPUs running.
    Running,
    /// vCPUs paused.
    Paused,
}

/// `GET /`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceInfo {
    /// The instance id (`--id`).
    pub id: String,
    /// Lifecycle state.
    pub state: InstanceState,
    /// podvm's version.
    pub vmm_version: String,
    /// "podvm".
    pub app_name: String,
}

/// One request from an API client.
#[derive(Clone, Debug, PartialEq)]
pub enum VmmAction {
    /// `GET /`.
    DescribeInstance,
    /// `GET /version`.
    GetVersion,
    /// `GET /vm/config`.
    GetVmConfig,
    /// `GET /machine-config`.
    GetMachineConfig,
    /// `PUT /machine-config`.
    PutMachineConfig(MachineConfig),
    /// `PATCH /machine-config`.
    PatchMachineConfig(MachineConfigUpdate),
    /// `PUT /boot-source`.
    PutBootSource(BootSourceConfig),
    /// `PUT /drives/{id}`.
    PutDrive(DriveConfig),
    /// `PATCH /drives/{id}`.
    PatchDrive(DriveUpdate),
    /// `PUT /network-interfaces/{id}`.
    PutNetworkInterface(NetConfig),
    /// `PATCH /network-interfaces/{id}`: its rate limiters (Firecracker's
    /// only updatable fields), also on the running device.
    PatchNetworkInterface(NetworkInterfaceUpdate),
    /// `PUT /entropy`, with the device's rate limiter.
    PutEntropy(Option<RateLimiterConfig>),
    /// `PUT /vsock`.
    PutVsock(crate::VsockConfig),
    /// The `/balloon` calls.
    Balloon(crate::BalloonAction),
    /// `PUT /snapshot/create`.
    CreateSnapshot(crate::snapshot::SnapshotCreateParams),
    /// `PUT /snapshot/load`.
    LoadSnapshot(crate::snapshot::SnapshotLoadParams),
    /// `PUT /actions` `InstanceStart`.
    InstanceStart,
    /// `PUT /actions` `SendCtrlAltDel`.
    SendCtrlAltDel,
    /// `PUT /actions` `FlushMetrics`.
    FlushMetrics,
    /// `PUT /actions` `Shutdown` (extension): stop vCPUs, flush disks, reply,
    /// exit 0.
    Shutdown,
    /// `PUT /logger`.
    PutLogger(LoggerConfig),
    /// `PUT /metrics`.
    PutMetrics(MetricsConfig),
    /// `PATCH /vm` `{"state": "Paused"}`.
    Pause,
    /// `PATCH /vm` `{"state": "Resumed"}`.
    Resume,
}

/// What a successful action returns.
#[derive(Clone, Debug, PartialEq)]
pub enum VmmData {
    /// Nothing: `204 No Content`.
    Empty,
    /// `GET /`.
    InstanceInfo(InstanceInfo),
    /// `GET /version`: the version string.
    Version(String),
    /// `GET /machine-config`.
    MachineConfig(MachineConfig),
    /// `GET /vm/config`: the full configuration, in the config-file shape.
    VmConfig(serde_json::Value),
    /// Any other answer with a body (`GET /balloon`, its statistics).
    Json(serde_json::Value),
}

/// Why an action failed: the `fault_message` a client sees with a 400.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ActionError(pub String);

/// The VMM's answer to one action.
pub type ActionResult = Result<VmmData, ActionError>;

/// Where the answer to one action goes: called once, on the VMM thread.
/// A reply dropped without an answer (the VMM stopped) tells the waiting
/// side so by closing whatever channel it wraps.
pub struct Reply(Box<dyn FnOnce(ActionResult) + Send>);

impl Reply {
    /// A reply that calls `deliver` with the answer.
    pub fn new(deliver: impl FnOnce(ActionResult) + Send + 'static) -> Self {
        Reply(Box::new(deliver))
    }

    /// A reply that sends the answer on a channel, and its receiving end.
    pub fn channel() -> (Self, Receiver<ActionResult>) {
        let (tx, rx) = channel();
        (
            Reply::new(move |result| {
                // A client that went away needs no answer.
                let _ = tx.send(result);
            }),
            rx,
        )
    }

    /// Delivers the answer.
    pub fn send(self, result: ActionResult) {
        (self.0)(result)
    }
}

impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Reply")
    }
}

/// An action and where its answer goes.
#[derive(Debug)]
pub struct ActionRequest {
    /// What is asked.
    pub action: VmmAction,
    /// Where the VMM thread sends the result.
    pub reply: Reply,
}

impl VmmAction {
    /// A short name for the action, for metrics.
    pub fn name(&self) -> &'static str {
        match self {
            VmmAction::DescribeInstance => "get_instance",
            VmmAction::GetVersion => "get_version",
            VmmAction::GetVmConfig => "get_vm_config",
            VmmAction::GetMachineConfig => "get_machine_config",
            VmmAction::PutMachineConfig(_) => "put_machine_config",
            VmmAction::PatchMachineConfig(_) => "patch_machine_config",
            VmmAction::PutBootSource(_) => "put_boot_source",
            VmmAction::PutDrive(_) => "put_drive",
            VmmAction::PatchDrive(_) => "patch_drive",
            VmmAction::PutNetworkInterface(_) => "put_network_interface",
            VmmAction::PatchNetworkInterface(_) => "patch_network_interface",
            VmmAction::PutEntropy(_) => "put_entropy",
            VmmAction::PutVsock(_) => "put_vsock",
            VmmAction::Balloon(b) => b.name(),
            VmmAction::CreateSnapshot(_) => "create_snapshot",
            VmmAction::LoadSnapshot(_) => "load_snapshot",
            VmmAction::PutLogger(_) => "put_logger",
            VmmAction::PutMetrics(_) => "put_metrics",
            VmmAction::InstanceStart => "instance_start",
            VmmAction::SendCtrlAltDel => "send_ctrl_alt_del",
            VmmAction::FlushMetrics => "flush_metrics",
            VmmAction::Shutdown => "shutdown",
            VmmAction::Pause => "pause",
            VmmAction::Resume => "resume",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_info_uses_firecracker_state_names() {
        let info = InstanceInfo {
            id: "pod-1".into(),
            state: InstanceState::NotStarted,
            vmm_version: "0.1.0".into(),
            app_name: "podvm".into(),
        };
        let json = serde_json::to_string(&info).unwrap();
        assert_eq!(
            json,
            r#"{"id":"pod-1","state":"Not started","vmm_version":"0.1.0","app_name":"podvm"}"#
        );
        assert_eq!(
            serde_json::to_string(&InstanceState::Paused).unwrap(),
            r#""Paused""#
        );
    }

    #[test]
    fn updates_refuse_unknown_fields() {
        let u: MachineConfigUpdate = serde_json::from_str(r#"{"vcpu_count": 2}"#).unwrap();
        assert_eq!(u.vcpu_count, Some(2));
        assert!(serde_json::from_str::<MachineConfigUpdate>(r#"{"cpus": 2}"#).is_err());
        let d: DriveUpdate =
            serde_json::from_str(r#"{"drive_id": "r", "path_on_host": "/x"}"#).unwrap();
        assert_eq!(d.drive_id, "r");
    }

    #[test]
    fn a_request_carries_its_reply_channel() {
        let (reply, rx) = Reply::channel();
        let req = ActionRequest {
            action: VmmAction::GetVersion,
            reply,
        };
        req.reply.send(Ok(VmmData::Version("0.1.0".into())));
        assert_eq!(rx.recv().unwrap(), Ok(VmmData::Version("0.1.0".into())));
        // Dropped unanswered: the waiting side sees the channel close.
        let (reply, rx) = Reply::channel();
        drop(reply);
        assert!(rx.recv().is_err());
    }
}
