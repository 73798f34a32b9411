//! The primary's first decision of a group commit: which of the writes waiting in its
//! queue are made, with which numbers, and what each is answered.
//!
//! # Rules
//! - **Each write sees the ones before it in the batch** (a [`Draft`] over the catalog, no
//!   copy of it): two purchases of the last copy in one batch take it once.
//! - **A refused write takes no number** (out of stock, an unknown book, a bad update): the
//!   numbers of a batch have no gaps, so a replica logs them strictly in sequence.
//! - **A purchase for an order that already took its copy takes none again**: its order id
//!   is in the purchase journal (an order server that asked again after an answer it did
//!   not get) or earlier in the same batch; it is answered with the book as it is, as then.
//! - Every write is of the primary's `epoch` and carries its order (the journal's record),
//!   and the batch names the cache keys it changes (sorted, once each): the fences that
//!   must be set before it is readable anywhere.
//! - **A write waits in the writer until it may be decided** ([`gate`]): while a static
//!   primary compares itself with its replicas (then refused), until writes open, and with
//!   etcd in a new primary's first moments (then decided, so refused unless writable).

use super::super::recent::Journal;
use super::super::state::{Catalog, Draft, Refusal, Write};
use crate::cache;
use crate::wire::{Book, Order, Replicate};
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// How far behind a replica may be and still be sent the writes it lacks from the history
/// in memory: with a batch (rather than lose its place in sync), or, when it is brought
/// back in sync, the rest under the writer lock.
pub const CLOSE_ENOUGH: u64 = 1000;

/// What a replica's answer to a batch's push means for the batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Took {
    /// It logged the batch: it counts among the catalogs that hold it.
    Yes,
    /// It is a few writes behind, in this primary's log: send it the writes after `after`,
    /// then it counts (if the history still holds them all).
    Tail {
        /// Its last logged write.
        after: u64,
    },
    /// It did not log the batch: out of sync, its lease waited out before the batch is
    /// acknowledged.
    No,
}

/// Judges a replica's answer to the push of a batch whose last write is `last`: it says
/// it logged up to `acked`, and `same_log` says whether its log up to there is this
/// primary's (same history, the same epoch at that number and, where both know it, the
/// same chain; false past this primary's last write). An answer counts only from the
/// same log: with etcd a deposed primary's write at that number would be another write,
/// and with static roles so would a write of this primary's earlier run that reached the
/// replica late (a push sent before a crash, read after the restart settled), which no
/// epoch tells apart.
pub fn took(last: u64, acked: u64, same_log: bool) -> Took {
    if acked >= last && same_log {
        Took::Yes
    } else if acked < last && same_log && last - acked <= CLOSE_ENOUGH {
        Took::Tail { after: acked }
    } else {
        Took::No
    }
}

/// With static roles, whether a replica's write `theirs` at the number of this primary's
/// write `ours` is another write: their logs diverged there. Every write being of epoch 0,
/// epochs do not tell; it happens only when this primary's disk lost writes the replica
/// holds (it came back empty or older, and the primary served without hearing from that
/// replica), and the primary then decided other writes under the same numbers. The book
/// after the write, the epoch and the order's id are compared ([`Replicate::fingerprint`]).
pub fn diverged(ours: &Replicate, theirs: &Replicate) -> bool {
    ours.seq == theirs.seq && ours.fingerprint() != theirs.fingerprint()
}

/// With static roles, whether two logs of one history diverged at or before one write,
/// told by their chains after it (`History::chain_at`): a chain covers every write up to
/// its own, so logs that hold the same last write but differ earlier are told apart too.
/// None when either chain is not known (a log written before chains, a write no longer
/// kept): then only that write itself can be compared ([`diverged`]).
pub fn chains_diverged(ours: Option<u32>, theirs: Option<u32>) -> Option<bool> {
    ours.zip(theirs).map(|(ours, theirs)| ours != theirs)
}

/// A client's write as it waits in the queue.
#[derive(Clone, Debug)]
pub struct Asked {
    /// The book's id (ignored for an add).
    pub id: u32,
    /// What to do to it.
    pub write: Write,
    /// For a purchase through an order server: the order id and its time.
    pub order: Option<(String, String)>,
}

/// A batch decided.
#[derive(Debug, PartialEq, Eq)]
pub struct Decided {
    /// The writes to log, numbered after the catalog's last, of the primary's epoch.
    pub writes: Vec<Replicate>,
    /// The cache keys they change, sorted, each once.
    pub keys: Vec<String>,
    /// Each asked write's answer, in the order asked.
    pub answers: Vec<Result<Book, Refusal>>,
}

/// Decides the writes `asked` over `catalog` (its readable state), with `journal` the
/// purchases already made, for a primary of `epoch`.
pub fn decide(catalog: &Catalog, journal: &Journal, epoch: u64, asked: Vec<Asked>) -> Decided {
    let mut draft = Draft::new(catalog);
    let mut orders = HashSet::new();
    // Books whose keys are named already by a write that left their topic as it was: a
    // later write of one that also leaves it names the same keys (most of a busy batch:
    // purchases of a few books), so they are not made again.
    let mut keyed = HashSet::new();
    let (mut writes, mut keys) = (Vec::new(), Vec::new());
    let answers = asked
        .into_iter()
        .map(|a| {
            let repeated = a.order.as_ref().is_some_and(|(o, _)| journal.contains(o) || orders.contains(o));
            if repeated {
                // The copy was taken for this order already: answer as then, take none.
                return draft.book(a.id).cloned();
            }
            let old = draft.book(a.id).ok().cloned();
            draft.write(a.id, &a.write).map(|mut w| {
                // Only a purchase made counts for its order: one refused (out of stock) and
                // asked again in the same batch is decided again, not answered as made.
                orders.extend(a.order.as_ref().map(|(o, _)| o.clone()));
                w.epoch = epoch;
                let same_topic = old.as_ref().is_some_and(|o| o.topic == w.book.topic);
                if !(same_topic && keyed.contains(&w.book.id)) {
                    keys.extend(cache::keys_for(old.as_ref(), &w.book));
                    if same_topic {
                        keyed.insert(w.book.id);
                    }
                }
                w.order = a.order.map(|(order_id, at)| Order {
                    order_id,
                    id: w.book.id,
                    title: w.book.title.clone(),
                    price: w.book.price,
                    at,
                });
                let book = w.book.clone();
                writes.push(w);
                book
            })
        })
        .collect();
    keys.sort_unstable();
    keys.dedup();
    Decided { writes, keys, answers }
}

/// What the primary's writer does with the writes it is sent, given where the primary
/// stands ([`gate`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gate {
    /// Keep them: writes are not open yet. While the start compares this catalog with its
    /// replicas', the ones kept since `refuse_since` have waited long enough: refused.
    Closed { refuse_since: Option<Instant> },
    /// Keep them (etcd: a new primary waits out the old one's leases, or has not flushed
    /// memcached yet); the ones kept since `decide_since` have waited long enough: decided
    /// now, and so refused unless the leadership just became writable.
    Leading { decide_since: Option<Instant> },
    /// Batch them.
    Open,
}

/// How long a write may wait before it is decided: for the start's comparison with the
/// replicas (`compare`), then for a new primary's first writable moment (`lead`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Waits {
    pub compare: Duration,
    pub lead: Duration,
}

/// The writer's gate at `now`: `settled` and `open` are the start's two steps (the
/// comparison with the replicas, then writes opened: a lease from the start, then
/// memcached's history checked), `lead_pending` the leadership's (with etcd: it leads but
/// may not write yet), `opened` when the writer first saw writes open. A write waits for
/// the comparison at most `waits.compare`, for the opening as long as it takes, then for
/// the leadership at most `waits.lead` from when it came or writes opened, whichever is
/// later.
pub fn gate(
    settled: bool,
    open: bool,
    lead_pending: bool,
    opened: Option<Instant>,
    now: Instant,
    waits: Waits,
) -> Gate {
    if !settled {
        return Gate::Closed { refuse_since: now.checked_sub(waits.compare) };
    }
    if !open {
        return Gate::Closed { refuse_since: None };
    }
    if lead_pending {
        let since = now.checked_sub(waits.lead);
        return Gate::Leading { decide_since: since.filter(|since| opened.is_some_and(|o| o <= *since)) };
    }
    Gate::Open
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::Money;
    use crate::wire::{BookUpdate, NewBook, Purchase};

    fn catalog() -> Catalog {
        let book = |id, title: &str, topic: &str, quantity| Book {
            id,
            title: title.into(),
            topic: topic.into(),
            price: Money::from_cents(500),
            quantity,
        };
        Catalog::new(vec![book(1, "One", "rust", 1), book(2, "Two", "go", 5)], 10).unwrap()
    }

    fn purchase(id: u32, order: Option<&str>) -> Asked {
        Asked { id, write: Write::Purchase, order: order.map(|o| (o.to_string(), "2026-12-04T15:00:00Z".to_string())) }
    }

    fn quantities(decided: &Decided) -> Vec<Result<u32, Refusal>> {
        decided.answers.iter().map(|a| a.as_ref().map(|b| b.quantity).map_err(Clone::clone)).collect()
    }

    /// A batch as a table: what was asked, then the numbers taken and the answers.
    #[test]
    fn each_write_sees_the_batch_before_it_and_a_refusal_takes_no_number() {
        let decided = decide(
            &catalog(),
            &Journal::default(),
            3,
            vec![
                purchase(1, Some("o-1")),
                purchase(1, Some("o-2")),
                purchase(9, None),
                purchase(2, None),
                Asked {
                    id: 2,
                    write: Write::Update(BookUpdate { price: None, quantity: Some(9), quantity_delta: None }),
                    order: None,
                },
            ],
        );
        let out_of_stock = Refusal::OutOfStock { id: 1, title: "One".into() };
        assert_eq!(quantities(&decided), vec![Ok(0), Err(out_of_stock), Err(Refusal::NoSuchBook(9)), Ok(4), Ok(9)]);
        let numbered: Vec<(u64, u64, u32)> = decided.writes.iter().map(|w| (w.seq, w.epoch, w.book.id)).collect();
        assert_eq!(numbered, vec![(11, 3, 1), (12, 3, 2), (13, 3, 2)], "numbered after 10, no gaps, of epoch 3");
        let order = decided.writes[0].order.as_ref().expect("a purchase for an order carries it");
        assert_eq!((order.order_id.as_str(), order.id, order.title.as_str()), ("o-1", 1, "One"));
        assert_eq!(decided.writes[1].order, None, "no order, none journaled");
        let mut keys = decided.keys.clone();
        keys.dedup();
        assert_eq!(keys, decided.keys, "each key once");
        assert!(decided.keys.windows(2).all(|k| k[0] < k[1]), "sorted");
    }

    /// A batch names every key each of its writes changes, once, however often a book is
    /// written in it (the keys of a book written again are not made again).
    #[test]
    fn a_batch_names_each_key_its_writes_change_once() {
        let asked = vec![purchase(2, None), purchase(1, None), purchase(2, None), purchase(2, None)];
        let decided = decide(&catalog(), &Journal::default(), 1, asked);
        // A purchase leaves the topic as it was: the keys of the book as it is.
        let mut want: Vec<String> = [1, 2]
            .iter()
            .flat_map(|&id| {
                let book = catalog().book(id).cloned().unwrap();
                cache::keys_for(Some(&book), &book)
            })
            .collect();
        want.sort_unstable();
        want.dedup();
        assert_eq!(decided.keys, want);
        assert_eq!(decided.keys.len(), 5, "two infos, two searches, the books: {:?}", decided.keys);
    }

    /// A replica's answer to a push as a table: (last, acked, same log) -> verdict.
    #[test]
    fn an_ack_counts_only_for_the_whole_batch_in_this_log() {
        let cases = [
            ((20, 20, true), Took::Yes),
            // Another write at 20: a deposed primary's (etcd), or this primary's earlier
            // run's, pushed before a crash and read after the restart (static roles).
            ((20, 20, false), Took::No),
            // Ahead of this primary's last write: writes it never made (its log is not
            // this one's past the last write).
            ((20, 25, false), Took::No),
            ((20, 17, true), Took::Tail { after: 17 }),
            ((20, 17, false), Took::No),
            ((2000, 999, true), Took::No), // too far behind: it catches up by itself
            ((2000, 1000, true), Took::Tail { after: 1000 }),
            // The commit notice (nothing pushed) counts from a replica in this log.
            ((0, 20, true), Took::Yes),
            ((0, 20, false), Took::No),
        ];
        for ((last, acked, same_log), want) in cases {
            assert_eq!(took(last, acked, same_log), want, "{last} {acked} {same_log}");
        }
    }

    /// With static roles two logs diverged at a number where they hold other writes: another
    /// book or state, another epoch, another order; the same write read back is no divergence.
    #[test]
    fn another_write_at_the_same_number_is_a_divergence() {
        let book = catalog().book(1).cloned().expect("book 1");
        let write = Replicate { seq: 8, book: book.clone(), epoch: 0, order: None };
        assert!(!diverged(&write, &write.clone()));
        let other_stock = Replicate { book: Book { quantity: book.quantity + 1, ..book.clone() }, ..write.clone() };
        let other_book = Replicate { book: catalog().book(2).cloned().expect("book 2"), ..write.clone() };
        let other_epoch = Replicate { epoch: 1, ..write.clone() };
        for theirs in [other_stock, other_book, other_epoch] {
            assert!(diverged(&write, &theirs), "{theirs:?}");
        }
        let ordered = |id: &str| Replicate {
            order: Some(Order {
                order_id: id.into(),
                id: 1,
                title: book.title.clone(),
                price: book.price,
                at: "2026-12-05T00:00:00Z".into(),
            }),
            ..write.clone()
        };
        assert!(diverged(&ordered("o1"), &ordered("o2")));
        assert!(diverged(&write, &ordered("o1")));
        assert!(!diverged(&ordered("o1"), &ordered("o1")));
        // Writes of different numbers are not compared.
        assert!(!diverged(&write, &Replicate { seq: 9, epoch: 5, ..write.clone() }));
    }

    /// Logs that differ before a last write they hold alike: the write alone does not tell,
    /// their chains do; where either chain is not known, nothing is said by them.
    #[test]
    fn logs_that_differ_before_a_last_write_alike_have_other_chains() {
        let book = |id: u32, quantity: u32| Book { quantity, ..catalog().book(id).cloned().expect("a book") };
        let write = |seq: u64, book: Book| Replicate { seq, book, epoch: 0, order: None };
        let ours = [write(1, book(1, 7)), write(2, book(2, 22)), write(3, book(1, 55))];
        let theirs = [write(1, book(1, 7)), write(2, book(1, 11)), write(3, book(1, 55))];
        let chain = |log: &[Replicate]| log.iter().fold(0x1234_5678, |c, w| w.chain(c));
        assert!(!diverged(&ours[2], &theirs[2]), "the last writes are alike");
        assert_eq!(chains_diverged(Some(chain(&ours[..1])), Some(chain(&theirs[..1]))), Some(false));
        assert_eq!(chains_diverged(Some(chain(&ours)), Some(chain(&theirs))), Some(true));
        assert_eq!(chains_diverged(None, Some(chain(&theirs))), None);
        assert_eq!(chains_diverged(Some(chain(&ours)), None), None);
    }

    /// An order that took its copy already (journaled, or earlier in the batch) takes none
    /// again and is answered with the book as it is.
    #[test]
    fn an_order_takes_its_copy_once() {
        let mut journal = Journal::default();
        let order = Order {
            order_id: "o-old".into(),
            id: 2,
            title: "Two".into(),
            price: Money::from_cents(500),
            at: "2026-12-04T14:00:00Z".into(),
        };
        journal.push(Purchase { seq: 10, order });
        let asked = vec![purchase(2, Some("o-old")), purchase(2, Some("o-new")), purchase(2, Some("o-new"))];
        let decided = decide(&catalog(), &journal, 1, asked);
        assert_eq!(quantities(&decided), vec![Ok(5), Ok(4), Ok(4)]);
        assert_eq!(decided.writes.len(), 1, "one copy taken, for o-new");
    }

    /// A purchase refused (out of stock) and asked again for the same order in the same
    /// batch (an order server that asked again after a timeout) is refused again: it is not
    /// answered as made, with no copy taken and nothing journaled. The data simulator found
    /// it (an acknowledged purchase missing from the journal).
    #[test]
    fn a_refused_order_asked_again_in_the_batch_is_refused_again() {
        let asked = vec![purchase(1, Some("o-a")), purchase(1, Some("o-b")), purchase(1, Some("o-b"))];
        let decided = decide(&catalog(), &Journal::default(), 1, asked);
        let out_of_stock = Refusal::OutOfStock { id: 1, title: "One".into() };
        assert_eq!(quantities(&decided), vec![Ok(0), Err(out_of_stock.clone()), Err(out_of_stock)]);
        assert_eq!(decided.writes.len(), 1, "one copy taken, for o-a");
    }

    #[test]
    fn an_add_takes_the_next_id_and_a_bad_one_takes_nothing() {
        let new = |title: &str| NewBook {
            title: title.into(),
            topic: "rust".into(),
            price: Money::from_cents(100),
            quantity: 1,
        };
        let asked = vec![
            Asked { id: 0, write: Write::Add(new("Three")), order: None },
            Asked { id: 0, write: Write::Add(new("")), order: None },
            Asked { id: 0, write: Write::Add(new("Four")), order: None },
        ];
        let decided = decide(&catalog(), &Journal::default(), 0, asked);
        let ids: Vec<Result<u32, bool>> =
            decided.answers.iter().map(|a| a.as_ref().map(|b| b.id).map_err(|_| true)).collect();
        assert_eq!(ids, vec![Ok(3), Err(true), Ok(4)]);
        // A new book changes the list of topics (their counts) and the list of books.
        for key in [cache::TOPICS_KEY, cache::BOOKS_KEY] {
            assert!(decided.keys.iter().any(|k| k == key), "{key} in {:?}", decided.keys);
        }
    }

    /// The writer's gate, one case a row: the start's two steps before the leadership,
    /// the comparison's refusals, and the leadership's wait counted from when writes
    /// opened when that was later than the writes came.
    #[test]
    fn the_writers_gate() {
        let now = Instant::now() + Duration::from_secs(3600);
        let waits = Waits { compare: Duration::from_millis(5250), lead: Duration::from_secs(5) };
        let ago = |s: u64| Some(now - Duration::from_secs(s));
        let (compare, lead) = (Some(now - Duration::from_millis(5250)), Some(now - Duration::from_secs(5)));
        let table = [
            // settled, open, lead pending, opened: the gate
            ((false, false, false, None), Gate::Closed { refuse_since: compare }),
            ((false, false, true, None), Gate::Closed { refuse_since: compare }),
            ((true, false, false, None), Gate::Closed { refuse_since: None }),
            ((true, false, true, None), Gate::Closed { refuse_since: None }),
            ((true, true, false, ago(1)), Gate::Open),
            ((true, true, true, ago(0)), Gate::Leading { decide_since: None }),
            ((true, true, true, ago(1)), Gate::Leading { decide_since: None }),
            ((true, true, true, ago(60)), Gate::Leading { decide_since: lead }),
            // Opened exactly a wait ago: due (the wait is counted whole, not longer).
            ((true, true, true, lead), Gate::Leading { decide_since: lead }),
            // Not seen open yet (a turn before the writer noticed): nothing is due.
            ((true, true, true, None), Gate::Leading { decide_since: None }),
        ];
        for ((settled, open, pending, opened), want) in table {
            let got = gate(settled, open, pending, opened, now, waits);
            assert_eq!(got, want, "{settled} {open} {pending} {opened:?}");
        }
    }
}
