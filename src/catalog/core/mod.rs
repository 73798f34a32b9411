//! The catalog's decisions with no I/O: the core that `docs/design/catalog-core.md` plans,
//! as far as it has grown.
//!
//! Every decision here takes what the catalog knows (read under the node's locks today, to
//! be owned by one thread later) and returns what to do; it reads no clock, takes no lock,
//! touches no file or socket, so each rule is tested as a table without a process. The
//! node performs what is decided and feeds the outcome back.
//!
//! - [`batch`]: a group commit's stages after its first decision, in their order (append,
//!   fence and push, wait out lost leases, make safe or give up, confirm, show, notice,
//!   answer), told what happened and saying what to do next.
//! - [`primary`]: a group commit's first decision: which waiting writes are made, with
//!   which numbers, what each is answered, which cache keys they change.
//! - [`read`]: whether a catalog may answer a read now.
//! - [`replica`]: what a replica logs of a push, what it refuses as stale, up to where it
//!   shows its writes, and whether a version answer counts.
//!
//! The other pure pieces of the catalog that the core grows from: `state.rs` (the books and
//! the deciding of writes), `failover/` (the role under etcd, `Core::step`), `near.rs`'s
//! `Table` (the front ends' sessions), `recent.rs` (history and purchase journal) and the
//! store's one lease arithmetic (`crate::lease`).

pub mod batch;
pub mod primary;
pub mod read;
pub mod replica;
