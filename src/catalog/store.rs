//! The catalog's files: the write-ahead log `catalog.log` and the view `books.csv`.
//!
//! `catalog.log` (header `seq,id,title,topic,price,quantity,order_id,at,epoch,sum`) is the
//! truth. Each write appends one row, the book's whole state after write `seq` (and for a
//! purchase made by an order server, its order id and time: the purchase journal that order
//! servers reconcile from; and the epoch of the primary that decided it), and fsyncs it:
//! that is the commit point. Two kinds of row have id 0 (their `epoch` is that of write
//! `seq`):
//! - `checkpoint` (at `seq`, history in `topic`): `books.csv` holds the catalog as of
//!   `seq`; the rows that follow with a number up to `seq` are journal records only.
//! - `reset` (at `seq`, history in `topic`): forget every book; the rows at `seq` that
//!   follow are the whole catalog (an import or a replica's full copy), so the log alone
//!   is the catalog and `books.csv` is not read.
//!
//! A marker's `at` holds the log's *chain* at `seq` (8 hex digits; empty in logs written
//! before chains): the writes after it continue it (`History`), so that a restart knows
//! the chain of every write it loads.
//!
//! `books.csv` (header `id,title,topic,price,quantity,sum`) is the readable view, written
//! durably at checkpoints only, so a write costs one appended row whatever the size of the
//! catalog. Loading overlays the log's rows in order on the view. Every row holds a whole
//! book, so replaying a row that the view already reflects changes nothing, and the result
//! is the state after the last durable write whatever the view held when the process died.
//!
//! **Every row is checked.** The last column of each row of both files, `sum`, is the
//! CRC-32 of its other fields (`storage::checksum`: over the values, so CSV quoting never
//! matters). At open a torn last row of the log (no newline: an append that was never
//! acknowledged) is cut; any other row that does not check (its checksum, its number of
//! fields, a value that does not parse) is corruption ([`StorageError::Corrupt`]): nothing
//! of the file is served. The node decides what follows ([`Store::open_recovering`] sets
//! the files aside and starts empty, to be copied from the primary). Files written before
//! checksums (and logs from before epochs, which read as epoch 0) still load, and are
//! rewritten in today's form when opened.
//!
//! **A write error stops the damage.** When an append or its fsync fails (a full disk, an
//! I/O error), the row written in part is cut at once (back to the last durable length),
//! the writes are refused ([`StorageError::Unwritable`], answered 503), nothing of them is
//! kept in memory, and the store is *failed*: it takes no write until the log has been
//! re-opened from disk (cut again to its durable length, fsynced on a new descriptor, read
//! back and found to end at the last write this store made), which the next write, or
//! [`Store::retry`], does. A failed fsync is never retried as if it could have succeeded.
//!
//! A checkpoint (once the log has grown by as many rows as there are books, and at least
//! [`COMPACT_AFTER`]) writes the view durably first and then replaces the log with a
//! checkpoint row and the retained journal: a crash between the two leaves a newer view
//! under the old log, which replays to the same state. An import or a full copy replaces
//! the log first (reset form) and then the view. A checkpoint that fails leaves the old
//! files as they were (its temporary file removed) and is tried again later.
//!
//! The *history* is an id drawn when a catalog is created, imported or copied whole; a
//! replica continues from the primary's log only when their histories are the same.
//!
//! [`Store`] stores and loads; it remembers nothing of the writes beyond the last one's
//! number. What the catalog remembers of them (the purchase journal, the recent writes)
//! is [`Recent`], loaded at open and kept beside the files in a `Ledger`.
//!
//! Architecture invariant: only the catalog process that owns a data directory writes its
//! files (it holds a lock on `catalog.lock`): the log by fsynced appends or atomic
//! replacement, the view by atomic replacement, each through the seam in `storage` (plain
//! `std::fs` calls; recorded in unit tests to build crash images).

pub use super::recent::{chain_start, History, Journal, Recent, HISTORY, JOURNAL_MAX, KEEP_PURCHASES};
use super::state::Catalog;
use crate::money::Money;
use crate::storage::{self, At, StorageError, Tracked};
use crate::wire::{Book, Order, Purchase, Replicate};
use csv::ByteRecord;
use serde::{Deserialize, Serialize};
use std::borrow::Borrow;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Results of the store: its errors are the files'.
type Result<T, E = StorageError> = std::result::Result<T, E>;

/// The built-in catalog a new data directory is seeded with.
pub const SEED: &str = include_str!("../../data/books.csv");
/// Fewest log rows after which the log is checkpointed (more in a large catalog: as many
/// as it has books, so that a checkpoint costs O(1) per write on average).
pub const COMPACT_AFTER: usize = 20_000;
/// After a checkpoint failed (a full disk), the next is not tried before this long.
pub const CHECKPOINT_RETRY: Duration = Duration::from_secs(10);
/// A failed store is re-opened by [`Store::retry`] at most this often.
pub const REOPEN_RETRY: Duration = Duration::from_secs(1);

const LOG_HEADER: &[u8] = b"seq,id,title,topic,price,quantity,order_id,at,epoch,sum\n";
/// The header of logs written before checksums.
const UNSUMMED_LOG_HEADER: &[u8] = b"seq,id,title,topic,price,quantity,order_id,at,epoch\n";
/// The header of logs written before epochs (their rows read as epoch 0).
const OLD_LOG_HEADER: &[u8] = b"seq,id,title,topic,price,quantity,order_id,at\n";
const VIEW_HEADER: &[u8] = b"id,title,topic,price,quantity,sum\n";
/// The header of views written before checksums (and of `bazar-catalog import` files).
const OLD_VIEW_HEADER: &[u8] = b"id,title,topic,price,quantity\n";
/// The file that marks a catalog whose log diverged from its primary's: its history id on
/// the first line, then why, then the checksum of the two ([`Mark`]).
const DIVERGED: &str = "catalog.diverged";
const CHECKPOINT: &str = "checkpoint";
const RESET: &str = "reset";

/// The forms a log may have: header, fields, whether the last is the checksum.
const LOG_FORMS: [(&[u8], usize, bool); 3] =
    [(LOG_HEADER, 10, true), (UNSUMMED_LOG_HEADER, 9, false), (OLD_LOG_HEADER, 8, false)];
/// The forms a view may have.
const VIEW_FORMS: [(&[u8], usize, bool); 2] = [(VIEW_HEADER, 6, true), (OLD_VIEW_HEADER, 5, false)];

/// One row of a `bazar-catalog import` file or of the built-in catalog (no checksum: these
/// are the user's files); the price is text so that it stays exact.
#[derive(Serialize, Deserialize)]
struct BookRow {
    id: u32,
    title: String,
    topic: String,
    price: String,
    quantity: u32,
}

/// One `catalog.log` row, as written.
struct LogRow<'a> {
    seq: u64,
    id: u32,
    title: &'a str,
    topic: &'a str,
    price: Money,
    quantity: u32,
    order_id: &'a str,
    at: &'a str,
    /// The write's epoch (marker rows: the epoch of write `seq`).
    epoch: u64,
}

/// The catalog's data directory.
#[derive(Debug)]
pub struct Store {
    books: PathBuf,
    log_path: PathBuf,
    log: File,
    /// The length of `catalog.log` up to its last fsynced row: a failed append is cut back
    /// to it.
    durable: u64,
    /// Set while the log takes no write (an append or its fsync failed) until re-opened.
    failed: Option<Failed>,
    /// Appends that failed, since the process started.
    write_errors: u64,
    /// No checkpoint before then (one failed).
    checkpoint_after: Option<Instant>,
    /// Held for the life of the store: no second process writes these files.
    _lock: File,
    /// Write rows since the last checkpoint: decides when to checkpoint.
    rows: usize,
    /// Fewest rows between checkpoints ([`COMPACT_AFTER`] unless set otherwise).
    checkpoint_rows: usize,
    /// This catalog's history id.
    history_id: String,
    /// The number and epoch of the last write in the log (what a re-open must find). What
    /// the catalog remembers of its writes is not the files': [`Recent`], returned at open.
    last: (u64, u64),
    /// Whether `catalog.diverged` is there (read at open, kept in step with it), or a mark
    /// that could not be written yet.
    marked: Marked,
}

/// What a store knows of its divergence mark.
#[derive(Debug, Clone, PartialEq)]
enum Marked {
    No,
    /// `catalog.diverged` is there (what it says is read when asked).
    OnDisk,
    /// Marked, but the file could not be written: held in memory (the history it marks and
    /// why), and written by [`Store::keep_mark`] once the disk takes it.
    Unsaved {
        history: String,
        why: String,
    },
}

/// The contents of `catalog.diverged`, read back.
#[derive(Debug, PartialEq)]
enum Mark {
    /// Of history `history`, for `why` (its checksum matches, or a mark from before
    /// checksums).
    Of { history: String, why: String },
    /// Neither: a flipped bit, a file cut or edited by hand. It cannot say which history
    /// it marks, so it is taken for a mark of any history asked about (the callers ask about
    /// the catalog's own) until an operator deletes it.
    Damaged,
}

impl Mark {
    /// The file's text for a mark of `history` for `why` (one line: its line breaks are
    /// spaces).
    fn text(history: &str, why: &str) -> String {
        let why = why.replace(['\n', '\r'], " ");
        let sum = storage::checksum([history.as_bytes(), why.as_bytes()]);
        format!("{history}\n{why}\n{}\n", storage::checksum_text(sum))
    }

    /// Reads a mark's text; one of the two lines the first marks held (no checksum) whose
    /// history is `history` is that history's mark, any other text is damaged.
    fn read(text: &str, history: &str) -> Mark {
        let lines: Vec<&str> = text.strip_suffix('\n').unwrap_or(text).split('\n').collect();
        let of = |h: &str, why: &str| Mark::Of { history: h.to_string(), why: why.to_string() };
        match lines[..] {
            [h, why, sum]
                if storage::checksum_from_text(sum.as_bytes())
                    == Some(storage::checksum([h.as_bytes(), why.as_bytes()])) =>
            {
                of(h, why)
            }
            [h, why] if h == history => of(h, why),
            _ => Mark::Damaged,
        }
    }
}

/// Why and since when a store takes no write.
#[derive(Debug)]
struct Failed {
    /// The last attempt (the failed append, or a re-open that failed).
    at: Instant,
    /// What the system said then.
    kind: io::ErrorKind,
    why: String,
}

impl Failed {
    fn now(e: &io::Error) -> Option<Failed> {
        Some(Failed { at: Instant::now(), kind: e.kind(), why: e.to_string() })
    }

    fn of(e: &StorageError) -> Option<Failed> {
        Some(Failed { at: Instant::now(), kind: io::ErrorKind::Other, why: e.to_string() })
    }
}

/// A durable replacement of a file that failed.
#[derive(Debug)]
enum Unreplaced {
    /// Before its rename: the old file is in place, unchanged (the temporary one removed).
    Before(StorageError),
    /// After its rename: the new file is in place, but its directory was not fsynced, so a
    /// crash may still bring the old one back.
    NotDurable(StorageError),
}

impl From<Unreplaced> for StorageError {
    fn from(u: Unreplaced) -> StorageError {
        match u {
            Unreplaced::Before(e) | Unreplaced::NotDurable(e) => e,
        }
    }
}

/// What to do at open with files that do not check.
#[derive(Clone, Copy, PartialEq, Eq)]
enum OnCorrupt {
    /// Refuse to open (the error says what is wrong).
    Refuse,
    /// Set them aside (kept, named with the time) and start empty.
    SetAside,
}

impl Store {
    /// Opens (creating and seeding if needed) the data directory and loads the catalog and
    /// what it remembers of its recent writes. A file that does not check is an error
    /// ([`StorageError::Corrupt`]): nothing is served.
    pub fn open(dir: &Path) -> Result<(Store, Catalog, Recent)> {
        Store::open_with(dir, Books::Load, OnCorrupt::Refuse).map(|(s, c, r, _)| (s, c, r))
    }

    /// Opens the data directory like [`Store::open`], but when its files do not check,
    /// sets them aside (`catalog.log.corrupt-<time>`, `books.csv.corrupt-<time>`: kept for
    /// the operator) and starts with an empty catalog of a new history, at write 0, to be
    /// copied whole from the primary; returns what was wrong then.
    pub fn open_recovering(dir: &Path) -> Result<(Store, Catalog, Recent, Option<StorageError>)> {
        Store::open_with(dir, Books::Load, OnCorrupt::SetAside)
    }

    /// Opens the data directory for an import: everything but the books (the catalog
    /// returned is empty, at the last write's number).
    pub fn open_for_import(dir: &Path) -> Result<(Store, Catalog, Recent)> {
        Store::open_with(dir, Books::Skip, OnCorrupt::Refuse).map(|(s, c, r, _)| (s, c, r))
    }

    fn open_with(
        dir: &Path,
        want: Books,
        on_corrupt: OnCorrupt,
    ) -> Result<(Store, Catalog, Recent, Option<StorageError>)> {
        storage::ensure_dir(dir).at(dir)?;
        let lock = storage::lock_dir(dir, "catalog.lock", "catalog")?;
        let books = dir.join("books.csv");
        let log_path = dir.join("catalog.log");
        if !log_path.exists() && !books.exists() {
            let seed = parse(SEED.as_bytes()).and_then(|books| Catalog::new(books, 0));
            let seed = seed.expect("the built-in catalog is valid (a unit test reads it)");
            start_history(&log_path, &books, &seed)?;
            log::info!("seeded {} with the built-in catalog", dir.display());
        }
        if log_path.exists() {
            let cut = storage::cut_torn_tail(&log_path).at(&log_path)?;
            if cut > 0 {
                log::warn!(
                    "cut a torn last row ({cut} bytes) off {}: a write that was never acknowledged",
                    log_path.display()
                );
            }
        }
        let log = storage::open_append(&log_path, LOG_HEADER).at(&log_path)?;
        let (loaded, corrupt) = match load(&books, &log_path, want) {
            Ok(loaded) => (loaded, None),
            Err(e @ StorageError::Corrupt { .. }) if on_corrupt == OnCorrupt::SetAside => {
                drop(log);
                let aside = set_aside(&[&log_path, &books, &books.with_file_name(DIVERGED)])?;
                log::warn!(
                    "{e}: the catalog's files do not check; set aside as {} and starting empty, to copy the catalog from the primary",
                    aside.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" and ")
                );
                start_history(&log_path, &books, &Catalog::default())?;
                (load(&books, &log_path, want)?, Some(e))
            }
            Err(e) => return Err(e),
        };
        let log = storage::open_append(&log_path, LOG_HEADER).at(&log_path)?;
        let durable = log.metadata().at(&log_path)?.len();
        let legacy = loaded.history_id.is_empty();
        let mut recent = Recent { journal: loaded.journal, history: loaded.history };
        let mut store = Store {
            books,
            log_path,
            log,
            durable,
            failed: None,
            write_errors: 0,
            checkpoint_after: None,
            _lock: lock,
            rows: loaded.rows,
            checkpoint_rows: COMPACT_AFTER,
            history_id: loaded.history_id,
            last: recent.history.last(),
            marked: if dir.join(DIVERGED).exists() { Marked::OnDisk } else { Marked::No },
        };
        if legacy && want == Books::Load {
            // A log from before histories: this catalog starts one (its replicas copy it),
            // and its chain.
            store.history_id = new_history_id()?;
            let (seq, epoch) = store.last;
            recent.history = History::new(seq, epoch, Some(chain_start(&store.history_id, seq)));
        }
        if (legacy || loaded.old_form) && want == Books::Load {
            // Rewritten in today's form (a log from before epochs reads as epoch 0; rows
            // from before checksums get theirs): no row of another form is ever appended
            // to it. An import rewrites it anyway.
            store.checkpoint(&loaded.catalog, &recent.journal, recent.history.chain())?;
        }
        Ok((store, loaded.catalog, recent, corrupt))
    }

    /// Loads the catalog and its recent writes again from the files (after a copy that
    /// failed half-way).
    pub fn reload(&mut self) -> Result<(Catalog, Recent)> {
        let loaded = load(&self.books, &self.log_path, Books::Load)?;
        (self.rows, self.last) = (loaded.rows, loaded.history.last());
        self.history_id = loaded.history_id;
        Ok((loaded.catalog, Recent { journal: loaded.journal, history: loaded.history }))
    }

    /// This catalog's history id.
    pub fn history_id(&self) -> &str {
        &self.history_id
    }

    /// Marks durably (`catalog.diverged`) that this catalog's log diverged from its
    /// primary's, `why`: from now on it takes no copy of its history over its own, even
    /// once the primary no longer keeps the writes that told them apart, until it sees
    /// its primary's log agree with its own ([`Store::clear_diverged`]), a catalog replaces
    /// this one whole, or an operator moves the data directory aside or deletes the file
    /// (README, "A disk that comes back empty or older"). Where the file cannot be written
    /// (a full disk), it is marked in memory all the same and the error returned: the
    /// mark holds while this process runs, and [`Store::keep_mark`] writes it later.
    pub fn mark_diverged(&mut self, why: &str) -> Result<()> {
        let path = self.books.with_file_name(DIVERGED);
        let kept = self.marked == Marked::OnDisk
            && matches!(self.mark_on_disk(&self.history_id), Ok(Mark::Of { history, .. }) if history == self.history_id);
        if kept {
            // Marked already (the first reason stays); a damaged mark is written anew.
            return Ok(());
        }
        match storage::replace_file(&path, Mark::text(&self.history_id, why).as_bytes()).at(&path) {
            Ok(()) => self.marked = Marked::OnDisk,
            Err(e) => {
                self.marked = Marked::Unsaved { history: self.history_id.clone(), why: why.to_string() };
                return Err(e);
            }
        }
        Ok(())
    }

    /// Writes a mark that could not be written when it was made: whether it did (false
    /// when there is none, or it marked a history this catalog no longer holds). An error
    /// says it is still in memory only.
    pub fn keep_mark(&mut self) -> Result<bool> {
        match self.marked.clone() {
            Marked::Unsaved { history, .. } if history != self.history_id => {
                self.marked = Marked::No;
                Ok(false)
            }
            Marked::Unsaved { why, .. } => self.mark_diverged(&why).map(|()| true),
            _ => Ok(false),
        }
    }

    /// Removes the divergence mark, if any (this catalog's log was found to agree with its
    /// primary's, or took the primary's writes after its own).
    pub fn clear_diverged(&mut self) -> Result<()> {
        if self.marked == Marked::No {
            return Ok(());
        }
        let path = self.books.with_file_name(DIVERGED);
        if path.exists() {
            storage::remove(&path).at(&path)?;
            storage::sync_dir(&path).at(&path)?;
        }
        self.marked = Marked::No;
        Ok(())
    }

    /// Whether this catalog's log is marked diverged from its primary's (on disk or, where
    /// the disk took no mark, in memory).
    pub fn marked(&self) -> bool {
        self.marked != Marked::No
    }

    /// Why this catalog may take no copy of history `history` over its own: its log
    /// diverged from a primary's of that history (a mark that cannot be read, or is
    /// damaged, is taken for a mark of any history asked about: the callers ask about this
    /// catalog's own). A mark an operator deleted while the process runs is no mark.
    pub fn diverged_from(&self, history: &str) -> Option<String> {
        let path = self.books.with_file_name(DIVERGED);
        let why = match &self.marked {
            Marked::No => return None,
            Marked::Unsaved { history: marked, why } => {
                return (marked == history).then(|| {
                    format!("its log diverged ({why}), marked in memory: {} could not be written", path.display())
                });
            }
            Marked::OnDisk => match self.mark_on_disk(history) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
                Err(e) => return Some(format!("{} exists and cannot be read ({e})", path.display())),
                Ok(mark) => mark,
            },
        };
        match why {
            Mark::Of { history: marked, why } => {
                (marked == history).then(|| format!("{} says its log diverged: {why}", path.display()))
            }
            Mark::Damaged => Some(format!(
                "{} is damaged (its checksum does not match), so it cannot say which writes it keeps: delete it once \
                 you know this catalog's writes are not needed, or move the data directory aside",
                path.display()
            )),
        }
    }

    /// `catalog.diverged` read back, asked about `history` (see [`Mark::read`]).
    fn mark_on_disk(&self, history: &str) -> io::Result<Mark> {
        std::fs::read_to_string(self.books.with_file_name(DIVERGED)).map(|text| Mark::read(&text, history))
    }

    /// The epoch of the last write.
    pub fn last_epoch(&self) -> u64 {
        self.last.1
    }

    /// Whether the log takes no write now (an append or its fsync failed, and it has not
    /// been re-opened since).
    pub fn failed(&self) -> bool {
        self.failed.is_some()
    }

    /// Makes writes durable (group commit): appends each book's new state after write `seq`
    /// (and the order it was taken for, its `order`) to the log, and fsyncs once for all of
    /// them. Only stores them: the caller remembers them ([`Recent::record`]) once this succeeds.
    ///
    /// When that fails, nothing of them is kept (the part written is cut at once) and the
    /// error is [`StorageError::Unwritable`]; the store takes no write until the log is
    /// re-opened from disk, which this tries first on the next call.
    pub fn append<W: Borrow<Replicate>>(&mut self, writes: &[W]) -> Result<()> {
        self.reopen_if_failed()?;
        let mut w = csv::WriterBuilder::new().has_headers(false).from_writer(Vec::with_capacity(128 * writes.len()));
        for r in writes.iter().map(Borrow::borrow) {
            write_log_row(&mut w, &LogRow { epoch: r.epoch, ..log_row(r.seq, &r.book, r.order.as_ref()) })
                .map_err(|e| unwritable(&self.log_path, io::Error::other(e)))?;
        }
        let bytes = w.into_inner().map_err(|e| unwritable(&self.log_path, e.into_error()))?;
        let written = storage::append(&mut self.log, &self.log_path, &bytes)
            .and_then(|()| storage::sync_file(&self.log, &self.log_path));
        if let Err(e) = written {
            self.fail(&e);
            return Err(unwritable(&self.log_path, e));
        }
        self.durable += bytes.len() as u64;
        self.rows += writes.len();
        if let Some(r) = writes.last().map(Borrow::borrow) {
            self.last = (r.seq, r.epoch);
        }
        Ok(())
    }

    /// Appends that failed since the process started.
    pub fn write_errors(&self) -> u64 {
        self.write_errors
    }

    /// A failed store takes no write until re-opened: it tries to re-open once
    /// [`REOPEN_RETRY`] has passed since the last attempt, and refuses the write otherwise
    /// (with what the system said last), so that a full disk costs no reading of the log
    /// per write.
    fn reopen_if_failed(&mut self) -> Result<()> {
        match &self.failed {
            None => Ok(()),
            Some(f) if f.at.elapsed() < REOPEN_RETRY => {
                Err(unwritable(&self.log_path, io::Error::new(f.kind, f.why.clone())))
            }
            Some(_) => self.reopen(),
        }
    }

    /// A failed append: cuts what it wrote (back to the durable length) at once, and takes
    /// no write until re-opened (the file's state after a failed fsync is unknown).
    fn fail(&mut self, e: &io::Error) {
        self.failed = Failed::now(e);
        self.write_errors += 1;
        let path = &self.log_path;
        match storage::set_len(&self.log, path, self.durable).and_then(|()| storage::sync_file(&self.log, path)) {
            Ok(()) => log::error!(
                "{}: a write failed ({e}): cut back to its last durable row; no write is taken until it is re-opened",
                path.display()
            ),
            Err(cut) => log::error!(
                "{}: a write failed ({e}) and the part written could not be cut yet ({cut}); no write is taken until it is re-opened",
                path.display()
            ),
        }
    }

    /// Re-opens a failed log from disk: a new descriptor, cut to the durable length and
    /// fsynced (and its directory, after a replacement whose directory fsync failed), read
    /// back whole (every row checked) and found to end at this store's last
    /// write. The store then takes writes again; until then every write is refused.
    fn reopen(&mut self) -> Result<()> {
        let reopened = self.try_reopen();
        if let Err(StorageError::Unwritable { source, .. }) = &reopened {
            self.failed = Failed::now(source);
        }
        reopened
    }

    fn try_reopen(&mut self) -> Result<()> {
        let path = &self.log_path;
        let again = || -> io::Result<File> {
            let f = std::fs::OpenOptions::new().read(true).append(true).open(path)?;
            let len = f.metadata()?.len();
            if len < self.durable {
                return Err(io::Error::other(format!(
                    "it holds {len} bytes, fewer than the {} made durable",
                    self.durable
                )));
            }
            if len > self.durable {
                storage::set_len(&f, path, self.durable)?;
            }
            storage::sync_file(&f, path)?;
            Ok(f)
        };
        let f = again().and_then(|f| storage::sync_dir(path).map(|()| f)).map_err(|e| unwritable(path, e))?;
        let loaded = load(&self.books, path, Books::Skip).map_err(|e| unwritable(path, io::Error::other(e)))?;
        let (found, have) = ((loaded.history.last(), loaded.rows), (self.last, self.rows));
        if found != have {
            return Err(unwritable(
                path,
                io::Error::other(format!(
                    "re-opened, it ends at write {:?} after {} rows, not at {:?} after {}",
                    found.0, found.1, have.0, have.1
                )),
            ));
        }
        self.log = f;
        self.failed = None;
        log::warn!("{}: re-opened from disk, it holds every write made: writes resume", path.display());
        Ok(())
    }

    /// Re-opens a failed log (at most every [`REOPEN_RETRY`]), so that writes resume by
    /// themselves once the disk takes them again: the primary's writer calls it when idle.
    pub fn retry(&mut self) {
        if self.failed.as_ref().is_some_and(|f| f.at.elapsed() >= REOPEN_RETRY) {
            if let Err(e) = self.reopen() {
                log::debug!("{e}");
            }
        }
    }

    /// Sets the fewest log rows between two checkpoints (`BAZAR_CHECKPOINT_ROWS`).
    pub fn set_checkpoint_rows(&mut self, rows: usize) {
        self.checkpoint_rows = rows;
    }

    /// Checkpoints when the log has grown by as many rows as the catalog has books (and at
    /// least [`COMPACT_AFTER`], or what [`Store::set_checkpoint_rows`] set): O(1) per write
    /// on average. A checkpoint that fails leaves the files as they were (the log holds
    /// every write) and is tried again after [`CHECKPOINT_RETRY`]. `journal` is the
    /// purchase journal to retain in the new log.
    pub fn after_write(&mut self, catalog: &Catalog, journal: &Journal, chain: Option<u32>) {
        let due = self.rows >= self.checkpoint_rows.max(catalog.len());
        if due && self.checkpoint_after.is_none_or(|t| Instant::now() >= t) {
            if let Err(e) = self.checkpoint(catalog, journal, chain) {
                self.checkpoint_after = Some(Instant::now() + CHECKPOINT_RETRY);
                log::error!("checkpoint failed (the files are as they were; tried again later): {e}");
            }
        }
    }

    /// Writes the view durably, then replaces the log with a checkpoint row (which keeps
    /// the log's chain at the catalog's write, `chain`) and the retained purchase journal.
    /// On failure the old files stay, usable.
    pub fn checkpoint(&mut self, catalog: &Catalog, journal: &Journal, chain: Option<u32>) -> Result<()> {
        self.reopen_if_failed()?;
        // A view not durably in place stops the checkpoint: a log that says the view holds
        // write `seq` must never be durable before that view is.
        write_view(&self.books, catalog)?;
        let epoch = self.last_epoch();
        let chain = chain_text(chain);
        let marker = marker(CHECKPOINT, catalog.seq(), &self.history_id, epoch, &chain);
        let replaced = write_log_with(&self.log_path, |w, tmp| {
            write_log_row(w, &marker).at(tmp)?;
            write_journal(w, journal, tmp)
        });
        if let Err(Unreplaced::Before(e)) = replaced {
            return Err(e);
        }
        self.rows = 0;
        self.checkpoint_after = None;
        self.log_replaced(replaced.err())?;
        log::info!("checkpoint at write {} ({} books)", catalog.seq(), catalog.len());
        Ok(())
    }

    /// After the log was renamed into place (`not_durable`: its directory fsync failed):
    /// appends go to the new file. If it cannot be opened, or its name is not durable yet,
    /// the store is failed: the next write re-opens it (and fsyncs the directory) first.
    fn log_replaced(&mut self, not_durable: Option<Unreplaced>) -> Result<()> {
        let opened = storage::open_append(&self.log_path, LOG_HEADER).and_then(|f| Ok((f.metadata()?.len(), f)));
        match (opened, not_durable) {
            (Ok((len, f)), None) => {
                (self.log, self.durable, self.failed) = (f, len, None);
                Ok(())
            }
            (Ok((len, f)), Some(e)) => {
                let e = StorageError::from(e);
                (self.log, self.durable, self.failed) = (f, len, Failed::of(&e));
                Err(e)
            }
            (Err(e), _) => {
                self.failed = Failed::now(&e);
                self.durable = std::fs::metadata(&self.log_path).map_or(0, |m| m.len());
                Err(unwritable(&self.log_path, e))
            }
        }
    }

    /// Replaces the whole catalog (an import, or a replica's full copy of its primary),
    /// whose last write is of `epoch` (the log's chain there `chain`), keeping `journal`
    /// (the caller's history starts
    /// again at the catalog's last write): the log first, in reset form, then the view (a
    /// log in reset form is the whole catalog: a view that cannot be written is only
    /// logged). Once the new log is renamed into place the catalog is replaced: if it
    /// cannot be opened or its directory fsynced, the store is failed and the next write
    /// re-opens it.
    pub fn replace(
        &mut self,
        catalog: &Catalog,
        history_id: &str,
        epoch: u64,
        chain: Option<u32>,
        journal: &Journal,
    ) -> Result<()> {
        let replaced = write_log(&self.log_path, RESET, catalog, history_id, epoch, chain, journal);
        if let Err(Unreplaced::Before(e)) = replaced {
            return Err(e);
        }
        self.history_id = history_id.to_string();
        self.last = (catalog.seq(), epoch);
        self.rows = 0;
        // A catalog replaced whole (another history, or a copy it was allowed) holds none
        // of the writes a divergence mark kept.
        if let Err(e) = self.clear_diverged() {
            log::warn!("{e}: the divergence mark was not removed after the catalog was replaced");
        }
        if let Err(e) = self.log_replaced(replaced.err()) {
            log::error!("{e}: the catalog was replaced, but takes no write until its log is re-opened");
        }
        if let Err(e) = write_view(&self.books, catalog) {
            let e = StorageError::from(e);
            log::warn!("{e}: the view was not rewritten (the log holds the whole catalog)");
        }
        Ok(())
    }
}

/// The files, and beside them what the catalog remembers of its recent writes (the journal
/// and the history), kept in step: what the catalog's writer lock guards. The files only
/// store; `recent` is what decisions read, and goes to the catalog's core when one thread
/// owns it (design step 6, `docs/design/catalog-core.md`).
#[derive(Debug)]
pub(crate) struct Ledger {
    pub(crate) files: Store,
    pub(crate) recent: Recent,
}

impl Ledger {
    /// Makes writes durable and remembers them: the one place where the two keep in step
    /// (nothing is remembered of writes whose append failed).
    pub(crate) fn log(&mut self, writes: &[Arc<Replicate>]) -> Result<()> {
        self.files.append(writes)?;
        self.recent.record(writes);
        Ok(())
    }

    /// Checkpoints the files when due, retaining the journal.
    pub(crate) fn after_write(&mut self, catalog: &Catalog) {
        self.files.after_write(catalog, &self.recent.journal, self.recent.history.chain_at(catalog.seq()));
    }

    /// Replaces the whole catalog, of history `history_id`, last written in `epoch`, the
    /// log's chain there `chain`, with `journal` as the purchase journal; the history
    /// starts again at its last write.
    pub(crate) fn replace(
        &mut self,
        catalog: &Catalog,
        history_id: &str,
        epoch: u64,
        chain: Option<u32>,
        journal: Journal,
    ) -> Result<()> {
        self.files.replace(catalog, history_id, epoch, chain, &journal)?;
        self.recent = Recent { journal, history: History::new(catalog.seq(), epoch, chain) };
        Ok(())
    }

    /// Loads the catalog and its recent writes again from the files.
    pub(crate) fn reload(&mut self) -> Result<Catalog> {
        let (catalog, recent) = self.files.reload()?;
        self.recent = recent;
        Ok(catalog)
    }

    /// This catalog's history id.
    pub(crate) fn history_id(&self) -> &str {
        self.files.history_id()
    }

    /// The epoch of the last write.
    pub(crate) fn last_epoch(&self) -> u64 {
        self.recent.history.last().1
    }
}

/// A failed write to `path`.
fn unwritable(path: &Path, source: io::Error) -> StorageError {
    StorageError::Unwritable { path: path.to_path_buf(), source }
}

/// Renames the files that exist of `paths` aside, `<name>.corrupt-<time>`, durably.
fn set_aside(paths: &[&Path]) -> Result<Vec<PathBuf>> {
    let stamp: String = crate::ids::timestamp_now().chars().filter(char::is_ascii_alphanumeric).collect();
    let mut aside = Vec::new();
    for path in paths.iter().filter(|p| p.exists()) {
        let to = path
            .with_file_name(format!("{}.corrupt-{stamp}", path.file_name().and_then(|n| n.to_str()).unwrap_or("file")));
        storage::rename(path, &to).at(path)?;
        storage::sync_dir(&to).at(&to)?;
        aside.push(to);
    }
    Ok(aside)
}

/// What loading a data directory found.
struct Loaded {
    catalog: Catalog,
    journal: Journal,
    history: History,
    history_id: String,
    rows: usize,
    /// Whether a file read was of an older form (no checksums, no epochs).
    old_form: bool,
}

/// What to load: the whole catalog, or only what an import keeps (the journal, the last
/// write's number), so that an import never holds the old catalog beside the new one.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Books {
    Load,
    Skip,
}

/// The rows of a file, each checked: its number of fields, and its checksum when the
/// file's form has one.
struct Rows<'p> {
    reader: csv::Reader<File>,
    path: &'p Path,
    fields: usize,
    summed: bool,
}

impl<'p> Rows<'p> {
    /// Opens `path`, whose header must be one of `forms`.
    fn open(path: &'p Path, forms: &[(&[u8], usize, bool)]) -> Result<Rows<'p>> {
        let mut reader = csv::ReaderBuilder::new().flexible(true).from_path(path).at(path)?;
        let header = reader.byte_headers().at(path)?;
        let line = header.iter().collect::<Vec<_>>().join(&b","[..]);
        let Some(&(_, fields, summed)) = forms.iter().find(|(h, _, _)| {
            h.strip_suffix(
                b"
",
            ) == Some(&line[..])
        }) else {
            return Err(StorageError::corrupt(
                path,
                format!("line 1: unknown header {:?}", String::from_utf8_lossy(&line)),
            ));
        };
        Ok(Rows { reader, path, fields, summed })
    }

    /// Whether the file is in today's form (its rows carry checksums).
    fn current(&self) -> bool {
        self.summed
    }

    /// Reads the next row into `row`; false at the end.
    fn next(&mut self, row: &mut ByteRecord) -> Result<bool> {
        if !self.reader.read_byte_record(row).at(self.path)? {
            return Ok(false);
        }
        if row.len() != self.fields {
            return Err(self.bad(row, format!("{} fields, not {}", row.len(), self.fields)));
        }
        if self.summed {
            let n = self.fields - 1;
            if row[n] != sum_text(storage::checksum(row.iter().take(n))) {
                return Err(self.bad(row, "its checksum does not match its fields (the row was damaged)".into()));
            }
        }
        Ok(true)
    }

    /// Corruption at `row`.
    fn bad(&self, row: &ByteRecord, what: String) -> StorageError {
        let line = row.position().map_or(0, |p| p.line());
        StorageError::corrupt(self.path, format!("line {line}: {what}"))
    }

    /// Field `i` of `row` as text.
    fn text<'r>(&self, row: &'r ByteRecord, i: usize) -> Result<&'r str> {
        std::str::from_utf8(&row[i]).map_err(|_| self.bad(row, format!("field {} is not UTF-8", i + 1)))
    }

    /// Field `i` of `row` parsed.
    fn value<T: std::str::FromStr>(&self, row: &ByteRecord, i: usize) -> Result<T> {
        self.text(row, i)?.parse().map_err(|_| self.bad(row, format!("field {} is not a valid value", i + 1)))
    }
}

/// A checksum as written: [`storage::checksum_text`] without an allocation.
fn sum_text(sum: u32) -> [u8; 8] {
    let mut out = [0u8; 8];
    for (i, b) in out.iter_mut().enumerate() {
        *b = b"0123456789abcdef"[((sum >> (28 - 4 * i)) & 0xf) as usize];
    }
    out
}

fn load(books: &Path, log_path: &Path, want: Books) -> Result<Loaded> {
    let mut rows = Rows::open(log_path, &LOG_FORMS)?;
    let mut old_form = !rows.current();
    let mut row = ByteRecord::new();
    let mut first = rows.next(&mut row)?;
    let starts_with_reset = first && &row[1] == b"0" && &row[2] == RESET.as_bytes();
    let mut catalog = Catalog::default();
    if want == Books::Load && !starts_with_reset && books.exists() {
        old_form |= !read_view(books, &mut catalog)?;
    }
    let (mut journal, mut history, mut history_id, mut count) =
        (Journal::default(), History::new(0, 0, None), String::new(), 0);
    let mut last_epoch = 0;
    // Rows numbered up to `base` are journal records only, but for the rows of a reset's
    // catalog (at `bulk`, without an order).
    let (mut base, mut bulk) = (0, None);
    while first || rows.next(&mut row)? {
        first = false;
        let seq: u64 = rows.value(&row, 0)?;
        let id: u32 = rows.value(&row, 1)?;
        let epoch: u64 = if rows.fields >= 9 { rows.value(&row, 8)? } else { 0 };
        if id == 0 {
            match rows.text(&row, 2)? {
                CHECKPOINT => base = seq,
                RESET => {
                    catalog = Catalog::default();
                    (base, bulk) = (seq, Some(seq));
                }
                other => return Err(rows.bad(&row, format!("unknown marker row {other:?}"))),
            }
            history_id = rows.text(&row, 3)?.to_string();
            // A marker keeps the log's chain at `seq` (none in logs written before chains).
            history = History::new(seq, epoch, storage::checksum_from_text(&row[7]));
            last_epoch = epoch;
            catalog.raise_seq(seq);
            continue;
        }
        let price: Money = rows.value(&row, 4)?;
        let (title, topic) = (rows.text(&row, 2)?.to_string(), rows.text(&row, 3)?.to_string());
        let book = Book { id, title, topic, price, quantity: rows.value(&row, 5)? };
        let order_id = rows.text(&row, 6)?;
        let journaled = !order_id.is_empty();
        let order = journaled.then(|| Order {
            order_id: order_id.to_string(),
            id,
            title: book.title.clone(),
            price,
            at: String::from_utf8_lossy(&row[7]).into_owned(),
        });
        order.iter().for_each(|o| journal.push(Purchase { seq, order: o.clone() }));
        let apply = seq > base || (bulk == Some(seq) && !journaled);
        if seq > base {
            count += 1;
            last_epoch = epoch;
            if want == Books::Load {
                history.push(Arc::new(Replicate { seq, book: book.clone(), epoch, order }));
            }
        }
        match (apply, want) {
            (true, Books::Load) => catalog.commit(book, seq),
            (true, Books::Skip) => catalog.raise_seq(seq),
            (false, _) => {}
        }
    }
    if want == Books::Skip {
        history = History::new(catalog.seq(), last_epoch, None);
    }
    Ok(Loaded { catalog, journal, history, history_id, rows: count, old_form })
}

/// Reads the view into `catalog`, a row at a time; whether it is in today's form.
fn read_view(path: &Path, catalog: &mut Catalog) -> Result<bool> {
    let mut rows = Rows::open(path, &VIEW_FORMS)?;
    let mut row = ByteRecord::new();
    while rows.next(&mut row)? {
        let book = Book {
            id: rows.value(&row, 0)?,
            title: rows.text(&row, 1)?.to_string(),
            topic: rows.text(&row, 2)?.to_string(),
            price: rows.value(&row, 3)?,
            quantity: rows.value(&row, 4)?,
        };
        catalog.insert_new(book).map_err(|e| rows.bad(&row, e))?;
    }
    Ok(rows.current())
}

/// A marker's chain as written: 8 hex digits, or nothing when not known.
fn chain_text(chain: Option<u32>) -> String {
    chain.map(storage::checksum_text).unwrap_or_default()
}

/// Writes `catalog` as the whole of a new history (epoch 0): the log in reset form,
/// with the chain where that history starts, then the view.
fn start_history(log_path: &Path, books: &Path, catalog: &Catalog) -> Result<()> {
    let history_id = new_history_id()?;
    let chain = Some(chain_start(&history_id, catalog.seq()));
    write_log(log_path, RESET, catalog, &history_id, 0, chain, &Journal::default())?;
    write_view(books, catalog)?;
    Ok(())
}

/// A new history id.
pub fn new_history_id() -> Result<String> {
    crate::ids::random_hex()
}

/// A marker row: `at` holds the log's chain at `seq` (8 hex digits, or empty when not known).
fn marker<'a>(kind: &'a str, seq: u64, history_id: &'a str, epoch: u64, chain: &'a str) -> LogRow<'a> {
    LogRow {
        seq,
        id: 0,
        title: kind,
        topic: history_id,
        price: Money::default(),
        quantity: 0,
        order_id: "",
        at: chain,
        epoch,
    }
}

/// Writes the fields of a row and their checksum.
fn write_summed<W: Write>(w: &mut csv::Writer<W>, fields: &[&[u8]]) -> csv::Result<()> {
    let sum = sum_text(storage::checksum(fields.iter().copied()));
    w.write_record(fields.iter().copied().chain([&sum[..]]))
}

fn write_log_row<W: Write>(w: &mut csv::Writer<W>, r: &LogRow) -> csv::Result<()> {
    let (seq, id, price, quantity, epoch) =
        (r.seq.to_string(), r.id.to_string(), r.price.to_string(), r.quantity.to_string(), r.epoch.to_string());
    write_summed(
        w,
        &[
            seq.as_bytes(),
            id.as_bytes(),
            r.title.as_bytes(),
            r.topic.as_bytes(),
            price.as_bytes(),
            quantity.as_bytes(),
            r.order_id.as_bytes(),
            r.at.as_bytes(),
            epoch.as_bytes(),
        ],
    )
}

fn write_book_row<W: Write>(w: &mut csv::Writer<W>, b: &Book) -> csv::Result<()> {
    let (id, price, quantity) = (b.id.to_string(), b.price.to_string(), b.quantity.to_string());
    write_summed(w, &[id.as_bytes(), b.title.as_bytes(), b.topic.as_bytes(), price.as_bytes(), quantity.as_bytes()])
}

/// Writes a file durably in place of `path`: `fill` writes it into a temporary file beside
/// it (after `header`), which is fsynced and renamed over `path`, and the directory
/// fsynced. When anything fails before the rename the temporary file is removed and `path`
/// is as it was.
fn replace_with(
    path: &Path,
    header: &[u8],
    fill: impl FnOnce(&mut csv::Writer<BufWriter<Tracked>>, &Path) -> Result<()>,
) -> Result<(), Unreplaced> {
    let tmp = path.with_extension("tmp");
    let written = (|| {
        let mut f = BufWriter::with_capacity(1 << 20, Tracked::create(&tmp).at(&tmp)?);
        f.write_all(header).at(&tmp)?;
        let mut w = csv::WriterBuilder::new().has_headers(false).from_writer(f);
        fill(&mut w, &tmp)?;
        let f = storage::buffer_inner(storage::csv_inner(w, &tmp)?, &tmp)?;
        f.sync().at(&tmp)?;
        storage::rename(&tmp, path).at(path)
    })();
    if let Err(e) = written {
        if tmp.exists() {
            if let Err(rm) = storage::remove(&tmp) {
                log::warn!("{}: not removed after a failed write: {rm}", tmp.display());
            }
        }
        return Err(Unreplaced::Before(e));
    }
    storage::sync_dir(path).at(path).map_err(Unreplaced::NotDurable)
}

fn write_log_with(
    path: &Path,
    fill: impl FnOnce(&mut csv::Writer<BufWriter<Tracked>>, &Path) -> Result<()>,
) -> Result<(), Unreplaced> {
    replace_with(path, LOG_HEADER, fill)
}

fn write_journal<W: Write>(w: &mut csv::Writer<W>, journal: &Journal, path: &Path) -> Result<()> {
    for p in journal.records() {
        let book = Book {
            id: p.order.id,
            title: p.order.title.clone(),
            topic: String::new(),
            price: p.order.price,
            quantity: 0,
        };
        write_log_row(w, &log_row(p.seq, &book, Some(&p.order))).at(path)?;
    }
    Ok(())
}

/// Writes a self-sufficient log: a reset row, the journal, and every book at the
/// catalog's sequence number.
fn write_log(
    path: &Path,
    kind: &str,
    catalog: &Catalog,
    history_id: &str,
    epoch: u64,
    chain: Option<u32>,
    journal: &Journal,
) -> Result<(), Unreplaced> {
    let chain = chain_text(chain);
    write_log_with(path, |w, tmp| {
        write_log_row(w, &marker(kind, catalog.seq(), history_id, epoch, &chain)).at(tmp)?;
        write_journal(w, journal, tmp)?;
        for book in catalog.iter() {
            write_log_row(w, &log_row(catalog.seq(), book, None)).at(tmp)?;
        }
        Ok(())
    })
}

fn write_view(path: &Path, catalog: &Catalog) -> Result<(), Unreplaced> {
    replace_with(path, VIEW_HEADER, |w, tmp| {
        for b in catalog.iter() {
            write_book_row(w, b).at(tmp)?;
        }
        Ok(())
    })
}

fn book_row(b: &Book) -> BookRow {
    BookRow {
        id: b.id,
        title: b.title.clone(),
        topic: b.topic.clone(),
        price: b.price.to_string(),
        quantity: b.quantity,
    }
}

fn log_row<'a>(seq: u64, b: &'a Book, order: Option<&'a Order>) -> LogRow<'a> {
    LogRow {
        seq,
        id: b.id,
        title: &b.title,
        topic: &b.topic,
        price: b.price,
        quantity: b.quantity,
        order_id: order.map_or("", |o| &o.order_id),
        at: order.map_or("", |o| &o.at),
        epoch: 0,
    }
}

/// Parses a `bazar-catalog import` file or the built-in catalog (`id,title,topic,price,
/// quantity`, no checksums: the user's files).
pub fn parse(text: &[u8]) -> Result<Vec<Book>, String> {
    let mut books = Vec::new();
    for row in csv::Reader::from_reader(text).deserialize::<BookRow>() {
        let r = row.map_err(|e| e.to_string())?;
        let price: Money = r.price.parse()?;
        books.push(Book { id: r.id, title: r.title, topic: r.topic, price, quantity: r.quantity });
    }
    Ok(books)
}

/// Renders books as an import file (`id,title,topic,price,quantity`).
pub fn render<'a>(books: impl IntoIterator<Item = &'a Book>) -> csv::Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    for b in books {
        w.serialize(book_row(b))?;
    }
    w.into_inner().map_err(|e| e.into_error().into())
}

/// Opens `dir` as the catalog's writer holds it (the files and what they remember): the
/// tests' handle.
#[cfg(test)]
fn open(dir: &Path) -> Result<(Ledger, Catalog)> {
    Store::open(dir).map(|(files, catalog, recent)| (Ledger { files, recent }, catalog))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::state::{Draft, Write as W};
    use std::fs;

    fn temp(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("bazar-store-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn order(id: &str) -> Order {
        Order {
            order_id: id.into(),
            id: 3,
            title: String::new(),
            price: Money::default(),
            at: "2026-11-24T00:00:00.000Z".into(),
        }
    }

    fn purchase(store: &mut Ledger, catalog: &mut Catalog, order_id: &str) -> Replicate {
        let mut w = Draft::new(catalog).write(3, &W::Purchase).unwrap();
        w.order = Some(Order { title: w.book.title.clone(), ..order(order_id) });
        store.log(&[Arc::new(w.clone())]).unwrap();
        catalog.commit(w.book.clone(), w.seq);
        w
    }

    #[test]
    fn seed_round_trips() {
        let books = parse(SEED.as_bytes()).unwrap();
        assert_eq!(books.len(), 7);
        assert_eq!(books[0].title, "How to get a good grade in DOS in 40 minutes a day");
        assert_eq!(books[6].topic, "undergraduate school");
        assert_eq!(String::from_utf8(render(&books).unwrap()).unwrap(), SEED);
    }

    /// Writes, a crash at each point (torn row, lost view), checkpoints, history.
    #[test]
    fn the_log_is_the_truth() {
        let dir = temp("log");
        let (mut store, mut catalog) = open(&dir).unwrap();
        let history = store.history_id().to_string();
        assert_eq!(history.len(), 12);
        for i in 0..5 {
            purchase(&mut store, &mut catalog, &format!("o-{i}"));
        }
        // The log's chain starts at the seed's write and covers each write.
        let chains: Vec<Option<u32>> = (0..=5).map(|seq| store.recent.history.chain_at(seq)).collect();
        assert_eq!(chains[0], Some(chain_start(&history, 0)));
        assert!(chains.iter().all(Option::is_some) && chains.windows(2).all(|w| w[0] != w[1]), "{chains:?}");
        drop(store);
        let (store, again) = open(&dir).unwrap();
        assert_eq!(again, catalog);
        assert_eq!((1..=5).map(|seq| store.recent.history.chain_at(seq)).collect::<Vec<_>>(), chains[1..], "replayed");
        drop(store);
        // A torn row is cut; the view is not needed while the log starts with a reset.
        let mut f = fs::OpenOptions::new().append(true).open(dir.join("catalog.log")).unwrap();
        f.write_all(b"6,3,torn").unwrap();
        fs::remove_file(dir.join("books.csv")).unwrap();
        let (mut store, again) = open(&dir).unwrap();
        assert_eq!(again, catalog);
        assert_eq!(store.recent.journal.after(3, 10).0.iter().map(|p| p.seq).collect::<Vec<_>>(), [4, 5]);
        assert!(store.recent.journal.contains("o-0"));
        assert_eq!(store.recent.history.after(2, 10).unwrap().iter().map(|w| w.seq).collect::<Vec<_>>(), [3, 4, 5]);
        assert!(store.recent.history.after(6, 10).is_none());
        // A checkpoint keeps the state, the journal and the history id; later writes replay
        // over the view.
        store.files.checkpoint(&catalog, &store.recent.journal, store.recent.history.chain()).unwrap();
        purchase(&mut store, &mut catalog, "o-5");
        let sixth = store.recent.history.chain();
        drop(store);
        let (store, again) = open(&dir).unwrap();
        let kept = (store.recent.history.chain_at(5), store.recent.history.chain());
        assert_eq!(kept, (chains[5], sixth), "the checkpoint keeps the chain; the write after it continues it");
        assert_eq!(again, catalog);
        assert_eq!(again.seq(), 6);
        assert_eq!(store.history_id(), history);
        assert_eq!(store.recent.journal.after(0, 10).0.len(), 6);
        assert_eq!(store.recent.history.after(5, 10).unwrap().len(), 1);
        assert!(store.recent.history.after(4, 10).is_none(), "writes before a restart's checkpoint are not kept");
        drop(store);
        fs::remove_dir_all(&dir).unwrap();
    }

    /// A crash between a checkpoint's view and its log: a newer view under the old log.
    #[test]
    fn a_newer_view_under_an_old_log_is_the_same_state() {
        let dir = temp("view");
        let (mut store, mut catalog) = open(&dir).unwrap();
        store.files.checkpoint(&catalog, &store.recent.journal, store.recent.history.chain()).unwrap();
        for i in 0..3 {
            purchase(&mut store, &mut catalog, &format!("v-{i}"));
        }
        write_view(&dir.join("books.csv"), &catalog).unwrap();
        drop(store);
        let (_, again) = open(&dir).unwrap();
        assert_eq!(again, catalog);
        fs::remove_dir_all(&dir).unwrap();
    }

    /// Each write's epoch survives a restart, a checkpoint and a copy; a log from before
    /// epochs reads as epoch 0 and is rewritten in today's form.
    #[test]
    fn epochs_are_logged_and_old_logs_read_as_epoch_0() {
        let dir = temp("epoch");
        let old = "seq,id,title,topic,price,quantity,order_id,at\n0,0,reset,0123456789ab,0.00,0,,\n\
                   0,3,A,x,1.00,5,,\n1,3,A,x,1.00,4,o-1,2026-11-24T00:00:00.000Z\n";
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("catalog.log"), old).unwrap();
        let (mut store, mut catalog) = open(&dir).unwrap();
        assert_eq!((catalog.seq(), catalog.book(3).unwrap().quantity), (1, 4));
        assert_eq!(store.last_epoch(), 0);
        assert!(fs::read(dir.join("catalog.log")).unwrap().starts_with(LOG_HEADER), "rewritten");
        assert!(store.recent.journal.contains("o-1"));
        let mut w = Draft::new(&catalog).write(3, &W::Purchase).unwrap();
        w.epoch = 4;
        store.log(&[Arc::new(w.clone())]).unwrap();
        catalog.commit(w.book.clone(), w.seq);
        drop(store);
        let (mut store, again) = open(&dir).unwrap();
        assert_eq!(again, catalog);
        assert_eq!((store.recent.history.epoch_at(2), store.last_epoch()), (Some(4), 4));
        store.files.checkpoint(&catalog, &store.recent.journal, store.recent.history.chain()).unwrap();
        drop(store);
        let (mut store, _) = open(&dir).unwrap();
        assert_eq!(store.recent.history.epoch_at(2), Some(4), "a checkpoint keeps the last write's epoch");
        let journal = std::mem::take(&mut store.recent.journal);
        store.replace(&catalog, "fedcba987654", 6, Some(0x5eed_c4a1), journal).unwrap();
        drop(store);
        let (store, _) = open(&dir).unwrap();
        assert_eq!((store.history_id(), store.last_epoch()), ("fedcba987654", 6));
        assert_eq!(store.recent.history.chain(), Some(0x5eed_c4a1), "a whole copy continues its source's chain");
        drop(store);
        fs::remove_dir_all(&dir).unwrap();
    }

    /// A divergence mark refuses copies of its history only, survives a restart, and goes
    /// when the catalog is replaced whole.
    #[test]
    fn a_divergence_mark_stays_until_the_catalog_is_replaced() {
        let dir = temp("diverged");
        let (mut store, catalog) = open(&dir).unwrap();
        let history = store.history_id().to_string();
        assert_eq!(store.files.diverged_from(&history), None);
        store.files.mark_diverged("the primary holds other writes").unwrap();
        drop(store);
        let (mut store, _) = open(&dir).unwrap();
        let why = store.files.diverged_from(&history).expect("marked");
        assert!(why.contains("catalog.diverged") && why.contains("other writes"), "{why}");
        store.files.clear_diverged().unwrap();
        assert!(!store.files.marked() && !dir.join("catalog.diverged").exists(), "cleared");
        store.files.mark_diverged("again").unwrap();
        assert_eq!(store.files.diverged_from("another0history"), None, "another history is not refused");
        let journal = std::mem::take(&mut store.recent.journal);
        store.replace(&catalog, "another0history", 0, None, journal).unwrap();
        assert_eq!(store.files.diverged_from(&history), None);
        assert!(!dir.join("catalog.diverged").exists());
        drop(store);
        fs::remove_dir_all(&dir).unwrap();
    }

    /// A mark's text carries its checksum: read back, a flipped bit anywhere, a cut or an
    /// edit never makes it a mark of another history or none (which would let a copy
    /// through); a mark of the first form (two lines, no checksum) counts for its history.
    #[test]
    fn a_damaged_mark_is_told_from_a_mark_of_another_history() {
        let text = Mark::text("h1", "the primary holds\nother writes");
        assert_eq!(text.lines().count(), 3, "one line of why: {text}");
        let of = |h: &str| Mark::Of { history: h.into(), why: "the primary holds other writes".into() };
        assert_eq!(Mark::read(&text, "h1"), of("h1"));
        assert_eq!(Mark::read(&text, "h2"), of("h1"), "a whole mark says its own history");
        for i in 0..text.len() - 1 {
            let mut bytes = text.clone().into_bytes();
            bytes[i] ^= 0x01;
            let flipped = String::from_utf8(bytes).unwrap();
            // Damaged, or (the line break before the checksum flipped) a mark of the first
            // form of h1: either way it still refuses h1's copies.
            let read = Mark::read(&flipped, "h1");
            let refuses = read == Mark::Damaged || matches!(&read, Mark::Of { history, .. } if history == "h1");
            assert!(refuses, "byte {i} flipped: {flipped:?} read as {read:?}");
        }
        for cut in ["", "h1", "h1\n", &text[..text.len() - 3], "h1\nwhy\nnot-a-sum\n", "h1\nwhy\n00000000\n"] {
            assert_eq!(Mark::read(cut, "h1"), Mark::Damaged, "{cut:?}");
        }
        let first_form = "h1\nthe primary holds other writes\n";
        assert_eq!(Mark::read(first_form, "h1"), of("h1"));
        assert_eq!(Mark::read(first_form, "h2"), Mark::Damaged, "it cannot prove another history");
    }

    /// A damaged mark refuses copies of any history asked about (it cannot say which it
    /// marks) and is written anew when the catalog diverges again; a mark the disk does not
    /// take holds in memory, refusing the same, is written once the disk takes it, and is
    /// dropped when the catalog was replaced by another history meanwhile; a mark deleted
    /// while the process runs is no mark.
    #[test]
    fn a_mark_holds_when_damaged_or_not_written() {
        let dir = temp("mark-faults");
        let (mut store, _) = open(&dir).unwrap();
        let history = store.history_id().to_string();
        store.files.mark_diverged("the primary holds other writes").unwrap();
        let path = dir.join("catalog.diverged");
        let text = fs::read_to_string(&path).unwrap();
        fs::write(&path, text.replacen(&history[..1], if history.starts_with('0') { "1" } else { "0" }, 1)).unwrap();
        for h in [history.as_str(), "another0history"] {
            let why = store.files.diverged_from(h).expect("a damaged mark refuses");
            assert!(why.contains("damaged"), "{why}");
        }
        store.files.mark_diverged("again").unwrap();
        assert!(store.files.diverged_from(&history).is_some_and(|w| w.contains("again")), "written anew");
        assert_eq!(store.files.diverged_from("another0history"), None);

        // The disk takes no mark (its temporary file cannot be made): marked in memory.
        store.files.clear_diverged().unwrap();
        let blocked = dir.join("catalog.tmp");
        fs::create_dir(&blocked).unwrap();
        assert!(store.files.mark_diverged("a full disk").is_err());
        assert!(store.files.marked() && !path.exists());
        assert!(store.files.diverged_from(&history).is_some_and(|w| w.contains("a full disk")));
        assert!(store.files.keep_mark().is_err(), "still not written");
        fs::remove_dir(&blocked).unwrap();
        assert!(store.files.keep_mark().unwrap(), "written once the disk takes it");
        assert!(!store.files.keep_mark().unwrap(), "and only once");
        drop(store);
        let (mut store, _) = open(&dir).unwrap();
        assert!(
            store.files.diverged_from(&history).is_some_and(|w| w.contains("a full disk")),
            "it survives a restart"
        );
        // An operator deletes it while the process runs: no mark from then on.
        fs::remove_file(&path).unwrap();
        assert_eq!(store.files.diverged_from(&history), None);
        // A mark held in memory is of the history it was made for: once the catalog is
        // replaced by another, it is dropped, not written as that one's.
        fs::create_dir(&blocked).unwrap();
        assert!(store.files.mark_diverged("a full disk").is_err());
        fs::remove_dir(&blocked).unwrap();
        store.files.history_id = "another0history".into();
        assert_eq!(store.files.diverged_from("another0history"), None);
        assert!(!store.files.keep_mark().unwrap() && !store.files.marked() && !path.exists());
        drop(store);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn one_process_per_directory() {
        let dir = temp("lock");
        let (store, _) = open(&dir).unwrap();
        assert!(open(&dir).unwrap_err().to_string().contains("in use"));
        drop(store);
        assert!(open(&dir).is_ok());
        fs::remove_dir_all(&dir).unwrap();
    }
}

#[cfg(test)]
mod faults {
    //! Checksums, corruption, write errors and crash images (the storage faults).
    use super::*;
    use crate::catalog::state::{Draft, Write as W};
    use crate::storage::crash::{self, Disk, Op};
    use crate::wire::NewBook;
    use std::collections::BTreeMap;
    use std::fs;

    fn temp(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("bazar-store-faults-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    /// Decides `writes` (book id, write, order id) over `catalog` as the primary does,
    /// appends them as one batch, and commits them when the append succeeded.
    fn batch(store: &mut Ledger, catalog: &mut Catalog, writes: &[(u32, W, &str)]) -> Result<u64> {
        batch_states(store, catalog, writes).1
    }

    /// [`batch`], and the states after each of its writes (a crash may keep a prefix of
    /// the batch's rows).
    fn batch_states(
        store: &mut Ledger,
        catalog: &mut Catalog,
        writes: &[(u32, W, &str)],
    ) -> (Vec<Catalog>, Result<u64>) {
        let mut draft = Draft::new(catalog);
        let mut made = Vec::new();
        for (id, w, order_id) in writes {
            let mut r = draft.write(*id, w).unwrap();
            r.epoch = 2;
            r.order = (!order_id.is_empty()).then(|| Order {
                order_id: order_id.to_string(),
                id: r.book.id,
                title: r.book.title.clone(),
                price: r.book.price,
                at: "2026-12-04T00:00:00.000Z".into(),
            });
            made.push(r);
        }
        let mut after = Vec::new();
        let mut state = catalog.clone();
        for r in &made {
            state.commit(r.book.clone(), r.seq);
            after.push(state.clone());
        }
        let rows: Vec<_> = made.iter().cloned().map(Arc::new).collect();
        if let Err(e) = store.log(&rows) {
            return (after, Err(e));
        }
        for r in &made {
            catalog.commit(r.book.clone(), r.seq);
        }
        (after, Ok(catalog.seq()))
    }

    fn add(title: &str) -> W {
        W::Add(NewBook {
            title: title.into(),
            topic: "faults, \"quoted\"".into(),
            price: Money::from_cents(1250),
            quantity: 3,
        })
    }

    /// Flips one bit of the byte at the middle of the line `line` (1-based) of `path`.
    fn flip(path: &Path, line: usize) {
        let mut bytes = fs::read(path).unwrap();
        let starts: Vec<usize> = std::iter::once(0)
            .chain(bytes.iter().enumerate().filter(|(_, &b)| b == b'\n').map(|(i, _)| i + 1))
            .collect();
        let (start, end) = (starts[line - 1], starts[line] - 1);
        bytes[(start + end) / 2] ^= 0x01;
        fs::write(path, bytes).unwrap();
    }

    /// A bit flipped in any row but a torn last one (of the log or of the view), a row
    /// with a field too many or too few: the store refuses the files, naming the line; the
    /// recovering open sets them aside (kept) and starts empty at write 0.
    #[test]
    fn a_damaged_row_anywhere_is_corruption_not_data() {
        type Damage = Box<dyn Fn(&Path)>;
        let cases: [(&str, &str, Damage, &str); 5] = [
            ("log-middle", "catalog.log", Box::new(|p| flip(p, 4)), "line 4: its checksum does not match"),
            ("log-last", "catalog.log", Box::new(|p| flip(p, 12)), "line 12: its checksum does not match"),
            ("view", "books.csv", Box::new(|p| flip(p, 3)), "line 3: its checksum does not match"),
            (
                "fields",
                "catalog.log",
                Box::new(|p| {
                    let text = fs::read_to_string(p).unwrap().replacen(",2,", ",2,x,", 1);
                    fs::write(p, text).unwrap()
                }),
                "11 fields, not 10",
            ),
            (
                "header",
                "books.csv",
                Box::new(|p| {
                    let text = fs::read_to_string(p).unwrap().replacen("quantity", "quantitz", 1);
                    fs::write(p, text).unwrap()
                }),
                "line 1: unknown header",
            ),
        ];
        for (tag, file, damage, says) in cases {
            let dir = temp(tag);
            let (mut store, mut catalog) = open(&dir).unwrap();
            store.files.checkpoint(&catalog, &store.recent.journal, store.recent.history.chain()).unwrap();
            for i in 0..10 {
                batch(&mut store, &mut catalog, &[(3, W::Purchase, ""), (0, add(&format!("Book, \"{i}\"")), "")])
                    .unwrap();
            }
            drop(store);
            assert_eq!(open(&dir).unwrap().1, catalog, "{tag}: loads before the damage");
            damage(&dir.join(file));
            let e = open(&dir).unwrap_err();
            assert!(matches!(e, StorageError::Corrupt { .. }), "{tag}: {e}");
            assert!(e.to_string().contains(file) && e.to_string().contains(says), "{tag}: {e}");
            let (_, empty, _, why) = Store::open_recovering(&dir).unwrap();
            assert_eq!((empty.len(), empty.seq()), (0, 0), "{tag}");
            assert!(why.is_some_and(|w| w.to_string().contains(says)), "{tag}");
            let aside: Vec<String> = fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .filter(|n| n.contains(".corrupt-"))
                .collect();
            assert!(aside.iter().any(|n| n.starts_with(file)), "{tag}: the damaged file is kept: {aside:?}");
            let (_, again) = open(&dir).unwrap();
            assert_eq!((again.len(), again.seq()), (0, 0), "{tag}: empty, not seeded, after a restart");
            fs::remove_dir_all(&dir).unwrap();
        }
    }

    /// Files from before checksums (a 9-field log and a 5-field view) and from before
    /// epochs load, and are rewritten in today's form.
    #[test]
    fn files_from_before_checksums_load_and_are_rewritten() {
        let dir = temp("old");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("books.csv"), "id,title,topic,price,quantity\n3,\"A, b\",x,1.00,5\n4,B,y,2.00,1\n").unwrap();
        fs::write(
            dir.join("catalog.log"),
            "seq,id,title,topic,price,quantity,order_id,at,epoch\n7,0,checkpoint,0123456789ab,0.00,0,,,1\n\
             8,3,\"A, b\",x,1.00,4,o-8,2026-11-24T00:00:00.000Z,1\n",
        )
        .unwrap();
        let (store, catalog) = open(&dir).unwrap();
        assert_eq!((catalog.seq(), catalog.book(3).unwrap().quantity, catalog.len()), (8, 4, 2));
        assert_eq!((store.history_id(), store.last_epoch()), ("0123456789ab", 1));
        assert!(store.recent.journal.contains("o-8"));
        assert!(fs::read(dir.join("catalog.log")).unwrap().starts_with(LOG_HEADER));
        assert!(fs::read(dir.join("books.csv")).unwrap().starts_with(VIEW_HEADER));
        drop(store);
        let (store, again) = open(&dir).unwrap();
        assert_eq!(again, catalog);
        assert_eq!(store.history_id(), "0123456789ab");
        drop(store);
        fs::remove_dir_all(&dir).unwrap();
    }

    /// A full disk in the middle of an append, and a failed fsync: the part written is cut
    /// at once, the writes are refused (503), nothing of them is kept (no number taken),
    /// the store takes no write until re-opened, and the next write re-opens it.
    #[test]
    fn a_failed_append_is_cut_and_the_store_reopens() {
        for (tag, kind, failing) in [
            ("full", io::ErrorKind::StorageFull, (|op: &Op| matches!(op, Op::Write(..))) as fn(&Op) -> bool),
            ("fsync", io::ErrorKind::Other, |op: &Op| matches!(op, Op::Sync(..))),
        ] {
            let dir = temp(tag);
            let (mut store, mut catalog) = open(&dir).unwrap();
            batch(&mut store, &mut catalog, &[(3, W::Purchase, "o-1")]).unwrap();
            let len = fs::metadata(dir.join("catalog.log")).unwrap().len();
            crash::start();
            crash::fail(1, kind, move |op| failing(op) && crash::on(op, "catalog.log"));
            let before = catalog.clone();
            let e = batch(&mut store, &mut catalog, &[(3, W::Purchase, "o-2"), (0, add("New"), "")]).unwrap_err();
            assert!(matches!(e, StorageError::Unwritable { .. }), "{tag}: {e}");
            assert_eq!(crate::error::Error::from(e).status(), 503, "{tag}");
            assert_eq!(catalog, before, "{tag}: nothing applied");
            assert!(store.files.failed(), "{tag}");
            assert_eq!(fs::metadata(dir.join("catalog.log")).unwrap().len(), len, "{tag}: cut at once");
            assert!(!store.recent.journal.contains("o-2") && store.recent.history.last().0 == 1, "{tag}");
            // A write within a second is refused without reading the log again; the next
            // one re-opens the log from disk and goes on at the next number.
            let e = batch(&mut store, &mut catalog, &[(3, W::Purchase, "o-3")]).unwrap_err();
            assert!(e.to_string().contains("injected by the test"), "{tag}: says the cause again: {e}");
            store.files.failed.as_mut().unwrap().at -= REOPEN_RETRY;
            assert_eq!(batch(&mut store, &mut catalog, &[(3, W::Purchase, "o-3")]).unwrap(), 2, "{tag}");
            assert!(!store.files.failed(), "{tag}");
            let reopens: Vec<_> = crash::ops();
            crash::stop();
            assert!(reopens.iter().any(|op| matches!(op, Op::SetLen(..))), "{tag}: {reopens:?}");
            drop(store);
            let (store, again) = open(&dir).unwrap();
            assert_eq!(again, catalog, "{tag}");
            assert!(store.recent.journal.contains("o-3") && !store.recent.journal.contains("o-2"), "{tag}");
            drop(store);
            fs::remove_dir_all(&dir).unwrap();
        }
    }

    /// A store that cannot re-open (the disk still refuses) keeps refusing, and `retry`
    /// brings it back once it can.
    #[test]
    fn a_failed_store_refuses_until_it_can_reopen() {
        let dir = temp("refuse");
        let (mut store, mut catalog) = open(&dir).unwrap();
        crash::start();
        crash::fail(3, io::ErrorKind::Other, |op| matches!(op, Op::Sync(..)) && crash::on(op, "catalog.log"));
        // The append's fsync fails; the cut's fsync fails too (its state is unknown).
        assert!(batch(&mut store, &mut catalog, &[(3, W::Purchase, "")]).is_err());
        // The re-open's fsync fails: still refused.
        store.files.failed.as_mut().unwrap().at -= REOPEN_RETRY;
        let e = batch(&mut store, &mut catalog, &[(3, W::Purchase, "")]).unwrap_err();
        assert!(e.to_string().contains("cannot be written now"), "{e}");
        assert!(store.files.failed());
        crash::stop();
        store.files.failed.as_mut().unwrap().at -= REOPEN_RETRY;
        store.files.retry();
        assert!(!store.files.failed());
        assert_eq!(batch(&mut store, &mut catalog, &[(3, W::Purchase, "")]).unwrap(), 1);
        drop(store);
        assert_eq!(open(&dir).unwrap().1, catalog);
        fs::remove_dir_all(&dir).unwrap();
    }

    /// A checkpoint that fails (its view, its log, its rename) leaves the old files as
    /// they were and usable, its temporary file removed; writes go on.
    #[test]
    fn a_failed_checkpoint_leaves_the_old_files() {
        type Failing = fn(&Op) -> bool;
        let fails: [(&str, Failing); 3] = [
            ("view", |op| matches!(op, Op::Write(p, _) if p.ends_with("books.tmp"))),
            ("log", |op| matches!(op, Op::Sync(p) if p.ends_with("catalog.tmp"))),
            ("rename", |op| matches!(op, Op::Rename(p, _) if p.ends_with("catalog.tmp"))),
        ];
        for (tag, failing) in fails {
            let dir = temp(&format!("checkpoint-{tag}"));
            let (mut store, mut catalog) = open(&dir).unwrap();
            batch(&mut store, &mut catalog, &[(3, W::Purchase, "o-1")]).unwrap();
            let files = |d: &Path| {
                let mut names: Vec<_> = fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name()).collect();
                names.sort();
                names
            };
            let before = files(&dir);
            crash::start();
            crash::fail(1, io::ErrorKind::StorageFull, failing);
            assert!(
                store.files.checkpoint(&catalog, &store.recent.journal, store.recent.history.chain()).is_err(),
                "{tag}"
            );
            crash::stop();
            assert_eq!(files(&dir), before, "{tag}: no temporary file left");
            batch(&mut store, &mut catalog, &[(3, W::Purchase, "o-2")]).unwrap();
            drop(store);
            let (store, again) = open(&dir).unwrap();
            assert_eq!(again, catalog, "{tag}");
            assert!(store.recent.journal.contains("o-1") && store.recent.journal.contains("o-2"), "{tag}");
            drop(store);
            fs::remove_dir_all(&dir).unwrap();
        }
    }

    /// A crash at every point of every file operation, as LazyFS makes them: from a new
    /// directory (seeding), appends single and batched (purchases with their orders, new
    /// books with quoted titles), a checkpoint, a whole copy (reset), a failed append (a
    /// full disk) and a failed fsync each followed by a write that re-opens the log, and
    /// checkpoints that fail (a rename, a directory fsync after the view's rename or after
    /// the log's). Each image (what was fsynced only; with an append not fsynced
    /// kept in part; with everything) loads to the state after some write, never before
    /// the last acknowledged one (an append that returned Ok).
    #[test]
    fn every_crash_image_holds_every_acknowledged_write() {
        let dir = temp("crash");
        let image_dir = temp("crash-image");
        crash::start();
        let (mut store, mut catalog) = open(&dir).unwrap();
        // The states a crash may show (by write number: after each write of each batch,
        // made or not; a batch that failed only until it was answered, when its rows have
        // been cut for good), and when each write was acknowledged (how many operations
        // had been made then).
        type States = BTreeMap<u64, Vec<(Catalog, Option<usize>)>>;
        let seen: std::cell::RefCell<(States, Vec<(usize, u64)>)> = std::cell::RefCell::new((
            BTreeMap::from([(catalog.seq(), vec![(catalog.clone(), None)])]),
            vec![(crash::ops().len(), catalog.seq())],
        ));
        let made = |store: &mut Ledger, catalog: &mut Catalog, writes: &[(u32, W, &str)]| {
            let (after, done) = batch_states(store, catalog, writes);
            let (states, acked) = &mut *seen.borrow_mut();
            let until = done.is_err().then(|| crash::ops().len());
            for state in after {
                states.entry(state.seq()).or_default().push((state, until));
            }
            if done.is_ok() {
                acked.push((crash::ops().len(), catalog.seq()));
            }
            done
        };
        made(&mut store, &mut catalog, &[(3, W::Purchase, "o-1")]).unwrap();
        made(&mut store, &mut catalog, &[(0, add("One, \"1\""), ""), (3, W::Purchase, "o-2"), (1, W::Purchase, "")])
            .unwrap();
        store.files.checkpoint(&catalog, &store.recent.journal, store.recent.history.chain()).unwrap();
        made(&mut store, &mut catalog, &[(2, W::Purchase, "o-3")]).unwrap();
        crash::fail(1, io::ErrorKind::StorageFull, |op| matches!(op, Op::Write(..)) && crash::on(op, "catalog.log"));
        made(&mut store, &mut catalog, &[(2, W::Purchase, "o-4"), (0, add("Lost"), "")]).unwrap_err();
        store.files.failed.as_mut().unwrap().at -= REOPEN_RETRY;
        made(&mut store, &mut catalog, &[(2, W::Purchase, "o-5")]).unwrap();
        crash::fail(1, io::ErrorKind::Other, |op| matches!(op, Op::Sync(..)) && crash::on(op, "catalog.log"));
        made(&mut store, &mut catalog, &[(4, W::Purchase, "o-6")]).unwrap_err();
        store.files.failed.as_mut().unwrap().at -= REOPEN_RETRY;
        made(&mut store, &mut catalog, &[(4, W::Purchase, "o-7"), (5, W::Purchase, "")]).unwrap();
        crash::fail(1, io::ErrorKind::StorageFull, |op| matches!(op, Op::Rename(p, _) if p.ends_with("catalog.tmp")));
        store.files.checkpoint(&catalog, &store.recent.journal, store.recent.history.chain()).unwrap_err();
        made(&mut store, &mut catalog, &[(6, W::Purchase, "")]).unwrap();
        // The directory fsync after the view's rename fails: the checkpoint stops there
        // (its log is not replaced), and the store goes on.
        crash::fail(1, io::ErrorKind::Other, |op| matches!(op, Op::SyncDir(p) if p.ends_with("books.csv")));
        store.files.checkpoint(&catalog, &store.recent.journal, store.recent.history.chain()).unwrap_err();
        assert!(!store.files.failed());
        made(&mut store, &mut catalog, &[(1, W::Purchase, "o-9")]).unwrap();
        // The directory fsync after the log's rename fails: the new log is in place but its
        // name may not be durable; no write is taken until the directory is fsynced again.
        crash::fail(1, io::ErrorKind::Other, |op| matches!(op, Op::SyncDir(p) if p.ends_with("catalog.log")));
        store.files.checkpoint(&catalog, &store.recent.journal, store.recent.history.chain()).unwrap_err();
        assert!(store.files.failed());
        store.files.failed.as_mut().unwrap().at -= REOPEN_RETRY;
        made(&mut store, &mut catalog, &[(1, W::Purchase, "o-10")]).unwrap();
        // A whole copy: another catalog, further ahead.
        let mut copy =
            Catalog::new(catalog.iter().filter(|b| b.id != 7).cloned().collect(), catalog.seq() + 5).unwrap();
        copy.raise_seq(catalog.seq() + 5);
        let journal = std::mem::take(&mut store.recent.journal);
        store.replace(&copy, "fedcba987654", 3, Some(3), journal).unwrap();
        catalog = copy;
        {
            let (states, acked) = &mut *seen.borrow_mut();
            states.entry(catalog.seq()).or_default().push((catalog.clone(), None));
            acked.push((crash::ops().len(), catalog.seq()));
        }
        made(&mut store, &mut catalog, &[(3, W::Purchase, "o-8")]).unwrap();
        made(&mut store, &mut catalog, &[(0, add("Last"), "")]).unwrap();
        let ops = crash::ops();
        crash::stop();
        drop(store);
        let (states, acked) = seen.into_inner();

        let mut disk = Disk::new(&dir);
        let mut images = 0;
        for k in 0..=ops.len() {
            if k > 0 {
                disk.apply(&ops[k - 1]);
            }
            let must = acked.iter().filter(|(at, _)| *at <= k).map(|(_, seq)| *seq).max();
            for (what, image) in disk.images() {
                crash::materialize(&image, &image_dir);
                let at = format!("crash after operation {k} ({:?}), image {what}", k.checked_sub(1).map(|i| &ops[i]));
                let (_, loaded) = open(&image_dir).unwrap_or_else(|e| panic!("{at}: {e}"));
                images += 1;
                // Before the directory was seeded for good: the built-in catalog.
                let must = must.unwrap_or(0);
                assert!(loaded.seq() >= must, "{at}: write {must} was acknowledged, loaded {}", loaded.seq());
                let possible = states.get(&loaded.seq()).into_iter().flatten();
                assert!(
                    possible.filter(|(_, until)| until.is_none_or(|u| k < u)).any(|(state, _)| *state == loaded),
                    "{at}: loaded write {} is no state the catalog went through: {loaded:?}",
                    loaded.seq()
                );
            }
        }
        println!("{} operations, {images} crash images, each loaded and checked", ops.len());
        let _ = fs::remove_dir_all(&dir);
        let _ = fs::remove_dir_all(&image_dir);
    }
}

#[cfg(test)]
mod timing {
    use super::*;
    use std::fs;

    /// How long a million-book catalog takes to load (printed, never asserted):
    /// `cargo test --release --lib store::timing -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn a_million_books_load() {
        let dir = std::env::temp_dir().join(format!("bazar-store-million-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let books = (1..=1_000_000u32).map(|id| Book {
            id,
            title: format!("Book number {id} with a title of ordinary length"),
            topic: format!("topic {}", id % 1000),
            price: "12.50".parse().unwrap(),
            quantity: id % 100,
        });
        let catalog = Catalog::new(books.collect(), 0).unwrap();
        let (mut store, _) = open(&dir).unwrap();
        store.files.checkpoint(&catalog, &store.recent.journal, store.recent.history.chain()).unwrap();
        drop(store);
        for form in ["view + checkpoint row", "log in reset form"] {
            let started = std::time::Instant::now();
            let (mut store, loaded) = open(&dir).unwrap();
            println!("{form}: loaded {} books in {:?}", loaded.len(), started.elapsed());
            let journal = std::mem::take(&mut store.recent.journal);
            store.replace(&loaded, "0123456789ab", 0, None, journal).unwrap();
        }
        fs::remove_dir_all(&dir).unwrap();
    }
}
