//! Runs `runc` commands and turns their failures into one-line errors.
//!
//! Every invocation is `<runc> --root <state>/runc --log <file>
//! --log-format json <args…>`. The JSON log is where runc's reason is when
//! the command's own stdio belongs to the container (create, exec), so a
//! failure carries the last error-level `"msg"` of that log, else the last
//! line of standard error.
//!
//! Children are waited for through the [`Reaper`], never with
//! `Child::wait`: the reaper thread reaps every child of the agent.

use std::ffi::OsStr;
use std::fmt;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::reaper::Reaper;

/// A runc command that failed: `runc <command> <id>: <reason>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuncError {
    /// The runc subcommand (`create`, `start`…).
    pub command: &'static str,
    /// The container it was for.
    pub id: String,
    /// Why it failed, in runc's words where it gave any.
    pub reason: String,
}

impl fmt::Display for RuncError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "runc {} {}: {}", self.command, self.id, self.reason)
    }
}

impl std::error::Error for RuncError {}

/// The standard streams of a container process; `None` is `/dev/null`.
#[derive(Debug, Default)]
pub struct ProcessStdio {
    /// Fd 0.
    pub stdin: Option<OwnedFd>,
    /// Fd 1.
    pub stdout: Option<OwnedFd>,
    /// Fd 2.
    pub stderr: Option<OwnedFd>,
}

fn or_null(fd: Option<OwnedFd>) -> Stdio {
    fd.map(Stdio::from).unwrap_or_else(Stdio::null)
}

/// The runc binary and the state it keeps under the agent's state dir.
#[derive(Debug)]
pub struct Runc {
    binary: PathBuf,
    root: PathBuf,
    log_dir: PathBuf,
    reaper: Arc<Reaper>,
    next_log: AtomicU64,
}

impl Runc {
    /// A runc wrapper keeping runc's state in `<state_dir>/runc`.
    pub fn new(binary: PathBuf, state_dir: &Path, reaper: Arc<Reaper>) -> std::io::Result<Runc> {
        let root = state_dir.join("runc");
        let log_dir = state_dir.join("runc-logs");
        std::fs::create_dir_all(&root)?;
        std::fs::create_dir_all(&log_dir)?;
        Ok(Runc {
            binary,
            root,
            log_dir,
            reaper,
            next_log: AtomicU64::new(0),
        })
    }

    /// Whether runc has state for container `id` (it was created and not deleted).
    pub fn exists(&self, id: &str) -> bool {
        self.root.join(id).exists()
    }

    /// `runc create --bundle <bundle> --pid-file <pid_file> <id>`, the
    /// container process's stdio being `stdio`.
    pub fn create(
        &self,
        id: &str,
        bundle: &Path,
        pid_file: &Path,
        stdio: ProcessStdio,
    ) -> Result<(), RuncError> {
        let args: [&OsStr; 5] = [
            "--bundle".as_ref(),
            bundle.as_ref(),
            "--pid-file".as_ref(),
            pid_file.as_ref(),
            id.as_ref(),
        ];
        self.run("create", id, &args, Some(stdio)).map(drop)
    }

    /// `runc start <id>`.
    pub fn start(&self, id: &str) -> Result<(), RuncError> {
        self.run("start", id, &[id.as_ref()], None).map(drop)
    }

    /// `runc exec --detach --process <process> --pid-file <pid_file> <id>`.
    pub fn exec(
        &self,
        id: &str,
        process: &Path,
        pid_file: &Path,
        stdio: ProcessStdio,
    ) -> Result<(), RuncError> {
        let args: [&OsStr; 6] = [
            "--detach".as_ref(),
            "--process".as_ref(),
            process.as_ref(),
            "--pid-file".as_ref(),
            pid_file.as_ref(),
            id.as_ref(),
        ];
        self.run("exec", id, &args, Some(stdio)).map(drop)
    }

    /// `runc kill [--all] <id> <signal>`.
    pub fn kill(&self, id: &str, signal: u32, all: bool) -> Result<(), RuncError> {
        let signal = signal.to_string();
        let mut args: Vec<&OsStr> = Vec::with_capacity(3);
        if all {
            args.push("--all".as_ref());
        }
        args.push(id.as_ref());
        args.push(signal.as_ref());
        self.run("kill", id, &args, None).map(drop)
    }

    /// `runc ps --format json <id>`: the pids of the container's processes.
    pub fn ps(&self, id: &str) -> Result<Vec<u32>, RuncError> {
        let out = self.run(
            "ps",
            id,
            &["--format".as_ref(), "json".as_ref(), id.as_ref()],
            None,
        )?;
        parse_ps(&out).map_err(|reason| RuncError {
            command: "ps",
            id: id.to_string(),
            reason,
        })
    }

    /// `runc delete --force <id>`.
    pub fn delete(&self, id: &str) -> Result<(), RuncError> {
        self.run("delete", id, &["--force".as_ref(), id.as_ref()], None)
            .map(drop)
    }

    /// Runs one runc command and returns its standard output. With
    /// `stdio`, the child's fds 0–2 are those streams (runc with no
    /// terminal hands its own stdio to the container process) and nothing
    /// is captured; without, stdout and stderr are piped.
    fn run(
        &self,
        command: &'static str,
        id: &str,
        args: &[&OsStr],
        stdio: Option<ProcessStdio>,
    ) -> Result<Vec<u8>, RuncError> {
        let fail = |reason: String| RuncError {
            command,
            id: id.to_string(),
            reason,
        };
        let n = self.next_log.fetch_add(1, Ordering::Relaxed);
        let log = self.log_dir.join(format!("{n}.json"));
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--root")
            .arg(&self.root)
            .arg("--log")
            .arg(&log)
            .arg("--log-format")
            .arg("json")
            .arg(command)
            .args(args);
        let captured = stdio.is_none();
        match stdio {
            Some(s) => {
                cmd.stdin(or_null(s.stdin))
                    .stdout(or_null(s.stdout))
                    .stderr(or_null(s.stderr));
            }
            None => {
                cmd.stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped());
            }
        }
        let spawned = cmd.spawn();
        // The Command holds the stdio descriptors: drop them now, so that
        // only the container keeps its streams open (the peer sees EOF
        // when the process exits).
        drop(cmd);
        let mut child =
            spawned.map_err(|e| fail(format!("cannot run {}: {e}", self.binary.display())))?;
        self.reaper.kick();
        let pid = child.id();
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        if captured {
            // Read both pipes to their end before waiting for the pid; one
            // on a thread so that neither can fill up and stall runc.
            let (out, err) = (child.stdout.take(), child.stderr.take());
            std::thread::scope(|s| {
                s.spawn(|| {
                    if let Some(mut e) = err {
                        let _ = e.read_to_end(&mut stderr);
                    }
                });
                if let Some(mut o) = out {
                    let _ = o.read_to_end(&mut stdout);
                }
            });
        }
        drop(child);
        let code = self.reaper.wait_and_forget(pid);
        let log_text = std::fs::read_to_string(&log).unwrap_or_default();
        let _ = std::fs::remove_file(&log);
        if code != 0 {
            return Err(fail(failure_reason(
                &log_text,
                &String::from_utf8_lossy(&stderr),
                code,
            )));
        }
        Ok(stdout)
    }
}

/// Why a runc command failed: the last error-level message of its JSON
/// log, else the last line of its stderr, else its exit status — with
/// runc's own `runc create failed: unable to start container process: `
/// prefixes taken off (the error already names the command).
pub fn failure_reason(json_log: &str, stderr: &str, code: u32) -> String {
    let from_log = json_log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| matches!(v["level"].as_str(), Some("error" | "fatal" | "panic")))
        .filter_map(|v| v["msg"].as_str().map(str::to_string))
        .next_back();
    let msg = from_log
        .or_else(|| {
            stderr
                .lines()
                .map(str::trim)
                .rfind(|l| !l.is_empty())
                .map(str::to_string)
        })
        .unwrap_or_else(|| format!("exited with status {code}"));
    strip_runc_prefixes(&msg).to_string()
}

fn strip_runc_prefixes(msg: &str) -> &str {
    let mut msg = msg;
    if let Some(rest) = msg.strip_prefix("runc ") {
        if let Some((word, tail)) = rest.split_once(" failed: ") {
            if !word.contains(' ') {
                msg = tail;
            }
        }
    }
    msg.strip_prefix("unable to start container process: ")
        .unwrap_or(msg)
}

/// The pids in `runc ps --format json` output (a JSON array, or `null`).
pub fn parse_ps(out: &[u8]) -> Result<Vec<u32>, String> {
    let pids: Option<Vec<u32>> = serde_json::from_slice(out).map_err(|e| {
        format!(
            "unexpected output {:?}: {e}",
            String::from_utf8_lossy(out).trim()
        )
    })?;
    Ok(pids.unwrap_or_default())
}

/// The pid runc wrote to `pid_file`.
pub fn read_pid(pid_file: &Path) -> Result<u32, String> {
    let text = std::fs::read_to_string(pid_file)
        .map_err(|e| format!("cannot read the pid file {}: {e}", pid_file.display()))?;
    text.trim()
        .parse()
        .map_err(|_| format!("pid file {} holds {text:?}", pid_file.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_error_message_of_the_log_is_the_reason() {
        let log = concat!(
            r#"{"level":"warning","msg":"ignored","time":"t"}"#,
            "\n",
            r#"{"level":"error","msg":"first","time":"t"}"#,
            "\nnot json\n",
            r#"{"level":"error","msg":"runc create failed: unable to start container process: exec: \"nosuchcmd\": executable file not found in $PATH","time":"t"}"#,
            "\n",
        );
        let e = RuncError {
            command: "create",
            id: "c1".into(),
            reason: failure_reason(log, "stderr text\n", 1),
        };
        assert_eq!(
            e.to_string(),
            r#"runc create c1: exec: "nosuchcmd": executable file not found in $PATH"#
        );
    }

    #[test]
    fn without_a_log_stderr_or_the_status_is_the_reason() {
        assert_eq!(
            failure_reason("", "noise\ncontainer does not exist\n\n", 1),
            "container does not exist"
        );
        assert_eq!(failure_reason("", "", 2), "exited with status 2");
        // A message merely starting with "runc" keeps its words.
        assert_eq!(
            failure_reason(r#"{"level":"error","msg":"runc is sad"}"#, "", 1),
            "runc is sad"
        );
    }

    #[test]
    fn ps_output_parses() {
        assert_eq!(parse_ps(b"[12,34]\n").unwrap(), vec![12, 34]);
        assert_eq!(parse_ps(b"null").unwrap(), Vec::<u32>::new());
        assert!(parse_ps(b"oops").unwrap_err().contains("oops"));
    }
}
