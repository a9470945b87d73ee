//! Firecracker's request bodies, as both the control API and
//! configuration files carry them, and their one translation into podvm's
//! configuration types.
//!
//! A field is handled the same way whichever way it arrives:
//! - what podvm honours becomes part of the configuration;
//! - what podvm can ignore without changing what the guest sees or risking
//!   its data is accepted (`cache_type` — podvm always honours the
//!   guest's flushes —, `io_engine: "Sync"`, `cpu_template: "None"`, a
//!   `null` rate limiter);
//! - anything else is refused with an [`Unsupported`] error naming the
//!   field and the value.
//!
//! Unknown fields are refused by serde (`deny_unknown_fields`).

use std::path::PathBuf;

use serde::Deserialize;

use crate::action::{DriveUpdate, MachineConfigUpdate};
use crate::{
    CacheType, DriveConfig, HugePageConfig, MacAddr, MachineConfig, NetConfig, VsockConfig,
};

/// A field podvm does not support, or not with that value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0} is not supported by podvm")]
pub struct Unsupported(pub String);

fn unsupported<T>(what: impl Into<String>) -> Result<T, Unsupported> {
    Err(Unsupported(what.into()))
}

/// `machine-config` (Firecracker's `MachineConfiguration`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FcMachineConfig {
    vcpu_count: u8,
    mem_size_mib: usize,
    #[serde(default)]
    smt: bool,
    #[serde(default)]
    track_dirty_pages: bool,
    #[serde(default)]
    cpu_template: Option<String>,
    /// `"None"` or `"2M"` (an unknown value is refused by serde).
    #[serde(default)]
    huge_pages: Option<HugePageConfig>,
}

/// Refuses the machine fields podvm does not implement.
fn check_machine_extras(cpu_template: Option<&str>) -> Result<(), Unsupported> {
    if let Some(t) = cpu_template.filter(|t| *t != "None") {
        return unsupported(format!("machine-config.cpu_template {t:?}"));
    }
    Ok(())
}

impl FcMachineConfig {
    /// The machine configuration, or what podvm cannot honour.
    pub fn into_config(self) -> Result<MachineConfig, Unsupported> {
        check_machine_extras(self.cpu_template.as_deref())?;
        Ok(MachineConfig {
            vcpu_count: self.vcpu_count,
            mem_size_mib: self.mem_size_mib,
            smt: self.smt,
            track_dirty_pages: self.track_dirty_pages,
            huge_pages: self.huge_pages.unwrap_or_default(),
        })
    }
}

/// `PATCH /machine-config`: every field optional.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FcMachineConfigUpdate {
    #[serde(default)]
    vcpu_count: Option<u8>,
    #[serde(default)]
    mem_size_mib: Option<usize>,
    #[serde(default)]
    smt: Option<bool>,
    #[serde(default)]
    track_dirty_pages: Option<bool>,
    #[serde(default)]
    cpu_template: Option<String>,
    #[serde(default)]
    huge_pages: Option<HugePageConfig>,
}

impl FcMachineConfigUpdate {
    /// The update, or what podvm cannot honour.
    pub fn into_update(self) -> Result<MachineConfigUpdate, Unsupported> {
        check_machine_extras(self.cpu_template.as_deref())?;
        Ok(MachineConfigUpdate {
            vcpu_count: self.vcpu_count,
            mem_size_mib: self.mem_size_mib,
            smt: self.smt,
            track_dirty_pages: self.track_dirty_pages,
            huge_pages: self.huge_pages,
        })
    }
}

/// `drives` entry, `PUT /drives/{id}` (Firecracker's `Drive`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FcDrive {
    /// The drive's id.
    pub drive_id: String,
    is_root_device: bool,
    #[serde(default)]
    path_on_host: Option<PathBuf>,
    #[serde(default)]
    is_read_only: Option<bool>,
    #[serde(default)]
    partuuid: Option<String>,
    #[serde(default)]
    cache_type: Option<CacheType>,
    #[serde(default)]
    io_engine: Option<String>,
    #[serde(default)]
    rate_limiter: Option<serde_json::Value>,
    #[serde(default)]
    socket: Option<String>,
}

/// Refuses a rate limiter that is given (a `null` one is none).
fn no_rate_limiter(
    limiter: &Option<serde_json::Value>,
    what: impl FnOnce() -> String,
) -> Result<(), Unsupported> {
    match limiter {
        None | Some(serde_json::Value::Null) => Ok(()),
        Some(_) => unsupported(format!("{} (yet)", what())),
    }
}

impl FcDrive {
    /// The drive configuration, or what podvm cannot honour.
    pub fn into_config(self) -> Result<DriveConfig, Unsupported> {
        let id = self.drive_id;
        if self.socket.is_some() {
            return unsupported(format!("drive {id:?}: socket (vhost-user)"));
        }
        no_rate_limiter(&self.rate_limiter, || format!("drive {id:?}: rate_limiter"))?;
        if let Some(e) = self.io_engine.as_deref().filter(|e| *e != "Sync") {
            return unsupported(format!("drive {id:?}: io_engine {e:?} (yet)"));
        }
        let Some(path_on_host) = self.path_on_host else {
            return unsupported(format!("drive {id:?} without path_on_host"));
        };
        Ok(DriveConfig {
            drive_id: id,
            path_on_host,
            is_root_device: self.is_root_device,
            is_read_only: self.is_read_only.unwrap_or(false),
            partuuid: self.partuuid,
            cache_type: self.cache_type.unwrap_or_default(),
        })
    }
}

/// `PATCH /drives/{id}` (Firecracker's `PartialDrive`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FcDriveUpdate {
    /// The drive's id.
    pub drive_id: String,
    #[serde(default)]
    path_on_host: Option<PathBuf>,
    #[serde(default)]
    rate_limiter: Option<serde_json::Value>,
}

impl FcDriveUpdate {
    /// The update, or what podvm cannot honour.
    pub fn into_update(self) -> Result<DriveUpdate, Unsupported> {
        let id = &self.drive_id;
        no_rate_limiter(&self.rate_limiter, || format!("drive {id:?}: rate_limiter"))?;
        Ok(DriveUpdate {
            drive_id: self.drive_id,
            path_on_host: self.path_on_host,
        })
    }
}

/// `network-interfaces` entry, `PUT /network-interfaces/{id}`
/// (Firecracker's `NetworkInterface`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FcNetworkInterface {
    /// The interface's id.
    pub iface_id: String,
    host_dev_name: String,
    #[serde(default)]
    guest_mac: Option<MacAddr>,
    #[serde(default)]
    rx_rate_limiter: Option<serde_json::Value>,
    #[serde(default)]
    tx_rate_limiter: Option<serde_json::Value>,
}

fn no_net_rate_limiters(
    id: &str,
    rx: &Option<serde_json::Value>,
    tx: &Option<serde_json::Value>,
) -> Result<(), Unsupported> {
    no_rate_limiter(rx, || format!("network interface {id:?}: rx_rate_limiter"))?;
    no_rate_limiter(tx, || format!("network interface {id:?}: tx_rate_limiter"))
}

impl FcNetworkInterface {
    /// The interface configuration, or what podvm cannot honour.
    pub fn into_config(self) -> Result<NetConfig, Unsupported> {
        no_net_rate_limiters(&self.iface_id, &self.rx_rate_limiter, &self.tx_rate_limiter)?;
        Ok(NetConfig {
            iface_id: self.iface_id,
            host_dev_name: self.host_dev_name,
            guest_mac: self.guest_mac,
        })
    }
}

/// `PATCH /network-interfaces/{id}` (Firecracker's
/// `PartialNetworkInterface`): only rate limiters can change.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FcNetworkInterfaceUpdate {
    /// The interface's id.
    pub iface_id: String,
    #[serde(default)]
    rx_rate_limiter: Option<serde_json::Value>,
    #[serde(default)]
    tx_rate_limiter: Option<serde_json::Value>,
}

impl FcNetworkInterfaceUpdate {
    /// The interface the update is for, once nothing in it is refused.
    pub fn into_iface_id(self) -> Result<String, Unsupported> {
        no_net_rate_limiters(&self.iface_id, &self.rx_rate_limiter, &self.tx_rate_limiter)?;
        Ok(self.iface_id)
    }
}

/// `vsock`, `PUT /vsock` (Firecracker's `Vsock`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FcVsock {
    /// Deprecated in Firecracker and ignored there too.
    #[serde(default)]
    vsock_id: Option<String>,
    guest_cid: u32,
    uds_path: PathBuf,
}

impl FcVsock {
    /// The vsock configuration (its values are checked with the rest of
    /// the spec: [`crate::VmSpec::validate`]).
    pub fn into_config(self) -> Result<VsockConfig, Unsupported> {
        let _ = self.vsock_id;
        Ok(VsockConfig {
            guest_cid: self.guest_cid,
            uds_path: self.uds_path,
        })
    }
}

/// `entropy`, `PUT /entropy` (Firecracker's `EntropyDevice`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FcEntropy {
    #[serde(default)]
    rate_limiter: Option<serde_json::Value>,
}

impl FcEntropy {
    /// Checks nothing in it is refused.
    pub fn check(&self) -> Result<(), Unsupported> {
        no_rate_limiter(&self.rate_limiter, || "entropy.rate_limiter".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse<T: serde::de::DeserializeOwned>(json: &str) -> T {
        serde_json::from_str(json).unwrap_or_else(|e| panic!("{json}: {e}"))
    }

    #[test]
    fn harmless_fields_are_accepted_with_their_firecracker_values() {
        let m: FcMachineConfig = parse(
            r#"{"vcpu_count": 2, "mem_size_mib": 256, "smt": true, "track_dirty_pages": false,
                "cpu_template": "None", "huge_pages": "None"}"#,
        );
        assert_eq!(
            m.into_config(),
            Ok(MachineConfig {
                vcpu_count: 2,
                mem_size_mib: 256,
                smt: true,
                track_dirty_pages: false,
                huge_pages: HugePageConfig::None,
            })
        );
        let huge: FcMachineConfig =
            parse(r#"{"vcpu_count": 1, "mem_size_mib": 128, "huge_pages": "2M"}"#);
        assert_eq!(
            huge.into_config().unwrap().huge_pages,
            HugePageConfig::Hugetlbfs2M
        );
        let patch: FcMachineConfigUpdate = parse(r#"{"huge_pages": "2M"}"#);
        assert_eq!(
            patch.into_update().unwrap().huge_pages,
            Some(HugePageConfig::Hugetlbfs2M)
        );
        let patch: FcMachineConfigUpdate = parse(r#"{"vcpu_count": 2}"#);
        assert_eq!(patch.into_update().unwrap().huge_pages, None);
        let d: FcDrive = parse(
            r#"{"drive_id": "rootfs", "path_on_host": "/r", "is_root_device": true,
                "cache_type": "Writeback", "io_engine": "Sync", "rate_limiter": null,
                "partuuid": "0eaa91a0-01"}"#,
        );
        let d = d.into_config().unwrap();
        assert_eq!(d.cache_type, CacheType::Writeback);
        assert_eq!(d.partuuid.as_deref(), Some("0eaa91a0-01"));
        assert!(!d.is_read_only);
        let n: FcNetworkInterface =
            parse(r#"{"iface_id": "eth0", "host_dev_name": "tap0", "rx_rate_limiter": null}"#);
        assert_eq!(n.into_config().unwrap().host_dev_name, "tap0");
        let p: FcNetworkInterfaceUpdate = parse(r#"{"iface_id": "eth0"}"#);
        assert_eq!(p.into_iface_id().unwrap(), "eth0");
    }

    #[test]
    fn what_podvm_cannot_honour_is_refused_by_name() {
        let machine = |json: &str| {
            parse::<FcMachineConfig>(json)
                .into_config()
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            machine(r#"{"vcpu_count": 1, "mem_size_mib": 128, "cpu_template": "T2"}"#),
            "machine-config.cpu_template \"T2\" is not supported by podvm"
        );
        let update = parse::<FcMachineConfigUpdate>(r#"{"cpu_template": "C3"}"#);
        assert!(update.into_update().is_err());
        // Huge page sizes Firecracker does not have either are not values
        // of the field at all.
        let err = serde_json::from_str::<FcMachineConfig>(
            r#"{"vcpu_count": 1, "mem_size_mib": 128, "huge_pages": "1G"}"#,
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("unknown variant `1G`, expected `None` or `2M`"),
            "{err}"
        );

        let drive = |json: &str| {
            parse::<FcDrive>(json)
                .into_config()
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            drive(
                r#"{"drive_id": "d", "path_on_host": "/d", "is_root_device": false, "io_engine": "Async"}"#
            ),
            "drive \"d\": io_engine \"Async\" (yet) is not supported by podvm"
        );
        assert_eq!(
            drive(
                r#"{"drive_id": "d", "path_on_host": "/d", "is_root_device": false, "rate_limiter": {}}"#
            ),
            "drive \"d\": rate_limiter (yet) is not supported by podvm"
        );
        assert_eq!(
            drive(r#"{"drive_id": "d", "is_root_device": false, "socket": "/s"}"#),
            "drive \"d\": socket (vhost-user) is not supported by podvm"
        );
        assert_eq!(
            drive(r#"{"drive_id": "d", "is_root_device": false}"#),
            "drive \"d\" without path_on_host is not supported by podvm"
        );
        let err = serde_json::from_str::<FcDrive>(
            r#"{"drive_id": "d", "path_on_host": "/d", "is_root_device": false, "cache_type": "Fast"}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown variant `Fast`"), "{err}");

        let update =
            parse::<FcDriveUpdate>(r#"{"drive_id": "d", "rate_limiter": {"bandwidth": {}}}"#);
        assert_eq!(
            update.into_update().unwrap_err().to_string(),
            "drive \"d\": rate_limiter (yet) is not supported by podvm"
        );
        let net = parse::<FcNetworkInterface>(
            r#"{"iface_id": "e", "host_dev_name": "t", "tx_rate_limiter": {}}"#,
        );
        assert_eq!(
            net.into_config().unwrap_err().to_string(),
            "network interface \"e\": tx_rate_limiter (yet) is not supported by podvm"
        );
        let patch =
            parse::<FcNetworkInterfaceUpdate>(r#"{"iface_id": "e", "rx_rate_limiter": {}}"#);
        assert_eq!(
            patch.into_iface_id().unwrap_err().to_string(),
            "network interface \"e\": rx_rate_limiter (yet) is not supported by podvm"
        );
        let entropy = parse::<FcEntropy>(r#"{"rate_limiter": {}}"#);
        assert_eq!(
            entropy.check().unwrap_err().to_string(),
            "entropy.rate_limiter (yet) is not supported by podvm"
        );
    }
}
