//! Planned switchover (`POST /admin/switchover`): the primary hands its role to an
//! in-sync replica with writes paused, not refused.
//!
//! Invariant: the handover is one etcd transaction that compares the leader key's value
//! (still this primary's) and the revision of `sync`, so it cannot race an election; the
//! target acknowledges nothing before the last read lease the old primary granted to
//! another replica, or cache lease to a front end, has ended.

use super::config::Role;
use super::elect::{member_key, put, Failover, EPOCH, LEADER, LEAD_WAIT, SYNC};
use super::failover::Input;
use super::node::{CatalogNode, ReplicaLink};
use crate::error::{Error, Result};
use crate::etcd::Compare;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use ureq::http::Method;

impl CatalogNode {
    /// `POST /admin/switchover` on the primary: pauses writes (holds the writer lock) and
    /// grants, picks an in-sync replica (`to`, or the first), tells it when the old
    /// primary's last read lease ends, hands it the leader key (one transaction: the key
    /// still mine, `sync` unchanged -> `leader` on the target's own lease, `epoch + 1`,
    /// `sync` = the target), follows it, and answers once it accepts writes. Writes that
    /// came meanwhile go on to it: paused, not refused.
    pub(super) fn switchover(&self, to: Option<String>) -> Result<serde_json::Value> {
        let Some(f) = &self.failover else {
            return Err(Error::Conflict("static roles: a switchover needs BAZAR_ETCD".into()));
        };
        let started = Instant::now();
        let writer = self.lock_writer();
        self.feed(Input::Pause(true));
        let handed = self.hand_over(f, to);
        if handed.is_err() {
            self.feed(Input::Pause(false));
        }
        drop(writer);
        let (target, epoch) = handed?;
        // The target leads once it has read the key (asked to at once).
        let answer = self.forward.call(Method::POST, &target, "/internal/lead", Some(lead_body(epoch, 0, true)));
        let writable_in = match answer {
            Ok(a) if a.status == 200 => serde_json::from_slice::<serde_json::Value>(&a.body)
                .ok()
                .and_then(|v| v["writable_in_ms"].as_u64())
                .unwrap_or(0),
            _ => self.config.lease.as_millis() as u64,
        };
        std::thread::sleep(Duration::from_millis(writable_in));
        let paused_ms = started.elapsed().as_millis() as u64;
        log::warn!("switched over to {target} (epoch {epoch}); writes paused {paused_ms} ms");
        Ok(json!({ "primary": target, "epoch": epoch, "paused_ms": paused_ms }))
    }

    /// The switchover's decisions and its transaction, under the writer lock.
    fn hand_over(&self, f: &Failover, to: Option<String>) -> Result<(String, u64)> {
        let (sync, epoch) = {
            let core = f.core();
            (core.sync().cloned(), core.epoch())
        };
        let Some(sync) = sync.filter(|_| self.role() == Role::Primary) else {
            return Err(Error::Unavailable(super::failover::NOT_PRIMARY.into()));
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
        let now = Instant::now();
        let wait = links
            .iter()
            .filter(|l| l.url != target)
            .filter_map(|l| l.grant().until)
            .chain(self.near.latest_lease_end())
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
        let mine = json!({ "url": f.me, "epoch": epoch }).to_string().into_bytes();
        let when = [Compare::Value(LEADER.into(), mine), Compare::ModRevision(SYNC.into(), sync.revision)];
        let ops = [
            put(EPOCH, json!(next), None),
            put(LEADER, json!({ "url": target, "epoch": next }), Some(lease)),
            put(SYNC, json!({ "epoch": next, "members": [target] }), None),
        ];
        match f.etcd.txn(&when, &ops, &[]) {
            Ok(o) if o.succeeded => {
                self.feed(Input::HandedOver { url: target.clone(), epoch: next });
                Ok((target, next))
            }
            Ok(_) => Err(Error::Conflict("the leader key or the in-sync record changed meanwhile".into())),
            Err(e) => Err(Error::Unavailable(format!("etcd: {e} (the handover's outcome is unknown)"))),
        }
    }

    /// `POST /internal/lead` on a switchover's target: the epoch it is handed and, with
    /// `go`, a request to read etcd now and answer once it leads.
    pub(super) fn expect_leadership(&self, body: &serde_json::Value) -> Result<serde_json::Value> {
        if self.failover.is_none() {
            return Err(Error::Conflict("static roles: no handover".into()));
        }
        let epoch = body["epoch"].as_u64().ok_or_else(|| Error::BadRequest("give epoch".into()))?;
        let wait = Duration::from_millis(body["wait_ms"].as_u64().unwrap_or(0).min(60_000));
        if !body["go"].as_bool().unwrap_or(false) {
            self.feed(Input::Expect { epoch, writable_from: Instant::now() + wait });
            return Ok(json!({ "expecting": epoch }));
        }
        let deadline = Instant::now() + LEAD_WAIT;
        while Instant::now() < deadline {
            self.kick_election();
            let writes_from = (self.term() == epoch).then(|| self.etcd_side().core().writes_from(Instant::now()));
            if let Some(Some(at)) = writes_from {
                let left = at.saturating_duration_since(Instant::now());
                return Ok(json!({ "writable_in_ms": left.as_millis() as u64 }));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Err(Error::Unavailable(format!("not leading epoch {epoch} yet")))
    }
}

fn lead_body(epoch: u64, wait_ms: u64, go: bool) -> Vec<u8> {
    json!({ "epoch": epoch, "wait_ms": wait_ms, "go": go }).to_string().into_bytes()
}
