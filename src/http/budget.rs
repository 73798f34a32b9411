//! Budgets: who gets a handler slot, and who is refused at once, when more comes in than a
//! service can answer.
//!
//! Load shedding as Envoy's overload manager and Google's SRE book describe it: refuse
//! early and cheaply (503 with `Retry-After`, never a queue that grows until requests time
//! out), and keep the traffic that holds the store together on a budget of its own.
//!
//! - **Three classes of request, three sets of handler slots** ([`Class`]). *Control*: the
//!   `/internal/...` routes (pushes, commit notices, lease renewals, near-cache watches,
//!   version queries, order sharing, catch-up), admitted as their handlers admit them.
//!   *Peer*: any other request a service sends another (the front end's reads, an order
//!   server's purchases, a replica's forwarded writes), marked with [`PEER_HEADER`] and
//!   admitted the same way. *Public*: everything else. Public load can fill only the public
//!   slots, so a surge of public reads never delays a push or a lease renewal.
//! - **A public request waits for a slot at most [`PUBLIC_WAIT`], and only while fewer
//!   wait than there are public slots**; otherwise it gets 503 with `Retry-After: 1` at
//!   once, so the queue never holds more than one round of work. A peer request waits at
//!   most [`PEER_WAIT`] (the caller then asks another back end); a control request waits
//!   for its own slots, which only the services fill.
//! - **Connections are capped per client address** ([`PER_ADDRESS`], [`Addresses`]) and in
//!   all ([`max_connections`]); one over a cap is refused at accept with a prebuilt 503
//!   ([`REFUSED`]) and closed, with no thread started for it.
//! - **Under pressure the deadlines shrink** (more than half the connections open, as
//!   Envoy's `reduce_timeouts`): an idle keep-alive connection is closed after
//!   [`PRESSED_IDLE`] instead of [`IDLE_TIMEOUT`](super::IDLE_TIMEOUT), an unfinished head
//!   after [`PRESSED_HEAD`], so idle or slow sockets cannot hold a front end's connections.
//!
//! Architecture invariant: a request is *control* or *peer* only if it passes the same
//! admission ([`check_token`]) its handler applies to internal routes; whoever cannot
//! show the token (or, without one, is not on loopback) is public, whatever it sends.
//! Nothing here does I/O.

use super::message::{check_token, Request};
use crate::config::Admission;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

/// The header a service sends on its calls to another service (not on behalf of a
/// user's own socket): with the admission of internal routes, it puts the request in the
/// peer budget.
pub const PEER_HEADER: &str = "x-bazar-peer";
/// Longest a public request waits for a handler slot before it is refused (503). Only as
/// many wait as there are public slots: one more is refused at once.
pub const PUBLIC_WAIT: Duration = Duration::from_secs(1);
/// Longest a peer request waits for a handler slot before it is refused (503).
pub const PEER_WAIT: Duration = Duration::from_secs(1);
/// Handler slots of the control class (whatever `BAZAR_THREADS` says: the services' own
/// traffic is small and bounded by their pools).
pub const CONTROL_SLOTS: usize = 64;
/// Most open connections from one client address: twice the 256 that a load test from one
/// host commonly opens (at exactly 256, any other connection from that host, a health
/// check, pushed one of them over and made a storm of refusals and reconnections), still
/// a twentieth of [`MAX_CONNECTIONS`].
pub const PER_ADDRESS: usize = 512;
/// What `Retry-After` says on every shed answer, in seconds.
pub const RETRY_AFTER: &str = "1";
/// Idle time allowed between keep-alive requests while under pressure.
pub const PRESSED_IDLE: Duration = Duration::from_secs(1);
/// Time allowed for a whole head (from its first byte, or for a new connection from the
/// accept) while under pressure.
pub const PRESSED_HEAD: Duration = Duration::from_secs(2);
/// Time a new connection has to send its first head when not under pressure.
pub const FIRST_HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Most connections open at once, whatever the file-descriptor limit allows.
pub const MAX_CONNECTIONS: usize = 10_000;
/// Descriptors kept for everything but accepted connections (files, peers, memcached).
const RESERVED_FDS: usize = 512;

/// The answer to a connection refused at accept, prebuilt: one write, then close.
pub const REFUSED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n\
Content-Length: 66\r\nRetry-After: 1\r\nConnection: close\r\n\r\n\
{\"error\":\"overloaded: too many connections, retry after 1 second\"}";

/// Which budget a request is served from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// `/internal/...`, admitted: the store's own protocol.
    Control,
    /// Another service's call to a public route, admitted.
    Peer,
    /// Everyone else.
    Public,
}

/// Who may use the control and peer budgets: the admission of the internal routes, owned
/// by the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trust {
    /// Requests that carry this bearer token.
    Token(String),
    /// Requests from loopback (a service with no token).
    LoopbackOnly,
    /// Anyone (`BAZAR_INSECURE_OPEN=1`, or a server with no internal routes of note).
    Anyone,
}

impl Trust {
    /// The same admission as `Common::admission` gives the handlers.
    pub fn from(admission: Admission<'_>) -> Trust {
        match admission {
            Admission::Token(t) => Trust::Token(t.to_string()),
            Admission::LoopbackOnly => Trust::LoopbackOnly,
            Admission::Anyone => Trust::Anyone,
        }
    }

    fn admission(&self) -> Admission<'_> {
        match self {
            Trust::Token(t) => Admission::Token(t),
            Trust::LoopbackOnly => Admission::LoopbackOnly,
            Trust::Anyone => Admission::Anyone,
        }
    }
}

/// The budget of `request`: control for admitted `/internal/` routes, peer for admitted
/// requests marked with [`PEER_HEADER`], public otherwise.
pub fn classify(request: &Request, trust: &Trust) -> Class {
    let internal = request.path.starts_with("/internal/");
    let peer = request.header(PEER_HEADER).is_some();
    if !(internal || peer) || check_token(request, trust.admission()).is_err() {
        return Class::Public;
    }
    if internal {
        Class::Control
    } else {
        Class::Peer
    }
}

/// Most connections this process can hold: [`MAX_CONNECTIONS`], or fewer when the
/// descriptor limit (`soft`, after [`raise_fd_limit`]) leaves less room.
pub fn max_connections(soft: u64) -> usize {
    let room = usize::try_from(soft).unwrap_or(usize::MAX).saturating_sub(RESERVED_FDS);
    room.clamp(64, MAX_CONNECTIONS)
}

/// Raises the soft limit on open descriptors to the hard limit (at most what
/// [`MAX_CONNECTIONS`] needs) and returns the soft limit then in force.
pub fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: a valid rlimit that lives across the calls.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        let want = ((MAX_CONNECTIONS + RESERVED_FDS) as libc::rlim_t).min(lim.rlim_max);
        if want > lim.rlim_cur {
            let raised = libc::rlimit { rlim_cur: want, rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = want;
            }
        }
    }
    lim.rlim_cur
}

/// Open connections per client address, capped at [`PER_ADDRESS`] each.
///
/// The lock guards only the counts; it is taken once when a connection is accepted and once
/// when it closes (and at capacity to find the heaviest address), never while a socket is
/// read or written.
#[derive(Debug, Default)]
pub struct Addresses {
    open: Mutex<Counts>,
}

/// The counts behind [`Addresses`]' lock.
#[derive(Debug, Default)]
struct Counts {
    by_address: HashMap<IpAddr, usize>,
    /// `holding[n]`: how many addresses hold exactly `n` connections (`n` > 0), so that the
    /// most any address holds is known without a search.
    holding: Vec<usize>,
    /// The most connections any address holds.
    most: usize,
}

impl Counts {
    fn set(&mut self, ip: IpAddr, from: usize, to: usize) {
        if self.holding.len() <= to {
            self.holding.resize(to + 1, 0);
        }
        if from > 0 {
            self.holding[from] -= 1;
        }
        if to > 0 {
            self.holding[to] += 1;
            self.by_address.insert(ip, to);
        } else {
            self.by_address.remove(&ip);
        }
        self.most = self.most.max(to);
        while self.most > 0 && self.holding[self.most] == 0 {
            self.most -= 1;
        }
    }
}

impl Addresses {
    /// Counts a new connection from `ip`, unless that address already holds `cap`.
    pub fn admit(&self, ip: IpAddr, cap: usize) -> bool {
        let mut counts = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = counts.by_address.get(&ip).copied().unwrap_or(0);
        if n >= cap {
            return false;
        }
        counts.set(ip, n, n + 1);
        true
    }

    /// At capacity, whether some address holds at least two more connections than `ip`
    /// (a newcomer from `ip` may then take a place): without a search.
    pub fn may_give_way_to(&self, ip: IpAddr) -> bool {
        let counts = self.open.lock().unwrap_or_else(|e| e.into_inner());
        counts.most >= counts.by_address.get(&ip).copied().unwrap_or(0) + 2
    }

    /// At capacity, where a newcomer from `ip` may take a place: of the addresses
    /// `candidates` (those with an idle connection to close), the one holding the most
    /// connections, when it holds at least two more than `ip` (so that the move brings the
    /// two no further apart than one, and never turns back). Addresses share the
    /// connections fairly: one that holds thousands cannot lock out one that holds none,
    /// and many that each hold their share only refuse each other.
    pub fn heaviest_over(&self, ip: IpAddr, candidates: &[IpAddr]) -> Option<IpAddr> {
        let counts = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let held = |ip: &IpAddr| counts.by_address.get(ip).copied().unwrap_or(0);
        let own = held(&ip);
        let heaviest = candidates.iter().max_by_key(|c| held(c))?;
        (held(heaviest) >= own + 2).then_some(*heaviest)
    }

    /// A connection from `ip` closed.
    pub fn release(&self, ip: IpAddr) {
        let mut counts = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = counts.by_address.get(&ip).copied() {
            counts.set(ip, n, n - 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn request(path: &str, headers: &[(&str, &str)], from: [u8; 4]) -> Request {
        let mut r = Request::new("GET", path);
        r.headers = headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
        r.peer = Some(IpAddr::V4(Ipv4Addr::from(from)));
        r
    }

    /// The fair share at capacity: a place is taken only from an address that holds at
    /// least two more than the newcomer's, and only among the candidates (the addresses
    /// with an idle connection to close).
    #[test]
    fn a_newcomer_takes_a_place_only_from_an_address_that_holds_two_more() {
        let ip = |last: u8| IpAddr::V4(Ipv4Addr::new(127, 0, 5, last));
        let addresses = Addresses::default();
        assert!(!addresses.may_give_way_to(ip(1)), "no connection open");
        for _ in 0..3 {
            assert!(addresses.admit(ip(1), 10));
        }
        assert!(addresses.admit(ip(2), 10));
        let all = [ip(1), ip(2)];
        // (newcomer, candidates, the address it may take a place from)
        let cases: [(IpAddr, &[IpAddr], Option<IpAddr>); 5] = [
            (ip(9), &all, Some(ip(1))),
            (ip(2), &all, Some(ip(1))),
            (ip(1), &all, None),
            // The heaviest has no idle connection: the next one gives way, if it can.
            (ip(9), &[ip(2)], None),
            (ip(9), &[], None),
        ];
        for (newcomer, candidates, from) in cases {
            assert_eq!(addresses.heaviest_over(newcomer, candidates), from, "{newcomer} among {candidates:?}");
        }
        assert!(addresses.may_give_way_to(ip(9)) && !addresses.may_give_way_to(ip(1)));
        assert!(addresses.admit(ip(2), 10));
        assert!(addresses.admit(ip(9), 10));
        assert_eq!(addresses.heaviest_over(ip(9), &[ip(2)]), None, "2 against 1: no closer by a move");
        assert!(addresses.admit(ip(2), 10));
        assert_eq!(addresses.heaviest_over(ip(9), &[ip(2)]), Some(ip(2)), "3 against 1, though 1 holds as many");
        addresses.release(ip(1));
        addresses.release(ip(1));
        addresses.release(ip(2));
        assert!(!addresses.may_give_way_to(ip(1)), "the most anyone holds fell to 2");
        assert!(addresses.may_give_way_to(ip(3)));
    }

    #[test]
    fn only_admitted_service_traffic_leaves_the_public_budget() {
        let token = Trust::Token("0123456789abcdef".into());
        let bearer = ("authorization", "Bearer 0123456789abcdef");
        let wrong = ("authorization", "Bearer 0123456789abcdeX");
        let peer = (PEER_HEADER, "1");
        let (lo, far) = ([127, 0, 0, 1], [10, 0, 0, 9]);
        // path, headers, peer address, the server's trust, the class.
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], [u8; 4], &'a Trust, Class);
        let cases: &[Case] = &[
            ("/internal/lease", &[bearer], far, &token, Class::Control),
            ("/internal/lease", &[wrong], far, &token, Class::Public),
            ("/internal/lease", &[], lo, &token, Class::Public),
            ("/internal/replicate", &[], lo, &Trust::LoopbackOnly, Class::Control),
            ("/internal/replicate", &[], far, &Trust::LoopbackOnly, Class::Public),
            ("/internal/replicate", &[], far, &Trust::Anyone, Class::Control),
            ("/books/1", &[bearer, peer], far, &token, Class::Peer),
            ("/books/1", &[peer], far, &token, Class::Public),
            ("/books/1", &[bearer], far, &token, Class::Public),
            ("/books/1", &[peer], lo, &Trust::LoopbackOnly, Class::Peer),
            ("/books/1", &[peer], far, &Trust::LoopbackOnly, Class::Public),
            ("/info/1", &[], lo, &Trust::Anyone, Class::Public),
            ("/internal", &[bearer], far, &token, Class::Public),
        ];
        for (path, headers, from, trust, want) in cases {
            assert_eq!(classify(&request(path, headers, *from), trust), *want, "{path} {headers:?} {from:?} {trust:?}");
        }
    }

    #[test]
    fn addresses_are_capped_one_by_one_and_forgotten_when_closed() {
        let a = Addresses::default();
        let (x, y) = (IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3)));
        assert!(a.admit(x, 2) && a.admit(x, 2));
        assert!(!a.admit(x, 2), "a third from x is over its cap");
        assert!(a.admit(y, 2), "another address is not affected");
        a.release(x);
        assert!(a.admit(x, 2));
        a.release(x);
        a.release(x);
        a.release(y);
        let counts = a.open.lock().unwrap();
        assert!(counts.by_address.is_empty() && counts.most == 0 && counts.holding.iter().all(|n| *n == 0));
    }

    #[test]
    fn the_prebuilt_refusal_is_a_whole_answer() {
        let text = std::str::from_utf8(REFUSED).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 ") && head.contains("\r\nRetry-After: 1\r\n"));
        assert!(head.contains(&format!("Content-Length: {}\r\n", body.len())));
        assert!(serde_json::from_str::<serde_json::Value>(body).unwrap()["error"].is_string());
    }

    #[test]
    fn connections_fit_the_descriptor_limit() {
        assert_eq!(max_connections(1024), 512);
        assert_eq!(max_connections(20_000), MAX_CONNECTIONS);
        assert_eq!(max_connections(100), 64);
    }
}
