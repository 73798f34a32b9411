//! The front end: the public API, round robin over the back ends, and the read cache.
//!
//! `GET /search/{topic}` and `GET /info/{id}` go to the catalog pool (answered from the
//! near cache in this process, [`near`] and [`watch`], or from memcached when cached, see
//! [`crate::cache`]); `POST /purchase/{id}` goes to the order pool, unless a browser says
//! it comes from another web site ([`origin`]: a 403). Reads are retried on the next
//! replica when one fails or is catching up; a purchase is retried only when it surely
//! never reached the server that failed.
//!
//! It also serves two pages from the binary ([`pages`]): the storefront at `/` and the
//! operator's dashboard at `/dashboard`, whose data is `GET /cluster` ([`cluster`]).
//! `GET /traces` and `GET /traces/{trace_id}` ([`traces`]) show the recent traces and
//! gather one trace's spans from every back end.

pub mod cluster;
pub mod near;
pub mod node;
pub mod origin;
pub mod pages;
pub mod traces;
pub mod watch;

pub use node::{Frontend, FrontendConfig};
