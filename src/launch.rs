//! The one path from a configuration to a running pod-VM, shared by
//! `podvm run` (flags) and `podvm serve` (the API, a config file, or
//! both): one event loop, one way to build the VM, one console set-up, one
//! way to report how it ended.
//!
//! The API thread (`api` crate) parses requests and hands each one, as a
//! typed action with its own reply channel, to the VMM thread (this one),
//! which answers between device events (`vmm::controller`). Without an API
//! socket (`run` without `--api-sock`, `serve --no-api`) nobody sends
//! actions, and the same loop only runs the VM.

use std::io;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use clap::Args;
use resources::action::{
    ActionError, ActionRequest, ActionResult, MetricsConfig, Reply, VmmAction,
};
use resources::{SerialConfig, VmSpec};
use vmm::controller::{serve_actions, ActionQueue, Controller, PendingConfig};
use vmm::seccomp::{self, SeccompError, SeccompFilters, ThreadKind};
use vmm::snapshot::{read_snapshot, LoadError, LoadOptions};
use vmm::{BuildContext, ConsoleInput, EventLoop, Vmm};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::exit::{self, SpecSource};
use crate::terminal;

/// The seccomp flags of `run` and `serve` (Firecracker's).
#[derive(Debug, Args)]
pub struct SeccompArgs {
    /// Run without seccomp filters: every thread may make any system call.
    #[arg(long, conflicts_with = "seccomp_filter")]
    pub no_seccomp: bool,

    /// Use the seccomp filters of this file instead of podvm's own: a
    /// seccompiler JSON file (the format of Firecracker's
    /// resources/seccomp/*.json) with a "vmm", an "api" and a "vcpu" filter.
    #[arg(long, value_name = "FILE")]
    pub seccomp_filter: Option<PathBuf>,
}

impl SeccompArgs {
    /// The filters these flags ask for (none with `--no-seccomp`).
    pub fn filters(&self) -> Result<Option<SeccompFilters>, SeccompError> {
        if self.no_seccomp {
            return Ok(None);
        }
        match &self.seccomp_filter {
            Some(path) => SeccompFilters::from_json_file(path).map(Some),
            None => SeccompFilters::builtin().map(Some),
        }
    }
}

/// How `run` and `serve` back guest RAM on base pages.
#[derive(Debug, Args)]
pub struct GuestRamArgs {
    /// Back guest RAM with 4 KiB pages only, no transparent huge pages:
    /// the smallest host footprint for guests that touch their memory
    /// sparsely (an idle tiny guest: 2 MiB less), at the cost of slower
    /// guests and teardown. `huge_pages: "2M"` is unaffected.
    #[arg(long)]
    pub no_guest_thp: bool,
}

/// A snapshot to restore (`podvm run --restore`).
pub struct Restore {
    /// The state file.
    pub state: PathBuf,
    /// The memory file.
    pub mem: PathBuf,
    /// Tap overrides.
    pub options: LoadOptions,
}

/// What to launch.
pub struct Launch<'a> {
    /// Serve the control API on this socket (none: no API).
    pub api_sock: Option<&'a Path>,
    /// The instance id `GET /` reports.
    pub id: String,
    /// A VM to build and start at once (flags or a config file); without
    /// one, the API configures and starts it.
    pub spec: Option<VmSpec>,
    /// A snapshot to restore and run at once, instead of `spec`.
    pub restore: Option<Restore>,
    /// Where `spec` came from, for naming what is at fault.
    pub source: SpecSource,
    /// Where metrics go from the start (a config file's `metrics`).
    pub metrics: Option<MetricsConfig>,
    /// When the process started (the boot timer's reference).
    pub start_time: Instant,
    /// The seccomp flags.
    pub seccomp: &'a SeccompArgs,
    /// How guest RAM is backed.
    pub guest_ram: &'a GuestRamArgs,
}

/// Builds the VM `spec` describes; a failure is reported (naming the flag
/// or field at fault) and becomes the exit code.
pub fn build_vm(spec: &VmSpec, source: SpecSource, start_time: Instant) -> Result<Vmm, ExitCode> {
    Vmm::build(spec, &BuildContext { start_time }).map_err(|e| exit::build_failed(&e, source))
}

/// Restores the VM of `r`'s snapshot; returns it and its configuration (a
/// failure is reported and becomes the exit code).
fn restore_vm(r: &Restore, start_time: Instant) -> Result<(Vmm, VmSpec), ExitCode> {
    let fail = |e: LoadError| {
        let code = if e.is_config_error() {
            exit::EXIT_USAGE
        } else {
            exit::EXIT_FAILURE
        };
        eprintln!("error: --restore {}: {e}", r.state.display());
        ExitCode::from(code)
    };
    let payload = read_snapshot(&r.state).map_err(fail)?;
    let mut spec = payload.spec.clone();
    for (iface, tap) in &r.options.network_overrides {
        if let Some(n) = spec.net.iter_mut().find(|n| &n.iface_id == iface) {
            n.host_dev_name = tap.clone();
        }
    }
    let vmm =
        Vmm::restore(payload, &r.mem, &r.options, &BuildContext { start_time }).map_err(fail)?;
    Ok((vmm, spec))
}

/// The console's input: standard input, when the console is on standard
/// output (`serial` is `None` for a VM the API will configure, whose
/// console is always there). A standard input that cannot be used is
/// logged, and the console has no input.
pub fn console_input(serial: Option<&SerialConfig>) -> Option<ConsoleInput> {
    if serial.is_some_and(|s| *s != SerialConfig::Stdout) {
        return None;
    }
    match ConsoleInput::stdin() {
        Ok(input) => Some(input),
        Err(e) => {
            log::warn!("no console input: cannot open standard input: {e}");
            None
        }
    }
}

/// Runs a pod-VM as `launch` says, until it ends; the process's exit code.
pub fn launch(launch: Launch<'_>) -> ExitCode {
    let Launch {
        api_sock,
        id,
        mut spec,
        restore,
        source,
        metrics,
        start_time,
        seccomp,
        guest_ram,
    } = launch;
    let filters = match seccomp.filters() {
        Ok(f) => f,
        Err(e) => return exit::usage(e),
    };
    // Before any filter (and in a jail, already done before it dropped
    // its privileges).
    let backing = vmm::memory::prepare_ram_backing(None, !guest_ram.no_guest_thp);
    log::debug!("guest RAM on base pages: {backing:?}");
    // The event loop first: it blocks the stop signals for every thread
    // created after it (the API thread, the vCPUs).
    let event_loop = match EventLoop::new() {
        Ok(l) => l,
        Err(e) => return exit::failed(e),
    };
    // A VM from flags or a config file is built before the API answers
    // anything, so its configuration errors end podvm the same way.
    let prebuilt = match (&spec, restore) {
        (Some(spec), _) => match build_vm(spec, source, start_time) {
            Ok(vmm) => Some(vmm),
            Err(code) => return code,
        },
        (None, Some(r)) => match restore_vm(&r, start_time) {
            Ok((vmm, restored)) => {
                spec = Some(restored);
                Some(vmm)
            }
            Err(code) => return code,
        },
        (None, None) => None,
    };
    let (requests_tx, requests_rx) = channel();
    let kick = match EventFd::new(EFD_NONBLOCK).and_then(|k| Ok((k.try_clone()?, k))) {
        Ok(pair) => pair,
        Err(e) => return exit::failed(format_args!("cannot create the API's eventfd: {e}")),
    };
    let server = match api_sock {
        Some(sock) => match ApiSocket::start(sock, requests_tx, kick.0, filters.clone()) {
            Ok(server) => Some(server),
            Err(code) => return code,
        },
        None => None,
    };

    let input = console_input(spec.as_ref().map(|s| &s.serial));
    if input.as_ref().is_some_and(|i| i.tty) {
        terminal::enter_raw_mode();
    }
    let config = spec.map(PendingConfig::from_spec).unwrap_or_default();
    let mut controller = Controller::new(id, config, start_time, input, filters.clone());
    if let Some(metrics) = &metrics {
        if let Err(e) = controller.set_metrics(metrics) {
            terminal::restore();
            return exit::usage(format_args!("--config-file: {e}"));
        }
    }
    // From here on the VMM thread runs under its filter, before any vCPU
    // (they inherit it and add their own) enters the guest.
    if let Err(e) = seccomp::apply(filters.as_ref(), ThreadKind::Vmm, 0) {
        terminal::restore();
        return exit::failed(e);
    }
    let queue = ActionQueue {
        requests: requests_rx,
        kick: kick.1,
    };
    let result = serve_actions(controller, queue, event_loop, prebuilt);
    terminal::restore();
    // Let the API thread finish the replies it is writing (Shutdown's 204).
    if let Some(server) = server {
        server.stop();
    }
    exit::report_exit(result)
}

/// The API server on its socket; the socket file goes when it stops.
struct ApiSocket {
    server: api::ApiServer,
    _file: SocketFile,
}

impl ApiSocket {
    /// Binds `sock` and starts the API thread, which installs its filter
    /// of `filters`, sends requests on `requests` and kicks the event loop
    /// with `kick`.
    fn start(
        sock: &Path,
        requests: Sender<ActionRequest>,
        kick: EventFd,
        filters: Option<SeccompFilters>,
    ) -> Result<ApiSocket, ExitCode> {
        let listener = bind_socket(sock)
            .map_err(|e| exit::usage(format_args!("--api-sock {}: {e}", sock.display())))?;
        let file = SocketFile(sock.to_path_buf());
        let sender = Arc::new(ChannelSender {
            requests: Mutex::new(requests),
            kick,
        });
        let init =
            move || seccomp::apply(filters.as_ref(), ThreadKind::Api, 0).map_err(|e| e.to_string());
        let server = api::start_server_with(listener, sender, init)
            .map_err(|e| exit::failed(format_args!("cannot start the API server: {e}")))?;
        Ok(ApiSocket {
            server,
            _file: file,
        })
    }

    /// Stops the API thread once the replies it is writing are out.
    fn stop(self) {
        self.server.shutdown();
    }
}

/// Binds the API socket, replacing a stale socket file but never one a
/// live process is serving on.
fn bind_socket(path: &Path) -> io::Result<UnixListener> {
    match UnixListener::bind(path) {
        Ok(l) => Ok(l),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
            if UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    "another process is serving on it",
                ));
            }
            std::fs::remove_file(path)?;
            UnixListener::bind(path)
        }
        Err(e) => Err(e),
    }
}

/// Removes the socket file when dropped.
struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The API thread's way to the VMM thread: a channel plus an `EventFd`
/// that wakes the event loop.
struct ChannelSender {
    requests: Mutex<Sender<ActionRequest>>,
    kick: EventFd,
}

impl api::ActionSender for ChannelSender {
    fn send(&self, action: VmmAction) -> ActionResult {
        let (reply, answer) = Reply::channel();
        let gone = || ActionError("the VMM is stopping".into());
        self.submit(action, reply).map_err(|_| gone())?;
        answer.recv().unwrap_or_else(|_| Err(gone()))
    }

    /// Always takes the action: the API thread then never needs a
    /// blocking thread (which its seccomp filter could not create).
    fn submit(&self, action: VmmAction, reply: Reply) -> Result<(), (VmmAction, Reply)> {
        let sent = self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(ActionRequest { action, reply });
        match sent {
            // A failed kick leaves the request queued for a VMM thread
            // that is stopping: it drops the reply, which answers
            // "stopping".
            Ok(()) => {
                let _ = self.kick.write(1);
            }
            // The VMM thread has left its loop.
            Err(e) => {
                e.0.reply
                    .send(Err(ActionError("the VMM is stopping".into())))
            }
        }
        Ok(())
    }
}
