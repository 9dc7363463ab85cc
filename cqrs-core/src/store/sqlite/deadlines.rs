//! An owner's deadlines changed outside an append (a process manager's),
//! and claims on the deadlines being fired, in SQLite: one write
//! transaction each, so the file's single writer orders them.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::SqliteStore;
use super::transaction::WriteTransaction;
use crate::store::sql::{
    DeadlineTransaction, DriverResult, change_deadlines, database_error, stored_origin,
};
use crate::store::{DeadlineChanges, DeadlineWrite, StoreError, rejected};

impl SqliteStore {
    pub(super) async fn change_owned_deadlines(
        &self,
        changes: DeadlineChanges,
    ) -> Result<(), StoreError> {
        let mut transaction = OwnedDeadlines {
            store: self,
            transaction: WriteTransaction::begin(&self.pool, &self.file).await?,
        };
        change_deadlines(&mut transaction, &changes).await?;
        transaction
            .transaction
            .commit()
            .await
            .map_err(|failed| StoreError::from(database_error(failed.error)))
    }

    pub(super) async fn claim(
        &self,
        (aggregate_type, aggregate_id): (&str, &str),
        deadline_id: Uuid,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let query = sqlx::query(self.sql.claim_deadline.clone())
            .bind(aggregate_type)
            .bind(aggregate_id)
            .bind(deadline_id)
            .bind(now.timestamp_micros())
            .bind(until.timestamp_micros());
        Ok(self.write_one(query).await? > 0)
    }
}

/// A write transaction in which [`change_deadlines`] runs.
struct OwnedDeadlines<'a> {
    store: &'a SqliteStore,
    transaction: WriteTransaction,
}

impl DeadlineTransaction for OwnedDeadlines<'_> {
    async fn last_origin(
        &mut self,
        (aggregate_type, aggregate_id): (&str, &str),
        write: &DeadlineWrite,
    ) -> Result<Option<u64>, StoreError> {
        let origin: Option<i64> = sqlx::query_scalar(self.store.sql.deadline_origin.clone())
            .bind(aggregate_type)
            .bind(aggregate_id)
            .bind(write.name())
            .bind(write.key())
            .fetch_optional(self.transaction.connection())
            .await
            .db()?;
        Ok(origin.and_then(|origin| u64::try_from(origin).ok()))
    }

    async fn is_pending(
        &mut self,
        (aggregate_type, aggregate_id): (&str, &str),
        write: &DeadlineWrite,
    ) -> Result<bool, StoreError> {
        Ok(sqlx::query_scalar(self.store.sql.deadline_pending.clone())
            .bind(aggregate_type)
            .bind(aggregate_id)
            .bind(write.name())
            .bind(write.key())
            .fetch_one(self.transaction.connection())
            .await
            .db()?)
    }

    async fn write(
        &mut self,
        owner: (&str, &str),
        write: &DeadlineWrite,
    ) -> Result<u64, StoreError> {
        let metadata = match write {
            DeadlineWrite::Schedule(deadline) => serde_json::to_string(&deadline.metadata)
                .map_err(|error| {
                    rejected(
                        owner.0,
                        owner.1,
                        format!("deadline metadata does not serialize: {error}"),
                    )
                })?,
            _ => String::new(),
        };
        self.store
            .write_deadline(&mut self.transaction, owner, write, &metadata)
            .await
    }

    async fn record_origin(
        &mut self,
        owner: (&str, &str),
        write: &DeadlineWrite,
        origin: u64,
    ) -> Result<(), StoreError> {
        sqlx::query(self.store.sql.record_origin.clone())
            .bind(owner.0)
            .bind(owner.1)
            .bind(write.name())
            .bind(write.key())
            .bind(stored_origin(owner, origin)?)
            .execute(self.transaction.connection())
            .await
            .db()?;
        Ok(())
    }
}
