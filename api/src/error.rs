//! Why a request failed, and the status code each failure gets.

use hyper::StatusCode;
use resources::action::ActionError;

/// A request the API refuses, or an action the VMM refused. Its `Display`
/// is the `fault_message` the client sees.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No route has this path.
    #[error("no such path: {path}")]
    NotFound {
        /// The request's path.
        path: String,
    },
    /// The path exists, the method does not.
    #[error("method {method} is not allowed on {path} (allowed: {})", allowed.join(", "))]
    MethodNotAllowed {
        /// The request's method.
        method: String,
        /// The request's path.
        path: String,
        /// The methods the path serves.
        allowed: &'static [&'static str],
    },
    /// The body is larger than [`crate::MAX_BODY_SIZE`].
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The body could not be read from the connection.
    #[error("cannot read the request body: {0}")]
    ReadBody(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The body is not the JSON this endpoint takes: malformed, a wrong
    /// type, a missing or unknown field.
    #[error("{what}: {source}")]
    InvalidBody {
        /// What was being parsed (`machine-config`, `drive "rootfs"`, …).
        what: String,
        /// serde's message, which names the field and position.
        #[source]
        source: serde_json::Error,
    },
    /// The body breaks the schema in a way its type alone does not catch
    /// (the whole message).
    #[error("{0}")]
    Schema(String),
    /// The id in the body is not the one in the path.
    #[error("{field} {body_id:?} in the body does not match {path_id:?} in the path")]
    IdMismatch {
        /// The body's id field (`drive_id`, `iface_id`).
        field: &'static str,
        /// The id in the path.
        path_id: String,
        /// The id in the body.
        body_id: String,
    },
    /// A feature podvm does not have yet; the whole message
    /// (`"vsock is not supported yet"`).
    #[error("{0}")]
    NotSupported(&'static str),
    /// A field, or a value of one, podvm does not honour (the same
    /// refusal a configuration file gets).
    #[error(transparent)]
    Unsupported(#[from] resources::firecracker::Unsupported),
    /// A snapshot load that does not say where memory comes from, or asks
    /// for what podvm cannot do.
    #[error(transparent)]
    SnapshotLoad(resources::snapshot::SnapshotLoadError),
    /// The VMM refused the action.
    #[error(transparent)]
    Action(#[from] ActionError),
    /// The VMM's sender panicked while handling the action.
    #[error("internal error while handling the request: {0}")]
    Internal(String),
}

impl ApiError {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::ReadBody(_)
            | ApiError::InvalidBody { .. }
            | ApiError::IdMismatch { .. }
            | ApiError::Schema(_)
            | ApiError::NotSupported(_)
            | ApiError::Unsupported(_)
            | ApiError::SnapshotLoad(_)
            | ApiError::Action(_) => StatusCode::BAD_REQUEST,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The status of each kind of error (their messages are checked where
    /// real requests produce them: `routes` and `tests/server.rs`).
    #[test]
    fn statuses_follow_firecracker() {
        let cases = [
            (
                ApiError::NotFound { path: "/x".into() },
                StatusCode::NOT_FOUND,
            ),
            (
                ApiError::MethodNotAllowed {
                    method: "DELETE".into(),
                    path: "/vm".into(),
                    allowed: &["PATCH"],
                },
                StatusCode::METHOD_NOT_ALLOWED,
            ),
            (
                ApiError::PayloadTooLarge { limit: 51200 },
                StatusCode::PAYLOAD_TOO_LARGE,
            ),
            (
                ApiError::from(ActionError("the VM is not running".into())),
                StatusCode::BAD_REQUEST,
            ),
            (
                ApiError::NotSupported("vsock is not supported yet"),
                StatusCode::BAD_REQUEST,
            ),
            (
                ApiError::Unsupported(resources::firecracker::Unsupported("x".into())),
                StatusCode::BAD_REQUEST,
            ),
            (
                ApiError::IdMismatch {
                    field: "drive_id",
                    path_id: "rootfs".into(),
                    body_id: "data".into(),
                },
                StatusCode::BAD_REQUEST,
            ),
            (
                ApiError::Internal("panicked".into()),
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
        ];
        for (e, status) in cases {
            assert_eq!(e.status(), status, "{e:?}");
        }
    }
}
