//! The wire types: every JSON body that crosses a socket, shared by servers, clients,
//! the bench and the tests. Internal messages (replication, order sync) live here too,
//! so both ends of a protocol read the same definition.

use crate::money::Money;
use serde::{Deserialize, Deserializer, Serialize};

/// An optional field that may be left out but not be `null`: a `null` is refused (400)
/// rather than read as "not given", so a body means one thing and the description
/// (`docs/openapi.yaml`, where no field is nullable) says exactly what is accepted.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

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

/// One topic and its number of books: the catalog's and the front end's `GET /topics`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicCount {
    /// The topic, as its book of lowest id writes it (trimmed).
    pub topic: String,
    /// How many books have it (matched case-insensitively, as search matches).
    pub books: u64,
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
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub price: Option<Money>,
    /// New absolute stock.
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub quantity: Option<u32>,
    /// Change of stock (negative to take copies away).
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
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
/// reconciled, and a repeated request for the same order takes no second copy. A copy
/// taken for an order is an internal act (the catalog asks for the token when one is set)
/// and [`PurchaseRequest::order`] judges its fields.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PurchaseRequest {
    /// The order id the copy is taken for.
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
    /// The order's time (RFC 3339 UTC with milliseconds).
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
}

impl PurchaseRequest {
    /// Whether the body names an order (either field given): then the copy is taken for an
    /// order, an internal act.
    pub fn for_order(&self) -> bool {
        self.order_id.is_some() || self.at.is_some()
    }

    /// The order a copy is taken for, judged at `now_ms` (milliseconds since the epoch):
    /// none for a plain purchase; else an id of the shape order servers issue
    /// ([`crate::ids::check_new_order_id`]) and a real order time within
    /// [`crate::ids::ORDER_TIME_SKEW_MS`] of now, or now when `at` is left out.
    pub fn order(self, now_ms: u64) -> Result<Option<(String, String)>, String> {
        match (self.order_id, self.at) {
            (None, None) => Ok(None),
            (None, Some(_)) => Err("`at` needs an `order_id`".into()),
            (Some(order_id), at) => {
                crate::ids::check_new_order_id(&order_id)?;
                let at = at.unwrap_or_else(|| crate::ids::timestamp(now_ms));
                crate::ids::check_order_time_near(&at, now_ms)?;
                Ok(Some((order_id, at)))
            }
        }
    }
}

/// One purchase of a batch: a copy of book `id` for the order `order_id` taken at `at`
/// (judged as [`PurchaseRequest::order`] judges one).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchPurchase {
    /// The book.
    pub id: u32,
    /// The order the copy is taken for.
    pub order_id: String,
    /// The order's time (RFC 3339 UTC with milliseconds).
    pub at: String,
}

/// Body of the catalog's `POST /internal/purchases` (internal: an order server's batch):
/// many purchases in one request, each decided on its own as `POST /books/{id}/purchase`
/// with an order decides it, all fed to the primary's group commit at once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PurchaseBatch {
    /// The purchases, at most [`PurchaseBatch::MOST`].
    pub purchases: Vec<BatchPurchase>,
}

impl PurchaseBatch {
    /// Most purchases in one batch (the primary's group commit takes up to 256 writes; a
    /// purchase is under 100 bytes here, so a batch stays far below the 64 KiB body limit).
    pub const MOST: usize = 256;
}

/// The answer to one purchase of a batch: `status` 200 with the book as the copy left it
/// (what `POST /books/{id}/purchase` answers), or the status and message that purchase
/// alone would have been refused with (404 no such book, 409 out of stock, 503 ...).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Taken {
    /// The purchase's own HTTP status.
    pub status: u16,
    /// With 200: the book after the copy was taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub book: Option<Book>,
    /// Otherwise: why not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Taken {
    /// The answer to one purchase: its book, or why it was not made.
    pub fn from_answer(answer: Result<Book, Unmade>) -> Taken {
        match answer {
            Ok(book) => Taken { status: 200, book: Some(book), error: None },
            Err(u) => Taken { status: u.status, book: None, error: Some(u.message) },
        }
    }

    /// Back to what the purchase alone would have met: the book, or the catalog's refusal
    /// with its own status.
    pub fn into_answer(self) -> Result<Book, Unmade> {
        match (self.status, self.book) {
            (200, Some(book)) => Ok(book),
            (status, _) => Err(Unmade::of(status, self.error, "the catalog answered 200 with no book")),
        }
    }
}

/// Why one purchase of a batch was not made: the status and message that purchase alone
/// would have been answered with (`error.rs` converts it from and to the crate's errors).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unmade {
    /// The purchase's own HTTP status (never 200).
    pub status: u16,
    /// Why.
    pub message: String,
}

impl Unmade {
    /// From a batch answer's `status` and `error`; a 200 without its book or order is the
    /// peer's fault (500, `missing`).
    fn of(status: u16, error: Option<String>, missing: &str) -> Unmade {
        match status {
            200 => Unmade { status: 500, message: missing.into() },
            _ => Unmade { status, message: error.unwrap_or_else(|| format!("refused with status {status}")) },
        }
    }
}

/// The catalog's answer to `POST /internal/purchases`: one [`Taken`] per purchase, in the
/// batch's order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurchaseBatchAnswer {
    /// One per purchase, in order.
    pub taken: Vec<Taken>,
}

/// Body of the order server's `POST /internal/purchase-batch` (internal: a front end's batch):
/// one copy of each book listed, each its own purchase with its own order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderBatch {
    /// The books, one purchase each (a book may be listed more than once).
    pub books: Vec<u32>,
}

impl OrderBatch {
    /// Most purchases in one batch: 256 clients fill two batches in flight, one per order
    /// server (64 gave 8-10% fewer purchases at 256 clients, `docs/performance.md`). The
    /// request stays small (128 ids); the answer (up to 128 orders) has no such bound.
    pub const MOST: usize = 128;
}

/// The answer to one purchase of an [`OrderBatch`]: `status` 200 with the order (what
/// `POST /purchase/{id}` answers), or the status and message that purchase alone would have
/// been answered with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placed {
    /// The purchase's own HTTP status.
    pub status: u16,
    /// With 200: the order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<Order>,
    /// Otherwise: why not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Placed {
    /// The answer to one purchase: its order, or why it was not made.
    pub fn from_answer(answer: Result<Order, Unmade>) -> Placed {
        match answer {
            Ok(order) => Placed { status: 200, order: Some(order), error: None },
            Err(u) => Placed { status: u.status, order: None, error: Some(u.message) },
        }
    }

    /// Back to what the purchase alone would have met: the order, or the order server's
    /// refusal with its own status.
    pub fn into_answer(self) -> Result<Order, Unmade> {
        match (self.status, self.order) {
            (200, Some(order)) => Ok(order),
            (status, _) => Err(Unmade::of(status, self.error, "the order server answered 200 with no order")),
        }
    }
}

/// The order server's answer to `POST /internal/purchase-batch`: one [`Placed`] per book, in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderBatchAnswer {
    /// One per purchase, in order.
    pub placed: Vec<Placed>,
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
    /// Asked with `shape=ids`: each purchase's write and order id in place of the purchases,
    /// so that an order server asks for whole purchases only from the first order it does
    /// not hold. A catalog that does not know the parameter answers whole purchases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ids: Option<Vec<JournalId>>,
}

/// What a page of an order log or of the purchase journal holds (`shape=` of
/// `GET /internal/orders` and `GET /internal/purchases`): whole records (the default), or
/// only what names them (`ids`), for a reader that holds most of them already. (Not a
/// boolean named `ids`: an outside client took that name for a place to put an order id.)
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PageShape {
    /// Whole orders or purchases.
    #[default]
    Whole,
    /// Their ids only.
    Ids,
}

impl PageShape {
    /// The shape a query's `shape=` asks for (`value`; none: whole records).
    pub fn from_query(value: Option<&str>) -> Result<PageShape, String> {
        value.map_or(Ok(PageShape::Whole), str::parse)
    }

    /// As the query takes it.
    pub fn as_str(self) -> &'static str {
        match self {
            PageShape::Whole => "whole",
            PageShape::Ids => "ids",
        }
    }
}

impl std::str::FromStr for PageShape {
    type Err = String;

    fn from_str(s: &str) -> Result<PageShape, String> {
        match s {
            "whole" => Ok(PageShape::Whole),
            "ids" => Ok(PageShape::Ids),
            other => Err(format!("shape={other:?} is not whole or ids")),
        }
    }
}

/// A journaled purchase named by its write and its order id
/// (`GET /internal/purchases?shape=ids`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalId {
    /// The write that took the copy.
    pub seq: u64,
    /// The order it was taken for.
    pub order_id: String,
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
    /// peer or the catalog's journal): an id of the shape order servers issue
    /// ([`crate::ids::check_new_order_id`]), and what [`Order::check_stored`] checks.
    pub fn check(&self) -> Result<(), String> {
        crate::ids::check_new_order_id(&self.order_id)?;
        self.check_stored()
    }

    /// Checks what any order in an order log must be (one logged before ids were held to
    /// the servers' shape too): a well-formed id ([`crate::ids::check_order_id`]), a real
    /// time, a book id and a title of at most [`Order::MAX_TITLE`] characters.
    pub fn check_stored(&self) -> Result<(), String> {
        crate::ids::check_order_id(&self.order_id)?;
        Order::check_at(&self.at)?;
        if self.id == 0 {
            return Err(format!("order {:?}: book id 0", self.order_id));
        }
        if self.title.chars().count() > Order::MAX_TITLE {
            return Err(format!("order {:?}: title over {} characters", self.order_id, Order::MAX_TITLE));
        }
        Ok(())
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

impl Replicate {
    /// A fingerprint of the write: CRC-32 over its number, epoch, the book after it and its
    /// order's id, as a row's checksum is taken (`storage::checksum`). Two logs whose writes
    /// at one number have equal fingerprints hold the same write there
    /// (`core::primary::diverged`); it is sent as `sum` with `GET /internal/log`.
    pub fn fingerprint(&self) -> u32 {
        let b = &self.book;
        let numbers = [self.seq, self.epoch, u64::from(b.id), b.price.cents() as u64, u64::from(b.quantity)]
            .map(u64::to_le_bytes);
        let order = self.order.as_ref().map_or("", |o| o.order_id.as_str());
        let texts = [b.title.as_bytes(), b.topic.as_bytes(), order.as_bytes()];
        crate::storage::checksum(numbers.iter().map(|n| n.as_slice()).chain(texts))
    }

    /// The log's chain after this write, its chain before being `before`: CRC-32 over the
    /// two and this write's fingerprint, so that a chain covers every write up to its own
    /// (`catalog::recent::History`).
    pub fn chain(&self, before: u32) -> u32 {
        crate::storage::checksum([before.to_le_bytes(), self.fingerprint().to_le_bytes()].iter().map(|b| b.as_slice()))
    }
}

/// Primary to replica: the last write it shows, committed (`GET /internal/committed`),
/// asked by a replica whose read meets a write still pending there (CRAQ's version query).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Committed {
    /// The primary's readable write: every write up to it is committed.
    pub seq: u64,
    /// The epoch of the primary that answered.
    pub epoch: u64,
}

/// Primary to replica: the writes after a sequence number (`GET /internal/log?after=N`),
/// for a replica that missed some.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogPage {
    /// The catalog's history: changes when a catalog is imported or rebuilt, so that a
    /// replica never takes writes of another history as the continuation of its own.
    pub history: String,
    /// The primary's sequence number when it answered: the last write it shows, committed
    /// (a replica shows its writes up to there with etcd).
    pub seq: u64,
    /// Up to a page of writes after N, in order.
    pub writes: Vec<Replicate>,
    /// The epoch of the primary that answered.
    #[serde(default)]
    pub epoch: u64,
    /// The chain of the answering catalog's log after write N, when known: an asker whose
    /// own chain there is the same holds the same writes up to N.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<u32>,
}

/// A replica's answer to a push: the sequence number it now holds, and who it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaAck {
    /// The number of the last write the replica logged after the push (with etcd, writes
    /// past its commit point included: logged, not yet shown).
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
    /// The chain of the replica's log after `seq`, when known (`History::chain`): with
    /// static roles, a log whose chain there is another than the primary's has diverged
    /// from it, and is not brought in sync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<u32>,
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
    /// The chain of the log after write `seq`, when known: the copy's log continues it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<u32>,
}

/// A replica's request for a read lease (`POST /internal/lease`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseRequest {
    /// The replica's identity, as in its [`ReplicaAck`]s.
    pub replica_id: String,
}

/// The primary's grant of a read lease (`POST /internal/lease`, 200).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseGrant {
    /// The lease's length `L` (the replica counts `0.9 L` from when it asked).
    pub lease_ms: u64,
    /// The granting primary's epoch (0 with static roles).
    pub epoch: u64,
    /// The granting process's run id: its farewell, and only it, may extend the lease
    /// (absent from a primary of an earlier version: no farewell extends that lease).
    #[serde(default)]
    pub run: Option<String>,
}

/// A primary's farewell as it stops gracefully (`POST /internal/farewell`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Farewell {
    /// The stopping process's run id (empty from an earlier version: it extends nothing).
    #[serde(default)]
    pub run: String,
}

/// A replica's answer to a [`Farewell`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FarewellAnswer {
    /// Whether its lease was extended by the farewell grace.
    pub extended: bool,
}

/// A replica's answer to its primary's `POST /internal/resync` (copy the whole catalog).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResyncAnswer {
    /// Whether a copy started now (false: one was already wanted or under way).
    pub started: bool,
}

/// A switchover's request (`POST /admin/switchover`; the body may also be empty).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwitchoverRequest {
    /// The base URL of the in-sync replica to hand the primary role to (absent or null:
    /// the first in-sync replica).
    #[serde(default)]
    pub to: Option<String>,
}

/// A switchover's answer, once the new primary accepts writes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwitchoverAnswer {
    /// The new primary's base URL.
    pub primary: String,
    /// The epoch it leads.
    pub epoch: u64,
    /// How long writes were paused, from the request to the new primary's first write.
    pub paused_ms: u64,
}

/// A switchover's word to its target (`POST /internal/lead`): the epoch it is handed and,
/// with `go`, a request to read etcd now and answer once it leads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeadRequest {
    /// The epoch the target will lead.
    pub epoch: u64,
    /// How long the target waits before its first write (the old primary's last read
    /// lease); capped at a minute by the target.
    #[serde(default)]
    pub wait_ms: u64,
    /// Read etcd now and answer once leading (false: only note the epoch and the wait).
    #[serde(default)]
    pub go: bool,
}

/// The target's answer to a [`LeadRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LeadAnswer {
    /// Without `go`: the epoch it now expects to lead.
    Expecting {
        /// That epoch.
        expecting: u64,
    },
    /// With `go`: it leads, and takes writes in this many milliseconds.
    Writable {
        /// The wait left before its first write.
        writable_in_ms: u64,
    },
}

/// The value of the `leader` key in etcd: who leads which epoch (on the leader's etcd
/// lease, so it disappears with it).
///
/// The fields are in alphabetical order on purpose, as in every etcd record here: a
/// switchover compares the key's value byte for byte with the record it wrote, and earlier
/// versions wrote these records with sorted keys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderRecord {
    /// The epoch it leads.
    pub epoch: u64,
    /// The leader's base URL.
    #[serde(default)]
    pub url: String,
}

/// The value of the `sync` key in etcd: the catalogs that hold every acknowledged write
/// of `epoch`, so that only one of them may be elected (fields sorted, as
/// [`LeaderRecord`]'s).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncRecord {
    /// The epoch the record was written in.
    pub epoch: u64,
    /// The commit point when it was written: no catalog below it may be elected (absent in
    /// records of earlier versions: 0).
    #[serde(default)]
    pub floor: u64,
    /// The history id of the store's data (absent in records of earlier versions).
    #[serde(default)]
    pub history: Option<String>,
    /// The in-sync catalogs' base URLs.
    pub members: Vec<String>,
}

/// A front end's watch of the primary for its near cache (`POST /internal/near`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NearWatch {
    /// Drawn at random by the front end when it starts (or turns to another primary).
    pub session: String,
    /// Every invalidation up to this number is applied.
    pub seen: u64,
}

/// The primary's answer to a [`NearWatch`]: invalidations, and a cache lease.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NearAnswer {
    /// The primary's epoch (0 with static roles).
    pub epoch: u64,
    /// The lease length `L`: the front end's lease ends at the moment it sent + 0.9 L.
    pub lease_ms: u64,
    /// The invalidations up to this number are in `keys` (or, with `reset`, nothing older counts).
    pub through: u64,
    /// The cache keys invalidated after `seen`, up to `through`.
    pub keys: Vec<String>,
    /// Forget every entry and marker; store nothing read before `through`.
    pub reset: bool,
}

/// A page of an order server's log, in append order (`GET /internal/orders?from=N`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderPage {
    /// The orders from position `from`.
    pub orders: Vec<Order>,
    /// The position to ask from next time.
    pub next: usize,
    /// The generation of the peer's log these positions belong to (drawn at each open and
    /// re-open of its file): a puller that sees another one pulls again from position 0,
    /// since a restart on a new disk or a recovered file numbers its orders anew.
    #[serde(default)]
    pub log: Option<String>,
    /// The catalog write up to which the peer holds every journaled purchase's order
    /// (durably): what lets the catalog's purchase journal forget them once every order
    /// server does (see `OrderNode::report_held`).
    #[serde(default)]
    pub held: Option<u64>,
    /// Asked with `shape=ids`: the ids of the orders from position `from` in place of the
    /// orders (read from the peer's memory, not its file), so that a puller asks for whole
    /// orders only from the first one it does not hold. A peer that does not know the
    /// parameter answers whole orders and no ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ids: Option<Vec<String>>,
}

/// How far a catalog's data got (`GET /internal/identity`), and which of two catalogs
/// may be copied over the other: the rule that keeps data from flowing backwards.
///
/// A catalog's data is named by its *history* (an id drawn when a catalog is seeded,
/// imported or copied whole: a copy takes its source's) and its last logged write (number
/// and epoch). All three live in `catalog.log`, so they survive restarts. A catalog at
/// write 0 is *empty*: it holds the built-in seed and has never taken a write (an import
/// is a write: it is numbered after the catalog's last).
///
/// Architecture invariant: **data never flows backwards.** A catalog is never replaced by
/// a copy of one that [`Identity::holds_more_than`] says is behind it: not by a replica's
/// copy (`replica.rs` refuses to copy from such a primary), not by a primary that asks a
/// replica to copy (`primary.rs` refuses), and with etcd never by an election (a catalog
/// of another history than the store's in-sync record, or below its floor, does not
/// campaign: [`Identity::eligible`]). With static roles a primary that starts behind a
/// replica takes that replica's catalog before it serves.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The catalog's history id.
    pub history: String,
    /// The number of its last logged write (0: empty, the seed and no write ever).
    pub seq: u64,
    /// The epoch of that write (0 with static roles).
    pub epoch: u64,
}

impl Identity {
    /// Whether the catalog never took a write: it holds the built-in seed only.
    pub fn is_empty(&self) -> bool {
        self.seq == 0
    }

    /// Whether this catalog holds writes that `other` lacks, so that copying `other` over
    /// it could lose acknowledged writes (the static roles' rule): `other` is empty and
    /// this one is not, or both are of one history and this one's log runs further. Two
    /// catalogs of different histories, neither empty, are not ordered: each is the result
    /// of an explicit act (an import); the primary's wins. Epochs are not compared: with
    /// static roles every write is of epoch 0 (a log of another epoch diverged, and the
    /// primary's settles it); with etcd the election keeps catalogs that are behind out.
    pub fn holds_more_than(&self, other: &Identity) -> bool {
        if self.is_empty() {
            return false;
        }
        if other.is_empty() {
            return true;
        }
        self.history == other.history && self.seq > other.seq
    }

    /// Whether a catalog holding this may be replaced by a whole copy of `source`. With
    /// static roles, unless it [holds more](Identity::holds_more_than) than `source` (the
    /// primary lost writes: its disk came back empty or older). With etcd a replica's log
    /// may run past the primary's with writes an old primary never acknowledged, which the
    /// copy rightly drops (the election keeps catalogs that are behind out: see
    /// [`Identity::eligible`]): there, only an empty source of another history (a catalog
    /// that came back empty) is refused over data; a primary at write 0 of this catalog's
    /// own history leads a store that never acknowledged a write.
    pub fn may_be_replaced_by(&self, source: &Identity, static_roles: bool) -> bool {
        match static_roles {
            true => !self.holds_more_than(source),
            false => self.is_empty() || !source.is_empty() || source.history == self.history,
        }
    }

    /// With etcd: whether this catalog may run for primary under the in-sync record that
    /// names it. The record carries the store's history and a floor (a write every member
    /// had logged when it was written); a record without them (from before this rule) only
    /// keeps an empty catalog out when it has a floor.
    pub fn eligible(&self, history: Option<&str>, floor: u64) -> Result<(), String> {
        if let Some(h) = history.filter(|h| *h != self.history) {
            return Err(format!(
                "this catalog holds history {:?} at write {}, the store's is {h:?}: it may lack acknowledged writes",
                self.history, self.seq
            ));
        }
        if self.seq < floor {
            return Err(format!(
                "this catalog is at write {}, the store's in-sync record says at least {floor}",
                self.seq
            ));
        }
        Ok(())
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.is_empty() {
            true => write!(f, "empty (history {:?}, no write)", self.history),
            false => write!(f, "history {:?} at write {} (epoch {})", self.history, self.seq, self.epoch),
        }
    }
}

/// One span of a trace, as `GET /traces/{trace_id}` answers it (every service's own, and
/// the front end's gathering of them all).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Span {
    /// 32 lower-case hex digits, the W3C trace id.
    pub trace_id: String,
    /// 16 lower-case hex digits.
    pub span_id: String,
    /// The span this one is part of (in this service or the caller), `null` for a root.
    pub parent_id: Option<String>,
    /// The service that recorded it: `<binary>@<listen address>`, e.g.
    /// `bazar-catalog@127.0.0.1:9000`.
    pub service: String,
    /// What it measures: `POST /purchase/{id}` for a request served, `catalog.append` for
    /// a step inside one.
    pub name: String,
    /// When it started, in microseconds since the Unix epoch (the service's clock).
    pub start: u64,
    /// How long it took, in milliseconds (microsecond precision).
    pub duration_ms: f64,
    /// `ok` or `error`.
    pub status: String,
    /// A few facts about it (book id, order id, batch size, epoch, cache answer, status).
    pub attributes: std::collections::BTreeMap<String, serde_json::Value>,
}

/// One trace in the front end's `GET /traces`: its first span in the front end.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct TraceSummary {
    /// 32 lower-case hex digits.
    pub trace_id: String,
    /// The name of the trace's first span here (`POST /purchase/{id}`).
    pub name: String,
    /// Its start, in microseconds since the Unix epoch.
    pub start: u64,
    /// From its first span's start to its last span's end here, in milliseconds.
    pub duration_ms: f64,
}

#[cfg(test)]
mod tests {

    /// One purchase of a batch answered and read back: made, refused with its own status,
    /// or a 200 without its book (the peer's fault: 500).
    #[test]
    fn a_batch_answer_reads_back_as_the_purchase_alone_would_have_met_it() {
        let book = Book { id: 1, title: "t".into(), topic: "x".into(), price: Default::default(), quantity: 2 };
        let out = Unmade { status: 409, message: "out of stock".into() };
        assert_eq!(Taken::from_answer(Ok(book.clone())).into_answer(), Ok(book));
        assert_eq!(Taken::from_answer(Err(out.clone())).into_answer(), Err(out.clone()));
        let empty = Taken { status: 200, book: None, error: None };
        assert_eq!(empty.into_answer().unwrap_err().status, 500);
        assert_eq!(Placed::from_answer(Err(out.clone())).into_answer(), Err(out));
        let bare = Placed { status: 503, order: None, error: None };
        assert_eq!(bare.into_answer().unwrap_err().status, 503);
    }

    fn id(history: &str, seq: u64, epoch: u64) -> Identity {
        Identity { history: history.into(), seq, epoch }
    }

    /// (this, other, this holds more than other)
    #[test]
    fn who_holds_more() {
        let table = [
            (id("a", 0, 0), id("b", 0, 0), false),
            (id("a", 3, 0), id("b", 0, 0), true),
            (id("a", 0, 0), id("b", 3, 0), false),
            (id("a", 5, 0), id("a", 3, 0), true),
            (id("a", 3, 0), id("a", 5, 0), false),
            (id("a", 3, 0), id("a", 3, 0), false),
            // Epochs are not compared (static roles write epoch 0 only).
            (id("a", 3, 2), id("a", 5, 1), false),
            (id("a", 5, 1), id("a", 3, 2), true),
            // Two imports: not ordered (the primary's wins).
            (id("a", 9, 0), id("b", 3, 0), false),
            (id("b", 3, 0), id("a", 9, 0), false),
        ];
        for (this, other, expected) in table {
            assert_eq!(this.holds_more_than(&other), expected, "{this} against {other}");
        }
    }

    #[test]
    fn eligibility_under_the_in_sync_record() {
        assert!(id("a", 5, 1).eligible(Some("a"), 5).is_ok());
        assert!(id("a", 5, 1).eligible(None, 0).is_ok());
        let other = id("b", 0, 0).eligible(Some("a"), 0).unwrap_err();
        assert!(other.contains("history \"b\""), "{other}");
        assert!(id("a", 4, 1).eligible(Some("a"), 5).unwrap_err().contains("at least 5"));
        // A record from before histories, with a floor: an empty catalog stays out.
        assert!(id("c", 0, 0).eligible(None, 2).is_err());
    }

    /// (target, source, static roles, may the copy replace the target)
    #[test]
    fn which_copies_may_replace_a_catalog() {
        let table = [
            (id("a", 0, 0), id("b", 5, 0), true, true),
            (id("a", 5, 0), id("b", 0, 0), true, false),
            (id("a", 5, 0), id("b", 0, 0), false, false),
            (id("a", 7, 0), id("a", 5, 0), true, false),
            (id("a", 5, 0), id("a", 7, 0), true, true),
            // An import on the primary (another history) replaces a replica's catalog.
            (id("a", 9, 0), id("b", 2, 0), true, true),
            // With etcd a tail the old primary never acknowledged is dropped, also when the
            // new primary is at write 0 of the same history (it never acknowledged one).
            (id("a", 10, 2), id("a", 9, 3), false, true),
            (id("a", 1, 1), id("a", 0, 0), false, true),
            (id("a", 0, 0), id("b", 0, 0), false, true),
        ];
        for (target, source, static_roles, expected) in table {
            assert_eq!(target.may_be_replaced_by(&source, static_roles), expected, "{target} by {source}");
        }
    }
    use super::*;
    use crate::ids::{timestamp, ORDER_TIME_SKEW_MS};

    fn body(text: &str) -> Result<PurchaseRequest, String> {
        serde_json::from_str(text).map_err(|e| e.to_string())
    }

    #[test]
    fn a_purchase_body_names_an_order_or_none() {
        let now = 1_795_874_106_123;
        let order = |text: &str| body(text)?.order(now);
        assert_eq!(order("{}"), Ok(None));
        assert_eq!(
            order(r#"{"order_id": "0a1b2c3d4e5f-3"}"#),
            Ok(Some(("0a1b2c3d4e5f-3".into(), timestamp(now)))),
            "the catalog stamps its own time"
        );
        let near = timestamp(now - ORDER_TIME_SKEW_MS);
        assert_eq!(
            order(&format!(r#"{{"order_id": "0a1b2c3d4e5f-3", "at": "{near}"}}"#)),
            Ok(Some(("0a1b2c3d4e5f-3".into(), near.clone())))
        );
        let far = timestamp(now + ORDER_TIME_SKEW_MS + 1);
        for refused in [
            r#"{"at": null, "order_id": "0"}"#.to_string(),
            r#"{"order_id": "0"}"#.into(),
            r#"{"order_id": null}"#.into(),
            r#"{"order_id": "0a1b2c3d4e5f-3", "at": null}"#.into(),
            r#"{"order_id": "0a1b2c3d4e5f-3", "at": "yesterday"}"#.into(),
            format!(r#"{{"order_id": "0a1b2c3d4e5f-3", "at": "{far}"}}"#),
            format!(r#"{{"at": "{near}"}}"#),
            r#"{"order_id": "0a1b2c3d4e5f-3", "colour": 1}"#.into(),
        ] {
            assert!(order(&refused).is_err(), "{refused} was accepted");
        }
        assert!(body(r#"{"at": "x"}"#).unwrap().for_order());
        assert!(!body("{}").unwrap().for_order());
    }

    #[test]
    fn no_field_is_null() {
        assert!(serde_json::from_str::<BookUpdate>(r#"{"price": 1, "quantity": null}"#).is_err());
        assert!(serde_json::from_str::<BookUpdate>(r#"{"quantity_delta": null}"#).is_err());
        let u: BookUpdate = serde_json::from_str(r#"{"price": 1}"#).unwrap();
        assert_eq!((u.quantity, u.quantity_delta), (None, None));
    }

    #[test]
    fn orders_entering_the_store_have_a_servers_id() {
        let order = |id: &str, title: String| Order {
            order_id: id.into(),
            id: 1,
            title,
            price: Money::from_cents(100),
            at: "2026-11-24T13:55:06.123Z".into(),
        };
        assert!(order("0a1b2c3d4e5f-1", "t".into()).check().is_ok());
        assert!(order("0", "t".into()).check().is_err());
        assert!(order("0", "t".into()).check_stored().is_ok(), "an old log's id is still read");
        assert!(order("0a1b2c3d4e5f-1", "é".repeat(Order::MAX_TITLE)).check().is_ok(), "characters, not bytes");
        assert!(order("0a1b2c3d4e5f-1", "é".repeat(Order::MAX_TITLE + 1)).check().is_err());
    }

    /// The typed internal messages write what the `json!` values they replaced wrote: the
    /// etcd records byte for byte (a switchover compares the `leader` key with the record
    /// it wrote, maybe by an earlier version), the HTTP bodies as the same JSON (catalogs
    /// of two versions talk during a rolling upgrade).
    #[test]
    fn typed_messages_keep_the_json_they_replaced() {
        use serde_json::{json, to_string, to_value, Value};
        let bytes = |typed: String, before: Value| assert_eq!(typed, before.to_string());
        let same = |typed: Value, before: Value| assert_eq!(typed, before);
        let leader = LeaderRecord { epoch: 3, url: "http://a:1".into() };
        bytes(to_string(&leader).unwrap(), json!({ "url": "http://a:1", "epoch": 3 }));
        let sync = SyncRecord { epoch: 3, floor: 9, history: None, members: vec!["http://a:1".into()] };
        bytes(to_string(&sync).unwrap(), json!({ "epoch": 3, "members": ["http://a:1"], "history": null, "floor": 9 }));
        let lead = LeadRequest { epoch: 4, wait_ms: 250, go: true };
        same(to_value(lead).unwrap(), json!({ "epoch": 4, "wait_ms": 250, "go": true }));
        same(to_value(LeadAnswer::Expecting { expecting: 4 }).unwrap(), json!({ "expecting": 4 }));
        same(to_value(LeadAnswer::Writable { writable_in_ms: 7 }).unwrap(), json!({ "writable_in_ms": 7 }));
        let answer = SwitchoverAnswer { primary: "http://b:2".into(), epoch: 4, paused_ms: 31 };
        same(to_value(answer).unwrap(), json!({ "primary": "http://b:2", "epoch": 4, "paused_ms": 31 }));
        same(to_value(ResyncAnswer { started: true }).unwrap(), json!({ "started": true }));
        // Records of earlier versions: no history, no floor.
        let old: SyncRecord = serde_json::from_str(r#"{"epoch": 2, "members": []}"#).unwrap();
        assert_eq!((old.floor, old.history), (0, None));
        let lead: LeadRequest = serde_json::from_str(r#"{"epoch": 5}"#).unwrap();
        assert_eq!((lead.wait_ms, lead.go), (0, false));
        assert_eq!(
            serde_json::from_str::<LeadAnswer>(r#"{"writable_in_ms": 0}"#).unwrap(),
            LeadAnswer::Writable { writable_in_ms: 0 }
        );
        assert!(serde_json::from_str::<SwitchoverRequest>(r#"{"to": 7}"#).is_err());
        assert!(serde_json::from_str::<SwitchoverRequest>(r#"{"too": "x"}"#).is_err());
        assert_eq!(serde_json::from_str::<SwitchoverRequest>(r#"{"to": null}"#).unwrap().to, None);
    }
}
