//! Records a history from concurrent clients against a live store.
//!
//! Each client (a plain thread) picks a hot book and an operation at random (and after a
//! read, often reads the same book again at once, elsewhere): a read through
//! a front end (cached) or straight from either catalog, a `PATCH` of the price, of the
//! quantity or of a delta through either catalog (a replica forwards it), or a purchase
//! through a front end. Invocation and response are taken from one monotonic clock
//! (`Instant` since the recording began). What the client learned decides the outcome:
//! a 2xx answer is seen, a 409 purchase or 400 delta is a refusal that changed nothing, a
//! failed read is dropped (it constrains nothing), and a write whose outcome is not known
//! (503, timeout, a connection lost after the request left) is recorded as unknown. A
//! request that surely never left (connection refused) is dropped: it had no effect.
//! Any other status is counted as unexpected, and the test fails on it.

use crate::checker::{Call, Initial, Op, Ret, State};
use bazar::client::{Answer, Http, PeerError};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use ureq::http::Method;

/// How long a client waits for an answer before calling the outcome unknown.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(3);
/// The clients work in rounds: all at once during the active part of each round, mostly on
/// the round's hot book, idle for the rest (unless behind the pace that spends the budget
/// of operations by the end). Contention is what finds violations; the idle parts spread
/// the bounded number of operations over the whole fault schedule.
const ROUND: Duration = Duration::from_millis(400);
const ACTIVE: Duration = Duration::from_millis(60);
/// A client's pause after a write of unknown outcome (a fault is going on).
const BACK_OFF: Duration = Duration::from_millis(500);

/// Where the clients send their requests.
#[derive(Clone, Debug)]
pub struct Targets {
    /// Each front end (they share memcached): a name for the history, and its base URL.
    pub frontends: Vec<(String, String)>,
    /// Each catalog: a name for the history, and its base URL.
    pub catalogs: Vec<(String, String)>,
    /// Whether reads go through the front end too (false: only to the catalogs).
    pub frontend_reads: bool,
}

/// What to record.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The hot books.
    pub books: Vec<u32>,
    /// Concurrent clients.
    pub clients: usize,
    /// Most operations on one book (keeps the search bounded).
    pub per_book: usize,
    /// How long the clients run at most.
    pub duration: Duration,
    /// Seed of the clients' choices.
    pub seed: u64,
}

/// What happened besides the history.
#[derive(Debug, Default)]
pub struct Counts {
    /// Operations recorded, by kind and outcome (`"read seen"`, `"purchase refused"`...).
    pub by_kind: BTreeMap<String, usize>,
    /// Reads that failed (dropped from the history).
    pub failed_reads: usize,
    /// Writes that surely never left (dropped).
    pub not_sent: usize,
    /// Answers the API does not allow here: `(what, status, body)`.
    pub unexpected: Vec<String>,
}

/// xorshift64*: each client's choices, from the plan's seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

fn cents(v: &serde_json::Value) -> Option<i64> {
    v.as_f64().map(|p| (p * 100.0).round() as i64)
}

fn book_state(a: &Answer) -> Option<State> {
    let v: serde_json::Value = serde_json::from_slice(&a.body).ok()?;
    Some(State { price: cents(&v["price"])?, quantity: v["quantity"].as_i64()? })
}

/// Sets each hot book to a known state through `primary`, then reads the initial states
/// there (every write before it was acknowledged, so the clients all start after it).
pub fn prepare(primary: &str, books: &[u32]) -> Vec<Initial> {
    let http = Http::new(CLIENT_TIMEOUT, 4, None);
    books
        .iter()
        .map(|&book| {
            // An absolute set, so asking again is safe: a store that just started (on a
            // loaded machine) may take a while to open writes.
            let body = br#"{"price": 10.00, "quantity": 6}"#.to_vec();
            let deadline = Instant::now() + Duration::from_secs(30);
            let patch = || http.call(Method::PATCH, primary, &format!("/books/{book}"), Some(body.clone()));
            let a = loop {
                match patch() {
                    Ok(a) if a.status == 200 => break a,
                    other if Instant::now() > deadline => panic!("PATCH: {other:?}"),
                    _ => std::thread::sleep(Duration::from_millis(100)),
                }
            };
            assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
            let a = http.call(Method::GET, primary, &format!("/books/{book}"), None).expect("GET");
            assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
            Initial { book, state: book_state(&a).expect("a book") }
        })
        .collect()
}

/// One client's request: what it asks, where, and how its outcome is read.
struct Request {
    call: Call,
    via: String,
    base: String,
    method: Method,
    path: String,
    body: Option<String>,
}

/// A request at random: reads 35% (front end 12, a catalog 23), price writes 20, quantity
/// writes 12, deltas 10, purchases 23; `read_only`: one of the reads.
fn choose(rng: &mut Rng, targets: &Targets, book: u32, next_price: &AtomicU64, read_only: bool) -> Request {
    let catalog = &targets.catalogs[rng.below(targets.catalogs.len() as u64) as usize];
    let frontend = &targets.frontends[rng.below(targets.frontends.len() as u64) as usize];
    let to_catalog = |call: Call, method: Method, body: Option<String>| Request {
        call,
        via: catalog.0.clone(),
        base: catalog.1.clone(),
        method,
        path: format!("/books/{book}"),
        body,
    };
    match rng.below(if read_only { 35 } else { 100 }) {
        0..=11 if !targets.frontend_reads => to_catalog(Call::Read, Method::GET, None),
        0..=11 => Request {
            call: Call::Read,
            via: frontend.0.clone(),
            base: frontend.1.clone(),
            method: Method::GET,
            path: format!("/info/{book}"),
            body: None,
        },
        12..=34 => to_catalog(Call::Read, Method::GET, None),
        35..=54 => {
            let p = next_price.fetch_add(1, Ordering::SeqCst) as i64;
            let body = format!("{{\"price\": {}.{:02}}}", p / 100, p % 100);
            to_catalog(Call::SetPrice(p), Method::PATCH, Some(body))
        }
        55..=66 => {
            let q = rng.below(7) as i64;
            to_catalog(Call::SetQuantity(q), Method::PATCH, Some(format!("{{\"quantity\": {q}}}")))
        }
        67..=76 => {
            let d = rng.below(6) as i64 - 2;
            to_catalog(Call::Delta(d), Method::PATCH, Some(format!("{{\"quantity_delta\": {d}}}")))
        }
        _ => Request {
            call: Call::Purchase,
            via: frontend.0.clone(),
            base: frontend.1.clone(),
            method: Method::POST,
            path: format!("/purchase/{book}"),
            body: None,
        },
    }
}

/// The outcome of an answer (None: drop the operation), counting what is dropped.
fn outcome(req: &Request, result: Result<Answer, PeerError>, counts: &Mutex<Counts>) -> Option<(Ret, String)> {
    let write = req.call != Call::Read;
    let mut via = req.via.clone();
    let answer = match result {
        Ok(a) => a,
        Err(PeerError::Unreachable { sent: false, .. }) => {
            let mut c = counts.lock().unwrap();
            if write {
                c.not_sent += 1;
            } else {
                c.failed_reads += 1;
            }
            return None;
        }
        Err(_) if write => return Some((Ret::Unknown, via)),
        Err(_) => {
            counts.lock().unwrap().failed_reads += 1;
            return None;
        }
    };
    if let Some(cache) = &answer.cache {
        via += &format!(" (X-Cache {cache})");
    }
    let refusal = matches!((req.call, answer.status), (Call::Purchase, 409) | (Call::Delta(_), 400));
    let ret = match answer.status {
        200 if req.call == Call::Purchase => {
            let v: Option<serde_json::Value> = serde_json::from_slice(&answer.body).ok();
            Some(Ret::Seen { price: v.as_ref().and_then(|v| cents(&v["price"])), quantity: None })
        }
        200 => book_state(&answer).map(|s| Ret::Seen { price: Some(s.price), quantity: Some(s.quantity) }),
        _ if refusal => Some(Ret::Refused),
        503 if write => Some(Ret::Unknown),
        503 => {
            counts.lock().unwrap().failed_reads += 1;
            return None;
        }
        _ => None,
    };
    match ret {
        Some(r) => Some((r, via)),
        None => {
            let body = String::from_utf8_lossy(&answer.body).to_string();
            counts
                .lock()
                .unwrap()
                .unexpected
                .push(format!("{:?} {}{}: {} {body}", req.method, req.base, req.path, answer.status));
            write.then_some((Ret::Unknown, via))
        }
    }
}

fn kind(op: &Op) -> String {
    let call = match op.call {
        Call::Read => "read",
        Call::SetPrice(_) => "set price",
        Call::SetQuantity(_) => "set quantity",
        Call::Delta(_) => "quantity_delta",
        Call::Purchase => "purchase",
    };
    let ret = match op.ret {
        Ret::Seen { .. } => "ok",
        Ret::Refused => "refused",
        Ret::Unknown => "unknown",
    };
    format!("{call} {ret}")
}

/// Runs the clients of `plan` against `targets` while `faults` runs on this thread (given
/// the time since the recording began); returns the operations in invocation order.
pub fn record(targets: &Targets, plan: &Plan, faults: impl FnOnce(&dyn Fn() -> Duration)) -> (Vec<Op>, Counts) {
    let t0 = Instant::now();
    let elapsed = move || t0.elapsed();
    let micros = |d: Duration| d.as_micros() as u64;
    let used: Vec<AtomicUsize> = plan.books.iter().map(|_| AtomicUsize::new(0)).collect();
    let next_price = AtomicU64::new(1001);
    let ops = Mutex::new(Vec::new());
    let counts = Mutex::new(Counts::default());
    let total = plan.books.len() * plan.per_book;
    std::thread::scope(|scope| {
        for c in 0..plan.clients {
            let (used, next_price, ops, counts) = (&used, &next_price, &ops, &counts);
            scope.spawn(move || {
                let http = Http::new(CLIENT_TIMEOUT, 4, None);
                let mut rng = Rng(plan.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(c as u64 * 7919 + 1) | 1);
                // A read is often followed at once by another of the same book elsewhere (as
                // in the inversions of issue 18: the primary, then the replica).
                let (mut burst, mut streak): (Option<usize>, usize) = (None, 0);
                let mut last_base: Option<String> = None;
                while elapsed() < plan.duration {
                    let open: Vec<usize> =
                        (0..plan.books.len()).filter(|&b| used[b].load(Ordering::SeqCst) < plan.per_book).collect();
                    if open.is_empty() {
                        break;
                    }
                    // Outside a round's active part, wait for the next round, unless the
                    // operations are behind their schedule (a slow or loaded machine).
                    let now = elapsed();
                    let phase = Duration::from_nanos((now.as_nanos() % ROUND.as_nanos()) as u64);
                    let done: usize = used.iter().map(|u| u.load(Ordering::SeqCst)).sum();
                    let due = total as u128 * now.as_nanos() / plan.duration.as_nanos();
                    if phase >= ACTIVE && done as u128 >= due {
                        std::thread::sleep(ROUND - phase);
                        continue;
                    }
                    let hot = (now.as_nanos() / ROUND.as_nanos()) as usize % plan.books.len();
                    let pick = if open.contains(&hot) && rng.below(4) != 0 {
                        hot
                    } else {
                        open[rng.below(open.len() as u64) as usize]
                    };
                    let b = burst.filter(|b| open.contains(b)).unwrap_or(pick);
                    if used[b].fetch_add(1, Ordering::SeqCst) >= plan.per_book {
                        continue;
                    }
                    let mut req = choose(&mut rng, targets, plan.books[b], next_price, burst.is_some());
                    // The next read of a burst goes elsewhere (at most a few tries).
                    for _ in 0..3 {
                        if burst.is_none() || last_base.as_deref() != Some(req.base.as_str()) {
                            break;
                        }
                        req = choose(&mut rng, targets, plan.books[b], next_price, true);
                    }
                    last_base = Some(req.base.clone());
                    let body = req.body.clone().map(String::into_bytes);
                    let inv = micros(elapsed());
                    let result = http.call(req.method.clone(), &req.base, &req.path, body);
                    let resp = micros(elapsed());
                    match outcome(&req, result, counts) {
                        Some((ret, via)) => {
                            if ret == Ret::Unknown {
                                // Each one pending multiplies the checker's work: back off.
                                std::thread::sleep(BACK_OFF);
                            }
                            let resp = (ret != Ret::Unknown).then_some(resp);
                            let op = Op { client: c, book: plan.books[b], via, call: req.call, ret, inv, resp };
                            ops.lock().unwrap().push(op);
                        }
                        None => {
                            used[b].fetch_sub(1, Ordering::SeqCst);
                        }
                    }
                    streak = if req.call == Call::Read { streak + 1 } else { 0 };
                    let again = req.call == Call::Read && streak < 3 && rng.below(4) != 0;
                    burst = again.then_some(b);
                    if !again {
                        streak = 0;
                        std::thread::sleep(Duration::from_micros(rng.below(500)));
                    }
                }
            });
        }
        faults(&elapsed);
    });
    let mut ops = ops.into_inner().unwrap();
    ops.sort_by_key(|o| (o.inv, o.client));
    let mut counts = counts.into_inner().unwrap();
    for op in &ops {
        *counts.by_kind.entry(kind(op)).or_default() += 1;
    }
    (ops, counts)
}
