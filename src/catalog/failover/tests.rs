//! The core's transitions, table-driven where they are many, and the races of the issue.

use super::*;

const T: Duration = Duration::from_secs(2);
const L: Duration = Duration::from_secs(1);
const ME: &str = "http://a";
const B: &str = "http://b";

fn at(t0: Instant, ms: u64) -> Instant {
    t0 + Duration::from_millis(ms)
}

fn sync(epoch: u64, members: &[&str], revision: i64) -> SyncSet {
    SyncSet { epoch, members: members.iter().map(|m| m.to_string()).collect(), revision, history: None, floor: 0 }
}

/// Data of history "h" at write `seq`.
fn data(seq: u64) -> Identity {
    Identity { history: "h".into(), seq, epoch: 1 }
}

fn leader(url: &str, epoch: u64, lease: i64) -> Leader {
    Leader { url: url.into(), epoch, lease }
}

/// A core with its etcd lease 7 kept alive at t0.
fn core(t0: Instant) -> Core {
    let mut c = Core::new(ME, T, L);
    c.step(Input::KeptAlive { lease: 7, sent: t0 }, t0);
    c.step(Input::Data(data(10)), t0);
    c
}

/// A core that won the campaign for epoch 3 at t0.
fn primary(t0: Instant) -> Core {
    let mut c = core(t0);
    let seen = Observed { leader: None, epoch: Some((2, 10)), sync: Some(sync(2, &[ME, B], 11)) };
    assert_eq!(
        c.step(Input::Observed(seen), t0),
        [Effect::Campaign { epoch: 3, sync_revision: 11, epoch_revision: 10 }]
    );
    assert_eq!(c.step(Input::Campaigned { won: Some(sync(3, &[ME], 12)) }, t0), [Effect::Lead { epoch: 3 }]);
    c
}

/// Each observation of etcd by a follower, and what it does.
#[test]
fn a_follower_campaigns_only_when_no_leader_and_in_sync() {
    let t0 = Instant::now();
    let cases: Vec<(&str, Observed, Vec<Effect>, bool)> = vec![
        ("an empty etcd: bootstrap", Observed::default(), vec![Effect::Bootstrap], true),
        (
            "no leader, in sync: campaign for the next epoch",
            Observed { leader: None, epoch: Some((4, 20)), sync: Some(sync(4, &[B, ME], 21)) },
            vec![Effect::Campaign { epoch: 5, sync_revision: 21, epoch_revision: 20 }],
            true,
        ),
        (
            "no leader, not in sync: wait",
            Observed { leader: None, epoch: Some((4, 20)), sync: Some(sync(4, &[B], 21)) },
            vec![],
            false,
        ),
        (
            "a half-made store (epoch without sync): wait",
            Observed { leader: None, epoch: Some((1, 2)), sync: None },
            vec![],
            false,
        ),
        (
            "a leader: follow it",
            Observed { leader: Some(leader(B, 4, 9)), epoch: Some((4, 20)), sync: Some(sync(4, &[B, ME], 21)) },
            vec![Effect::Follow { url: B.into(), epoch: 4 }],
            false,
        ),
        (
            "a leader key of an earlier run at this URL (another lease): wait for it to expire",
            Observed { leader: Some(leader(ME, 4, 99)), epoch: Some((4, 20)), sync: Some(sync(4, &[ME], 21)) },
            vec![],
            false,
        ),
    ];
    for (name, seen, effects, candidate) in cases {
        let mut c = core(t0);
        assert_eq!(c.step(Input::Observed(seen), at(t0, 100)), effects, "{name}");
        assert_eq!(matches!(c.role(), Role::Candidate { .. }), candidate, "{name}");
    }
}

#[test]
fn no_campaign_without_a_live_etcd_lease() {
    let t0 = Instant::now();
    let seen = Observed { leader: None, epoch: Some((4, 20)), sync: Some(sync(4, &[ME], 21)) };
    let mut never = Core::new(ME, T, L);
    assert_eq!(never.step(Input::Observed(seen.clone()), t0), []);
    let mut lapsed = core(t0);
    assert_eq!(lapsed.step(Input::Observed(seen), at(t0, 1800)), [], "0.9 T after the last keepalive");
}

#[test]
fn a_won_campaign_leads_but_acknowledges_only_after_old_leases_ended() {
    let t0 = Instant::now();
    let c = primary(t0);
    assert_eq!(c.role(), &Role::Primary { epoch: 3, writes_from: t0 + L, paused: false });
    assert_eq!(c.epoch(), 3);
    assert_eq!(c.primary(), Some(ME));
    assert!(c.may_acknowledge(at(t0, 999)).is_err(), "old read leases may still run");
    assert!(c.may_acknowledge(at(t0, 1000)).is_ok());
    assert!(c.may_grant(at(t0, 10)), "leases may be granted at once (they end before its key)");
    assert_eq!(c.sync(), Some(&sync(3, &[ME], 12)));
    assert_eq!(c.tally().elections, 1);
    assert_eq!(c.tally().promotions, 1);
}

#[test]
fn a_lost_campaign_goes_back_to_following() {
    let t0 = Instant::now();
    let mut c = core(t0);
    c.step(Input::Observed(Observed::default()), t0);
    assert_eq!(c.step(Input::Campaigned { won: None }, t0), []);
    assert_eq!(c.role(), &Role::Follower { leader: None });
    let seen = Observed { leader: Some(leader(B, 1, 5)), epoch: Some((1, 2)), sync: Some(sync(1, &[B], 3)) };
    assert_eq!(c.step(Input::Observed(seen), t0), [Effect::Follow { url: B.into(), epoch: 1 }]);
    assert_eq!(c.tally().failovers, 0, "a first leader is no failover");
}

#[test]
fn a_campaign_without_answer_ends_after_the_ttl() {
    let t0 = Instant::now();
    let mut c = core(t0);
    c.step(Input::Observed(Observed::default()), t0);
    assert_eq!(c.step(Input::Tick, at(t0, 1999)), []);
    assert!(matches!(c.role(), Role::Candidate { .. }));
    c.step(Input::Tick, at(t0, 2000));
    assert_eq!(c.role(), &Role::Follower { leader: None });
    assert_eq!(c.step(Input::Campaigned { won: Some(sync(1, &[ME], 3)) }, at(t0, 2100)), [], "too late");
}

#[test]
fn a_won_campaign_on_a_lapsed_lease_steps_down_at_once() {
    let t0 = Instant::now();
    let mut c = core(t0);
    c.step(Input::Observed(Observed::default()), at(t0, 1000));
    let effects = c.step(Input::Campaigned { won: Some(sync(1, &[ME], 3)) }, at(t0, 1900));
    assert!(matches!(effects[..], [Effect::StepDown { .. }]));
    assert!(c.may_acknowledge(at(t0, 1900)).is_err());
}

/// The primary's leadership: keepalives extend it; when they stop it ends before its key
/// can expire at etcd, and the primary steps down.
#[test]
fn the_primary_acknowledges_nothing_once_its_key_could_expire() {
    let t0 = Instant::now();
    let mut c = primary(t0);
    c.step(Input::KeptAlive { lease: 7, sent: at(t0, 600) }, at(t0, 610));
    assert!(c.may_acknowledge(at(t0, 2339)).is_ok());
    assert_eq!(c.step(Input::Tick, at(t0, 2339)), []);
    // etcd is unreachable: no keepalive answered since 600 ms.
    assert!(c.may_acknowledge(at(t0, 2400)).is_err(), "0.9 T after the last keepalive sent");
    assert!(!c.may_grant(at(t0, 2400)));
    assert_eq!(c.step(Input::Tick, at(t0, 2400)), [], "it holds the role, acknowledging nothing");
    assert!(c.may_read(at(t0, 3299)) && !c.may_read(at(t0, 3300)), "reads a lease longer: no one acks before");
    // etcd answers again and its lease lives: no one else can have been elected.
    c.step(Input::KeptAlive { lease: 7, sent: at(t0, 4000) }, at(t0, 4010));
    assert!(c.may_acknowledge(at(t0, 4010)).is_ok());
    // Now it is gone: it steps down.
    assert!(matches!(c.step(Input::LeaseGone, at(t0, 4100))[..], [Effect::StepDown { .. }]));
    assert_eq!(c.role(), &Role::Follower { leader: None });
    // It gave its etcd lease up; a keepalive of it answered late changes nothing, and a
    // leader key still bound to it is not its own any more.
    assert_eq!(c.lease(), None);
    c.step(Input::KeptAlive { lease: 7, sent: at(t0, 2300) }, at(t0, 2500));
    assert_eq!(c.lease(), None);
    c.step(Input::KeptAlive { lease: 8, sent: at(t0, 2500) }, at(t0, 2500));
    let stale = Observed { leader: Some(leader(ME, 3, 7)), epoch: Some((3, 12)), sync: Some(sync(3, &[ME], 12)) };
    assert_eq!(c.step(Input::Observed(stale), at(t0, 2600)), [], "its old key: wait for it to expire");
    assert_eq!(c.role(), &Role::Follower { leader: None });
}

#[test]
fn the_primary_steps_down_when_its_lease_or_key_is_gone() {
    let t0 = Instant::now();
    let mut c = primary(t0);
    assert!(matches!(c.step(Input::LeaseGone, t0)[..], [Effect::StepDown { .. }]));
    assert!(c.may_acknowledge(at(t0, 1500)).is_err());

    let mut c = primary(t0);
    let mine = Observed { leader: Some(leader(ME, 3, 7)), epoch: Some((3, 12)), sync: Some(sync(3, &[ME], 12)) };
    assert_eq!(c.step(Input::Observed(mine), t0), []);
    let gone = Observed { leader: None, epoch: Some((3, 12)), sync: Some(sync(3, &[ME], 12)) };
    assert!(matches!(c.step(Input::Observed(gone), t0)[..], [Effect::StepDown { .. }]));

    let mut c = primary(t0);
    let other = Observed { leader: Some(leader(B, 4, 8)), epoch: Some((4, 13)), sync: Some(sync(4, &[B], 14)) };
    let effects = c.step(Input::Observed(other), t0);
    assert!(matches!(&effects[..], [Effect::StepDown { .. }, Effect::Follow { url, epoch: 4 }] if url == B));
    assert_eq!(c.primary(), Some(B));
    assert_eq!(c.tally().failovers, 1);
}

/// Race: a push from an old epoch reaches a catalog that already knows a newer one.
#[test]
fn a_push_from_an_old_epoch_is_refused_and_counted() {
    let t0 = Instant::now();
    let mut c = core(t0);
    let seen = Observed { leader: Some(leader(B, 5, 8)), epoch: Some((5, 13)), sync: Some(sync(5, &[B, ME], 14)) };
    c.step(Input::Observed(seen), t0);
    assert!(c.message(4).is_err());
    assert_eq!(c.tally().stale_refused, 1);
    assert_eq!(c.message(5), Ok(vec![]));
    assert_eq!(c.message(6), Ok(vec![]), "a newer epoch is adopted");
    assert_eq!(c.epoch(), 6);
    assert!(c.message(5).is_err());
    assert_eq!(c.tally().stale_refused, 2);
}

/// Race: the old primary, frozen and replaced, wakes up and hears from the new one.
#[test]
fn a_primary_that_hears_a_newer_epoch_steps_down() {
    let t0 = Instant::now();
    let mut c = primary(t0);
    assert!(c.message(3).is_err(), "a push of its own epoch from elsewhere is refused");
    assert!(c.message(2).is_err());
    assert!(matches!(c.message(4).unwrap()[..], [Effect::StepDown { .. }]));
    assert!(c.may_acknowledge(at(t0, 1500)).is_err());
}

/// Race: a step-down while a write waits for its pushes: checked right before the answer.
#[test]
fn a_write_that_waited_across_a_step_down_is_not_acknowledged() {
    let t0 = Instant::now();
    let mut c = primary(t0);
    assert!(c.may_acknowledge(at(t0, 1100)).is_ok(), "the write was decided while leading");
    // Its push takes long; meanwhile the key is gone.
    c.step(Input::Observed(Observed { leader: None, epoch: Some((3, 12)), sync: None }), at(t0, 1200));
    assert!(c.may_acknowledge(at(t0, 1300)).is_err(), "answered 503, outcome unknown");
}

/// Race: the leadership lease ends while a push is under way.
#[test]
fn a_leadership_that_ends_during_a_push_acknowledges_nothing() {
    let t0 = Instant::now();
    let c = primary(t0);
    assert!(c.may_acknowledge(at(t0, 1700)).is_ok(), "decided at 1.7 s");
    assert!(c.may_acknowledge(at(t0, 1800)).is_err(), "the push came back at 1.8 s: too late");
}

/// A replica that missed a write leaves `sync` before the write is acknowledged; one
/// brought back is added back.
#[test]
fn the_in_sync_record_changes_before_acknowledging_without_a_replica() {
    let t0 = Instant::now();
    let mut c = primary(t0);
    assert_eq!(c.to_remove(&[B]), Vec::<String>::new(), "not in sync: nothing to record");
    let added = c.sync_change(B, true).unwrap();
    assert_eq!(added, sync(3, &[ME, B], 12));
    assert_eq!(c.sync_change(ME, true), None);
    c.step(Input::SyncWritten(sync(3, &[ME, B], 15)), t0);
    assert_eq!(c.to_remove(&[B, "http://c"]), vec![B.to_string()]);
    assert_eq!(c.sync_change(B, false).unwrap(), sync(3, &[ME], 15));
    // A stale write of `sync` from another epoch is ignored.
    c.step(Input::SyncWritten(sync(2, &[ME], 16)), t0);
    assert_eq!(c.sync().unwrap().revision, 15);
    assert!(matches!(c.step(Input::SyncConflict, t0)[..], [Effect::StepDown { .. }]));
}

/// A read of etcd taken before the primary's own compare-and-swap of `sync` (an older
/// revision) does not put back the record without the replica just added.
#[test]
fn a_stale_read_of_sync_does_not_undo_the_primarys_own_change() {
    let t0 = Instant::now();
    let mut c = primary(t0);
    c.step(Input::SyncWritten(sync(3, &[ME, B], 15)), t0);
    let stale = Observed { leader: Some(leader(ME, 3, 7)), epoch: Some((3, 10)), sync: Some(sync(3, &[ME], 12)) };
    assert_eq!(c.step(Input::Observed(stale), at(t0, 10)), []);
    assert_eq!(c.sync().unwrap(), &sync(3, &[ME, B], 15));
    assert_eq!(c.to_remove(&[B]), vec![B.to_string()], "B missed a write: it leaves sync first");
    let newer = Observed { leader: Some(leader(ME, 3, 7)), epoch: Some((3, 10)), sync: Some(sync(3, &[ME], 16)) };
    c.step(Input::Observed(newer), at(t0, 20));
    assert_eq!(c.sync().unwrap().revision, 16, "a newer revision is adopted");
}

/// A replica the record names but this primary does not count in sync (the change that
/// added it timed out, yet etcd applied it) did not take a batch: it leaves `sync` before
/// the batch is acknowledged, while the primary and the replicas that took it stay.
#[test]
fn a_member_of_sync_that_did_not_take_a_batch_leaves_it_even_if_not_counted_in_sync() {
    let t0 = Instant::now();
    let mut c = primary(t0);
    let applied = Observed { leader: Some(leader(ME, 3, 7)), epoch: Some((3, 10)), sync: Some(sync(3, &[ME, B], 13)) };
    c.step(Input::Observed(applied), at(t0, 10));
    assert_eq!(c.not_taken(&[]), vec![B.to_string()], "pushed nothing to B: it leaves sync");
    assert_eq!(c.not_taken(&[B]), Vec::<String>::new(), "B took the batch: it stays");
    c.step(Input::SyncWritten(sync(3, &[ME, B, "http://c"], 14)), t0);
    assert_eq!(c.not_taken(&["http://c"]), vec![B.to_string()]);
}

/// A write that cannot be made safe (etcd unreachable for the in-sync record): the
/// primary gives up the role and its lease.
#[test]
fn a_primary_that_cannot_record_a_lost_replica_gives_up() {
    let t0 = Instant::now();
    let mut c = primary(t0);
    assert!(matches!(c.step(Input::GiveUp { why: "etcd down".into() }, t0)[..], [Effect::StepDown { .. }]));
    assert_eq!((c.role(), c.lease()), (&Role::Follower { leader: None }, None));
    assert_eq!(c.step(Input::GiveUp { why: "again".into() }, t0), [], "a follower has nothing to give up");
}

/// A change of `sync` without an answer (it may have applied, or may still): the primary
/// no longer knows the record it would judge the next write on, so it steps down and
/// resigns its lease (the simulator found the write lost otherwise).
#[test]
fn a_primary_whose_change_of_sync_got_no_answer_steps_down() {
    let t0 = Instant::now();
    let mut c = primary(t0);
    let effects = c.step(Input::SyncUnknown { why: "timed out".into() }, t0);
    assert!(matches!(&effects[..], [Effect::StepDown { why }] if why.contains("may have applied")), "{effects:?}");
    assert_eq!((c.role(), c.lease(), c.resigned()), (&Role::Follower { leader: None }, None, Some(7)));
    assert!(c.may_acknowledge(t0).is_err());
    assert_eq!(c.step(Input::SyncUnknown { why: "again".into() }, t0), [], "a follower holds no record to doubt");
}

/// A planned switchover: the primary pauses (nothing decided, acknowledged or granted),
/// hands the leader key over and follows the target, which may write as soon as the old
/// primary's last lease has ended.
#[test]
fn a_switchover_pauses_then_hands_over() {
    let t0 = Instant::now();
    let mut c = primary(t0);
    assert!(!c.may_read(at(t0, 999)) && c.may_read(at(t0, 1000)), "reads once no old lease lives (L)");
    c.step(Input::Pause(true), at(t0, 1100));
    assert!(c.may_acknowledge(at(t0, 1100)).is_err() && !c.may_grant(at(t0, 1100)));
    assert!(!c.may_read(at(t0, 1100)), "paused: the target may already write");
    assert!(c.writes_from(at(t0, 1100)).unwrap() > at(t0, 1100), "writes wait");
    c.step(Input::Pause(false), at(t0, 1150));
    assert!(c.may_acknowledge(at(t0, 1150)).is_ok(), "a switchover that failed resumes");
    assert!(c.may_read(at(t0, 1150)));
    c.step(Input::Pause(true), at(t0, 1200));
    let effects = c.step(Input::HandedOver { url: B.into(), epoch: 4 }, at(t0, 1250));
    assert!(matches!(&effects[..], [Effect::StepDown { .. }, Effect::Follow { url, epoch: 4 }] if url == B));
    assert_eq!((c.primary(), c.epoch(), c.lease()), (Some(B), 4, Some(7)), "it keeps its own lease");
    assert_eq!(c.may_acknowledge(at(t0, 1300)), Err(NoLead::NotPrimary));

    let mut target = core(t0);
    target.step(Input::Expect { epoch: 4, writable_from: at(t0, 1300) }, at(t0, 1200));
    let seen = Observed { leader: Some(leader(ME, 4, 7)), epoch: Some((4, 30)), sync: Some(sync(4, &[ME], 31)) };
    assert_eq!(target.step(Input::Observed(seen), at(t0, 1260)), [Effect::Lead { epoch: 4 }]);
    assert!(target.may_acknowledge(at(t0, 1299)).is_err() && !target.may_read(at(t0, 1299)));
    assert!(target.may_acknowledge(at(t0, 1300)).is_ok(), "no wait of a whole lease");
    assert!(target.may_read(at(t0, 1300)));
}

#[test]
fn a_switchover_target_leads_on_its_own_lease() {
    let t0 = Instant::now();
    let mut c = core(t0);
    let seen = Observed { leader: Some(leader(ME, 6, 7)), epoch: Some((6, 30)), sync: Some(sync(6, &[ME], 31)) };
    assert_eq!(c.step(Input::Observed(seen), at(t0, 100)), [Effect::Lead { epoch: 6 }]);
    assert!(c.may_acknowledge(at(t0, 1099)).is_err());
    assert!(c.may_acknowledge(at(t0, 1100)).is_ok());
}

/// A switchover whose transaction got no answer: the primary stays paused (grants nothing)
/// until the read-back settles it; it resumes only when that read-back fenced the key as
/// still its own, follows the target when the handover took effect, and else steps down.
#[test]
fn a_handover_of_unknown_outcome_grants_nothing_until_settled() {
    let t0 = Instant::now();
    let follow_b = vec![
        Effect::StepDown { why: "handed over to http://b (epoch 4), as read back".into() },
        Effect::Follow { url: B.into(), epoch: 4 },
    ];
    let unknown = vec![Effect::StepDown { why: "a switchover's outcome is unknown".into() }];
    let cases: Vec<(&str, Settle, Vec<Effect>, bool)> = vec![
        ("fenced: still its own key, resumes", Settle::Kept(sync(3, &[ME], 40)), vec![], true),
        ("the handover took effect: follows the target", Settle::Leader(Some(leader(B, 4, 9))), follow_b, false),
        ("its own key, but sync changed: steps down", Settle::Leader(Some(leader(ME, 3, 7))), unknown.clone(), false),
        ("no leader key: steps down", Settle::Leader(None), unknown.clone(), false),
        ("no answer again: steps down, never grants in doubt", Settle::Unknown, unknown, false),
    ];
    for (name, settle, effects, resumed) in cases {
        let mut c = primary(t0);
        c.step(Input::Pause(true), at(t0, 1100));
        // The transaction's answer is lost: nothing granted while it is read back.
        assert!(!c.may_grant(at(t0, 1200)) && c.may_acknowledge(at(t0, 1200)).is_err(), "{name}");
        assert_eq!(c.step(Input::Settled(settle), at(t0, 1300)), effects, "{name}");
        assert_eq!(c.may_grant(at(t0, 1300)), resumed, "{name}");
        assert_eq!(c.may_acknowledge(at(t0, 1300)).is_ok(), resumed, "{name}");
    }
    let mut c = primary(t0);
    c.step(Input::Pause(true), at(t0, 1100));
    c.step(Input::Settled(Settle::Kept(sync(3, &[ME], 40))), at(t0, 1300));
    assert_eq!(c.sync().map(|s| s.revision), Some(40), "the fence's revision is the one compared next");
    assert_eq!(c.step(Input::Settled(Settle::Unknown), at(t0, 1400)), [], "not paused: nothing to settle");
}

/// A handover the target was told of but that did not happen is forgotten: when this
/// catalog is later named leader at that epoch some other way (its own campaign whose
/// answer was lost, read back), or too late, it waits the full `elected + L`.
#[test]
fn a_stale_handover_never_shortens_a_later_elections_wait() {
    let t0 = Instant::now();
    let mine = |epoch| Observed {
        leader: Some(leader(ME, epoch, 7)),
        epoch: Some((epoch, 30)),
        sync: Some(sync(epoch, &[ME], 31)),
    };
    let gone = Observed { leader: None, epoch: Some((3, 20)), sync: Some(sync(3, &[B, ME], 21)) };
    let expect = Input::Expect { epoch: 4, writable_from: at(t0, 100) };
    // (name, inputs before with their times, when it is named leader, when it may write)
    type Case = (&'static str, Vec<(Input, u64)>, u64, u64);
    let cases: Vec<Case> = vec![
        ("the handover as told: the old primary's last lease", vec![(expect.clone(), 100)], 200, 200),
        (
            "the old key went, its own campaign's answer was lost: a full lease",
            vec![(expect.clone(), 100), (Input::Observed(gone), 300), (Input::Campaigned { won: None }, 400)],
            500,
            1500,
        ),
        ("named after the handover's deadline: a full lease", vec![(expect.clone(), 100)], 2200, 3200),
        (
            "another catalog led at that epoch meanwhile: a full lease",
            vec![(expect, 100), (Input::Observed(Observed { leader: Some(leader(B, 4, 9)), ..mine(4) }), 300)],
            500,
            1500,
        ),
    ];
    for (name, inputs, named, writable) in cases {
        let mut c = core(t0);
        for (input, ms) in inputs {
            c.step(input, at(t0, ms));
        }
        c.step(Input::KeptAlive { lease: 7, sent: at(t0, named) }, at(t0, named));
        assert_eq!(c.step(Input::Observed(mine(4)), at(t0, named)), [Effect::Lead { epoch: 4 }], "{name}");
        assert_eq!(c.writes_from(at(t0, named)), Some(at(t0, writable)), "{name}");
    }
    // A push of that epoch came from another primary: forgotten too.
    let mut c = core(t0);
    c.step(Input::Expect { epoch: 4, writable_from: at(t0, 100) }, at(t0, 100));
    assert_eq!(c.message(4), Ok(vec![]));
    assert_eq!(c.step(Input::Observed(mine(4)), at(t0, 500)), [Effect::Lead { epoch: 4 }]);
    assert_eq!(c.writes_from(at(t0, 500)), Some(at(t0, 1500)), "a push of epoch 4 came from another primary");
}

/// Right after the core leads, the node still carries its old epoch until it has taken
/// the role (under the writer lock): no write is decided meanwhile, or it would carry it.
#[test]
fn a_new_primary_decides_nothing_before_its_node_carries_the_epoch() {
    let t0 = Instant::now();
    let c = primary(t0);
    let now = at(t0, 1100);
    assert!(c.may_acknowledge(now).is_ok());
    for old in [0, 2] {
        assert!(c.may_decide(now, old).is_err(), "the node carries epoch {old}");
    }
    assert!(c.may_decide(now, 3).is_ok());
    assert!(core(t0).may_decide(now, 0).is_err(), "a follower decides nothing");
}

/// The election restriction: a catalog of another history, below the record's floor, or
/// whose data is not known yet, does not campaign; an empty one bootstraps an empty etcd
/// only after the wait.
#[test]
fn a_catalog_that_is_behind_never_campaigns() {
    let t0 = Instant::now();
    let record = |history: Option<&str>, floor: u64| SyncSet {
        history: history.map(String::from),
        floor,
        ..sync(4, &[ME, B], 21)
    };
    let campaign = vec![Effect::Campaign { epoch: 5, sync_revision: 21, epoch_revision: 20 }];
    let cases: Vec<(&str, Option<Identity>, SyncSet, Vec<Effect>)> = vec![
        ("same history, at the floor", Some(data(10)), record(Some("h"), 10), campaign.clone()),
        (
            "another history (a disk that came back empty)",
            Some(Identity { history: "x".into(), seq: 0, epoch: 0 }),
            record(Some("h"), 0),
            vec![],
        ),
        ("below the floor (an older disk)", Some(data(9)), record(Some("h"), 10), vec![]),
        ("a record from before histories", Some(data(3)), record(None, 0), campaign.clone()),
        ("data not known yet", None, record(Some("h"), 0), vec![]),
    ];
    for (name, known, sync, effects) in cases {
        let mut c = Core::new(ME, T, L);
        c.step(Input::KeptAlive { lease: 7, sent: t0 }, t0);
        if let Some(d) = known {
            c.step(Input::Data(d), t0);
        }
        let seen = Observed { leader: None, epoch: Some((4, 20)), sync: Some(sync) };
        assert_eq!(c.step(Input::Observed(seen), at(t0, 100)), effects, "{name}");
        assert_eq!(c.eligible().is_ok(), !effects.is_empty(), "{name}");
    }
    // An empty catalog and an empty etcd: it waits two TTLs before it bootstraps.
    let mut c = Core::new(ME, T, L);
    c.step(Input::KeptAlive { lease: 7, sent: t0 }, t0);
    c.step(Input::Data(Identity { history: "x".into(), seq: 0, epoch: 0 }), t0);
    assert_eq!(c.step(Input::Observed(Observed::default()), at(t0, 100)), []);
    c.step(Input::KeptAlive { lease: 7, sent: at(t0, 3900) }, at(t0, 3900));
    assert_eq!(c.step(Input::Observed(Observed::default()), at(t0, 3999)), []);
    assert_eq!(c.step(Input::Observed(Observed::default()), at(t0, 4000)), [Effect::Bootstrap]);
}
