//! Typed clients: how one service (or the bench, or a test) talks to another.
//!
//! One [`Http`] wraps one `ureq::Agent`, configured once: statuses are answers, not errors
//! (`http_status_as_error(false)`), every call has a connect timeout and an overall
//! timeout, idle connections are pooled and reused, and the bearer token is sent when set.
//! A failed call is a [`PeerError`]: [`PeerError::Unreachable`] with `sent: false` only
//! when the request surely never left (refused or never connected), which is what makes a
//! retry of a purchase elsewhere safe; a peer's error answer is [`PeerError::Answered`]
//! with the peer's own status and message, so a front end relays a back end's 404 or 409
//! as the same 404 or 409 ([`crate::error::Error::status`]).

pub use crate::error::PeerError;
use crate::http::percent_encode;
use crate::wire::{
    Book, BookPage, BookUpdate, Committed, ErrorBody, LeaseGrant, LeaseRequest, LogPage, NewBook, Order, OrderPage,
    PageShape, PurchaseBatch, PurchaseBatchAnswer, PurchasePage, PurchaseRequest, ReplicaAck, Replicate, ResyncAnswer,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use ureq::http::{Method, Request, Uri};
use ureq::unversioned::resolver::{self, DefaultResolver, ResolvedSocketAddrs};
use ureq::unversioned::transport::{DefaultConnector, NextTimeout};

/// Time to establish a connection to a peer on the same network.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Most bytes read from a peer's answer (a whole catalog or order log fits).
const MAX_ANSWER: u64 = 64 * 1024 * 1024;
/// Buffers of one pooled connection, each way, and the largest answer head accepted (our
/// servers send heads of a few hundred bytes; bodies stream through the buffer whatever
/// their size). ureq's default is 128 KiB each way: with a pool of 64 connections per peer
/// that was most of a service's memory.
const BUFFER: usize = 16 * 1024;
/// Idle pooled connections are dropped before the servers' own idle timeout closes them.
const MAX_IDLE_AGE: Duration = Duration::from_secs(20);
/// How long a resolved host name is used before it is looked up again. An address used
/// after its container stopped costs a call the whole connect timeout (nobody answers
/// ARP for it), so this stays short: at 1 s, a purchase right after `docker stop` of the
/// primary took 1,012 ms to get its 503 (two hops paid 500 ms each); at 100 ms, 13 ms.
/// Lookups stay rare: at most ten a second per name, and none for IP addresses.
const NAME_TTL: Duration = Duration::from_millis(100);

/// Results of calls to peers.
pub type Result<T, E = PeerError> = std::result::Result<T, E>;

/// An answer from a peer: status, body, and the `X-Cache`/`X-Backend` headers if any.
#[derive(Debug, Clone)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// The body.
    pub body: Vec<u8>,
    /// `X-Cache` as the peer sent it.
    pub cache: Option<String>,
    /// `X-Backend` as the peer sent it.
    pub backend: Option<String>,
    /// `X-Seq` (catalog reads): the catalog write the answer reflects.
    pub seq: Option<u64>,
    /// `Link` (paged lists): where the next page is, see [`crate::page::next_target`].
    pub link: Option<String>,
    /// The peer's base URL.
    pub url: String,
}

impl Answer {
    /// The body as `T` if the status is 2xx, else the peer's error.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T> {
        if (200..300).contains(&self.status) {
            serde_json::from_slice(&self.body).map_err(|source| PeerError::BadAnswer { url: self.url.clone(), source })
        } else {
            Err(self.error())
        }
    }

    /// The peer's error answer: its status and its message.
    pub fn error(&self) -> PeerError {
        let message = serde_json::from_slice::<ErrorBody>(&self.body)
            .map(|b| b.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(&self.body).into_owned());
        PeerError::Answered { status: self.status, message }
    }
}

/// An HTTP client for calls between services.
#[derive(Clone)]
pub struct Http {
    agent: ureq::Agent,
    token: Option<String>,
    /// Whether calls say they come from another service ([`crate::http::PEER_HEADER`]).
    peer: bool,
}

impl Http {
    /// A client whose calls give up after `timeout`, pooling up to `pool` connections per peer.
    pub fn new(timeout: Duration, pool: usize, token: Option<String>) -> Http {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_global(Some(timeout))
            .max_idle_connections(pool * 8)
            .max_idle_connections_per_host(pool)
            .max_idle_age(MAX_IDLE_AGE)
            .max_redirects(0)
            .input_buffer_size(BUFFER)
            .output_buffer_size(BUFFER)
            .max_response_header_size(BUFFER)
            .user_agent("bazar")
            .build();
        let agent = ureq::Agent::with_parts(config, DefaultConnector::default(), Resolver::default());
        Http { agent, token, peer: false }
    }

    /// The same client, its calls marked as a service's own ([`crate::http::PEER_HEADER`]):
    /// with the token (or from loopback when the store has none), the called service
    /// serves them from its peer budget, which public load cannot fill. For the services'
    /// clients of each other only; the bench, the probe and the tests are public.
    pub fn peer(mut self) -> Http {
        self.peer = true;
        self
    }

    /// Sends `method` to `base` + `path` with an optional JSON body.
    pub fn call(&self, method: Method, base: &str, path: &str, body: Option<Vec<u8>>) -> Result<Answer> {
        let mut req = Request::builder().method(method).uri(format!("{base}{path}"));
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        if self.peer {
            req = req.header(crate::http::PEER_HEADER, "1");
        }
        // The trace this call is part of (the thread's current span), W3C Trace Context.
        if let Some((traceparent, tracestate)) = crate::trace::outgoing() {
            req = req.header("traceparent", traceparent);
            if let Some(state) = tracestate {
                req = req.header("tracestate", &*state);
            }
        }
        // The serving thread (a pool worker, say) will wait for the answer.
        crate::http::blocking();
        let sent = match body {
            Some(b) => {
                self.agent.run(req.header("Content-Type", "application/json").body(b).map_err(|e| bad_uri(base, e))?)
            }
            // A sized empty body (Content-Length: 0); `()` would be sent chunked.
            None if matches!(method_of(&req), Some(m) if m != Method::GET && m != Method::HEAD) => {
                self.agent.run(req.body(Vec::new()).map_err(|e| bad_uri(base, e))?)
            }
            None => self.agent.run(req.body(()).map_err(|e| bad_uri(base, e))?),
        };
        let mut resp = sent.map_err(|e| unreachable(base, e))?;
        let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        let (cache, backend) = (header("x-cache"), header("x-backend"));
        let seq = header("x-seq").and_then(|s| s.parse().ok());
        let link = header("link");
        let status = resp.status().as_u16();
        let body = resp.body_mut().with_config().limit(MAX_ANSWER).read_to_vec().map_err(|e| unreachable(base, e))?;
        Ok(Answer { status, body, cache, backend, seq, link, url: base.to_string() })
    }

    /// GET, decoded.
    pub fn get<T: DeserializeOwned>(&self, base: &str, path: &str) -> Result<T> {
        self.call(Method::GET, base, path, None)?.json()
    }

    /// A JSON body sent with `method`, the answer decoded.
    pub fn send<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        base: &str,
        path: &str,
        body: &B,
    ) -> Result<T> {
        let bytes = serde_json::to_vec(body).expect("wire types always serialize");
        self.call(method, base, path, Some(bytes))?.json()
    }
}

/// Host names to addresses, without a thread per call.
///
/// ureq resolves the host of every request, pooled connection or not, and with a timeout
/// set its default resolver does each lookup on a new thread: a thread spawned per call
/// between services. Here an IP address needs no lookup at all, and a name (a container's,
/// say) is looked up by ureq's resolver at most once per [`NAME_TTL`]; failures are not
/// kept, so a name that does not resolve is retried at the next call.
#[derive(Debug, Default)]
struct Resolver {
    names: Mutex<HashMap<String, (Instant, ResolvedSocketAddrs)>>,
}

impl resolver::Resolver for Resolver {
    fn resolve(
        &self,
        uri: &Uri,
        config: &ureq::config::Config,
        timeout: NextTimeout,
    ) -> std::result::Result<ResolvedSocketAddrs, ureq::Error> {
        let Some(name) = uri.scheme().zip(uri.authority()).and_then(|(s, a)| DefaultResolver::host_and_port(s, a))
        else {
            return DefaultResolver::default().resolve(uri, config, timeout);
        };
        if let Ok(addr) = name.parse::<SocketAddr>() {
            let mut addrs = self.empty();
            addrs.push(addr);
            return Ok(addrs);
        }
        let names = || self.names.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, addrs)) = names().get(&name) {
            if at.elapsed() < NAME_TTL {
                return Ok(addrs.clone());
            }
        }
        let addrs = DefaultResolver::default().resolve(uri, config, timeout)?;
        names().insert(name, (Instant::now(), addrs.clone()));
        Ok(addrs)
    }
}

fn method_of(req: &ureq::http::request::Builder) -> Option<Method> {
    req.method_ref().cloned()
}

fn bad_uri(base: &str, source: ureq::http::Error) -> PeerError {
    PeerError::BadUrl { url: base.to_string(), source }
}

/// A name that did not resolve (a stopped container's name, say): nothing was sent.
/// std reports getaddrinfo's failure with no kind of its own, only this message.
fn is_lookup_failure(e: &io::Error) -> bool {
    e.to_string().starts_with("failed to lookup address information")
}

/// Classifies a failed call: `sent` is false only when the request surely never left.
fn unreachable(base: &str, e: ureq::Error) -> PeerError {
    use ureq::Timeout;
    let sent = match &e {
        ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => false,
        ureq::Error::Timeout(Timeout::Connect | Timeout::Resolve) => false,
        ureq::Error::Io(io) => {
            let never_connected = matches!(
                io.kind(),
                io::ErrorKind::ConnectionRefused
                    | io::ErrorKind::NetworkUnreachable
                    | io::ErrorKind::HostUnreachable
                    | io::ErrorKind::AddrNotAvailable
            );
            !(never_connected || is_lookup_failure(io))
        }
        _ => true,
    };
    let refused = matches!(&e, ureq::Error::Io(io) if io.kind() == io::ErrorKind::ConnectionRefused);
    log::debug!("{base}: {e} (sent: {sent})");
    PeerError::Unreachable { url: base.to_string(), sent, refused, source: e }
}

/// What `GET /internal/log` is asked ([`CatalogClient::log`]): the writes after `after`
/// (the asker's write of `epoch`, of fingerprint `sum` and after which its log's chain is
/// `chain`, when given) in history `history`, at most `limit` of them (a page when None).
#[derive(Clone, Copy, Debug, Default)]
pub struct LogQuery<'a> {
    pub after: u64,
    pub history: &'a str,
    pub epoch: u64,
    pub sum: Option<u32>,
    pub chain: Option<u32>,
    pub limit: Option<usize>,
}

/// A catalog server's API.
#[derive(Clone)]
pub struct CatalogClient {
    /// The HTTP client.
    pub http: Http,
}

impl CatalogClient {
    /// One book (`GET /books/{id}`).
    pub fn book(&self, base: &str, id: u32) -> Result<Book> {
        self.http.get(base, &format!("/books/{id}"))
    }

    /// Books of a topic, or all (`GET /books[?topic=]`).
    pub fn books(&self, base: &str, topic: Option<&str>) -> Result<Vec<Book>> {
        match topic {
            Some(t) => self.http.get(base, &format!("/books?topic={}", percent_encode(t))),
            None => self.http.get(base, "/books"),
        }
    }

    /// Price and stock update (`PATCH /books/{id}`).
    pub fn update(&self, base: &str, id: u32, update: &BookUpdate) -> Result<Book> {
        self.http.send(Method::PATCH, base, &format!("/books/{id}"), update)
    }

    /// Takes one copy (`POST /books/{id}/purchase`), for an order when one is given.
    pub fn purchase(&self, base: &str, id: u32, order: Option<(&str, &str)>) -> Result<Book> {
        let body = PurchaseRequest { order_id: order.map(|o| o.0.to_string()), at: order.map(|o| o.1.to_string()) };
        self.http.send(Method::POST, base, &format!("/books/{id}/purchase"), &body)
    }

    /// Whether a catalog can do its job now: `GET /ready` answers 200 or, from a catalog
    /// without that route (404), `GET /health` answers 200.
    pub fn ready(&self, base: &str) -> Result<()> {
        self.readiness(base).map(|_| ())
    }

    /// As [`CatalogClient::ready`], and the role the catalog says it holds when ready
    /// (`primary`, `replica`; None when its answer names none).
    pub fn readiness(&self, base: &str) -> Result<Option<String>> {
        let ready = self.http.call(Method::GET, base, "/ready", None)?;
        let answer = match ready.status {
            404 => self.http.call(Method::GET, base, "/health", None)?,
            _ => ready,
        };
        match answer.status {
            200 => Ok(serde_json::from_slice::<serde_json::Value>(&answer.body)
                .ok()
                .and_then(|v| v.get("role").and_then(|r| r.as_str()).map(str::to_string))),
            _ => Err(answer.error()),
        }
    }

    /// Takes a batch of copies, each for its order (`POST /internal/purchases`): one answer
    /// per purchase, in order.
    pub fn purchase_batch(&self, base: &str, batch: &PurchaseBatch) -> Result<PurchaseBatchAnswer> {
        self.http.send(Method::POST, base, "/internal/purchases", batch)
    }

    /// The purchases journaled after write `after` (order reconciliation), whole or by their
    /// writes and order ids (`shape`, see [`PurchasePage::ids`]); a replica forwards it to
    /// the primary.
    pub fn purchases(&self, base: &str, after: u64, shape: PageShape) -> Result<PurchasePage> {
        self.http.get(base, &format!("/internal/purchases?after={after}&shape={}", shape.as_str()))
    }

    /// The purchases journaled after write `after` in this catalog's own journal, whatever
    /// its role (a whole copy takes them with the books).
    pub fn journal(&self, base: &str, after: u64) -> Result<PurchasePage> {
        self.http.get(base, &format!("/internal/purchases?after={after}&here=1"))
    }

    /// How far a catalog's data got (`GET /internal/identity`).
    pub fn identity(&self, base: &str) -> Result<crate::wire::Identity> {
        self.http.get(base, "/internal/identity")
    }

    /// Tells a catalog that every order server holds the order of every journaled purchase
    /// up to write `held` (so its journal may forget them); answers the purchases after it.
    pub fn report_held(&self, base: &str, held: u64) -> Result<PurchasePage> {
        self.http.get(base, &format!("/internal/purchases?after={held}&held={held}"))
    }

    /// A page of the whole catalog, books with ids above `after` (a replica's full copy).
    pub fn copy_page(&self, base: &str, after: u32, limit: usize) -> Result<BookPage> {
        self.http.get(base, &format!("/internal/books?after={after}&limit={limit}"))
    }

    /// The writes after `q.after` in history `q.history` (a replica that missed some), or
    /// None when the catalog asked no longer has them, has another history, or holds a
    /// write of another epoch there (410: the logs diverged, and the asker copies the
    /// catalog). With static roles another chain there (or, when either knows none, a
    /// write of another fingerprint), or a catalog whose own log is marked diverged from
    /// that history, is a 409 (diverged, and nothing is copied over the asker).
    pub fn log(&self, base: &str, q: &LogQuery) -> Result<Option<LogPage>> {
        let (after, epoch) = (q.after, q.epoch);
        let mut path = format!("/internal/log?after={after}&history={}&epoch={epoch}", percent_encode(q.history));
        if let Some(sum) = q.sum {
            path.push_str(&format!("&sum={sum:08x}"));
        }
        if let Some(chain) = q.chain {
            path.push_str(&format!("&chain={chain:08x}"));
        }
        if let Some(limit) = q.limit {
            path.push_str(&format!("&limit={limit}"));
        }
        let answer = self.http.call(Method::GET, base, &path, None)?;
        match answer.status {
            410 => Ok(None),
            _ => answer.json().map(Some),
        }
    }

    /// Asks a replica to copy the whole catalog from its primary (it is too far behind).
    pub fn resync(&self, base: &str) -> Result<ResyncAnswer> {
        self.http.call(Method::POST, base, "/internal/resync", None)?.json()
    }

    /// Pushes a batch of writes to a replica, in order, from a primary at `epoch`; with
    /// etcd, `committed` is the primary's commit point (the replica shows writes up to it,
    /// no further: an empty push with it is the commit notice).
    pub fn replicate(
        &self,
        base: &str,
        epoch: u64,
        committed: Option<u64>,
        pushes: &[Arc<Replicate>],
    ) -> Result<ReplicaAck> {
        let path = match committed {
            Some(c) => format!("/internal/replicate?epoch={epoch}&committed={c}"),
            None => format!("/internal/replicate?epoch={epoch}"),
        };
        let pushes: Vec<&Replicate> = pushes.iter().map(|w| &**w).collect();
        self.http.send(Method::POST, base, &path, &pushes)
    }

    /// Asks the primary which writes are committed (a replica whose read meets a write
    /// pending there).
    pub fn committed(&self, base: &str) -> Result<Committed> {
        self.http.call(Method::GET, base, "/internal/committed", None)?.json()
    }

    /// Asks the primary for a read lease (replicas).
    pub fn lease(&self, base: &str, request: &LeaseRequest) -> Result<LeaseGrant> {
        self.http.send(Method::POST, base, "/internal/lease", request)
    }

    /// Adds a book (`POST /books`); the primary gives it its id.
    pub fn add(&self, base: &str, book: &NewBook) -> Result<Book> {
        self.http.send(Method::POST, base, "/books", book)
    }
}

/// An order server's API.
#[derive(Clone)]
pub struct OrderClient {
    /// The HTTP client.
    pub http: Http,
}

impl OrderClient {
    /// Buys one copy (`POST /purchase/{id}`).
    pub fn purchase(&self, base: &str, id: u32) -> Result<Order> {
        self.http.call(Method::POST, base, &format!("/purchase/{id}"), None)?.json()
    }

    /// All orders, oldest first: every page of `GET /orders`, following each `Link` to the
    /// next (a page of [`crate::page::MAX_LIMIT`] at a time).
    pub fn orders(&self, base: &str) -> Result<Vec<Order>> {
        let mut target = format!("/orders?limit={}", crate::page::MAX_LIMIT);
        let mut orders = Vec::new();
        loop {
            let answer = self.http.call(Method::GET, base, &target, None)?;
            orders.extend(answer.json::<Vec<Order>>()?);
            match answer.link.as_deref().and_then(crate::page::next_target) {
                Some(next) => target = next.to_string(),
                None => return Ok(orders),
            }
        }
    }

    /// A page of the peer's log from position `from` (order sync), of whole orders or of
    /// their ids (`shape`, see [`OrderPage::ids`]).
    pub fn pull(&self, base: &str, from: usize, shape: PageShape) -> Result<OrderPage> {
        self.http.get(base, &format!("/internal/orders?from={from}&shape={}", shape.as_str()))
    }

    /// Hands new orders to a peer (order sync); the peer keeps those it lacks.
    pub fn push(&self, base: &str, orders: &[Order]) -> Result<serde_json::Value> {
        self.http.send(Method::POST, base, "/internal/orders", &orders)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_that_does_not_resolve_was_never_sent() {
        let http = Http::new(Duration::from_secs(5), 1, None);
        for url in ["http://no-such-host.invalid:9000", "http://127.0.0.1:1"] {
            match http.call(Method::POST, url, "/purchase/1", None) {
                Err(PeerError::Unreachable { sent: false, .. }) => {}
                other => panic!("{url}: {other:?}"),
            }
        }
    }
}
