//! The API server over a real Unix socket, with a fake VMM behind
//! [`ActionSender`] and hyper's HTTP/1.1 client in front.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use api::{start_server, ActionError, ActionResult, ActionSender, ApiServer, VmmAction, VmmData};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{handshake, SendRequest};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use resources::action::{InstanceInfo, InstanceState};
use resources::{BootSourceConfig, DriveConfig, MachineConfig, NetConfig};
use tokio::net::UnixStream;

/// A VMM that records what it is asked and answers from a script.
#[derive(Default)]
struct FakeVmm {
    actions: Mutex<Vec<VmmAction>>,
    started: AtomicBool,
    /// When set, `Pause` reports that it has begun and waits for a release.
    pause_gate: Mutex<Option<(mpsc::Sender<()>, mpsc::Receiver<()>)>>,
    /// When set, `Shutdown` reports that it was asked before it answers.
    on_shutdown: Mutex<Option<mpsc::Sender<()>>>,
}

impl FakeVmm {
    fn actions(&self) -> Vec<VmmAction> {
        self.actions.lock().unwrap().clone()
    }
}

impl ActionSender for FakeVmm {
    fn send(&self, action: VmmAction) -> ActionResult {
        self.actions.lock().unwrap().push(action.clone());
        match action {
            VmmAction::DescribeInstance => Ok(VmmData::InstanceInfo(InstanceInfo {
                id: "pod-1".into(),
                state: if self.started.load(Ordering::SeqCst) {
                    InstanceState::Running
                } else {
                    InstanceState::NotStarted
                },
                vmm_version: "0.1.0".into(),
                app_name: "podvm".into(),
            })),
            VmmAction::GetVersion => Ok(VmmData::Version("0.1.0".into())),
            VmmAction::GetMachineConfig => Ok(VmmData::MachineConfig(MachineConfig::default())),
            VmmAction::InstanceStart => {
                if self.started.swap(true, Ordering::SeqCst) {
                    Err(ActionError(
                        "InstanceStart: the VM is already running".into(),
                    ))
                } else {
                    Ok(VmmData::Empty)
                }
            }
            VmmAction::Pause => {
                if let Some((entered, release)) = self.pause_gate.lock().unwrap().take() {
                    entered.send(()).unwrap();
                    release.recv().unwrap();
                }
                Ok(VmmData::Empty)
            }
            VmmAction::Shutdown => {
                if let Some(asked) = self.on_shutdown.lock().unwrap().take() {
                    asked.send(()).unwrap();
                }
                Ok(VmmData::Empty)
            }
            _ => Ok(VmmData::Empty),
        }
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    sock: PathBuf,
    vmm: Arc<FakeVmm>,
    server: Option<ApiServer>,
}

fn start() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("api.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let vmm = Arc::new(FakeVmm::default());
    let server = start_server(listener, vmm.clone()).unwrap();
    Fixture {
        _dir: dir,
        sock,
        vmm,
        server: Some(server),
    }
}

/// One HTTP/1.1 connection.
struct Client {
    tx: SendRequest<Full<Bytes>>,
}

#[derive(Debug)]
struct Reply {
    status: StatusCode,
    content_type: Option<String>,
    allow: Option<String>,
    body: String,
}

impl Reply {
    fn fault(&self) -> String {
        assert_eq!(self.content_type.as_deref(), Some("application/json"));
        let v: serde_json::Value = serde_json::from_str(&self.body).unwrap();
        v["fault_message"]
            .as_str()
            .expect("a fault_message")
            .to_string()
    }

    fn json(&self) -> serde_json::Value {
        assert_eq!(self.status, StatusCode::OK, "{}", self.body);
        assert_eq!(self.content_type.as_deref(), Some("application/json"));
        serde_json::from_str(&self.body).unwrap()
    }
}

async fn connect(sock: &Path) -> Client {
    let stream = UnixStream::connect(sock).await.unwrap();
    let (tx, conn) = handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    Client { tx }
}

impl Client {
    async fn call(&mut self, method: Method, path: &str, body: impl Into<Bytes>) -> Reply {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("Host", "localhost")
            .header("Content-Type", "application/json")
            .body(Full::new(body.into()))
            .unwrap();
        self.tx.ready().await.unwrap();
        let resp = self.tx.send_request(req).await.unwrap();
        let header = |name| {
            resp.headers()
                .get(name)
                .map(|v: &hyper::header::HeaderValue| v.to_str().unwrap().to_string())
        };
        let status = resp.status();
        let content_type = header(hyper::header::CONTENT_TYPE);
        let allow = header(hyper::header::ALLOW);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        Reply {
            status,
            content_type,
            allow,
            body: String::from_utf8(body.to_vec()).unwrap(),
        }
    }

    async fn ok(&mut self, method: Method, path: &str, body: &'static str) {
        let reply = self.call(method.clone(), path, body).await;
        assert_eq!(
            reply.status,
            StatusCode::NO_CONTENT,
            "{method} {path}: {reply:?}"
        );
        assert!(reply.body.is_empty());
    }
}

#[tokio::test]
async fn go_sdk_call_order_reaches_the_vmm_as_actions() {
    let f = start();
    let mut c = connect(&f.sock).await;
    c.ok(
        Method::PUT,
        "/machine-config",
        r#"{"vcpu_count": 2, "mem_size_mib": 256, "smt": false}"#,
    )
    .await;
    c.ok(
        Method::PUT,
        "/boot-source",
        r#"{"kernel_image_path": "/vmlinux", "boot_args": "console=ttyS0 reboot=k panic=1"}"#,
    )
    .await;
    c.ok(
        Method::PUT,
        "/drives/rootfs",
        r#"{"drive_id": "rootfs", "path_on_host": "/rootfs.ext4", "is_root_device": true, "is_read_only": false}"#,
    )
    .await;
    c.ok(
        Method::PUT,
        "/network-interfaces/eth0",
        r#"{"iface_id": "eth0", "host_dev_name": "tap0", "guest_mac": "06:00:ac:10:00:02"}"#,
    )
    .await;
    c.ok(
        Method::PUT,
        "/actions",
        r#"{"action_type": "InstanceStart"}"#,
    )
    .await;
    // The whole body, in Firecracker's `InstanceInfo` shape: the state is
    // the VMM's enum rendered as Firecracker spells it.
    let info = c.call(Method::GET, "/", "").await.json();
    assert_eq!(
        info,
        serde_json::json!({
            "id": "pod-1", "state": "Running", "vmm_version": "0.1.0", "app_name": "podvm"
        })
    );

    assert_eq!(
        f.vmm.actions(),
        vec![
            VmmAction::PutMachineConfig(MachineConfig {
                vcpu_count: 2,
                mem_size_mib: 256,
                smt: false,
                track_dirty_pages: false,
                huge_pages: resources::HugePageConfig::None,
            }),
            VmmAction::PutBootSource(BootSourceConfig {
                kernel_image_path: "/vmlinux".into(),
                boot_args: Some("console=ttyS0 reboot=k panic=1".into()),
                initrd_path: None
            }),
            VmmAction::PutDrive(DriveConfig {
                drive_id: "rootfs".into(),
                path_on_host: "/rootfs.ext4".into(),
                is_root_device: true,
                is_read_only: false,
                ..Default::default()
            }),
            VmmAction::PutNetworkInterface(NetConfig {
                iface_id: "eth0".into(),
                host_dev_name: "tap0".into(),
                guest_mac: Some("06:00:ac:10:00:02".parse().unwrap()),
                ..Default::default()
            }),
            VmmAction::InstanceStart,
            VmmAction::DescribeInstance,
        ]
    );
}

#[tokio::test]
async fn keep_alive_serves_many_requests_on_one_connection() {
    let f = start();
    let mut c = connect(&f.sock).await;
    for _ in 0..3 {
        let v = c.call(Method::GET, "/version", "").await.json();
        assert_eq!(v, serde_json::json!({"firecracker_version": "0.1.0"}));
        let m = c.call(Method::GET, "/machine-config", "").await.json();
        assert_eq!(m["vcpu_count"], 1);
        c.ok(Method::PATCH, "/machine-config", r#"{"mem_size_mib": 512}"#)
            .await;
        c.ok(Method::PATCH, "/vm", r#"{"state": "Resumed"}"#).await;
    }
    assert_eq!(f.vmm.actions().len(), 12);
}

#[tokio::test]
async fn a_slow_action_does_not_stall_other_clients() {
    let f = start();
    let (entered_tx, entered_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel();
    *f.vmm.pause_gate.lock().unwrap() = Some((entered_tx, release_rx));

    let mut a = connect(&f.sock).await;
    let paused =
        tokio::spawn(async move { a.call(Method::PATCH, "/vm", r#"{"state": "Paused"}"#).await });
    // Wait until the pause is inside the VMM, then use a second client.
    tokio::task::spawn_blocking(move || entered_rx.recv().unwrap())
        .await
        .unwrap();
    let mut b = connect(&f.sock).await;
    let info = b.call(Method::GET, "/", "").await.json();
    assert_eq!(info["id"], "pod-1");
    assert!(!paused.is_finished());

    release_tx.send(()).unwrap();
    assert_eq!(paused.await.unwrap().status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn errors_have_their_status_and_a_fault_message_and_serving_goes_on() {
    let f = start();
    let mut c = connect(&f.sock).await;

    let r = c.call(Method::GET, "/nope", "").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.fault(), "no such path: /nope");

    let r = c.call(Method::DELETE, "/actions", "").await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.allow.as_deref(), Some("PUT"));
    assert!(r.fault().contains("DELETE"), "{r:?}");

    let r = c
        .call(Method::PUT, "/machine-config", r#"{"cpus": 2}"#)
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.fault()
            .starts_with("machine-config: unknown field `cpus`"),
        "{r:?}"
    );

    let r = c.call(Method::PUT, "/boot-source", "{not json").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.fault().starts_with("boot-source: "), "{r:?}");

    let r = c
        .call(
            Method::PUT,
            "/drives/rootfs",
            r#"{"drive_id": "data", "path_on_host": "/d", "is_root_device": false}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.fault().contains("\"rootfs\""), "{r:?}");

    let r = c.call(Method::PUT, "/vsock", r#"{"guest_cid": 3}"#).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.fault().starts_with("vsock: missing field `uds_path`"),
        "{r:?}"
    );

    // All of those on one connection, and none reached the VMM.
    assert!(f.vmm.actions().is_empty());
    c.call(Method::GET, "/", "").await.json();
}

#[tokio::test]
async fn bodies_above_the_limit_are_413() {
    let f = start();
    // Exactly the limit is accepted: valid JSON padded with spaces.
    let json = r#"{"vcpu_count": 1, "mem_size_mib": 128}"#;
    let at_limit = format!("{json:<width$}", width = api::MAX_BODY_SIZE);
    let mut c = connect(&f.sock).await;
    let r = c.call(Method::PUT, "/machine-config", at_limit).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{r:?}");

    let over = format!("{json:<width$}", width = api::MAX_BODY_SIZE + 1);
    let r = c.call(Method::PUT, "/machine-config", over).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.fault(), "request body is larger than 51200 bytes");

    // The server may close that connection (its body went unread); a new
    // one is served.
    let mut c = connect(&f.sock).await;
    c.call(Method::GET, "/", "").await.json();
    assert_eq!(f.vmm.actions().len(), 2);
}

#[tokio::test]
async fn an_action_error_is_400_with_its_message() {
    let f = start();
    let mut c = connect(&f.sock).await;
    c.ok(
        Method::PUT,
        "/actions",
        r#"{"action_type": "InstanceStart"}"#,
    )
    .await;
    let r = c
        .call(
            Method::PUT,
            "/actions",
            r#"{"action_type": "InstanceStart"}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.fault(), "InstanceStart: the VM is already running");
    c.ok(Method::PUT, "/actions", r#"{"action_type": "Shutdown"}"#)
        .await;
    assert_eq!(
        f.vmm.actions(),
        vec![
            VmmAction::InstanceStart,
            VmmAction::InstanceStart,
            VmmAction::Shutdown
        ]
    );
}

#[tokio::test]
async fn shutdown_closes_idle_connections_and_stops_accepting() {
    let mut f = start();
    let stream = UnixStream::connect(&f.sock).await.unwrap();
    let (tx, conn) = handshake(TokioIo::new(stream)).await.unwrap();
    let conn = tokio::spawn(conn);
    let mut idle = Client { tx };
    idle.call(Method::GET, "/", "").await.json();
    let server = f.server.take().unwrap();
    tokio::task::spawn_blocking(move || server.shutdown())
        .await
        .unwrap();
    assert!(UnixStream::connect(&f.sock).await.is_err());
    // The idle keep-alive connection was closed by the server, not left
    // hanging: the client's connection task sees the end of the stream.
    conn.await.unwrap().unwrap();
}

#[tokio::test]
async fn the_shutdown_reply_is_written_even_when_the_server_stops_at_once() {
    // What `podvm serve` does: the VMM answers Shutdown, leaves its loop and
    // calls `ApiServer::shutdown` while the 204 may still be unwritten.
    let mut f = start();
    let (asked_tx, asked_rx) = mpsc::channel();
    *f.vmm.on_shutdown.lock().unwrap() = Some(asked_tx);
    let server = f.server.take().unwrap();
    let stopper = std::thread::spawn(move || {
        asked_rx.recv().unwrap();
        server.shutdown();
    });
    let mut c = connect(&f.sock).await;
    c.ok(Method::PUT, "/actions", r#"{"action_type": "Shutdown"}"#)
        .await;
    tokio::task::spawn_blocking(move || stopper.join().unwrap())
        .await
        .unwrap();
    assert!(UnixStream::connect(&f.sock).await.is_err());
}

/// A VMM that takes actions through `submit` and answers them when the
/// test says, from the test's thread, as the VMM thread does.
#[derive(Default)]
struct QueueVmm {
    held: Mutex<Vec<(VmmAction, api::Reply)>>,
}

impl ActionSender for QueueVmm {
    fn send(&self, _: VmmAction) -> ActionResult {
        panic!("the server must use submit when the sender supports it");
    }

    fn submit(&self, action: VmmAction, reply: api::Reply) -> Result<(), (VmmAction, api::Reply)> {
        self.held.lock().unwrap().push((action, reply));
        Ok(())
    }
}

impl QueueVmm {
    /// Waits until `n` actions are held, then takes them.
    async fn take(&self, n: usize) -> Vec<(VmmAction, api::Reply)> {
        loop {
            {
                let mut held = self.held.lock().unwrap();
                if held.len() >= n {
                    return held.drain(..).collect();
                }
            }
            tokio::task::yield_now().await;
        }
    }
}

#[tokio::test]
async fn submitted_actions_are_answered_whenever_and_in_any_order() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("api.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let vmm = Arc::new(QueueVmm::default());
    let _server = start_server(listener, vmm.clone()).unwrap();

    let (mut a, mut b, mut c) = (
        connect(&sock).await,
        connect(&sock).await,
        connect(&sock).await,
    );
    let paused =
        tokio::spawn(async move { a.call(Method::PATCH, "/vm", r#"{"state": "Paused"}"#).await });
    let version = tokio::spawn(async move { b.call(Method::GET, "/version", "").await });
    let held = vmm.take(2).await;
    // Answer the second request first: the first keeps waiting.
    let mut by_action: Vec<_> = held.into_iter().collect();
    by_action.sort_by_key(|(a, _)| *a == VmmAction::Pause);
    let (pause, version_reply) = (by_action.pop().unwrap(), by_action.pop().unwrap());
    assert_eq!(pause.0, VmmAction::Pause);
    version_reply.1.send(Ok(VmmData::Version("9.9.9".into())));
    let v = version.await.unwrap().json();
    assert_eq!(v["firecracker_version"], "9.9.9");
    assert!(!paused.is_finished());
    pause.1.send(Ok(VmmData::Empty));
    assert_eq!(paused.await.unwrap().status, StatusCode::NO_CONTENT);

    // A reply dropped unanswered (the VMM stopped) is a 400 saying so.
    let dropped = tokio::spawn(async move {
        c.call(
            Method::PUT,
            "/actions",
            r#"{"action_type": "InstanceStart"}"#,
        )
        .await
    });
    drop(vmm.take(1).await);
    let r = dropped.await.unwrap();
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.fault(), "the VMM is stopping");
}

#[tokio::test]
async fn an_init_that_fails_fails_the_start_and_nothing_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("api.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let vmm = Arc::new(FakeVmm::default());
    let err =
        api::start_server_with(listener, vmm.clone(), || Err("no filter".into())).unwrap_err();
    assert_eq!(err.to_string(), "no filter");
    // The listener went with the thread: nobody accepts.
    assert!(UnixStream::connect(&sock).await.is_err());

    // An init that succeeds runs on the API thread before anything is
    // served.
    let sock = dir.path().join("api2.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let (tx, rx) = mpsc::channel();
    let _server = api::start_server_with(listener, vmm, move || {
        tx.send(std::thread::current().name().map(str::to_string))
            .unwrap();
        Ok(())
    })
    .unwrap();
    assert_eq!(rx.recv().unwrap().as_deref(), Some("api"));
    let mut c = connect(&sock).await;
    c.call(Method::GET, "/", "").await.json();
}
