//! Deadline rows as the SQL stores read them, checked before they are
//! trusted: a corrupt row is a typed error naming its stream, never a panic.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::envelope::{JsonPayload, Metadata};
use crate::store::{RowLocation, ScheduledDeadline, StoreError, StoredDeadline};

/// The columns a deadline is scheduled with: the first nine are those of
/// [`DeadlineRow`], in order.
pub(crate) const DEADLINE_COLUMNS: &str = "aggregate_type, aggregate_id, name, key, deadline_id, \
     due_at, version, payload, metadata, shard, fire_at";

/// One pending deadline as the database returns it.
pub(crate) struct DeadlineRow {
    pub(crate) aggregate_type: String,
    pub(crate) aggregate_id: String,
    pub(crate) name: String,
    pub(crate) key: String,
    pub(crate) deadline_id: Uuid,
    pub(crate) due_at: DateTime<Utc>,
    pub(crate) version: i64,
    pub(crate) payload: String,
    pub(crate) metadata: String,
    pub(crate) attempts: i64,
    pub(crate) last_error: Option<String>,
    pub(crate) parked: bool,
}

impl DeadlineRow {
    /// The deadline, if every column holds what the store writes.
    pub(crate) fn into_stored(self) -> Result<StoredDeadline, StoreError> {
        let at = || RowLocation::in_stream(&self.aggregate_type, &self.aggregate_id, None);
        let version = u32::try_from(self.version).map_err(|_| {
            StoreError::corrupt(
                at(),
                format!(
                    "deadline `{}` has version {}, out of range",
                    self.name, self.version
                ),
            )
        })?;
        let metadata: Metadata = serde_json::from_str(&self.metadata).map_err(|error| {
            StoreError::corrupt(
                at(),
                format!(
                    "the metadata of deadline `{}` is not valid: {error}",
                    self.name
                ),
            )
        })?;
        let attempts = u32::try_from(self.attempts).map_err(|_| {
            StoreError::corrupt(
                at(),
                format!(
                    "deadline `{}` has {} attempts, out of range",
                    self.name, self.attempts
                ),
            )
        })?;
        let payload = JsonPayload::from_text(self.payload);
        if !payload.is_json() {
            return Err(StoreError::corrupt(
                at(),
                format!("the value of deadline `{}` is not JSON", self.name),
            ));
        }
        Ok(StoredDeadline {
            aggregate_type: self.aggregate_type,
            aggregate_id: self.aggregate_id,
            deadline: ScheduledDeadline {
                name: self.name,
                key: self.key,
                deadline_id: self.deadline_id,
                due_at: self.due_at,
                version,
                payload,
                metadata,
            },
            attempts,
            last_error: self.last_error,
            parked: self.parked,
        })
    }
}
