//! `podvm run`: a pod-VM from flags, in the foreground, its serial console
//! on this terminal. Parses the flags into a spec, then takes the one path
//! every VM takes ([`crate::launch`]).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::Args;
use resources::{
    BootSourceConfig, DriveConfig, MachineConfig, NetConfig, SerialConfig, VmSpec, VsockConfig,
    DEFAULT_KERNEL_CMDLINE,
};

use crate::exit::{self, SpecSource};
use crate::launch::{launch, GuestRamArgs, Launch, Restore, SeccompArgs};
use vmm::snapshot::LoadOptions;

/// Flags of `podvm run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Kernel image: an uncompressed ELF vmlinux (entered through its PVH
    /// entry point when it has one) or a bzImage.
    #[arg(long, value_name = "PATH", required_unless_present = "restore")]
    pub kernel: Option<PathBuf>,

    /// Restore the VM of this snapshot state file (with `--mem-file`)
    /// instead of booting a kernel; it runs at once, its configuration is
    /// the snapshot's. `--net tap=NAME,id=ID` gives an interface another
    /// tap; no other VM flag goes with it.
    #[arg(
        long,
        value_name = "STATE",
        requires = "mem_file",
        conflicts_with_all = ["kernel", "initrd", "cmdline", "vcpus", "memory", "disks", "rng", "vsock"]
    )]
    pub restore: Option<PathBuf>,

    /// The snapshot's memory file (with `--restore`), mapped copy-on-write.
    #[arg(long, value_name = "MEM", requires = "restore")]
    pub mem_file: Option<PathBuf>,

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

    /// A virtio-vsock device with its host side on a Unix socket
    /// (Firecracker's hybrid vsock): `cid=N,uds=PATH`. A host process
    /// connects to PATH and writes `CONNECT <port>\n` to reach guest port
    /// <port>; a guest connection to host port P goes to `PATH_P`.
    #[arg(long, value_name = "SPEC")]
    pub vsock: Option<String>,

    /// Also serve the control API on this Unix socket while the VM runs
    /// (pause, resume, Shutdown, state; as `podvm serve`).
    #[arg(long, value_name = "PATH")]
    pub api_sock: Option<PathBuf>,

    /// Seccomp.
    #[command(flatten)]
    pub seccomp: SeccompArgs,

    /// Guest RAM.
    #[command(flatten)]
    pub guest_ram: GuestRamArgs,
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

/// Parses the `--vsock` value.
pub fn parse_vsock(spec: &str) -> Result<VsockConfig, String> {
    let err = |why: String| format!("--vsock {spec}: {why}");
    let (mut cid, mut uds) = (None, None);
    for (key, value) in options(spec) {
        match (key, value) {
            ("cid", Some(c)) => {
                cid =
                    Some(c.parse::<u32>().map_err(|_| {
                        err(format!("cid {c:?} is not a number from 3 to 4294967294"))
                    })?)
            }
            ("uds", Some(p)) if !p.is_empty() => uds = Some(PathBuf::from(p)),
            _ => {
                return Err(err(format!(
                    "unknown or malformed option {:?} (expected cid=N, uds=PATH)",
                    value.map_or(key.to_string(), |v| format!("{key}={v}"))
                )))
            }
        }
    }
    match (cid, uds) {
        (Some(guest_cid), Some(uds_path)) => Ok(VsockConfig {
            guest_cid,
            uds_path,
        }),
        (None, _) => Err(err("cid=N is required".into())),
        (_, None) => Err(err("uds=PATH is required".into())),
    }
}

/// Parses one `--net` value; `index` numbers the default id.
pub fn parse_net(spec: &str, index: usize) -> Result<NetConfig, String> {
    let err = |why: String| format!("--net {spec}: {why}");
    let mut net = NetConfig {
        iface_id: format!("eth{index}"),
        host_dev_name: String::new(),
        guest_mac: None,
        ..Default::default()
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
                track_dirty_pages: false,
                huge_pages: resources::HugePageConfig::None,
            },
            boot_source: BootSourceConfig {
                kernel_image_path: self.kernel.clone().unwrap_or_default(),
                boot_args: Some(self.cmdline.clone()),
                initrd_path: self.initrd.clone(),
            },
            serial: self.serial.clone(),
            drives,
            net,
            entropy: self.rng,
            entropy_rate_limiter: None,
            vsock: self.vsock.as_deref().map(parse_vsock).transpose()?,
            balloon: None,
        })
    }
}

/// `podvm run`: with `--api-sock`, the API serves while the VM runs.
pub fn run(args: RunArgs, start_time: Instant) -> ExitCode {
    let (spec, restore) = match (&args.restore, &args.mem_file) {
        (Some(state), Some(mem)) => match args.restore_request(state, mem) {
            Ok(r) => (None, Some(r)),
            Err(e) => return exit::usage(e),
        },
        _ => match args.spec() {
            Ok(spec) => (Some(spec), None),
            Err(e) => return exit::usage(e),
        },
    };
    launch(Launch {
        api_sock: args.api_sock.as_deref(),
        id: "anonymous-instance".into(),
        spec,
        restore,
        source: SpecSource::Flags,
        metrics: None,
        start_time,
        seccomp: &args.seccomp,
        guest_ram: &args.guest_ram,
    })
}

impl RunArgs {
    /// The restore `--restore` asks for, its `--net`s as tap overrides.
    fn restore_request(&self, state: &Path, mem: &Path) -> Result<Restore, String> {
        let network_overrides = self
            .nets
            .iter()
            .enumerate()
            .map(|(i, n)| parse_net(n, i).map(|n| (n.iface_id, n.host_dev_name)))
            .collect::<Result<_, _>>()?;
        Ok(Restore {
            state: state.to_path_buf(),
            mem: mem.to_path_buf(),
            options: LoadOptions {
                network_overrides,
                track_dirty_pages: false,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

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
    fn vsock_flag() {
        let r = run_args(&["run", "--kernel", "/k", "--vsock", "cid=7,uds=/run/v.sock"]);
        assert_eq!(
            r.spec().unwrap().vsock,
            Some(VsockConfig {
                guest_cid: 7,
                uds_path: "/run/v.sock".into()
            })
        );
        assert_eq!(
            run_args(&["run", "--kernel", "/k"]).spec().unwrap().vsock,
            None
        );
        for (value, want) in [
            ("uds=/v", "--vsock uds=/v: cid=N is required"),
            ("cid=3", "--vsock cid=3: uds=PATH is required"),
            (
                "cid=x,uds=/v",
                "--vsock cid=x,uds=/v: cid \"x\" is not a number from 3 to 4294967294",
            ),
            (
                "cid=3,uds=/v,port=1",
                "--vsock cid=3,uds=/v,port=1: unknown or malformed option \"port=1\"",
            ),
        ] {
            let err = run_args(&["run", "--kernel", "/k", "--vsock", value])
                .spec()
                .unwrap_err();
            assert!(err.starts_with(want), "{err}");
        }
    }
}
