//! Firecracker's request bodies, as both the control API and
//! configuration files carry them, and their one translation into podvm's
//! configuration types.
//!
//! A field is handled the same way whichever way it arrives:
//! - what podvm honours becomes part of the configuration;
//! - what podvm can ignore without changing what the guest sees or risking
//!   its data is accepted (`cache_type` — podvm always honours the
//!   guest's flushes —, `io_engine: "Sync"`, `cpu_template: "None"`);
//! - anything else is refused with an [`Unsupported`] error naming the
//!   field and the value.
//!
//! Rate limiters are honoured; a bucket podvm cannot honour (a size and
//! no refill time) is refused naming its field, as unsupported
//! ([`crate::RateLimiterConfig`]). Unknown fields are refused by serde
//! (`deny_unknown_fields`).

use std::path::PathBuf;

use serde::Deserialize;

use crate::action::{DriveUpdate, MachineConfigUpdate, NetworkInterfaceUpdate};
use crate::{
    CacheType, DriveConfig, HugePageConfig, MacAddr, MachineConfig, NetConfig, RateLimiterConfig,
    VsockConfig,
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
    rate_limiter: Option<RateLimiterConfig>,
    #[serde(default)]
    socket: Option<String>,
}

/// `limiter` (`null` is none), once checked; `what` names its field.
fn checked(
    limiter: Option<RateLimiterConfig>,
    what: impl FnOnce() -> String,
) -> Result<Option<RateLimiterConfig>, Unsupported> {
    match limiter.map(|l| l.check()) {
        Some(Err(e)) => unsupported(format!("{}.{e}", what())),
        _ => Ok(limiter),
    }
}

impl FcDrive {
    /// The drive configuration, or what podvm cannot honour.
    pub fn into_config(self) -> Result<DriveConfig, Unsupported> {
        let id = self.drive_id;
        if self.socket.is_some() {
            return unsupported(format!("drive {id:?}: socket (vhost-user)"));
        }
        let rate_limiter = checked(self.rate_limiter, || format!("drive {id:?}: rate_limiter"))?
            .and_then(RateLimiterConfig::effective);
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
            rate_limiter,
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
    rate_limiter: Option<RateLimiterConfig>,
}

impl FcDriveUpdate {
    /// The update, or what podvm cannot honour.
    pub fn into_update(self) -> Result<DriveUpdate, Unsupported> {
        let id = &self.drive_id;
        // Buckets of size 0 stay: in an update they remove a limit.
        let rate_limiter = checked(self.rate_limiter, || format!("drive {id:?}: rate_limiter"))?;
        Ok(DriveUpdate {
            drive_id: self.drive_id,
            path_on_host: self.path_on_host,
            rate_limiter,
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
    rx_rate_limiter: Option<RateLimiterConfig>,
    #[serde(default)]
    tx_rate_limiter: Option<RateLimiterConfig>,
}

/// The receive and transmit limiters of an interface.
type NetLimiters = (Option<RateLimiterConfig>, Option<RateLimiterConfig>);

/// The limiters of interface `id`, once checked.
fn checked_net(
    id: &str,
    rx: Option<RateLimiterConfig>,
    tx: Option<RateLimiterConfig>,
) -> Result<NetLimiters, Unsupported> {
    Ok((
        checked(rx, || format!("network interface {id:?}: rx_rate_limiter"))?,
        checked(tx, || format!("network interface {id:?}: tx_rate_limiter"))?,
    ))
}

impl FcNetworkInterface {
    /// The interface configuration, or what podvm cannot honour.
    pub fn into_config(self) -> Result<NetConfig, Unsupported> {
        let (rx, tx) = checked_net(&self.iface_id, self.rx_rate_limiter, self.tx_rate_limiter)?;
        Ok(NetConfig {
            iface_id: self.iface_id,
            host_dev_name: self.host_dev_name,
            guest_mac: self.guest_mac,
            rx_rate_limiter: rx.and_then(RateLimiterConfig::effective),
            tx_rate_limiter: tx.and_then(RateLimiterConfig::effective),
        })
    }
}

/// `PATCH /network-interfaces/{id}` (Firecracker's
/// `PartialNetworkInterface`): only rate limiters can change, bucket by
/// bucket.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FcNetworkInterfaceUpdate {
    /// The interface's id.
    pub iface_id: String,
    #[serde(default)]
    rx_rate_limiter: Option<RateLimiterConfig>,
    #[serde(default)]
    tx_rate_limiter: Option<RateLimiterConfig>,
}

impl FcNetworkInterfaceUpdate {
    /// The update, or what podvm cannot honour. Buckets of size 0 stay:
    /// in an update they remove a limit.
    pub fn into_update(self) -> Result<NetworkInterfaceUpdate, Unsupported> {
        let (rx, tx) = checked_net(&self.iface_id, self.rx_rate_limiter, self.tx_rate_limiter)?;
        Ok(NetworkInterfaceUpdate {
            iface_id: self.iface_id,
            rx_rate_limiter: rx,
            tx_rate_limiter: tx,
        })
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
    rate_limiter: Option<RateLimiterConfig>,
}

impl FcEntropy {
    /// The device's rate limiter, or what podvm cannot honour.
    pub fn into_rate_limiter(self) -> Result<Option<RateLimiterConfig>, Unsupported> {
        Ok(
            checked(self.rate_limiter, || "entropy: rate_limiter".to_string())?
                .and_then(RateLimiterConfig::effective),
        )
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
        assert_eq!(
            p.into_update().unwrap(),
            NetworkInterfaceUpdate {
                iface_id: "eth0".into(),
                rx_rate_limiter: None,
                tx_rate_limiter: None,
            }
        );
    }

    #[test]
    fn rate_limiters_are_accepted_everywhere_firecracker_takes_them() {
        use crate::TokenBucketConfig;
        let bw = TokenBucketConfig {
            size: 1_048_576,
            one_time_burst: Some(4096),
            refill_time: 1000,
        };
        let ops = TokenBucketConfig {
            size: 100,
            one_time_burst: None,
            refill_time: 10,
        };
        let limiter = r#"{"bandwidth": {"size": 1048576, "one_time_burst": 4096, "refill_time": 1000},
                          "ops": {"size": 100, "refill_time": 10}}"#;
        let both = Some(RateLimiterConfig {
            bandwidth: Some(bw),
            ops: Some(ops),
        });
        let d: FcDrive = parse(&format!(
            r#"{{"drive_id": "d", "path_on_host": "/d", "is_root_device": false, "rate_limiter": {limiter}}}"#
        ));
        assert_eq!(d.into_config().unwrap().rate_limiter, both);
        let n: FcNetworkInterface = parse(&format!(
            r#"{{"iface_id": "e", "host_dev_name": "t", "rx_rate_limiter": {limiter},
                "tx_rate_limiter": {{"ops": {{"size": 100, "refill_time": 10}}}}}}"#
        ));
        let n = n.into_config().unwrap();
        assert_eq!(n.rx_rate_limiter, both);
        assert_eq!(n.tx_rate_limiter.unwrap().ops, Some(ops));
        let e: FcEntropy = parse(&format!(r#"{{"rate_limiter": {limiter}}}"#));
        assert_eq!(e.into_rate_limiter().unwrap(), both);
        // A limiter of no buckets, or of buckets of size 0, is none.
        let e: FcEntropy = parse(r#"{"rate_limiter": {"ops": {"size": 0, "refill_time": 0}}}"#);
        assert_eq!(e.into_rate_limiter().unwrap(), None);
        let d: FcDrive = parse(
            r#"{"drive_id": "d", "path_on_host": "/d", "is_root_device": false, "rate_limiter": {}}"#,
        );
        assert_eq!(d.into_config().unwrap().rate_limiter, None);
        // In an update a size 0 bucket stays: it removes a limit.
        let u: FcDriveUpdate = parse(
            r#"{"drive_id": "d", "rate_limiter": {"bandwidth": {"size": 0, "refill_time": 0}}}"#,
        );
        let u = u.into_update().unwrap();
        assert_eq!(u.rate_limiter.unwrap().bandwidth.unwrap().size, 0);
        assert_eq!(u.path_on_host, None);
        let p: FcNetworkInterfaceUpdate = parse(&format!(
            r#"{{"iface_id": "e", "tx_rate_limiter": {limiter}}}"#
        ));
        let p = p.into_update().unwrap();
        assert_eq!((p.rx_rate_limiter, p.tx_rate_limiter), (None, both));
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
                .contains(r#"huge_pages "1G": expected "None" or "2M""#),
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
                r#"{"drive_id": "d", "path_on_host": "/d", "is_root_device": false,
                    "rate_limiter": {"ops": {"size": 8, "refill_time": 0}}}"#
            ),
            "drive \"d\": rate_limiter.ops.refill_time 0 (a bucket of size 8 needs at least 1 ms; \
             size 0 turns it off) is not supported by podvm"
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

        let update = parse::<FcDriveUpdate>(
            r#"{"drive_id": "d", "rate_limiter": {"bandwidth": {"size": 1, "refill_time": 0}}}"#,
        );
        assert_eq!(
            update.into_update().unwrap_err().to_string(),
            "drive \"d\": rate_limiter.bandwidth.refill_time 0 (a bucket of size 1 needs at least \
             1 ms; size 0 turns it off) is not supported by podvm"
        );
        let net = parse::<FcNetworkInterface>(
            r#"{"iface_id": "e", "host_dev_name": "t",
                "tx_rate_limiter": {"ops": {"size": 1, "refill_time": 18446744073709552}}}"#,
        );
        assert_eq!(
            net.into_config().unwrap_err().to_string(),
            "network interface \"e\": tx_rate_limiter.ops.refill_time 18446744073709552 (more \
             than 18446744073709 ms) is not supported by podvm"
        );
        let patch = parse::<FcNetworkInterfaceUpdate>(
            r#"{"iface_id": "e", "rx_rate_limiter": {"bandwidth": {"size": 1, "refill_time": 0}}}"#,
        );
        assert!(patch
            .into_update()
            .unwrap_err()
            .to_string()
            .starts_with("network interface \"e\": rx_rate_limiter.bandwidth.refill_time 0"));
        let entropy =
            parse::<FcEntropy>(r#"{"rate_limiter": {"ops": {"size": 1, "refill_time": 0}}}"#);
        assert!(entropy
            .into_rate_limiter()
            .unwrap_err()
            .to_string()
            .starts_with("entropy: rate_limiter.ops.refill_time 0"));
        // Shapes Firecracker's schema refuses are refused by serde.
        for bad in [
            r#"{"rate_limiter": {"ops": {"size": 1}}}"#,
            r#"{"rate_limiter": {"ops": {"size": 1, "refill_time": 1, "extra": 0}}}"#,
            r#"{"rate_limiter": {"iops": {}}}"#,
            r#"{"rate_limiter": 5}"#,
        ] {
            assert!(serde_json::from_str::<FcEntropy>(bad).is_err(), "{bad}");
        }
    }
}
