//! The order log: every order known to this server, kept in its file `orders.csv` (header
//! `order_id,id,title,price,at,crc`), to which orders are only ever appended, with a compact
//! index in memory (`super::index`: under 50 bytes an order, and the [`Cursor`] order that
//! pages follow).
//!
//! This file holds the I/O: loading the file into the index, group-committed appends, and
//! reads. Rows are read back with positioned reads (`read_at`, no seek, no lock held) and
//! parsed with the csv crate, since titles may hold quotes, commas and newlines.
//!
//! **Every row is checked.** A row's last column is its checksum
//! ([`storage::checksum`]: CRC-32 over its five fields' lengths and values, so CSV quoting
//! never matters), verified when the file is loaded and again by every positioned read
//! (`get`, `page`, `since`): a read whose row does not match answers an error, never other
//! data. A file written before rows carried a checksum (header
//! `order_id,id,title,price,at`) is rewritten once in the checked form when opened (good rows
//! copied to `orders.csv.tmp`, fsynced, renamed over the file, directory fsynced), so that
//! only one form is ever appended to.
//!
//! **A torn tail is cut, corruption is set aside.** At open a bad LAST row (a crash
//! mid-append: never acknowledged) is cut, as before. A bad row anywhere else (a checksum
//! that does not match, a row that does not parse), or a bad last row followed by bytes that
//! hold a whole good row (a flipped quote that swallowed the rows after it), is corruption:
//! the file is kept aside as `orders.csv.corrupt-<unix ms>` (a hard link, so a crash at any
//! point leaves the file or its replacement), rewritten with its good rows only, and the
//! server takes the rest again from its peers (a full pull from position 0, which every
//! start does) and the catalog's purchase journal (reconciliation), saying so at WARN.
//!
//! **A write error stops the damage.** A write that fails (a full disk, EIO) has its partial
//! row cut at once and is answered [`StorageError::Unwritable`] (503); if the cut itself
//! fails, or an fsync fails, the log is *failed*: an fsync that failed is never retried as if
//! it could have succeeded (PostgreSQL's "fsyncgate": the kernel may have dropped the dirty
//! pages and a second fsync would report success), so the log takes no appends until
//! [`OrderLog::reopen`] re-opens it from disk: it cuts the file back to the rows known
//! durable, fsyncs it, re-reads and re-checks it, and rebuilds the index (and sets a
//! corrupt file aside as above). The node calls `reopen` periodically, so appends resume by
//! themselves once the disk takes writes again.
//!
//! Architecture invariant: only the order process that owns the data directory (it holds
//! `order.lock`) writes its `orders.csv`; an order is appended and fsynced before anything
//! that depends on it is acknowledged, and it is indexed (visible) only once durable. Bytes
//! of a durable row never change while a file is open, which is what lets readers use them
//! without the lock. Positions (what peers pull by) are stable within one *generation* of
//! the log (a random name drawn at each open or re-open, sent with every pull): a peer that
//! sees another generation pulls again from position 0.

pub use super::index::{Cursor, Page};
use super::index::{Entry, Index};
use crate::error::{Error, Result};
use crate::ids;
use crate::money::Money;
use crate::storage::{self, At, StorageError};
use crate::wire::Order;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// The header of the checked form, the only one appended to.
const HEADER: &[u8] = b"order_id,id,title,price,at,crc\n";
const COLUMNS: [&str; 6] = ["order_id", "id", "title", "price", "at", "crc"];
/// The columns of files written before rows carried a checksum.
const COLUMNS_UNCHECKED: [&str; 5] = ["order_id", "id", "title", "price", "at"];
/// Bytes read from the file at once while loading.
const LOAD_BUFFER: usize = 1 << 20;
/// How much of a bad last row (and what follows it) is searched for a whole good row, to
/// tell a torn tail from corruption that swallowed the rows after it.
const TAIL_PROBE: usize = 1 << 20;

/// The form of a file's rows, from its header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Form {
    /// Six columns, the last the row's checksum.
    Checked,
    /// Five columns, no checksum: written before this version; rewritten at open.
    Unchecked,
}

/// A row's five fields as written (the checksum covers these values).
fn fields(o: &Order) -> [String; 5] {
    [o.order_id.clone(), o.id.to_string(), o.title.clone(), o.price.to_string(), o.at.clone()]
}

/// Appends one order as a checked row (its newline included) to a CSV writer.
fn encode<W: Write>(w: &mut csv::Writer<W>, o: &Order) -> csv::Result<()> {
    let f = fields(o);
    let crc = storage::checksum_text(storage::checksum(f.iter().map(|s| s.as_bytes())));
    w.write_record([&f[0], &f[1], &f[2], &f[3], &f[4], &crc])
}

/// Whether a record of the checked form is whole: six fields whose checksum matches.
fn check(record: &csv::ByteRecord) -> Result<(), String> {
    if record.len() != 6 {
        return Err(format!("{} fields, not 6", record.len()));
    }
    let want = storage::checksum_text(storage::checksum(record.iter().take(5)));
    if &record[5] != want.as_bytes() {
        return Err(format!(
            "its checksum {:?} does not match its fields ({want})",
            String::from_utf8_lossy(&record[5])
        ));
    }
    Ok(())
}

/// A record of `form` as an order: checked (the checked form), then parsed.
fn order_of(record: &csv::ByteRecord, form: Form) -> Result<Order, String> {
    match form {
        Form::Checked => check(record)?,
        Form::Unchecked if record.len() != 5 => return Err(format!("{} fields, not 5", record.len())),
        Form::Unchecked => {}
    }
    let text = |i: usize| std::str::from_utf8(&record[i]).map_err(|_| format!("field {} is not UTF-8", i + 1));
    let id = text(1)?.parse().map_err(|_| format!("book id {:?} is not a number", text(1).unwrap_or_default()))?;
    let price: Money = text(3)?.parse()?;
    let order = Order { order_id: text(0)?.into(), id, title: text(2)?.into(), price, at: text(4)?.into() };
    order.check_stored()?;
    Ok(order)
}

/// The id and time of a record of `form`, to index it, or why it cannot be indexed.
fn key_of(record: &csv::ByteRecord, form: Form) -> Result<(&str, u64), Bad> {
    match form {
        Form::Checked => check(record).map_err(Bad::Corrupt)?,
        Form::Unchecked if record.len() != 5 => return Err(Bad::Corrupt(format!("{} fields, not 5", record.len()))),
        Form::Unchecked => {}
    }
    let text = |i: usize| std::str::from_utf8(&record[i]).map_err(|_| format!("field {} is not UTF-8", i + 1));
    let key = text(0).and_then(|id| ids::check_order_id(id).map(|()| id)).and_then(|id| {
        let at = text(4).and_then(ids::parse_timestamp)?;
        Ok((id, at))
    });
    match (key, form) {
        (Ok(key), _) => Ok(key),
        // A checked row holds what this server wrote: a bad id behind a good checksum is
        // not something it writes.
        (Err(e), Form::Checked) => Err(Bad::Corrupt(e)),
        (Err(e), Form::Unchecked) => Err(Bad::Unindexable(e)),
    }
}

/// Why a row is not indexed.
enum Bad {
    /// Not a row this server writes: torn if last, else corruption.
    Corrupt(String),
    /// A whole row of an unchecked file that cannot be indexed (a malformed id or time,
    /// which servers once wrote): skipped with a warning, as before checksums.
    Unindexable(String),
}

/// What loading a file found.
struct Loaded {
    index: Index,
    form: Form,
    /// Where a torn last row starts (to be cut): a crash mid-append, never acknowledged.
    torn: Option<u64>,
    /// How many bad rows there are before the last: not 0, the file is corrupt.
    bad: usize,
    /// The first few of them: their line and what is wrong (for the log).
    examples: Vec<String>,
}

/// How many bad rows a load describes in words (it counts them all).
const EXAMPLES: usize = 5;

impl Index {
    /// Reads `orders.csv` (whose header is already there) into an index: the good rows,
    /// where a torn last row starts, and the bad rows before it. A row whose id is already
    /// indexed is a duplicate (two servers adopted the same order) and skipped.
    fn load(path: &Path) -> Result<Loaded, StorageError> {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .buffer_capacity(LOAD_BUFFER)
            .from_reader(File::open(path).at(path)?);
        let mut record = csv::ByteRecord::new();
        let header = if reader.read_byte_record(&mut record).at(path)? { Some(&record) } else { None };
        let is = |columns: &[&str]| header.is_some_and(|h| h.iter().eq(columns.iter().map(|c| c.as_bytes())));
        let form = if is(&COLUMNS) {
            Form::Checked
        } else if is(&COLUMNS_UNCHECKED) {
            Form::Unchecked
        } else {
            let header = String::from_utf8_lossy(HEADER);
            return Err(StorageError::corrupt(path, format!("the first line is not the header {header:?}")));
        };
        let mut index = Index::new(0);
        let (mut duplicates, mut skipped, mut last) = (0u64, 0u64, 0u64);
        let (mut bad, mut last_bad, mut examples) = (0usize, None, Vec::<(u64, String)>::new());
        loop {
            let offset = reader.position().byte();
            if !reader.read_byte_record(&mut record).at(path)? {
                index.end = offset;
                break;
            }
            last = offset;
            let line = record.position().map_or(0, |p| p.line());
            match key_of(&record, form) {
                Ok((order_id, at)) => {
                    if index.find(order_id).is_some() {
                        duplicates += 1;
                        continue;
                    }
                    let entry = index.entry(order_id, at, offset);
                    index.push(entry);
                }
                Err(Bad::Unindexable(e)) => {
                    skipped += 1;
                    log::warn!("{}: skipping the row at byte {offset}: {e}", path.display());
                }
                Err(Bad::Corrupt(e)) => {
                    bad += 1;
                    last_bad = Some(offset);
                    if examples.len() <= EXAMPLES {
                        examples.push((offset, format!("line {line}: {e}")));
                    }
                }
            }
        }
        let mut torn = None;
        if let Some(offset) = last_bad.filter(|offset| *offset == last) {
            if form == Form::Unchecked || !holds_a_good_row(path, offset)? {
                bad -= 1;
                examples.retain(|(at, _)| *at != offset);
                index.end = offset;
                torn = Some(offset);
            }
        }
        examples.truncate(EXAMPLES);
        if duplicates + skipped > 0 {
            log::info!("{}: {duplicates} duplicate rows, {skipped} rows skipped", path.display());
        }
        index.entries.shrink_to_fit();
        index.sort();
        Ok(Loaded { index, form, torn, bad, examples: examples.into_iter().map(|(_, why)| why).collect() })
    }
}

/// Whether the bytes of `path` after the first line that starts at `offset` hold a whole
/// good (checked) row: then the bad row at `offset` is not a torn tail but corruption that
/// made the CSV reader swallow the rows after it (a flipped quote).
fn holds_a_good_row(path: &Path, offset: u64) -> Result<bool, StorageError> {
    let mut tail = Vec::new();
    File::open(path).at(path)?.take(offset + TAIL_PROBE as u64).read_to_end(&mut tail).at(path)?;
    let tail = tail.get(offset as usize..).unwrap_or_default();
    Ok(tail.split(|&b| b == b'\n').skip(1).any(|line| {
        let mut reader = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(line);
        let mut record = csv::ByteRecord::new();
        matches!(reader.read_byte_record(&mut record), Ok(true)) && check(&record).is_ok()
    }))
}

/// Rewrites `path` in the checked form with the rows `loaded` indexed, durably: to
/// `orders.csv.tmp`, fsynced, renamed over `path`, the directory fsynced. With `aside`, the
/// old file is first hard-linked there (kept for the operator).
fn rewrite(path: &Path, loaded: &Loaded, aside: Option<&Path>) -> Result<usize, StorageError> {
    let tmp = path.with_extension("csv.tmp");
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .buffer_capacity(LOAD_BUFFER)
        .from_reader(File::open(path).at(path)?);
    let mut out = io::BufWriter::new(File::create(&tmp).at(&tmp)?);
    out.write_all(HEADER).at(&tmp)?;
    let mut w = csv::WriterBuilder::new().has_headers(false).from_writer(out);
    let mut record = csv::ByteRecord::new();
    reader.read_byte_record(&mut record).at(path)?;
    let (mut wanted, mut kept) = (loaded.index.offsets().peekable(), 0);
    while let Some(&next) = wanted.peek() {
        let offset = reader.position().byte();
        if !reader.read_byte_record(&mut record).at(path)? {
            break;
        }
        if offset != next {
            continue;
        }
        wanted.next();
        match order_of(&record, loaded.form) {
            Ok(order) => {
                encode(&mut w, &order).at(&tmp)?;
                kept += 1;
            }
            // Only an unchecked file can hold one (a bad price the index does not look at).
            Err(e) => log::warn!("{}: not keeping the row at byte {offset}: {e}", path.display()),
        }
    }
    let file = storage::buffer_inner(storage::csv_inner(w, &tmp)?, &tmp)?;
    file.sync_all().at(&tmp)?;
    if let Some(aside) = aside {
        fs::hard_link(path, aside).at(aside)?;
    }
    fs::rename(&tmp, path).at(path)?;
    storage::sync_dir(path).at(path)?;
    Ok(kept)
}

/// A file opened: its handles and its index.
struct Opened {
    /// Opened for appending.
    file: File,
    /// A second handle, for fsyncs.
    syncer: File,
    /// For positioned reads.
    reader: File,
    index: Index,
}

impl Opened {
    /// Opens (creating if needed) `path`, cuts a torn tail, rewrites an unchecked file in
    /// the checked form and a corrupt one with its good rows (the old one set aside), and
    /// indexes it. Returns whether it was corrupt (its lost rows are to be taken again from
    /// the peers and the catalog's journal).
    fn open(path: &Path) -> Result<(Opened, bool), StorageError> {
        if path.exists() {
            let cut = storage::cut_torn_tail(path).at(path)?;
            if cut > 0 {
                log::warn!("cut a torn last line ({cut} bytes) off {}", path.display());
            }
        }
        let mut file = storage::open_append(path, HEADER).at(path)?;
        let mut loaded = Index::load(path)?;
        if let Some(at) = loaded.torn {
            let len = file.metadata().at(path)?.len();
            log::warn!("cut a torn last row ({} bytes) off {}", len - at, path.display());
            file.set_len(at).at(path)?;
            file.sync_all().at(path)?;
        }
        let corrupt = loaded.bad > 0;
        if corrupt || loaded.form == Form::Unchecked {
            let aside = corrupt.then(|| path.with_file_name(format!("orders.csv.corrupt-{}", ids::now_ms())));
            if let Some(aside) = &aside {
                log::warn!(
                    "{} is corrupt: {} bad rows before its last ({}); keeping it as {}, rewriting it with its {} good rows, and taking the rest again from the peers (a full pull) and the catalog's purchase journal",
                    path.display(),
                    loaded.bad,
                    loaded.examples.join("; "),
                    aside.display(),
                    loaded.index.entries.len()
                );
            }
            let kept = rewrite(path, &loaded, aside.as_deref())?;
            if !corrupt {
                log::info!("{}: rewrote its {kept} rows with checksums (a file of an older version)", path.display());
            }
            file = storage::open_append(path, HEADER).at(path)?;
            loaded = Index::load(path)?;
            if loaded.bad > 0 || loaded.torn.is_some() || loaded.form != Form::Checked {
                return Err(StorageError::corrupt(path, "still not whole once rewritten"));
            }
        }
        let opened = Opened {
            syncer: file.try_clone().at(path)?,
            reader: File::open(path).at(path)?,
            file,
            index: loaded.index,
        };
        Ok((opened, corrupt))
    }
}

/// The orders: their file and its index.
///
/// Appends are group-committed: concurrent [`OrderLog::add`]s write their rows, then share
/// one fsync; an order becomes visible (and counts as known) only once it is durable.
pub struct OrderLog {
    /// The index, the handles and the rows not yet fsynced. Held briefly, never across a
    /// read of the file (but across a re-open, which is rare).
    inner: Mutex<Inner>,
    /// Serialises fsyncs (and re-opens); holds the fsync handle of the file.
    syncer: Mutex<File>,
    /// `orders.csv`, for error messages.
    path: PathBuf,
    /// Testing aid: the next fsync fails as a device's would.
    #[cfg(test)]
    fail_next_sync: std::sync::atomic::AtomicBool,
}

/// Why the log takes no appends until it is re-opened.
#[derive(Clone, Debug)]
struct Failure {
    kind: io::ErrorKind,
    why: String,
}

struct Inner {
    /// Opened for appending.
    file: File,
    /// For positioned reads of durable rows (shared with reads in progress, which keep the
    /// file they started on across a re-open).
    reader: Arc<File>,
    index: Index,
    /// Written, waiting for an fsync, in file order.
    pending: Vec<Pending>,
    /// Rows written; rows made durable (since the last open).
    written: u64,
    synced: u64,
    /// The file's length: durable rows and those waiting.
    len: u64,
    /// Set when an fsync failed (or a partial row could not be cut): no appends until
    /// [`OrderLog::reopen`].
    failed: Option<Failure>,
    /// How many times the file was re-opened: a row written before a re-open is never made
    /// durable by an fsync after it.
    opened: u64,
    /// This opening's name: positions are stable within it.
    generation: String,
}

/// A row written and not yet durable.
struct Pending {
    /// Its number among the rows written since the file was opened.
    row: u64,
    /// Its entry, to index once durable.
    entry: Entry,
    /// Where it ends in the file.
    end: u64,
}

impl Inner {
    fn known(&self, order_id: &str) -> bool {
        let id = ids::split_order_id(order_id);
        self.index.find_key(id).is_some() || self.pending.iter().any(|p| self.index.is(&p.entry, id))
    }

    /// The row number of an order written and not yet durable.
    fn pending_row(&self, order_id: &str) -> Option<u64> {
        let id = ids::split_order_id(order_id);
        self.pending.iter().find(|p| self.index.is(&p.entry, id)).map(|p| p.row)
    }
}

/// What [`OrderLog::pull`] hands a peer.
pub struct Pulled {
    /// The orders from the position asked for, in append order.
    pub orders: Vec<Order>,
    /// The position after them.
    pub next: usize,
    /// The log's generation these positions belong to.
    pub generation: String,
}

impl OrderLog {
    /// Opens (creating if needed) `orders.csv` in `dir` and indexes it (see the module doc
    /// for what it does with a torn tail, an older file and a corrupt one).
    pub fn open(dir: &Path) -> Result<OrderLog> {
        storage::ensure_dir(dir).at(dir)?;
        let path = dir.join("orders.csv");
        let (opened, _) = Opened::open(&path)?;
        let len = opened.index.end;
        Ok(OrderLog {
            syncer: Mutex::new(opened.syncer),
            inner: Mutex::new(Inner {
                file: opened.file,
                reader: Arc::new(opened.reader),
                index: opened.index,
                pending: Vec::new(),
                written: 0,
                synced: 0,
                len,
                failed: None,
                opened: 0,
                generation: ids::random_hex()?,
            }),
            path,
            #[cfg(test)]
            fail_next_sync: Default::default(),
        })
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The error of a write refused because the log failed.
    fn refused(&self, failure: &Failure) -> StorageError {
        let why = format!("{}; it takes no writes until it is re-opened from disk (retried every second)", failure.why);
        StorageError::Unwritable { path: self.path.clone(), source: io::Error::new(failure.kind, why) }
    }

    /// Why the log takes no appends, if it does not (until [`OrderLog::reopen`]).
    pub fn failed(&self) -> Option<String> {
        self.inner().failed.as_ref().map(|f| f.why.clone())
    }

    /// Marks the log failed: no appends until it is re-opened from disk.
    fn fail(&self, inner: &mut Inner, kind: io::ErrorKind, why: String) {
        if inner.failed.is_none() {
            log::error!("{}: {why}; taking no writes until it is re-opened from disk", self.path.display());
            inner.failed = Some(Failure { kind, why });
        }
    }

    /// Appends the orders not yet known and returns once they are durable (with those that
    /// other threads wrote meanwhile: one fsync for all); returns how many were new. An
    /// order that fails [`Order::check_stored`] (what any row of the file must be) refuses
    /// the whole batch (400) before anything is written; the node holds orders that enter
    /// the store anew to [`Order::check`] first. A write the disk does not take is
    /// [`StorageError::Unwritable`], with nothing of it left in the file.
    pub fn add(&self, orders: &[Order]) -> Result<usize> {
        let mut ats = Vec::with_capacity(orders.len());
        for o in orders {
            o.check_stored().map_err(Error::BadRequest)?;
            ats.push(ids::parse_timestamp(&o.at).map_err(Error::BadRequest)?);
        }
        let (fresh, upto, opened) = {
            let mut inner = self.inner();
            let mut seen = std::collections::HashSet::new();
            let fresh: Vec<(&Order, u64)> = orders
                .iter()
                .zip(ats)
                .filter(|(o, _)| !inner.known(&o.order_id) && seen.insert(o.order_id.as_str()))
                .collect();
            if !fresh.is_empty() {
                if let Some(failure) = &inner.failed {
                    return Err(self.refused(failure).into());
                }
                let mut w = csv::WriterBuilder::new().has_headers(false).from_writer(Vec::new());
                let mut ends = Vec::with_capacity(fresh.len());
                for (o, _) in &fresh {
                    encode(&mut w, o).at(&self.path)?;
                    w.flush().at(&self.path)?;
                    ends.push(w.get_ref().len() as u64);
                }
                let bytes = storage::csv_inner(w, &self.path)?;
                if let Err(e) = inner.file.write_all(&bytes) {
                    // Leave no partial row for the next append to follow.
                    let len = inner.len;
                    if let Err(cut) = inner.file.set_len(len) {
                        let why = format!("a partial row could not be cut ({cut}) after a write failed ({e})");
                        self.fail(&mut inner, e.kind(), why);
                    }
                    log::warn!("{}: a write failed ({e}); its rows were cut", self.path.display());
                    return Err(StorageError::Unwritable { path: self.path.clone(), source: e }.into());
                }
                let mut offset = inner.len;
                for ((o, at), end) in fresh.iter().zip(ends) {
                    let entry = inner.index.entry(&o.order_id, *at, offset);
                    inner.written += 1;
                    let (row, end) = (inner.written, inner.len + end);
                    inner.pending.push(Pending { row, entry, end });
                    offset = end;
                }
                inner.len = offset;
            }
            // Wait for our rows, and for those of our orders that another thread wrote a
            // moment ago: they count only once durable too. Orders already durable need
            // no fsync (and are answered even while the log is failed).
            let theirs = orders.iter().filter_map(|o| inner.pending_row(&o.order_id)).max().unwrap_or(0);
            let ours = if fresh.is_empty() { 0 } else { inner.written };
            (fresh.len(), ours.max(theirs), inner.opened)
        };
        self.sync_to(upto, opened)?;
        Ok(fresh)
    }

    /// Makes rows up to `upto` (of opening `opened`) durable: one fsync covers every row
    /// written before it. A failed fsync fails the log: it is never tried again.
    fn sync_to(&self, upto: u64, opened: u64) -> Result<(), StorageError> {
        let syncer = self.syncer.lock().unwrap_or_else(|e| e.into_inner());
        let target = {
            let inner = self.inner();
            if upto == 0 {
                return Ok(());
            }
            if inner.opened != opened {
                let why = "the log was re-opened from disk before this row was made durable";
                return Err(StorageError::Unwritable { path: self.path.clone(), source: io::Error::other(why) });
            }
            if inner.synced >= upto {
                return Ok(());
            }
            if let Some(failure) = &inner.failed {
                return Err(self.refused(failure));
            }
            inner.written
        };
        let result = syncer.sync_data();
        #[cfg(test)]
        let result = match self.fail_next_sync.swap(false, std::sync::atomic::Ordering::SeqCst) {
            true => Err(io::Error::other("injected fsync failure")),
            false => result,
        };
        let mut inner = self.inner();
        if let Err(e) = result {
            let source = io::Error::new(e.kind(), format!("fsync failed: {e}"));
            self.fail(&mut inner, e.kind(), format!("an fsync failed ({e})"));
            return Err(StorageError::Unwritable { path: self.path.clone(), source });
        }
        inner.synced = target;
        let done = inner.pending.partition_point(|p| p.row <= target);
        let durable: Vec<Pending> = inner.pending.drain(..done).collect();
        let first = inner.index.entries.len();
        for p in durable {
            inner.index.end = p.end;
            inner.index.push(p.entry);
        }
        inner.index.merge_from(first);
        Ok(())
    }

    /// Re-opens a failed log from disk: cuts the file back to the rows known durable (those
    /// indexed; what follows was never acknowledged, and after a failed fsync its state on
    /// disk is unknown whatever a read would show), fsyncs it, then loads it as at start
    /// (checksums checked, a corrupt file set aside and rewritten) and takes appends again
    /// under a new generation. Returns None when the log had not failed, else whether the
    /// file was corrupt (the caller takes its orders again from the peers and the journal).
    /// On an error the log stays failed (to be tried again).
    pub fn reopen(&self) -> Result<Option<bool>> {
        let mut syncer = self.syncer.lock().unwrap_or_else(|e| e.into_inner());
        let mut inner = self.inner();
        let Some(failure) = inner.failed.clone() else {
            return Ok(None);
        };
        let durable = inner.index.end;
        let file = OpenOptions::new().write(true).open(&self.path).at(&self.path)?;
        file.set_len(durable).at(&self.path)?;
        file.sync_all().at(&self.path)?;
        drop(file);
        let (opened, corrupt) = Opened::open(&self.path)?;
        *syncer = opened.syncer;
        inner.len = opened.index.end;
        inner.file = opened.file;
        inner.reader = Arc::new(opened.reader);
        inner.index = opened.index;
        inner.pending.clear();
        (inner.written, inner.synced) = (0, 0);
        inner.opened += 1;
        inner.generation = ids::random_hex()?;
        inner.failed = None;
        log::warn!(
            "{}: re-opened from disk after it failed ({}): {} orders, taking writes again",
            self.path.display(),
            failure.why,
            inner.index.entries.len()
        );
        Ok(Some(corrupt))
    }

    /// Reads durable rows back from `reader`, given where each is: contiguous rows in one
    /// read, and all of them parsed by one CSV reader (building a reader costs more than
    /// parsing a row). Every row's checksum is verified: a row that does not match is an
    /// error (and fails the log, so that it is re-opened and its file recovered), never data.
    fn read(&self, reader: &File, opened: u64, spans: &[(u64, u64)]) -> Result<Vec<Order>, StorageError> {
        let result = self.read_rows(reader, spans);
        if let Err(StorageError::Corrupt { reason, .. }) = &result {
            let mut inner = self.inner();
            if inner.opened == opened {
                self.fail(&mut inner, io::ErrorKind::InvalidData, format!("a read found a bad row ({reason})"));
            }
        }
        result
    }

    fn read_rows(&self, reader: &File, spans: &[(u64, u64)]) -> Result<Vec<Order>, StorageError> {
        let total: u64 = spans.iter().map(|(from, to)| to - from).sum();
        let mut bytes = vec![0; total as usize];
        // Where each wanted row starts in `bytes`. A span may hold, after its row, rows
        // that are not indexed (duplicates skipped at start): they are parsed and dropped.
        let mut starts = Vec::with_capacity(spans.len());
        let (mut i, mut filled) = (0, 0);
        while i < spans.len() {
            let mut j = i + 1;
            while j < spans.len() && spans[j].0 == spans[j - 1].1 {
                j += 1;
            }
            let len = (spans[j - 1].1 - spans[i].0) as usize;
            reader.read_exact_at(&mut bytes[filled..filled + len], spans[i].0).at(&self.path)?;
            starts.extend(spans[i..j].iter().map(|(from, _)| filled as u64 + from - spans[i].0));
            filled += len;
            i = j;
        }
        let mut csv = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(bytes.as_slice());
        let (mut record, mut orders) = (csv::ByteRecord::new(), Vec::with_capacity(spans.len()));
        let mut wanted = starts.into_iter().peekable();
        while let Some(&start) = wanted.peek() {
            if !csv.read_byte_record(&mut record).at(&self.path)? {
                break;
            }
            if record.position().map(|p| p.byte()) == Some(start) {
                let order = order_of(&record, Form::Checked)
                    .map_err(|e| StorageError::corrupt(&self.path, format!("the row at byte {}: {e}", start)))?;
                orders.push(order);
                wanted.next();
            }
        }
        if orders.len() != spans.len() {
            return Err(StorageError::corrupt(&self.path, "a row is not where the index says"));
        }
        Ok(orders)
    }

    /// One order, if known.
    pub fn get(&self, order_id: &str) -> Result<Option<Order>> {
        let (span, reader, opened) = {
            let inner = self.inner();
            match inner.index.find(order_id) {
                Some(pos) => (inner.index.span(pos as usize), Arc::clone(&inner.reader), inner.opened),
                None => return Ok(None),
            }
        };
        let order = self.read(&reader, opened, &[span])?.pop().expect("one span, one order");
        if order.order_id != order_id {
            let reason = format!("holds {:?} where {order_id:?} was", order.order_id);
            let mut inner = self.inner();
            if inner.opened == opened {
                self.fail(
                    &mut inner,
                    io::ErrorKind::InvalidData,
                    format!("a read found a row out of place ({reason})"),
                );
            }
            return Err(StorageError::corrupt(&self.path, reason).into());
        }
        Ok(Some(order))
    }

    /// Whether an order is known (durable here).
    pub fn contains(&self, order_id: &str) -> bool {
        self.inner().index.find(order_id).is_some()
    }

    /// Up to `limit` orders after `after` (or from the oldest), oldest first by time then id.
    pub fn page(&self, after: Option<&Cursor>, limit: usize) -> Result<Page> {
        let (spans, last_at, more, reader, opened) = {
            let inner = self.inner();
            let index = &inner.index;
            let start = index.start_after(after).min(index.by_time.len());
            let end = start.saturating_add(limit).min(index.by_time.len());
            let chosen = &index.by_time[start..end];
            let spans: Vec<(u64, u64)> = chosen.iter().map(|&p| index.span(p as usize)).collect();
            let last_at = chosen.last().map(|&p| index.entries[p as usize].at);
            (spans, last_at, end < index.by_time.len(), Arc::clone(&inner.reader), inner.opened)
        };
        let orders = self.read(&reader, opened, &spans)?;
        let next = match (more, last_at, orders.last()) {
            (true, Some(at), Some(last)) => Some(Cursor { at, order_id: last.order_id.clone() }),
            _ => None,
        };
        Ok(Page { orders, next })
    }

    /// Up to `max` orders in append order from position `from`, the position after them,
    /// and the generation those positions belong to (what a peer pulls).
    pub fn pull(&self, from: usize, max: usize) -> Result<Pulled> {
        let (spans, next, reader, opened, generation) = {
            let inner = self.inner();
            let index = &inner.index;
            let from = from.min(index.entries.len());
            let to = from.saturating_add(max).min(index.entries.len());
            let spans = (from..to).map(|p| index.span(p)).collect::<Vec<_>>();
            (spans, to, Arc::clone(&inner.reader), inner.opened, inner.generation.clone())
        };
        Ok(Pulled { orders: self.read(&reader, opened, &spans)?, next, generation })
    }

    /// The ids of up to `max` orders in append order from position `from` (from memory: no
    /// file is read), the position after them and the log's generation: what a peer
    /// compares with what it holds before it asks for whole orders.
    pub fn pull_ids(&self, from: usize, max: usize) -> (Vec<String>, usize, String) {
        let inner = self.inner();
        let index = &inner.index;
        let from = from.min(index.entries.len());
        let to = from.saturating_add(max).min(index.entries.len());
        ((from..to).map(|p| index.id(p)).collect(), to, inner.generation.clone())
    }

    /// How many of `ids`, from the first, this log holds durably (an order being written
    /// does not count: it may yet fail to be).
    pub fn holds_prefix<'a>(&self, ids: impl IntoIterator<Item = &'a str>) -> usize {
        let inner = self.inner();
        ids.into_iter().take_while(|id| inner.index.find(id).is_some()).count()
    }

    /// Up to `max` orders in append order from position `from`, and the position after them.
    pub fn since(&self, from: usize, max: usize) -> Result<(Vec<Order>, usize)> {
        let pulled = self.pull(from, max)?;
        Ok((pulled.orders, pulled.next))
    }

    /// How many orders.
    pub fn len(&self) -> usize {
        self.inner().index.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests;
