//! The error of a request, and the one place where errors become HTTP statuses.
//!
//! Each layer has the error it means: the catalog's core refuses a write with a
//! [`Refusal`] of its rules, the files fail with a [`StorageError`] that keeps its
//! `io::Error` or `csv::Error` as its source and names the file, and a call to another
//! service fails with a [`PeerError`] that says whether the request may have been sent and
//! keeps a peer's refusal with its status. [`Error`] is what a request handler returns: the
//! refusals the HTTP glue decides itself, and those three, each carried whole (so
//! [`std::error::Error::source`] reaches the cause). [`Error::status`] is the only mapping
//! to an HTTP status; the HTTP layer answers `{"error": "<message>"}` with it.
//!
//! Every message is whole (it names the file and says what the system said), because it is
//! what a client reads; `source()` is for code that needs the cause itself (an
//! `io::ErrorKind`, a `ureq` timeout).

use crate::balance::Failure;
use crate::catalog::refusal::{NoLead, NotHere, Stale, Unreadable};
use crate::catalog::state::Refusal;
use crate::storage::StorageError;
use std::fmt;

/// Shorthand for results whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a request failed, as its answer will say.
#[derive(Debug)]
pub enum Error {
    /// 400: the request is malformed (a bad id, bad JSON, a bad query parameter).
    BadRequest(String),
    /// 401: a token is required and was missing or wrong.
    Unauthorized,
    /// 403: refused whoever asks this way: an admin or internal request from a peer that is
    /// not on loopback to a service with no token, or a purchase from another web site
    /// (the message says which, and how to do it right).
    Forbidden(String),
    /// 404: unknown book, order or route.
    NotFound(String),
    /// 405: the route exists but not for this method; carries the `Allow` header value.
    MethodNotAllowed(&'static str),
    /// 408: the client did not send a whole request in time.
    RequestTimeout,
    /// 409: a conflict with the current state that is not the catalog's (see [`Refusal`]).
    Conflict(String),
    /// 410: what was asked for is no longer kept (a replica's log request from too long ago).
    Gone(String),
    /// 411: the body's length cannot be known: a `Transfer-Encoding` other than `chunked`, or
    /// `Transfer-Encoding` together with `Content-Length` (a request smuggling vector).
    /// Chunked bodies are accepted; a request with neither header has an empty body.
    LengthRequired,
    /// 413: the body is larger than [`crate::http::MAX_BODY`].
    PayloadTooLarge,
    /// 431: the request line and headers are larger than [`crate::http::MAX_HEAD`].
    HeadersTooLarge,
    /// 503: this server cannot do it now (a replica catching up, no back end reachable, a
    /// purchase whose outcome is unknown).
    Unavailable(String),
    /// 503: the catalog may not decide or acknowledge a write now (not the primary, its
    /// leadership may have lapsed, a switchover, a new primary's wait).
    Lead(NoLead),
    /// 503: the catalog may not answer a read now (a replica catching up or without a read
    /// lease, a primary that starts or whose leadership may have lapsed).
    Unreadable(Unreadable),
    /// 409: a catalog refuses a push of a deposed primary (an older epoch).
    Stale(Stale),
    /// 409: a catalog refuses a request that belongs to another role or setting.
    NotHere(NotHere),
    /// 404, 409 or 400: the catalog's rules refuse the write or read (its status is the
    /// refusal's, see [`Error::status`]).
    Rule(Refusal),
    /// 500, or 503 for a data directory another process holds or a write the disk did not
    /// take (full, an I/O error, a failed fsync: nothing of it was kept, and writes resume
    /// by themselves): a file could not be read or written.
    Storage(StorageError),
    /// A call to another service failed: 503 when it got no answer, the peer's own status
    /// when it refused the request (a 404, 409, 410, 431 relayed stays what it was), 500
    /// when the peer failed or its answer made no sense.
    Peer(PeerError),
    /// 500: a bug (a thread that panicked, an answer that cannot be built); never used for
    /// input the server could judge.
    Internal(String),
}

impl Error {
    /// The HTTP status this error is answered with: the only place errors become statuses.
    pub fn status(&self) -> u16 {
        match self {
            Error::BadRequest(_) => 400,
            Error::Unauthorized => 401,
            Error::Forbidden(_) => 403,
            Error::NotFound(_) => 404,
            Error::MethodNotAllowed(_) => 405,
            Error::RequestTimeout => 408,
            Error::Conflict(_) | Error::Stale(_) | Error::NotHere(_) => 409,
            Error::Gone(_) => 410,
            Error::LengthRequired => 411,
            Error::PayloadTooLarge => 413,
            Error::HeadersTooLarge => 431,
            Error::Unavailable(_) | Error::Lead(_) | Error::Unreadable(_) => 503,
            Error::Rule(Refusal::NoSuchBook(_)) => 404,
            Error::Rule(Refusal::OutOfStock { .. } | Refusal::NoIdsLeft) => 409,
            Error::Rule(Refusal::Invalid(_)) => 400,
            Error::Storage(StorageError::InUse { .. } | StorageError::Unwritable { .. }) => 503,
            Error::Storage(_) => 500,
            Error::Peer(PeerError::Unreachable { .. }) => 503,
            Error::Peer(PeerError::Answered { status, .. }) => match status {
                400..=499 | 503 => *status,
                _ => 500,
            },
            Error::Peer(PeerError::BadAnswer { .. } | PeerError::BadUrl { .. }) => 500,
            Error::Internal(_) => 500,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::BadRequest(m) | Error::NotFound(m) | Error::Conflict(m) | Error::Gone(m) => f.write_str(m),
            Error::Forbidden(m) => f.write_str(m),
            Error::Unavailable(m) | Error::Internal(m) => f.write_str(m),
            Error::Unauthorized => f.write_str("missing or wrong bearer token"),
            Error::MethodNotAllowed(allow) => write!(f, "method not allowed; allowed: {allow}"),
            Error::RequestTimeout => f.write_str("request not received in time"),
            Error::LengthRequired => f.write_str("a body needs Content-Length or Transfer-Encoding: chunked"),
            Error::PayloadTooLarge => f.write_str("body larger than 64 KiB"),
            Error::HeadersTooLarge => f.write_str("request line and headers too large"),
            Error::Rule(r) => r.fmt(f),
            Error::Lead(why) => why.fmt(f),
            Error::Unreadable(why) => why.fmt(f),
            Error::Stale(why) => why.fmt(f),
            Error::NotHere(why) => why.fmt(f),
            Error::Storage(e) => e.fmt(f),
            // A peer that failed (not one that refused) is named as such.
            Error::Peer(PeerError::Answered { status, message }) if self.status() == 500 => {
                write!(f, "peer answered {status}: {message}")
            }
            Error::Peer(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Rule(e) => Some(e),
            Error::Storage(e) => Some(e),
            Error::Peer(e) => Some(e),
            _ => None,
        }
    }
}

impl From<Refusal> for Error {
    fn from(e: Refusal) -> Self {
        Error::Rule(e)
    }
}

impl From<NoLead> for Error {
    fn from(why: NoLead) -> Self {
        Error::Lead(why)
    }
}

impl From<StorageError> for Error {
    fn from(e: StorageError) -> Self {
        Error::Storage(e)
    }
}

impl From<PeerError> for Error {
    fn from(e: PeerError) -> Self {
        Error::Peer(e)
    }
}

/// One purchase of a batch refused: its own status and message, for the batch's answer.
impl From<Error> for crate::wire::Unmade {
    fn from(e: Error) -> Self {
        crate::wire::Unmade { status: e.status(), message: e.to_string() }
    }
}

/// One purchase of a peer's batch answer refused: as if the peer had answered that
/// purchase alone with its status.
impl From<crate::wire::Unmade> for PeerError {
    fn from(u: crate::wire::Unmade) -> Self {
        PeerError::Answered { status: u.status, message: u.message }
    }
}

impl From<crate::wire::Unmade> for Error {
    fn from(u: crate::wire::Unmade) -> Self {
        Error::Peer(u.into())
    }
}

/// Why a call to another service failed.
#[derive(Debug)]
pub enum PeerError {
    /// No answer: the call failed before or after it was sent.
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
        /// What ureq said.
        source: ureq::Error,
    },
    /// The peer answered with an error status (its `error` message, or its body).
    Answered {
        /// The peer's status.
        status: u16,
        /// The peer's message.
        message: String,
    },
    /// The peer answered 2xx with a body that is not what its API says.
    BadAnswer {
        /// Base URL of the peer.
        url: String,
        /// What the JSON decoder said.
        source: serde_json::Error,
    },
    /// The request could not be built: a base URL that is not one.
    BadUrl {
        /// The base URL.
        url: String,
        /// What the request builder said.
        source: ureq::http::Error,
    },
}

impl PeerError {
    /// The failure as the choice of the next back end sees it ([`crate::balance::Pool::try_each`]).
    pub fn failure(&self) -> Failure {
        match self {
            PeerError::Unreachable { sent: false, .. } | PeerError::BadUrl { .. } => Failure::NotSent,
            PeerError::Unreachable { sent: true, .. } => Failure::MaybeSent,
            PeerError::Answered { status: 503, .. } => Failure::Unavailable,
            PeerError::Answered { .. } | PeerError::BadAnswer { .. } => Failure::Answered,
        }
    }
}

impl fmt::Display for PeerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerError::Unreachable { url, source, .. } => write!(f, "back end {url} unreachable: {source}"),
            PeerError::Answered { message, .. } => f.write_str(message),
            PeerError::BadAnswer { source, .. } => write!(f, "peer sent bad JSON: {source}"),
            PeerError::BadUrl { url, source } => write!(f, "bad URL {url}: {source}"),
        }
    }
}

impl std::error::Error for PeerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PeerError::Unreachable { source, .. } => Some(source),
            PeerError::BadAnswer { source, .. } => Some(source),
            PeerError::BadUrl { source, .. } => Some(source),
            PeerError::Answered { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    /// A peer's refusal keeps its status and message; a peer's failure is a 500 that says so.
    #[test]
    fn peers_answers_are_relayed() {
        let cases = [
            (400, "bad id", 400, "bad id"),
            (401, "missing or wrong bearer token", 401, "missing or wrong bearer token"),
            (404, "no book with id 9", 404, "no book with id 9"),
            (409, "out of stock", 409, "out of stock"),
            (410, "gone", 410, "gone"),
            (431, "too large", 431, "too large"),
            (503, "catching up", 503, "catching up"),
            (500, "disk", 500, "peer answered 500: disk"),
            (302, "moved", 500, "peer answered 302: moved"),
        ];
        for (status, message, want, text) in cases {
            let e = Error::from(PeerError::Answered { status, message: message.into() });
            assert_eq!((e.status(), e.to_string().as_str()), (want, text), "{status}");
        }
    }

    /// Every catalog refusal has its status here and nowhere else.
    #[test]
    fn the_catalogs_refusals_have_their_statuses() {
        use std::time::Duration;
        let cases: [(Error, u16); 22] = [
            (Refusal::NoSuchBook(9).into(), 404),
            (Refusal::OutOfStock { id: 1, title: "t".into() }.into(), 409),
            (Refusal::NoIdsLeft.into(), 409),
            (Refusal::Invalid("price".into()).into(), 400),
            (NoLead::NotPrimary.into(), 503),
            (NoLead::Lapsed.into(), 503),
            (NoLead::Paused.into(), 503),
            (NoLead::WaitingOutLeases(Duration::from_millis(5)).into(), 503),
            (NoLead::OtherEpoch(2).into(), 503),
            (NoLead::CacheNotFlushed.into(), 503),
            (NoLead::SyncNotRecorded("etcd".into()).into(), 503),
            (Error::Unreadable(Unreadable::CatchingUp), 503),
            (Error::Unreadable(Unreadable::Settling), 503),
            (Error::Unreadable(Unreadable::Lapsed), 503),
            (Error::Unreadable(Unreadable::ReadsNotOpen), 503),
            (Error::Unreadable(Unreadable::NoLease), 503),
            (Error::Unreadable(Unreadable::OtherEpoch { primary: 3, leased: 2 }), 503),
            (Error::Unreadable(Unreadable::Behind { primary: 9, logged: 8 }), 503),
            (Error::Stale(Stale::Push { epoch: 1, newest: 2 }), 409),
            (Error::Stale(Stale::Write { seq: 7, epoch: 1, last: 2 }), 409),
            (Error::NotHere(NotHere::IsPrimary), 409),
            (Error::NotHere(NotHere::NoGrant(crate::catalog::refusal::NoGrant::NotInSync)), 409),
        ];
        for (error, status) in cases {
            assert_eq!(error.status(), status, "{error}");
        }
    }

    #[test]
    fn storage_errors_keep_their_source() {
        let io = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "denied");
        let e = Error::from(StorageError::Io { path: "data/books.csv".into(), source: io });
        assert_eq!(e.status(), 500);
        assert_eq!(e.to_string(), "data/books.csv: denied");
        let storage = e.source().expect("the storage error");
        let io = storage.source().expect("the io::Error").downcast_ref::<std::io::Error>().unwrap();
        assert_eq!(io.kind(), std::io::ErrorKind::PermissionDenied);
        // A write the disk did not take: 503 (nothing was kept; writes resume by themselves),
        // naming the file and the cause; a copy for each answer of a batch says the same.
        let full = std::io::Error::new(std::io::ErrorKind::StorageFull, "No space left on device");
        let e = StorageError::Unwritable { path: "data/catalog.log".into(), source: full };
        for e in [Error::from(e.copy()), Error::from(e)] {
            assert_eq!(e.status(), 503);
            assert!(
                e.to_string().starts_with("data/catalog.log cannot be written now (No space left on device)"),
                "{e}"
            );
            let io = e.source().and_then(|s| s.source()).and_then(|s| s.downcast_ref::<std::io::Error>()).unwrap();
            assert_eq!(io.kind(), std::io::ErrorKind::StorageFull);
        }
    }
}
