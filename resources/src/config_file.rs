//! Firecracker's JSON configuration file (`--config-file`), as orchestrators
//! already write it: `boot-source`, `machine-config`, `drives`,
//! `network-interfaces`, `entropy`, `vsock`, `balloon`, `logger`, `metrics`.
//!
//! The sections the control API also takes are parsed with the API's own
//! request types ([`crate::firecracker`]), so that a field is accepted or
//! refused, with the same message, whichever way it comes. Sections podvm
//! does not implement yet (`mmds-config`, `cpu-config`) are
//! refused by name; unknown fields are refused too.

use serde::Deserialize;

use crate::action::{LoggerConfig, MetricsConfig};
use crate::firecracker::{
    FcDrive, FcEntropy, FcMachineConfig, FcNetworkInterface, FcVsock, Unsupported,
};
use crate::{BootSourceConfig, MachineConfig, SerialConfig, VmSpec};

/// What a configuration file asks for: the VM, and where the VMM's own log
/// and metrics go (as `PUT /logger` and `PUT /metrics` would set them).
#[derive(Clone, Debug, PartialEq)]
pub struct ConfigFileContents {
    /// The VM.
    pub spec: VmSpec,
    /// The `logger` section.
    pub logger: Option<LoggerConfig>,
    /// The `metrics` section.
    pub metrics: Option<MetricsConfig>,
}

/// A configuration file that cannot describe a VM.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    /// Not valid JSON, or not the expected shape.
    #[error("{0}")]
    Parse(#[from] serde_json::Error),
    /// A field podvm does not support (yet), as the API refuses it too.
    #[error("{0}")]
    Unsupported(#[from] Unsupported),
}

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(rename = "boot-source")]
    boot_source: BootSourceConfig,
    #[serde(rename = "machine-config", default)]
    machine_config: Option<FcMachineConfig>,
    #[serde(default)]
    drives: Vec<FcDrive>,
    #[serde(rename = "network-interfaces", default)]
    network_interfaces: Vec<FcNetworkInterface>,
    #[serde(default)]
    entropy: Option<FcEntropy>,
    #[serde(default)]
    vsock: Option<FcVsock>,
    #[serde(default)]
    balloon: Option<crate::BalloonConfig>,
    #[serde(rename = "mmds-config", default)]
    mmds_config: Option<serde_json::Value>,
    #[serde(default)]
    logger: Option<LoggerConfig>,
    #[serde(default)]
    metrics: Option<MetricsConfig>,
    #[serde(rename = "cpu-config", default)]
    cpu_config: Option<serde_json::Value>,
}

fn unsupported(what: impl Into<String>) -> ConfigFileError {
    ConfigFileError::Unsupported(Unsupported(what.into()))
}

/// The VM spec a Firecracker configuration file describes; the console
/// goes to standard output, as with Firecracker.
pub fn parse_config_file(json: &str) -> Result<VmSpec, ConfigFileError> {
    parse_config_file_contents(json).map(|c| c.spec)
}

/// Everything a Firecracker configuration file describes: the VM spec (see
/// [`parse_config_file`]) and its `logger` and `metrics` sections.
pub fn parse_config_file_contents(json: &str) -> Result<ConfigFileContents, ConfigFileError> {
    let file: ConfigFile = serde_json::from_str(json)?;
    let (logger, metrics) = (file.logger.clone(), file.metrics.clone());
    let spec = spec_of(file)?;
    Ok(ConfigFileContents {
        spec,
        logger,
        metrics,
    })
}

fn spec_of(file: ConfigFile) -> Result<VmSpec, ConfigFileError> {
    for (present, key) in [
        (file.mmds_config.is_some(), "\"mmds-config\""),
        (file.cpu_config.is_some(), "\"cpu-config\""),
    ] {
        if present {
            return Err(unsupported(format!("{key} (yet)")));
        }
    }

    let machine = match file.machine_config {
        None => MachineConfig::default(),
        Some(m) => m.into_config()?,
    };
    let drives = file
        .drives
        .into_iter()
        .map(FcDrive::into_config)
        .collect::<Result<_, _>>()?;
    let net = file
        .network_interfaces
        .into_iter()
        .map(FcNetworkInterface::into_config)
        .collect::<Result<_, _>>()?;
    let (entropy, entropy_rate_limiter) = match file.entropy {
        None => (false, None),
        Some(e) => (true, e.into_rate_limiter()?),
    };

    Ok(VmSpec {
        machine,
        boot_source: file.boot_source,
        serial: SerialConfig::Stdout,
        drives,
        net,
        entropy,
        entropy_rate_limiter,
        vsock: file.vsock.map(FcVsock::into_config).transpose()?,
        balloon: file.balloon,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// What firecracker-go-sdk and the Firecracker docs write.
    const FULL: &str = r#"{
      "boot-source": {
        "kernel_image_path": "/img/vmlinux",
        "boot_args": "console=ttyS0 reboot=k panic=1 pci=off",
        "initrd_path": "/img/initrd"
      },
      "drives": [
        {"drive_id": "rootfs", "path_on_host": "/img/rootfs.ext4", "is_root_device": true,
         "is_read_only": false, "cache_type": "Unsafe", "io_engine": "Sync"},
        {"drive_id": "data", "path_on_host": "/img/data.ext4", "is_root_device": false,
         "is_read_only": true}
      ],
      "machine-config": {"vcpu_count": 2, "mem_size_mib": 1024, "smt": false,
                         "track_dirty_pages": false},
      "network-interfaces": [
        {"iface_id": "eth0", "guest_mac": "06:00:ac:10:00:02", "host_dev_name": "tap0"}
      ],
      "entropy": {},
      "vsock": {"vsock_id": "vsock0", "guest_cid": 3, "uds_path": "/run/v.sock"},
      "balloon": {"amount_mib": 16, "deflate_on_oom": true, "free_page_reporting": true}
    }"#;

    #[test]
    fn a_firecracker_config_becomes_a_spec() {
        let spec = parse_config_file(FULL).unwrap();
        assert_eq!(spec.machine.vcpu_count, 2);
        assert_eq!(spec.machine.mem_size_mib, 1024);
        assert_eq!(
            spec.boot_source.kernel_image_path,
            PathBuf::from("/img/vmlinux")
        );
        assert_eq!(
            spec.boot_source.initrd_path,
            Some(PathBuf::from("/img/initrd"))
        );
        assert_eq!(spec.drives.len(), 2);
        assert!(spec.drives[0].is_root_device && !spec.drives[0].is_read_only);
        assert!(spec.drives[1].is_read_only);
        assert_eq!(spec.net[0].host_dev_name, "tap0");
        assert_eq!(
            spec.net[0].guest_mac.unwrap().to_string(),
            "06:00:ac:10:00:02"
        );
        assert!(spec.entropy);
        let balloon = spec.balloon.unwrap();
        assert_eq!(balloon.amount_mib, 16);
        assert!(balloon.deflate_on_oom && balloon.free_page_reporting);
        assert_eq!(balloon.stats_polling_interval_s, 0);
        assert_eq!(
            spec.vsock,
            Some(crate::VsockConfig {
                guest_cid: 3,
                uds_path: "/run/v.sock".into()
            })
        );
        assert_eq!(spec.serial, SerialConfig::Stdout);
        assert_eq!(spec.validate(8), Ok(()));
    }

    #[test]
    fn rate_limiters_in_a_config_file_reach_the_spec() {
        let spec = parse_config_file(
            r#"{"boot-source": {"kernel_image_path": "/k"},
                "drives": [{"drive_id": "d", "path_on_host": "/d", "is_root_device": true,
                            "rate_limiter": {"ops": {"size": 1, "refill_time": 100}}}],
                "network-interfaces": [{"iface_id": "e", "host_dev_name": "t",
                    "rx_rate_limiter": {"bandwidth": {"size": 1000, "one_time_burst": 10,
                                                      "refill_time": 1}},
                    "tx_rate_limiter": null}],
                "entropy": {"rate_limiter": {"bandwidth": {"size": 64, "refill_time": 1000}}}}"#,
        )
        .unwrap();
        let ops = spec.drives[0].rate_limiter.unwrap().ops.unwrap();
        assert_eq!((ops.size, ops.refill_time), (1, 100));
        let rx = spec.net[0].rx_rate_limiter.unwrap().bandwidth.unwrap();
        assert_eq!(rx.one_time_burst, Some(10));
        assert_eq!(spec.net[0].tx_rate_limiter, None);
        assert!(spec.entropy);
        assert_eq!(
            spec.entropy_rate_limiter.unwrap().bandwidth.unwrap().size,
            64
        );
        assert_eq!(spec.validate(8), Ok(()));
    }

    #[test]
    fn minimal_config_uses_the_defaults() {
        let spec = parse_config_file(r#"{"boot-source": {"kernel_image_path": "/k"}}"#).unwrap();
        assert_eq!(spec.machine, MachineConfig::default());
        assert_eq!(spec.boot_source.cmdline(), crate::DEFAULT_KERNEL_CMDLINE);
        assert!(spec.drives.is_empty() && spec.net.is_empty() && !spec.entropy);
    }

    #[test]
    fn a_partuuid_is_kept_with_its_drive() {
        let spec = parse_config_file(
            r#"{"boot-source": {"kernel_image_path": "/k", "boot_args": "console=ttyS0"},
                "drives": [{"drive_id": "r", "path_on_host": "/r", "is_root_device": true,
                            "is_read_only": true, "partuuid": "0eaa91a0-01"}]}"#,
        )
        .unwrap();
        // The builder turns it into `root=PARTUUID=…` (kernel_cmdline).
        assert_eq!(spec.drives[0].partuuid.as_deref(), Some("0eaa91a0-01"));
        assert_eq!(spec.boot_source.cmdline(), "console=ttyS0");
    }

    #[test]
    fn bad_and_unsupported_configs_name_the_field() {
        let cases = [
            ("{", "EOF"),
            (
                r#"{"machine-config": {"vcpu_count": 1, "mem_size_mib": 128}}"#,
                "missing field `boot-source`",
            ),
            (
                r#"{"boot-source": {"kernel_image_path": "/k"}, "bogus": 1}"#,
                "unknown field `bogus`",
            ),
            (
                r#"{"boot-source": {"kernel_image_path": 5}}"#,
                "invalid type",
            ),
            (
                r#"{"boot-source": {"kernel_image_path": "/k"}, "vsock": {"guest_cid": 3}}"#,
                "missing field `uds_path`",
            ),
            (
                r#"{"boot-source": {"kernel_image_path": "/k"}, "balloon": {}}"#,
                "missing field `amount_mib`",
            ),
            (
                r#"{"boot-source": {"kernel_image_path": "/k"}, "logger": {"colour": true}}"#,
                "unknown field `colour`",
            ),
            (
                r#"{"boot-source": {"kernel_image_path": "/k"}, "metrics": {}}"#,
                "missing field `metrics_path`",
            ),
            (
                r#"{"boot-source": {"kernel_image_path": "/k"},
                   "machine-config": {"vcpu_count": 1, "mem_size_mib": 128, "cpu_template": "T2"}}"#,
                "machine-config.cpu_template \"T2\" is not supported",
            ),
            (
                r#"{"boot-source": {"kernel_image_path": "/k"},
                   "drives": [{"drive_id": "d", "path_on_host": "/d", "is_root_device": false,
                               "rate_limiter": {"bandwidth": {"size": 4096, "refill_time": 0}}}]}"#,
                "drive \"d\": rate_limiter.bandwidth.refill_time 0 (a bucket of size 4096 needs",
            ),
            (
                r#"{"boot-source": {"kernel_image_path": "/k"},
                   "drives": [{"drive_id": "d", "path_on_host": "/d", "is_root_device": false,
                               "rate_limiter": {"ops": {"size": 1}}}]}"#,
                "missing field `refill_time`",
            ),
            (
                r#"{"boot-source": {"kernel_image_path": "/k"},
                   "entropy": {"rate_limiter": {"ops": {"size": 1, "refill_time": 0}}}}"#,
                "entropy: rate_limiter.ops.refill_time 0",
            ),
            (
                r#"{"boot-source": {"kernel_image_path": "/k"},
                   "drives": [{"drive_id": "d", "is_root_device": false, "socket": "/s"}]}"#,
                "drive \"d\": socket (vhost-user) is not supported",
            ),
            (
                r#"{"boot-source": {"kernel_image_path": "/k"},
                   "network-interfaces": [{"iface_id": "e", "host_dev_name": "t",
                                           "guest_mac": "zz"}]}"#,
                "invalid MAC address",
            ),
            (
                r#"{"boot-source": {"kernel_image_path": "/k"},
                   "network-interfaces": [{"iface_id": "e", "host_dev_name": "t",
                                           "tx_rate_limiter": {"ops": {"size": 2, "refill_time": 0}}}]}"#,
                "network interface \"e\": tx_rate_limiter.ops.refill_time 0",
            ),
        ];
        for (json, want) in cases {
            let err = parse_config_file(json).unwrap_err().to_string();
            assert!(err.contains(want), "{json}: {err}");
        }
    }

    #[test]
    fn logger_and_metrics_sections_are_read() {
        let c = parse_config_file_contents(
            r#"{"boot-source": {"kernel_image_path": "/k"},
                "logger": {"log_path": "/tmp/fc.log", "level": "Info", "show_level": true},
                "metrics": {"metrics_path": "/tmp/fc.metrics"}}"#,
        )
        .unwrap();
        let logger = c.logger.unwrap();
        assert_eq!(logger.log_path, Some("/tmp/fc.log".into()));
        assert_eq!(logger.level.as_deref(), Some("Info"));
        assert_eq!(logger.show_level, Some(true));
        assert_eq!(
            c.metrics.unwrap().metrics_path,
            PathBuf::from("/tmp/fc.metrics")
        );
        assert_eq!(c.spec.boot_source.kernel_image_path, PathBuf::from("/k"));
        let bare =
            parse_config_file_contents(r#"{"boot-source": {"kernel_image_path": "/k"}}"#).unwrap();
        assert_eq!((bare.logger, bare.metrics), (None, None));
    }
}
