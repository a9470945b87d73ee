//! The agent in host mode, end to end: the real binary, real runc, a
//! busybox rootfs, driven through the ttrpc API and the stdio port as the
//! shim drives it. Skips (see testkit) without root, containerd and runc.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio as ProcStdio};
use std::time::{Duration, Instant};

use agent_protocol::agent::{
    ContainerRequest, CreateContainerRequest, Empty, ExecProcessRequest, ProcessRequest,
    SignalProcessRequest, Stdio,
};
use agent_protocol::agent_ttrpc::AgentClient;
use agent_protocol::stdio::{StdioHeader, Stream};
use agent_protocol::transport::{unix_port_path, Transport};
use agent_protocol::{API_PORT, STDIO_PORT};

/// The limit on every stream read and on the agent's start.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The limit on every RPC: longer than the agent's 10 s wait for a
/// stdio connection, so that its answer to a missing one arrives.
const RPC_TIMEOUT: Duration = Duration::from_secs(30);

fn ctx() -> ttrpc::context::Context {
    ttrpc::context::with_timeout(RPC_TIMEOUT.as_nanos() as i64)
}

/// The busybox applets the tests' containers run.
const APPLETS: &[&str] = &["sh", "echo", "cat", "sleep", "true"];

fn busybox() -> Option<PathBuf> {
    ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .or_else(|| testkit::on_path("busybox"))
}

/// A rootfs holding only a static busybox and its applet links.
fn busybox_rootfs(at: &Path, busybox: &Path) {
    let bin = at.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for d in ["proc", "dev", "sys", "tmp"] {
        std::fs::create_dir_all(at.join(d)).unwrap();
    }
    std::fs::copy(busybox, bin.join("busybox")).unwrap();
    for applet in APPLETS {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
    }
}

/// A minimal OCI runtime spec running `args`.
fn spec(args: &[&str]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {
            "args": args,
            "cwd": "/",
            "env": ["PATH=/bin"],
            "user": {"uid": 0, "gid": 0},
        },
        "root": {"path": "rootfs", "readonly": false},
        "linux": {
            "namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "ipc"}, {"type": "uts"}],
        },
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
    }))
    .unwrap()
}

/// A running agent; killed, with its containers, when dropped.
struct TestAgent {
    child: Child,
    state: PathBuf,
    rootfs: PathBuf,
    transport: Transport,
    client: AgentClient,
    _dir: tempfile::TempDir,
}

impl TestAgent {
    /// Starts the agent, or `None` when this host cannot run it.
    fn start(test: &str) -> Option<TestAgent> {
        if !testkit::need_containerd(test) {
            return None;
        }
        let Some(busybox) = busybox() else {
            testkit::skip(
                testkit::Need::Containerd,
                test,
                "no busybox (apt-get install busybox-static)",
            );
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("sock");
        std::fs::create_dir(&sock).unwrap();
        let state = dir.path().join("state");
        let rootfs = dir.path().join("rootfs");
        busybox_rootfs(&rootfs, &busybox);
        let mut child = Command::new(env!("CARGO_BIN_EXE_podvm-agent"))
            .arg("--transport")
            .arg(format!("unix:{}", sock.display()))
            .arg("--state-dir")
            .arg(&state)
            .stdin(ProcStdio::null())
            .spawn()
            .unwrap();
        let api = unix_port_path(&sock, API_PORT);
        let deadline = Instant::now() + TIMEOUT;
        while !api.exists() {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("the agent exited before listening: {status}");
            }
            assert!(Instant::now() < deadline, "no {} after 10s", api.display());
            std::thread::sleep(Duration::from_millis(20));
        }
        let transport = Transport::UnixDir(sock);
        let client = AgentClient::new(transport.api_client().unwrap());
        Some(TestAgent {
            child,
            state,
            rootfs,
            transport,
            client,
            _dir: dir,
        })
    }

    /// Opens the `stream` connection of process `eid` of `cid`.
    fn stdio(&self, cid: &str, eid: &str, stream: Stream) -> UnixStream {
        let mut conn = self.transport.connect(STDIO_PORT).unwrap();
        conn.write_all(StdioHeader::new(cid, eid, stream).to_string().as_bytes())
            .unwrap();
        conn.set_read_timeout(Some(TIMEOUT)).unwrap();
        conn
    }

    fn create(&self, cid: &str, args: &[&str], stdio: Stdio) -> ttrpc::Result<u32> {
        let req = CreateContainerRequest {
            container_id: cid.into(),
            oci_spec: spec(args),
            rootfs_path: self.rootfs.to_string_lossy().into_owned(),
            stdio: Some(stdio).into(),
            ..Default::default()
        };
        self.client.create_container(ctx(), &req).map(|r| r.pid)
    }

    fn start_container(&self, cid: &str) {
        self.client.start_container(ctx(), &container(cid)).unwrap();
    }

    fn wait(&self, cid: &str, eid: &str) -> u32 {
        let req = ProcessRequest {
            container_id: cid.into(),
            exec_id: eid.into(),
            ..Default::default()
        };
        self.client.wait_process(ctx(), &req).unwrap().exit_status
    }

    fn remove(&self, cid: &str) {
        self.client
            .remove_container(ctx(), &container(cid))
            .unwrap();
    }
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        let root = self.state.join("runc");
        if let Ok(out) = Command::new("runc")
            .arg("--root")
            .arg(&root)
            .args(["list", "-q"])
            .output()
        {
            for id in String::from_utf8_lossy(&out.stdout).lines() {
                let _ = Command::new("runc")
                    .arg("--root")
                    .arg(&root)
                    .args(["delete", "--force", id])
                    .status();
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn container(cid: &str) -> ContainerRequest {
    ContainerRequest {
        container_id: cid.into(),
        ..Default::default()
    }
}

fn streams(stdin: bool, stdout: bool, stderr: bool) -> Stdio {
    Stdio {
        stdin,
        stdout,
        stderr,
        ..Default::default()
    }
}

fn read_all(mut conn: UnixStream) -> String {
    let mut out = String::new();
    conn.read_to_string(&mut out).unwrap();
    out
}

/// The status code and message of a failed RPC.
fn rpc_error<T: std::fmt::Debug>(r: ttrpc::Result<T>) -> (ttrpc::Code, String) {
    match r.unwrap_err() {
        ttrpc::Error::RpcStatus(s) => (s.code(), s.message.clone()),
        e => panic!("not an RPC status: {e:?}"),
    }
}

#[test]
fn agent_host_mode_init_stdio_and_exit_status() {
    let Some(agent) = TestAgent::start("agent_host_mode_init_stdio_and_exit_status") else {
        return;
    };
    let health = agent.client.health(ctx(), &Empty::default()).unwrap();
    assert_eq!(health.mode, "host");

    // Streams are connected before the RPC that uses them.
    let out = agent.stdio("c1", "", Stream::Stdout);
    let err = agent.stdio("c1", "", Stream::Stderr);
    let pid = agent
        .create(
            "c1",
            &["sh", "-c", "echo out; echo err >&2; exit 7"],
            streams(false, true, true),
        )
        .unwrap();
    assert!(pid > 0);
    let (code, msg) = rpc_error(agent.create("c1", &["true"], streams(false, false, false)));
    assert_eq!(code, ttrpc::Code::ALREADY_EXISTS, "{msg}");
    assert!(msg.contains("container c1"), "{msg}");
    agent.start_container("c1");
    assert_eq!(read_all(out), "out\n");
    assert_eq!(read_all(err), "err\n");
    assert_eq!(agent.wait("c1", ""), 7);
    agent.remove("c1");

    // The same id again, now with stdin: cat echoes it, and ends with it.
    let mut input = agent.stdio("c1", "", Stream::Stdin);
    let mut out = agent.stdio("c1", "", Stream::Stdout);
    agent
        .create("c1", &["cat"], streams(true, true, false))
        .unwrap();
    agent.start_container("c1");
    input.write_all(b"hello\n").unwrap();
    let mut echoed = [0u8; 6];
    out.read_exact(&mut echoed).unwrap();
    assert_eq!(&echoed, b"hello\n");
    input.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_all(out), "");
    assert_eq!(agent.wait("c1", ""), 0);
    agent.remove("c1");
}

#[test]
fn agent_host_mode_exec_signal_list_and_errors() {
    let Some(agent) = TestAgent::start("agent_host_mode_exec_signal_list_and_errors") else {
        return;
    };
    let pid = agent
        .create("c2", &["sleep", "100"], streams(false, false, false))
        .unwrap();
    agent.start_container("c2");
    let pids = agent
        .client
        .list_processes(ctx(), &container("c2"))
        .unwrap()
        .pids;
    assert!(pids.contains(&pid), "{pids:?} lacks the init pid {pid}");

    let out = agent.stdio("c2", "e1", Stream::Stdout);
    let process = serde_json::json!({
        "args": ["sh", "-c", "echo from-exec; exit 3"],
        "cwd": "/",
        "env": ["PATH=/bin"],
        "user": {"uid": 0, "gid": 0},
    });
    let exec = ExecProcessRequest {
        container_id: "c2".into(),
        exec_id: "e1".into(),
        process: serde_json::to_vec(&process).unwrap(),
        stdio: Some(streams(false, true, false)).into(),
        ..Default::default()
    };
    let exec_pid = agent.client.exec_process(ctx(), &exec).unwrap().pid;
    assert!(exec_pid > 0 && exec_pid != pid);
    assert_eq!(read_all(out), "from-exec\n");
    assert_eq!(agent.wait("c2", "e1"), 3);

    let kill = SignalProcessRequest {
        container_id: "c2".into(),
        signal: libc::SIGKILL as u32,
        ..Default::default()
    };
    agent.client.signal_process(ctx(), &kill).unwrap();
    assert_eq!(agent.wait("c2", ""), 128 + libc::SIGKILL as u32);
    // Signalling a process that has ended is not an error.
    agent.client.signal_process(ctx(), &kill).unwrap();
    agent.remove("c2");

    let (code, msg) = rpc_error(agent.client.start_container(ctx(), &container("nosuch")));
    assert_eq!(code, ttrpc::Code::NOT_FOUND);
    assert_eq!(msg, "container nosuch: no such container");

    // runc's reason comes back in one line, and the id is free again.
    let (_, msg) = rpc_error(agent.create("c3", &["nosuchcmd"], streams(false, false, false)));
    assert!(
        msg.starts_with("runc create c3: ") && msg.contains(r#""nosuchcmd""#),
        "{msg}"
    );
    // A requested stream that never arrives is named.
    let (code, msg) = rpc_error(agent.create("c4", &["true"], streams(false, false, true)));
    assert_eq!(code, ttrpc::Code::FAILED_PRECONDITION, "{msg}");
    assert!(
        msg.contains("container c4") && msg.contains("stderr"),
        "{msg}"
    );
    agent
        .create("c3", &["true"], streams(false, false, false))
        .unwrap();
    agent.remove("c3");
}
