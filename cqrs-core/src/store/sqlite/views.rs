//! [`SqliteViews`]: views and checkpoints in the SQLite file, a batch in one write transaction.

use chrono::Utc;
use sqlx::sqlite::SqlitePool;
use sqlx::{AssertSqlSafe, QueryBuilder, SqlSafeStr, SqlStr, Sqlite};

use super::file::DatabaseFile;
use super::transaction::WriteTransaction;
use crate::database::DatabaseError;
use crate::future::BoxFuture;
use crate::store::StoreError;
use crate::store::sql::{DriverResult, database_error};
use crate::store::sql::{Schema, TablePrefix, acquire, checkpoint_of, read, stored_position};
use crate::view::{ViewBackend, ViewError, ViewTransaction};

/// The views' tables, migrated with the store.
pub(super) const SCHEMA: Schema = Schema {
    name: "sqlite views",
    versions: "{p}view_migrations",
    migrations: &[
        (1, include_str!("migrations/views-1.sql")),
        (2, include_str!("migrations/views-2.sql")),
    ],
};

/// SQLite caps bound parameters per statement at 32,766; three per view.
const VIEWS_PER_UPSERT: usize = 10_000;

/// Views in the tables of a [`SqliteStore`](crate::SqliteStore)'s database
/// (`{prefix}views`, `{prefix}checkpoints`); made by
/// [`SqliteStore::views`](crate::SqliteStore::views).
///
/// A batch runs in one `BEGIN IMMEDIATE` transaction: SQLite's write lock
/// keeps other runners of the projection out until it commits.
#[derive(Debug, Clone)]
pub struct SqliteViews {
    pool: SqlitePool,
    file: DatabaseFile,
    sql: Statements,
}

#[derive(Debug, Clone)]
struct Statements {
    checkpoint: SqlStr,
    save_checkpoint: SqlStr,
    advance: SqlStr,
    advance_from_zero: SqlStr,
    load: SqlStr,
    upsert_prefix: String,
    upsert_suffix: String,
    delete: SqlStr,
    clear: SqlStr,
    views: SqlStr,
}

impl SqliteViews {
    /// Views over `pool`, whose tables the store migrated.
    pub(crate) fn new(pool: SqlitePool, file: DatabaseFile, prefix: &TablePrefix) -> Self {
        let sql = |template: &str| AssertSqlSafe(prefix.expand(template)).into_sql_str();
        Self {
            pool,
            file,
            sql: Statements {
                checkpoint: sql("SELECT position FROM {p}checkpoints WHERE processor = ?1"),
                save_checkpoint: sql(
                    "INSERT INTO {p}checkpoints (processor, position, updated_at) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (processor) DO UPDATE SET \
                     position = excluded.position, updated_at = excluded.updated_at",
                ),
                advance: sql("UPDATE {p}checkpoints SET position = ?3, updated_at = ?4 \
                     WHERE processor = ?1 AND position = ?2"),
                advance_from_zero: sql(
                    "INSERT INTO {p}checkpoints (processor, position, updated_at) VALUES (?1, ?3, ?4) \
                     ON CONFLICT (processor) DO UPDATE SET \
                     position = excluded.position, updated_at = excluded.updated_at \
                     WHERE {p}checkpoints.position = ?2",
                ),
                load: sql("SELECT state FROM {p}views WHERE projection = ?1 AND view_id = ?2"),
                upsert_prefix: prefix.expand("INSERT INTO {p}views (projection, view_id, state) "),
                upsert_suffix:
                    " ON CONFLICT (projection, view_id) DO UPDATE SET state = excluded.state"
                        .to_owned(),
                delete: sql("DELETE FROM {p}views WHERE projection = ?1 AND view_id = ?2"),
                clear: sql("DELETE FROM {p}views WHERE projection = ?1"),
                views: sql(
                    "SELECT view_id, state FROM {p}views WHERE projection = ?1 ORDER BY view_id",
                ),
            },
        }
    }
}

struct SqliteTransaction {
    transaction: WriteTransaction,
    processor: String,
    sql: Statements,
}

impl ViewBackend for SqliteViews {
    fn begin<'a>(
        &'a self,
        processor: &'a str,
    ) -> BoxFuture<'a, Result<Box<dyn ViewTransaction + 'a>, ViewError>> {
        Box::pin(async move {
            let transaction = WriteTransaction::begin(&self.pool, &self.file)
                .await
                .map_err(view_error)?;
            let transaction: Box<dyn ViewTransaction + 'a> = Box::new(SqliteTransaction {
                transaction,
                processor: processor.to_owned(),
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
            self.file.check().map_err(view_error)?;
            let moved = sqlx::query(statement)
                .bind(processor)
                .bind(stored_position(processor, from)?)
                .bind(stored_position(processor, to)?)
                .bind(Utc::now().timestamp_micros())
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

impl ViewTransaction for SqliteTransaction {
    fn checkpoint(&mut self) -> BoxFuture<'_, Result<u64, ViewError>> {
        Box::pin(async move {
            let position: Option<i64> = sqlx::query_scalar(self.sql.checkpoint.clone())
                .bind(&self.processor)
                .fetch_optional(self.transaction.connection())
                .await
                .db()?;
            checkpoint_of(&self.processor, position)
        })
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
            let (upserts, deletes): (Vec<_>, Vec<_>) =
                changes.into_iter().partition(|(_, json)| json.is_some());
            for chunk in upserts.chunks(VIEWS_PER_UPSERT) {
                let mut upsert = QueryBuilder::<Sqlite>::new(self.sql.upsert_prefix.clone());
                upsert.push_values(chunk, |mut values, (view_id, json)| {
                    values
                        .push_bind(self.processor.as_str())
                        .push_bind(view_id.as_str())
                        .push_bind(json.as_deref());
                });
                upsert.push(self.sql.upsert_suffix.clone());
                upsert
                    .build()
                    .execute(self.transaction.connection())
                    .await
                    .db()?;
            }
            for (view_id, _) in deletes {
                sqlx::query(self.sql.delete.clone())
                    .bind(&self.processor)
                    .bind(view_id)
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
                .bind(Utc::now().timestamp_micros())
                .execute(this.transaction.connection())
                .await
                .db()?;
            // A batch whose commit may have landed is as good as failed: its
            // runner reads the checkpoint again before the next one.
            this.transaction
                .commit()
                .await
                .map_err(|failed| ViewError::from(database_error(failed.error)))
        })
    }
}

/// The store's failure to begin a write, as the views report it: a
/// database error, or the file replaced under the store (permanent).
fn view_error(error: StoreError) -> ViewError {
    match error {
        StoreError::Database(error) => ViewError::Database(error),
        other => ViewError::Database(DatabaseError::permanent(other)),
    }
}
