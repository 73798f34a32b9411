//! Batches that form themselves under load: a leader/follower group, as in a group commit.
//!
//! Callers hand [`Group::run`] one item each. A caller that finds fewer than the group's
//! *flights* batches in flight becomes a leader: it takes every item waiting (up to the
//! batch's most), its own among them, runs the batch with no lock held, hands each member
//! its own answer and wakes them. A caller that arrives while the flights are all taken
//! waits, and joins the next batch that a leader takes. So a lone caller runs its item at
//! once, alone (no fixed wait, no linger: nothing is slower than one call per item), and
//! under load a batch holds everything that arrived while the one before it was in flight:
//! its size follows the load by itself.
//!
//! The group does no I/O and knows nothing of what a batch is: the front end uses it to
//! send purchases to an order server, the order server ([`crate::order`]) to take copies
//! from the catalog and to push orders to its peers. Its tests below run it with plain
//! closures and threads.
//!
//! **Architecture invariant: every item is run exactly once, in exactly one batch, and its
//! caller gets that batch's answer for it.** A batch that panics answers its members
//! `None` (the caller says so as an error), and the group goes on: its leader still leads
//! what waits for it, and only then unwinds, and only if the batch held its own item. A
//! caller that leads for its own item leads a batch that holds it (with the oldest
//! others), so a caller busy leading never has an item of its own waiting, and waking the
//! caller of the oldest item waiting always finds one free to lead.
//!
//! A group may bound the items waiting for a leader ([`Group::with_queue`]): one more is
//! given back at once by [`Group::try_run`], for its caller to refuse (503), so that a
//! surge beyond what the batches carry in time is shed, not queued.
//!
//! **A caller need not wait** ([`Group::try_later`]): it leaves its item with what to do
//! with the answer (the front end: write the purchase's answer to its client's connection,
//! `http::later`) and goes on with other work; the batch that holds the item does it when
//! it ends. No thread sleeps for such an item, so none can be woken to lead it: whoever
//! finds a flight free while the oldest item waiting is one of these leads a batch itself
//! (the caller that leaves one, and the leader of a batch that just ended, before it goes).

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::thread::Thread;

/// A leader/follower group of callers whose items run in batches (see the module doc).
///
/// Each caller sleeps on its own (`thread::park`) and is woken only for what concerns it:
/// its answer is in, or it is the oldest waiting when a flight frees and may lead. A
/// condition variable shared by all would wake every waiting caller at each batch's end
/// (a herd of hundreds under load, most going back to sleep at once).
pub struct Group<T, R> {
    /// Most items in one batch.
    most: usize,
    /// Most batches in flight at once.
    flights: usize,
    /// Most items waiting for a leader: one more is refused at once ([`Group::try_run`]).
    queue: usize,
    /// The items waiting, the batches in flight and the answers not yet picked up. Held
    /// only to move items and answers, never while a batch runs.
    state: Mutex<State<T, R>>,
}

/// What is done with an answer of [`Group::try_later`] (it gets `None` when the batch
/// panicked or answered too few). Run by the thread that led the batch, as the batch ends.
pub type Then<R> = Box<dyn FnOnce(Option<R>) + Send>;

struct State<T, R> {
    /// The next ticket (each item gets one).
    next: u64,
    /// Items waiting for a leader, oldest first, with their tickets and their callers.
    waiting: VecDeque<Waiting<T, R>>,
    /// Batches running now.
    in_flight: usize,
    /// Answers of batches that ended, by ticket, until their callers take them (None: the
    /// batch panicked).
    answers: HashMap<u64, Option<R>>,
}

/// An item waiting for a leader.
struct Waiting<T, R> {
    ticket: u64,
    item: T,
    caller: Caller<R>,
}

/// Who gets an item's answer.
enum Caller<R> {
    /// A caller asleep until its answer is in, or until it is the oldest waiting when a
    /// flight frees (then it leads).
    Waits(Thread),
    /// A caller that went on ([`Group::try_later`]): its answer is handed to this.
    Later(Then<R>),
}

/// A batch taken from the waiting items, for the caller that leads it.
struct Taken<T, R> {
    items: Vec<T>,
    members: Vec<(u64, Caller<R>)>,
    /// A caller to wake as well: a flight is still free and it is the oldest waiting.
    also: Option<Thread>,
}

impl<T, R> Group<T, R> {
    /// A group whose batches hold at most `most` items, at most `flights` of them in flight.
    pub fn new(most: usize, flights: usize) -> Group<T, R> {
        assert!(most > 0 && flights > 0, "a batch holds an item and one may fly");
        Group {
            most,
            flights,
            queue: usize::MAX,
            state: Mutex::new(State { next: 0, waiting: VecDeque::new(), in_flight: 0, answers: HashMap::new() }),
        }
    }

    /// The same group, with at most `queue` items waiting for a leader ([`Group::try_run`]).
    pub fn with_queue(self, queue: usize) -> Group<T, R> {
        Group { queue, ..self }
    }

    fn state(&self) -> MutexGuard<'_, State<T, R>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `item` in a batch and returns its answer: `batch` gets the batch's items in the
    /// order they arrived and returns one answer per item, in the same order. Whichever
    /// caller leads passes its own `batch`; all callers of a group must pass the same one in
    /// effect. None when the batch that held the item panicked (or answered too few).
    pub fn run(&self, item: T, batch: impl Fn(Vec<T>) -> Vec<R>) -> Option<R> {
        match self.try_run(item, batch) {
            Ok(answer) => answer,
            Err(_) => unreachable!("a group without a queue bound refuses nothing"),
        }
    }

    /// [`Group::run`], but when as many items wait for a leader as the group's queue allows
    /// ([`Group::with_queue`]), the item is given back at once, unrun (the caller refuses
    /// it: the load is more than the batches can carry in time).
    ///
    /// A caller whose answer is in may first lead batches of items whose callers went on
    /// ([`Group::try_later`]), as long as the oldest waiting is one of them and a flight
    /// is free: nobody else is there to lead them. (So its own answer may wait a batch or
    /// more; under load an arrival usually takes the free flight first.)
    pub fn try_run(&self, item: T, batch: impl Fn(Vec<T>) -> Vec<R>) -> Result<Option<R>, T> {
        let mut state = self.state();
        if state.waiting.len() >= self.queue {
            return Err(item);
        }
        let ticket = state.enqueue(item, Caller::Waits(std::thread::current()));
        let mut mine = None;
        // The panic of a batch that held this caller's item, unwound once nothing waits
        // for this caller to lead it.
        let mut panicked = None;
        loop {
            if mine.is_none() {
                mine = state.answers.remove(&ticket);
            }
            // Only a caller whose item still waits leads for itself, and its batch holds
            // its item and the oldest others: so a caller busy leading never has an item
            // waiting, and the caller of the oldest item waiting can always be woken to
            // lead.
            let own = mine.is_none().then_some(ticket);
            if let Some(taken) = self.take(&mut state, own) {
                let holds_own = taken.members.iter().any(|(t, _)| *t == ticket);
                drop(state);
                if let Err(panic) = self.lead(taken, &batch) {
                    if holds_own {
                        panicked = Some(panic);
                    }
                }
                state = self.state();
                continue;
            }
            if let Some(answer) = mine {
                drop(state);
                if let Some(panic) = panicked {
                    std::panic::resume_unwind(panic);
                }
                return Ok(answer);
            }
            // Woken by the leader of the batch that holds the item, or as the oldest
            // waiting when a flight frees; a wakeup given before the sleep is kept (the
            // park token), and a spurious one only looks again.
            drop(state);
            crate::http::blocking();
            std::thread::park();
            state = self.state();
        }
    }

    /// Leaves `item` to run in a batch, and `then` to be done with its answer when that
    /// batch ends, without waiting for it: while a flight is free and the oldest item
    /// waiting is one whose caller went on, this caller leads a batch (so its own item goes
    /// at once when nothing waits before it), then returns. A batch it leads that panics
    /// answers its members `None` and is logged, not unwound. Given back at once, unrun,
    /// with `then`, when the queue is full ([`Group::try_run`]).
    pub fn try_later(&self, item: T, then: Then<R>, batch: impl Fn(Vec<T>) -> Vec<R>) -> Result<(), (T, Then<R>)> {
        let mut state = self.state();
        if state.waiting.len() >= self.queue {
            return Err((item, then));
        }
        state.enqueue(item, Caller::Later(then));
        while let Some(taken) = self.take(&mut state, None) {
            drop(state);
            // Its members were answered None; this caller has nothing of its own to unwind.
            let _ = self.lead(taken, &batch);
            state = self.state();
        }
        Ok(())
    }

    /// A batch for this caller to lead, if a flight is free and it should: its own item
    /// (`own`) still waits (the batch holds it and the oldest others), or the oldest item
    /// waiting has no caller asleep to lead it ([`Caller::Later`]; the oldest `most`).
    fn take(&self, state: &mut State<T, R>, own: Option<u64>) -> Option<Taken<T, R>> {
        if state.in_flight >= self.flights {
            return None;
        }
        let at = own.and_then(|t| state.waiting.iter().position(|w| w.ticket == t));
        if at.is_none() && !state.waiting.front().is_some_and(|w| matches!(w.caller, Caller::Later(_))) {
            return None;
        }
        let taken: Vec<Waiting<T, R>> = match at {
            Some(at) if at >= self.most => {
                let own = state.waiting.remove(at).expect("found just now");
                let mut oldest: Vec<_> = state.waiting.drain(..self.most - 1).collect();
                oldest.push(own);
                oldest
            }
            _ => {
                let take = state.waiting.len().min(self.most);
                state.waiting.drain(..take).collect()
            }
        };
        let mut members = Vec::with_capacity(taken.len());
        let items: Vec<T> = taken
            .into_iter()
            .map(|w| {
                members.push((w.ticket, w.caller));
                w.item
            })
            .collect();
        state.in_flight += 1;
        // A flight still free and items still waiting (two flights freed before the
        // first woken led): the next oldest leads one too, if it sleeps.
        let also = if state.in_flight < self.flights { state.oldest_asleep() } else { None };
        Some(Taken { items, members, also })
    }

    /// Runs a batch taken by [`Group::take`]: answers every member even if `batch` panics
    /// (then with None), and frees the flight; the panic is caught and given back, so
    /// that the leader still leads what waits for it (a panic unwound here would leave
    /// the items whose callers went on with no leader) and unwinds only for its own.
    fn lead(&self, taken: Taken<T, R>, batch: &impl Fn(Vec<T>) -> Vec<R>) -> std::thread::Result<()> {
        if let Some(next) = taken.also {
            next.unpark();
        }
        let mut lead = Lead { group: self, members: taken.members, answers: Vec::new() };
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| batch(taken.items)));
        match ran {
            Ok(answers) => {
                lead.answers = answers;
                Ok(())
            }
            Err(panic) => {
                log::error!("a batch panicked: its {} items are answered as failed", lead.members.len());
                Err(panic)
            }
        }
    }
}

impl<T, R> State<T, R> {
    /// Puts an item at the end of the queue; its ticket.
    fn enqueue(&mut self, item: T, caller: Caller<R>) -> u64 {
        let ticket = self.next;
        self.next += 1;
        self.waiting.push_back(Waiting { ticket, item, caller });
        ticket
    }

    /// The caller of the oldest item waiting, if it sleeps (one that went on is led by
    /// whoever finds a flight free: see [`Group::try_later`]).
    fn oldest_asleep(&self) -> Option<Thread> {
        match self.waiting.front().map(|w| &w.caller) {
            Some(Caller::Waits(t)) => Some(t.clone()),
            _ => None,
        }
    }
}

#[cfg(test)]
impl<T, R> Group<T, R> {
    /// Items waiting for a leader.
    fn waiting(&self) -> usize {
        self.state().waiting.len()
    }

    /// Batches in flight.
    fn flying(&self) -> usize {
        self.state().in_flight
    }
}

/// A batch in flight: when dropped (returned or unwound), files its answers by ticket (or
/// hands them to the members that went on), frees its flight, wakes its members and, if
/// the oldest item waiting has a caller asleep, that caller to lead.
struct Lead<'a, T, R> {
    group: &'a Group<T, R>,
    /// The tickets of the batch's items and their callers, in the batch's order.
    members: Vec<(u64, Caller<R>)>,
    answers: Vec<R>,
}

impl<T, R> Drop for Lead<'_, T, R> {
    fn drop(&mut self) {
        let mut answers = std::mem::take(&mut self.answers).into_iter();
        let me = std::thread::current().id();
        let (mut wake, mut later) = (Vec::new(), Vec::new());
        let mut state = self.group.state();
        for (ticket, caller) in self.members.drain(..) {
            let answer = answers.next();
            match caller {
                Caller::Waits(thread) => {
                    state.answers.insert(ticket, answer);
                    if thread.id() != me {
                        wake.push(thread);
                    }
                }
                Caller::Later(then) => later.push((then, answer)),
            }
        }
        state.in_flight -= 1;
        let next = state.oldest_asleep();
        drop(state);
        for caller in wake {
            caller.unpark();
        }
        if let Some(next) = next {
            next.unpark();
        }
        for (then, answer) in later {
            // One member's failure to take its answer must not keep the others' from them
            // (nor unwind out of a drop that may run while unwinding).
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| then(answer))).is_err() {
                log::error!("a batch member's answer could not be handed over (it panicked)");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Group;
    use std::collections::HashSet;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Barrier, Mutex};

    /// A lone caller runs its item at once, alone.
    #[test]
    fn a_lone_item_runs_alone() {
        let group = Group::new(10, 1);
        let batches = Mutex::new(Vec::new());
        for i in 0..3 {
            let answer = group.run(i, |items: Vec<i32>| {
                batches.lock().unwrap().push(items.clone());
                items.iter().map(|x| x * 10).collect()
            });
            assert_eq!(answer, Some(i * 10));
        }
        assert_eq!(*batches.lock().unwrap(), vec![vec![0], vec![1], vec![2]]);
    }

    /// Under contention every item runs exactly once, each caller gets its own answer,
    /// batches never exceed their most, never more fly at once than allowed, and items
    /// that wait are gathered (fewer batches than items).
    #[test]
    fn every_item_runs_once_in_batches() {
        for (most, flights) in [(1, 1), (4, 1), (64, 1), (8, 2), (64, 3)] {
            let group = Arc::new(Group::new(most, flights));
            let seen = Arc::new(Mutex::new(Vec::new()));
            let (flying, most_flying, batches) =
                (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
            let start = Arc::new(Barrier::new(32));
            let callers: Vec<_> = (0..32)
                .map(|c| {
                    let (group, seen, flying, most_flying, batches, start) = (
                        Arc::clone(&group),
                        Arc::clone(&seen),
                        Arc::clone(&flying),
                        Arc::clone(&most_flying),
                        Arc::clone(&batches),
                        Arc::clone(&start),
                    );
                    std::thread::spawn(move || {
                        start.wait();
                        for k in 0..50 {
                            let item = c * 1000 + k;
                            let answer = group.run(item, |items: Vec<usize>| {
                                assert!(items.len() <= most, "{} items in a batch of at most {most}", items.len());
                                assert!(items.contains(&item), "a leader's batch holds its own item");
                                let now = flying.fetch_add(1, Ordering::SeqCst) + 1;
                                most_flying.fetch_max(now, Ordering::SeqCst);
                                batches.fetch_add(1, Ordering::SeqCst);
                                std::thread::sleep(std::time::Duration::from_micros(200));
                                seen.lock().unwrap().extend(items.iter().copied());
                                flying.fetch_sub(1, Ordering::SeqCst);
                                items.iter().map(|x| x + 1).collect()
                            });
                            assert_eq!(answer, Some(item + 1), "a caller gets its own item's answer");
                        }
                    })
                })
                .collect();
            callers.into_iter().for_each(|c| c.join().unwrap());
            let seen = seen.lock().unwrap();
            assert_eq!(seen.len(), 32 * 50, "most {most}, flights {flights}: every item ran");
            assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 32 * 50, "no item ran twice");
            assert!(most_flying.load(Ordering::SeqCst) <= flights);
            assert!(batches.load(Ordering::SeqCst) >= 32 * 50 / most);
        }
    }

    /// The items that arrive while a batch is in flight go together in the next one.
    #[test]
    fn items_that_wait_go_in_one_batch() {
        let group = Arc::new(Group::new(8, 1));
        let batches = Arc::new(Mutex::new(Vec::new()));
        let (release, held) = std::sync::mpsc::channel::<()>();
        let held = Mutex::new(held);
        let run = |item: i32| {
            let (group, batches) = (Arc::clone(&group), Arc::clone(&batches));
            move |held: Option<&Mutex<std::sync::mpsc::Receiver<()>>>| {
                group.run(item, |items: Vec<i32>| {
                    if let Some(held) = held {
                        held.lock().unwrap().recv().unwrap();
                    }
                    batches.lock().unwrap().push(items.clone());
                    items
                })
            }
        };
        std::thread::scope(|s| {
            let first = run(0);
            let held = &held;
            let leader = s.spawn(move || first(Some(held)));
            while group.flying() == 0 {
                std::thread::yield_now();
            }
            let followers: Vec<_> = (1..=3)
                .map(|i| {
                    let f = run(i);
                    s.spawn(move || f(None))
                })
                .collect();
            while group.waiting() < 3 {
                std::thread::yield_now();
            }
            release.send(()).unwrap();
            assert_eq!(leader.join().unwrap(), Some(0));
            let answers: Vec<_> = followers.into_iter().map(|f| f.join().unwrap()).collect();
            assert_eq!(answers, [Some(1), Some(2), Some(3)]);
        });
        let mut batches = batches.lock().unwrap().clone();
        batches[1].sort_unstable();
        assert_eq!(batches, vec![vec![0], vec![1, 2, 3]]);
    }

    /// With a bound on the items waiting, one more is given back at once, unrun; once the
    /// batch in flight ends the waiting ones run and the group takes items again.
    #[test]
    fn a_full_queue_gives_the_item_back_at_once() {
        let group = Group::new(1, 1).with_queue(2);
        let group = &group;
        let (release, held) = std::sync::mpsc::channel::<()>();
        let held = &Mutex::new(held);
        std::thread::scope(|s| {
            let leader = s.spawn(move || {
                group.try_run(0, |items: Vec<i32>| {
                    held.lock().unwrap().recv().unwrap();
                    items
                })
            });
            while group.flying() == 0 {
                std::thread::yield_now();
            }
            let waiters: Vec<_> = (1..=2).map(|i| s.spawn(move || group.run(i, |items: Vec<i32>| items))).collect();
            while group.waiting() < 2 {
                std::thread::yield_now();
            }
            let ran = AtomicUsize::new(0);
            let refused = group.try_run(3, |items: Vec<i32>| {
                ran.fetch_add(1, Ordering::SeqCst);
                items
            });
            assert_eq!(refused, Err(3), "the queue holds 2: the third is given back");
            assert_eq!(ran.load(Ordering::SeqCst), 0, "unrun");
            release.send(()).unwrap();
            assert_eq!(leader.join().unwrap(), Ok(Some(0)));
            let answers: Vec<_> = waiters.into_iter().map(|w| w.join().unwrap()).collect();
            assert_eq!(answers, [Some(1), Some(2)]);
        });
        assert_eq!(group.try_run(4, |items: Vec<i32>| items), Ok(Some(4)));
    }

    /// A batch that panics answers its members None, and the group goes on.
    #[test]
    fn a_panicking_batch_strands_no_one() {
        let group = Arc::new(Group::new(8, 1));
        let g = Arc::clone(&group);
        let panicked = std::thread::spawn(move || g.run(1, |_: Vec<i32>| -> Vec<i32> { panic!("planted") }));
        assert!(panicked.join().is_err(), "the leader's own thread unwinds");
        assert_eq!(group.run(2, |items: Vec<i32>| items), Some(2), "the group still runs batches");
        assert_eq!(group.run(3, |_: Vec<i32>| Vec::new()), None, "an item the batch did not answer gets None");
    }

    /// Callers that go on ([`Group::try_later`]) among callers that wait, under
    /// contention: every item runs exactly once, each answer reaches its own caller or its
    /// `then`, batches keep their bounds, and when every caller has returned no item is
    /// left waiting (whoever found a flight free led what nobody sleeps for).
    #[test]
    fn items_left_for_later_are_answered_by_their_batches() {
        for (most, flights) in [(1, 1), (4, 1), (8, 2), (64, 3)] {
            let group = Arc::new(Group::new(most, flights));
            let ran = Arc::new(Mutex::new(Vec::new()));
            let answered = Arc::new(Mutex::new(Vec::new()));
            let start = Arc::new(Barrier::new(16));
            let callers: Vec<_> = (0..16)
                .map(|c| {
                    let (group, ran, answered, start) =
                        (Arc::clone(&group), Arc::clone(&ran), Arc::clone(&answered), Arc::clone(&start));
                    std::thread::spawn(move || {
                        start.wait();
                        let batch = |items: Vec<usize>| {
                            assert!(items.len() <= most, "{} items in a batch of at most {most}", items.len());
                            std::thread::sleep(std::time::Duration::from_micros(100));
                            ran.lock().unwrap().extend(items.iter().copied());
                            items.iter().map(|x| x + 1).collect()
                        };
                        for k in 0..50 {
                            let item = c * 1000 + k;
                            if (c + k) % 3 == 0 {
                                assert_eq!(group.run(item, batch), Some(item + 1));
                                answered.lock().unwrap().push(item);
                            } else {
                                let answered = Arc::clone(&answered);
                                let then = Box::new(move |answer: Option<usize>| {
                                    assert_eq!(answer, Some(item + 1), "a member gets its own item's answer");
                                    answered.lock().unwrap().push(item);
                                });
                                assert!(group.try_later(item, then, batch).is_ok());
                            }
                        }
                    })
                })
                .collect();
            callers.into_iter().for_each(|c| c.join().unwrap());
            assert_eq!(group.waiting(), 0, "most {most}, flights {flights}: an item was left waiting");
            assert_eq!(group.flying(), 0);
            let (ran, answered) = (ran.lock().unwrap(), answered.lock().unwrap());
            assert_eq!(ran.len(), 16 * 50, "most {most}, flights {flights}: every item ran");
            assert_eq!(ran.iter().collect::<HashSet<_>>().len(), 16 * 50, "no item ran twice");
            assert_eq!(answered.iter().collect::<HashSet<_>>().len(), 16 * 50, "every item was answered once");
            assert_eq!(answered.len(), 16 * 50);
        }
    }

    /// Items left while the one flight is busy wait for it; its leader, a caller that
    /// waits for its own answer, leads them before it returns (nobody sleeps for them),
    /// and a `then` that panics keeps no other member from its answer.
    #[test]
    fn the_leader_of_a_batch_leads_the_items_nobody_waits_for() {
        let group = Group::new(8, 1);
        let (release, held) = std::sync::mpsc::channel::<()>();
        let answered = Arc::new(Mutex::new(Vec::new()));
        std::thread::scope(|s| {
            let group = &group;
            let leader = s.spawn(move || {
                group.run(0, |items: Vec<i32>| {
                    if items == [0] {
                        held.recv().unwrap();
                    }
                    items.iter().map(|x| x * 10).collect()
                })
            });
            while group.flying() == 0 {
                std::thread::yield_now();
            }
            for i in 1..=3 {
                let answered = Arc::clone(&answered);
                let then = Box::new(move |answer: Option<i32>| {
                    if i == 2 {
                        panic!("a member that cannot take its answer");
                    }
                    answered.lock().unwrap().push((i, answer));
                });
                assert!(group.try_later(i, then, |_: Vec<i32>| unreachable!("the flight is busy")).is_ok());
            }
            assert_eq!(group.waiting(), 3);
            release.send(()).unwrap();
            assert_eq!(leader.join().unwrap(), Some(0));
            // The leader returned only after leading them.
            assert_eq!(group.waiting(), 0);
            assert_eq!(*answered.lock().unwrap(), vec![(1, Some(10)), (3, Some(30))]);
        });
    }

    /// A batch that panics while items whose callers went on wait behind it strands none
    /// of them: its leader (here one that went on too) leads them before it returns, and
    /// a caller that waits for its own item, queued behind, gets its answer; the panic of
    /// a batch led from `try_later` is not unwound into its caller.
    #[test]
    fn a_panicking_batch_leaves_no_item_without_a_leader() {
        let group = Group::new(1, 1);
        let (release, held) = std::sync::mpsc::channel::<()>();
        let held = Mutex::new(held);
        let answered = Arc::new(Mutex::new(Vec::new()));
        let batch = |items: Vec<i32>| -> Vec<i32> {
            if items == [0] {
                held.lock().unwrap().recv().unwrap();
                panic!("planted");
            }
            items.iter().map(|x| x * 10).collect()
        };
        let later = |i: i32| {
            let answered = Arc::clone(&answered);
            Box::new(move |answer: Option<i32>| answered.lock().unwrap().push((i, answer))) as super::Then<i32>
        };
        std::thread::scope(|s| {
            let (group, batch) = (&group, &batch);
            let first = s.spawn(move || group.try_later(0, later(0), batch).is_ok());
            while group.flying() == 0 {
                std::thread::yield_now();
            }
            assert!(group.try_later(1, later(1), batch).is_ok());
            let waiter = s.spawn(move || group.run(2, batch));
            while group.waiting() < 2 {
                std::thread::yield_now();
            }
            release.send(()).unwrap();
            assert!(first.join().unwrap(), "the panic is not unwound into try_later");
            assert_eq!(waiter.join().unwrap(), Some(20));
        });
        assert_eq!(group.waiting(), 0);
        let mut answered = answered.lock().unwrap().clone();
        answered.sort_unstable();
        assert_eq!(answered, vec![(0, None), (1, Some(10))]);
    }
}
