//! The `podvm` command: run a pod-VM in the foreground (from flags or a
//! Firecracker config file), check the host.

mod cli;
mod ctl;
mod doctor;
mod serve;
mod terminal;

use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;

use cli::{Cli, Command};

/// Exit code for a usage or configuration error.
pub const EXIT_USAGE: u8 = 2;
/// Exit code for a runtime failure.
pub const EXIT_FAILURE: u8 = 1;

fn main() -> ExitCode {
    let start_time = Instant::now();
    let cli = Cli::parse();
    vmm::logger::init(cli.log_level.into());
    match cli.command {
        Command::Run(args) => cli::run(args, start_time),
        Command::Serve(args) => serve::serve(args, start_time),
        Command::Ctl(args) => ctl::run(args),
        Command::Doctor => doctor::run(),
    }
}
