//! The VMMs under test and their processes: how podvm and a
//! Firecracker-compatible VMM are started (their command lines differ),
//! a VM's configuration as a Firecracker config file or as API calls, and
//! a running instance whose console output is watched and timestamped.
//! An instance is SIGKILLed and reaped when dropped, so no error path of
//! the harness leaves a VM behind.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::http::Conn;
use crate::PerfError;

/// How a VMM binary is driven.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// podvm: `podvm serve --api-sock …`, `podvm serve --no-api --config-file …`.
    Podvm,
    /// Firecracker's command line: `--api-sock`, `--config-file`,
    /// `--no-api`, and `--level Off` so that its log lines (which go to
    /// standard output by default) do not mix with the guest's console.
    Firecracker,
}

/// One VMM binary under test.
#[derive(Clone, Debug)]
pub struct Vmm {
    /// How to drive it.
    pub flavor: Flavor,
    /// The executable.
    pub path: PathBuf,
    /// Its name in reports: "podvm" or "target".
    pub label: &'static str,
}

impl Vmm {
    /// The command serving the API on `sock`, the VM described by `config`
    /// started at once when given.
    pub fn api_command(&self, sock: &Path, config: Option<&Path>) -> Command {
        let mut c = Command::new(&self.path);
        if self.flavor == Flavor::Podvm {
            c.arg("serve");
        }
        c.arg("--api-sock").arg(sock);
        if let Some(f) = config {
            c.arg("--config-file").arg(f);
        }
        if self.flavor == Flavor::Firecracker {
            c.args(["--level", "Off"]);
        }
        c
    }

    /// The command booting the VM of `config` with no API.
    pub fn no_api_command(&self, config: &Path) -> Command {
        let mut c = Command::new(&self.path);
        if self.flavor == Flavor::Podvm {
            c.arg("serve");
        }
        c.arg("--no-api").arg("--config-file").arg(config);
        if self.flavor == Flavor::Firecracker {
            c.args(["--level", "Off"]);
        }
        c
    }

    /// Whether the VMM has podvm's `Shutdown` action (Firecracker has not:
    /// its guests end themselves, or are killed).
    pub fn has_shutdown_action(&self) -> bool {
        self.flavor == Flavor::Podvm
    }
}

/// A VM: what goes into a config file or the configuration calls.
#[derive(Clone, Debug)]
pub struct VmConfig {
    /// The guest kernel (a test guest).
    pub kernel: PathBuf,
    /// Extra command line after `console=ttyS0 reboot=k panic=1`.
    pub extra_args: String,
    /// vCPUs.
    pub vcpus: u8,
    /// Guest RAM, MiB.
    pub mem_mib: u64,
    /// Drives: (id, backing file); the first one is the root device.
    pub drives: Vec<(String, PathBuf)>,
    /// Network interfaces: (id, host tap name).
    pub nets: Vec<(String, String)>,
    /// The config file's `balloon` section, if any.
    pub balloon: Option<serde_json::Value>,
}

impl VmConfig {
    /// A 1-vCPU VM of `mem_mib` MiB booting `kernel`, no devices.
    pub fn new(kernel: PathBuf, mem_mib: u64) -> VmConfig {
        VmConfig {
            kernel,
            extra_args: String::new(),
            vcpus: 1,
            mem_mib,
            drives: Vec::new(),
            nets: Vec::new(),
            balloon: None,
        }
    }

    fn boot_args(&self) -> String {
        let mut a = "console=ttyS0 reboot=k panic=1".to_string();
        if !self.extra_args.is_empty() {
            a.push(' ');
            a.push_str(&self.extra_args);
        }
        a
    }

    fn boot_source(&self) -> serde_json::Value {
        json!({"kernel_image_path": self.kernel, "boot_args": self.boot_args()})
    }

    fn machine(&self) -> serde_json::Value {
        json!({"vcpu_count": self.vcpus, "mem_size_mib": self.mem_mib})
    }

    fn drive(&self, i: usize) -> serde_json::Value {
        let (id, path) = &self.drives[i];
        json!({"drive_id": id, "path_on_host": path, "is_root_device": i == 0, "is_read_only": false})
    }

    fn net(&self, i: usize) -> serde_json::Value {
        let (id, tap) = &self.nets[i];
        json!({"iface_id": id, "host_dev_name": tap})
    }

    /// The Firecracker JSON config file (`drives` is required there, even
    /// empty).
    pub fn config_file(&self) -> serde_json::Value {
        let mut v = json!({
            "boot-source": self.boot_source(),
            "machine-config": self.machine(),
            "drives": (0..self.drives.len()).map(|i| self.drive(i)).collect::<Vec<_>>(),
            "network-interfaces": (0..self.nets.len()).map(|i| self.net(i)).collect::<Vec<_>>(),
        });
        if let Some(b) = &self.balloon {
            v["balloon"] = b.clone();
        }
        v
    }

    /// Writes the config file to `path`.
    pub fn write_config(&self, path: &Path) -> Result<(), PerfError> {
        std::fs::write(path, self.config_file().to_string())
            .map_err(|e| PerfError::io(format!("write {}", path.display()), e))
    }

    /// The configuration calls before `InstanceStart`: (method, path, body).
    pub fn api_calls(&self) -> Vec<(&'static str, String, String)> {
        let mut calls = vec![
            (
                "PUT",
                "/machine-config".to_string(),
                self.machine().to_string(),
            ),
            (
                "PUT",
                "/boot-source".to_string(),
                self.boot_source().to_string(),
            ),
        ];
        for (i, (id, _)) in self.drives.iter().enumerate() {
            calls.push(("PUT", format!("/drives/{id}"), self.drive(i).to_string()));
        }
        for (i, (id, _)) in self.nets.iter().enumerate() {
            calls.push((
                "PUT",
                format!("/network-interfaces/{id}"),
                self.net(i).to_string(),
            ));
        }
        calls
    }
}

/// How long any one wait of the harness may take (a guest of the suite
/// needs a few seconds at most here, even emulated).
pub const DEADLINE: Duration = Duration::from_secs(120);

/// A chunk of console output and when it arrived.
struct Chunk {
    at: Instant,
    bytes: Vec<u8>,
}

/// A running VMM process.
pub struct Instance {
    child: Child,
    /// When it was spawned (just before `fork`).
    pub spawned: Instant,
    /// Its API socket, if it serves one.
    pub sock: Option<PathBuf>,
    out: Receiver<Chunk>,
    /// Console output so far.
    seen: Vec<u8>,
    /// (end offset in `seen`, arrival) of every chunk.
    arrivals: Vec<(usize, Instant)>,
    stderr: Arc<Mutex<Vec<u8>>>,
    reaped: bool,
    /// The console's input, for an instance spawned with one.
    input: Option<std::process::ChildStdin>,
}

impl Instance {
    /// Spawns `cmd` with the console on a pipe. `sock`, when given, is
    /// removed first (Firecracker refuses an existing path) and on drop.
    pub fn spawn(cmd: Command, sock: Option<PathBuf>) -> Result<Instance, PerfError> {
        Instance::spawn_with(cmd, sock, false)
    }

    /// As [`Instance::spawn`], with the console's input on a pipe too
    /// ([`Instance::type_input`]).
    pub fn spawn_interactive(cmd: Command, sock: Option<PathBuf>) -> Result<Instance, PerfError> {
        Instance::spawn_with(cmd, sock, true)
    }

    /// Writes `bytes` to the console's input.
    pub fn type_input(&mut self, bytes: &[u8]) -> Result<(), PerfError> {
        use std::io::Write;
        let input = self.input.as_mut().expect("an instance spawned with input");
        input
            .write_all(bytes)
            .and_then(|()| input.flush())
            .map_err(|e| PerfError::io("console input".into(), e))
    }

    fn spawn_with(
        mut cmd: Command,
        sock: Option<PathBuf>,
        input: bool,
    ) -> Result<Instance, PerfError> {
        if let Some(s) = &sock {
            let _ = std::fs::remove_file(s);
        }
        cmd.stdin(if input { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: the closure runs in the forked child before exec and only
        // calls prctl(2), which is async-signal-safe. It makes the kernel
        // SIGKILL the VMM when the harness dies without dropping it (killed,
        // or a panic with `panic = "abort"`), so no VM outlives a run.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let spawned = Instant::now();
        let mut child = cmd
            .spawn()
            .map_err(|e| PerfError::io(format!("spawn {:?}", cmd.get_program()), e))?;
        let input = child.stdin.take();
        let mut stdout = child.stdout.take().expect("stdout is piped");
        let (tx, out) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                let chunk = Chunk {
                    at: Instant::now(),
                    bytes: buf[..n].to_vec(),
                };
                if n == 0 || tx.send(chunk).is_err() {
                    break;
                }
            }
        });
        let mut stderr_pipe = child.stderr.take().expect("stderr is piped");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut buf = [0u8; 1024];
            while let Ok(n @ 1..) = stderr_pipe.read(&mut buf) {
                let mut s = sink.lock().expect("stderr buffer lock");
                s.extend_from_slice(&buf[..n]);
                let excess = s.len().saturating_sub(4096);
                s.drain(..excess);
            }
        });
        Ok(Instance {
            child,
            spawned,
            sock,
            out,
            seen: Vec::new(),
            arrivals: Vec::new(),
            stderr,
            reaped: false,
            input,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The end of what the VMM wrote on stderr, for error messages.
    pub fn stderr_tail(&self) -> String {
        let s = self.stderr.lock().expect("stderr buffer lock");
        String::from_utf8_lossy(&s).trim().to_string()
    }

    fn failed(&mut self, what: String) -> PerfError {
        let status = match self.child.try_wait() {
            Ok(Some(s)) => format!(" (exited: {s})"),
            _ => String::new(),
        };
        let console =
            String::from_utf8_lossy(&self.seen[self.seen.len().saturating_sub(200)..]).into_owned();
        PerfError::Failed(format!(
            "{what}{status}; console ends {console:?}; stderr: {:?}",
            self.stderr_tail()
        ))
    }

    /// Waits until the API socket accepts a connection; the moment it did.
    pub fn wait_accepting(&mut self) -> Result<Instant, PerfError> {
        let sock = self.sock.clone().expect("an instance with an API socket");
        loop {
            if std::os::unix::net::UnixStream::connect(&sock).is_ok() {
                return Ok(Instant::now());
            }
            if self.spawned.elapsed() > DEADLINE || matches!(self.child.try_wait(), Ok(Some(_))) {
                return Err(self.failed(format!("nothing accepts on {}", sock.display())));
            }
            std::thread::sleep(Duration::from_micros(20));
        }
    }

    /// Opens an API connection.
    pub fn conn(&self) -> Result<Conn, PerfError> {
        let sock = self.sock.as_ref().expect("an instance with an API socket");
        Conn::connect(sock).map_err(|e| PerfError::io(format!("connect {}", sock.display()), e))
    }

    fn pull(&mut self, until: Instant) -> Result<bool, PerfError> {
        let left = until.saturating_duration_since(Instant::now());
        match self.out.recv_timeout(left) {
            Ok(c) if c.bytes.is_empty() => Ok(false),
            Ok(c) => {
                self.seen.extend_from_slice(&c.bytes);
                self.arrivals.push((self.seen.len(), c.at));
                Ok(true)
            }
            Err(RecvTimeoutError::Timeout) => Err(self.failed("timed out".into())),
            Err(RecvTimeoutError::Disconnected) => Ok(false),
        }
    }

    fn arrival_of(&self, offset: usize) -> Instant {
        self.arrivals
            .iter()
            .find(|(end, _)| *end > offset)
            .map(|(_, at)| *at)
            .expect("every byte seen arrived in some chunk")
    }

    /// Waits for the console to show `needle`; returns when the chunk
    /// holding the needle's first byte arrived.
    pub fn wait_output(&mut self, needle: &str) -> Result<Instant, PerfError> {
        let until = Instant::now() + DEADLINE;
        loop {
            if let Some(pos) = find(&self.seen, needle.as_bytes()) {
                return Ok(self.arrival_of(pos));
            }
            match self.pull(until) {
                Ok(true) => {}
                Ok(false) => return Err(self.failed(format!("console ended before {needle:?}"))),
                Err(e) => return Err(self.failed(format!("waiting for {needle:?}: {e}"))),
            }
        }
    }

    /// Waits for the first console byte; when it arrived.
    pub fn first_output(&mut self) -> Result<Instant, PerfError> {
        let until = Instant::now() + DEADLINE;
        while self.seen.is_empty() {
            if !self.pull(until)? {
                return Err(self.failed("console ended with no output".into()));
            }
        }
        Ok(self.arrivals[0].1)
    }

    /// The console line after `prefix`, once it is complete.
    pub fn wait_line(&mut self, prefix: &str) -> Result<String, PerfError> {
        let until = Instant::now() + DEADLINE;
        loop {
            if let Some(pos) = find(&self.seen, prefix.as_bytes()) {
                let rest = &self.seen[pos + prefix.len()..];
                if let Some(nl) = rest.iter().position(|&b| b == b'\n') {
                    return Ok(String::from_utf8_lossy(&rest[..nl]).trim().to_string());
                }
            }
            if !self.pull(until)? {
                return Err(self.failed(format!("console ended before a full {prefix:?} line")));
            }
        }
    }

    /// Waits (bounded) for the process to exit; its status and when it was
    /// reaped.
    pub fn wait_exit(&mut self) -> Result<(ExitStatus, Instant), PerfError> {
        loop {
            match self.child.try_wait() {
                Ok(Some(s)) => {
                    self.reaped = true;
                    return Ok((s, Instant::now()));
                }
                Ok(None) if self.spawned.elapsed() < DEADLINE * 2 => {
                    std::thread::sleep(Duration::from_micros(20));
                }
                Ok(None) => return Err(self.failed("did not exit".into())),
                Err(e) => return Err(PerfError::io("wait".into(), e)),
            }
        }
    }

    /// Sends SIGKILL and reaps the process (blocking `wait`): the moment
    /// of the kill and of the reap.
    pub fn kill(&mut self) -> Result<(Instant, Instant), PerfError> {
        let t0 = self.send_kill()?;
        Ok((t0, self.reap()?))
    }

    /// Sends SIGKILL without waiting; when it was sent.
    pub fn send_kill(&mut self) -> Result<Instant, PerfError> {
        let t0 = Instant::now();
        self.child
            .kill()
            .map_err(|e| PerfError::io("kill".into(), e))?;
        Ok(t0)
    }

    /// Reaps the process (blocking `wait`, after [`Instance::send_kill`]);
    /// when it was reaped.
    pub fn reap(&mut self) -> Result<Instant, PerfError> {
        self.child
            .wait()
            .map_err(|e| PerfError::io("wait".into(), e))?;
        self.reaped = true;
        Ok(Instant::now())
    }

    /// One API request that must answer `want`; the reply body.
    pub fn expect(
        &mut self,
        conn: &mut Conn,
        method: &str,
        path: &str,
        body: &str,
        want: u16,
    ) -> Result<String, PerfError> {
        match conn.request(method, path, body) {
            Ok(r) if r.status == want => Ok(r.body),
            Ok(r) => Err(self.failed(format!("{method} {path} answered {} {}", r.status, r.body))),
            Err(e) => Err(self.failed(format!("{method} {path}: {e}"))),
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if let Some(s) = &self.sock {
            let _ = std::fs::remove_file(s);
        }
    }
}

/// Where `needle` first occurs in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(c: &Command) -> Vec<String> {
        c.get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn podvm_command_lines() {
        let v = Vmm {
            flavor: Flavor::Podvm,
            path: "/bin/podvm".into(),
            label: "podvm",
        };
        let c = v.api_command(Path::new("/s.sock"), None);
        assert_eq!(c.get_program(), "/bin/podvm");
        assert_eq!(args(&c), ["serve", "--api-sock", "/s.sock"]);
        let c = v.api_command(Path::new("/s.sock"), Some(Path::new("/c.json")));
        assert_eq!(
            args(&c),
            ["serve", "--api-sock", "/s.sock", "--config-file", "/c.json"]
        );
        let c = v.no_api_command(Path::new("/c.json"));
        assert_eq!(args(&c), ["serve", "--no-api", "--config-file", "/c.json"]);
        assert!(v.has_shutdown_action());
    }

    #[test]
    fn firecracker_command_lines() {
        let v = Vmm {
            flavor: Flavor::Firecracker,
            path: "/opt/firecracker".into(),
            label: "target",
        };
        let c = v.api_command(Path::new("/s.sock"), None);
        assert_eq!(args(&c), ["--api-sock", "/s.sock", "--level", "Off"]);
        let c = v.api_command(Path::new("/s.sock"), Some(Path::new("/c.json")));
        assert_eq!(
            args(&c),
            [
                "--api-sock",
                "/s.sock",
                "--config-file",
                "/c.json",
                "--level",
                "Off"
            ]
        );
        let c = v.no_api_command(Path::new("/c.json"));
        assert_eq!(
            args(&c),
            ["--no-api", "--config-file", "/c.json", "--level", "Off"]
        );
        assert!(!v.has_shutdown_action());
    }

    #[test]
    fn config_file_and_api_calls_agree() {
        let mut c = VmConfig::new("/g/perf_blk".into(), 32);
        c.vcpus = 2;
        c.extra_args = "perf.reqs=5".into();
        c.drives.push(("rootfs".into(), "/d.img".into()));
        c.nets.push(("eth0".into(), "tap0".into()));
        let f = c.config_file();
        assert_eq!(f["machine-config"]["vcpu_count"], 2);
        assert_eq!(f["machine-config"]["mem_size_mib"], 32);
        assert_eq!(
            f["boot-source"]["boot_args"],
            "console=ttyS0 reboot=k panic=1 perf.reqs=5"
        );
        assert_eq!(f["drives"][0]["is_root_device"], true);
        assert_eq!(f["network-interfaces"][0]["host_dev_name"], "tap0");
        let calls = c.api_calls();
        let paths: Vec<&str> = calls.iter().map(|(_, p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/machine-config",
                "/boot-source",
                "/drives/rootfs",
                "/network-interfaces/eth0"
            ]
        );
        let empty = VmConfig::new("/g/hello".into(), 128).config_file();
        assert_eq!(empty["drives"], json!([]));
    }

    #[test]
    fn find_bytes() {
        assert_eq!(find(b"tick 0\ntick 1", b"tick 1"), Some(7));
        assert_eq!(find(b"abc", b"abd"), None);
        assert_eq!(find(b"", b""), Some(0));
    }
}
