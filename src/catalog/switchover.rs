//! Planned switchover (`POST /admin/switchover`): the primary hands its role to an
//! in-sync replica with writes paused, not refused.
//!
//! Invariant: the handover is one etcd transaction that compares the leader key's value
//! (still this primary's) and the revision of `sync`, so it cannot race an election; the
//! target acknowledges nothing before the last read lease the old primary granted to
//! another replica, or cache lease to a front end, has ended (grants re-check the pause
//! under each replica's grant lock, which the pause's reading of the leases takes too, so
//! none is granted after it unseen).
//!
//! Invariant: a handover whose outcome is unknown (etcd did not answer) leaves the primary
//! paused, granting nothing, until a read-back that fences settles it (`Settle`): it
//! resumes only if `leader` is surely still its own and the handover can no longer apply,
//! follows the target if that took effect, and steps down otherwise.

use super::config::Role;
use super::etcd_side::{leader, member_key, put, sync_record, Failover, EPOCH, LEADER, SYNC};
use super::failover::{Input, Settle, SyncSet};
use super::node::{CatalogNode, ReplicaLink};
use super::primary::LEAD_WAIT;
use super::refusal::{NoLead, NotHere};
use crate::error::{Error, Result};
use crate::etcd::{Compare, Op};
use crate::http::{json_body, Request, Response};
use crate::wire::{LeadAnswer, LeadRequest, LeaderRecord, SwitchoverAnswer, SwitchoverRequest};
use std::sync::Arc;
use std::time::{Duration, Instant};
use ureq::http::Method;

impl CatalogNode {
    /// `POST /admin/switchover` (body `{"to": url}` optional): done by the primary, forwarded
    /// by a replica.
    pub(super) fn switchover_route(&self, request: &Request) -> Result<Response> {
        if self.role() == Role::Replica && self.failover.is_some() {
            return self.forward_to(request);
        }
        let asked = match request.body.is_empty() {
            true => SwitchoverRequest::default(),
            false => json_body(request)?,
        };
        let to = match asked.to {
            None => None,
            Some(url) => {
                Some(crate::config::base_url("to", &url).map_err(|e| Error::BadRequest(e.problem.to_string()))?)
            }
        };
        Ok(Response::json(&self.switchover(to)?))
    }

    /// `POST /admin/switchover` on the primary: pauses writes (holds the writer lock) and
    /// grants, picks an in-sync replica (`to`, or the first), tells it when the old
    /// primary's last read lease ends, hands it the leader key (one transaction: the key
    /// still mine, `sync` unchanged -> `leader` on the target's own lease, `epoch + 1`,
    /// `sync` = the target), follows it, and answers once it accepts writes. Writes that
    /// came meanwhile go on to it: paused, not refused.
    pub(super) fn switchover(&self, to: Option<String>) -> Result<SwitchoverAnswer> {
        let Some(f) = &self.failover else {
            return Err(Error::NotHere(NotHere::StaticRoles("a switchover needs BAZAR_ETCD")));
        };
        let started = Instant::now();
        let writer = self.lock_writer();
        self.feed(Input::Pause(true));
        let handed = self.hand_over(f, to);
        // Leases again where this catalog still leads (after a handover it grants none).
        self.near.resume();
        if handed.is_err() {
            // A no-op unless it surely failed and this catalog still leads, paused.
            self.feed(Input::Pause(false));
        }
        drop(writer);
        let (target, epoch) = handed?;
        // The target leads once it has read the key (asked to at once).
        let answer = self.forward.call(Method::POST, &target, "/internal/lead", Some(lead_body(epoch, 0, true)));
        let writable_in = match answer.map(|a| (a.status, serde_json::from_slice(&a.body))) {
            Ok((200, Ok(LeadAnswer::Writable { writable_in_ms }))) => writable_in_ms,
            Ok((200, _)) => 0,
            _ => self.config.lease.as_millis() as u64,
        };
        std::thread::sleep(Duration::from_millis(writable_in));
        let paused_ms = started.elapsed().as_millis() as u64;
        log::warn!("switched over to {target} (epoch {epoch}); writes paused {paused_ms} ms");
        Ok(SwitchoverAnswer { primary: target, epoch, paused_ms })
    }

    /// The switchover's decisions and its transaction, under the writer lock.
    fn hand_over(&self, f: &Failover, to: Option<String>) -> Result<(String, u64)> {
        let (sync, epoch) = {
            let core = f.core();
            (core.sync().cloned(), core.epoch())
        };
        let Some(sync) = sync.filter(|_| self.role() == Role::Primary) else {
            return Err(Error::Lead(NoLead::NotPrimary));
        };
        let links = self.links();
        let eligible: Vec<&Arc<ReplicaLink>> =
            links.iter().filter(|l| l.grant().in_sync && sync.members.contains(&l.url)).collect();
        let target = match &to {
            Some(url) => eligible.iter().find(|l| l.url == *url),
            None => eligible.first(),
        };
        let Some(target) = target.map(|l| l.url.clone()) else {
            let why = match to {
                Some(url) => format!("{url} is not a replica in sync"),
                None => "no replica is in sync".into(),
            };
            return Err(Error::Conflict(why));
        };
        // Read leases this primary granted to the other replicas and to the front ends' near
        // caches end by then (the target holds one too, but it will not read on it: it leads).
        // The front ends give theirs up at once (a frozen one is waited out).
        let near = self.near.revoke();
        let now = Instant::now();
        let wait = links
            .iter()
            .filter(|l| l.url != target)
            .filter_map(|l| l.grant().lease.until())
            .chain(near)
            .max()
            .map_or(Duration::ZERO, |until| until.saturating_duration_since(now));
        let member = f.etcd.get(&member_key(&target)).map_err(|e| Error::Unavailable(e.to_string()))?;
        let Some(lease) = member.map(|kv| kv.lease).filter(|l| *l != 0) else {
            return Err(Error::Conflict(format!("{target} is not a live member in etcd")));
        };
        let next = epoch + 1;
        let told = self.push.http.call(
            Method::POST,
            &target,
            "/internal/lead",
            Some(lead_body(next, wait.as_millis() as u64, false)),
        );
        match told {
            Ok(a) if a.status == 200 => {}
            Ok(a) => return Err(Error::Unavailable(format!("{target} did not take the handover: {}", a.error()))),
            Err(e) => return Err(Error::Unavailable(format!("{target} did not take the handover: {e}"))),
        }
        let mine = serde_json::to_vec(&LeaderRecord { epoch, url: f.me.clone() }).expect("records serialize");
        let when = [Compare::Value(LEADER.into(), mine.clone()), Compare::ModRevision(SYNC.into(), sync.revision)];
        let ops = [
            put(EPOCH, &next, None),
            put(LEADER, &LeaderRecord { epoch: next, url: target.clone() }, Some(lease)),
            put(SYNC, &sync_record(&SyncSet { epoch: next, members: vec![target.clone()], ..sync.clone() }), None),
        ];
        let unknown = match f.etcd.txn(&when, &ops, &[]) {
            Ok(o) if o.succeeded => {
                self.feed(Input::HandedOver { url: target.clone(), epoch: next });
                return Ok((target, next));
            }
            Ok(_) => {
                // Only another primary changes these: this one steps down.
                self.feed(Input::SyncConflict);
                return Err(Error::Conflict("the leader key or the in-sync record changed meanwhile".into()));
            }
            Err(e) => e,
        };
        // The outcome is unknown: still paused, settle it by a read-back that also fences.
        let settle = Self::settle(f, &mine, &sync);
        log::warn!("the handover to {target} got no answer ({unknown}); read back: {settle:?}");
        let handed = matches!(&settle, Settle::Leader(Some(l)) if l.url == target && l.epoch == next);
        self.feed(Input::Settled(settle));
        match handed {
            true => Ok((target, next)),
            false => Err(Error::Unavailable(format!("etcd: {unknown} (the handover did not take effect)"))),
        }
    }

    /// After a handover transaction without an answer: while `leader` is still `mine` and
    /// `sync` unchanged, rewrites `sync` as it is (a handover still on its way to etcd then
    /// fails its comparison), else reads `leader`. Never resumes on a plain read, which a
    /// delayed handover could still overtake.
    fn settle(f: &Failover, mine: &[u8], sync: &SyncSet) -> Settle {
        let when = [Compare::Value(LEADER.into(), mine.to_vec()), Compare::ModRevision(SYNC.into(), sync.revision)];
        match f.etcd.txn(&when, &[put(SYNC, &sync_record(sync), None)], &[Op::Get(LEADER.into())]) {
            Ok(o) if o.succeeded => Settle::Kept(SyncSet { revision: o.revision, ..sync.clone() }),
            Ok(o) => {
                Settle::Leader(o.kvs.iter().find(|kv| kv.key == LEADER).and_then(|kv| leader(&kv.value, kv.lease)))
            }
            Err(_) => Settle::Unknown,
        }
    }

    /// `POST /internal/lead` on a switchover's target: the epoch it is handed and, with
    /// `go`, a request to read etcd now and answer once it leads.
    pub(super) fn expect_leadership(&self, asked: LeadRequest) -> Result<LeadAnswer> {
        if self.failover.is_none() {
            return Err(Error::NotHere(NotHere::StaticRoles("no handover")));
        }
        let LeadRequest { epoch, wait_ms, go } = asked;
        let wait = Duration::from_millis(wait_ms.min(60_000));
        if !go {
            self.feed(Input::Expect { epoch, writable_from: Instant::now() + wait });
            return Ok(LeadAnswer::Expecting { expecting: epoch });
        }
        let deadline = Instant::now() + LEAD_WAIT;
        while Instant::now() < deadline {
            self.kick_election();
            let writes_from = (self.term() == epoch).then(|| self.etcd_side().core().writes_from(Instant::now()));
            if let Some(Some(at)) = writes_from {
                let left = at.saturating_duration_since(Instant::now());
                return Ok(LeadAnswer::Writable { writable_in_ms: left.as_millis() as u64 });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Err(Error::Unavailable(format!("not leading epoch {epoch} yet")))
    }
}

fn lead_body(epoch: u64, wait_ms: u64, go: bool) -> Vec<u8> {
    serde_json::to_vec(&LeadRequest { epoch, wait_ms, go }).expect("messages serialize")
}

#[cfg(test)]
mod tests {
    use super::super::config::CatalogConfig;
    use super::super::failover::{Leader, Observed};
    use super::*;
    use crate::config::Vars;
    use crate::wire::LeaseRequest;

    /// A lease request that passed its first checks while a switchover pauses is refused,
    /// not granted after the pause read the leases it tells the target to wait out: the
    /// grant checks the pause under the replica's grant lock, which the pause's reading of
    /// the leases takes too.
    /// A catalog leading epoch 1 on etcd lease 7 (no etcd needed), free to read and grant.
    fn leading_node(tag: &str) -> (Arc<CatalogNode>, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("bazar-switchover-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let me = "http://127.0.0.1:9";
        let vars = [
            ("BAZAR_ETCD", "http://127.0.0.1:9"),
            ("BAZAR_LISTEN", "127.0.0.1:9"),
            ("BAZAR_DATA_DIR", dir.to_str().unwrap()),
        ];
        let config = CatalogConfig::from_source(&Vars(&vars)).unwrap();
        let node = CatalogNode::open(config, Arc::new(crate::metrics::Metrics::new())).unwrap();
        let t0 = Instant::now();
        {
            let mut core = node.etcd_side().core();
            core.step(Input::KeptAlive { lease: 7, sent: t0 }, t0);
            // Handed over with no lease to wait out: it may read and grant at once.
            core.step(Input::Expect { epoch: 1, writable_from: t0 }, t0);
            let sync = super::super::failover::SyncSet {
                epoch: 1,
                members: vec![me.into()],
                revision: 3,
                history: None,
                floor: 0,
            };
            let leader = Some(Leader { url: me.into(), epoch: 1, lease: 7 });
            core.step(Input::Observed(Observed { leader, epoch: Some((1, 2)), sync: Some(sync) }), t0);
        }
        node.set_current(Role::Primary, None, 1);
        (node, dir)
    }

    /// A front end's watch let through while a switchover revokes the leases carries no
    /// lease, even when the switchover fails and leases are granted again before it is
    /// answered (the primary recorded it as holding none).
    #[test]
    fn a_watch_let_through_while_revoking_carries_no_lease() {
        let (node, dir) = leading_node("near");
        let watch = |seen| crate::wire::NearWatch { session: "fe".into(), seen };
        let first = node.near_watch(&watch(0)).unwrap();
        assert!(first.reset && first.lease_ms > 0, "granted while leading");
        let node = &node;
        let answered = std::thread::scope(|s| {
            let revoked = s.spawn(|| node.near.revoke());
            std::thread::sleep(Duration::from_millis(50));
            // Told at once that it holds no lease; its next watch confirms it, and is held.
            let told = node.near_watch(&watch(first.through)).unwrap();
            assert_eq!(told.lease_ms, 0);
            let seen = told.through;
            let asked = s.spawn(move || node.near_watch(&crate::wire::NearWatch { session: "fe".into(), seen }));
            assert!(revoked.join().unwrap().is_none_or(|end| end <= Instant::now()), "no lease left");
            // The switchover failed: leases again, while that watch is held.
            node.near.resume();
            asked.join().unwrap().unwrap()
        });
        assert_eq!(answered.lease_ms, 0, "it was let through without the leadership check");
        assert!(node.near_watch(&watch(answered.through)).unwrap().lease_ms > 0, "the next one is checked");
        let _ = std::fs::remove_dir_all(dir);
    }

    /// A lease request that passed its first checks while a switchover pauses is refused,
    /// not granted after the pause read the leases it tells the target to wait out: the
    /// grant checks the pause under the replica's grant lock, which the pause's reading of
    /// the leases takes too.
    #[test]
    fn a_grant_that_waited_for_the_pause_is_refused() {
        let (node, dir) = leading_node("grant");
        let link = Arc::new(ReplicaLink::new("http://127.0.0.1:8"));
        link.grant().synced("r1".into());
        node.links.write().unwrap().push(Arc::clone(&link));
        let request = LeaseRequest { replica_id: "r1".into() };
        assert_eq!(node.grant_lease(&request).map(|r| r.status).unwrap_or(0), 200, "granted while leading");
        link.grant().lease.forget();

        let answered = std::thread::scope(|s| {
            let held = link.grant();
            let asked = s.spawn(|| node.grant_lease(&request));
            // The request waits for the grant lock; the switchover pauses meanwhile, then
            // reads the leases (under that lock).
            std::thread::sleep(Duration::from_millis(200));
            node.etcd_side().core().step(Input::Pause(true), Instant::now());
            drop(held);
            asked.join().unwrap()
        });
        let granted = answered.as_ref().map(|r| r.status).ok();
        assert!(matches!(answered, Err(Error::Lead(NoLead::Paused))), "granted after the pause: {granted:?}");
        assert_eq!(link.grant().lease.until(), None, "no lease the target would not wait out");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
