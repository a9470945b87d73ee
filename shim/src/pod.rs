//! One pod: its state directory and the agent that runs its containers.
//!
//! In host mode (`[agent] mode = "host"`) the agent is a host process the
//! shim starts, reached over Unix sockets in the pod's directory; there is
//! no VM isolation, and every start says so in the log.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use agent_protocol::agent::{DestroySandboxRequest, Empty};
use agent_protocol::agent_ttrpc::AgentClient;
use agent_protocol::transport::Transport;
use agent_protocol::{transport, API_PORT};

use crate::config::{AgentMode, ShimConfig};

/// How long a new agent may take to answer Health.
const AGENT_START_TIMEOUT: Duration = Duration::from_secs(10);
/// The agent's pid, in the pod's directory.
const AGENT_PID: &str = "agent.pid";
/// The agent's log, in the pod's directory.
pub const AGENT_LOG: &str = "agent.log";

/// The timeout of one short agent call.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A ttrpc context that gives up after `t`.
pub fn ctx(t: Duration) -> ttrpc::context::Context {
    ttrpc::context::with_timeout(t.as_nanos() as i64)
}

/// Why a pod could not be started.
#[derive(Debug)]
pub enum PodError {
    /// VM mode is not wired up in this build.
    VmMode,
    /// Creating the pod's directory failed.
    StateDir(PathBuf, io::Error),
    /// The agent binary is missing or not executable.
    AgentBinary(PathBuf, String),
    /// Starting the agent failed.
    SpawnAgent(PathBuf, io::Error),
    /// The agent did not come up.
    AgentStart(String),
}

impl fmt::Display for PodError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PodError::VmMode => f.write_str(
                "pods in VMs ([agent] mode = \"vm\") are not available in this build yet: set [agent] mode = \"host\" in the shim config",
            ),
            PodError::StateDir(p, e) => write!(f, "pod directory {}: {e}", p.display()),
            PodError::AgentBinary(p, why) => write!(f, "agent binary {}: {why}", p.display()),
            PodError::SpawnAgent(p, e) => write!(f, "starting the agent {}: {e}", p.display()),
            PodError::AgentStart(why) => write!(f, "the pod's agent did not start: {why}"),
        }
    }
}

impl std::error::Error for PodError {}

/// A short, stable name for a pod's directory (Unix socket paths must stay
/// under 108 bytes, and sandbox ids are 64 characters): FNV-1a of the
/// namespace and sandbox id.
pub fn pod_dir(state_dir: &Path, namespace: &str, sandbox_id: &str) -> PathBuf {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in namespace.bytes().chain([0u8]).chain(sandbox_id.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    state_dir.join(format!("{h:016x}"))
}

/// A running pod: its directory and its agent.
pub struct Pod {
    dir: PathBuf,
    transport: Transport,
    agent_pid: u32,
    client: AgentClient,
}

/// The agent binary: the configured one, else `podvm-agent` beside the shim.
fn agent_binary(config: &ShimConfig) -> PathBuf {
    if let Some(b) = &config.agent.binary {
        return b.clone();
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("podvm-agent")))
        .unwrap_or_else(|| PathBuf::from("podvm-agent"))
}

/// Checks up front that `path` is an executable file: the standard
/// library's spawn waits for a child whose exec failed, and the shim
/// library's reaper may have collected it first.
fn check_executable(path: &Path) -> Result<(), PodError> {
    match fs::metadata(path) {
        Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => Ok(()),
        Ok(_) => Err(PodError::AgentBinary(
            path.into(),
            "not an executable file".into(),
        )),
        Err(e) => Err(PodError::AgentBinary(path.into(), e.to_string())),
    }
}

/// The last line of the agent's log: why it stopped, usually.
fn last_log_line(dir: &Path) -> String {
    fs::read_to_string(dir.join(AGENT_LOG))
        .ok()
        .and_then(|t| {
            t.lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map(str::to_string)
        })
        .unwrap_or_else(|| "it wrote nothing to its log".into())
}

/// Whether `pid` runs (a zombie does not: it is only waiting to be reaped).
fn alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

impl Pod {
    /// Starts the pod `sandbox_id` of `namespace`: its directory and its agent.
    pub fn start(config: &ShimConfig, namespace: &str, sandbox_id: &str) -> Result<Pod, PodError> {
        if config.agent.mode == AgentMode::Vm {
            return Err(PodError::VmMode);
        }
        log::warn!("pod {sandbox_id}: host mode: the pod's containers run on the host with no VM isolation");
        let dir = pod_dir(&config.state_dir, namespace, sandbox_id);
        fs::create_dir_all(&dir).map_err(|e| PodError::StateDir(dir.clone(), e))?;
        let _ = fs::write(dir.join("pod"), format!("{namespace}/{sandbox_id}\n"));
        let binary = agent_binary(config);
        check_executable(&binary)?;
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(AGENT_LOG))
            .map_err(|e| PodError::StateDir(dir.clone(), e))?;
        let log2 = log
            .try_clone()
            .map_err(|e| PodError::StateDir(dir.clone(), e))?;
        let transport = Transport::UnixDir(dir.clone());
        let mut cmd = Command::new(&binary);
        cmd.arg("--transport")
            .arg(transport.to_string())
            .arg("--state-dir")
            .arg(dir.join("agent"))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        if let Some(runc) = &config.agent.runc {
            cmd.arg("--runc").arg(runc);
        }
        // The child is never waited for here: the shim library's reaper
        // collects every child's status.
        let child = cmd
            .spawn()
            .map_err(|e| PodError::SpawnAgent(binary.clone(), e))?;
        let agent_pid = child.id();
        drop(child);
        let _ = fs::write(dir.join(AGENT_PID), format!("{agent_pid}\n"));
        let client = match Self::wait_agent(&transport, agent_pid, &dir) {
            Ok(c) => c,
            Err(e) => {
                kill_agent(agent_pid);
                return Err(e);
            }
        };
        Ok(Pod {
            dir,
            transport,
            agent_pid,
            client,
        })
    }

    /// Waits until the agent answers Health.
    fn wait_agent(transport: &Transport, pid: u32, dir: &Path) -> Result<AgentClient, PodError> {
        let deadline = Instant::now() + AGENT_START_TIMEOUT;
        let sock = transport::unix_port_path(dir, API_PORT);
        loop {
            if !alive(pid) {
                return Err(PodError::AgentStart(format!(
                    "it exited: {}",
                    last_log_line(dir)
                )));
            }
            if sock.exists() {
                if let Ok(c) = transport.api_client() {
                    let client = AgentClient::new(c);
                    if client
                        .health(ctx(Duration::from_secs(2)), &Empty::new())
                        .is_ok()
                    {
                        return Ok(client);
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(PodError::AgentStart(format!(
                    "no answer within {} s: {}",
                    AGENT_START_TIMEOUT.as_secs(),
                    last_log_line(dir)
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The agent's API.
    pub fn client(&self) -> &AgentClient {
        &self.client
    }

    /// How to open stdio connections to the agent.
    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// Ends the pod: every container, the agent, the directory.
    pub fn stop(&self, sandbox_id: &str) {
        let req = DestroySandboxRequest {
            sandbox_id: sandbox_id.to_string(),
            ..Default::default()
        };
        if let Err(e) = self.client.destroy_sandbox(ctx(CALL_TIMEOUT), &req) {
            log::warn!("pod {sandbox_id}: DestroySandbox: {e}");
        }
        kill_agent(self.agent_pid);
        let _ = fs::remove_dir_all(&self.dir);
    }

    /// Cleans up after a shim that was killed (containerd's `delete`):
    /// destroys the pod's containers through its agent if that still runs,
    /// then stops the agent and removes the directory.
    pub fn clean_up(dir: &Path, sandbox_id: &str) {
        let transport = Transport::UnixDir(dir.to_path_buf());
        if let Ok(c) = transport.api_client() {
            let req = DestroySandboxRequest {
                sandbox_id: sandbox_id.to_string(),
                ..Default::default()
            };
            let _ = AgentClient::new(c).destroy_sandbox(ctx(CALL_TIMEOUT), &req);
        }
        if let Some(pid) = fs::read_to_string(dir.join(AGENT_PID))
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            kill_agent(pid);
        }
        let _ = fs::remove_dir_all(dir);
    }
}

impl Pod {
    /// Removes one container through the pod's agent, for a shim that is gone.
    pub fn remove_container(dir: &Path, container_id: &str) {
        let transport = Transport::UnixDir(dir.to_path_buf());
        if let Ok(c) = transport.api_client() {
            let req = agent_protocol::agent::ContainerRequest {
                container_id: container_id.to_string(),
                ..Default::default()
            };
            let _ = AgentClient::new(c).remove_container(ctx(CALL_TIMEOUT), &req);
        }
    }
}

/// Stops the agent: SIGTERM, then SIGKILL after a grace period.
fn kill_agent(pid: u32) {
    let pid_t = pid as libc::pid_t;
    // SAFETY: plain kill(2) on the agent's pid.
    unsafe { libc::kill(pid_t, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(2);
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    if alive(pid) {
        // SAFETY: as above.
        unsafe { libc::kill(pid_t, libc::SIGKILL) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_dirs_are_short_stable_and_distinct() {
        let s = Path::new("/run/podvm/shim");
        let a = pod_dir(s, "k8s.io", &"a".repeat(64));
        assert_eq!(a, pod_dir(s, "k8s.io", &"a".repeat(64)));
        assert_ne!(a, pod_dir(s, "default", &"a".repeat(64)));
        assert_ne!(
            pod_dir(s, "ab", "c"),
            pod_dir(s, "a", "bc"),
            "the separator counts"
        );
        let sock = transport::unix_port_path(&a, API_PORT);
        assert!(sock.as_os_str().len() < 60, "{}", sock.display());
    }

    #[test]
    fn vm_mode_and_bad_binaries_are_refused_with_reasons() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = ShimConfig {
            state_dir: dir.path().into(),
            ..Default::default()
        };
        let e = Pod::start(&c, "ns", "p").err().unwrap().to_string();
        assert!(e.contains("mode = \"host\""), "{e}");
        c.agent.mode = AgentMode::Host;
        c.agent.binary = Some(dir.path().join("nope"));
        let e = Pod::start(&c, "ns", "p").err().unwrap().to_string();
        assert!(
            e.starts_with("agent binary ") && e.contains("No such file"),
            "{e}"
        );
        let plain = dir.path().join("plain");
        fs::write(&plain, "not a program").unwrap();
        c.agent.binary = Some(plain);
        let e = Pod::start(&c, "ns", "p").err().unwrap().to_string();
        assert!(e.contains("not an executable file"), "{e}");
    }

    #[test]
    fn an_agent_that_exits_at_once_is_reported_with_its_log() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("agent.sh");
        fs::write(
            &fake,
            "#!/bin/sh\necho 'error: cannot bind: Address in use' >&2\nexit 1\n",
        )
        .unwrap();
        fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap();
        let mut c = ShimConfig {
            state_dir: dir.path().join("state"),
            ..Default::default()
        };
        c.agent.mode = AgentMode::Host;
        c.agent.binary = Some(fake);
        let e = Pod::start(&c, "ns", "p").err().unwrap().to_string();
        assert!(e.contains("cannot bind: Address in use"), "{e}");
    }
}
