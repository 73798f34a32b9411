//! The order log: every order known to this server, kept in its file `orders.csv` (header
//! `order_id,id,title,price,at`), to which orders are only ever appended, with a compact
//! index in memory.
//!
//! A server holds every order ever taken (its own and its peers'), so the orders themselves
//! stay on disk and memory holds under 50 bytes an order: per order an `Entry` (where its
//! row starts, its time in milliseconds, its id as an interned prefix and a counter: 32
//! bytes), a slot in a hash table from id to position (4 bytes a slot, the keys live in the
//! entries) and a slot in the time-ordered index (4 bytes). Rows are read back with
//! positioned reads (`read_at`, no seek, no lock held) and parsed with the csv crate, since
//! titles may hold quotes, commas and newlines. A row's bytes end where the next entry's row
//! starts (or at the end of the durable rows), so no length is kept.
//!
//! Orders are listed oldest first by [`Cursor`] key: time, then id in the order of
//! [`crate::ids::cmp_order_ids`]. A page holds the orders whose key follows the cursor,
//! so paging visits every order that existed throughout exactly once, however many orders
//! (even late ones from a peer, older than the page) arrive meanwhile.
//!
//! Architecture invariant: only the order process that owns the data directory writes its
//! `orders.csv`; an order is appended and fsynced before anything that depends on it is
//! acknowledged, and it is indexed (visible) only once durable. Bytes of a durable row
//! never change, which is what lets readers use them without the lock. A torn last row (a
//! crash mid-append) is cut at start: it was never acknowledged.

use crate::error::{Error, Result};
use crate::ids;
use crate::money::Money;
use crate::storage;
use crate::wire::Order;
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::fs::File;
use std::hash::BuildHasher;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

const HEADER: &[u8] = b"order_id,id,title,price,at\n";
const COLUMNS: [&str; 5] = ["order_id", "id", "title", "price", "at"];
/// Bytes read from the file at once while loading.
const LOAD_BUFFER: usize = 1 << 20;

#[derive(Serialize, Deserialize)]
struct Row {
    order_id: String,
    id: u32,
    title: String,
    price: String,
    at: String,
}

/// A cursor of `GET /orders`: the key of the last order of a page, written
/// `<at>~<order_id>` (`2026-11-24T13:55:06.123Z~0a1b2c3d4e5f-17`, no character that needs
/// escaping in a URL). It names a place in the order of every order server, since they all
/// order the same set the same way, and the order it names need not exist there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor {
    /// The order's time, milliseconds since the epoch.
    pub at: u64,
    /// The order's id.
    pub order_id: String,
}

impl std::str::FromStr for Cursor {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Cursor, String> {
        let (at, order_id) = s.split_once('~').ok_or("a cursor is <time>~<order id>")?;
        let at = ids::parse_timestamp(at)?;
        ids::check_order_id(order_id)?;
        Ok(Cursor { at, order_id: order_id.to_string() })
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}~{}", ids::timestamp(self.at), self.order_id)
    }
}

/// One page of `GET /orders`.
#[derive(Debug, PartialEq, Eq)]
pub struct Page {
    /// The orders, oldest first.
    pub orders: Vec<Order>,
    /// The cursor of the next page, when more orders follow.
    pub next: Option<Cursor>,
}

/// An order's id as ordered and hashed: prefix, then counter (see [`ids::split_order_id`]).
type IdKey<'a> = (&'a str, Option<u64>);

/// Marks an [`Entry`] whose id is not `<server prefix>-<counter>`: its `counter` is the
/// index of the whole id in [`Index::others`].
const OTHER: u32 = u32::MAX;

/// One durable order in memory: 32 bytes.
#[derive(Clone, Copy, Debug)]
struct Entry {
    /// Where its row starts in `orders.csv`.
    offset: u64,
    /// Its time, milliseconds since the epoch.
    at: u64,
    /// Its id's counter; for an id of another shape, the index of the id in `others`.
    counter: u64,
    /// The index of its id's prefix in `prefixes`, or [`OTHER`].
    prefix: u32,
}

/// A set of positions in [`Index::entries`] found by id: open addressing with linear
/// probing, at most 3/4 full. A slot is 4 bytes because the keys are the entries' ids;
/// orders are never removed, so there are no tombstones.
struct Table {
    slots: Vec<u32>,
    len: usize,
}

const EMPTY: u32 = u32::MAX;

impl Table {
    fn new() -> Table {
        Table { slots: vec![EMPTY; 16], len: 0 }
    }

    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    /// The position whose id `is` says is the one sought, among those of hash `hash`.
    fn find(&self, hash: u64, is: impl Fn(u32) -> bool) -> Option<u32> {
        let mut i = hash as usize & self.mask();
        loop {
            match self.slots[i] {
                EMPTY => return None,
                p if is(p) => return Some(p),
                _ => i = (i + 1) & self.mask(),
            }
        }
    }

    /// Adds a position that is not in the table; `hash_of` gives any position's hash (to
    /// grow).
    fn insert(&mut self, hash: u64, pos: u32, hash_of: impl Fn(u32) -> u64) {
        if (self.len + 1) * 4 > self.slots.len() * 3 {
            let grown = vec![EMPTY; self.slots.len() * 2];
            let old = std::mem::replace(&mut self.slots, grown);
            for p in old.into_iter().filter(|&p| p != EMPTY) {
                self.place(hash_of(p), p);
            }
        }
        self.place(hash, pos);
        self.len += 1;
    }

    fn place(&mut self, hash: u64, pos: u32) {
        let mut i = hash as usize & self.mask();
        while self.slots[i] != EMPTY {
            i = (i + 1) & self.mask();
        }
        self.slots[i] = pos;
    }
}

/// Pushes onto a vector that grows by an eighth, not double: at a million orders, doubling
/// would leave up to 32 MB unused in the entries alone. (Large vectors grow by `mremap`,
/// so growing often copies nothing.)
fn push_lean<T>(v: &mut Vec<T>, x: T) {
    reserve_lean(v);
    v.push(x);
}

/// Makes room for one more item in `v`, growing it by an eighth when full.
fn reserve_lean<T>(v: &mut Vec<T>) {
    if v.len() == v.capacity() {
        v.reserve_exact(v.len() / 8 + 64);
    }
}

/// An entry's id, from the interned prefixes or the ids of other shapes.
fn id_of<'a>(prefixes: &'a [Box<str>], others: &'a [Box<str>], e: &Entry) -> IdKey<'a> {
    if e.prefix == OTHER {
        ids::split_order_id(&others[e.counter as usize])
    } else {
        (&prefixes[e.prefix as usize], Some(e.counter))
    }
}

/// The durable orders' index: no I/O, no lock of its own.
struct Index {
    /// Every durable order in the order appended (which is file order): peers pull by
    /// position.
    entries: Vec<Entry>,
    /// id -> position in `entries`.
    by_id: Table,
    /// Positions in `entries`, ordered by key (time, then id).
    by_time: Vec<u32>,
    /// The distinct prefixes of server-drawn ids (one per incarnation of a server).
    prefixes: Vec<Box<str>>,
    prefix_index: HashMap<Box<str>, u32>,
    /// Ids of any other shape, whole.
    others: Vec<Box<str>>,
    /// Where the durable rows end in the file.
    end: u64,
    hasher: RandomState,
}

impl Index {
    fn new(end: u64) -> Index {
        Index {
            entries: Vec::new(),
            by_id: Table::new(),
            by_time: Vec::new(),
            prefixes: Vec::new(),
            prefix_index: HashMap::new(),
            others: Vec::new(),
            end,
            hasher: RandomState::new(),
        }
    }

    fn id_of(&self, e: &Entry) -> IdKey<'_> {
        id_of(&self.prefixes, &self.others, e)
    }

    fn hash(&self, id: IdKey) -> u64 {
        self.hasher.hash_one(id)
    }

    fn find(&self, order_id: &str) -> Option<u32> {
        self.find_key(ids::split_order_id(order_id))
    }

    fn find_key(&self, id: IdKey) -> Option<u32> {
        self.by_id.find(self.hash(id), |p| self.is(&self.entries[p as usize], id))
    }

    /// Whether `e` has id `id`; compares the counter first, which rules most entries out
    /// without looking at a prefix.
    fn is(&self, e: &Entry, id: IdKey) -> bool {
        if e.prefix == OTHER {
            ids::split_order_id(&self.others[e.counter as usize]) == id
        } else {
            id.1 == Some(e.counter) && *self.prefixes[e.prefix as usize] == *id.0
        }
    }

    /// An entry for a new order's id and time at `offset`, its prefix interned.
    fn entry(&mut self, order_id: &str, at: u64, offset: u64) -> Entry {
        match ids::split_order_id(order_id) {
            (prefix, Some(counter)) if ids::is_server_prefix(prefix) => {
                let next = self.prefixes.len() as u32;
                let index = *self.prefix_index.entry(prefix.into()).or_insert(next);
                if index == next {
                    self.prefixes.push(prefix.into());
                }
                Entry { offset, at, counter, prefix: index }
            }
            _ => {
                self.others.push(order_id.into());
                Entry { offset, at, counter: (self.others.len() - 1) as u64, prefix: OTHER }
            }
        }
    }

    /// Orders entries by key: time, then id.
    fn cmp_key(&self, a: &Entry, at: u64, id: IdKey) -> Ordering {
        a.at.cmp(&at).then_with(|| self.id_of(a).cmp(&id))
    }

    fn cmp_positions(&self, a: u32, b: u32) -> Ordering {
        let b = &self.entries[b as usize];
        self.cmp_key(&self.entries[a as usize], b.at, self.id_of(b))
    }

    /// Adds a durable entry whose id is not in the index yet, leaving `by_time` to the
    /// caller ([`Index::merge_from`] or [`Index::sort`]).
    fn push(&mut self, entry: Entry) {
        let pos = u32::try_from(self.entries.len()).ok().filter(|&p| p != EMPTY).expect("fewer than 2^32 orders");
        push_lean(&mut self.entries, entry);
        let hash = self.hash(self.id_of(&entry));
        let Index { by_id, entries, prefixes, others, hasher, .. } = self;
        by_id.insert(hash, pos, |p| hasher.hash_one(id_of(prefixes, others, &entries[p as usize])));
    }

    /// Puts the entries from position `first` on into `by_time`: sorted, then merged from
    /// the back. Most are the newest so far and only land at the end; a peer's late ones go
    /// before, and a batch of them (a server catching up) costs one pass, not one shift of
    /// the index each.
    fn merge_from(&mut self, first: usize) {
        let mut fresh: Vec<u32> = (first as u32..self.entries.len() as u32).collect();
        fresh.sort_by(|&a, &b| self.cmp_positions(a, b));
        let mut by_time = std::mem::take(&mut self.by_time);
        let (mut old, mut new) = (by_time.len(), fresh.len());
        if by_time.capacity() < old + new {
            by_time.reserve_exact(new.max(old / 8 + 64));
        }
        by_time.resize(old + new, 0);
        while new > 0 {
            let write = old + new - 1;
            if old > 0 && self.cmp_positions(by_time[old - 1], fresh[new - 1]).is_gt() {
                by_time[write] = by_time[old - 1];
                old -= 1;
            } else {
                by_time[write] = fresh[new - 1];
                new -= 1;
            }
        }
        self.by_time = by_time;
    }

    /// Sorts `by_time` after loading.
    fn sort(&mut self) {
        let mut by_time: Vec<u32> = (0..self.entries.len() as u32).collect();
        // Stable merge sort: a log is mostly in time order already, runs make it fast.
        by_time.sort_by(|&a, &b| self.cmp_positions(a, b));
        self.by_time = by_time;
    }

    /// Where entry `pos`'s row is in the file: from its offset to the next entry's.
    fn span(&self, pos: usize) -> (u64, u64) {
        let end = self.entries.get(pos + 1).map_or(self.end, |e| e.offset);
        (self.entries[pos].offset, end)
    }

    /// Where the orders after `after` (or from the first) are in `by_time`.
    fn start_after(&self, after: Option<&Cursor>) -> usize {
        match after {
            None => 0,
            Some(c) => {
                let id = ids::split_order_id(&c.order_id);
                self.by_time.partition_point(|&p| self.cmp_key(&self.entries[p as usize], c.at, id).is_le())
            }
        }
    }

    /// Reads `orders.csv` (whose header is already there) into an index. Returns it and,
    /// when the last row is torn (a quoted title cut after one of its newlines), where the
    /// file must be cut. Rows that cannot be indexed (a malformed id or time) are skipped
    /// with a warning; a row whose id is already indexed is a duplicate and skipped.
    fn load(path: &Path) -> Result<(Index, Option<u64>)> {
        let bad = |e: String| Error::Internal(format!("{}: {e}", path.display()));
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .buffer_capacity(LOAD_BUFFER)
            .from_reader(File::open(path)?);
        let mut record = csv::ByteRecord::new();
        if !reader.read_byte_record(&mut record)? || record.iter().ne(COLUMNS.iter().map(|c| c.as_bytes())) {
            return Err(bad(format!("the first line is not the header {:?}", String::from_utf8_lossy(HEADER))));
        }
        let mut index = Index::new(0);
        let (mut duplicates, mut skipped) = (0u64, 0u64);
        loop {
            let offset = reader.position().byte();
            if !reader.read_byte_record(&mut record)? {
                index.end = offset;
                break;
            }
            let fields =
                (record.len() == 5).then(|| (std::str::from_utf8(&record[0]), std::str::from_utf8(&record[4])));
            let (order_id, at) = match fields {
                Some((Ok(order_id), Ok(at))) => (order_id, at),
                _ => {
                    if !reader.read_byte_record(&mut record)? {
                        // The last row, and not a whole one: torn by a crash mid-append.
                        index.end = offset;
                        index.sort();
                        return Ok((index, Some(offset)));
                    }
                    return Err(bad(format!(
                        "line {}: not a row of 5 fields",
                        record.position().map_or(0, |p| p.line())
                    )));
                }
            };
            match (ids::check_order_id(order_id), ids::parse_timestamp(at)) {
                (Ok(()), Ok(at)) => {
                    if index.find(order_id).is_some() {
                        duplicates += 1;
                        continue;
                    }
                    let entry = index.entry(order_id, at, offset);
                    index.push(entry);
                }
                (Err(e), _) | (_, Err(e)) => {
                    skipped += 1;
                    log::warn!("{}: skipping the row at byte {offset}: {e}", path.display());
                }
            }
        }
        if duplicates + skipped > 0 {
            log::info!("{}: {duplicates} duplicate rows, {skipped} rows skipped", path.display());
        }
        index.entries.shrink_to_fit();
        index.sort();
        Ok((index, None))
    }
}

/// The orders: their file and its index.
///
/// Appends are group-committed: concurrent [`OrderLog::add`]s write their rows, then share
/// one fsync; an order becomes visible (and counts as known) only once it is durable.
pub struct OrderLog {
    /// The index, the appending handle and the rows not yet fsynced. Held briefly, never
    /// across a read of the file.
    inner: Mutex<Inner>,
    /// Serialises fsyncs; holds a second handle of the file.
    syncer: Mutex<File>,
    /// For positioned reads of durable rows, which never change.
    reader: File,
}

struct Inner {
    /// Opened for appending.
    file: File,
    index: Index,
    /// Written, waiting for an fsync, in file order.
    pending: Vec<Pending>,
    /// Rows written; rows made durable.
    written: u64,
    synced: u64,
    /// The file's length: durable rows and those waiting.
    len: u64,
}

/// A row written and not yet durable.
struct Pending {
    /// Its number among the rows written since start.
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
}

impl OrderLog {
    /// Opens (creating if needed) `orders.csv` in `dir` and indexes it.
    pub fn open(dir: &Path) -> Result<OrderLog> {
        storage::ensure_dir(dir)
            .map_err(|e| Error::Internal(format!("cannot create data directory {}: {e}", dir.display())))?;
        let path = dir.join("orders.csv");
        if path.exists() {
            let cut = storage::cut_torn_tail(&path)?;
            if cut > 0 {
                log::warn!("cut a torn last line ({cut} bytes) off {}", path.display());
            }
        }
        let file = storage::open_append(&path, HEADER)?;
        let (index, cut) = Index::load(&path)?;
        if let Some(at) = cut {
            let len = file.metadata()?.len();
            log::warn!("cut a torn last row ({} bytes) off {}", len - at, path.display());
            file.set_len(at)?;
            file.sync_all()?;
        }
        let len = index.end;
        Ok(OrderLog {
            syncer: Mutex::new(file.try_clone()?),
            reader: File::open(&path)?,
            inner: Mutex::new(Inner { file, index, pending: Vec::new(), written: 0, synced: 0, len }),
        })
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends the orders not yet known and returns once they are durable (with those that
    /// other threads wrote meanwhile: one fsync for all); returns how many were new. An
    /// order that fails [`Order::check`] refuses the whole batch (400) before anything is
    /// written.
    pub fn add(&self, orders: &[Order]) -> Result<usize> {
        let mut ats = Vec::with_capacity(orders.len());
        for o in orders {
            o.check().map_err(Error::BadRequest)?;
            ats.push(ids::parse_timestamp(&o.at).map_err(Error::BadRequest)?);
        }
        let (fresh, upto) = {
            let mut inner = self.inner();
            let mut seen = std::collections::HashSet::new();
            let fresh: Vec<(&Order, u64)> = orders
                .iter()
                .zip(ats)
                .filter(|(o, _)| !inner.known(&o.order_id) && seen.insert(o.order_id.as_str()))
                .collect();
            if !fresh.is_empty() {
                let mut w = csv::WriterBuilder::new().has_headers(false).from_writer(Vec::new());
                let mut ends = Vec::with_capacity(fresh.len());
                for (o, _) in &fresh {
                    w.serialize(Row {
                        order_id: o.order_id.clone(),
                        id: o.id,
                        title: o.title.clone(),
                        price: o.price.to_string(),
                        at: o.at.clone(),
                    })?;
                    w.flush()?;
                    ends.push(w.get_ref().len() as u64);
                }
                let bytes = w.into_inner().map_err(|e| Error::Internal(format!("CSV error: {e}")))?;
                if let Err(e) = inner.file.write_all(&bytes) {
                    // Leave no partial row for the next append to follow.
                    let len = inner.len;
                    let _ = inner.file.set_len(len);
                    return Err(e.into());
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
            // Wait for everything written so far: an order of ours that another thread
            // wrote a moment ago counts only once it is durable too.
            (fresh.len(), inner.written)
        };
        self.sync_to(upto)?;
        Ok(fresh)
    }

    /// Makes rows up to `upto` durable: one fsync covers every row written before it.
    fn sync_to(&self, upto: u64) -> Result<()> {
        let syncer = self.syncer.lock().unwrap_or_else(|e| e.into_inner());
        if self.inner().synced >= upto {
            return Ok(());
        }
        let target = self.inner().written;
        syncer.sync_data()?;
        let mut inner = self.inner();
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

    /// Reads durable rows back, given where each is: contiguous rows in one read, and all
    /// of them parsed by one CSV reader (building a reader costs more than parsing a row).
    fn read(&self, spans: &[(u64, u64)]) -> Result<Vec<Order>> {
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
            self.reader.read_exact_at(&mut bytes[filled..filled + len], spans[i].0)?;
            starts.extend(spans[i..j].iter().map(|(from, _)| filled as u64 + from - spans[i].0));
            filled += len;
            i = j;
        }
        let mut reader = csv::ReaderBuilder::new().has_headers(false).from_reader(bytes.as_slice());
        let (mut record, mut orders) = (csv::StringRecord::new(), Vec::with_capacity(spans.len()));
        let mut wanted = starts.into_iter().peekable();
        while let Some(&start) = wanted.peek() {
            if !reader.read_record(&mut record)? {
                break;
            }
            if record.position().map(|p| p.byte()) == Some(start) {
                orders.push(order_of(&record)?);
                wanted.next();
            }
        }
        if orders.len() != spans.len() {
            return Err(Error::Internal("orders.csv: a row is not where the index says".into()));
        }
        Ok(orders)
    }

    /// One order, if known.
    pub fn get(&self, order_id: &str) -> Result<Option<Order>> {
        let span = {
            let inner = self.inner();
            match inner.index.find(order_id) {
                Some(pos) => inner.index.span(pos as usize),
                None => return Ok(None),
            }
        };
        let order = self.read(&[span])?.pop().expect("one span, one order");
        if order.order_id != order_id {
            return Err(Error::Internal(format!("orders.csv holds {:?} where {order_id:?} was", order.order_id)));
        }
        Ok(Some(order))
    }

    /// Whether an order is known (durable here).
    pub fn contains(&self, order_id: &str) -> bool {
        self.inner().index.find(order_id).is_some()
    }

    /// Up to `limit` orders after `after` (or from the oldest), oldest first by time then id.
    pub fn page(&self, after: Option<&Cursor>, limit: usize) -> Result<Page> {
        let (spans, last_at, more) = {
            let inner = self.inner();
            let index = &inner.index;
            let start = index.start_after(after).min(index.by_time.len());
            let end = start.saturating_add(limit).min(index.by_time.len());
            let chosen = &index.by_time[start..end];
            let spans: Vec<(u64, u64)> = chosen.iter().map(|&p| index.span(p as usize)).collect();
            let last_at = chosen.last().map(|&p| index.entries[p as usize].at);
            (spans, last_at, end < index.by_time.len())
        };
        let orders = self.read(&spans)?;
        let next = match (more, last_at, orders.last()) {
            (true, Some(at), Some(last)) => Some(Cursor { at, order_id: last.order_id.clone() }),
            _ => None,
        };
        Ok(Page { orders, next })
    }

    /// Up to `max` orders in append order from position `from`, and the position after them.
    pub fn since(&self, from: usize, max: usize) -> Result<(Vec<Order>, usize)> {
        let (spans, next) = {
            let inner = self.inner();
            let index = &inner.index;
            let from = from.min(index.entries.len());
            let to = from.saturating_add(max).min(index.entries.len());
            ((from..to).map(|p| index.span(p)).collect::<Vec<_>>(), to)
        };
        Ok((self.read(&spans)?, next))
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

/// A row of `orders.csv` as an order.
fn order_of(record: &csv::StringRecord) -> Result<Order> {
    let row: Row = record.deserialize(None)?;
    let price: Money = row.price.parse().map_err(|e: String| Error::Internal(format!("orders.csv: {e}")))?;
    Ok(Order { order_id: row.order_id, id: row.id, title: row.title, price, at: row.at })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{timestamp, timestamp_now};
    use std::collections::{HashMap, HashSet};

    /// A fresh data directory, removed on drop.
    struct Dir(std::path::PathBuf);

    impl Dir {
        fn new(tag: &str) -> Dir {
            let dir = std::env::temp_dir().join(format!("bazar-orderlog-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            Dir(dir)
        }

        fn csv(&self) -> std::path::PathBuf {
            self.0.join("orders.csv")
        }

        fn append(&self, bytes: &[u8]) {
            std::fs::OpenOptions::new().append(true).open(self.csv()).unwrap().write_all(bytes).unwrap();
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn order(id: &str, at: &str) -> Order {
        Order {
            order_id: id.into(),
            id: 1,
            title: "A, \"quoted\" title".into(),
            price: Money::from_cents(1999),
            at: at.into(),
        }
    }

    fn at(ms: u64) -> String {
        timestamp(1_795_874_106_000 + ms)
    }

    /// Every order, page by page, with `limit` a page.
    fn all(log: &OrderLog, limit: usize) -> Vec<Order> {
        let (mut out, mut after) = (Vec::new(), None);
        loop {
            let page = log.page(after.as_ref(), limit).unwrap();
            assert!(page.orders.len() <= limit);
            out.extend(page.orders);
            match page.next {
                None => return out,
                next => after = next,
            }
        }
    }

    fn key(o: &Order) -> (u64, (&str, Option<u64>)) {
        (ids::parse_timestamp(&o.at).unwrap(), ids::split_order_id(&o.order_id))
    }

    #[test]
    fn orders_are_checked() {
        assert!(order("ab12-1", &timestamp_now()).check().is_ok());
        assert!(order("x y", &timestamp_now()).check().is_err());
        assert!(order("ab12-1", "2026-13-45T99:99:99.999Z").check().is_err());
        let dir = Dir::new("checked");
        let log = OrderLog::open(&dir.0).unwrap();
        let bad = [order("a-1", &at(0)), order("b-1", "2026-02-30T00:00:00.000Z")];
        assert_eq!(log.add(&bad).map_err(|e| e.status()), Err(400));
        assert!(log.is_empty(), "nothing of a refused batch is logged");
    }

    #[test]
    fn cursors_parse_strictly() {
        let ok = |ms: u64, id: &str| Ok(Cursor { at: 1_795_874_106_000 + ms, order_id: id.to_string() });
        let cases: Vec<(&str, std::result::Result<Cursor, ()>)> = vec![
            ("2026-11-28T13:55:06.000Z~0a1b2c3d4e5f-17", ok(0, "0a1b2c3d4e5f-17")),
            ("2026-11-28T13:55:06.123Z~x", ok(123, "x")),
            ("2026-11-28T13:55:06.123Z~a-b-3", ok(123, "a-b-3")),
            ("2026-11-28T13:55:06.123Z", Err(())),
            ("2026-11-28T13:55:06.123Z~", Err(())),
            ("2026-11-28T13:55:06.123Z~a b", Err(())),
            ("2026-11-28T13:55:06.123Z~a~b", Err(())),
            ("~0a1b2c3d4e5f-17", Err(())),
            ("2026-13-45T99:99:99.999Z~a-1", Err(())),
            ("1795874106000~a-1", Err(())),
            ("", Err(())),
        ];
        for (text, want) in cases {
            let got = text.parse::<Cursor>().map_err(|_| ());
            assert_eq!(got, want, "{text:?}");
            if let Ok(c) = got {
                assert_eq!(c.to_string(), text, "a cursor prints as it parses");
            }
        }
    }

    /// Ids of every shape are found, read back field for field (titles with quotes, commas
    /// and newlines), listed in key order, and all of it again after a restart.
    #[test]
    fn finds_lists_and_reloads() {
        let dir = Dir::new("index");
        let log = OrderLog::open(&dir.0).unwrap();
        let mut orders = vec![
            order("0a1b2c3d4e5f-10", &at(5)),
            order("0a1b2c3d4e5f-9", &at(5)),
            order("ffffffffffff-1", &at(1)),
            order("x", &at(5)),
            order("ab-07", &at(5)),
            order("0A1B2C3D4E5F-1", &at(5)),
            order("a-b-3", &at(0)),
        ];
        orders[1].title = "Line one\nline \"two\", and three\r\n".into();
        orders[3].title = String::new();
        orders[4].id = 7;
        orders[4].price = Money::from_cents(5);
        // Enough to grow the id table and the vectors a few times.
        let many: Vec<Order> = (1..=3000).map(|i| order(&format!("00000000000{}-{i}", i % 3), &at(i % 17))).collect();
        assert_eq!(log.add(&orders).unwrap(), orders.len());
        assert_eq!(log.add(&many).unwrap(), many.len());
        let everything: Vec<Order> = orders.iter().chain(&many).cloned().collect();
        let check = |log: &OrderLog| {
            assert_eq!(log.len(), everything.len());
            for o in &everything {
                assert_eq!(log.get(&o.order_id).unwrap().as_ref(), Some(o));
                assert!(log.contains(&o.order_id));
            }
            for missing in ["0a1b2c3d4e5f-11", "0a1b2c3d4e5f-010", "ab-7", "y", "a-b"] {
                assert_eq!(log.get(missing).unwrap(), None, "{missing}");
                assert!(!log.contains(missing));
            }
            let (head, next) = log.since(0, 7).unwrap();
            assert_eq!((head.as_slice(), next), (&everything[..7], 7));
            let (tail, next) = log.since(3000, 100).unwrap();
            assert_eq!((tail.as_slice(), next), (&everything[3000..], everything.len()));
            assert_eq!(log.since(10_000, 5).unwrap(), (vec![], everything.len()));
        };
        check(&log);
        let listed = all(&log, 1000);
        let mut sorted = everything.clone();
        sorted.sort_by(|a, b| key(a).cmp(&key(b)));
        assert_eq!(listed, sorted);
        // In one millisecond: prefix as text (a server's own or any other), then counter.
        let same_ms: Vec<&str> = listed.iter().take_while(|o| o.at <= at(5)).map(|o| o.order_id.as_str()).collect();
        let hand: Vec<&str> = same_ms.into_iter().filter(|id| orders.iter().any(|o| o.order_id == *id)).collect();
        assert_eq!(
            hand,
            ["a-b-3", "ffffffffffff-1", "0A1B2C3D4E5F-1", "0a1b2c3d4e5f-9", "0a1b2c3d4e5f-10", "ab-07", "x"]
        );
        drop(log);
        let log = OrderLog::open(&dir.0).unwrap();
        check(&log);
        assert_eq!(all(&log, 7), listed);
    }

    /// A batch of a peer's orders, older than many already held (a server catching up), is
    /// merged into the time order in one pass.
    #[test]
    fn a_late_batch_is_merged_in_time_order() {
        let dir = Dir::new("late");
        let log = OrderLog::open(&dir.0).unwrap();
        let ours: Vec<Order> = (1..=1000).map(|i| order(&format!("aaaaaaaaaaaa-{i}"), &at(i * 2))).collect();
        log.add(&ours).unwrap();
        let late: Vec<Order> =
            (1..=500).rev().map(|i| order(&format!("bbbbbbbbbbbb-{i}"), &at(i * 5 % 2100))).collect();
        log.add(&late).unwrap();
        let mut want: Vec<Order> = ours.iter().chain(&late).cloned().collect();
        want.sort_by(|a, b| key(a).cmp(&key(b)));
        assert_eq!(all(&log, 333), want);
        assert_eq!(log.since(1000, 10).unwrap().0, late[..10]);
    }

    /// Concurrent appends share fsyncs, and every order is durable and visible when its
    /// add returns.
    #[test]
    fn concurrent_appends_are_durable_when_they_return() {
        let dir = Dir::new("group");
        let log = OrderLog::open(&dir.0).unwrap();
        std::thread::scope(|s| {
            for t in 0..8 {
                let log = &log;
                s.spawn(move || {
                    for i in 0..50 {
                        let o = order(&format!("t{t}-{i}"), &timestamp_now());
                        assert_eq!(log.add(std::slice::from_ref(&o)).unwrap(), 1);
                        assert_eq!(log.get(&o.order_id).unwrap(), Some(o));
                    }
                });
            }
        });
        assert_eq!(log.len(), 400);
        assert_eq!(log.since(0, 1000).unwrap().0.len(), 400);
        drop(log);
        assert_eq!(OrderLog::open(&dir.0).unwrap().len(), 400);
    }

    #[test]
    fn dedups_sorts_and_cuts_a_torn_tail() {
        let dir = Dir::new("torn");
        let log = OrderLog::open(&dir.0).unwrap();
        let (a, b) = (order("a-1", "2026-01-01T00:00:00.002Z"), order("b-1", "2026-01-01T00:00:00.001Z"));
        assert_eq!(log.add(&[a.clone(), b.clone(), a.clone()]).unwrap(), 2);
        assert_eq!(log.add(std::slice::from_ref(&a)).unwrap(), 0);
        assert_eq!(all(&log, 10), [b.clone(), a.clone()]);
        assert_eq!(log.since(0, 1).unwrap(), (vec![a.clone()], 1));
        assert_eq!(log.since(1, 10).unwrap(), (vec![b.clone()], 2));
        drop(log);
        let whole = std::fs::read(dir.csv()).unwrap();
        // A row cut without its newline.
        dir.append(b"c-1,1,torn");
        let log = OrderLog::open(&dir.0).unwrap();
        assert_eq!(all(&log, 10), [b.clone(), a.clone()]);
        drop(log);
        assert_eq!(std::fs::read(dir.csv()).unwrap(), whole);
        // A row cut inside a quoted title, right after one of its newlines.
        dir.append(b"c-1,1,\"two\nlines");
        let log = OrderLog::open(&dir.0).unwrap();
        assert_eq!(std::fs::read(dir.csv()).unwrap(), whole);
        let c = Order { title: "two\nlines, \"quoted\"".into(), ..order("c-1", "2026-01-01T00:00:00.000Z") };
        assert_eq!(log.add(std::slice::from_ref(&c)).unwrap(), 1);
        assert_eq!(all(&log, 1), [c.clone(), b.clone(), a.clone()]);
        drop(log);
        // A duplicate row (two servers adopting the same order) and a row that cannot be
        // indexed are skipped; their neighbours read back whole.
        dir.append(b"a-1,1,dup,1.00,2026-01-01T00:00:00.002Z\nd-1,1,x,1.00,2026-02-30T00:00:00.000Z\n");
        let log = OrderLog::open(&dir.0).unwrap();
        assert_eq!(log.len(), 3);
        let d = order("d-2", "2026-01-01T00:00:00.003Z");
        log.add(std::slice::from_ref(&d)).unwrap();
        assert_eq!(all(&log, 2), [c.clone(), b.clone(), a.clone(), d.clone()]);
        assert_eq!(log.get("c-1").unwrap(), Some(c));
        assert_eq!(log.get("d-1").unwrap(), None);
        drop(log);
        assert_eq!(OrderLog::open(&dir.0).unwrap().len(), 4);
    }

    #[test]
    fn a_file_without_the_header_is_refused() {
        let dir = Dir::new("header");
        std::fs::create_dir_all(&dir.0).unwrap();
        std::fs::write(dir.csv(), "id,order_id\n").unwrap();
        assert!(OrderLog::open(&dir.0).is_err());
    }

    /// Paging while orders are added (newer ones, and a peer's late ones older than the
    /// pages already read) visits every order that existed before it started exactly once,
    /// in key order.
    #[test]
    fn paging_sees_each_order_once_while_orders_arrive() {
        let dir = Dir::new("paging");
        let log = OrderLog::open(&dir.0).unwrap();
        let before: Vec<Order> = (0..600).map(|i| order(&format!("0a0a0a0a0a0a-{i}"), &at(i / 3 * 2))).collect();
        log.add(&before).unwrap();
        let done = std::sync::atomic::AtomicBool::new(false);
        let seen = std::thread::scope(|s| {
            for t in 0..3u64 {
                let (log, done) = (&log, &done);
                s.spawn(move || {
                    let mut i = 0;
                    while !done.load(std::sync::atomic::Ordering::SeqCst) {
                        // Thread 0 adds new orders; the others late ones, older than most,
                        // some in the very millisecond of an existing order.
                        let ms = if t == 0 { 10_000 + i } else { (i * 7 + t) % 400 };
                        let o = order(&format!("{t:012}-{i}"), &at(ms));
                        log.add(std::slice::from_ref(&o)).unwrap();
                        i += 1;
                    }
                });
            }
            let mut seen = Vec::new();
            let mut after = None;
            loop {
                let page = log.page(after.as_ref(), 7).unwrap();
                seen.extend(page.orders);
                std::thread::sleep(std::time::Duration::from_micros(200));
                match page.next {
                    None => break,
                    next => after = next,
                }
            }
            done.store(true, std::sync::atomic::Ordering::SeqCst);
            seen
        });
        assert!(log.len() > before.len() + 50, "orders were added while paging: {}", log.len());
        let mut count: HashMap<&str, usize> = HashMap::new();
        for o in &seen {
            *count.entry(o.order_id.as_str()).or_default() += 1;
        }
        assert!(count.values().all(|&n| n == 1), "an order was seen twice");
        for o in &before {
            assert_eq!(count.get(o.order_id.as_str()), Some(&1), "{} missed", o.order_id);
        }
        assert!(seen.windows(2).all(|w| key(&w[0]) < key(&w[1])), "pages are in key order");
        let ids: HashSet<&str> = seen.iter().map(|o| o.order_id.as_str()).collect();
        assert_eq!(ids.len(), seen.len());
    }
}
