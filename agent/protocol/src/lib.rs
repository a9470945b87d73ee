//! The podvm agent's wire protocol: the ttrpc API the shim calls
//! ([`agent`], [`agent_ttrpc`], from `protos/agent.proto`), the header
//! that opens each stdio stream ([`stdio`]), and the one connector both
//! sides use to reach each other ([`transport`]).

pub mod stdio;
pub mod transport;

/// The API's protobuf messages, generated from `protos/agent.proto`.
#[allow(
    missing_docs,
    clippy::all,
    unused_qualifications,
    non_upper_case_globals,
    non_camel_case_types,
    unsafe_code,
    unused
)]
pub mod agent {
    include!(concat!(env!("OUT_DIR"), "/agent.rs"));
}

/// The API's ttrpc client and server stubs, generated from `protos/agent.proto`.
#[allow(
    missing_docs,
    clippy::all,
    unused_qualifications,
    non_upper_case_globals,
    non_camel_case_types,
    unsafe_code,
    unused
)]
pub mod agent_ttrpc {
    include!(concat!(env!("OUT_DIR"), "/agent_ttrpc.rs"));
}

/// The vsock port (or Unix socket suffix) the agent's ttrpc API listens on.
pub const API_PORT: u32 = 1024;
/// The port each process stdio stream connects to.
pub const STDIO_PORT: u32 = 1025;
