//! The protocol without I/O: a request head parsed from bytes, and the rules read off it
//! (how the body is framed, whether the connection stays open).
//!
//! Invariant: nothing here touches a socket or a clock; every function takes bytes or a
//! parsed [`Request`] and gives a value or the [`Error`] to answer with, so it is tested on
//! buffers.

use super::message::{split_target, Request, Version};
use super::MAX_BODY;
use crate::error::Error;

/// Parses the request line and headers (every line ends in `\n`; the last is blank).
pub(super) fn parse_head(head: &[u8], lines: &[(usize, usize)]) -> Result<Request, Error> {
    let text = |(a, b): (usize, usize)| -> Result<&str, Error> {
        let line = std::str::from_utf8(&head[a..b])
            .map_err(|_| Error::BadRequest("request head is not valid UTF-8".into()))?;
        Ok(line.trim_end_matches('\n').trim_end_matches('\r'))
    };
    let request_line = text(lines[0])?;
    let mut parts = request_line.split(' ');
    let (method, target, version) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(t), Some(v), None) => (m, t, v),
        _ => return Err(Error::BadRequest(format!("malformed request line {request_line:?}"))),
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(Error::BadRequest(format!("malformed method {method:?}")));
    }
    if !target.starts_with('/') || target.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(Error::BadRequest(format!("malformed request target {target:?}")));
    }
    let version = match version {
        "HTTP/1.1" => Version::Http11,
        "HTTP/1.0" => Version::Http10,
        _ => return Err(Error::BadRequest(format!("unsupported protocol {version:?}"))),
    };
    let mut headers = Vec::with_capacity(lines.len());
    for &line in &lines[1..lines.len() - 1] {
        let line = text(line)?;
        let (name, value) =
            line.split_once(':').ok_or_else(|| Error::BadRequest(format!("malformed header {line:?}")))?;
        if name.is_empty() || name.bytes().any(|b| b <= b' ' || b == b':' || b >= 0x7f) {
            return Err(Error::BadRequest(format!("malformed header name {name:?}")));
        }
        headers.push((name.to_ascii_lowercase(), value.trim().to_string()));
    }
    let (path, query) = split_target(target);
    Ok(Request { method: method.to_string(), path, query, version, headers, body: Vec::new() })
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
        let bytes = text.as_bytes();
        let mut lines = Vec::new();
        let mut start = 0;
        for (i, &b) in bytes.iter().enumerate() {
            if b == b'\n' {
                lines.push((start, i + 1));
                start = i + 1;
            }
        }
        parse_head(bytes, &lines)
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
