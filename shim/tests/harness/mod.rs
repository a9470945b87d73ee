//! containerd started by hand for a test: its own root, state and sockets
//! in a temporary directory (no systemd, no registry, CRI off), with
//! podvm's shim on its `PATH` in host mode. Everything it started is
//! stopped by pid when the harness is dropped.

#![allow(dead_code)]

pub mod image;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The runtime name the shim registers as.
pub const RUNTIME: &str = "io.containerd.podvm.v1";
/// The containerd namespace the tests use.
pub const NAMESPACE: &str = "podvm-test";
/// How long one `ctr` command may take.
const CTR_TIMEOUT_S: u32 = 60;

/// The shim binary under test and the agent beside it.
pub fn shim_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_containerd-shim-podvm-v1"))
}

/// Builds `podvm-agent` into the directory of the shim binary (cargo
/// builds only this package's binaries for its tests).
pub fn build_agent() -> PathBuf {
    let shim = shim_binary();
    let dir = shim.parent().unwrap();
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(["build", "--quiet", "-p", "podvm-agent"]);
    if dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let st = cmd.status().expect("running cargo build -p podvm-agent");
    assert!(st.success(), "cargo build -p podvm-agent failed");
    let agent = dir.join("podvm-agent");
    assert!(agent.exists(), "{} was not built", agent.display());
    agent
}

/// A containerd of the test's own.
pub struct Containerd {
    /// Everything lives under here.
    pub dir: tempfile::TempDir,
    child: Child,
}

impl Containerd {
    /// Starts containerd with the shim in host mode and waits until it answers.
    pub fn start() -> Containerd {
        let agent = build_agent();
        let dir = tempfile::Builder::new()
            .prefix("podvm-ctr-")
            .tempdir_in("/tmp")
            .unwrap();
        let d = dir.path();
        let config = format!(
            r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.overlayfs"]
[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
[debug]
  level = "debug"
"#,
            d = d.display()
        );
        fs::write(d.join("containerd.toml"), config).unwrap();
        fs::write(
            d.join("shim.toml"),
            format!(
                "state_dir = \"{d}/shim\"\n[agent]\nmode = \"host\"\nbinary = \"{}\"\n",
                agent.display(),
                d = d.display()
            ),
        )
        .unwrap();
        let log = fs::File::create(d.join("containerd.log")).unwrap();
        let path = format!(
            "{}:{}",
            shim_binary().parent().unwrap().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let child = Command::new("containerd")
            .arg("--config")
            .arg(d.join("containerd.toml"))
            .env("PATH", path)
            .env("PODVM_SHIM_CONFIG", d.join("shim.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting containerd");
        let c = Containerd { dir, child };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if c.dir.path().join("containerd.sock").exists() && c.ctr(&["version"]).status.success()
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "containerd did not answer within 30 s: {}",
                c.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        c
    }

    /// The last lines of containerd's log.
    pub fn log_tail(&self) -> String {
        let t = fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default();
        let lines: Vec<&str> = t.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Runs `ctr` against this containerd, under a watchdog (SIGQUIT makes
    /// ctr print where it is stuck), with `stdin` on its standard input.
    pub fn ctr_with_input(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut cmd = Command::new("timeout");
        cmd.args([
            "-s",
            "QUIT",
            "-k",
            "5",
            &format!("{CTR_TIMEOUT_S}"),
            "ctr",
            "--address",
        ])
        .arg(self.dir.path().join("containerd.sock"))
        .args(["--namespace", NAMESPACE])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        let mut child = cmd.spawn().expect("running ctr");
        if let Some(input) = stdin {
            use std::io::Write;
            let mut w = child.stdin.take().unwrap();
            w.write_all(input).unwrap();
        }
        let out = child.wait_with_output().unwrap();
        assert_ne!(
            out.status.code(),
            Some(124),
            "ctr {args:?} hung:\n{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log_tail()
        );
        out
    }

    /// Runs `ctr` with no input.
    pub fn ctr(&self, args: &[&str]) -> Output {
        self.ctr_with_input(args, None)
    }

    /// Runs `ctr` and insists that it succeeds; its standard output.
    pub fn ctr_ok(&self, args: &[&str]) -> String {
        let out = self.ctr(args);
        assert!(
            out.status.success(),
            "ctr {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log_tail()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Pids of the shim processes serving this containerd.
    pub fn shim_pids(&self) -> Vec<u32> {
        processes_under(self.dir.path())
            .into_iter()
            .filter(|pid| {
                fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|e| {
                    e.file_name()
                        .is_some_and(|n| n == "containerd-shim-podvm-v1")
                })
            })
            .collect()
    }
}

/// Processes whose working directory or root is under `dir`: the shims
/// (their bundles), agents and containers this containerd started.
pub fn processes_under(dir: &Path) -> Vec<u32> {
    let mut pids = Vec::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return pids;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let under = ["cwd", "root"]
            .iter()
            .any(|l| fs::read_link(format!("/proc/{pid}/{l}")).is_ok_and(|p| p.starts_with(dir)));
        if under && pid != std::process::id() {
            pids.push(pid);
        }
    }
    pids
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let d = self.dir.path().to_path_buf();
        // SAFETY: plain kill(2) of our own child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGKILL) };
        let _ = self.child.wait();
        for _ in 0..3 {
            for pid in processes_under(&d) {
                // SAFETY: plain kill(2) of a process this test's containerd started.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // Unmount what is under the directory, deepest first.
        let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut points: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|p| Path::new(p).starts_with(&d))
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in points {
            let c = std::ffi::CString::new(p).unwrap();
            // SAFETY: `c` is a valid NUL-terminated path.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
}
