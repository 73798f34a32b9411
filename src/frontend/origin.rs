//! Cross-site request forgery: a purchase is refused when a browser says it comes from
//! another web site.
//!
//! `POST /purchase/{id}` needs no credential (the store has no accounts), so any web page a
//! visitor opens could make their browser buy, and drain the stock, with a plain form or
//! `fetch`. Browsers say where a request comes from, and no page's script can forge it
//! (OWASP's CSRF cheat sheet, "Verifying Origin With Standard Headers" and "Fetch Metadata"):
//! - `Sec-Fetch-Site: cross-site`: the browser itself says the page is another site's;
//! - `Origin: scheme://host[:port]` (sent by browsers on every POST): the page's origin,
//!   compared with the `Host` the request was sent to: another host or port is another site,
//!   and so is `Origin: null` (a sandboxed frame, a `data:` page, a redirect from elsewhere).
//!
//! Requests without those headers are not from a browser page (curl, `bazar-bench`, the
//! services themselves) and go through, as do the storefront's own `fetch` calls
//! (`Origin` equal to the page's, which is the front end's: `Sec-Fetch-Site: same-origin`).
//!
//! The scheme of the front end's own origin is not known here (plain HTTP, or HTTPS ended by
//! a proxy in front of it), so the comparison is of host and port: an `Origin` without a
//! port stands for its scheme's default (80 or 443), and a `Host` without one matches the
//! default port of the `Origin`'s scheme.
//!
//! [`cross_site`] decides without I/O (unit-tested as a table); [`check`] is the glue.

use crate::error::Error;
use crate::http::Request;

/// Why a purchase is refused as coming from another web site, or `None` when it may go on:
/// `origin`, `sec_fetch_site` and `host` are the request's `Origin`, `Sec-Fetch-Site` and
/// `Host` headers.
pub fn cross_site(origin: Option<&str>, sec_fetch_site: Option<&str>, host: Option<&str>) -> Option<String> {
    if sec_fetch_site.is_some_and(|s| s.trim().eq_ignore_ascii_case("cross-site")) {
        return Some("the browser says the request comes from another site (Sec-Fetch-Site: cross-site)".into());
    }
    let origin = origin?.trim();
    let Some((scheme, origin_host, origin_port)) = parse_origin(origin) else {
        return Some(format!("the request comes from a page whose origin is {origin:?}, not this store's"));
    };
    let Some(host) = host.map(str::trim).filter(|h| !h.is_empty()) else {
        return Some(format!("the request comes from a page of {origin} and names no Host to compare it with"));
    };
    let same = match split_host_port(host) {
        Some((h, port)) => h.eq_ignore_ascii_case(origin_host) && port.unwrap_or(default_port(scheme)) == origin_port,
        None => false,
    };
    (!same).then(|| format!("the request comes from a page of {origin}, not of this store ({host})"))
}

/// Refuses (403) a request that [`cross_site`] says comes from another web site.
pub fn check(request: &Request) -> Result<(), Error> {
    match cross_site(request.header("origin"), request.header("sec-fetch-site"), request.header("host")) {
        None => Ok(()),
        Some(why) => Err(Error::Forbidden(format!(
            "cross-site purchase refused: {why}; buy from the store's own pages (or with a client that sends no Origin, such as curl)"
        ))),
    }
}

/// `scheme://host[:port]` (RFC 6454's serialization: nothing after the port) as the scheme
/// (`http` or `https`, lower case), the host and the port (the scheme's default when
/// none is given). `None` for anything else, `null` included.
fn parse_origin(origin: &str) -> Option<(&'static str, &str, u16)> {
    let (scheme, rest) = origin.split_once("://")?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "http" => "http",
        "https" => "https",
        _ => return None,
    };
    let (host, port) = split_host_port(rest)?;
    Some((scheme, host, port.unwrap_or(default_port(scheme))))
}

/// `host`, `host:port`, `[v6]` or `[v6]:port` as the host (brackets kept) and the port; `None`
/// when it holds anything else (a path, user info, an empty host, a bad port).
fn split_host_port(s: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if s.starts_with('[') {
        let end = s.find(']')? + 1;
        match &s[end..] {
            "" => (&s[..end], None),
            p => (&s[..end], Some(p.strip_prefix(':')?)),
        }
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if host.is_empty() || host.contains(['/', '@', '?', '#', ' ']) || (!host.starts_with('[') && host.contains(':')) {
        return None;
    }
    let port = match port {
        None => None,
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => Some(p.parse().ok()?),
        Some(_) => return None,
    };
    Some((host, port))
}

fn default_port(scheme: &str) -> u16 {
    if scheme == "https" {
        443
    } else {
        80
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(origin, sec_fetch_site, host, refused)`: the decision as a table.
    #[test]
    fn cross_site_decisions() {
        type Case<'a> = (Option<&'a str>, Option<&'a str>, Option<&'a str>, bool);
        let cases: &[Case] = &[
            // Not a browser page: curl, the bench, the services.
            (None, None, Some("127.0.0.1:4200"), false),
            (None, None, None, false),
            // The storefront's own fetch.
            (Some("http://127.0.0.1:4200"), Some("same-origin"), Some("127.0.0.1:4200"), false),
            (Some("http://localhost:4200"), None, Some("LOCALHOST:4200"), false),
            (Some("http://[::1]:4200"), Some("same-origin"), Some("[::1]:4200"), false),
            (None, Some("none"), Some("127.0.0.1:4200"), false),
            (None, Some("same-origin"), Some("127.0.0.1:4200"), false),
            // Behind a proxy on the default ports.
            (Some("https://shop.example"), Some("same-origin"), Some("shop.example"), false),
            (Some("http://shop.example"), None, Some("shop.example:80"), false),
            (Some("https://shop.example:443"), None, Some("shop.example"), false),
            // Another site.
            (None, Some("cross-site"), Some("127.0.0.1:4200"), true),
            (Some("http://127.0.0.1:4200"), Some("cross-site"), Some("127.0.0.1:4200"), true),
            (Some("http://evil.example"), Some("cross-site"), Some("127.0.0.1:4200"), true),
            (Some("http://evil.example"), None, Some("127.0.0.1:4200"), true),
            (Some("http://127.0.0.1:8080"), None, Some("127.0.0.1:4200"), true),
            (Some("http://127.0.0.1"), None, Some("127.0.0.1:4200"), true),
            (Some("https://shop.example"), None, Some("shop.example:80"), true),
            (Some("http://shop.example.evil.example"), None, Some("shop.example"), true),
            (Some("null"), None, Some("127.0.0.1:4200"), true),
            (Some("file://"), None, Some("127.0.0.1:4200"), true),
            (Some("chrome-extension://abc"), None, Some("127.0.0.1:4200"), true),
            (Some("http://127.0.0.1:4200/path"), None, Some("127.0.0.1:4200"), true),
            (Some("http://user@127.0.0.1:4200"), None, Some("127.0.0.1:4200"), true),
            (Some("http://127.0.0.1:4200"), None, None, true),
            (Some("http://127.0.0.1:4200"), None, Some("127.0.0.1:x"), true),
            (Some("http://[::1]:4200"), None, Some("127.0.0.1:4200"), true),
            (Some(""), None, Some("127.0.0.1:4200"), true),
        ];
        for (origin, site, host, refused) in cases {
            let why = cross_site(*origin, *site, *host);
            assert_eq!(why.is_some(), *refused, "Origin {origin:?}, Sec-Fetch-Site {site:?}, Host {host:?}: {why:?}");
        }
    }

    #[test]
    fn the_refusal_is_a_403_that_says_why() {
        let mut r = Request::new("POST", "/purchase/1");
        assert!(check(&r).is_ok());
        r.headers.push(("origin".into(), "http://evil.example".into()));
        r.headers.push(("host".into(), "127.0.0.1:4200".into()));
        let e = check(&r).unwrap_err();
        assert_eq!(e.status(), 403);
        assert!(e.to_string().contains("cross-site purchase refused") && e.to_string().contains("evil.example"), "{e}");
    }
}
