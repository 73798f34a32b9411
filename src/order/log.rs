//! The order log: every order known to this server, and its file `orders.csv`
//! (header `order_id,id,title,price,at`), to which orders are only ever appended.
//!
//! Architecture invariant: only the order process that owns the data directory writes its
//! `orders.csv`; an order is appended and fsynced before anything that depends on it is
//! acknowledged. A torn last line (a crash mid-append) is cut at start: it was never
//! acknowledged.

use crate::error::{Error, Result};
use crate::money::Money;
use crate::storage;
use crate::wire::Order;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

const HEADER: &[u8] = b"order_id,id,title,price,at\n";

#[derive(Serialize, Deserialize)]
struct Row {
    order_id: String,
    id: u32,
    title: String,
    price: String,
    at: String,
}

/// The orders, oldest first, and the file they are appended to.
///
/// Appends are group-committed: concurrent [`OrderLog::add`]s write their rows, then share
/// one fsync; an order becomes visible (and counts as known) only once it is durable.
pub struct OrderLog {
    /// The file, the orders and those written but not yet fsynced. Held briefly.
    inner: Mutex<Inner>,
    /// Serialises fsyncs; holds a second handle of the file.
    syncer: Mutex<File>,
}

struct Inner {
    file: File,
    /// Every durable order, in the order appended: peers pull from a position.
    orders: Vec<Stored>,
    /// order id -> position in `orders`, for lookups and de-duplication.
    index: HashMap<Box<str>, u32>,
    /// One copy of each title, shared by the orders of that book.
    titles: HashSet<Arc<str>>,
    /// Written, waiting for an fsync, in file order, each with its row number.
    pending: Vec<(u64, Order)>,
    /// Rows written; rows made durable.
    written: u64,
    synced: u64,
}

/// An order as kept in memory: a quarter of a wire [`Order`] plus its index entries (about
/// 250 bytes an order instead of 900), since a server holds every order it ever took.
struct Stored {
    order_id: Box<str>,
    id: u32,
    title: Arc<str>,
    price: Money,
    at: Box<str>,
}

impl Stored {
    fn order(&self) -> Order {
        Order {
            order_id: self.order_id.to_string(),
            id: self.id,
            title: self.title.to_string(),
            price: self.price,
            at: self.at.to_string(),
        }
    }
}

impl Inner {
    fn known(&self, order_id: &str) -> bool {
        self.index.contains_key(order_id) || self.pending.iter().any(|(_, o)| o.order_id == order_id)
    }

    fn remember(&mut self, order: Order) {
        if self.index.contains_key(order.order_id.as_str()) {
            return;
        }
        let title = match self.titles.get(order.title.as_str()) {
            Some(t) => Arc::clone(t),
            None => {
                let t: Arc<str> = order.title.into();
                self.titles.insert(Arc::clone(&t));
                t
            }
        };
        let position = u32::try_from(self.orders.len()).expect("fewer than 2^32 orders");
        self.index.insert(order.order_id.as_str().into(), position);
        self.orders.push(Stored {
            order_id: order.order_id.into(),
            id: order.id,
            title,
            price: order.price,
            at: order.at.into(),
        });
    }
}

impl OrderLog {
    /// Opens (creating if needed) `orders.csv` in `dir` and loads it.
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
        let syncer = file.try_clone()?;
        let mut inner = Inner {
            file,
            orders: Vec::new(),
            index: HashMap::new(),
            titles: HashSet::new(),
            pending: Vec::new(),
            written: 0,
            synced: 0,
        };
        let text = std::fs::read(&path)?;
        for row in csv::Reader::from_reader(text.as_slice()).deserialize::<Row>() {
            let r = row.map_err(|e| Error::Internal(format!("{}: {e}", path.display())))?;
            let price: Money =
                r.price.parse().map_err(|e: String| Error::Internal(format!("{}: {e}", path.display())))?;
            inner.remember(Order { order_id: r.order_id, id: r.id, title: r.title, price, at: r.at });
        }
        Ok(OrderLog { inner: Mutex::new(inner), syncer: Mutex::new(syncer) })
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends the orders not yet known and returns once they are durable (with those that
    /// other threads wrote meanwhile: one fsync for all); returns how many were new.
    pub fn add(&self, orders: &[Order]) -> Result<usize> {
        let (fresh, upto) = {
            let mut inner = self.inner();
            let mut seen = std::collections::HashSet::new();
            let fresh: Vec<Order> = orders
                .iter()
                .filter(|o| !inner.known(&o.order_id) && seen.insert(o.order_id.clone()))
                .cloned()
                .collect();
            if !fresh.is_empty() {
                let mut w = csv::WriterBuilder::new().has_headers(false).from_writer(Vec::new());
                for o in &fresh {
                    w.serialize(Row {
                        order_id: o.order_id.clone(),
                        id: o.id,
                        title: o.title.clone(),
                        price: o.price.to_string(),
                        at: o.at.clone(),
                    })?;
                }
                let bytes = w.into_inner().map_err(|e| Error::Internal(format!("CSV error: {e}")))?;
                inner.file.write_all(&bytes)?;
                for o in &fresh {
                    inner.written += 1;
                    let row = inner.written;
                    inner.pending.push((row, o.clone()));
                }
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
        let (done, rest): (Vec<_>, Vec<_>) =
            std::mem::take(&mut inner.pending).into_iter().partition(|(row, _)| *row <= target);
        inner.pending = rest;
        for (_, order) in done {
            inner.remember(order);
        }
        Ok(())
    }

    /// One order.
    pub fn get(&self, order_id: &str) -> Option<Order> {
        let inner = self.inner();
        let position = *inner.index.get(order_id)?;
        Some(inner.orders[position as usize].order())
    }

    /// All orders, oldest first (by time, then id).
    pub fn all(&self) -> Vec<Order> {
        let inner = self.inner();
        let mut by_time: Vec<&Stored> = inner.orders.iter().collect();
        by_time.sort_unstable_by(|a, b| (&a.at, &a.order_id).cmp(&(&b.at, &b.order_id)));
        by_time.into_iter().map(Stored::order).collect()
    }

    /// Up to `max` orders in append order from position `from`, and the position after them.
    pub fn since(&self, from: usize, max: usize) -> (Vec<Order>, usize) {
        let inner = self.inner();
        let page: Vec<Order> = inner.orders.get(from..).unwrap_or(&[]).iter().take(max).map(Stored::order).collect();
        let next = from.min(inner.orders.len()) + page.len();
        (page, next)
    }

    /// How many orders.
    pub fn len(&self) -> usize {
        self.inner().index.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::timestamp_now;

    fn order(id: &str, at: &str) -> Order {
        Order {
            order_id: id.into(),
            id: 1,
            title: "A, \"quoted\" title".into(),
            price: Money::from_cents(1999),
            at: at.into(),
        }
    }

    #[test]
    fn orders_are_checked() {
        assert!(order("ab12-1", &timestamp_now()).check().is_ok());
        assert!(order("x y", &timestamp_now()).check().is_err());
        assert!(order("ab12-1", "2026-13-45T99:99:99.999Z").check().is_err());
    }

    /// Concurrent appends share fsyncs, and every order is durable and visible when its
    /// add returns.
    #[test]
    fn concurrent_appends_are_durable_when_they_return() {
        let dir = std::env::temp_dir().join(format!("bazar-orders-group-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let log = OrderLog::open(&dir).unwrap();
        std::thread::scope(|s| {
            for t in 0..8 {
                let log = &log;
                s.spawn(move || {
                    for i in 0..50 {
                        let o = order(&format!("t{t}-{i}"), &timestamp_now());
                        assert_eq!(log.add(std::slice::from_ref(&o)).unwrap(), 1);
                        assert_eq!(log.get(&o.order_id), Some(o));
                    }
                });
            }
        });
        assert_eq!(log.len(), 400);
        assert_eq!(log.since(0, 1000).0.len(), 400);
        drop(log);
        assert_eq!(OrderLog::open(&dir).unwrap().len(), 400);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn appends_dedups_sorts_and_survives_a_torn_tail() {
        let dir = std::env::temp_dir().join(format!("bazar-orders-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let log = OrderLog::open(&dir).unwrap();
        let (a, b) = (order("a-1", "2026-01-01T00:00:00.002Z"), order("b-1", "2026-01-01T00:00:00.001Z"));
        assert_eq!(log.add(&[a.clone(), b.clone()]).unwrap(), 2);
        assert_eq!(log.add(std::slice::from_ref(&a)).unwrap(), 0);
        assert_eq!(log.all(), [b.clone(), a.clone()]);
        assert_eq!(log.since(0, 1), (vec![a.clone()], 1));
        assert_eq!(log.since(1, 10), (vec![b.clone()], 2));
        assert_eq!(log.since(5, 10), (vec![], 2));
        drop(log);
        let path = dir.join("orders.csv");
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"c-1,1,torn").unwrap();
        let log = OrderLog::open(&dir).unwrap();
        assert_eq!(log.all(), [b, a.clone()]);
        assert_eq!(log.get("a-1"), Some(a));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
