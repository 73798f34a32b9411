//! Bazar: a small online bookstore built as a replicated multi-tier system.
//!
//! # Layout
//! - [`catalog`]: the catalog service (books, prices, stock): primary and replicas, the
//!   remote-write protocol, replication pushes and catch-up.
//! - [`order`]: the order service: purchases and the order log shared between servers.
//! - [`frontend`]: the public API, round-robin load balancing, the memcached read cache,
//!   the storefront and dashboard pages and `GET /cluster` behind the dashboard.
//! - [`cache`]: memcached lookups, fills and the push invalidation protocol.
//! - [`etcd`]: etcd v3 through its JSON gateway, the configuration manager of failover.
//! - [`cluster`]: the one-machine launcher behind `bazar-cluster`.
//! - [`lab`]: `bazar-cluster`'s lab API (faults on its own processes, a switchover) and the
//!   probe whose live verdict says whether the store kept its promises.
//! - [`bench`](mod@bench): the load generator and the lab experiments behind `bazar-bench`.
//! - [`http`]: the HTTP/1.1 server every service runs on (limits, timeouts, shutdown).
//! - [`client`]: typed clients for calls between services (one configured ureq agent),
//!   failing with a [`error::PeerError`] that says whether the request may have been sent.
//! - [`linearizable`]: the linearizability checker of book histories and its explanations
//!   (the tests, the lab's verdict and `bazar-bench check` use it).
//! - [`trace`]: W3C Trace Context between services, the spans each service records, its
//!   bounded ring of them and their export to an OTLP collector.
//! - [`page`]: `limit`, `after` and the `Link` header of paged lists.
//! - [`batch`]: batches that form themselves under load (a leader/follower group, as in a
//!   group commit), no I/O: the front end's purchases, the order server's takes from the
//!   catalog and pushes to its peers.
//! - [`balance`]: round robin with a passive health check, and the one loop that tries
//!   each back end in turn.
//! - [`wire`]: every JSON body on the wire; [`money`]: exact prices; [`ids`]: random
//!   identities, order ids and their order, order times.
//! - [`lease`]: the one lease arithmetic (holder and grantor) of the replicas' read leases,
//!   the front ends' near-cache leases and the primary's leadership in etcd.
//! - [`storage`]: atomic file replacement and durable appends; [`storage::StorageError`].
//! - [`error`]: the error of a request, and the one mapping of every layer's error to an
//!   HTTP status.
//! - [`config`], [`metrics`], [`shutdown`], [`service`]: the plumbing.
//!
//! Binaries in `src/bin/` are thin: they read their config, start logging, bind, install
//! the signal handler and call [`service::run`].

pub mod balance;
pub mod batch;
pub mod bench;
pub mod cache;
pub mod catalog;
pub mod client;
pub mod cluster;
pub mod config;
pub mod error;
pub mod etcd;
pub mod frontend;
pub mod http;
pub mod ids;
pub mod lab;
pub mod lease;
pub mod linearizable;
pub mod metrics;
pub mod money;
pub mod order;
pub mod page;
pub mod service;
pub mod shutdown;
pub mod storage;
pub mod trace;
pub mod wire;

pub use error::{Error, Result};
