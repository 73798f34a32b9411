//! What the catalog keeps in memory beside the books: the purchase journal (recent
//! purchases made for orders, which order servers reconcile from) and the history of recent
//! writes (for replicas that missed a few), each write with its epoch.
//!
//! The journal is the second disk of an order acknowledged while its order server's peer
//! is down (or while its own disk takes no writes): it keeps every purchase until every
//! order server holds its order, as the order servers report (`Journal::release`), within
//! [`KEEP_PURCHASES`] and [`JOURNAL_MAX`].
//!
//! Invariant: the history is contiguous and ends at the catalog's last write, whose epoch
//! it knows even when it keeps no write (after a checkpoint or a copy), so that a catch-up
//! can compare (seq, epoch) at any point it serves.

use crate::wire::{JournalId, Purchase, Replicate};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// Purchase records always kept (across checkpoints), for order servers to reconcile from,
/// whatever the order servers report they hold.
pub const KEEP_PURCHASES: usize = 10_000;
/// Most purchase records kept while some order server does not hold their orders (one down
/// for long): about 250 bytes each in memory (an estimate: the order's strings and its entry by
/// order id), so at most about 125 MB, and as many rows in
/// each checkpoint of `catalog.log`. Beyond it the oldest are forgotten anyway, with a
/// warning: an order acknowledged while its peer was down is then on its own server's disk
/// only until the peer is back.
pub const JOURNAL_MAX: usize = 500_000;
/// Recent writes kept in memory, for replicas that missed a few.
pub const HISTORY: usize = 100_000;

/// What the catalog remembers of its recent writes: the purchase journal and the history.
/// Loaded from the files at open (`Store::open`), then kept by whoever decides the writes
/// (the files only store them: `Store::append` writes rows, [`Recent::record`] remembers
/// them), so that the decisions that read it (an order's copy taken once, a catch-up's
/// tail, a version answer) need no file.
#[derive(Debug)]
pub struct Recent {
    /// Recent purchases made for orders.
    pub journal: Journal,
    /// Recent writes.
    pub history: History,
}

impl Recent {
    /// Remembers writes made durable, in order (each with the order it was taken for).
    /// The history shares each write with the batch that made it rather than copying it.
    pub fn record(&mut self, writes: &[Arc<Replicate>]) {
        for w in writes {
            if let Some(o) = &w.order {
                self.journal.push(Purchase { seq: w.seq, order: o.clone() });
            }
            self.history.push(Arc::clone(w));
        }
    }
}

/// The purchase journal: recent purchases made for orders, by write and by order id.
///
/// Invariant: a purchase is kept until every order server holds its order (its write is at
/// most `held`, the highest mark the order servers reported: each reports the least of its
/// own and its peers'), and at least the last [`KEEP_PURCHASES`]; at most [`JOURNAL_MAX`].
/// So an order acknowledged on one order server's disk only (its peer down) survives the
/// loss of that disk. `held` lives in memory: after a restart nothing is forgotten until an
/// order server reports again (within a second).
#[derive(Debug, Default)]
pub struct Journal {
    records: VecDeque<Purchase>,
    by_order: HashMap<String, u64>,
    /// Every order server holds the orders of the purchases up to this write.
    held: u64,
    /// Purchases forgotten at [`JOURNAL_MAX`] before every order server held them.
    dropped: u64,
}

impl Journal {
    pub(super) fn push(&mut self, p: Purchase) {
        self.by_order.insert(p.order.order_id.clone(), p.seq);
        self.records.push_back(p);
        self.trim();
    }

    /// Every order server holds the orders of the purchases up to write `held` (reported
    /// by an order server for itself and its peers): those may be forgotten. Marks only
    /// grow: a lower one (an order server restarted on an empty disk) changes nothing, its
    /// peers hold what was forgotten.
    pub fn release(&mut self, held: u64) {
        if held > self.held {
            self.held = held;
            self.trim();
        }
    }

    /// Forgets what the invariant allows.
    fn trim(&mut self) {
        while self.records.len() > KEEP_PURCHASES {
            let Some(front) = self.records.front() else { break };
            if front.seq > self.held {
                if self.records.len() <= JOURNAL_MAX {
                    break;
                }
                if self.dropped % 10_000 == 0 {
                    log::warn!(
                        "the purchase journal is full ({JOURNAL_MAX} purchases): forgetting purchases some order server does not hold yet ({} so far; is an order server down?)",
                        self.dropped + 1
                    );
                }
                self.dropped += 1;
            }
            if let Some(old) = self.records.pop_front() {
                self.by_order.remove(&old.order.order_id);
            }
        }
    }

    /// How many purchases are kept.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The records, oldest first.
    pub(super) fn records(&self) -> impl Iterator<Item = &Purchase> {
        self.records.iter()
    }

    /// Whether a copy was already taken for this order.
    pub fn contains(&self, order_id: &str) -> bool {
        self.by_order.contains_key(order_id)
    }

    /// Up to `max` purchases made after write `after`, and whether more follow.
    pub fn after(&self, after: u64, max: usize) -> (Vec<Purchase>, bool) {
        self.page(after, max, Purchase::clone)
    }

    /// The writes and order ids of up to `max` purchases made after write `after`, and
    /// whether more follow.
    pub fn ids_after(&self, after: u64, max: usize) -> (Vec<JournalId>, bool) {
        self.page(after, max, |p| JournalId { seq: p.seq, order_id: p.order.order_id.clone() })
    }

    fn page<T>(&self, after: u64, max: usize, each: impl Fn(&Purchase) -> T) -> (Vec<T>, bool) {
        let start = self.records.partition_point(|p| p.seq <= after);
        let page: Vec<T> = self.records.range(start..).take(max).map(each).collect();
        let more = self.records.len() - start > page.len();
        (page, more)
    }
}

/// The last [`HISTORY`] writes, contiguous, ending at the catalog's sequence number, each
/// with the log's *chain* after it: a fingerprint of the whole log up to that write
/// ([`Replicate::chain`] from the history's start, [`chain_start`]). Two logs of one history
/// whose chains at N are equal hold the same writes up to N, not only the same write at N:
/// with static roles (every epoch 0) that is what tells a diverged log (README, "A disk that
/// comes back empty or older").
#[derive(Debug)]
pub struct History {
    writes: VecDeque<Arc<Replicate>>,
    /// The chain after each write kept, in step with `writes`.
    chains: VecDeque<Option<u32>>,
    /// The last write (the catalog's).
    last: Point,
    /// The write just before the first one kept, when known.
    base: Option<Point>,
}

/// A write's number, its epoch and the log's chain after it (None when not known: a log
/// written before chains, until the store starts over, since a whole copy of such a log has
/// none either; or after a gap).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Point {
    seq: u64,
    epoch: u64,
    chain: Option<u32>,
}

/// The chain of a history's log where it starts: history `history_id` created (seeded,
/// imported, started over) at write `seq`. A whole copy continues the source's chain.
pub fn chain_start(history_id: &str, seq: u64) -> u32 {
    crate::storage::checksum([history_id.as_bytes(), &seq.to_le_bytes()])
}

impl History {
    /// No writes kept; the last one is `last`, of `last_epoch`, the log's chain there
    /// `chain` (when known).
    pub(super) fn new(last: u64, last_epoch: u64, chain: Option<u32>) -> History {
        let last = Point { seq: last, epoch: last_epoch, chain };
        History { writes: VecDeque::new(), chains: VecDeque::new(), last, base: Some(last) }
    }

    pub(super) fn push(&mut self, write: Arc<Replicate>) {
        let next = write.seq == self.last.seq + 1;
        if !next {
            // Writes always come in order; were one missing, `after` must not pretend.
            self.writes.clear();
            self.chains.clear();
            self.base = None;
        }
        if self.writes.is_empty() && self.base.is_none_or(|b| b.seq != self.last.seq) {
            self.base = next.then_some(self.last);
        }
        let chain = self.last.chain.filter(|_| next).map(|c| write.chain(c));
        self.last = Point { seq: write.seq, epoch: write.epoch, chain };
        self.writes.push_back(write);
        self.chains.push_back(chain);
        if self.writes.len() > HISTORY {
            let (w, chain) = (self.writes.pop_front(), self.chains.pop_front().flatten());
            self.base = w.map(|w| Point { seq: w.seq, epoch: w.epoch, chain });
        }
    }

    /// Up to `max` writes after `seq`, or None when they are no longer kept (or `seq` is
    /// past the last write: a replica of another history).
    pub fn after(&self, seq: u64, max: usize) -> Option<Vec<Arc<Replicate>>> {
        let first = self.writes.front().map_or(self.last.seq + 1, |w| w.seq);
        if seq > self.last.seq || seq + 1 < first {
            return None;
        }
        Some(self.writes.iter().skip((seq + 1 - first) as usize).take(max).cloned().collect())
    }

    /// Where write `seq` is among those kept.
    fn index(&self, seq: u64) -> Option<usize> {
        let first = self.writes.front()?.seq;
        usize::try_from(seq.checked_sub(first)?).ok().filter(|&i| i < self.writes.len())
    }

    /// Write `seq`, when kept.
    pub fn at(&self, seq: u64) -> Option<&Arc<Replicate>> {
        self.writes.get(self.index(seq)?).filter(|w| w.seq == seq)
    }

    /// What is known of write `seq`: the last one, the one before those kept, or one kept.
    fn point(&self, seq: u64) -> Option<Point> {
        if seq == self.last.seq {
            return Some(self.last);
        }
        if let Some(base) = self.base.filter(|b| b.seq == seq) {
            return Some(base);
        }
        let i = self.index(seq)?;
        Some(Point { seq, epoch: self.writes[i].epoch, chain: self.chains[i] })
    }

    /// The epoch of write `seq`, when known here (the last write, or one kept).
    pub fn epoch_at(&self, seq: u64) -> Option<u64> {
        self.point(seq).map(|p| p.epoch)
    }

    /// The log's chain after write `seq`, when known here.
    pub fn chain_at(&self, seq: u64) -> Option<u32> {
        self.point(seq).and_then(|p| p.chain)
    }

    /// The sequence number and epoch of the last write.
    pub fn last(&self) -> (u64, u64) {
        (self.last.seq, self.last.epoch)
    }

    /// The log's chain after the last write, when known.
    pub fn chain(&self) -> Option<u32> {
        self.last.chain
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Book;

    fn write(seq: u64, epoch: u64) -> Replicate {
        let book = Book { id: 1, title: "t".into(), topic: "x".into(), price: Default::default(), quantity: 1 };
        Replicate { seq, book, epoch, order: None }
    }

    fn purchase(seq: u64) -> Purchase {
        let order = crate::wire::Order {
            order_id: format!("0a0a0a0a0a0a-{seq}"),
            id: 1,
            title: "t".into(),
            price: Default::default(),
            at: "2026-01-01T00:00:00.000Z".into(),
        };
        Purchase { seq, order }
    }

    /// Purchases stay until every order server holds them (beyond the last KEEP_PURCHASES
    /// kept anyway), up to JOURNAL_MAX; marks only grow.
    #[test]
    fn the_journal_keeps_what_some_order_server_does_not_hold() {
        let mut j = Journal::default();
        let n = KEEP_PURCHASES as u64 + 500;
        (1..=n).for_each(|seq| j.push(purchase(seq)));
        assert_eq!(j.len(), n as usize, "nobody reported: all kept");
        j.release(200);
        assert_eq!(j.after(0, 1).0[0].seq, 201, "those every order server holds are forgotten");
        assert!(!j.contains("0a0a0a0a0a0a-200") && j.contains("0a0a0a0a0a0a-201"));
        j.release(100);
        assert_eq!(j.after(0, 1).0[0].seq, 201, "a lower mark changes nothing");
        j.release(n);
        assert_eq!(j.len(), KEEP_PURCHASES, "the last KEEP_PURCHASES stay whatever is held");
        let mut j = Journal::default();
        (1..=JOURNAL_MAX as u64 + 3).for_each(|seq| j.push(purchase(seq)));
        assert_eq!((j.len(), j.after(0, 1).0[0].seq), (JOURNAL_MAX, 4), "bounded");
    }

    #[test]
    fn the_history_knows_the_epoch_of_each_write_it_serves() {
        let mut h = History::new(10, 2, Some(7));
        assert_eq!(h.epoch_at(10), Some(2), "the last write's epoch survives a checkpoint");
        assert_eq!(h.epoch_at(9), None);
        for (seq, epoch) in [(11, 2), (12, 3), (13, 3)] {
            h.push(Arc::new(write(seq, epoch)));
        }
        let cases = [(9, None), (10, Some(2)), (11, Some(2)), (12, Some(3)), (13, Some(3)), (14, None)];
        // After a gap nothing before the new write is known.
        h.push(Arc::new(write(20, 4)));
        assert_eq!((h.epoch_at(19), h.epoch_at(20), h.epoch_at(13)), (None, Some(4), None));
        let mut h = History::new(10, 2, Some(7));
        for (seq, epoch) in [(11, 2), (12, 3), (13, 3)] {
            h.push(Arc::new(write(seq, epoch)));
        }
        for (seq, epoch) in cases {
            assert_eq!(h.epoch_at(seq), epoch, "write {seq}");
        }
        assert_eq!(h.last(), (13, 3));
        assert_eq!(h.after(11, 10).unwrap().iter().map(|w| w.epoch).collect::<Vec<_>>(), [3, 3]);
        // The writes themselves: only those kept (not the checkpoint's write 10).
        let kept: Vec<Option<u64>> = (9..=14).map(|seq| h.at(seq).map(|w| w.seq)).collect();
        assert_eq!(kept, [None, None, Some(11), Some(12), Some(13), None]);
    }

    /// The chain after each write kept continues the one known where the history starts;
    /// not known from a start without one, or before a gap.
    #[test]
    fn the_history_chains_each_write_to_those_before() {
        let mut h = History::new(10, 2, Some(7));
        let writes: Vec<Replicate> = [(11, 2), (12, 3), (13, 3)].map(|(s, e)| write(s, e)).into();
        writes.iter().for_each(|w| h.push(Arc::new(w.clone())));
        let mut want = vec![writes[0].chain(7)];
        want.push(writes[1].chain(want[0]));
        want.push(writes[2].chain(want[1]));
        assert_eq!((h.chain_at(10), h.chain_at(9), h.chain_at(14)), (Some(7), None, None));
        assert_eq!([11, 12, 13].map(|seq| h.chain_at(seq).unwrap()), want[..]);
        assert_eq!(h.chain(), Some(want[2]));
        // Another write at 12 would give another chain from there on.
        let other = Replicate { book: Book { quantity: 9, ..write(12, 3).book }, ..write(12, 3) };
        assert_ne!(other.chain(want[0]), want[1]);
        h.push(Arc::new(write(20, 4)));
        assert_eq!((h.chain(), h.chain_at(13)), (None, None), "after a gap nothing is known");
        let mut unknown = History::new(10, 2, None);
        unknown.push(Arc::new(write(11, 2)));
        assert_eq!(unknown.chain(), None, "a log written before chains has none");
        // Past HISTORY writes, the one before the first kept keeps its chain.
        let mut long = History::new(0, 0, Some(1));
        (1..=HISTORY as u64 + 1).for_each(|seq| long.push(Arc::new(write(seq, 0))));
        assert_eq!((long.chain_at(1), long.at(1).is_none()), (Some(write(1, 0).chain(1)), true));
    }
}
