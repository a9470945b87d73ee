//! The podvm control API: HTTP/1.1 over a Unix socket, speaking Firecracker's
//! paths and JSON shapes (see `DESIGN.md`).
//!
//! The API thread parses and validates requests only; it hands each one to
//! the VMM thread as a typed action with its own reply channel. The server,
//! the request models and `api/openapi.yaml` arrive with the control-API
//! issue; this crate already sits in the workspace so that crates depend
//! downward from the start (`api` → `resources`).

pub use resources::VmSpec;
