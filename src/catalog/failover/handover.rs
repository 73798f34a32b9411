//! The switchover's decisions in the core: the target's expected handover (and when it is
//! stale), and the old primary's handover transaction whose outcome is unknown.
//!
//! Invariants:
//! - **A target waits out every lease the old primary granted.** An expected handover
//!   (`Expect`) shortens the first write's wait only when this catalog is named leader at
//!   exactly that epoch, through the handover, before [`Handover::until`]; no leader key
//!   (so a campaign of its own), a newer epoch, or another leader at that epoch forgets it,
//!   and the election then waits the full `elected + L`.
//! - **Never grant while in doubt.** A primary whose handover transaction got no answer
//!   stays paused until a read-back settles it ([`Settle`]): it resumes only when etcd
//!   surely still names it and the handover can no longer apply; otherwise it follows the
//!   leader named, or steps down.

use super::{Core, Effect, Leader, Role, SyncSet};
use crate::catalog::refusal::NoLead;
use std::time::Instant;

/// What a switchover's target was told: the epoch handed over and when the old primary's
/// last read lease ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handover {
    /// The epoch handed over.
    pub epoch: u64,
    /// When the target may acknowledge its first write.
    pub writable_from: Instant,
    /// After this the handover is stale (it failed, or came too late): forgotten.
    pub until: Instant,
}

/// The read-back after a handover transaction whose outcome is unknown: one transaction
/// that, while `leader` is still this primary's and `sync` unchanged, rewrites `sync` as it
/// is (so the handover, were it still on its way to etcd, fails its comparison), or else
/// reads `leader`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Settle {
    /// The key is still this primary's and `sync` was rewritten (as this): the handover
    /// cannot apply any more.
    Kept(SyncSet),
    /// The comparison failed: `leader` as read then.
    Leader(Option<Leader>),
    /// No answer again: still in doubt.
    Unknown,
}

impl Core {
    /// `Expect` on a switchover's target, at `now`: kept for one etcd TTL at most.
    pub(super) fn expect(&mut self, epoch: u64, writable_from: Instant, now: Instant) {
        if epoch > self.epoch {
            self.handover = Some(Handover { epoch, writable_from, until: now + self.ttl });
        }
    }

    /// When a catalog named leader at `epoch` by a switchover may write: the time the old
    /// primary said if the handover expected is this one and fresh, else `now + L`.
    pub(super) fn handed_writes_from(&mut self, epoch: u64, now: Instant) -> Instant {
        match self.handover.take() {
            Some(h) if h.epoch == epoch && now < h.until => h.writable_from.max(now),
            _ => now + self.lease_length,
        }
    }

    /// Forgets a handover that can no longer be the one that names this catalog: no leader
    /// key (the handover compares the old primary's; a campaign may follow), a newer epoch
    /// known, or another catalog leading at its epoch.
    pub(super) fn forget_stale_handover(&mut self, leader: Option<&Leader>) {
        let other = |h: &Handover| leader.is_none_or(|l| l.epoch == h.epoch && l.url != self.me);
        if self.handover.as_ref().is_some_and(|h| self.epoch > h.epoch || other(h)) {
            self.handover = None;
        }
    }

    /// The paused primary's handover settled by the read-back.
    pub(super) fn settle(&mut self, settle: Settle) -> Vec<Effect> {
        let Role::Primary { epoch, paused: true, .. } = self.role else { return Vec::new() };
        match settle {
            Settle::Kept(sync) if sync.epoch == epoch && self.epoch == epoch => {
                self.sync = Some(sync);
                if let Role::Primary { paused, .. } = &mut self.role {
                    *paused = false;
                }
                Vec::new()
            }
            Settle::Leader(Some(l)) if l.epoch > epoch && l.url != self.me => {
                // As `HandedOver`: its lease stays its own (the key is bound to the target's).
                self.epoch = self.epoch.max(l.epoch);
                self.role = Role::Follower { leader: Some(l.url.clone()) };
                self.tally.failovers += 1;
                let why = format!("handed over to {} (epoch {}), as read back", l.url, l.epoch);
                vec![Effect::StepDown { why }, Effect::Follow { url: l.url, epoch: l.epoch }]
            }
            _ => self.step_down("a switchover's outcome is unknown".into()),
        }
    }

    /// Whether this primary may decide and acknowledge a write at `now`, its node carrying
    /// `term`: also refused while the node has not yet taken the role of this epoch (a
    /// write decided then would carry the old epoch).
    pub fn may_decide(&self, now: Instant, term: u64) -> Result<(), NoLead> {
        self.may_acknowledge(now)?;
        match self.role {
            Role::Primary { epoch, .. } if epoch == term => Ok(()),
            _ => Err(NoLead::OtherEpoch(self.epoch)),
        }
    }
}
