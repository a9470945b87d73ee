//! The route table and the pure request → [`VmmAction`] translation.
//!
//! [`ROUTES`] is the one list of served paths and methods: the router, the
//! 404/405 decision and the `openapi.yaml` consistency test all read it.

use hyper::Method;
use resources::action::VmmAction;
use resources::firecracker::{
    FcDrive, FcDriveUpdate, FcEntropy, FcMachineConfig, FcMachineConfigUpdate, FcNetworkInterface,
    FcNetworkInterfaceUpdate, FcVsock,
};
use resources::snapshot::SnapshotLoadRequest;
use resources::{
    BalloonAction, BalloonConfig, BalloonStatsUpdate, BalloonUpdate, BootSourceConfig, HintingStart,
};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::ApiError;

/// The largest request body accepted, in bytes (Firecracker's default
/// `--http-api-max-payload-size`).
pub const MAX_BODY_SIZE: usize = 51200;

/// One served path and its methods. `{name}` segments match any non-empty
/// path segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteSpec {
    /// The path template, as written in `openapi.yaml`.
    pub path: &'static str,
    /// The methods served on it, upper case.
    pub methods: &'static [&'static str],
}

const fn r(path: &'static str, methods: &'static [&'static str]) -> RouteSpec {
    RouteSpec { path, methods }
}

/// Every path the API serves, with its methods.
pub const ROUTES: &[RouteSpec] = &[
    r("/", &["GET"]),
    r("/version", &["GET"]),
    r("/vm/config", &["GET"]),
    r("/machine-config", &["GET", "PUT", "PATCH"]),
    r("/boot-source", &["PUT"]),
    r("/drives/{drive_id}", &["PUT", "PATCH"]),
    r("/network-interfaces/{iface_id}", &["PUT", "PATCH"]),
    r("/entropy", &["PUT"]),
    r("/actions", &["PUT"]),
    r("/vm", &["PATCH"]),
    r("/vsock", &["PUT"]),
    r("/balloon", &["GET", "PUT", "PATCH"]),
    r("/balloon/statistics", &["GET", "PATCH"]),
    r("/balloon/hinting/start", &["PATCH"]),
    r("/balloon/hinting/stop", &["PATCH"]),
    r("/balloon/hinting/status", &["GET"]),
    r("/snapshot/create", &["PUT"]),
    r("/snapshot/load", &["PUT"]),
    r("/logger", &["PUT"]),
    r("/metrics", &["PUT"]),
];

/// Finds the route whose template matches `path`, with the values of its
/// `{name}` segments in order.
fn match_path(path: &str) -> Option<(&'static RouteSpec, Vec<&str>)> {
    let segments: Vec<&str> = path.strip_prefix('/')?.split('/').collect();
    ROUTES.iter().find_map(|spec| {
        let template: Vec<&str> = spec.path[1..].split('/').collect();
        if template.len() != segments.len() {
            return None;
        }
        let mut params = Vec::new();
        for (t, s) in template.iter().zip(&segments) {
            if t.starts_with('{') {
                if s.is_empty() {
                    return None;
                }
                params.push(*s);
            } else if t != s {
                return None;
            }
        }
        Some((spec, params))
    })
}

/// `PUT /actions`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InstanceActionInfo {
    action_type: ActionType,
}

#[derive(Deserialize)]
enum ActionType {
    InstanceStart,
    SendCtrlAltDel,
    FlushMetrics,
    /// podvm extension.
    Shutdown,
}

/// A body with no fields (`PATCH /balloon/hinting/stop`, when one is
/// sent).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}

/// `PATCH /vm`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VmState {
    state: VmStateValue,
}

#[derive(Deserialize)]
enum VmStateValue {
    Paused,
    Resumed,
}

/// Fields whose value may be `null` (Firecracker clients send a `null`
/// rate limiter for "none"); no other field's schema has `null`.
const NULLABLE: &[&str] = &["rate_limiter", "rx_rate_limiter", "tx_rate_limiter"];

/// Fields that name a file: an empty string is refused.
const PATHS: &[&str] = &[
    "kernel_image_path",
    "initrd_path",
    "path_on_host",
    "log_path",
    "metrics_path",
    "uds_path",
    "snapshot_path",
    "mem_file_path",
    "backend_path",
    "socket",
];

/// What the body's schema forbids beyond the request type's shape: a top
/// level that is not an object, `null` where the schema has no `null`, an
/// empty string for a file.
fn check_value(what: &str, v: &serde_json::Value) -> Result<(), ApiError> {
    let kind = |v: &serde_json::Value| match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    };
    let Some(fields) = v.as_object() else {
        return Err(ApiError::Schema(format!(
            "{what}: the body must be a JSON object, not {}",
            kind(v)
        )));
    };
    for (name, value) in fields {
        if value.is_null() && !NULLABLE.contains(&name.as_str()) {
            return Err(ApiError::Schema(format!(
                "{what}: field `{name}` must not be null"
            )));
        }
        if PATHS.contains(&name.as_str()) && value.as_str() == Some("") {
            return Err(ApiError::Schema(format!(
                "{what}: field `{name}` must name a file, and is empty"
            )));
        }
        if value.is_object() {
            check_value(&format!("{what}: {name}"), value)?;
        }
    }
    Ok(())
}

fn parse<T: DeserializeOwned>(what: impl Into<String>, body: &[u8]) -> Result<T, ApiError> {
    let what = what.into();
    let invalid = |source| ApiError::InvalidBody {
        what: what.clone(),
        source,
    };
    let value: serde_json::Value = serde_json::from_slice(body).map_err(invalid)?;
    check_value(&what, &value)?;
    serde_json::from_value(value).map_err(invalid)
}

fn check_id(field: &'static str, path_id: &str, body_id: &str) -> Result<(), ApiError> {
    if path_id == body_id {
        Ok(())
    } else {
        Err(ApiError::IdMismatch {
            field,
            path_id: path_id.to_string(),
            body_id: body_id.to_string(),
        })
    }
}

/// Translates one request into the action the VMM runs, or the error the
/// client gets. Pure: no I/O, no VM state.
pub fn route(method: &Method, path: &str, body: &[u8]) -> Result<VmmAction, ApiError> {
    let Some((spec, params)) = match_path(path) else {
        return Err(ApiError::NotFound {
            path: path.to_string(),
        });
    };
    if !spec.methods.contains(&method.as_str()) {
        return Err(ApiError::MethodNotAllowed {
            method: method.to_string(),
            path: path.to_string(),
            allowed: spec.methods,
        });
    }
    let id = params.first().copied().unwrap_or_default();
    let action = match (spec.path, method.as_str()) {
        ("/", "GET") => VmmAction::DescribeInstance,
        ("/version", "GET") => VmmAction::GetVersion,
        ("/vm/config", "GET") => VmmAction::GetVmConfig,
        ("/machine-config", "GET") => VmmAction::GetMachineConfig,
        // The bodies shared with configuration files are Firecracker's
        // (`resources::firecracker`): both accept and refuse the same.
        ("/machine-config", "PUT") => VmmAction::PutMachineConfig(
            parse::<FcMachineConfig>("machine-config", body)?.into_config()?,
        ),
        ("/machine-config", "PATCH") => VmmAction::PatchMachineConfig(
            parse::<FcMachineConfigUpdate>("machine-config", body)?.into_update()?,
        ),
        ("/boot-source", "PUT") => {
            VmmAction::PutBootSource(parse::<BootSourceConfig>("boot-source", body)?)
        }
        ("/drives/{drive_id}", "PUT") => {
            let drive: FcDrive = parse(format!("drive {id:?}"), body)?;
            check_id("drive_id", id, &drive.drive_id)?;
            VmmAction::PutDrive(drive.into_config()?)
        }
        ("/drives/{drive_id}", "PATCH") => {
            let update: FcDriveUpdate = parse(format!("drive {id:?}"), body)?;
            check_id("drive_id", id, &update.drive_id)?;
            VmmAction::PatchDrive(update.into_update()?)
        }
        ("/network-interfaces/{iface_id}", "PUT") => {
            let net: FcNetworkInterface = parse(format!("network interface {id:?}"), body)?;
            check_id("iface_id", id, &net.iface_id)?;
            VmmAction::PutNetworkInterface(net.into_config()?)
        }
        // Firecracker's PATCH only updates rate limiters.
        ("/network-interfaces/{iface_id}", "PATCH") => {
            let update: FcNetworkInterfaceUpdate =
                parse(format!("network interface {id:?}"), body)?;
            check_id("iface_id", id, &update.iface_id)?;
            VmmAction::PatchNetworkInterface(update.into_update()?)
        }
        ("/entropy", "PUT") => {
            VmmAction::PutEntropy(parse::<FcEntropy>("entropy", body)?.into_rate_limiter()?)
        }
        ("/actions", "PUT") => match parse::<InstanceActionInfo>("actions", body)?.action_type {
            ActionType::InstanceStart => VmmAction::InstanceStart,
            ActionType::SendCtrlAltDel => VmmAction::SendCtrlAltDel,
            ActionType::FlushMetrics => VmmAction::FlushMetrics,
            ActionType::Shutdown => VmmAction::Shutdown,
        },
        ("/vm", "PATCH") => match parse::<VmState>("vm", body)?.state {
            VmStateValue::Paused => VmmAction::Pause,
            VmStateValue::Resumed => VmmAction::Resume,
        },
        ("/vsock", "PUT") => VmmAction::PutVsock(parse::<FcVsock>("vsock", body)?.into_config()?),
        ("/balloon", "PUT") => {
            VmmAction::Balloon(BalloonAction::Put(parse::<BalloonConfig>("balloon", body)?))
        }
        ("/balloon", "PATCH") => VmmAction::Balloon(BalloonAction::SetTarget(
            parse::<BalloonUpdate>("balloon", body)?.amount_mib,
        )),
        ("/balloon", "GET") => VmmAction::Balloon(BalloonAction::Describe),
        ("/balloon/statistics", "GET") => VmmAction::Balloon(BalloonAction::Stats),
        ("/balloon/statistics", "PATCH") => VmmAction::Balloon(BalloonAction::SetStatsInterval(
            parse::<BalloonStatsUpdate>("balloon statistics", body)?.stats_polling_interval_s,
        )),
        // Firecracker's body is optional here.
        ("/balloon/hinting/start", "PATCH") => {
            VmmAction::Balloon(BalloonAction::StartHinting(if body.is_empty() {
                HintingStart::default()
            } else {
                parse("balloon hinting/start", body)?
            }))
        }
        ("/balloon/hinting/stop", "PATCH") => {
            if !body.is_empty() {
                parse::<Empty>("balloon hinting/stop", body)?;
            }
            VmmAction::Balloon(BalloonAction::StopHinting)
        }
        ("/balloon/hinting/status", "GET") => VmmAction::Balloon(BalloonAction::HintingStatus),
        ("/snapshot/create", "PUT") => VmmAction::CreateSnapshot(parse("snapshot/create", body)?),
        ("/snapshot/load", "PUT") => {
            let request: SnapshotLoadRequest = parse("snapshot/load", body)?;
            VmmAction::LoadSnapshot(request.into_params().map_err(ApiError::SnapshotLoad)?)
        }
        ("/logger", "PUT") => VmmAction::PutLogger(parse("logger", body)?),
        ("/metrics", "PUT") => VmmAction::PutMetrics(parse("metrics", body)?),
        _ => unreachable!("ROUTES lists {method} {} without a handler", spec.path),
    };
    Ok(action)
}

#[cfg(test)]
#[path = "routes_tests.rs"]
mod tests;
