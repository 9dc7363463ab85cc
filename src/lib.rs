//! The example domains, written once and used by `examples/`, the
//! cross-crate tests in `tests/` and the benchmarks: [`bank`], the account
//! of the README, and [`shop`], orders, stock and payments with a checkout
//! process manager. The runtime is `cqrs-core`; the macros are `cqrs-derive`.

pub mod bank;
pub mod shop;

/// The README's quick start, compiled and run as a doctest.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
