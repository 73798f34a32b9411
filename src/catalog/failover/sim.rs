//! A deterministic simulator of the election (the design's step 7, its etcd part): three
//! catalogs, each the real failover [`Core`], driven as `elect.rs` drives it, against a
//! model of etcd, under faults drawn from a seed; every run checked. Test builds only.
//!
//! # The world
//! - **Virtual time.** One true clock (etcd's: leases expire on it) in microseconds. Every
//!   catalog has its own clock, `local(t) = offset + t * rate` with a rate within ±5 % when
//!   the seed draws drift (inside the lease's 10 % margin), and its `now` is one base
//!   `Instant` plus its local time. A pause stops a catalog's processing, not its clock (a
//!   GC pause: the monotonic clock runs on, and the process sees the jump when it resumes).
//! - **etcd**: keys with values (the records as `elect.rs` writes them, byte for byte),
//!   `mod_revision`s and one global revision; leases with a TTL on true time that expire
//!   (taking their keys) and are kept alive, granted and revoked; transactions with
//!   compares (absent, `mod_revision`) as `elect.rs` sends them (a put on a lease that is
//!   gone fails the whole transaction, as etcd's does).
//! - **Catalogs**: each has two actors that share its core, as the real node's threads do.
//!   The *election* actor is `elect.rs`'s loop, every 50 ms of its own clock: keepalive (or
//!   grant) of its etcd lease every `T/3` (`KeptAlive { sent }` with `sent` its clock at
//!   send), its `members/` key, a read of `leader`, `epoch`, `sync` every `T/4` (and at once
//!   after a step-down) with `Data` before it, `Tick`; and the effects performed (campaign
//!   and bootstrap transactions, the revoke of a step-down). The *writer* actor is the group
//!   commit reduced to the election's part: every 100 ms, if the core lets it acknowledge,
//!   it logs a write, pushes it to the followers (each takes it unless down, paused or the
//!   push is lost), removes each member of `sync` that missed it (the compare-and-swap of
//!   `make_safe`; a failure gives up, a conflict steps down), acknowledges it if the core
//!   still lets it, sends the commit notice (each member that misses it, down, paused or
//!   the notice lost, leaves `sync`; a failure there steps down after the acknowledgement),
//!   then copies its log to lagging followers and records them in `sync`.
//!   Every call to etcd is one request and one answer, each delayed and maybe lost; a call
//!   unanswered within `ETCD_TIMEOUT` of the caller's clock fails (and may still apply).
//! - **Faults** (swarm: each seed turns each kind on or off, then draws a few): pauses,
//!   a catalog cut off from etcd (requests, answers, or both), crashes and restarts (a fresh
//!   core, the log kept, the old etcd lease left to expire), delay spikes, clock drift, lost
//!   messages. Faults run in the first 8 s; then a heal of 10 s.
//!
//! # Checks (every run)
//! - (a) **At most one catalog acts as the leader at any true instant.** After every event
//!   of a catalog, the simulator asks its core at which local times it would let it grant
//!   a read lease (`may_grant`: it counts on its leadership) and acknowledge a write
//!   (`may_acknowledge`); as the core's state is fixed until its next event, these give
//!   exact intervals of true time. Two catalogs' intervals must never overlap. This is sound
//!   for the model: a holder counts `0.9 T` from when its keepalive was sent on a clock at
//!   least 0.95 as fast as etcd's (`0.9 / 0.95 < 1`), etcd counts `T` from when it received
//!   it, and no one else is elected before etcd deleted the key.
//! - (b) Two catalogs never lead the same epoch.
//! - (c) After the heal, exactly one catalog may acknowledge and every other follows it.
//! - (d) A catalog's epoch never decreases.
//! - Data: an acknowledged write is never overwritten (another epoch at its number), and a
//!   catalog elected holds every acknowledged write (the election restriction).
//!
//! # Seed, trace, replay
//! Every run hashes its trace (one line per event, FNV-1a 64). `BAZAR_SIM_SEED=N` runs seed
//! `N` and prints its trace (with `BAZAR_SIM_PLANTED=ElectBehind|NoMargin|ValidTooLong|NoWaitForOldLeases` to
//! replay a planted bug's run); `BAZAR_SIM_SEEDS=N` runs `N` seeds (default 300) from
//! `BAZAR_SIM_FIRST` (default 0).
//! `cargo test --lib failover::sim -- --nocapture` shows the runs per second; a replay runs
//! `BAZAR_SIM_SEED=N cargo test --lib failover::sim::every_run -- --nocapture`.

use super::{Core, Effect, Input, Observed, Role, SyncSet};
use crate::catalog::core::planted::{plant, Planted};
use crate::catalog::etcd_side as elect;
use crate::catalog::sim::{across_cores, fail_on, fnv, planted_from_env, show_replay, Clock, Rng, Scheduler, Seeds};
use crate::wire::{Identity, LeaderRecord, SyncRecord};
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// The etcd lease's TTL and the read lease, as the defaults with etcd.
const T: Duration = Duration::from_secs(2);
const L: Duration = Duration::from_secs(1);
const T_US: u64 = 2_000_000;
/// `elect.rs`' constants, in microseconds.
const STEP_US: u64 = 50_000;
const ETCD_TIMEOUT_US: u64 = 700_000;
const ETCD_RETRY_US: u64 = 200_000;
/// The writer's period.
const WRITE_US: u64 = 100_000;
/// The phases of a run.
const FAULTS_US: u64 = 8_000_000;
const HEAL_US: u64 = 10_000_000;
const URLS: [&str; 3] = ["http://c0", "http://c1", "http://c2"];
const HISTORY: &str = "h";
const ELECT: usize = 0;
const WRITER: usize = 1;

/// A request to etcd.
#[derive(Clone, Debug)]
enum Req {
    Grant,
    KeepAlive(i64),
    Register(i64),
    Observe,
    Campaign { epoch: u64, revisions: Option<(i64, i64)>, lease: i64, sync: SyncSet },
    WriteSync { new: SyncSet, add: bool },
    Revoke(i64),
}

/// etcd's answer.
#[derive(Clone, Debug)]
enum Ans {
    Lease(i64),
    Alive(bool),
    Done,
    Seen(Observed),
    Txn {
        succeeded: bool,
        revision: i64,
    },
    /// An error (a put on a lease that is gone).
    Refused,
}

struct Kv {
    value: Vec<u8>,
    mod_revision: i64,
    lease: i64,
}

enum Cmp {
    Absent(&'static str),
    ModRevision(&'static str, i64),
}

/// The model of etcd, on true time.
#[derive(Default)]
struct Etcd {
    kvs: BTreeMap<String, Kv>,
    revision: i64,
    /// Lease -> when it expires.
    leases: BTreeMap<i64, u64>,
    next_lease: i64,
}

impl Etcd {
    /// Expires the leases whose TTL ran out by `t`, with their keys; what expired.
    fn expire(&mut self, t: u64) -> Vec<i64> {
        let gone: Vec<i64> = self.leases.iter().filter(|(_, e)| **e <= t).map(|(id, _)| *id).collect();
        for id in &gone {
            self.drop_lease(*id);
        }
        gone
    }

    fn drop_lease(&mut self, id: i64) {
        self.leases.remove(&id);
        let before = self.kvs.len();
        self.kvs.retain(|_, kv| kv.lease != id);
        if self.kvs.len() != before {
            self.revision += 1;
        }
    }

    fn txn(&mut self, when: &[Cmp], puts: Vec<(String, Vec<u8>, i64)>) -> Ans {
        let ok = when.iter().all(|c| match c {
            Cmp::Absent(k) => !self.kvs.contains_key(*k),
            Cmp::ModRevision(k, r) => self.kvs.get(*k).map_or(0, |kv| kv.mod_revision) == *r,
        });
        if !ok {
            return Ans::Txn { succeeded: false, revision: self.revision };
        }
        if puts.iter().any(|(_, _, lease)| *lease != 0 && !self.leases.contains_key(lease)) {
            return Ans::Refused;
        }
        if !puts.is_empty() {
            self.revision += 1;
        }
        for (key, value, lease) in puts {
            self.kvs.insert(key, Kv { value, mod_revision: self.revision, lease });
        }
        Ans::Txn { succeeded: true, revision: self.revision }
    }

    fn observe(&self) -> Observed {
        let mut seen = Observed::default();
        if let Some(kv) = self.kvs.get(elect::LEADER) {
            seen.leader = elect::leader(&kv.value, kv.lease);
        }
        if let Some(kv) = self.kvs.get(elect::EPOCH) {
            seen.epoch = serde_json::from_slice(&kv.value).ok().map(|e| (e, kv.mod_revision));
        }
        if let Some(kv) = self.kvs.get(elect::SYNC) {
            seen.sync = serde_json::from_slice::<SyncRecord>(&kv.value).ok().map(|r| SyncSet {
                epoch: r.epoch,
                members: r.members,
                revision: kv.mod_revision,
                history: r.history,
                floor: r.floor,
            });
        }
        seen
    }

    /// Applies a request of catalog `url` at true time `t`.
    fn apply(&mut self, url: &str, req: &Req, t: u64) -> Ans {
        match req {
            Req::Grant => {
                self.next_lease += 1;
                self.leases.insert(self.next_lease, t + T_US);
                Ans::Lease(self.next_lease)
            }
            Req::KeepAlive(id) => match self.leases.get_mut(id) {
                Some(e) => {
                    *e = t + T_US;
                    Ans::Alive(true)
                }
                None => Ans::Alive(false),
            },
            Req::Register(id) => match self.txn(&[], vec![(elect::member_key(url), url.as_bytes().to_vec(), *id)]) {
                Ans::Txn { .. } => Ans::Done,
                other => other,
            },
            Req::Observe => Ans::Seen(self.observe()),
            Req::Campaign { epoch, revisions, lease, sync } => {
                let mut when = vec![Cmp::Absent(elect::LEADER)];
                match revisions {
                    None => when.extend([Cmp::Absent(elect::SYNC), Cmp::Absent(elect::EPOCH)]),
                    Some((s, e)) => {
                        when.extend([Cmp::ModRevision(elect::SYNC, *s), Cmp::ModRevision(elect::EPOCH, *e)])
                    }
                }
                let record = LeaderRecord { epoch: *epoch, url: url.to_string() };
                let puts = vec![
                    (elect::EPOCH.to_string(), json(epoch), 0),
                    (elect::LEADER.to_string(), json(&record), *lease),
                    (elect::SYNC.to_string(), json(&elect::sync_record(sync)), 0),
                ];
                self.txn(&when, puts)
            }
            Req::WriteSync { new, .. } => self.txn(
                &[Cmp::ModRevision(elect::SYNC, new.revision)],
                vec![(elect::SYNC.to_string(), json(&elect::sync_record(new)), 0)],
            ),
            Req::Revoke(id) => {
                self.drop_lease(*id);
                Ans::Done
            }
        }
    }
}

fn json(value: &impl serde::Serialize) -> Vec<u8> {
    serde_json::to_vec(value).expect("records serialize")
}

/// One actor's call in flight: its id, the request, and the caller's clock when sent.
struct Call {
    id: u64,
    req: Req,
    sent: u64,
}

#[derive(Default)]
struct Actor {
    call: Option<Call>,
    /// Effects still to perform.
    queue: VecDeque<Effect>,
}

/// Where the election loop is.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
enum Stage {
    #[default]
    Lease,
    Register,
    Observe,
    Tick,
}

/// The election loop's locals (`elect.rs`' `elect`), in local microseconds.
#[derive(Default)]
struct Loop {
    stage: Stage,
    now: u64,
    kept: Option<u64>,
    seen: Option<u64>,
    registered: Option<i64>,
    tried: Option<u64>,
    kick: bool,
}

/// The writer's batch under way.
struct Batch {
    seq: u64,
    epoch: u64,
    took: Vec<usize>,
    remove: VecDeque<String>,
    /// Past the removals: acknowledged or not.
    done: bool,
    /// The members that missed the commit notice sent after the acknowledgement: each
    /// leaves `sync` (a failure steps down) before the additions and the next batch.
    notice: VecDeque<String>,
    add: VecDeque<String>,
}

/// An interval of true time in which a catalog acts as the leader.
#[derive(Clone, Copy, Debug)]
struct Seg {
    node: usize,
    inc: u32,
    epoch: u64,
    start: u64,
    end: u64,
}

struct Node {
    url: &'static str,
    core: Core,
    /// Incarnation: a restart makes a new one (events of the old one are dropped).
    inc: u32,
    clock: Clock,
    up: bool,
    paused_until: u64,
    /// Cut off from etcd: its requests lost, etcd's answers lost.
    cut_req: bool,
    cut_ans: bool,
    spike: bool,
    /// The epoch of each write logged (write `n` at `n - 1`).
    log: Vec<u64>,
    /// Up to which write it shows (the floor it campaigns with).
    readable: u64,
    actors: [Actor; 2],
    lp: Loop,
    batch: Option<Batch>,
    lead: Option<Seg>,
    ack: Option<Seg>,
    epoch_seen: u64,
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    Pause(usize, u64),
    Crash(usize),
    Restart(usize),
    Cut(usize, bool, bool),
    Uncut(usize),
    Spike(usize, bool),
    Heal,
}

enum Ev {
    Wake { n: usize, a: usize, inc: u32 },
    Arrive { n: usize, a: usize, inc: u32, call: u64, req: Req },
    Answer { n: usize, a: usize, inc: u32, call: u64, ans: Ans },
    Timeout { n: usize, a: usize, inc: u32, call: u64 },
    Fault(Fault),
}

/// What a seed turned on.
#[derive(Debug, Default)]
struct Swarm {
    pauses: bool,
    cuts: bool,
    crashes: bool,
    spikes: bool,
    drift: bool,
    loss: f64,
}

/// How a run ended.
pub(super) struct Outcome {
    pub hash: u64,
    pub failure: Option<String>,
    pub events: u64,
    /// Epochs led and writes acknowledged (how much the run exercised).
    pub elections: u64,
    pub acked: u64,
}

struct World {
    t: u64,
    base: Instant,
    rng: Rng,
    /// Which members miss a commit notice: a generator of its own, so that the runs the
    /// notice does not change stay as they were.
    notices: Rng,
    queue: Scheduler<Ev>,
    next_call: u64,
    nodes: Vec<Node>,
    etcd: Etcd,
    loss: f64,
    healed: bool,
    /// Closed leader and acknowledging intervals.
    leads: Vec<Seg>,
    acks: Vec<Seg>,
    /// Epoch -> who led it.
    led: BTreeMap<u64, (usize, u32)>,
    /// Acknowledged writes: number -> epoch.
    acked: BTreeMap<u64, u64>,
    failure: Option<String>,
    hash: u64,
    trace: Option<Vec<String>>,
    events: u64,
}

fn new_node(n: usize, clock: Clock) -> Node {
    let core = Core::new(URLS[n], T, L);
    Node {
        url: URLS[n],
        core,
        inc: 0,
        clock,
        up: true,
        paused_until: 0,
        cut_req: false,
        cut_ans: false,
        spike: false,
        // A store restarted against an empty etcd: every catalog holds the same five writes.
        log: vec![0; 5],
        readable: 5,
        actors: [Actor::default(), Actor::default()],
        lp: Loop::default(),
        batch: None,
        lead: None,
        ack: None,
        epoch_seen: 0,
    }
}

/// Runs one seed, with `planted` planted (on this thread); keeps the trace when `trace`.
pub(super) fn run(seed: u64, planted: Planted, trace: bool) -> (Outcome, Vec<String>) {
    let _planting = plant(planted);
    let mut rng = Rng(seed ^ 0x005e_ed0f_ba2a);
    let swarm = Swarm {
        pauses: rng.chance(0.5),
        cuts: rng.chance(0.5),
        crashes: rng.chance(0.5),
        spikes: rng.chance(0.5),
        drift: rng.chance(0.5),
        loss: if rng.chance(0.5) { rng.range(1, 50) as f64 / 1000.0 } else { 0.0 },
    };
    let nodes = (0..URLS.len())
        .map(|n| {
            let rate = if swarm.drift { rng.range(950_000, 1_050_000) } else { 1_000_000 };
            new_node(n, Clock { offset: rng.range(0, 1_000_000), rate })
        })
        .collect();
    let mut w = World {
        t: 0,
        base: Instant::now(),
        rng,
        notices: Rng(seed ^ 0x0000_7e11_0f5e_c0de),
        queue: Scheduler::new(),
        next_call: 0,
        nodes,
        etcd: Etcd::default(),
        loss: swarm.loss,
        healed: false,
        leads: Vec::new(),
        acks: Vec::new(),
        led: BTreeMap::new(),
        acked: BTreeMap::new(),
        failure: None,
        hash: 0xcbf2_9ce4_8422_2325,
        trace: trace.then(Vec::new),
        events: 0,
    };
    w.line(None, format!("seed {seed}, planted {planted:?}, {swarm:?}"));
    let heal = w.draw_faults(&swarm);
    w.schedule(heal, Ev::Fault(Fault::Heal));
    for n in 0..w.nodes.len() {
        let r = w.nodes[n].clock.rate;
        w.line(Some(n), format!("clock rate {r} ppm"));
        let (a, b) = (w.rng.range(0, STEP_US), w.rng.range(0, WRITE_US));
        w.schedule(a, Ev::Wake { n, a: ELECT, inc: 0 });
        w.schedule(b, Ev::Wake { n, a: WRITER, inc: 0 });
    }
    let end = heal + HEAL_US;
    while let Some((t, ev)) = w.queue.next_until(end) {
        if w.failure.is_some() {
            break;
        }
        w.t = t;
        w.events += 1;
        w.event(ev);
    }
    w.t = end;
    w.finish();
    let outcome = Outcome {
        hash: w.hash,
        failure: w.failure.clone(),
        events: w.events,
        elections: w.led.len() as u64,
        acked: w.acked.len() as u64,
    };
    (outcome, w.trace.unwrap_or_default())
}

impl World {
    fn schedule(&mut self, t: u64, ev: Ev) {
        self.queue.at(t, ev);
    }

    fn line(&mut self, n: Option<usize>, what: String) {
        let who = n.map_or("--".to_string(), |n| format!("c{n}"));
        let line = format!("{:>12.3}ms {who} {what}", self.t as f64 / 1000.0);
        self.hash = fnv(self.hash, line.as_bytes());
        self.hash = fnv(self.hash, b"\n");
        if let Some(trace) = &mut self.trace {
            trace.push(line);
        }
    }

    fn fail(&mut self, why: String) {
        self.line(None, format!("CHECK FAILED: {why}"));
        self.failure.get_or_insert(why);
    }

    /// Draws the faults of the seed; returns when they are all over (the heal).
    fn draw_faults(&mut self, swarm: &Swarm) -> u64 {
        let mut last = FAULTS_US;
        let count = self.nodes.len() as u64 - 1;
        for kind in 0..4 {
            let on = [swarm.pauses, swarm.cuts, swarm.crashes, swarm.spikes][kind];
            if !on {
                continue;
            }
            for _ in 0..self.rng.range(1, 4) {
                let (n, at) = (self.rng.range(0, count) as usize, self.rng.range(500_000, FAULTS_US));
                let length = match kind {
                    0 => self.rng.range(100_000, 3_000_000),
                    _ => self.rng.range(200_000, 4_000_000),
                };
                match kind {
                    0 => self.schedule(at, Ev::Fault(Fault::Pause(n, length))),
                    1 => {
                        let (req, ans) = match self.rng.range(0, 2) {
                            0 => (true, false),
                            1 => (false, true),
                            _ => (true, true),
                        };
                        self.schedule(at, Ev::Fault(Fault::Cut(n, req, ans)));
                        self.schedule(at + length, Ev::Fault(Fault::Uncut(n)));
                    }
                    2 => {
                        self.schedule(at, Ev::Fault(Fault::Crash(n)));
                        self.schedule(at + length, Ev::Fault(Fault::Restart(n)));
                    }
                    _ => {
                        self.schedule(at, Ev::Fault(Fault::Spike(n, true)));
                        self.schedule(at + length, Ev::Fault(Fault::Spike(n, false)));
                    }
                }
                last = last.max(at + length);
            }
        }
        last
    }

    fn event(&mut self, ev: Ev) {
        let node_of = |ev: &Ev| match ev {
            Ev::Wake { n, inc, .. } | Ev::Answer { n, inc, .. } | Ev::Timeout { n, inc, .. } => Some((*n, *inc)),
            _ => None,
        };
        if let Some((n, inc)) = node_of(&ev) {
            if inc != self.nodes[n].inc || !self.nodes[n].up {
                return;
            }
            if self.t < self.nodes[n].paused_until {
                // Paused: it happens when the catalog runs again, in the same order.
                let at = self.nodes[n].paused_until;
                return self.schedule(at, ev);
            }
        }
        match ev {
            Ev::Wake { n, a, .. } => {
                self.line(Some(n), format!("wake {}", ["elect", "writer"][a]));
                self.run_actor(n, a);
            }
            Ev::Arrive { n, a, inc, call, req } => self.arrive(n, a, inc, call, req),
            Ev::Answer { n, a, call, ans, .. } => {
                if self.nodes[n].actors[a].call.as_ref().is_some_and(|c| c.id == call) {
                    let c = self.nodes[n].actors[a].call.take().expect("checked");
                    self.line(Some(n), format!("answer {:?} to {:?}", ans, c.req));
                    self.answered(n, a, c, Some(ans));
                    self.run_actor(n, a);
                }
            }
            Ev::Timeout { n, a, call, .. } => {
                if self.nodes[n].actors[a].call.as_ref().is_some_and(|c| c.id == call) {
                    let c = self.nodes[n].actors[a].call.take().expect("checked");
                    self.line(Some(n), format!("timeout of {:?}", c.req));
                    self.answered(n, a, c, None);
                    self.run_actor(n, a);
                }
            }
            Ev::Fault(f) => self.fault(f),
        }
    }

    fn fault(&mut self, f: Fault) {
        self.line(None, format!("fault {f:?}"));
        match f {
            Fault::Pause(n, length) => {
                if self.nodes[n].up {
                    self.nodes[n].paused_until = self.t + length;
                }
            }
            Fault::Crash(n) => {
                if self.nodes[n].up {
                    self.close(n, self.t);
                    let node = &mut self.nodes[n];
                    node.up = false;
                    node.inc += 1;
                }
            }
            Fault::Restart(n) => {
                if !self.nodes[n].up {
                    let old = &self.nodes[n];
                    let mut fresh = new_node(n, old.clock);
                    (fresh.inc, fresh.log, fresh.readable) = (old.inc, old.log.clone(), old.readable);
                    (fresh.cut_req, fresh.cut_ans, fresh.spike) = (old.cut_req, old.cut_ans, old.spike);
                    self.nodes[n] = fresh;
                    let inc = self.nodes[n].inc;
                    self.schedule(self.t, Ev::Wake { n, a: ELECT, inc });
                    self.schedule(self.t, Ev::Wake { n, a: WRITER, inc });
                }
            }
            Fault::Cut(n, req, ans) => (self.nodes[n].cut_req, self.nodes[n].cut_ans) = (req, ans),
            Fault::Uncut(n) => (self.nodes[n].cut_req, self.nodes[n].cut_ans) = (false, false),
            Fault::Spike(n, on) => self.nodes[n].spike = on,
            Fault::Heal => {
                self.healed = true;
                self.loss = 0.0;
                for node in &mut self.nodes {
                    (node.cut_req, node.cut_ans, node.spike) = (false, false, false);
                }
            }
        }
    }

    /// One way's delay to or from etcd for catalog `n` (None: lost).
    fn delay(&mut self, n: usize, cut: bool) -> Option<u64> {
        if cut || self.rng.chance(self.loss) {
            return None;
        }
        Some(match self.nodes[n].spike {
            true => self.rng.range(100_000, 650_000),
            false => self.rng.range(200, 3_000),
        })
    }

    fn now(&self, n: usize) -> Instant {
        self.base + Duration::from_micros(self.local(n))
    }

    fn local(&self, n: usize) -> u64 {
        self.nodes[n].clock.local(self.t)
    }

    fn micros(&self, at: Instant) -> u64 {
        at.duration_since(self.base).as_micros() as u64
    }

    /// Sends `req` from actor `a` of catalog `n`.
    fn send(&mut self, n: usize, a: usize, req: Req) {
        self.next_call += 1;
        let (id, inc, sent) = (self.next_call, self.nodes[n].inc, self.local(n));
        self.line(Some(n), format!("send {req:?}"));
        let timeout = self.nodes[n].clock.true_of(sent + ETCD_TIMEOUT_US);
        self.schedule(timeout, Ev::Timeout { n, a, inc, call: id });
        if let Some(d) = self.delay(n, self.nodes[n].cut_req) {
            self.schedule(self.t + d, Ev::Arrive { n, a, inc, call: id, req: req.clone() });
        }
        self.nodes[n].actors[a].call = Some(Call { id, req, sent });
    }

    fn arrive(&mut self, n: usize, a: usize, inc: u32, call: u64, req: Req) {
        for id in self.etcd.expire(self.t) {
            self.line(None, format!("etcd: lease {id} expired"));
        }
        let ans = self.etcd.apply(self.nodes[n].url, &req, self.t);
        self.line(None, format!("etcd: {req:?} from c{n} -> {ans:?}"));
        if let Some(d) = self.delay(n, self.nodes[n].cut_ans) {
            self.schedule(self.t + d, Ev::Answer { n, a, inc, call, ans });
        }
    }

    /// One input to catalog `n`'s core; its effects go to actor `a`'s queue.
    fn feed(&mut self, n: usize, a: usize, input: Input) {
        let shown = match &input {
            Input::KeptAlive { lease, sent } => format!("KeptAlive {{ lease: {lease}, sent: {} }}", self.micros(*sent)),
            other => format!("{other:?}"),
        };
        let now = self.now(n);
        let effects = self.nodes[n].core.step(input, now);
        if !matches!(shown.as_str(), "Tick") || !effects.is_empty() {
            self.line(Some(n), format!("<- {shown} -> {effects:?}"));
        }
        let epoch = self.nodes[n].core.epoch();
        if epoch < self.nodes[n].epoch_seen {
            self.fail(format!("c{n}'s epoch went back from {} to {epoch}", self.nodes[n].epoch_seen));
        }
        self.nodes[n].epoch_seen = epoch;
        self.nodes[n].actors[a].queue.extend(effects);
        self.sample(n);
    }

    fn identity(&self, n: usize) -> Identity {
        let log = &self.nodes[n].log;
        Identity { history: HISTORY.into(), seq: log.len() as u64, epoch: log.last().copied().unwrap_or(0) }
    }

    fn primary_epoch(&self, n: usize) -> Option<u64> {
        match self.nodes[n].core.role() {
            Role::Primary { epoch, .. } => Some(*epoch),
            _ => None,
        }
    }

    /// Runs actor `a` of catalog `n` until it waits for etcd or sleeps.
    fn run_actor(&mut self, n: usize, a: usize) {
        loop {
            if self.failure.is_some() || self.nodes[n].actors[a].call.is_some() {
                return;
            }
            if let Some(effect) = self.nodes[n].actors[a].queue.pop_front() {
                self.perform(n, a, effect);
                continue;
            }
            let more = match a {
                ELECT => self.elect_step(n),
                _ => self.writer_step(n),
            };
            if !more {
                return;
            }
        }
    }

    /// One stage of `elect.rs`' loop; false when it sleeps.
    fn elect_step(&mut self, n: usize) -> bool {
        let lp = &self.nodes[n].lp;
        match lp.stage {
            Stage::Lease => {
                let now = self.local(n);
                let lp = &mut self.nodes[n].lp;
                lp.now = now;
                lp.stage = Stage::Register;
                let due = lp.tried.is_none_or(|t| now >= t + ETCD_RETRY_US);
                match self.nodes[n].core.lease() {
                    None if due => {
                        self.nodes[n].lp.tried = Some(now);
                        self.send(n, ELECT, Req::Grant);
                    }
                    Some(id) if due && self.nodes[n].lp.kept.is_none_or(|k| now >= k + T_US / 3) => {
                        self.nodes[n].lp.tried = Some(now);
                        self.send(n, ELECT, Req::KeepAlive(id));
                    }
                    _ => {}
                }
            }
            Stage::Register => {
                self.nodes[n].lp.stage = Stage::Observe;
                let registered = self.nodes[n].lp.registered;
                if let Some(id) = self.nodes[n].core.lease().filter(|id| registered != Some(*id)) {
                    self.send(n, ELECT, Req::Register(id));
                }
            }
            Stage::Observe => {
                let lp = &mut self.nodes[n].lp;
                lp.stage = Stage::Tick;
                let now = lp.now;
                if std::mem::take(&mut lp.kick) || lp.seen.is_none_or(|s| now >= s + T_US / 4) {
                    lp.seen = Some(now);
                    if self.primary_epoch(n).is_none() {
                        let data = self.identity(n);
                        self.feed(n, ELECT, Input::Data(data));
                    }
                    self.send(n, ELECT, Req::Observe);
                }
            }
            Stage::Tick => {
                self.nodes[n].lp.stage = Stage::Lease;
                self.feed(n, ELECT, Input::Tick);
                let (inc, at) = (self.nodes[n].inc, self.nodes[n].clock.true_of(self.local(n) + STEP_US));
                self.schedule(at, Ev::Wake { n, a: ELECT, inc });
                return false;
            }
        }
        true
    }

    /// An answer (None: a timeout) to a call of actor `a`.
    fn answered(&mut self, n: usize, a: usize, call: Call, ans: Option<Ans>) {
        match (call.req, ans) {
            (Req::Grant, Some(Ans::Lease(id))) => {
                let sent = self.base + Duration::from_micros(call.sent);
                self.feed(n, a, Input::KeptAlive { lease: id, sent });
                self.nodes[n].lp.kept = Some(call.sent);
            }
            (Req::KeepAlive(id), Some(Ans::Alive(true))) => {
                let sent = self.base + Duration::from_micros(call.sent);
                self.feed(n, a, Input::KeptAlive { lease: id, sent });
                self.nodes[n].lp.kept = Some(call.sent);
            }
            (Req::KeepAlive(_), Some(Ans::Alive(false))) => self.feed(n, a, Input::LeaseGone),
            (Req::Register(id), Some(Ans::Done)) => self.nodes[n].lp.registered = Some(id),
            (Req::Observe, Some(Ans::Seen(seen))) => self.feed(n, a, Input::Observed(seen)),
            (Req::Campaign { sync, .. }, ans) => {
                let won = match ans {
                    Some(Ans::Txn { succeeded: true, revision }) => Some(SyncSet { revision, ..sync }),
                    _ => None,
                };
                self.feed(n, a, Input::Campaigned { won });
            }
            (Req::WriteSync { new, add }, ans) => match ans {
                Some(Ans::Txn { succeeded: true, revision }) => {
                    self.feed(n, a, Input::SyncWritten(SyncSet { revision, ..new }))
                }
                Some(Ans::Txn { succeeded: false, .. }) => {
                    self.feed(n, a, Input::SyncConflict);
                    self.batch_failed(n, add);
                }
                _ => {
                    // No answer: as `elect.rs`' `change_sync`, the core is told the record
                    // is unknown (it steps down), and a removal's batch is not acknowledged.
                    let why = "no answer from etcd".to_string();
                    self.feed(n, a, Input::SyncUnknown { why });
                    self.batch_failed(n, add);
                }
            },
            _ => {}
        }
    }

    /// A removal from `sync` failed: the batch is not acknowledged (after its notice, it
    /// was already; an addition's failure only ends it).
    fn batch_failed(&mut self, n: usize, add: bool) {
        let acknowledged = self.nodes[n].batch.as_ref().is_some_and(|b| b.done);
        if !add && !acknowledged {
            self.line(Some(n), "the batch is not acknowledged".into());
        }
        if let Some(b) = &mut self.nodes[n].batch {
            b.notice.clear();
            b.remove.clear();
            b.done = true;
            b.add.clear();
        }
    }

    /// Performs an effect as `elect.rs`' `perform` does.
    fn perform(&mut self, n: usize, a: usize, effect: Effect) {
        match effect {
            Effect::Bootstrap | Effect::Campaign { .. } => {
                let Some(lease) = self.nodes[n].core.lease() else {
                    return self.feed(n, a, Input::Campaigned { won: None });
                };
                let (epoch, revisions) = match effect {
                    Effect::Campaign { epoch, sync_revision, epoch_revision } => {
                        (epoch, Some((sync_revision, epoch_revision)))
                    }
                    _ => (1, None),
                };
                let floor = self.nodes[n].readable;
                let sync = SyncSet {
                    epoch,
                    members: vec![URLS[n].to_string()],
                    revision: 0,
                    history: Some(HISTORY.into()),
                    floor,
                };
                self.send(n, a, Req::Campaign { epoch, revisions, lease, sync });
            }
            Effect::Lead { epoch } => {
                let node = &mut self.nodes[n];
                node.readable = node.log.len() as u64;
                let who = (n, node.inc);
                if let Some(other) = self.led.insert(epoch, who).filter(|o| *o != who) {
                    self.fail(format!("epoch {epoch} led by c{} and then c{n}", other.0));
                }
                let lacks: Vec<u64> = (self.acked.iter())
                    .filter(|(s, e)| self.nodes[n].log.get(**s as usize - 1) != Some(*e))
                    .map(|(s, _)| *s)
                    .collect();
                if !lacks.is_empty() {
                    self.fail(format!("c{n} elected at epoch {epoch} without acknowledged writes {lacks:?}"));
                }
            }
            Effect::StepDown { .. } => {
                if let Some(lease) = self.nodes[n].core.resigned() {
                    self.send(n, a, Req::Revoke(lease));
                }
                self.nodes[n].lp.kick = true;
            }
            Effect::Follow { .. } => {}
        }
    }

    fn paused(&self, q: usize) -> bool {
        self.t < self.nodes[q].paused_until
    }

    /// The group commit, reduced to its dealings with the election; false when it sleeps.
    fn writer_step(&mut self, n: usize) -> bool {
        let now = self.now(n);
        let Some(mut b) = self.nodes[n].batch.take() else {
            if self.nodes[n].core.may_acknowledge(now).is_err() {
                self.sleep_writer(n);
                return false;
            }
            self.start_batch(n);
            return true;
        };
        if let Some(url) = b.remove.pop_front() {
            self.nodes[n].batch = Some(b);
            return self.change_sync(n, &url, false);
        }
        if !b.done {
            b.done = true;
            if self.nodes[n].core.may_acknowledge(now).is_ok() {
                self.acknowledge(n, &b);
                self.notice(n, &mut b);
                self.catch_up(n, &mut b);
            } else {
                self.line(Some(n), format!("write {} not acknowledged: may not any more", b.seq));
            }
        }
        if let Some(url) = b.notice.pop_front() {
            self.nodes[n].batch = Some(b);
            return self.change_sync(n, &url, false);
        }
        if let Some(url) = b.add.pop_front() {
            self.nodes[n].batch = Some(b);
            return self.change_sync(n, &url, true);
        }
        self.sleep_writer(n);
        false
    }

    fn sleep_writer(&mut self, n: usize) {
        let (inc, at) = (self.nodes[n].inc, self.nodes[n].clock.true_of(self.local(n) + WRITE_US));
        self.schedule(at, Ev::Wake { n, a: WRITER, inc });
    }

    /// Logs a write and pushes it; the members that missed it are to be removed.
    fn start_batch(&mut self, n: usize) {
        let epoch = self.primary_epoch(n).expect("may acknowledge");
        self.nodes[n].log.push(epoch);
        let seq = self.nodes[n].log.len() as u64;
        let mut took = Vec::new();
        for q in 0..self.nodes.len() {
            if q == n || !self.follows(q, epoch) || self.rng.chance(self.loss * 4.0) {
                continue;
            }
            let (p, r) = (&self.nodes[n].log, &self.nodes[q].log);
            if r.len() as u64 == seq - 1 && r.last() == p.get(seq as usize - 2) {
                self.nodes[q].log.push(epoch);
                took.push(q);
            }
        }
        let urls: Vec<&str> = took.iter().map(|q| URLS[*q]).collect();
        let remove: VecDeque<String> = self.nodes[n].core.not_taken(&urls).into();
        self.line(Some(n), format!("write {seq} (epoch {epoch}) taken by {urls:?}, to remove from sync {remove:?}"));
        let (notice, add) = (VecDeque::new(), VecDeque::new());
        self.nodes[n].batch = Some(Batch { seq, epoch, took, remove, done: false, notice, add });
    }

    /// The commit notice after the acknowledgement (`core::batch`): a member that took the
    /// write misses it when it is down, paused or the notice is lost, and is to leave
    /// `sync` (its lease, in the real store, waited out) before the next batch.
    fn notice(&mut self, n: usize, b: &mut Batch) {
        for q in b.took.clone() {
            if !self.follows(q, b.epoch) || self.notices.chance(self.loss * 4.0) {
                b.notice.push_back(URLS[q].to_string());
            }
        }
        if !b.notice.is_empty() {
            self.line(Some(n), format!("the notice of write {} missed by {:?}, to remove from sync", b.seq, b.notice));
        }
    }

    /// Whether catalog `q` takes pushes of a primary at `epoch` now.
    fn follows(&self, q: usize, epoch: u64) -> bool {
        let node = &self.nodes[q];
        node.up && !self.paused(q) && self.primary_epoch(q).is_none() && node.core.epoch() <= epoch
    }

    fn acknowledge(&mut self, n: usize, b: &Batch) {
        self.line(Some(n), format!("acknowledged write {} (epoch {})", b.seq, b.epoch));
        if let Some(e) = self.acked.insert(b.seq, b.epoch).filter(|e| *e != b.epoch) {
            self.fail(format!("write {} acknowledged at epoch {e}, then again at epoch {}", b.seq, b.epoch));
        }
        self.nodes[n].readable = b.seq;
        for q in &b.took {
            let node = &mut self.nodes[*q];
            if node.log.get(b.seq as usize - 1) == Some(&b.epoch) {
                node.readable = node.readable.max(b.seq);
            }
        }
    }

    /// Copies the log to lagging followers (sometimes); those in step and not in sync are
    /// to be recorded in it.
    fn catch_up(&mut self, n: usize, b: &mut Batch) {
        let members = self.nodes[n].core.sync().map(|s| s.members.clone()).unwrap_or_default();
        for q in 0..self.nodes.len() {
            if q == n || !self.follows(q, b.epoch) {
                continue;
            }
            if self.nodes[q].log != self.nodes[n].log && self.rng.chance(0.5) {
                self.nodes[q].log = self.nodes[n].log.clone();
                self.nodes[q].readable = self.nodes[n].readable;
                self.line(Some(q), format!("copied c{n}'s log ({} writes)", b.seq));
            }
            let url = self.nodes[q].url;
            if self.nodes[q].log == self.nodes[n].log && !members.iter().any(|m| m == url) {
                b.add.push_back(url.to_string());
            }
        }
    }

    /// `elect.rs`' `change_sync`: false when it waits for etcd.
    fn change_sync(&mut self, n: usize, url: &str, add: bool) -> bool {
        let floor = self.nodes[n].readable;
        let change = self.nodes[n].core.sync_change(url, add).map(|s| SyncSet { floor: s.floor.max(floor), ..s });
        if self.primary_epoch(n).is_none() {
            if !add {
                let why = "no longer the primary".to_string();
                self.feed(n, WRITER, Input::GiveUp { why });
                self.batch_failed(n, add);
            }
            return true;
        }
        match change {
            None => true,
            Some(new) => {
                self.send(n, WRITER, Req::WriteSync { new, add });
                false
            }
        }
    }

    /// Until when (local) `f` holds from `from` on, `f` being true at `from` and, for a
    /// fixed core, true up to some moment and false after it.
    fn holds_until(&self, n: usize, from: u64, f: impl Fn(&Core, Instant) -> bool) -> u64 {
        let core = &self.nodes[n].core;
        let at = |l: u64| f(core, self.base + Duration::from_micros(l));
        let (mut lo, mut hi) = (from, from + 8 * T_US);
        if at(hi) {
            return hi;
        }
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            match at(mid) {
                true => lo = mid,
                false => hi = mid,
            }
        }
        hi
    }

    /// Closes catalog `n`'s open intervals at true time `t` (its state changes now).
    fn close(&mut self, n: usize, t: u64) {
        for seg in [self.nodes[n].lead.take(), self.nodes[n].ack.take()].into_iter().enumerate() {
            if let (i, Some(mut s)) = seg {
                s.end = s.end.min(t);
                if s.start < s.end {
                    [&mut self.leads, &mut self.acks][i].push(s);
                }
            }
        }
    }

    /// After an event of catalog `n`: the intervals in which its core, as it is now, lets
    /// it lead and acknowledge.
    fn sample(&mut self, n: usize) {
        self.close(n, self.t);
        let Some(epoch) = self.primary_epoch(n) else { return };
        let (now, local, clock, inc) = (self.now(n), self.local(n), self.nodes[n].clock, self.nodes[n].inc);
        if self.nodes[n].core.may_grant(now) {
            let end = self.holds_until(n, local, |c, at| c.may_grant(at));
            self.nodes[n].lead = Some(Seg { node: n, inc, epoch, start: self.t, end: clock.true_of(end) });
        }
        let from = self.nodes[n].core.writes_from(now).map_or(local, |w| self.micros(w).max(local));
        let from_at = self.base + Duration::from_micros(from);
        if self.nodes[n].core.may_acknowledge(from_at).is_ok() {
            let end = self.holds_until(n, from, |c, at| c.may_acknowledge(at).is_ok());
            let start = clock.true_of(from).max(self.t);
            self.nodes[n].ack = Some(Seg { node: n, inc, epoch, start, end: clock.true_of(end) });
        }
    }

    /// The checks at the end of a run.
    fn finish(&mut self) {
        for n in 0..self.nodes.len() {
            self.close(n, self.t);
        }
        for (what, segs) in [("lead", self.leads.clone()), ("acknowledge", self.acks.clone())] {
            if let Some((a, b)) = overlap(segs) {
                self.fail(format!(
                    "c{} (epoch {}) and c{} (epoch {}) may both {what} from {:.3}ms to {:.3}ms",
                    a.node,
                    a.epoch,
                    b.node,
                    b.epoch,
                    b.start as f64 / 1000.0,
                    a.end.min(b.end) as f64 / 1000.0
                ));
            }
        }
        if let Some((a, b)) = acked_under_old_leases(&self.leads, &self.acks) {
            self.fail(format!(
                "c{} (epoch {}) acknowledged at {:.3}ms while a replica may still read on a lease c{} (epoch {}) \
                 granted until {:.3}ms",
                b.node,
                b.epoch,
                b.start as f64 / 1000.0,
                a.node,
                a.epoch,
                a.end as f64 / 1000.0
            ));
        }
        if self.failure.is_some() {
            return;
        }
        let primaries: Vec<usize> =
            (0..self.nodes.len()).filter(|n| self.nodes[*n].core.may_acknowledge(self.now(*n)).is_ok()).collect();
        let [p] = primaries[..] else {
            return self.fail(format!("after the heal, {} catalogs may acknowledge: {primaries:?}", primaries.len()));
        };
        for q in (0..self.nodes.len()).filter(|q| *q != p) {
            if self.nodes[q].core.primary() != Some(URLS[p]) {
                let role = format!("{:?}", self.nodes[q].core.primary());
                self.fail(format!("after the heal, c{q} follows {role}, not the primary c{p}"));
            }
        }
        if self.failure.is_none() {
            self.line(None, format!("all checks passed; c{p} is the primary"));
        }
    }
}

/// An acknowledging interval of a newer epoch that begins while a read lease granted in an
/// older epoch's leading interval may still be held, if any. A replica holds a lease
/// granted at true time `g` at most until `g + 0.9 L / 0.95` (it counts 0.9 L from before
/// `g` on a clock at least 0.95 as fast as true time): a write acknowledged before then
/// could be missed by a read it answers.
fn acked_under_old_leases(leads: &[Seg], acks: &[Seg]) -> Option<(Seg, Seg)> {
    let held_us = (L.as_micros() as f64 * crate::lease::SHARE / 0.95) as u64;
    acks.iter().find_map(|b| {
        leads.iter().find(|a| a.epoch < b.epoch && b.start < a.end + held_us && a.start < b.end).map(|a| (*a, *b))
    })
}

/// Two intervals of different owners that overlap, if any.
fn overlap(mut segs: Vec<Seg>) -> Option<(Seg, Seg)> {
    segs.sort_by_key(|s| (s.start, s.end));
    let mut reach: Option<Seg> = None;
    for s in segs {
        if let Some(r) = reach {
            if s.start < r.end && (r.node, r.inc, r.epoch) != (s.node, s.inc, s.epoch) {
                return Some((r, s));
            }
        }
        if reach.is_none_or(|r| s.end > r.end) {
            reach = Some(s);
        }
    }
    None
}

/// Seeds run by default (`cargo test`).
const DEFAULT_SEEDS: u64 = 300;
/// The bugs this simulator plants.
const PLANTS: [Planted; 4] =
    [Planted::ElectBehind, Planted::NoMargin, Planted::ValidTooLong, Planted::NoWaitForOldLeases];

/// Every seed of `BAZAR_SIM_FIRST..BAZAR_SIM_FIRST + BAZAR_SIM_SEEDS` (0 and 300 by
/// default; CI runs 10,000 from a random first, so each run tries new schedules) passes
/// every check; or, with
/// `BAZAR_SIM_SEED=N`, that one seed, its trace printed.
#[test]
fn every_run_passes_its_checks() {
    let planted = planted_from_env(&PLANTS);
    let (first, seeds) = match Seeds::from_env(DEFAULT_SEEDS) {
        Seeds::Range { first, count } => (first, count),
        Seeds::One(seed) => {
            let (outcome, trace) = run(seed, planted, true);
            return show_replay(seed, &trace, outcome.hash, outcome.events, outcome.failure);
        }
    };
    let started = Instant::now();
    let outcomes = across_cores(first, seeds, |seed| run(seed, planted, false).0);
    let (mut events, mut elections, mut acked, mut failovers, mut failed) = (0, 0, 0, 0, Vec::new());
    for (seed, outcome) in (first..).zip(outcomes) {
        (events, elections, acked) = (events + outcome.events, elections + outcome.elections, acked + outcome.acked);
        failovers += u64::from(outcome.elections > 1);
        if let Some(why) = outcome.failure {
            println!("seed {seed}: {why}");
            failed.push(seed);
        }
    }
    let took = started.elapsed().as_secs_f64();
    println!(
        "{seeds} runs (seeds {first}..{}) in {took:.2}s: {:.0} runs/s, {:.0} events/s; {failovers} runs with a failover, \
         {:.1} elections and {:.0} acknowledged writes a run",
        first + seeds,
        seeds as f64 / took,
        events as f64 / took,
        elections as f64 / seeds as f64,
        acked as f64 / seeds as f64
    );
    fail_on(&failed, seeds, "failover::sim::every_run");
}

/// The same seed gives the same run: the first 20 seeds, twice each.
#[test]
fn the_same_seed_gives_the_same_run() {
    for seed in 0..20 {
        let (a, _) = run(seed, Planted::None, false);
        let (b, _) = run(seed, Planted::None, false);
        assert_eq!(a.hash, b.hash, "seed {seed}");
        assert!(a.events > 1000, "seed {seed} ran {} events", a.events);
    }
}

/// Each planted bug is found within 1,000 seeds.
#[test]
fn planted_bugs_are_found() {
    for planted in PLANTS {
        let found = (0..1000).find_map(|seed| run(seed, planted, false).0.failure.map(|why| (seed, why)));
        let Some((seed, why)) = found else { panic!("{planted:?} not found in 1000 seeds") };
        println!("{planted:?} found by seed {seed} ({} seeds run): {why}", seed + 1);
    }
}

/// Seeds that found a bug of the core, run on every test run since it was fixed. Each lost
/// an acknowledged write the same way: the primary added a caught-up replica to `sync`, the
/// transaction applied in etcd but its answer was lost (a timeout), so the core's `sync`
/// still lacked the replica; the next write, which the replica missed, was acknowledged
/// without removing it (`not_taken` judged on the stale record), and the replica, named in
/// `sync` and at the record's floor, was later elected without that write. The fix: a
/// change of `sync` without an answer steps the primary down (`Input::SyncUnknown`).
#[test]
fn seeds_that_found_core_bugs() {
    for seed in [370, 726, 1102, 1217] {
        if let Some(why) = run(seed, Planted::None, false).0.failure {
            panic!("seed {seed}: {why}");
        }
    }
}
