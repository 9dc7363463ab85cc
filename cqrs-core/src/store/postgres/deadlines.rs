//! An owner's deadlines changed outside an append (a process manager's),
//! in PostgreSQL: one transaction each, with the group commit's statements
//! written one row at a time. Two writers of one deadline take turns on
//! its origin's row.

use sqlx::PgTransaction;

use super::PostgresStore;
use crate::store::sql::{DeadlineTransaction, DriverResult, change_deadlines, stored_origin};
use crate::store::{DeadlineChanges, DeadlineWrite, StoreError, rejected, stream_hash};

impl PostgresStore {
    pub(super) async fn change_owned_deadlines(
        &self,
        changes: DeadlineChanges,
    ) -> Result<(), StoreError> {
        let mut transaction = OwnedDeadlines {
            store: self,
            transaction: self.pool.begin().await.db()?,
        };
        change_deadlines(&mut transaction, &changes).await?;
        transaction.transaction.commit().await.db()?;
        Ok(())
    }
}

/// A transaction in which [`change_deadlines`] runs.
struct OwnedDeadlines<'a> {
    store: &'a PostgresStore,
    transaction: PgTransaction<'static>,
}

impl DeadlineTransaction for OwnedDeadlines<'_> {
    async fn last_origin(
        &mut self,
        (aggregate_type, aggregate_id): (&str, &str),
        write: &DeadlineWrite,
    ) -> Result<Option<u64>, StoreError> {
        sqlx::query(self.store.sql.lock_origin.clone())
            .bind(aggregate_type)
            .bind(aggregate_id)
            .bind(write.name())
            .bind(write.key())
            .execute(&mut *self.transaction)
            .await
            .db()?;
        let origin: Option<i64> = sqlx::query_scalar(self.store.sql.deadline_origin.clone())
            .bind(aggregate_type)
            .bind(aggregate_id)
            .bind(write.name())
            .bind(write.key())
            .fetch_one(&mut *self.transaction)
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
            .fetch_one(&mut *self.transaction)
            .await
            .db()?)
    }

    async fn write(
        &mut self,
        owner: (&str, &str),
        write: &DeadlineWrite,
    ) -> Result<u64, StoreError> {
        let statements = &self.store.group.deadlines;
        let slot = |query: sqlx::query::Query<'static, sqlx::Postgres, _>| {
            query
                .bind([owner.0])
                .bind([owner.1])
                .bind([write.name()])
                .bind([write.key()])
        };
        let done = match write {
            DeadlineWrite::Schedule(deadline) => {
                let metadata = serde_json::to_string(&deadline.metadata).map_err(|error| {
                    rejected(
                        owner.0,
                        owner.1,
                        format!("deadline metadata does not serialize: {error}"),
                    )
                })?;
                let version = i32::try_from(deadline.version).map_err(|_| {
                    rejected(
                        owner.0,
                        owner.1,
                        format!("deadline version {} is out of range", deadline.version),
                    )
                })?;
                slot(sqlx::query(statements.schedule.clone()))
                    .bind([deadline.deadline_id])
                    .bind([deadline.due_at])
                    .bind([version])
                    .bind([deadline.payload.as_str()])
                    .bind([metadata])
                    .bind([i64::from(stream_hash(owner.0, owner.1))])
                    .execute(&mut *self.transaction)
                    .await
            }
            DeadlineWrite::Cancel { .. } => {
                slot(sqlx::query(statements.cancel.clone()))
                    .execute(&mut *self.transaction)
                    .await
            }
            DeadlineWrite::Consume { deadline_id, .. } => {
                slot(sqlx::query(statements.consume.clone()))
                    .bind([*deadline_id])
                    .execute(&mut *self.transaction)
                    .await
            }
        };
        Ok(done.db()?.rows_affected())
    }

    async fn record_origin(
        &mut self,
        owner: (&str, &str),
        write: &DeadlineWrite,
        origin: u64,
    ) -> Result<(), StoreError> {
        // The row exists: `last_origin` locked it, or a consume's deadline
        // had one when it was scheduled with an origin; else it is made.
        sqlx::query(self.store.sql.lock_origin.clone())
            .bind(owner.0)
            .bind(owner.1)
            .bind(write.name())
            .bind(write.key())
            .execute(&mut *self.transaction)
            .await
            .db()?;
        sqlx::query(self.store.sql.record_origin.clone())
            .bind(owner.0)
            .bind(owner.1)
            .bind(write.name())
            .bind(write.key())
            .bind(stored_origin(owner, origin)?)
            .execute(&mut *self.transaction)
            .await
            .db()?;
        Ok(())
    }
}
