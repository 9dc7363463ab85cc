//! The SQL of table projections, one text for both dialects: a version's
//! migrations, each step run once under a lock and checked by its checksum
//! afterwards; the SQL views under the serving names, re-pointed when a
//! version starts serving; a retired version's tables dropped, a rebuilt
//! one's emptied. Every function runs inside the caller's write
//! transaction.

use sqlx::{AssertSqlSafe, SqlSafeStr, SqlStr};

use super::{Dialect, DriverResult, TablePrefix};
use crate::view::{TableSchema, ViewError};

/// The table statements of one write transaction.
pub(crate) struct TableSql<'c, DB: sqlx::Database> {
    connection: &'c mut DB::Connection,
    dialect: Dialect,
    prefix: &'c TablePrefix,
}

/// How long a DDL statement waits for the readers of a table or view it
/// replaces before the whole change is tried again later: waiting longer
/// would queue every later reader behind it.
const DDL_LOCK_TIMEOUT: &str = "SET LOCAL lock_timeout = '2s'";

impl<'c, DB> TableSql<'c, DB>
where
    DB: sqlx::Database,
    for<'e> &'e mut DB::Connection: sqlx::Executor<'e, Database = DB>,
    <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
    for<'q> &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    (i64,): for<'r> sqlx::FromRow<'r, DB::Row>,
    (String, i64): for<'r> sqlx::FromRow<'r, DB::Row>,
    (String, String): for<'r> sqlx::FromRow<'r, DB::Row>,
{
    pub(crate) fn new(
        connection: &'c mut DB::Connection,
        dialect: Dialect,
        prefix: &'c TablePrefix,
    ) -> Self {
        Self {
            connection,
            dialect,
            prefix,
        }
    }

    fn sql(&self, template: &str) -> SqlStr {
        let text = self.prefix.expand(template);
        let text = match self.dialect {
            Dialect::Sqlite => text,
            Dialect::Postgres => text.replace('?', "$"),
        };
        AssertSqlSafe(text).into_sql_str()
    }

    async fn run(&mut self, statement: String) -> Result<(), ViewError> {
        sqlx::raw_sql(AssertSqlSafe(statement))
            .execute(&mut *self.connection)
            .await
            .db()?;
        Ok(())
    }

    /// Runs the steps of `key`'s migrations that have not run, checks that
    /// they made each declared table, and records the tables as `key`'s.
    pub(crate) async fn migrate(
        &mut self,
        key: &str,
        schema: &TableSchema,
    ) -> Result<(), ViewError> {
        let failed = |reason: String| ViewError::Migration {
            projection: key.to_owned(),
            reason,
        };
        let (steps, dialect, attribute) = match self.dialect {
            Dialect::Sqlite => (schema.migrations.sqlite, "SQLite", "sqlite"),
            Dialect::Postgres => (schema.migrations.postgres, "PostgreSQL", "postgres"),
        };
        if steps.is_empty() {
            return Err(failed(format!(
                "it has no migrations for {dialect}, where its views are: add `migrations({attribute}(\"..\"))`"
            )));
        }
        if let Some(table) = schema.tables.iter().find(|table| !plain(table)) {
            return Err(failed(format!(
                "`{table}` is not a table name of lowercase letters, digits and `_`"
            )));
        }
        if self.dialect == Dialect::Postgres {
            self.lock(key).await?;
        }
        let recorded: Vec<(String, i64)> = sqlx::query_as(
            self.sql("SELECT checksum, step FROM {p}table_migrations WHERE processor = ?1"),
        )
        .bind(key)
        .fetch_all(&mut *self.connection)
        .await
        .db()?;
        for (step, text) in (1_i64..).zip(steps) {
            let sum = checksum(text);
            match recorded.iter().find(|(_, number)| *number == step) {
                Some((recorded, _)) if *recorded == sum => continue,
                Some(_) => {
                    return Err(failed(format!(
                        "step {step} of its migrations changed since it ran: add a step instead, or a new version"
                    )));
                }
                None => {}
            }
            if let Err(error) = sqlx::raw_sql(AssertSqlSafe(*text))
                .execute(&mut *self.connection)
                .await
            {
                let error = super::error::database_error(error);
                if error.is_transient() {
                    return Err(error.into());
                }
                return Err(failed(format!(
                    "step {step} of its migrations failed: {error}"
                )));
            }
            sqlx::query(self.sql(
                "INSERT INTO {p}table_migrations (processor, step, checksum, applied_at) \
                 VALUES (?1, ?2, ?3, ?4)",
            ))
            .bind(key)
            .bind(step)
            .bind(sum)
            .bind(super::views::now_millis())
            .execute(&mut *self.connection)
            .await
            .db()?;
        }
        for (name, versioned) in schema.names() {
            if !self.exists(&versioned).await? {
                return Err(failed(format!(
                    "its migrations did not create the table `{versioned}` (`{name}` of version {})",
                    schema.version
                )));
            }
            sqlx::query(self.sql(
                "INSERT INTO {p}projection_tables (processor, name, versioned) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (processor, name) DO NOTHING",
            ))
            .bind(key)
            .bind(name)
            .bind(versioned)
            .execute(&mut *self.connection)
            .await
            .db()?;
        }
        Ok(())
    }

    /// One migrator of `key` at a time, across processes, until the
    /// transaction ends (SQLite's write lock does this there).
    #[cfg(feature = "postgres")]
    async fn lock(&mut self, key: &str) -> Result<(), ViewError> {
        sqlx::query(self.sql("SELECT pg_advisory_xact_lock(?1)"))
            .bind(self.prefix.lock_key(&format!("tables of {key}")))
            .execute(&mut *self.connection)
            .await
            .db()?;
        Ok(())
    }

    #[cfg(not(feature = "postgres"))]
    async fn lock(&mut self, _key: &str) -> Result<(), ViewError> {
        Ok(())
    }

    async fn exists(&mut self, table: &str) -> Result<bool, ViewError> {
        let statement = match self.dialect {
            Dialect::Sqlite => {
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1"
            }
            Dialect::Postgres => {
                "SELECT count(*) FROM pg_catalog.pg_tables \
                 WHERE tablename = ?1 AND schemaname = ANY (current_schemas(false))"
            }
        };
        let (count,): (i64,) = sqlx::query_as(self.sql(statement))
            .bind(table)
            .fetch_one(&mut *self.connection)
            .await
            .db()?;
        Ok(count > 0)
    }

    /// The tables `key` owns: each one's serving name and its own.
    async fn owned(&mut self, key: &str) -> Result<Vec<(String, String)>, ViewError> {
        let tables: Vec<(String, String)> = sqlx::query_as(self.sql(
            "SELECT name, versioned FROM {p}projection_tables WHERE processor = ?1 ORDER BY name",
        ))
        .bind(key)
        .fetch_all(&mut *self.connection)
        .await
        .db()?;
        match tables
            .iter()
            .find(|(name, versioned)| !plain(name) || !plain(versioned))
        {
            Some((name, versioned)) => Err(super::views::corrupt(
                key,
                format!("its recorded table `{name}` = `{versioned}` is not a plain table name"),
            )),
            None => Ok(tables),
        }
    }

    /// Makes the serving names read `to`'s tables, and drops the views of
    /// `from`'s that `to` does not have.
    pub(crate) async fn repoint(&mut self, from: Option<&str>, to: &str) -> Result<(), ViewError> {
        let old = match from {
            Some(from) => self.owned(from).await?,
            None => Vec::new(),
        };
        let new = self.owned(to).await?;
        if old.is_empty() && new.is_empty() {
            return Ok(());
        }
        if self.dialect == Dialect::Postgres {
            self.run(DDL_LOCK_TIMEOUT.to_owned()).await?;
        }
        for (name, _) in &old {
            self.run(format!("DROP VIEW IF EXISTS {name}")).await?;
        }
        for (name, versioned) in &new {
            self.run(format!("DROP VIEW IF EXISTS {name}")).await?;
            self.run(format!("CREATE VIEW {name} AS SELECT * FROM {versioned}"))
                .await?;
        }
        Ok(())
    }

    /// Drops `key`'s tables and forgets its migrations: a retired version.
    pub(crate) async fn drop_tables(&mut self, key: &str) -> Result<(), ViewError> {
        let tables = self.owned(key).await?;
        if !tables.is_empty() && self.dialect == Dialect::Postgres {
            self.run(DDL_LOCK_TIMEOUT.to_owned()).await?;
        }
        for (_, versioned) in &tables {
            self.run(format!("DROP TABLE IF EXISTS {versioned}"))
                .await?;
        }
        for statement in [
            "DELETE FROM {p}projection_tables WHERE processor = ?1",
            "DELETE FROM {p}table_migrations WHERE processor = ?1",
        ] {
            sqlx::query(self.sql(statement))
                .bind(key)
                .execute(&mut *self.connection)
                .await
                .db()?;
        }
        Ok(())
    }

    /// Empties `key`'s tables, for a rebuild.
    pub(crate) async fn clear(&mut self, key: &str) -> Result<(), ViewError> {
        for (_, versioned) in self.owned(key).await? {
            self.run(format!("DELETE FROM {versioned}")).await?;
        }
        Ok(())
    }
}

/// Whether `name` can be written into SQL as it is: lowercase ASCII
/// letters, digits and `_`, not starting with a digit, at most 63 bytes
/// (PostgreSQL's limit).
pub(crate) fn plain(name: &str) -> bool {
    name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// A stable checksum of a migration step's text (FNV-1a, 64 bits, in hex).
fn checksum(text: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

#[cfg(all(test, feature = "sqlite"))]
mod tests {
    use crate::SqliteStore;
    use crate::view::{TableMigrations, TableSchema, ViewError};

    const CREATE: &str = "CREATE TABLE report_v1 (day TEXT PRIMARY KEY, total INTEGER NOT NULL)";
    const INDEX: &str = "CREATE INDEX report_v1_total ON report_v1 (total)";
    const CHANGED: &str = "CREATE TABLE report_v1 (day TEXT PRIMARY KEY)";
    const ELSEWHERE: &str = "CREATE TABLE elsewhere (id TEXT)";

    fn schema(sqlite: &'static [&'static str]) -> TableSchema {
        of(&["report"], sqlite)
    }

    fn of(tables: &'static [&'static str], sqlite: &'static [&'static str]) -> TableSchema {
        TableSchema {
            tables,
            migrations: TableMigrations {
                sqlite,
                postgres: &[],
            },
            version: 1,
        }
    }

    fn reason(error: ViewError) -> String {
        match error {
            ViewError::Migration { reason, .. } => reason,
            other => panic!("not a migration error: {other}"),
        }
    }

    /// Steps run once each, a later step is added in place, and a step
    /// changed after it ran, a step that fails or one that forgets its
    /// table stops the version with the reason, changing nothing.
    #[tokio::test]
    async fn steps_run_once_and_are_checked_afterwards() {
        let store = SqliteStore::in_memory().await.expect("SQLite opens");
        let views = store.views();
        let backend = views.backend();
        backend
            .ensure_tables("report", schema(&[CREATE]))
            .await
            .expect("migrated");
        // Again, as at every start: nothing runs (a second CREATE would fail).
        backend
            .ensure_tables("report", schema(&[CREATE]))
            .await
            .expect("migrated");
        backend
            .ensure_tables("report", schema(&[CREATE, INDEX]))
            .await
            .expect("migrated");

        let error = backend
            .ensure_tables("report", schema(&[CHANGED, INDEX]))
            .await
            .expect_err("refused");
        assert!(reason(error).contains("step 1 of its migrations changed"));

        let error = backend
            .ensure_tables("other", schema(&[CHANGED]))
            .await
            .expect_err("refused");
        assert!(reason(error).contains("step 1 of its migrations failed"));

        let error = backend
            .ensure_tables("forgetful", of(&["forgotten"], &[ELSEWHERE]))
            .await
            .expect_err("refused");
        assert!(reason(error).contains("did not create the table `forgotten_v1`"));
        // Rolled back with the error: the step did not stay behind.
        let after = backend
            .ensure_tables("forgetful", of(&["forgotten"], &[ELSEWHERE]))
            .await
            .expect_err("refused");
        assert!(reason(after).contains("did not create"));

        let error = backend
            .ensure_tables("report", schema(&[]))
            .await
            .expect_err("refused");
        assert!(reason(error).contains("no migrations for SQLite"));
    }
}
