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
pub use resources::action::{ActionError, ActionResult, Reply, VmmAction, VmmData};
pub use resources::VmSpec;
pub use response::{error_response, success_response, ResponseBody};
pub use routes::{route, RouteSpec, MAX_BODY_SIZE, ROUTES};
pub use server::{start_server, start_server_with, ApiServer};

/// Hands an action to the VMM (the VMM side implements it with a channel
/// + `EventFd`).
///
/// The server first offers each action to [`ActionSender::submit`], which
/// returns at once and answers through the [`Reply`] later: the API
/// thread then awaits the answer on its own event loop, with no other
/// thread involved. A sender that can only answer by blocking keeps the
/// default `submit`, and the server calls [`ActionSender::send`] on a
/// blocking thread instead; either way a slow action does not stall other
/// connections.
pub trait ActionSender: Send + Sync + 'static {
    /// Sends `action` and blocks until the VMM answers.
    fn send(&self, action: VmmAction) -> ActionResult;

    /// Hands `action` over without waiting; `reply` gets the answer (or is
    /// dropped unanswered if the VMM stops). Returns both back when this
    /// sender cannot do that, which is the default.
    // The error hands the caller's own values back, by move, once per
    // request: boxing them would cost an allocation on every call instead.
    #[allow(clippy::result_large_err)]
    fn submit(&self, action: VmmAction, reply: Reply) -> Result<(), (VmmAction, Reply)> {
        Err((action, reply))
    }
}
