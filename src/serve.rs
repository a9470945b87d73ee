//! `podvm serve`: a pod-VM driven through the Firecracker-compatible
//! control API on a Unix socket (or, with `--no-api`, started from a
//! config file alone). Reads the config file, then takes the one path
//! every VM takes ([`crate::launch`]).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::Args;
use resources::ConfigFileContents;

use crate::exit::{self, SpecSource};
use crate::jail::{self, JailArgs, Jailed};
use crate::launch::{launch, GuestRamArgs, Launch, SeccompArgs};

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

    /// Seccomp.
    #[command(flatten)]
    pub seccomp: SeccompArgs,

    /// Guest RAM.
    #[command(flatten)]
    pub guest_ram: GuestRamArgs,

    /// The jail.
    #[command(flatten)]
    pub jail: JailArgs,
}

fn read_config(path: &Path) -> Result<ConfigFileContents, String> {
    let json = std::fs::read_to_string(path)
        .map_err(|e| format!("--config-file {}: {e}", path.display()))?;
    resources::parse_config_file_contents(&json)
        .map_err(|e| format!("--config-file {}: {e}", path.display()))
}

/// `podvm serve`.
pub fn serve(args: ServeArgs, start_time: Instant) -> ExitCode {
    if args.jail.jail.is_some() {
        // Before anything is read or served: every path is the jail's.
        match jail::enter(&args.jail, !args.guest_ram.no_guest_thp) {
            Ok(Jailed::Child) => {}
            Ok(Jailed::ParentDone(code)) => return ExitCode::from(code),
            Err(e) => return exit::failed(e),
        }
    }
    let contents = match args.config_file.as_deref().map(read_config).transpose() {
        Ok(contents) => contents,
        Err(e) => return exit::usage(e),
    };
    let (spec, metrics) = match contents {
        Some(c) => {
            // The log goes where the file says before anything is logged.
            if let Some(logger) = &c.logger {
                if let Err(e) = vmm::logger::configure(logger) {
                    return exit::usage(format_args!("--config-file: {e}"));
                }
            }
            (Some(c.spec), c.metrics)
        }
        None => (None, None),
    };
    // --no-api: clap requires --config-file with it; the VM runs in the
    // same loop as with the API, only nobody can send it requests.
    launch(Launch {
        api_sock: args.api_sock.as_deref(),
        id: args.id,
        spec,
        restore: None,
        source: SpecSource::ConfigFile,
        metrics,
        start_time,
        seccomp: &args.seccomp,
        guest_ram: &args.guest_ram,
    })
}
