//! `podvm serve`: a pod-VM driven through the Firecracker-compatible
//! control API on a Unix socket (or, with `--no-api`, started from a
//! config file alone).
//!
//! The API thread (`api` crate) parses requests and hands each one, as a
//! typed action with its own reply channel, to the VMM thread (this one),
//! which answers between device events (`vmm::controller`).

use std::io;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use clap::Args;
use resources::action::MetricsConfig;
use resources::action::{ActionError, ActionRequest, ActionResult, Reply, VmmAction};
use resources::{ConfigFileContents, SerialConfig, VmSpec};
use vmm::controller::{serve_actions, ActionQueue, Controller, PendingConfig};
use vmm::{BuildContext, ConsoleInput, EventLoop, Vmm};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::cli::{build_error_message, report_exit, SpecSource};
use crate::{terminal, EXIT_FAILURE, EXIT_USAGE};

/// Flags of `podvm serve` (Firecracker's, with the same meaning).
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Serve the control API on this Unix socket. A stale socket file is
    /// replaced; one a live process is serving on is refused. The socket is
    /// removed on exit.
    #[arg(long, value_name = "PATH", required_unless_present = "no_api")]
    pub api_sock: Option<PathBuf>,

    /// A Firecracker-format JSON file describing the VM; with it, the VM
    /// starts at once (and the API, if served, drives it from there).
    #[arg(long, value_name = "FILE", required_if_eq("no_api", "true"))]
    pub config_file: Option<PathBuf>,

    /// Do not serve the control API (needs --config-file).
    #[arg(long, conflicts_with = "api_sock")]
    pub no_api: bool,

    /// The instance id reported by `GET /`.
    #[arg(long, value_name = "ID", default_value = "anonymous-instance")]
    pub id: String,
}

fn read_config(path: &Path) -> Result<ConfigFileContents, String> {
    let json = std::fs::read_to_string(path)
        .map_err(|e| format!("--config-file {}: {e}", path.display()))?;
    resources::parse_config_file_contents(&json)
        .map_err(|e| format!("--config-file {}: {e}", path.display()))
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

    fn submit(&self, action: VmmAction, reply: Reply) -> Result<(), (VmmAction, Reply)> {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(ActionRequest { action, reply })
            .map_err(|e| (e.0.action, e.0.reply))?;
        // A failed kick leaves the request queued for a VMM thread that
        // is stopping: it drops the reply, which answers "stopping".
        let _ = self.kick.write(1);
        Ok(())
    }
}

/// `podvm serve`.
pub fn serve(args: ServeArgs, start_time: Instant) -> ExitCode {
    let contents = match args.config_file.as_deref().map(read_config).transpose() {
        Ok(contents) => contents,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let (spec, metrics) = match contents {
        Some(c) => {
            // The log goes where the file says before anything is logged.
            if let Some(logger) = &c.logger {
                if let Err(e) = vmm::logger::configure(logger) {
                    eprintln!("error: --config-file: {e}");
                    return ExitCode::from(EXIT_USAGE);
                }
            }
            (Some(c.spec), c.metrics)
        }
        None => (None, None),
    };
    // --no-api: clap requires --config-file with it; the VM runs in the
    // same loop as with the API, only nobody can send it requests.
    serve_api(
        args.api_sock.as_deref(),
        args.id,
        spec,
        SpecSource::ConfigFile,
        metrics,
        start_time,
    )
}

/// Serves the control API on `sock` (none: `--no-api`) for instance `id`;
/// a `spec` (from a config file or `run`'s flags) is built and started at
/// once, and `metrics` (a config file's) are written from the start.
pub fn serve_api(
    sock: Option<&Path>,
    id: String,
    spec: Option<VmSpec>,
    source: SpecSource,
    metrics: Option<MetricsConfig>,
    start_time: Instant,
) -> ExitCode {
    // The event loop first: it blocks the stop signals for every thread
    // created after it (the API thread, the vCPUs).
    let event_loop = match EventLoop::new() {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    // A VM from the config file is built before the API answers anything,
    // so its configuration errors end podvm like `run`'s do.
    let prebuilt = match &spec {
        Some(spec) => match Vmm::build(spec, &BuildContext { start_time }) {
            Ok(vmm) => Some(vmm),
            Err(e) => {
                let msg = match source {
                    SpecSource::Flags => build_error_message(&e),
                    SpecSource::ConfigFile => e.to_string(),
                };
                eprintln!("error: {msg}");
                return ExitCode::from(if e.is_config_error() {
                    EXIT_USAGE
                } else {
                    EXIT_FAILURE
                });
            }
        },
        None => None,
    };
    let bound = match sock {
        Some(sock) => match bind_socket(sock) {
            Ok(l) => Some((l, SocketFile(sock.to_path_buf()))),
            Err(e) => {
                eprintln!("error: --api-sock {}: {e}", sock.display());
                return ExitCode::from(EXIT_USAGE);
            }
        },
        None => None,
    };
    let (listener, _socket_file) = bound.unzip();
    let kick = match EventFd::new(EFD_NONBLOCK).and_then(|k| Ok((k.try_clone()?, k))) {
        Ok(pair) => pair,
        Err(e) => {
            eprintln!("error: cannot create the API's eventfd: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let (requests_tx, requests_rx) = channel();
    let sender = Arc::new(ChannelSender {
        requests: Mutex::new(requests_tx),
        kick: kick.0,
    });
    let server = match listener.map(|l| api::start_server(l, sender)).transpose() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot start the API server: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };

    // Input is typed into the console only when the console is stdout.
    let console_on_stdout = spec
        .as_ref()
        .is_none_or(|s| s.serial == SerialConfig::Stdout);
    let input = if console_on_stdout {
        ConsoleInput::stdin().ok()
    } else {
        None
    };
    if input.as_ref().is_some_and(|i| i.tty) {
        terminal::enter_raw_mode();
    }
    let config = spec.map(PendingConfig::from_spec).unwrap_or_default();
    let mut controller = Controller::new(id, config, start_time, input);
    if let Some(metrics) = &metrics {
        if let Err(e) = controller.set_metrics(metrics) {
            terminal::restore();
            eprintln!("error: --config-file: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    }
    let queue = ActionQueue {
        requests: requests_rx,
        kick: kick.1,
    };
    let result = serve_actions(controller, queue, event_loop, prebuilt);
    terminal::restore();
    // Let the API thread finish the replies it is writing (Shutdown's 204).
    if let Some(server) = server {
        server.shutdown();
    }
    report_exit(result)
}
