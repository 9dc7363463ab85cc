//! Deadlines as a store keeps them: what an append writes with its events
//! ([`DeadlineWrite`]) and what a due query reads ([`StoredDeadline`]).
//!
//! A deadline belongs to a stream, its owner, and is named by its type's
//! stored name and a key: one pending deadline per owner, name and key.
//! The writes ride in the append of the decision that made them
//! ([`StreamAppend::deadlines`](super::StreamAppend::deadlines)), checked
//! and committed with its events or not at all, and a fire consumes its
//! deadline in the same append as the events it decides on, so a deadline
//! that was cancelled, replaced or fired elsewhere refuses the fire
//! ([`StoreError::DeadlineGone`](super::StoreError::DeadlineGone)).

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{StoreError, escapes_nul, has_nul, rejected};
use crate::envelope::{JsonPayload, Metadata};

/// What an append does to one deadline of its stream.
#[derive(Debug, Clone, PartialEq)]
pub enum DeadlineWrite {
    /// Makes this deadline pending, replacing the stream's pending one of
    /// the same name and key.
    Schedule(ScheduledDeadline),
    /// Cancels the stream's pending deadline of this name and key, if there
    /// is one; none is not an error.
    Cancel {
        /// The deadline type's stored name.
        name: String,
        /// Its key.
        key: String,
    },
    /// Consumes the pending deadline being fired: the append is refused
    /// with [`StoreError::DeadlineGone`](super::StoreError::DeadlineGone),
    /// and records nothing, unless this very deadline is still pending.
    Consume {
        /// The deadline type's stored name.
        name: String,
        /// Its key.
        key: String,
        /// The deadline's id, as scheduled.
        deadline_id: Uuid,
    },
}

/// A deadline an append schedules on its stream.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduledDeadline {
    /// The deadline type's stored name.
    pub name: String,
    /// Tells deadlines of one type on one stream apart (empty by default).
    pub key: String,
    /// This scheduling's id: a deadline scheduled again gets a new one.
    pub deadline_id: Uuid,
    /// When it falls due.
    pub due_at: DateTime<Utc>,
    /// The schema version of its value.
    pub version: u32,
    /// Its value as JSON.
    pub payload: JsonPayload,
    /// The metadata of the decision that scheduled it, handed to the
    /// decision it fires.
    pub metadata: Metadata,
}

/// A pending deadline as a store holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredDeadline {
    /// The aggregate type of the stream that owns it.
    pub aggregate_type: String,
    /// The aggregate id of the stream that owns it.
    pub aggregate_id: String,
    /// The deadline itself.
    pub deadline: ScheduledDeadline,
    /// How many times firing it failed.
    pub attempts: u32,
    /// Why the last of those failed.
    pub last_error: Option<String>,
    /// Its fires kept failing: it is not fired again until
    /// [retried](super::EventStore::retry_deadline) or scheduled again.
    pub parked: bool,
}

/// A fire of a pending deadline that failed, for
/// [`EventStore::deadline_failed`](super::EventStore::deadline_failed).
#[derive(Debug, Clone, PartialEq)]
pub struct DeadlineFailure {
    /// The aggregate type of the stream that owns it.
    pub aggregate_type: String,
    /// The aggregate id of the stream that owns it.
    pub aggregate_id: String,
    /// The deadline, as scheduled.
    pub deadline_id: Uuid,
    /// What went wrong.
    pub error: String,
    /// When to fire it again; `None` parks it: it is not fired again until
    /// an operator retries it.
    pub retry_at: Option<DateTime<Utc>>,
}

/// Changes to one owner's deadlines made outside an append: what a process
/// manager's handler decides (its deadlines belong to an instance of it,
/// not to a stream of events), what firing one of its deadlines consumes,
/// and what an operator cancels.
/// [`EventStore::change_deadlines`](super::EventStore::change_deadlines)
/// applies them in one transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadlineChanges {
    /// The owner's type: the process manager's name (or an aggregate type).
    pub owner_type: String,
    /// The owner's id: the process manager's instance.
    pub owner_id: String,
    /// Orders this owner's changes when they are made out of order: a
    /// change with an origin lower than the last applied to the same
    /// deadline (name and key) is skipped, and one equal to it applies only
    /// while that deadline is still pending (a handler handling its event
    /// again repeats itself; it does not revive what was cancelled or fired
    /// since). `None` applies unconditionally and records no origin (an
    /// operator's cancel).
    pub origin: Option<u64>,
    /// The writes, in order; of several to one deadline only the last
    /// counts, and a [`DeadlineWrite::Consume`] refuses all of them unless
    /// its deadline is still pending (or being fired).
    pub writes: Vec<DeadlineWrite>,
}

impl DeadlineChanges {
    /// The consumes first, then the last write to each deadline, in the
    /// order of those last writes: what the changes come to.
    pub(crate) fn net(&self) -> (Vec<&DeadlineWrite>, Vec<&DeadlineWrite>) {
        let consumes = self
            .writes
            .iter()
            .filter(|write| write.is_consume())
            .collect();
        let mut last: Vec<&DeadlineWrite> = Vec::new();
        for write in self.writes.iter().filter(|write| !write.is_consume()) {
            last.retain(|known| (known.name(), known.key()) != (write.name(), write.key()));
            last.push(write);
        }
        (consumes, last)
    }
}

/// Whether a change made at `origin` applies to a deadline whose last
/// change was made at `last` (`None`: never changed with an origin), when
/// it is (`pending`) or is not still pending: see
/// [`DeadlineChanges::origin`].
pub(crate) fn origin_applies(
    origin: Option<u64>,
    last: Option<u64>,
    write: &DeadlineWrite,
    pending: bool,
) -> bool {
    match (origin, last) {
        (None, _) | (Some(_), None) => true,
        (Some(origin), Some(last)) if origin == last => {
            !matches!(write, DeadlineWrite::Schedule(_)) || pending
        }
        (Some(origin), Some(last)) => origin > last,
    }
}

impl DeadlineWrite {
    /// The deadline type's stored name.
    pub fn name(&self) -> &str {
        match self {
            DeadlineWrite::Schedule(deadline) => &deadline.name,
            DeadlineWrite::Cancel { name, .. } | DeadlineWrite::Consume { name, .. } => name,
        }
    }

    /// Its key.
    pub fn key(&self) -> &str {
        match self {
            DeadlineWrite::Schedule(deadline) => &deadline.key,
            DeadlineWrite::Cancel { key, .. } | DeadlineWrite::Consume { key, .. } => key,
        }
    }

    /// Whether it consumes a deadline being fired.
    pub fn is_consume(&self) -> bool {
        matches!(self, DeadlineWrite::Consume { .. })
    }
}

/// The rules every backend applies to a batch's deadline writes, so none
/// accepts what another rejects: a name, and no NUL in the name, the key,
/// the metadata or the value's JSON (which PostgreSQL text cannot hold).
pub(crate) fn check_writes(
    aggregate_type: &str,
    aggregate_id: &str,
    writes: &[DeadlineWrite],
) -> Result<(), StoreError> {
    for write in writes {
        let (name, key) = (write.name(), write.key());
        let reason = if name.is_empty() || has_nul(name) || has_nul(key) {
            format!(
                "deadline name `{}` is empty, or it or its key contains NUL",
                name.escape_debug()
            )
        } else if let DeadlineWrite::Schedule(deadline) = write
            && (!deadline.payload.is_json()
                || escapes_nul(deadline.payload.as_str())
                || deadline
                    .metadata
                    .values
                    .iter()
                    .any(|(key, value)| has_nul(key) || has_nul(value)))
        {
            format!("the value or metadata of deadline `{name}` is not JSON a store can keep")
        } else {
            continue;
        };
        return Err(rejected(aggregate_type, aggregate_id, reason));
    }
    Ok(())
}

/// The refusal of a fire whose deadline is no longer pending.
pub(crate) fn gone(aggregate_type: &str, aggregate_id: &str, name: &str, key: &str) -> StoreError {
    StoreError::DeadlineGone {
        aggregate_type: aggregate_type.to_owned(),
        aggregate_id: aggregate_id.to_owned(),
        name: name.to_owned(),
        key: key.to_owned(),
    }
}

/// Which pending deadlines [`EventStore::due_deadlines`](super::EventStore::due_deadlines)
/// reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueQuery {
    /// Those due at or before this time.
    pub now: DateTime<Utc>,
    /// Of streams of these aggregate types only; of every stream when
    /// `None`.
    pub aggregate_types: Option<Vec<String>>,
    /// At most this many, earliest first.
    pub limit: usize,
    /// Only those of streams in this segment (index, count), by
    /// [`segment_of`](crate::processor::segment_of) their stream.
    pub segment: Option<(u32, u32)>,
}

impl DueQuery {
    /// Up to `limit` deadlines of any stream due at `now` or before.
    pub fn new(now: DateTime<Utc>, limit: usize) -> Self {
        Self {
            now,
            aggregate_types: None,
            limit,
            segment: None,
        }
    }

    /// Only those of streams in segment `index` of `count`.
    pub fn in_segment(mut self, index: u32, count: u32) -> Self {
        self.segment = Some((index, count.max(1)));
        self
    }

    /// Only those of streams of these aggregate types.
    pub fn of<T: Into<String>>(mut self, aggregate_types: impl IntoIterator<Item = T>) -> Self {
        self.aggregate_types = Some(aggregate_types.into_iter().map(Into::into).collect());
        self
    }

    /// Whether a deadline of a stream of `aggregate_type` (whose hash is
    /// `shard`) to fire at `fire_at` is one the query reads.
    pub(crate) fn matches(&self, aggregate_type: &str, shard: u32, fire_at: DateTime<Utc>) -> bool {
        fire_at <= self.now
            && self
                .aggregate_types
                .as_ref()
                .is_none_or(|types| types.iter().any(|t| t == aggregate_type))
            && self
                .segment
                .is_none_or(|(index, count)| shard % count == index)
    }
}

/// Which deadlines [`EventStore::deadlines`](super::EventStore::deadlines)
/// lists: pending ones (parked ones too), earliest due first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadlineFilter {
    /// Of this owner type only (an aggregate type or a process manager's
    /// name).
    pub owner_type: Option<String>,
    /// Of this owner only (with `owner_type`).
    pub owner_id: Option<String>,
    /// Due before this time only.
    pub due_before: Option<DateTime<Utc>>,
    /// At most this many.
    pub limit: usize,
}

impl DeadlineFilter {
    /// Up to `limit` pending deadlines of any owner.
    pub fn new(limit: usize) -> Self {
        Self {
            owner_type: None,
            owner_id: None,
            due_before: None,
            limit,
        }
    }

    /// Only those of owners of this type.
    pub fn of_type(mut self, owner_type: impl Into<String>) -> Self {
        self.owner_type = Some(owner_type.into());
        self
    }

    /// Only those of this owner.
    pub fn of_owner(mut self, owner_type: impl Into<String>, owner_id: impl Into<String>) -> Self {
        self.owner_type = Some(owner_type.into());
        self.owner_id = Some(owner_id.into());
        self
    }

    /// Only those due before `time`.
    pub fn due_before(mut self, time: DateTime<Utc>) -> Self {
        self.due_before = Some(time);
        self
    }

    /// Whether a deadline of this owner, due at `due_at`, is one it lists.
    pub(crate) fn matches(&self, owner_type: &str, owner_id: &str, due_at: DateTime<Utc>) -> bool {
        self.owner_type.as_deref().is_none_or(|t| t == owner_type)
            && self.owner_id.as_deref().is_none_or(|id| id == owner_id)
            && self.due_before.is_none_or(|before| due_at < before)
    }
}

/// How many deadlines a store holds, as
/// [`EventStore::deadline_counts`](super::EventStore::deadline_counts)
/// counts them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeadlineCounts {
    /// Pending and not parked.
    pub pending: u64,
    /// Of those, due at the time asked about: not fired yet (being fired,
    /// waiting for a retry, or late).
    pub due: u64,
    /// Parked after their fires kept failing.
    pub parked: u64,
    /// The earliest due time of those pending.
    pub earliest_due: Option<DateTime<Utc>>,
}
