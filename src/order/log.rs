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
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Write;
use std::path::Path;

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
pub struct OrderLog {
    file: File,
    /// By (time, id): the answer of `GET /orders` in order.
    by_time: BTreeMap<(String, String), Order>,
    /// order id -> time, for lookups and de-duplication.
    index: HashMap<String, String>,
    /// (time, id) keys in the order they were appended: peers pull from a position.
    appended: Vec<(String, String)>,
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
        let mut log = OrderLog { file, by_time: BTreeMap::new(), index: HashMap::new(), appended: Vec::new() };
        let text = std::fs::read(&path)?;
        for row in csv::Reader::from_reader(text.as_slice()).deserialize::<Row>() {
            let r = row.map_err(|e| Error::Internal(format!("{}: {e}", path.display())))?;
            let price: Money =
                r.price.parse().map_err(|e: String| Error::Internal(format!("{}: {e}", path.display())))?;
            log.remember(Order { order_id: r.order_id, id: r.id, title: r.title, price, at: r.at });
        }
        Ok(log)
    }

    fn remember(&mut self, order: Order) -> bool {
        if self.index.contains_key(&order.order_id) {
            return false;
        }
        let key = (order.at.clone(), order.order_id.clone());
        self.index.insert(order.order_id.clone(), order.at.clone());
        self.appended.push(key.clone());
        self.by_time.insert(key, order);
        true
    }

    /// Appends the orders not yet known, durably; returns how many were new.
    pub fn add(&mut self, orders: &[Order]) -> Result<usize> {
        let fresh: Vec<&Order> = orders.iter().filter(|o| !self.index.contains_key(&o.order_id)).collect();
        if fresh.is_empty() {
            return Ok(0);
        }
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
        self.file.write_all(&bytes)?;
        self.file.sync_data()?;
        let n = fresh.len();
        for o in fresh.into_iter().cloned().collect::<Vec<_>>() {
            self.remember(o);
        }
        Ok(n)
    }

    /// One order.
    pub fn get(&self, order_id: &str) -> Option<&Order> {
        let at = self.index.get(order_id)?;
        self.by_time.get(&(at.clone(), order_id.to_string()))
    }

    /// All orders, oldest first.
    pub fn all(&self) -> Vec<Order> {
        self.by_time.values().cloned().collect()
    }

    /// Up to `max` orders in append order from position `from`, and the position after them.
    pub fn since(&self, from: usize, max: usize) -> (Vec<Order>, usize) {
        let keys = self.appended.get(from..).unwrap_or(&[]);
        let page: Vec<Order> = keys.iter().take(max).filter_map(|k| self.by_time.get(k).cloned()).collect();
        (page, from.min(self.appended.len()) + keys.len().min(max))
    }

    /// How many orders.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }
}

/// Validates an order that came from a peer.
pub fn check(order: &Order) -> Result<()> {
    let ok_id = !order.order_id.is_empty()
        && order.order_id.len() <= 64
        && order.order_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    let ok_at = order.at.len() == 24 && order.at.ends_with('Z');
    if ok_id && ok_at && order.id > 0 && order.title.len() <= 1024 {
        Ok(())
    } else {
        Err(Error::BadRequest(format!("malformed order {:?}", order.order_id)))
    }
}

/// Now as RFC 3339 UTC with milliseconds, e.g. `2026-11-24T13:55:06.123Z` (sorts as text).
pub fn timestamp_now() -> String {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    timestamp(since.as_millis() as u64)
}

/// Milliseconds since the epoch as RFC 3339 UTC.
pub fn timestamp(ms: u64) -> String {
    let (days, rem) = ((ms / 86_400_000) as i64, ms % 86_400_000);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, s, milli) = (rem / 3_600_000, rem / 60_000 % 60, rem / 1000 % 60, rem % 1000);
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{milli:03}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn timestamps() {
        assert_eq!(timestamp(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(timestamp(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(timestamp(1_795_874_106_123), "2026-11-28T13:55:06.123Z");
        assert!(check(&order("ab12-1", &timestamp_now())).is_ok());
        assert!(check(&order("x y", &timestamp_now())).is_err());
    }

    #[test]
    fn appends_dedups_sorts_and_survives_a_torn_tail() {
        let dir = std::env::temp_dir().join(format!("bazar-orders-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut log = OrderLog::open(&dir).unwrap();
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
        assert_eq!(log.get("a-1"), Some(&a));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
