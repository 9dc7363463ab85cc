//! [`PostgresViews`]: views and checkpoints in PostgreSQL tables, a batch in one transaction.

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnection, PgPool};
use sqlx::{AssertSqlSafe, Postgres, SqlSafeStr, SqlStr};

use crate::future::BoxFuture;
use crate::store::sql::DriverResult;
use crate::store::sql::{Schema, TablePrefix, acquire, checkpoint_of, read, stored_position};
use crate::view::{ViewBackend, ViewError, ViewTransaction};

/// The views' tables, migrated with the store.
pub(super) const SCHEMA: Schema = Schema {
    name: "postgres views",
    versions: "{p}view_migrations",
    migrations: &[
        (1, include_str!("migrations/views-1.sql")),
        (2, include_str!("migrations/views-2.sql")),
    ],
};

/// Views in the tables of a [`PostgresStore`](crate::PostgresStore)'s
/// database (`{prefix}views`, `{prefix}checkpoints`, views as `JSONB`);
/// made by [`PostgresStore::views`](crate::PostgresStore::views).
///
/// A batch locks its processor's checkpoint row (`FOR UPDATE`) until it
/// commits, so runners of one projection in several processes take turns.
#[derive(Debug, Clone)]
pub struct PostgresViews {
    pool: PgPool,
    sql: Statements,
}

#[derive(Debug, Clone)]
struct Statements {
    claim: SqlStr,
    lock: SqlStr,
    checkpoint: SqlStr,
    save_checkpoint: SqlStr,
    advance: SqlStr,
    advance_from_zero: SqlStr,
    load: SqlStr,
    upsert: SqlStr,
    delete: SqlStr,
    clear: SqlStr,
    views: SqlStr,
}

impl PostgresViews {
    /// Views over `pool`, whose tables the store migrated.
    pub(crate) fn new(pool: PgPool, prefix: &TablePrefix) -> Self {
        let sql = |template: &str| AssertSqlSafe(prefix.expand(template)).into_sql_str();
        Self {
            pool,
            sql: Statements {
                claim: sql(
                    "INSERT INTO {p}checkpoints (processor, position) VALUES ($1, 0) \
                     ON CONFLICT (processor) DO NOTHING",
                ),
                lock: sql("SELECT position FROM {p}checkpoints WHERE processor = $1 FOR UPDATE"),
                checkpoint: sql("SELECT position FROM {p}checkpoints WHERE processor = $1"),
                save_checkpoint: sql(
                    "UPDATE {p}checkpoints SET position = $2, updated_at = now() WHERE processor = $1",
                ),
                advance: sql(
                    "UPDATE {p}checkpoints SET position = $3, updated_at = now() \
                     WHERE processor = $1 AND position = $2",
                ),
                advance_from_zero: sql(
                    "INSERT INTO {p}checkpoints AS c (processor, position) VALUES ($1, $3) \
                     ON CONFLICT (processor) DO UPDATE SET position = excluded.position, updated_at = now() \
                     WHERE c.position = $2",
                ),
                load: sql(
                    "SELECT state::TEXT FROM {p}views WHERE projection = $1 AND view_id = $2",
                ),
                upsert: sql("INSERT INTO {p}views (projection, view_id, state) \
                     SELECT $1, d.view_id, d.state::JSONB FROM unnest($2::TEXT[], $3::TEXT[]) AS d(view_id, state) \
                     ON CONFLICT (projection, view_id) DO UPDATE SET state = excluded.state"),
                delete: sql("DELETE FROM {p}views WHERE projection = $1 AND view_id = ANY($2)"),
                clear: sql("DELETE FROM {p}views WHERE projection = $1"),
                views: sql(
                    "SELECT view_id, state::TEXT FROM {p}views WHERE projection = $1 ORDER BY view_id",
                ),
            },
        }
    }
}

struct PostgresTransaction {
    transaction: OpenTransaction,
    processor: String,
    checkpoint: i64,
    sql: Statements,
}

/// A connection inside `BEGIN`: it goes back to the pool after `COMMIT`,
/// and is closed (which rolls back) however else the batch ends.
struct OpenTransaction {
    connection: PoolConnection<Postgres>,
    committed: bool,
}

impl OpenTransaction {
    async fn begin(pool: &PgPool) -> Result<Self, ViewError> {
        let mut batch = Self {
            connection: acquire(pool).await.db()?,
            committed: false,
        };
        sqlx::raw_sql("BEGIN")
            .execute(batch.connection())
            .await
            .db()?;
        Ok(batch)
    }

    fn connection(&mut self) -> &mut PgConnection {
        &mut self.connection
    }

    async fn commit(mut self) -> Result<(), ViewError> {
        sqlx::raw_sql("COMMIT")
            .execute(self.connection())
            .await
            .db()?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for OpenTransaction {
    fn drop(&mut self) {
        if !self.committed {
            self.connection.close_on_drop();
        }
    }
}

impl ViewBackend for PostgresViews {
    fn begin<'a>(
        &'a self,
        processor: &'a str,
    ) -> BoxFuture<'a, Result<Box<dyn ViewTransaction + 'a>, ViewError>> {
        Box::pin(async move {
            let mut transaction = OpenTransaction::begin(&self.pool).await?;
            sqlx::query(self.sql.claim.clone())
                .bind(processor)
                .execute(transaction.connection())
                .await
                .db()?;
            let checkpoint: i64 = sqlx::query_scalar(self.sql.lock.clone())
                .bind(processor)
                .fetch_one(transaction.connection())
                .await
                .db()?;
            let transaction: Box<dyn ViewTransaction + 'a> = Box::new(PostgresTransaction {
                transaction,
                processor: processor.to_owned(),
                checkpoint,
                sql: self.sql.clone(),
            });
            Ok(transaction)
        })
    }

    fn checkpoint<'a>(&'a self, processor: &'a str) -> BoxFuture<'a, Result<u64, ViewError>> {
        Box::pin(read::checkpoint(
            &self.pool,
            self.sql.checkpoint.clone(),
            processor,
        ))
    }

    fn advance<'a>(
        &'a self,
        processor: &'a str,
        from: u64,
        to: u64,
    ) -> BoxFuture<'a, Result<bool, ViewError>> {
        Box::pin(async move {
            // Only a processor still at 0 may have no row yet.
            let statement = if from == 0 {
                self.sql.advance_from_zero.clone()
            } else {
                self.sql.advance.clone()
            };
            let moved = sqlx::query(statement)
                .bind(processor)
                .bind(stored_position(processor, from)?)
                .bind(stored_position(processor, to)?)
                .execute(&mut *acquire(&self.pool).await.db()?)
                .await
                .db()?
                .rows_affected();
            Ok(moved == 1)
        })
    }

    fn view<'a>(
        &'a self,
        projection: &'a str,
        view_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, ViewError>> {
        Box::pin(read::view(
            &self.pool,
            self.sql.load.clone(),
            projection,
            view_id,
        ))
    }

    fn views<'a>(
        &'a self,
        projection: &'a str,
    ) -> BoxFuture<'a, Result<Vec<(String, String)>, ViewError>> {
        Box::pin(read::views(&self.pool, self.sql.views.clone(), projection))
    }
}

impl ViewTransaction for PostgresTransaction {
    fn checkpoint(&mut self) -> BoxFuture<'_, Result<u64, ViewError>> {
        let position = checkpoint_of(&self.processor, Some(self.checkpoint));
        Box::pin(std::future::ready(position))
    }

    fn load<'a>(
        &'a mut self,
        view_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, ViewError>> {
        Box::pin(async move {
            Ok(sqlx::query_scalar(self.sql.load.clone())
                .bind(&self.processor)
                .bind(view_id)
                .fetch_optional(self.transaction.connection())
                .await
                .db()?)
        })
    }

    fn write(
        &mut self,
        changes: Vec<(String, Option<String>)>,
    ) -> BoxFuture<'_, Result<(), ViewError>> {
        Box::pin(async move {
            let mut upsert_ids = Vec::new();
            let mut upsert_states = Vec::new();
            let mut deletes = Vec::new();
            for (view_id, json) in changes {
                match json {
                    Some(json) => {
                        upsert_ids.push(view_id);
                        upsert_states.push(json);
                    }
                    None => deletes.push(view_id),
                }
            }
            if !upsert_ids.is_empty() {
                sqlx::query(self.sql.upsert.clone())
                    .bind(&self.processor)
                    .bind(&upsert_ids)
                    .bind(&upsert_states)
                    .execute(self.transaction.connection())
                    .await
                    .db()?;
            }
            if !deletes.is_empty() {
                sqlx::query(self.sql.delete.clone())
                    .bind(&self.processor)
                    .bind(&deletes)
                    .execute(self.transaction.connection())
                    .await
                    .db()?;
            }
            Ok(())
        })
    }

    fn clear(&mut self) -> BoxFuture<'_, Result<(), ViewError>> {
        Box::pin(async move {
            sqlx::query(self.sql.clear.clone())
                .bind(&self.processor)
                .execute(self.transaction.connection())
                .await
                .db()?;
            Ok(())
        })
    }

    fn commit(self: Box<Self>, checkpoint: u64) -> BoxFuture<'static, Result<(), ViewError>> {
        let mut this = *self;
        Box::pin(async move {
            sqlx::query(this.sql.save_checkpoint.clone())
                .bind(&this.processor)
                .bind(stored_position(&this.processor, checkpoint)?)
                .execute(this.transaction.connection())
                .await
                .db()?;
            this.transaction.commit().await?;
            Ok(())
        })
    }
}
