//! The catalog's role under failover, as states: a core that does no I/O (the model is
//! toydb's Raft node). The node feeds it inputs (what etcd holds, keepalive answers, the
//! outcome of a campaign or of a change of the in-sync record, a message of another
//! primary, the clock) through [`Core::step`] and performs the [`Effect`]s it returns; it
//! asks it, right before answering, whether a write may be acknowledged or a read lease
//! granted. Without etcd (static roles) the node does not use it.
//!
//! # The keys (in etcd, under the store's prefix)
//! - `leader`: `{"url", "epoch"}`, bound to the leader's own etcd lease (TTL `T`).
//! - `epoch`: the highest epoch ever issued; grows with every change of primary.
//! - `sync`: `{"epoch", "members", "history", "floor"}`: the catalogs that hold every
//!   acknowledged write, the store's catalog history, and a write they all had logged.
//!
//! # Invariants
//! - **One primary acknowledging at a time.** A primary acknowledges a write, and grants a
//!   read lease, only while `now < valid_until`, where `valid_until = s + 0.9 T` for `s` the
//!   moment the last successful keepalive of its etcd lease was *sent*: etcd cannot expire
//!   its leader key before `s + T`, and no other catalog can be elected before the key is
//!   gone. Past it, it holds the role but acknowledges and grants nothing until a keepalive
//!   of the same lease is answered again (etcd was down: no one else can have been
//!   elected); when etcd says the lease is gone, or it sees another leader or a newer
//!   epoch, it steps down.
//! - **Only an in-sync catalog is elected.** A follower campaigns only when no leader key
//!   exists, it is named in `sync`, and its data is of the history `sync` names and at
//!   least at its floor (Raft's election restriction: [`Core::eligible`]); the campaign is one etcd transaction that compares
//!   the revisions of `sync` and `epoch` it read, so two campaigns cannot both win.
//! - **No acknowledged write lost.** Before a primary acknowledges a write that a member of
//!   `sync` did not take, it removes it from `sync` (compare-and-swap): [`Core::not_taken`]
//!   names every member but the primary that did not acknowledge the batch (also one added
//!   by a change whose answer was lost); a read of `sync` older (by revision) than its own
//!   last change is not adopted. So every member of `sync` has every acknowledged write.
//! - **Old leases are waited out.** A new primary acknowledges nothing before
//!   `elected_at + L` (the read lease length): the old primary granted leases only while
//!   its key lived, and the key was gone before this election was answered.
//! - **Epochs fence.** A push, lease grant or log answer carries its primary's epoch; one
//!   older than the newest known is refused ([`Core::message`]), a newer one adopted (a
//!   primary that sees one steps down; a handover expected at or below it is forgotten).
//! - **Nothing unacknowledged is ever visible.** A catalog shows a write only once it is
//!   committed (on every member of `sync`): [`commit`] decides up to where.

pub mod commit;
mod handover;

pub use handover::{Handover, Settle};

use super::refusal::NoLead;
use crate::lease::{self, Held};
use crate::wire::Identity;
use std::time::{Duration, Instant};

/// TTLs an empty catalog waits before it creates a store in an empty etcd.
pub const EMPTY_BOOTSTRAP_WAIT: u32 = 2;

/// The `leader` key as observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leader {
    /// The leader's base URL.
    pub url: String,
    /// Its epoch.
    pub epoch: u64,
    /// The etcd lease the key is bound to (tells this catalog's own key from a key left by
    /// an earlier run of a catalog with the same URL).
    pub lease: i64,
}

/// The `sync` key: the catalogs that hold every acknowledged write.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct SyncSet {
    /// The epoch of the primary that wrote it.
    pub epoch: u64,
    /// Base URLs of the catalogs in sync.
    pub members: Vec<String>,
    /// etcd's `mod_revision` of the key (what a compare-and-swap compares).
    pub revision: i64,
    /// The store's catalog history (None in a record from before it was kept): a catalog
    /// of another history is never elected.
    pub history: Option<String>,
    /// A write every member had logged when the record was written (the primary's commit
    /// point then; 0 in a record from before it was kept): a catalog below it is never
    /// elected.
    pub floor: u64,
}

/// One read of the keys (all in one etcd range or transaction).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Observed {
    /// The `leader` key, if any.
    pub leader: Option<Leader>,
    /// The `epoch` key: its value and `mod_revision`, if any.
    pub epoch: Option<(u64, i64)>,
    /// The `sync` key, if any.
    pub sync: Option<SyncSet>,
}

/// What happened, as the node tells the core.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// A read of the keys in etcd.
    Observed(Observed),
    /// The keepalive (or grant) of this catalog's etcd lease `lease`, sent at `sent`, was
    /// answered: the lease lives until at least `sent + T`.
    KeptAlive {
        /// The lease.
        lease: i64,
        /// When the request was sent.
        sent: Instant,
    },
    /// etcd said this catalog's lease is gone (expired or revoked).
    LeaseGone,
    /// The campaign's transaction was answered: won (with the `sync` key it wrote) or lost.
    Campaigned {
        /// Won: the `sync` key as the transaction wrote it.
        won: Option<SyncSet>,
    },
    /// This primary changed `sync` (a compare-and-swap that succeeded) to this.
    SyncWritten(SyncSet),
    /// This primary's compare-and-swap of `sync` failed its comparison: someone else
    /// changed it, which only a newer primary does.
    SyncConflict,
    /// This primary's change of `sync` (an addition or a removal) got no answer: it may have
    /// applied, or may still apply, so the record is not known here any more. A write
    /// judged on the record known (`not_taken`) could be acknowledged while a member of the
    /// real record lacks it, and that member could be elected: the primary steps down, and
    /// the next primary is elected from the record in etcd. (Found by the simulator: an
    /// addition applied whose answer was lost, then a write the new member missed was
    /// acknowledged.)
    SyncUnknown {
        /// What etcd's client said.
        why: String,
    },
    /// This primary could not make a write safe (the in-sync record could not be changed
    /// in etcd): it holds a write it cannot acknowledge, so it steps down.
    GiveUp {
        /// Why, for the log.
        why: String,
    },
    /// How far this catalog's data got now (its log's last write): what eligibility for
    /// an election is judged on.
    Data(Identity),
    /// Switchover, on the primary: writes and grants pause (or resume, when it surely failed).
    Pause(bool),
    /// Switchover, on the paused primary: its handover's outcome was unknown; the read-back.
    Settled(Settle),
    /// Switchover, on the primary: the leader key now names `url` at `epoch`.
    HandedOver {
        /// The new primary.
        url: String,
        /// Its epoch.
        epoch: u64,
    },
    /// Switchover, on the target: the old primary's last read lease ends at `writable_from`;
    /// it hands over `epoch`.
    Expect {
        /// The epoch handed over.
        epoch: u64,
        /// When the target may acknowledge its first write.
        writable_from: Instant,
    },
    /// Time passed.
    Tick,
}

/// What the node must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// No store exists yet in etcd: create it with this catalog as primary at epoch 1 (one
    /// transaction: `leader`, `epoch` and `sync` all absent), then report `Campaigned`.
    Bootstrap,
    /// Run for primary at `epoch` (one transaction: `leader` absent, `sync` and `epoch`
    /// unchanged since these revisions), then report `Campaigned`.
    Campaign {
        /// The epoch to take.
        epoch: u64,
        /// The `mod_revision` of `sync` read.
        sync_revision: i64,
        /// The `mod_revision` of `epoch` read.
        epoch_revision: i64,
    },
    /// This catalog is now the primary at `epoch`: start the writer (writes wait until
    /// [`Core::may_acknowledge`] allows them) and keep the replicas in sync.
    Lead {
        /// Its epoch.
        epoch: u64,
    },
    /// This catalog is no longer the primary: stop the writer, grant no lease, answer
    /// waiting writes 503, revoke its etcd lease (its leader key goes with it: the others
    /// elect at once) and catch up from the next leader as a replica. The core never takes
    /// that lease as its own again.
    StepDown {
        /// Why, for the log.
        why: String,
    },
    /// Follow this leader: forward writes to it, take its pushes, catch up from it.
    Follow {
        /// The leader's base URL.
        url: String,
        /// Its epoch.
        epoch: u64,
    },
}

/// The role, as a state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// Follows `leader` (None: no leader known now).
    Follower {
        /// The leader followed.
        leader: Option<String>,
    },
    /// A campaign (or bootstrap) transaction is on its way, sent at `since`.
    Candidate {
        /// When it was sent.
        since: Instant,
    },
    /// The primary of `epoch`.
    Primary {
        /// Its epoch.
        epoch: u64,
        /// No write is acknowledged before this: the election's answer plus `L` (or, after a
        /// switchover, the moment the old primary's last lease ends).
        writes_from: Instant,
        /// A switchover is under way: nothing is decided, acknowledged or granted.
        paused: bool,
    },
}

/// Counts shown in `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Campaigns (and bootstraps) this catalog ran.
    pub elections: u64,
    /// Times this catalog became primary.
    pub promotions: u64,
    /// Times the leader changed to another catalog, as seen here.
    pub failovers: u64,
    /// Messages refused for an older epoch.
    pub stale_refused: u64,
}

/// The role of one catalog and what it knows; no I/O.
#[derive(Clone, Debug)]
pub struct Core {
    me: String,
    /// `T` (the TTL of this catalog's etcd lease) and `L` (the read lease length).
    ttl: Duration,
    lease_length: Duration,
    role: Role,
    /// The newest epoch known.
    epoch: u64,
    /// This catalog's etcd lease, held from when its last successful keepalive was sent
    /// (etcd, the grantor, counts the TTL from when it received it: the store's one lease
    /// arithmetic, [`crate::lease`]).
    lease: Option<(i64, Held)>,
    /// The lease it gave up when it last stepped down: a late keepalive answer for it is
    /// ignored, and a leader key bound to it is not this catalog's any more.
    resigned: Option<i64>,
    /// The last `sync` key seen or written.
    sync: Option<SyncSet>,
    /// Switchover target: the handover expected (see `handover.rs`).
    handover: Option<Handover>,
    /// How far this catalog's data got, as last told (None: not yet; it does not campaign).
    data: Option<Identity>,
    /// When it was first told (an empty catalog waits before it bootstraps a store).
    data_since: Option<Instant>,
    tally: Tally,
}

/// The holder's view of a keepalive sent at `sent`, answered at `now`: from when, and for
/// how long (a share of it is counted on); two of the simulator's planted bugs change it.
#[cfg(test)]
fn lease_view(sent: Instant, now: Instant, ttl: Duration) -> (Instant, Duration) {
    use super::core::planted::{on, Planted};
    if on(Planted::NoMargin) {
        (now, ttl)
    } else if on(Planted::ValidTooLong) {
        (sent, ttl.mul_f64(1.25 / lease::SHARE))
    } else {
        (sent, ttl)
    }
}

impl Core {
    /// A follower with no leader known, named `me` (its advertise URL).
    pub fn new(me: &str, ttl: Duration, lease_length: Duration) -> Core {
        Core {
            me: me.to_string(),
            ttl,
            lease_length,
            role: Role::Follower { leader: None },
            epoch: 0,
            lease: None,
            resigned: None,
            sync: None,
            handover: None,
            data: None,
            data_since: None,
            tally: Tally::default(),
        }
    }

    /// Whether this catalog may run for primary under the in-sync record now (the election
    /// restriction: see [`Identity::eligible`]); the reason when not.
    pub fn eligible(&self) -> Result<(), String> {
        let data = self.data.as_ref().ok_or("its data is not known yet")?;
        match &self.sync {
            Some(sync) => data.eligible(sync.history.as_deref(), sync.floor),
            None => Ok(()),
        }
    }

    /// The role now.
    pub fn role(&self) -> &Role {
        &self.role
    }

    /// The newest epoch known.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The counts.
    pub fn tally(&self) -> Tally {
        self.tally
    }

    /// The `sync` key as last seen or written.
    pub fn sync(&self) -> Option<&SyncSet> {
        self.sync.as_ref()
    }

    /// The primary's base URL as known here (this catalog's own when it leads).
    pub fn primary(&self) -> Option<&str> {
        match &self.role {
            Role::Primary { .. } => Some(&self.me),
            Role::Follower { leader } => leader.as_deref(),
            Role::Candidate { .. } => None,
        }
    }

    /// Until when this catalog's etcd lease surely lives (its keys with it).
    fn valid_until(&self) -> Option<Instant> {
        self.lease.and_then(|(_, held)| held.until())
    }

    fn alive(&self, now: Instant) -> bool {
        self.valid_until().is_some_and(|v| now < v)
    }

    /// Whether a write may be acknowledged at `now` (checked right before answering).
    pub fn may_acknowledge(&self, now: Instant) -> Result<(), NoLead> {
        let Role::Primary { writes_from: open, paused, .. } = self.role else {
            return Err(NoLead::NotPrimary);
        };
        if !self.alive(now) {
            return Err(NoLead::Lapsed);
        }
        if paused {
            return Err(NoLead::Paused);
        }
        if now < open {
            return Err(NoLead::WaitingOutLeases(open - now));
        }
        Ok(())
    }

    /// When a new primary may acknowledge its first write (while paused: not yet known).
    pub fn writes_from(&self, now: Instant) -> Option<Instant> {
        match self.role {
            Role::Primary { paused: true, .. } => Some(now + self.ttl),
            Role::Primary { writes_from, .. } => Some(writes_from),
            _ => None,
        }
    }

    /// Whether this primary may answer reads at `now`: once it may write (no old lease lives),
    /// not paused, and until `L` after its leadership lapsed (no one acknowledges before).
    pub fn may_read(&self, now: Instant) -> bool {
        let margin = self.lease_length.mul_f64(lease::SHARE);
        matches!(self.role, Role::Primary { paused: false, writes_from, .. } if now >= writes_from)
            && self.valid_until().is_some_and(|v| now < v + margin)
    }

    /// Whether a read lease may be granted at `now`: only while leading validly (a lease
    /// granted later could outlive the leadership).
    pub fn may_grant(&self, now: Instant) -> bool {
        matches!(self.role, Role::Primary { paused: false, .. }) && self.alive(now)
    }

    /// The members of `sync` among the replicas that missed a write: each must be removed
    /// from `sync` in etcd before the write is acknowledged.
    pub fn to_remove(&self, missed: &[&str]) -> Vec<String> {
        let Some(sync) = &self.sync else { return Vec::new() };
        missed.iter().filter(|m| sync.members.iter().any(|s| s == *m)).map(|m| m.to_string()).collect()
    }

    /// The members of `sync` but this primary not in `took` (those that acknowledged a batch):
    /// each leaves `sync` before it is acknowledged (also one not counted in sync here).
    pub fn not_taken(&self, took: &[&str]) -> Vec<String> {
        let Some(sync) = &self.sync else { return Vec::new() };
        sync.members.iter().filter(|m| **m != self.me && !took.contains(&m.as_str())).cloned().collect()
    }

    /// `sync` with `url` added or removed, for a compare-and-swap (None: nothing to do).
    pub fn sync_change(&self, url: &str, add: bool) -> Option<SyncSet> {
        let sync = self.sync.as_ref()?;
        let has = sync.members.iter().any(|m| m == url);
        if has == add {
            return None;
        }
        let mut members: Vec<String> = sync.members.iter().filter(|m| *m != url).cloned().collect();
        if add {
            members.push(url.to_string());
            members.sort();
        }
        Some(SyncSet { epoch: self.epoch, members, ..sync.clone() })
    }

    /// A message (push, lease grant, log answer) from a primary at `epoch`: refused when
    /// the epoch is older than the newest known; a newer one is adopted (and a primary
    /// steps down). Returns the effects, or the refusal.
    pub fn message(&mut self, epoch: u64) -> Result<Vec<Effect>, String> {
        if epoch < self.epoch {
            self.tally.stale_refused += 1;
            return Err(format!("a message of epoch {epoch}, older than epoch {}", self.epoch));
        }
        if epoch > self.epoch {
            self.epoch = epoch;
            self.handover = self.handover.take().filter(|h| h.epoch > epoch);
            if let Role::Primary { .. } = self.role {
                return Ok(self.step_down(format!("a primary of the newer epoch {epoch} spoke")));
            }
        } else if let Role::Primary { .. } = self.role {
            // One primary per epoch: another one of mine is a confusion; refuse it.
            self.tally.stale_refused += 1;
            return Err(format!("this catalog is the primary of epoch {epoch}"));
        }
        Ok(Vec::new())
    }

    fn step_down(&mut self, why: String) -> Vec<Effect> {
        self.role = Role::Follower { leader: None };
        self.resigned = self.lease.take().map(|(id, _)| id).or(self.resigned);
        vec![Effect::StepDown { why }]
    }

    /// The etcd lease it gave up when it last stepped down (to revoke).
    pub fn resigned(&self) -> Option<i64> {
        self.resigned
    }

    /// This catalog's etcd lease, if it holds one.
    pub fn lease(&self) -> Option<i64> {
        self.lease.map(|(id, _)| id)
    }

    /// Takes one input at `now`; returns what to do.
    pub fn step(&mut self, input: Input, now: Instant) -> Vec<Effect> {
        match input {
            Input::Observed(seen) => self.observed(seen, now),
            Input::KeptAlive { lease, sent } if self.resigned != Some(lease) => {
                #[cfg(test)]
                let (sent, ttl) = lease_view(sent, now, self.ttl);
                #[cfg(not(test))]
                let ttl = self.ttl;
                // A keepalive of another lease starts it anew; of the same lease, extends it.
                let held = match &mut self.lease {
                    Some((id, held)) if *id == lease => held,
                    other => &mut other.insert((lease, Held::default())).1,
                };
                held.granted(sent, ttl);
                Vec::new()
            }
            Input::KeptAlive { .. } => Vec::new(),
            Input::LeaseGone => {
                // Gone at etcd: never this catalog's again (nor a key bound to it).
                self.resigned = self.lease.take().map(|(id, _)| id).or(self.resigned);
                match self.role {
                    Role::Primary { .. } => self.step_down("this catalog's etcd lease is gone".into()),
                    _ => Vec::new(),
                }
            }
            Input::Campaigned { won } => {
                if !matches!(self.role, Role::Candidate { .. }) {
                    return Vec::new();
                }
                match won {
                    Some(sync) if self.alive(now) => {
                        self.epoch = self.epoch.max(sync.epoch);
                        self.sync = Some(sync);
                        let writes_from = now + self.old_leases();
                        self.role = Role::Primary { epoch: self.epoch, writes_from, paused: false };
                        self.tally.promotions += 1;
                        vec![Effect::Lead { epoch: self.epoch }]
                    }
                    Some(_) => {
                        // Won, but this catalog's lease may have lapsed meanwhile: the key may
                        // be gone already. Step down at once; the next poll decides.
                        self.step_down("elected on a lease that may have lapsed".into())
                    }
                    None => {
                        self.role = Role::Follower { leader: None };
                        Vec::new()
                    }
                }
            }
            Input::SyncWritten(sync) => {
                if let Role::Primary { epoch, .. } = self.role {
                    if sync.epoch == epoch {
                        self.sync = Some(sync);
                    }
                }
                Vec::new()
            }
            Input::GiveUp { why } => match self.role {
                Role::Primary { .. } => self.step_down(why),
                _ => Vec::new(),
            },
            Input::SyncUnknown { why } => match self.role {
                Role::Primary { .. } => {
                    self.step_down(format!("a change of the in-sync record got no answer ({why}): it may have applied"))
                }
                _ => Vec::new(),
            },
            Input::Data(data) => {
                self.data_since.get_or_insert(now);
                self.data = Some(data);
                Vec::new()
            }
            Input::Pause(pause) => {
                if let Role::Primary { paused, .. } = &mut self.role {
                    *paused = pause;
                }
                Vec::new()
            }
            Input::HandedOver { url, epoch } => {
                if !matches!(self.role, Role::Primary { .. }) {
                    return Vec::new();
                }
                // Its lease stays its own (the leader key is bound to the target's now).
                self.epoch = self.epoch.max(epoch);
                self.role = Role::Follower { leader: Some(url.clone()) };
                self.tally.failovers += 1;
                vec![
                    Effect::StepDown { why: format!("handed over to {url} (epoch {epoch})") },
                    Effect::Follow { url, epoch },
                ]
            }
            Input::Expect { epoch, writable_from } => {
                self.expect(epoch, writable_from, now);
                Vec::new()
            }
            Input::Settled(settle) => self.settle(settle),
            Input::SyncConflict => match self.role {
                Role::Primary { .. } => self.step_down("another catalog changed the in-sync record".into()),
                _ => Vec::new(),
            },
            // A primary whose leadership lapsed holds the role, acknowledging and granting
            // nothing, until etcd answers again (see the invariants above).
            Input::Tick => match self.role {
                // A campaign that got no answer within T is over (its outcome is read back).
                Role::Candidate { since } if now >= since + self.ttl => {
                    self.role = Role::Follower { leader: None };
                    Vec::new()
                }
                _ => Vec::new(),
            },
        }
    }

    fn observed(&mut self, seen: Observed, now: Instant) -> Vec<Effect> {
        let issued = seen.epoch.map_or(0, |(e, _)| e);
        let led = seen.leader.as_ref().map_or(0, |l| l.epoch);
        self.epoch = self.epoch.max(issued).max(led);
        self.forget_stale_handover(seen.leader.as_ref());
        let mine = |l: &Leader| l.url == self.me && self.lease.is_some_and(|(id, _)| id == l.lease);
        match (&self.role, &seen.leader) {
            (Role::Candidate { .. }, _) => {
                if let Some(sync) = seen.sync {
                    self.sync = Some(sync);
                }
                Vec::new()
            }
            (Role::Primary { epoch, .. }, Some(l)) if mine(l) && l.epoch == *epoch => {
                // Its own key: sync as it wrote it stays; an older read (revision) is not adopted.
                let held = self.sync.as_ref().map_or(i64::MIN, |h| h.revision);
                if let Some(sync) = seen.sync.filter(|s| s.epoch == *epoch && s.revision > held) {
                    self.sync = Some(sync);
                }
                if self.epoch > *epoch {
                    return self.step_down(format!("epoch {} was issued after this primary's", self.epoch));
                }
                Vec::new()
            }
            (Role::Primary { .. }, _) => {
                self.sync = seen.sync;
                let why = match &seen.leader {
                    None => "its leader key is gone from etcd".to_string(),
                    Some(l) => format!("{} leads at epoch {}", l.url, l.epoch),
                };
                // The primary changes away from this catalog: one failover.
                self.tally.failovers += 1;
                let mut effects = self.step_down(why);
                effects.extend(self.follow(seen.leader));
                effects
            }
            (Role::Follower { .. }, Some(l)) if mine(l) => {
                // A switchover named this catalog: it leads, once old leases are over.
                self.sync = seen.sync;
                // The old primary said when its last read lease ends; else wait one out.
                let writes_from = self.handed_writes_from(l.epoch, now);
                self.role = Role::Primary { epoch: l.epoch, writes_from, paused: false };
                self.tally.promotions += 1;
                vec![Effect::Lead { epoch: l.epoch }]
            }
            (Role::Follower { .. }, Some(l)) if l.url == self.me => {
                // The key of an earlier run at this URL: it expires with that run's lease.
                self.sync = seen.sync;
                self.role = Role::Follower { leader: None };
                Vec::new()
            }
            (Role::Follower { .. }, Some(_)) => {
                self.sync = seen.sync;
                self.follow(seen.leader)
            }
            (Role::Follower { .. }, None) => {
                self.sync = seen.sync.clone();
                let was = self.primary().is_some();
                self.role = Role::Follower { leader: None };
                if was {
                    self.tally.failovers += 1;
                }
                if !self.alive(now) {
                    return Vec::new();
                }
                match (&seen.sync, seen.epoch) {
                    (None, None) if self.may_bootstrap(now) => {
                        self.role = Role::Candidate { since: now };
                        self.tally.elections += 1;
                        vec![Effect::Bootstrap]
                    }
                    (Some(sync), Some((e, epoch_revision)))
                        if (sync.members.contains(&self.me) && self.eligible().is_ok()) || self.elects_behind() =>
                    {
                        self.role = Role::Candidate { since: now };
                        self.tally.elections += 1;
                        vec![Effect::Campaign { epoch: e + 1, sync_revision: sync.revision, epoch_revision }]
                    }
                    // Not in sync (or a half-made store): never campaign; wait for a leader.
                    _ => Vec::new(),
                }
            }
        }
    }

    /// Whether this catalog may create the store in an empty etcd: once its data is known;
    /// an empty catalog only after [`EMPTY_BOOTSTRAP_WAIT`] TTLs, so that a catalog with
    /// data, starting at the same time (a whole store restarted against a new etcd), is
    /// elected first. (One elected later refuses to copy an empty primary over its data.)
    fn may_bootstrap(&self, now: Instant) -> bool {
        match (&self.data, self.data_since) {
            (Some(d), Some(since)) => !d.is_empty() || now >= since + self.ttl * EMPTY_BOOTSTRAP_WAIT,
            _ => false,
        }
    }

    /// How long a catalog elected waits before it writes: the read leases the old primary
    /// granted may run that long (none with the planted `NoWaitForOldLeases`).
    fn old_leases(&self) -> Duration {
        #[cfg(test)]
        if super::core::planted::on(super::core::planted::Planted::NoWaitForOldLeases) {
            return Duration::ZERO;
        }
        self.lease_length
    }

    /// Whether the planted `ElectBehind` ignores the election restriction (never outside
    /// the simulator).
    fn elects_behind(&self) -> bool {
        #[cfg(test)]
        return super::core::planted::on(super::core::planted::Planted::ElectBehind);
        #[cfg(not(test))]
        false
    }

    /// Follows `leader` (a follower); says so when it changed.
    fn follow(&mut self, leader: Option<Leader>) -> Vec<Effect> {
        let Some(l) = leader else {
            self.role = Role::Follower { leader: None };
            return Vec::new();
        };
        let before = self.primary().map(str::to_string);
        self.role = Role::Follower { leader: Some(l.url.clone()) };
        if before.as_deref() == Some(l.url.as_str()) {
            return Vec::new();
        }
        if before.is_some() {
            self.tally.failovers += 1;
        }
        vec![Effect::Follow { url: l.url, epoch: l.epoch }]
    }
}

#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;
