//! The workspace root: `examples/` and the cross-crate tests in `tests/`.
//! The runtime is `cqrs-core`; the macros are `cqrs-derive`.

/// The README's quick start, compiled and run as a doctest.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
