//! Traces across services (issue 27): a purchase sent with a `traceparent` is one trace in
//! every service it crosses, gathered by the front end's `GET /traces/{trace_id}`;
//! hostile trace headers start a new trace and never fail a request; spans reach an OTLP
//! collector, and a collector that hangs or refuses costs the store no request.

mod common;

use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Slack for comparing times taken by different clocks (the wall clock at a span's start,
/// a monotonic one for its length), in microseconds.
const SLACK_US: f64 = 1000.0;

/// A request with extra headers on a fresh connection: (status, body).
fn send(base: &str, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, Vec<u8>) {
    let addr = base.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let text = String::from_utf8_lossy(&answer);
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = match answer.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(i) => answer[i + 4..].to_vec(),
        None => Vec::new(),
    };
    (status, body)
}

fn hex(n: usize) -> String {
    let id = format!("{}{}", bazar::trace::TraceId::random(), bazar::trace::TraceId::random());
    id[..n].to_string()
}

/// The spans of a trace from the front end, once every one of `services` recorded some
/// (a back end records its span when its answer is ready, a moment after the caller has
/// it).
fn trace_of(fe: &str, trace: &str, wanted: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let mut spans = Vec::new();
    eventually(Duration::from_secs(10), "every span of the trace", || {
        let a = get(fe, &format!("/traces/{trace}"));
        spans = if a.status == 200 { json(&a).as_array().unwrap().clone() } else { Vec::new() };
        let ok = wanted(&spans);
        if !ok {
            let seen: Vec<String> = spans.iter().map(|s| format!("{} {}", s["service"], s["name"])).collect();
            eprintln!("trace {trace} so far: {} {seen:?}", a.status);
        }
        ok
    });
    spans
}

fn names(spans: &[Value]) -> HashSet<String> {
    spans.iter().map(|s| s["name"].as_str().unwrap().to_string()).collect()
}

/// Every span of `trace`; parents consistent (each parent is a span of the trace or the
/// caller's; a span with none follows a span of the trace), children within their
/// parents' times.
fn check_trace(spans: &[Value], trace: &str, caller: &str) {
    let by_id: HashMap<&str, &Value> = spans.iter().map(|s| (s["span_id"].as_str().unwrap(), s)).collect();
    assert_eq!(by_id.len(), spans.len(), "span ids are unique");
    let mut roots = 0;
    for s in spans {
        assert_eq!(s["trace_id"], trace, "{s}");
        for field in ["service", "name", "status"] {
            assert!(s[field].is_string(), "{field} of {s}");
        }
        assert!(s["attributes"].is_object(), "{s}");
        let Some(parent) = s["parent_id"].as_str() else {
            // Work that follows a span of the trace after it ended (the commit notice after
            // a batch's answers): it names that span and starts after it did.
            let follows = s["attributes"]["follows"].as_str().unwrap_or_else(|| panic!("a span without a parent: {s}"));
            let (t, id) = follows.split_once('/').unwrap();
            assert_eq!(t, trace, "{s}");
            let f = by_id.get(id).unwrap_or_else(|| panic!("the span {s} follows is not in the trace"));
            assert!(s["start"].as_f64().unwrap() + SLACK_US >= f["start"].as_f64().unwrap(), "{s}\nstarts before\n{f}");
            continue;
        };
        if parent == caller {
            roots += 1;
            assert!(s["service"].as_str().unwrap().starts_with("bazar-frontend@"), "{s}");
            continue;
        }
        let p = by_id.get(parent).unwrap_or_else(|| panic!("the parent of {s} is not in the trace"));
        let (start, end) =
            (s["start"].as_f64().unwrap(), s["start"].as_f64().unwrap() + 1000.0 * s["duration_ms"].as_f64().unwrap());
        let (p_start, p_end) =
            (p["start"].as_f64().unwrap(), p["start"].as_f64().unwrap() + 1000.0 * p["duration_ms"].as_f64().unwrap());
        assert!(start + SLACK_US >= p_start && end <= p_end + SLACK_US, "{s}\nis not within its parent\n{p}");
    }
    assert_eq!(roots, 1, "one span is the caller's child: the front end's request");
}

#[test]
fn a_purchase_is_one_trace_across_the_store() {
    let s =
        Store::start(Opts { memcached: true, ..Opts::default() }).or_else(|| Store::start(Opts::default())).unwrap();
    s.set_stock(1, 100);
    let fe = s.fe();
    let (primary_port, replica_port) =
        (s.primary().rsplit(':').next().unwrap().to_string(), s.replica().rsplit(':').next().unwrap().to_string());
    // Round robin over two order servers; each takes its copies from the catalog it found
    // to be the primary (issue 25).
    for _ in 0..6 {
        let (trace, caller) = (hex(32), hex(16));
        let traceparent = format!("00-{trace}-{caller}-01");
        let (status, body) =
            send(&fe, "POST", "/purchase/1", &[("traceparent", &traceparent), ("tracestate", "bazar=test")]);
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let order_id = serde_json::from_slice::<Value>(&body).unwrap()["order_id"].as_str().unwrap().to_string();
        let spans = trace_of(&fe, &trace, |spans| {
            let n = names(spans);
            ["order.share", "catalog.apply", "catalog.batched", "catalog.commit_notice", "POST /purchase/{id}"]
                .iter()
                .all(|w| n.contains(*w))
                && spans.iter().filter(|s| s["name"] == "POST /internal/orders").count() == 1
        });
        check_trace(&spans, &trace, &caller);
        let services: HashSet<&str> = spans.iter().map(|s| s["service"].as_str().unwrap()).collect();
        let on = |prefix: &str| services.iter().any(|s| s.starts_with(prefix));
        assert!(on("bazar-frontend@") && on("bazar-order@"), "{services:?}");
        let kinds = |port: &str| {
            spans
                .iter()
                .filter(|s| s["service"].as_str().unwrap().ends_with(&format!(":{port}")))
                .map(|s| s["name"].as_str().unwrap().to_string())
                .collect::<HashSet<_>>()
        };
        let (on_primary, on_replica) = (kinds(&primary_port), kinds(&replica_port));
        for step in [
            "catalog.write",
            "catalog.batch",
            "catalog.decide",
            "catalog.append",
            "catalog.push",
            "catalog.commit_notice",
            "catalog.batched",
            "catalog.fence.near",
            "catalog.near.confirmed",
        ] {
            assert!(on_primary.contains(step), "{step} not on the primary: {on_primary:?}");
        }
        assert!(on_replica.contains("catalog.apply"), "{on_replica:?}");
        // The order server's span names the order; the batch link names the batch span.
        let purchase = spans.iter().find(|s| s["name"] == "order.purchase").unwrap();
        assert_eq!(purchase["attributes"]["order"], order_id.as_str());
        let batch = spans.iter().find(|s| s["name"] == "catalog.batch").unwrap();
        let batched = spans.iter().find(|s| s["name"] == "catalog.batched").unwrap();
        let batch_span = format!("{trace}/{}", batch["span_id"].as_str().unwrap());
        assert_eq!(batched["attributes"]["batch"], batch_span.as_str());
        // The commit notice follows the batch's answers: it names the batch.
        let notice = spans.iter().find(|s| s["name"] == "catalog.commit_notice").unwrap();
        assert_eq!(notice["attributes"]["follows"], batch_span.as_str());
        // Each back end answers its own spans of the trace.
        let own = get(&s.order(0), &format!("/traces/{trace}"));
        assert!(own.status == 200 || own.status == 404, "{}", own.status);
    }
    // A write sent to the replica is forwarded to the primary (the order servers' fallback
    // while they do not know the primary): its trace shows the forward on the replica and
    // the batch on the primary, under the replica's own request span.
    let (trace, caller) = (hex(32), hex(16));
    let (status, body) =
        send(&s.replica(), "POST", "/books/1/purchase", &[("traceparent", &format!("00-{trace}-{caller}-01"))]);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let spans = trace_of(&fe, &trace, |spans| {
        let n = names(spans);
        n.contains("catalog.forward") && n.contains("catalog.batched")
    });
    let on = |name: &str, port: &str| {
        spans.iter().find(|s| s["name"] == name && s["service"].as_str().unwrap().ends_with(&format!(":{port}")))
    };
    let forward = on("catalog.forward", &replica_port).expect("the forward is the replica's");
    assert!(on("catalog.batch", &primary_port).is_some(), "the batch is the primary's");
    let request = on("POST /books/{id}/purchase", &replica_port).expect("the replica's request span");
    assert_eq!(
        (request["parent_id"].as_str(), forward["parent_id"].as_str()),
        (Some(&*caller), request["span_id"].as_str())
    );
    assert!(spans.iter().all(|s| s["trace_id"] == trace.as_str()));

    // The front end's list: newest first, paged, the purchases among them.
    let first = get(&fe, "/traces?limit=2");
    assert_eq!(first.status, 200);
    let page = json(&first);
    assert_eq!(page.as_array().unwrap().len(), 2);
    assert!(page[0]["start"].as_u64() >= page[1]["start"].as_u64());
    assert_eq!(page[0]["name"], "POST /purchase/{id}");
    let next = bazar::page::next_target(first.link.as_deref().expect("more follow")).unwrap().to_string();
    let second = json(&get(&fe, &next));
    assert!(second[0]["start"].as_u64() <= page[1]["start"].as_u64());
    assert_ne!(second[0]["trace_id"], page[1]["trace_id"]);
    for (target, status) in [
        ("/traces?limit=0", 400),
        ("/traces?after=nope", 400),
        (&*format!("/traces/{}", hex(32)), 404),
        ("/traces/NOT-A-TRACE", 400),
        (&*format!("/traces/{}", "0".repeat(32)), 400),
    ] {
        assert_eq!(get(&fe, target).status, status, "{target}");
    }
    assert_eq!(call("POST", &fe, "/traces", None).status, 405);

    // Hostile trace headers: the request is served and a new trace starts.
    let valid = hex(32);
    let before: HashSet<String> = json(&get(&fe, "/traces?limit=1000"))
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["trace_id"].as_str().unwrap().to_string())
        .collect();
    let hostile = [
        format!("00-{}-{}-01", valid.to_uppercase(), hex(16)),
        format!("00-{valid}-{}-01", hex(15)),
        format!("00-{valid}-{}-1", hex(16)),
        format!("00-{valid}-{}-01-", hex(16)),
        format!("00-{}-{}-01", "0".repeat(32), hex(16)),
        format!("00-{valid}-{}-01", "0".repeat(16)),
        format!("ff-{valid}-{}-01", hex(16)),
        format!("00-{}g-{}-01", &valid[..31], hex(16)),
        "x".repeat(4000),
        String::new(),
    ];
    let huge_state = format!("a={}", "b".repeat(6000));
    for (i, traceparent) in hostile.iter().enumerate() {
        for path in ["/info/1", "/purchase/1"] {
            let method = if path == "/info/1" { "GET" } else { "POST" };
            let state = if i % 2 == 0 { huge_state.as_str() } else { "k=v,=,K=V" };
            let (status, body) = send(&fe, method, path, &[("traceparent", traceparent), ("tracestate", state)]);
            assert_eq!(status, 200, "{traceparent:?} on {path}: {}", String::from_utf8_lossy(&body));
        }
    }
    let after: Vec<Value> = json(&get(&fe, "/traces?limit=1000")).as_array().unwrap().clone();
    let new: Vec<&Value> = after.iter().filter(|t| !before.contains(t["trace_id"].as_str().unwrap())).collect();
    assert_eq!(new.len(), 2 * hostile.len(), "each hostile request started a trace of its own");
    assert!(new.iter().all(|t| t["trace_id"] != valid.as_str()), "no hostile id was continued");
    // Each new trace is whole: its purchase's spans reach the primary as any other.
    let purchase = new.iter().find(|t| t["name"] == "POST /purchase/{id}").unwrap();
    let id = purchase["trace_id"].as_str().unwrap();
    let spans = trace_of(&fe, id, |spans| names(spans).contains("catalog.batched"));
    assert!(spans.iter().all(|s| s["trace_id"] == id));

    // Every service counts what it recorded.
    for p in s.all() {
        assert!(metric(&url(p), "bazar_spans_recorded_total") > 0.0, "{}", p.spec.name);
    }
}

/// Purchases that meet at the front end go to an order server in one batch (issue 25),
/// carried in the trace of the purchase that leads it: every other traced purchase of the
/// batch has an `order.batched` span that names the leader's `order.call`, so every
/// purchase's trace reaches an order server, itself or through that link.
#[test]
fn concurrent_purchases_link_to_the_batch_that_carried_them() {
    let s = Store::start(Opts::default()).unwrap();
    s.set_stock(1, 10_000);
    let fe = s.fe();
    let reaches_an_order_server =
        |spans: &[Value]| spans.iter().any(|s| s["service"].as_str().unwrap_or("").starts_with("bazar-order@"));
    let mut linked = 0;
    for _round in 0..4 {
        let start = std::sync::Barrier::new(24);
        let traces: Vec<String> = std::thread::scope(|scope| {
            let sent: Vec<_> = (0..24)
                .map(|_| {
                    scope.spawn(|| {
                        let (trace, caller) = (hex(32), hex(16));
                        start.wait();
                        let (status, body) =
                            send(&fe, "POST", "/purchase/1", &[("traceparent", &format!("00-{trace}-{caller}-01"))]);
                        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
                        trace
                    })
                })
                .collect();
            sent.into_iter().map(|t| t.join().unwrap()).collect()
        });
        for trace in &traces {
            let spans =
                trace_of(&fe, trace, |spans| reaches_an_order_server(spans) || names(spans).contains("order.batched"));
            if reaches_an_order_server(&spans) {
                continue;
            }
            // Carried by another purchase's batch: the link names a span of a trace that
            // reaches an order server.
            let batched = spans.iter().find(|s| s["name"] == "order.batched").unwrap();
            let link = batched["attributes"]["batch"].as_str().unwrap_or_else(|| panic!("no link: {batched}"));
            let (leader, span) = link.split_once('/').unwrap();
            assert_ne!(leader, trace, "a link to another trace");
            let carried = trace_of(&fe, leader, reaches_an_order_server);
            assert!(
                carried.iter().any(|s| s["span_id"] == span && s["name"] == "order.call"),
                "{link} names the leader's order.call"
            );
            linked += 1;
        }
    }
    eprintln!("{linked} of 96 concurrent purchases were carried by another purchase's batch");
}

/// A small OTLP/HTTP receiver: answers every `POST /v1/traces` with 200 and keeps each
/// span it decodes (with its resource's `service.name` and `service.instance.id` added).
fn collector() -> (String, Arc<Mutex<Vec<Value>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let spans = Arc::new(Mutex::new(Vec::new()));
    let kept = Arc::clone(&spans);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let kept = Arc::clone(&kept);
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut out = stream;
                loop {
                    // One request (ureq keeps the connection for the next).
                    let (mut line, mut length, mut target) = (String::new(), 0, String::new());
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let l = line.trim_end();
                        if l.is_empty() {
                            break;
                        }
                        if target.is_empty() {
                            target = l.to_string();
                        }
                        if let Some((k, v)) = l.split_once(':') {
                            if k.eq_ignore_ascii_case("content-length") {
                                length = v.trim().parse().unwrap();
                            }
                        }
                    }
                    let mut body = vec![0; length];
                    reader.read_exact(&mut body).unwrap();
                    assert!(target.starts_with("POST /v1/traces "), "{target}");
                    // Decoded first by the OpenTelemetry project's own OTLP types: the body is
                    // an ExportTraceServiceRequest in OTLP/JSON, or the test fails.
                    let decoded: ExportTraceServiceRequest =
                        serde_json::from_slice(&body).expect("an OTLP/JSON ExportTraceServiceRequest");
                    let spans_in: usize =
                        decoded.resource_spans.iter().flat_map(|rs| &rs.scope_spans).map(|ss| ss.spans.len()).sum();
                    assert!(spans_in > 0, "an export request with no span");
                    assert!(
                        decoded.resource_spans.iter().flat_map(|rs| &rs.scope_spans).flat_map(|ss| &ss.spans).all(
                            |s| s.trace_id.len() == 16
                                && s.span_id.len() == 8
                                && s.end_time_unix_nano >= s.start_time_unix_nano
                        ),
                        "every span has a 16-byte trace id, an 8-byte span id and ends after it starts"
                    );
                    let request: Value = serde_json::from_slice(&body).expect("OTLP JSON");
                    for rs in request["resourceSpans"].as_array().unwrap() {
                        let attr = |key: &str| {
                            rs["resource"]["attributes"].as_array().unwrap().iter().find(|a| a["key"] == key).unwrap()
                                ["value"]["stringValue"]
                                .clone()
                        };
                        for ss in rs["scopeSpans"].as_array().unwrap() {
                            for span in ss["spans"].as_array().unwrap() {
                                let mut span = span.clone();
                                span["service.name"] = attr("service.name");
                                span["service.instance.id"] = attr("service.instance.id");
                                kept.lock().unwrap().push(span);
                            }
                        }
                    }
                    let answer = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
                    if out.write_all(answer.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (base, spans)
}

/// A collector that takes connections and never answers.
fn hanging_collector() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let held: Vec<TcpStream> = listener.incoming().flatten().collect();
        drop(held);
    });
    base
}

/// A front end over `s`'s back ends that exports to `endpoint`.
fn frontend_exporting_to(s: &Store, name: &str, endpoint: &str) -> Proc {
    let mut spec = s.frontend.spec.clone();
    spec.name = name.to_string();
    spec.log = s.dir.0.join(format!("{name}.log"));
    for (k, v) in spec.env.iter_mut() {
        match k.as_str() {
            "BAZAR_LISTEN" => *v = format!("127.0.0.1:{}", free_port()),
            "BAZAR_OTLP_ENDPOINT" => *v = endpoint.to_string(),
            _ => {}
        }
    }
    let p = Proc::start(spec);
    wait_ready(&url(&p));
    eventually(START_DEADLINE, "the new front end to see every back end ready", || {
        let a = json(&get(&url(&p), "/ready"));
        a["catalogs_ready"] == 2 && a["orders_ready"] == 2
    });
    p
}

#[test]
fn spans_reach_an_otlp_collector_and_one_that_fails_costs_no_request() {
    let (endpoint, received) = collector();
    let env = vec![("BAZAR_OTLP_ENDPOINT".to_string(), endpoint)];
    let s = Store::start(Opts { env, ..Opts::default() }).unwrap();
    s.set_stock(1, 1000);
    let fe = s.fe();
    let (trace, caller) = (hex(32), hex(16));
    let (status, _) = send(&fe, "POST", "/purchase/1", &[("traceparent", &format!("00-{trace}-{caller}-01"))]);
    assert_eq!(status, 200);
    let instances = |trace: &str| -> HashSet<String> {
        let spans = received.lock().unwrap();
        spans
            .iter()
            .filter(|s| s["traceId"] == trace)
            .map(|s| s["service.instance.id"].as_str().unwrap().to_string())
            .collect()
    };
    let everyone: HashSet<String> = s.all().iter().map(|p| url(p).trim_start_matches("http://").to_string()).collect();
    let (o1, o2) =
        (s.order(0).trim_start_matches("http://").to_string(), s.order(1).trim_start_matches("http://").to_string());
    eventually(Duration::from_secs(10), "the purchase's spans at the collector from every service it crossed", || {
        let seen = instances(&trace);
        // Both order servers: the one that took the order, and its peer it shared it with.
        [
            fe.trim_start_matches("http://"),
            s.primary().trim_start_matches("http://"),
            s.replica().trim_start_matches("http://"),
            &o1,
            &o2,
        ]
        .iter()
        .all(|i| seen.contains(*i))
    });
    {
        let spans = received.lock().unwrap();
        let ours: Vec<&Value> = spans.iter().filter(|s| s["traceId"] == trace.as_str()).collect();
        let ids: HashSet<&str> = ours.iter().map(|s| s["spanId"].as_str().unwrap()).collect();
        for span in &ours {
            assert!(everyone.contains(span["service.instance.id"].as_str().unwrap()));
            match span["parentSpanId"].as_str() {
                Some(parent) => assert!(parent == caller || ids.contains(parent), "{span}"),
                // The commit notice after the answer: it names the batch span it follows.
                None => {
                    let follows = span["attributes"]
                        .as_array()
                        .and_then(|a| a.iter().find(|kv| kv["key"] == "follows"))
                        .and_then(|kv| kv["value"]["stringValue"].as_str())
                        .unwrap_or_else(|| panic!("a span with neither parent nor follows: {span}"));
                    let (t, id) = follows.split_once('/').unwrap();
                    assert!(t == trace && ids.contains(id), "{span}");
                }
            }
            let (start, end): (u64, u64) = (
                span["startTimeUnixNano"].as_str().unwrap().parse().unwrap(),
                span["endTimeUnixNano"].as_str().unwrap().parse().unwrap(),
            );
            assert!(start <= end);
        }
        eprintln!("collector: {} spans of the purchase's trace, {} spans in all", ours.len(), spans.len());
    }
    eventually(Duration::from_secs(10), "the front end counts what it exported", || {
        metric(&fe, "bazar_spans_exported_total") > 0.0
    });

    // Collectors that hang or refuse: every request is still served.
    let refusing = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let hanging = hanging_collector();
    let mut fronts =
        [frontend_exporting_to(&s, "fe-hanging", &hanging), frontend_exporting_to(&s, "fe-refused", &refusing)];
    for p in &fronts {
        let base = url(p);
        for i in 0..300 {
            let (method, path) = if i % 50 == 0 { ("POST", "/purchase/1") } else { ("GET", "/info/1") };
            let (status, body) = send(&base, method, path, &[]);
            assert_eq!(status, 200, "{} {method} {path}: {}", p.spec.name, String::from_utf8_lossy(&body));
        }
    }
    for p in &fronts {
        eventually(Duration::from_secs(20), "the spans it could not export counted as dropped", || {
            metric(&url(p), "bazar_spans_dropped_total") > 0.0
        });
        eprintln!(
            "{}: recorded {}, exported {}, dropped {}",
            p.spec.name,
            metric(&url(p), "bazar_spans_recorded_total"),
            metric(&url(p), "bazar_spans_exported_total"),
            metric(&url(p), "bazar_spans_dropped_total")
        );
    }
    // A stop waits for the last spans a bounded time, even for a collector that hangs.
    for p in &mut fronts {
        assert_eq!(p.terminate(Duration::from_secs(20)), Some(0), "{} stopped", p.spec.name);
    }
}
