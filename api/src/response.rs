//! Turning an action's answer, or a refusal, into an HTTP response.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use resources::action::VmmData;
use serde::Serialize;

use crate::ApiError;

/// The body type of every response the server writes.
pub type ResponseBody = Full<Bytes>;

/// Firecracker's `FirecrackerVersion` (`GET /version`).
#[derive(Serialize)]
struct FirecrackerVersion<'a> {
    firecracker_version: &'a str,
}

/// Firecracker's `Error`.
#[derive(Serialize)]
struct Fault {
    fault_message: String,
}

fn json(status: StatusCode, body: &impl Serialize) -> Response<ResponseBody> {
    // Serializing these plain types into a Vec cannot fail: no maps with
    // non-string keys, no failing `Serialize` impls.
    let bytes = serde_json::to_vec(body).expect("response bodies always serialize");
    let mut response = Response::new(Full::new(Bytes::from(bytes)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// `204 No Content` for [`VmmData::Empty`], `200` with JSON otherwise.
pub fn success_response(data: VmmData) -> Response<ResponseBody> {
    match data {
        VmmData::Empty => {
            let mut response = Response::new(Full::new(Bytes::new()));
            *response.status_mut() = StatusCode::NO_CONTENT;
            response
        }
        VmmData::InstanceInfo(info) => json(StatusCode::OK, &info),
        VmmData::Version(v) => json(
            StatusCode::OK,
            &FirecrackerVersion {
                firecracker_version: &v,
            },
        ),
        VmmData::MachineConfig(m) => json(StatusCode::OK, &m),
        VmmData::VmConfig(v) | VmmData::Json(v) => json(StatusCode::OK, &v),
    }
}

/// The error's status with `{"fault_message": …}`; a 405 also names the
/// allowed methods in `Allow`.
pub fn error_response(error: &ApiError) -> Response<ResponseBody> {
    let mut response = json(
        error.status(),
        &Fault {
            fault_message: error.to_string(),
        },
    );
    if let ApiError::MethodNotAllowed { allowed, .. } = error {
        if let Ok(v) = HeaderValue::from_str(&allowed.join(", ")) {
            response.headers_mut().insert(ALLOW, v);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;
    use resources::action::{ActionError, InstanceInfo, InstanceState};
    use resources::MachineConfig;

    use super::*;

    fn body(r: Response<ResponseBody>) -> String {
        let bytes = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(r.into_body().collect())
            .unwrap()
            .to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[test]
    fn empty_is_204_without_body() {
        let r = success_response(VmmData::Empty);
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        assert!(r.headers().get(CONTENT_TYPE).is_none());
        assert_eq!(body(r), "");
    }

    #[test]
    fn data_is_200_json_in_firecracker_shapes() {
        let r = success_response(VmmData::Version("0.1.0".into()));
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[CONTENT_TYPE], "application/json");
        assert_eq!(body(r), r#"{"firecracker_version":"0.1.0"}"#);
        let r = success_response(VmmData::InstanceInfo(InstanceInfo {
            id: "a".into(),
            state: InstanceState::Running,
            vmm_version: "0.1.0".into(),
            app_name: "podvm".into(),
        }));
        assert_eq!(
            body(r),
            r#"{"id":"a","state":"Running","vmm_version":"0.1.0","app_name":"podvm"}"#
        );
        let r = success_response(VmmData::MachineConfig(MachineConfig::default()));
        assert_eq!(
            body(r),
            r#"{"vcpu_count":1,"mem_size_mib":128,"smt":false,"track_dirty_pages":false,"huge_pages":"None"}"#
        );
        let r = success_response(VmmData::VmConfig(serde_json::json!({"drives": []})));
        assert_eq!(body(r), r#"{"drives":[]}"#);
    }

    #[test]
    fn errors_carry_a_fault_message() {
        let r = error_response(&ApiError::from(ActionError("no \"boot source\"".into())));
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert_eq!(r.headers()[CONTENT_TYPE], "application/json");
        assert_eq!(body(r), r#"{"fault_message":"no \"boot source\""}"#);
        let r = error_response(&ApiError::MethodNotAllowed {
            method: "GET".into(),
            path: "/actions".into(),
            allowed: &["PUT"],
        });
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(r.headers()[ALLOW], "PUT");
    }
}
