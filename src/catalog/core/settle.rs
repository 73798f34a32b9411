//! A static primary's first decision at start: whether it may serve the catalog on its disk,
//! or must first take a replica's, because its disk came back empty, older or damaged
//! (issue 23's rule: nothing acknowledged is lost to a storage fault).
//!
//! # The rule
//! The primary asks every replica what it holds ([`Identity`]) and:
//! - **copies** the newest replica that [holds more](Identity::holds_more_than) than it
//!   (and than every other replica that answered): its own disk lost writes. Never one
//!   whose log *diverged* from its own (another chain at this catalog's last write, as
//!   that replica says when asked): its disk came back older before, it served alone and
//!   acknowledged writes the replica lacks, and a copy would drop them. It serves its own
//!   and keeps that replica out of sync, each keeping its writes for the operator;
//! - with files that were damaged and set aside, serves nothing until some replica that
//!   holds a catalog answers, and never when it has no replica at all (an operator restores
//!   the files, or starts over);
//! - **empty**, serves nothing while a replica does not answer (that one may hold the
//!   store's books), however long it takes;
//! - with data, waits up to `silent_wait` for replicas that do not answer (they may be
//!   starting too, and hold more), then serves;
//! - otherwise **serves**: it is the newest there is.
//!
//! The node asks, copies and sleeps; this decides from what it was told, and says why it
//! waits (said once by the node, when it changes).

use crate::wire::Identity;
use std::fmt;
use std::time::Duration;

/// What a replica said when asked what it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Asked {
    /// The replica's URL.
    pub url: String,
    /// What it holds, or why it did not answer.
    pub answer: Result<Identity, String>,
    /// Whether its log differs from this catalog's up to this one's last write (asked
    /// only of a replica of the same history whose log runs further).
    pub diverged: bool,
}

/// What the primary does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Settle {
    /// Take this replica's catalog whole, then ask again.
    Copy {
        /// The replica that holds the most.
        url: String,
        /// What it holds.
        holds: Identity,
    },
    /// Serve nothing yet, and ask again after a while (why).
    Wait(Unsettled),
    /// Serve: no replica holds more.
    Serve,
}

/// Why a primary does not serve yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unsettled {
    /// Its files were damaged and set aside, and it has no replica to take a catalog from.
    DamagedAlone,
    /// Its files were damaged and set aside: it waits for a replica that holds a catalog
    /// (those that did not answer).
    Damaged {
        /// The replicas that did not answer, with why.
        silent: Vec<String>,
    },
    /// It is empty and these replicas did not answer: one may hold the store's books.
    EmptyAndSilent {
        /// The replicas that did not answer, with why.
        silent: Vec<String>,
    },
    /// It holds data; these replicas did not answer, and may hold more: it waits up to
    /// `wait` in all.
    Silent {
        /// The replicas that did not answer, with why.
        silent: Vec<String>,
        /// How long a primary with data waits for them.
        wait: Duration,
    },
}

impl fmt::Display for Unsettled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unsettled::DamagedAlone => write!(
                f,
                "this catalog's files were damaged and set aside (*.corrupt-*) and it has no replica to take the \
                 catalog from: it serves nothing (restore the files, or stop it and run `bazar-catalog start-over` \
                 to begin again from the built-in catalog)"
            ),
            Unsettled::Damaged { silent } => {
                write!(
                    f,
                    "this catalog's files were damaged and set aside (*.corrupt-*): it serves nothing until a replica \
                     that holds a catalog answers, and takes that one"
                )?;
                match silent.is_empty() {
                    true => Ok(()),
                    false => write!(f, " (not answering: {})", silent.join(", ")),
                }
            }
            Unsettled::EmptyAndSilent { silent } => write!(
                f,
                "this catalog is empty and replicas {} do not answer: one may hold the store's books, so it serves \
                 nothing until they answer (to start over from the built-in catalog instead, stop it and run \
                 `bazar-catalog start-over`)",
                silent.join(", ")
            ),
            Unsettled::Silent { silent, wait } => write!(
                f,
                "waiting up to {wait:?} for replicas {} to answer before serving (one that holds more would be \
                 copied first)",
                silent.join(", ")
            ),
        }
    }
}

/// Decides from what this catalog holds (`me`), whether its files were `damaged`, what each
/// replica answered (`asked`; none: a primary with no replica), and how long ago it started
/// asking (`waited`) against how long a primary with data waits for silent replicas
/// (`silent_wait`).
pub fn decide(me: &Identity, damaged: bool, asked: Vec<Asked>, waited: Duration, silent_wait: Duration) -> Settle {
    #[cfg(test)]
    if super::planted::on(super::planted::Planted::ServeUnsettled) {
        return Settle::Serve;
    }
    let no_replica = asked.is_empty();
    let (mut newest, mut silent): (Option<(String, Identity)>, Vec<String>) = (None, Vec::new());
    for Asked { url, answer, diverged } in asked {
        match answer {
            Ok(theirs) if !diverged && theirs.holds_more_than(newest.as_ref().map_or(me, |(_, n)| n)) => {
                newest = Some((url, theirs))
            }
            Ok(_) => {}
            Err(why) => silent.push(format!("{url} ({why})")),
        }
    }
    match newest {
        Some((url, holds)) => Settle::Copy { url, holds },
        None if damaged && no_replica => Settle::Wait(Unsettled::DamagedAlone),
        None if damaged => Settle::Wait(Unsettled::Damaged { silent }),
        None if me.is_empty() && !silent.is_empty() => Settle::Wait(Unsettled::EmptyAndSilent { silent }),
        None if !silent.is_empty() && waited < silent_wait => {
            Settle::Wait(Unsettled::Silent { silent, wait: silent_wait })
        }
        None => Settle::Serve,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_secs(5);

    fn id(history: &str, seq: u64) -> Identity {
        Identity { history: history.into(), seq, epoch: 0 }
    }

    fn holds(url: &str, identity: Identity) -> Asked {
        Asked { url: url.into(), answer: Ok(identity), diverged: false }
    }

    fn silent(url: &str) -> Asked {
        Asked { url: url.into(), answer: Err("connection refused".into()), diverged: false }
    }

    fn copy(url: &str, identity: Identity) -> Settle {
        Settle::Copy { url: url.into(), holds: identity }
    }

    /// The primary's disk came back empty or older: it takes the replica that holds the
    /// most, whatever the order of the answers; an equal or shorter replica is no reason.
    #[test]
    fn a_primary_behind_a_replica_copies_the_newest() {
        let (r1, r2) = ("http://r1", "http://r2");
        for me in [id("h", 0), id("h", 40)] {
            let asked = vec![holds(r1, id("h", 50)), holds(r2, id("h", 70))];
            assert_eq!(decide(&me, false, asked, Duration::ZERO, WAIT), copy(r2, id("h", 70)), "{me:?}");
            let asked = vec![holds(r2, id("h", 70)), holds(r1, id("h", 50))];
            assert_eq!(decide(&me, false, asked, Duration::ZERO, WAIT), copy(r2, id("h", 70)), "{me:?}");
        }
        // One replica silent: the other, ahead, is copied at once.
        let asked = vec![silent(r1), holds(r2, id("h", 70))];
        assert_eq!(decide(&id("h", 40), false, asked, Duration::ZERO, WAIT), copy(r2, id("h", 70)));
        // Replicas at or behind this catalog: it serves.
        let asked = vec![holds(r1, id("h", 70)), holds(r2, id("h", 69))];
        assert_eq!(decide(&id("h", 70), false, asked, Duration::ZERO, WAIT), Settle::Serve);
        // A replica of another history is no reason to copy (an import is an explicit
        // act: the primary's stands), nor an empty replica.
        let asked = vec![holds(r1, id("other", 900)), holds(r2, id("h", 0))];
        assert_eq!(decide(&id("h", 70), false, asked, Duration::ZERO, WAIT), Settle::Serve);
    }

    /// A replica whose log runs further but diverged from this catalog's (this one's disk
    /// came back older, it served alone, then restarted) is never copied: the newest one
    /// that did not diverge is, and with none the primary serves its own.
    #[test]
    fn a_diverged_replica_is_never_copied() {
        let (r1, r2) = ("http://r1", "http://r2");
        let diverged = |url: &str, identity| Asked { diverged: true, ..holds(url, identity) };
        let asked = vec![diverged(r1, id("h", 90)), holds(r2, id("h", 70))];
        assert_eq!(decide(&id("h", 40), false, asked, Duration::ZERO, WAIT), copy(r2, id("h", 70)));
        let asked = vec![diverged(r1, id("h", 90)), holds(r2, id("h", 40))];
        assert_eq!(decide(&id("h", 40), false, asked, Duration::ZERO, WAIT), Settle::Serve);
    }

    /// Silent replicas: an empty primary waits for them however long it takes; one with
    /// data waits up to the bound, then serves.
    #[test]
    fn silent_replicas_are_waited_for_by_an_empty_primary_for_ever() {
        let asked = || vec![silent("http://r1"), holds("http://r2", id("h", 0))];
        let empty = decide(&id("h", 0), false, asked(), Duration::from_secs(3600), WAIT);
        assert!(matches!(&empty, Settle::Wait(Unsettled::EmptyAndSilent { silent }) if silent.len() == 1), "{empty:?}");
        let early = decide(&id("h", 9), false, asked(), Duration::from_secs(4), WAIT);
        assert!(matches!(early, Settle::Wait(Unsettled::Silent { .. })), "{early:?}");
        assert_eq!(decide(&id("h", 9), false, asked(), WAIT, WAIT), Settle::Serve);
        // No replica at all: a primary alone serves what it has.
        assert_eq!(decide(&id("h", 0), false, vec![], Duration::ZERO, WAIT), Settle::Serve);
    }

    /// Damaged files set aside: a replica that holds a catalog is copied; until one
    /// answers nothing is served, and with no replica at all, never.
    #[test]
    fn damaged_files_wait_for_a_replica_to_copy() {
        let me = id("h", 0);
        assert_eq!(decide(&me, true, vec![], WAIT * 100, WAIT), Settle::Wait(Unsettled::DamagedAlone));
        let asked = vec![silent("http://r1")];
        let waiting = decide(&me, true, asked, WAIT * 100, WAIT);
        assert!(matches!(&waiting, Settle::Wait(Unsettled::Damaged { silent }) if silent.len() == 1), "{waiting:?}");
        let asked = vec![silent("http://r1"), holds("http://r2", id("h", 5))];
        assert_eq!(decide(&me, true, asked, Duration::ZERO, WAIT), copy("http://r2", id("h", 5)));
        // Every replica empty too: nothing to take, and nothing served.
        let asked = vec![holds("http://r1", id("h", 0))];
        assert!(matches!(decide(&me, true, asked, Duration::ZERO, WAIT), Settle::Wait(Unsettled::Damaged { .. })));
    }

    /// What a waiting primary says names the replicas and what to do.
    #[test]
    fn the_reasons_say_what_to_do() {
        let silent = vec!["http://r1 (refused)".to_string()];
        let said = Unsettled::EmptyAndSilent { silent: silent.clone() }.to_string();
        assert!(said.contains("http://r1 (refused)") && said.contains("start-over"), "{said}");
        let said = Unsettled::Silent { silent, wait: WAIT }.to_string();
        assert!(said.contains("5s") && said.contains("copied first"), "{said}");
        assert!(Unsettled::DamagedAlone.to_string().contains("restore the files"));
    }
}
