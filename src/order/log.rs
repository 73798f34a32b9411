//! The order log: every order known to this server, kept in its file `orders.csv` (header
//! `order_id,id,title,price,at`), to which orders are only ever appended, with a compact
//! index in memory (`super::index`: under 50 bytes an order, and the [`Cursor`] order that
//! pages follow).
//!
//! This file holds the I/O: loading the file into the index, group-committed appends, and
//! reads. Rows are read back with positioned reads (`read_at`, no seek, no lock held) and
//! parsed with the csv crate, since titles may hold quotes, commas and newlines.
//!
//! Architecture invariant: only the order process that owns the data directory writes its
//! `orders.csv`; an order is appended and fsynced before anything that depends on it is
//! acknowledged, and it is indexed (visible) only once durable. Bytes of a durable row
//! never change, which is what lets readers use them without the lock. A torn last row (a
//! crash mid-append) is cut at start: it was never acknowledged.

pub use super::index::{Cursor, Page};
use super::index::{Entry, Index};
use crate::error::{Error, Result};
use crate::ids;
use crate::money::Money;
use crate::storage::{self, At, StorageError};
use crate::wire::Order;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
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

impl Index {
    /// Reads `orders.csv` (whose header is already there) into an index. Returns it and,
    /// when the last row is torn (a quoted title cut after one of its newlines), where the
    /// file must be cut. Rows that cannot be indexed (a malformed id or time) are skipped
    /// with a warning; a row whose id is already indexed is a duplicate and skipped.
    fn load(path: &Path) -> Result<(Index, Option<u64>), StorageError> {
        let bad = |e: String| StorageError::corrupt(path, e);
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .buffer_capacity(LOAD_BUFFER)
            .from_reader(File::open(path).at(path)?);
        let mut record = csv::ByteRecord::new();
        if !reader.read_byte_record(&mut record).at(path)? || record.iter().ne(COLUMNS.iter().map(|c| c.as_bytes())) {
            return Err(bad(format!("the first line is not the header {:?}", String::from_utf8_lossy(HEADER))));
        }
        let mut index = Index::new(0);
        let (mut duplicates, mut skipped) = (0u64, 0u64);
        loop {
            let offset = reader.position().byte();
            if !reader.read_byte_record(&mut record).at(path)? {
                index.end = offset;
                break;
            }
            let fields =
                (record.len() == 5).then(|| (std::str::from_utf8(&record[0]), std::str::from_utf8(&record[4])));
            let (order_id, at) = match fields {
                Some((Ok(order_id), Ok(at))) => (order_id, at),
                _ => {
                    if !reader.read_byte_record(&mut record).at(path)? {
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
    /// `orders.csv`, for error messages.
    path: PathBuf,
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
        storage::ensure_dir(dir).at(dir)?;
        let path = dir.join("orders.csv");
        if path.exists() {
            let cut = storage::cut_torn_tail(&path).at(&path)?;
            if cut > 0 {
                log::warn!("cut a torn last line ({cut} bytes) off {}", path.display());
            }
        }
        let file = storage::open_append(&path, HEADER).at(&path)?;
        let (index, cut) = Index::load(&path)?;
        if let Some(at) = cut {
            let len = file.metadata().at(&path)?.len();
            log::warn!("cut a torn last row ({} bytes) off {}", len - at, path.display());
            file.set_len(at).at(&path)?;
            file.sync_all().at(&path)?;
        }
        let len = index.end;
        Ok(OrderLog {
            syncer: Mutex::new(file.try_clone().at(&path)?),
            reader: File::open(&path).at(&path)?,
            inner: Mutex::new(Inner { file, index, pending: Vec::new(), written: 0, synced: 0, len }),
            path,
        })
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends the orders not yet known and returns once they are durable (with those that
    /// other threads wrote meanwhile: one fsync for all); returns how many were new. An
    /// order that fails [`Order::check_stored`] (what any row of the file must be) refuses
    /// the whole batch (400) before anything is written; the node holds orders that enter
    /// the store anew to [`Order::check`] first.
    pub fn add(&self, orders: &[Order]) -> Result<usize> {
        let mut ats = Vec::with_capacity(orders.len());
        for o in orders {
            o.check_stored().map_err(Error::BadRequest)?;
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
                    })
                    .at(&self.path)?;
                    w.flush().at(&self.path)?;
                    ends.push(w.get_ref().len() as u64);
                }
                let bytes = storage::csv_inner(w, &self.path)?;
                if let Err(e) = inner.file.write_all(&bytes) {
                    // Leave no partial row for the next append to follow.
                    let len = inner.len;
                    let _ = inner.file.set_len(len);
                    return Err(StorageError::Io { path: self.path.clone(), source: e }.into());
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
    fn sync_to(&self, upto: u64) -> Result<(), StorageError> {
        let syncer = self.syncer.lock().unwrap_or_else(|e| e.into_inner());
        if self.inner().synced >= upto {
            return Ok(());
        }
        let target = self.inner().written;
        syncer.sync_data().at(&self.path)?;
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
    fn read(&self, spans: &[(u64, u64)]) -> Result<Vec<Order>, StorageError> {
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
            self.reader.read_exact_at(&mut bytes[filled..filled + len], spans[i].0).at(&self.path)?;
            starts.extend(spans[i..j].iter().map(|(from, _)| filled as u64 + from - spans[i].0));
            filled += len;
            i = j;
        }
        let mut reader = csv::ReaderBuilder::new().has_headers(false).from_reader(bytes.as_slice());
        let (mut record, mut orders) = (csv::StringRecord::new(), Vec::with_capacity(spans.len()));
        let mut wanted = starts.into_iter().peekable();
        while let Some(&start) = wanted.peek() {
            if !reader.read_record(&mut record).at(&self.path)? {
                break;
            }
            if record.position().map(|p| p.byte()) == Some(start) {
                orders.push(order_of(&record, &self.path)?);
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
        let span = {
            let inner = self.inner();
            match inner.index.find(order_id) {
                Some(pos) => inner.index.span(pos as usize),
                None => return Ok(None),
            }
        };
        let order = self.read(&[span])?.pop().expect("one span, one order");
        if order.order_id != order_id {
            let reason = format!("holds {:?} where {order_id:?} was", order.order_id);
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
fn order_of(record: &csv::StringRecord, path: &Path) -> Result<Order, StorageError> {
    let row: Row = record.deserialize(None).at(path)?;
    let price: Money = row.price.parse().map_err(|e: String| StorageError::corrupt(path, e))?;
    Ok(Order { order_id: row.order_id, id: row.id, title: row.title, price, at: row.at })
}

#[cfg(test)]
mod tests;
