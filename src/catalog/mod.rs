//! The catalog service: books, prices and stock; one primary and any number of replicas.
//!
//! - [`config`]: the settings of a catalog process.
//! - [`state`]: the books and their operations, no I/O.
//! - [`core`](mod@core): the catalog's decisions with no I/O, as far as they are gathered
//!   (a group commit's batch decided and its acks judged; a replica's take of a push, up to
//!   where it shows; whether a read may be answered).
//! - [`failover`]: the role under failover through etcd, as states; no I/O; `etcd_side.rs`
//!   holds its keys, records and transactions in etcd, `elect.rs` performs its effects
//!   (etcd lease, members, election, in-sync record), `switchover.rs`
//!   the planned handover, `status.rs` `/health`, `/ready` and `/metrics`.
//! - [`refusal`]: why a catalog may not decide a write or answer a read now, as types.
//! - [`store`]: the CSV files in the data directory.
//! - [`import`]: `bazar-catalog import FILE`.
//! - [`node`]: one catalog process: settings, HTTP routes and reads; `primary.rs` its
//!   group commit, pushes and the bringing of replicas back in sync; `replica.rs` applying
//!   pushes, catching up (from the primary's log, or a whole copy page by page) and leases.
//!
//! The protocol, in short: the primary alone decides writes. It serialises them, gives
//! each the next sequence number, persists it (one fsync for a batch), fences the caches
//! (front ends' near caches, memcached markers) while it pushes the book's new state to
//! every replica, makes the batch readable, acknowledges it, and then sends the commit
//! notice (or leaves it to the next batch's push, when one waits). A replica forwards
//! writes to the primary and relays the answer, applies pushes strictly in sequence, and
//! after a start or a gap catches up (the primary's log, or a copy of its whole catalog)
//! before it answers reads again.

pub mod config;
pub mod core;
mod elect;
mod etcd_side;
pub mod failover;
pub mod import;
pub mod lease;
mod mailbox;
pub mod near;
pub mod node;
mod primary;
mod recent;
pub mod refusal;
mod replica;
#[cfg(test)]
mod sim;
pub mod state;
mod status;
pub mod store;
mod switchover;

pub use config::{CatalogConfig, Role};
pub use node::CatalogNode;
