use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, QueryBuilder, Row as _, SqlSafeStr, SqlStr, Sqlite};
use uuid::Uuid;

use super::sql::{Row, TablePrefix, to_i64};
use super::{EventStore, Snapshot, StoreError, check_stream, command_id, now};
use crate::envelope::{Envelope, JsonPayload, NewEvent};
use crate::error::Conflict;
use crate::view::{ReadModels, SqliteViews};

/// Schema changes, applied in order and recorded in `{p}schema_migrations`.
const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        "CREATE TABLE {p}events (
        position INTEGER NOT NULL UNIQUE,
        aggregate_type TEXT NOT NULL,
        aggregate_id TEXT NOT NULL,
        sequence INTEGER NOT NULL,
        event_id BLOB NOT NULL UNIQUE,
        event_name TEXT NOT NULL,
        event_version INTEGER NOT NULL,
        recorded_at INTEGER NOT NULL,
        metadata TEXT NOT NULL,
        payload TEXT NOT NULL,
        PRIMARY KEY (aggregate_type, aggregate_id, sequence)
    );
    CREATE TABLE {p}snapshots (
        aggregate_type TEXT NOT NULL,
        aggregate_id TEXT NOT NULL,
        version INTEGER NOT NULL,
        schema_version INTEGER NOT NULL,
        state TEXT NOT NULL,
        taken_at INTEGER NOT NULL,
        PRIMARY KEY (aggregate_type, aggregate_id)
    );",
    ),
    (
        2,
        "ALTER TABLE {p}events ADD COLUMN command_id BLOB;
        CREATE INDEX {p}events_command ON {p}events (aggregate_type, aggregate_id, command_id)
            WHERE command_id IS NOT NULL;
        CREATE TABLE {p}views (
            projection TEXT NOT NULL,
            view_id TEXT NOT NULL,
            document TEXT NOT NULL,
            PRIMARY KEY (projection, view_id)
        );
        CREATE TABLE {p}checkpoints (
            processor TEXT PRIMARY KEY,
            position INTEGER NOT NULL,
            updated_at INTEGER NOT NULL
        );",
    ),
];

/// Columns of an event row, in the order [`row`] reads them.
const COLUMNS: &str = "position, aggregate_type, aggregate_id, sequence, event_id, event_name, \
                       event_version, recorded_at, metadata, payload";

/// The columns an append writes: the above and the batch's command id.
const INSERT_COLUMNS: &str = "position, aggregate_type, aggregate_id, sequence, event_id, event_name, \
                              event_version, recorded_at, metadata, payload, command_id";

/// SQLite caps bound parameters per statement at 32,766; eleven per event.
const EVENTS_PER_INSERT: usize = 2_900;

/// An event store in a SQLite database: a file, or memory for tests.
///
/// Files are opened in WAL mode with `synchronous = FULL`: a committed append
/// survives a crash of the process or the machine. Appends take SQLite's
/// write lock (`BEGIN IMMEDIATE`) for the version check and the insert, so
/// positions are handed out in commit order, also across processes sharing
/// the file. The schema is created and upgraded on open.
///
/// # Examples
///
/// ```
/// use cqrs_core::{EventStore, SqliteStore};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let store = SqliteStore::in_memory().await?;
/// assert!(store.read_all(1, 10).await?.is_empty());
/// # Ok::<_, cqrs_core::StoreError>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    prefix: TablePrefix,
    sql: Statements,
}

/// The store's SQL, built once with the table prefix.
#[derive(Debug, Clone)]
struct Statements {
    insert_prefix: String,
    versions: SqlStr,
    has_command: SqlStr,
    last_position: SqlStr,
    load: SqlStr,
    read_all: SqlStr,
    load_snapshot: SqlStr,
    save_snapshot: SqlStr,
}

impl SqliteStore {
    /// Opens the database file at `path`, creating it if missing.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(30));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        Self::from_pool(pool, TablePrefix::default()).await
    }

    /// A database in memory, gone when the store is dropped.
    pub async fn in_memory() -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:")?;
        // Every connection to `:memory:` is a database of its own: keep one.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await?;
        Self::from_pool(pool, TablePrefix::default()).await
    }

    /// A store over an existing pool, with its tables named `{prefix}events`
    /// and so on. Creates or upgrades the schema.
    pub async fn from_pool(pool: SqlitePool, prefix: TablePrefix) -> Result<Self, StoreError> {
        migrate(&pool, &prefix).await?;
        let sql = |template: &str| AssertSqlSafe(prefix.expand(template)).into_sql_str();
        let statements = Statements {
            insert_prefix: prefix.expand(&format!("INSERT INTO {{p}}events ({INSERT_COLUMNS}) ")),
            has_command: sql("SELECT EXISTS (SELECT 1 FROM {p}events \
                 WHERE aggregate_type = ?1 AND aggregate_id = ?2 AND command_id = ?3)"),
            last_position: sql("SELECT coalesce(max(position), 0) FROM {p}events"),
            versions: sql("SELECT (SELECT coalesce(max(sequence), 0) FROM {p}events \
                         WHERE aggregate_type = ?1 AND aggregate_id = ?2), \
                        (SELECT coalesce(max(position), 0) FROM {p}events)"),
            load: sql(&format!(
                "SELECT {COLUMNS} FROM {{p}}events \
                 WHERE aggregate_type = ?1 AND aggregate_id = ?2 AND sequence >= ?3 ORDER BY sequence"
            )),
            read_all: sql(&format!(
                "SELECT {COLUMNS} FROM {{p}}events WHERE position >= ?1 ORDER BY position LIMIT ?2"
            )),
            load_snapshot: sql(
                "SELECT version, schema_version, state, taken_at FROM {p}snapshots \
                 WHERE aggregate_type = ?1 AND aggregate_id = ?2",
            ),
            save_snapshot: sql(
                "INSERT INTO {p}snapshots (aggregate_type, aggregate_id, version, schema_version, state, taken_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                 ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE SET \
                 version = excluded.version, schema_version = excluded.schema_version, \
                 state = excluded.state, taken_at = excluded.taken_at \
                 WHERE excluded.version >= {p}snapshots.version",
            ),
        };
        Ok(Self {
            pool,
            prefix,
            sql: statements,
        })
    }

    /// The connection pool, for the application's own tables.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Read models and checkpoints in this database, next to the events.
    pub fn read_models(&self) -> ReadModels {
        ReadModels::new(SqliteViews::new(self.pool.clone(), &self.prefix))
    }

    async fn append_batch(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        expected_version: u64,
        events: Vec<NewEvent>,
    ) -> Result<Vec<Envelope>, StoreError> {
        check_stream(aggregate_type, aggregate_id)?;
        let expected = to_i64(expected_version, "expected version")?;
        // Takes the database's write lock now, not at the first write, so the
        // version read below is still true at commit.
        let mut transaction = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let (actual, head): (i64, i64) = sqlx::query_as(self.sql.versions.clone())
            .bind(aggregate_type)
            .bind(aggregate_id)
            .fetch_one(&mut *transaction)
            .await?;
        let command_id = command_id(&events);
        if let Some(command_id) = command_id {
            let recorded: bool = sqlx::query_scalar(self.sql.has_command.clone())
                .bind(aggregate_type)
                .bind(aggregate_id)
                .bind(command_id)
                .fetch_one(&mut *transaction)
                .await?;
            if recorded {
                return Err(StoreError::DuplicateCommand {
                    aggregate_type: aggregate_type.to_owned(),
                    aggregate_id: aggregate_id.to_owned(),
                    command_id,
                });
            }
        }
        if actual != expected {
            return Err(Conflict {
                aggregate_type: aggregate_type.to_owned(),
                aggregate_id: aggregate_id.to_owned(),
                expected: expected_version,
                actual: u64::try_from(actual).unwrap_or(0),
            }
            .into());
        }
        let recorded_at = now();
        let micros = recorded_at.timestamp_micros();
        let mut metadata = Vec::with_capacity(events.len());
        for event in &events {
            metadata.push(serde_json::to_string(&event.metadata).map_err(|error| {
                StoreError::Rejected {
                    aggregate_type: aggregate_type.to_owned(),
                    aggregate_id: aggregate_id.to_owned(),
                    reason: format!("metadata does not serialize: {error}"),
                }
            })?);
        }
        let rows: Vec<(i64, &NewEvent, &str)> = events
            .iter()
            .zip(&metadata)
            .zip(1..)
            .map(|((event, metadata), offset)| (offset, event, metadata.as_str()))
            .collect();
        for chunk in rows.chunks(EVENTS_PER_INSERT) {
            let mut insert = QueryBuilder::<Sqlite>::new(self.sql.insert_prefix.clone());
            insert.push_values(chunk, |mut values, &(offset, event, metadata)| {
                values
                    .push_bind(head + offset)
                    .push_bind(aggregate_type)
                    .push_bind(aggregate_id)
                    .push_bind(expected + offset)
                    .push_bind(event.event_id)
                    .push_bind(event.event_name)
                    .push_bind(i64::from(event.event_version))
                    .push_bind(micros)
                    .push_bind(metadata)
                    .push_bind(event.payload.as_str())
                    .push_bind(command_id);
            });
            let inserted = insert.build().execute(&mut *transaction).await;
            if let Err(error) = inserted {
                let unique = matches!(&error, sqlx::Error::Database(database) if database.is_unique_violation());
                return Err(if unique {
                    StoreError::Rejected {
                        aggregate_type: aggregate_type.to_owned(),
                        aggregate_id: aggregate_id.to_owned(),
                        reason: "an event id of the batch is already used".to_owned(),
                    }
                } else {
                    error.into()
                });
            }
        }
        transaction.commit().await?;

        Ok(events
            .into_iter()
            .zip(1u64..)
            .map(|(event, offset)| Envelope {
                event_id: event.event_id,
                aggregate_type: aggregate_type.to_owned(),
                aggregate_id: aggregate_id.to_owned(),
                sequence: expected_version + offset,
                position: head as u64 + offset,
                event_name: event.event_name.to_owned(),
                event_version: event.event_version,
                recorded_at,
                metadata: event.metadata,
                payload: event.payload,
            })
            .collect())
    }

    async fn fetch(
        &self,
        query: sqlx::query::Query<'_, Sqlite, sqlx::sqlite::SqliteArguments>,
    ) -> Result<Vec<Envelope>, StoreError> {
        query
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|sqlite_row| row(sqlite_row)?.into_envelope())
            .collect()
    }
}

fn row(row: &SqliteRow) -> Result<Row, StoreError> {
    let position: i64 = row.try_get(0)?;
    let corrupt = |reason: String| StoreError::Corrupt {
        position: u64::try_from(position).unwrap_or(0),
        reason,
    };
    let event_id: Vec<u8> = row.try_get(4)?;
    let event_id = Uuid::from_slice(&event_id)
        .map_err(|_| corrupt("the event id is not a UUID".to_owned()))?;
    let micros: i64 = row.try_get(7)?;
    let recorded_at = DateTime::from_timestamp_micros(micros)
        .ok_or_else(|| corrupt(format!("invalid timestamp {micros}")))?;
    Ok(Row {
        position,
        aggregate_type: row.try_get(1)?,
        aggregate_id: row.try_get(2)?,
        sequence: row.try_get(3)?,
        event_id,
        event_name: row.try_get(5)?,
        event_version: row.try_get(6)?,
        recorded_at,
        metadata: row.try_get(8)?,
        payload: row.try_get(9)?,
    })
}

/// Creates or upgrades the schema, under the write lock so concurrent opens
/// of one file apply each migration once.
async fn migrate(pool: &SqlitePool, prefix: &TablePrefix) -> Result<(), StoreError> {
    let mut transaction = pool.begin_with("BEGIN IMMEDIATE").await?;
    let create = prefix.expand(
        "CREATE TABLE IF NOT EXISTS {p}schema_migrations (\
            version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
    );
    sqlx::raw_sql(AssertSqlSafe(create))
        .execute(&mut *transaction)
        .await?;
    let current: i64 = sqlx::query_scalar(AssertSqlSafe(
        prefix.expand("SELECT coalesce(max(version), 0) FROM {p}schema_migrations"),
    ))
    .fetch_one(&mut *transaction)
    .await?;
    let known = MIGRATIONS.last().map_or(0, |&(version, _)| version);
    if current > known {
        return Err(StoreError::SchemaTooNew {
            found: current,
            known,
        });
    }
    for &(version, template) in MIGRATIONS.iter().filter(|&&(version, _)| version > current) {
        sqlx::raw_sql(AssertSqlSafe(prefix.expand(template)))
            .execute(&mut *transaction)
            .await?;
        sqlx::query(AssertSqlSafe(prefix.expand(
            "INSERT INTO {p}schema_migrations (version, applied_at) VALUES (?1, ?2)",
        )))
        .bind(version)
        .bind(Utc::now().timestamp_micros())
        .execute(&mut *transaction)
        .await?;
        tracing::info!(
            version,
            prefix = prefix.as_str(),
            "sqlite event store schema upgraded"
        );
    }
    transaction.commit().await?;
    Ok(())
}

impl EventStore for SqliteStore {
    async fn append(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        expected_version: u64,
        events: Vec<NewEvent>,
    ) -> Result<Vec<Envelope>, StoreError> {
        self.append_batch(aggregate_type, aggregate_id, expected_version, events)
            .await
    }

    async fn load(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        from_sequence: u64,
    ) -> Result<Vec<Envelope>, StoreError> {
        let from = to_i64(from_sequence, "sequence")?;
        let query = sqlx::query(self.sql.load.clone())
            .bind(aggregate_type)
            .bind(aggregate_id)
            .bind(from);
        self.fetch(query).await
    }

    async fn read_all(
        &self,
        from_position: u64,
        limit: usize,
    ) -> Result<Vec<Envelope>, StoreError> {
        let from = to_i64(from_position, "position")?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let query = sqlx::query(self.sql.read_all.clone())
            .bind(from)
            .bind(limit);
        self.fetch(query).await
    }

    async fn last_position(&self) -> Result<u64, StoreError> {
        let position: i64 = sqlx::query_scalar(self.sql.last_position.clone())
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(position).unwrap_or(0))
    }

    async fn has_command(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        command_id: Uuid,
    ) -> Result<bool, StoreError> {
        Ok(sqlx::query_scalar(self.sql.has_command.clone())
            .bind(aggregate_type)
            .bind(aggregate_id)
            .bind(command_id)
            .fetch_one(&self.pool)
            .await?)
    }

    async fn load_snapshot(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> Result<Option<Snapshot>, StoreError> {
        let found = sqlx::query(self.sql.load_snapshot.clone())
            .bind(aggregate_type)
            .bind(aggregate_id)
            .fetch_optional(&self.pool)
            .await?;
        let Some(found) = found else {
            return Ok(None);
        };
        let version: i64 = found.try_get(0)?;
        let schema_version: i64 = found.try_get(1)?;
        let state: String = found.try_get(2)?;
        let taken_at: i64 = found.try_get(3)?;
        // A snapshot is a cache: one that does not read back is no snapshot.
        let (Ok(version), Ok(schema_version), Some(taken_at)) = (
            u64::try_from(version),
            u32::try_from(schema_version),
            DateTime::from_timestamp_micros(taken_at),
        ) else {
            tracing::warn!(
                aggregate_type,
                aggregate_id,
                "ignoring a corrupt snapshot row"
            );
            return Ok(None);
        };
        Ok(Some(Snapshot {
            aggregate_type: aggregate_type.to_owned(),
            aggregate_id: aggregate_id.to_owned(),
            version,
            schema_version,
            state: JsonPayload::from_text(state),
            taken_at,
        }))
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        sqlx::query(self.sql.save_snapshot.clone())
            .bind(&snapshot.aggregate_type)
            .bind(&snapshot.aggregate_id)
            .bind(to_i64(snapshot.version, "version")?)
            .bind(i64::from(snapshot.schema_version))
            .bind(snapshot.state.as_str())
            .bind(snapshot.taken_at.timestamp_micros())
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
