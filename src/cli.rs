//! The command line: the subcommands and their global flags. Each
//! subcommand's own flags live with it (`run`, `serve`, `ctl`).

use clap::{Parser, Subcommand, ValueEnum};

/// podvm: a lightweight micro-VM monitor for native pods.
///
/// Each pod runs in its own small KVM virtual machine. `podvm run` boots one
/// in the foreground with its serial console on the terminal, `podvm serve`
/// boots one from a Firecracker configuration file; `podvm doctor` checks
/// whether this host can run pod-VMs and how fast.
#[derive(Debug, Parser)]
#[command(name = "podvm", version, about, long_about)]
pub struct Cli {
    /// How much podvm logs on standard error.
    #[arg(long, global = true, value_enum, default_value_t = LogLevel::Warn)]
    pub log_level: LogLevel,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Boot a pod-VM in the foreground, its serial console on this terminal.
    ///
    /// The VM ends when the guest resets or powers off (exit code 0), when it
    /// triple-faults (3), or when KVM cannot run one of its instructions (4).
    /// A bad flag or configuration exits with 2 before any VM is created;
    /// a system call outside a thread's seccomp filter ends podvm with 148;
    /// other failures exit with 1. Type Ctrl-A then x to end the VM from the
    /// console.
    Run(crate::run::RunArgs),
    /// Serve a pod-VM's control API on a Unix socket (Firecracker's API).
    ///
    /// As `firecracker --api-sock PATH [--config-file FILE] [--id ID]`, or
    /// `--no-api --config-file FILE`: the VM is configured and started
    /// through the API, or from the config file at once (`boot-source`,
    /// `machine-config`, `drives`, `network-interfaces`, `entropy`,
    /// `logger`, `metrics`). The console is on standard output. Exit codes as for `run`; a `Shutdown`
    /// action exits 0.
    Serve(crate::serve::ServeArgs),
    /// Send one request to a running podvm's control API and print the
    /// JSON answer; an error exits 1 with its fault message.
    Ctl(crate::ctl::CtlArgs),
    /// Check whether this host can run pod-VMs: /dev/kvm, its capabilities,
    /// /dev/net/tun, and whether guests run hardware-accelerated or under
    /// KVM's instruction emulator.
    Doctor,
}

/// Log levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    /// Only errors.
    Error,
    /// Errors and warnings.
    Warn,
    /// Also progress, such as the guest's boot time.
    Info,
    /// Everything.
    Debug,
}

impl From<LogLevel> for log::LevelFilter {
    fn from(l: LogLevel) -> Self {
        match l {
            LogLevel::Error => log::LevelFilter::Error,
            LogLevel::Warn => log::LevelFilter::Warn,
            LogLevel::Info => log::LevelFilter::Info,
            LogLevel::Debug => log::LevelFilter::Debug,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("podvm").chain(args.iter().copied()))
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn bad_flags_are_usage_errors() {
        for args in [
            &["run"][..],
            &["run", "--kernel", "/k", "--vcpus", "300"],
            &["run", "--kernel", "/k", "--vcpus", "-1"],
            &["run", "--kernel", "/k", "--memory", "lots"],
            &["run", "--kernel", "/k", "--serial", "stderr"],
            &["run", "--kernel", "/k", "--bogus"],
            &["--log-level", "loud", "run", "--kernel", "/k"],
            &["fly"],
        ] {
            let err = parse(args).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{args:?}");
        }
    }
}
