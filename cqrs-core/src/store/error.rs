//! How an event store fails: [`StoreError`], [`Conflict`], [`RowLocation`].

use std::fmt;
use std::path::PathBuf;

use uuid::Uuid;

use crate::database::DatabaseError;

/// Why an event store operation failed.
///
/// An append that fails with any variant but [`OutcomeUnknown`](Self::OutcomeUnknown)
/// recorded nothing.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The stream was not at the expected version; nothing was appended.
    #[error(transparent)]
    Conflict(#[from] Conflict),

    /// The batch breaks a rule of the store, such as a reused event id or a
    /// payload that is not JSON; nothing was appended.
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

    /// The connection failed while the append was being committed: it may
    /// or may not have been recorded. Load the stream to see; sending the
    /// command again with the same [`command_id`](crate::Metadata::command_id)
    /// is safe either way.
    #[error(
        "the append to {aggregate_type} `{aggregate_id}` may or may not have been recorded: {source}"
    )]
    OutcomeUnknown {
        /// The stream's aggregate type.
        aggregate_type: String,
        /// The stream's aggregate id.
        aggregate_id: String,
        /// What failed.
        #[source]
        source: DatabaseError,
    },

    /// A stored row breaks what the store guarantees: a column of the wrong
    /// type or out of range, metadata that is not JSON, a gap in a stream's
    /// sequences or in the log's positions. The rest of the store stays
    /// readable.
    #[error("corrupt event row ({at}): {reason}")]
    Corrupt {
        /// Where the row is.
        at: RowLocation,
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

    /// The SQLite file the store opened was deleted or replaced by another
    /// file while the store was running; nothing more is written to it. Open
    /// the store again once the right file is in place.
    #[error("the database file {} was deleted or replaced while the store had it open", path.display())]
    FileReplaced {
        /// The file's path.
        path: PathBuf,
    },

    /// The deadline a fire consumes is no longer pending: it was
    /// cancelled, scheduled again, or fired by another attempt. Nothing was
    /// appended.
    #[error(
        "deadline `{name}` (key `{key}`) of {aggregate_type} `{aggregate_id}` is no longer pending"
    )]
    DeadlineGone {
        /// The stream's aggregate type.
        aggregate_type: String,
        /// The stream's aggregate id.
        aggregate_id: String,
        /// The deadline type's stored name.
        name: String,
        /// Its key.
        key: String,
    },

    /// An event the condition's query matches was recorded after the
    /// position the decision read (a concurrent decision, or an aggregate's
    /// command, changed what it decided on); nothing was appended. Read
    /// again and decide again.
    #[error(
        "an event the decision's query matches was recorded at position {position}, after position {after} it read"
    )]
    BoundaryChanged {
        /// The log's head the decision read.
        after: u64,
        /// The first event the query matches after it.
        position: u64,
    },

    /// The store does not keep what the append carries (deadlines, in a
    /// store written before them); nothing was recorded.
    #[error("this event store does not keep {what}; nothing was recorded")]
    Unsupported {
        /// What it does not keep.
        what: &'static str,
    },

    /// The database failed or could not be reached. For an append, nothing
    /// was recorded.
    #[error("database error: {0}")]
    Database(#[from] DatabaseError),
}

impl StoreError {
    /// Whether the failure was the database's for the moment (unreachable,
    /// busy, read-only, out of space), so trying again later may succeed.
    /// For [`OutcomeUnknown`](Self::OutcomeUnknown) the first try may have
    /// landed: try again with the same command id.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Database(error) | Self::OutcomeUnknown { source: error, .. } => {
                error.is_transient()
            }
            _ => false,
        }
    }

    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    pub(crate) fn corrupt(at: RowLocation, reason: impl Into<String>) -> Self {
        Self::Corrupt {
            at,
            reason: reason.into(),
        }
    }
}

/// An append found the stream at another version than the writer expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{aggregate_type} `{aggregate_id}` is at version {actual}, expected {expected}")]
pub struct Conflict {
    /// The aggregate's stored name.
    pub aggregate_type: String,
    /// The stream's aggregate id.
    pub aggregate_id: String,
    /// The version the writer based its decision on.
    pub expected: u64,
    /// The version the stream had.
    pub actual: u64,
}

/// Where a corrupt row is: what of its position and stream could be read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RowLocation {
    /// The row's global position, when it is a valid one.
    pub position: Option<u64>,
    /// The row's aggregate type, when known.
    pub aggregate_type: Option<String>,
    /// The row's aggregate id, when known.
    pub aggregate_id: Option<String>,
    /// The row's sequence in its stream, when it is a valid one.
    pub sequence: Option<u64>,
}

impl RowLocation {
    /// The row at `position` of the log.
    pub fn at_position(position: u64) -> Self {
        Self {
            position: Some(position),
            ..Self::default()
        }
    }

    /// The row of a stream at `sequence`, if known.
    pub fn in_stream(aggregate_type: &str, aggregate_id: &str, sequence: Option<u64>) -> Self {
        Self {
            aggregate_type: Some(aggregate_type.to_owned()),
            aggregate_id: Some(aggregate_id.to_owned()),
            sequence,
            ..Self::default()
        }
    }
}

impl fmt::Display for RowLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut separator = "";
        if let Some(position) = self.position {
            write!(f, "position {position}")?;
            separator = ", ";
        }
        if let (Some(aggregate_type), Some(aggregate_id)) =
            (&self.aggregate_type, &self.aggregate_id)
        {
            write!(f, "{separator}{aggregate_type} `{aggregate_id}`")?;
            separator = " ";
        }
        if let Some(sequence) = self.sequence {
            write!(f, "{separator}sequence {sequence}")?;
            separator = " ";
        }
        if separator.is_empty() {
            f.write_str("unknown location")?;
        }
        Ok(())
    }
}
