//! Deadline rows as the SQL stores read them, checked before they are
//! trusted: a corrupt row is a typed error naming its stream, never a panic.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::envelope::{JsonPayload, Metadata};
use crate::store::deadline::{check_writes, gone, origin_applies};
use crate::store::{
    DeadlineChanges, DeadlineWrite, RowLocation, ScheduledDeadline, StoreError, StoredDeadline,
    rejected,
};

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

/// One transaction of a SQL store, as
/// [`change_deadlines`] writes an owner's deadlines in it.
pub(crate) trait DeadlineTransaction {
    /// The origin of the last change with one to this deadline (locked
    /// until the transaction ends, where writers may run side by side).
    fn last_origin(
        &mut self,
        owner: (&str, &str),
        write: &DeadlineWrite,
    ) -> impl Future<Output = Result<Option<u64>, StoreError>> + Send;

    /// Whether this deadline (name and key) is pending.
    fn is_pending(
        &mut self,
        owner: (&str, &str),
        write: &DeadlineWrite,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Writes as an append does; the rows changed.
    fn write(
        &mut self,
        owner: (&str, &str),
        write: &DeadlineWrite,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Records `origin` as this deadline's last, unless a later one is.
    fn record_origin(
        &mut self,
        owner: (&str, &str),
        write: &DeadlineWrite,
        origin: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Applies an owner's changes in `transaction`, the same way on every SQL
/// store (the memory store's is its own): the consumes, refused if gone,
/// then the last write to each deadline whose origin allows it, then the
/// origins. The caller commits.
pub(crate) async fn change_deadlines(
    transaction: &mut impl DeadlineTransaction,
    changes: &DeadlineChanges,
) -> Result<(), StoreError> {
    let owner = (&*changes.owner_type, &*changes.owner_id);
    check_writes(owner.0, owner.1, &changes.writes)?;
    let (consumes, last) = changes.net();
    for write in consumes {
        if transaction.write(owner, write).await? == 0 {
            return Err(gone(owner.0, owner.1, write.name(), write.key()));
        }
    }
    for write in last {
        let applies = match changes.origin {
            None => true,
            Some(_) => {
                let last = transaction.last_origin(owner, write).await?;
                let pending = transaction.is_pending(owner, write).await?;
                origin_applies(changes.origin, last, write, pending)
            }
        };
        if applies {
            transaction.write(owner, write).await?;
        }
    }
    if let Some(origin) = changes.origin {
        for write in &changes.writes {
            transaction.record_origin(owner, write, origin).await?;
        }
    }
    Ok(())
}

/// An origin as the SQL stores keep it.
pub(crate) fn stored_origin(owner: (&str, &str), origin: u64) -> Result<i64, StoreError> {
    i64::try_from(origin).map_err(|_| {
        rejected(
            owner.0,
            owner.1,
            format!("deadline origin {origin} is beyond what a SQL store keeps"),
        )
    })
}
