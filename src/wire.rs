//! The wire types: every JSON body that crosses a socket, shared by servers, clients,
//! the bench and the tests. Internal messages (replication, order sync) live here too,
//! so both ends of a protocol read the same definition.

use crate::money::Money;
use serde::{Deserialize, Serialize};

/// A book: the catalog's record, `GET /books/{id}` and the front end's `GET /info/{id}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Book {
    /// Positive id, unique in the catalog.
    pub id: u32,
    /// Title as shown to buyers.
    pub title: String,
    /// Topic, matched case-insensitively by search.
    pub topic: String,
    /// Price, exact to the cent.
    pub price: Money,
    /// Copies in stock.
    pub quantity: u32,
}

/// One search hit of the front end's `GET /search/{topic}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchHit {
    /// The book's id.
    pub id: u32,
    /// The book's title.
    pub title: String,
}

/// Body of `PATCH /books/{id}`: set the price and/or the stock (absolute or by a delta).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BookUpdate {
    /// New price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<Money>,
    /// New absolute stock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantity: Option<u32>,
    /// Change of stock (negative to take copies away).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantity_delta: Option<i64>,
}

/// Body of `POST /books`: a book to add; the primary gives it the next id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewBook {
    /// Title: 1 to 300 characters.
    pub title: String,
    /// Topic: 1 to 300 characters.
    pub topic: String,
    /// Price, exact to the cent.
    pub price: Money,
    /// Copies in stock.
    pub quantity: u32,
}

/// Body of the catalog's `POST /books/{id}/purchase` (optional): who takes the copy.
///
/// An order server sends the order's id and time; the primary journals them with the
/// write, so a copy taken for an order whose server died before logging it can be
/// reconciled, and a repeated request for the same order takes no second copy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PurchaseRequest {
    /// The order id the copy is taken for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
    /// The order's time (RFC 3339 UTC with milliseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
}

/// A copy the catalog took for an order: the order as its server logs it, and the write.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Purchase {
    /// The catalog write that took the copy.
    pub seq: u64,
    /// The order it was taken for.
    pub order: Order,
}

/// `GET /internal/purchases?after=N`: the purchases journaled after write N, oldest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurchasePage {
    /// Up to a page of purchases.
    pub purchases: Vec<Purchase>,
    /// Whether more purchases follow this page.
    #[serde(default)]
    pub more: bool,
}

/// An order as the order servers log, replicate and answer it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// Unique across all order servers: `<server incarnation>-<counter>`.
    pub order_id: String,
    /// The book bought.
    pub id: u32,
    /// Its title at the time of purchase.
    pub title: String,
    /// The price paid.
    pub price: Money,
    /// When the order was taken: RFC 3339 UTC with milliseconds (sorts as text).
    pub at: String,
}

/// The front end's answer to `POST /purchase/{id}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurchaseReceipt {
    /// The order's id.
    pub order_id: String,
    /// The book bought.
    pub id: u32,
    /// Its title.
    pub title: String,
    /// The price paid.
    pub price: Money,
    /// `bought book <title>`.
    pub message: String,
}

impl From<Order> for PurchaseReceipt {
    fn from(o: Order) -> Self {
        PurchaseReceipt {
            message: format!("bought book {}", o.title),
            order_id: o.order_id,
            id: o.id,
            title: o.title,
            price: o.price,
        }
    }
}

impl Order {
    /// Longest title an order may carry (a catalog's titles are at most 300 characters).
    pub const MAX_TITLE: usize = 1024;

    /// Checks a whole order, as a server does before it logs one it did not make (from a
    /// peer or the catalog's journal): its id, its time, the book and the title's length.
    pub fn check(&self) -> Result<(), String> {
        Order::check_id(&self.order_id)?;
        Order::check_at(&self.at)?;
        if self.id == 0 {
            return Err(format!("order {:?}: book id 0", self.order_id));
        }
        if self.title.len() > Order::MAX_TITLE {
            return Err(format!("order {:?}: title over {} bytes", self.order_id, Order::MAX_TITLE));
        }
        Ok(())
    }

    /// Checks an order id: 1 to 64 ASCII letters, digits or `-` ([`crate::ids::check_order_id`]).
    pub fn check_id(id: &str) -> Result<(), String> {
        crate::ids::check_order_id(id)
    }

    /// Checks an order time: a real UTC time like `2026-11-24T13:55:06.123Z`
    /// ([`crate::ids::parse_timestamp`]).
    pub fn check_at(at: &str) -> Result<(), String> {
        crate::ids::parse_timestamp(at).map(|_| ())
    }
}

/// Every error body: `{"error": "..."}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Human-readable message.
    pub error: String,
}

/// Primary to replica: one applied write (`POST /internal/replicate`).
///
/// It carries the book's whole new state, so applying it twice is harmless.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replicate {
    /// The write's sequence number; replicas apply them strictly in order.
    pub seq: u64,
    /// The book after the write.
    pub book: Book,
    /// The epoch of the primary that decided it (0 with static roles, and in logs written
    /// before epochs). One primary per epoch: two logs whose writes at N have the same
    /// (seq, epoch) agree up to N.
    #[serde(default)]
    pub epoch: u64,
    /// For a purchase made for an order: the order, journaled with the write on every
    /// catalog (so that a replica that becomes the primary can reconcile it too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<Order>,
}

/// Primary to replica: the writes after a sequence number (`GET /internal/log?after=N`),
/// for a replica that missed some.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogPage {
    /// The catalog's history: changes when a catalog is imported or rebuilt, so that a
    /// replica never takes writes of another history as the continuation of its own.
    pub history: String,
    /// The primary's sequence number when it answered.
    pub seq: u64,
    /// Up to a page of writes after N, in order.
    pub writes: Vec<Replicate>,
    /// The epoch of the primary that answered.
    #[serde(default)]
    pub epoch: u64,
}

/// A replica's answer to a push: the sequence number it now holds, and who it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaAck {
    /// The replica's sequence number after the push.
    pub seq: u64,
    /// The replica's identity, drawn at each start (read leases are granted to it).
    pub replica_id: String,
    /// The replica's catalog history (see [`LogPage::history`]).
    #[serde(default)]
    pub history: String,
    /// The epoch of the replica's last write: with `seq`, where its log stands (a log that
    /// holds another write at `seq` has diverged, and is copied whole).
    #[serde(default)]
    pub epoch: u64,
}

/// Primary to replica: a page of the whole catalog (`GET /internal/books`), for a replica
/// that copies it; the pages are read at different moments, and the log after `seq` of
/// the first page brings the copy to one state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BookPage {
    /// The catalog's history.
    pub history: String,
    /// The sequence number the page was read at.
    pub seq: u64,
    /// The epoch of write `seq`.
    #[serde(default)]
    pub epoch: u64,
    /// Books by id, after the cursor.
    pub books: Vec<Book>,
    /// Whether more books follow.
    pub more: bool,
}

/// A replica's request for a read lease (`POST /internal/lease`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseRequest {
    /// The replica's identity, as in its [`ReplicaAck`]s.
    pub replica_id: String,
}

/// A page of an order server's log, in append order (`GET /internal/orders?from=N`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderPage {
    /// The orders from position `from`.
    pub orders: Vec<Order>,
    /// The position to ask from next time.
    pub next: usize,
}
