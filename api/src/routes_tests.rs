use std::collections::BTreeSet;

use hyper::StatusCode;
use resources::action::{DriveUpdate, MachineConfigUpdate};
use resources::{DriveConfig, MacAddr, MachineConfig, NetConfig};

use super::*;

fn ok(method: Method, path: &str, body: &str) -> VmmAction {
    route(&method, path, body.as_bytes()).unwrap_or_else(|e| panic!("{method} {path} {body}: {e}"))
}

fn err(method: Method, path: &str, body: &str) -> (StatusCode, String) {
    match route(&method, path, body.as_bytes()) {
        Ok(a) => panic!("{method} {path} {body}: expected an error, got {a:?}"),
        Err(e) => (e.status(), e.to_string()),
    }
}

#[test]
fn gets_map_to_queries() {
    assert_eq!(ok(Method::GET, "/", ""), VmmAction::DescribeInstance);
    assert_eq!(ok(Method::GET, "/version", ""), VmmAction::GetVersion);
    assert_eq!(ok(Method::GET, "/vm/config", ""), VmmAction::GetVmConfig);
    assert_eq!(
        ok(Method::GET, "/machine-config", ""),
        VmmAction::GetMachineConfig
    );
}

#[test]
fn configuration_bodies_parse_into_resources_types() {
    assert_eq!(
        ok(
            Method::PUT,
            "/machine-config",
            r#"{"vcpu_count": 2, "mem_size_mib": 256, "smt": false}"#
        ),
        VmmAction::PutMachineConfig(MachineConfig {
            vcpu_count: 2,
            mem_size_mib: 256,
            smt: false,
            track_dirty_pages: false,
            huge_pages: resources::HugePageConfig::None,
        })
    );
    assert_eq!(
        ok(Method::PATCH, "/machine-config", r#"{"mem_size_mib": 512}"#),
        VmmAction::PatchMachineConfig(MachineConfigUpdate {
            mem_size_mib: Some(512),
            ..Default::default()
        })
    );
    assert_eq!(
        ok(
            Method::PUT,
            "/boot-source",
            r#"{"kernel_image_path": "/k", "boot_args": "console=ttyS0"}"#
        ),
        VmmAction::PutBootSource(BootSourceConfig {
            kernel_image_path: "/k".into(),
            boot_args: Some("console=ttyS0".into()),
            initrd_path: None
        })
    );
    assert_eq!(
        ok(
            Method::PUT,
            "/drives/rootfs",
            r#"{"drive_id": "rootfs", "path_on_host": "/r.ext4", "is_root_device": true, "is_read_only": false}"#
        ),
        VmmAction::PutDrive(DriveConfig {
            drive_id: "rootfs".into(),
            path_on_host: "/r.ext4".into(),
            is_root_device: true,
            is_read_only: false,
            ..Default::default()
        })
    );
    assert_eq!(
        ok(
            Method::PATCH,
            "/drives/rootfs",
            r#"{"drive_id": "rootfs", "path_on_host": "/new.ext4"}"#
        ),
        VmmAction::PatchDrive(DriveUpdate {
            drive_id: "rootfs".into(),
            path_on_host: Some("/new.ext4".into()),
            rate_limiter: None,
        })
    );
    assert_eq!(
        ok(
            Method::PUT,
            "/network-interfaces/eth0",
            r#"{"iface_id": "eth0", "host_dev_name": "tap0", "guest_mac": "06:00:ac:10:00:02"}"#
        ),
        VmmAction::PutNetworkInterface(NetConfig {
            iface_id: "eth0".into(),
            host_dev_name: "tap0".into(),
            guest_mac: Some(MacAddr([6, 0, 0xac, 0x10, 0, 2])),
            ..Default::default()
        })
    );
    assert_eq!(
        ok(Method::PUT, "/entropy", "{}"),
        VmmAction::PutEntropy(None)
    );
    assert_eq!(
        ok(
            Method::PUT,
            "/vsock",
            r#"{"vsock_id": "v", "guest_cid": 3, "uds_path": "/v.sock"}"#
        ),
        VmmAction::PutVsock(resources::VsockConfig {
            guest_cid: 3,
            uds_path: "/v.sock".into()
        })
    );
    assert_eq!(
        ok(Method::PUT, "/entropy", r#"{"rate_limiter": null}"#),
        VmmAction::PutEntropy(None)
    );
}

#[test]
fn actions_and_vm_state() {
    for (name, action) in [
        ("InstanceStart", VmmAction::InstanceStart),
        ("SendCtrlAltDel", VmmAction::SendCtrlAltDel),
        ("FlushMetrics", VmmAction::FlushMetrics),
        ("Shutdown", VmmAction::Shutdown),
    ] {
        let body = format!(r#"{{"action_type": "{name}"}}"#);
        assert_eq!(ok(Method::PUT, "/actions", &body), action);
    }
    assert_eq!(
        ok(Method::PATCH, "/vm", r#"{"state": "Paused"}"#),
        VmmAction::Pause
    );
    assert_eq!(
        ok(Method::PATCH, "/vm", r#"{"state": "Resumed"}"#),
        VmmAction::Resume
    );
}

#[test]
fn unknown_paths_are_404_and_wrong_methods_405() {
    for path in [
        "/nope",
        "/drives",
        "/drives/",
        "/drives/a/b",
        "/vm/config/x",
        "//",
        "",
    ] {
        let (status, msg) = err(Method::GET, path, "");
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert!(msg.contains("no such path"), "{msg}");
    }
    let (status, msg) = err(Method::DELETE, "/machine-config", "");
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        msg,
        "method DELETE is not allowed on /machine-config (allowed: GET, PUT, PATCH)"
    );
    assert_eq!(
        err(Method::GET, "/actions", "").0,
        StatusCode::METHOD_NOT_ALLOWED
    );
    assert_eq!(
        err(Method::PUT, "/", "{}").0,
        StatusCode::METHOD_NOT_ALLOWED
    );
    assert_eq!(
        err(Method::GET, "/drives/rootfs", "").0,
        StatusCode::METHOD_NOT_ALLOWED
    );
}

#[test]
fn bad_bodies_are_400_naming_the_field() {
    let cases = [
        (
            Method::PUT,
            "/machine-config",
            r#"{"cpus": 2}"#,
            "machine-config: unknown field `cpus`",
        ),
        (
            Method::PUT,
            "/machine-config",
            r#"{"vcpu_count": 2}"#,
            "machine-config: missing field `mem_size_mib`",
        ),
        (
            Method::PUT,
            "/machine-config",
            r#"{"vcpu_count": "2", "mem_size_mib": 1}"#,
            "machine-config: invalid type: string \"2\"",
        ),
        (
            Method::PUT,
            "/machine-config",
            r#"{"vcpu_count": 300, "mem_size_mib": 1}"#,
            "machine-config: invalid value: integer `300`",
        ),
        (
            Method::PATCH,
            "/machine-config",
            r#"{"mem_size_mib": 512, "x": 1}"#,
            "machine-config: unknown field `x`",
        ),
        (
            Method::PATCH,
            "/machine-config",
            r#"{"mem_size_mib": null}"#,
            "machine-config: field `mem_size_mib` must not be null",
        ),
        (
            Method::PUT,
            "/machine-config",
            "[1, 2]",
            "machine-config: the body must be a JSON object, not an array",
        ),
        (
            Method::PUT,
            "/boot-source",
            "null",
            "boot-source: the body must be a JSON object, not null",
        ),
        (
            Method::PUT,
            "/actions",
            r#""InstanceStart""#,
            "actions: the body must be a JSON object, not a string",
        ),
        (
            Method::PUT,
            "/boot-source",
            r#"{"kernel_image_path": ""}"#,
            "boot-source: field `kernel_image_path` must name a file, and is empty",
        ),
        (
            Method::PUT,
            "/drives/d",
            r#"{"drive_id": "d", "path_on_host": "", "is_root_device": false}"#,
            "drive \"d\": field `path_on_host` must name a file, and is empty",
        ),
        (
            Method::PUT,
            "/snapshot/load",
            r#"{"snapshot_path": "/s", "mem_backend": {"backend_type": "File", "backend_path": ""}}"#,
            "snapshot/load: mem_backend: field `backend_path` must name a file, and is empty",
        ),
        (
            Method::PUT,
            "/machine-config",
            r#"{"vcpu_count": 2,"#,
            "machine-config: EOF while parsing",
        ),
        (
            Method::PUT,
            "/machine-config",
            "",
            "machine-config: EOF while parsing",
        ),
        (
            Method::PUT,
            "/boot-source",
            r#"{"boot_args": "x"}"#,
            "boot-source: missing field `kernel_image_path`",
        ),
        (
            Method::PUT,
            "/drives/rootfs",
            r#"{"drive_id": "rootfs", "is_root_device": true}"#,
            "drive \"rootfs\" without path_on_host is not supported",
        ),
        (
            Method::PUT,
            "/network-interfaces/eth0",
            r#"{"iface_id": "eth0", "host_dev_name": "tap0", "guest_mac": "zz"}"#,
            "network interface \"eth0\": invalid MAC address",
        ),
        (
            Method::PUT,
            "/entropy",
            r#"{"bogus": 1}"#,
            "entropy: unknown field `bogus`",
        ),
        (
            Method::PUT,
            "/actions",
            r#"{"action_type": "Reboot"}"#,
            "actions: unknown variant `Reboot`",
        ),
        (
            Method::PUT,
            "/actions",
            r#"{}"#,
            "actions: missing field `action_type`",
        ),
        (
            Method::PATCH,
            "/vm",
            r#"{"state": "Stopped"}"#,
            "vm: unknown variant `Stopped`",
        ),
    ];
    for (method, path, body, want) in cases {
        let (status, msg) = err(method.clone(), path, body);
        assert_eq!(status, StatusCode::BAD_REQUEST, "{method} {path} {body}");
        assert!(msg.starts_with(want), "{method} {path} {body}: {msg}");
    }
}

#[test]
fn ids_must_match_the_path() {
    let (status, msg) = err(
        Method::PUT,
        "/drives/rootfs",
        r#"{"drive_id": "data", "path_on_host": "/d", "is_root_device": false}"#,
    );
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        msg.contains("\"data\"") && msg.contains("\"rootfs\""),
        "{msg}"
    );
    let (_, msg) = err(
        Method::PATCH,
        "/drives/rootfs",
        r#"{"drive_id": "data", "path_on_host": "/d"}"#,
    );
    assert!(msg.contains("drive_id"), "{msg}");
    let (status, msg) = err(
        Method::PUT,
        "/network-interfaces/eth0",
        r#"{"iface_id": "eth1", "host_dev_name": "tap0"}"#,
    );
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        msg.contains("iface_id") && msg.contains("\"eth1\""),
        "{msg}"
    );
}

/// What Firecracker clients send and podvm honours or can ignore is
/// accepted, as a configuration file accepts it.
#[test]
fn firecracker_fields_podvm_can_honour_are_accepted() {
    assert_eq!(
        ok(
            Method::PUT,
            "/machine-config",
            r#"{"vcpu_count": 2, "mem_size_mib": 256, "smt": false, "track_dirty_pages": false, "cpu_template": "None", "huge_pages": "None"}"#
        ),
        VmmAction::PutMachineConfig(MachineConfig {
            vcpu_count: 2,
            mem_size_mib: 256,
            smt: false,
            track_dirty_pages: false,
            huge_pages: resources::HugePageConfig::None,
        })
    );
    assert_eq!(
        ok(
            Method::PUT,
            "/drives/rootfs",
            r#"{"drive_id": "rootfs", "path_on_host": "/r", "is_root_device": true, "cache_type": "Writeback", "io_engine": "Sync", "partuuid": "ab-01", "rate_limiter": null}"#
        ),
        VmmAction::PutDrive(DriveConfig {
            drive_id: "rootfs".into(),
            path_on_host: "/r".into(),
            is_root_device: true,
            is_read_only: false,
            partuuid: Some("ab-01".into()),
            cache_type: resources::CacheType::Writeback,
            rate_limiter: None,
        })
    );
    assert_eq!(
        ok(
            Method::PATCH,
            "/network-interfaces/eth0",
            r#"{"iface_id": "eth0", "rx_rate_limiter": null}"#
        ),
        VmmAction::PatchNetworkInterface(resources::action::NetworkInterfaceUpdate {
            iface_id: "eth0".into(),
            rx_rate_limiter: None,
            tx_rate_limiter: None,
        })
    );
}

#[test]
fn rate_limiters_reach_the_vmm_on_every_route_that_takes_them() {
    use resources::{RateLimiterConfig, TokenBucketConfig};
    let ops = |size, refill_time| RateLimiterConfig {
        bandwidth: None,
        ops: Some(TokenBucketConfig {
            size,
            one_time_burst: None,
            refill_time,
        }),
    };
    let limiter = r#"{"ops": {"size": 1, "refill_time": 100}}"#;
    let VmmAction::PutDrive(d) = ok(
        Method::PUT,
        "/drives/d",
        &format!(
            r#"{{"drive_id": "d", "path_on_host": "/d", "is_root_device": false, "rate_limiter": {limiter}}}"#
        ),
    ) else {
        panic!("not a PutDrive")
    };
    assert_eq!(d.rate_limiter, Some(ops(1, 100)));
    assert_eq!(
        ok(
            Method::PATCH,
            "/drives/d",
            r#"{"drive_id": "d", "rate_limiter": {"ops": {"size": 0, "refill_time": 0}}}"#
        ),
        VmmAction::PatchDrive(DriveUpdate {
            drive_id: "d".into(),
            path_on_host: None,
            rate_limiter: Some(ops(0, 0)),
        })
    );
    let VmmAction::PutNetworkInterface(n) = ok(
        Method::PUT,
        "/network-interfaces/e",
        &format!(
            r#"{{"iface_id": "e", "host_dev_name": "t", "rx_rate_limiter": {limiter}, "tx_rate_limiter": {limiter}}}"#
        ),
    ) else {
        panic!("not a PutNetworkInterface")
    };
    assert_eq!(
        (n.rx_rate_limiter, n.tx_rate_limiter),
        (Some(ops(1, 100)), Some(ops(1, 100)))
    );
    assert_eq!(
        ok(
            Method::PATCH,
            "/network-interfaces/e",
            &format!(r#"{{"iface_id": "e", "tx_rate_limiter": {limiter}}}"#)
        ),
        VmmAction::PatchNetworkInterface(resources::action::NetworkInterfaceUpdate {
            iface_id: "e".into(),
            rx_rate_limiter: None,
            tx_rate_limiter: Some(ops(1, 100)),
        })
    );
    assert_eq!(
        ok(
            Method::PUT,
            "/entropy",
            &format!(r#"{{"rate_limiter": {limiter}}}"#)
        ),
        VmmAction::PutEntropy(Some(ops(1, 100)))
    );
}

/// Every Firecracker field podvm knows is accepted or refused alike,
/// with the same message, whether it comes in a request or in a
/// configuration file.
#[test]
fn the_api_and_config_files_agree() {
    let machine = [
        r#"{"vcpu_count": 1, "mem_size_mib": 128, "track_dirty_pages": false}"#,
        r#"{"vcpu_count": 1, "mem_size_mib": 128, "track_dirty_pages": true}"#,
        r#"{"vcpu_count": 1, "mem_size_mib": 128, "cpu_template": "None"}"#,
        r#"{"vcpu_count": 1, "mem_size_mib": 128, "cpu_template": "C3"}"#,
        r#"{"vcpu_count": 1, "mem_size_mib": 128, "huge_pages": "None"}"#,
        r#"{"vcpu_count": 1, "mem_size_mib": 128, "huge_pages": "2M"}"#,
    ];
    let drives = [
        r#"{"drive_id": "d", "path_on_host": "/d", "is_root_device": false, "cache_type": "Unsafe"}"#,
        r#"{"drive_id": "d", "path_on_host": "/d", "is_root_device": false, "cache_type": "Writeback"}"#,
        r#"{"drive_id": "d", "path_on_host": "/d", "is_root_device": false, "io_engine": "Sync"}"#,
        r#"{"drive_id": "d", "path_on_host": "/d", "is_root_device": false, "io_engine": "Async"}"#,
        r#"{"drive_id": "d", "path_on_host": "/d", "is_root_device": true, "partuuid": "ab-01"}"#,
        r#"{"drive_id": "d", "path_on_host": "/d", "is_root_device": false, "rate_limiter": null}"#,
        r#"{"drive_id": "d", "path_on_host": "/d", "is_root_device": false, "rate_limiter": {}}"#,
        r#"{"drive_id": "d", "path_on_host": "/d", "is_root_device": false, "rate_limiter": {"ops": {"size": 1, "refill_time": 1}}}"#,
        r#"{"drive_id": "d", "path_on_host": "/d", "is_root_device": false, "rate_limiter": {"ops": {"size": 1, "refill_time": 0}}}"#,
        r#"{"drive_id": "d", "is_root_device": false, "socket": "/s"}"#,
    ];
    let nets = [
        r#"{"iface_id": "d", "host_dev_name": "t", "rx_rate_limiter": null}"#,
        r#"{"iface_id": "d", "host_dev_name": "t", "tx_rate_limiter": {}}"#,
        r#"{"iface_id": "d", "host_dev_name": "t", "rx_rate_limiter": {"bandwidth": {"size": 1, "refill_time": 1}}}"#,
        r#"{"iface_id": "d", "host_dev_name": "t", "rx_rate_limiter": {"bandwidth": {"size": 1, "refill_time": 0}}}"#,
    ];
    let entropy = [
        r#"{}"#,
        r#"{"rate_limiter": null}"#,
        r#"{"rate_limiter": {}}"#,
        r#"{"rate_limiter": {"bandwidth": {"size": 1, "refill_time": 1}}}"#,
        r#"{"rate_limiter": {"bandwidth": {"size": 1, "refill_time": 0}}}"#,
    ];
    let boot = r#""boot-source": {"kernel_image_path": "/k"}"#;
    let mut cases: Vec<(&str, String, String)> = Vec::new();
    for m in machine {
        cases.push((
            "/machine-config",
            m.into(),
            format!(r#"{{{boot}, "machine-config": {m}}}"#),
        ));
    }
    for d in drives {
        cases.push((
            "/drives/d",
            d.into(),
            format!(r#"{{{boot}, "drives": [{d}]}}"#),
        ));
    }
    for n in nets {
        cases.push((
            "/network-interfaces/d",
            n.into(),
            format!(r#"{{{boot}, "network-interfaces": [{n}]}}"#),
        ));
    }
    for e in entropy {
        cases.push((
            "/entropy",
            e.into(),
            format!(r#"{{{boot}, "entropy": {e}}}"#),
        ));
    }
    for (path, body, file) in cases {
        let api = route(&Method::PUT, path, body.as_bytes()).map_err(|e| e.to_string());
        let config = resources::parse_config_file(&file).map_err(|e| e.to_string());
        match (&api, &config) {
            (Ok(_), Ok(_)) => {}
            (Err(a), Err(c)) => assert_eq!(a, c, "{path} {body}"),
            _ => panic!("{path} {body}: the API says {api:?}, a config file {config:?}"),
        }
    }
}

#[test]
fn unsupported_features_are_400() {
    let cases = [
        (
            Method::PATCH,
            "/network-interfaces/eth0",
            r#"{"iface_id": "eth0", "tx_rate_limiter": {"ops": {"size": 1, "refill_time": 0}}}"#,
            "network interface \"eth0\": tx_rate_limiter.ops.refill_time 0 (a bucket of size 1 \
             needs at least 1 ms; size 0 turns it off) is not supported by podvm",
        ),
        (
            Method::PUT,
            "/entropy",
            r#"{"rate_limiter": {"bandwidth": {"size": 1, "refill_time": 0}}}"#,
            "entropy: rate_limiter.bandwidth.refill_time 0 (a bucket of size 1 needs at least \
             1 ms; size 0 turns it off) is not supported by podvm",
        ),
        (
            Method::PATCH,
            "/drives/d",
            r#"{"drive_id": "d", "rate_limiter": {"ops": {"size": 2, "refill_time": 0}}}"#,
            "drive \"d\": rate_limiter.ops.refill_time 0 (a bucket of size 2 needs at least \
             1 ms; size 0 turns it off) is not supported by podvm",
        ),
        (
            Method::PUT,
            "/drives/d",
            r#"{"drive_id": "d", "path_on_host": "/d", "is_root_device": false, "io_engine": "Async"}"#,
            "drive \"d\": io_engine \"Async\" (yet) is not supported by podvm",
        ),
        (
            Method::PUT,
            "/snapshot/load",
            r#"{"snapshot_path": "/s", "mem_backend": {"backend_type": "Uffd", "backend_path": "/u"}}"#,
            "mem_backend.backend_type \"Uffd\" (podvm maps the memory file itself) is not supported by podvm",
        ),
    ];
    for (method, path, body, want) in cases {
        let (status, msg) = err(method.clone(), path, body);
        assert_eq!(status, StatusCode::BAD_REQUEST, "{method} {path}");
        assert_eq!(msg, want, "{method} {path}");
    }
}

/// `openapi.yaml`, read by a real YAML parser.
fn openapi() -> serde_yaml::Value {
    serde_yaml::from_str(include_str!("../openapi.yaml"))
        .unwrap_or_else(|e| panic!("openapi.yaml is not valid YAML: {e}"))
}

#[test]
fn openapi_yaml_describes_exactly_the_route_table() {
    let spec = openapi();
    let paths = spec["paths"].as_mapping().expect("a paths mapping");
    let described: BTreeSet<(String, String)> = paths
        .iter()
        .flat_map(|(path, ops)| {
            let path = path.as_str().unwrap().to_string();
            ops.as_mapping()
                .unwrap()
                .keys()
                .map(move |m| (path.clone(), m.as_str().unwrap().to_uppercase()))
        })
        .collect();
    let table: BTreeSet<(String, String)> = ROUTES
        .iter()
        .flat_map(|r| {
            r.methods
                .iter()
                .map(|m| (r.path.to_string(), m.to_string()))
        })
        .collect();
    let missing: Vec<_> = table.difference(&described).collect();
    let extra: Vec<_> = described.difference(&table).collect();
    assert!(
        missing.is_empty(),
        "routes without a spec entry: {missing:?}"
    );
    assert!(extra.is_empty(), "spec entries without a route: {extra:?}");
    // Every body and response schema it names exists.
    let definitions = spec["definitions"].as_mapping().unwrap();
    let mut refs = Vec::new();
    collect_refs(&spec["paths"], &mut refs);
    collect_refs(&spec["definitions"], &mut refs);
    for r in refs {
        let name = r.strip_prefix("#/definitions/").expect("a local $ref");
        assert!(
            definitions.contains_key(name),
            "$ref {r} names no definition"
        );
    }
}

fn collect_refs(v: &serde_yaml::Value, out: &mut Vec<String>) {
    match v {
        serde_yaml::Value::Mapping(m) => {
            for (k, v) in m {
                if k.as_str() == Some("$ref") {
                    out.push(v.as_str().unwrap().to_string());
                } else {
                    collect_refs(v, out);
                }
            }
        }
        serde_yaml::Value::Sequence(s) => s.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

/// The fields a request type takes, from serde's refusal of an unknown
/// one (every request type denies unknown fields).
fn accepted_fields<T: DeserializeOwned>() -> BTreeSet<String> {
    let err = match serde_json::from_str::<T>(r#"{"__probe__": 0}"#) {
        Ok(_) => panic!("a request type took an unknown field"),
        Err(e) => e.to_string(),
    };
    let list = err
        .split("expected one of ")
        .nth(1)
        .or_else(|| err.split("expected ").nth(1))
        .unwrap_or_else(|| panic!("no field list in {err:?}"));
    list.split(" at line")
        .next()
        .unwrap()
        .split(", ")
        .map(|f| f.trim_matches('`').to_string())
        .collect()
}

/// Each schema of a request body lists exactly the fields its request
/// type accepts, and requires exactly the fields it cannot do without.
#[test]
fn every_request_schema_matches_its_request_type() {
    use resources::action::{LoggerConfig, MetricsConfig};
    use resources::snapshot::{SnapshotCreateParams, SnapshotLoadRequest};
    let spec = openapi();
    let checks: [(&str, BTreeSet<String>); 15] = [
        ("MachineConfiguration", accepted_fields::<FcMachineConfig>()),
        (
            "PartialMachineConfiguration",
            accepted_fields::<FcMachineConfigUpdate>(),
        ),
        ("BootSource", accepted_fields::<BootSourceConfig>()),
        ("Drive", accepted_fields::<FcDrive>()),
        ("PartialDrive", accepted_fields::<FcDriveUpdate>()),
        ("NetworkInterface", accepted_fields::<FcNetworkInterface>()),
        (
            "PartialNetworkInterface",
            accepted_fields::<FcNetworkInterfaceUpdate>(),
        ),
        ("EntropyDevice", accepted_fields::<FcEntropy>()),
        ("Vsock", accepted_fields::<FcVsock>()),
        (
            "SnapshotCreateParams",
            accepted_fields::<SnapshotCreateParams>(),
        ),
        (
            "SnapshotLoadParams",
            accepted_fields::<SnapshotLoadRequest>(),
        ),
        ("Logger", accepted_fields::<LoggerConfig>()),
        ("Metrics", accepted_fields::<MetricsConfig>()),
        (
            "InstanceActionInfo",
            accepted_fields::<InstanceActionInfo>(),
        ),
        ("Vm", accepted_fields::<VmState>()),
    ];
    for (name, fields) in checks {
        let schema = &spec["definitions"][name];
        let props: BTreeSet<String> = schema["properties"]
            .as_mapping()
            .unwrap_or_else(|| panic!("definition {name} has no properties"))
            .keys()
            .map(|k| k.as_str().unwrap().to_string())
            .collect();
        assert_eq!(props, fields, "definition {name}");
        // A body without a required field is refused naming it.
        for required in schema["required"].as_sequence().into_iter().flatten() {
            let required = required.as_str().unwrap();
            assert!(fields.contains(required), "{name}: {required}");
        }
    }
}

#[test]
fn every_route_in_the_table_is_handled() {
    // A route listed in ROUTES but missing from `route`'s match would
    // panic at `unreachable!`; an empty body reaches every arm.
    for spec in ROUTES {
        let path = spec
            .path
            .replace("{drive_id}", "d")
            .replace("{iface_id}", "i");
        for m in spec.methods {
            let method = Method::from_bytes(m.as_bytes()).unwrap();
            if let Err(e) = route(&method, &path, b"") {
                assert_eq!(e.status(), StatusCode::BAD_REQUEST, "{m} {path}: {e}");
            }
        }
    }
}
