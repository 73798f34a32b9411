//! The catalog's files: the write-ahead log `catalog.log` and the view `books.csv`.
//!
//! `catalog.log` (header `seq,id,title,topic,price,quantity,order_id,at,epoch`) is the
//! truth. Each write appends one row, the book's whole state after write `seq` (and for a
//! purchase made by an order server, its order id and time: the purchase journal that order
//! servers reconcile from; and the epoch of the primary that decided it), and fsyncs it:
//! that is the commit point. A log from before epochs (no `epoch` column) reads as epoch 0
//! and is rewritten in today's form when opened. Two kinds of row have id 0 (their `epoch`
//! is that of write `seq`):
//! - `checkpoint` (at `seq`, history in `topic`): `books.csv` holds the catalog as of
//!   `seq`; the rows that follow with a number up to `seq` are journal records only.
//! - `reset` (at `seq`, history in `topic`): forget every book; the rows at `seq` that
//!   follow are the whole catalog (an import or a replica's full copy), so the log alone
//!   is the catalog and `books.csv` is not read.
//!
//! `books.csv` (header `id,title,topic,price,quantity`) is the readable view, written
//! durably at checkpoints only, so a write costs one appended row whatever the size of the
//! catalog. Loading overlays the log's rows in order on the view. Every row holds a whole
//! book, so replaying a row that the view already reflects changes nothing, and the result
//! is the state after the last durable write whatever the view held when the process died.
//!
//! A checkpoint (once the log has grown by as many rows as there are books, and at least
//! [`COMPACT_AFTER`]) writes the view durably first and then replaces the log with a
//! checkpoint row and the retained journal: a crash between the two leaves a newer view
//! under the old log, which replays to the same state. An import or a full copy replaces
//! the log first (reset form) and then the view.
//!
//! The *history* is an id drawn when a catalog is created, imported or copied whole; a
//! replica continues from the primary's log only when their histories are the same.
//!
//! Architecture invariant: only the catalog process that owns a data directory writes its
//! files (it holds a lock on `catalog.lock`): the log by fsynced appends or atomic
//! replacement, the view by atomic replacement.

pub use super::recent::{History, Journal, HISTORY, KEEP_PURCHASES};
use super::state::Catalog;
use crate::money::Money;
use crate::storage::{self, At, StorageError};
use crate::wire::{Book, Order, Purchase, Replicate};
use serde::{Deserialize, Serialize};
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Results of the store: its errors are the files'.
type Result<T, E = StorageError> = std::result::Result<T, E>;

/// The built-in catalog a new data directory is seeded with.
pub const SEED: &str = include_str!("../../data/books.csv");
/// Fewest log rows after which the log is checkpointed (more in a large catalog: as many
/// as it has books, so that a checkpoint costs O(1) per write on average).
pub const COMPACT_AFTER: usize = 20_000;

const LOG_HEADER: &[u8] = b"seq,id,title,topic,price,quantity,order_id,at,epoch\n";
/// The header of logs written before epochs (their rows read as epoch 0).
const OLD_LOG_HEADER: &[u8] = b"seq,id,title,topic,price,quantity,order_id,at\n";
const CHECKPOINT: &str = "checkpoint";
const RESET: &str = "reset";

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
    /// The write's epoch (marker rows: the epoch of write `seq`); absent in old logs.
    #[serde(default)]
    epoch: u64,
}

/// The catalog's data directory.
#[derive(Debug)]
pub struct Store {
    books: PathBuf,
    log_path: PathBuf,
    log: File,
    /// Held for the life of the store: no second process writes these files.
    _lock: File,
    /// Write rows since the last checkpoint: decides when to checkpoint.
    rows: usize,
    /// This catalog's history id.
    history_id: String,
    /// Recent purchases made for orders.
    pub journal: Journal,
    /// Recent writes.
    pub history: History,
}

impl Store {
    /// Opens (creating and seeding if needed) the data directory and loads the catalog.
    pub fn open(dir: &Path) -> Result<(Store, Catalog)> {
        Store::open_with(dir, Books::Load)
    }

    /// Opens the data directory for an import: everything but the books (the catalog
    /// returned is empty, at the last write's number).
    pub fn open_for_import(dir: &Path) -> Result<(Store, Catalog)> {
        Store::open_with(dir, Books::Skip)
    }

    fn open_with(dir: &Path, want: Books) -> Result<(Store, Catalog)> {
        storage::ensure_dir(dir).at(dir)?;
        let lock = storage::lock_dir(dir, "catalog.lock", "catalog")?;
        let books = dir.join("books.csv");
        let log_path = dir.join("catalog.log");
        if !log_path.exists() && !books.exists() {
            let seed = parse(SEED.as_bytes()).and_then(|books| Catalog::new(books, 0));
            let seed = seed.expect("the built-in catalog is valid (a unit test reads it)");
            storage::replace_file(&books, SEED.as_bytes()).at(&books)?;
            write_log(&log_path, RESET, &seed, &new_history_id()?, 0, &Journal::default())?;
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
        let old_format = storage::starts_with(&log_path, OLD_LOG_HEADER).at(&log_path)?;
        let log = storage::open_append(&log_path, LOG_HEADER).at(&log_path)?;
        let loaded = load(&books, &log_path, want)?;
        let legacy = loaded.history_id.is_empty();
        let mut store = Store {
            books,
            log_path,
            log,
            _lock: lock,
            rows: loaded.rows,
            history_id: loaded.history_id,
            journal: loaded.journal,
            history: loaded.history,
        };
        if legacy && want == Books::Load {
            // A log from before histories: this catalog starts one (its replicas copy it).
            store.history_id = new_history_id()?;
        }
        if (legacy || old_format) && want == Books::Load {
            // Rewritten in today's form (a log from before epochs reads as epoch 0): no
            // row of another form is ever appended to it. An import rewrites it anyway.
            store.checkpoint(&loaded.catalog)?;
        }
        Ok((store, loaded.catalog))
    }

    /// Loads the catalog again from the files (after a copy that failed half-way).
    pub fn reload(&mut self) -> Result<Catalog> {
        let loaded = load(&self.books, &self.log_path, Books::Load)?;
        (self.journal, self.history, self.rows) = (loaded.journal, loaded.history, loaded.rows);
        self.history_id = loaded.history_id;
        Ok(loaded.catalog)
    }

    /// This catalog's history id.
    pub fn history_id(&self) -> &str {
        &self.history_id
    }

    /// The epoch of the last write.
    pub fn last_epoch(&self) -> u64 {
        self.history.last().1
    }

    /// Makes writes durable (group commit): appends each book's new state after write `seq`
    /// (and the order it was taken for) to the log, and fsyncs once for all of them.
    pub fn append(&mut self, writes: &[(&Replicate, Option<&Order>)]) -> Result<()> {
        let mut w = csv::WriterBuilder::new().has_headers(false).from_writer(Vec::with_capacity(128 * writes.len()));
        for &(r, order) in writes {
            w.serialize(LogRow { epoch: r.epoch, ..log_row(r.seq, &r.book, order) }).at(&self.log_path)?;
        }
        let bytes = storage::csv_inner(w, &self.log_path)?;
        self.log.write_all(&bytes).at(&self.log_path)?;
        self.log.sync_data().at(&self.log_path)?;
        self.rows += writes.len();
        for &(r, order) in writes {
            if let Some(o) = order {
                self.journal.push(Purchase { seq: r.seq, order: o.clone() });
            }
            self.history.push(r.clone());
        }
        Ok(())
    }

    /// Checkpoints when the log has grown by as many rows as the catalog has books (and at
    /// least [`COMPACT_AFTER`]): O(1) per write on average.
    pub fn after_write(&mut self, catalog: &Catalog) -> Result<()> {
        if self.rows >= COMPACT_AFTER.max(catalog.len()) {
            self.checkpoint(catalog)?;
        }
        Ok(())
    }

    /// Writes the view durably, then replaces the log with a checkpoint row and the
    /// retained purchase journal.
    pub fn checkpoint(&mut self, catalog: &Catalog) -> Result<()> {
        write_view(&self.books, catalog)?;
        let mut w = log_writer(&self.log_path)?;
        let epoch = self.last_epoch();
        w.serialize(marker(CHECKPOINT, catalog.seq(), &self.history_id, epoch)).at(&self.log_path)?;
        write_journal(&mut w, &self.journal, &self.log_path)?;
        finish_log(w, &self.log_path)?;
        self.log = storage::open_append(&self.log_path, LOG_HEADER).at(&self.log_path)?;
        self.rows = 0;
        log::info!("checkpoint at write {} ({} books)", catalog.seq(), catalog.len());
        Ok(())
    }

    /// Replaces the whole catalog (an import, or a replica's full copy of its primary),
    /// whose last write is of `epoch`: the log first, in reset form, then the view.
    pub fn replace(&mut self, catalog: &Catalog, history_id: &str, epoch: u64) -> Result<()> {
        write_log(&self.log_path, RESET, catalog, history_id, epoch, &self.journal)?;
        self.log = storage::open_append(&self.log_path, LOG_HEADER).at(&self.log_path)?;
        self.rows = 0;
        self.history_id = history_id.to_string();
        self.history = History::new(catalog.seq(), epoch);
        write_view(&self.books, catalog)?;
        Ok(())
    }
}

/// What loading a data directory found.
struct Loaded {
    catalog: Catalog,
    journal: Journal,
    history: History,
    history_id: String,
    rows: usize,
}

/// What to load: the whole catalog, or only what an import keeps (the journal, the last
/// write's number), so that an import never holds the old catalog beside the new one.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Books {
    Load,
    Skip,
}

fn load(books: &Path, log_path: &Path, want: Books) -> Result<Loaded> {
    let mut reader = csv::Reader::from_path(log_path).at(log_path)?;
    let mut rows = reader.deserialize::<LogRow>().peekable();
    let starts_with_reset = matches!(rows.peek(), Some(Ok(r)) if r.id == 0 && r.title == RESET);
    let mut catalog = Catalog::default();
    if want == Books::Load && !starts_with_reset && books.exists() {
        read_view(books, &mut catalog)?;
    }
    let (mut journal, mut history, mut history_id, mut count) =
        (Journal::default(), History::new(0, 0), String::new(), 0);
    let mut last_epoch = 0;
    // Rows numbered up to `base` are journal records only, but for the rows of a reset's
    // catalog (at `bulk`, without an order).
    let (mut base, mut bulk) = (0, None);
    for row in rows {
        let r = row.at(log_path)?;
        if r.id == 0 {
            match r.title.as_str() {
                CHECKPOINT => base = r.seq,
                RESET => {
                    catalog = Catalog::default();
                    (base, bulk) = (r.seq, Some(r.seq));
                }
                other => return Err(StorageError::corrupt(log_path, format!("unknown marker row {other:?}"))),
            }
            history_id = r.topic;
            history = History::new(r.seq, r.epoch);
            last_epoch = r.epoch;
            catalog.raise_seq(r.seq);
            continue;
        }
        let price: Money = r.price.parse().map_err(|e: String| StorageError::corrupt(log_path, e))?;
        let book = Book { id: r.id, title: r.title, topic: r.topic, price, quantity: r.quantity };
        let journaled = !r.order_id.is_empty();
        let order =
            journaled.then(|| Order { order_id: r.order_id, id: r.id, title: book.title.clone(), price, at: r.at });
        order.iter().for_each(|o| journal.push(Purchase { seq: r.seq, order: o.clone() }));
        let apply = r.seq > base || (bulk == Some(r.seq) && !journaled);
        if r.seq > base {
            count += 1;
            last_epoch = r.epoch;
            if want == Books::Load {
                history.push(Replicate { seq: r.seq, book: book.clone(), epoch: r.epoch, order });
            }
        }
        match (apply, want) {
            (true, Books::Load) => catalog.commit(book, r.seq),
            (true, Books::Skip) => catalog.raise_seq(r.seq),
            (false, _) => {}
        }
    }
    if want == Books::Skip {
        history = History::new(catalog.seq(), last_epoch);
    }
    Ok(Loaded { catalog, journal, history, history_id, rows: count })
}

/// Reads the view into `catalog`, a row at a time.
fn read_view(path: &Path, catalog: &mut Catalog) -> Result<()> {
    let mut reader = csv::Reader::from_path(path).at(path)?;
    for row in reader.deserialize::<BookRow>() {
        let r = row.at(path)?;
        let price: Money = r.price.parse().map_err(|e: String| StorageError::corrupt(path, e))?;
        catalog
            .insert_new(Book { id: r.id, title: r.title, topic: r.topic, price, quantity: r.quantity })
            .map_err(|e| StorageError::corrupt(path, e))?;
    }
    Ok(())
}

/// A new history id.
pub fn new_history_id() -> Result<String> {
    crate::ids::random_hex()
}

fn marker(kind: &str, seq: u64, history_id: &str, epoch: u64) -> LogRow {
    LogRow {
        seq,
        id: 0,
        title: kind.into(),
        topic: history_id.into(),
        price: "0.00".into(),
        quantity: 0,
        order_id: String::new(),
        at: String::new(),
        epoch,
    }
}

fn log_writer(path: &Path) -> Result<csv::Writer<BufWriter<File>>> {
    let tmp = path.with_extension("tmp");
    let mut f = BufWriter::with_capacity(1 << 20, File::create(&tmp).at(&tmp)?);
    f.write_all(LOG_HEADER).at(&tmp)?;
    Ok(csv::WriterBuilder::new().has_headers(false).from_writer(f))
}

fn finish_log(w: csv::Writer<BufWriter<File>>, path: &Path) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let f = storage::buffer_inner(storage::csv_inner(w, &tmp)?, &tmp)?;
    f.sync_all().at(&tmp)?;
    fs::rename(&tmp, path).at(path)?;
    storage::sync_dir(path).at(path)?;
    Ok(())
}

fn write_journal(w: &mut csv::Writer<BufWriter<File>>, journal: &Journal, path: &Path) -> Result<()> {
    for p in journal.records() {
        let book = Book {
            id: p.order.id,
            title: p.order.title.clone(),
            topic: String::new(),
            price: p.order.price,
            quantity: 0,
        };
        w.serialize(log_row(p.seq, &book, Some(&p.order))).at(path)?;
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
    journal: &Journal,
) -> Result<()> {
    let mut w = log_writer(path)?;
    w.serialize(marker(kind, catalog.seq(), history_id, epoch)).at(path)?;
    write_journal(&mut w, journal, path)?;
    for book in catalog.iter() {
        w.serialize(log_row(catalog.seq(), book, None)).at(path)?;
    }
    finish_log(w, path)
}

fn write_view(path: &Path, catalog: &Catalog) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut w = csv::Writer::from_writer(BufWriter::with_capacity(1 << 20, File::create(&tmp).at(&tmp)?));
    for b in catalog.iter() {
        w.serialize(book_row(b)).at(&tmp)?;
    }
    let f = storage::buffer_inner(storage::csv_inner(w, &tmp)?, &tmp)?;
    f.sync_all().at(&tmp)?;
    fs::rename(&tmp, path).at(path)?;
    storage::sync_dir(path).at(path)?;
    Ok(())
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
        epoch: 0,
    }
}

/// Parses `books.csv`.
pub fn parse(text: &[u8]) -> Result<Vec<Book>, String> {
    let mut books = Vec::new();
    for row in csv::Reader::from_reader(text).deserialize::<BookRow>() {
        let r = row.map_err(|e| e.to_string())?;
        let price: Money = r.price.parse()?;
        books.push(Book { id: r.id, title: r.title, topic: r.topic, price, quantity: r.quantity });
    }
    Ok(books)
}

/// Renders books as `books.csv`.
pub fn render<'a>(books: impl IntoIterator<Item = &'a Book>) -> csv::Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    for b in books {
        w.serialize(book_row(b))?;
    }
    w.into_inner().map_err(|e| e.into_error().into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::state::{Draft, Write as W};

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

    fn purchase(store: &mut Store, catalog: &mut Catalog, order_id: &str) -> Replicate {
        let w = Draft::new(catalog).write(3, &W::Purchase).unwrap();
        let o = Order { title: w.book.title.clone(), ..order(order_id) };
        store.append(&[(&w, Some(&o))]).unwrap();
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
        let (mut store, mut catalog) = Store::open(&dir).unwrap();
        let history = store.history_id().to_string();
        assert_eq!(history.len(), 12);
        for i in 0..5 {
            purchase(&mut store, &mut catalog, &format!("o-{i}"));
        }
        drop(store);
        let (_, again) = Store::open(&dir).unwrap();
        assert_eq!(again, catalog);
        // A torn row is cut; the view is not needed while the log starts with a reset.
        let mut f = fs::OpenOptions::new().append(true).open(dir.join("catalog.log")).unwrap();
        f.write_all(b"6,3,torn").unwrap();
        fs::remove_file(dir.join("books.csv")).unwrap();
        let (mut store, again) = Store::open(&dir).unwrap();
        assert_eq!(again, catalog);
        assert_eq!(store.journal.after(3, 10).0.iter().map(|p| p.seq).collect::<Vec<_>>(), [4, 5]);
        assert!(store.journal.contains("o-0"));
        assert_eq!(store.history.after(2, 10).unwrap().iter().map(|w| w.seq).collect::<Vec<_>>(), [3, 4, 5]);
        assert!(store.history.after(6, 10).is_none());
        // A checkpoint keeps the state, the journal and the history id; later writes replay
        // over the view.
        store.checkpoint(&catalog).unwrap();
        purchase(&mut store, &mut catalog, "o-5");
        drop(store);
        let (store, again) = Store::open(&dir).unwrap();
        assert_eq!(again, catalog);
        assert_eq!(again.seq(), 6);
        assert_eq!(store.history_id(), history);
        assert_eq!(store.journal.after(0, 10).0.len(), 6);
        assert_eq!(store.history.after(5, 10).unwrap().len(), 1);
        assert!(store.history.after(4, 10).is_none(), "writes before a restart's checkpoint are not kept");
        drop(store);
        fs::remove_dir_all(&dir).unwrap();
    }

    /// A crash between a checkpoint's view and its log: a newer view under the old log.
    #[test]
    fn a_newer_view_under_an_old_log_is_the_same_state() {
        let dir = temp("view");
        let (mut store, mut catalog) = Store::open(&dir).unwrap();
        store.checkpoint(&catalog).unwrap();
        for i in 0..3 {
            purchase(&mut store, &mut catalog, &format!("v-{i}"));
        }
        write_view(&dir.join("books.csv"), &catalog).unwrap();
        drop(store);
        let (_, again) = Store::open(&dir).unwrap();
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
        let (mut store, mut catalog) = Store::open(&dir).unwrap();
        assert_eq!((catalog.seq(), catalog.book(3).unwrap().quantity), (1, 4));
        assert_eq!(store.last_epoch(), 0);
        assert!(fs::read(dir.join("catalog.log")).unwrap().starts_with(LOG_HEADER), "rewritten");
        assert!(store.journal.contains("o-1"));
        let mut w = Draft::new(&catalog).write(3, &W::Purchase).unwrap();
        w.epoch = 4;
        store.append(&[(&w, None)]).unwrap();
        catalog.commit(w.book.clone(), w.seq);
        drop(store);
        let (mut store, again) = Store::open(&dir).unwrap();
        assert_eq!(again, catalog);
        assert_eq!((store.history.epoch_at(2), store.last_epoch()), (Some(4), 4));
        store.checkpoint(&catalog).unwrap();
        drop(store);
        let (mut store, _) = Store::open(&dir).unwrap();
        assert_eq!(store.history.epoch_at(2), Some(4), "a checkpoint keeps the last write's epoch");
        store.replace(&catalog, "fedcba987654", 6).unwrap();
        drop(store);
        let (store, _) = Store::open(&dir).unwrap();
        assert_eq!((store.history_id(), store.last_epoch()), ("fedcba987654", 6));
        drop(store);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn one_process_per_directory() {
        let dir = temp("lock");
        let (store, _) = Store::open(&dir).unwrap();
        assert!(Store::open(&dir).unwrap_err().to_string().contains("in use"));
        drop(store);
        assert!(Store::open(&dir).is_ok());
        fs::remove_dir_all(&dir).unwrap();
    }
}
