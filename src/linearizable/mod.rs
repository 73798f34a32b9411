//! Linearizability of a store's books (issue 18): a checker and the explanation of what it
//! refuses, in the library so that the tests, the lab's live verdict (`bazar-cluster`) and
//! `bazar-bench check` all judge histories with the same code.
//!
//! - [`checker`]: the model of a book, histories as recorded or hand-made (JSON), and the
//!   Wing-Gong search with Lowe's memoisation, book by book; bounded by counts, so a verdict
//!   never depends on the machine's speed.
//! - [`explain`]: a failing book's history shrunk to a few operations that still cannot be
//!   linearized, and the text that says why.
//!
//! No I/O here: recording a history (clients, clocks, a store) is the caller's.

pub mod checker;
pub mod explain;

#[cfg(test)]
mod tests;
