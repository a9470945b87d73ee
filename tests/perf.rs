//! The performance suite's own smoke test: `podvm-perf` runs every
//! scenario with 2 repetitions (small sizes, `--quick`) against podvm,
//! with podvm also standing in as the `--target` (driven with podvm's
//! command line), so the side-by-side path, the JSON and the plots are
//! exercised too and cannot silently rot. The numbers are not looked at.

mod common;

use std::process::Command;

fn perf() -> Command {
    Command::new(env!("CARGO_BIN_EXE_podvm-perf"))
}

#[test]
fn lists_scenarios_and_refuses_unknown_ones() {
    let out = perf().arg("--list").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for s in [
        "startup", "boot", "pause", "destroy", "memory", "density", "api", "block", "net",
        "snapshot",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(s)),
            "{s} missing: {text}"
        );
    }
    let out = perf().args(["--scenario", "bogus"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown scenario"));
}

#[test]
fn smoke_run_of_every_scenario() {
    if !common::kvm_available("smoke_run_of_every_scenario") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("perf.json");
    let plots = dir.path().join("plots");
    let md = dir.path().join("perf.md");
    let podvm = env!("CARGO_BIN_EXE_podvm");
    let out = perf()
        .args([
            "--reps",
            "2",
            "--slow-reps",
            "2",
            "--quick",
            "--density",
            "2",
        ])
        .args([
            "--podvm",
            podvm,
            "--target",
            podvm,
            "--target-flavor",
            "podvm",
        ])
        .arg("--json")
        .arg(&json)
        .arg("--plot")
        .arg(&plots)
        .arg("--markdown")
        .arg(&md)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{table}\n{stderr}");
    assert!(table.contains("podvm/target"), "{table}");
    let md = std::fs::read_to_string(&md).unwrap();
    assert!(
        md.contains("| startup | exec_to_api_accepting | ms |"),
        "{md}"
    );

    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let scenarios = doc["scenarios"].as_array().unwrap();
    assert_eq!(scenarios.len(), 11, "{doc:#}");
    for s in scenarios {
        let name = s["name"].as_str().unwrap();
        assert!(plots.join(format!("{name}.svg")).exists(), "{name}.svg");
        for side in ["podvm", "target"] {
            let status = s["vmms"][side]["status"].as_str().unwrap();
            let reason = s["vmms"][side]["reason"].as_str().unwrap_or_default();
            match (name, status) {
                (_, "ran") => {}
                // Not in podvm yet (its /snapshot/create answers 400 with
                // this fault message; any other answer must not hide
                // here), and the tap needs root: marked, not dropped.
                ("snapshot", "unsupported") if reason.contains("snapshots are not supported") => {
                    continue
                }
                ("net", "skipped") => continue,
                _ => panic!("{name} on {side}: {:#}", s["vmms"][side]),
            }
            let figures = s["figures"].as_array().unwrap();
            assert!(!figures.is_empty(), "{name} has no figures");
            for f in figures {
                let n = f[side]["samples"].as_array().map_or(0, Vec::len);
                assert!(n >= 2, "{name}/{} on {side}: {n} samples", f["name"]);
            }
        }
    }
}

/// Firecracker mode against a real Firecracker, where one is named by
/// `PODVM_PERF_FIRECRACKER` (the smoke test above drives podvm as the
/// target, so only this checks Firecracker's command lines and config
/// files for real). Opt-in, as it needs a Firecracker binary:
/// `PODVM_PERF_FIRECRACKER=/path/to/firecracker cargo test --test perf --
/// --ignored`; without the variable it skips, saying so.
#[test]
#[ignore = "needs a Firecracker binary: PODVM_PERF_FIRECRACKER=/path/to/firecracker cargo test --test perf -- --ignored"]
fn firecracker_mode_runs_against_a_real_firecracker() {
    let Some(fc) = std::env::var_os("PODVM_PERF_FIRECRACKER") else {
        testkit::skip(
            testkit::Need::Firecracker,
            "firecracker_mode_runs_against_a_real_firecracker",
            "set PODVM_PERF_FIRECRACKER to a Firecracker binary",
        );
        return;
    };
    assert!(
        std::path::Path::new(&fc).exists(),
        "PODVM_PERF_FIRECRACKER={} does not exist",
        fc.to_string_lossy()
    );
    if !common::kvm_available("firecracker_mode_runs_against_a_real_firecracker") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("perf.json");
    let out = perf()
        .args(["--reps", "2", "--slow-reps", "2", "--quick"])
        .args([
            "--scenario",
            "startup",
            "--scenario",
            "boot",
            "--scenario",
            "memory",
        ])
        .args(["--scenario", "destroy"])
        .args(["--podvm", env!("CARGO_BIN_EXE_podvm")])
        .arg("--target")
        .arg(&fc)
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Every figure Firecracker can run has a number and a ratio; the
    // Shutdown figures alone are marked unsupported for it.
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let text = v.to_string();
    assert!(text.contains("exec_to_api_accepting"), "{text}");
    assert!(text.contains("\"reset_to_exit_32mib\""), "{text}");
    assert!(text.contains("no Shutdown action"), "{text}");
    assert!(
        stdout.contains("exec_to_first_byte_config_file"),
        "{stdout}"
    );
    assert!(!stdout.contains("FAILED"), "{stdout}");
}
