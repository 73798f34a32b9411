//! Why a book's history is not linearizable, in a few operations.
//!
//! The full history of a failing book has hundreds of operations; the witness keeps only
//! what the violation needs, by changes that can only make a history *easier* to
//! linearize, so that whatever is still not linearizable after them proves the original
//! was not either:
//! - deleting a read or a refused operation (they change no state; every linearization of
//!   the history is one of the history without them);
//! - forgetting what a write answered (it still took effect between its invocation and its
//!   response, but the state it showed is no longer checked; this keeps the search cheap,
//!   where forgetting that it happened at all would multiply its configurations);
//! - deleting an operation of unknown outcome invoked after every known answer (it could
//!   always be placed last, or not at all);
//! - keeping only the history as it stood at some time (a prefix: what was invoked by
//!   then, unanswered operations as unknown), since prefixes of linearizable histories
//!   are linearizable.
//!
//! The shrinking (the shortest failing prefix by bisection, then delta debugging over the
//! other changes, in chunks that halve) is bounded by a
//! count of checks and a step budget per check, so it is deterministic too.

use super::checker::{describe, search, Call, Op, Ret, State, Stuck, Verdict};

/// Most checks one shrinking may run.
const SHRINK_CHECKS: usize = 600;
/// Search steps one shrinking may take in all (an inconclusive check keeps the operation;
/// when they are spent, the shrinking stops where it is).
const SHRINK_STEPS: u64 = 8_000_000;

/// What is left of a shrinking's bounds.
struct Budget {
    checks: usize,
    steps: u64,
}

/// Most operations of a witness shown in an explanation.
const SHOWN: usize = 8;
/// Unknown writes are in flight forever; those invoked longer ago (µs) are not shown.
const PENDING_SHOWN: u64 = 1_000_000;

/// A write whose answer the witness forgot (it took effect within its interval).
fn is_blind(o: &Op) -> bool {
    o.ret == (Ret::Seen { price: None, quantity: None }) && o.call != Call::Read
}

/// The witness of a violation: a sub-history (with some outcomes forgotten) that is still
/// not linearizable, and the text that explains it.
pub struct Witness {
    /// The operations of the witness.
    pub ops: Vec<Op>,
    /// Why they are not linearizable, in words.
    pub text: String,
}

fn still_bad(initial: State, ops: &[Op], budget: &mut Budget) -> bool {
    if budget.checks == 0 || budget.steps == 0 {
        return false;
    }
    budget.checks -= 1;
    let (verdict, steps) = search(initial, ops, budget.steps);
    budget.steps -= steps;
    matches!(verdict, Verdict::NotLinearizable(_))
}

/// The history as it stood at time `t`: operations invoked after it gone, those answered
/// after it unknown (reads among them gone). A history whose prefix is not linearizable is
/// not either (linearizability is closed under prefixes).
fn prefix(ops: &[Op], t: u64) -> Vec<Op> {
    ops.iter()
        .filter(|o| o.inv <= t)
        .filter_map(|o| match o.resp {
            Some(r) if r <= t => Some(o.clone()),
            _ if o.call == Call::Read => None,
            _ => Some(Op { ret: Ret::Unknown, resp: None, ..o.clone() }),
        })
        .collect()
}

/// The history with the changes of `drop` applied (indices into `ops`): reads and refusals
/// deleted, the answers of writes forgotten (they still took effect within their
/// interval), then unknown operations invoked after every known answer deleted.
fn relaxed(ops: &[Op], drop: &[bool]) -> Vec<Op> {
    let mut out: Vec<Op> = Vec::new();
    for (op, &d) in ops.iter().zip(drop) {
        if !d || op.resp.is_none() {
            out.push(op.clone());
        } else if op.call != Call::Read && op.ret != Ret::Refused {
            out.push(Op { ret: Ret::Seen { price: None, quantity: None }, ..op.clone() });
        }
    }
    let last = out.iter().filter_map(|o| o.resp).max().unwrap_or(0);
    out.retain(|o| o.resp.is_some() || o.inv <= last);
    out
}

/// Delta debugging over `candidates` (indices into `ops`): drops chunks that halve in size
/// while the history stays not linearizable; at most `checks` checks.
fn ddmin(initial: State, ops: &[Op], mut candidates: Vec<usize>, budget: &mut Budget) -> Vec<Op> {
    let mut drop = vec![false; ops.len()];
    let mut chunk = candidates.len().div_ceil(2).max(1);
    loop {
        let mut at = 0;
        while at < candidates.len() && budget.checks > 0 && budget.steps > 0 {
            let end = (at + chunk).min(candidates.len());
            let mut trial = drop.clone();
            for &i in &candidates[at..end] {
                trial[i] = true;
            }
            if still_bad(initial, &relaxed(ops, &trial), budget) {
                drop = trial;
                candidates.drain(at..end);
            } else {
                at = end;
            }
        }
        if chunk == 1 || budget.checks == 0 || budget.steps == 0 {
            break;
        }
        chunk = chunk.div_ceil(2);
    }
    relaxed(ops, &drop)
}

/// Shrinks a book's failing history (the caller knows it is not linearizable): first to
/// its shortest failing prefix, then deleting reads and refusals, then forgetting the
/// answers of writes.
pub fn shrink(initial: State, ops: &[Op], blocked: Option<usize>) -> Vec<Op> {
    let budget = &mut Budget { checks: SHRINK_CHECKS, steps: SHRINK_STEPS };
    let mut times: Vec<u64> = ops.iter().filter_map(|o| o.resp).collect();
    times.sort();
    times.dedup();
    // The first failing prefix (the predicate is monotone in time), looked for first before
    // the answer of the operation the search got stuck on, where it usually is.
    let (mut lo, mut hi) = (0, times.len());
    if let Some(at) = blocked.and_then(|b| ops[b].resp).and_then(|r| times.binary_search(&r).ok()) {
        if still_bad(initial, &prefix(ops, times[at]), budget) {
            hi = at;
        }
    }
    while lo < hi {
        let mid = (lo + hi) / 2;
        if still_bad(initial, &prefix(ops, times[mid]), budget) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    let mut ops = if lo < times.len() { prefix(ops, times[lo]) } else { ops.to_vec() };
    let passive = |o: &Op| o.resp.is_some() && (o.call == Call::Read || o.ret == Ret::Refused);
    let reads: Vec<usize> = (0..ops.len()).filter(|&i| passive(&ops[i])).collect();
    ops = ddmin(initial, &ops, reads, budget);
    let writes: Vec<usize> = (0..ops.len()).filter(|&i| ops[i].resp.is_some() && !passive(&ops[i])).collect();
    ddmin(initial, &ops, writes, budget)
}

/// The explanation of a failing book: where the search got stuck, then the shrunk witness.
pub fn explain(book: u32, initial: State, ops: &[Op], stuck: &Stuck) -> Witness {
    let cents = |c: i64| format!("{}.{:02}", c / 100, c % 100);
    let mut text = format!(
        "book {book}: not linearizable ({} operations, initial price {}, quantity {})\n",
        ops.len(),
        cents(initial.price),
        initial.quantity
    );
    text += &format!(
        "  the deepest linearization orders {} operations, reaching price {}, quantity {}; the last of them:\n",
        stuck.prefix.len(),
        cents(stuck.state.price),
        stuck.state.quantity
    );
    for &i in stuck.prefix.iter().rev().take(3).rev() {
        text += &format!("    {}\n", describe(&ops[i]));
    }
    text += &format!(
        "  and then this one can be placed in no state reachable before it answered:\n    {}\n",
        describe(&ops[stuck.blocked])
    );
    let witness = shrink(initial, ops, Some(stuck.blocked));
    let mut checked: Vec<&Op> = witness.iter().filter(|o| o.ret != Ret::Unknown && !is_blind(o)).collect();
    checked.sort_by_key(|o| (o.resp, o.inv));
    let unknown = witness.iter().filter(|o| o.ret == Ret::Unknown).count();
    text += &format!(
        "  a witness of {} operations is not linearizable ({unknown} of unknown outcome, {} writes whose answers it \
         does not need); what it checks, the last {} shown:\n",
        witness.len(),
        witness.iter().filter(|o| is_blind(o)).count(),
        checked.len().min(SHOWN)
    );
    for op in checked.iter().skip(checked.len().saturating_sub(SHOWN)) {
        text += &format!("    {}\n", describe(op));
    }
    // The writes in flight around the last checked operations (where the violation shows).
    let last = &checked[checked.len().saturating_sub(3)..];
    let from = last.iter().map(|o| o.inv).min().unwrap_or(0);
    let to = last.iter().filter_map(|o| o.resp).max().unwrap_or(u64::MAX);
    let around: Vec<&Op> = ops
        .iter()
        .filter(|o| o.call != Call::Read && o.inv <= to && o.resp.is_none_or(|r| r >= from))
        .filter(|o| o.resp.is_some() || o.inv + PENDING_SHOWN >= from)
        .filter(|o| !last.iter().any(|l| l.client == o.client && l.inv == o.inv))
        .collect();
    if !around.is_empty() {
        text += "  the writes in flight meanwhile (as recorded):\n";
        for op in around.iter().rev().take(SHOWN).rev() {
            text += &format!("    {}\n", describe(op));
        }
    }
    Witness { ops: witness, text }
}
