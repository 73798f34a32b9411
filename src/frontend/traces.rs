//! The front end's trace routes (API.md): `GET /traces`, the recent traces it took part
//! in, newest first, paged; and `GET /traces/{trace_id}`, every span of one trace
//! gathered from this process and every back end it knows (catalogs, order servers).
//!
//! A back end's `GET /traces/{trace_id}` answers its own spans (404 when it holds none);
//! the front end asks them all at once, each on its own scoped thread with
//! [`GATHER_TIMEOUT`], so one that is down or frozen costs the view its spans, not the
//! answer. A trace no one holds (never sampled, or pushed out of every ring) is a 404.
//! These requests are not traced themselves (`trace::starts_trace`), so looking at traces
//! never pushes the traces looked at out of the rings.

use crate::client::Http;
use crate::error::{Error, Result};
use crate::http::{Request, Response};
use crate::page::{self, PageRequest};
use crate::trace::{self, Cursor};
use crate::wire::Span;
use std::time::Duration;

/// Longest wait for one back end's spans.
pub const GATHER_TIMEOUT: Duration = Duration::from_secs(2);

/// `GET /traces`: the traces of this front end's ring, newest first, `limit` and `after`
/// as every list (the cursor is `<start>-<trace id>` of the previous page's last trace).
pub fn recent(request: &Request) -> Result<Response> {
    let page = PageRequest::from_query(request, page::MAX_LIMIT, Cursor::parse)?;
    let spans = trace::tracer().map(|t| t.ring.all()).unwrap_or_default();
    let (traces, more) = trace::recent(&spans, page.after, page.limit);
    let next = traces.last().filter(|_| more).and_then(|last| {
        trace::TraceId::parse(&last.trace_id).map(|id| Cursor { start: last.start, trace_id: id }.text())
    });
    let response = Response::json(&traces);
    Ok(match next {
        Some(after) => response.with_header("Link", page::next_link("/traces", &[], page.limit, &after)),
        None => response,
    })
}

/// `GET /traces/{trace_id}`: this front end's spans of the trace and every back end's,
/// by start; 404 when none holds any.
pub fn gather(http: &Http, back_ends: &[String], id: &str) -> Result<Response> {
    let id = trace::parse_id(id)?;
    let mut spans: Vec<Span> = trace::tracer().map(|t| t.spans_of(id)).unwrap_or_default();
    let path = format!("/traces/{id}");
    let theirs: Vec<Vec<Span>> = std::thread::scope(|s| {
        let asked: Vec<_> = back_ends
            .iter()
            .map(|base| {
                let path = &path;
                s.spawn(move || match http.get::<Vec<Span>>(base, path) {
                    Ok(spans) => spans,
                    Err(e) => {
                        // 404: it holds none of this trace; anything else is logged.
                        if !matches!(&e, crate::error::PeerError::Answered { status: 404, .. }) {
                            log::debug!("spans of trace {id} from {base}: {e}");
                        }
                        Vec::new()
                    }
                })
            })
            .collect();
        asked.into_iter().map(|a| a.join().unwrap_or_default()).collect()
    });
    spans.extend(theirs.into_iter().flatten());
    if spans.is_empty() {
        return Err(Error::NotFound(format!("no service holds a span of trace {id}")));
    }
    spans.sort_by(|a, b| (a.start, &a.service, &a.span_id).cmp(&(b.start, &b.service, &b.span_id)));
    Ok(Response::json(&spans))
}
