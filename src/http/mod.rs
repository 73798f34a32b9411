//! A small HTTP/1.1 server on `std::net`, with the limits a public service needs.
//!
//! Why not tiny_http 0.12 (the first choice): it has no limit on the head or the body, no
//! read timeouts, a thread per connection without a bound, and dropping a request whose
//! body was not read allocates the whole declared `Content-Length` at once
//! (`EqualReader::drop`), which aborts the process for `Content-Length: 100000000000000`.
//! Every way its API offers to dispose of a request (respond, upgrade, drop) runs that
//! drop, so the abort cannot be avoided from outside. This module is the replacement.
//!
//! # Parts
//! - `parse.rs`: the protocol without I/O. A request head is parsed from a byte buffer by
//!   httparse plus our rules (the [`MAX_HEAD`] and [`MAX_HEADERS`] limits among them); the
//!   body's framing, a chunk's size line and the keep-alive rule are read off bytes or the
//!   parsed head. It never sees a socket, so it is tested on buffers.
//! - `server.rs`: the sockets. The accept loop, the pool of workers that serve parked
//!   connections as they become readable (a connection costs a thread only while one of
//!   its requests is served; the store's own connections get a thread each), the caps
//!   ([`MAX_CONNECTIONS`], [`PER_ADDRESS`] from one client address), the deadlines
//!   ([`HEAD_TIMEOUT`], [`BODY_TIMEOUT`], [`IDLE_TIMEOUT`], shorter under pressure),
//!   reading bodies (at most [`MAX_BODY`]), keep-alive, writing answers, and the graceful
//!   stop: once `shutdown` is set the accept loop stops, requests in flight finish and
//!   idle connections close, then [`serve`] returns.
//! - `poll.rs`: the epoll set the workers wait on (one-shot readiness, many waiters).
//! - `budget.rs`: load shedding without I/O. Which budget a request is served from
//!   ([`classify`]: control, peer or public), the per-address count, the waits and caps,
//!   the prebuilt refusal.
//! - `semaphore.rs`: the counting semaphore that bounds running handlers of one budget.
//! - `message.rs`: what handlers see and give back. [`Request`] and [`Response`], the
//!   routing helpers [`route`] and [`respond`], [`parse_id`], [`check_token`], [`json_body`]
//!   and percent-coding.
//!
//! Architecture invariant: no input makes this layer panic, allocate more than
//! `MAX_HEAD + MAX_BODY` per connection, or answer 500; the handler sees only complete,
//! bounded requests. A body's declared length is checked before any of it is read; a slow
//! client holds no thread while its head comes, and never a handler slot.
//!
//! Architecture invariant: `parse.rs` sees bytes, never a socket or a clock, and
//! `server.rs` moves bytes and keeps time but judges no syntax; every public name lives at
//! `crate::http::...`, whichever file defines it.

mod budget;
mod message;
mod parse;
pub(crate) mod poll;
mod semaphore;
mod server;

use std::time::Duration;

pub use budget::{
    classify, raise_fd_limit, Class, Trust, CONTROL_SLOTS, FIRST_HEAD_TIMEOUT, MAX_CONNECTIONS, PEER_HEADER, PEER_WAIT,
    PER_ADDRESS, PRESSED_HEAD, PRESSED_IDLE, PUBLIC_WAIT, RETRY_AFTER,
};
pub use message::{
    check_token, is_loopback, json_body, parse_id, percent_decode, percent_encode, respond, route, Request, Response,
    Version,
};
pub(crate) use server::is_timeout;
pub use server::{bind, blocking, later, serve, step_aside, Reply, ServerConfig};

/// Largest request line plus headers.
pub const MAX_HEAD: usize = 16 * 1024;
/// Largest request body.
pub const MAX_BODY: usize = 64 * 1024;
/// Most headers in one request.
pub const MAX_HEADERS: usize = 64;
/// Time allowed to send a whole request head once its first byte arrived.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed to send the body once the head is in.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// An idle keep-alive connection is closed after this long.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a stopping server waits for requests in flight.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
