//! [`PostgresViews`]: views, segments and parked events in PostgreSQL
//! tables, a batch's writes in one short transaction that holds its
//! segment's row.

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnection, PgPool, PgQueryResult};
use sqlx::{AssertSqlSafe, Postgres, SqlSafeStr, SqlStr};

use crate::future::BoxFuture;
use crate::store::sql::view_backend::{ServingVersions, ViewDialect, WriteConnection};
use crate::store::sql::views::ViewStatements;
use crate::store::sql::{Dialect, DriverResult, Schema, TablePrefix, acquire, stored_position};
use crate::view::{Connection, Expected, SqlPool, ViewChange, ViewError};

/// The views' tables, migrated with the store.
pub(super) const SCHEMA: Schema = Schema {
    name: "postgres views",
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

/// How long a write transaction may wait for its client between two
/// statements before the server ends it. A batch sends its writes back to
/// back, so only a client that stopped (paused, cut off) waits that long;
/// ending its transaction frees the segment's row for the node that takes
/// the segment over.
const IDLE_IN_BATCH: &str = "2s";

/// Views in the tables of a [`PostgresStore`](crate::PostgresStore)'s
/// database (`{prefix}views` as `JSONB`, `{prefix}segments`,
/// `{prefix}nodes`, `{prefix}parked_events`, `{prefix}projections`); made by
/// [`PostgresStore::views`](crate::PostgresStore::views).
///
/// A batch's writes lock its segment's row (`FOR UPDATE`) under its claim's
/// token until they commit, so a batch whose claim was taken over never
/// writes; a claim passes over a row a paused batch still locks, and the
/// server ends such a batch after 2 s.
#[derive(Debug, Clone)]
pub struct PostgresViews {
    pool: PgPool,
    prefix: TablePrefix,
    serving: ServingVersions,
    sql: ViewStatements,
    writes: ViewWrites,
}

/// The statements that write a batch's views, each for all the views of
/// one kind of change at once, checked against the revisions the batch
/// read.
#[derive(Debug, Clone)]
pub(crate) struct ViewWrites {
    insert: SqlStr,
    update: SqlStr,
    upsert: SqlStr,
    delete: SqlStr,
    delete_any: SqlStr,
}

impl PostgresViews {
    /// Views over `pool`, whose tables the store migrated.
    pub(crate) fn new(pool: PgPool, prefix: &TablePrefix) -> Self {
        let sql = |template: &str| AssertSqlSafe(prefix.expand(template)).into_sql_str();
        Self {
            pool,
            prefix: prefix.clone(),
            serving: ServingVersions::default(),
            sql: ViewStatements::new(prefix, Dialect::Postgres),
            writes: ViewWrites {
                insert: sql(
                    "INSERT INTO {p}views (projection, view_id, state, revision, keys) \
                     SELECT $1, d.view_id, d.state::JSONB, 1, d.keys::JSONB \
                     FROM unnest($2::TEXT[], $3::TEXT[], $4::TEXT[]) AS d(view_id, state, keys) \
                     ON CONFLICT (projection, view_id) DO NOTHING",
                ),
                update: sql(
                    "UPDATE {p}views AS v SET state = d.state::JSONB, keys = d.keys::JSONB, \
                     revision = v.revision + 1 \
                     FROM unnest($2::TEXT[], $3::TEXT[], $4::BIGINT[], $5::TEXT[]) \
                     AS d(view_id, state, revision, keys) \
                     WHERE v.projection = $1 AND v.view_id = d.view_id AND v.revision = d.revision",
                ),
                upsert: sql(
                    "INSERT INTO {p}views AS v (projection, view_id, state, revision, keys) \
                     SELECT $1, d.view_id, d.state::JSONB, 1, d.keys::JSONB \
                     FROM unnest($2::TEXT[], $3::TEXT[], $4::TEXT[]) AS d(view_id, state, keys) \
                     ON CONFLICT (projection, view_id) DO UPDATE SET state = excluded.state, \
                     keys = excluded.keys, revision = v.revision + 1",
                ),
                delete: sql(
                    "DELETE FROM {p}views AS v USING unnest($2::TEXT[], $3::BIGINT[]) AS d(view_id, revision) \
                     WHERE v.projection = $1 AND v.view_id = d.view_id AND v.revision = d.revision",
                ),
                delete_any: sql("DELETE FROM {p}views WHERE projection = $1 AND view_id = ANY($2)"),
            },
        }
    }
}

/// A connection inside `BEGIN`: it goes back to the pool after `COMMIT`,
/// and is closed (which rolls back) however else the batch ends.
pub(crate) struct OpenTransaction {
    connection: PoolConnection<Postgres>,
    committed: bool,
}

impl OpenTransaction {
    async fn begin(pool: &PgPool) -> Result<Self, ViewError> {
        let mut batch = Self {
            connection: acquire(pool).await.db()?,
            committed: false,
        };
        let begin =
            format!("BEGIN; SET LOCAL idle_in_transaction_session_timeout = '{IDLE_IN_BATCH}'");
        sqlx::raw_sql(AssertSqlSafe(begin))
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

/// The views of one kind of change, as the arrays a statement takes.
#[derive(Default)]
struct Columns {
    ids: Vec<String>,
    states: Vec<String>,
    revisions: Vec<i64>,
    /// A written view's keys (`None` when it is not indexed).
    keys: Vec<Option<String>>,
}

impl Columns {
    fn push(&mut self, change: ViewChange, revision: Option<i64>) {
        if change.state.is_some() {
            self.keys.push(change.keys);
        }
        self.ids.push(change.view_id);
        self.states.extend(change.state);
        self.revisions.extend(revision);
    }
}

/// Stores a batch's changed views in at most one statement per kind of
/// change; a checked kind that changes fewer rows than it has views met a
/// view another segment wrote since the batch read it.
async fn write_views(
    write: &mut OpenTransaction,
    sql: &ViewWrites,
    processor: &str,
    changes: Vec<ViewChange>,
) -> Result<(), ViewError> {
    let (mut insert, mut update, mut upsert, mut delete, mut delete_any) = Default::default();
    for change in changes {
        let (columns, revision): (&mut Columns, _) = match (&change.state, change.revision) {
            (Some(_), Expected::Absent) => (&mut insert, None),
            (Some(_), Expected::Revision(revision)) => (&mut update, Some(revision)),
            (Some(_), Expected::Any) => (&mut upsert, None),
            (None, Expected::Revision(revision)) => (&mut delete, Some(revision)),
            (None, Expected::Any) => (&mut delete_any, None),
            (None, Expected::Absent) => continue,
        };
        let revision = revision
            .map(|revision| stored_position(processor, revision))
            .transpose()?;
        columns.push(change, revision);
    }
    let statements: [(&SqlStr, Columns, bool); 5] = [
        (&sql.insert, insert, true),
        (&sql.update, update, true),
        (&sql.upsert, upsert, false),
        (&sql.delete, delete, true),
        (&sql.delete_any, delete_any, false),
    ];
    for (statement, columns, checked) in statements {
        if columns.ids.is_empty() {
            continue;
        }
        let mut query = sqlx::query(statement.clone())
            .bind(processor)
            .bind(&columns.ids);
        if !columns.states.is_empty() {
            query = query.bind(&columns.states);
        }
        if !columns.revisions.is_empty() {
            query = query.bind(&columns.revisions);
        }
        if !columns.states.is_empty() {
            query = query.bind(&columns.keys);
        }
        let written = query.execute(write.connection()).await.db()?;
        if checked && written.rows_affected() != columns.ids.len() as u64 {
            return Err(ViewError::Conflict {
                projection: processor.to_owned(),
                view_id: columns.ids.join(", "),
            });
        }
    }
    Ok(())
}

impl ViewDialect for PostgresViews {
    type Database = Postgres;
    type Write = OpenTransaction;
    type Writes = ViewWrites;

    fn pool(&self) -> &PgPool {
        &self.pool
    }

    fn statements(&self) -> &ViewStatements {
        &self.sql
    }

    fn writes(&self) -> &ViewWrites {
        &self.writes
    }

    fn connection(&self) -> BoxFuture<'_, Result<PoolConnection<Postgres>, ViewError>> {
        Box::pin(async move { Ok(acquire(&self.pool).await.db()?) })
    }

    fn begin_write(&self) -> BoxFuture<'_, Result<OpenTransaction, ViewError>> {
        Box::pin(OpenTransaction::begin(&self.pool))
    }

    const DIALECT: Dialect = Dialect::Postgres;

    fn prefix(&self) -> &TablePrefix {
        &self.prefix
    }

    fn serving_versions(&self) -> &ServingVersions {
        &self.serving
    }

    fn read_pool(&self) -> SqlPool {
        SqlPool::Postgres(self.pool.clone())
    }

    fn write_views<'a>(
        write: &'a mut OpenTransaction,
        writes: &'a ViewWrites,
        processor: &'a str,
        changes: Vec<ViewChange>,
    ) -> BoxFuture<'a, Result<(), ViewError>> {
        Box::pin(write_views(write, writes, processor, changes))
    }

    fn rows_affected(result: &PgQueryResult) -> u64 {
        result.rows_affected()
    }
}

impl WriteConnection<Postgres> for OpenTransaction {
    fn connection(&mut self) -> &mut PgConnection {
        OpenTransaction::connection(self)
    }

    fn tables(&mut self) -> Connection<'_> {
        Connection::Postgres(OpenTransaction::connection(self))
    }

    fn commit(self) -> BoxFuture<'static, Result<(), ViewError>> {
        Box::pin(OpenTransaction::commit(self))
    }
}
