//! The catalog's files: the write-ahead log `catalog.log` and the view `books.csv`.
//!
//! `catalog.log` (header `seq,id,title,topic,price,quantity,order_id,at`) has one row per
//! write: the book's whole state after write `seq`, and for a purchase made by an order
//! server its order id and time (the purchase journal that order servers reconcile from).
//! A write is durable once its row is appended and fsynced: that is the commit point.
//! `books.csv` (header `id,title,topic,price,quantity`) is then rewritten as the readable
//! view of the catalog; it is not fsynced per write.
//!
//! Loading overlays the log's rows, in order, on `books.csv` (seeded from the built-in
//! catalog on first start). Every row holds a whole book, so replaying a row that the view
//! already reflects changes nothing, and the result is the state after the last durable
//! write whatever the view held when the process died. The sequence number is the last
//! row's.
//!
//! Compaction (and a replica's snapshot install) replaces the log atomically with the
//! retained purchase rows followed by one row per book at the current sequence number,
//! then rewrites the view durably. Rows replay in file order, so the older purchase rows
//! are overwritten by the snapshot rows that follow them.
//!
//! Architecture invariant: only the catalog process that owns a data directory writes its
//! files: the log by fsynced appends or atomic replacement, the view by atomic replacement.

use super::state::Catalog;
use crate::error::{Error, Result};
use crate::money::Money;
use crate::storage;
use crate::wire::{Book, Order, Purchase};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The built-in catalog a new data directory is seeded with.
pub const SEED: &str = include_str!("../../data/books.csv");
/// Log rows after which the log is compacted.
pub const COMPACT_AFTER: usize = 20_000;
/// Purchase records kept across compactions, for order servers to reconcile from.
pub const KEEP_PURCHASES: usize = 10_000;

const LOG_HEADER: &[u8] = b"seq,id,title,topic,price,quantity,order_id,at\n";

/// One `books.csv` row; the price is text so that it stays exact.
#[derive(Serialize, Deserialize)]
struct BookRow {
    id: u32,
    title: String,
    topic: String,
    price: String,
    quantity: u32,
}

/// One `catalog.log` row.
#[derive(Serialize, Deserialize)]
struct LogRow {
    seq: u64,
    id: u32,
    title: String,
    topic: String,
    price: String,
    quantity: u32,
    order_id: String,
    at: String,
}

/// The purchase journal: recent purchases made for orders, by write and by order id.
#[derive(Debug, Default)]
pub struct Journal {
    records: VecDeque<Purchase>,
    by_order: HashMap<String, u64>,
}

impl Journal {
    fn push(&mut self, p: Purchase) {
        self.by_order.insert(p.order.order_id.clone(), p.seq);
        self.records.push_back(p);
        while self.records.len() > KEEP_PURCHASES {
            if let Some(old) = self.records.pop_front() {
                self.by_order.remove(&old.order.order_id);
            }
        }
    }

    /// Whether a copy was already taken for this order.
    pub fn contains(&self, order_id: &str) -> bool {
        self.by_order.contains_key(order_id)
    }

    /// Up to `max` purchases made after write `after`.
    pub fn after(&self, after: u64, max: usize) -> Vec<Purchase> {
        let start = self.records.partition_point(|p| p.seq <= after);
        self.records.iter().skip(start).take(max).cloned().collect()
    }
}

/// The catalog's data directory.
#[derive(Debug)]
pub struct Store {
    books: PathBuf,
    log_path: PathBuf,
    log: File,
    /// Rows in the log: decides when to compact.
    rows: usize,
    /// Recent purchases made for orders.
    pub journal: Journal,
}

impl Store {
    /// Opens (creating and seeding if needed) the data directory and loads the catalog.
    pub fn open(dir: &Path) -> Result<(Store, Catalog)> {
        let ctx = |path: &Path, e: Error| Error::Internal(format!("{}: {e}", path.display()));
        storage::ensure_dir(dir)
            .map_err(|e| Error::Internal(format!("cannot create data directory {}: {e}", dir.display())))?;
        let books = dir.join("books.csv");
        let log_path = dir.join("catalog.log");
        if !books.exists() {
            storage::replace_file(&books, SEED.as_bytes())?;
            log::info!("seeded {} with the built-in catalog", books.display());
        }
        let mut catalog =
            Catalog::new(parse(&fs::read(&books)?).map_err(|e| ctx(&books, e))?, 0).map_err(|e| ctx(&books, e))?;
        if log_path.exists() {
            let cut = storage::cut_torn_tail(&log_path)?;
            if cut > 0 {
                log::warn!(
                    "cut a torn last row ({cut} bytes) off {}: a write that was never acknowledged",
                    log_path.display()
                );
            }
        }
        let log = storage::open_append(&log_path, LOG_HEADER)?;
        let mut journal = Journal::default();
        let mut rows = 0;
        let text = fs::read(&log_path)?;
        for row in csv::Reader::from_reader(text.as_slice()).deserialize::<LogRow>() {
            let r = row.map_err(|e| ctx(&log_path, e.into()))?;
            let price: Money = r.price.parse().map_err(|e| ctx(&log_path, Error::Internal(e)))?;
            let book = Book { id: r.id, title: r.title, topic: r.topic, price, quantity: r.quantity };
            if !r.order_id.is_empty() {
                let order = Order { order_id: r.order_id, id: book.id, title: book.title.clone(), price, at: r.at };
                journal.push(Purchase { seq: r.seq, order });
            }
            catalog.restore(book, r.seq);
            rows += 1;
        }
        Ok((Store { books, log_path, log, rows, journal }, catalog))
    }

    /// Makes writes durable (group commit): appends each book's new state after write `seq`
    /// (and the order it was taken for) to the log, and fsyncs once for all of them.
    pub fn append(&mut self, writes: &[(u64, &Book, Option<&Order>)]) -> Result<()> {
        let mut w = csv::WriterBuilder::new().has_headers(false).from_writer(Vec::with_capacity(128 * writes.len()));
        for &(seq, book, order) in writes {
            w.serialize(log_row(seq, book, order))?;
        }
        let bytes = w.into_inner().map_err(|e| Error::Internal(format!("CSV error: {e}")))?;
        self.log.write_all(&bytes)?;
        self.log.sync_data()?;
        self.rows += writes.len();
        for &(seq, _, order) in writes {
            if let Some(o) = order {
                self.journal.push(Purchase { seq, order: o.clone() });
            }
        }
        Ok(())
    }

    /// Rewrites `books.csv` after a write (atomically; the log makes it durable), and
    /// compacts the log when it has grown long.
    pub fn after_write(&mut self, catalog: &Catalog) -> Result<()> {
        if self.rows >= COMPACT_AFTER {
            return self.checkpoint(catalog);
        }
        storage::replace_file_fast(&self.books, &render(&catalog.books(None))?)?;
        Ok(())
    }

    /// Replaces the log with the retained purchases and a snapshot of `catalog` (atomically
    /// and durably), then the view. Used by compaction and by a replica's catch-up.
    pub fn checkpoint(&mut self, catalog: &Catalog) -> Result<()> {
        let mut w = csv::WriterBuilder::new().has_headers(false).from_writer(LOG_HEADER.to_vec());
        for p in &self.journal.records {
            let book = Book {
                id: p.order.id,
                title: p.order.title.clone(),
                topic: String::new(),
                price: p.order.price,
                quantity: 0,
            };
            w.serialize(log_row(p.seq, &book, Some(&p.order)))?;
        }
        for book in catalog.books(None) {
            w.serialize(log_row(catalog.seq(), &book, None))?;
        }
        let bytes = w.into_inner().map_err(|e| Error::Internal(format!("CSV error: {e}")))?;
        storage::replace_file(&self.log_path, &bytes)?;
        self.log = storage::open_append(&self.log_path, LOG_HEADER)?;
        self.rows = self.journal.records.len() + catalog.books(None).len();
        storage::replace_file(&self.books, &render(&catalog.books(None))?)?;
        Ok(())
    }
}

fn log_row(seq: u64, b: &Book, order: Option<&Order>) -> LogRow {
    LogRow {
        seq,
        id: b.id,
        title: b.title.clone(),
        topic: b.topic.clone(),
        price: b.price.to_string(),
        quantity: b.quantity,
        order_id: order.map(|o| o.order_id.clone()).unwrap_or_default(),
        at: order.map(|o| o.at.clone()).unwrap_or_default(),
    }
}

/// Parses `books.csv`.
pub fn parse(text: &[u8]) -> Result<Vec<Book>> {
    let mut books = Vec::new();
    for row in csv::Reader::from_reader(text).deserialize::<BookRow>() {
        let r = row?;
        let price: Money = r.price.parse().map_err(Error::Internal)?;
        books.push(Book { id: r.id, title: r.title, topic: r.topic, price, quantity: r.quantity });
    }
    Ok(books)
}

/// Renders books as `books.csv`.
pub fn render(books: &[Book]) -> Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    for b in books {
        w.serialize(BookRow {
            id: b.id,
            title: b.title.clone(),
            topic: b.topic.clone(),
            price: b.price.to_string(),
            quantity: b.quantity,
        })?;
    }
    w.into_inner().map_err(|e| Error::Internal(format!("CSV error: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::state::Write as W;

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

    #[test]
    fn seed_round_trips() {
        let books = parse(SEED.as_bytes()).unwrap();
        assert_eq!(books.len(), 7);
        assert_eq!(books[0].title, "How to get a good grade in DOS in 40 minutes a day");
        assert_eq!(books[6].topic, "undergraduate school");
        assert_eq!(String::from_utf8(render(&books).unwrap()).unwrap(), SEED);
    }

    /// Writes, a crash at each point (torn row, stale view, lost view), compaction.
    #[test]
    fn the_log_is_the_truth() {
        let dir = temp("log");
        let (mut store, mut catalog) = Store::open(&dir).unwrap();
        for i in 0..5 {
            let mut book = catalog.decide(3, &W::Purchase).unwrap();
            book.title = format!("A \"quoted\", title {i}");
            let seq = catalog.commit(book.clone());
            let mut o = order(&format!("o-{i}"));
            o.title = book.title.clone();
            store.append(&[(seq, &book, Some(&o))]).unwrap();
            if i < 3 {
                store.after_write(&catalog).unwrap();
            }
        }
        // The view missed the last two writes (a crash before it was rewritten): the log wins.
        let (_, again) = Store::open(&dir).unwrap();
        assert_eq!(again, catalog);
        // A torn row is cut; a lost view is rebuilt from the seed and the log.
        let mut f = fs::OpenOptions::new().append(true).open(dir.join("catalog.log")).unwrap();
        f.write_all(b"6,3,torn").unwrap();
        fs::remove_file(dir.join("books.csv")).unwrap();
        let (mut store, again) = Store::open(&dir).unwrap();
        assert_eq!(again, catalog);
        assert_eq!(store.journal.after(3, 10).iter().map(|p| p.seq).collect::<Vec<_>>(), [4, 5]);
        assert!(store.journal.contains("o-0"));
        // Compaction keeps the state and the journal.
        store.checkpoint(&catalog).unwrap();
        let (store, again) = Store::open(&dir).unwrap();
        assert_eq!(again, catalog);
        assert_eq!(again.seq(), 5);
        assert_eq!(store.journal.after(0, 10).len(), 5);
        assert_eq!(parse(&fs::read(dir.join("books.csv")).unwrap()).unwrap(), catalog.books(None));
        fs::remove_dir_all(&dir).unwrap();
    }
}
