//! A replica's mailbox on the primary: one long-lived thread per replica that sends it the
//! pushes the writer thread posts, in the order posted, and reports each answer back on the
//! channel the letter names. The writer posts a batch to every replica in sync at once,
//! does its own part meanwhile (memcached's markers) and then judges the answers; nothing
//! here decides anything or touches the store.
//!
//! Before, each batch and each commit notice started a thread per replica (and one for
//! memcached) and ended them: a thread's start and end per replica per batch, on the path
//! of every write. A mailbox is the per-peer lane of the owner to be (`docs/design/
//! catalog-core.md`, §3.1): one peer's messages in order, performed around the owner.

use crate::client::CatalogClient;
use crate::error::{Error, Result};
use crate::wire::{ReplicaAck, Replicate};
use std::sync::{mpsc, Arc, Mutex};

/// Most bytes of writes in one push: a push is a request, held to the replica's body limit.
pub(super) const PUSH_BYTES: usize = 48 * 1024;

/// One push to post: writes (none for a commit notice or a question of where the replica
/// stands), the commit point to send with them, and where the answer goes.
pub(super) struct Letter {
    pub(super) writes: Arc<[Arc<Replicate>]>,
    /// The primary's epoch (its term), which the replica checks.
    pub(super) epoch: u64,
    pub(super) committed: Option<u64>,
    /// The trace the push belongs to (its `catalog.push` span is recorded there).
    pub(super) trace: Option<crate::trace::Context>,
    /// It sends the writes a replica a few writes behind lacks (a span attribute).
    pub(super) tail: bool,
    pub(super) answer: Answer,
}

/// Where a letter's answer goes, tagged with the writer's place for the replica: sent
/// once by the mailbox thread, or, when the letter is dropped unanswered (its thread could
/// not start, or ended), as a push that failed. So the writer, counting its letters, gets
/// one answer for each.
pub(super) struct Answer {
    to: Option<mpsc::Sender<(usize, Result<ReplicaAck>)>>,
    place: usize,
}

impl Answer {
    pub(super) fn new(to: &mpsc::Sender<(usize, Result<ReplicaAck>)>, place: usize) -> Answer {
        Answer { to: Some(to.clone()), place }
    }

    fn send(mut self, answer: Result<ReplicaAck>) {
        if let Some(to) = self.to.take() {
            let _ = to.send((self.place, answer));
        }
    }
}

impl Drop for Answer {
    fn drop(&mut self) {
        if let Some(to) = self.to.take() {
            let _ = to.send((self.place, Err(Error::Unavailable("its mailbox dropped the push".into()))));
        }
    }
}

/// The lane to one replica's thread, started at the first letter (a link that never gets
/// one, as on a catalog that does not lead, costs no thread) and ended when the link is
/// dropped (its sender with it).
#[derive(Default)]
pub(super) struct Mailbox {
    /// Held for a send, or to start the thread.
    lane: Mutex<Option<mpsc::Sender<Letter>>>,
}

impl Mailbox {
    /// Posts `letter` to replica `url`'s thread, starting it if there is none, or if it
    /// ended (a thread that panicked is replaced; the letter it was sending is answered as
    /// dropped, see [`Answer`]).
    pub(super) fn post(&self, url: &str, push: &CatalogClient, letter: Letter) {
        let mut lane = self.lane.lock().unwrap_or_else(|e| e.into_inner());
        let letter = match lane.as_ref() {
            Some(to) => match to.send(letter) {
                Ok(()) => return,
                Err(mpsc::SendError(letter)) => letter,
            },
            None => letter,
        };
        let (to, letters) = mpsc::channel();
        let (url, push) = (url.to_string(), push.clone());
        let started = std::thread::Builder::new().name("mailbox".into()).spawn(move || deliver(&url, &push, letters));
        if let Err(e) = started {
            // No thread: the letter is answered as a push that failed.
            return letter.answer.send(Err(Error::Unavailable(format!("its mailbox cannot start: {e}"))));
        }
        let _ = to.send(letter);
        *lane = Some(to);
    }
}

/// A mailbox thread: each letter sent and answered, in order, until the link is dropped.
fn deliver(url: &str, push: &CatalogClient, letters: mpsc::Receiver<Letter>) {
    for letter in letters {
        let _in = crate::trace::adopt(letter.trace);
        let mut span = crate::trace::span("catalog.push");
        span.attr("replica", url).attr("writes", letter.writes.len());
        if letter.tail {
            span.attr("tail", true);
        }
        let sent = send(push, url, letter.epoch, &letter.writes, letter.committed);
        if sent.is_err() {
            span.fail();
        }
        drop(span);
        letter.answer.send(sent);
    }
}

/// Sends writes to replica `url` in pushes of at most [`PUSH_BYTES`], in order, each with
/// the commit point `committed`; an empty list is one empty push (where is the replica?
/// or, with a commit point, the commit notice). Returns the last answer. Only a replica
/// whose log is known to be a prefix of this one's may be sent a commit point: it shows
/// its own writes up to there.
pub(super) fn send(
    push: &CatalogClient,
    url: &str,
    epoch: u64,
    writes: &[Arc<Replicate>],
    committed: Option<u64>,
) -> Result<ReplicaAck> {
    let mut rest = writes;
    loop {
        let mut size = 0;
        let n = rest
            .iter()
            .take_while(|w| {
                size += 192 + 2 * w.book.title.len() + w.book.topic.len();
                size <= PUSH_BYTES
            })
            .count()
            .max(rest.len().min(1));
        let ack = push.replicate(url, epoch, committed, &rest[..n])?;
        rest = &rest[n..];
        if rest.is_empty() {
            return Ok(ack);
        }
    }
}
