//! How podvm ends: exit codes, and the one line on standard error that
//! says why. Both `run` and `serve` (and the API's `Shutdown`) end here.

use std::process::ExitCode;

use resources::SpecError;
use vmm::{BuildError, RunError, VmExit};

/// Exit code for a usage or configuration error.
pub const EXIT_USAGE: u8 = 2;
/// Exit code for a runtime failure.
pub const EXIT_FAILURE: u8 = 1;

/// Where a spec came from, for naming what is at fault in errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpecSource {
    /// `podvm run` flags.
    Flags,
    /// A configuration file (whose messages name fields, not flags).
    ConfigFile,
}

/// The flag that sets a spec field, for error messages.
fn flag_of(e: &SpecError) -> &'static str {
    match e.field() {
        "vcpu_count" | "smt" => "--vcpus",
        "mem_size_mib" => "--memory",
        "drives" => "--disk",
        "network-interfaces" => "--net",
        "vsock" => "--vsock",
        "devices" => "--disk/--net/--rng/--vsock",
        _ => "--cmdline",
    }
}

/// The one-line message for a build error, naming the flag at fault when
/// the spec came from flags.
pub fn build_error_message(e: &BuildError, source: SpecSource) -> String {
    match (e, source) {
        (BuildError::Spec(s), SpecSource::Flags) => format!("{}: {s}", flag_of(s)),
        (other, _) => other.to_string(),
    }
}

/// Reports a VM that could not be built and maps it to the exit code: 2
/// when the configuration is at fault, 1 when the host is.
pub fn build_failed(e: &BuildError, source: SpecSource) -> ExitCode {
    eprintln!("error: {}", build_error_message(e, source));
    ExitCode::from(if e.is_config_error() {
        EXIT_USAGE
    } else {
        EXIT_FAILURE
    })
}

/// Reports a failure before any VM ran (`what` is the message) and exits 1.
pub fn failed(what: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {what}");
    ExitCode::from(EXIT_FAILURE)
}

/// Reports a usage or configuration error and exits 2.
pub fn usage(what: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {what}");
    ExitCode::from(EXIT_USAGE)
}

/// Reports how a VM ended on standard error and maps it to the exit code.
pub fn report_exit(result: Result<VmExit, RunError>) -> ExitCode {
    match result {
        Ok(exit) => {
            let code = exit.exit_code();
            if code == 0 {
                log::info!("{exit}");
            } else if matches!(exit, VmExit::Signal(_)) {
                eprintln!("podvm: {exit}");
            } else {
                eprintln!("error: {exit}");
            }
            ExitCode::from(code as u8)
        }
        Err(e) => failed(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_errors_name_the_flag_only_for_flags() {
        let e = BuildError::Spec(SpecError::ZeroVcpus);
        assert_eq!(
            build_error_message(&e, SpecSource::Flags),
            "--vcpus: vcpu_count must be at least 1"
        );
        assert_eq!(
            build_error_message(&e, SpecSource::ConfigFile),
            "vcpu_count must be at least 1"
        );
        let e = BuildError::Spec(SpecError::MemoryTooSmall(8));
        assert!(build_error_message(&e, SpecSource::Flags).starts_with("--memory: "));
        let e = BuildError::Spec(SpecError::CmdlineTooLong(5000));
        assert!(build_error_message(&e, SpecSource::Flags).starts_with("--cmdline: "));
        assert!(e.is_config_error());
    }
}
