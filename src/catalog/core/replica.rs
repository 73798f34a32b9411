//! A replica's decisions on what it is pushed and on what its primary says is committed.
//!
//! A replica logs what its primary pushes, strictly in sequence, and shows a logged write
//! only once the primary says it is committed (CRAQ: a write is *dirty* until then, and a
//! read that meets a dirty book asks the primary, the *version query*). What to log, what
//! to refuse and up to where to show are decided here, over a [`Position`] read under the
//! writer lock; `replica.rs` appends, marks the books dirty and commits them as told.
//!
//! # Rules
//! - **A push of an older epoch is refused**, and so is a write of an epoch older than the
//!   last one logged: a deposed primary's write would take the number the new primary's
//!   needs. Both are [`Stale`] (409, counted).
//! - **Only the next writes are logged**, in order: a write already logged is skipped (a
//!   push repeated after a lost answer), and nothing after a gap is taken (the replica
//!   catches up from the primary's log instead). Every push carries each book's whole
//!   state, so a write applied twice changes nothing.
//! - **Nothing is shown before the primary shows it**: a replica shows its logged writes up
//!   to the commit point it was told ([`super::super::failover::commit::readable_upto`]),
//!   never past what it logged and never back.
//! - **A version answer counts only from the primary whose lease this replica holds** (its
//!   log is a prefix of that primary's) and only when this replica has logged every write
//!   the answer names; otherwise the read is refused ([`Unreadable`]) and asked elsewhere.
//! - **Data never flows backwards** ([`judge_tip`], static roles): before a replica takes
//!   another catalog's writes after its own, or that catalog whole over its own, it asks
//!   about its tip (its last write, with its log's chain there). Whatever the answer, a
//!   log that diverged keeps its writes: a divergence found is marked on the disk (when
//!   the log has a chain, so that an agreement can later remove the mark), a marked log
//!   takes nothing of that history, and only an answer that shows the same chain at the
//!   tip (the logs agree) removes the mark.

use super::super::failover::commit;
use super::super::refusal::{Stale, Unreadable};
use crate::wire::{Committed, Replicate};
use std::borrow::Borrow;

/// Where a replica's log stands, read under the writer lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    /// The last write logged here, pending ones included.
    pub logged: u64,
    /// The epoch of that write.
    pub last_epoch: u64,
    /// The last write shown to reads (the commit point reached here).
    pub readable: u64,
    /// The newest epoch this catalog has heard of.
    pub newest_epoch: u64,
}

/// Why a push is not taken at all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PushRefused {
    /// A write of a book with id 0, which no write makes: the push is malformed (400).
    NoBookZero {
        /// The write's number.
        seq: u64,
    },
    /// The push, or a write in it, is of an older epoch than this replica knows (409).
    Stale(Stale),
}

/// What to do with a push: the writes to log (in order, the next ones after
/// [`Position::logged`]) and the commit point to show up to afterwards. The writes are the
/// push's own (`W`: a write, or a reference to one), taken out of it rather than copied.
#[derive(Debug, PartialEq, Eq)]
pub struct Take<W> {
    /// The writes to log now, in order.
    pub log: Vec<W>,
    /// The last write to show once they are logged (never below the readable one).
    pub show_upto: u64,
}

/// Decides a push from a primary of `epoch`, whose commit point is `committed` (None:
/// nothing new is committed), to a replica at `at`.
pub fn take<W: Borrow<Replicate>>(
    at: Position,
    epoch: u64,
    committed: Option<u64>,
    writes: Vec<W>,
) -> Result<Take<W>, PushRefused> {
    if let Some(w) = writes.iter().map(Borrow::borrow).find(|w| w.book.id == 0) {
        return Err(PushRefused::NoBookZero { seq: w.seq });
    }
    if epoch < at.newest_epoch {
        return Err(PushRefused::Stale(Stale::Push { epoch, newest: at.newest_epoch }));
    }
    if let Some(w) = writes.iter().map(Borrow::borrow).find(|w| w.seq > at.logged && w.epoch < at.last_epoch) {
        return Err(PushRefused::Stale(Stale::Write { seq: w.seq, epoch: w.epoch, last: at.last_epoch }));
    }
    let mut next = at.logged;
    let log: Vec<W> = writes
        .into_iter()
        .filter(|w| {
            let take = w.borrow().seq == next + 1;
            next += u64::from(take);
            take
        })
        .collect();
    Ok(Take { log, show_upto: commit::readable_upto(at.readable, next, committed.unwrap_or(0)) })
}

/// Decides a version answer: the primary says `committed`; this replica holds a lease of
/// `lease_epoch` (None: leases are off) and is at `at`. Returns the write to show up to
/// before the read is answered.
pub fn version_answer(at: Position, committed: &Committed, lease_epoch: Option<u64>) -> Result<u64, Unreadable> {
    if let Some(leased) = lease_epoch.filter(|leased| *leased != committed.epoch) {
        return Err(Unreadable::OtherEpoch { primary: committed.epoch, leased });
    }
    if committed.seq > at.logged {
        return Err(Unreadable::Behind { primary: committed.seq, logged: at.logged });
    }
    Ok(commit::readable_upto(at.readable, at.logged, committed.seq))
}

/// What a catalog answered a question about this replica's tip (`GET /internal/log` after
/// its last write, with its chain and fingerprint).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TipAnswer {
    /// The writes after the tip (perhaps none), with the answering log's chain at the tip
    /// when it knows one.
    Page {
        /// That chain.
        chain: Option<u32>,
    },
    /// Its log differs up to the tip, or it is marked diverged from this history (409).
    Diverged,
    /// It no longer keeps the tip's write (410): nothing tells whether the logs agree.
    Unkept,
}

/// What a replica does with a [`TipAnswer`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TipVerdict {
    /// The logs diverged: take nothing, and mark it on the disk when `mark`.
    Diverged {
        /// Whether to mark (a replica's log with a chain; a settling primary never marks).
        mark: bool,
    },
    /// Marked diverged from this history, and nothing shows the logs agree now: take
    /// nothing of it (neither writes after this log's nor a whole copy).
    Refuse,
    /// Take what the answer offers: the page's writes, or a whole copy when the write is
    /// no longer kept. With `agreed`, the answer showed this log's chain at the tip: the
    /// logs agree up to there, and a divergence mark goes first.
    Take {
        /// The logs were seen to agree.
        agreed: bool,
    },
}

/// Judges `answer` for a catalog whose log's chain at its tip is `chain` (None: unknown,
/// a log from before chains, or roles from etcd), which is marked diverged from the
/// answering history when `marked`, and a replica (not a primary settling) when `replica`.
pub fn judge_tip(chain: Option<u32>, answer: TipAnswer, marked: bool, replica: bool) -> TipVerdict {
    match answer {
        TipAnswer::Diverged => TipVerdict::Diverged { mark: replica && chain.is_some() },
        TipAnswer::Page { chain: theirs } if chain.is_some() && theirs == chain => TipVerdict::Take { agreed: true },
        _ if marked => TipVerdict::Refuse,
        _ => TipVerdict::Take { agreed: false },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::Money;
    use crate::wire::Book;

    fn write(seq: u64, epoch: u64, id: u32) -> Replicate {
        let book = Book { id, title: format!("t{id}"), topic: "x".into(), price: Money::from_cents(100), quantity: 1 };
        Replicate { seq, epoch, book, order: None }
    }

    fn at(logged: u64, last_epoch: u64, readable: u64, newest_epoch: u64) -> Position {
        Position { logged, last_epoch, readable, newest_epoch }
    }

    fn seqs(take: &Take<&Replicate>) -> Vec<u64> {
        take.log.iter().map(|w| w.seq).collect()
    }

    /// Pushes as a table: (position, push epoch, commit point, writes as (seq, epoch)) ->
    /// the writes logged and the write shown up to.
    #[test]
    fn a_push_logs_only_the_next_writes_and_shows_only_what_is_committed() {
        type Case = (Position, u64, Option<u64>, &'static [(u64, u64)], &'static [u64], u64);
        let cases: [Case; 9] = [
            // The next writes, nothing committed yet: logged, pending.
            (at(4, 1, 4, 1), 1, None, &[(5, 1), (6, 1)], &[5, 6], 4),
            // Committed up to 5 in the same push: 5 shows, 6 stays pending.
            (at(4, 1, 4, 1), 1, Some(5), &[(5, 1), (6, 1)], &[5, 6], 5),
            // A repeated push (its answer was lost): nothing twice.
            (at(6, 1, 4, 1), 1, Some(6), &[(5, 1), (6, 1)], &[], 6),
            // Half repeated: only the new tail.
            (at(5, 1, 5, 1), 1, None, &[(5, 1), (6, 1), (7, 1)], &[6, 7], 5),
            // A gap: nothing after it (the replica catches up from the log instead).
            (at(4, 1, 4, 1), 1, Some(9), &[(6, 1), (7, 1)], &[], 4),
            // The commit notice: an empty push with the commit point.
            (at(6, 1, 4, 1), 1, Some(6), &[], &[], 6),
            // A commit point past what it logged shows only what it has.
            (at(4, 1, 3, 1), 1, Some(9), &[(5, 1)], &[5], 5),
            // An older commit point never hides what is shown.
            (at(6, 1, 6, 1), 1, Some(3), &[], &[], 6),
            // A new primary's first write, of a newer epoch, after the old one's.
            (at(4, 1, 4, 1), 2, Some(5), &[(5, 2)], &[5], 5),
        ];
        for (position, epoch, committed, writes, logged, shown) in cases {
            let writes: Vec<Replicate> = writes.iter().map(|&(s, e)| write(s, e, 1)).collect();
            let took = take(position, epoch, committed, writes.iter().collect()).unwrap();
            assert_eq!((seqs(&took), took.show_upto), (logged.to_vec(), shown), "{position:?} {committed:?}");
            assert!(took.show_upto >= position.readable, "never back");
        }
    }

    #[test]
    fn stale_pushes_and_writes_are_refused_whole() {
        let refused = |position, epoch, writes: &[Replicate]| take(position, epoch, None, writes.to_vec()).err();
        let stale = refused(at(6, 2, 6, 3), 2, &[write(7, 2, 1)]);
        assert_eq!(stale, Some(PushRefused::Stale(Stale::Push { epoch: 2, newest: 3 })), "a deposed primary's push");
        // A write of epoch 1 after one of epoch 2 is logged: refused, the whole push.
        let older = refused(at(6, 2, 6, 2), 2, &[write(7, 2, 1), write(8, 1, 1)]);
        assert_eq!(older, Some(PushRefused::Stale(Stale::Write { seq: 8, epoch: 1, last: 2 })));
        // An older write already logged (a repeated push) is no reason to refuse.
        assert_eq!(refused(at(6, 2, 6, 2), 2, &[write(5, 1, 1), write(7, 2, 1)]), None);
        let zero = refused(at(6, 2, 6, 3), 3, &[write(7, 3, 1), write(8, 3, 0)]);
        assert_eq!(zero, Some(PushRefused::NoBookZero { seq: 8 }), "no book has id 0");
    }

    #[test]
    fn a_version_answer_counts_only_from_the_leasing_primary_and_within_the_log() {
        let position = at(8, 2, 5, 2);
        let answer = |seq, epoch| Committed { seq, epoch };
        let cases = [
            (answer(7, 2), Some(2), Ok(7)),
            (answer(8, 2), None, Ok(8)),
            (answer(4, 2), Some(2), Ok(5)), // never back
            (answer(7, 3), Some(2), Err(Unreadable::OtherEpoch { primary: 3, leased: 2 })),
            (answer(9, 2), Some(2), Err(Unreadable::Behind { primary: 9, logged: 8 })),
            (answer(9, 3), None, Err(Unreadable::Behind { primary: 9, logged: 8 })),
        ];
        for (committed, lease, want) in cases {
            assert_eq!(version_answer(position, &committed, lease), want, "{committed:?} {lease:?}");
        }
    }

    /// The divergence rules as a table: (this log's chain, the answer, marked, a replica)
    /// -> the verdict. A divergence is marked only by a replica whose log has a chain; a
    /// mark refuses everything but an answer showing the same chain; without a chain no
    /// answer is an agreement.
    #[test]
    fn a_diverged_log_keeps_its_writes_whatever_the_answer() {
        use TipAnswer::{Diverged, Page, Unkept};
        use TipVerdict::{Refuse, Take};
        let (ours, other) = (Some(0xc0ffee), Some(0xbad));
        let cases: &[(Option<u32>, TipAnswer, bool, bool, TipVerdict)] = &[
            // Found diverged: a replica with a chain marks it, a settling primary or a
            // chainless log does not; either way nothing is taken.
            (ours, Diverged, false, true, TipVerdict::Diverged { mark: true }),
            (ours, Diverged, true, true, TipVerdict::Diverged { mark: true }),
            (ours, Diverged, false, false, TipVerdict::Diverged { mark: false }),
            (None, Diverged, false, true, TipVerdict::Diverged { mark: false }),
            // The same chain at the tip: the logs agree, a mark goes.
            (ours, Page { chain: ours }, false, true, Take { agreed: true }),
            (ours, Page { chain: ours }, true, true, Take { agreed: true }),
            // A page without that proof: taken when unmarked, refused when marked.
            (ours, Page { chain: None }, false, true, Take { agreed: false }),
            (ours, Page { chain: None }, true, true, Refuse),
            (ours, Page { chain: other }, true, true, Refuse),
            (None, Page { chain: None }, false, true, Take { agreed: false }),
            (None, Page { chain: None }, true, true, Refuse),
            // No longer kept: a whole copy, unless marked.
            (ours, Unkept, false, true, Take { agreed: false }),
            (ours, Unkept, true, true, Refuse),
            (ours, Unkept, true, false, Refuse),
        ];
        for (chain, answer, marked, replica, want) in cases {
            assert_eq!(judge_tip(*chain, *answer, *marked, *replica), *want, "{chain:?} {answer:?} marked {marked}");
        }
    }
}
