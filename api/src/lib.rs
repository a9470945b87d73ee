//! The podvm control API: HTTP/1.1 over a Unix socket, speaking Firecracker's
//! paths and JSON shapes (see `DESIGN.md`, "Control API", and
//! `api/openapi.yaml`).
//!
//! The API thread parses and validates requests only ([`route`]); it hands
//! each one to the VMM thread as a typed [`VmmAction`] through an
//! [`ActionSender`], and turns the answer into a response ([`response`]).
//! It never touches VM state.

pub mod client;
mod error;
mod response;
mod routes;
mod server;

pub use error::ApiError;
pub use resources::action::{ActionError, ActionResult, VmmAction, VmmData};
pub use resources::VmSpec;
pub use response::{error_response, success_response, ResponseBody};
pub use routes::{route, RouteSpec, MAX_BODY_SIZE, ROUTES};
pub use server::{start_server, ApiServer};

/// Hands an action to the VMM and waits for its answer (the VMM side
/// implements it with a channel + `EventFd`).
///
/// `send` blocks; the server calls it off its event loop, so a slow action
/// does not stall other connections.
pub trait ActionSender: Send + Sync + 'static {
    /// Sends `action` and blocks until the VMM answers.
    fn send(&self, action: VmmAction) -> ActionResult;
}
