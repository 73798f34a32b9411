//! Export to an OTLP collector (`BAZAR_OTLP_ENDPOINT`): spans sent in batches to
//! `<endpoint>/v1/traces` in OTLP/HTTP's JSON encoding, from a thread of their own.
//!
//! Why our own encoder: the `opentelemetry-otlp` crate's HTTP exporters run on reqwest
//! (its blocking client spins up a Tokio runtime inside) or hyper, and need the
//! `opentelemetry` SDK's batch processor: an async-oriented stack of dozens of crates for
//! what is, on the wire, one JSON document of a fixed shape
//! (`opentelemetry-proto`'s `ExportTraceServiceRequest`). Here that shape is a few serde
//! structs, sent with the ureq the store already uses between services.
//!
//! Architecture invariant: export never slows a request. Recording hands a finished span
//! to a bounded queue with `try_send`; when the queue is full (the collector is slow,
//! hangs or is gone) the span is dropped and counted (`bazar_spans_dropped_total`), and a
//! batch the collector refuses or does not take within [`EXPORT_TIMEOUT`] is counted
//! dropped too. Nothing is retried: a trace is worth less than the store's memory.

use super::ring::{Kind, Record, Value};
use super::Counters;
use serde::Serialize;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Spans waiting for export at most; more are dropped.
pub const QUEUE: usize = 4096;
/// Most spans in one request to the collector.
pub const BATCH: usize = 512;
/// How long a batch waits to fill once its first span is in.
pub const LINGER: Duration = Duration::from_millis(200);
/// Longest wait for the collector (connect and answer).
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a stopping service waits for its last spans to be exported: one batch's
/// linger and one export.
pub const FLUSH: Duration = Duration::from_millis(2_500);

/// Starts the export thread for spans of `kind` (OTLP's `service.name`) at `instance`
/// (`service.instance.id`); returns what hands it a span (never blocks).
pub fn start(
    endpoint: &str,
    kind: &'static str,
    instance: String,
    counters: Arc<Counters>,
) -> impl Fn(Arc<Record>) + Send + Sync + 'static {
    let (queue, spans) = mpsc::sync_channel::<Arc<Record>>(QUEUE);
    let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
    let thread_counters = Arc::clone(&counters);
    let started = std::thread::Builder::new()
        .name("otlp".into())
        .spawn(move || export(&url, kind, &instance, &spans, &thread_counters));
    if let Err(e) = &started {
        log::warn!("cannot start the OTLP export thread: {e}; spans are not exported");
    }
    move |span| {
        // Counted before it is queued, so the export thread never counts it out first.
        counters.queued.fetch_add(1, Ordering::Relaxed);
        match queue.try_send(span) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                counters.queued.fetch_sub(1, Ordering::Relaxed);
                counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The export thread: a batch (up to [`BATCH`] spans, or what came within [`LINGER`] of
/// its first), sent; counted exported or dropped.
fn export(url: &str, kind: &'static str, instance: &str, spans: &Receiver<Arc<Record>>, counters: &Counters) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(EXPORT_TIMEOUT))
        .timeout_global(Some(EXPORT_TIMEOUT))
        .max_redirects(0)
        .user_agent("bazar")
        .build()
        .into();
    let mut failing = false;
    while let Ok(first) = spans.recv() {
        let mut batch = vec![first];
        let until = Instant::now() + LINGER;
        while batch.len() < BATCH {
            match spans.recv_timeout(until.saturating_duration_since(Instant::now())) {
                Ok(span) => batch.push(span),
                Err(_) => break,
            }
        }
        let body = encode(kind, instance, &batch);
        let sent = agent.post(url).header("Content-Type", "application/json").send(&body[..]);
        let n = batch.len() as u64;
        // Counted out at the end of this round, whatever became of them.
        let _out = CountOut(&counters.queued, n);
        match sent {
            Ok(answer) if answer.status().is_success() => {
                counters.exported.fetch_add(n, Ordering::Relaxed);
                if failing {
                    log::info!("the OTLP collector at {url} takes spans again");
                    failing = false;
                }
            }
            other => {
                counters.dropped.fetch_add(n, Ordering::Relaxed);
                let why = match other {
                    Ok(answer) => format!("it answered {}", answer.status()),
                    Err(e) => e.to_string(),
                };
                // Once per outage, not once per batch.
                if !failing {
                    log::warn!("the OTLP collector at {url} did not take {n} spans ({why}); dropping until it does");
                    failing = true;
                }
            }
        }
    }
}

/// Takes `n` spans off the count of those waiting when dropped.
struct CountOut<'a>(&'a std::sync::atomic::AtomicU64, u64);

impl Drop for CountOut<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(self.1, Ordering::Relaxed);
    }
}

/// Waits until every span handed to the export has been exported or dropped, or `within`
/// has passed (a stopping service's last spans).
pub fn flush(counters: &Counters, within: Duration) {
    let deadline = Instant::now() + within;
    while counters.queued.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// OTLP's `ExportTraceServiceRequest`, JSON-encoded (field names in lowerCamelCase, ids in
/// hex, 64-bit numbers as strings, as the OTLP/HTTP JSON encoding says).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ExportRequest<'a> {
    resource_spans: [ResourceSpans<'a>; 1],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResourceSpans<'a> {
    resource: Resource<'a>,
    scope_spans: [ScopeSpans<'a>; 1],
}

#[derive(Serialize)]
struct Resource<'a> {
    attributes: Vec<KeyValue<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ScopeSpans<'a> {
    scope: Scope,
    spans: Vec<OtlpSpan<'a>>,
}

#[derive(Serialize)]
struct Scope {
    name: &'static str,
    version: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OtlpSpan<'a> {
    trace_id: String,
    span_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent_span_id: Option<String>,
    name: &'a str,
    /// 1 internal, 2 server.
    kind: u8,
    start_time_unix_nano: String,
    end_time_unix_nano: String,
    attributes: Vec<KeyValue<'a>>,
    status: Status,
}

#[derive(Serialize)]
struct Status {
    /// 0 unset (the span did its work), 2 error.
    code: u8,
}

#[derive(Serialize)]
struct KeyValue<'a> {
    key: &'a str,
    value: AnyValue<'a>,
}

/// OTLP's `AnyValue`: the variant names are its JSON field names.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
#[allow(clippy::enum_variant_names)]
enum AnyValue<'a> {
    StringValue(&'a str),
    /// int64 as a decimal string.
    IntValue(String),
    BoolValue(bool),
}

impl<'a> From<&'a Value> for AnyValue<'a> {
    fn from(v: &'a Value) -> AnyValue<'a> {
        match v {
            Value::Int(n) => AnyValue::IntValue(n.to_string()),
            Value::Str(s) => AnyValue::StringValue(s),
            Value::Bool(b) => AnyValue::BoolValue(*b),
        }
    }
}

/// One export request of `spans` from `kind` at `instance`.
pub fn encode(kind: &str, instance: &str, spans: &[Arc<Record>]) -> Vec<u8> {
    let spans = spans
        .iter()
        .map(|r| OtlpSpan {
            trace_id: r.trace_id.to_string(),
            span_id: r.span_id.to_string(),
            parent_span_id: r.parent_id.map(|p| p.to_string()),
            name: &r.name,
            kind: match r.kind {
                Kind::Server => 2,
                Kind::Internal => 1,
            },
            start_time_unix_nano: r.start_ns.to_string(),
            end_time_unix_nano: r.start_ns.saturating_add(r.duration_ns).to_string(),
            attributes: r.attributes.iter().map(|(k, v)| KeyValue { key: k, value: v.into() }).collect(),
            status: Status { code: if r.error { 2 } else { 0 } },
        })
        .collect();
    let request = ExportRequest {
        resource_spans: [ResourceSpans {
            resource: Resource {
                attributes: vec![
                    KeyValue { key: "service.name", value: AnyValue::StringValue(kind) },
                    KeyValue { key: "service.instance.id", value: AnyValue::StringValue(instance) },
                ],
            },
            scope_spans: [ScopeSpans { scope: Scope { name: "bazar", version: env!("CARGO_PKG_VERSION") }, spans }],
        }],
    };
    serde_json::to_vec(&request).expect("spans always serialize")
}

#[cfg(test)]
mod tests {
    use super::super::{SpanId, TraceId};
    use super::*;
    use std::borrow::Cow;

    /// A span with nothing in it but its id (`n` in every byte).
    fn plain_span(n: u8) -> Arc<Record> {
        Arc::new(Record {
            trace_id: TraceId([1; 16]),
            span_id: SpanId([n; 8]),
            parent_id: None,
            name: Cow::Borrowed("s"),
            kind: Kind::Internal,
            start_ns: 0,
            duration_ns: 0,
            error: false,
            attributes: Vec::new(),
        })
    }

    #[test]
    fn encodes_otlp_json() {
        let span = |parent: Option<SpanId>, error| {
            Arc::new(Record {
                trace_id: TraceId([0xab; 16]),
                span_id: SpanId([0x01; 8]),
                parent_id: parent,
                name: Cow::Borrowed("catalog.append"),
                kind: if parent.is_none() { Kind::Server } else { Kind::Internal },
                start_ns: 1_700_000_000_000_000_000,
                duration_ns: 2_500,
                error,
                attributes: vec![("book", Value::Int(7)), ("order", Value::from("a-1")), ("found", Value::Bool(true))],
            })
        };
        let body = encode("bazar-catalog", "127.0.0.1:9000", &[span(None, false), span(Some(SpanId([2; 8])), true)]);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let rs = &v["resourceSpans"][0];
        assert_eq!(rs["resource"]["attributes"][0]["key"], "service.name");
        assert_eq!(rs["resource"]["attributes"][0]["value"]["stringValue"], "bazar-catalog");
        assert_eq!(rs["resource"]["attributes"][1]["value"]["stringValue"], "127.0.0.1:9000");
        assert_eq!(rs["scopeSpans"][0]["scope"]["name"], "bazar");
        let spans = rs["scopeSpans"][0]["spans"].as_array().unwrap();
        let (root, child) = (&spans[0], &spans[1]);
        assert_eq!(root["traceId"], "ab".repeat(16));
        assert_eq!(root["spanId"], "01".repeat(8));
        assert!(root.get("parentSpanId").is_none());
        assert_eq!(child["parentSpanId"], "02".repeat(8));
        assert_eq!((root["kind"].as_u64(), child["kind"].as_u64()), (Some(2), Some(1)));
        assert_eq!(root["startTimeUnixNano"], "1700000000000000000");
        assert_eq!(root["endTimeUnixNano"], "1700000000000002500");
        assert_eq!(root["attributes"][0], serde_json::json!({"key": "book", "value": {"intValue": "7"}}));
        assert_eq!(root["attributes"][1], serde_json::json!({"key": "order", "value": {"stringValue": "a-1"}}));
        assert_eq!(root["attributes"][2], serde_json::json!({"key": "found", "value": {"boolValue": true}}));
        assert_eq!((root["status"]["code"].as_u64(), child["status"]["code"].as_u64()), (Some(0), Some(2)));

        // And as the OpenTelemetry project's own types read it.
        use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
        use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
        use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode};
        let decoded: ExportTraceServiceRequest = serde_json::from_slice(&body).expect("OTLP/JSON");
        let spans = &decoded.resource_spans[0].scope_spans[0].spans;
        let (root, child) = (&spans[0], &spans[1]);
        assert_eq!((root.trace_id.as_slice(), root.span_id.as_slice()), (&[0xab; 16][..], &[1; 8][..]));
        assert_eq!((root.parent_span_id.as_slice(), child.parent_span_id.as_slice()), (&[][..], &[2; 8][..]));
        assert_eq!((root.kind(), child.kind()), (SpanKind::Server, SpanKind::Internal));
        assert_eq!(root.end_time_unix_nano - root.start_time_unix_nano, 2_500);
        let values: Vec<Option<Any>> = root.attributes.iter().map(|a| a.value.clone().and_then(|v| v.value)).collect();
        assert_eq!(values, [Some(Any::IntValue(7)), Some(Any::StringValue("a-1".into())), Some(Any::BoolValue(true))]);
        let codes = (root.status.as_ref().map(|s| s.code()), child.status.as_ref().map(|s| s.code()));
        assert_eq!(codes, (Some(StatusCode::Unset), Some(StatusCode::Error)));
    }

    #[test]
    fn a_stopping_service_flushes_its_last_spans() {
        // A collector that takes every request (one connection, keep-alive).
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            use std::io::{BufRead, Read, Write};
            for stream in listener.incoming().flatten() {
                let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
                let mut out = stream;
                'requests: loop {
                    let (mut line, mut length) = (String::new(), 0usize);
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            break 'requests;
                        }
                        if line.trim_end().is_empty() {
                            break;
                        }
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap();
                        }
                    }
                    let mut body = vec![0; length];
                    reader.read_exact(&mut body).unwrap();
                    let _ = out.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}");
                }
            }
        });
        let counters = Arc::new(Counters::default());
        let send = start(&endpoint, "bazar-test", "x".into(), Arc::clone(&counters));
        for i in 0..10u8 {
            send(plain_span(i + 1));
        }
        flush(&counters, Duration::from_secs(20));
        assert_eq!(counters.exported.load(Ordering::Relaxed), 10);
        assert_eq!(counters.queued.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_collector_that_is_gone_costs_a_count_not_a_wait() {
        // Port 1 on loopback refuses; the queue takes spans at once whatever the thread does.
        let counters = Arc::new(Counters::default());
        let send = start("http://127.0.0.1:1", "bazar-test", "x".into(), Arc::clone(&counters));
        let span = plain_span(1);
        for _ in 0..QUEUE * 2 {
            send(Arc::clone(&span));
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while counters.dropped.load(Ordering::Relaxed) < (QUEUE * 2) as u64 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(counters.dropped.load(Ordering::Relaxed), (QUEUE * 2) as u64);
        assert_eq!(counters.exported.load(Ordering::Relaxed), 0);
    }
}
