//! The index of the durable orders, in memory: no I/O, no lock of its own (its owner,
//! [`super::log::OrderLog`], holds it under its lock), and what `GET /orders` pages by.
//!
//! A server holds every order ever taken (its own and its peers'), so the orders themselves
//! stay on disk and memory holds under 50 bytes an order: per order an `Entry` (where its
//! row starts, its time in milliseconds, its id as an interned prefix and a counter: 32
//! bytes), a slot in a hash table from id to position (5 bytes a slot: the position and a
//! tag of the id's hash, the keys live in the entries; 1.3 to 2.7 slots an order, as the
//! table fills between growths) and a slot in the time-ordered index (4 bytes). A row's
//! bytes end where the next entry's row starts (or at the end of the durable rows), so no
//! length is kept.
//!
//! Orders are listed oldest first by [`Cursor`] key: time, then id in the order of
//! [`crate::ids::cmp_order_ids`]. A page holds the orders whose key follows the cursor,
//! so paging visits every order that existed throughout exactly once, however many orders
//! (even late ones from a peer, older than the page) arrive meanwhile.
//!
//! Invariant: only durable orders are pushed here (an order is indexed, so visible, only
//! once durable), in file order, each id once; orders are never removed. `entries` is in
//! file order (peers pull by position), `by_time` holds every position once, sorted by key.

use crate::ids;
use crate::wire::Order;
use std::cmp::Ordering;
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;

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
pub(super) struct Entry {
    /// Where its row starts in `orders.csv`.
    offset: u64,
    /// Its time, milliseconds since the epoch.
    pub(super) at: u64,
    /// Its id's counter; for an id of another shape, the index of the id in `others`.
    counter: u64,
    /// The index of its id's prefix in `prefixes`, or [`OTHER`].
    prefix: u32,
}

/// A set of positions in [`Index::entries`] found by id: open addressing with linear
/// probing, at most 3/4 full. A slot is 4 bytes (and its tag 1) because the keys are the
/// entries' ids; orders are never removed, so there are no tombstones.
///
/// Beside each slot a one-byte tag holds 7 bits of its id's hash (high bit set; 0 is an
/// empty slot), as SwissTable does: a probe reads the tags, one cache line for many slots,
/// and looks at an entry (a random place in memory) only where the tag matches, 1 time in
/// 128 for another id. Most lookups are of ids not there (each order is looked up before
/// it is added), and without the tags each probe of one cost a cache miss on an entry.
struct Table {
    slots: Vec<u32>,
    tags: Vec<u8>,
    len: usize,
}

const EMPTY: u32 = u32::MAX;

/// The tag of a hash: its top 7 bits, high bit set (never 0, the empty slot's).
fn tag(hash: u64) -> u8 {
    0x80 | (hash >> 57) as u8
}

impl Table {
    fn new() -> Table {
        Table { slots: vec![EMPTY; 16], tags: vec![0; 16], len: 0 }
    }

    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    /// The position whose id `is` says is the one sought, among those of hash `hash`.
    fn find(&self, hash: u64, is: impl Fn(u32) -> bool) -> Option<u32> {
        let want = tag(hash);
        let mut i = hash as usize & self.mask();
        loop {
            match self.tags[i] {
                0 => return None,
                t if t == want && is(self.slots[i]) => return Some(self.slots[i]),
                _ => i = (i + 1) & self.mask(),
            }
        }
    }

    /// Adds a position that is not in the table; `hash_of` gives any position's hash (to
    /// grow).
    fn insert(&mut self, hash: u64, pos: u32, hash_of: impl Fn(u32) -> u64) {
        if (self.len + 1) * 4 > self.slots.len() * 3 {
            let size = self.slots.len() * 2;
            let old = std::mem::replace(&mut self.slots, vec![EMPTY; size]);
            self.tags = vec![0; size];
            for p in old.into_iter().filter(|&p| p != EMPTY) {
                self.place(hash_of(p), p);
            }
        }
        self.place(hash, pos);
        self.len += 1;
    }

    fn place(&mut self, hash: u64, pos: u32) {
        let mut i = hash as usize & self.mask();
        while self.tags[i] != 0 {
            i = (i + 1) & self.mask();
        }
        self.slots[i] = pos;
        self.tags[i] = tag(hash);
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
pub(super) struct Index {
    /// Every durable order in the order appended (which is file order): peers pull by
    /// position.
    pub(super) entries: Vec<Entry>,
    /// id -> position in `entries`.
    by_id: Table,
    /// Positions in `entries`, ordered by key (time, then id).
    pub(super) by_time: Vec<u32>,
    /// The distinct prefixes of server-drawn ids (one per incarnation of a server).
    prefixes: Vec<Box<str>>,
    prefix_index: HashMap<Box<str>, u32>,
    /// Ids of any other shape, whole.
    others: Vec<Box<str>>,
    /// Where the durable rows end in the file.
    pub(super) end: u64,
    hasher: RandomState,
}

impl Index {
    pub(super) fn new(end: u64) -> Index {
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

    /// The id of the entry at `pos`.
    pub(super) fn id(&self, pos: usize) -> String {
        match self.id_of(&self.entries[pos]) {
            (prefix, Some(counter)) => format!("{prefix}-{counter}"),
            (whole, None) => whole.to_string(),
        }
    }

    pub(super) fn find(&self, order_id: &str) -> Option<u32> {
        self.find_key(ids::split_order_id(order_id))
    }

    pub(super) fn find_key(&self, id: IdKey) -> Option<u32> {
        self.by_id.find(self.hash(id), |p| self.is(&self.entries[p as usize], id))
    }

    /// Whether `e` has id `id`; compares the counter first, which rules most entries out
    /// without looking at a prefix.
    pub(super) fn is(&self, e: &Entry, id: IdKey) -> bool {
        if e.prefix == OTHER {
            ids::split_order_id(&self.others[e.counter as usize]) == id
        } else {
            id.1 == Some(e.counter) && *self.prefixes[e.prefix as usize] == *id.0
        }
    }

    /// An entry for a new order's id and time at `offset`, its prefix interned.
    pub(super) fn entry(&mut self, order_id: &str, at: u64, offset: u64) -> Entry {
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
    pub(super) fn push(&mut self, entry: Entry) {
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
    pub(super) fn merge_from(&mut self, first: usize) {
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
    pub(super) fn sort(&mut self) {
        let mut by_time: Vec<u32> = (0..self.entries.len() as u32).collect();
        // Stable merge sort: a log is mostly in time order already, runs make it fast.
        by_time.sort_by(|&a, &b| self.cmp_positions(a, b));
        self.by_time = by_time;
    }

    /// Where each indexed row starts, in file order (to copy the good rows of a file).
    pub(super) fn offsets(&self) -> impl Iterator<Item = u64> + '_ {
        self.entries.iter().map(|e| e.offset)
    }

    /// Where entry `pos`'s row is in the file: from its offset to the next entry's.
    pub(super) fn span(&self, pos: usize) -> (u64, u64) {
        let end = self.entries.get(pos + 1).map_or(self.end, |e| e.offset);
        (self.entries[pos].offset, end)
    }

    /// Where the orders after `after` (or from the first) are in `by_time`.
    pub(super) fn start_after(&self, after: Option<&Cursor>) -> usize {
        match after {
            None => 0,
            Some(c) => {
                let id = ids::split_order_id(&c.order_id);
                self.by_time.partition_point(|&p| self.cmp_key(&self.entries[p as usize], c.at, id).is_le())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table finds every position it holds and none it does not, across growths,
    /// whether ids share a hash (same tag: the entry decides) or not.
    #[test]
    fn the_table_finds_what_it_holds_whatever_the_hashes() {
        for spread in [true, false] {
            let hash = |p: u32| if spread { u64::from(p).wrapping_mul(0x9e37_79b9_7f4a_7c15) } else { 42 };
            let mut table = Table::new();
            for p in 0..300u32 {
                assert_eq!(table.find(hash(p), |q| q == p), None, "{p} not held yet");
                table.insert(hash(p), p, hash);
            }
            assert_eq!(table.len, 300);
            assert!(table.len * 4 <= table.slots.len() * 3, "at most 3/4 full");
            for p in 0..300u32 {
                assert_eq!(table.find(hash(p), |q| q == p), Some(p));
            }
            assert_eq!(table.find(hash(300), |q| q == 300), None);
            let tagged = table.tags.iter().filter(|&&t| t != 0).count();
            assert_eq!(tagged, 300, "a tag for each position, none for an empty slot");
        }
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
}
