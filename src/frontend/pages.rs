//! The storefront (`GET /`) and the operator's dashboard (`GET /dashboard`): static files
//! compiled into the binary from `src/frontend/pages/`, served with their own routes.
//!
//! No framework and no build step: each page is one HTML file, one shared style sheet and
//! one script, all from this origin (`/assets/...`). The scripts use only the public API
//! (`/books`, `/topics`, `/search`, `/info`, `/purchase`, `/orders/{id}`) and
//! `GET /cluster`, and never need the token. The storefront's views have addresses of their
//! own (`/`, `/?topic=T`, `/?book=ID`), all served by the one page.
//!
//! Invariants:
//! - **no data is ever code**: the scripts build the page with `createElement` and
//!   `textContent`, never `innerHTML` or its kin; a unit test below keeps them so, and the
//!   browser test checks a hostile title shows as text;
//! - every page answer carries [`CSP`], which lets scripts and styles come from this
//!   origin's files only (no inline script, no inline style, nothing from elsewhere), and
//!   `X-Content-Type-Options: nosniff`, so a file is only ever run as its own type;
//! - the files weigh under 200 KB in all ([`weight`], tested).

use crate::http::Response;

/// The pages' Content-Security-Policy: this origin's files only, no inline script or
/// style, no plugins, no framing, no `<base>`, forms post only here.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// One file: where it is served, its type, its bytes.
struct Asset {
    /// The path segments it answers (`[]` for `/`).
    segments: &'static [&'static str],
    /// The route label in the metrics.
    route: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const HTML: &str = "text/html; charset=utf-8";

const ASSETS: [Asset; 6] = [
    Asset { segments: &[], route: "/", content_type: HTML, body: include_bytes!("pages/store.html") },
    Asset {
        segments: &["dashboard"],
        route: "/dashboard",
        content_type: HTML,
        body: include_bytes!("pages/dashboard.html"),
    },
    Asset {
        segments: &["assets", "bazar.css"],
        route: "/assets/{file}",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("pages/bazar.css"),
    },
    Asset {
        segments: &["assets", "store.js"],
        route: "/assets/{file}",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("pages/store.js"),
    },
    Asset {
        segments: &["assets", "dashboard.js"],
        route: "/assets/{file}",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("pages/dashboard.js"),
    },
    Asset {
        segments: &["assets", "icon.svg"],
        route: "/assets/{file}",
        content_type: "image/svg+xml",
        body: include_bytes!("pages/icon.svg"),
    },
];

/// The file served at these path segments, if any: `/`, `/dashboard`, `/assets/<name>`.
pub fn answer(segments: &[&str]) -> Option<Response> {
    let asset = ASSETS.iter().find(|a| a.segments == segments)?;
    let r = Response {
        status: 200,
        headers: Vec::new(),
        content_type: asset.content_type,
        body: asset.body.to_vec(),
        route: asset.route,
    };
    Some(
        r.with_header("Content-Security-Policy", CSP)
            .with_header("X-Content-Type-Options", "nosniff")
            .with_header("Referrer-Policy", "no-referrer")
            .with_header("X-Frame-Options", "DENY")
            // Small files, revalidated each time, so a new binary's pages show at once.
            .with_header("Cache-Control", "no-cache"),
    )
}

/// Bytes of every page file together (html, css, js and the icon).
pub fn weight() -> usize {
    ASSETS.iter().map(|a| a.body.len()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(a: &Asset) -> &str {
        std::str::from_utf8(a.body).expect("pages are UTF-8")
    }

    #[test]
    fn routes_types_and_headers() {
        let cases: [(&[&str], Option<&str>); 6] = [
            (&[], Some(HTML)),
            (&["dashboard"], Some(HTML)),
            (&["assets", "store.js"], Some("text/javascript; charset=utf-8")),
            (&["assets", "bazar.css"], Some("text/css; charset=utf-8")),
            (&["assets", "nope.js"], None),
            (&["store.js"], None),
        ];
        for (segments, want) in cases {
            let got = answer(segments);
            assert_eq!(got.as_ref().map(|r| r.content_type), want, "{segments:?}");
            if let Some(r) = got {
                let header = |n: &str| r.headers.iter().find(|(k, _)| *k == n).map(|(_, v)| v.as_str());
                assert_eq!(header("Content-Security-Policy"), Some(CSP));
                assert_eq!(header("X-Content-Type-Options"), Some("nosniff"));
            }
        }
    }

    #[test]
    fn under_200_kb_in_all() {
        assert!(weight() < 200_000, "{} bytes", weight());
    }

    /// Whether some ` on<letters>=` appears (an event handler attribute).
    fn has_handler_attribute(t: &str) -> bool {
        t.match_indices(" on").any(|(i, _)| {
            let rest = &t[i + 3..];
            let name = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
            name > 0 && rest[name..].starts_with('=')
        })
    }

    #[test]
    fn handler_attributes_are_found() {
        assert!(has_handler_attribute("<img src=x onerror=alert(1)>"));
        assert!(!has_handler_attribute("<p>Buy one now</p>"));
    }

    /// The rule that keeps data from becoming code, checked in the files themselves.
    #[test]
    fn no_markup_from_strings_and_no_inline_code() {
        for a in &ASSETS {
            let t = text(a);
            for banned in ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"] {
                assert!(!t.contains(banned), "{} uses {banned}", a.route);
            }
            if a.content_type == HTML {
                assert!(t.contains("<html lang=\"en\">"), "{}: <html lang>", a.route);
                assert!(!t.contains(" style="), "{}: inline style", a.route);
                assert!(!has_handler_attribute(t), "{}: an inline handler", a.route);
                for script in t.split("<script").skip(1) {
                    assert!(script.trim_start().starts_with("src=\"/assets/"), "{}: inline script", a.route);
                }
                assert!(!t.contains("http://") && !t.contains("https://"), "{}: another origin", a.route);
            }
        }
    }
}
