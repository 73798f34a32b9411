//! The protocol without I/O: a request head parsed from bytes, and the rules read off it
//! (how the body is framed, whether the connection stays open).
//!
//! Invariant: nothing here touches a socket or a clock; every function takes bytes or a
//! parsed [`Request`] and gives a value or the [`Error`] to answer with, so it is tested on
//! buffers.

use super::message::{split_target, Request, Version};
use super::{MAX_BODY, MAX_HEAD, MAX_HEADERS};
use crate::error::Error;

/// Parses the request head at the start of `buf`: `Ok(None)` while it is not whole yet
/// (read more and call again with the longer buffer), `Ok(Some((request, n)))` once the
/// first `n` bytes are a whole head (a body or the next request starts at `n`), or the
/// error to answer with. The request's body is empty; the caller reads it.
///
/// httparse does the byte-level work (request line, header names as tokens, header values
/// free of control bytes, `\r\n` or a bare `\n` as line ends, no obsolete line folding);
/// on top of it we ask for an upper-case method, a path that starts with `/`, UTF-8 header
/// values, at most [`MAX_HEADERS`] headers (else 431) and at most [`MAX_HEAD`] bytes (else
/// 431: give it at most `MAX_HEAD + 1` bytes and it can tell). Empty lines before the
/// request line are skipped and count in `n`; [`blank_lines`] lets a reader drop them first.
pub(super) fn parse_head(buf: &[u8]) -> Result<Option<(Request, usize)>, Error> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut head = httparse::Request::new(&mut slots);
    let len = match head.parse(buf) {
        Ok(httparse::Status::Complete(n)) if n <= MAX_HEAD => n,
        Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD => return Ok(None),
        // Not over within the limit, or more headers than it allows.
        Ok(_) | Err(httparse::Error::TooManyHeaders) => return Err(Error::HeadersTooLarge),
        Err(e) => return Err(Error::BadRequest(format!("malformed request head: {e}"))),
    };
    // Complete: httparse has filled in the method, path and version.
    let (method, target) = (head.method.unwrap_or_default(), head.path.unwrap_or_default());
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(Error::BadRequest(format!("malformed method {method:?}")));
    }
    // Origin form only (RFC 9112 3.2.1); httparse let through no space or control byte.
    if !target.starts_with('/') {
        return Err(Error::BadRequest(format!("malformed request target {target:?}")));
    }
    let version = match head.version {
        Some(0) => Version::Http10,
        _ => Version::Http11,
    };
    let mut headers = Vec::with_capacity(head.headers.len());
    for header in head.headers.iter() {
        let value = std::str::from_utf8(header.value)
            .map_err(|_| Error::BadRequest(format!("header {:?} is not valid UTF-8", header.name)))?;
        headers.push((header.name.to_ascii_lowercase(), value.trim().to_string()));
    }
    let (path, query) = split_target(target);
    Ok(Some((Request { method: method.to_string(), path, query, version, headers, body: Vec::new(), peer: None }, len)))
}

/// How many bytes at the start of `buf` are whole empty lines (`\n` or `\r\n`), which a
/// server ignores before a request line (RFC 9112 2.2). A reader drops them before they
/// enter the head, so they count toward no limit.
pub(super) fn blank_lines(buf: &[u8]) -> usize {
    let mut n = 0;
    loop {
        match &buf[n..] {
            [b'\n', ..] => n += 1,
            [b'\r', b'\n', ..] => n += 2,
            _ => return n,
        }
    }
}

/// How the body's end is known.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum BodyLength {
    /// `Content-Length` (0 when absent), at most [`MAX_BODY`].
    Fixed(usize),
    /// `Transfer-Encoding: chunked`; the total is checked while reading.
    Chunked,
}

/// How long the body is, checked against [`MAX_BODY`] where declared.
pub(super) fn body_length(request: &Request) -> Result<BodyLength, Error> {
    if let Some(te) = request.header("transfer-encoding") {
        if !te.eq_ignore_ascii_case("chunked") || request.header("content-length").is_some() {
            // Other codings, or both framings at once (a smuggling vector): refuse.
            return Err(Error::LengthRequired);
        }
        return Ok(BodyLength::Chunked);
    }
    let mut lengths = request.headers.iter().filter(|(n, _)| n == "content-length").map(|(_, v)| v);
    let Some(value) = lengths.next() else { return Ok(BodyLength::Fixed(0)) };
    if lengths.any(|other| other != value) {
        return Err(Error::BadRequest("conflicting Content-Length headers".into()));
    }
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::BadRequest(format!("bad Content-Length {value:?}")));
    }
    // Digits only: a parse failure is an overflow, which is too large as well.
    match value.parse::<u64>() {
        Ok(n) if n <= MAX_BODY as u64 => Ok(BodyLength::Fixed(n as usize)),
        _ => Err(Error::PayloadTooLarge),
    }
}

/// The size in a chunk's size line (RFC 9112 7.1: hex digits, then extensions after `;`,
/// which are ignored), with its line end. At most 8 hex digits: any size that fits there
/// is then checked against [`MAX_BODY`] by the reader, a longer one is a 400.
pub(super) fn chunk_size(line: &[u8]) -> Result<usize, Error> {
    let bad = |m: &str| Error::BadRequest(format!("bad chunked body: {m}"));
    let text = std::str::from_utf8(line).map_err(|_| bad("size line is not text"))?;
    let size_text = text.trim_end().split(';').next().unwrap_or("").trim();
    if size_text.is_empty() || size_text.len() > 8 || !size_text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad("bad chunk size"));
    }
    usize::from_str_radix(size_text, 16).map_err(|_| bad("bad chunk size"))
}

/// Whether the connection stays open after this request (RFC 9112 9.3).
pub(super) fn wants_keep_alive(request: &Request) -> bool {
    let connection = request.header("connection").map(str::to_ascii_lowercase);
    match request.version {
        Version::Http10 => connection.as_deref() == Some("keep-alive"),
        Version::Http11 => !connection.is_some_and(|c| c.split(',').any(|t| t.trim() == "close")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Result<Request, Error> {
        parse_head(text.as_bytes()).map(|parsed| parsed.expect("a whole head").0)
    }

    /// What the parser makes of `input`, in one line: `partial`, the error's status, or the
    /// request (method, target, version, whether the connection stays open, the headers)
    /// and `+n` when `n` bytes follow the head.
    fn summary(input: &[u8]) -> String {
        match parse_head(input) {
            Ok(None) => "partial".into(),
            Err(e) => e.status().to_string(),
            Ok(Some((r, len))) => {
                let query = r.query.as_ref().map(|q| format!("?{q}")).unwrap_or_default();
                let version = if r.version == Version::Http10 { "1.0" } else { "1.1" };
                let keep = if wants_keep_alive(&r) { "keep" } else { "close" };
                let mut s = format!("{} {}{query} {version} {keep}", r.method, r.path);
                for (name, value) in &r.headers {
                    s += &format!(" [{name}: {value}]");
                }
                if len < input.len() {
                    s += &format!(" +{}", input.len() - len);
                }
                s
            }
        }
    }

    fn check(input: &[u8], want: &str) {
        assert_eq!(summary(input), want, "{:?}", String::from_utf8_lossy(input));
    }

    #[test]
    fn heads() {
        let cases: &[(&[u8], &str)] = &[
            (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", "GET / 1.1 keep [host: a]"),
            (b"POST /x HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", "POST /x 1.1 keep [content-length: 3] +3"),
            (b"GET /a%20b?c=d&e HTTP/1.1\r\n\r\n", "GET /a%20b?c=d&e 1.1 keep"),
            (b"GET / HTTP/1.1\r\nX-A:  a b \t\r\nX-B:\r\nX-A: 2\r\n\r\n", "GET / 1.1 keep [x-a: a b] [x-b: ] [x-a: 2]"),
            (b"GET / HTTP/1.1\r\nX-A: a\tb\r\n\r\n", "GET / 1.1 keep [x-a: a\tb]"),
            ("GET / HTTP/1.1\r\nX-A: caf\u{e9}\r\n\r\n".as_bytes(), "GET / 1.1 keep [x-a: caf\u{e9}]"),
            // Bare LF ends a line as CRLF does (RFC 9112 2.2 allows it; httparse does it), in
            // any mix; empty lines before the request line are skipped.
            (b"GET / HTTP/1.1\nHost: a\n\n", "GET / 1.1 keep [host: a]"),
            (b"GET / HTTP/1.1\r\nHost: a\n\r\n", "GET / 1.1 keep [host: a]"),
            (b"\r\n\nGET / HTTP/1.1\r\n\r\n", "GET / 1.1 keep"),
            // Not whole yet.
            (b"", "partial"),
            (b"GET / HTTP/1.1\r\nHost: a\r\n", "partial"),
            (b"GET / HTTP/1.1\r\nHost: a\r\n\r", "partial"),
            (b"GET /", "partial"),
            // Control bytes in a header value, and a CR that does not end the line.
            (b"GET / HTTP/1.1\r\nX-A: a\x01b\r\n\r\n", "400"),
            (b"GET / HTTP/1.1\r\nX-A: a\x00b\r\n\r\n", "400"),
            (b"GET / HTTP/1.1\r\nX-A: \x1b[31mred\r\n\r\n", "400"),
            (b"GET / HTTP/1.1\r\nX-A: a\x7fb\r\n\r\n", "400"),
            (b"GET / HTTP/1.1\r\nX-A: a\rb\r\n\r\n", "400"),
            (b"GET / HTTP/1.1\r\nX-A: a\r\r\n\r\n", "400"),
            (b"GET / HTTP/1.1\r\nX-A: \xff\xfe\r\n\r\n", "400"),
            // Header names are tokens: no control byte, space, separator or empty name.
            (b"GET / HTTP/1.1\r\nX\x01A: b\r\n\r\n", "400"),
            (b"GET / HTTP/1.1\r\nX\x7fA: b\r\n\r\n", "400"),
            (b"GET / HTTP/1.1\r\nX\xc3\xa9: b\r\n\r\n", "400"),
            (b"GET / HTTP/1.1\r\nX A: b\r\n\r\n", "400"),
            (b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", "400"),
            (b"GET / HTTP/1.1\r\nX(A): b\r\n\r\n", "400"),
            (b"GET / HTTP/1.1\r\n: empty\r\n\r\n", "400"),
            (b"GET / HTTP/1.1\r\nno colon\r\n\r\n", "400"),
            // Obsolete line folding: refused (RFC 9112 5.2 lets a server refuse it).
            (b"GET / HTTP/1.1\r\nX-A: a\r\n b\r\n\r\n", "400"),
            (b"GET / HTTP/1.1\r\nX-A: a\r\n\tb\r\n\r\n", "400"),
            (b"GET / HTTP/1.1\r\n X-A: a\r\n\r\n", "400"),
            // Request lines.
            (b"GARBAGE\r\n\r\n", "400"),
            (b"\x16\x03\x01\x02\x00", "400"),
            (b"get / HTTP/1.1\r\n\r\n", "400"),
            (b"G-T / HTTP/1.1\r\n\r\n", "400"),
            (b"GET  / HTTP/1.1\r\n\r\n", "400"),
            (b"GET nope HTTP/1.1\r\n\r\n", "400"),
            (b"GET http://a/ HTTP/1.1\r\n\r\n", "400"),
            (b"GET /a b HTTP/1.1\r\n\r\n", "400"),
            (b"GET /\x01 HTTP/1.1\r\n\r\n", "400"),
            (b"GET /\xff HTTP/1.1\r\n\r\n", "400"),
            (b"GET / HTTP/2\r\n\r\n", "400"),
            (b"GET / HTTP/1.1 extra\r\n\r\n", "400"),
            (b"GET / HTTP/1.1\r\r\n\r\n", "400"),
            // Keep-alive: HTTP/1.0 closes unless the client asks, HTTP/1.1 stays open unless told.
            (b"GET / HTTP/1.0\r\n\r\n", "GET / 1.0 close"),
            (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", "GET / 1.0 keep [connection: keep-alive]"),
            (b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", "GET / 1.0 keep [connection: Keep-Alive]"),
            (b"GET / HTTP/1.1\r\nConnection: keep-alive\r\n\r\n", "GET / 1.1 keep [connection: keep-alive]"),
            (b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", "GET / 1.1 close [connection: close]"),
            (b"GET / HTTP/1.1\r\nConnection: x, Close\r\n\r\n", "GET / 1.1 close [connection: x, Close]"),
        ];
        for (input, want) in cases {
            check(input, want);
        }
    }

    #[test]
    fn limits() {
        let with_headers = |n: usize, end: &str| {
            (0..n).fold("GET / HTTP/1.1\r\n".to_string(), |s, i| s + &format!("X-{i}: v\r\n")) + end
        };
        assert!(summary(with_headers(MAX_HEADERS, "\r\n").as_bytes()).starts_with("GET / 1.1 keep [x-0: v]"));
        check(with_headers(MAX_HEADERS + 1, "\r\n").as_bytes(), "431");
        // Too many headers is known before the head is over.
        check(with_headers(MAX_HEADERS + 1, "").as_bytes(), "431");
        // A head of exactly MAX_HEAD bytes, and one byte more.
        let sized = |n: usize| format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(n - 27));
        assert_eq!(sized(MAX_HEAD).len(), MAX_HEAD);
        check(sized(MAX_HEAD).as_bytes(), &format!("GET / 1.1 keep [x-big: {}]", "a".repeat(MAX_HEAD - 27)));
        check(sized(MAX_HEAD + 1).as_bytes(), "431");
        // Unfinished: more may come until the limit, then it is too large.
        let open = format!("GET / HTTP/1.1\r\nX-Big: {}", "a".repeat(MAX_HEAD));
        check(&open.as_bytes()[..MAX_HEAD], "partial");
        check(&open.as_bytes()[..MAX_HEAD + 1], "431");
    }

    #[test]
    fn blank_lines_before_a_request() {
        let cases: &[(&[u8], usize)] =
            &[(b"", 0), (b"\n", 1), (b"\r\n\nGET", 3), (b"\r", 0), (b"\r\r\n", 0), (b"GET\r\n\r\n", 0)];
        for &(input, want) in cases {
            assert_eq!(blank_lines(input), want, "{input:?}");
        }
    }

    #[test]
    fn parses_heads() {
        let r = head("GET /search/distributed%20systems?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n").unwrap();
        assert_eq!(
            (r.method.as_str(), r.path.as_str(), r.query.as_deref()),
            ("GET", "/search/distributed%20systems", Some("x=1"))
        );
        assert_eq!(r.segments().unwrap(), ["search", "distributed systems"]);
        assert_eq!(body_length(&r).unwrap(), BodyLength::Fixed(3));
        let bad = [
            "GARBAGE\r\n\r\n",
            "GET / HTTP/1.1 extra\r\n\r\n",
            "get / HTTP/1.1\r\n\r\n",
            "GET nope HTTP/1.1\r\n\r\n",
            "GET / HTTP/2\r\n\r\n",
            "GET / HTTP/1.1\r\nno colon\r\n\r\n",
            "GET / HTTP/1.1\r\n: empty\r\n\r\n",
        ];
        for text in bad {
            assert_eq!(head(text).unwrap_err().status(), 400, "{text:?}");
        }
    }

    #[test]
    fn body_lengths() {
        use BodyLength::*;
        let cases = [
            ("5", Ok(Fixed(5))),
            ("65536", Ok(Fixed(65536))),
            ("65537", Err(413)),
            ("100000000000000", Err(413)),
            ("99999999999999999999999", Err(413)),
            ("-1", Err(400)),
            ("1.5", Err(400)),
            ("", Err(400)),
        ];
        for (value, want) in cases {
            let r = head(&format!("POST / HTTP/1.1\r\nContent-Length: {value}\r\n\r\n")).unwrap();
            assert_eq!(body_length(&r).map_err(|e| e.status()), want, "{value:?}");
        }
        let chunked = head("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
        assert_eq!(body_length(&chunked).unwrap(), Chunked);
        for framing in ["Transfer-Encoding: gzip", "Transfer-Encoding: chunked\r\nContent-Length: 3"] {
            let r = head(&format!("POST / HTTP/1.1\r\n{framing}\r\n\r\n")).unwrap();
            assert_eq!(body_length(&r).unwrap_err().status(), 411, "{framing}");
        }
    }

    #[test]
    fn chunk_sizes() {
        let cases: &[(&[u8], Result<usize, u16>)] = &[
            (b"0\r\n", Ok(0)),
            (b"1a\r\n", Ok(26)),
            (b"FF\n", Ok(255)),
            (b"3;name=value\r\n", Ok(3)),
            (b"ffffffff\r\n", Ok(0xffff_ffff)),
            (b"100000000\r\n", Err(400)),
            (b"\r\n", Err(400)),
            (b"zz\r\n", Err(400)),
            (b"-1\r\n", Err(400)),
            (b"0x1\r\n", Err(400)),
            (b"\xff\r\n", Err(400)),
        ];
        for &(line, want) in cases {
            assert_eq!(chunk_size(line).map_err(|e| e.status()), want, "{:?}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn keep_alive_rules() {
        let cases = [
            (Version::Http11, None, true),
            (Version::Http11, Some("close"), false),
            (Version::Http10, None, false),
            (Version::Http10, Some("keep-alive"), true),
        ];
        for (version, connection, want) in cases {
            let mut r = Request::new("GET", "/");
            r.version = version;
            if let Some(c) = connection {
                r.headers.push(("connection".into(), c.into()));
            }
            assert_eq!(wants_keep_alive(&r), want, "{version:?} {connection:?}");
        }
    }
}
