//! The shim's record of a pod's containers and their processes, and the
//! ttrpc errors it answers with.

use std::collections::HashMap;

use containerd_shim::protos::types::task::Status;
use containerd_shim::TtrpcResult;
use protobuf::well_known_types::timestamp::Timestamp;
use ttrpc::Code;

use crate::io::{ProcessIo, StdioPaths};
use crate::pod::Pod;
use std::path::PathBuf;
use std::sync::Arc;

/// A ttrpc error with `code` and a one-line message.
pub fn status(code: Code, msg: impl Into<String>) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(ttrpc::get_status(code, msg.into()))
}

/// An agent error, passed on with its code and `what` in front.
pub fn agent_error(what: &str, e: ttrpc::Error) -> ttrpc::Error {
    match e {
        ttrpc::Error::RpcStatus(s) => status(s.code(), format!("{what}: {}", s.message)),
        other => status(
            Code::UNAVAILABLE,
            format!("{what}: the pod's agent: {other}"),
        ),
    }
}

/// An Unimplemented answer with its reason.
pub fn unimplemented(what: &str) -> ttrpc::Error {
    status(Code::UNIMPLEMENTED, what.to_string())
}

/// How a process ended.
#[derive(Clone, Debug)]
pub struct Exit {
    /// The exit code, or 128 + the signal that ended it.
    pub status: u32,
    /// When the shim saw it end.
    pub at: Timestamp,
}

/// One process: a container's init or an exec.
pub struct Proc {
    /// Its pid (0 before it exists).
    pub pid: u32,
    /// CREATED, RUNNING or STOPPED.
    pub status: Status,
    /// containerd's FIFOs for it.
    pub paths: StdioPaths,
    /// The exec's process spec (JSON), until it is started.
    pub spec: Vec<u8>,
    /// Its stream copies, once connected.
    pub io: Option<Arc<ProcessIo>>,
    /// How it ended, once it has.
    pub exit: Option<Exit>,
}

impl Proc {
    pub fn new(paths: StdioPaths) -> Proc {
        Proc {
            pid: 0,
            status: Status::CREATED,
            paths,
            spec: Vec::new(),
            io: None,
            exit: None,
        }
    }
}

/// One container of the pod.
pub struct Container {
    /// containerd's bundle directory.
    pub bundle: String,
    /// Where the shim mounted the rootfs containerd handed over.
    pub rootfs_mount: Option<PathBuf>,
    /// The container's own process.
    pub init: Proc,
    /// Its exec processes, by exec id.
    pub execs: HashMap<String, Proc>,
}

impl Container {
    pub fn proc(&self, id: &str, exec_id: &str) -> TtrpcResult<&Proc> {
        if exec_id.is_empty() {
            return Ok(&self.init);
        }
        self.execs.get(exec_id).ok_or_else(|| {
            status(
                Code::NOT_FOUND,
                format!("container {id}: no exec process {exec_id}"),
            )
        })
    }

    pub fn proc_mut(&mut self, id: &str, exec_id: &str) -> TtrpcResult<&mut Proc> {
        if exec_id.is_empty() {
            return Ok(&mut self.init);
        }
        self.execs.get_mut(exec_id).ok_or_else(|| {
            status(
                Code::NOT_FOUND,
                format!("container {id}: no exec process {exec_id}"),
            )
        })
    }
}

/// Everything the shim knows of its pod.
pub struct State {
    /// The pod, started by the first Create.
    pub pod: Option<Pod>,
    /// The pod's id.
    pub sandbox_id: String,
    /// The pod's containers, by id.
    pub containers: HashMap<String, Container>,
}

impl State {
    /// The container `id`, or NOT_FOUND.
    pub fn container(&self, id: &str) -> TtrpcResult<&Container> {
        self.containers.get(id).ok_or_else(|| no_such_task(id))
    }

    /// The container `id`, or NOT_FOUND, to change.
    pub fn container_mut(&mut self, id: &str) -> TtrpcResult<&mut Container> {
        self.containers.get_mut(id).ok_or_else(|| no_such_task(id))
    }
}

/// The NOT_FOUND answer for a container this shim does not have.
pub fn no_such_task(id: &str) -> ttrpc::Error {
    status(Code::NOT_FOUND, format!("container {id}: no such task"))
}
