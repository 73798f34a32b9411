//! What handlers see and give back: [`Request`], [`Response`], and the helpers every router
//! uses ([`route`], [`respond`], [`parse_id`], [`check_token`], [`json_body`], percent-coding).
//!
//! Invariants: a [`Request`] from the server holds only what its limits let through (a
//! head within `MAX_HEAD`, a body within `MAX_BODY`); its path and query stay
//! percent-encoded until a handler asks for them, and a malformed escape or anything that
//! does not decode to UTF-8 is a 400, never a panic or a lossy guess. Nothing here does I/O.

use crate::config::Admission;
use crate::error::Error;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use std::net::{IpAddr, Ipv4Addr};

/// The HTTP versions the server speaks (any other is a 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// `HTTP/1.0`: the connection closes after the answer unless the client asks to keep it.
    Http10,
    /// `HTTP/1.1`: the connection stays open unless the client sends `Connection: close`.
    Http11,
}

/// A complete request, as handlers see it.
#[derive(Debug)]
pub struct Request {
    /// Method, as sent (`GET`, `POST`, ...).
    pub method: String,
    /// The path, still percent-encoded, without the query.
    pub path: String,
    /// The query string after `?`, if any, still encoded.
    pub query: Option<String>,
    /// The protocol version of the request line.
    pub version: Version,
    /// Headers in the order sent, with lower-case names and trimmed values.
    pub headers: Vec<(String, String)>,
    /// The body (at most [`MAX_BODY`](super::MAX_BODY) bytes).
    pub body: Vec<u8>,
    /// The address of the peer that sent it (the TCP connection's, as the server accepted
    /// it; `None` when the server could not learn it, which [`check_token`] treats as a
    /// remote peer). What decides whether a service with no token admits an admin request.
    pub peer: Option<IpAddr>,
}

impl Request {
    /// A request built in code (tests, the bench's limit server): HTTP/1.1, no headers, no
    /// body, from loopback (it comes from this very process, never from the network).
    pub fn new(method: &str, target: &str) -> Request {
        let (path, query) = split_target(target);
        Request {
            method: method.into(),
            path,
            query,
            version: Version::Http11,
            headers: Vec::new(),
            body: Vec::new(),
            peer: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        }
    }

    /// The first header of that (lower-case) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The path split into percent-decoded segments: `/books/7` is `["books", "7"]`.
    pub fn segments(&self) -> Result<Vec<String>, Error> {
        self.path
            .trim_start_matches('/')
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|s| percent_decode(s, false))
            .collect()
    }

    /// The decoded value of query parameter `name` (`+` is a space there).
    pub fn query_param(&self, name: &str) -> Result<Option<String>, Error> {
        for pair in self.query.as_deref().unwrap_or("").split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            if percent_decode(k, true)? == name {
                return percent_decode(v, true).map(Some);
            }
        }
        Ok(None)
    }
}

/// A response: status, extra headers and a body (JSON unless a header says otherwise).
#[derive(Debug, Clone)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// Headers besides Content-Length, Connection and Content-Type.
    pub headers: Vec<(&'static str, String)>,
    /// `Content-Type` of the body.
    pub content_type: &'static str,
    /// The body.
    pub body: Vec<u8>,
    /// Route label for metrics (`/books/{id}`), set by the router.
    pub route: &'static str,
}

impl Response {
    /// 200 with `value` as JSON.
    pub fn json<T: serde::Serialize>(value: &T) -> Response {
        Response::raw_json(200, serde_json::to_vec(value).expect("wire types always serialize"))
    }

    /// A JSON body that is already encoded.
    pub fn raw_json(status: u16, body: Vec<u8>) -> Response {
        Response { status, headers: Vec::new(), content_type: "application/json", body, route: "other" }
    }

    /// The error's status with `{"error": "..."}` (and `Allow` for a 405).
    pub fn error(e: &Error) -> Response {
        let body = serde_json::to_vec(&crate::wire::ErrorBody { error: e.to_string() }).expect("serializes");
        let mut r = Response::raw_json(e.status(), body);
        if let Error::MethodNotAllowed(allow) = e {
            r.headers.push(("Allow", allow.to_string()));
        }
        r
    }

    /// 200 with Prometheus text.
    pub fn metrics(text: String) -> Response {
        Response { content_type: "text/plain; version=0.0.4", ..Response::raw_json(200, text.into_bytes()) }
    }

    /// What a handler returns once it has handed its answer to a [`super::Reply`]
    /// ([`super::later`]): the server sends the reply's answer, not this. Sent only if
    /// returned without a reply taken (a handler's bug), as the 500 it is.
    pub fn later() -> Response {
        Response::error(&Error::Internal("internal error: the answer was to be sent later and was not".into()))
            .at("later")
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }

    /// Sets the route label used by the metrics.
    pub fn at(mut self, route: &'static str) -> Response {
        self.route = route;
        self
    }
}

/// Routes a request: splits its path into decoded segments (a 400 if they do not decode)
/// and gives them to `router` with whether the method reads (GET or HEAD).
pub fn route(request: &Request, router: impl FnOnce(&[&str], bool) -> Response) -> Response {
    match request.segments() {
        Ok(segments) => {
            let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
            router(&segs, matches!(request.method.as_str(), "GET" | "HEAD"))
        }
        Err(e) => respond(Err(e), "invalid"),
    }
}

/// Turns `Result<Response>` into a response, errors included.
pub fn respond(result: Result<Response, Error>, route: &'static str) -> Response {
    match result {
        Ok(r) => r.at(route),
        Err(e) => Response::error(&e).at(route),
    }
}

pub(super) fn split_target(target: &str) -> (String, Option<String>) {
    match target.split_once('?') {
        Some((p, q)) => (p.to_string(), Some(q.to_string())),
        None => (target.to_string(), None),
    }
}

/// What [`percent_encode`] escapes: every byte but RFC 3986's unreserved characters.
const ESCAPED: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Percent-decodes `s` into UTF-8; `+` means a space when `plus_is_space` (query strings).
/// A `%` not followed by two hex digits is a 400, and so are bytes that are not UTF-8.
pub fn percent_decode(s: &str, plus_is_space: bool) -> Result<String, Error> {
    // The crate passes a malformed escape through as it stands; we refuse it.
    let bytes = s.as_bytes();
    let well_formed = |i: usize| bytes.get(i + 1..i + 3).is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit));
    if (0..bytes.len()).any(|i| bytes[i] == b'%' && !well_formed(i)) {
        return Err(Error::BadRequest(format!("bad percent escape in {s:?}")));
    }
    // A literal `+` is a space; an escaped one (`%2B`) stays a plus, so replace before decoding.
    let spaced = if plus_is_space { s.replace('+', " ") } else { s.to_string() };
    match percent_encoding::percent_decode_str(&spaced).decode_utf8() {
        Ok(decoded) => Ok(decoded.into_owned()),
        Err(_) => Err(Error::BadRequest(format!("{s:?} does not decode to UTF-8"))),
    }
}

/// Percent-encodes a path segment or query value (everything but unreserved characters).
pub fn percent_encode(s: &str) -> String {
    utf8_percent_encode(s, ESCAPED).to_string()
}

/// Parses a book id: a positive integer that fits in `u32`, digits only.
pub fn parse_id(s: &str) -> Result<u32, Error> {
    let bad = || Error::BadRequest(format!("book id {s:?} is not a positive integer"));
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    match s.parse::<u32>() {
        Ok(0) | Err(_) => Err(bad()),
        Ok(id) => Ok(id),
    }
}

/// Whether `ip` is on loopback: 127.0.0.0/8, `::1`, or an IPv4-mapped `::ffff:127.x.y.z`
/// (what a dual-stack socket shows for an IPv4 loopback client).
pub fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
    }
}

/// Admits an admin or internal request as `admission` says: with a token, it checks
/// `Authorization: Bearer <token>` in constant time (401 when missing or wrong, from any
/// address); with none, it admits loopback peers only (403 for any other, with how to set
/// a token), unless the operator opened the routes (`BAZAR_INSECURE_OPEN=1`).
pub fn check_token(request: &Request, admission: Admission<'_>) -> Result<(), Error> {
    let token = match admission {
        Admission::Token(token) => token,
        Admission::Anyone => return Ok(()),
        Admission::LoopbackOnly if request.peer.is_some_and(is_loopback) => return Ok(()),
        Admission::LoopbackOnly => {
            let from = request.peer.map_or_else(|| "an unknown address".to_string(), |ip| ip.to_string());
            return Err(Error::Forbidden(format!(
                "admin and internal requests from {from} are refused: this service has no token, so it admits \
                 them from loopback only; give every service the same token of at least 16 bytes (BAZAR_TOKEN or \
                 BAZAR_TOKEN_FILE) and send `Authorization: Bearer <token>` (or set BAZAR_INSECURE_OPEN=1 to open \
                 them to anyone)"
            )));
        }
    };
    let given = request.header("authorization").and_then(|v| v.strip_prefix("Bearer ")).unwrap_or("");
    let (a, b) = (given.as_bytes(), token.as_bytes());
    // Every byte is compared whatever the others are; only the length leaks.
    let diff = a.iter().zip(b).fold(a.len() ^ b.len(), |acc, (x, y)| acc | usize::from(x ^ y));
    if diff == 0 {
        Ok(())
    } else {
        Err(Error::Unauthorized)
    }
}

/// Decodes a JSON request body into `T`, with a 400 that says what is wrong.
pub fn json_body<T: serde::de::DeserializeOwned>(request: &Request) -> Result<T, Error> {
    serde_json::from_slice(&request.body).map_err(|e| Error::BadRequest(format!("bad JSON body: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_coding() {
        assert_eq!(percent_decode("a%20b+c", true).unwrap(), "a b c");
        assert_eq!(percent_decode("a+b", false).unwrap(), "a+b");
        assert_eq!(percent_decode("%2B+%2b", true).unwrap(), "+ +");
        assert_eq!(percent_decode("%C3%BC%e2%82%AC", false).unwrap(), "\u{fc}\u{20ac}");
        assert_eq!(percent_encode("a b+\u{fc}~"), "a%20b%2B%C3%BC~");
        for bad in ["%", "%2", "%zz", "%ff", "%C3", "%+1", "a%2", "%%41", "\u{fc}%"] {
            assert_eq!(percent_decode(bad, false).unwrap_err().status(), 400, "{bad}");
        }
        let s = "undergraduate school/ü?&=";
        assert_eq!(percent_decode(&percent_encode(s), true).unwrap(), s);
    }

    #[test]
    fn ids_and_tokens() {
        let cases = [
            ("1", Ok(1)),
            ("4294967295", Ok(u32::MAX)),
            ("0", Err(400)),
            ("-1", Err(400)),
            ("+1", Err(400)),
            ("1.5", Err(400)),
            ("4294967296", Err(400)),
            ("", Err(400)),
            ("x", Err(400)),
        ];
        for (text, want) in cases {
            assert_eq!(parse_id(text).map_err(|e| e.status()), want, "{text:?}");
        }
        let mut r = Request::new("PATCH", "/books/1");
        let token = Admission::Token("s3cret");
        assert_eq!(check_token(&r, token).unwrap_err().status(), 401);
        r.headers.push(("authorization".into(), "Bearer s3cre".into()));
        assert!(check_token(&r, token).is_err());
        r.headers[0].1 = "Bearer s3cret".into();
        assert!(check_token(&r, token).is_ok());
    }

    /// Who is admitted, by admission and peer address: a table.
    #[test]
    fn admission_by_peer() {
        use Admission::{Anyone, LoopbackOnly, Token};
        type Case<'a> = (Admission<'a>, Option<&'a str>, Option<&'a str>, Result<(), u16>);
        let cases: &[Case] = &[
            // No token: loopback only, whatever the header says.
            (LoopbackOnly, Some("127.0.0.1"), None, Ok(())),
            (LoopbackOnly, Some("127.254.3.9"), None, Ok(())),
            (LoopbackOnly, Some("::1"), None, Ok(())),
            (LoopbackOnly, Some("::ffff:127.0.0.1"), None, Ok(())),
            (LoopbackOnly, Some("10.0.0.2"), None, Err(403)),
            (LoopbackOnly, Some("10.0.0.2"), Some("Bearer anything-at-all-here"), Err(403)),
            (LoopbackOnly, Some("128.0.0.1"), None, Err(403)),
            (LoopbackOnly, Some("::ffff:10.0.0.1"), None, Err(403)),
            (LoopbackOnly, Some("::2"), None, Err(403)),
            (LoopbackOnly, Some("0.0.0.0"), None, Err(403)),
            (LoopbackOnly, None, None, Err(403)),
            // Opened by the operator: anyone.
            (Anyone, Some("10.0.0.2"), None, Ok(())),
            (Anyone, None, None, Ok(())),
            // A token: the token, from anywhere; loopback is no exception.
            (Token("0123456789abcdef"), Some("127.0.0.1"), None, Err(401)),
            (Token("0123456789abcdef"), Some("10.0.0.2"), Some("Bearer 0123456789abcdef"), Ok(())),
            (Token("0123456789abcdef"), Some("10.0.0.2"), Some("Bearer 0123456789abcdeF"), Err(401)),
            (Token("0123456789abcdef"), Some("10.0.0.2"), Some("0123456789abcdef"), Err(401)),
        ];
        for (admission, peer, header, want) in cases {
            let mut r = Request::new("PATCH", "/books/1");
            r.peer = peer.map(|p| p.parse().unwrap());
            if let Some(h) = header {
                r.headers.push(("authorization".into(), h.to_string()));
            }
            let got = check_token(&r, *admission).map_err(|e| e.status());
            assert_eq!(got, *want, "{admission:?} from {peer:?} with {header:?}");
            if let Err(403) = got {
                let text = check_token(&r, *admission).unwrap_err().to_string();
                assert!(text.contains("BAZAR_TOKEN") && text.contains("loopback"), "{text}");
            }
        }
    }
}
