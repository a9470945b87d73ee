//! `podvm ctl`: a small client of a running podvm's control API, for people
//! and scripts.
//!
//! A 200 response's JSON body is printed (pretty) on standard output, a 204
//! prints nothing; both exit 0. An error status prints `error:
//! <fault_message>` on standard error and exits 1, as does a socket that
//! cannot be reached (`error: --api-sock PATH: <reason>`).

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use api::client::{Client, Method};
use clap::{Args, Subcommand};

use crate::exit::EXIT_FAILURE;

/// Flags of `podvm ctl`.
#[derive(Debug, Args)]
pub struct CtlArgs {
    /// The control API's Unix socket (`podvm serve --api-sock PATH`).
    #[arg(long, value_name = "PATH")]
    pub api_sock: PathBuf,

    /// The request to send.
    #[command(subcommand)]
    pub command: CtlCommand,
}

/// The requests `podvm ctl` sends.
#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// Describe the instance: id, state, version (`GET /`).
    Info,
    /// The VM's whole configuration (`GET /vm/config`).
    Config,
    /// Boot the configured VM (`PUT /actions` InstanceStart).
    Start,
    /// Pause every vCPU (`PATCH /vm` Paused).
    Pause,
    /// Resume every vCPU (`PATCH /vm` Resumed).
    Resume,
    /// Stop the VM and podvm, flushing disks (`PUT /actions` Shutdown).
    Shutdown,
    /// Send the guest Ctrl+Alt+Del (`PUT /actions` SendCtrlAltDel).
    CtrlAltDel,
    /// `GET PATH`.
    Get {
        /// The API path, such as `/machine-config`.
        path: String,
    },
    /// `PUT PATH` with a JSON body.
    Put {
        /// The API path, such as `/boot-source`.
        path: String,
        /// The JSON body, or `-` to read it from standard input.
        json: String,
    },
    /// `PATCH PATH` with a JSON body.
    Patch {
        /// The API path, such as `/machine-config`.
        path: String,
        /// The JSON body, or `-` to read it from standard input.
        json: String,
    },
    /// Snapshots (`PUT /snapshot/create`, `PUT /snapshot/load`).
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// The memory balloon (`/balloon`).
    #[command(subcommand)]
    Balloon(BalloonCommand),
}

/// `podvm ctl balloon …`.
#[derive(Debug, Subcommand)]
pub enum BalloonCommand {
    /// The balloon's configuration and target (`GET /balloon`).
    Show,
    /// Set the target, MiB (`PATCH /balloon`).
    Set {
        /// Memory the guest is asked to give up, MiB.
        amount_mib: u32,
    },
    /// The guest's latest memory statistics (`GET /balloon/statistics`).
    Stats,
}

/// `podvm ctl snapshot …`.
#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Snapshot the paused VM: its state to STATE, its memory to MEM.
    Create {
        /// The state file to write.
        state: PathBuf,
        /// The memory file to write (a Diff updates the previous one).
        mem: PathBuf,
        /// Only the pages written since the last snapshot (needs
        /// track_dirty_pages).
        #[arg(long)]
        diff: bool,
    },
    /// Load a snapshot into this (unconfigured) podvm.
    Load {
        /// The state file.
        state: PathBuf,
        /// The memory file.
        mem: PathBuf,
        /// Run the VM at once (else it stays paused).
        #[arg(long)]
        resume: bool,
        /// Track dirty pages, for Diff snapshots of the restored VM.
        #[arg(long)]
        track_dirty_pages: bool,
        /// Another tap for an interface: IFACE=TAP (repeatable).
        #[arg(long = "net", value_name = "IFACE=TAP")]
        nets: Vec<String>,
    },
}

impl CtlCommand {
    /// The request this command sends: method, path and body (`-` still
    /// to be read from standard input), or the one-line usage error.
    fn request(&self) -> Result<(Method, String, String), String> {
        if let CtlCommand::Snapshot(s) = self {
            return s.request();
        }
        if let CtlCommand::Balloon(BalloonCommand::Set { amount_mib }) = self {
            let body = serde_json::json!({ "amount_mib": amount_mib });
            return Ok((Method::Patch, "/balloon".into(), body.to_string()));
        }
        let (m, p, b) = self.simple_request();
        Ok((m, p.to_string(), b.to_string()))
    }

    fn simple_request(&self) -> (Method, &str, &str) {
        const START: &str = r#"{"action_type": "InstanceStart"}"#;
        const SHUTDOWN: &str = r#"{"action_type": "Shutdown"}"#;
        const CTRL_ALT_DEL: &str = r#"{"action_type": "SendCtrlAltDel"}"#;
        match self {
            CtlCommand::Info => (Method::Get, "/", ""),
            CtlCommand::Config => (Method::Get, "/vm/config", ""),
            CtlCommand::Start => (Method::Put, "/actions", START),
            CtlCommand::Pause => (Method::Patch, "/vm", r#"{"state": "Paused"}"#),
            CtlCommand::Resume => (Method::Patch, "/vm", r#"{"state": "Resumed"}"#),
            CtlCommand::Shutdown => (Method::Put, "/actions", SHUTDOWN),
            CtlCommand::CtrlAltDel => (Method::Put, "/actions", CTRL_ALT_DEL),
            CtlCommand::Get { path } => (Method::Get, path, ""),
            CtlCommand::Put { path, json } => (Method::Put, path, json),
            CtlCommand::Patch { path, json } => (Method::Patch, path, json),
            CtlCommand::Snapshot(_) => unreachable!("snapshot requests are built in request()"),
            CtlCommand::Balloon(BalloonCommand::Show) => (Method::Get, "/balloon", ""),
            CtlCommand::Balloon(BalloonCommand::Stats) => (Method::Get, "/balloon/statistics", ""),
            CtlCommand::Balloon(BalloonCommand::Set { .. }) => {
                unreachable!("balloon targets are built in request()")
            }
        }
    }
}

impl SnapshotCommand {
    fn request(&self) -> Result<(Method, String, String), String> {
        let (path, body) = match self {
            SnapshotCommand::Create { state, mem, diff } => (
                "/snapshot/create",
                serde_json::json!({
                    "snapshot_type": if *diff { "Diff" } else { "Full" },
                    "snapshot_path": state,
                    "mem_file_path": mem,
                }),
            ),
            SnapshotCommand::Load {
                state,
                mem,
                resume,
                track_dirty_pages,
                nets,
            } => {
                let overrides = nets
                    .iter()
                    .map(|n| match n.split_once('=') {
                        Some((iface, tap)) if !iface.is_empty() && !tap.is_empty() => {
                            Ok(serde_json::json!({"iface_id": iface, "host_dev_name": tap}))
                        }
                        _ => Err(format!("--net {n}: expected IFACE=TAP")),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                (
                    "/snapshot/load",
                    serde_json::json!({
                        "snapshot_path": state,
                        "mem_backend": {"backend_type": "File", "backend_path": mem},
                        "resume_vm": resume,
                        "track_dirty_pages": track_dirty_pages,
                        "network_overrides": overrides,
                    }),
                )
            }
        };
        Ok((Method::Put, path.to_string(), body.to_string()))
    }
}

/// `podvm ctl`.
pub fn run(args: CtlArgs) -> ExitCode {
    match send(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("error: {msg}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// Sends the request and prints the answer; `Err` is the one-line message.
fn send(args: &CtlArgs) -> Result<(), String> {
    let (method, path, mut body) = args.command.request()?;
    if body == "-" {
        body.clear();
        std::io::stdin()
            .read_to_string(&mut body)
            .map_err(|e| format!("cannot read the JSON body from standard input: {e}"))?;
    }
    let sock_err =
        |e: &dyn std::fmt::Display| format!("--api-sock {}: {e}", args.api_sock.display());
    let client = Client::new(&args.api_sock).map_err(|e| sock_err(&e))?;
    let response = client
        .request(method, &path, body.as_bytes())
        .map_err(|e| sock_err(&e))?;
    if !response.is_success() {
        return Err(response.fault_message());
    }
    let text = response.pretty_body();
    if !text.is_empty() {
        println!("{text}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn ctl(args: &[&str]) -> Result<CtlArgs, clap::Error> {
        let argv = ["podvm", "ctl"].into_iter().chain(args.iter().copied());
        match Cli::try_parse_from(argv)?.command {
            Command::Ctl(c) => Ok(c),
            c => panic!("not ctl: {c:?}"),
        }
    }

    #[test]
    fn commands_map_to_requests() {
        let cases: [(&[&str], Method, &str, &str); 10] = [
            (&["info"], Method::Get, "/", ""),
            (&["config"], Method::Get, "/vm/config", ""),
            (
                &["start"],
                Method::Put,
                "/actions",
                r#"{"action_type": "InstanceStart"}"#,
            ),
            (&["pause"], Method::Patch, "/vm", r#"{"state": "Paused"}"#),
            (&["resume"], Method::Patch, "/vm", r#"{"state": "Resumed"}"#),
            (
                &["shutdown"],
                Method::Put,
                "/actions",
                r#"{"action_type": "Shutdown"}"#,
            ),
            (
                &["ctrl-alt-del"],
                Method::Put,
                "/actions",
                r#"{"action_type": "SendCtrlAltDel"}"#,
            ),
            (&["get", "/version"], Method::Get, "/version", ""),
            (&["put", "/entropy", "{}"], Method::Put, "/entropy", "{}"),
            (
                &["patch", "/machine-config", "-"],
                Method::Patch,
                "/machine-config",
                "-",
            ),
        ];
        for (args, method, path, body) in cases {
            let mut argv = vec!["--api-sock", "/s"];
            argv.extend_from_slice(args);
            let c = ctl(&argv).unwrap();
            assert_eq!(c.api_sock, PathBuf::from("/s"));
            assert_eq!(
                c.command.request().unwrap(),
                (method, path.to_string(), body.to_string()),
                "{args:?}"
            );
        }
    }

    #[test]
    fn snapshot_commands_send_firecracker_bodies() {
        let body = |args: &[&str]| {
            let mut argv = vec!["--api-sock", "/s", "snapshot"];
            argv.extend_from_slice(args);
            let (m, path, b) = ctl(&argv).unwrap().command.request()?;
            assert_eq!(m, Method::Put);
            Ok::<_, String>((path, serde_json::from_str::<serde_json::Value>(&b).unwrap()))
        };
        assert_eq!(
            body(&["create", "/st", "/mem"]).unwrap(),
            (
                "/snapshot/create".to_string(),
                serde_json::json!({"snapshot_type": "Full", "snapshot_path": "/st", "mem_file_path": "/mem"})
            )
        );
        assert_eq!(
            body(&["create", "--diff", "/st", "/mem"]).unwrap().1["snapshot_type"],
            "Diff"
        );
        let (path, load) =
            body(&["load", "/st", "/mem", "--resume", "--net", "eth0=tap7"]).unwrap();
        assert_eq!(path, "/snapshot/load");
        assert_eq!(
            load,
            serde_json::json!({
                "snapshot_path": "/st",
                "mem_backend": {"backend_type": "File", "backend_path": "/mem"},
                "resume_vm": true, "track_dirty_pages": false,
                "network_overrides": [{"iface_id": "eth0", "host_dev_name": "tap7"}],
            })
        );
        assert_eq!(
            body(&["load", "/st", "/mem", "--net", "eth0"]).unwrap_err(),
            "--net eth0: expected IFACE=TAP"
        );
    }

    #[test]
    fn balloon_commands_map_to_firecrackers_calls() {
        let req = |args: &[&str]| {
            let mut argv = vec!["--api-sock", "/s", "balloon"];
            argv.extend_from_slice(args);
            ctl(&argv).unwrap().command.request().unwrap()
        };
        assert_eq!(
            req(&["set", "64"]),
            (
                Method::Patch,
                "/balloon".into(),
                r#"{"amount_mib":64}"#.into()
            )
        );
        assert_eq!(
            req(&["show"]),
            (Method::Get, "/balloon".into(), String::new())
        );
        assert_eq!(
            req(&["stats"]),
            (Method::Get, "/balloon/statistics".into(), String::new())
        );
        assert!(ctl(&["--api-sock", "/s", "balloon", "set", "-1"]).is_err());
    }

    #[test]
    fn bad_usage_is_a_clap_error() {
        for args in [
            &["info"][..],
            &["--api-sock", "/s"],
            &["--api-sock", "/s", "reboot"],
            &["--api-sock", "/s", "get"],
            &["--api-sock", "/s", "put", "/entropy"],
        ] {
            assert_eq!(ctl(args).unwrap_err().exit_code(), 2, "{args:?}");
        }
    }
}
