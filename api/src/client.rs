//! A small blocking client of the control API, for `podvm ctl` and scripts
//! written in Rust.
//!
//! Each [`Client::request`] opens a fresh connection to the Unix socket,
//! sends one HTTP/1.1 request with hyper's client (driven by a
//! current-thread tokio runtime the [`Client`] owns) and returns the status
//! and the whole body. Nothing is parsed by hand: the response is read by
//! hyper, the body by `serde_json` where a caller asks for JSON.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{ACCEPT, CONTENT_TYPE, HOST};
use hyper::Request;
use hyper_util::rt::TokioIo;

/// The largest response body the client reads; the API's answers are a few
/// hundred bytes.
pub const MAX_RESPONSE_SIZE: usize = 1 << 20;

/// The methods the control API serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// `GET`: read state.
    Get,
    /// `PUT`: configure, or act (`/actions`).
    Put,
    /// `PATCH`: change configuration or state (`/vm`).
    Patch,
}

impl Method {
    fn as_hyper(self) -> hyper::Method {
        match self {
            Method::Get => hyper::Method::GET,
            Method::Put => hyper::Method::PUT,
            Method::Patch => hyper::Method::PATCH,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_hyper().as_str())
    }
}

/// Why a request got no response.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket could not be connected to (missing, not a socket, nobody
    /// serving on it, no permission).
    #[error("cannot connect: {0}")]
    Connect(#[source] io::Error),
    /// The tokio runtime could not be created.
    #[error("cannot start the client runtime: {0}")]
    Runtime(#[source] io::Error),
    /// The request path or method could not make a request (a path that is
    /// not a valid URI path, for example).
    #[error("invalid request: {0}")]
    Request(#[source] hyper::http::Error),
    /// The connection failed or the answer was not HTTP/1.1.
    #[error("{0}")]
    Http(#[source] hyper::Error),
    /// The response body was larger than [`MAX_RESPONSE_SIZE`] or could not
    /// be read.
    #[error("cannot read the response body: {0}")]
    Body(String),
}

/// A response: its status code and its whole body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// The HTTP status code.
    pub status: u16,
    /// The body, as sent.
    pub body: Bytes,
}

impl Response {
    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body pretty-printed when it is JSON, as sent (lossily decoded as
    /// UTF-8) otherwise; empty for an empty body.
    pub fn pretty_body(&self) -> String {
        match serde_json::from_slice::<serde_json::Value>(&self.body) {
            Ok(v) => serde_json::to_string_pretty(&v).unwrap_or_else(|_| self.body_text()),
            Err(_) => self.body_text(),
        }
    }

    /// The body, lossily decoded as UTF-8.
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// What went wrong, for an error response, on one line: the body's
    /// `fault_message` when it has one, else the status and the body text.
    pub fn fault_message(&self) -> String {
        let fault = serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v.get("fault_message")?.as_str().map(str::to_string));
        let msg = match fault {
            Some(f) => f,
            None => {
                let text = self.body_text();
                let reason = hyper::StatusCode::from_u16(self.status)
                    .ok()
                    .and_then(|s| s.canonical_reason())
                    .unwrap_or("");
                format!("HTTP {} {reason} {}", self.status, text.trim())
                    .trim_end()
                    .to_string()
            }
        };
        msg.replace(['\r', '\n'], " ")
    }
}

/// A client of the API served on one Unix socket.
#[derive(Debug)]
pub struct Client {
    sock: PathBuf,
    runtime: tokio::runtime::Runtime,
}

impl Client {
    /// A client of the API on `sock`; nothing is connected yet.
    pub fn new(sock: impl Into<PathBuf>) -> Result<Client, ClientError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(ClientError::Runtime)?;
        Ok(Client {
            sock: sock.into(),
            runtime,
        })
    }

    /// The socket this client talks to.
    pub fn sock(&self) -> &Path {
        &self.sock
    }

    /// Sends `method path` with `body` (JSON, or nothing when empty) on a
    /// fresh connection and waits for the whole response, however long the
    /// VMM takes (a pause, a boot).
    pub fn request(
        &self,
        method: Method,
        path: &str,
        body: &[u8],
    ) -> Result<Response, ClientError> {
        let mut req = Request::builder()
            .method(method.as_hyper())
            .uri(path)
            .header(HOST, "localhost")
            .header(ACCEPT, "application/json");
        if !body.is_empty() {
            req = req.header(CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(Bytes::copy_from_slice(body)))
            .map_err(ClientError::Request)?;
        self.runtime.block_on(async {
            let stream = tokio::net::UnixStream::connect(&self.sock)
                .await
                .map_err(ClientError::Connect)?;
            let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(ClientError::Http)?;
            let conn = tokio::spawn(conn);
            let response = tx.send_request(req).await.map_err(ClientError::Http)?;
            let status = response.status().as_u16();
            let body = Limited::new(response.into_body(), MAX_RESPONSE_SIZE)
                .collect()
                .await
                .map_err(|e| ClientError::Body(e.to_string()))?
                .to_bytes();
            // Dropping the sender closes the connection; the task ends.
            drop(tx);
            conn.abort();
            Ok(Response { status, body })
        })
    }

    /// `GET path`.
    pub fn get(&self, path: &str) -> Result<Response, ClientError> {
        self.request(Method::Get, path, b"")
    }

    /// `PUT path` with a JSON body.
    pub fn put(&self, path: &str, json: &str) -> Result<Response, ClientError> {
        self.request(Method::Put, path, json.as_bytes())
    }

    /// `PATCH path` with a JSON body.
    pub fn patch(&self, path: &str, json: &str) -> Result<Response, ClientError> {
        self.request(Method::Patch, path, json.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use resources::action::{ActionError, ActionResult, InstanceInfo, InstanceState};
    use resources::MachineConfig;

    use super::*;
    use crate::{start_server, ActionSender, ApiServer, VmmAction, VmmData};

    /// A VMM that records what it is asked; `InstanceStart` works once.
    #[derive(Default)]
    struct FakeVmm {
        actions: Mutex<Vec<VmmAction>>,
    }

    impl ActionSender for FakeVmm {
        fn send(&self, action: VmmAction) -> ActionResult {
            let mut actions = self.actions.lock().unwrap();
            let started = actions.contains(&VmmAction::InstanceStart);
            actions.push(action.clone());
            match action {
                VmmAction::DescribeInstance => Ok(VmmData::InstanceInfo(InstanceInfo {
                    id: "pod-1".into(),
                    state: InstanceState::NotStarted,
                    vmm_version: "0.1.0".into(),
                    app_name: "podvm".into(),
                })),
                VmmAction::GetMachineConfig => Ok(VmmData::MachineConfig(MachineConfig::default())),
                VmmAction::InstanceStart if started => Err(ActionError(
                    "InstanceStart: the VM is already running".into(),
                )),
                _ => Ok(VmmData::Empty),
            }
        }
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        client: Client,
        vmm: Arc<FakeVmm>,
        _server: ApiServer,
    }

    fn start() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("api.sock");
        let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let vmm = Arc::new(FakeVmm::default());
        let server = start_server(listener, vmm.clone()).unwrap();
        Fixture {
            _dir: dir,
            client: Client::new(sock).unwrap(),
            vmm,
            _server: server,
        }
    }

    #[test]
    fn get_returns_the_json_body() {
        let f = start();
        let r = f.client.get("/").unwrap();
        assert_eq!(r.status, 200);
        assert!(r.is_success());
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["id"], "pod-1");
        assert_eq!(v["state"], "Not started");
        let pretty = r.pretty_body();
        assert!(pretty.contains("\n  \"id\": \"pod-1\""), "{pretty}");
        let r = f.client.get("/machine-config").unwrap();
        assert_eq!(r.status, 200);
        assert!(r.body_text().contains("\"mem_size_mib\":128"), "{r:?}");
    }

    #[test]
    fn put_and_patch_send_their_bodies_and_204_is_empty() {
        let f = start();
        let r = f
            .client
            .put("/actions", r#"{"action_type": "InstanceStart"}"#)
            .unwrap();
        assert_eq!((r.status, r.body.len()), (204, 0));
        assert_eq!(r.pretty_body(), "");
        let r = f.client.patch("/vm", r#"{"state": "Paused"}"#).unwrap();
        assert_eq!(r.status, 204);
        let r = f
            .client
            .put(
                "/machine-config",
                r#"{"vcpu_count": 2, "mem_size_mib": 256}"#,
            )
            .unwrap();
        assert_eq!(r.status, 204);
        let actions = f.vmm.actions.lock().unwrap().clone();
        assert_eq!(actions[0], VmmAction::InstanceStart);
        assert_eq!(actions[1], VmmAction::Pause);
        assert!(
            matches!(&actions[2], VmmAction::PutMachineConfig(m) if m.vcpu_count == 2 && m.mem_size_mib == 256),
            "{actions:?}"
        );
    }

    #[test]
    fn errors_carry_the_fault_message() {
        let f = start();
        let start = r#"{"action_type": "InstanceStart"}"#;
        assert_eq!(f.client.put("/actions", start).unwrap().status, 204);
        let r = f.client.put("/actions", start).unwrap();
        assert_eq!(r.status, 400);
        assert!(!r.is_success());
        assert_eq!(
            r.fault_message(),
            "InstanceStart: the VM is already running"
        );
        let r = f.client.put("/machine-config", "{").unwrap();
        assert_eq!(r.status, 400);
        assert!(r.fault_message().starts_with("machine-config"), "{r:?}");
        let r = f.client.get("/no/such/path").unwrap();
        assert_eq!(r.status, 404);
        assert_eq!(r.fault_message(), "no such path: /no/such/path");
        let r = f.client.request(Method::Patch, "/", b"").unwrap();
        assert_eq!(r.status, 405);
        assert!(r.fault_message().contains("not allowed"), "{r:?}");
    }

    #[test]
    fn a_fault_without_json_names_the_status() {
        let r = Response {
            status: 502,
            body: Bytes::from_static(b"bad\ngateway"),
        };
        assert_eq!(r.fault_message(), "HTTP 502 Bad Gateway bad gateway");
        let r = Response {
            status: 500,
            body: Bytes::new(),
        };
        assert_eq!(r.fault_message(), "HTTP 500 Internal Server Error");
        assert_eq!(r.pretty_body(), "");
    }

    #[test]
    fn nobody_serving_is_a_connect_error() {
        let dir = tempfile::tempdir().unwrap();
        let client = Client::new(dir.path().join("nothing.sock")).unwrap();
        let e = client.get("/").unwrap_err();
        assert!(matches!(e, ClientError::Connect(_)), "{e:?}");
        assert!(e.to_string().starts_with("cannot connect: "), "{e}");
        // A stale socket file: nobody accepts.
        let stale = dir.path().join("stale.sock");
        drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
        let e = Client::new(&stale).unwrap().get("/").unwrap_err();
        assert!(matches!(e, ClientError::Connect(_)), "{e:?}");
    }

    #[test]
    fn a_bad_path_is_a_request_error() {
        let dir = tempfile::tempdir().unwrap();
        let client = Client::new(dir.path().join("x.sock")).unwrap();
        let e = client.get("not a path").unwrap_err();
        assert!(matches!(e, ClientError::Request(_)), "{e:?}");
    }
}
