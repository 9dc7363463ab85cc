//! Versioned schema migrations, one runner for both SQL dialects: which
//! migrations a schema still needs, applied in order and recorded in its
//! version table, on a connection the caller has locked.

use chrono::Utc;
use sqlx::AssertSqlSafe;

use super::{Dialect, TablePrefix};
use crate::store::StoreError;
use crate::store::sql::DriverResult;

/// A schema migration: its version and its SQL, with `{p}` for the prefix.
pub(crate) type Migration = (i64, &'static str);

/// The migrations of one set of tables (the event log, or the views) and
/// the table recording which ran.
#[derive(Debug)]
pub(crate) struct Schema {
    /// For the log line of each upgrade.
    pub(crate) name: &'static str,
    /// The version table, with `{p}` for the prefix.
    pub(crate) versions: &'static str,
    pub(crate) migrations: &'static [Migration],
}

/// Creates or upgrades `schema` on `connection`, which the caller holds
/// under a lock (SQLite's write lock, a PostgreSQL advisory lock) inside a
/// transaction, so instances starting together apply each migration once.
pub(crate) async fn upgrade<DB>(
    connection: &mut DB::Connection,
    dialect: Dialect,
    prefix: &TablePrefix,
    schema: &Schema,
) -> Result<(), StoreError>
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Decode<'q, DB> + sqlx::Type<DB>,
    for<'q> <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
    (i64,): for<'r> sqlx::FromRow<'r, DB::Row>,
{
    let versions = prefix.expand(schema.versions);
    let (create, insert) = match dialect {
        Dialect::Sqlite => (
            format!(
                "CREATE TABLE IF NOT EXISTS {versions} \
                 (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)"
            ),
            format!("INSERT INTO {versions} (version, applied_at) VALUES (?1, ?2)"),
        ),
        Dialect::Postgres => (
            format!(
                "CREATE TABLE IF NOT EXISTS {versions} \
                 (version BIGINT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            ),
            format!(
                "INSERT INTO {versions} (version, applied_at) \
                 VALUES ($1, to_timestamp($2::BIGINT / 1000000.0))"
            ),
        ),
    };
    sqlx::raw_sql(AssertSqlSafe(create))
        .execute(&mut *connection)
        .await
        .db()?;
    let (current,): (i64,) = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT coalesce(max(version), 0) FROM {versions}"
    )))
    .fetch_one(&mut *connection)
    .await
    .db()?;
    for (version, template) in pending(schema.migrations, current)? {
        sqlx::raw_sql(AssertSqlSafe(prefix.expand(template)))
            .execute(&mut *connection)
            .await
            .db()?;
        sqlx::query(AssertSqlSafe(insert.clone()))
            .bind(version)
            .bind(Utc::now().timestamp_micros())
            .execute(&mut *connection)
            .await
            .db()?;
        tracing::info!(
            version,
            schema = schema.name,
            prefix = prefix.as_str(),
            "schema upgraded"
        );
    }
    Ok(())
}

/// The migrations a schema at version `current` still needs, in order; an
/// error if it is newer than any this build knows.
fn pending(
    migrations: &'static [Migration],
    current: i64,
) -> Result<impl Iterator<Item = Migration>, StoreError> {
    let known = migrations.last().map_or(0, |&(version, _)| version);
    if current > known {
        return Err(StoreError::SchemaTooNew {
            found: current,
            known,
        });
    }
    Ok(migrations
        .iter()
        .copied()
        .filter(move |&(version, _)| version > current))
}
