//! The catalog's files: `books.csv` (header `id,title,topic,price,quantity`) and
//! `catalog.seq`, the number of the last write in it.
//!
//! Architecture invariant: only the catalog process that owns a data directory writes its
//! files, and always through [`crate::storage::replace_file`]. `catalog.seq` is written
//! before `books.csv`; a crash between them leaves a sequence number one ahead of the
//! books, for a write that was never acknowledged nor pushed, which replicas see as a gap
//! and heal with a snapshot. The opposite (books ahead of their number) cannot happen.

use super::state::Catalog;
use crate::error::{Error, Result};
use crate::money::Money;
use crate::storage;
use crate::wire::Book;
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::{Path, PathBuf};

/// The built-in catalog a new data directory is seeded with.
pub const SEED: &str = include_str!("../../data/books.csv");

/// One CSV row; the price is text so that it stays exact.
#[derive(Serialize, Deserialize)]
struct Row {
    id: u32,
    title: String,
    topic: String,
    price: String,
    quantity: u32,
}

/// The catalog's data directory.
#[derive(Debug)]
pub struct Store {
    books: PathBuf,
    seq: PathBuf,
}

impl Store {
    /// Opens (creating and seeding if needed) the data directory and loads the catalog.
    pub fn open(dir: &Path) -> Result<(Store, Catalog)> {
        storage::ensure_dir(dir)
            .map_err(|e| Error::Internal(format!("cannot create data directory {}: {e}", dir.display())))?;
        let store = Store { books: dir.join("books.csv"), seq: dir.join("catalog.seq") };
        if !store.books.exists() {
            storage::replace_file(&store.books, SEED.as_bytes())?;
            log::info!("seeded {} with the built-in catalog", store.books.display());
        }
        let text = fs::read(&store.books)?;
        let books = parse(&text).map_err(|e| Error::Internal(format!("{}: {e}", store.books.display())))?;
        let seq = match fs::read_to_string(&store.seq) {
            Ok(s) => s.trim().parse().map_err(|_| Error::Internal(format!("{}: not a number", store.seq.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e.into()),
        };
        let catalog =
            Catalog::new(books, seq).map_err(|e| Error::Internal(format!("{}: {e}", store.books.display())))?;
        Ok((store, catalog))
    }

    /// Persists the catalog durably (sequence number first, then the books).
    pub fn save(&self, catalog: &Catalog) -> Result<()> {
        storage::replace_file(&self.seq, format!("{}\n", catalog.seq()).as_bytes())?;
        storage::replace_file(&self.books, &render(&catalog.books(None))?)?;
        Ok(())
    }
}

/// Parses `books.csv`.
pub fn parse(text: &[u8]) -> Result<Vec<Book>> {
    let mut books = Vec::new();
    for row in csv::Reader::from_reader(text).deserialize::<Row>() {
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
        w.serialize(Row {
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

    #[test]
    fn seed_round_trips() {
        let books = parse(SEED.as_bytes()).unwrap();
        assert_eq!(books.len(), 7);
        assert_eq!(books[0].title, "How to get a good grade in DOS in 40 minutes a day");
        assert_eq!(books[6].topic, "undergraduate school");
        assert_eq!(String::from_utf8(render(&books).unwrap()).unwrap(), SEED);
    }

    #[test]
    fn save_and_reopen() {
        let dir = std::env::temp_dir().join(format!("bazar-store-{}", std::process::id()));
        let (store, mut catalog) = Store::open(&dir).unwrap();
        let mut book = catalog.book(3).unwrap().clone();
        book.title = "A \"quoted\", title".into();
        book.price = Money::from_cents(1);
        catalog.commit(book);
        store.save(&catalog).unwrap();
        let (_, again) = Store::open(&dir).unwrap();
        assert_eq!(again, catalog);
        fs::remove_dir_all(&dir).unwrap();
    }
}
