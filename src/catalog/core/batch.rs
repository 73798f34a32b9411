//! The primary's group commit after its first decision ([`super::primary::decide`]): the
//! stages a batch goes through until its writes are answered, as a value that is told what
//! happened and says what to do next (design step 5, `docs/design/catalog-core.md` §2.7).
//!
//! The writer performs each [`Do`] and reports its outcome ([`Done`]); [`Batch::next`]
//! returns what follows. Nothing here waits, reads a clock or knows a socket: the time a
//! lost replica's lease still runs is computed from the `now` the writer reports, and the
//! writer sleeps it. Today the writer runs a batch to its end under the writer lock, one
//! batch at a time; the owner thread of step 6 will park the batch between stages instead.
//!
//! # The order (the store's guarantees rest on it)
//! 1. **Append** the decided writes and fsync once. A failure answers every write of the
//!    batch with the cause ([`Do::Refuse`]): nothing of it was kept, nothing is readable.
//! 2. **Fence and push**: the front ends' near caches are told and memcached's markers set
//!    while the batch goes to every replica in sync. A fence ahead of the commit only makes
//!    reads miss meanwhile.
//! 3. **Wait out** the lease of every replica that missed the batch (it may still answer
//!    reads of the old value until then), when leases are on.
//! 4. **Make safe**: with etcd, the members of the in-sync record that did not take the
//!    batch leave it, and the leadership must still hold. If not, the batch **gives up**:
//!    this catalog steps down and the writes' outcome is unknown (answered so).
//! 5. **Confirm**: every front end with a lease applied the fence, or its lease ran out
//!    (skipped when the batch gave up).
//! 6. **Show**: the batch becomes readable here, the moment it takes effect (also after
//!    giving up, as the code before this module did: the catalog has stepped down and reads
//!    nothing until it caught up with the next primary).
//! 7. **Check** that the leadership still holds (4 again: no replica can have missed
//!    anything since), or give up.
//! 8. **Answer**: every write acknowledged, or, when the batch gave up, answered that its
//!    outcome is unknown. Only here does any client learn of the batch.
//! 9. **Notice**: the commit notice (an empty push with the commit point), so replicas show
//!    the batch without asking; it goes through 3 and 4 again before the next batch (a
//!    replica that missed it is out of sync like one that missed the push). Skipped when
//!    the batch gave up, and when another batch already waits: that batch's push carries
//!    the commit point, a moment later. If that batch pushes nothing after all (every
//!    write refused, or its append failed), the writer sends the notice it owes as a batch
//!    of its own ([`Batch::notice_only`]: 9 alone).
//!
//! A replica that has not heard the commit point when a client reads the batch there holds
//! its books dirty and asks the primary (CRAQ), which shows the batch already: the notice
//! spares replicas those questions, it guards nothing. So it follows the answer: a client
//! waits for no round trip of it, and under load no batch does (design notes in
//! `docs/performance.md`, issue 25).

use std::time::{Duration, Instant};

/// What the writer does next for a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Do {
    /// Append the decided writes to the log with one fsync.
    Append,
    /// Fence the caches (near caches told, memcached markers) and push the batch to every
    /// replica in sync, in parallel.
    FenceAndPush,
    /// Sleep this long: a replica that missed the batch may answer reads until its lease
    /// ends.
    WaitOut(Duration),
    /// With etcd, take the replicas that did not take the batch out of the in-sync record,
    /// then check that the leadership still holds (static roles: nothing to do).
    MakeSafe,
    /// Step down: the batch cannot be acknowledged (why).
    GiveUp(String),
    /// Wait until every front end with a lease applied the fence, or its lease ran out.
    Confirm,
    /// Make the batch readable here, and say whether another batch waits.
    Show,
    /// Answer every write now: acknowledged (`unknown` is None), or that its outcome is
    /// unknown, and why; the batch is in the log, so the files are checkpointed if due.
    Answer {
        /// Why the outcome is unknown, when the batch gave up.
        unknown: Option<String>,
    },
    /// The append failed: answer every write with the cause now.
    Refuse,
    /// Send the commit notice to every replica in sync (the batch is answered).
    Notice,
    /// The batch is over: the writer takes the next.
    End,
}

/// What happened when the writer did what the batch asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Done {
    /// The append: made durable, or not.
    Appended(bool),
    /// A push round (the batch's, or the commit notice): the latest time until which a
    /// replica that missed it may hold a lease (None: none missed it, or none held one),
    /// and the time now.
    Pushed {
        /// The latest lease end among the replicas that missed it.
        lost_until: Option<Instant>,
        /// When the round ended.
        now: Instant,
    },
    /// The wait for a lost lease is over.
    WaitedOut,
    /// The in-sync record and the leadership: fine, or why not.
    Safe(Result<(), String>),
    /// The catalog stepped down.
    GaveUp,
    /// The front ends confirmed the fence (or their leases ran out).
    Confirmed,
    /// The batch is readable here.
    Shown {
        /// Whether another batch waits for this one: its push carries the commit point, so
        /// this batch sends no notice of its own.
        next_waits: bool,
    },
    /// Every write was answered (or refused).
    Answered,
}

/// Which push round a batch is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Round {
    /// The batch's own push.
    Batch,
    /// The commit notice.
    Notice,
}

/// Where a batch is.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Stage {
    Appending,
    Pushing(Round),
    WaitingOut(Round),
    MakingSafe(Round),
    GivingUp {
        why: String,
        shown: bool,
    },
    Confirming,
    Showing,
    /// The leadership checked again before the answer; then the notice, or not.
    Checking {
        notice: bool,
    },
    Answering {
        notice: bool,
    },
    Over,
}

/// A batch decided and numbered, on its way to its answers (see the module doc).
#[derive(Clone, Debug)]
pub struct Batch {
    stage: Stage,
    /// Whether the replicas hold read leases (a lost one is waited out).
    leases: bool,
    /// Why the batch gave up, once it has.
    unknown: Option<String>,
    /// Whether its writes were answered.
    answered: bool,
}

impl Batch {
    /// A batch whose writes were decided; `leases` says whether replicas hold read leases.
    /// Returns it and its first step ([`Do::Append`]).
    pub fn start(leases: bool) -> (Batch, Do) {
        (Batch { stage: Stage::Appending, leases, unknown: None, answered: false }, Do::Append)
    }

    /// The commit notice a batch left to the next one, which pushed nothing: a batch of no
    /// writes whose only stage is the notice (and its 3 and 4). Returns it and its first
    /// step ([`Do::Notice`]).
    pub fn notice_only(leases: bool) -> (Batch, Do) {
        (Batch { stage: Stage::Pushing(Round::Notice), leases, unknown: None, answered: true }, Do::Notice)
    }

    /// Whether the batch is over.
    #[cfg(test)]
    fn is_over(&self) -> bool {
        self.stage == Stage::Over
    }

    /// What to do after `done`. A report that does not fit the stage (a bug of the writer)
    /// panics: the writer's order is what the store's guarantees rest on.
    pub fn next(&mut self, done: Done) -> Do {
        let (stage, step) = match (std::mem::replace(&mut self.stage, Stage::Over), done) {
            #[cfg(test)]
            (Stage::Appending, Done::Appended(false)) if super::planted::on(super::planted::Planted::AckUnlogged) => {
                (Stage::Pushing(Round::Batch), Do::FenceAndPush)
            }
            (Stage::Appending, Done::Appended(false)) => (Stage::Answering { notice: false }, Do::Refuse),
            (Stage::Appending, Done::Appended(true)) => (Stage::Pushing(Round::Batch), Do::FenceAndPush),
            (Stage::Pushing(round), Done::Pushed { lost_until, now }) => {
                #[cfg(test)]
                let lost_until = lost_until.filter(|_| !super::planted::on(super::planted::Planted::AckBeforeLogged));
                match lost_until.filter(|_| self.leases).map(|until| until.saturating_duration_since(now)) {
                    Some(wait) if !wait.is_zero() => (Stage::WaitingOut(round), Do::WaitOut(wait)),
                    _ => (Stage::MakingSafe(round), Do::MakeSafe),
                }
            }
            (Stage::WaitingOut(round), Done::WaitedOut) => (Stage::MakingSafe(round), Do::MakeSafe),
            (Stage::MakingSafe(Round::Batch), Done::Safe(Ok(()))) if fence_after_commit() => (Stage::Showing, Do::Show),
            (Stage::MakingSafe(Round::Batch), Done::Safe(Ok(()))) => (Stage::Confirming, Do::Confirm),
            (Stage::MakingSafe(Round::Notice), Done::Safe(Ok(()))) => (Stage::Over, Do::End),
            (Stage::MakingSafe(round), Done::Safe(Err(why))) => {
                (Stage::GivingUp { why: why.clone(), shown: round == Round::Notice }, Do::GiveUp(why))
            }
            (Stage::Checking { .. }, Done::Safe(Err(why))) => {
                (Stage::GivingUp { why: why.clone(), shown: true }, Do::GiveUp(why))
            }
            (Stage::GivingUp { why, shown }, Done::GaveUp) => {
                self.unknown = Some(why);
                match (shown, self.answered) {
                    // The batch gave up before it was readable here: it becomes readable
                    // anyway (see the module doc), and gets no commit notice.
                    (false, _) => (Stage::Showing, Do::Show),
                    (true, false) => (Stage::Answering { notice: false }, Do::Answer { unknown: self.unknown.clone() }),
                    // Gave up after its notice: acknowledged already, safe then.
                    (true, true) => (Stage::Over, Do::End),
                }
            }
            (Stage::Confirming, Done::Confirmed) => (Stage::Showing, Do::Show),
            (Stage::Showing, Done::Shown { next_waits }) => match &self.unknown {
                None => (Stage::Checking { notice: !next_waits }, Do::MakeSafe),
                Some(why) => (Stage::Answering { notice: false }, Do::Answer { unknown: Some(why.clone()) }),
            },
            (Stage::Checking { notice }, Done::Safe(Ok(()))) => {
                (Stage::Answering { notice }, Do::Answer { unknown: None })
            }
            (Stage::Answering { notice }, Done::Answered) => {
                self.answered = true;
                match notice {
                    true => (Stage::Pushing(Round::Notice), Do::Notice),
                    false => (Stage::Over, Do::End),
                }
            }
            (stage, done) => panic!("a batch at {stage:?} was told {done:?}"),
        };
        self.stage = stage;
        step
    }
}

/// Whether the planted `FenceAfterCommit` skips the wait for the near caches' fence (never
/// outside the simulator).
fn fence_after_commit() -> bool {
    #[cfg(test)]
    return super::planted::on(super::planted::Planted::FenceAfterCommit);
    #[cfg(not(test))]
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a batch from its start, feeding `reports` in turn; returns every step it asked
    /// for, and checks that it is over exactly when the reports end.
    fn run(leases: bool, reports: Vec<Done>) -> Vec<Do> {
        let (mut batch, first) = Batch::start(leases);
        let mut steps = vec![first];
        for done in reports {
            assert!(!batch.is_over(), "a report after the end: {done:?}");
            steps.push(batch.next(done));
        }
        assert!(batch.is_over(), "the batch did not end: {steps:?}");
        assert_eq!(steps.last(), Some(&Do::End));
        steps
    }

    fn pushed(lost_ms: Option<u64>) -> Done {
        let now = Instant::now();
        Done::Pushed { lost_until: lost_ms.map(|ms| now + Duration::from_millis(ms)), now }
    }

    /// The reports of a batch every replica took, up to where it is answered (the
    /// leadership checked again), `next_waits` said when it is shown, then `rest`.
    fn answered_then(next_waits: bool, rest: Vec<Done>) -> Vec<Done> {
        let mut reports = vec![
            Done::Appended(true),
            pushed(None),
            Done::Safe(Ok(())),
            Done::Confirmed,
            Done::Shown { next_waits },
            Done::Safe(Ok(())),
            Done::Answered,
        ];
        reports.extend(rest);
        reports
    }

    /// Every replica took the batch: acknowledged after the fence is confirmed, the batch
    /// is readable here and the leadership checked again, never before; the commit notice
    /// follows the answer.
    #[test]
    fn a_batch_every_replica_took_is_answered_then_noticed() {
        let steps = run(true, answered_then(false, vec![pushed(None), Done::Safe(Ok(()))]));
        use Do::*;
        assert_eq!(
            steps,
            vec![
                Append,
                FenceAndPush,
                MakeSafe,
                Confirm,
                Show,
                MakeSafe,
                Answer { unknown: None },
                Notice,
                MakeSafe,
                End
            ]
        );
    }

    /// Another batch waits when this one is readable: its push will carry the commit
    /// point, so no notice is sent.
    #[test]
    fn a_batch_another_waits_for_sends_no_notice() {
        let steps = run(true, answered_then(true, vec![]));
        use Do::*;
        assert_eq!(steps, vec![Append, FenceAndPush, MakeSafe, Confirm, Show, MakeSafe, Answer { unknown: None }, End]);
    }

    /// The append failed: every write is refused with the cause, nothing else happens.
    #[test]
    fn a_failed_append_refuses_the_batch_and_does_nothing_else() {
        assert_eq!(run(true, vec![Done::Appended(false), Done::Answered]), vec![Do::Append, Do::Refuse, Do::End]);
    }

    /// A replica that missed the push (or the notice) holds its lease for a while: the batch
    /// (the next one, for the notice) waits it out before it may count as safe; with leases
    /// off, or a lease already over, there is nothing to wait for.
    #[test]
    fn a_lost_replicas_lease_is_waited_out_in_both_rounds() {
        let mut reports = vec![Done::Appended(true), pushed(Some(300)), Done::WaitedOut];
        reports.extend(answered_then(false, vec![pushed(Some(40)), Done::WaitedOut, Done::Safe(Ok(()))]).split_off(2));
        let steps = run(true, reports);
        assert_eq!(steps[2], Do::WaitOut(Duration::from_millis(300)));
        assert_eq!(steps[6..9], [Do::MakeSafe, Do::Answer { unknown: None }, Do::Notice]);
        assert_eq!(steps[9], Do::WaitOut(Duration::from_millis(40)));
        // Leases off: a lost replica answers no read, nothing to wait for.
        let (mut batch, _) = Batch::start(false);
        batch.next(Done::Appended(true));
        assert_eq!(batch.next(pushed(Some(300))), Do::MakeSafe);
        // A lease that already ended.
        let (mut batch, _) = Batch::start(true);
        batch.next(Done::Appended(true));
        let now = Instant::now();
        let ended = now.checked_sub(Duration::from_millis(5)).unwrap_or(now);
        assert_eq!(batch.next(Done::Pushed { lost_until: Some(ended), now }), Do::MakeSafe);
    }

    /// The in-sync record could not be changed (or the leadership lapsed) after the push:
    /// the catalog steps down, no front end is waited for, the batch still becomes readable
    /// here (it reads nothing until caught up), no notice is sent, and every write is
    /// answered that its outcome is unknown.
    #[test]
    fn a_batch_that_cannot_be_made_safe_gives_up_and_says_the_outcome_is_unknown() {
        let why = "the in-sync record was not changed".to_string();
        let steps = run(
            true,
            vec![
                Done::Appended(true),
                pushed(None),
                Done::Safe(Err(why.clone())),
                Done::GaveUp,
                Done::Shown { next_waits: false },
                Done::Answered,
            ],
        );
        use Do::*;
        assert_eq!(
            steps,
            vec![Append, FenceAndPush, MakeSafe, GiveUp(why.clone()), Show, Answer { unknown: Some(why) }, End]
        );
    }

    /// The leadership lapsed by the time the batch is readable here: it gives up and
    /// answers that the outcome is unknown, with no notice.
    #[test]
    fn a_batch_whose_leadership_lapsed_before_the_answer_gives_up() {
        let why = "leadership lapsed".to_string();
        let mut reports = answered_then(true, vec![]);
        reports.truncate(5);
        reports.extend([Done::Safe(Err(why.clone())), Done::GaveUp, Done::Answered]);
        let steps = run(true, reports);
        use Do::*;
        assert_eq!(steps[5..], [MakeSafe, GiveUp(why.clone()), Answer { unknown: Some(why) }, End]);
    }

    /// A notice that cannot be made safe (a replica that missed it cannot leave the
    /// in-sync record): the catalog steps down; the batch was answered already, safe then.
    #[test]
    fn a_notice_that_cannot_be_made_safe_gives_up_after_the_answer() {
        let why = "leadership lapsed".to_string();
        let steps = run(
            true,
            answered_then(false, vec![pushed(Some(10)), Done::WaitedOut, Done::Safe(Err(why.clone())), Done::GaveUp]),
        );
        use Do::*;
        assert_eq!(
            steps[6..],
            [Answer { unknown: None }, Notice, WaitOut(Duration::from_millis(10)), MakeSafe, GiveUp(why), End]
        );
    }

    /// A notice owed by the batch before: sent, a lost replica's lease waited out, made
    /// safe, over; a failure to make it safe steps down, with nothing left to answer.
    #[test]
    fn a_notice_owed_is_a_batch_of_its_own() {
        let (mut batch, first) = Batch::notice_only(true);
        assert_eq!(first, Do::Notice);
        assert_eq!(batch.next(pushed(Some(20))), Do::WaitOut(Duration::from_millis(20)));
        assert_eq!(batch.next(Done::WaitedOut), Do::MakeSafe);
        assert_eq!(batch.next(Done::Safe(Ok(()))), Do::End);
        assert!(batch.is_over());
        let (mut batch, _) = Batch::notice_only(false);
        assert_eq!(batch.next(pushed(Some(20))), Do::MakeSafe);
        assert_eq!(batch.next(Done::Safe(Err("lapsed".into()))), Do::GiveUp("lapsed".into()));
        assert_eq!(batch.next(Done::GaveUp), Do::End);
        assert!(batch.is_over());
    }

    /// A report out of order is a bug of the writer, never a guess.
    #[test]
    #[should_panic(expected = "was told")]
    fn a_report_out_of_order_panics() {
        let (mut batch, _) = Batch::start(true);
        batch.next(Done::Shown { next_waits: false });
    }
}
