//! The catalog's state and its operations, free of I/O.
//!
//! A [`Catalog`] is the books plus the sequence number of the last write applied. The
//! primary decides a write with [`Catalog::decide`] (validation, stock checks) and
//! commits the resulting book with [`Catalog::commit`], which numbers it. A replica
//! applies the primary's numbered writes with [`Catalog::apply`], strictly in order, and
//! installs whole snapshots with [`Catalog::install`] when it fell behind.
//!
//! Invariant: every state with sequence number `n` is the same on every node: the
//! primary's state after its n-th write.

use crate::error::{Error, Result};
use crate::wire::{Book, BookUpdate, Replicate, Snapshot};
use std::collections::BTreeMap;

/// A write the primary decides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Write {
    /// Change price and/or stock.
    Update(BookUpdate),
    /// Take one copy.
    Purchase,
}

/// What a replica did with a pushed write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// It was the next write: applied.
    Applied,
    /// Already had it: nothing to do.
    Duplicate,
    /// Writes are missing before it: needs a snapshot.
    Gap,
}

/// The books and the number of the last write applied to them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Catalog {
    books: BTreeMap<u32, Book>,
    seq: u64,
}

impl Catalog {
    /// A catalog of these books at sequence number `seq`.
    pub fn new(books: Vec<Book>, seq: u64) -> Result<Catalog> {
        let mut map = BTreeMap::new();
        for b in books {
            if b.id == 0 {
                return Err(Error::BadRequest("book id 0 is not allowed".into()));
            }
            if let Some(old) = map.insert(b.id, b) {
                return Err(Error::BadRequest(format!("book id {} appears twice", old.id)));
            }
        }
        Ok(Catalog { books: map, seq })
    }

    /// Sequence number of the last write applied.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// One book.
    pub fn book(&self, id: u32) -> Result<&Book> {
        self.books.get(&id).ok_or_else(|| Error::NotFound(format!("no book with id {id}")))
    }

    /// Books whose topic matches `topic` case-insensitively, or all books.
    pub fn books(&self, topic: Option<&str>) -> Vec<Book> {
        let topic = topic.map(|t| t.trim().to_lowercase());
        self.books.values().filter(|b| topic.as_deref().is_none_or(|t| b.topic.to_lowercase() == t)).cloned().collect()
    }

    /// The book as `write` would leave it, or why the write is refused.
    pub fn decide(&self, id: u32, write: &Write) -> Result<Book> {
        let mut book = self.book(id)?.clone();
        match write {
            Write::Purchase => {
                if book.quantity == 0 {
                    return Err(Error::Conflict(format!("book {id} ({}) is out of stock", book.title)));
                }
                book.quantity -= 1;
            }
            Write::Update(u) => {
                if u.price.is_none() && u.quantity.is_none() && u.quantity_delta.is_none() {
                    return Err(Error::BadRequest("nothing to update: give price, quantity or quantity_delta".into()));
                }
                if u.quantity.is_some() && u.quantity_delta.is_some() {
                    return Err(Error::BadRequest("give quantity or quantity_delta, not both".into()));
                }
                if let Some(p) = u.price {
                    book.price = p;
                }
                if let Some(q) = u.quantity {
                    book.quantity = q;
                }
                if let Some(d) = u.quantity_delta {
                    let q = i64::from(book.quantity)
                        .checked_add(d)
                        .ok_or_else(|| Error::BadRequest(format!("quantity_delta {d} is too large")))?;
                    if q < 0 {
                        return Err(Error::BadRequest(format!(
                            "quantity_delta {d} would make the stock of book {id} negative ({q})"
                        )));
                    }
                    book.quantity =
                        u32::try_from(q).map_err(|_| Error::BadRequest(format!("quantity {q} is too large")))?;
                }
            }
        }
        Ok(book)
    }

    /// Stores a decided book as the next write and returns its sequence number.
    pub fn commit(&mut self, book: Book) -> u64 {
        self.books.insert(book.id, book);
        self.seq += 1;
        self.seq
    }

    /// Sets a book as of write `seq` while loading the log (rows replay in order).
    pub fn restore(&mut self, book: Book, seq: u64) {
        self.books.insert(book.id, book);
        self.seq = self.seq.max(seq);
    }

    /// Applies a pushed write if it is the next one.
    pub fn apply(&mut self, push: &Replicate) -> Applied {
        if push.seq <= self.seq {
            Applied::Duplicate
        } else if push.seq > self.seq + 1 {
            Applied::Gap
        } else {
            self.commit(push.book.clone());
            Applied::Applied
        }
    }

    /// Replaces everything with `snapshot` unless it is older than what is held
    /// (`force` installs it regardless: a replica's first sync after start).
    pub fn install(&mut self, snapshot: Snapshot, force: bool) -> Result<bool> {
        if !force && snapshot.seq < self.seq {
            return Ok(false);
        }
        *self = Catalog::new(snapshot.books, snapshot.seq)?;
        Ok(true)
    }

    /// The whole state.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot { seq: self.seq, books: self.books.values().cloned().collect() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::Money;

    fn catalog() -> Catalog {
        let book = |id, topic: &str, quantity| Book {
            id,
            title: format!("Book {id}"),
            topic: topic.into(),
            price: Money::from_cents(1000),
            quantity,
        };
        Catalog::new(vec![book(1, "Distributed Systems", 2), book(2, "undergraduate school", 0)], 0).unwrap()
    }

    fn update(price: Option<i64>, quantity: Option<u32>, delta: Option<i64>) -> Write {
        Write::Update(BookUpdate { price: price.map(Money::from_cents), quantity, quantity_delta: delta })
    }

    #[test]
    fn decides_writes() {
        let c = catalog();
        // (id, write, Ok(quantity, price) or Err(status))
        type Case = (u32, Write, Result<(u32, i64), u16>);
        let cases: Vec<Case> = vec![
            (1, Write::Purchase, Ok((1, 1000))),
            (2, Write::Purchase, Err(409)),
            (9, Write::Purchase, Err(404)),
            (1, update(Some(1250), None, None), Ok((2, 1250))),
            (1, update(None, Some(20), None), Ok((20, 1000))),
            (1, update(None, None, Some(-2)), Ok((0, 1000))),
            (1, update(None, None, Some(-3)), Err(400)),
            (1, update(None, None, Some(i64::MAX)), Err(400)),
            (1, update(None, Some(1), Some(1)), Err(400)),
            (1, update(None, None, None), Err(400)),
        ];
        for (id, write, want) in cases {
            let got = c.decide(id, &write).map(|b| (b.quantity, b.price.cents())).map_err(|e| e.status());
            assert_eq!(got, want, "{id} {write:?}");
        }
    }

    #[test]
    fn searches_case_insensitively() {
        let c = catalog();
        assert_eq!(c.books(Some("distributed systems")).len(), 1);
        assert_eq!(c.books(Some("UNDERGRADUATE SCHOOL")).len(), 1);
        assert!(c.books(Some("cooking")).is_empty());
        assert_eq!(c.books(None).len(), 2);
    }

    #[test]
    fn replicas_apply_in_order() {
        let mut primary = catalog();
        let mut replica = catalog();
        let mut pushes = Vec::new();
        for _ in 0..2 {
            let book = primary.decide(1, &Write::Purchase).unwrap();
            let seq = primary.commit(book.clone());
            pushes.push(Replicate { seq, book });
        }
        assert_eq!(replica.apply(&pushes[1]), Applied::Gap);
        assert_eq!(replica.apply(&pushes[0]), Applied::Applied);
        assert_eq!(replica.apply(&pushes[0]), Applied::Duplicate);
        assert_eq!(replica.apply(&pushes[1]), Applied::Applied);
        assert_eq!(replica, primary);
        let old = catalog().snapshot();
        assert!(!replica.install(old.clone(), false).unwrap());
        assert!(replica.install(old, true).unwrap());
        assert_eq!(replica.seq(), 0);
    }
}
