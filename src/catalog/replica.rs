//! The replica's side of replication: applying pushes, catching up, and its read lease.
//!
//! A replica that starts, or that its primary asks to (`POST /internal/resync`), catches
//! up by itself: it asks the primary for the writes after its own last one
//! (`GET /internal/log`), and when the primary no longer has them, or has another history,
//! it copies the whole catalog page by page (`GET /internal/books`, each page read at its
//! own moment) and then applies the primary's writes after the first page's sequence
//! number, and takes the primary's purchase journal up to its last write in place of its
//! own (`GET /internal/purchases`). Every log row and push carries a book's whole state, so replaying writes over a
//! copy that already reflects some of them ends in exactly the primary's state. Nothing is
//! bounded by the public body limit (pages are answers, not requests) and nothing holds the
//! catalog twice: the replica's own copy is dropped before a full copy starts.
//!
//! It serves reads once caught up; with read leases on, only while the primary, which
//! brings it in sync under its writer lock, grants it a lease.

use super::core::{
    self,
    replica::{Position, PushRefused, TipAnswer, TipVerdict},
};
use super::failover::commit;
use super::node::{CatalogNode, COPY_PAGE};
use super::recent::Journal;
use super::state::Catalog;
use super::store::Ledger;
use crate::client::{CatalogClient, LogQuery, PeerError};
use crate::error::{Error, Result};
use crate::shutdown::Shutdown;
use crate::wire::{Identity, LeaseRequest, LogPage, ReplicaAck, Replicate};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

impl CatalogNode {
    pub(super) fn start_replica(self: &Arc<Self>, shutdown: &Shutdown) {
        self.catch_up_wanted.store(true, Ordering::SeqCst);
        let (node, stop) = (Arc::clone(self), shutdown.clone());
        std::thread::spawn(move || node.catch_up(&stop));
        if self.leases() {
            let (node, stop) = (Arc::clone(self), shutdown.clone());
            std::thread::spawn(move || node.renew_lease(&stop));
        }
    }

    /// Background: catches up whenever asked to (at start, or by the primary), from the
    /// primary's log, or with a whole copy when the log cannot serve.
    fn catch_up(&self, shutdown: &Shutdown) {
        let client = CatalogClient { http: self.forward.clone() };
        loop {
            // With etcd the primary changes; none while an election is under way.
            let primary = self.primary_url();
            if let (true, Some(primary)) = (self.catch_up_wanted.load(Ordering::SeqCst), primary) {
                match self.catch_up_once(&client, &primary) {
                    Ok(()) => {
                        log::info!("caught up with the primary at write {}", self.state().seq());
                        self.catch_up_wanted.store(false, Ordering::SeqCst);
                        self.serving.store(true, Ordering::SeqCst);
                    }
                    Err(Error::Conflict(why))
                        if *self.copy_refused.lock().unwrap_or_else(|e| e.into_inner()) == why =>
                    {
                        // Refused to copy a catalog that holds less: said once already.
                    }
                    Err(e) => {
                        self.kick_election();
                        log::warn!("catching up with the primary {primary}: {e}")
                    }
                }
            }
            self.keep_mark();
            if shutdown.sleep(super::node::RETRY_INTERVAL) {
                return;
            }
        }
    }

    /// Writes a divergence mark that the disk did not take when it was made (it held in
    /// memory meanwhile); a failure was said then.
    fn keep_mark(&self) {
        if let Ok(true) = self.lock_writer().files.keep_mark() {
            log::info!("the divergence mark is on disk now (catalog.diverged)");
        }
    }

    fn catch_up_once(&self, client: &CatalogClient, primary: &str) -> Result<()> {
        loop {
            let tip = self.tip();
            // The primary answers 410 when its write `seq` is of another epoch: this log
            // holds writes past where the two agree (never acknowledged), and the whole
            // copy drops them. With static roles it answers 409 when its log differs up to
            // there: its disk lost writes this replica holds (README, "A disk that comes
            // back empty or older"); this replica keeps them and serves nothing.
            let page = self.judge_answer(primary, &tip, client.log(primary, &tip.question(None)), Taking::Writes)?;
            match page {
                // A page's number is the primary's readable one (taken under its writer
                // lock): committed, so this replica shows its writes up to there.
                Some(page) if page.writes.is_empty() && page.seq <= tip.seq => {
                    self.check_epoch(page.epoch)?;
                    let store = self.lock_writer();
                    self.show_committed(&store, page.seq)?;
                    return Ok(());
                }
                Some(page) => {
                    self.check_epoch(page.epoch)?;
                    self.apply(page.writes, Some(page.seq), page.epoch)?;
                }
                None => return self.copy_catalog(client, primary),
            }
        }
    }

    /// Copies the whole catalog from `source` (the primary; with static roles, for a primary
    /// that starts behind, a replica): pages, then the writes made meanwhile.
    pub(super) fn copy_catalog(&self, client: &CatalogClient, source: &str) -> Result<()> {
        self.copying.store(true, Ordering::SeqCst);
        let copied = self.copy_whole(client, source);
        if copied.is_err() {
            // Never serve or lead with half a copy (with etcd this catalog may be elected;
            // a primary settling may go on with its own): the log on disk is whole; reload it.
            let mut store = self.lock_writer();
            match store.reload() {
                Ok(catalog) => *self.state_mut() = catalog,
                Err(e) => log::error!("cannot reload the catalog after a failed copy: {e}"),
            }
        }
        self.copying.store(false, Ordering::SeqCst);
        copied
    }

    /// Where this catalog's log ends, as another catalog compares it.
    pub(super) fn tip(&self) -> Tip {
        let store = self.lock_writer();
        let seq = self.logged(&store);
        // With static roles, its log's chain and its last write's fingerprint, when known.
        let kept = Some(&store.recent.history).filter(|_| self.failover.is_none());
        Tip {
            seq,
            history: store.history_id().to_string(),
            epoch: store.last_epoch(),
            sum: kept.and_then(|h| h.at(seq)).map(|w| w.fingerprint()),
            chain: kept.and_then(|h| h.chain()),
        }
    }

    /// Judges `source`'s `answer` to a question about this catalog's `tip`
    /// (`core::replica::judge_tip`) and does what the verdict says of the divergence mark:
    /// the page to take (None: a whole copy), or why nothing is taken; `taking` says what
    /// the question was for (the writes after this log's, or a whole copy). A diverged log keeps
    /// its writes, out of sync, and says so once; a replica marks it on its disk
    /// (`catalog.diverged`): once the primary no longer keeps the writes that told them
    /// apart, a question could no longer tell, and a copy would drop these (a primary
    /// settling only refuses the copy). A mark the disk does not take holds in memory, and
    /// is written once the disk takes it (`keep_mark`).
    fn judge_answer(
        &self,
        source: &str,
        tip: &Tip,
        answer: std::result::Result<Option<LogPage>, PeerError>,
        taking: Taking,
    ) -> Result<Option<LogPage>> {
        let (heard, page, message) = match answer {
            Err(PeerError::Answered { status: 409, message }) => (TipAnswer::Diverged, None, message),
            Err(e) => return Err(e.into()),
            Ok(page) => {
                let heard = page.as_ref().map_or(TipAnswer::Unkept, |p| TipAnswer::Page { chain: p.chain });
                (heard, page, String::new())
            }
        };
        let mut store = self.lock_writer();
        let mark = store.files.diverged_from(&tip.history);
        let replica = self.replica_only().is_ok();
        match core::replica::judge_tip(tip.chain, heard, mark.is_some(), replica) {
            TipVerdict::Diverged { mark } => {
                let why = format!(
                    "the primary {source} holds other writes than this replica up to its write {}: the logs \
                     diverged, and this replica keeps its writes, out of sync ({message})",
                    tip.seq
                );
                super::node::say_once(&self.copy_refused, &why);
                if mark {
                    if let Err(e) = store.files.mark_diverged(&why) {
                        log::error!(
                            "the divergence could not be marked on disk ({e}): it holds while this process runs, and \
                             is written once the disk takes it"
                        );
                    }
                }
                Err(Error::Conflict(why))
            }
            TipVerdict::Refuse => {
                let mark = mark.unwrap_or_default();
                let why = match (taking, &page) {
                    (Taking::Writes, Some(_)) => format!("not taking {source}'s writes after this log's: {mark}"),
                    _ => format!(
                        "not copying {source}'s catalog over this one: {mark}; it keeps its writes and serves nothing \
                         (see README, \"A disk that comes back empty or older\")"
                    ),
                };
                super::node::say_once(&self.copy_refused, &why);
                Err(Error::Conflict(why))
            }
            TipVerdict::Take { agreed } => {
                if agreed && store.files.marked() {
                    match store.files.clear_diverged() {
                        Ok(()) => log::info!(
                            "the primary {source}'s log agrees with this one's up to write {}: the divergence mark is \
                             removed",
                            tip.seq
                        ),
                        Err(e) => log::error!("the divergence mark could not be removed: {e}"),
                    }
                }
                Ok(page)
            }
        }
    }

    /// With static roles, before this catalog's log, of `source`'s history, is dropped for
    /// a whole copy of `source`: whether it may be. It asks with its tip (no writes sent
    /// back) and judges the answer (`judge_answer`): a 409 refuses the copy (and marks a
    /// replica), an answer whose chain is this one's lets it go on (and clears a mark),
    /// otherwise (410: `source` no longer keeps that write, and nothing tells) a mark
    /// refuses it, and without one it goes on. A question that fails is no answer: no copy
    /// this time.
    fn judge_copy(&self, client: &CatalogClient, source: &str) -> Result<()> {
        let tip = self.tip();
        self.judge_answer(source, &tip, client.log(source, &tip.question(Some(0))), Taking::Copy).map(|_| ())
    }

    fn copy_whole(&self, client: &CatalogClient, primary: &str) -> Result<()> {
        let started = Instant::now();
        let first = client.copy_page(primary, 0, COPY_PAGE)?;
        let (own, source) =
            (self.identity(), Identity { history: first.history.clone(), seq: first.seq, epoch: first.epoch });
        if !own.may_be_replaced_by(&source, self.failover.is_none()) {
            // Data never flows backwards: the source lost writes this catalog holds.
            let why = format!(
                "{primary} holds {source}, less than this catalog ({own}): not copied over it; this catalog serves \
                 nothing until an operator decides (see README, \"Storage faults\")"
            );
            super::node::say_once(&self.copy_refused, &why);
            return Err(Error::Conflict(why));
        }
        if self.failover.is_none() && source.history == own.history && own.seq > 0 {
            self.judge_copy(client, primary)?;
        }
        self.serving.store(false, Ordering::SeqCst);
        // Reads are refused from now on: drop this catalog's copy before taking the new one.
        *self.state_mut() = Catalog::default();
        // Each page goes into the catalog as it comes: the copy is never held twice.
        let (history, mut more) = (first.history, first.more);
        let mut after = first.books.last().map_or(0, |b| b.id);
        let (mut epoch, mut chain) = (first.epoch, first.chain);
        let mut catalog = Catalog::new(first.books, first.seq).map_err(Error::Internal)?;
        while more {
            let page = client.copy_page(primary, after, COPY_PAGE)?;
            if page.history != history {
                return Err(Error::Unavailable("the primary's history changed during the copy".into()));
            }
            after = page.books.last().map_or(after, |b| b.id);
            for book in page.books {
                catalog.insert_new(book).map_err(Error::Internal)?;
            }
            more = page.more;
        }
        loop {
            let question = LogQuery { after: catalog.seq(), history: &history, epoch, ..LogQuery::default() };
            let page = client.log(primary, &question)?.ok_or_else(|| {
                Error::Unavailable("the primary no longer has the writes made during the copy".into())
            })?;
            if page.writes.is_empty() {
                break;
            }
            self.check_epoch(page.epoch)?;
            for w in &page.writes {
                // The log continues at the copy's last write (a page holds writes in order).
                chain = chain.filter(|_| w.seq == catalog.seq() + 1).map(|c| w.chain(c));
                catalog.commit(w.book.clone(), w.seq);
                epoch = w.epoch;
            }
        }
        let journal = Self::copy_journal(client, primary, catalog.seq())?;
        let mut store = self.lock_writer();
        // On failure the ledger is as it was, its own journal kept.
        store.replace(&catalog, &history, epoch, chain, journal)?;
        log::info!(
            "copied {} books from {primary} at write {} in {:?}",
            catalog.len(),
            catalog.seq(),
            started.elapsed()
        );
        *self.state_mut() = catalog;
        self.counters.copies.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// The primary's purchase journal up to write `upto` (the copy's last), page by page
    /// (`GET /internal/purchases`): a whole copy takes it in place of its own, so that the
    /// orders journaled here are exactly those journaled there (pushes journal the rest).
    fn copy_journal(client: &CatalogClient, primary: &str, upto: u64) -> Result<Journal> {
        let (mut journal, mut after) = (Journal::default(), 0);
        loop {
            let page = client.journal(primary, after)?;
            let last = page.purchases.last().map(|p| p.seq);
            page.purchases.into_iter().filter(|p| p.seq <= upto).for_each(|p| journal.push(p));
            match last {
                Some(seq) if page.more && seq < upto => after = seq,
                _ => return Ok(journal),
            }
        }
    }

    /// Applies a batch of pushed writes, in order, with one fsync; answers where it stands
    /// (the last write it logged). A batch with a book of id 0 (no write makes one) is
    /// refused whole.
    ///
    /// A write stays pending (on disk, *dirty*, not readable) until the commit point
    /// `committed` reaches it (see [`super::failover::commit`]); `None` there commits
    /// nothing new. A read that meets a dirty book asks the primary what is committed
    /// (`CatalogNode::ask_committed`), so no read shows a write before the primary does.
    ///
    /// `epoch` is the sender's: checked again under the writer lock (a push that passed
    /// the first check may have waited while a newer primary's came in), and no write is
    /// logged after one of a newer epoch (a deposed primary's write would take the number
    /// the new primary's needs): both are refused (409) and counted as stale.
    pub fn apply(&self, pushes: Vec<Replicate>, committed: Option<u64>, epoch: u64) -> Result<ReplicaAck> {
        let mut span = crate::trace::span("catalog.apply");
        span.attr("writes", pushes.len()).attr("epoch", epoch);
        let mut store = self.lock_writer();
        let take = match core::replica::take(self.position(&store), epoch, committed, pushes) {
            Ok(take) => take,
            Err(PushRefused::NoBookZero { seq }) => {
                return Err(Error::BadRequest(format!("write {seq}: a book has no id 0")));
            }
            Err(PushRefused::Stale(why)) => {
                self.counters.stale_refused.fetch_add(1, Ordering::Relaxed);
                return Err(Error::Stale(why));
            }
        };
        // A push comes from a running primary: any lease extended while none ran ends, and
        // leases come from grants again.
        self.lease().reset_if_extended();
        let marked = || store.files.diverged_from(store.history_id()).is_some();
        if !take.log.is_empty() && self.failover.is_none() && marked() {
            // Marked diverged: it takes writes after its own only once its catch-up has
            // seen the primary's log agree with its own up to its last write.
            self.catch_up_wanted.store(true, Ordering::SeqCst);
            return Err(Error::Unavailable(
                "this replica's log is marked diverged from its primary's (catalog.diverged): it compares the two \
                 before it takes writes"
                    .into(),
            ));
        }
        // Nothing is applied in memory before it is on disk.
        if !take.log.is_empty() {
            let rows: Vec<Arc<Replicate>> = take.log.into_iter().map(Arc::new).collect();
            store.log(&rows)?;
            // Dirty until committed: a read that meets one of these books asks the primary.
            let mut state = self.state_mut();
            for w in &rows {
                state.mark_dirty(&w.book, w.seq);
            }
        }
        self.show_upto(&store, take.show_upto)?;
        if self.state().seq() == self.logged(&store) {
            // A checkpoint holds the readable catalog: never one with writes pending (it
            // checkpoints only when the log has grown enough).
            store.after_write(&self.state());
        }
        *self.last_push.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        Ok(ReplicaAck {
            seq: self.logged(&store),
            replica_id: self.replica_id.clone(),
            history: store.history_id().to_string(),
            epoch: store.last_epoch(),
            chain: store.recent.history.chain(),
        })
    }

    /// Where this replica's log stands, for the core's decisions. Called under the writer
    /// lock.
    fn position(&self, store: &Ledger) -> Position {
        let newest_epoch =
            self.epoch.load(Ordering::SeqCst).max(self.failover.as_ref().map_or(0, |f| f.core().epoch()));
        Position {
            logged: self.logged(store),
            last_epoch: store.last_epoch(),
            readable: self.state().seq(),
            newest_epoch,
        }
    }

    /// The number of the last write logged here, pending ones included.
    pub(super) fn logged(&self, store: &Ledger) -> u64 {
        store.recent.history.last().0
    }

    /// Makes the writes logged here readable up to the commit point `committed` (never past
    /// what is logged, never back). Called under the writer lock.
    pub(super) fn show_committed(&self, store: &Ledger, committed: u64) -> Result<()> {
        let upto = commit::readable_upto(self.state().seq(), store.recent.history.last().0, committed);
        self.show_upto(store, upto)
    }

    /// Makes the writes logged here readable up to `upto`, as the core decided (at most
    /// what is logged). Called under the writer lock.
    fn show_upto(&self, store: &Ledger, upto: u64) -> Result<()> {
        let readable = self.state().seq();
        if upto <= readable {
            return Ok(());
        }
        let writes = store.recent.history.after(readable, (upto - readable) as usize).ok_or_else(|| {
            Error::Internal(format!("the writes pending after {readable} are no longer kept in memory"))
        })?;
        let mut state = self.state_mut();
        for w in writes.iter().take_while(|w| w.seq <= upto) {
            state.commit(w.book.clone(), w.seq);
        }
        Ok(())
    }

    /// The catalog to read from: as it is, unless the read meets a write pending here
    /// (`dirty`), in which case the primary is asked which writes are committed first (see
    /// [`CatalogNode::ask_committed`]): a read never shows a write before the primary does,
    /// nor an older state than one the primary showed before the read began.
    pub(super) fn clean(&self, dirty: impl Fn(&Catalog) -> bool) -> Result<std::sync::RwLockReadGuard<'_, Catalog>> {
        let primary = self.role() == super::config::Role::Primary;
        let state = self.state();
        if primary || !dirty(&state) {
            return Ok(state);
        }
        drop(state);
        self.ask_committed()?;
        Ok(self.state())
    }

    /// CRAQ's version query: a read that meets a write pending here asks the primary up to
    /// which write is committed, and shows the writes logged here up to there before it
    /// answers. The primary's answer counts only from the primary whose lease this replica
    /// holds (its log is a prefix of that primary's) and only if this replica has every
    /// write it names; otherwise the read is refused (503) and asked elsewhere.
    pub(super) fn ask_committed(&self) -> Result<()> {
        let primary = self.primary_url().ok_or_else(|| Error::Unavailable("no primary known now".into()))?;
        self.counters.version_queries.fetch_add(1, Ordering::Relaxed);
        let committed = self.push.committed(&primary)?;
        let leased = self.leases().then(|| self.lease().epoch());
        let store = self.lock_writer();
        let upto =
            core::replica::version_answer(self.position(&store), &committed, leased).map_err(Error::Unreadable)?;
        self.show_upto(&store, upto)
    }

    /// Background: asks for a read lease every quarter of its length.
    fn renew_lease(&self, shutdown: &Shutdown) {
        let request = LeaseRequest { replica_id: self.replica_id.clone() };
        let mut refused_before = false;
        loop {
            let Some(primary) = self.primary_url() else {
                // The primary itself, or none known now (an election).
                if shutdown.sleep(self.config.lease / 4) {
                    return;
                }
                continue;
            };
            let asked = Instant::now();
            // The grant's epoch is checked before the lease is locked: the check may step this
            // catalog down, which revokes its etcd lease over HTTP, and the lease lock is
            // held only briefly (every read's check takes it).
            let answer = self.push.lease(&primary, &request).map(|grant| {
                let checked = self.check_epoch(grant.epoch);
                (grant, checked)
            });
            let mut lease = self.lease();
            match answer {
                Ok((grant, checked)) => match checked {
                    Ok(()) => {
                        lease.granted(asked, grant.epoch, grant.run);
                        refused_before = false;
                        self.counters.lease_renewals.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        // A grant of a primary that was replaced vouches for nothing.
                        self.counters.lease_renewal_failures.fetch_add(1, Ordering::Relaxed);
                        log::warn!("lease not taken: {e}");
                    }
                },
                Err(PeerError::Unreachable { refused, .. }) => {
                    // Extends nothing, refused or not: a refused connection may come from a
                    // one-way partition in front of a primary that is alive and acknowledging
                    // writes (see `lease.rs`). Only a grant, or its farewell, extends a lease.
                    self.counters.lease_renewal_failures.fetch_add(1, Ordering::Relaxed);
                    if refused && !refused_before {
                        log::warn!(
                            "the primary {primary} refused the lease renewal: no lease is extended by a refusal \
                             (a one-way partition refuses too); reads stop here when the lease runs out"
                        );
                    }
                    refused_before = refused;
                    if refused && self.failover.is_some() {
                        // With etcd a new primary may take over at once: an election is
                        // looked at (etcd, not the refusal, decides who leads).
                        self.kick_election();
                    }
                }
                Err(PeerError::Answered { status: 503, .. }) => {
                    self.counters.lease_renewal_failures.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    // The primary answered, without a grant.
                    lease.answered(asked);
                    self.counters.lease_renewal_failures.fetch_add(1, Ordering::Relaxed);
                    log::debug!("lease not renewed: {e}");
                }
            }
            drop(lease);
            if shutdown.sleep(self.config.lease / 4) {
                return;
            }
        }
    }
}

/// What a question about a replica's tip is for: the writes after its log (a catch-up),
/// or the source's catalog whole over it.
#[derive(Clone, Copy)]
enum Taking {
    Writes,
    Copy,
}

/// Where a catalog's log ends, as another catalog's log is asked to compare with it
/// (`GET /internal/log`): its last write, that write's epoch, and with static roles its
/// fingerprint and the log's chain there (when known).
pub(super) struct Tip {
    pub(super) seq: u64,
    pub(super) history: String,
    pub(super) epoch: u64,
    sum: Option<u32>,
    chain: Option<u32>,
}

impl Tip {
    /// Whether the question carries something to compare (a fingerprint or a chain).
    pub(super) fn compares(&self) -> bool {
        self.sum.is_some() || self.chain.is_some()
    }

    /// The question after this tip, for at most `limit` writes (a page when None).
    pub(super) fn question(&self, limit: Option<usize>) -> LogQuery<'_> {
        LogQuery { after: self.seq, history: &self.history, epoch: self.epoch, sum: self.sum, chain: self.chain, limit }
    }
}
