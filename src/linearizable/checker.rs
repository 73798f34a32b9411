//! A linearizability checker for histories of one store's books: the Wing-Gong search with
//! Lowe's memoisation, the algorithm Porcupine and Knossos use (no code of theirs here).
//!
//! # The model
//! A book is `{price (cents), quantity}`. Its operations: a read; `PATCH` of the price, of
//! the quantity (absolute) or of a `quantity_delta`; a purchase (one copy, or 409 at 0).
//! Books are independent (P-compositionality, Herlihy and Wing): a history is linearizable
//! exactly when each book's sub-history is, so each book is searched on its own.
//!
//! # The search
//! Every operation becomes a call entry at its invocation time and, when the client learned
//! its outcome, a return entry at its response time; entries are sorted by time (calls
//! before returns at equal times, so that touching operations count as concurrent). The
//! search walks the list from its head: a call may be linearized next when the model
//! accepts it in the current state with its observed outcome; it is then lifted out of the
//! list (with its return) and the walk restarts. Meeting a return means the operation it
//! ends must already be linearized: the last choice is undone (backtracking). The cache of
//! every (set of linearized operations, state) already explored prunes the search to the
//! distinct configurations, which makes histories of hundreds of concurrent operations
//! cheap.
//!
//! # Indeterminate operations
//! An operation whose outcome the client could not learn (timeout, 503, a connection lost
//! after the request left) has no return entry: it may take effect at any point after its
//! invocation, or never. The search succeeds as soon as every operation whose outcome is
//! known is linearized; whatever is left was never needed to happen. Such operations are
//! what makes the search blow up (each may be in or out of every later configuration), so
//! the cache compares them by inclusion: having used fewer of them, in the same state and
//! with the same answered operations placed, can do all that using more can (they impose
//! nothing, and the unused stay available), so the larger set is pruned.
//!
//! # Bounds
//! [`check_book`] refuses sub-histories over [`MAX_OPS`] operations and stops after a
//! step budget, answering [`Verdict::Unknown`]; both are counts, so the verdict for a given
//! history never depends on the machine's speed.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap, HashSet};

/// Most operations on one book a history may hold (the recorder stays below it).
pub const MAX_OPS: usize = 1000;
/// Search steps (entries visited) after which a book's verdict is [`Verdict::Unknown`].
pub const STEP_BUDGET: u64 = 5_000_000;

/// A book's state in the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct State {
    /// Price in cents.
    pub price: i64,
    /// Copies in stock.
    pub quantity: i64,
}

/// What a client asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Call {
    /// `GET /books/{id}` or the front end's `GET /info/{id}`.
    Read,
    /// `PATCH {"price": p}` (cents).
    SetPrice(i64),
    /// `PATCH {"quantity": q}`.
    SetQuantity(i64),
    /// `PATCH {"quantity_delta": d}`; refused (400) when it would make stock negative.
    #[serde(rename = "quantity_delta")]
    Delta(i64),
    /// A purchase of one copy; refused (409) when none is left.
    Purchase,
}

/// What the client learned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ret {
    /// It took effect, and the state right after it had these fields (None: not shown).
    Seen { price: Option<i64>, quantity: Option<i64> },
    /// It was refused and changed nothing (409 out of stock, 400 stock would go negative).
    Refused,
    /// Unknown: it may have taken effect (at any time after its invocation) or not.
    Unknown,
}

/// One operation of a history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    /// The client (thread) that ran it; a client's operations never overlap.
    pub client: usize,
    /// The book.
    pub book: u32,
    /// Where it was sent (`frontend`, `catalog-0`, ...), for the explanation only.
    pub via: String,
    /// What was asked.
    pub call: Call,
    /// What came back.
    pub ret: Ret,
    /// Invocation, microseconds since the recording began.
    pub inv: u64,
    /// Response, microseconds since the recording began; None when the outcome is unknown.
    pub resp: Option<u64>,
}

/// The initial state of one book, read before any client started.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Initial {
    /// The book.
    pub book: u32,
    /// Its state then.
    pub state: State,
}

/// What the checker should answer for a saved history (regression files).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expect {
    /// A linearization exists.
    Linearizable,
    /// None exists.
    NotLinearizable,
}

/// A recorded (or hand-made) history, as saved in JSON.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct History {
    /// What produced it (a test's name, a fault schedule).
    pub name: String,
    /// Free text: seed, schedule, what a hand-made case shows.
    #[serde(default)]
    pub note: String,
    /// The expected verdict, for files under `tests/histories/`.
    #[serde(default)]
    pub expect: Option<Expect>,
    /// Each book's state before the first operation.
    pub initial: Vec<Initial>,
    /// The operations, in the order they were recorded.
    pub ops: Vec<Op>,
}

/// The checker's answer for one book.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A linearization exists.
    Linearizable,
    /// None exists; where the deepest attempt got stuck.
    NotLinearizable(Stuck),
    /// The sub-history is over the bound or the search over its budget.
    Unknown(String),
}

/// Where the deepest partial linearization ended: the operations it ordered (indices into
/// the book's operations, in linearization order), the state after them, and the operation
/// whose response forced the search back (it can be linearized in none of the states
/// reachable before it returned).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stuck {
    /// The operations ordered, in linearization order.
    pub prefix: Vec<usize>,
    /// The state after them.
    pub state: State,
    /// The operation that could not be placed.
    pub blocked: usize,
}

/// Applies `call` to `s` when it would take effect: the new state, or None when the store
/// must refuse it (purchase at 0, a delta making stock negative).
pub fn effect(s: State, call: Call) -> Option<State> {
    match call {
        Call::Read => Some(s),
        Call::SetPrice(price) => Some(State { price, ..s }),
        Call::SetQuantity(quantity) => Some(State { quantity, ..s }),
        Call::Delta(d) if s.quantity + d >= 0 => Some(State { quantity: s.quantity + d, ..s }),
        Call::Purchase if s.quantity > 0 => Some(State { quantity: s.quantity - 1, ..s }),
        Call::Delta(_) | Call::Purchase => None,
    }
}

/// The model's step: the state after `call` answered `ret` in state `s`, or None when that
/// answer is impossible there.
pub fn step(s: State, call: Call, ret: Ret) -> Option<State> {
    match (ret, effect(s, call)) {
        (Ret::Unknown, next) => Some(next.unwrap_or(s)),
        (Ret::Refused, None) => Some(s),
        (Ret::Refused, Some(_)) => None,
        (Ret::Seen { .. }, None) => None,
        (Ret::Seen { price, quantity }, Some(next)) => {
            let fits = price.is_none_or(|p| p == next.price) && quantity.is_none_or(|q| q == next.quantity);
            fits.then_some(next)
        }
    }
}

/// A set of operation indices.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(n: usize) -> Bits {
        Bits(vec![0; n.div_ceil(64)])
    }
    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn clear(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }
    fn get(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }
    fn is_subset(&self, of: &Bits) -> bool {
        self.0.iter().zip(&of.0).all(|(a, b)| a & !b == 0)
    }
}

/// Which unknown operations the search may place, and when. These rules (and placing none
/// that would leave the state as it is) drop only choices that another choice can stand
/// for, so they keep every verdict:
/// - an unknown price write whose price no answer shows is never placed: if it happened,
///   nothing saw its price before another price write replaced it, so a linearization
///   without it is one too;
/// - identical unknown operations (two purchases, two deltas of +1...) are placed in the
///   order they were invoked: using a later one instead of an earlier one is the same
///   history, as the earlier one was invoked first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Gate {
    Free,
    Never,
    After(usize),
}

fn gates(ops: &[Op]) -> Vec<Gate> {
    let shown: HashSet<i64> = ops
        .iter()
        .filter_map(|o| match o.ret {
            Ret::Seen { price, .. } => price,
            _ => None,
        })
        .collect();
    let mut by_invocation: Vec<usize> = (0..ops.len()).filter(|&i| ops[i].resp.is_none()).collect();
    by_invocation.sort_by_key(|&i| (ops[i].inv, i));
    let mut gates = vec![Gate::Free; ops.len()];
    let mut last: HashMap<String, usize> = HashMap::new();
    for i in by_invocation {
        if let Call::SetPrice(p) = ops[i].call {
            if !shown.contains(&p) {
                gates[i] = Gate::Never;
                continue;
            }
        }
        if let Some(j) = last.insert(format!("{:?}", ops[i].call), i) {
            gates[i] = Gate::After(j);
        }
    }
    gates
}

/// Records a configuration in the cache; false when it (or one that dominates it) was
/// explored already.
fn remember(cache: &mut HashMap<(Bits, State), Vec<Bits>>, bits: &Bits, unknown: &Bits, state: State) -> bool {
    let known = Bits(bits.0.iter().zip(&unknown.0).map(|(b, u)| b & !u).collect());
    let used = Bits(bits.0.iter().zip(&unknown.0).map(|(b, u)| b & u).collect());
    let explored = cache.entry((known, state)).or_default();
    if explored.iter().any(|e| e.is_subset(&used)) {
        return false;
    }
    explored.retain(|e| !used.is_subset(e));
    explored.push(used);
    true
}

/// Index of the list's head sentinel and end marker.
const HEAD: usize = usize::MAX - 1;
const NIL: usize = usize::MAX;

/// The entries of one book's history as a doubly linked list over a vector: entry `2i` is
/// operation i's call, `2i + 1` its return (absent from the list when unknown).
struct List {
    next: Vec<usize>,
    prev: Vec<usize>,
    head_next: usize,
}

impl List {
    fn new(ops: &[Op]) -> List {
        let mut order: Vec<(u64, bool, usize)> = Vec::with_capacity(ops.len() * 2);
        for (i, op) in ops.iter().enumerate() {
            order.push((op.inv, false, 2 * i));
            if let Some(resp) = op.resp {
                order.push((resp, true, 2 * i + 1));
            }
        }
        order.sort(); // time, then calls (false) before returns, then by index: deterministic
        let mut list = List { next: vec![NIL; ops.len() * 2], prev: vec![NIL; ops.len() * 2], head_next: NIL };
        let mut last = HEAD;
        for &(_, _, e) in &order {
            list.link(last, e);
            list.prev[e] = last;
            last = e;
        }
        list
    }

    fn link(&mut self, from: usize, to: usize) {
        if from == HEAD {
            self.head_next = to;
        } else {
            self.next[from] = to;
        }
    }

    fn remove(&mut self, e: usize) {
        let (p, n) = (self.prev[e], self.next[e]);
        self.link(p, n);
        if n != NIL {
            self.prev[n] = p;
        }
    }

    /// Puts back an entry removed last-in-first-out: its neighbours still point around it.
    fn restore(&mut self, e: usize) {
        let (p, n) = (self.prev[e], self.next[e]);
        self.link(p, e);
        if n != NIL {
            self.prev[n] = e;
        }
    }
}

/// Checks one book's operations from `initial`. The operations must all be on one book.
pub fn check_book(initial: State, ops: &[Op]) -> Verdict {
    check_book_within(initial, ops, STEP_BUDGET)
}

/// [`check_book`] with an explicit step budget.
pub fn check_book_within(initial: State, ops: &[Op], budget: u64) -> Verdict {
    search(initial, ops, budget).0
}

/// The search itself: the verdict, and the steps it took.
pub fn search(initial: State, ops: &[Op], budget: u64) -> (Verdict, u64) {
    if ops.len() > MAX_OPS {
        return (Verdict::Unknown(format!("{} operations on one book, over the bound of {MAX_OPS}", ops.len())), 0);
    }
    let mut list = List::new(ops);
    let mut remaining = ops.iter().filter(|o| o.resp.is_some()).count();
    let mut linearized = Bits::new(ops.len());
    // The cache: for each (determinate operations linearized, state), the sets of unknown
    // operations linearized with them that were explored. Fewer unknown ones dominates more
    // (they impose nothing, and those not yet used stay available), so a configuration
    // whose unknown set holds an explored one is pruned too.
    let mut unknown = Bits::new(ops.len());
    for (i, op) in ops.iter().enumerate() {
        if op.resp.is_none() {
            unknown.set(i);
        }
    }
    let mut cache: HashMap<(Bits, State), Vec<Bits>> = HashMap::new();
    let gates = gates(ops);
    let mut calls: Vec<(usize, State)> = Vec::new();
    let mut state = initial;
    let mut deepest = Stuck { prefix: Vec::new(), state: initial, blocked: 0 };
    let mut found_stuck = false;
    // Each level of the search tries the answered operations first, then (`second`) the
    // unknown ones: exploring fewer unknown ones first lets the cache prune the rest.
    let (mut cur, mut second) = (list.head_next, false);
    let mut steps = 0u64;
    while remaining > 0 {
        steps += 1;
        if steps > budget {
            return (Verdict::Unknown(format!("search over its budget of {budget} steps")), budget);
        }
        if cur != NIL && cur % 2 == 0 {
            let i = cur / 2;
            let open = match gates[i] {
                _ if ops[i].resp.is_none() != second => false,
                Gate::Free => true,
                Gate::Never => false,
                Gate::After(j) => linearized.get(j),
            };
            // An unknown operation that would change nothing now is better left for later.
            let useful = |next: &State| ops[i].resp.is_some() || *next != state;
            if let Some(next) = step(state, ops[i].call, ops[i].ret).filter(|n| open && useful(n)) {
                let mut bits = linearized.clone();
                bits.set(i);
                if remember(&mut cache, &bits, &unknown, next) {
                    calls.push((i, state));
                    state = next;
                    linearized.set(i);
                    list.remove(2 * i);
                    if ops[i].resp.is_some() {
                        list.remove(2 * i + 1);
                        remaining -= 1;
                    }
                    (cur, second) = (list.head_next, false);
                    continue;
                }
            }
            cur = list.next[cur];
            continue;
        }
        if !second {
            (cur, second) = (list.head_next, true);
            continue;
        }
        // A return (or the end, which only pending unknown calls precede): backtrack.
        if cur != NIL && (!found_stuck || calls.len() > deepest.prefix.len()) {
            found_stuck = true;
            deepest = Stuck { prefix: calls.iter().map(|&(i, _)| i).collect(), state, blocked: cur / 2 };
        }
        let Some((i, before)) = calls.pop() else {
            return (Verdict::NotLinearizable(deepest), steps);
        };
        state = before;
        linearized.clear(i);
        if ops[i].resp.is_some() {
            list.restore(2 * i + 1);
            remaining += 1;
        }
        list.restore(2 * i);
        (cur, second) = (list.next[2 * i], ops[i].resp.is_none());
    }
    (Verdict::Linearizable, steps)
}

/// One book's part of a history: its initial state and its operations in history order.
pub fn book_ops(h: &History, book: u32) -> Vec<Op> {
    h.ops.iter().filter(|o| o.book == book).cloned().collect()
}

/// The books of a history, in order.
pub fn books(h: &History) -> BTreeSet<u32> {
    h.initial.iter().map(|i| i.book).chain(h.ops.iter().map(|o| o.book)).collect()
}

/// A verdict for each book of a history.
pub fn check(h: &History) -> Vec<(u32, Verdict)> {
    books(h)
        .into_iter()
        .map(|book| match h.initial.iter().find(|i| i.book == book) {
            None => (book, Verdict::Unknown(format!("book {book} has no initial state"))),
            Some(init) => (book, check_book(init.state, &book_ops(h, book))),
        })
        .collect()
}

/// An operation in words, for explanations.
pub fn describe(op: &Op) -> String {
    let cents = |c: i64| format!("{}.{:02}", c / 100, c % 100);
    let call = match op.call {
        Call::Read => "read".to_string(),
        Call::SetPrice(p) => format!("set price {}", cents(p)),
        Call::SetQuantity(q) => format!("set quantity {q}"),
        Call::Delta(d) => format!("quantity_delta {d:+}"),
        Call::Purchase => "purchase".to_string(),
    };
    let ret = match op.ret {
        Ret::Seen { price, quantity } => {
            let p = price.map(|p| format!("price {}", cents(p)));
            let q = quantity.map(|q| format!("quantity {q}"));
            let shown: Vec<String> = p.into_iter().chain(q).collect();
            if shown.is_empty() {
                "ok".to_string()
            } else {
                format!("ok, {}", shown.join(", "))
            }
        }
        Ret::Refused => "refused".to_string(),
        Ret::Unknown => "outcome unknown".to_string(),
    };
    let resp = op.resp.map_or("never (unknown)".to_string(), |r| format!("{:.3} ms", r as f64 / 1000.0));
    format!(
        "client {} {call} via {} -> {ret} [invoked {:.3} ms, answered {resp}]",
        op.client,
        op.via,
        op.inv as f64 / 1000.0
    )
}
