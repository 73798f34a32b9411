//! The primary's side of replication: the group commit, pushes to the replicas, bringing a
//! replica that missed writes back in sync, and read leases.
//!
//! A replica that missed writes gets them again from the primary's history of recent
//! writes (the store keeps the last [`super::store::HISTORY`]); one that is further behind,
//! or of another history (an import, a fresh data directory), is asked to copy the whole
//! catalog page by page and then catches up from the history like the others. The last
//! writes it lacks are always sent under the writer lock, so that no write slips in between
//! and the replica is in sync once they are taken.

use super::core;
use super::core::batch::{Batch, Do, Done};
use super::core::opening::{self, Opening};
use super::core::primary::{decide, gate, took, Asked, Decided, Gate, Took, Waits, CLOSE_ENOUGH};
use super::core::settle::{self, Settle};
use super::mailbox::{self, Answer, Letter};
use super::node::{
    CatalogNode, Pending, Queued, ReplicaLink, Reply, FORWARD_TIMEOUT, LOG_PAGE, MAX_BATCH, RETRY_INTERVAL,
};
use super::refusal::{NoGrant, NotHere};
use super::replica::Tip;
use super::state::Write;
use super::store::Ledger;
use crate::cache;
use crate::client::{CatalogClient, LogQuery, PeerError};
use crate::error::{Error, Result};
use crate::http::{Request, Response};
use crate::shutdown::Shutdown;
use crate::wire::Identity;
use crate::wire::{Book, Farewell, LeaseGrant, LeaseRequest, LogPage, ReplicaAck, Replicate};
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};
use ureq::http::Method;

/// How long a static primary with data waits at start for a replica that does not answer
/// before it serves without comparing their catalogs (a whole store restarted brings its
/// replicas up within it); one that answers later holding more is refused, not copied over.
pub const SILENT_REPLICA_WAIT: Duration = Duration::from_secs(5);
/// How often the primary checks that every memcached holds the generation key (and sends
/// the markers not delivered yet).
const GENERATION_CHECK: std::time::Duration = std::time::Duration::from_millis(250);
/// Longest wait of a write for a new primary's first writable moment.
pub(super) const LEAD_WAIT: Duration = Duration::from_secs(5);
/// How often the writer looks at a new primary's leadership while writes wait for its
/// first writable moment (the election changes it without a word to the writer).
const LEAD_POLL: Duration = Duration::from_millis(20);

/// A write's fingerprint or a log's chain as `GET /internal/log` takes them (`sum`,
/// `chain`): 8 hex digits.
fn hex_param(name: &str, s: &str) -> Result<u32> {
    crate::storage::checksum_from_text(s.as_bytes())
        .ok_or_else(|| Error::BadRequest(format!("{name}={s:?} is not a fingerprint (8 hex digits)")))
}

impl CatalogNode {
    pub(super) fn start_primary(self: &Arc<Self>, shutdown: &Shutdown) {
        if let Some(queue) = self.queue.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let (node, stop) = (Arc::clone(self), shutdown.clone());
            std::thread::Builder::new()
                .name("writer".into())
                .spawn(move || node.writer(queue, &stop))
                .expect("a thread can start");
        }
        for link in self.links() {
            self.spawn_keeper(link, shutdown);
        }
        if !self.settled.load(Ordering::SeqCst) {
            let (node, stop) = (Arc::clone(self), shutdown.clone());
            std::thread::spawn(move || node.settle_with_replicas(&stop));
        }
    }

    /// Static roles, at start: compares this catalog with every replica's
    /// ([`Identity`]) and, while one holds more (this catalog's disk came back empty or
    /// older), takes the newest one's catalog whole before it serves anything. It waits
    /// for a replica that does not answer (it may be starting too, and hold more): an empty
    /// catalog for as long as it takes (that replica may hold the store's books), one with
    /// data for [`SILENT_REPLICA_WAIT`]. Then the writer thread opens writes
    /// ([`CatalogNode::open_writes`]).
    fn settle_with_replicas(&self, shutdown: &Shutdown) {
        let client = CatalogClient { http: self.forward.clone() };
        let (started, mut said) = (Instant::now(), None);
        while !self.settled.load(Ordering::SeqCst) {
            let (me, tip) = (self.identity(), self.tip());
            let asked: Vec<settle::Asked> =
                self.links().iter().map(|link| self.ask_to_settle(&client, &link.url, &tip)).collect();
            let damaged = self.damaged.load(Ordering::SeqCst);
            let why = match settle::decide(&me, damaged, asked, started.elapsed(), SILENT_REPLICA_WAIT) {
                Settle::Copy { url, holds } => {
                    log::warn!(
                        "this catalog holds {me}, replica {url} holds {holds}: taking its catalog before serving"
                    );
                    // This disk's record of near-cache leases went with what it lost: reads
                    // open a lease after the start, as after a run that granted some.
                    self.near.record_lost();
                    let copied = self.copy_catalog(&client, &url);
                    // The copy stopped reads; this primary serves again once settled.
                    self.serving.store(true, Ordering::SeqCst);
                    match copied {
                        Ok(()) => {
                            self.damaged.store(false, Ordering::SeqCst);
                            continue;
                        }
                        Err(e) => format!("cannot take the catalog of replica {url}: {e}"),
                    }
                }
                Settle::Wait(unsettled) => unsettled.to_string(),
                Settle::Serve => {
                    if said.is_some() {
                        log::info!("this catalog ({me}) is the newest: serving");
                    }
                    self.settled.store(true, Ordering::SeqCst);
                    self.wake_writer();
                    break;
                }
            };
            if said.as_ref() != Some(&why) {
                log::warn!("{why}");
                said = Some(why);
            }
            if shutdown.sleep(RETRY_INTERVAL) {
                return;
            }
        }
    }

    /// What replica `url` holds, for the settle: its identity and, when its log runs further
    /// in this catalog's history, whether it diverged from this one's up to this one's last
    /// write (`tip`): asked with it (`GET /internal/log`, no writes sent back), the replica
    /// answers 409 when its log differs, or when it marked its log diverged from this
    /// history's primary. A question that fails is no answer (the replica counts as silent
    /// this round).
    fn ask_to_settle(&self, client: &CatalogClient, url: &str, tip: &Tip) -> settle::Asked {
        let answer = self.push.identity(url).map_err(|e| e.to_string());
        let asked = |answer, diverged| settle::Asked { url: url.to_string(), answer, diverged };
        let further = answer.as_ref().is_ok_and(|t| t.history == tip.history && t.seq > tip.seq && tip.seq > 0);
        if !further || !tip.compares() {
            return asked(answer, false);
        }
        match client.log(url, &tip.question(Some(0))) {
            Ok(_) => asked(answer, false),
            Err(PeerError::Answered { status: 409, message }) => {
                log::warn!(
                    "replica {url} holds more than this catalog (write {} of history {:?}), but its log diverged \
                     from this one's ({message}): it is not copied, and this catalog's own writes are kept",
                    tip.seq,
                    tip.history
                );
                asked(answer, true)
            }
            Err(e) => asked(Err(format!("its log could not be compared with this one's: {e}")), false),
        }
    }

    /// The primary's write: queued for the writer thread, which decides, persists, pushes
    /// and invalidates, then acknowledges (see `CatalogNode::commit`).
    ///
    /// `order` (id, time) names the order a purchase takes its copy for: it is journaled
    /// with the write, and a purchase for an order already journaled takes no second copy.
    pub fn write(&self, id: u32, write: Write, order: Option<(String, String)>) -> Result<Book> {
        self.write_many(vec![Asked { id, write, order }]).pop().expect("one answer per write")
    }

    /// Several writes at once (an order server's batch of purchases): all queued for the
    /// writer thread together, so that one request feeds one group commit (or a few, past
    /// [`MAX_BATCH`]), each decided and answered as if it came alone. One answer per write,
    /// in order.
    pub fn write_many(&self, writes: Vec<Asked>) -> Vec<Result<Book>> {
        let stopping = || Error::Unavailable("the catalog is stopping".into());
        // Writes that come before writes open (a static primary compares its catalog with
        // its replicas' first, and waits out the leases of an earlier run), or before a new
        // primary's first writable moment, wait in the writer thread, which answers them
        // once they may be decided (`Waiting::hold`).
        // The request's span lives until its writes are answered (one span for all of them:
        // they are of one trace, the request's); the writer thread records each batch in the
        // trace of its first traced write and links each request's writes to it.
        let mut span = crate::trace::span("catalog.write");
        span.attr("writes", writes.len());
        if let [one] = &writes[..] {
            span.attr("book", one.id);
            if let Some((order_id, _)) = &one.order {
                span.attr("order", order_id.as_str());
            }
        }
        let trace = span.context();
        let (n, came) = (writes.len(), Instant::now());
        let (to, answers) = mpsc::sync_channel(n);
        let mut out: Vec<Result<Book>> = Vec::with_capacity(n);
        let mut queued = 0;
        for (place, asked) in writes.into_iter().enumerate() {
            let reply = Reply { to: to.clone(), place };
            match self.writes.send(Queued::Write(Pending { asked, reply, trace: trace.clone(), came })) {
                Ok(()) => queued += 1,
                Err(_) => break,
            }
        }
        drop(to);
        out.resize_with(n, || Err(stopping()));
        // The serving thread now waits for the group commit.
        crate::http::blocking();
        for _ in 0..queued {
            match answers.recv() {
                Ok((place, answer)) => out[place] = answer,
                Err(_) => break,
            }
        }
        out
    }

    /// The writer thread: takes every write waiting (up to [`MAX_BATCH`]) and commits them
    /// together; between batches, when due, it checks memcached's generation key
    /// ([`CatalogNode::check_generation`]).
    fn writer(&self, queue: mpsc::Receiver<Queued>, shutdown: &Shutdown) {
        let mut queue = Waiting { queue, held: None, owed: false, kept: VecDeque::new() };
        let (mut generation_due, mut opened) = (Instant::now(), None);
        let waits = Waits { compare: SILENT_REPLICA_WAIT + RETRY_INTERVAL, lead: LEAD_WAIT.min(FORWARD_TIMEOUT) };
        // With etcd the elected primary flushes memcached after its election instead
        // (`flush_after_election`), and no other catalog may touch it.
        let setting = opening::Setting {
            lease: self.config.lease,
            grace_until: self.writes_from,
            cache: self.cache.is_some() && self.failover.is_none(),
            fill_window: cache::FILL_WINDOW,
            backoff: cache::BACKOFF,
        };
        let mut opening: Option<Opening> = None;
        while !shutdown.is_set() {
            if self.cache.is_some() && Instant::now() >= generation_due {
                generation_due = Instant::now() + self.check_generation();
            }
            let idle = Duration::from_millis(100);
            let mut wait = match self.cache {
                Some(_) => idle.min(generation_due.saturating_duration_since(Instant::now())),
                None => idle,
            };
            if self.settled.load(Ordering::SeqCst) && opening != Some(Opening::Done) {
                let opening = opening.get_or_insert_with(|| Opening::begin(Instant::now(), &setting));
                if let Some(until) = self.open_writes(opening, &setting) {
                    wait = wait.min(until.saturating_duration_since(Instant::now()));
                }
            }
            let now = Instant::now();
            let (settled, open) = (self.settled.load(Ordering::SeqCst), self.writes_open.load(Ordering::SeqCst));
            if settled && open {
                opened.get_or_insert(now);
            }
            let gate = gate(settled, open, self.lead_pending(), opened, now, waits);
            if gate != Gate::Open {
                // A write a batch took to learn that another waits is kept with the others,
                // first (it is the oldest), so that it too waits only as long as they may.
                queue.keep_held();
            }
            match gate {
                Gate::Closed { refuse_since } => {
                    if queue.hold(wait).is_err() {
                        return;
                    }
                    if let Some(since) = refuse_since {
                        queue.refuse_kept_since(since, || {
                            Error::Unavailable(
                                "a primary that starts compares its catalog with its replicas' first (it takes a \
                                 newer one)"
                                    .into(),
                            )
                        });
                    }
                    continue;
                }
                Gate::Leading { decide_since } => {
                    if queue.hold(wait.min(LEAD_POLL)).is_err() {
                        return;
                    }
                    let mut overdue = decide_since.map(|since| queue.take_kept_since(since)).unwrap_or_default();
                    // Refused with the reason, unless the leadership became writable: in
                    // batches of MAX_BATCH at most, as ever.
                    while !overdue.is_empty() {
                        let rest = overdue.split_off(overdue.len().min(MAX_BATCH));
                        self.commit(std::mem::replace(&mut overdue, rest), &mut queue);
                    }
                    continue;
                }
                Gate::Open => {}
            }
            let first = match queue.first(wait) {
                Ok(p) if self.lead_pending() => {
                    // The leadership changed while the writer waited for this write: it
                    // goes first again, kept with the others by the next turn's gate.
                    queue.held = Some(p);
                    continue;
                }
                Ok(p) => p,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    // Idle: a log that failed a write is re-opened from disk by itself, so
                    // writes resume once the disk takes them again (the next write would
                    // try too).
                    if let Some(mut store) = self.try_lock_writer() {
                        store.files.retry();
                    }
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match queue.more() {
                    Some(p) => batch.push(p),
                    None => break,
                }
            }
            self.commit(batch, &mut queue);
        }
    }

    /// Between batches, only while this catalog surely leads: sends the memcached markers
    /// not delivered yet and sets the generation key where it is missing, so that a
    /// memcached that restarted empty takes fills again. Returns when to check again: soon,
    /// or after [`cache::BACKOFF`] while memcached fails or markers wait.
    fn check_generation(&self) -> Duration {
        let Some(cache) = self.cache.as_ref() else { return GENERATION_CHECK };
        if !self.open_to_writes() {
            // Not before writes open (`fences_memcached` says no then), and not waiting for
            // the writer lock that the start holds while it copies a replica's catalog.
            return GENERATION_CHECK;
        }
        let _writer = self.lock_writer();
        if !self.fences_memcached() {
            return GENERATION_CHECK;
        }
        cache.retry_pending();
        if let Err(e) = cache.ensure_generation(|| self.fences_memcached()) {
            log::debug!("memcached's generation key not checked: {e}");
            return cache::BACKOFF;
        }
        if cache.pending() > 0 {
            return cache::BACKOFF;
        }
        GENERATION_CHECK
    }

    /// Group commit, in this order: decides each write over the current catalog (no copy of
    /// it: `core::primary::decide`), makes them all durable with one fsync, fences the
    /// caches (the front ends' near caches told, one memcached marker per key) while it
    /// pushes them to each replica, waits out a lost replica's lease, (with etcd) takes
    /// replicas that missed them out of the in-sync record, makes them readable here,
    /// answers each once the leadership still holds, then sends the commit notice (unless a
    /// write waits in `queue`: the next batch's push carries the commit point): the stages
    /// of `core::batch`, which this performs. A write that is refused (out of stock, bad
    /// update) is answered with its error and takes no sequence number. A batch that pushes
    /// nothing sends the notice the one before it left to it.
    fn commit(&self, batch: Vec<Pending>, queue: &mut Waiting) {
        let mut store = self.lock_writer();
        if let Err(e) = self.may_acknowledge().and_then(|()| self.cache_flushed()) {
            // With etcd: no longer (or not yet) the primary; nothing is decided, and no
            // commit point is sent any more.
            queue.owed = false;
            for p in batch {
                p.reply.send(Err(Error::Lead(e.clone())));
            }
            return;
        }
        let owed = std::mem::take(&mut queue.owed);
        let (mut pushed_batch, mut logged) = (false, false);
        // The batch's span, in the trace of its first traced write; every traced write of
        // the batch gets a `catalog.batched` span in its own trace that links to it.
        let links: Vec<Option<crate::trace::Context>> = batch.iter().map(|p| p.trace.clone()).collect();
        let _in = crate::trace::adopt(links.iter().flatten().next().cloned());
        // Ended as the batch is answered (its parent, a request, ends then).
        let mut batch_span = crate::trace::span("catalog.batch");
        let epoch = self.term();
        batch_span.attr("writes", batch.len()).attr("epoch", epoch);
        let (mut batch_span, mut batch_ctx) = (Some(batch_span), None);
        let since = crate::trace::mark();
        let (asked, replies): (Vec<Asked>, Vec<_>) = batch.into_iter().map(|p| (p.asked, p.reply)).unzip();
        let Decided { writes, keys, answers } = {
            let _decide = crate::trace::span("catalog.decide");
            decide(&self.state(), &store.recent.journal, epoch, asked)
        };
        let mut answers: Vec<_> =
            replies.into_iter().zip(answers.into_iter().map(|a| a.map_err(Error::from))).collect();
        if !writes.is_empty() {
            // The stages after the decision are the core's (`core::batch`): this loop does
            // what it asks, in its order, and reports back. The history keeps the writes
            // this batch logs, pushes and shows: shared, not copied.
            let writes: Vec<Arc<Replicate>> = writes.into_iter().map(Arc::new).collect();
            let last = writes.last().map_or(0, |p| p.seq);
            batch_span.as_mut().map(|span| span.attr("last", last));
            let (mut stages, mut step) = Batch::start(self.leases());
            let mut took = Vec::new();
            loop {
                let done = match step {
                    Do::Append => {
                        let mut append = crate::trace::span("catalog.append");
                        append.attr("rows", writes.len());
                        match store.log(&writes) {
                            Ok(()) => {
                                self.counters.writes.fetch_add(writes.len() as u64, Ordering::Relaxed);
                                self.counters.batches.fetch_add(1, Ordering::Relaxed);
                                Done::Appended(true)
                            }
                            Err(e) => {
                                // Nothing of the batch was kept (the store cut what it
                                // wrote) and nothing is applied here: no write number or
                                // book id is taken. Every write of the batch is answered
                                // with the cause (503), refusals too (decided over writes
                                // that were not made).
                                log::error!("cannot persist {} writes: {e}", writes.len());
                                for answer in answers.iter_mut() {
                                    answer.1 = Err(Error::Storage(e.copy()));
                                }
                                Done::Appended(false)
                            }
                        }
                    }
                    Do::FenceAndPush => {
                        // The front ends' near caches are told (their held watches answered
                        // at once) and one memcached marker per key is set, at the batch's
                        // last write, while the batch goes to the replicas. A batch never
                        // committed leaves fences that a new primary's flush and reset clear.
                        let fence = crate::trace::span("catalog.fence.near");
                        self.near.publish(&keys, last);
                        drop(fence);
                        // Posted to the replicas' mailboxes, then memcached's markers set
                        // here while the pushes go.
                        let posted = self.post(&writes, self.state().seq());
                        if let Some(cache) = self.cache.as_ref() {
                            let mut fence = crate::trace::span("catalog.fence.memcached");
                            fence.attr("keys", keys.len());
                            cache.invalidate(&keys, last);
                        }
                        let (pushed, lost_until) = self.collect(&store, posted, &writes, self.state().seq());
                        took = pushed;
                        // It carries the commit point of the batch before (`replicate`).
                        pushed_batch = true;
                        Done::Pushed { lost_until, now: Instant::now() }
                    }
                    step @ (Do::WaitOut(_) | Do::MakeSafe | Do::GiveUp(_)) => self.guard(step, &took, writes.len()),
                    Do::Confirm => {
                        let _confirm = crate::trace::span("catalog.near.confirmed");
                        self.near.confirmed(last);
                        Done::Confirmed
                    }
                    Do::Show => {
                        let mut state = self.state_mut();
                        for w in &writes {
                            state.commit(w.book.clone(), w.seq);
                        }
                        drop(state);
                        // A batch waits: the notice is left to its push (`core::batch`).
                        queue.owed = queue.any();
                        Done::Shown { next_waits: queue.owed }
                    }
                    Do::Notice => {
                        // After the answers: in a trace of its own that follows the batch.
                        let _notice = crate::trace::follow(batch_ctx.as_ref(), "catalog.commit_notice");
                        let (pushed, lost_until) = self.replicate(&store, &[], last);
                        took = pushed;
                        Done::Pushed { lost_until, now: Instant::now() }
                    }
                    Do::Answer { unknown } => {
                        match unknown {
                            Some(why) => {
                                let why = format!("the write's outcome is unknown: {why}");
                                for answer in answers.iter_mut().filter(|(_, a)| a.is_ok()) {
                                    answer.1 = Err(Error::Unavailable(why.clone()));
                                }
                            }
                            None => self.count_disks(&took, writes.len(), epoch),
                        }
                        // What `/health` shows of the log (a failed log re-opened by this
                        // batch's append) as the writes are answered, not only when the
                        // writer lock is let go after the notice: a client that saw 200
                        // must not read `log_failed: true` from before.
                        self.logged.publish(&store);
                        batch_ctx = batch_span.take().and_then(|span| span.context());
                        Self::answer(std::mem::take(&mut answers), &links, batch_ctx.clone(), since, epoch);
                        logged = true;
                        Done::Answered
                    }
                    Do::Refuse => {
                        self.logged.publish(&store);
                        batch_ctx = batch_span.take().and_then(|span| span.context());
                        Self::answer(std::mem::take(&mut answers), &links, batch_ctx.clone(), since, epoch);
                        Done::Answered
                    }
                    Do::End => break,
                };
                step = stages.next(done);
            }
            if logged {
                // The batch is in the log: a checkpoint if one is due (after its notice,
                // which replicas wait for). One that fails leaves the files as they were
                // and is tried again later.
                store.after_write(&self.state());
            }
        }
        // A batch that made no write (every one refused) is answered here.
        if let Some(span) = batch_span.take() {
            batch_ctx = span.context();
            drop(span);
            Self::answer(answers, &links, batch_ctx.clone(), since, epoch);
        }
        if owed && !pushed_batch {
            self.notice_owed(&store, batch_ctx.as_ref());
        }
    }

    /// The commit notice that the batch before left to the next one's push, when that one
    /// pushed nothing (every write refused, or its append failed), as a batch of its own
    /// (`Batch::notice_only`): replicas then show what is committed without asking the
    /// primary; one that misses it is out of sync like one that missed a push (its lease
    /// waited out, with etcd taken out of the in-sync record) before anything else is
    /// acknowledged.
    fn notice_owed(&self, store: &Ledger, batch: Option<&crate::trace::Context>) {
        let _notice = crate::trace::follow(batch, "catalog.commit_notice");
        let (mut stages, mut step) = Batch::notice_only(self.leases());
        let mut took = Vec::new();
        loop {
            let done = match step {
                Do::Notice => {
                    let (pushed, lost_until) = self.replicate(store, &[], self.state().seq());
                    took = pushed;
                    Done::Pushed { lost_until, now: Instant::now() }
                }
                Do::End => break,
                step => self.guard(step, &took, 0),
            };
            step = stages.next(done);
        }
    }

    /// Counts a batch of `writes` acknowledged while no replica took its push (`took`
    /// empty: every replica out of sync), which are on this disk alone until a replica is
    /// back in sync, and says so as that starts (in each `epoch`: a catalog elected again
    /// says it again) and as it ends. A primary with no replica configured is on one disk
    /// by design, and says nothing.
    fn count_disks(&self, took: &[String], writes: usize, epoch: u64) {
        if self.links().is_empty() {
            return;
        }
        let alone = took.is_empty();
        if alone {
            self.counters.writes_on_one_disk.fetch_add(writes as u64, Ordering::Relaxed);
        }
        let now = if alone { epoch + 1 } else { 0 };
        if self.counters.on_one_disk.swap(now, Ordering::Relaxed) != now {
            match alone {
                true => log::warn!(
                    "writes are acknowledged with every replica out of sync: they are on this primary's disk alone \
                     until a replica is back in sync (losing this disk now would lose them; \
                     bazar_catalog_writes_on_one_disk_total counts them)"
                ),
                false => log::info!("a replica takes the writes again: they are on two disks or more"),
            }
        }
    }

    /// The steps that keep a batch's round safe (its push, or its notice): the wait for a
    /// lost replica's lease (`writes`: the batch's, for the log), the in-sync record and
    /// the leadership checked (`took`: the replicas that took the round), giving up.
    fn guard(&self, step: Do, took: &[String], writes: usize) -> Done {
        match step {
            Do::WaitOut(wait) => {
                self.counters.lease_waits.fetch_add(1, Ordering::Relaxed);
                self.counters.lease_wait_micros.fetch_add(wait.as_micros() as u64, Ordering::Relaxed);
                log::info!("{writes} writes wait {wait:?} for a lost replica's lease to expire");
                std::thread::sleep(wait);
                Done::WaitedOut
            }
            Do::MakeSafe => {
                Done::Safe(self.make_safe(took).and_then(|()| self.may_acknowledge()).map_err(|e| e.to_string()))
            }
            Do::GiveUp(why) => {
                self.give_up(&why);
                Done::GaveUp
            }
            other => panic!("the writer was asked {other:?} where it guards a round"),
        }
    }

    /// Sends a batch's answers, each request's `catalog.batched` span first: one link per
    /// request (its writes share its span) to the batch's span `batch`, failed if any of
    /// its writes in this batch was refused. `links` are the traces of the batch's writes.
    fn answer(
        answers: Vec<(Reply, Result<Book>)>,
        links: &[Option<crate::trace::Context>],
        batch: Option<crate::trace::Context>,
        since: (u64, Instant),
        epoch: u64,
    ) {
        if answers.is_empty() {
            return;
        }
        if let Some(batch) = batch {
            let mut requests: Vec<(&crate::trace::Context, bool)> = Vec::new();
            for (ctx, (_, answer)) in links.iter().zip(&answers) {
                let Some(ctx) = ctx else { continue };
                match requests.iter_mut().find(|(c, _)| c.span_id == ctx.span_id) {
                    Some((_, failed)) => *failed |= answer.is_err(),
                    None => requests.push((ctx, answer.is_err())),
                }
            }
            let link = format!("{}/{}", batch.trace_id, batch.span_id);
            for (ctx, failed) in requests {
                let attributes = vec![
                    ("batch", crate::trace::Value::from(link.as_str())),
                    ("batch.writes", links.len().into()),
                    ("epoch", epoch.into()),
                ];
                crate::trace::record_past(ctx, "catalog.batched", since.0, since.1, failed, attributes);
            }
        }
        for (reply, answer) in answers {
            reply.send(answer);
        }
    }

    /// With static roles, whether a primary that started may answer reads: one lease after
    /// it started, or before once every replica is in sync. A replica that kept serving
    /// while it was down (on a lease extended by refused connections, all before this
    /// process bound its port) may lack writes this primary logged before it died and shows
    /// now; that lease has run out by then. So has a front end's near-cache lease of an
    /// earlier run, which this run does not know, and which no replica being in sync ends:
    /// a primary whose record says an earlier run granted such leases waits out the whole
    /// lease (`near.rs`' record; the data simulator's scripted schedule found the stale
    /// read this closes), and so does one whose disk lost the record (it took a replica's
    /// catalog at start).
    pub(super) fn reads_open(&self) -> bool {
        !self.leases()
            || Instant::now() >= self.reads_from
            || (!self.near.held_before_start() && self.links().iter().all(|l| l.grant().in_sync))
    }

    /// Whether this catalog may set memcached's generation key now: the primary, free to
    /// write (with etcd: leadership valid, old leases over, flushed since its election) and
    /// to read. Asked under the writer lock, between batches.
    pub(super) fn fences_memcached(&self) -> bool {
        self.role() == super::config::Role::Primary
            && self.may_acknowledge().and_then(|()| self.cache_flushed()).is_ok()
            && self.writes_open.load(Ordering::SeqCst)
            && self.reads_open()
    }

    /// Whether writes are open: the start compared this catalog with its replicas'
    /// ([`CatalogNode::settle_with_replicas`]) and the writer opened them
    /// ([`CatalogNode::open_writes`]).
    fn open_to_writes(&self) -> bool {
        self.settled.load(Ordering::SeqCst) && self.writes_open.load(Ordering::SeqCst)
    }

    /// Tells the writer thread that the start moved on (settled, or a replica came in
    /// sync), so that it opens writes, and answers the writes it holds, at once. A full
    /// queue needs no word: the writer is busy with it.
    fn wake_writer(&self) {
        let _ = self.writes.try_send(Queued::Wake);
    }

    /// On the writer thread, between batches, once the start settled: performs the
    /// opening's steps due now (`core::opening`: a lease after the settle, the replicas in
    /// sync or the farewell grace over, memcached's history checked), and opens writes when
    /// it says so. Returns when to look again (a replica that comes in sync wakes the
    /// writer sooner).
    fn open_writes(&self, opening: &mut Opening, setting: &opening::Setting) -> Option<Instant> {
        loop {
            let in_sync = self.links().iter().all(|l| l.grant().in_sync);
            let step = opening.next(Instant::now(), in_sync, setting);
            if opening.writes_open() && !self.writes_open.load(Ordering::SeqCst) {
                self.writes_open.store(true, Ordering::SeqCst);
            }
            let force = match step {
                opening::Step::Wait(until) => return until,
                opening::Step::Adopt { force } => force,
            };
            let cache = self.cache.as_ref().expect("the opening checks memcached only where there is one");
            let adopted = self.adopt_history(cache, force);
            match (&adopted, force) {
                (Ok(false), false) => {}
                (Ok(true), false) => log::info!("memcached held answers of another catalog history: flushed"),
                (Ok(_), true) => log::info!("flushed memcached again: no fill of the old catalog is left"),
                (Err(e), false) => log::warn!("cannot check memcached's catalog history ({e}); trying again"),
                (Err(e), true) => log::warn!("cannot flush memcached again ({e}); trying again"),
            }
            opening.adopted(Instant::now(), adopted.map_err(|_| ()), setting);
        }
    }

    /// [`cache::Cache::adopt_history`] with this catalog's history, under the writer lock
    /// (between batches).
    fn adopt_history(&self, cache: &cache::Cache, force: bool) -> Result<bool, String> {
        let writer = self.lock_writer();
        cache.adopt_history(writer.history_id(), force)
    }

    /// On a graceful stop: takes the writer lock for good (nothing more will be
    /// acknowledged) and says farewell to every replica in sync, so that they go on
    /// serving reads for the grace while no primary runs.
    pub(super) fn farewell(&self) {
        let writer = self.lock_writer();
        // The last batch may have left its commit notice to a next batch that never came:
        // the replicas show what is committed, and serve it through the grace without
        // asking a primary that is gone.
        let _ = self.replicate(&writer, &[], self.state().seq());
        let body = serde_json::to_vec(&Farewell { run: self.replica_id.clone() }).unwrap_or_default();
        std::thread::scope(|s| {
            for link in self.links().into_iter().filter(|l| l.grant().in_sync) {
                let body = body.clone();
                s.spawn(move || match self.push.http.call(Method::POST, &link.url, "/internal/farewell", Some(body)) {
                    Ok(a) if a.status == 200 => log::info!("said farewell to replica {}", link.url),
                    Ok(a) => log::warn!("replica {} did not take the farewell: {}", link.url, a.error()),
                    Err(e) => log::warn!("replica {} did not take the farewell: {e}", link.url),
                });
            }
        });
        std::mem::forget(writer);
    }

    /// Pushes writes to every replica in sync (in parallel, through their mailboxes), with
    /// the commit point `committed` (an empty push with it is the commit notice). A replica
    /// that misses them is out of sync from then on (no lease renewals, no pushes) until the
    /// background brings it back. Returns the replicas that took them, and the latest time
    /// until which one that missed them may hold a read lease (the batch waits it out:
    /// `core::batch`).
    fn replicate(&self, store: &Ledger, pushes: &[Arc<Replicate>], committed: u64) -> (Vec<String>, Option<Instant>) {
        let posted = self.post(pushes, committed);
        self.collect(store, posted, pushes, committed)
    }

    /// Posts writes to the mailbox of every replica in sync, with the commit point
    /// `committed`: they are sent while the writer goes on; [`Self::collect`] takes the
    /// answers.
    fn post(&self, pushes: &[Arc<Replicate>], committed: u64) -> Posted {
        let links: Vec<Arc<ReplicaLink>> = self.links().into_iter().filter(|l| l.grant().in_sync).collect();
        let (to, answers) = mpsc::channel();
        let posted = Posted { links, to, answers, committed: self.commit_point(committed), epoch: self.term() };
        let writes: Arc<[Arc<Replicate>]> = pushes.into();
        for place in 0..posted.links.len() {
            posted.post(place, Arc::clone(&writes), false, &self.push);
        }
        posted
    }

    /// The answers to the pushes `posted` (writes `pushes` with the commit point
    /// `committed`), each judged as it comes ([`took`]): a replica a few writes behind in
    /// this primary's log is sent the writes it lacks at once; one that took them stays in
    /// sync; one that did not is out of sync at once (no lease renewal from then on).
    /// Returns what [`Self::replicate`] does.
    fn collect(
        &self,
        store: &Ledger,
        posted: Posted,
        pushes: &[Arc<Replicate>],
        committed: u64,
    ) -> (Vec<String>, Option<Instant>) {
        let last = pushes.last().map_or(0, |p| p.seq);
        // By place: whether it took them, and whether its tail was sent.
        let (mut took_them, mut tailed) = (vec![false; posted.links.len()], vec![false; posted.links.len()]);
        let (mut waiting, mut lost_until) = (posted.links.len(), None);
        while waiting > 0 {
            // Every letter is answered once, sent or dropped (`mailbox::Answer`).
            let Ok((place, answer)) = posted.answers.recv() else { break };
            waiting -= 1;
            let link = &posted.links[place];
            let judged = match answer {
                // A tail's answer counts as the batch's would, and only so: at the batch's
                // last write, in this log (the replica may have logged another write under a
                // number the tail held).
                Ok(ack) if tailed[place] => match took(last, ack.seq, Self::same_log(store, &ack)) {
                    Took::Yes => Ok(ack),
                    Took::Tail { .. } | Took::No => Err(Self::behind(link, &ack, last)),
                },
                Ok(ack) => match took(last, ack.seq, Self::same_log(store, &ack)) {
                    Took::Yes => Ok(ack),
                    Took::Tail { after } => {
                        let tail = store
                            .recent
                            .history
                            .after(after, CLOSE_ENOUGH as usize)
                            .filter(|t| t.last().map(|w| w.seq) == Some(last));
                        match tail {
                            Some(tail) => {
                                tailed[place] = true;
                                posted.post(place, tail.into(), true, &self.push);
                                waiting += 1;
                                continue;
                            }
                            None => Err(Self::behind(link, &ack, last)),
                        }
                    }
                    Took::No => Err(Self::behind(link, &ack, last)),
                },
                Err(e) => Err(e),
            };
            match judged {
                Ok(ack) => {
                    link.grant().synced(ack.replica_id);
                    took_them[place] = true;
                }
                Err(e) => {
                    self.counters.pushes_failed.fetch_add(1, Ordering::Relaxed);
                    let seq = pushes.last().map_or(committed, |p| p.seq);
                    let what = if pushes.is_empty() { "the commit of write" } else { "write" };
                    log::warn!("replica {} missed {what} {seq}: {e}; out of sync until it catches up", link.url);
                    lost_until = lost_until.max(link.grant().lost());
                }
            }
        }
        let took = posted.links.iter().zip(took_them).filter(|(_, took)| *took).map(|(l, _)| l.url.clone()).collect();
        (took, lost_until)
    }

    /// A replica that answered a push but did not log it: why (in a failed
    /// `catalog.push.behind` span too, as the push's own span says it was answered).
    fn behind(link: &ReplicaLink, ack: &ReplicaAck, last: u64) -> Error {
        let mut span = crate::trace::span("catalog.push.behind");
        span.attr("replica", link.url.as_str()).attr("at", ack.seq);
        span.fail();
        Error::Unavailable(format!("replica is at write {} of {last}", ack.seq))
    }

    /// The commit point to send with a push to a replica whose log is a prefix of this
    /// one's: none while this primary may not answer reads itself
    /// ([`core::read::commit_point`]).
    fn commit_point(&self, committed: u64) -> Option<u64> {
        core::read::commit_point(self.reader(), committed)
    }

    /// [`mailbox::send`] on this thread (the catch-up's pushes: the writer's go through the
    /// mailboxes).
    fn send_writes(&self, url: &str, writes: &[Arc<Replicate>], committed: Option<u64>) -> Result<ReplicaAck> {
        mailbox::send(&self.push, url, self.term(), writes, committed)
    }

    /// Starts the background thread that keeps `link` in sync.
    pub(super) fn spawn_keeper(self: &Arc<Self>, link: Arc<ReplicaLink>, shutdown: &Shutdown) {
        let (node, stop) = (Arc::clone(self), shutdown.clone());
        std::thread::spawn(move || node.keep_replica_in_sync(&link, &stop));
    }

    /// Background: brings replica `link` back in sync whenever it is not (while this
    /// catalog is the primary, and until the replica leaves).
    fn keep_replica_in_sync(&self, link: &ReplicaLink, shutdown: &Shutdown) {
        while !link.gone.load(Ordering::SeqCst) {
            // With etcd only while leading validly: a primary that was replaced sends nothing.
            let valid = self.failover.as_ref().is_none_or(|f| f.core().may_grant(Instant::now()));
            let primary = self.role() == super::config::Role::Primary && valid && self.settled.load(Ordering::SeqCst);
            if primary && (!link.grant().in_sync | link.recheck.swap(false, Ordering::SeqCst)) {
                match self.bring_in_sync(link) {
                    Ok(seq) => {
                        log::info!("replica {} is in sync at write {seq}", link.url);
                        // Writes may be waiting for it to open.
                        if !self.writes_open.load(Ordering::SeqCst) {
                            self.wake_writer();
                        }
                    }
                    Err(e) => log::debug!("replica {} not in sync yet: {e}", link.url),
                }
            }
            if shutdown.sleep(RETRY_INTERVAL) {
                return;
            }
        }
    }

    /// Sends replica `link` the writes it lacks from the history: most of them without the
    /// writer lock (a slow replica delays no write), the rest under it, and then it is in
    /// sync. A replica too far behind, or of another history, is asked to copy the whole
    /// catalog first.
    fn bring_in_sync(&self, link: &ReplicaLink) -> Result<u64> {
        // The first push asks where the replica stands, with no commit point: its log may
        // hold writes this primary lacks (an old primary's, never acknowledged).
        let mut ack = self.send_writes(&link.url, &[], None)?;
        let (me, theirs) = (self.identity(), Identity { history: ack.history.clone(), seq: ack.seq, epoch: ack.epoch });
        if !theirs.may_be_replaced_by(&me, self.failover.is_none()) {
            // Data never flows backwards: this primary lost writes the replica holds.
            let why = format!(
                "replica {} holds {theirs}, more than this primary ({me}): it is not asked to copy this catalog \
                 and stays out of sync (see README, \"Storage faults\")",
                link.url
            );
            super::node::say_once(&link.refused, &why);
            return Err(Error::Conflict(why));
        }
        if let Some(why) = self.diverged_from(link, &ack)? {
            super::node::say_once(&link.refused, &why);
            // The replica learns it too, and keeps it on its disk: asked to catch up, it
            // compares its log with this one's (409) and marks it (`catalog.diverged`), so
            // that no later copy drops its writes once this primary no longer keeps the
            // writes that tell the logs apart. Asked at every round (a request lost
            // would leave it unmarked; once marked, asking again changes nothing).
            if let Err(e) = self.push.resync(&link.url) {
                log::debug!("replica {} not told to compare its log: {e}", link.url);
            }
            return Err(Error::Conflict(why));
        }
        loop {
            let (tail, last, history) = {
                let store = self.lock_writer();
                let tail = store.recent.history.after(ack.seq, LOG_PAGE).filter(|_| Self::same_log(&store, &ack));
                (tail, self.state().seq(), store.history_id().to_string())
            };
            // Past the (seq, epoch) check its log is a prefix of this one's: `last` is committed.
            let committed = self.commit_point(last);
            let Some(tail) = tail else {
                self.counters.copies_asked.fetch_add(1, Ordering::Relaxed);
                self.push.resync(&link.url)?;
                return Err(Error::Unavailable(format!(
                    "replica at write {} of history {:?} (primary at {last} of {history:?}) copies the catalog",
                    ack.seq, ack.history
                )));
            };
            if last <= ack.seq + CLOSE_ENOUGH {
                break;
            }
            self.counters.tail_writes_sent.fetch_add(tail.len() as u64, Ordering::Relaxed);
            ack = self.send_writes(&link.url, &tail, committed)?;
        }
        let store = self.lock_writer();
        let last = self.state().seq();
        let tail = store
            .recent
            .history
            .after(ack.seq, CLOSE_ENOUGH as usize + 1)
            .ok_or_else(|| Error::Unavailable("the replica fell behind the history".into()))?;
        self.counters.tail_writes_sent.fetch_add(tail.len() as u64, Ordering::Relaxed);
        if !Self::same_log(&store, &ack) {
            return Err(Error::Unavailable("the replica's log is not a prefix of this one's".into()));
        }
        let ack = self.send_writes(&link.url, &tail, self.commit_point(last))?;
        if ack.seq != last || !Self::same_log(&store, &ack) {
            return Err(Error::Unavailable(format!("replica stayed at write {} of {last}", ack.seq)));
        }
        // With etcd: recorded in sync (in etcd) before it counts as such here.
        self.record_in_sync(&link.url)?;
        link.grant().synced(ack.replica_id);
        Ok(last)
    }

    /// Whether a replica's log, standing at `ack`, is a prefix of this one: the same
    /// history, the same epoch at its last write (one primary per epoch, pushes in order:
    /// logs that agree on (seq, epoch) agree up to there; none past this one's last) and,
    /// where both know it, the same chain there. With static roles every write is of epoch
    /// 0 and only the chain tells another write at that number: one that this primary's
    /// earlier run pushed before it crashed and the replica read after the restart settled.
    fn same_log(store: &Ledger, ack: &ReplicaAck) -> bool {
        let history = &store.recent.history;
        ack.history == store.history_id()
            && history.epoch_at(ack.seq) == Some(ack.epoch)
            && core::primary::chains_diverged(history.chain_at(ack.seq), ack.chain) != Some(true)
    }

    /// With static roles, why replica `link` (whose log ends at `ack`, no further than this
    /// one's) must not be brought in sync: its log holds other writes than this primary's
    /// up to its last, which this primary lost with its disk and replaced. The chains tell
    /// (`core::primary::chains_diverged`: the replica's in its ack, this primary's at that
    /// number). Where either is not known (a log written before chains), only the last
    /// write is compared (`core::primary::diverged`), when both keep it: the replica's is
    /// asked for (`GET /internal/log`); None when they agree, or when either no longer
    /// keeps that write (then nothing tells, and it is brought in sync as before). A question that fails otherwise is an error: the replica is not brought in
    /// sync this time (a failed question is no answer that they agree). With etcd the
    /// epochs tell (`same_log`).
    fn diverged_from(&self, link: &ReplicaLink, ack: &ReplicaAck) -> Result<Option<String>> {
        if self.failover.is_some() || ack.seq == 0 {
            return Ok(None);
        }
        let (kept, chain) = {
            let store = self.lock_writer();
            let history = &store.recent.history;
            let same = ack.history == store.history_id();
            let ours = history.at(ack.seq).cloned();
            let kept = same.then(|| ours.zip(history.epoch_at(ack.seq - 1))).flatten();
            (kept, same.then(|| history.chain_at(ack.seq)).flatten())
        };
        let why = |what: String| {
            format!(
                "replica {} {what}: its log and this one's diverged, as when this primary's disk came back empty or \
                 older and it served without that replica; it is not asked to copy this catalog and stays out of \
                 sync (see README, \"A disk that comes back empty or older\")",
                link.url
            )
        };
        // The chains tell whether the logs differ anywhere up to the replica's last write.
        if let Some(diverged) = core::primary::chains_diverged(chain, ack.chain) {
            let what = format!("holds other writes than this primary up to its last, {} (another chain)", ack.seq);
            return Ok(diverged.then(|| why(what)));
        }
        // Without both chains (a log from before them), only the last write is compared.
        let Some((ours, epoch)) = kept else { return Ok(None) };
        // 410: the replica no longer keeps it either.
        let asked =
            LogQuery { after: ack.seq - 1, history: &ack.history, epoch, limit: Some(1), ..LogQuery::default() };
        let Some(page) = self.push.log(&link.url, &asked)? else {
            return Ok(None);
        };
        let Some(theirs) = page.writes.into_iter().find(|w| w.seq == ack.seq) else {
            return Err(Error::Unavailable(format!("replica {} did not send its write {}", link.url, ack.seq)));
        };
        Ok(core::primary::diverged(&ours, &theirs).then(|| {
            why(format!(
                "holds another write {} than this primary (book {} at {} copies, this one's: book {} at {})",
                ack.seq, theirs.book.id, theirs.book.quantity, ours.book.id, ours.book.quantity
            ))
        }))
    }

    /// `GET /internal/log?after=N&history=H&epoch=E[&sum=S][&chain=C][&limit=L]`: up to L
    /// writes after N (a page by default), or 410 when they are no longer kept, the asker
    /// has another history, or this catalog's write N is of another epoch than E (the
    /// asker's tail past where the logs agree is dropped by the whole copy that follows).
    /// With static roles, 409 when this catalog's log differs from the asker's up to N
    /// (chain C, or where either knows none, the fingerprint S of write N), or when this
    /// is a replica marked diverged from that history and the asker compares (S or C).
    pub(super) fn log_after(&self, request: &Request) -> Result<Response> {
        let after: u64 = match request.query_param("after")? {
            Some(a) => a.parse().map_err(|_| Error::BadRequest(format!("after={a:?} is not a write number")))?,
            None => return Err(Error::BadRequest("give after=N".into())),
        };
        let asked = request.query_param("history")?.ok_or_else(|| Error::BadRequest("give history=H".into()))?;
        // Every parameter is judged before the request is: a malformed one is a 400.
        let epoch = Self::epoch_param(request)?;
        let sum = request.query_param("sum")?.map(|s| hex_param("sum", &s)).transpose()?;
        let chain = request.query_param("chain")?.map(|s| hex_param("chain", &s)).transpose()?;
        let limit = match request.query_param("limit")? {
            None => LOG_PAGE,
            Some(l) => l.parse().ok().filter(|&l| l <= LOG_PAGE).ok_or_else(|| {
                Error::BadRequest(format!("limit={l:?} is not a number of writes from 0 to {LOG_PAGE}"))
            })?,
        };
        if self.failover.is_some() && self.role() != super::config::Role::Primary {
            return Err(Error::Unavailable("this catalog is not the primary now".into()));
        }
        let store = self.lock_writer();
        let history = store.history_id().to_string();
        let gone = |why: String| Err(Error::Gone(why));
        if asked != history {
            return gone(format!("this catalog's history is {history:?}, not {asked:?}"));
        }
        // A static replica whose log diverged from its primary's (it says so on its disk)
        // tells an asker that compares its log (a primary settling) so, whatever it keeps.
        let compares = self.failover.is_none() && (sum.is_some() || chain.is_some());
        if let Some(mark) = store.files.diverged_from(&history).filter(|_| compares && self.replica_only().is_ok()) {
            return Err(Error::Conflict(format!("this replica's log diverged from its primary's: {mark}")));
        }
        match store.recent.history.epoch_at(after) {
            Some(e) if e == epoch => {}
            Some(e) => return gone(format!("write {after} here is of epoch {e}, not {epoch}")),
            None => return gone(format!("the writes after {after} are no longer kept; copy the catalog")),
        }
        // With static roles the epochs do not tell diverged logs apart: the asker's log up
        // to `after`, by its chain, against this one's; where either chain is not known,
        // the asker's write `after` by its fingerprint against this one's (when kept).
        let kept = &store.recent.history;
        let by_write = |sum: u32| kept.at(after).is_some_and(|ours| ours.fingerprint() != sum);
        let diverged =
            core::primary::chains_diverged(kept.chain_at(after), chain).unwrap_or_else(|| sum.is_some_and(by_write));
        if self.failover.is_none() && diverged {
            return Err(Error::Conflict(format!(
                "the log here up to write {after} is another than the asker's: the logs diverged (this catalog's \
                 disk lost writes the asker holds); nothing is sent to be copied over them"
            )));
        }
        match store.recent.history.after(after, limit) {
            Some(writes) => {
                let seq = self.state().seq();
                let writes = writes.iter().map(|w| Replicate::clone(w)).collect();
                let chain = kept.chain_at(after);
                Ok(Response::json(&LogPage { history, seq, writes, epoch: self.term(), chain }))
            }
            None => gone(format!("the writes after {after} are no longer kept; copy the catalog")),
        }
    }

    /// `GET /internal/committed`: the primary's readable write (every write up to it is
    /// committed) and its epoch, while it may answer reads.
    pub(super) fn committed_answer(&self) -> Result<Response> {
        if self.role() != super::config::Role::Primary {
            return Err(Error::Unavailable("this catalog is not the primary now".into()));
        }
        self.readable()?;
        Ok(Response::json(&crate::wire::Committed { seq: self.state().seq(), epoch: self.term() }))
    }

    /// A replica's lease request.
    pub(super) fn grant_lease(&self, request: &LeaseRequest) -> Result<Response> {
        if self.replica_only().is_ok() {
            return Err(Error::NotHere(NotHere::NoLeasesFromReplica));
        }
        if self.failover.is_none() {
            // A static primary grants none before its own reads open: until then a replica
            // may still read on a lease of its previous run, without the writes that run
            // logged and never acknowledged, which another replica (restarted: it shows all
            // it logged) would show under this grant. Asked before any grant lock is taken:
            // the check reads every link's.
            self.readable()?;
        }
        let links = self.links();
        for link in &links {
            let mut grant = link.grant();
            if grant.replica_id.as_deref() == Some(request.replica_id.as_str()) {
                // Checked under the grant lock, which a switchover's pause also takes to read
                // the leases granted: a lease is granted before the pause (and counted) or
                // not at all. A lease granted now could outlive this primary's leadership;
                // and none before this primary reads (a replica would show what the old
                // primary's lease holders still lack): the conditions of acknowledging a write.
                if let Some(f) = &self.failover {
                    f.core().may_acknowledge(Instant::now())?;
                }
                return match grant.request(&request.replica_id, Instant::now(), self.config.lease) {
                    Ok(()) => {
                        self.counters.lease_grants.fetch_add(1, Ordering::Relaxed);
                        // `run` names this process: its farewell, and only it, may extend
                        // the lease it grants (see `lease.rs`).
                        Ok(Response::json(&LeaseGrant {
                            lease_ms: self.config.lease.as_millis() as u64,
                            epoch: self.term(),
                            run: Some(self.replica_id.clone()),
                        }))
                    }
                    Err(why) => {
                        self.counters.lease_refusals.fetch_add(1, Ordering::Relaxed);
                        Err(Error::NotHere(NotHere::NoGrant(why)))
                    }
                };
            }
        }
        for link in &links {
            link.recheck.store(true, Ordering::SeqCst);
        }
        self.counters.lease_refusals.fetch_add(1, Ordering::Relaxed);
        Err(Error::NotHere(NotHere::NoGrant(NoGrant::Unknown)))
    }
}

/// Pushes posted to the replicas' mailboxes ([`CatalogNode::post`]), to be collected.
struct Posted {
    /// The replicas in sync posted to, in the order of their places.
    links: Vec<Arc<ReplicaLink>>,
    /// Where their answers go (a tail posted after them answers there too), and the
    /// answers, tagged with their places.
    to: mpsc::Sender<(usize, Result<ReplicaAck>)>,
    answers: mpsc::Receiver<(usize, Result<ReplicaAck>)>,
    /// The commit point and the epoch the pushes carry (a tail carries them too).
    committed: Option<u64>,
    epoch: u64,
}

impl Posted {
    /// Posts `writes` to the replica at `place`, in the current trace.
    fn post(&self, place: usize, writes: Arc<[Arc<Replicate>]>, tail: bool, push: &CatalogClient) {
        let link = &self.links[place];
        let (epoch, committed, trace, answer) =
            (self.epoch, self.committed, crate::trace::current(), Answer::new(&self.to, place));
        link.mailbox.post(&link.url, push, Letter { writes, epoch, committed, trace, tail, answer });
    }
}

/// The writes waiting for the writer thread: the channel, at most one write taken from it
/// early, to learn that another batch waits (that write begins the next batch), and the
/// writes kept while the gate is not open (`core::primary::Gate`).
struct Waiting {
    queue: mpsc::Receiver<Queued>,
    held: Option<Pending>,
    /// The last batch sent no commit notice: the next batch's push carries its commit
    /// point, or, if it pushes nothing, that batch sends the notice.
    owed: bool,
    /// Writes kept while writes are not open, or a new primary's leadership is not
    /// writable yet, in the order they were queued.
    kept: VecDeque<Pending>,
}

impl Waiting {
    /// Whether a write waits (taken out and held when it does).
    fn any(&mut self) -> bool {
        if self.held.is_none() {
            self.held = self.next_now();
        }
        self.held.is_some()
    }

    /// The first write of the next batch: one held, or the next within `timeout`.
    fn first(&mut self, timeout: Duration) -> Result<Pending, mpsc::RecvTimeoutError> {
        if let Some(p) = self.next_now() {
            return Ok(p);
        }
        let deadline = Instant::now() + timeout;
        loop {
            match self.queue.recv_timeout(deadline.saturating_duration_since(Instant::now()))? {
                Queued::Write(p) => return Ok(p),
                // Nothing to look at: writes are open.
                Queued::Wake => {}
            }
        }
    }

    /// Another write that waits now, if any.
    fn more(&mut self) -> Option<Pending> {
        self.next_now()
    }

    /// The write held, else the oldest kept, else one queued.
    fn next_now(&mut self) -> Option<Pending> {
        if let Some(p) = self.held.take().or_else(|| self.kept.pop_front()) {
            return Some(p);
        }
        loop {
            match self.queue.try_recv().ok()? {
                Queued::Write(p) => return Some(p),
                Queued::Wake => {}
            }
        }
    }

    /// While the gate is not open ([`Gate`]): keeps what comes within `timeout` (decided
    /// once it opens, or refused), and returns sooner when woken (the start moved on).
    /// Err once no write can come any more.
    fn hold(&mut self, timeout: Duration) -> Result<(), mpsc::RecvTimeoutError> {
        match self.queue.recv_timeout(timeout) {
            Ok(Queued::Write(p)) => self.kept.push_back(p),
            Ok(Queued::Wake) | Err(mpsc::RecvTimeoutError::Timeout) => return Ok(()),
            Err(e) => return Err(e),
        }
        // And everything queued behind it, at once: a burst costs the writer one turn, and
        // a request's writes are kept together (so that they leave together).
        while let Ok(q) = self.queue.try_recv() {
            if let Queued::Write(p) = q {
                self.kept.push_back(p);
            }
        }
        Ok(())
    }

    /// The writes kept since before `since`, first come first.
    ///
    /// Requests queue their writes concurrently, so the kept ones are in the order they
    /// were sent, not always in the order of `came`: every kept write is looked at, so that
    /// a request's writes leave together.
    fn take_kept_since(&mut self, since: Instant) -> Vec<Pending> {
        let (due, rest): (VecDeque<Pending>, _) =
            std::mem::take(&mut self.kept).into_iter().partition(|p| p.came <= since);
        self.kept = rest;
        due.into()
    }

    /// Keeps the write taken early (if any) with the others, first: it came before them (a
    /// batch's end took it to learn that another waits, or the leadership changed as the
    /// writer took it).
    fn keep_held(&mut self) {
        if let Some(p) = self.held.take() {
            self.kept.push_front(p);
        }
    }

    /// Answers every write kept since before `since` with `why` (nothing was decided).
    fn refuse_kept_since(&mut self, since: Instant, why: impl Fn() -> Error) {
        for p in self.take_kept_since(since) {
            p.reply.send(Err(why()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A purchase of book `id`, answered on `to` at `place`.
    fn pending(id: u32, to: &mpsc::SyncSender<(usize, Result<Book>)>, place: usize) -> Queued {
        let asked = Asked { id, write: Write::Purchase, order: None };
        Queued::Write(Pending { asked, reply: Reply { to: to.clone(), place }, trace: None, came: Instant::now() })
    }

    /// A writer's queue as the node makes it: where writes are sent, where their answers
    /// go and come, and the writer's end.
    #[allow(clippy::type_complexity)]
    fn writer_queue() -> (
        mpsc::SyncSender<Queued>,
        mpsc::SyncSender<(usize, Result<Book>)>,
        mpsc::Receiver<(usize, Result<Book>)>,
        Waiting,
    ) {
        let (writes, queue) = mpsc::sync_channel(16);
        let (to, answers) = mpsc::sync_channel(16);
        (writes, to, answers, Waiting { queue, held: None, owed: false, kept: VecDeque::new() })
    }

    fn ids(waiting: &mut Waiting) -> Vec<u32> {
        std::iter::from_fn(|| waiting.more()).map(|p| p.asked.id).collect()
    }

    /// Writes that come before writes open are kept in the order they came, a wake is no
    /// write, the ones kept too long are refused with the reason (and only
    /// they), and once open the kept ones go first, then the queue.
    #[test]
    fn writes_before_the_opening_wait_in_order_and_the_old_are_refused() {
        let (writes, to, answers, mut waiting) = writer_queue();
        let short = Duration::from_millis(1);
        writes.send(pending(1, &to, 0)).unwrap();
        writes.send(Queued::Wake).unwrap();
        writes.send(pending(2, &to, 1)).unwrap();
        for _ in 0..3 {
            waiting.hold(short).unwrap();
        }
        assert_eq!(waiting.kept.len(), 2, "a wake is no write");
        let between = Instant::now();
        std::thread::sleep(short);
        writes.send(pending(3, &to, 2)).unwrap();
        waiting.hold(short).unwrap();
        waiting.refuse_kept_since(between, || Error::Unavailable("still comparing".into()));
        let refused: Vec<(usize, Result<Book>)> = answers.try_iter().collect();
        assert_eq!(refused.iter().map(|(place, _)| *place).collect::<Vec<_>>(), [0, 1]);
        assert!(refused.iter().all(|(_, a)| matches!(a, Err(Error::Unavailable(why)) if why == "still comparing")));
        writes.send(Queued::Wake).unwrap();
        writes.send(pending(4, &to, 3)).unwrap();
        assert!(waiting.any(), "a kept write waits");
        assert_eq!(ids(&mut waiting), [3, 4], "the kept one first, then the queue, past the wake");
        assert!(!waiting.any());
        writes.send(Queued::Wake).unwrap();
        assert!(waiting.first(short).is_err(), "a wake is no write once open either");
        drop(writes);
        assert_eq!(waiting.hold(short), Err(mpsc::RecvTimeoutError::Disconnected));
    }

    /// A write a batch took early is kept first when the gate closes; the writes due leave
    /// together whatever their place among the kept (requests send concurrently, so the
    /// queue's order is not always the order of `came`), in the order they were sent.
    #[test]
    fn a_write_taken_early_is_kept_first_and_a_requests_writes_leave_together() {
        let (writes, to, _answers, mut waiting) = writer_queue();
        let short = Duration::from_millis(1);
        let (t1, t2) = (Instant::now(), Instant::now() + Duration::from_secs(1));
        let at = |q: Queued, came: Instant| match q {
            Queued::Write(p) => Queued::Write(Pending { came, ..p }),
            word => word,
        };
        writes.send(at(pending(1, &to, 0), t1)).unwrap();
        writes.send(at(pending(2, &to, 1), t1)).unwrap();
        writes.send(at(pending(3, &to, 2), t2)).unwrap();
        writes.send(at(pending(4, &to, 3), t1)).unwrap();
        assert!(waiting.any(), "write 1 taken early, as a batch's end does");
        waiting.keep_held();
        waiting.hold(short).unwrap();
        assert_eq!(waiting.kept.len(), 4, "one turn keeps everything queued");
        let due: Vec<u32> = waiting.take_kept_since(t1).iter().map(|p| p.asked.id).collect();
        assert_eq!(due, [1, 2, 4], "the held one first, and 4 with its request though 3 came between");
        assert_eq!(ids(&mut waiting), [3]);
    }

    /// A write taken as the leadership turned unwritable is kept first, and the writes
    /// that waited their whole wait leave in the order they came, the others stay.
    #[test]
    fn a_write_taken_too_soon_goes_first_and_the_overdue_leave_in_order() {
        let (writes, to, _answers, mut waiting) = writer_queue();
        let short = Duration::from_millis(1);
        writes.send(pending(1, &to, 0)).unwrap();
        writes.send(pending(2, &to, 1)).unwrap();
        let first = waiting.first(short).unwrap();
        assert_eq!(first.asked.id, 1);
        waiting.held = Some(first);
        waiting.keep_held();
        waiting.hold(short).unwrap();
        let between = Instant::now();
        std::thread::sleep(short);
        writes.send(pending(3, &to, 2)).unwrap();
        waiting.hold(short).unwrap();
        let overdue: Vec<u32> = waiting.take_kept_since(between).iter().map(|p| p.asked.id).collect();
        assert_eq!(overdue, [1, 2]);
        assert_eq!(ids(&mut waiting), [3]);
    }
}
