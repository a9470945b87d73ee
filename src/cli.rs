//! Command-line parsing and the `run` command.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Args, Parser, Subcommand, ValueEnum};
use resources::{
    BootSourceConfig, DriveConfig, MachineConfig, NetConfig, SerialConfig, SpecError, VmSpec,
    DEFAULT_KERNEL_CMDLINE,
};
use vmm::{BuildContext, BuildError, Vmm};

use crate::{terminal, EXIT_FAILURE, EXIT_USAGE};

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
    /// other failures exit with 1. Type Ctrl-A then x to end the VM from the
    /// console.
    Run(RunArgs),
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

/// Flags of `podvm run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Kernel image: an uncompressed ELF vmlinux (entered through its PVH
    /// entry point when it has one) or a bzImage.
    #[arg(long, value_name = "PATH")]
    pub kernel: PathBuf,

    /// Initial ramdisk, loaded at the top of guest memory below 3.25 GiB.
    #[arg(long, value_name = "PATH")]
    pub initrd: Option<PathBuf>,

    /// Kernel command line (at most 2047 bytes).
    #[arg(long, value_name = "ARGS", default_value = DEFAULT_KERNEL_CMDLINE)]
    pub cmdline: String,

    /// Number of vCPUs (1 up to what this host's KVM allows, at most 254).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub vcpus: u8,

    /// Guest memory in MiB (at least 16).
    #[arg(long, value_name = "MIB", default_value_t = 128)]
    pub memory: usize,

    /// Where the serial console goes: `stdout` (and standard input is typed
    /// into it), `file=PATH`, or `off`.
    #[arg(long, value_name = "DEST", default_value = "stdout")]
    pub serial: SerialConfig,

    /// A virtio block device backed by a raw image file (repeatable):
    /// `path=PATH[,ro][,root][,id=ID]`. `ro` makes it read-only, `root`
    /// makes it the root filesystem (`/dev/vda`, `root=/dev/vda` on the
    /// command line); `id` (default `diskN`, up to 64 characters) is what
    /// the guest reads as the device's serial (GET_ID returns its first 20
    /// bytes).
    #[arg(long = "disk", value_name = "SPEC")]
    pub disks: Vec<String>,

    /// A virtio network device backed by a host tap device (repeatable):
    /// `tap=NAME[,mac=MAC][,id=ID]`. The tap must exist or be creatable by
    /// this user; `mac` defaults to a random locally administered address,
    /// `id` to `ethN`.
    #[arg(long = "net", value_name = "SPEC")]
    pub nets: Vec<String>,

    /// A virtio entropy device fed from the host's getrandom.
    #[arg(long)]
    pub rng: bool,

    /// Also serve the control API on this Unix socket while the VM runs
    /// (pause, resume, Shutdown, state; as `podvm serve`).
    #[arg(long, value_name = "PATH")]
    pub api_sock: Option<PathBuf>,
}

/// Splits `key=value,flag,...` into (key, optional value) pairs.
fn options(spec: &str) -> impl Iterator<Item = (&str, Option<&str>)> {
    spec.split(',').map(|opt| match opt.split_once('=') {
        Some((k, v)) => (k, Some(v)),
        None => (opt, None),
    })
}

/// Parses one `--disk` value; `index` numbers the default id.
pub fn parse_disk(spec: &str, index: usize) -> Result<DriveConfig, String> {
    let err = |why: String| format!("--disk {spec}: {why}");
    let mut drive = DriveConfig {
        drive_id: format!("disk{index}"),
        path_on_host: PathBuf::new(),
        is_root_device: false,
        is_read_only: false,
        ..Default::default()
    };
    for (key, value) in options(spec) {
        match (key, value) {
            ("path", Some(p)) if !p.is_empty() => drive.path_on_host = p.into(),
            ("id", Some(id)) => drive.drive_id = id.to_string(),
            ("ro", None) => drive.is_read_only = true,
            ("root", None) => drive.is_root_device = true,
            _ => {
                return Err(err(format!(
                    "unknown or malformed option {:?} (expected path=PATH, id=ID, ro, root)",
                    value.map_or(key.to_string(), |v| format!("{key}={v}"))
                )))
            }
        }
    }
    if drive.path_on_host.as_os_str().is_empty() {
        return Err(err("path=PATH is required".into()));
    }
    Ok(drive)
}

/// Parses one `--net` value; `index` numbers the default id.
pub fn parse_net(spec: &str, index: usize) -> Result<NetConfig, String> {
    let err = |why: String| format!("--net {spec}: {why}");
    let mut net = NetConfig {
        iface_id: format!("eth{index}"),
        host_dev_name: String::new(),
        guest_mac: None,
    };
    for (key, value) in options(spec) {
        match (key, value) {
            ("tap", Some(t)) if !t.is_empty() => net.host_dev_name = t.to_string(),
            ("id", Some(id)) => net.iface_id = id.to_string(),
            ("mac", Some(m)) => net.guest_mac = Some(m.parse().map_err(|e| err(format!("{e}")))?),
            _ => {
                return Err(err(format!(
                    "unknown or malformed option {:?} (expected tap=NAME, mac=MAC, id=ID)",
                    value.map_or(key.to_string(), |v| format!("{key}={v}"))
                )))
            }
        }
    }
    if net.host_dev_name.is_empty() {
        return Err(err("tap=NAME is required".into()));
    }
    Ok(net)
}

impl RunArgs {
    /// The VM spec these flags describe, or a one-line error naming the
    /// flag at fault.
    pub fn spec(&self) -> Result<VmSpec, String> {
        let drives = self
            .disks
            .iter()
            .enumerate()
            .map(|(i, d)| parse_disk(d, i))
            .collect::<Result<_, _>>()?;
        let net = self
            .nets
            .iter()
            .enumerate()
            .map(|(i, n)| parse_net(n, i))
            .collect::<Result<_, _>>()?;
        Ok(VmSpec {
            machine: MachineConfig {
                vcpu_count: self.vcpus,
                mem_size_mib: self.memory,
                smt: false,
            },
            boot_source: BootSourceConfig {
                kernel_image_path: self.kernel.clone(),
                boot_args: Some(self.cmdline.clone()),
                initrd_path: self.initrd.clone(),
            },
            serial: self.serial.clone(),
            drives,
            net,
            entropy: self.rng,
        })
    }
}

/// The flag that sets a spec field, for error messages.
fn flag_of(e: &SpecError) -> &'static str {
    match e.field() {
        "vcpu_count" | "smt" => "--vcpus",
        "mem_size_mib" => "--memory",
        "drives" => "--disk",
        "network-interfaces" => "--net",
        "devices" => "--disk/--net/--rng",
        _ => "--cmdline",
    }
}

/// The one-line message for a build error.
pub fn build_error_message(e: &BuildError) -> String {
    match e {
        BuildError::Spec(s) => format!("{}: {s}", flag_of(s)),
        other => other.to_string(),
    }
}

/// `podvm run`.
pub fn run(args: RunArgs, start_time: Instant) -> ExitCode {
    match args.spec() {
        Ok(spec) => match &args.api_sock {
            Some(sock) => crate::serve::serve_api(
                Some(sock),
                "anonymous-instance".into(),
                Some(spec),
                SpecSource::Flags,
                None,
                start_time,
            ),
            None => run_spec(spec, SpecSource::Flags, start_time),
        },
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// Reports how a VM ended on standard error and maps it to the exit code.
pub fn report_exit(result: Result<vmm::VmExit, vmm::RunError>) -> ExitCode {
    match result {
        Ok(exit) => {
            let code = exit.exit_code();
            if code == 0 {
                log::info!("{exit}");
            } else if matches!(exit, vmm::VmExit::Signal(_)) {
                eprintln!("podvm: {exit}");
            } else {
                eprintln!("error: {exit}");
            }
            ExitCode::from(code as u8)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// Where a spec came from, for naming what is at fault in errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpecSource {
    /// `podvm run` flags.
    Flags,
    /// A configuration file (whose messages name fields, not flags).
    ConfigFile,
}

/// Builds and runs the VM `spec` describes in the foreground.
pub fn run_spec(spec: VmSpec, source: SpecSource, start_time: Instant) -> ExitCode {
    let vmm = match Vmm::build(&spec, &BuildContext { start_time }) {
        Ok(vmm) => vmm,
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
    };
    let input = match spec.serial {
        SerialConfig::Stdout => match vmm::ConsoleInput::stdin() {
            Ok(input) => Some(input),
            Err(e) => {
                log::warn!("no console input: cannot open standard input: {e}");
                None
            }
        },
        _ => None,
    };
    if input.as_ref().is_some_and(|i| i.tty) {
        terminal::enter_raw_mode();
    }
    let result = vmm.run(input);
    terminal::restore();
    report_exit(result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("podvm").chain(args.iter().copied()))
    }

    fn run_args(args: &[&str]) -> RunArgs {
        match parse(args).unwrap().command {
            Command::Run(r) => r,
            c => panic!("not run: {c:?}"),
        }
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_defaults() {
        let r = run_args(&["run", "--kernel", "/k"]);
        let spec = r.spec().unwrap();
        assert_eq!(spec.machine, MachineConfig::default());
        assert_eq!(spec.boot_source.cmdline(), DEFAULT_KERNEL_CMDLINE);
        assert_eq!(spec.boot_source.initrd_path, None);
        assert_eq!(spec.serial, SerialConfig::Stdout);
    }

    #[test]
    fn run_flags() {
        let r = run_args(&[
            "run",
            "--kernel",
            "/k",
            "--initrd",
            "/i",
            "--cmdline",
            "quiet",
            "--vcpus",
            "4",
            "--memory",
            "512",
            "--serial",
            "file=/tmp/s",
        ]);
        let spec = r.spec().unwrap();
        assert_eq!(spec.machine.vcpu_count, 4);
        assert_eq!(spec.machine.mem_size_mib, 512);
        assert_eq!(spec.boot_source.cmdline(), "quiet");
        assert_eq!(spec.boot_source.initrd_path, Some(PathBuf::from("/i")));
        assert_eq!(spec.serial, SerialConfig::File("/tmp/s".into()));
        let r = run_args(&[
            "--log-level",
            "debug",
            "run",
            "--kernel",
            "/k",
            "--serial",
            "off",
        ]);
        assert_eq!(r.serial, SerialConfig::Off);
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

    #[test]
    fn device_flags() {
        let r = run_args(&[
            "run",
            "--kernel",
            "/k",
            "--disk",
            "path=/a.img,root,ro",
            "--disk",
            "path=/b.img,id=data",
            "--net",
            "tap=tap0,mac=06:00:00:00:00:01",
            "--net",
            "tap=tap1,id=lan",
            "--rng",
        ]);
        let spec = r.spec().unwrap();
        assert_eq!(spec.drives.len(), 2);
        assert_eq!(spec.drives[0].drive_id, "disk0");
        assert!(spec.drives[0].is_root_device && spec.drives[0].is_read_only);
        assert_eq!(spec.drives[1].drive_id, "data");
        assert_eq!(spec.drives[1].path_on_host, PathBuf::from("/b.img"));
        assert_eq!(spec.net[0].iface_id, "eth0");
        assert_eq!(
            spec.net[0].guest_mac.unwrap().to_string(),
            "06:00:00:00:00:01"
        );
        assert_eq!(
            (
                spec.net[1].iface_id.as_str(),
                spec.net[1].host_dev_name.as_str()
            ),
            ("lan", "tap1")
        );
        assert!(spec.entropy);
    }

    #[test]
    fn bad_device_values_name_the_flag() {
        let cases = [
            ("--disk", "ro", "--disk ro: path=PATH is required"),
            (
                "--disk",
                "path=/a,bogus",
                "--disk path=/a,bogus: unknown or malformed option \"bogus\"",
            ),
            (
                "--disk",
                "path=",
                "--disk path=: unknown or malformed option \"path=\"",
            ),
            (
                "--net",
                "mac=06:00:00:00:00:01",
                "--net mac=06:00:00:00:00:01: tap=NAME is required",
            ),
            (
                "--net",
                "tap=t0,mac=zz",
                "--net tap=t0,mac=zz: invalid MAC address \"zz\"",
            ),
            (
                "--net",
                "tap=t0,speed=9",
                "--net tap=t0,speed=9: unknown or malformed option \"speed=9\"",
            ),
        ];
        for (flag, value, want) in cases {
            let r = run_args(&["run", "--kernel", "/k", flag, value]);
            let err = r.spec().unwrap_err();
            assert!(err.starts_with(want), "{err}");
        }
    }

    #[test]
    fn spec_errors_name_the_flag() {
        let e = BuildError::Spec(SpecError::ZeroVcpus);
        assert_eq!(
            build_error_message(&e),
            "--vcpus: vcpu_count must be at least 1"
        );
        let e = BuildError::Spec(SpecError::MemoryTooSmall(8));
        assert!(build_error_message(&e).starts_with("--memory: "));
        let e = BuildError::Spec(SpecError::CmdlineTooLong(5000));
        assert!(build_error_message(&e).starts_with("--cmdline: "));
        assert!(e.is_config_error());
    }
}
