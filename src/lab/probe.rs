//! The probe: a small load of its own against a running store, whose history is checked
//! continuously with the library's linearizability checker ([`crate::linearizable`]), and
//! the store's other promises about acknowledged data.
//!
//! # What it does
//! It keeps a handful of *probe books* (topic [`PROBE_TOPIC`], added once through the
//! catalog when the store has none): [`RW_BOOKS`] books that its clients read and write,
//! and one book that they only buy (the purchase book). It works in *windows*:
//! 1. **Anchor.** Each read/write book is set to a known state by an absolute `PATCH`
//!    (price and quantity). The window's history starts from the acknowledged answers, so
//!    no earlier state is needed. Right after, every catalog and the front end are read:
//!    an answer that does not show the anchor is an *acknowledged write lost*.
//! 2. **Load.** [`CLIENTS`] clients, for [`Settings::window`], read the books through the
//!    front end and straight from each catalog, write them through either catalog (price,
//!    quantity, delta), and buy copies of the purchase book through the front end, each
//!    pausing [`PAUSE`] between requests: some 10 requests a second in all, one purchase a
//!    second. Only the catalogs ready when the window begins get its requests.
//! 3. **Check.** The window's operations (and the writes of unknown outcome of the last
//!    [`CARRY`], which may still take effect) are checked book by book; a violation is
//!    explained in a few operations ([`crate::linearizable::explain`]).
//! 4. **Ledger.** Every order the probe was given must be found on every order server
//!    (after a grace for the peers to pull it); every copy the catalog took of the purchase
//!    book since the probe began (its stock drop) must be in the catalog's purchase journal
//!    with its order, and each such order in an order log once the grace has passed
//!    (copies taken against orders logged). Only the purchase book's orders are looked up,
//!    so the ledger costs the same under a benchmark's thousands of other orders.
//!
//! # Why the windows are sound
//! A window's initial state is the state its anchor wrote, acknowledged before any of its
//! operations was invoked. A write of an earlier window whose outcome is unknown may still
//! take effect: if before the anchor, the anchor (absolute, both fields) erased it; if
//! after, it is in the window as an unknown operation invoked earlier, which the checker
//! may place anywhere after its invocation or nowhere. Purchases of the purchase book are
//! counted, not checked as a history (the ledger covers them).
//!
//! The verdict ([`Tally`], [`Verdict`]) is pure: windows are added to it and it answers for
//! the last minute and since the start. The recording ([`Probe::run`]) is the I/O around it.

use crate::client::{Answer, Http, PeerError};
use crate::linearizable::checker::{self, Call, History, Initial, Op, Ret, State, Verdict as BookVerdict};
use crate::linearizable::explain;
use crate::shutdown::Shutdown;
use serde::Serialize;
use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use ureq::http::Method;

/// The topic of the probe's books.
pub const PROBE_TOPIC: &str = "lab probe";
/// Books the clients read and write.
pub const RW_BOOKS: usize = 3;
/// Concurrent clients of the probe.
pub const CLIENTS: usize = 3;
/// A client's pause between two requests.
pub const PAUSE: Duration = Duration::from_millis(250);
/// How long a probe request may take before its outcome is unknown.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// Writes of unknown outcome are carried into the windows that follow for this long (a
/// write sent to a process just before it froze is applied when it thaws, however late);
/// at most [`MAX_CARRIED`] of them, the oldest dropped first.
pub const CARRY: Duration = Duration::from_secs(600);
/// Most writes of unknown outcome carried at once.
pub const MAX_CARRIED: usize = 100;
/// "The last minute" of the verdict.
pub const RECENT: Duration = Duration::from_secs(60);
/// An order must be on every order server this long after it was acknowledged.
pub const ORDER_GRACE: Duration = Duration::from_secs(5);
/// Most violations the verdict keeps.
pub const MAX_VIOLATIONS: usize = 5;
/// The stock the purchase book gets when the probe begins.
pub const PURCHASE_STOCK: u32 = 1_000_000;

/// How the probe runs.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The front end's base URL.
    pub frontend: String,
    /// Each catalog's base URL (reads go to each, writes to any).
    pub catalogs: Vec<String>,
    /// Each order server's base URL (the ledger asks each).
    pub orders: Vec<String>,
    /// The store's token (the probe's `PATCH`es and its book additions are admin calls).
    pub token: Option<String>,
    /// Length of one window's load.
    pub window: Duration,
}

/// One violation of linearizability, explained.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Violation {
    /// The book.
    pub book: u32,
    /// When its window was checked (Unix milliseconds).
    pub at_ms: u64,
    /// The operations that cannot be linearized, and why, in words.
    pub text: String,
}

/// What one window found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Window {
    /// Operations checked (those of unknown outcome included).
    pub ops: u64,
    /// Books with no verdict (the search over its bounds).
    pub unknown: u64,
    /// The violations found.
    pub violations: Vec<Violation>,
    /// Acknowledged writes that a later read did not show.
    pub lost: u64,
}

/// The figures of one period (the last minute, or since the start).
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Figures {
    /// Operations checked.
    pub ops: u64,
    /// Windows checked.
    pub windows: u64,
    /// Whether every window was linearizable.
    pub linearizable: bool,
    /// The first violations (at most [`MAX_VIOLATIONS`]).
    pub violations: Vec<Violation>,
    /// Acknowledged writes lost.
    pub acked_writes_lost: u64,
    /// Books whose window got no verdict (over the checker's bounds).
    pub undecided: u64,
}

/// The ledger of orders: the probe's acknowledged orders and the purchase book's copies.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Ledger {
    /// Acknowledged orders of the probe missing from some order server after the grace.
    pub orders_missing: u64,
    /// Acknowledged orders of the probe checked on every order server.
    pub orders_checked: u64,
    /// Copies of the purchase book the catalog took since the probe began.
    pub copies_taken: u64,
    /// Orders of the purchase book (from the catalog's purchase journal) found in an order
    /// log since the probe began.
    pub orders_logged: u64,
    /// Whether every copy taken was journaled with an order and every such order older
    /// than the grace was found in an order log, when last checked.
    pub copies_match: bool,
}

/// The verdict so far: every window checked, kept for the last minute and summed since the
/// start. No I/O.
#[derive(Debug, Default)]
pub struct Tally {
    recent: VecDeque<(Instant, Window)>,
    total: Figures,
    /// The ledger as last checked.
    pub ledger: Ledger,
    /// The probe's own events (a window skipped, a check that could not run).
    pub notes: VecDeque<(u64, String)>,
}

/// The probe's verdict, as `GET /lab/verdict` and `bazar-bench check` give it.
#[derive(Clone, Debug, Serialize)]
pub struct Verdict {
    /// `on` or `off`.
    pub probe: &'static str,
    /// The length of "the last minute", in seconds.
    pub window_s: u64,
    /// Operations checked in the last minute.
    pub ops: u64,
    /// Whether every history of the last minute was linearizable.
    pub linearizable: bool,
    /// The first violations of the last minute.
    pub violations: Vec<Violation>,
    /// Acknowledged writes lost in the last minute.
    pub acked_writes_lost: u64,
    /// Acknowledged orders missing from an order server (since the start).
    pub orders_missing: u64,
    /// Copies of the purchase book taken since the probe began.
    pub copies_taken: u64,
    /// Orders of the purchase book logged since the probe began.
    pub orders_logged: u64,
    /// Whether the copies taken and the orders logged were last seen equal.
    pub copies_match: bool,
    /// Windows checked in the last minute.
    pub windows: u64,
    /// Every figure since the start.
    pub since_start: Figures,
    /// The probe's notes, newest last: `[at_ms, text]`.
    pub notes: Vec<(u64, String)>,
    /// Whether every guarantee held since the start (and something was checked).
    pub held: bool,
}

impl Tally {
    /// Adds a checked window.
    pub fn add(&mut self, at: Instant, w: Window) {
        self.total.ops += w.ops;
        self.total.windows += 1;
        self.total.acked_writes_lost += w.lost;
        self.total.undecided += w.unknown;
        for v in &w.violations {
            if self.total.violations.len() < MAX_VIOLATIONS {
                self.total.violations.push(v.clone());
            }
        }
        self.recent.push_back((at, w));
        while self.recent.front().is_some_and(|(t, _)| at.duration_since(*t) > RECENT) {
            self.recent.pop_front();
        }
    }

    /// Adds a note (kept: the last 20).
    pub fn note(&mut self, text: String) {
        self.notes.push_back((crate::ids::now_ms(), text));
        while self.notes.len() > 20 {
            self.notes.pop_front();
        }
    }

    /// The figures since the start.
    pub fn since_start(&self) -> Figures {
        Figures { linearizable: self.total.violations.is_empty(), ..self.total.clone() }
    }

    /// The figures of the windows checked in the [`RECENT`] before `now`.
    pub fn recent(&self, now: Instant) -> Figures {
        let mut f = Figures { linearizable: true, ..Figures::default() };
        for (_, w) in self.recent.iter().filter(|(t, _)| now.saturating_duration_since(*t) <= RECENT) {
            f.ops += w.ops;
            f.windows += 1;
            f.acked_writes_lost += w.lost;
            f.undecided += w.unknown;
            f.linearizable &= w.violations.is_empty();
            for v in &w.violations {
                if f.violations.len() < MAX_VIOLATIONS {
                    f.violations.push(v.clone());
                }
            }
        }
        f
    }

    /// The verdict now.
    pub fn verdict(&self, on: bool, now: Instant) -> Verdict {
        let recent = self.recent(now);
        let total = self.since_start();
        let held = total.linearizable
            && total.acked_writes_lost == 0
            && self.ledger.orders_missing == 0
            && self.ledger.copies_match
            && total.ops > 0;
        Verdict {
            probe: if on { "on" } else { "off" },
            window_s: RECENT.as_secs(),
            ops: recent.ops,
            linearizable: recent.linearizable,
            violations: recent.violations,
            acked_writes_lost: recent.acked_writes_lost,
            orders_missing: self.ledger.orders_missing,
            copies_taken: self.ledger.copies_taken,
            orders_logged: self.ledger.orders_logged,
            copies_match: self.ledger.copies_match,
            windows: recent.windows,
            since_start: total,
            notes: self.notes.iter().cloned().collect(),
            held,
        }
    }
}

/// Checks one window's history: each book on its own, a violation explained.
pub fn judge(history: &History, lost: u64) -> Window {
    let mut w = Window { ops: history.ops.len() as u64, lost, ..Window::default() };
    for (book, verdict) in checker::check(history) {
        match verdict {
            BookVerdict::Linearizable => {}
            BookVerdict::Unknown(_) => w.unknown += 1,
            BookVerdict::NotLinearizable(stuck) => {
                let initial = history
                    .initial
                    .iter()
                    .find(|i| i.book == book)
                    .map_or(State { price: 0, quantity: 0 }, |i| i.state);
                let ops = checker::book_ops(history, book);
                let text = explain::explain(book, initial, &ops, &stuck).text;
                w.violations.push(Violation { book, at_ms: crate::ids::now_ms(), text });
            }
        }
    }
    w
}

/// A probe of one store: its settings, whether its load is on, and its verdict.
pub struct Probe {
    settings: Settings,
    on: AtomicBool,
    tally: Mutex<Tally>,
    http: Http,
    /// Readiness checks (short timeout).
    ready: Http,
    /// The probe's clock: every operation's time is measured from here.
    t0: Instant,
    /// The next price a client writes (distinct prices tell writes apart).
    next_price: AtomicU64,
}

/// The probe's books, once found or added.
#[derive(Clone, Debug)]
struct Books {
    rw: Vec<u32>,
    purchase: u32,
    /// The purchase book's stock when the probe set it, and the catalog's write then (the
    /// purchase journal is read after it).
    stock0: u32,
    seq0: u64,
}

/// What the ledger has read of the catalog's purchase journal.
#[derive(Debug, Default)]
struct Journal {
    /// The last write read.
    after: Option<u64>,
    /// Orders of the purchase book journaled (a copy taken for each), not yet found in an
    /// order log, and when the probe first saw them.
    pending: Vec<(String, Instant)>,
    /// Of those, found in an order log.
    found: u64,
}

impl Probe {
    /// A probe of the store `settings` names, on or off.
    pub fn new(settings: Settings, on: bool) -> Arc<Probe> {
        let http = Http::new(REQUEST_TIMEOUT, CLIENTS * 4 + 4, settings.token.clone());
        Arc::new(Probe {
            settings,
            on: AtomicBool::new(on),
            tally: Mutex::new(Tally::default()),
            http,
            ready: Http::new(Duration::from_millis(500), 4, None),
            t0: Instant::now(),
            next_price: AtomicU64::new(1001),
        })
    }

    /// Turns the load on or off (a window under way finishes first).
    pub fn set_on(&self, on: bool) {
        self.on.store(on, Ordering::SeqCst);
    }

    /// Whether the load is on.
    pub fn is_on(&self) -> bool {
        self.on.load(Ordering::SeqCst)
    }

    fn tally(&self) -> std::sync::MutexGuard<'_, Tally> {
        self.tally.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The verdict now.
    pub fn verdict(&self) -> Verdict {
        self.tally().verdict(self.is_on(), Instant::now())
    }

    /// Adds a window checked elsewhere (a test feeds the checker's verdict here).
    pub fn add_window(&self, w: Window) {
        self.tally().add(Instant::now(), w);
    }

    fn note(&self, text: String) {
        log::info!("probe: {text}");
        self.tally().note(text);
    }

    fn micros(&self) -> u64 {
        self.t0.elapsed().as_micros() as u64
    }

    /// Runs windows while the probe is on, until `shutdown`; at most `limit` of load in all
    /// when given (`bazar-bench check`).
    pub fn run(&self, shutdown: &Shutdown, limit: Option<Duration>) {
        let started = Instant::now();
        let mut books: Option<Books> = None;
        let mut carried: Vec<Op> = Vec::new();
        let mut receipts: Vec<(String, Instant)> = Vec::new();
        let mut missing: HashSet<String> = HashSet::new();
        let mut journal = Journal::default();
        while !shutdown.is_set() {
            if limit.is_some_and(|l| started.elapsed() >= l) {
                // The last orders get their grace too before the final ledger.
                if let Some(b) = &books {
                    shutdown.sleep(ORDER_GRACE);
                    self.ledger(b, &mut receipts, &mut missing, &mut journal);
                }
                return;
            }
            if !self.is_on() {
                shutdown.sleep(Duration::from_millis(200));
                continue;
            }
            let found = match &books {
                Some(b) => b.clone(),
                None => match self.set_up() {
                    Ok(b) => {
                        books = Some(b.clone());
                        b
                    }
                    Err(why) => {
                        self.note(format!("cannot set up the probe's books yet: {why}"));
                        shutdown.sleep(Duration::from_secs(2));
                        continue;
                    }
                },
            };
            let window = match limit {
                Some(l) => self.settings.window.min(l.saturating_sub(started.elapsed())).max(Duration::from_secs(1)),
                None => self.settings.window,
            };
            self.window(&found, window, &mut carried, &mut receipts, shutdown);
            self.ledger(&found, &mut receipts, &mut missing, &mut journal);
        }
    }

    /// Finds the probe's books (topic [`PROBE_TOPIC`]) or adds them, and sets the purchase
    /// book's stock.
    fn set_up(&self) -> Result<Books, String> {
        let path = format!("/books?topic={}&limit=100", crate::http::percent_encode(PROBE_TOPIC));
        let mut last = "no catalog".to_string();
        let mut found = None;
        for catalog in &self.settings.catalogs {
            match self
                .http
                .call(Method::GET, catalog, &path, None)
                .map_err(|e| e.to_string())
                .and_then(|a| a.json::<Vec<crate::wire::Book>>().map_err(|e| e.to_string()))
            {
                Ok(books) => {
                    found = Some(books);
                    break;
                }
                Err(e) => last = e,
            }
        }
        let mut have = found.ok_or(last)?;
        while have.len() < RW_BOOKS + 1 {
            let n = have.len() + 1;
            let title =
                if n <= RW_BOOKS { format!("Lab probe book {n}") } else { "Lab probe book (bought)".to_string() };
            let body = serde_json::json!({"title": title, "topic": PROBE_TOPIC, "price": 10, "quantity": 6});
            let book: crate::wire::Book = self
                .write(Method::POST, "/books", body.to_string())
                .and_then(|a| a.json().map_err(|e| e.to_string()))?;
            have.push(book);
        }
        have.sort_by_key(|b| b.id);
        let purchase = have[RW_BOOKS].id;
        let body = format!("{{\"quantity\": {PURCHASE_STOCK}}}");
        self.write(Method::PATCH, &format!("/books/{purchase}"), body)?;
        // The catalog's write now: journal entries after it are copies taken since.
        let seq0 = self
            .settings
            .catalogs
            .iter()
            .find_map(|c| self.http.call(Method::GET, c, &format!("/books/{purchase}"), None).ok()?.seq)
            .ok_or("no catalog answers a read")?;
        self.note(format!(
            "probe books {:?}, bought book {purchase} (stock set to {PURCHASE_STOCK})",
            &have[..RW_BOOKS].iter().map(|b| b.id).collect::<Vec<_>>()
        ));
        Ok(Books { rw: have[..RW_BOOKS].iter().map(|b| b.id).collect(), purchase, stock0: PURCHASE_STOCK, seq0 })
    }

    /// An admin write through the catalogs (any of them; a replica forwards it), retried
    /// while none answers: its answer, or why it could not be made.
    fn write(&self, method: Method, path: &str, body: String) -> Result<Answer, String> {
        let mut last = String::new();
        for catalog in &self.settings.catalogs {
            match self.http.call(method.clone(), catalog, path, Some(body.clone().into_bytes())) {
                Ok(a) if (200..300).contains(&a.status) => return Ok(a),
                Ok(a) => last = format!("{catalog}: {} {}", a.status, a.error()),
                Err(e) => last = e.to_string(),
            }
        }
        Err(last)
    }

    /// One window: anchors, reads of the anchors, the clients' load, the check.
    fn window(
        &self,
        books: &Books,
        length: Duration,
        carried: &mut Vec<Op>,
        receipts: &mut Vec<(String, Instant)>,
        shutdown: &Shutdown,
    ) {
        // 0. The catalogs that are ready now: a frozen or dead one gets no request of this
        //    window (a write sent to a frozen process may be applied whenever it thaws).
        let live: Vec<String> = self
            .settings
            .catalogs
            .iter()
            .filter(|c| self.ready.call(Method::GET, c, "/ready", None).is_ok_and(|a| a.status == 200))
            .cloned()
            .collect();
        if live.is_empty() {
            self.note("window skipped: no catalog is ready".into());
            shutdown.sleep(Duration::from_secs(1));
            return;
        }
        // 1. Anchors: a known state for each book, acknowledged before anything else, at a
        //    price no other write uses (an anchor whose outcome is unknown is carried on).
        let mut initial = Vec::new();
        for &book in &books.rw {
            match self.anchor(book, &live, carried) {
                Ok(state) => initial.push(Initial { book, state }),
                Err(why) => {
                    self.note(format!("window skipped: no catalog took the anchor write of book {book}: {why}"));
                    shutdown.sleep(Duration::from_secs(1));
                    return;
                }
            }
        }
        // 2. Every place shows the anchors (else an acknowledged write is lost).
        let mut ops = Vec::new();
        let mut lost = 0;
        for init in &initial {
            for (via, base, path) in self.read_places(init.book, &live) {
                let inv = self.micros();
                let Ok(a) = self.http.call(Method::GET, &base, &path, None) else { continue };
                let resp = self.micros();
                if a.status != 200 {
                    continue;
                }
                if let Some(s) = book_state(&a) {
                    // A write of unknown outcome may have landed since: then the checker
                    // alone judges the read.
                    let explained = carried.iter().any(|o| o.book == init.book);
                    if s != init.state && !explained {
                        lost += 1;
                        self.note(format!(
                            "book {}: {via} showed price {} quantity {} after the write of price {} quantity {} was acknowledged",
                            init.book, s.price, s.quantity, init.state.price, init.state.quantity
                        ));
                    }
                    let ret = Ret::Seen { price: Some(s.price), quantity: Some(s.quantity) };
                    ops.push(Op {
                        client: CLIENTS,
                        book: init.book,
                        via,
                        call: Call::Read,
                        ret,
                        inv,
                        resp: Some(resp),
                    });
                }
            }
        }
        // 3. The clients' load.
        let end = Instant::now() + length;
        let recorded = Mutex::new(Vec::new());
        let bought = Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for c in 0..CLIENTS {
                let (recorded, bought, live) = (&recorded, &bought, &live);
                s.spawn(move || {
                    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (self.micros() + c as u64 * 7919) | 1);
                    while Instant::now() < end && !shutdown.is_set() {
                        match self.one_request(&mut rng, c, books, live) {
                            Step::Op(op) => recorded.lock().unwrap_or_else(|e| e.into_inner()).push(op),
                            Step::Bought(order) => {
                                bought.lock().unwrap_or_else(|e| e.into_inner()).push((order, Instant::now()))
                            }
                            Step::Nothing => {}
                        }
                        std::thread::sleep(PAUSE);
                    }
                });
            }
        });
        ops.extend(recorded.into_inner().unwrap_or_else(|e| e.into_inner()));
        receipts.extend(bought.into_inner().unwrap_or_else(|e| e.into_inner()));
        // 4. The check, with the unknown writes of the last minute carried in.
        let now = self.micros();
        carried.retain(|o| now.saturating_sub(o.inv) <= CARRY.as_micros() as u64);
        let excess = carried.len().saturating_sub(MAX_CARRIED);
        carried.drain(..excess);
        let mut all: Vec<Op> = carried.clone();
        all.extend(ops.iter().cloned());
        all.sort_by_key(|o| (o.inv, o.client));
        carried.extend(ops.into_iter().filter(|o| o.resp.is_none()));
        let history = History { name: "lab probe".into(), note: String::new(), expect: None, initial, ops: all };
        let w = judge(&history, lost);
        for v in &w.violations {
            log::warn!("probe: NOT LINEARIZABLE: {}", v.text);
        }
        self.tally().add(Instant::now(), w);
    }

    /// Sets `book` to a state of its own through the first of `live` that takes it: the
    /// state acknowledged. An attempt whose outcome is unknown (it may be applied later) is
    /// carried into the history as two unknown writes (price, quantity): the anchor's
    /// effect as seen by the model, each possibly at any time after it was sent.
    fn anchor(&self, book: u32, live: &[String], carried: &mut Vec<Op>) -> Result<State, String> {
        let price = self.next_price.fetch_add(1, Ordering::SeqCst) as i64;
        let body = format!("{{\"price\": {}.{:02}, \"quantity\": 6}}", price / 100, price % 100);
        let mut last = String::new();
        for (i, c) in live.iter().enumerate() {
            let inv = self.micros();
            let result = self.http.call(Method::PATCH, c, &format!("/books/{book}"), Some(body.clone().into_bytes()));
            match result {
                Ok(a) if a.status == 200 => {
                    return book_state(&a).ok_or_else(|| "the answer is not a book".to_string())
                }
                Err(PeerError::Unreachable { sent: false, .. }) => last = format!("{c}: not reachable"),
                Ok(a) if a.status != 503 && a.status < 500 => last = format!("{c}: {} {}", a.status, a.error()),
                other => {
                    last = match other {
                        Ok(a) => format!("{c}: {} {}", a.status, a.error()),
                        Err(e) => e.to_string(),
                    };
                    let via = format!("catalog {c} (anchor)");
                    for call in [Call::SetPrice(price), Call::SetQuantity(6)] {
                        carried.push(Op {
                            client: CLIENTS + 1 + i,
                            book,
                            via: via.clone(),
                            call,
                            ret: Ret::Unknown,
                            inv,
                            resp: None,
                        });
                    }
                }
            }
        }
        Err(last)
    }

    /// Where a book is read: the front end and each catalog of `live`.
    fn read_places(&self, book: u32, live: &[String]) -> Vec<(String, String, String)> {
        let mut places = vec![("frontend".to_string(), self.settings.frontend.clone(), format!("/info/{book}"))];
        for c in live {
            places.push((format!("catalog {c}"), c.clone(), format!("/books/{book}")));
        }
        places
    }

    /// One client request at random: reads 45% (front end and each catalog), writes 45%
    /// (price, quantity, delta, through any catalog), purchases of the purchase book 10%.
    fn one_request(&self, rng: &mut Rng, client: usize, books: &Books, live: &[String]) -> Step {
        let book = books.rw[rng.below(books.rw.len() as u64) as usize];
        let roll = rng.below(100);
        if roll >= 90 {
            return match self.http.call(
                Method::POST,
                &self.settings.frontend,
                &format!("/purchase/{}", books.purchase),
                None,
            ) {
                Ok(a) if a.status == 200 => {
                    let v: serde_json::Value = serde_json::from_slice(&a.body).unwrap_or_default();
                    v["order_id"].as_str().map_or(Step::Nothing, |o| Step::Bought(o.to_string()))
                }
                _ => Step::Nothing,
            };
        }
        let catalogs = live;
        let ci = rng.below(catalogs.len() as u64) as usize;
        let (via, base, path, method, call, body) = if roll < 45 {
            let places = self.read_places(book, live);
            let (via, base, path) = places[rng.below(places.len() as u64) as usize].clone();
            (via, base, path, Method::GET, Call::Read, None)
        } else {
            let (call, body) = match roll {
                45..=59 => {
                    let p = self.next_price.fetch_add(1, Ordering::SeqCst) as i64;
                    (Call::SetPrice(p), format!("{{\"price\": {}.{:02}}}", p / 100, p % 100))
                }
                60..=74 => {
                    let q = rng.below(7) as i64;
                    (Call::SetQuantity(q), format!("{{\"quantity\": {q}}}"))
                }
                _ => {
                    let d = rng.below(5) as i64 - 2;
                    (Call::Delta(d), format!("{{\"quantity_delta\": {d}}}"))
                }
            };
            let via = format!("catalog {}", catalogs[ci]);
            (via, catalogs[ci].clone(), format!("/books/{book}"), Method::PATCH, call, Some(body))
        };
        let inv = self.micros();
        let result = self.http.call(method, &base, &path, body.map(String::into_bytes));
        let resp = self.micros();
        match outcome(call, result) {
            None => Step::Nothing,
            Some(ret) => {
                let resp = (ret != Ret::Unknown).then_some(resp);
                Step::Op(Op { client, book, via, call, ret, inv, resp })
            }
        }
    }

    /// The ledger: the probe's orders on every order server, and copies against orders.
    fn ledger(
        &self,
        books: &Books,
        receipts: &mut Vec<(String, Instant)>,
        missing: &mut HashSet<String>,
        journal: &mut Journal,
    ) {
        // Each acknowledged order, after the grace, on every order server.
        let due: Vec<(String, Instant)> =
            receipts.iter().filter(|(_, at)| at.elapsed() >= ORDER_GRACE).cloned().collect();
        let mut checked = 0;
        for (order, _) in &due {
            let mut all_answered = true;
            for server in &self.settings.orders {
                match self.http.call(Method::GET, server, &format!("/orders/{order}"), None) {
                    Ok(a) if a.status == 200 => {}
                    Ok(a) if a.status == 404 => {
                        if missing.insert(format!("{order}@{server}")) {
                            self.note(format!("order {order} was acknowledged but {server} does not have it"));
                        }
                    }
                    _ => all_answered = false,
                }
            }
            if all_answered {
                checked += 1;
                receipts.retain(|(o, _)| o != order);
            }
        }
        // Copies taken against orders logged: every copy of the purchase book the catalog
        // took since the probe began (its stock drop) must be in the catalog's purchase
        // journal with the order it was taken for, and every such order in an order log
        // once the order servers' reconciliation grace has passed. A purchase still in
        // flight settles within a few seconds: asked again up to twice.
        let mut figures = None;
        for attempt in 0..3 {
            if attempt > 0 {
                std::thread::sleep(Duration::from_secs(2));
            }
            let Some(taken) = self.copies_taken(books) else { break };
            if let Err(why) = self.read_journal(books, journal) {
                self.note(format!("the purchase journal cannot be read now: {why}"));
                break;
            }
            self.look_up_journaled(journal);
            let logged = journal.found;
            let young = journal.pending.iter().filter(|(_, at)| at.elapsed() < ORDER_GRACE).count() as u64;
            figures = Some((taken, logged, taken == logged + young && journal.pending.len() as u64 == young));
            if figures.is_some_and(|(_, _, ok)| ok) {
                break;
            }
        }
        let mut t = self.tally();
        t.ledger.orders_checked += checked;
        t.ledger.orders_missing = missing.len() as u64;
        if let Some((taken, logged, ok)) = figures {
            t.ledger.copies_taken = taken;
            t.ledger.orders_logged = logged;
            t.ledger.copies_match = ok;
        }
    }

    fn copies_taken(&self, books: &Books) -> Option<u64> {
        self.settings.catalogs.iter().find_map(|c| {
            let a = self.http.call(Method::GET, c, &format!("/books/{}", books.purchase), None).ok()?;
            let book: crate::wire::Book = a.json().ok()?;
            Some(u64::from(books.stock0.saturating_sub(book.quantity)))
        })
    }

    /// Reads the catalog's purchase journal (`GET /internal/purchases`, admin) from where
    /// the ledger stopped: the orders of the purchase book become pending.
    fn read_journal(&self, books: &Books, journal: &mut Journal) -> Result<(), String> {
        let mut after = journal.after.unwrap_or(books.seq0);
        for _ in 0..100 {
            let path = format!("/internal/purchases?after={after}");
            let page: crate::wire::PurchasePage = self
                .settings
                .catalogs
                .iter()
                .find_map(|c| self.http.call(Method::GET, c, &path, None).ok().filter(|a| a.status == 200))
                .ok_or("no catalog answers")?
                .json()
                .map_err(|e| e.to_string())?;
            for p in &page.purchases {
                after = after.max(p.seq);
                if p.order.id == books.purchase {
                    journal.pending.push((p.order.order_id.clone(), Instant::now()));
                }
            }
            journal.after = Some(after);
            if !page.more || page.purchases.is_empty() {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Looks each journaled order up in the order logs (any order server that has it).
    fn look_up_journaled(&self, journal: &mut Journal) {
        let mut still = Vec::new();
        for (order, at) in std::mem::take(&mut journal.pending) {
            let found = self.settings.orders.iter().any(|server| {
                self.http.call(Method::GET, server, &format!("/orders/{order}"), None).is_ok_and(|a| a.status == 200)
            });
            if found {
                journal.found += 1;
            } else {
                still.push((order, at));
            }
        }
        journal.pending = still;
    }
}

/// `bazar-bench check`: the probe against any running store for `seconds`, and its
/// verdict. The catalogs and order servers are the front end's (its `/health` names them)
/// unless given.
pub fn check(
    frontend: &str,
    catalogs: Vec<String>,
    orders: Vec<String>,
    token: Option<String>,
    seconds: u64,
) -> Result<Verdict, String> {
    let http = Http::new(REQUEST_TIMEOUT, 2, None);
    let health: serde_json::Value =
        http.get(frontend, "/health").map_err(|e| format!("the front end {frontend} does not answer: {e}"))?;
    let named = |key: &str| -> Vec<String> {
        health[key]
            .as_array()
            .map(|a| a.iter().filter_map(|u| u.as_str().map(str::to_string)).collect())
            .unwrap_or_default()
    };
    let catalogs = if catalogs.is_empty() { named("catalogs") } else { catalogs };
    let orders = if orders.is_empty() { named("orders") } else { orders };
    if catalogs.is_empty() || orders.is_empty() {
        return Err(
            "give the catalogs (--catalog URL) and order servers (--order URL): the front end does not name them"
                .into(),
        );
    }
    let window = Duration::from_secs(seconds.clamp(1, 10));
    let settings = Settings { frontend: frontend.to_string(), catalogs, orders, token, window };
    let probe = Probe::new(settings, true);
    probe.run(&Shutdown::new(), Some(Duration::from_secs(seconds)));
    Ok(probe.verdict())
}

/// What one client request gave.
enum Step {
    Op(Op),
    Bought(String),
    Nothing,
}

/// The outcome of an answer for the history (None: drop it: a failed read constrains
/// nothing, a request that surely never left had no effect).
fn outcome(call: Call, result: Result<Answer, PeerError>) -> Option<Ret> {
    let write = call != Call::Read;
    let answer = match result {
        Ok(a) => a,
        Err(PeerError::Unreachable { sent: false, .. }) => return None,
        Err(_) => return write.then_some(Ret::Unknown),
    };
    match answer.status {
        200 => book_state(&answer).map(|s| Ret::Seen { price: Some(s.price), quantity: Some(s.quantity) }),
        400 if matches!(call, Call::Delta(_)) => Some(Ret::Refused),
        _ => write.then_some(Ret::Unknown),
    }
}

fn book_state(a: &Answer) -> Option<State> {
    let book: crate::wire::Book = serde_json::from_slice(&a.body).ok()?;
    Some(State { price: book.price.cents(), quantity: i64::from(book.quantity) })
}

/// xorshift64*: a client's choices.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const START: State = State { price: 1000, quantity: 6 };

    fn op(client: usize, call: Call, ret: Ret, inv: u64, resp: Option<u64>) -> Op {
        Op { client, book: 1, via: "test".into(), call, ret, inv, resp }
    }

    fn seen(price: i64, quantity: i64) -> Ret {
        Ret::Seen { price: Some(price), quantity: Some(quantity) }
    }

    fn history(ops: Vec<Op>) -> History {
        History {
            name: "t".into(),
            note: String::new(),
            expect: None,
            initial: vec![Initial { book: 1, state: START }],
            ops,
        }
    }

    #[test]
    fn a_clean_window_keeps_the_verdict_green() {
        let h = history(vec![
            op(0, Call::SetPrice(1200), seen(1200, 6), 10, Some(20)),
            op(1, Call::Read, seen(1200, 6), 30, Some(40)),
            op(2, Call::Delta(-6), seen(1200, 0), 50, Some(60)),
            op(0, Call::Delta(-1), Ret::Refused, 70, Some(80)),
        ]);
        let mut t = Tally::default();
        t.ledger.copies_match = true;
        t.add(Instant::now(), judge(&h, 0));
        let v = t.verdict(true, Instant::now());
        assert!(v.linearizable && v.since_start.linearizable && v.held, "{v:?}");
        assert_eq!((v.ops, v.windows, v.violations.len()), (4, 1, 0));
    }

    #[test]
    fn a_stale_read_turns_the_verdict_red_and_is_explained() {
        // The write of 12.00 was acknowledged (at 20) before the read began (at 30), which
        // still shows 10.00: a stale read.
        let h = history(vec![
            op(0, Call::SetPrice(1200), seen(1200, 6), 10, Some(20)),
            op(1, Call::Read, seen(1000, 6), 30, Some(40)),
        ]);
        let mut t = Tally::default();
        t.ledger.copies_match = true;
        t.add(Instant::now(), judge(&h, 0));
        let v = t.verdict(true, Instant::now());
        assert!(!v.linearizable && !v.since_start.linearizable && !v.held, "{v:?}");
        assert_eq!(v.violations.len(), 1);
        assert!(v.violations[0].text.contains("read"), "{}", v.violations[0].text);
        // A minute later the last minute is green again; since the start stays red.
        let later = Instant::now() + RECENT + Duration::from_secs(1);
        let v = t.verdict(true, later);
        assert!(v.linearizable && !v.since_start.linearizable && !v.held);
    }

    #[test]
    fn an_unknown_write_carried_into_the_next_window_may_land_there() {
        // Invoked before the window's anchor (at 5), outcome unknown: it may take effect
        // inside the window, and the read that shows it is linearizable.
        let h = history(vec![
            op(0, Call::SetPrice(1300), Ret::Unknown, 5, None),
            op(1, Call::Read, seen(1000, 6), 10, Some(20)),
            op(1, Call::Read, seen(1300, 6), 30, Some(40)),
        ]);
        assert!(judge(&h, 0).violations.is_empty());
    }

    #[test]
    fn lost_writes_orders_and_copies_each_break_the_promise() {
        let mut t = Tally::default();
        let clean = history(vec![op(1, Call::Read, seen(1000, 6), 10, Some(20))]);
        t.ledger.copies_match = true;
        t.add(Instant::now(), judge(&clean, 0));
        assert!(t.verdict(true, Instant::now()).held);
        t.add(Instant::now(), judge(&clean, 1));
        assert!(!t.verdict(true, Instant::now()).held);
        let mut t = Tally::default();
        t.add(Instant::now(), judge(&clean, 0));
        t.ledger = Ledger { orders_missing: 1, copies_match: true, ..Ledger::default() };
        assert!(!t.verdict(true, Instant::now()).held);
        t.ledger = Ledger { copies_taken: 3, orders_logged: 2, copies_match: false, ..Ledger::default() };
        assert!(!t.verdict(false, Instant::now()).held);
        assert_eq!(t.verdict(false, Instant::now()).probe, "off");
        // Nothing checked is no proof.
        assert!(!Tally::default().verdict(true, Instant::now()).held);
    }
}
