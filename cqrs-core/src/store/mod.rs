//! The [`EventStore`] trait and its backends.

mod memory;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql;
#[cfg(feature = "sqlite")]
mod sqlite;

use std::future::Future;
use std::sync::Arc;

use chrono::{DateTime, Utc};

pub use memory::MemoryStore;
#[cfg(feature = "postgres")]
pub use postgres::PostgresStore;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use sql::{InvalidTablePrefix, TablePrefix};
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStore;

use crate::envelope::{Envelope, JsonPayload, NewEvent};
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
    ///
    /// Positions are dense and handed out in commit order: an event that is
    /// not visible yet can only ever get a position above every visible one,
    /// so a reader that resumes from the last position it saw misses nothing.
    fn read_all(
        &self,
        from_position: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Envelope>, StoreError>> + Send;

    /// The newest snapshot of an aggregate, if one was saved.
    fn load_snapshot(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> impl Future<Output = Result<Option<Snapshot>, StoreError>> + Send;

    /// Keeps `snapshot` unless the store holds a newer one of the aggregate.
    fn save_snapshot(
        &self,
        snapshot: Snapshot,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// The longest aggregate id a store accepts, in bytes. PostgreSQL indexes
/// cannot hold much longer keys, and every backend has the same limit so none
/// accepts what another rejects.
pub const MAX_AGGREGATE_ID_BYTES: usize = 1024;

/// The rules every backend applies to a stream before appending: an aggregate
/// id of 1 to [`MAX_AGGREGATE_ID_BYTES`] bytes without NUL characters (which
/// PostgreSQL text cannot hold).
pub(crate) fn check_stream(aggregate_type: &str, aggregate_id: &str) -> Result<(), StoreError> {
    let reason = if aggregate_id.is_empty() {
        "the aggregate id is empty".to_owned()
    } else if aggregate_id.len() > MAX_AGGREGATE_ID_BYTES {
        format!(
            "the aggregate id is {} bytes long; the limit is {MAX_AGGREGATE_ID_BYTES}",
            aggregate_id.len()
        )
    } else if aggregate_id.contains('\0') || aggregate_type.contains('\0') {
        "the aggregate id or type contains a NUL character".to_owned()
    } else {
        return Ok(());
    };
    Err(StoreError::Rejected {
        aggregate_type: aggregate_type.to_owned(),
        aggregate_id: aggregate_id.chars().take(64).collect(),
        reason,
    })
}

/// The current time at the precision every backend keeps: microseconds.
pub(crate) fn now() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now)
}

/// An aggregate's serialized state at a version, so loading replays only the
/// events after it.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// The aggregate's stored name.
    pub aggregate_type: String,
    /// The aggregate instance.
    pub aggregate_id: String,
    /// The number of events the state reflects.
    pub version: u64,
    /// `#[aggregate(snapshot_version = ..)]` when it was taken: a snapshot of
    /// another schema version is ignored.
    pub schema_version: u32,
    /// The serialized state.
    pub state: JsonPayload,
    /// When it was taken.
    pub taken_at: DateTime<Utc>,
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

    fn load_snapshot(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> impl Future<Output = Result<Option<Snapshot>, StoreError>> + Send {
        S::load_snapshot(self, aggregate_type, aggregate_id)
    }

    fn save_snapshot(
        &self,
        snapshot: Snapshot,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        S::save_snapshot(self, snapshot)
    }
}

/// Why an event store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The stream was not at the expected version; nothing was appended.
    #[error(transparent)]
    Conflict(#[from] Conflict),

    /// The batch breaks a rule of the store, such as a reused event id;
    /// nothing was appended.
    #[error("rejected append to {aggregate_type} `{aggregate_id}`: {reason}")]
    Rejected {
        /// The stream's aggregate type.
        aggregate_type: String,
        /// The stream's aggregate id.
        aggregate_id: String,
        /// What rule the batch breaks.
        reason: String,
    },

    /// A stored row that does not read back as an envelope, such as metadata
    /// that is not JSON. The rest of the store stays readable.
    #[error("corrupt row at position {position}: {reason}")]
    Corrupt {
        /// The row's global position.
        position: u64,
        /// What is wrong with it.
        reason: String,
    },

    /// The database's schema was written by a newer version of this crate.
    #[error("the event store schema is at version {found}; this build knows up to {known}")]
    SchemaTooNew {
        /// The schema version found in the database.
        found: i64,
        /// The newest schema version this build can use.
        known: i64,
    },

    /// The database failed or could not be reached.
    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
}
