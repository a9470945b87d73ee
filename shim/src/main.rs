//! `containerd-shim-podvm-v1`: containerd's runtime v2 shim (task v2) for
//! podvm. One shim process serves one pod — every container that carries
//! the same `io.kubernetes.cri.sandbox-id` — and runs the pod's containers
//! through the pod's agent (see `podvm-agent`).
//!
//! containerd starts it as `containerd-shim-podvm-v1 -namespace … -id …
//! -address … start` (or `delete`); see `docs/containerd.md`.

mod bundle;
mod config;
mod io;
mod pod;
mod process;
mod task;

use std::path::Path;
use std::sync::Arc;

use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{Config, DeleteResponse, ExitSignal, Flags, StartOpts};

use crate::bundle::{bundle_annotations, sandbox_id};
use crate::config::ShimConfig;
use crate::pod::{pod_dir, Pod};
use crate::task::TaskService;

/// The runtime name containerd knows this shim by.
const RUNTIME_ID: &str = "io.containerd.podvm.v1";

/// The shim's lifecycle entry points (`start`, `delete`, serve).
struct PodShim {
    namespace: String,
    id: String,
    exit: Arc<ExitSignal>,
}

impl containerd_shim::Shim for PodShim {
    type T = TaskService;

    fn new(_runtime_id: &str, args: &Flags, _config: &mut Config) -> PodShim {
        PodShim {
            namespace: args.namespace.clone(),
            id: args.id.clone(),
            exit: Arc::new(ExitSignal::default()),
        }
    }

    /// Starts (or finds) the shim process of the task's pod and prints its
    /// address: containers with one sandbox id share one shim.
    fn start_shim(&mut self, opts: StartOpts) -> containerd_shim::Result<String> {
        let bundle = std::env::current_dir()
            .map_err(|e| containerd_shim::Error::Other(format!("the bundle directory: {e}")))?;
        let grouping = sandbox_id(&bundle_annotations(&bundle), &opts.id);
        let (_pid, address) = containerd_shim::spawn(opts, &grouping, Vec::new())?;
        containerd_shim::util::write_address(&address)?;
        Ok(address)
    }

    /// Cleans up after a shim that is gone (containerd runs `delete` in
    /// the bundle when the shim died): the container through the pod's
    /// agent, or the whole pod when it was the pod's own container.
    fn delete_shim(&mut self) -> containerd_shim::Result<DeleteResponse> {
        let bundle = std::env::current_dir()
            .map_err(|e| containerd_shim::Error::Other(format!("the bundle directory: {e}")))?;
        let sandbox = sandbox_id(&bundle_annotations(&bundle), &self.id);
        match ShimConfig::load() {
            Ok(config) => {
                let dir = pod_dir(&config.state_dir, &self.namespace, &sandbox);
                if sandbox == self.id {
                    Pod::clean_up(&dir, &sandbox);
                } else {
                    Pod::remove_container(&dir, &self.id);
                }
            }
            Err(e) => log::warn!("delete {}: {e}", self.id),
        }
        let rootfs = bundle.join("rootfs");
        if is_mount_point(&rootfs) {
            let _ = containerd_shim::mount::umount_recursive(rootfs.to_str(), libc::MNT_DETACH);
        }
        Ok(DeleteResponse {
            pid: 0,
            exit_status: 128 + libc::SIGKILL as u32,
            exited_at: Some(Timestamp::now()).into(),
            ..Default::default()
        })
    }

    fn wait(&mut self) {
        self.exit.wait();
    }

    fn create_task_service(&self, publisher: RemotePublisher) -> TaskService {
        TaskService::new(&self.namespace, publisher, Arc::clone(&self.exit))
    }
}

/// Whether `path` is mounted on (its device differs from its parent's).
fn is_mount_point(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (
        std::fs::metadata(path),
        path.parent().map(std::fs::metadata),
    ) {
        (Ok(m), Some(Ok(p))) => m.dev() != p.dev(),
        _ => false,
    }
}

fn main() {
    containerd_shim::run::<PodShim>(RUNTIME_ID, None);
}
