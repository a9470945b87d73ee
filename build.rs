//! Builds the tiny test guests (tests/guests/) with the host's assembler,
//! so that integration tests and benchmarks find them at
//! `env!("PODVM_TEST_GUESTS")`.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let out =
        PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("guests");
    println!("cargo:rerun-if-changed=tests/guests");
    println!("cargo:rustc-env=PODVM_TEST_GUESTS={}", out.display());
    let script = PathBuf::from("tests/guests/build.sh");
    if !script.exists() {
        return;
    }
    // The guests are for the tests and benchmarks only: without binutils the
    // binary still builds, and the tests say which guest is missing.
    match Command::new("sh").arg(&script).arg(&out).status() {
        Ok(status) if status.success() => {}
        Ok(status) => println!(
            "cargo:warning=tests/guests/build.sh failed ({status}): install binutils (as, ld) to build the test guests"
        ),
        Err(e) => println!("cargo:warning=cannot run sh to build the test guests: {e}"),
    }
}
