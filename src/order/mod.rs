//! The order service: takes purchases and keeps the order log, shared with its peers.
//!
//! - [`log`]: the set of orders: its file `orders.csv` (loading, group-committed appends,
//!   reads), with its index in memory.
//! - `index`: that index, no I/O: orders by id, by position and by [`log::Cursor`] key
//!   (time, then id), under 50 bytes an order.
//! - [`node`]: one order process: routes, purchases through the catalog, peer sync,
//!   readiness.
//!
//! A purchase takes one copy from the catalog (the write reaches the primary and is
//! acknowledged there), appends the order to `orders.csv` and fsyncs it, hands it to the
//! peers, and only then answers. A peer that did not take it then gets it by pulling:
//! every server reads each peer's log by position in the background, from the start when
//! it starts, so every order server ends up answering the same set.

mod index;
pub mod log;
pub mod node;

pub use node::{OrderConfig, OrderNode};
