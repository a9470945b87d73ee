//! containerd's Task service (task v2) for one pod: every container of the
//! pod, run by the pod's agent.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use agent_protocol::agent::{
    ContainerRequest, CreateContainerRequest, CreateSandboxRequest,
    ExecProcessRequest as AgentExec, ProcessRequest, SignalProcessRequest,
};
use agent_protocol::agent_ttrpc::AgentClient;
use containerd_shim::api;
use containerd_shim::event::Event;
use containerd_shim::protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO, TaskStart,
};
use containerd_shim::protos::types::task::ProcessInfo;
use containerd_shim::protos::types::task::Status;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{ExitSignal, TtrpcContext, TtrpcResult};
use protobuf::well_known_types::timestamp::Timestamp;
use protobuf::MessageField;
use ttrpc::Code;

use crate::bundle::{bundle_annotations, sandbox_id};
use crate::config::ShimConfig;
use crate::io::{ProcessIo, StdioPaths};
use crate::pod::{ctx, Pod, CALL_TIMEOUT};
use crate::process::{
    agent_error, no_such_task, status, unimplemented, Container, Exit, Proc, State,
};

/// How long a process's output may take to drain after it exits, before
/// its exit is announced anyway.
const OUTPUT_DRAIN: Duration = Duration::from_secs(2);

struct Inner {
    namespace: String,
    config: Result<ShimConfig, String>,
    publisher: RemotePublisher,
    exit: Arc<ExitSignal>,
    state: Mutex<State>,
    exited: Condvar,
}

/// The Task service of one shim process (one pod).
#[derive(Clone)]
pub struct TaskService {
    inner: Arc<Inner>,
}

impl TaskService {
    /// A service for `namespace`, publishing events through `publisher`
    /// and signalling `exit` when containerd shuts the shim down.
    pub fn new(namespace: &str, publisher: RemotePublisher, exit: Arc<ExitSignal>) -> TaskService {
        let config = ShimConfig::load().map_err(|e| e.to_string());
        if let Err(e) = &config {
            log::error!("{e}");
        }
        TaskService {
            inner: Arc::new(Inner {
                namespace: namespace.to_string(),
                config,
                publisher,
                exit,
                state: Mutex::new(State {
                    pod: None,
                    sandbox_id: String::new(),
                    containers: HashMap::new(),
                }),
                exited: Condvar::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn publish(&self, event: impl Event + 'static) {
        let topic = event.topic();
        if let Err(e) = self.inner.publisher.publish(
            ttrpc::context::Context::default(),
            &topic,
            &self.inner.namespace,
            Box::new(event),
        ) {
            log::warn!("publishing {topic}: {e}");
        }
    }

    /// The pod's agent, with the state unlocked while it is called.
    fn agent(&self) -> TtrpcResult<(AgentClient, agent_protocol::transport::Transport)> {
        let st = self.lock();
        let pod = st.pod.as_ref().ok_or_else(|| {
            status(
                Code::FAILED_PRECONDITION,
                "the pod has no agent: no task was created",
            )
        })?;
        Ok((pod.client().clone(), pod.transport().clone()))
    }

    /// Starts the pod on the first Create.
    fn ensure_pod(&self, sandbox: &str, annotations: &HashMap<String, String>) -> TtrpcResult<()> {
        let mut st = self.lock();
        if st.pod.is_some() {
            return Ok(());
        }
        let config = self
            .inner
            .config
            .as_ref()
            .map_err(|e| status(Code::FAILED_PRECONDITION, e.clone()))?;
        let size = config
            .pod_size(annotations)
            .map_err(|e| status(Code::INVALID_ARGUMENT, format!("pod {sandbox}: {e}")))?;
        log::info!(
            "pod {sandbox}: {} vCPUs, {} MiB",
            size.vcpus,
            size.memory_mib
        );
        let pod = Pod::start(config, &self.inner.namespace, sandbox)
            .map_err(|e| status(Code::UNAVAILABLE, format!("pod {sandbox}: {e}")))?;
        let req = CreateSandboxRequest {
            sandbox_id: sandbox.to_string(),
            ..Default::default()
        };
        if let Err(e) = pod.client().create_sandbox(ctx(CALL_TIMEOUT), &req) {
            pod.stop(sandbox);
            return Err(agent_error(&format!("pod {sandbox}"), e));
        }
        st.pod = Some(pod);
        st.sandbox_id = sandbox.to_string();
        Ok(())
    }

    /// Waits in the background for a started process to end, then records
    /// and announces its exit.
    fn watch(
        &self,
        client: AgentClient,
        id: String,
        exec_id: String,
        pid: u32,
        io: Arc<ProcessIo>,
    ) {
        let svc = self.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("wait-{id}"))
            .spawn(move || {
                let req = ProcessRequest {
                    container_id: id.clone(),
                    exec_id: exec_id.clone(),
                    ..Default::default()
                };
                let exit_status =
                    match client.wait_process(ttrpc::context::Context::default(), &req) {
                        Ok(r) => r.exit_status,
                        Err(e) => {
                            log::error!("container {id}: waiting for process {pid}: {e}");
                            255
                        }
                    };
                if !io.wait_outputs(OUTPUT_DRAIN) {
                    log::warn!(
                        "container {id}: output still open {} s after the process ended",
                        OUTPUT_DRAIN.as_secs()
                    );
                }
                let at = Timestamp::now();
                {
                    let mut st = svc.lock();
                    if let Some(p) = st
                        .containers
                        .get_mut(&id)
                        .and_then(|c| c.proc_mut(&id, &exec_id).ok())
                    {
                        p.status = Status::STOPPED;
                        p.exit = Some(Exit {
                            status: exit_status,
                            at: at.clone(),
                        });
                    }
                }
                svc.inner.exited.notify_all();
                svc.publish(TaskExit {
                    container_id: id.clone(),
                    id: if exec_id.is_empty() { id } else { exec_id },
                    pid,
                    exit_status,
                    exited_at: MessageField::some(at),
                    ..Default::default()
                });
            });
        if let Err(e) = spawned {
            log::error!("starting a waiting thread: {e}");
        }
    }

    fn mount_rootfs(&self, req: &api::CreateTaskRequest) -> TtrpcResult<Option<PathBuf>> {
        if req.rootfs.is_empty() {
            return Ok(None);
        }
        let target = Path::new(&req.bundle).join("rootfs");
        std::fs::create_dir_all(&target).map_err(|e| {
            status(
                Code::INTERNAL,
                format!("container {}: {}: {e}", req.id, target.display()),
            )
        })?;
        for m in &req.rootfs {
            containerd_shim::mount::mount_rootfs(
                Some(m.type_.as_str()),
                Some(m.source.as_str()),
                &m.options,
                &target,
            )
            .map_err(|e| {
                status(
                    Code::INTERNAL,
                    format!(
                        "container {}: mounting its rootfs {} ({}) on {}: {e}",
                        req.id,
                        m.source,
                        m.type_,
                        target.display()
                    ),
                )
            })?;
        }
        Ok(Some(target))
    }
}

fn unmount(target: &Path) {
    if let Err(e) = containerd_shim::mount::umount_recursive(target.to_str(), libc::MNT_DETACH) {
        log::warn!("unmounting {}: {e}", target.display());
    }
}

impl containerd_shim::Task for TaskService {
    fn create(
        &self,
        _ctx: &TtrpcContext,
        req: api::CreateTaskRequest,
    ) -> TtrpcResult<api::CreateTaskResponse> {
        let id = req.id.clone();
        if req.terminal {
            return Err(unimplemented(
                "podvm: terminals (ctr -t, tty: true) are not supported yet",
            ));
        }
        if !req.checkpoint.is_empty() {
            return Err(unimplemented(
                "podvm: restoring a container from a checkpoint is not supported",
            ));
        }
        if self.lock().containers.contains_key(&id) {
            return Err(status(
                Code::ALREADY_EXISTS,
                format!("container {id}: already exists"),
            ));
        }
        let bundle = PathBuf::from(&req.bundle);
        let oci_spec = std::fs::read(bundle.join("config.json")).map_err(|e| {
            status(
                Code::INVALID_ARGUMENT,
                format!("container {id}: {}/config.json: {e}", req.bundle),
            )
        })?;
        let annotations = bundle_annotations(&bundle);
        let sandbox = sandbox_id(&annotations, &id);
        {
            let st = self.lock();
            if st.pod.is_some() && st.sandbox_id != sandbox {
                return Err(status(
                    Code::FAILED_PRECONDITION,
                    format!(
                        "container {id}: belongs to pod {sandbox}, this shim serves pod {}",
                        st.sandbox_id
                    ),
                ));
            }
        }
        self.ensure_pod(&sandbox, &annotations)?;
        let (client, transport) = self.agent()?;
        let rootfs_mount = self.mount_rootfs(&req)?;
        let paths = StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        let fail = |e: ttrpc::Error| {
            if let Some(t) = &rootfs_mount {
                unmount(t);
            }
            e
        };
        let io = ProcessIo::connect(&transport, &id, "", &paths).map_err(|e| {
            fail(status(
                Code::UNAVAILABLE,
                format!("container {id}: connecting its stdio to the agent: {e}"),
            ))
        })?;
        let areq = CreateContainerRequest {
            container_id: id.clone(),
            oci_spec,
            rootfs_path: bundle.join("rootfs").to_string_lossy().into_owned(),
            stdio: MessageField::some(paths.agent_stdio()),
            ..Default::default()
        };
        let pid = client
            .create_container(ctx(CALL_TIMEOUT), &areq)
            .map_err(|e| fail(agent_error(&format!("container {id}"), e)))?
            .pid;
        let mut init = Proc::new(paths.clone());
        init.pid = pid;
        init.io = Some(Arc::new(io));
        self.lock().containers.insert(
            id.clone(),
            Container {
                bundle: req.bundle.clone(),
                rootfs_mount,
                init,
                execs: HashMap::new(),
            },
        );
        self.publish(TaskCreate {
            container_id: id,
            bundle: req.bundle,
            rootfs: req.rootfs,
            io: MessageField::some(TaskIO {
                stdin: paths.stdin,
                stdout: paths.stdout,
                stderr: paths.stderr,
                terminal: paths.terminal,
                ..Default::default()
            }),
            pid,
            ..Default::default()
        });
        Ok(api::CreateTaskResponse {
            pid,
            ..Default::default()
        })
    }

    fn start(
        &self,
        _ctx: &TtrpcContext,
        req: api::StartRequest,
    ) -> TtrpcResult<api::StartResponse> {
        let (id, exec_id) = (req.id.clone(), req.exec_id.clone());
        let (client, transport) = self.agent()?;
        let (paths, spec) = {
            let st = self.lock();
            let c = st.container(&id)?;
            let p = c.proc(&id, &exec_id)?;
            if p.status != Status::CREATED {
                return Err(status(
                    Code::FAILED_PRECONDITION,
                    format!("container {id}: process already started"),
                ));
            }
            (p.paths.clone(), p.spec.clone())
        };
        let (pid, io) = if exec_id.is_empty() {
            client
                .start_container(
                    ctx(CALL_TIMEOUT),
                    &ContainerRequest {
                        container_id: id.clone(),
                        ..Default::default()
                    },
                )
                .map_err(|e| agent_error(&format!("container {id}"), e))?;
            let st = self.lock();
            let p = &st
                .containers
                .get(&id)
                .ok_or_else(|| {
                    status(
                        Code::NOT_FOUND,
                        format!("container {id}: deleted while starting"),
                    )
                })?
                .init;
            (
                p.pid,
                p.io.clone()
                    .expect("an init process has its io from Create"),
            )
        } else {
            let io = ProcessIo::connect(&transport, &id, &exec_id, &paths).map_err(|e| {
                status(
                    Code::UNAVAILABLE,
                    format!(
                        "container {id} exec {exec_id}: connecting its stdio to the agent: {e}"
                    ),
                )
            })?;
            let areq = AgentExec {
                container_id: id.clone(),
                exec_id: exec_id.clone(),
                process: spec,
                stdio: MessageField::some(paths.agent_stdio()),
                ..Default::default()
            };
            let pid = client
                .exec_process(ctx(CALL_TIMEOUT), &areq)
                .map_err(|e| agent_error(&format!("container {id} exec {exec_id}"), e))?
                .pid;
            (pid, Arc::new(io))
        };
        {
            let mut st = self.lock();
            if let Some(p) = st
                .containers
                .get_mut(&id)
                .and_then(|c| c.proc_mut(&id, &exec_id).ok())
            {
                p.pid = pid;
                p.status = Status::RUNNING;
                p.io = Some(Arc::clone(&io));
            }
        }
        self.watch(client, id.clone(), exec_id.clone(), pid, io);
        if exec_id.is_empty() {
            self.publish(TaskStart {
                container_id: id,
                pid,
                ..Default::default()
            });
        } else {
            self.publish(TaskExecStarted {
                container_id: id,
                exec_id,
                pid,
                ..Default::default()
            });
        }
        Ok(api::StartResponse {
            pid,
            ..Default::default()
        })
    }

    fn state(
        &self,
        _ctx: &TtrpcContext,
        req: api::StateRequest,
    ) -> TtrpcResult<api::StateResponse> {
        let st = self.lock();
        let id = &req.id;
        let c = st.container(id)?;
        let p = c.proc(id, &req.exec_id)?;
        Ok(api::StateResponse {
            id: id.clone(),
            bundle: c.bundle.clone(),
            pid: p.pid,
            status: p.status.into(),
            stdin: p.paths.stdin.clone(),
            stdout: p.paths.stdout.clone(),
            stderr: p.paths.stderr.clone(),
            terminal: p.paths.terminal,
            exit_status: p.exit.as_ref().map_or(0, |e| e.status),
            exited_at: p.exit.as_ref().map(|e| e.at.clone()).into(),
            exec_id: req.exec_id.clone(),
            ..Default::default()
        })
    }

    fn kill(&self, _ctx: &TtrpcContext, req: api::KillRequest) -> TtrpcResult<api::Empty> {
        let id = &req.id;
        {
            let st = self.lock();
            let c = st.container(id)?;
            let p = c.proc(id, &req.exec_id)?;
            if p.exit.is_some() && !req.all {
                return Err(status(
                    Code::NOT_FOUND,
                    format!("container {id}: process already finished"),
                ));
            }
        }
        let (client, _) = self.agent()?;
        let areq = SignalProcessRequest {
            container_id: id.clone(),
            exec_id: req.exec_id.clone(),
            signal: req.signal,
            all: req.all,
            ..Default::default()
        };
        client
            .signal_process(ctx(CALL_TIMEOUT), &areq)
            .map_err(|e| agent_error(&format!("container {id}"), e))?;
        Ok(api::Empty::new())
    }

    fn wait(&self, _ctx: &TtrpcContext, req: api::WaitRequest) -> TtrpcResult<api::WaitResponse> {
        let id = &req.id;
        let mut st = self.lock();
        loop {
            let c = st.container(id)?;
            if let Some(e) = &c.proc(id, &req.exec_id)?.exit {
                return Ok(api::WaitResponse {
                    exit_status: e.status,
                    exited_at: MessageField::some(e.at.clone()),
                    ..Default::default()
                });
            }
            st = self
                .inner
                .exited
                .wait(st)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    fn delete(
        &self,
        _ctx: &TtrpcContext,
        req: api::DeleteRequest,
    ) -> TtrpcResult<api::DeleteResponse> {
        let id = req.id.clone();
        let (client, _) = self.agent()?;
        if !req.exec_id.is_empty() {
            let mut st = self.lock();
            let c = st.container_mut(&id)?;
            let p = c.proc(&id, &req.exec_id)?;
            if p.status == Status::RUNNING {
                return Err(status(
                    Code::FAILED_PRECONDITION,
                    format!("container {id} exec {}: still running", req.exec_id),
                ));
            }
            let p = c.execs.remove(&req.exec_id).expect("looked up above");
            let exit = p.exit.unwrap_or(Exit {
                status: 0,
                at: Timestamp::now(),
            });
            return Ok(api::DeleteResponse {
                pid: p.pid,
                exit_status: exit.status,
                exited_at: MessageField::some(exit.at),
                ..Default::default()
            });
        }
        {
            let st = self.lock();
            let c = st.container(&id)?;
            if c.init.status == Status::RUNNING {
                return Err(status(
                    Code::FAILED_PRECONDITION,
                    format!("container {id}: still running: kill it first"),
                ));
            }
        }
        client
            .remove_container(
                ctx(CALL_TIMEOUT),
                &ContainerRequest {
                    container_id: id.clone(),
                    ..Default::default()
                },
            )
            .map_err(|e| agent_error(&format!("container {id}"), e))?;
        let c = self
            .lock()
            .containers
            .remove(&id)
            .ok_or_else(|| no_such_task(&id))?;
        if let Some(t) = &c.rootfs_mount {
            unmount(t);
        }
        // A container deleted before it ran was killed by the delete.
        let exit = c.init.exit.clone().unwrap_or(Exit {
            status: 128 + libc::SIGKILL as u32,
            at: Timestamp::now(),
        });
        self.inner.exited.notify_all();
        self.publish(TaskDelete {
            container_id: id.clone(),
            id,
            pid: c.init.pid,
            exit_status: exit.status,
            exited_at: MessageField::some(exit.at.clone()),
            ..Default::default()
        });
        Ok(api::DeleteResponse {
            pid: c.init.pid,
            exit_status: exit.status,
            exited_at: MessageField::some(exit.at),
            ..Default::default()
        })
    }

    fn exec(&self, _ctx: &TtrpcContext, req: api::ExecProcessRequest) -> TtrpcResult<api::Empty> {
        let id = &req.id;
        if req.terminal {
            return Err(unimplemented(
                "podvm: exec with a terminal (-t) is not supported yet",
            ));
        }
        let mut st = self.lock();
        let c = st.container_mut(id)?;
        if c.init.status != Status::RUNNING {
            return Err(status(
                Code::FAILED_PRECONDITION,
                format!("container {id}: not running"),
            ));
        }
        if c.execs.contains_key(&req.exec_id) {
            return Err(status(
                Code::ALREADY_EXISTS,
                format!("container {id}: exec {} already exists", req.exec_id),
            ));
        }
        let mut p = Proc::new(StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        });
        p.spec = req
            .spec
            .as_ref()
            .map(|s| s.value.clone())
            .unwrap_or_default();
        c.execs.insert(req.exec_id.clone(), p);
        drop(st);
        self.publish(TaskExecAdded {
            container_id: id.clone(),
            exec_id: req.exec_id,
            ..Default::default()
        });
        Ok(api::Empty::new())
    }

    fn pids(&self, _ctx: &TtrpcContext, req: api::PidsRequest) -> TtrpcResult<api::PidsResponse> {
        let (client, _) = self.agent()?;
        let pids = client
            .list_processes(
                ctx(CALL_TIMEOUT),
                &ContainerRequest {
                    container_id: req.id.clone(),
                    ..Default::default()
                },
            )
            .map_err(|e| agent_error(&format!("container {}", req.id), e))?
            .pids;
        Ok(api::PidsResponse {
            processes: pids
                .into_iter()
                .map(|pid| ProcessInfo {
                    pid,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
    }

    fn close_io(&self, _ctx: &TtrpcContext, req: api::CloseIORequest) -> TtrpcResult<api::Empty> {
        let st = self.lock();
        let id = &req.id;
        let c = st.container(id)?;
        if let Some(io) = &c.proc(id, &req.exec_id)?.io {
            io.close_stdin();
        }
        Ok(api::Empty::new())
    }

    fn connect(
        &self,
        _ctx: &TtrpcContext,
        req: api::ConnectRequest,
    ) -> TtrpcResult<api::ConnectResponse> {
        let st = self.lock();
        let task_pid = st.containers.get(&req.id).map_or(0, |c| c.init.pid);
        Ok(api::ConnectResponse {
            shim_pid: std::process::id(),
            task_pid,
            version: format!("podvm {}", env!("CARGO_PKG_VERSION")),
            ..Default::default()
        })
    }

    fn shutdown(&self, _ctx: &TtrpcContext, _req: api::ShutdownRequest) -> TtrpcResult<api::Empty> {
        let mut st = self.lock();
        if !st.containers.is_empty() {
            // Other containers of the pod still run here.
            return Ok(api::Empty::new());
        }
        if let Some(pod) = st.pod.take() {
            pod.stop(&st.sandbox_id);
        }
        self.inner.exit.signal();
        Ok(api::Empty::new())
    }

    fn pause(&self, _ctx: &TtrpcContext, _req: api::PauseRequest) -> TtrpcResult<api::Empty> {
        Err(unimplemented(
            "podvm: pause needs the pod's VM (PATCH /vm); in host mode there is none",
        ))
    }

    fn resume(&self, _ctx: &TtrpcContext, _req: api::ResumeRequest) -> TtrpcResult<api::Empty> {
        Err(unimplemented(
            "podvm: resume needs the pod's VM (PATCH /vm); in host mode there is none",
        ))
    }

    fn stats(
        &self,
        _ctx: &TtrpcContext,
        _req: api::StatsRequest,
    ) -> TtrpcResult<api::StatsResponse> {
        Err(unimplemented("podvm: task stats are not collected yet"))
    }

    fn resize_pty(
        &self,
        _ctx: &TtrpcContext,
        _req: api::ResizePtyRequest,
    ) -> TtrpcResult<api::Empty> {
        Err(unimplemented(
            "podvm: terminals are not supported yet, so there is no pty to resize",
        ))
    }

    fn update(&self, _ctx: &TtrpcContext, _req: api::UpdateTaskRequest) -> TtrpcResult<api::Empty> {
        Err(unimplemented(
            "podvm: changing a running task's resources is not supported",
        ))
    }

    fn checkpoint(
        &self,
        _ctx: &TtrpcContext,
        _req: api::CheckpointTaskRequest,
    ) -> TtrpcResult<api::Empty> {
        Err(unimplemented(
            "podvm: checkpointing a container is not supported",
        ))
    }
}
