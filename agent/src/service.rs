//! The agent's ttrpc API: one pod's containers, run with runc.
//!
//! Each container has a bundle at `<state>/containers/<cid>/` (its
//! `config.json`, pid files, exec process specs and, in a guest, the
//! mounted rootfs). Processes are waited for through the [`Reaper`]; their
//! stdio sockets come from the [`StdioRegistry`].

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use agent_protocol::agent::{
    ContainerRequest, CreateContainerRequest, CreateSandboxRequest, DestroySandboxRequest, Empty,
    ExecProcessRequest, HealthResponse, ListProcessesResponse, ProcessRequest, ProcessResponse,
    SignalProcessRequest, Stdio, WaitProcessResponse,
};
use agent_protocol::agent_ttrpc::Agent;
use agent_protocol::stdio::{check_id, Stream};
use ttrpc::{Code, TtrpcContext};

use crate::reaper::Reaper;
use crate::rootfs::{self, RootfsSource};
use crate::runc::{self, ProcessStdio, Runc};
use crate::stdio::StdioRegistry;

/// How long CreateContainer/ExecProcess wait for a requested stdio
/// connection that has not arrived yet.
const STDIO_WAIT: Duration = Duration::from_secs(10);

/// How long RemoveContainer waits for a killed container's processes to
/// be reaped before it forgets their pids.
const REAP_WAIT: Duration = Duration::from_secs(5);

/// Where the agent runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A host process: containers share the host kernel, with no VM around them.
    Host,
    /// Inside a podvm guest.
    Vm,
}

impl Mode {
    /// The mode's name in HealthResponse.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Host => "host",
            Mode::Vm => "vm",
        }
    }
}

/// One container the agent has (or is creating).
#[derive(Debug, Default)]
struct Container {
    /// The init process's pid; `None` while CreateContainer runs.
    init_pid: Option<u32>,
    /// exec id → pid (`None` while ExecProcess runs).
    execs: HashMap<String, Option<u32>>,
    /// The mounted rootfs, to unmount on removal.
    mounted: Option<PathBuf>,
}

/// The `Agent` service.
#[derive(Debug)]
pub struct AgentService {
    mode: Mode,
    state_dir: PathBuf,
    runc: Runc,
    reaper: Arc<Reaper>,
    stdio: Arc<StdioRegistry>,
    containers: Mutex<HashMap<String, Container>>,
    sandbox: Mutex<Option<String>>,
}

type RpcResult<T> = ttrpc::Result<T>;

/// An RPC error with `code` and the one-line `msg`.
fn rpc_error(code: Code, msg: impl ToString) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(ttrpc::get_status(code, msg))
}

fn not_found(cid: &str) -> ttrpc::Error {
    rpc_error(
        Code::NOT_FOUND,
        format!("container {cid}: no such container"),
    )
}

/// The label of a process in messages: `container c1` or `container c1 exec e1`.
fn process_label(cid: &str, eid: &str) -> String {
    if eid.is_empty() {
        format!("container {cid}")
    } else {
        format!("container {cid} exec {eid}")
    }
}

/// Whether `id` can name a container or exec: a stdio header id that is
/// also safe as one path component (runc's rule too).
pub fn valid_id(id: &str) -> bool {
    check_id(id) && !id.contains('/') && id != "." && id != ".."
}

/// The bundle's `config.json` for `spec` (OCI runtime spec JSON):
/// `root.path` set to `rootfs` (absolute) and `process.terminal` forced
/// off, since the process's stdio are plain sockets.
pub fn bundle_config(spec: &[u8], rootfs: &Path) -> Result<Vec<u8>, String> {
    let mut spec: serde_json::Value =
        serde_json::from_slice(spec).map_err(|e| format!("the OCI spec is not JSON: {e}"))?;
    let obj = spec
        .as_object_mut()
        .ok_or("the OCI spec is not a JSON object")?;
    let process = obj
        .get_mut("process")
        .and_then(|p| p.as_object_mut())
        .ok_or("the OCI spec has no process")?;
    process.insert("terminal".into(), false.into());
    let readonly = obj
        .get("root")
        .and_then(|r| r.get("readonly"))
        .and_then(|r| r.as_bool())
        .unwrap_or(false);
    obj.insert(
        "root".into(),
        serde_json::json!({ "path": rootfs.to_string_lossy(), "readonly": readonly }),
    );
    serde_json::to_vec_pretty(&spec).map_err(|e| format!("cannot write config.json: {e}"))
}

/// The exec process file for `process` (OCI process spec JSON), with
/// `terminal` forced off.
pub fn exec_process(process: &[u8]) -> Result<Vec<u8>, String> {
    let mut process: serde_json::Value = serde_json::from_slice(process)
        .map_err(|e| format!("the process spec is not JSON: {e}"))?;
    process
        .as_object_mut()
        .ok_or("the process spec is not a JSON object")?
        .insert("terminal".into(), false.into());
    serde_json::to_vec_pretty(&process).map_err(|e| format!("cannot write the process spec: {e}"))
}

impl AgentService {
    /// A service keeping its state under `state_dir` (absolute).
    pub fn new(
        mode: Mode,
        state_dir: PathBuf,
        runc: Runc,
        reaper: Arc<Reaper>,
        stdio: Arc<StdioRegistry>,
    ) -> AgentService {
        AgentService {
            mode,
            state_dir,
            runc,
            reaper,
            stdio,
            containers: Mutex::new(HashMap::new()),
            sandbox: Mutex::new(None),
        }
    }

    fn containers(&self) -> MutexGuard<'_, HashMap<String, Container>> {
        self.containers.lock().expect("containers lock poisoned")
    }

    fn bundle_dir(&self, cid: &str) -> PathBuf {
        self.state_dir.join("containers").join(cid)
    }

    /// The stdio sockets `stdio` asks for, waited for up to [`STDIO_WAIT`].
    fn take_stdio(&self, cid: &str, eid: &str, stdio: Option<&Stdio>) -> RpcResult<ProcessStdio> {
        let Some(stdio) = stdio else {
            return Ok(ProcessStdio::default());
        };
        if stdio.terminal {
            return Err(rpc_error(
                Code::UNIMPLEMENTED,
                format!(
                    "{}: terminals are not supported yet",
                    process_label(cid, eid)
                ),
            ));
        }
        let take = |wanted: bool, stream: Stream| -> RpcResult<Option<OwnedFd>> {
            if !wanted {
                return Ok(None);
            }
            match self.stdio.take(cid, eid, stream, STDIO_WAIT) {
                Some(conn) => Ok(Some(OwnedFd::from(conn))),
                None => Err(rpc_error(
                    Code::FAILED_PRECONDITION,
                    format!(
                        "{}: no {} connection arrived within {}s (open it before the RPC)",
                        process_label(cid, eid),
                        stream.name(),
                        STDIO_WAIT.as_secs()
                    ),
                )),
            }
        };
        Ok(ProcessStdio {
            stdin: take(stdio.stdin, Stream::Stdin)?,
            stdout: take(stdio.stdout, Stream::Stdout)?,
            stderr: take(stdio.stderr, Stream::Stderr)?,
        })
    }

    /// The steps of CreateContainer after the id is reserved. Whatever it
    /// mounted is recorded in `mounted`, for the caller's clean-up.
    fn create(
        &self,
        req: &CreateContainerRequest,
        source: RootfsSource,
        mounted: &mut Option<PathBuf>,
    ) -> RpcResult<u32> {
        let cid = req.container_id.as_str();
        let internal = |what: &str, e: &dyn std::fmt::Display| {
            rpc_error(Code::INTERNAL, format!("container {cid}: {what}: {e}"))
        };
        let dir = self.bundle_dir(cid);
        std::fs::create_dir_all(&dir)
            .map_err(|e| internal(&format!("cannot create {}", dir.display()), &e))?;
        let rootfs = match source {
            RootfsSource::Dir(p) => std::path::absolute(&p)
                .map_err(|e| internal(&format!("rootfs {}", p.display()), &e))?,
            RootfsSource::Device(dev) => {
                let target = dir.join("rootfs");
                rootfs::mount_ext4(&dev, &target).map_err(|e| {
                    internal(
                        &format!("cannot mount {} at {}", dev.display(), target.display()),
                        &e,
                    )
                })?;
                *mounted = Some(target.clone());
                target
            }
        };
        let config = bundle_config(&req.oci_spec, &rootfs)
            .map_err(|e| rpc_error(Code::INVALID_ARGUMENT, format!("container {cid}: {e}")))?;
        let config_path = dir.join("config.json");
        std::fs::write(&config_path, config)
            .map_err(|e| internal(&format!("cannot write {}", config_path.display()), &e))?;
        let stdio = self.take_stdio(cid, "", req.stdio.as_ref())?;
        let pid_file = dir.join("init.pid");
        self.runc
            .create(cid, &dir, &pid_file, stdio)
            .map_err(|e| rpc_error(Code::INTERNAL, e))?;
        runc::read_pid(&pid_file).map_err(|e| internal("runc create", &e))
    }

    /// Undoes a failed CreateContainer: runc state, mount, bundle.
    fn clean_up_failed_create(&self, cid: &str, mounted: Option<PathBuf>) {
        if self.runc.exists(cid) {
            if let Err(e) = self.runc.delete(cid) {
                log::warn!("podvm-agent: container {cid}: cleaning up: {e}");
            }
        }
        if let Some(m) = mounted {
            if let Err(e) = rootfs::unmount(&m) {
                log::warn!(
                    "podvm-agent: container {cid}: cannot unmount {}: {e}",
                    m.display()
                );
            }
        }
        let _ = std::fs::remove_dir_all(self.bundle_dir(cid));
    }

    /// The steps of ExecProcess after the exec id is reserved.
    fn exec(&self, req: &ExecProcessRequest) -> RpcResult<u32> {
        let (cid, eid) = (req.container_id.as_str(), req.exec_id.as_str());
        let label = process_label(cid, eid);
        let process = exec_process(&req.process)
            .map_err(|e| rpc_error(Code::INVALID_ARGUMENT, format!("{label}: {e}")))?;
        let dir = self.bundle_dir(cid);
        let process_path = dir.join(format!("exec-{eid}.json"));
        std::fs::write(&process_path, process).map_err(|e| {
            rpc_error(
                Code::INTERNAL,
                format!("{label}: cannot write {}: {e}", process_path.display()),
            )
        })?;
        let stdio = self.take_stdio(cid, eid, req.stdio.as_ref())?;
        let pid_file = dir.join(format!("exec-{eid}.pid"));
        self.runc
            .exec(cid, &process_path, &pid_file, stdio)
            .map_err(|e| rpc_error(Code::INTERNAL, format!("exec {eid}: {e}")))?;
        runc::read_pid(&pid_file)
            .map_err(|e| rpc_error(Code::INTERNAL, format!("{label}: runc exec: {e}")))
    }

    /// The pid of process `eid` (empty: init) of `cid`.
    fn pid_of(&self, cid: &str, eid: &str) -> RpcResult<u32> {
        let containers = self.containers();
        let c = containers.get(cid).ok_or_else(|| not_found(cid))?;
        let pid = if eid.is_empty() {
            c.init_pid
        } else {
            *c.execs.get(eid).ok_or_else(|| {
                rpc_error(
                    Code::NOT_FOUND,
                    format!("container {cid} exec {eid}: no such process"),
                )
            })?
        };
        pid.ok_or_else(|| {
            rpc_error(
                Code::FAILED_PRECONDITION,
                format!("{}: still being created", process_label(cid, eid)),
            )
        })
    }

    /// RemoveContainer's work: delete, wait for the kills, unmount, forget.
    fn remove(&self, cid: &str) -> RpcResult<()> {
        let (pids, mounted) = {
            let containers = self.containers();
            let c = containers.get(cid).ok_or_else(|| not_found(cid))?;
            let Some(init) = c.init_pid else {
                return Err(rpc_error(
                    Code::FAILED_PRECONDITION,
                    format!("container {cid}: still being created"),
                ));
            };
            let mut pids: Vec<u32> = c.execs.values().flatten().copied().collect();
            pids.push(init);
            (pids, c.mounted.clone())
        };
        if self.runc.exists(cid) {
            self.runc
                .delete(cid)
                .map_err(|e| rpc_error(Code::INTERNAL, e))?;
        }
        // The statuses of the killed processes must be in before their
        // pids are forgotten, or a reused pid could meet a stale status.
        for &pid in &pids {
            if self.reaper.wait_timeout(pid, REAP_WAIT).is_none() {
                log::warn!("podvm-agent: container {cid}: process {pid} outlived runc delete");
            }
            self.reaper.forget(pid);
        }
        if let Some(m) = mounted {
            rootfs::unmount(&m).map_err(|e| {
                rpc_error(
                    Code::INTERNAL,
                    format!("container {cid}: cannot unmount {}: {e}", m.display()),
                )
            })?;
        }
        let dir = self.bundle_dir(cid);
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                log::warn!(
                    "podvm-agent: container {cid}: cannot remove {}: {e}",
                    dir.display()
                );
            }
        }
        self.stdio.discard(cid);
        self.containers().remove(cid);
        Ok(())
    }
}

impl Agent for AgentService {
    fn health(&self, _ctx: &TtrpcContext, _req: Empty) -> RpcResult<HealthResponse> {
        Ok(HealthResponse {
            version: env!("CARGO_PKG_VERSION").to_string(),
            mode: self.mode.name().to_string(),
            ..Default::default()
        })
    }

    fn create_sandbox(&self, _ctx: &TtrpcContext, req: CreateSandboxRequest) -> RpcResult<Empty> {
        let sid = req.sandbox_id.as_str();
        if !valid_id(sid) {
            return Err(rpc_error(
                Code::INVALID_ARGUMENT,
                format!("sandbox {sid:?}: invalid sandbox id"),
            ));
        }
        let mut sandbox = self.sandbox.lock().expect("sandbox lock poisoned");
        match sandbox.as_deref() {
            Some(s) if s == sid => return Ok(Empty::default()),
            Some(s) => {
                return Err(rpc_error(
                    Code::ALREADY_EXISTS,
                    format!("sandbox {sid}: this agent already runs sandbox {s}"),
                ))
            }
            None => {}
        }
        // In host mode the hostname is the host's: never touch it.
        if self.mode == Mode::Vm && !req.hostname.is_empty() {
            let name = req.hostname.as_bytes();
            // SAFETY: `name` is valid for `name.len()` bytes for the call.
            let rc = unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) };
            if rc < 0 {
                return Err(rpc_error(
                    Code::INTERNAL,
                    format!(
                        "sandbox {sid}: cannot set the hostname {:?}: {}",
                        req.hostname,
                        std::io::Error::last_os_error()
                    ),
                ));
            }
        }
        *sandbox = Some(sid.to_string());
        Ok(Empty::default())
    }

    fn create_container(
        &self,
        _ctx: &TtrpcContext,
        req: CreateContainerRequest,
    ) -> RpcResult<ProcessResponse> {
        let cid = req.container_id.clone();
        if !valid_id(&cid) {
            return Err(rpc_error(
                Code::INVALID_ARGUMENT,
                format!("container {cid:?}: invalid container id"),
            ));
        }
        if req.stdio.as_ref().is_some_and(|s| s.terminal) {
            return Err(rpc_error(
                Code::UNIMPLEMENTED,
                format!("container {cid}: terminals are not supported yet"),
            ));
        }
        let source =
            RootfsSource::from_request(&req.rootfs_path, &req.rootfs_device).ok_or_else(|| {
                rpc_error(
                    Code::INVALID_ARGUMENT,
                    format!("container {cid}: neither rootfs_path nor rootfs_device is set"),
                )
            })?;
        {
            let mut containers = self.containers();
            if containers.contains_key(&cid) {
                return Err(rpc_error(
                    Code::ALREADY_EXISTS,
                    format!("container {cid}: already exists"),
                ));
            }
            containers.insert(cid.clone(), Container::default());
        }
        let mut mounted = None;
        match self.create(&req, source, &mut mounted) {
            Ok(pid) => {
                let mut containers = self.containers();
                let c = containers
                    .get_mut(&cid)
                    .expect("a container being created stays in the map");
                c.init_pid = Some(pid);
                c.mounted = mounted;
                log::info!("podvm-agent: container {cid}: created, init pid {pid}");
                Ok(ProcessResponse {
                    pid,
                    ..Default::default()
                })
            }
            Err(e) => {
                self.clean_up_failed_create(&cid, mounted);
                self.containers().remove(&cid);
                Err(e)
            }
        }
    }

    fn start_container(&self, _ctx: &TtrpcContext, req: ContainerRequest) -> RpcResult<Empty> {
        let cid = req.container_id.as_str();
        self.pid_of(cid, "")?;
        self.runc
            .start(cid)
            .map_err(|e| rpc_error(Code::INTERNAL, e))?;
        Ok(Empty::default())
    }

    fn exec_process(
        &self,
        _ctx: &TtrpcContext,
        req: ExecProcessRequest,
    ) -> RpcResult<ProcessResponse> {
        let (cid, eid) = (req.container_id.clone(), req.exec_id.clone());
        if !valid_id(&eid) {
            return Err(rpc_error(
                Code::INVALID_ARGUMENT,
                format!("container {cid} exec {eid:?}: invalid exec id"),
            ));
        }
        {
            let mut containers = self.containers();
            let c = containers.get_mut(&cid).ok_or_else(|| not_found(&cid))?;
            if c.init_pid.is_none() {
                return Err(rpc_error(
                    Code::FAILED_PRECONDITION,
                    format!("container {cid}: still being created"),
                ));
            }
            if c.execs.contains_key(&eid) {
                return Err(rpc_error(
                    Code::ALREADY_EXISTS,
                    format!("container {cid} exec {eid}: already exists"),
                ));
            }
            c.execs.insert(eid.clone(), None);
        }
        let result = self.exec(&req);
        let mut containers = self.containers();
        let c = containers
            .get_mut(&cid)
            .expect("a container with an exec being started stays in the map");
        match result {
            Ok(pid) => {
                c.execs.insert(eid.clone(), Some(pid));
                log::info!("podvm-agent: container {cid} exec {eid}: started, pid {pid}");
                Ok(ProcessResponse {
                    pid,
                    ..Default::default()
                })
            }
            Err(e) => {
                c.execs.remove(&eid);
                Err(e)
            }
        }
    }

    fn signal_process(&self, _ctx: &TtrpcContext, req: SignalProcessRequest) -> RpcResult<Empty> {
        let (cid, eid) = (req.container_id.as_str(), req.exec_id.as_str());
        let label = process_label(cid, eid);
        if req.signal == 0 || req.signal > 64 {
            return Err(rpc_error(
                Code::INVALID_ARGUMENT,
                format!("{label}: {} is not a signal", req.signal),
            ));
        }
        let pid = self.pid_of(cid, eid)?;
        if self.reaper.try_status(pid).is_some() {
            // It has already exited (and its pid may be reused): done.
            return Ok(Empty::default());
        }
        if req.all {
            return self
                .runc
                .kill(cid, req.signal, true)
                .map(|()| Empty::default())
                .map_err(|e| rpc_error(Code::INTERNAL, e));
        }
        // SAFETY: kill(2) takes plain integers and touches no memory.
        let rc = unsafe { libc::kill(pid as libc::pid_t, req.signal as libc::c_int) };
        if rc < 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::ESRCH) {
                return Err(rpc_error(
                    Code::INTERNAL,
                    format!("{label}: cannot send signal {}: {err}", req.signal),
                ));
            }
        }
        Ok(Empty::default())
    }

    fn wait_process(
        &self,
        _ctx: &TtrpcContext,
        req: ProcessRequest,
    ) -> RpcResult<WaitProcessResponse> {
        let pid = self.pid_of(&req.container_id, &req.exec_id)?;
        // Blocks this ttrpc worker until the process ends: hence the
        // server's high thread limit.
        let exit_status = self.reaper.wait(pid);
        Ok(WaitProcessResponse {
            exit_status,
            ..Default::default()
        })
    }

    fn list_processes(
        &self,
        _ctx: &TtrpcContext,
        req: ContainerRequest,
    ) -> RpcResult<ListProcessesResponse> {
        let cid = req.container_id.as_str();
        self.pid_of(cid, "")?;
        let pids = self
            .runc
            .ps(cid)
            .map_err(|e| rpc_error(Code::INTERNAL, e))?;
        Ok(ListProcessesResponse {
            pids,
            ..Default::default()
        })
    }

    fn remove_container(&self, _ctx: &TtrpcContext, req: ContainerRequest) -> RpcResult<Empty> {
        self.remove(&req.container_id)?;
        log::info!("podvm-agent: container {}: removed", req.container_id);
        Ok(Empty::default())
    }

    fn destroy_sandbox(&self, _ctx: &TtrpcContext, req: DestroySandboxRequest) -> RpcResult<Empty> {
        let ids: Vec<String> = self.containers().keys().cloned().collect();
        let mut failed = Vec::new();
        for cid in ids {
            if let Err(e) = self.remove(&cid) {
                failed.push(match e {
                    ttrpc::Error::RpcStatus(s) => s.message,
                    e => e.to_string(),
                });
            }
        }
        if !failed.is_empty() {
            return Err(rpc_error(
                Code::INTERNAL,
                format!("sandbox {}: {}", req.sandbox_id, failed.join("; ")),
            ));
        }
        *self.sandbox.lock().expect("sandbox lock poisoned") = None;
        Ok(Empty::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_json_points_at_the_rootfs_and_has_no_terminal() {
        let spec = br#"{"ociVersion":"1.0.2","process":{"terminal":true,"args":["sh"]},
            "root":{"path":"rootfs","readonly":true},"hostname":"h"}"#;
        let out = bundle_config(spec, Path::new("/run/x/rootfs")).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["root"]["path"], "/run/x/rootfs");
        assert_eq!(v["root"]["readonly"], true);
        assert_eq!(v["process"]["terminal"], false);
        assert_eq!(v["process"]["args"][0], "sh");
        assert_eq!(v["hostname"], "h", "the rest is kept");
        let no_root = bundle_config(br#"{"process":{}}"#, Path::new("/r")).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&no_root).unwrap();
        assert_eq!(v["root"]["path"], "/r");
        assert_eq!(v["process"]["terminal"], false);
    }

    #[test]
    fn bad_specs_are_refused_with_a_reason() {
        assert!(bundle_config(b"nope", Path::new("/r"))
            .unwrap_err()
            .contains("not JSON"));
        assert!(bundle_config(b"{}", Path::new("/r"))
            .unwrap_err()
            .contains("no process"));
        assert!(bundle_config(b"[]", Path::new("/r"))
            .unwrap_err()
            .contains("not a JSON object"));
        let p = exec_process(br#"{"args":["ls"],"terminal":true}"#).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&p).unwrap();
        assert_eq!(v["terminal"], false);
        assert!(exec_process(b"1").is_err());
    }

    #[test]
    fn ids_must_be_one_path_component() {
        assert!(valid_id("c1"));
        for bad in ["", "-", "..", ".", "a/b", "../x", "a b"] {
            assert!(!valid_id(bad), "{bad:?}");
        }
    }
}
