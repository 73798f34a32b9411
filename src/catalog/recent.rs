//! What the catalog keeps in memory beside the books: the purchase journal (recent
//! purchases made for orders, which order servers reconcile from) and the history of recent
//! writes (for replicas that missed a few), each write with its epoch.
//!
//! Invariant: the history is contiguous and ends at the catalog's last write, whose epoch
//! it knows even when it keeps no write (after a checkpoint or a copy), so that a catch-up
//! can compare (seq, epoch) at any point it serves.

use crate::wire::{Purchase, Replicate};
use std::collections::{HashMap, VecDeque};

/// Purchase records kept across checkpoints, for order servers to reconcile from.
pub const KEEP_PURCHASES: usize = 10_000;
/// Recent writes kept in memory, for replicas that missed a few.
pub const HISTORY: usize = 100_000;

/// The purchase journal: recent purchases made for orders, by write and by order id.
#[derive(Debug, Default)]
pub struct Journal {
    records: VecDeque<Purchase>,
    by_order: HashMap<String, u64>,
}

impl Journal {
    pub(super) fn push(&mut self, p: Purchase) {
        self.by_order.insert(p.order.order_id.clone(), p.seq);
        self.records.push_back(p);
        while self.records.len() > KEEP_PURCHASES {
            if let Some(old) = self.records.pop_front() {
                self.by_order.remove(&old.order.order_id);
            }
        }
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
        let start = self.records.partition_point(|p| p.seq <= after);
        let page: Vec<Purchase> = self.records.iter().skip(start).take(max).cloned().collect();
        let more = self.records.len() - start > page.len();
        (page, more)
    }
}

/// The last [`HISTORY`] writes, contiguous, ending at the catalog's sequence number.
#[derive(Debug)]
pub struct History {
    writes: VecDeque<Replicate>,
    /// The sequence number of the last write (the catalog's).
    last: u64,
    /// The epoch of the last write.
    last_epoch: u64,
    /// The write just before the first one kept (seq, epoch), when known.
    base: Option<(u64, u64)>,
}

impl History {
    /// No writes kept; the last one is `last`, of `last_epoch`.
    pub(super) fn new(last: u64, last_epoch: u64) -> History {
        History { writes: VecDeque::new(), last, last_epoch, base: Some((last, last_epoch)) }
    }

    pub(super) fn push(&mut self, write: Replicate) {
        if write.seq != self.last + 1 {
            // Writes always come in order; were one missing, `after` must not pretend.
            self.writes.clear();
            self.base = None;
        }
        if self.writes.is_empty() && self.base.is_none_or(|(seq, _)| seq != self.last) {
            self.base = (write.seq == self.last + 1).then_some((self.last, self.last_epoch));
        }
        self.last = write.seq;
        self.last_epoch = write.epoch;
        self.writes.push_back(write);
        if self.writes.len() > HISTORY {
            self.base = self.writes.pop_front().map(|w| (w.seq, w.epoch));
        }
    }

    /// Up to `max` writes after `seq`, or None when they are no longer kept (or `seq` is
    /// past the last write: a replica of another history).
    pub fn after(&self, seq: u64, max: usize) -> Option<Vec<Replicate>> {
        let first = self.writes.front().map_or(self.last + 1, |w| w.seq);
        if seq > self.last || seq + 1 < first {
            return None;
        }
        Some(self.writes.iter().skip((seq + 1 - first) as usize).take(max).cloned().collect())
    }

    /// The epoch of write `seq`, when known here (the last write, or one kept).
    pub fn epoch_at(&self, seq: u64) -> Option<u64> {
        if seq == self.last {
            return Some(self.last_epoch);
        }
        if let Some((_, epoch)) = self.base.filter(|(base, _)| *base == seq) {
            return Some(epoch);
        }
        let first = self.writes.front()?.seq;
        if seq < first || seq > self.last {
            return None;
        }
        self.writes.get((seq - first) as usize).map(|w| w.epoch)
    }

    /// The sequence number and epoch of the last write.
    pub fn last(&self) -> (u64, u64) {
        (self.last, self.last_epoch)
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

    #[test]
    fn the_history_knows_the_epoch_of_each_write_it_serves() {
        let mut h = History::new(10, 2);
        assert_eq!(h.epoch_at(10), Some(2), "the last write's epoch survives a checkpoint");
        assert_eq!(h.epoch_at(9), None);
        for (seq, epoch) in [(11, 2), (12, 3), (13, 3)] {
            h.push(write(seq, epoch));
        }
        let cases = [(9, None), (10, Some(2)), (11, Some(2)), (12, Some(3)), (13, Some(3)), (14, None)];
        // After a gap nothing before the new write is known.
        h.push(write(20, 4));
        assert_eq!((h.epoch_at(19), h.epoch_at(20), h.epoch_at(13)), (None, Some(4), None));
        let mut h = History::new(10, 2);
        for (seq, epoch) in [(11, 2), (12, 3), (13, 3)] {
            h.push(write(seq, epoch));
        }
        for (seq, epoch) in cases {
            assert_eq!(h.epoch_at(seq), epoch, "write {seq}");
        }
        assert_eq!(h.last(), (13, 3));
        assert_eq!(h.after(11, 10).unwrap().iter().map(|w| w.epoch).collect::<Vec<_>>(), [3, 3]);
    }
}
