//! The spans a service keeps: a bounded ring in memory, and the views of it the trace
//! routes answer (one trace's spans; the recent traces, newest first, paged). No I/O.
//!
//! Recording is one short lock of one shard: the ring is split in [`SHARDS`] by thread,
//! as the request metrics are, so connection threads do not queue on one lock; each
//! shard holds `capacity / SHARDS` spans and forgets its oldest when full. Reading (a
//! trace route) copies the shards out one at a time.

use super::context::{SpanId, TraceId};
use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

/// Shards of the ring (threads are spread over them).
pub const SHARDS: usize = 8;

/// An attribute's value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// A whole number (book id, status, batch size, epoch, write number).
    Int(i64),
    /// Text (order id, cache answer, a replica's URL, a linked span).
    Str(String),
    /// Yes or no.
    Bool(bool),
}

impl From<i64> for Value {
    fn from(v: i64) -> Value {
        Value::Int(v)
    }
}

impl From<u64> for Value {
    fn from(v: u64) -> Value {
        Value::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}

impl From<u32> for Value {
    fn from(v: u32) -> Value {
        Value::Int(i64::from(v))
    }
}

impl From<usize> for Value {
    fn from(v: usize) -> Value {
        Value::from(v as u64)
    }
}

impl From<u16> for Value {
    fn from(v: u16) -> Value {
        Value::Int(i64::from(v))
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Value {
        Value::Bool(v)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Value {
        Value::Str(v.to_string())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Value {
        Value::Str(v)
    }
}

impl Value {
    /// As JSON.
    pub fn json(&self) -> serde_json::Value {
        match self {
            Value::Int(n) => (*n).into(),
            Value::Str(s) => s.as_str().into(),
            Value::Bool(b) => (*b).into(),
        }
    }
}

/// What kind of work a span measures (OTLP's span kind).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A request this service served.
    Server,
    /// A step inside this service.
    Internal,
}

/// A finished span, as recorded.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    /// The trace.
    pub trace_id: TraceId,
    /// This span.
    pub span_id: SpanId,
    /// Its parent (here or in the caller), none for a root.
    pub parent_id: Option<SpanId>,
    /// What it measures.
    pub name: Cow<'static, str>,
    /// Served request or inner step.
    pub kind: Kind,
    /// Start, nanoseconds since the Unix epoch (the wall clock, so that services compare).
    pub start_ns: u64,
    /// Duration in nanoseconds (a monotonic clock).
    pub duration_ns: u64,
    /// Whether it failed.
    pub error: bool,
    /// A few facts about it.
    pub attributes: Vec<(&'static str, Value)>,
}

impl Record {
    /// The span on the wire, as recorded by `service`.
    pub fn wire(&self, service: &str) -> crate::wire::Span {
        crate::wire::Span {
            trace_id: self.trace_id.to_string(),
            span_id: self.span_id.to_string(),
            parent_id: self.parent_id.map(|p| p.to_string()),
            service: service.to_string(),
            name: self.name.to_string(),
            start: self.start_ns / 1000,
            duration_ms: (self.duration_ns / 1000) as f64 / 1000.0,
            status: if self.error { "error" } else { "ok" }.to_string(),
            attributes: self.attributes.iter().map(|(k, v)| (k.to_string(), v.json())).collect(),
        }
    }

    fn end_ns(&self) -> u64 {
        self.start_ns.saturating_add(self.duration_ns)
    }
}

/// The ring of a service's recent spans.
pub struct Ring {
    /// Each shard's spans, oldest first; a lock is held for one push or one copy.
    shards: Vec<Mutex<VecDeque<Arc<Record>>>>,
    /// Spans per shard.
    per_shard: usize,
}

impl Ring {
    /// A ring that keeps about `capacity` spans (at least one per shard).
    pub fn new(capacity: usize) -> Ring {
        let per_shard = capacity.div_ceil(SHARDS).max(1);
        Ring { shards: (0..SHARDS).map(|_| Mutex::new(VecDeque::with_capacity(per_shard))).collect(), per_shard }
    }

    /// Keeps `record` in the shard of `shard` (a thread's index), forgetting that shard's
    /// oldest span when it is full.
    pub fn push(&self, shard: usize, record: Arc<Record>) {
        let mut spans = self.shards[shard % SHARDS].lock().unwrap_or_else(|e| e.into_inner());
        if spans.len() == self.per_shard {
            spans.pop_front();
        }
        spans.push_back(record);
    }

    /// Every span kept, in no order.
    pub fn all(&self) -> Vec<Arc<Record>> {
        let mut out = Vec::new();
        for shard in &self.shards {
            out.extend(shard.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned());
        }
        out
    }

    /// The spans of one trace, by start.
    pub fn trace(&self, id: TraceId) -> Vec<Arc<Record>> {
        let mut out = Vec::new();
        for shard in &self.shards {
            out.extend(shard.lock().unwrap_or_else(|e| e.into_inner()).iter().filter(|r| r.trace_id == id).cloned());
        }
        out.sort_by_key(|r| r.start_ns);
        out
    }
}

/// Where a page of recent traces ends: the start (µs) and id of its last trace. The list
/// is newest first, so the next page holds the traces ordered after it: earlier ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor {
    /// Start of the trace, microseconds since the epoch.
    pub start: u64,
    /// The trace.
    pub trace_id: TraceId,
}

impl Cursor {
    /// `<start>-<trace id>`, as the `after` of the next page.
    pub fn text(&self) -> String {
        format!("{}-{}", self.start, self.trace_id)
    }

    /// Reads what [`Cursor::text`] wrote.
    pub fn parse(s: &str) -> Result<Cursor, String> {
        let bad = || "a cursor is <start>-<trace id> of the last trace of the previous page".to_string();
        let (start, id) = s.split_once('-').ok_or_else(bad)?;
        if start.is_empty() || !start.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        Ok(Cursor { start: start.parse().map_err(|_| bad())?, trace_id: TraceId::parse(id).ok_or_else(bad)? })
    }
}

/// The traces of `spans`, newest first, after `after` (older than it), at most `limit`;
/// and whether more follow. A trace's name and start are its earliest span's; its
/// duration runs to its last span's end.
pub fn recent(spans: &[Arc<Record>], after: Option<Cursor>, limit: usize) -> (Vec<crate::wire::TraceSummary>, bool) {
    let mut traces: HashMap<TraceId, (&Record, u64)> = HashMap::new();
    for r in spans {
        let entry = traces.entry(r.trace_id).or_insert((r, r.end_ns()));
        if (r.start_ns, r.span_id) < (entry.0.start_ns, entry.0.span_id) {
            entry.0 = r;
        }
        entry.1 = entry.1.max(r.end_ns());
    }
    let mut list: Vec<(Cursor, &Record, u64)> = traces
        .into_iter()
        .map(|(id, (first, end))| (Cursor { start: first.start_ns / 1000, trace_id: id }, first, end))
        .filter(|(c, _, _)| after.is_none_or(|a| *c < a))
        .collect();
    list.sort_by_key(|t| std::cmp::Reverse(t.0));
    let more = list.len() > limit;
    let page = list
        .into_iter()
        .take(limit)
        .map(|(c, first, end)| crate::wire::TraceSummary {
            trace_id: c.trace_id.to_string(),
            name: first.name.to_string(),
            start: c.start,
            duration_ms: ((end - first.start_ns) / 1000) as f64 / 1000.0,
        })
        .collect();
    (page, more)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(trace: u8, span: u8, start_us: u64, dur_us: u64, name: &'static str) -> Arc<Record> {
        Arc::new(Record {
            trace_id: TraceId([trace; 16]),
            span_id: SpanId([span; 8]),
            parent_id: None,
            name: Cow::Borrowed(name),
            kind: Kind::Internal,
            start_ns: start_us * 1000,
            duration_ns: dur_us * 1000,
            error: false,
            attributes: vec![("book", Value::Int(1))],
        })
    }

    #[test]
    fn the_ring_is_bounded_and_forgets_the_oldest() {
        let ring = Ring::new(16);
        for i in 0..100u8 {
            ring.push(0, record(i, 1, u64::from(i), 1, "s"));
        }
        let kept = ring.all();
        assert_eq!(kept.len(), 2, "a shard holds capacity / SHARDS");
        assert_eq!(ring.trace(TraceId([99; 16])).len(), 1);
        assert!(ring.trace(TraceId([0; 16])).is_empty());
        for shard in 0..SHARDS {
            for i in 0..10u8 {
                ring.push(shard, record(i, shard as u8, 1, 1, "s"));
            }
        }
        assert_eq!(ring.all().len(), 16);
    }

    #[test]
    fn recent_traces_newest_first_in_pages() {
        let spans = vec![
            record(1, 1, 100, 50, "GET /info/{id}"),
            record(1, 2, 110, 80, "cache.lookup"), // ends last: the trace runs to 190
            record(2, 1, 300, 10, "POST /purchase/{id}"),
            record(3, 1, 200, 10, "GET /books"),
        ];
        let (page, more) = recent(&spans, None, 2);
        let ids: Vec<&str> = page.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(ids, ["POST /purchase/{id}", "GET /books"]);
        assert!(more);
        let cursor = Cursor { start: page[1].start, trace_id: TraceId::parse(&page[1].trace_id).unwrap() };
        assert_eq!(Cursor::parse(&cursor.text()), Ok(cursor));
        let (page, more) = recent(&spans, Some(cursor), 2);
        assert_eq!(page.len(), 1);
        assert!(!more);
        assert_eq!(page[0].name, "GET /info/{id}");
        assert_eq!(page[0].start, 100);
        assert_eq!(page[0].duration_ms, 0.09);
    }

    #[test]
    fn cursors() {
        let id = "4bf92f3577b34da6a3ce929d0e0e4736";
        for (text, ok) in [
            (format!("12-{id}"), true),
            (format!("-{id}"), false),
            (format!("x-{id}"), false),
            ("12-xyz".into(), false),
            ("12".into(), false),
            (format!("99999999999999999999999-{id}"), false),
        ] {
            assert_eq!(Cursor::parse(&text).is_ok(), ok, "{text}");
        }
    }

    #[test]
    fn spans_on_the_wire() {
        let span = record(1, 2, 1_500, 2_345, "catalog.append").wire("bazar-catalog@127.0.0.1:9000");
        assert_eq!(span.trace_id, "01".repeat(16));
        assert_eq!(span.span_id, "02".repeat(8));
        assert_eq!(span.parent_id, None);
        assert_eq!((span.start, span.duration_ms), (1_500, 2.345));
        assert_eq!(span.status, "ok");
        assert_eq!(span.attributes["book"], 1);
    }
}
