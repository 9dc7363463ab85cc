//! [`SqliteViews`]: views, segments and parked events in the SQLite file, a
//! batch's writes in one short write transaction.

use sqlx::pool::PoolConnection;
use sqlx::sqlite::{SqliteConnection, SqlitePool, SqliteQueryResult};
use sqlx::{AssertSqlSafe, SqlSafeStr, SqlStr, Sqlite};

use super::file::DatabaseFile;
use super::transaction::{CommitFailed, WriteTransaction};
use crate::database::DatabaseError;
use crate::future::BoxFuture;
use crate::store::StoreError;
use crate::store::sql::view_backend::{ServingVersions, ViewDialect, WriteConnection};
use crate::store::sql::views::ViewStatements;
use crate::store::sql::{
    Dialect, DriverResult, Schema, TablePrefix, acquire, database_error, stored_position,
};
use crate::view::{Connection, Expected, SqlPool, ViewChange, ViewError};

/// The views' tables, migrated with the store.
pub(super) const SCHEMA: Schema = Schema {
    name: "sqlite views",
    versions: "{p}view_migrations",
    migrations: &[
        (1, include_str!("migrations/views-1.sql")),
        (2, include_str!("migrations/views-2.sql")),
        (3, include_str!("migrations/views-3.sql")),
        (4, include_str!("migrations/views-4.sql")),
        (5, include_str!("migrations/views-5.sql")),
        (6, include_str!("migrations/views-6.sql")),
    ],
};

/// Views in the tables of a [`SqliteStore`](crate::SqliteStore)'s database
/// (`{prefix}views`, `{prefix}segments`, `{prefix}nodes`,
/// `{prefix}parked_events`, `{prefix}projections`); made by
/// [`SqliteStore::views`](crate::SqliteStore::views). Several processes may
/// share the file and its segments.
///
/// A batch's writes run in one `BEGIN IMMEDIATE` transaction: SQLite's
/// write lock keeps every other writer out until it commits, and the batch
/// checks its claim's token under it. The handlers run before it begins,
/// so the lock is held for the writes alone.
#[derive(Debug, Clone)]
pub struct SqliteViews {
    pool: SqlitePool,
    file: DatabaseFile,
    prefix: TablePrefix,
    serving: ServingVersions,
    sql: ViewStatements,
    writes: ViewWrites,
}

/// The statements that write one view, checked against the revision the
/// batch read.
#[derive(Debug, Clone)]
pub(crate) struct ViewWrites {
    insert: SqlStr,
    update: SqlStr,
    upsert: SqlStr,
    delete: SqlStr,
    delete_any: SqlStr,
}

impl SqliteViews {
    /// Views over `pool`, whose tables the store migrated.
    pub(crate) fn new(pool: SqlitePool, file: DatabaseFile, prefix: &TablePrefix) -> Self {
        let sql = |template: &str| AssertSqlSafe(prefix.expand(template)).into_sql_str();
        Self {
            pool,
            file,
            prefix: prefix.clone(),
            serving: ServingVersions::default(),
            sql: ViewStatements::new(prefix, Dialect::Sqlite),
            writes: ViewWrites {
                insert: sql(
                    "INSERT INTO {p}views (projection, view_id, state, revision, keys) \
                     VALUES (?1, ?2, ?3, 1, ?4) ON CONFLICT (projection, view_id) DO NOTHING",
                ),
                update: sql(
                    "UPDATE {p}views SET state = ?3, keys = ?5, revision = revision + 1 \
                     WHERE projection = ?1 AND view_id = ?2 AND revision = ?4",
                ),
                upsert: sql(
                    "INSERT INTO {p}views AS v (projection, view_id, state, revision, keys) \
                     VALUES (?1, ?2, ?3, 1, ?4) ON CONFLICT (projection, view_id) DO UPDATE SET \
                     state = excluded.state, keys = excluded.keys, revision = v.revision + 1",
                ),
                delete: sql(
                    "DELETE FROM {p}views WHERE projection = ?1 AND view_id = ?2 AND revision = ?3",
                ),
                delete_any: sql("DELETE FROM {p}views WHERE projection = ?1 AND view_id = ?2"),
            },
        }
    }
}

/// A failed commit is as good as failed: the batch's runner reads the
/// checkpoint again before its next one.
impl From<CommitFailed> for ViewError {
    fn from(failed: CommitFailed) -> Self {
        Self::Database(database_error(failed.error))
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

/// Stores a batch's changed views one statement each, every one checked
/// against the revision the batch read.
async fn write_views(
    write: &mut WriteTransaction,
    sql: &ViewWrites,
    processor: &str,
    changes: Vec<ViewChange>,
) -> Result<(), ViewError> {
    for change in changes {
        let query = match (&change.state, change.revision) {
            (Some(state), Expected::Absent) => sqlx::query(sql.insert.clone())
                .bind(processor)
                .bind(&change.view_id)
                .bind(state)
                .bind(&change.keys),
            (Some(state), Expected::Revision(revision)) => sqlx::query(sql.update.clone())
                .bind(processor)
                .bind(&change.view_id)
                .bind(state)
                .bind(stored_position(processor, revision)?)
                .bind(&change.keys),
            (Some(state), Expected::Any) => sqlx::query(sql.upsert.clone())
                .bind(processor)
                .bind(&change.view_id)
                .bind(state)
                .bind(&change.keys),
            (None, Expected::Revision(revision)) => sqlx::query(sql.delete.clone())
                .bind(processor)
                .bind(&change.view_id)
                .bind(stored_position(processor, revision)?),
            (None, Expected::Any) => {
                sqlx::query(sql.delete_any.clone())
                    .bind(processor)
                    .bind(&change.view_id)
                    .execute(write.connection())
                    .await
                    .db()?;
                continue;
            }
            (None, Expected::Absent) => continue,
        };
        let written = query.execute(write.connection()).await.db()?;
        if written.rows_affected() != 1 {
            return Err(ViewError::Conflict {
                projection: processor.to_owned(),
                view_id: change.view_id,
            });
        }
    }
    Ok(())
}

impl ViewDialect for SqliteViews {
    type Database = Sqlite;
    type Write = WriteTransaction;
    type Writes = ViewWrites;

    fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    fn statements(&self) -> &ViewStatements {
        &self.sql
    }

    fn writes(&self) -> &ViewWrites {
        &self.writes
    }

    fn connection(&self) -> BoxFuture<'_, Result<PoolConnection<Sqlite>, ViewError>> {
        Box::pin(async move {
            self.file.check().map_err(view_error)?;
            Ok(acquire(&self.pool).await.db()?)
        })
    }

    fn begin_write(&self) -> BoxFuture<'_, Result<WriteTransaction, ViewError>> {
        Box::pin(async move {
            WriteTransaction::begin(&self.pool, &self.file)
                .await
                .map_err(view_error)
        })
    }

    const DIALECT: Dialect = Dialect::Sqlite;

    fn prefix(&self) -> &TablePrefix {
        &self.prefix
    }

    fn serving_versions(&self) -> &ServingVersions {
        &self.serving
    }

    fn read_pool(&self) -> SqlPool {
        SqlPool::Sqlite(self.pool.clone())
    }

    fn write_views<'a>(
        write: &'a mut WriteTransaction,
        writes: &'a ViewWrites,
        processor: &'a str,
        changes: Vec<ViewChange>,
    ) -> BoxFuture<'a, Result<(), ViewError>> {
        Box::pin(write_views(write, writes, processor, changes))
    }

    fn rows_affected(result: &SqliteQueryResult) -> u64 {
        result.rows_affected()
    }
}

impl WriteConnection<Sqlite> for WriteTransaction {
    fn connection(&mut self) -> &mut SqliteConnection {
        WriteTransaction::connection(self)
    }

    fn tables(&mut self) -> Connection<'_> {
        Connection::Sqlite(WriteTransaction::connection(self))
    }

    fn commit(self) -> BoxFuture<'static, Result<(), ViewError>> {
        Box::pin(async move {
            WriteTransaction::commit(self)
                .await
                .map_err(ViewError::from)
        })
    }
}
