//! Traces across services: W3C Trace Context on every request between services, spans
//! recorded in each service, kept in a bounded ring in memory (issue 27).
//!
//! # Parts
//! - `context.rs`: `traceparent` and `tracestate` read and written, ids drawn (no I/O).
//! - `ring.rs`: the finished spans a service keeps, and the views the trace routes answer
//!   (one trace; the recent traces, newest first, paged) (no I/O).
//! - [`otlp`]: the export to an OTLP/HTTP collector, JSON, on a thread of its own.
//! - this file: the process's [`Tracer`] and the current span of each thread.
//!
//! # The current span is the thread's
//! A request is served on one thread from start to end (plain threads, no async runtime),
//! so the span a request is in lives in a thread-local: the HTTP server opens the
//! request's span ([`serve`]), every [`span`] opened below it on that thread is its child,
//! and [`crate::client::Http`] sends the current context with every call
//! ([`current`]). Passing a context down every function instead would touch the
//! signatures of the whole store (and the catalog, which is being rebuilt) for what is
//! metadata; the thread-local is what `log`'s and `tracing`'s span stacks do. Where work
//! moves to another thread (the primary's writer thread, its pushes on scoped threads),
//! the context travels explicitly: [`current`] there, [`adopt`] here.
//!
//! # One tracer per process
//! Like the logger, the tracer is installed once per process ([`install`], by
//! [`crate::service::run`] from [`crate::config::Common`]); where none is installed (unit
//! tests, the bench, the launcher) or `BAZAR_TRACE_SAMPLE=0`, every call here is a
//! check of one `OnceLock` and nothing else.
//!
//! # Which requests start a trace
//! A request with a valid `traceparent` continues its trace (recorded when its `sampled`
//! flag is set); one without starts a trace, sampled at `BAZAR_TRACE_SAMPLE`, only if it
//! is public work on the API ([`starts_trace`]): the services' own background calls
//! (lease renewals, pushes of writes nobody traced, journal checks), the health probes,
//! `/metrics`, `/cluster`, the pages and the trace routes themselves would otherwise fill
//! the ring with noise and push the purchases out.
//!
//! Architecture invariant: recording a span never does I/O and never waits on anything
//! but one shard of the ring (a push into a `VecDeque`); export to a collector happens on
//! its own thread, from a bounded queue that drops (and counts) rather than blocks.

mod context;
pub mod otlp;
mod ring;

pub use context::{parse_traceparent, valid_tracestate, Context, SpanId, TraceId, MAX_STATE_MEMBERS, MAX_TRACESTATE};
pub use ring::{recent, Cursor, Kind, Record, Ring, Value, SHARDS};

use std::borrow::Cow;
use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Spans a service keeps when `BAZAR_TRACE_SPANS` is not set: a few hundred purchases'
/// worth (a purchase is about 10 spans in a front end, 5 in an order server, 15 in the
/// primary), about 1 MiB.
pub const DEFAULT_SPANS: usize = 4096;

/// How a service traces (`BAZAR_TRACE_SAMPLE`, `BAZAR_TRACE_SPANS`,
/// `BAZAR_OTLP_ENDPOINT`), read in [`crate::config::Common`].
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// Fraction of the requests without a `traceparent` that start a recorded trace, 0 to
    /// 1; 0 turns tracing off in this service.
    pub sample: f64,
    /// Spans kept in memory (the ring's size).
    pub spans: usize,
    /// The OTLP/HTTP collector's base URL, if spans are exported.
    pub otlp: Option<String>,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings { sample: 1.0, spans: DEFAULT_SPANS, otlp: None }
    }
}

/// Counts of spans, shown in `/metrics`.
#[derive(Default, Debug)]
pub struct Counters {
    /// Spans recorded (kept in the ring).
    pub recorded: AtomicU64,
    /// Spans the collector took.
    pub exported: AtomicU64,
    /// Spans never exported: the queue was full, or the collector failed or refused them.
    pub dropped: AtomicU64,
    /// Spans handed to the export and not yet counted exported or dropped.
    pub queued: AtomicU64,
}

/// The tracer of a process: its name in spans, its sampling, its ring, its counters.
pub struct Tracer {
    /// `<binary>@<listen address>`, the `service` of every span recorded here.
    pub service: String,
    /// The binary's name (OTLP's `service.name`).
    pub kind: &'static str,
    /// Requests without a context start a recorded trace when a draw is below this
    /// (`u64::MAX`: every one).
    threshold: u64,
    /// The spans kept.
    pub ring: Ring,
    /// Counts of spans.
    pub counters: Arc<Counters>,
    /// Where finished spans go for export, if anywhere.
    export: Option<Box<dyn Fn(Arc<Record>) + Send + Sync>>,
}

impl Tracer {
    /// A tracer for `kind` (the binary) listening on `listen`, with `settings`.
    pub fn new(kind: &'static str, listen: &str, settings: &Settings) -> Tracer {
        let threshold = if settings.sample >= 1.0 { u64::MAX } else { (settings.sample * u64::MAX as f64) as u64 };
        Tracer {
            service: format!("{kind}@{listen}"),
            kind,
            threshold,
            ring: Ring::new(settings.spans),
            counters: Arc::new(Counters::default()),
            export: None,
        }
    }

    /// Sends every span recorded from now on to `export` too (which must not block).
    pub fn exporting(mut self, export: impl Fn(Arc<Record>) + Send + Sync + 'static) -> Tracer {
        self.export = Some(Box::new(export));
        self
    }

    /// Whether a new trace is recorded (a draw against the sample rate).
    fn sample(&self) -> bool {
        self.threshold == u64::MAX || context::next_u64() < self.threshold
    }

    /// Keeps a finished span (and hands it to the export).
    pub fn record(&self, record: Record) {
        let record = Arc::new(record);
        if let Some(export) = &self.export {
            export(Arc::clone(&record));
        }
        self.ring.push(shard_index(), record);
        self.counters.recorded.fetch_add(1, Ordering::Relaxed);
    }

    /// This service's spans of a trace, on the wire.
    pub fn spans_of(&self, id: TraceId) -> Vec<crate::wire::Span> {
        self.ring.trace(id).iter().map(|r| r.wire(&self.service)).collect()
    }
}

static TRACER: OnceLock<Tracer> = OnceLock::new();

/// Installs the process's tracer for `kind` (the binary) listening on `listen`, and starts
/// its export when `settings` name a collector (once; later calls are ignored). With a
/// sample rate of 0 nothing is installed and nothing exported: tracing is off.
pub fn install(kind: &'static str, listen: &str, settings: &Settings) {
    if settings.sample <= 0.0 || TRACER.get().is_some() {
        return;
    }
    let mut tracer = Tracer::new(kind, listen, settings);
    if let Some(endpoint) = &settings.otlp {
        let counters = Arc::clone(&tracer.counters);
        tracer = tracer.exporting(otlp::start(endpoint, kind, listen.to_string(), counters));
        log::info!("spans are exported to the OTLP collector at {endpoint}/v1/traces");
    }
    let _ = TRACER.set(tracer);
}

/// The process's tracer, if tracing is on.
pub fn tracer() -> Option<&'static Tracer> {
    TRACER.get()
}

thread_local! {
    /// The context of the span this thread is in, if any.
    static CURRENT: RefCell<Option<Context>> = const { RefCell::new(None) };
}

/// This thread's index among the ring's shards.
fn shard_index() -> usize {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed) as usize % SHARDS;
    }
    INDEX.with(|i| *i)
}

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// The context this thread is in (to send with a call, or to hand to another thread).
pub fn current() -> Option<Context> {
    TRACER.get()?;
    CURRENT.with(|c| c.borrow().clone())
}

fn replace_current(ctx: Option<Context>) -> Option<Context> {
    CURRENT.with(|c| std::mem::replace(&mut *c.borrow_mut(), ctx))
}

/// Whether a request without a `traceparent` may start a trace: public work on the API,
/// not the probes, metrics, pages, dashboard data, lab or the trace routes themselves.
pub fn starts_trace(path: &str) -> bool {
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    !matches!(
        first,
        "" | "health" | "ready" | "metrics" | "traces" | "cluster" | "dashboard" | "assets" | "lab" | "internal"
    )
}

/// An open span: recorded when dropped (or [`Span::end`]ed), and the thread's current
/// span until then. One that is not recorded (tracing off, a trace not sampled) costs
/// nothing and ignores what it is told.
#[must_use = "a span measures until it is dropped"]
pub struct Span {
    /// Inline, not boxed: a traced cached read opens two spans, and an allocation each was
    /// a measurable part of tracing's cost.
    open: Option<Open>,
    /// The context to put back as current when this span ends (`None`: it changed none).
    restore: Option<Option<Context>>,
}

struct Open {
    ctx: Context,
    parent: Option<SpanId>,
    name: Cow<'static, str>,
    kind: Kind,
    start_ns: u64,
    started: Instant,
    error: bool,
    attributes: Vec<(&'static str, Value)>,
}

impl Span {
    /// A span that records nothing.
    pub fn none() -> Span {
        Span { open: None, restore: None }
    }

    fn open(ctx: Context, parent: Option<SpanId>, name: Cow<'static, str>, kind: Kind) -> Span {
        let previous = replace_current(Some(ctx.clone()));
        Span {
            open: Some(Open {
                ctx,
                parent,
                name,
                kind,
                start_ns: now_ns(),
                started: Instant::now(),
                error: false,
                attributes: Vec::new(),
            }),
            restore: Some(previous),
        }
    }

    /// Whether this span is recorded.
    pub fn is_recording(&self) -> bool {
        self.open.is_some()
    }

    /// Adds an attribute.
    pub fn attr(&mut self, key: &'static str, value: impl Into<Value>) -> &mut Span {
        if let Some(open) = &mut self.open {
            open.attributes.push((key, value.into()));
        }
        self
    }

    /// Marks it failed.
    pub fn fail(&mut self) -> &mut Span {
        if let Some(open) = &mut self.open {
            open.error = true;
        }
        self
    }

    /// Renames it (a request's span is named after its route once it is known).
    pub fn rename(&mut self, name: impl Into<Cow<'static, str>>) -> &mut Span {
        if let Some(open) = &mut self.open {
            open.name = name.into();
        }
        self
    }

    /// Its context (what a write carries to the primary's writer thread), if recorded.
    pub fn context(&self) -> Option<Context> {
        self.open.as_ref().map(|o| o.ctx.clone())
    }

    /// Ends it now.
    pub fn end(self) {}

    /// Stops being the thread's current span (the one before it is current again), and
    /// goes on measuring until it is dropped, on whatever thread: for a request whose
    /// answer another thread sends (`http::later`).
    pub fn detach(mut self) -> Span {
        if let Some(previous) = self.restore.take() {
            replace_current(previous);
        }
        self
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        if let Some(open) = self.open.take() {
            if let Some(tracer) = TRACER.get() {
                tracer.record(Record {
                    trace_id: open.ctx.trace_id,
                    span_id: open.ctx.span_id,
                    parent_id: open.parent,
                    name: open.name,
                    kind: open.kind,
                    start_ns: open.start_ns,
                    duration_ns: open.started.elapsed().as_nanos() as u64,
                    error: open.error,
                    attributes: open.attributes,
                });
            }
        }
        if let Some(previous) = self.restore.take() {
            replace_current(previous);
        }
    }
}

/// Opens the span of a request the HTTP server is about to serve, from its
/// `traceparent` and `tracestate`: a valid one continues its trace, else a new trace
/// starts if `may_start` (see [`starts_trace`]) and the draw says so. It is the thread's
/// current span until dropped; an unsampled context is made current (and so passed on)
/// without recording anything.
pub fn serve(traceparent: Option<&str>, tracestate: Option<&str>, may_start: bool, name: &'static str) -> Span {
    let Some(tracer) = TRACER.get() else {
        return Span::none();
    };
    let (trace_id, parent, state) = match Context::from_headers(traceparent, tracestate) {
        Some(ctx) if ctx.sampled => (ctx.trace_id, Some(ctx.span_id), ctx.state),
        Some(ctx) => {
            // Not recorded, but passed on as it came.
            return Span { open: None, restore: Some(replace_current(Some(ctx))) };
        }
        None if may_start && tracer.sample() => (TraceId::random(), None, None),
        // Nothing recorded, and nothing of an earlier request on this thread passed on.
        None => return Span { open: None, restore: Some(replace_current(None)) },
    };
    let ctx = Context { trace_id, span_id: SpanId::random(), sampled: true, state };
    Span::open(ctx, parent, Cow::Borrowed(name), Kind::Server)
}

/// Opens a child of the thread's current span, if that one is recorded.
pub fn span(name: &'static str) -> Span {
    match current() {
        Some(parent) if parent.sampled => {
            let ctx = Context { span_id: SpanId::random(), ..parent.clone() };
            Span::open(ctx, Some(parent.span_id), Cow::Borrowed(name), Kind::Internal)
        }
        _ => Span::none(),
    }
}

/// Opens a span of work that goes on after the span `from` ended (the commit notice a
/// batch sends once it is answered): in `from`'s trace, recorded when `from` is, with no
/// parent (no span of the trace lasts as long) and a `follows` attribute that names `from`
/// (`<trace id>/<span id>`: OpenTelemetry's "follows from"). It is the thread's current
/// span until dropped.
pub fn follow(from: Option<&Context>, name: &'static str) -> Span {
    match from {
        Some(from) if from.sampled && TRACER.get().is_some() => {
            let ctx = Context { span_id: SpanId::random(), ..from.clone() };
            let mut span = Span::open(ctx, None, Cow::Borrowed(name), Kind::Internal);
            span.attr("follows", format!("{}/{}", from.trace_id, from.span_id));
            span
        }
        _ => Span::none(),
    }
}

/// Makes `ctx` this thread's current context until the guard is dropped (work handed
/// to another thread: the writer thread, a scoped push).
pub fn adopt(ctx: Option<Context>) -> Span {
    if TRACER.get().is_none() {
        return Span::none();
    }
    Span { open: None, restore: Some(replace_current(ctx)) }
}

/// `f`, to run on another thread in this thread's current context (a scoped thread's
/// body: `s.spawn(trace::carried(move || ...))`).
pub fn carried<T>(f: impl FnOnce() -> T) -> impl FnOnce() -> T {
    let here = current();
    move || {
        let _in = adopt(here);
        f()
    }
}

/// Records a span that already happened: a child of `parent`, from `started` (wall
/// clock, ns) to now (a write's wait in the primary's queue and batch, recorded by the
/// writer thread with the link to its batch).
pub fn record_past(
    parent: &Context,
    name: &'static str,
    start_ns: u64,
    started: Instant,
    error: bool,
    attributes: Vec<(&'static str, Value)>,
) {
    if let (Some(tracer), true) = (TRACER.get(), parent.sampled) {
        tracer.record(Record {
            trace_id: parent.trace_id,
            span_id: SpanId::random(),
            parent_id: Some(parent.span_id),
            name: Cow::Borrowed(name),
            kind: Kind::Internal,
            start_ns,
            duration_ns: started.elapsed().as_nanos() as u64,
            error,
            attributes,
        });
    }
}

/// Runs a batch of items gathered from several requests (a `batch::Group`'s batch), whose
/// traces are `contexts`, one per item: in the trace of the first traced item, whichever
/// thread leads it (a leader may run a batch that holds none of its own), as a span `name`
/// when it holds more than one item; every other traced item gets a span `linked` in its
/// own trace, from the batch's start to its end, whose `batch` attribute names that span
/// (`<trace id>/<span id>`), as the catalog links each write to its batch. `failed` says
/// which answers are failures. One answer per item, as `run` gives them.
pub fn batch<R>(
    contexts: &[Option<Context>],
    name: &'static str,
    linked: &'static str,
    run: impl FnOnce() -> Vec<R>,
    failed: impl Fn(&R) -> bool,
) -> Vec<R> {
    let _in = adopt(contexts.iter().flatten().next().cloned());
    if contexts.len() == 1 {
        return run();
    }
    let since = mark();
    let mut span = span(name);
    span.attr("batch.items", contexts.len());
    let carrier = span.context();
    let answers = run();
    drop(span);
    if let Some(carrier) = carrier {
        let link = format!("{}/{}", carrier.trace_id, carrier.span_id);
        for (ctx, answer) in contexts.iter().zip(&answers) {
            let Some(ctx) = ctx.as_ref().filter(|c| c.trace_id != carrier.trace_id) else { continue };
            let attributes = vec![("batch", Value::from(link.as_str())), ("batch.items", contexts.len().into())];
            record_past(ctx, linked, since.0, since.1, failed(answer), attributes);
        }
    }
    answers
}

/// The wall clock and the monotonic clock now, for [`record_past`].
pub fn mark() -> (u64, Instant) {
    (now_ns(), Instant::now())
}

/// The `traceparent` (and `tracestate`) to send with a call from this thread, if any.
pub fn outgoing() -> Option<(String, Option<Arc<str>>)> {
    current().map(|ctx| (ctx.traceparent(), ctx.state.clone()))
}

/// Waits, at most `within`, for the spans handed to the export to be sent (a stopping
/// service's last ones); returns at once when nothing is exported.
pub fn flush(within: std::time::Duration) {
    if let Some(tracer) = TRACER.get().filter(|t| t.export.is_some()) {
        otlp::flush(&tracer.counters, within);
    }
}

/// Spans recorded, exported and dropped since the process started, for `/metrics`
/// (`metrics.rs` renders them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpanCounts {
    /// Spans recorded in the ring.
    pub recorded: u64,
    /// Spans the OTLP collector took.
    pub exported: u64,
    /// Spans not exported (queue full, collector slow, failing or gone).
    pub dropped: u64,
}

/// The span counters now (zeros when tracing is off).
pub fn counts() -> SpanCounts {
    match TRACER.get() {
        Some(t) => SpanCounts {
            recorded: t.counters.recorded.load(Ordering::Relaxed),
            exported: t.counters.exported.load(Ordering::Relaxed),
            dropped: t.counters.dropped.load(Ordering::Relaxed),
        },
        None => SpanCounts::default(),
    }
}

/// The answer to a service's own `GET /traces/{trace_id}`: its spans of that trace by
/// start; 404 when it holds none (or tracing is off), 400 for a malformed id.
pub fn own_answer(id: &str) -> crate::Result<crate::http::Response> {
    let id = parse_id(id)?;
    let spans = tracer().map(|t| t.spans_of(id)).unwrap_or_default();
    if spans.is_empty() {
        return Err(crate::Error::NotFound(format!("no span of trace {id} here")));
    }
    Ok(crate::http::Response::json(&spans))
}

/// A trace id from a route: 32 lower-case hex digits, not all zero (else a 400).
pub fn parse_id(id: &str) -> crate::Result<TraceId> {
    TraceId::parse(id).ok_or_else(|| {
        crate::Error::BadRequest(format!("trace id {id:?} must be 32 lower-case hex digits, not all zero"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_requests_start_a_trace() {
        for (path, starts) in [
            ("/purchase/1", true),
            ("/info/1", true),
            ("/books/1/purchase", true),
            ("/orders", true),
            ("/search/x", true),
            ("/", false),
            ("/health", false),
            ("/ready", false),
            ("/metrics", false),
            ("/cluster", false),
            ("/dashboard", false),
            ("/assets/store.js", false),
            ("/traces", false),
            ("/traces/abc", false),
            ("/internal/replicate", false),
            ("/lab/verdict", false),
        ] {
            assert_eq!(starts_trace(path), starts, "{path}");
        }
    }

    #[test]
    fn sampling_draws_at_the_rate() {
        let tracer = |sample| Tracer::new("t", "x", &Settings { sample, ..Settings::default() });
        let (all, none, some) = (tracer(1.0), tracer(1e-12), tracer(0.25));
        let count = |t: &Tracer| (0..10_000).filter(|_| t.sample()).count();
        assert_eq!(count(&all), 10_000);
        assert_eq!(count(&none), 0);
        assert!((2_000..3_000).contains(&count(&some)), "{}", count(&some));
    }

    /// The one test that installs this process's tracer (the others build their own).
    #[test]
    fn spans_nest_on_a_thread_and_travel_to_others() {
        install("bazar-test", "127.0.0.1:1", &Settings::default());
        let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let (trace, caller) = (
            TraceId::parse("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            SpanId([0, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]),
        );
        let (server_id, inner_id, handed);
        {
            let mut server = serve(Some(incoming), Some("a=b"), false, "request");
            server_id = server.context().unwrap().span_id;
            server.rename("GET /info/{id}").attr("status", 200u16);
            {
                let inner = span("cache.lookup");
                inner_id = inner.context().unwrap().span_id;
                assert_eq!(current().unwrap().span_id, inner_id);
                assert_eq!(outgoing().unwrap().1.as_deref(), Some("a=b"), "tracestate passed on");
            }
            assert_eq!(current().unwrap().span_id, server_id, "the parent is current again");
            handed = current();
            std::thread::scope(|s| {
                s.spawn(|| {
                    assert_eq!(current(), None);
                    let _in = adopt(handed.clone());
                    let _push = span("catalog.push");
                });
            });
        }
        assert_eq!(current(), None, "nothing of the request stays on the thread");
        let spans = tracer().unwrap().ring.trace(trace);
        let by_name = |n: &str| spans.iter().find(|r| r.name == n).unwrap_or_else(|| panic!("{n}: {spans:?}"));
        assert_eq!(by_name("GET /info/{id}").parent_id, Some(caller));
        assert_eq!(by_name("GET /info/{id}").kind, Kind::Server);
        assert_eq!(by_name("cache.lookup").parent_id, Some(server_id));
        assert_eq!(by_name("catalog.push").parent_id, Some(server_id));
        // Hostile or missing context: a new trace only where one may start; never a panic.
        for (header, may_start, recorded) in [
            (Some("00-zz"), true, true),
            (Some(&*"0".repeat(55)), true, true),
            (None, true, true),
            (None, false, false),
            (Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"), true, false),
        ] {
            let s = serve(header, Some(&"x".repeat(100_000)), may_start, "r");
            assert_eq!(s.is_recording(), recorded, "{header:?}");
            if recorded {
                assert_ne!(s.context().unwrap().trace_id, trace);
            }
        }
        assert_eq!(current(), None);

        // A batch led by a thread that holds none of its items (`batch`): it runs in the
        // first item's trace, the other item links to it, the leader's trace gets nothing.
        let request = |id: &str| serve(Some(&format!("00-{id}-00f067aa0ba902b7-01")), None, false, "request");
        let (a, b) = ("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb");
        let (a_ctx, b_ctx) = (request(a).context(), request(b).context());
        let _leader = request("cccccccccccccccccccccccccccccccc");
        let ran_in =
            batch(&[a_ctx.clone(), b_ctx.clone()], "x.batch", "x.batched", || vec![current(), None], |_| false);
        let in_a = tracer().unwrap().ring.trace(TraceId::parse(a).unwrap());
        let the_batch = in_a.iter().find(|r| r.name == "x.batch").expect("the batch is in the first item's trace");
        assert_eq!(ran_in[0].as_ref().map(|c| c.span_id), Some(the_batch.span_id), "run inside the batch's span");
        assert_eq!(the_batch.parent_id, a_ctx.as_ref().map(|c| c.span_id));
        let in_b = tracer().unwrap().ring.trace(TraceId::parse(b).unwrap());
        let linked = in_b.iter().find(|r| r.name == "x.batched").expect("the other item links to it");
        assert_eq!(linked.parent_id, b_ctx.as_ref().map(|c| c.span_id));
        let link = format!("{a}/{}", the_batch.span_id);
        assert!(linked.attributes.iter().any(|(k, v)| *k == "batch" && *v == Value::from(link.as_str())), "{linked:?}");
        let in_c = tracer().unwrap().ring.trace(TraceId::parse("cccccccccccccccccccccccccccccccc").unwrap());
        assert!(in_c.iter().all(|r| r.name == "request"), "the leader's trace holds nothing of the batch");
        // One item alone runs in its own trace, with no batch span.
        let alone = batch(std::slice::from_ref(&b_ctx), "x.batch", "x.batched", || vec![current()], |_| false);
        assert_eq!(alone[0], b_ctx);
    }

    #[test]
    fn a_trace_id_in_a_route() {
        assert!(parse_id("4bf92f3577b34da6a3ce929d0e0e4736").is_ok());
        for bad in ["", "4BF92F3577B34DA6A3CE929D0E0E4736", "00000000000000000000000000000000", "x"] {
            assert_eq!(parse_id(bad).unwrap_err().status(), 400, "{bad}");
        }
    }
}
