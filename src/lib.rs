//! The example domains, written once and used by `examples/`, the
//! cross-crate tests in `tests/` and the benchmarks: [`bank`], the account
//! of the README, [`courses`], rules across streams decided on consistency
//! boundaries (course capacity, a student's limit, unique usernames), [`shop`], orders, stock and payments with a checkout
//! process manager, [`shop_http`], that shop as an HTTP service, and
//! [`services`], orders and shipping as two services that talk through a
//! broker. The runtime is `cqrs-core`; the macros are `cqrs-derive`.

pub mod bank;
pub mod courses;
pub mod services;
pub mod shop;
pub mod shop_http;

/// The README's quick start, compiled and run as a doctest.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
