//! The [`EventStore`] trait, its backends ([`MemoryStore`], `SqliteStore`,
//! `PostgresStore`) with their options and views, and how they fail.

mod deadline;
mod erased;
mod error;
mod memory;
#[cfg(feature = "postgres")]
mod postgres;
mod read;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql;
#[cfg(feature = "sqlite")]
mod sqlite;

use std::future::Future;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use uuid::Uuid;

pub use crate::database::DatabaseError;
pub use crate::envelope::NewEvent;
pub use deadline::{
    DeadlineChanges, DeadlineCounts, DeadlineFailure, DeadlineFilter, DeadlineWrite, DueQuery,
    ScheduledDeadline, StoredDeadline,
};
pub(crate) use erased::DynEventStore;
pub use error::{Conflict, RowLocation, StoreError};
pub use memory::MemoryStore;
#[cfg(feature = "postgres")]
pub use postgres::{PostgresOptions, PostgresStore, PostgresViews};
pub(crate) use read::weight;
pub use read::{Matching, ReadLimit};
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) use sql::database_error;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use sql::{InvalidTablePrefix, TablePrefix};
#[cfg(feature = "sqlite")]
pub use sqlite::{SqliteOptions, SqliteStore, SqliteViews};

use crate::boundary::{AppendCondition, EventQuery};
use crate::envelope::{Envelope, JsonPayload};
use crate::view::ViewStore;

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

    /// Appends several batches, each to its stream at its own expected
    /// version and checked on its own as [`append`](Self::append) checks
    /// it, in the order given (a stream may come twice: its second batch
    /// expects the version after its first). Returns each batch's outcome
    /// in that order: one refused batch records nothing of its own and
    /// leaves the others be.
    ///
    /// The SQL stores write all of them in one transaction and one commit
    /// (PostgreSQL within its group commit, as many at a time as a group
    /// holds), which is how a consumer records a broker's batch; the
    /// default appends them one after the other. A failure of the
    /// transaction itself is every batch's outcome.
    ///
    /// A batch's [`deadlines`](StreamAppend::deadlines) are written with its
    /// events, and its version is checked even when it has no events. The
    /// default keeps no deadlines: it refuses a batch that carries any with
    /// [`StoreError::Unsupported`].
    fn append_streams(
        &self,
        appends: Vec<StreamAppend>,
    ) -> impl Future<Output = Vec<Result<Vec<Envelope>, StoreError>>> + Send {
        async move {
            let mut outcomes = Vec::with_capacity(appends.len());
            for append in appends {
                if !append.deadlines.is_empty() {
                    outcomes.push(Err(StoreError::Unsupported { what: "deadlines" }));
                    continue;
                }
                outcomes.push(
                    self.append(
                        &append.aggregate_type,
                        &append.aggregate_id,
                        append.expected_version,
                        append.events,
                    )
                    .await,
                );
            }
            outcomes
        }
    }

    /// The events `query` matches at positions after `after` (0 for all),
    /// in position order, and the log's head when they were read: no event
    /// the query matches is recorded at a position up to that head and
    /// missing from the answer, so the head is the `after` of a
    /// [`append_if`](Self::append_if) that decides on them. The default
    /// keeps no tags: [`StoreError::Unsupported`].
    fn read_matching(
        &self,
        query: EventQuery,
        after: u64,
    ) -> impl Future<Output = Result<Matching, StoreError>> + Send {
        let _ = (query, after);
        std::future::ready(Err(StoreError::Unsupported {
            what: "event queries",
        }))
    }

    /// Appends `events` at the end of a stream (whatever its version) if
    /// no event `condition.query` matches was recorded after
    /// `condition.after`; otherwise records nothing and gives
    /// [`StoreError::BoundaryChanged`] with the first such position. The
    /// check and the append are one step for every writer of the log:
    /// plain appends too, so an aggregate's event the query matches fails
    /// the condition as a decision's would. A batch whose first event
    /// carries a command id the stream holds gives
    /// [`StoreError::DuplicateCommand`], as [`append`](Self::append). The
    /// default keeps no tags: [`StoreError::Unsupported`].
    fn append_if(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        events: Vec<NewEvent>,
        condition: AppendCondition,
    ) -> impl Future<Output = Result<Vec<Envelope>, StoreError>> + Send {
        let _ = (aggregate_type, aggregate_id, events, condition);
        std::future::ready(Err(StoreError::Unsupported {
            what: "conditional appends",
        }))
    }

    /// The pending deadlines the query selects (due at its `now` or
    /// before, of the aggregate types it names), earliest first (then by
    /// id), at most its `limit`. A store that keeps no deadlines has none.
    fn due_deadlines(
        &self,
        query: DueQuery,
    ) -> impl Future<Output = Result<Vec<StoredDeadline>, StoreError>> + Send {
        let _ = query;
        std::future::ready(Ok(Vec::new()))
    }

    /// Records that firing a deadline failed: it is fired again at
    /// `retry_at`, or parked if there is none. A deadline no longer
    /// pending (fired or cancelled meanwhile) is left be.
    fn deadline_failed(
        &self,
        failure: DeadlineFailure,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        let _ = failure;
        std::future::ready(Ok(()))
    }

    /// Fires a pending deadline (a parked one too) again at `at`, its
    /// attempts forgotten. False if it is no longer pending.
    fn retry_deadline(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        deadline_id: Uuid,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        let _ = (aggregate_type, aggregate_id, deadline_id, at);
        std::future::ready(Ok(false))
    }

    /// The pending deadlines the filter selects, parked ones too, earliest
    /// due first (then by id): for operators and tools.
    fn deadlines(
        &self,
        filter: DeadlineFilter,
    ) -> impl Future<Output = Result<Vec<StoredDeadline>, StoreError>> + Send {
        let _ = filter;
        std::future::ready(Ok(Vec::new()))
    }

    /// How many deadlines are pending, due at `now` and parked, of the
    /// owner types named (all when `None`). It counts every row: call it
    /// for a status, not on every step.
    fn deadline_counts(
        &self,
        now: DateTime<Utc>,
        owner_types: Option<Vec<String>>,
    ) -> impl Future<Output = Result<DeadlineCounts, StoreError>> + Send {
        let _ = (now, owner_types);
        std::future::ready(Ok(DeadlineCounts::default()))
    }

    /// Applies changes to one owner's deadlines outside any append, in one
    /// transaction: a process manager's schedules and cancels, the consume
    /// of one of its deadlines that fired (refused with
    /// [`StoreError::DeadlineGone`], writing nothing, unless that deadline
    /// is still pending), an operator's cancel. See
    /// [`DeadlineChanges::origin`] for how changes made out of order are
    /// ordered. A cancel leaves a deadline being fired
    /// ([`claim_deadline`](Self::claim_deadline)) be: its fire goes on.
    /// The default keeps no deadlines: [`StoreError::Unsupported`].
    fn change_deadlines(
        &self,
        changes: DeadlineChanges,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        let _ = changes;
        std::future::ready(Err(StoreError::Unsupported { what: "deadlines" }))
    }

    /// Claims a due deadline to fire it (a process manager's, whose fire
    /// sends commands before it can consume the deadline): from now on a
    /// cancel leaves it be, and no other claim takes it until `until`,
    /// when it is due again (the claimant died). False if it is not
    /// pending, parked, not due at `now`, or claimed by another until
    /// later.
    fn claim_deadline(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        deadline_id: Uuid,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        let _ = (aggregate_type, aggregate_id, deadline_id, now, until);
        std::future::ready(Ok(false))
    }

    /// The pending deadlines of one stream, parked ones too, earliest due
    /// first.
    fn load_deadlines(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> impl Future<Output = Result<Vec<StoredDeadline>, StoreError>> + Send {
        let _ = (aggregate_type, aggregate_id);
        std::future::ready(Ok(Vec::new()))
    }

    /// The events of one stream with a sequence of `from_sequence` or more,
    /// in order and without a gap ([`StoreError::Corrupt`] where one is
    /// missing). An aggregate id no stream can have (see
    /// [`MAX_AGGREGATE_ID_BYTES`]) has no events.
    fn load(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        from_sequence: u64,
    ) -> impl Future<Output = Result<Vec<Envelope>, StoreError>> + Send;

    /// Events of the global log from `from_position` on, in position order,
    /// as many as `limit` admits (a count, or a [`ReadLimit`] with a byte
    /// budget).
    ///
    /// Positions are dense and handed out in commit order: an event that is
    /// not visible yet can only ever get a position above every visible one,
    /// so a reader that resumes from the last position it saw misses nothing.
    /// A read that finds no event at `from_position` but one after it reports
    /// the gap as [`StoreError::Corrupt`]; one that meets a gap or a corrupt
    /// row later stops before it. A page shorter than asked for is therefore
    /// not the end of the log: read on from after its last event until a read
    /// comes back empty. (The SQL stores size a page by the stored length of
    /// each payload; PostgreSQL measures a large payload by its text, a small
    /// one by its stored form.)
    fn read_all(
        &self,
        from_position: u64,
        limit: impl Into<ReadLimit> + Send,
    ) -> impl Future<Output = Result<Vec<Envelope>, StoreError>> + Send;

    /// The position of the newest event in the log; 0 when it is empty.
    fn last_position(&self) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Resolves when another process may have appended, for backends that
    /// can tell (PostgreSQL listens for the append function's notifications).
    /// Event processors also poll, so the default never resolves.
    fn wait_for_appends(&self) -> impl Future<Output = ()> + Send {
        std::future::pending()
    }

    /// The events of the stream recorded with this command id in their
    /// [`Metadata::command_id`](crate::Metadata::command_id) (each event
    /// keeps its own), in sequence order; empty when there are none. Found by
    /// an index, without reading the rest of the stream: this is how a
    /// repeated command is answered with its first outcome.
    fn load_command(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        command_id: Uuid,
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

    /// Where the app keeps its views and processors' checkpoints unless it
    /// is given others: the SQL stores' own tables next to the events. The
    /// default keeps them in memory, which a store that outlives its process
    /// should override (a processor in memory starts from the log's first
    /// event again after every restart).
    fn views(&self) -> ViewStore {
        ViewStore::in_memory()
    }

    /// The backend's name on spans and metric labels, such as `sqlite`.
    fn backend(&self) -> &'static str {
        "custom"
    }
}

/// One stream's batch for [`EventStore::append_streams`]: what
/// [`EventStore::append`] takes, as a value.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamAppend {
    /// The aggregate type of the stream.
    pub aggregate_type: String,
    /// The aggregate instance.
    pub aggregate_id: String,
    /// The version the stream must be at (0 for a new stream).
    pub expected_version: u64,
    /// The events to append, in order.
    pub events: Vec<NewEvent>,
    /// What the batch does to the stream's deadlines, in order, recorded
    /// with its events or not at all.
    pub deadlines: Vec<DeadlineWrite>,
}

impl StreamAppend {
    /// `events` for the stream of `aggregate_type` and `aggregate_id`, at
    /// `expected_version`.
    pub fn new(
        aggregate_type: impl Into<String>,
        aggregate_id: impl Into<String>,
        expected_version: u64,
        events: Vec<NewEvent>,
    ) -> Self {
        Self {
            aggregate_type: aggregate_type.into(),
            aggregate_id: aggregate_id.into(),
            expected_version,
            events,
            deadlines: Vec::new(),
        }
    }

    /// The same batch, also writing `deadlines`.
    pub fn with_deadlines(mut self, deadlines: Vec<DeadlineWrite>) -> Self {
        self.deadlines = deadlines;
        self
    }
}

/// The longest aggregate id a store accepts, in bytes. PostgreSQL indexes
/// cannot hold much longer keys, and every backend has the same limit so none
/// accepts what another rejects.
pub const MAX_AGGREGATE_ID_BYTES: usize = 1024;

/// The rules every backend applies to a stream before appending: an aggregate
/// id of 1 to [`MAX_AGGREGATE_ID_BYTES`] bytes, and no NUL character in the
/// aggregate type or id (which PostgreSQL text cannot hold).
pub(crate) fn check_stream(aggregate_type: &str, aggregate_id: &str) -> Result<(), StoreError> {
    let reason = if aggregate_id.is_empty() {
        "the aggregate id is empty".to_owned()
    } else if aggregate_id.len() > MAX_AGGREGATE_ID_BYTES {
        format!(
            "the aggregate id is {} bytes long; the limit is {MAX_AGGREGATE_ID_BYTES}",
            aggregate_id.len()
        )
    } else if has_nul(aggregate_id) || has_nul(aggregate_type) {
        "the aggregate id or type contains a NUL character".to_owned()
    } else {
        return Ok(());
    };
    let shown: String = aggregate_id.chars().take(64).collect();
    Err(rejected(aggregate_type, &shown, reason))
}

/// Whether a stream with this type and id can exist: reads of any other
/// find nothing, on every backend alike.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn is_stream(aggregate_type: &str, aggregate_id: &str) -> bool {
    check_stream(aggregate_type, aggregate_id).is_ok()
}

/// The rules every backend applies to a batch before appending, so none
/// accepts what another rejects: the stream's, a name for every event, and
/// payloads and metadata that are JSON PostgreSQL can store (no NUL).
pub(crate) fn check_batch(
    aggregate_type: &str,
    aggregate_id: &str,
    events: &[NewEvent],
) -> Result<(), StoreError> {
    check_stream(aggregate_type, aggregate_id)?;
    for event in events {
        let reason = if event.event_name.is_empty() || has_nul(event.event_name) {
            format!(
                "event name `{}` is empty or contains NUL",
                event.event_name.escape_debug()
            )
        } else if !event.payload.is_json() {
            format!("the payload of `{}` is not JSON", event.event_name)
        } else if escapes_nul(event.payload.as_str()) {
            format!(
                "the payload of `{}` contains a NUL character (\\u0000)",
                event.event_name
            )
        } else if event
            .metadata
            .values
            .iter()
            .any(|(key, value)| has_nul(key) || has_nul(value))
        {
            format!(
                "the metadata of `{}` contains a NUL character",
                event.event_name
            )
        } else {
            continue;
        };
        return Err(rejected(aggregate_type, aggregate_id, reason));
    }
    Ok(())
}

pub(crate) fn rejected(aggregate_type: &str, aggregate_id: &str, reason: String) -> StoreError {
    StoreError::Rejected {
        aggregate_type: aggregate_type.to_owned(),
        aggregate_id: aggregate_id.to_owned(),
        reason,
    }
}

/// Whether text holds a NUL character (a byte search: far cheaper than a
/// `char` one on the append path).
fn has_nul(text: &str) -> bool {
    text.as_bytes().contains(&0)
}

/// Whether JSON text holds the escape `\u0000`: a backslash that is itself
/// escaped (`\\u0000`) does not count.
fn escapes_nul(json: &str) -> bool {
    let bytes = json.as_bytes();
    if !bytes.contains(&b'\\') {
        return false;
    }
    let mut from = 0;
    while let Some(found) = json[from..].find("u0000") {
        let at = from + found;
        let backslashes = bytes[..at]
            .iter()
            .rev()
            .take_while(|&&b| b == b'\\')
            .count();
        if backslashes % 2 == 1 {
            return true;
        }
        from = at + 1;
    }
    false
}

/// The stream's hash, the same in every process and release: FNV-1a of
/// the aggregate type and id, its halves folded. A stream's segment of N is
/// this modulo N (the stores keep it beside each deadline, so a due query
/// selects one segment's).
pub(crate) fn stream_hash(aggregate_type: &str, aggregate_id: &str) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in aggregate_type
        .bytes()
        .chain([0])
        .chain(aggregate_id.bytes())
    {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    // The high bits of FNV-1a mix better than the low ones.
    ((hash >> 32) ^ (hash & 0xffff_ffff)) as u32
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

    fn append_streams(
        &self,
        appends: Vec<StreamAppend>,
    ) -> impl Future<Output = Vec<Result<Vec<Envelope>, StoreError>>> + Send {
        S::append_streams(self, appends)
    }

    fn read_matching(
        &self,
        query: EventQuery,
        after: u64,
    ) -> impl Future<Output = Result<Matching, StoreError>> + Send {
        S::read_matching(self, query, after)
    }

    fn append_if(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        events: Vec<NewEvent>,
        condition: AppendCondition,
    ) -> impl Future<Output = Result<Vec<Envelope>, StoreError>> + Send {
        S::append_if(self, aggregate_type, aggregate_id, events, condition)
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
        limit: impl Into<ReadLimit> + Send,
    ) -> impl Future<Output = Result<Vec<Envelope>, StoreError>> + Send {
        S::read_all(self, from_position, limit)
    }

    fn last_position(&self) -> impl Future<Output = Result<u64, StoreError>> + Send {
        S::last_position(self)
    }

    fn wait_for_appends(&self) -> impl Future<Output = ()> + Send {
        S::wait_for_appends(self)
    }

    fn load_command(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        command_id: Uuid,
    ) -> impl Future<Output = Result<Vec<Envelope>, StoreError>> + Send {
        S::load_command(self, aggregate_type, aggregate_id, command_id)
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

    fn due_deadlines(
        &self,
        query: DueQuery,
    ) -> impl Future<Output = Result<Vec<StoredDeadline>, StoreError>> + Send {
        S::due_deadlines(self, query)
    }

    fn load_deadlines(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> impl Future<Output = Result<Vec<StoredDeadline>, StoreError>> + Send {
        S::load_deadlines(self, aggregate_type, aggregate_id)
    }

    fn retry_deadline(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        deadline_id: Uuid,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        S::retry_deadline(self, aggregate_type, aggregate_id, deadline_id, at)
    }

    fn deadline_failed(
        &self,
        failure: DeadlineFailure,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        S::deadline_failed(self, failure)
    }

    fn change_deadlines(
        &self,
        changes: DeadlineChanges,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        S::change_deadlines(self, changes)
    }

    fn deadlines(
        &self,
        filter: DeadlineFilter,
    ) -> impl Future<Output = Result<Vec<StoredDeadline>, StoreError>> + Send {
        S::deadlines(self, filter)
    }

    fn deadline_counts(
        &self,
        now: DateTime<Utc>,
        owner_types: Option<Vec<String>>,
    ) -> impl Future<Output = Result<DeadlineCounts, StoreError>> + Send {
        S::deadline_counts(self, now, owner_types)
    }

    fn claim_deadline(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        deadline_id: Uuid,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        S::claim_deadline(self, aggregate_type, aggregate_id, deadline_id, now, until)
    }

    fn views(&self) -> ViewStore {
        S::views(self)
    }

    fn backend(&self) -> &'static str {
        (**self).backend()
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};

    use super::{escapes_nul, timestamp};

    #[test]
    fn only_an_unescaped_backslash_makes_a_nul() {
        assert!(escapes_nul(r#"{"a":"\u0000"}"#));
        assert!(escapes_nul(r#"["x\\\u0000"]"#));
        assert!(!escapes_nul(r#"{"a":"\\u0000"}"#));
        assert!(!escapes_nul(r#"{"u0000":1}"#));
        assert!(escapes_nul(r#"{"a":"\u00001"}"#));
    }

    #[test]
    fn timestamps_match_chrono_across_days() {
        const DAY: i64 = 86_400_000_000;
        let mut micros = vec![
            0,
            1,
            -1,
            DAY - 1,
            DAY,
            -DAY,
            -DAY - 1,
            1_790_000_000_123_456,
        ];
        // Consecutive microseconds across midnight, where the cached day changes.
        micros.extend(
            (1..4).flat_map(|day| (-2..2).map(move |offset| 20_000 * DAY + day * DAY + offset)),
        );
        // And days far apart, in an order that misses the cache each time.
        micros.extend(
            (0..200).map(|n: i64| (n * 7_919 % 200 - 100) * 3_000 * DAY / 100 + n * 1_234_567),
        );
        for micros in micros {
            let expected = DateTime::<Utc>::from_timestamp_micros(micros).expect("in range");
            assert_eq!(timestamp(micros), expected, "{micros} µs");
        }
    }
}
