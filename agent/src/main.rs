//! podvm-agent: runs a pod's containers with runc and serves the agent
//! API (ttrpc) and the stdio port to the shim — over vsock inside a podvm
//! guest, or over Unix sockets in a directory as a host process ("host
//! mode", for tests and for hosts without KVM).

mod reaper;
mod rootfs;
mod runc;
mod service;
mod stdio;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use agent_protocol::transport::Transport;
use agent_protocol::{agent_ttrpc, API_PORT, STDIO_PORT};
use clap::Parser;

use crate::service::{AgentService, Mode};

/// How many ttrpc handler threads may run at once: WaitProcess holds one
/// for as long as its process lives.
const MAX_RPC_THREADS: usize = 512;

/// The podvm agent.
#[derive(Debug, Parser)]
#[command(name = "podvm-agent", version, about)]
struct Args {
    /// Where to listen: `vsock` (in a guest) or `unix:<dir>` (host mode:
    /// `<dir>/agent-<port>.sock`).
    #[arg(long, value_parser = parse_transport)]
    transport: Transport,
    /// Where bundles and runc's state are kept.
    #[arg(long, default_value = "/run/podvm-agent")]
    state_dir: PathBuf,
    /// The runc binary.
    #[arg(long, default_value = "runc")]
    runc: PathBuf,
}

fn parse_transport(s: &str) -> Result<Transport, String> {
    match s.parse::<Transport>() {
        Ok(Transport::HybridVsock(_)) => {
            Err("hvsock:<path> is the host's side; the agent listens on vsock or unix:<dir>".into())
        }
        Ok(t) => Ok(t),
        Err(e) => Err(e.to_string()),
    }
}

/// Writes `level: message` lines to standard error.
struct StderrLogger;

impl log::Log for StderrLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        // Other crates' (ttrpc's) info records only when debugging.
        let shown = record.target().starts_with("podvm_agent")
            || record.level() <= log::Level::Warn
            || log::max_level() >= log::LevelFilter::Debug;
        if self.enabled(record.metadata()) && shown {
            eprintln!(
                "{}: {}",
                record.level().as_str().to_lowercase(),
                record.args()
            );
        }
    }

    fn flush(&self) {}
}

fn run(args: Args) -> Result<(), String> {
    let mode = match args.transport {
        Transport::UnixDir(_) => Mode::Host,
        _ => Mode::Vm,
    };
    if mode == Mode::Host {
        log::warn!("podvm-agent: host mode: containers run on the host with no VM isolation");
    }
    std::fs::create_dir_all(&args.state_dir).map_err(|e| {
        format!(
            "state dir {}: cannot create it: {e}",
            args.state_dir.display()
        )
    })?;
    // runc is handed paths under it and runs in other directories.
    let state_dir = std::path::absolute(&args.state_dir)
        .map_err(|e| format!("state dir {}: {e}", args.state_dir.display()))?;

    // The order matters: be the subreaper (and reap) before any child can
    // be started, and take stdio connections before the API can name them.
    reaper::become_subreaper().map_err(|e| format!("cannot become a child subreaper: {e}"))?;
    let reaper = reaper::spawn_reaper().map_err(|e| format!("cannot start the reaper: {e}"))?;
    let stdio_listener = args.transport.listen(STDIO_PORT).map_err(|e| {
        format!(
            "{}: cannot listen on port {STDIO_PORT}: {e}",
            args.transport
        )
    })?;
    let stdio = stdio::StdioRegistry::serve(stdio_listener)
        .map_err(|e| format!("cannot start the stdio accept thread: {e}"))?;
    let runc = runc::Runc::new(args.runc.clone(), &state_dir, reaper.clone())
        .map_err(|e| format!("state dir {}: {e}", state_dir.display()))?;
    let service = AgentService::new(mode, state_dir, runc, reaper, stdio);

    let api_listener = args
        .transport
        .listen(API_PORT)
        .map_err(|e| format!("{}: cannot listen on port {API_PORT}: {e}", args.transport))?;
    let mut server = ttrpc::Server::new()
        .add_listener(api_listener.into_raw_fd())
        .map_err(|e| format!("ttrpc server: {e}"))?
        .register_service(agent_ttrpc::create_agent(Arc::new(service)))
        .set_thread_count_max(MAX_RPC_THREADS);
    server
        .start()
        .map_err(|e| format!("ttrpc server: cannot start: {e}"))?;
    log::info!(
        "podvm-agent: serving on {} ({} mode)",
        args.transport,
        mode.name()
    );
    // The server runs on its own threads; SIGTERM's default action ends us.
    loop {
        std::thread::park();
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let level = match std::env::var("PODVM_AGENT_LOG").as_deref() {
        Ok("debug") => log::LevelFilter::Debug,
        Ok("trace") => log::LevelFilter::Trace,
        _ => log::LevelFilter::Info,
    };
    if log::set_logger(&StderrLogger).is_ok() {
        log::set_max_level(level);
    }
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: podvm-agent: {e}");
            ExitCode::FAILURE
        }
    }
}
