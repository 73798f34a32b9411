//! A catalog's side of etcd: the keys failover keeps there, their records, and the
//! transactions that read and write them (`Failover`: the role core and the etcd client).
//! No decision is made here (the core in `failover/` decides) and nothing of the node is
//! touched (`elect.rs` runs the election thread and performs the core's effects on the node).
//!
//! The keys, under the store's prefix: `leader` (the primary's URL and epoch, bound to its
//! etcd lease), `epoch` (the highest epoch ever issued), `sync` (the in-sync record) and
//! `members/<hex of a URL>` (one per live catalog, bound to its lease).

use super::config::EtcdSettings;
use super::failover::{Core, Input, Leader, Observed, SyncSet};
use crate::client::Http;
use crate::etcd::{Compare, Etcd, EtcdError, Op};
use crate::shutdown::Shutdown;
use crate::wire::{LeaderRecord, SyncRecord};
use std::sync::atomic::AtomicBool;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// Longest wait for etcd: well under the TTL, so a hung etcd cannot stall a keepalive
/// past the leadership it would renew.
pub const ETCD_TIMEOUT: Duration = Duration::from_millis(700);
pub(super) const LEADER: &str = "leader";
pub(super) const EPOCH: &str = "epoch";
pub(super) const SYNC: &str = "sync";
pub(super) const MEMBERS: &str = "members/";

/// A catalog's failover state: the role core and the etcd client.
pub struct Failover {
    pub(super) etcd: Etcd,
    core: Mutex<Core>,
    /// This catalog's advertise URL.
    pub(super) me: String,
    /// The TTL of its etcd lease.
    pub(super) ttl: Duration,
    /// Read etcd now (a call to the primary failed).
    pub(super) kick: AtomicBool,
    /// For the threads of links added later.
    pub(super) shutdown: Mutex<Option<Shutdown>>,
}

impl Failover {
    /// The state of a catalog with `settings`, read leases of `lease`, `pool` connections.
    pub fn new(settings: &EtcdSettings, lease: Duration, pool: usize) -> Failover {
        let http = Http::new(ETCD_TIMEOUT, pool.min(8), None);
        Failover {
            etcd: Etcd::new(http, settings.endpoints.clone(), &settings.prefix),
            core: Mutex::new(Core::new(&settings.advertise, settings.ttl, lease)),
            me: settings.advertise.clone(),
            ttl: settings.ttl,
            kick: AtomicBool::new(false),
            shutdown: Mutex::new(None),
        }
    }

    /// The role core. Held briefly, never across I/O; may be taken under a replica link's
    /// grant lock (a grant checks the switchover's pause), never the other way round.
    pub(super) fn core(&self) -> MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads `leader`, `epoch` and `sync` in one transaction.
    pub(super) fn observe(&self) -> std::result::Result<Observed, EtcdError> {
        let outcome =
            self.etcd.txn(&[], &[Op::Get(LEADER.into()), Op::Get(EPOCH.into()), Op::Get(SYNC.into())], &[])?;
        let mut seen = Observed::default();
        for kv in outcome.kvs {
            match kv.key.as_str() {
                LEADER => seen.leader = leader(&kv.value, kv.lease),
                EPOCH => seen.epoch = serde_json::from_slice(&kv.value).ok().map(|e| (e, kv.mod_revision)),
                SYNC => seen.sync = sync_set(&kv.value, kv.mod_revision),
                _ => {}
            }
        }
        Ok(seen)
    }

    /// The campaign (or, without revisions, the bootstrap) for `epoch`, by a catalog of
    /// `history` that shows every write up to `floor`: the `sync` key it wrote when it won.
    pub(super) fn campaign(
        &self,
        epoch: u64,
        revisions: Option<(i64, i64)>,
        history: String,
        floor: u64,
    ) -> Option<SyncSet> {
        let lease = self.core().lease()?;
        let mut when = vec![Compare::Absent(LEADER.into())];
        match revisions {
            None => when.extend([Compare::Absent(SYNC.into()), Compare::Absent(EPOCH.into())]),
            Some((sync, e)) => {
                when.extend([Compare::ModRevision(SYNC.into(), sync), Compare::ModRevision(EPOCH.into(), e)])
            }
        }
        let sync = SyncSet { epoch, members: vec![self.me.clone()], revision: 0, history: Some(history), floor };
        let ops = [
            put(EPOCH, &epoch, None),
            put(LEADER, &LeaderRecord { epoch, url: self.me.clone() }, Some(lease)),
            put(SYNC, &sync_record(&sync), None),
        ];
        match self.etcd.txn(&when, &ops, &[]) {
            Ok(o) if o.succeeded => Some(SyncSet { revision: o.revision, ..sync }),
            Ok(_) => None,
            Err(e) => {
                // The outcome is unknown: the next read of the keys tells.
                log::warn!("campaign for epoch {epoch}: {e}");
                None
            }
        }
    }

    /// Writes `sync` if it is unchanged since `new.revision`: the input for the core.
    pub(super) fn write_sync(&self, new: &SyncSet) -> std::result::Result<Input, EtcdError> {
        let outcome = self.etcd.txn(
            &[Compare::ModRevision(SYNC.into(), new.revision)],
            &[put(SYNC, &sync_record(new), None)],
            &[],
        )?;
        Ok(match outcome.succeeded {
            true => Input::SyncWritten(SyncSet { revision: outcome.revision, ..new.clone() }),
            false => Input::SyncConflict,
        })
    }
}

/// A put of `value` (a typed record, as JSON) at `key`, on `lease` if given.
pub(super) fn put(key: &str, value: &impl serde::Serialize, lease: Option<i64>) -> Op {
    Op::Put { key: key.into(), value: serde_json::to_vec(value).expect("records serialize"), lease }
}

/// The `leader` key's value, with the etcd lease it is bound to (None: not a record).
pub(super) fn leader(value: &[u8], lease: i64) -> Option<Leader> {
    let LeaderRecord { epoch, url } = serde_json::from_slice(value).ok()?;
    Some(Leader { url, epoch, lease })
}

/// The `sync` key's value, at its `mod_revision` (None: not a record).
fn sync_set(value: &[u8], revision: i64) -> Option<SyncSet> {
    let SyncRecord { epoch, floor, history, members } = serde_json::from_slice(value).ok()?;
    Some(SyncSet { epoch, members, revision, history, floor })
}

/// The `sync` key's value for `sync` (what [`sync_set`] reads back).
pub(super) fn sync_record(sync: &SyncSet) -> SyncRecord {
    SyncRecord { epoch: sync.epoch, floor: sync.floor, history: sync.history.clone(), members: sync.members.clone() }
}

/// A member's key: its URL in hex (any URL makes a plain key).
pub(super) fn member_key(url: &str) -> String {
    let hex: String = url.bytes().map(|b| format!("{b:02x}")).collect();
    format!("{MEMBERS}{hex}")
}
