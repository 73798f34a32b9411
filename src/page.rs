//! Pages of list answers (API.md, "Pages"): `limit` and `after` in, the items of one page
//! and a `Link: <...>; rel="next"` header out when more follow.
//!
//! A cursor is a key, not a position: a page holds the first `limit` items whose key is
//! greater than `after`, in key order. So paging visits every item that exists throughout
//! exactly once, whatever is added or changed meanwhile. Each list picks its own key
//! (books: the id; orders: time then id) and says how its cursor is written.

use crate::error::{Error, Result};
use crate::http::{percent_encode, Request};

/// Items in a page when `limit` is not given.
pub const DEFAULT_LIMIT: usize = 100;
/// Most items in a page.
pub const MAX_LIMIT: usize = 1000;

/// What a client asked for: how many items, after which cursor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageRequest<C> {
    /// Items wanted, 1 to [`MAX_LIMIT`] (or more where a route allows it).
    pub limit: usize,
    /// The cursor of the previous page, if any.
    pub after: Option<C>,
}

impl<C> PageRequest<C> {
    /// Reads `limit` (1 to `max`, default [`DEFAULT_LIMIT`]) and `after` (judged by
    /// `parse_after`) from the request's query; anything malformed is a 400.
    pub fn from_query(
        request: &Request,
        max: usize,
        parse_after: impl FnOnce(&str) -> std::result::Result<C, String>,
    ) -> Result<PageRequest<C>> {
        let limit = match request.query_param("limit")? {
            None => DEFAULT_LIMIT.min(max),
            Some(l) => match l.parse::<usize>() {
                Ok(n) if (1..=max).contains(&n) => n,
                _ => return Err(Error::BadRequest(format!("limit={l:?} must be a whole number from 1 to {max}"))),
            },
        };
        let after = match request.query_param("after")? {
            None => None,
            Some(a) => Some(parse_after(&a).map_err(|why| Error::BadRequest(format!("after={a:?}: {why}")))?),
        };
        Ok(PageRequest { limit, after })
    }
}

/// The `Link` header value of the next page: `</path?k=v&...&limit=L&after=C>; rel="next"`,
/// each value percent-encoded.
pub fn next_link(path: &str, params: &[(&str, &str)], limit: usize, after: &str) -> String {
    let mut target = format!("{path}?");
    for (k, v) in params {
        target.push_str(&format!("{k}={}&", percent_encode(v)));
    }
    target.push_str(&format!("limit={limit}&after={}", percent_encode(after)));
    format!("<{target}>; rel=\"next\"")
}

/// The target (`/path?query`) of a `Link` header's `rel="next"`, if it has one.
pub fn next_target(link: &str) -> Option<&str> {
    link.split(',').find_map(|part| {
        let (target, params) = part.trim().strip_prefix('<')?.split_once('>')?;
        params.split(';').any(|p| p.trim() == "rel=\"next\"" || p.trim() == "rel=next").then_some(target)
    })
}

/// The value of query parameter `name` in a target such as [`next_target`] returns.
pub fn target_param(target: &str, name: &str) -> Option<String> {
    Request::new("GET", target).query_param(name).ok().flatten()
}

/// A book cursor (books are paged by id): the id of the last book of the previous page,
/// digits only (0: from the start).
pub fn parse_book_cursor(a: &str) -> std::result::Result<u32, String> {
    if a.is_empty() || !a.bytes().all(|b| b.is_ascii_digit()) {
        return Err("a cursor is the id of the last book of the previous page".into());
    }
    a.parse().map_err(|_| "too large for a book id".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(target: &str) -> std::result::Result<PageRequest<u32>, u16> {
        let parse = |a: &str| a.parse::<u32>().map_err(|e| e.to_string());
        PageRequest::from_query(&Request::new("GET", target), MAX_LIMIT, parse).map_err(|e| e.status())
    }

    #[test]
    fn reads_limits_and_cursors() {
        let cases: Vec<(&str, std::result::Result<PageRequest<u32>, u16>)> = vec![
            ("/books", Ok(PageRequest { limit: 100, after: None })),
            ("/books?limit=1&after=7", Ok(PageRequest { limit: 1, after: Some(7) })),
            ("/books?limit=1000", Ok(PageRequest { limit: 1000, after: None })),
            ("/books?limit=0", Err(400)),
            ("/books?limit=1001", Err(400)),
            ("/books?limit=-1", Err(400)),
            ("/books?limit=", Err(400)),
            ("/books?after=x", Err(400)),
            ("/books?after=%zz", Err(400)),
        ];
        for (target, want) in cases {
            assert_eq!(page(target), want, "{target}");
        }
    }

    #[test]
    fn links_round_trip() {
        let link = next_link("/books", &[("topic", "a b&c")], 10, "42");
        assert_eq!(link, "</books?topic=a%20b%26c&limit=10&after=42>; rel=\"next\"");
        let target = next_target(&link).unwrap();
        assert_eq!(target_param(target, "topic").as_deref(), Some("a b&c"));
        assert_eq!(target_param(target, "after").as_deref(), Some("42"));
        assert_eq!(next_target("</x>; rel=\"prev\""), None);
    }
}
