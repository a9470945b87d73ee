//! Generates the agent API's protobuf messages and ttrpc stubs into OUT_DIR.

use std::fs;
use std::path::PathBuf;

fn main() {
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    println!("cargo:rerun-if-changed=protos/agent.proto");
    ttrpc_codegen::Codegen::new()
        .out_dir(&out)
        .inputs(["protos/agent.proto"])
        .include("protos")
        .rust_protobuf()
        .customize(ttrpc_codegen::Customize {
            ..Default::default()
        })
        .run()
        .expect("generating the agent API from protos/agent.proto");
    // The generated files carry inner attributes and doc comments (`#!`,
    // `//!`) that cannot be `include!`d into a module: drop them.
    for name in ["agent.rs", "agent_ttrpc.rs"] {
        let path = out.join(name);
        let text = fs::read_to_string(&path).expect("reading generated code");
        let kept: Vec<&str> = text
            .lines()
            .filter(|l| !l.trim_start().starts_with("#!") && !l.trim_start().starts_with("//!"))
            .collect();
        fs::write(&path, kept.join("\n")).expect("writing generated code");
    }
}
