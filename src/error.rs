//! The one error type of the store, and the one place where errors become HTTP statuses.
//!
//! Every fallible operation in the library returns [`Result`]. The HTTP layer turns an
//! [`Error`] into `{"error": "<message>"}` with [`Error::status`]; the typed clients turn
//! a peer's error answer back into the same variant, so a front end relays a back end's
//! 404 or 409 as the same 404 or 409.

use std::fmt;

/// Shorthand for results whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong, each variant with the HTTP status it maps to.
#[derive(Debug)]
pub enum Error {
    /// 400: the request is malformed (bad id, bad JSON, an update that makes stock negative).
    BadRequest(String),
    /// 401: a token is required and was missing or wrong.
    Unauthorized,
    /// 404: unknown book, order or route.
    NotFound(String),
    /// 405: the route exists but not for this method; carries the `Allow` header value.
    MethodNotAllowed(&'static str),
    /// 408: the client did not send a whole request in time.
    RequestTimeout,
    /// 410: what was asked for is no longer kept (a replica's log request from too long ago).
    Gone(String),
    /// 409: the book is out of stock (or another conflict with the current state).
    Conflict(String),
    /// 411: the body's length cannot be known: a `Transfer-Encoding` other than `chunked`, or
    /// `Transfer-Encoding` together with `Content-Length` (a request smuggling vector).
    /// Chunked bodies are accepted; a request with neither header has an empty body.
    LengthRequired,
    /// 413: the body is larger than [`crate::http::MAX_BODY`].
    PayloadTooLarge,
    /// 431: the request line and headers are larger than [`crate::http::MAX_HEAD`].
    HeadersTooLarge,
    /// 503: a back end is needed and could not be used.
    Unavailable(String),
    /// 503: a call to another service failed before or after it was sent.
    ///
    /// `sent` is false only when the request surely never reached the peer (the
    /// connection was refused or never made), so that the call may be retried elsewhere
    /// even when it is not idempotent.
    Unreachable {
        /// Base URL of the peer.
        url: String,
        /// Whether the request may have reached the peer.
        sent: bool,
        /// Whether the connection was refused: no process listens on the peer's port.
        refused: bool,
        /// What went wrong.
        reason: String,
    },
    /// 500: a local failure (disk, a bug); never used for input the server could judge.
    Internal(String),
}

impl Error {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> u16 {
        match self {
            Error::BadRequest(_) => 400,
            Error::Unauthorized => 401,
            Error::NotFound(_) => 404,
            Error::MethodNotAllowed(_) => 405,
            Error::RequestTimeout => 408,
            Error::Conflict(_) => 409,
            Error::Gone(_) => 410,
            Error::LengthRequired => 411,
            Error::PayloadTooLarge => 413,
            Error::HeadersTooLarge => 431,
            Error::Unavailable(_) | Error::Unreachable { .. } => 503,
            Error::Internal(_) => 500,
        }
    }

    /// Rebuilds an error from a peer's answer (status and `error` message).
    pub fn from_status(status: u16, message: String) -> Error {
        match status {
            400 => Error::BadRequest(message),
            401 => Error::Unauthorized,
            404 => Error::NotFound(message),
            409 => Error::Conflict(message),
            413 => Error::PayloadTooLarge,
            // Any other refusal of the request stays a refusal.
            402..=499 => Error::BadRequest(message),
            503 => Error::Unavailable(message),
            _ => Error::Internal(format!("peer answered {status}: {message}")),
        }
    }

    /// True when a read may be retried on another replica.
    pub fn is_retryable_read(&self) -> bool {
        matches!(self, Error::Unavailable(_) | Error::Unreachable { .. })
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::BadRequest(m) | Error::NotFound(m) | Error::Conflict(m) | Error::Gone(m) => f.write_str(m),
            Error::Unavailable(m) | Error::Internal(m) => f.write_str(m),
            Error::Unauthorized => f.write_str("missing or wrong bearer token"),
            Error::MethodNotAllowed(allow) => write!(f, "method not allowed; allowed: {allow}"),
            Error::RequestTimeout => f.write_str("request not received in time"),
            Error::LengthRequired => f.write_str("a body needs Content-Length or Transfer-Encoding: chunked"),
            Error::PayloadTooLarge => f.write_str("body larger than 64 KiB"),
            Error::HeadersTooLarge => f.write_str("request line and headers too large"),
            Error::Unreachable { url, reason, .. } => write!(f, "back end {url} unreachable: {reason}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Internal(format!("I/O error: {e}"))
    }
}

impl From<csv::Error> for Error {
    fn from(e: csv::Error) -> Self {
        Error::Internal(format!("CSV error: {e}"))
    }
}
