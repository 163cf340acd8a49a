//! The storage conformance suite: the contract of the store's interface, checked through
//! `roster::store::open` on both backends. Whatever the HTTP layer or a backend does, these say
//! what a store must answer: typed errors, writes that change nothing when refused, a gapless
//! feed in commit order under racing writers, the engine's full-update and its threshold.

#[path = "../support/scratch.rs"]
mod scratch;

mod contract;
