//! The [`EventStore`] trait and its backends.

mod memory;

use std::future::Future;
use std::sync::Arc;

pub use memory::MemoryStore;

use crate::envelope::{Envelope, NewEvent};
use crate::error::Conflict;

/// An append-only log of events, grouped into streams (one per aggregate) and
/// totally ordered by a global position.
///
/// Every backend passes the same conformance suite: appends are atomic and
/// checked against an expected version, a stream loads in sequence order, and
/// `read_all` returns each committed event exactly once in position order.
///
/// The futures are `Send` and tied to no async runtime.
pub trait EventStore: Send + Sync + 'static {
    /// Appends `events` to a stream as one atomic batch, if the stream is at
    /// `expected_version` (0 for a new stream). Returns the committed envelopes.
    ///
    /// A stream at any other version gives [`StoreError::Conflict`] and records nothing.
    fn append(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        expected_version: u64,
        events: Vec<NewEvent>,
    ) -> impl Future<Output = Result<Vec<Envelope>, StoreError>> + Send;

    /// The events of one stream with a sequence of `from_sequence` or more, in order.
    fn load(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        from_sequence: u64,
    ) -> impl Future<Output = Result<Vec<Envelope>, StoreError>> + Send;

    /// Up to `limit` events of the global log with a position of `from_position`
    /// or more, in position order.
    fn read_all(
        &self,
        from_position: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Envelope>, StoreError>> + Send;
}

impl<S: EventStore> EventStore for Arc<S> {
    fn append(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        expected_version: u64,
        events: Vec<NewEvent>,
    ) -> impl Future<Output = Result<Vec<Envelope>, StoreError>> + Send {
        S::append(self, aggregate_type, aggregate_id, expected_version, events)
    }

    fn load(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        from_sequence: u64,
    ) -> impl Future<Output = Result<Vec<Envelope>, StoreError>> + Send {
        S::load(self, aggregate_type, aggregate_id, from_sequence)
    }

    fn read_all(
        &self,
        from_position: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Envelope>, StoreError>> + Send {
        S::read_all(self, from_position, limit)
    }
}

/// Why an event store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The stream was not at the expected version; nothing was appended.
    #[error(transparent)]
    Conflict(#[from] Conflict),

    /// The batch breaks a rule of the store, such as a reused event id.
    #[error("rejected append to {aggregate_type} `{aggregate_id}`: {reason}")]
    Rejected {
        /// The stream's aggregate type.
        aggregate_type: String,
        /// The stream's aggregate id.
        aggregate_id: String,
        /// What rule the batch breaks.
        reason: String,
    },
}
