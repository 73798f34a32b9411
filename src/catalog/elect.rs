//! The etcd side of failover: the catalog's election thread and the effects of the role
//! core (`failover/`) performed. The core decides; this file talks to etcd through
//! `etcd_side.rs` (the keys, their records, the transactions) and changes the node's role,
//! links and flags as told.
//!
//! The election thread keeps this catalog's etcd lease alive (every `T/3`) with its
//! `members/<hex of its URL>` key bound to it, reads `leader`, `epoch` and `sync` (every
//! `T/4`, and at once when a peer call failed), feeds what it saw to the core, and ticks
//! it. A primary also derives its replicas from the members (and the in-sync record).
//!
//! Invariant: every write to `leader`, `epoch` or `sync` is one etcd transaction that
//! compares what it read (a campaign: `leader` absent, `sync` and `epoch` unchanged; a
//! change of `sync` by the primary: `sync` unchanged since its last write), so a primary
//! that was replaced can change nothing in etcd.
//!
//! Invariant: a new primary decides no write before memcached was flushed after its
//! election (the old primary may have died before invalidating what it acknowledged).

use super::config::Role;
use super::etcd_side::{member_key, Failover, MEMBERS};
use super::failover::{commit, Effect, Input, SyncSet};
use super::lease::Grant;
use super::node::{CatalogNode, ReplicaLink};
use super::refusal::NoLead;
use crate::cache;
use crate::client::{Answer, PeerError};
use crate::error::{Error, Result};
use crate::etcd::EtcdError;
use crate::shutdown::Shutdown;
use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};
use ureq::http::Method;

/// Pause before a grant or keepalive that failed is tried again.
const ETCD_RETRY: Duration = Duration::from_millis(200);
/// The election thread's step.
const STEP: Duration = Duration::from_millis(50);
/// A forwarded write whose primary was replaced is answered 503 once it has waited this
/// long plus a lease (a frozen primary); a quicker one is a switchover's, which the old
/// primary passes on once the target is writable (up to a lease: the front ends'
/// near-cache leases end first).
const WATCH_GRACE: Duration = Duration::from_secs(1);

/// Says once that etcd fails (then only at debug level, until it answers again).
fn etcd_failed(failing: &mut bool, what: &str, e: EtcdError) {
    match failing {
        false => log::warn!("{what}: {e} (trying again every {ETCD_RETRY:?})"),
        true => log::debug!("{what}: {e}"),
    }
    *failing = true;
}

impl CatalogNode {
    pub(super) fn etcd_side(&self) -> &Failover {
        self.failover.as_ref().expect("called with etcd only")
    }

    /// Starts the election thread.
    pub(super) fn start_election(self: &Arc<Self>, shutdown: &Shutdown) {
        *self.etcd_side().shutdown.lock().unwrap_or_else(|e| e.into_inner()) = Some(shutdown.clone());
        let (node, stop) = (Arc::clone(self), shutdown.clone());
        std::thread::Builder::new()
            .name("election".into())
            .spawn(move || node.elect(&stop))
            .expect("a thread can start");
        if self.cache.is_some() {
            let (node, stop) = (Arc::clone(self), shutdown.clone());
            std::thread::spawn(move || node.flush_after_election(&stop));
        }
    }

    /// Background, with a cache: once this catalog is elected, flushes memcached (writes
    /// wait for it, see [`CatalogNode::cache_flushed`]): the old primary may have died
    /// before invalidating writes it acknowledged, or with markers still pending in its
    /// memory, and their old entries would be served after the acknowledgement. Flushes
    /// once more after [`cache::FILL_WINDOW`], as after an import: a read that began before
    /// may still store an old answer in between. Reads meanwhile fill from this primary's
    /// committed state, which is right.
    fn flush_after_election(&self, shutdown: &Shutdown) {
        let Some(cache) = &self.cache else { return };
        let mut again: Option<Instant> = None;
        while !shutdown.sleep(STEP) {
            let maybe = self.cache_flushed.load(Ordering::SeqCst) != self.term() || again.is_some();
            if self.role() != Role::Primary || !maybe {
                continue;
            }
            // Decided again under the writer lock, between batches: a primary deposed
            // meanwhile flushes nothing (its flush could wipe the next primary's markers).
            let writer = self.lock_writer();
            let epoch = self.term();
            let elected = self.role() == Role::Primary && self.cache_flushed.load(Ordering::SeqCst) != epoch;
            // The second flush only while still leading (a new primary flushes twice itself).
            let due = again.filter(|at| Instant::now() >= *at).is_some() && self.may_acknowledge().is_ok();
            if !elected && !due {
                continue;
            }
            let flushed = cache.adopt_history(writer.history_id(), true);
            drop(writer);
            match flushed {
                Ok(_) if elected => {
                    log::info!("flushed memcached after the election of epoch {epoch}");
                    self.cache_flushed.store(epoch, Ordering::SeqCst);
                    again = Some(Instant::now() + cache::FILL_WINDOW);
                }
                Ok(_) => again = None,
                Err(e) => {
                    log::warn!("cannot flush memcached after an election ({e}); trying again");
                    shutdown.sleep(cache::BACKOFF);
                }
            }
        }
    }

    /// With etcd and a cache: whether memcached was flushed since this catalog's election
    /// (always with static roles or no cache). Writes are decided only then.
    pub(super) fn cache_flushed(&self) -> std::result::Result<(), NoLead> {
        let Some(f) = self.failover.as_ref().filter(|_| self.cache.is_some()) else { return Ok(()) };
        match self.cache_flushed.load(Ordering::SeqCst) == f.core().epoch() {
            true => Ok(()),
            false => Err(NoLead::CacheNotFlushed),
        }
    }

    /// Asks the election thread to read etcd now (a primary did not answer).
    pub(super) fn kick_election(&self) {
        if let Some(f) = &self.failover {
            f.kick.store(true, Ordering::SeqCst);
        }
    }

    /// The election thread: lease, observation, tick, effects.
    fn elect(self: &Arc<Self>, shutdown: &Shutdown) {
        let f = self.etcd_side();
        let (mut kept, mut seen, mut registered): (Option<Instant>, Option<Instant>, Option<i64>) = (None, None, None);
        // The last grant or keepalive tried, and whether etcd is failing (said once).
        let (mut tried, mut failing): (Option<Instant>, bool) = (None, false);
        // Whether it may run for primary, as last said (a change to "not" is logged).
        let mut eligible: Option<std::result::Result<(), String>> = None;
        while !shutdown.is_set() {
            let lease = f.core().lease();
            let now = Instant::now();
            let due = tried.is_none_or(|t| now >= t + ETCD_RETRY);
            let answered = match lease {
                None if due => {
                    tried = Some(now);
                    match f.etcd.grant(f.ttl) {
                        Ok(id) => {
                            self.feed(Input::KeptAlive { lease: id, sent: now });
                            kept = Some(now);
                            true
                        }
                        Err(e) => {
                            etcd_failed(&mut failing, "cannot get an etcd lease", e);
                            false
                        }
                    }
                }
                Some(id) if due && kept.is_none_or(|k| now >= k + f.ttl / 3) => {
                    tried = Some(now);
                    match f.etcd.keep_alive(id) {
                        Ok(Some(_)) => {
                            self.feed(Input::KeptAlive { lease: id, sent: now });
                            kept = Some(now);
                            true
                        }
                        Ok(None) => {
                            log::warn!("this catalog's etcd lease is gone");
                            self.feed(Input::LeaseGone);
                            true
                        }
                        Err(e) => {
                            etcd_failed(&mut failing, "cannot renew the etcd lease", e);
                            false
                        }
                    }
                }
                _ => false,
            };
            if answered && std::mem::take(&mut failing) {
                log::info!("etcd answers again");
            }
            if let Some(id) = f.core().lease().filter(|id| registered != Some(*id)) {
                match f.etcd.put(&member_key(&f.me), f.me.as_bytes(), Some(id)) {
                    Ok(()) => registered = Some(id),
                    Err(e) => log::warn!("cannot register as a member: {e}"),
                }
            }
            if f.kick.swap(false, Ordering::SeqCst) || seen.is_none_or(|s| now >= s + f.ttl / 4) {
                seen = Some(now);
                if self.role() != Role::Primary {
                    // What its eligibility is judged on (a primary's data does not move back).
                    let data = self.identity();
                    self.feed(Input::Data(data));
                }
                match f.observe() {
                    Ok(observed) => {
                        self.feed(Input::Observed(observed));
                        if self.role() == Role::Primary {
                            self.refresh_links();
                        }
                    }
                    Err(e) => log::debug!("cannot read etcd: {e}"),
                }
                let now_eligible = {
                    let core = f.core();
                    core.sync().map(|_| core.eligible())
                };
                if now_eligible != eligible {
                    if let Some(Err(why)) = &now_eligible {
                        // A catalog that never took a write (a new one, an emptied disk)
                        // copies the store's catalog: expected, not a warning.
                        match self.identity().is_empty() {
                            true => log::info!("not eligible for primary until it copies the store's catalog: {why}"),
                            false => log::warn!("not eligible for primary: {why}"),
                        }
                    }
                    eligible = now_eligible;
                }
            }
            self.feed(Input::Tick);
            shutdown.sleep(STEP);
        }
    }

    /// One input to the core, and its effects performed.
    pub(super) fn feed(&self, input: Input) {
        let effects = self.etcd_side().core().step(input, Instant::now());
        self.perform(effects);
    }

    /// Performs the core's effects (and those of the inputs they lead to).
    pub(super) fn perform(&self, effects: Vec<Effect>) {
        let Some(f) = &self.failover else { return };
        let mut queue = VecDeque::from(effects);
        while let Some(effect) = queue.pop_front() {
            match effect {
                Effect::Bootstrap | Effect::Campaign { .. } if self.copying.load(Ordering::SeqCst) => {
                    // Half a copy in memory: never lead with it.
                    queue.extend(f.core().step(Input::Campaigned { won: None }, Instant::now()));
                }
                Effect::Bootstrap => {
                    let (history, floor) = (self.identity().history, self.state().seq());
                    let won = f.campaign(1, None, history, floor);
                    queue.extend(f.core().step(Input::Campaigned { won }, Instant::now()));
                }
                Effect::Campaign { epoch, sync_revision, epoch_revision } => {
                    log::info!("no primary: campaigning for epoch {epoch}");
                    // The floor: this catalog's readable write, which the old primary had
                    // committed, so every member of `sync` had logged it.
                    let (history, floor) = (self.identity().history, self.state().seq());
                    let won = f.campaign(epoch, Some((sync_revision, epoch_revision)), history, floor);
                    queue.extend(f.core().step(Input::Campaigned { won }, Instant::now()));
                }
                Effect::Lead { epoch } => self.lead(epoch),
                Effect::StepDown { why } => self.step_down(&why),
                Effect::Follow { url, epoch } => {
                    log::info!("following the primary {url} (epoch {epoch})");
                    self.epoch.fetch_max(epoch, Ordering::SeqCst);
                    self.set_current(Role::Replica, Some(url), 0);
                    self.catch_up_wanted.store(true, Ordering::SeqCst);
                }
            }
        }
    }

    /// Becomes the primary of `epoch`: no replica counts as in sync until brought in sync
    /// (and recorded so in etcd) by this primary.
    fn lead(&self, epoch: u64) {
        log::warn!("this catalog is now the primary (epoch {epoch})");
        self.epoch.fetch_max(epoch, Ordering::SeqCst);
        for link in self.links() {
            *link.grant() = Grant::default();
        }
        self.catch_up_wanted.store(false, Ordering::SeqCst);
        {
            // Its in-sync record is itself alone: every write it logged is on every in-sync
            // catalog, so its pending writes are readable now (before any read, log answer
            // or write of this primary).
            let mut store = self.lock_writer();
            let upto = commit::readable_when_elected(store.recent.history.last().0);
            if let Err(e) = self.show_committed(&store, upto) {
                log::warn!("{e}: loading the catalog again from its files");
                match store.reload() {
                    Ok(catalog) => *self.state_mut() = catalog,
                    Err(e) => log::error!("cannot load the catalog again: {e}"),
                }
            }
            // Under the writer lock: a write is decided under it too, only once the node
            // carries the core's epoch (`may_acknowledge`), so none takes the old one.
            self.set_current(Role::Primary, None, epoch);
        }
        self.serving.store(true, Ordering::SeqCst);
        self.refresh_links();
    }

    /// No longer the primary: writes are refused from now on, reads until this catalog
    /// has caught up with the next primary; its etcd lease is given up.
    fn step_down(&self, why: &str) {
        let f = self.etcd_side();
        let was = self.role() == Role::Primary;
        self.set_current(Role::Replica, None, 0);
        if was {
            log::warn!("stepping down: {why}");
            self.serving.store(false, Ordering::SeqCst);
            self.catch_up_wanted.store(true, Ordering::SeqCst);
            for link in self.links() {
                link.grant().lost();
            }
        }
        let resigned = f.core().resigned();
        if let Some(lease) = resigned {
            if let Err(e) = f.etcd.revoke(lease) {
                log::warn!("cannot revoke the etcd lease (it expires by itself): {e}");
            }
        }
        f.kick.store(true, Ordering::SeqCst);
    }

    /// Primary: its replicas are the members of the store and of the in-sync record.
    fn refresh_links(&self) {
        let f = self.etcd_side();
        let members = match f.etcd.list(MEMBERS) {
            Ok(kvs) => kvs.into_iter().filter_map(|kv| String::from_utf8(kv.value).ok()),
            Err(e) => return log::debug!("cannot list the members: {e}"),
        };
        let in_sync = f.core().sync().map(|s| s.members.clone()).unwrap_or_default();
        let wanted: BTreeSet<String> = members.chain(in_sync).filter(|u| *u != f.me).collect();
        let Some(shutdown) = f.shutdown.lock().unwrap_or_else(|e| e.into_inner()).clone() else { return };
        let mut links = self.links.write().unwrap_or_else(|e| e.into_inner());
        links.retain(|l| {
            let keep = wanted.contains(&l.url);
            if !keep {
                log::info!("replica {} left", l.url);
                l.gone.store(true, Ordering::SeqCst);
            }
            keep
        });
        for url in wanted {
            if !links.iter().any(|l| l.url == url) {
                log::info!("replica {url} joined");
                let link = Arc::new(ReplicaLink::new(&url));
                links.push(Arc::clone(&link));
                if let Some(me) = self.me.upgrade() {
                    me.spawn_keeper(link, &shutdown);
                }
            }
        }
    }

    /// With etcd: whether writes should wait a little for this catalog's first writable
    /// moment (it leads, but waits out the old primary's leases or has not flushed
    /// memcached since its election yet). The writer thread keeps them meanwhile, each at
    /// most [`super::primary::LEAD_WAIT`]; anything else is decided at once (a catalog
    /// that does not lead refuses, `may_acknowledge`).
    pub(super) fn lead_pending(&self) -> bool {
        let Some(f) = &self.failover else { return false };
        // Asked before the core is locked (it locks it too).
        let flushed = self.cache_flushed().is_ok();
        let (now, core) = (Instant::now(), f.core());
        match core.may_acknowledge(now) {
            Ok(()) => !flushed,
            Err(_) => core.writes_from(now).is_some_and(|at| now < at),
        }
    }

    /// Whether a write may be decided and acknowledged now (always with static roles): with
    /// etcd, also only once this node carries the epoch the core leads (set by `lead`
    /// under the writer lock, which the caller holds).
    pub(super) fn may_acknowledge(&self) -> std::result::Result<(), NoLead> {
        let term = self.term();
        match &self.failover {
            None => Ok(()),
            Some(f) => f.core().may_decide(Instant::now(), term),
        }
    }

    /// With etcd: removes every replica of the in-sync record that did not take a batch
    /// (not in `took`) from it before the batch is acknowledged, also one added by a change
    /// whose answer was lost (in the record, not in sync here). Under the writer lock.
    pub(super) fn make_safe(&self, took: &[String]) -> std::result::Result<(), NoLead> {
        let Some(f) = &self.failover else { return Ok(()) };
        let took: Vec<&str> = took.iter().map(String::as_str).collect();
        let remove = f.core().not_taken(&took);
        for url in remove {
            self.change_sync(&url, false).map_err(|e| NoLead::SyncNotRecorded(e.to_string()))?;
            log::warn!("replica {url} is no longer recorded in sync");
        }
        Ok(())
    }

    /// With etcd: records `url` in sync (a replica brought in sync, under the writer lock).
    pub(super) fn record_in_sync(&self, url: &str) -> Result<()> {
        if self.failover.is_none() {
            return Ok(());
        }
        self.change_sync(url, true)
    }

    fn change_sync(&self, url: &str, add: bool) -> Result<()> {
        let f = self.etcd_side();
        // The floor rises to this primary's commit point: every member had logged it.
        let floor = self.state().seq();
        let change = f.core().sync_change(url, add).map(|s| SyncSet { floor: s.floor.max(floor), ..s });
        let Some(new) = change.filter(|_| self.role() == Role::Primary) else {
            return match self.role() {
                Role::Primary => Ok(()),
                Role::Replica => Err(Error::Unavailable("no longer the primary".into())),
            };
        };
        let input = match f.write_sync(&new) {
            Ok(input) => input,
            Err(e) => {
                // The outcome is unknown: the record may have changed, so the core steps
                // down rather than judge a write on a record it no longer knows.
                self.feed(Input::SyncUnknown { why: e.to_string() });
                return Err(Error::Unavailable(format!("cannot change the in-sync record in etcd: {e}")));
            }
        };
        let conflict = input == Input::SyncConflict;
        self.feed(input);
        match conflict {
            true => Err(Error::Unavailable("another primary changed the in-sync record".into())),
            false => Ok(()),
        }
    }

    /// With etcd: forwards while watching the role; when another primary is elected
    /// meanwhile (the one asked hangs, frozen or cut off), answers 503 at once instead of
    /// waiting out the timeout (the write's outcome is unknown; the old one cannot
    /// acknowledge it any more).
    pub(super) fn forward_watched(
        &self,
        method: Method,
        primary: &str,
        target: String,
        body: Option<Vec<u8>>,
    ) -> Result<std::result::Result<Answer, PeerError>> {
        let (tx, rx) = mpsc::sync_channel(1);
        let (http, url) = (self.forward.clone(), primary.to_string());
        std::thread::spawn(move || {
            let _ = tx.send(http.call(method, &url, &target, body));
        });
        let started = Instant::now();
        loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(answer) => return Ok(answer),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(Error::Internal("the forwarding thread ended without an answer".into()))
                }
                // A quick change is a switchover: the old primary passes the write on.
                Err(mpsc::RecvTimeoutError::Timeout)
                    if self.primary_url().as_deref() != Some(primary)
                        && started.elapsed() >= WATCH_GRACE + self.config.lease =>
                {
                    return Err(Error::Unavailable(format!(
                        "the primary changed while {primary} had the write; its outcome is unknown"
                    )));
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
        }
    }

    /// A write could not be made safe: this primary steps down.
    pub(super) fn give_up(&self, why: &str) {
        if self.failover.is_some() {
            self.feed(Input::GiveUp { why: why.to_string() });
        }
    }

    /// On a graceful stop with etcd: nothing more is acknowledged, and the etcd lease goes
    /// (with the leader key: the others elect at once).
    pub(super) fn resign(&self) {
        let _writer = self.lock_writer();
        self.give_up("stopping");
        let f = self.etcd_side();
        let lease = f.core().lease();
        if let Some(lease) = lease {
            let _ = f.etcd.revoke(lease);
        }
    }
}
