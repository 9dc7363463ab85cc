//! [`SqliteStore`]: the event log in a SQLite file, and its views.

mod append;
mod deadlines;
mod file;
mod transaction;
mod views;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use chrono::DateTime;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Row as _, SqlSafeStr, SqlStr, Sqlite};
use uuid::Uuid;

use crate::store::sql::DriverResult;
use file::DatabaseFile;
use transaction::WriteTransaction;
pub use views::SqliteViews;

use super::sql::boundary::{self, ItemStatements};
use super::sql::{
    DEADLINE_COLUMNS, DeadlineRow, Dialect, Row, Schema, TablePrefix, acquire, column,
    database_error, read, read_log, stored, upgrade,
};
use super::{
    DeadlineChanges, DeadlineCounts, DeadlineFailure, DeadlineFilter, DueQuery, EventStore,
    ReadLimit, RowLocation, Snapshot, StoreError, StoredDeadline, StreamAppend, is_stream,
    rejected,
};
use crate::boundary::{AppendCondition, EventQuery};
use crate::envelope::{Envelope, JsonPayload, NewEvent};
use crate::store::Matching;
use crate::view::ViewStore;

/// The log's schema: each migration once, in order.
const SCHEMA: Schema = Schema {
    name: "sqlite event store",
    versions: "{p}schema_migrations",
    migrations: &[
        (1, include_str!("migrations/1.sql")),
        (2, include_str!("migrations/2.sql")),
        (3, include_str!("migrations/3.sql")),
        (4, include_str!("migrations/4.sql")),
        (5, include_str!("migrations/5.sql")),
    ],
};

/// Columns of a deadline row, in the order [`deadline_row`] reads them.
const DEADLINE_SELECT: &str = "aggregate_type, aggregate_id, name, key, deadline_id, due_at, \
                               version, payload, metadata, attempts, last_error, parked";

/// Columns of an event row, in the order [`row`] reads them.
const COLUMNS: &str = "position, aggregate_type, aggregate_id, sequence, event_id, event_name, \
                       event_version, recorded_at, metadata, payload";

/// The columns an append writes: the above and the batch's command id.
const INSERT_COLUMNS: &str = "position, aggregate_type, aggregate_id, sequence, event_id, event_name, \
                              event_version, recorded_at, metadata, payload, command_id";

/// An event store in a SQLite database: a file, or memory for tests.
///
/// Files are opened in WAL mode with `synchronous = FULL`: a committed append
/// survives a crash of the process or the machine. Appends take SQLite's
/// write lock (`BEGIN IMMEDIATE`) for the version check and the insert, so
/// positions are handed out in commit order, also across processes sharing
/// the file. The writers of one process (appends and the processors' view
/// batches) take that lock in turn, in the order they asked, rather than
/// polling it with SQLite's sleeps: a command waits only for the writes
/// queued before it. The schema is created and upgraded on open.
///
/// A connection whose transaction failed half-way (a disk error, a full
/// disk, a file that cannot be written, a cancelled append) is closed, not
/// returned to the pool, so the store works again as soon as the file does. Before each write the store checks
/// that its path still names the file it opened:
/// [`StoreError::FileReplaced`] if it was deleted or replaced.
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
    file: DatabaseFile,
    sql: Statements,
}

/// The store's SQL, built once with the table prefix.
#[derive(Debug, Clone)]
struct Statements {
    insert_prefix: String,
    insert_tags_prefix: String,
    items: ItemStatements,
    versions: SqlStr,
    has_command: SqlStr,
    load_command: SqlStr,
    last_position: SqlStr,
    load: SqlStr,
    read_all: SqlStr,
    load_snapshot: SqlStr,
    save_snapshot: SqlStr,
    schedule_deadline: SqlStr,
    cancel_deadline: SqlStr,
    consume_deadline: SqlStr,
    claim_deadline: SqlStr,
    deadline_origin: SqlStr,
    deadline_pending: SqlStr,
    record_origin: SqlStr,
    list_deadlines: SqlStr,
    count_deadlines: SqlStr,
    deadline_failed: SqlStr,
    retry_deadline: SqlStr,
    due_deadlines: SqlStr,
    load_deadlines: SqlStr,
}

impl SqliteStore {
    /// Opens the database file at `path`, creating it if missing.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        SqliteOptions::file(path).open().await
    }

    /// A database in memory, gone when the store is dropped.
    pub async fn in_memory() -> Result<Self, StoreError> {
        SqliteOptions::in_memory().open().await
    }

    async fn over(
        pool: SqlitePool,
        prefix: TablePrefix,
        busy_timeout: Duration,
    ) -> Result<Self, StoreError> {
        let file = DatabaseFile::of(&pool, busy_timeout).await?;
        migrate(&pool, &file, &prefix, &[&SCHEMA, &views::SCHEMA]).await?;
        let sql = |template: &str| AssertSqlSafe(prefix.expand(template)).into_sql_str();
        let statements = Statements {
            insert_prefix: prefix.expand(&format!("INSERT INTO {{p}}events ({INSERT_COLUMNS}) ")),
            insert_tags_prefix: prefix.expand("INSERT INTO {p}event_tags (tag, position) "),
            // An item's events are found through its first tag's rows, and
            // each must carry all of its tags (?4).
            items: ItemStatements {
                tagged: sql(&format!(
                    "SELECT {COLUMNS} FROM {{p}}events e WHERE e.position IN ( \
                       SELECT t.position FROM {{p}}event_tags t \
                       WHERE t.tag = json_extract(?4, '$[0]') AND t.position > ?1 AND t.position <= ?2) \
                     AND (?3 IS NULL OR e.event_name IN (SELECT value FROM json_each(?3))) \
                     AND NOT EXISTS (SELECT 1 FROM json_each(?4) x \
                          WHERE NOT EXISTS (SELECT 1 FROM {{p}}event_tags a \
                                            WHERE a.tag = x.value AND a.position = e.position)) \
                     ORDER BY e.position"
                )),
                named: sql(&format!(
                    "SELECT {COLUMNS} FROM {{p}}events e WHERE e.position > ?1 AND e.position <= ?2 \
                     AND (?3 IS NULL OR e.event_name IN (SELECT value FROM json_each(?3))) \
                     AND json_array_length(?4) = 0 ORDER BY e.position"
                )),
            },
            has_command: sql("SELECT EXISTS (SELECT 1 FROM {p}events \
                 WHERE aggregate_type = ?1 AND aggregate_id = ?2 AND command_id = ?3)"),
            // No ORDER BY: sorting by sequence could make the planner walk
            // the stream's index instead of the command index.
            load_command: sql(&format!(
                "SELECT {COLUMNS} FROM {{p}}events \
                 WHERE aggregate_type = ?1 AND aggregate_id = ?2 AND command_id = ?3"
            )),
            last_position: sql("SELECT coalesce(max(position), 0) FROM {p}events"),
            versions: sql("SELECT (SELECT coalesce(max(sequence), 0) FROM {p}events \
                         WHERE aggregate_type = ?1 AND aggregate_id = ?2), \
                        (SELECT coalesce(max(position), 0) FROM {p}events)"),
            load: sql(&format!(
                "SELECT {COLUMNS} FROM {{p}}events \
                 WHERE aggregate_type = ?1 AND aggregate_id = ?2 AND sequence >= ?3 ORDER BY sequence"
            )),
            // The rows of the page up to the first that brings it to the
            // byte budget (?3): sized from the records' headers first, so no
            // row past the budget is read (the driver reads ahead of what the
            // store takes).
            read_all: sql(&format!(
                "WITH head AS (SELECT position, octet_length(payload) + octet_length(aggregate_id) AS bytes \
                   FROM {{p}}events WHERE position >= ?1 ORDER BY position LIMIT ?2), \
                 page AS (SELECT position, sum(bytes) OVER (ORDER BY position) AS running FROM head) \
                 SELECT {COLUMNS} FROM {{p}}events WHERE position >= ?1 AND position <= coalesce( \
                   (SELECT min(position) FROM page WHERE running >= ?3), (SELECT max(position) FROM page)) \
                 ORDER BY position LIMIT ?2"
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
            schedule_deadline: sql(&format!(
                "INSERT INTO {{p}}deadlines ({DEADLINE_COLUMNS}) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?6) \
                 ON CONFLICT (aggregate_type, aggregate_id, name, key) DO UPDATE SET \
                 deadline_id = excluded.deadline_id, due_at = excluded.due_at, \
                 version = excluded.version, payload = excluded.payload, metadata = excluded.metadata, \
                 fire_at = excluded.fire_at, attempts = 0, last_error = NULL, parked = 0, \
                 claimed = 0"
            )),
            retry_deadline: sql("UPDATE {p}deadlines SET attempts = 0, last_error = NULL, \
                 fire_at = ?4, parked = 0, claimed = 0 \
                 WHERE aggregate_type = ?1 AND aggregate_id = ?2 AND deadline_id = ?3"),
            deadline_failed: sql(
                "UPDATE {p}deadlines SET attempts = attempts + 1, last_error = ?4, \
                 fire_at = coalesce(?5, fire_at), parked = (?5 IS NULL), claimed = 0 \
                 WHERE aggregate_type = ?1 AND aggregate_id = ?2 AND deadline_id = ?3",
            ),
            cancel_deadline: sql("DELETE FROM {p}deadlines \
                 WHERE aggregate_type = ?1 AND aggregate_id = ?2 AND name = ?3 AND key = ?4 \
                 AND claimed = 0"),
            claim_deadline: sql("UPDATE {p}deadlines SET claimed = 1, fire_at = ?5 \
                 WHERE aggregate_type = ?1 AND aggregate_id = ?2 AND deadline_id = ?3 \
                 AND parked = 0 AND fire_at <= ?4"),
            deadline_origin: sql("SELECT origin FROM {p}deadline_origins \
                 WHERE aggregate_type = ?1 AND aggregate_id = ?2 AND name = ?3 AND key = ?4"),
            deadline_pending: sql("SELECT EXISTS (SELECT 1 FROM {p}deadlines \
                 WHERE aggregate_type = ?1 AND aggregate_id = ?2 AND name = ?3 AND key = ?4)"),
            record_origin: sql("INSERT INTO {p}deadline_origins \
                 (aggregate_type, aggregate_id, name, key, origin) VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT (aggregate_type, aggregate_id, name, key) \
                 DO UPDATE SET origin = max(origin, excluded.origin)"),
            consume_deadline: sql("DELETE FROM {p}deadlines \
                 WHERE aggregate_type = ?1 AND aggregate_id = ?2 AND name = ?3 AND key = ?4 \
                 AND deadline_id = ?5"),
            due_deadlines: sql(&format!(
                "SELECT {DEADLINE_SELECT} FROM {{p}}deadlines WHERE parked = 0 AND fire_at <= ?1 \
                 AND (?3 IS NULL OR aggregate_type IN (SELECT value FROM json_each(?3))) \
                 AND (?4 IS NULL OR shard % ?5 = ?4) \
                 ORDER BY fire_at, deadline_id LIMIT ?2"
            )),
            load_deadlines: sql(&format!(
                "SELECT {DEADLINE_SELECT} FROM {{p}}deadlines \
                 WHERE aggregate_type = ?1 AND aggregate_id = ?2 ORDER BY due_at, deadline_id"
            )),
            list_deadlines: sql(&format!(
                "SELECT {DEADLINE_SELECT} FROM {{p}}deadlines \
                 WHERE (?1 IS NULL OR aggregate_type = ?1) AND (?2 IS NULL OR aggregate_id = ?2) \
                 AND (?3 IS NULL OR due_at < ?3) ORDER BY due_at, deadline_id LIMIT ?4"
            )),
            count_deadlines: sql("SELECT count(*) FILTER (WHERE parked = 0), \
                 count(*) FILTER (WHERE parked = 0 AND due_at <= ?1), \
                 count(*) FILTER (WHERE parked = 1), min(due_at) FILTER (WHERE parked = 0) \
                 FROM {p}deadlines \
                 WHERE (?2 IS NULL OR aggregate_type IN (SELECT value FROM json_each(?2)))"),
        };
        Ok(Self {
            pool,
            prefix,
            file,
            sql: statements,
        })
    }

    /// Runs one statement in a write transaction of its own; the rows it
    /// changed.
    async fn write_one(
        &self,
        query: sqlx::query::Query<'_, Sqlite, sqlx::sqlite::SqliteArguments>,
    ) -> Result<u64, StoreError> {
        let mut transaction = WriteTransaction::begin(&self.pool, &self.file).await?;
        let done = query.execute(transaction.connection()).await.db()?;
        transaction
            .commit()
            .await
            .map_err(|failed| StoreError::from(database_error(failed.error)))?;
        Ok(done.rows_affected())
    }

    /// Views and checkpoints in this database, next to the events (tables
    /// `{prefix}views`, `{prefix}segments` with the checkpoints and leases,
    /// `{prefix}nodes`, `{prefix}parked_events` and `{prefix}projections`).
    pub fn views(&self) -> ViewStore {
        ViewStore::new(SqliteViews::new(
            self.pool.clone(),
            self.file.clone(),
            &self.prefix,
        ))
    }
}

fn row(row: &SqliteRow) -> Result<Row, StoreError> {
    let raw_position: Option<i64> = row.try_get(0).ok();
    let at = || RowLocation {
        position: raw_position.and_then(|position| u64::try_from(position).ok()),
        ..RowLocation::default()
    };
    let event_id: Vec<u8> = column(row, 4, at)?;
    let event_id = Uuid::from_slice(&event_id)
        .map_err(|_| StoreError::corrupt(at(), "the event id is not a UUID"))?;
    let micros: i64 = column(row, 7, at)?;
    let recorded_at = DateTime::from_timestamp_micros(micros)
        .ok_or_else(|| StoreError::corrupt(at(), format!("invalid timestamp {micros}")))?;
    Ok(Row {
        position: column(row, 0, at)?,
        aggregate_type: column(row, 1, at)?,
        aggregate_id: column(row, 2, at)?,
        sequence: column(row, 3, at)?,
        event_id,
        event_name: column(row, 5, at)?,
        event_version: column(row, 6, at)?,
        recorded_at,
        metadata: column(row, 8, at)?,
        payload: column::<_, &str>(row, 9, at)?.into(),
    })
}

fn deadline_row(row: &SqliteRow) -> Result<DeadlineRow, StoreError> {
    let aggregate_type: String = column(row, 0, RowLocation::default)?;
    let aggregate_id: String = column(row, 1, RowLocation::default)?;
    let at = || RowLocation::in_stream(&aggregate_type, &aggregate_id, None);
    let deadline_id: Vec<u8> = column(row, 4, at)?;
    let deadline_id = Uuid::from_slice(&deadline_id)
        .map_err(|_| StoreError::corrupt(at(), "the deadline id is not a UUID"))?;
    let micros: i64 = column(row, 5, at)?;
    let due_at = DateTime::from_timestamp_micros(micros)
        .ok_or_else(|| StoreError::corrupt(at(), format!("invalid due time {micros}")))?;
    Ok(DeadlineRow {
        name: column(row, 2, at)?,
        key: column(row, 3, at)?,
        deadline_id,
        due_at,
        version: column(row, 6, at)?,
        payload: column(row, 7, at)?,
        metadata: column(row, 8, at)?,
        attempts: column(row, 9, at)?,
        last_error: column(row, 10, at)?,
        parked: column(row, 11, at)?,
        aggregate_type,
        aggregate_id,
    })
}

/// Creates or upgrades `schemas` (the log's, the views'), under the write
/// lock so concurrent opens of one file apply each migration once.
async fn migrate(
    pool: &SqlitePool,
    file: &DatabaseFile,
    prefix: &TablePrefix,
    schemas: &[&Schema],
) -> Result<(), StoreError> {
    let mut transaction = WriteTransaction::begin(pool, file).await?;
    let connection = transaction.connection();
    for schema in schemas {
        upgrade::<Sqlite>(connection, Dialect::Sqlite, prefix, schema).await?;
    }
    transaction
        .commit()
        .await
        .map_err(|failed| StoreError::from(database_error(failed.error)))
}

/// How to open a [`SqliteStore`]: the file (or memory), the table prefix and
/// the connection pool's size.
///
/// # Examples
///
/// ```
/// use cqrs_core::store::{SqliteOptions, TablePrefix};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let store = SqliteOptions::in_memory()
///     .prefix(TablePrefix::new("billing_")?)
///     .open()
///     .await?;
/// # drop(store);
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// `None` for memory.
    path: Option<PathBuf>,
    prefix: TablePrefix,
    max_connections: u32,
    busy_timeout: Duration,
}

impl SqliteOptions {
    /// The database file at `path`, created if missing, in WAL mode with
    /// `synchronous = FULL`; 4 connections, 30 s busy timeout.
    pub fn file(path: impl AsRef<Path>) -> Self {
        Self {
            path: Some(path.as_ref().to_owned()),
            prefix: TablePrefix::default(),
            max_connections: 4,
            busy_timeout: Duration::from_secs(30),
        }
    }

    /// A database in memory, gone when the store is dropped (one connection:
    /// each connection to memory is a database of its own).
    pub fn in_memory() -> Self {
        Self {
            path: None,
            max_connections: 1,
            ..Self::file("")
        }
    }

    /// Names every table `{prefix}events` and so on (default `cqrs_`), so
    /// several stores can share one file.
    pub fn prefix(mut self, prefix: TablePrefix) -> Self {
        self.prefix = prefix;
        self
    }

    /// How many connections the store keeps at most (files only).
    pub fn max_connections(mut self, max_connections: u32) -> Self {
        if self.path.is_some() {
            self.max_connections = max_connections.max(1);
        }
        self
    }

    /// How long a write waits for another process's write lock.
    pub fn busy_timeout(mut self, busy_timeout: Duration) -> Self {
        self.busy_timeout = busy_timeout;
        self
    }

    /// Opens the store, creating or upgrading its schema; while the file is
    /// busy (other processes opening it at the same time), tries again for
    /// up to the busy timeout.
    pub async fn open(self) -> Result<SqliteStore, StoreError> {
        self.retrying(|options| {
            Box::pin(async move {
                let pool = options.pool().await?;
                SqliteStore::over(pool, options.prefix.clone(), options.busy_timeout).await
            })
        })
        .await
    }

    /// Opens a database of the read side only: the views, the tables of
    /// table projections, and every processor's checkpoints, segments,
    /// parked events and inboxes, for an app whose events are in another
    /// database (`CqrsBuilder::views`). It creates or upgrades the views'
    /// schema only. Each batch commits its checkpoint with what it wrote
    /// here, so an event still takes effect once; and appends to the log
    /// never wait for the read side's writes, as they do in one file.
    ///
    /// # Examples
    ///
    /// ```
    /// use cqrs_core::store::SqliteOptions;
    /// use cqrs_core::{Cqrs, MemoryStore};
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// # let path = std::env::temp_dir().join(format!("cqrs-doc-read-{}.sqlite", std::process::id()));
    /// let views = SqliteOptions::file(&path).open_views().await?;
    /// let app = Cqrs::builder(MemoryStore::new()).views(views).build()?;
    /// # drop(app);
    /// # let _ = std::fs::remove_file(&path);
    /// # Ok::<_, Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    pub async fn open_views(self) -> Result<ViewStore, StoreError> {
        self.retrying(|options| {
            Box::pin(async move {
                let pool = options.pool().await?;
                let file = DatabaseFile::of(&pool, options.busy_timeout).await?;
                migrate(&pool, &file, &options.prefix, &[&views::SCHEMA]).await?;
                Ok(ViewStore::new(SqliteViews::new(
                    pool,
                    file,
                    &options.prefix,
                )))
            })
        })
        .await
    }

    /// Runs `open` until it succeeds, fails for good, or the file stayed
    /// busy for the busy timeout.
    async fn retrying<T>(
        &self,
        open: impl for<'a> Fn(&'a Self) -> crate::future::BoxFuture<'a, Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        // A file that several processes open at once can be busy beyond
        // SQLite's busy handler (switching it to WAL, or creating it):
        // opening again is safe, as the migrations run under the write lock.
        let started = std::time::Instant::now();
        let mut pause = Duration::from_millis(10);
        loop {
            match open(self).await {
                Err(error)
                    if error.is_transient()
                        && self.path.is_some()
                        && started.elapsed() < self.busy_timeout =>
                {
                    tracing::debug!(%error, "the SQLite file is busy; opening again");
                    futures_timer::Delay::new(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(500));
                }
                opened => return opened,
            }
        }
    }

    async fn pool(&self) -> Result<SqlitePool, StoreError> {
        let pool = match &self.path {
            Some(path) => {
                let options = SqliteConnectOptions::new()
                    .filename(path)
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Full)
                    .busy_timeout(self.busy_timeout);
                SqlitePoolOptions::new()
                    .max_connections(self.max_connections)
                    .connect_with(options)
                    .await
                    .db()?
            }
            None => SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .connect_with(SqliteConnectOptions::from_str("sqlite::memory:").db()?)
                .await
                .db()?,
        };
        Ok(pool)
    }
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

    async fn append_streams(
        &self,
        appends: Vec<StreamAppend>,
    ) -> Vec<Result<Vec<Envelope>, StoreError>> {
        self.append_batches(appends).await
    }

    async fn read_matching(&self, query: EventQuery, after: u64) -> Result<Matching, StoreError> {
        boundary::read_matching(
            &self.pool,
            self.sql.last_position.clone(),
            &self.sql.items,
            &query,
            after,
            row,
        )
        .await
    }

    async fn append_if(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        events: Vec<NewEvent>,
        condition: AppendCondition,
    ) -> Result<Vec<Envelope>, StoreError> {
        self.append_conditional(aggregate_type, aggregate_id, events, &condition)
            .await
    }

    async fn load(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        from_sequence: u64,
    ) -> Result<Vec<Envelope>, StoreError> {
        read::load_stream(
            &self.pool,
            self.sql.load.clone(),
            aggregate_type,
            aggregate_id,
            from_sequence,
            row,
        )
        .await
    }

    async fn read_all(
        &self,
        from_position: u64,
        limit: impl Into<ReadLimit> + Send,
    ) -> Result<Vec<Envelope>, StoreError> {
        read_log(
            &self.pool,
            self.sql.read_all.clone(),
            from_position,
            limit.into(),
            row,
        )
        .await
    }

    async fn last_position(&self) -> Result<u64, StoreError> {
        read::last_position(&self.pool, self.sql.last_position.clone()).await
    }

    async fn load_command(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        command_id: Uuid,
    ) -> Result<Vec<Envelope>, StoreError> {
        read::load_command(
            &self.pool,
            self.sql.load_command.clone(),
            aggregate_type,
            aggregate_id,
            command_id,
            row,
        )
        .await
    }

    async fn load_snapshot(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> Result<Option<Snapshot>, StoreError> {
        if !is_stream(aggregate_type, aggregate_id) {
            return Ok(None);
        }
        let found = sqlx::query(self.sql.load_snapshot.clone())
            .bind(aggregate_type)
            .bind(aggregate_id)
            .fetch_optional(&mut *acquire(&self.pool).await.db()?)
            .await
            .db()?;
        let Some(found) = found else {
            return Ok(None);
        };
        // A snapshot is a cache: one that does not read back is no snapshot.
        let read = || -> Option<Snapshot> {
            let version: i64 = found.try_get(0).ok()?;
            let schema_version: i64 = found.try_get(1).ok()?;
            let state: String = found.try_get(2).ok()?;
            let taken_at: i64 = found.try_get(3).ok()?;
            Some(Snapshot {
                aggregate_type: aggregate_type.to_owned(),
                aggregate_id: aggregate_id.to_owned(),
                version: u64::try_from(version).ok()?,
                schema_version: u32::try_from(schema_version).ok()?,
                state: JsonPayload::from_text(state),
                taken_at: DateTime::from_timestamp_micros(taken_at)?,
            })
        };
        let snapshot = read();
        if snapshot.is_none() {
            tracing::warn!(
                aggregate_type,
                aggregate_id,
                "ignoring a corrupt snapshot row"
            );
        }
        Ok(snapshot)
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        let Some(version) = stored(snapshot.version) else {
            return Err(rejected(
                &snapshot.aggregate_type,
                &snapshot.aggregate_id,
                format!("snapshot version {} is out of range", snapshot.version),
            ));
        };
        self.file.check()?;
        sqlx::query(self.sql.save_snapshot.clone())
            .bind(&snapshot.aggregate_type)
            .bind(&snapshot.aggregate_id)
            .bind(version)
            .bind(i64::from(snapshot.schema_version))
            .bind(snapshot.state.as_str())
            .bind(snapshot.taken_at.timestamp_micros())
            .execute(&mut *acquire(&self.pool).await.db()?)
            .await
            .db()?;
        Ok(())
    }

    async fn due_deadlines(&self, query: DueQuery) -> Result<Vec<StoredDeadline>, StoreError> {
        let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
        // The types as a JSON array, which `json_each` reads.
        let types = query
            .aggregate_types
            .map(|types| serde_json::Value::from(types).to_string());
        let (segment, segments) = query.segment.unzip();
        let rows = sqlx::query(self.sql.due_deadlines.clone())
            .bind(query.now.timestamp_micros())
            .bind(limit)
            .bind(types)
            .bind(segment.map(i64::from))
            .bind(segments.map(i64::from))
            .fetch_all(&mut *acquire(&self.pool).await.db()?)
            .await
            .db()?;
        rows.iter()
            .map(|row| deadline_row(row)?.into_stored())
            .collect()
    }

    async fn deadline_failed(&self, failure: DeadlineFailure) -> Result<(), StoreError> {
        let query = sqlx::query(self.sql.deadline_failed.clone())
            .bind(&failure.aggregate_type)
            .bind(&failure.aggregate_id)
            .bind(failure.deadline_id)
            .bind(&failure.error)
            .bind(failure.retry_at.map(|at| at.timestamp_micros()));
        self.write_one(query).await.map(drop)
    }

    async fn load_deadlines(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> Result<Vec<StoredDeadline>, StoreError> {
        let rows = sqlx::query(self.sql.load_deadlines.clone())
            .bind(aggregate_type)
            .bind(aggregate_id)
            .fetch_all(&mut *acquire(&self.pool).await.db()?)
            .await
            .db()?;
        rows.iter()
            .map(|row| deadline_row(row)?.into_stored())
            .collect()
    }

    async fn retry_deadline(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        deadline_id: Uuid,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<bool, StoreError> {
        let query = sqlx::query(self.sql.retry_deadline.clone())
            .bind(aggregate_type)
            .bind(aggregate_id)
            .bind(deadline_id)
            .bind(at.timestamp_micros());
        Ok(self.write_one(query).await? > 0)
    }

    async fn change_deadlines(&self, changes: DeadlineChanges) -> Result<(), StoreError> {
        self.change_owned_deadlines(changes).await
    }

    async fn deadlines(&self, filter: DeadlineFilter) -> Result<Vec<StoredDeadline>, StoreError> {
        let rows = sqlx::query(self.sql.list_deadlines.clone())
            .bind(filter.owner_type)
            .bind(filter.owner_id)
            .bind(filter.due_before.map(|at| at.timestamp_micros()))
            .bind(i64::try_from(filter.limit).unwrap_or(i64::MAX))
            .fetch_all(&mut *acquire(&self.pool).await.db()?)
            .await
            .db()?;
        rows.iter()
            .map(|row| deadline_row(row)?.into_stored())
            .collect()
    }

    async fn deadline_counts(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        owner_types: Option<Vec<String>>,
    ) -> Result<DeadlineCounts, StoreError> {
        let types = owner_types.map(|types| serde_json::Value::from(types).to_string());
        let (pending, due, parked, earliest): (i64, i64, i64, Option<i64>) =
            sqlx::query_as(self.sql.count_deadlines.clone())
                .bind(now.timestamp_micros())
                .bind(types)
                .fetch_one(&mut *acquire(&self.pool).await.db()?)
                .await
                .db()?;
        let count = |n: i64| u64::try_from(n).unwrap_or_default();
        Ok(DeadlineCounts {
            pending: count(pending),
            due: count(due),
            parked: count(parked),
            earliest_due: earliest.and_then(chrono::DateTime::from_timestamp_micros),
        })
    }

    async fn claim_deadline(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        deadline_id: Uuid,
        now: chrono::DateTime<chrono::Utc>,
        until: chrono::DateTime<chrono::Utc>,
    ) -> Result<bool, StoreError> {
        self.claim((aggregate_type, aggregate_id), deadline_id, now, until)
            .await
    }

    fn backend(&self) -> &'static str {
        "sqlite"
    }

    fn views(&self) -> ViewStore {
        SqliteStore::views(self)
    }
}
