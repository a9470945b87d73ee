//! The `podvm` command: run a pod-VM in the foreground (from flags), serve
//! one's control API (from the API, a Firecracker config file, or both),
//! talk to a running one, check the host.

mod cli;
mod ctl;
mod doctor;
mod exit;
mod jail;
mod launch;
mod run;
mod serve;
mod terminal;

use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;

use cli::{Cli, Command};

fn main() -> ExitCode {
    let start_time = Instant::now();
    // Before any thread exists (see its docs: a seccomp filter would
    // otherwise end podvm when a thread's heap shrinks).
    vmm::seccomp::use_one_malloc_arena();
    let cli = Cli::parse();
    vmm::logger::init(cli.log_level.into());
    // A panic (the release build aborts on one) must not leave the
    // terminal in raw mode.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        terminal::restore();
        default_hook(info);
    }));
    match cli.command {
        Command::Run(args) => run::run(args, start_time),
        Command::Serve(args) => serve::serve(args, start_time),
        Command::Ctl(args) => ctl::run(args),
        Command::Doctor => doctor::run(),
    }
}
