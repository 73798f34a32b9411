//! The catalog's state and its operations, free of I/O.
//!
//! A [`Catalog`] is the books, an index of them by topic, and the sequence number of the
//! last write applied. The primary decides a batch of writes in a [`Draft`] over the
//! current catalog (validation, stock checks, ids of new books), without copying it, and
//! applies the decided books with [`Catalog::commit`] once they are durable. A replica
//! applies the primary's numbered writes with [`Catalog::apply`], strictly in order.
//!
//! Costs: a write, `book` and the first page of a list are O(log n) in the number of books
//! (a topic's books are found through the index, never by scanning the catalog); a page of
//! topics with their counts is O(log t + page) in the number of topics `t` (the index is
//! ordered by topic and each entry knows its size).
//!
//! Invariant: every state with sequence number `n` is the same on every node: the
//! primary's state after its n-th write.
//!
//! What the rules refuse is a [`Refusal`]; its HTTP status is decided at the boundary
//! ([`crate::error::Error::status`]), not here.

use crate::wire::{Book, BookUpdate, NewBook, Replicate, TopicCount};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

/// Results whose error is a [`Refusal`].
pub type Result<T, E = Refusal> = std::result::Result<T, E>;

/// Why the catalog's rules refuse a write or a read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No book has this id.
    NoSuchBook(u32),
    /// The book has no copy left to take.
    OutOfStock {
        /// The book's id.
        id: u32,
        /// Its title, for the message.
        title: String,
    },
    /// Every book id has been given: no book can be added.
    NoIdsLeft,
    /// The write breaks a rule: a bad title or topic, an empty or contradictory update, a
    /// stock out of range, a book id 0 or given twice. The message says which.
    Invalid(String),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::NoSuchBook(id) => write!(f, "no book with id {id}"),
            Refusal::OutOfStock { id, title } => write!(f, "book {id} ({title}) is out of stock"),
            Refusal::NoIdsLeft => f.write_str("no book ids left"),
            Refusal::Invalid(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Refusal {}

/// Longest title or topic, in characters.
pub const MAX_TEXT: usize = 300;

/// A write the primary decides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Write {
    /// Change price and/or stock.
    Update(BookUpdate),
    /// Take one copy.
    Purchase,
    /// Add a book; the primary gives it the next id.
    Add(NewBook),
}

/// What a replica did with a pushed write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// It was the next write: applied.
    Applied,
    /// Already had it: nothing to do.
    Duplicate,
    /// Writes are missing before it.
    Gap,
}

/// The books, by id and by topic, and the number of the last write applied to them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Catalog {
    books: BTreeMap<u32, Book>,
    /// Lower-cased, trimmed topic -> ids of its books, ordered by topic (pages of topics).
    topics: BTreeMap<String, BTreeSet<u32>>,
    seq: u64,
    /// Writes logged here but not readable yet (a replica's *dirty* versions, as in CRAQ):
    /// book id -> its last such write, topic key -> the last such write to one of its
    /// books, and the last such write of all.
    dirty: Dirty,
}

/// What a replica holds pending (logged, not committed): reads that meet it ask the primary
/// which write is committed before they answer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Dirty {
    books: HashMap<u32, u64>,
    topics: HashMap<String, u64>,
    last: u64,
    /// The last pending write that adds a book or moves one to another topic: the only
    /// writes that change the list of topics and their counts.
    shape: u64,
}

/// The index key of a topic: search matches topics case-insensitively, ignoring the
/// spaces around them.
pub fn topic_key(topic: &str) -> String {
    topic.trim().to_lowercase()
}

/// Whether some book could have this topic: a topic's key is at most twice [`MAX_TEXT`]
/// characters long (lowercasing turns one character into two at most, `İ` into `i̇`), so a
/// longer one names no topic and needs no lookup.
pub fn can_be_topic(topic: &str) -> bool {
    topic_key(topic).chars().count() <= 2 * MAX_TEXT
}

/// A topic cursor (topics are paged by topic): the last topic of the previous page, any
/// non-empty text. Returned as the key it is compared by: [`topic_key`] (case-insensitive,
/// trimmed, as search compares topics), cut to the longest key a topic can have (twice
/// [`MAX_TEXT`] characters). The cut changes no answer: a topic's key is at most that long,
/// so it sorts after the whole key exactly when it sorts after the cut one; and it keeps a
/// cursor the front end sends on to a catalog within any request head.
///
/// [`topic_key`]: crate::catalog::state::topic_key
/// [`MAX_TEXT`]: MAX_TEXT
pub fn parse_topic_cursor(a: &str) -> std::result::Result<String, String> {
    if a.is_empty() {
        return Err("a cursor is the last topic of the previous page".into());
    }
    let key = topic_key(a);
    Ok(key.chars().take(2 * MAX_TEXT).collect())
}

/// Checks a title or a topic: 1 to [`MAX_TEXT`] characters, not only spaces, no control
/// characters (a CSV row and a page stay one line of text).
pub fn check_text(what: &str, s: &str) -> std::result::Result<(), String> {
    let chars = s.chars().count();
    if s.trim().is_empty() {
        Err(format!("{what} is empty"))
    } else if chars > MAX_TEXT {
        Err(format!("{what} has {chars} characters; at most {MAX_TEXT}"))
    } else if s.chars().any(char::is_control) {
        Err(format!("{what} contains a control character"))
    } else {
        Ok(())
    }
}

impl Catalog {
    /// A catalog of these books at sequence number `seq`.
    pub fn new(books: Vec<Book>, seq: u64) -> std::result::Result<Catalog, String> {
        let mut catalog = Catalog { seq, ..Catalog::default() };
        for b in books {
            catalog.insert_new(b)?;
        }
        Ok(catalog)
    }

    /// Adds a book while a catalog is built (from a file or pages), refusing id 0 and an id
    /// it already has.
    pub fn insert_new(&mut self, book: Book) -> std::result::Result<(), String> {
        if book.id == 0 {
            return Err("book id 0 is not allowed".into());
        }
        if self.books.contains_key(&book.id) {
            return Err(format!("book id {} appears twice", book.id));
        }
        self.put(book);
        Ok(())
    }

    /// Sequence number of the last write applied.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// How many books.
    pub fn len(&self) -> usize {
        self.books.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.books.is_empty()
    }

    /// One book.
    pub fn book(&self, id: u32) -> Result<&Book> {
        self.books.get(&id).ok_or(Refusal::NoSuchBook(id))
    }

    /// Every book, by id.
    pub fn iter(&self) -> impl Iterator<Item = &Book> {
        self.books.values()
    }

    /// Up to `limit` books with ids above `after` (of `topic`, matched case-insensitively,
    /// or all), by id, and whether more follow.
    pub fn page(&self, topic: Option<&str>, after: u32, limit: usize) -> (Vec<&Book>, bool) {
        let from = std::ops::Bound::Excluded(after);
        let range = (from, std::ops::Bound::Unbounded);
        let mut page: Vec<&Book> = match topic {
            None => self.books.range(range).map(|(_, b)| b).take(limit + 1).collect(),
            Some(t) => match self.topics.get(&topic_key(t)) {
                None => Vec::new(),
                Some(ids) => ids.range(range).take(limit + 1).filter_map(|id| self.books.get(id)).collect(),
            },
        };
        let more = page.len() > limit;
        page.truncate(limit);
        (page, more)
    }

    /// Up to `limit` topics whose key ([`topic_key`]) sorts after the key `after`, each with
    /// its number of books, ordered by key, and whether more follow. A topic is named as
    /// its book of lowest id writes it (trimmed): books are never removed and a book's
    /// topic never changes, so the name a topic shows is stable.
    pub fn topics_page(&self, after: Option<&str>, limit: usize) -> (Vec<TopicCount>, bool) {
        let from = match after {
            None => std::ops::Bound::Unbounded,
            Some(a) => std::ops::Bound::Excluded(a),
        };
        let mut page: Vec<TopicCount> = self
            .topics
            .range::<str, _>((from, std::ops::Bound::Unbounded))
            .take(limit + 1)
            .map(|(key, ids)| {
                let name = ids.first().and_then(|id| self.books.get(id)).map_or(key.as_str(), |b| b.topic.trim());
                TopicCount { topic: name.to_string(), books: ids.len() as u64 }
            })
            .collect();
        let more = page.len() > limit;
        page.truncate(limit);
        (page, more)
    }

    /// How many topics.
    pub fn topic_count(&self) -> usize {
        self.topics.len()
    }

    /// The id the next added book gets.
    pub fn next_id(&self) -> u32 {
        self.books.last_key_value().map_or(1, |(id, _)| id.saturating_add(1))
    }

    /// Stores a decided (or replicated) book as write `seq`; it is no longer dirty once its
    /// last pending write is readable.
    pub fn commit(&mut self, book: Book, seq: u64) {
        if self.dirty.books.get(&book.id).is_some_and(|&d| d <= seq) {
            self.dirty.books.remove(&book.id);
        }
        let key = topic_key(&book.topic);
        if self.dirty.topics.get(&key).is_some_and(|&d| d <= seq) {
            self.dirty.topics.remove(&key);
        }
        self.put(book);
        self.seq = self.seq.max(seq);
    }

    /// Records that write `seq` (to `book`) is logged here but not readable yet.
    pub fn mark_dirty(&mut self, book: &Book, seq: u64) {
        let reshapes = self.books.get(&book.id).is_none_or(|old| topic_key(&old.topic) != topic_key(&book.topic));
        if reshapes {
            self.dirty.shape = self.dirty.shape.max(seq);
        }
        self.dirty.books.insert(book.id, seq);
        self.dirty.topics.insert(topic_key(&book.topic), seq);
        self.dirty.last = self.dirty.last.max(seq);
    }

    /// Whether a write to book `id` is logged here and not readable yet.
    pub fn is_dirty(&self, id: u32) -> bool {
        self.dirty.books.contains_key(&id)
    }

    /// Whether a write that could change a list of `topic` (or, for `None`, of every book)
    /// is logged here and not readable yet: a changed book of the topic, or a new one.
    pub fn list_dirty(&self, topic: Option<&str>) -> bool {
        match topic {
            None => self.dirty.last > self.seq,
            Some(t) => self.dirty.topics.contains_key(&topic_key(t)),
        }
    }

    /// Whether a write that could change the list of topics or their counts (a new book,
    /// or a book moved to another topic) is logged here and not readable yet.
    pub fn topics_dirty(&self) -> bool {
        self.dirty.shape > self.seq
    }

    /// Raises the sequence number to `seq` (a write that left every book as it was).
    pub fn raise_seq(&mut self, seq: u64) {
        self.seq = self.seq.max(seq);
    }

    /// Applies a pushed write if it is the next one.
    pub fn apply(&mut self, push: &Replicate) -> Applied {
        if push.seq <= self.seq {
            Applied::Duplicate
        } else if push.seq > self.seq + 1 {
            Applied::Gap
        } else {
            self.commit(push.book.clone(), push.seq);
            Applied::Applied
        }
    }

    fn put(&mut self, book: Book) {
        let key = topic_key(&book.topic);
        if let Some(old) = self.books.get(&book.id) {
            let old_key = topic_key(&old.topic);
            if old_key != key {
                if let Some(ids) = self.topics.get_mut(&old_key) {
                    ids.remove(&book.id);
                    if ids.is_empty() {
                        self.topics.remove(&old_key);
                    }
                }
            }
        }
        self.topics.entry(key).or_default().insert(book.id);
        self.books.insert(book.id, book);
    }
}

/// A batch of writes being decided over a catalog that it does not change: each write sees
/// the ones decided before it in the batch. The writes are numbered from the catalog's
/// sequence number; a refused write takes no number.
pub struct Draft<'a> {
    base: &'a Catalog,
    changed: HashMap<u32, Book>,
    next_id: u32,
    seq: u64,
}

impl<'a> Draft<'a> {
    /// An empty batch over `base`.
    pub fn new(base: &'a Catalog) -> Draft<'a> {
        Draft { base, changed: HashMap::new(), next_id: base.next_id(), seq: base.seq }
    }

    /// One book as the batch has left it so far.
    pub fn book(&self, id: u32) -> Result<&Book> {
        match self.changed.get(&id) {
            Some(b) => Ok(b),
            None => self.base.book(id),
        }
    }

    /// Decides `write` to book `id` (ignored for an add) and numbers it: the book as it
    /// leaves it, or why it is refused.
    pub fn write(&mut self, id: u32, write: &Write) -> Result<Replicate> {
        let book = self.decide(id, write)?;
        if let Write::Add(_) = write {
            self.next_id = self.next_id.checked_add(1).ok_or(Refusal::NoIdsLeft)?;
        }
        self.seq += 1;
        self.changed.insert(book.id, book.clone());
        Ok(Replicate { seq: self.seq, book, epoch: 0, order: None })
    }

    fn decide(&self, id: u32, write: &Write) -> Result<Book> {
        if let Write::Add(new) = write {
            return new.check().map_err(Refusal::Invalid).map(|()| Book {
                id: self.next_id,
                title: new.title.clone(),
                topic: new.topic.clone(),
                price: new.price,
                quantity: new.quantity,
            });
        }
        let mut book = self.book(id)?.clone();
        match write {
            Write::Add(_) => unreachable!("handled above"),
            Write::Purchase => {
                if book.quantity == 0 {
                    return Err(Refusal::OutOfStock { id, title: book.title });
                }
                book.quantity -= 1;
            }
            Write::Update(u) => {
                if u.price.is_none() && u.quantity.is_none() && u.quantity_delta.is_none() {
                    return Err(Refusal::Invalid("nothing to update: give price, quantity or quantity_delta".into()));
                }
                if u.quantity.is_some() && u.quantity_delta.is_some() {
                    return Err(Refusal::Invalid("give quantity or quantity_delta, not both".into()));
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
                        .ok_or_else(|| Refusal::Invalid(format!("quantity_delta {d} is too large")))?;
                    if q < 0 {
                        return Err(Refusal::Invalid(format!(
                            "quantity_delta {d} would make the stock of book {id} negative ({q})"
                        )));
                    }
                    book.quantity =
                        u32::try_from(q).map_err(|_| Refusal::Invalid(format!("quantity {q} is too large")))?;
                }
            }
        }
        Ok(book)
    }
}

impl NewBook {
    /// Checks a new book: title and topic as [`check_text`] says (price and quantity were
    /// checked by their types when the body was read).
    pub fn check(&self) -> std::result::Result<(), String> {
        check_text("title", &self.title)?;
        check_text("topic", &self.topic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::money::Money;

    fn book(id: u32, topic: &str, quantity: u32) -> Book {
        Book { id, title: format!("Book {id}"), topic: topic.into(), price: Money::from_cents(1000), quantity }
    }

    fn catalog() -> Catalog {
        Catalog::new(vec![book(1, "Distributed Systems", 2), book(2, "undergraduate school", 0)], 0).unwrap()
    }

    fn update(price: Option<i64>, quantity: Option<u32>, delta: Option<i64>) -> Write {
        Write::Update(BookUpdate { price: price.map(Money::from_cents), quantity, quantity_delta: delta })
    }

    fn add(title: &str, topic: &str) -> Write {
        Write::Add(NewBook { title: title.into(), topic: topic.into(), price: Money::from_cents(500), quantity: 1 })
    }

    #[test]
    fn decides_writes() {
        let c = catalog();
        // (id, write, Ok(id, quantity, price) or Err(status))
        type Case = (u32, Write, Result<(u32, u32, i64), u16>);
        let long = "x".repeat(301);
        let cases: Vec<Case> = vec![
            (1, Write::Purchase, Ok((1, 1, 1000))),
            (2, Write::Purchase, Err(409)),
            (9, Write::Purchase, Err(404)),
            (1, update(Some(1250), None, None), Ok((1, 2, 1250))),
            (1, update(None, Some(20), None), Ok((1, 20, 1000))),
            (1, update(None, None, Some(-2)), Ok((1, 0, 1000))),
            (1, update(None, None, Some(-3)), Err(400)),
            (1, update(None, None, Some(i64::MAX)), Err(400)),
            (1, update(None, Some(1), Some(1)), Err(400)),
            (1, update(None, None, None), Err(400)),
            (0, add("New", "cooking"), Ok((3, 1, 500))),
            (0, add(" ", "cooking"), Err(400)),
            (0, add("New", ""), Err(400)),
            (0, add(&long, "cooking"), Err(400)),
            (0, add("a\nb", "cooking"), Err(400)),
            (0, add(&"é".repeat(300), "cooking"), Ok((3, 1, 500))),
        ];
        for (id, write, want) in cases {
            let mut draft = Draft::new(&c);
            let got = draft.write(id, &write).map(|r| (r.book.id, r.book.quantity, r.book.price.cents()));
            assert_eq!(got.map_err(|e| Error::from(e).status()), want, "{id} {write:?}");
        }
    }

    #[test]
    fn a_batch_sees_its_own_writes_and_numbers_them() {
        let mut c = catalog();
        let mut draft = Draft::new(&c);
        let mut writes = vec![draft.write(1, &Write::Purchase).unwrap(), draft.write(1, &Write::Purchase).unwrap()];
        assert_eq!(Error::from(draft.write(1, &Write::Purchase).unwrap_err()).status(), 409);
        writes.push(draft.write(0, &add("A", "t")).unwrap());
        writes.push(draft.write(0, &add("B", "t")).unwrap());
        assert_eq!(writes.iter().map(|w| (w.seq, w.book.id)).collect::<Vec<_>>(), [(1, 1), (2, 1), (3, 3), (4, 4)]);
        drop(draft);
        // The catalog did not change until the writes are committed.
        assert_eq!(c, catalog());
        for w in writes {
            c.commit(w.book, w.seq);
        }
        assert_eq!((c.seq(), c.book(1).unwrap().quantity, c.len()), (4, 0, 4));
    }

    #[test]
    fn lowercasing_at_most_doubles_a_topic_so_longer_ones_name_none() {
        assert!((0..=u32::from(char::MAX)).filter_map(char::from_u32).all(|c| c.to_lowercase().count() <= 2));
        let longest = "İ".repeat(MAX_TEXT);
        assert!(can_be_topic(&longest) && can_be_topic(&topic_key(&longest)));
        assert!(can_be_topic(&format!("  {}  ", "a".repeat(MAX_TEXT))));
        assert!(!can_be_topic(&"a".repeat(2 * MAX_TEXT + 1)));
        assert!(!can_be_topic(&"!".repeat(6000)));
    }

    #[test]
    fn pages_by_id_and_topic() {
        let mut books: Vec<Book> = (1..=10).map(|i| book(i, if i % 2 == 0 { "Even" } else { "odd" }, 1)).collect();
        books.push(book(20, " EVEN ", 1));
        let c = Catalog::new(books, 0).unwrap();
        let ids = |(p, more): (Vec<&Book>, bool)| (p.iter().map(|b| b.id).collect::<Vec<_>>(), more);
        assert_eq!(ids(c.page(None, 0, 3)), (vec![1, 2, 3], true));
        assert_eq!(ids(c.page(None, 9, 3)), (vec![10, 20], false));
        assert_eq!(ids(c.page(Some("even"), 0, 5)), (vec![2, 4, 6, 8, 10], true));
        assert_eq!(ids(c.page(Some("  even"), 10, 5)), (vec![20], false));
        assert_eq!(ids(c.page(Some("cooking"), 0, 5)), (vec![], false));
        assert_eq!(ids(c.page(None, 20, 5)), (vec![], false));
        assert_eq!(c.next_id(), 21);
    }

    #[test]
    fn topic_cursors() {
        assert_eq!(parse_topic_cursor(" Distributed Systems"), Ok("distributed systems".into()));
        assert_eq!(parse_topic_cursor("  "), Ok("".into()));
        assert!(parse_topic_cursor("").is_err());
        assert_eq!(parse_topic_cursor(&"İ".repeat(600)).unwrap().chars().count(), 600);
    }

    #[test]
    fn pages_topics_with_their_counts() {
        let mut books: Vec<Book> = (1..=7).map(|i| book(i, ["b", "A", "c"][i as usize % 3], 1)).collect();
        books.push(book(8, " a ", 1));
        let c = Catalog::new(books, 0).unwrap();
        let names = |(p, more): (Vec<TopicCount>, bool)| {
            (p.iter().map(|t| format!("{}={}", t.topic, t.books)).collect::<Vec<_>>(), more)
        };
        // By key (lower-cased, trimmed); named as the book of lowest id writes it.
        assert_eq!(names(c.topics_page(None, 10)), (vec!["A=4".into(), "b=2".into(), "c=2".into()], false));
        assert_eq!(names(c.topics_page(None, 2)), (vec!["A=4".into(), "b=2".into()], true));
        assert_eq!(names(c.topics_page(Some("b"), 2)), (vec!["c=2".into()], false));
        assert_eq!(names(c.topics_page(Some("a"), 1)), (vec!["b=2".into()], true));
        assert_eq!(names(c.topics_page(Some("zzz"), 5)), (vec![], false));
        assert_eq!(c.topic_count(), 3);
    }

    #[test]
    fn only_a_new_book_or_a_moved_one_makes_the_topics_dirty() {
        let mut c = catalog();
        c.mark_dirty(&book(1, "distributed systems", 1), 1); // a purchase
        assert!(c.list_dirty(None) && !c.topics_dirty());
        c.mark_dirty(&book(3, "cooking", 1), 2); // a new book
        assert!(c.topics_dirty());
        c.commit(book(1, "distributed systems", 1), 1);
        assert!(c.topics_dirty());
        c.commit(book(3, "cooking", 1), 2);
        assert!(!c.topics_dirty());
        c.mark_dirty(&book(2, "cooking", 0), 3); // moved to another topic
        assert!(c.topics_dirty());
        c.commit(book(2, "cooking", 0), 3);
        assert!(!c.topics_dirty());
        assert_eq!(
            c.topics_page(None, 5).0,
            vec![
                TopicCount { topic: "cooking".into(), books: 2 },
                TopicCount { topic: "distributed systems".into(), books: 1 }
            ]
        );
    }

    #[test]
    fn a_topic_change_moves_the_book_in_the_index() {
        let mut c = catalog();
        c.commit(book(1, "cooking", 1), 1);
        assert_eq!(c.page(Some("distributed systems"), 0, 10).0.len(), 0);
        assert_eq!(c.page(Some("Cooking"), 0, 10).0.len(), 1);
        assert!(!c.topics.contains_key("distributed systems"));
    }

    #[test]
    fn replicas_apply_in_order() {
        let primary = catalog();
        let mut replica = catalog();
        let mut draft = Draft::new(&primary);
        let pushes = [draft.write(1, &Write::Purchase).unwrap(), draft.write(1, &Write::Purchase).unwrap()];
        assert_eq!(replica.apply(&pushes[1]), Applied::Gap);
        assert_eq!(replica.apply(&pushes[0]), Applied::Applied);
        assert_eq!(replica.apply(&pushes[0]), Applied::Duplicate);
        assert_eq!(replica.apply(&pushes[1]), Applied::Applied);
        assert_eq!((replica.seq(), replica.book(1).unwrap().quantity), (2, 0));
    }

    #[test]
    fn refuses_bad_catalogs() {
        assert!(Catalog::new(vec![book(0, "t", 1)], 0).is_err());
        assert!(Catalog::new(vec![book(1, "t", 1), book(1, "u", 1)], 0).is_err());
    }

    #[test]
    fn a_book_is_dirty_from_its_pending_write_until_that_write_is_committed() {
        let book = |id: u32, topic: &str, price: i64| Book {
            id,
            title: format!("t{id}"),
            topic: topic.into(),
            price: Money::from_cents(price),
            quantity: 1,
        };
        let mut c = Catalog::new(vec![book(1, "A", 100), book(2, "B", 100)], 4).unwrap();
        assert!(!c.is_dirty(1) && !c.list_dirty(None) && !c.list_dirty(Some("a")));
        c.mark_dirty(&book(1, "A", 101), 5);
        c.mark_dirty(&book(1, "A", 102), 6);
        c.mark_dirty(&book(3, "C", 100), 7); // a new book
        assert!(c.is_dirty(1) && c.is_dirty(3) && !c.is_dirty(2));
        assert!(c.list_dirty(None) && c.list_dirty(Some(" a ")) && c.list_dirty(Some("c")) && !c.list_dirty(Some("b")));
        c.commit(book(1, "A", 101), 5); // its next write is still pending
        assert!(c.is_dirty(1) && c.list_dirty(Some("A")));
        c.commit(book(1, "A", 102), 6);
        assert!(!c.is_dirty(1) && !c.list_dirty(Some("A")) && c.list_dirty(None));
        c.commit(book(3, "C", 100), 7);
        assert!(!c.is_dirty(3) && !c.list_dirty(None) && !c.list_dirty(Some("c")));
    }
}
