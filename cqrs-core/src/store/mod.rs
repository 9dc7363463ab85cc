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
use uuid::Uuid;

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
    /// A stream at any other version gives [`StoreError::Conflict`] and records
    /// nothing. A batch whose first event carries a command id the stream
    /// already holds gives [`StoreError::DuplicateCommand`] and records nothing.
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

    /// The position of the newest event in the log; 0 when it is empty.
    fn last_position(&self) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Resolves when another process may have appended, for backends that
    /// can tell (PostgreSQL listens for the append function's notifications).
    /// Event processors also poll, so the default never resolves.
    fn wait_for_appends(&self) -> impl Future<Output = ()> + Send {
        std::future::pending()
    }

    /// Whether the stream holds events of the command with this id
    /// ([`Metadata::command_id`](crate::Metadata::command_id)).
    fn has_command(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        command_id: Uuid,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

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
    } else if aggregate_id.as_bytes().contains(&0) || aggregate_type.as_bytes().contains(&0) {
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

/// The command id of a batch: its first event's.
pub(crate) fn command_id(events: &[NewEvent]) -> Option<Uuid> {
    events.first().and_then(|event| event.metadata.command_id)
}

/// The current time at the precision every backend keeps: microseconds.
pub(crate) fn now() -> DateTime<Utc> {
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_micros() as i64);
    timestamp(micros)
}

thread_local! {
    /// The last day a timestamp fell on, as (its first microsecond, its
    /// date): building a date from scratch costs more than the rest of a
    /// timestamp, and consecutive ones share it.
    static DAY: std::cell::Cell<(i64, chrono::NaiveDate)> =
        const { std::cell::Cell::new((i64::MIN, chrono::NaiveDate::MIN)) };
}

/// A UTC time from microseconds since the Unix epoch.
fn timestamp(micros: i64) -> DateTime<Utc> {
    const DAY_MICROS: i64 = 86_400_000_000;
    let day_start = micros - micros.rem_euclid(DAY_MICROS);
    let date = DAY.with(|day| match day.get() {
        (start, date) if start == day_start => Some(date),
        _ => {
            let date = DateTime::from_timestamp_micros(day_start)?.date_naive();
            day.set((day_start, date));
            Some(date)
        }
    });
    let within = micros - day_start;
    let time = chrono::NaiveTime::from_num_seconds_from_midnight_opt(
        (within / 1_000_000) as u32,
        (within % 1_000_000) as u32 * 1_000,
    );
    match (date, time) {
        (Some(date), Some(time)) => date.and_time(time).and_utc(),
        _ => DateTime::UNIX_EPOCH,
    }
}

pub(crate) use crate::view::BoxFuture;

/// [`EventStore`] with boxed futures, so the runtime can hold any store
/// without naming its type.
pub(crate) trait DynEventStore: Send + Sync {
    fn append<'a>(
        &'a self,
        aggregate_type: &'a str,
        aggregate_id: &'a str,
        expected_version: u64,
        events: Vec<NewEvent>,
    ) -> BoxFuture<'a, Result<Vec<Envelope>, StoreError>>;

    fn load<'a>(
        &'a self,
        aggregate_type: &'a str,
        aggregate_id: &'a str,
        from_sequence: u64,
    ) -> BoxFuture<'a, Result<Vec<Envelope>, StoreError>>;

    fn read_all(
        &self,
        from_position: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<Envelope>, StoreError>>;

    fn has_command<'a>(
        &'a self,
        aggregate_type: &'a str,
        aggregate_id: &'a str,
        command_id: Uuid,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;

    fn last_position(&self) -> BoxFuture<'_, Result<u64, StoreError>>;

    fn wait_for_appends(&self) -> BoxFuture<'_, ()>;

    fn load_snapshot<'a>(
        &'a self,
        aggregate_type: &'a str,
        aggregate_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Snapshot>, StoreError>>;

    fn save_snapshot(&self, snapshot: Snapshot) -> BoxFuture<'_, Result<(), StoreError>>;
}

impl<S: EventStore> DynEventStore for S {
    fn append<'a>(
        &'a self,
        aggregate_type: &'a str,
        aggregate_id: &'a str,
        expected_version: u64,
        events: Vec<NewEvent>,
    ) -> BoxFuture<'a, Result<Vec<Envelope>, StoreError>> {
        Box::pin(EventStore::append(
            self,
            aggregate_type,
            aggregate_id,
            expected_version,
            events,
        ))
    }

    fn load<'a>(
        &'a self,
        aggregate_type: &'a str,
        aggregate_id: &'a str,
        from_sequence: u64,
    ) -> BoxFuture<'a, Result<Vec<Envelope>, StoreError>> {
        Box::pin(EventStore::load(
            self,
            aggregate_type,
            aggregate_id,
            from_sequence,
        ))
    }

    fn read_all(
        &self,
        from_position: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<Envelope>, StoreError>> {
        Box::pin(EventStore::read_all(self, from_position, limit))
    }

    fn has_command<'a>(
        &'a self,
        aggregate_type: &'a str,
        aggregate_id: &'a str,
        command_id: Uuid,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(EventStore::has_command(
            self,
            aggregate_type,
            aggregate_id,
            command_id,
        ))
    }

    fn last_position(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(EventStore::last_position(self))
    }

    fn wait_for_appends(&self) -> BoxFuture<'_, ()> {
        Box::pin(EventStore::wait_for_appends(self))
    }

    fn load_snapshot<'a>(
        &'a self,
        aggregate_type: &'a str,
        aggregate_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Snapshot>, StoreError>> {
        Box::pin(EventStore::load_snapshot(
            self,
            aggregate_type,
            aggregate_id,
        ))
    }

    fn save_snapshot(&self, snapshot: Snapshot) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(EventStore::save_snapshot(self, snapshot))
    }
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

    fn last_position(&self) -> impl Future<Output = Result<u64, StoreError>> + Send {
        S::last_position(self)
    }

    fn wait_for_appends(&self) -> impl Future<Output = ()> + Send {
        S::wait_for_appends(self)
    }

    fn has_command(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        command_id: Uuid,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        S::has_command(self, aggregate_type, aggregate_id, command_id)
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

    /// The stream already holds events of this command id; nothing was appended.
    #[error("{aggregate_type} `{aggregate_id}` already recorded command {command_id}")]
    DuplicateCommand {
        /// The stream's aggregate type.
        aggregate_type: String,
        /// The stream's aggregate id.
        aggregate_id: String,
        /// The command id.
        command_id: Uuid,
    },

    /// The task writing this append (with others) was cancelled before it
    /// could tell whether it committed; load the stream to see.
    #[error(
        "the outcome of the append to {aggregate_type} `{aggregate_id}` is unknown: its writer was cancelled"
    )]
    Interrupted {
        /// The stream's aggregate type.
        aggregate_type: String,
        /// The stream's aggregate id.
        aggregate_id: String,
    },

    /// The append was written together with others and the database failed;
    /// nothing of the group was appended.
    #[error("the group of appends failed: {reason}")]
    GroupFailed {
        /// What the database reported.
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
