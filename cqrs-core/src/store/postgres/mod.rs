//! [`PostgresStore`]: the event log in PostgreSQL, with group commit, and
//! its views.

mod deadlines;
mod group_commit;
mod notifications;
mod views;

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};
use sqlx::{AssertSqlSafe, Postgres, Row as _, SqlSafeStr, SqlStr};
use uuid::Uuid;

use crate::store::sql::DriverResult;
use group_commit::GroupCommit;
use notifications::Notifications;
pub use views::PostgresViews;

use super::sql::{
    DeadlineRow, Dialect, Row, Schema, TablePrefix, acquire, column, read, read_log, stored,
    upgrade,
};
use super::{
    DeadlineChanges, DeadlineCounts, DeadlineFailure, DeadlineFilter, DueQuery, EventStore,
    ReadLimit, RowLocation, Snapshot, StoreError, StoredDeadline, StreamAppend, check_batch,
    is_stream, rejected,
};
use crate::boundary::{AppendCondition, EventQuery};
use crate::envelope::{Envelope, JsonPayload, NewEvent};
use crate::store::Matching;
use crate::store::sql::boundary;
use crate::view::ViewStore;

/// The log's schema: each migration once, in order.
const SCHEMA: Schema = Schema {
    name: "postgres event store",
    versions: "{p}schema_migrations",
    migrations: &[
        (1, include_str!("migrations/1.sql")),
        (2, include_str!("migrations/2.sql")),
        (3, include_str!("migrations/3.sql")),
        (4, include_str!("migrations/4.sql")),
        (5, include_str!("migrations/5.sql")),
        (6, include_str!("migrations/6.sql")),
        (7, include_str!("migrations/7.sql")),
        (8, include_str!("migrations/8.sql")),
    ],
};

/// Columns of an event row, in the order [`row`] reads them.
const COLUMNS: &str = "position, aggregate_type, aggregate_id, sequence, event_id, event_name, \
                       event_version, recorded_at, metadata::TEXT, payload::TEXT";

/// Columns of a deadline row, in the order [`deadline_row`] reads them.
const DEADLINE_SELECT: &str = "aggregate_type, aggregate_id, name, key, deadline_id, due_at, \
                               version, payload::TEXT, metadata::TEXT, attempts, last_error, \
                               parked";

/// An event store in PostgreSQL, for many application instances sharing one log.
///
/// An append is one round trip: a call to a function the schema installs,
/// which checks the stream's version and inserts the whole batch in one
/// statement. Appends to any stream take one row lock until they commit, so
/// the global positions are dense and visible in order. Payloads are stored
/// as `JSONB`, which cannot hold the NUL character (`\u0000`).
///
/// Appends that one store makes at the same time are committed together
/// (group commit) by a task of the store's own on the tokio runtime: an
/// append whose caller gives up (a request timeout) is taken out of the
/// queue if it was not written yet, and never decides what the other
/// appends of its group are told. An append whose connection broke while it
/// committed returns [`StoreError::OutcomeUnknown`].
///
/// The schema is created and upgraded on connect, under an advisory lock so
/// instances starting together apply each migration once.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    prefix: TablePrefix,
    sql: Arc<Statements>,
    notifications: Arc<Notifications>,
    group: Arc<GroupCommit>,
}

/// The store's SQL, built once with the table prefix.
#[derive(Debug)]
struct Statements {
    load_command: SqlStr,
    last_position: SqlStr,
    load: SqlStr,
    read_all: SqlStr,
    load_snapshot: SqlStr,
    save_snapshot: SqlStr,
    due_deadlines: SqlStr,
    load_deadlines: SqlStr,
    deadline_failed: SqlStr,
    retry_deadline: SqlStr,
    claim_deadline: SqlStr,
    lock_origin: SqlStr,
    deadline_origin: SqlStr,
    deadline_pending: SqlStr,
    record_origin: SqlStr,
    list_deadlines: SqlStr,
    count_deadlines: SqlStr,
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user:password@host/database`).
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        PostgresOptions::new(url).connect().await
    }

    async fn over(pool: PgPool, prefix: TablePrefix) -> Result<Self, StoreError> {
        migrate(&pool, &prefix, &[&SCHEMA, &views::SCHEMA]).await?;
        let sql = |template: &str| AssertSqlSafe(prefix.expand(template)).into_sql_str();
        let statements = Statements {
            // No ORDER BY: sorting by sequence could make the planner walk
            // the stream's index instead of the command index.
            load_command: sql(&format!(
                "SELECT {COLUMNS} FROM {{p}}events \
                 WHERE aggregate_type = $1 AND aggregate_id = $2 AND command_id = $3"
            )),
            last_position: sql("SELECT position FROM {p}log_head WHERE id = 1"),
            load: sql(&format!(
                "SELECT {COLUMNS} FROM {{p}}events \
                 WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence >= $3 ORDER BY sequence"
            )),
            // The rows of the page up to the first that brings it to the
            // byte budget ($3), sized first: the server sends every row it
            // selects, so none past the budget is selected. A small payload
            // is sized by its stored form, a large one (perhaps compressed)
            // by its text.
            read_all: sql(&format!(
                "WITH head AS (SELECT position, octet_length(aggregate_id) + CASE \
                     WHEN pg_column_size(payload) > 2048 THEN octet_length(payload::TEXT) \
                     ELSE pg_column_size(payload) END AS bytes \
                   FROM {{p}}events WHERE position >= $1 ORDER BY position LIMIT $2), \
                 page AS (SELECT position, sum(bytes) OVER (ORDER BY position) AS running FROM head) \
                 SELECT {COLUMNS} FROM {{p}}events WHERE position >= $1 AND position <= coalesce( \
                   (SELECT min(position) FROM page WHERE running >= $3), (SELECT max(position) FROM page)) \
                 ORDER BY position LIMIT $2"
            )),
            load_snapshot: sql(
                "SELECT version, schema_version, state::TEXT, taken_at FROM {p}snapshots \
                 WHERE aggregate_type = $1 AND aggregate_id = $2",
            ),
            save_snapshot: sql(
                "INSERT INTO {p}snapshots AS s (aggregate_type, aggregate_id, version, schema_version, state, taken_at) \
                 VALUES ($1, $2, $3, $4, $5::JSONB, $6) \
                 ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE SET \
                 version = excluded.version, schema_version = excluded.schema_version, \
                 state = excluded.state, taken_at = excluded.taken_at \
                 WHERE excluded.version >= s.version",
            ),
            due_deadlines: sql(&format!(
                "SELECT {DEADLINE_SELECT} FROM {{p}}deadlines WHERE NOT parked AND fire_at <= $1 \
                 AND ($3::TEXT[] IS NULL OR aggregate_type = ANY($3)) \
                 AND ($4::BIGINT IS NULL OR shard % $5 = $4) \
                 ORDER BY fire_at, deadline_id LIMIT $2"
            )),
            retry_deadline: sql("UPDATE {p}deadlines SET attempts = 0, last_error = NULL, \
                 fire_at = $4, parked = FALSE, claimed = FALSE \
                 WHERE aggregate_type = $1 AND aggregate_id = $2 AND deadline_id = $3"),
            deadline_failed: sql(
                "UPDATE {p}deadlines SET attempts = attempts + 1, last_error = $4, \
                 fire_at = coalesce($5, fire_at), parked = ($5::TIMESTAMPTZ IS NULL), \
                 claimed = FALSE \
                 WHERE aggregate_type = $1 AND aggregate_id = $2 AND deadline_id = $3",
            ),
            claim_deadline: sql("UPDATE {p}deadlines SET claimed = TRUE, fire_at = $5 \
                 WHERE aggregate_type = $1 AND aggregate_id = $2 AND deadline_id = $3 \
                 AND NOT parked AND fire_at <= $4"),
            // The origin's row, locked by the first writer, so two writers
            // of one deadline take turns.
            lock_origin: sql("INSERT INTO {p}deadline_origins \
                 (aggregate_type, aggregate_id, name, key) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT DO NOTHING"),
            deadline_origin: sql("SELECT origin FROM {p}deadline_origins \
                 WHERE aggregate_type = $1 AND aggregate_id = $2 AND name = $3 AND key = $4 \
                 FOR UPDATE"),
            deadline_pending: sql("SELECT EXISTS (SELECT 1 FROM {p}deadlines \
                 WHERE aggregate_type = $1 AND aggregate_id = $2 AND name = $3 AND key = $4)"),
            record_origin: sql(
                "UPDATE {p}deadline_origins SET origin = greatest(origin, $5) \
                 WHERE aggregate_type = $1 AND aggregate_id = $2 AND name = $3 AND key = $4",
            ),
            load_deadlines: sql(&format!(
                "SELECT {DEADLINE_SELECT} FROM {{p}}deadlines \
                 WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY due_at, deadline_id"
            )),
            list_deadlines: sql(&format!(
                "SELECT {DEADLINE_SELECT} FROM {{p}}deadlines \
                 WHERE ($1::TEXT IS NULL OR aggregate_type = $1) \
                 AND ($2::TEXT IS NULL OR aggregate_id = $2) \
                 AND ($3::TIMESTAMPTZ IS NULL OR due_at < $3) ORDER BY due_at, deadline_id LIMIT $4"
            )),
            count_deadlines: sql("SELECT count(*) FILTER (WHERE NOT parked), \
                 count(*) FILTER (WHERE NOT parked AND due_at <= $1), \
                 count(*) FILTER (WHERE parked), min(due_at) FILTER (WHERE NOT parked) \
                 FROM {p}deadlines WHERE ($2::TEXT[] IS NULL OR aggregate_type = ANY($2))"),
        };
        Ok(Self {
            notifications: Arc::new(Notifications::new(prefix.expand("{p}appended"))),
            group: Arc::new(GroupCommit::new(pool.clone(), &prefix)),
            pool,
            prefix,
            sql: Arc::new(statements),
        })
    }

    /// Views and checkpoints in this database, next to the events (tables
    /// `{prefix}views`, `{prefix}segments` with the checkpoints and leases,
    /// `{prefix}nodes`, `{prefix}parked_events` and `{prefix}projections`).
    pub fn views(&self) -> ViewStore {
        ViewStore::new(PostgresViews::new(self.pool.clone(), &self.prefix))
    }
}

fn row(row: &PgRow) -> Result<Row, StoreError> {
    let raw_position: Option<i64> = row.try_get(0).ok();
    let at = || RowLocation {
        position: raw_position.and_then(|position| u64::try_from(position).ok()),
        ..RowLocation::default()
    };
    let event_version: i32 = column(row, 6, at)?;
    Ok(Row {
        position: column(row, 0, at)?,
        aggregate_type: column(row, 1, at)?,
        aggregate_id: column(row, 2, at)?,
        sequence: column(row, 3, at)?,
        event_id: column(row, 4, at)?,
        event_name: column(row, 5, at)?,
        event_version: i64::from(event_version),
        recorded_at: column(row, 7, at)?,
        metadata: column(row, 8, at)?,
        payload: column::<_, &str>(row, 9, at)?.into(),
    })
}

fn deadline_row(row: &PgRow) -> Result<DeadlineRow, StoreError> {
    let aggregate_type: String = column(row, 0, RowLocation::default)?;
    let aggregate_id: String = column(row, 1, RowLocation::default)?;
    let at = || RowLocation::in_stream(&aggregate_type, &aggregate_id, None);
    let version: i32 = column(row, 6, at)?;
    Ok(DeadlineRow {
        name: column(row, 2, at)?,
        key: column(row, 3, at)?,
        deadline_id: column(row, 4, at)?,
        due_at: column(row, 5, at)?,
        version: i64::from(version),
        payload: column(row, 7, at)?,
        metadata: column(row, 8, at)?,
        attempts: i64::from(column::<_, i32>(row, 9, at)?),
        last_error: column(row, 10, at)?,
        parked: column(row, 11, at)?,
        aggregate_type,
        aggregate_id,
    })
}

/// Creates or upgrades `schemas` (the log's, the views'). An advisory lock
/// keyed by the prefix makes instances that start together take turns, and
/// DDL is transactional, so a migration is applied once and entirely.
async fn migrate(
    pool: &PgPool,
    prefix: &TablePrefix,
    schemas: &[&Schema],
) -> Result<(), StoreError> {
    let mut transaction = pool.begin().await.db()?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(prefix.lock_key("cqrs-migrate"))
        .execute(&mut *transaction)
        .await
        .db()?;
    for schema in schemas {
        upgrade::<Postgres>(&mut transaction, Dialect::Postgres, prefix, schema).await?;
    }
    transaction.commit().await.db()?;
    Ok(())
}

/// How to connect a [`PostgresStore`]: the server, the table prefix and the
/// connection pool's size.
///
/// # Examples
///
/// ```no_run
/// use cqrs_core::store::{PostgresOptions, TablePrefix};
///
/// # async fn connect() -> Result<(), Box<dyn std::error::Error>> {
/// let store = PostgresOptions::new("postgres://localhost/shop")
///     .prefix(TablePrefix::new("billing_")?)
///     .max_connections(32)
///     .connect()
///     .await?;
/// # drop(store);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    url: String,
    prefix: TablePrefix,
    max_connections: u32,
    acquire_timeout: Duration,
}

impl PostgresOptions {
    /// The server at `url` (`postgres://user:password@host/database`); 16
    /// connections.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            prefix: TablePrefix::default(),
            max_connections: 16,
            acquire_timeout: Duration::from_secs(30),
        }
    }

    /// Names every table `{prefix}events` and so on (default `cqrs_`), so
    /// several stores can share one database.
    pub fn prefix(mut self, prefix: TablePrefix) -> Self {
        self.prefix = prefix;
        self
    }

    /// How many connections the store keeps at most.
    pub fn max_connections(mut self, max_connections: u32) -> Self {
        self.max_connections = max_connections.max(2);
        self
    }

    /// How long a call waits for a free connection, or for a new one while
    /// the server is unreachable, before it fails with a transient
    /// [`StoreError::Database`] (default 30 s).
    pub fn acquire_timeout(mut self, acquire_timeout: Duration) -> Self {
        self.acquire_timeout = acquire_timeout;
        self
    }

    /// Connects, creating or upgrading the schema.
    pub async fn connect(self) -> Result<PostgresStore, StoreError> {
        let pool = self.pool().await?;
        PostgresStore::over(pool, self.prefix).await
    }

    /// Connects to a database of the read side only: the views, the tables
    /// of table projections, and every processor's checkpoints, segments,
    /// parked events and inboxes, for an app whose events are in another
    /// database (`CqrsBuilder::views`). It creates or upgrades the views'
    /// schema only. Each batch commits its checkpoint with what it wrote
    /// here, so an event still takes effect once.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use cqrs_core::store::PostgresOptions;
    /// use cqrs_core::{Cqrs, PostgresStore};
    ///
    /// # async fn connect() -> Result<(), Box<dyn std::error::Error>> {
    /// let events = PostgresStore::connect("postgres://localhost/shop").await?;
    /// let views = PostgresOptions::new("postgres://localhost/shop_read").connect_views().await?;
    /// let app = Cqrs::builder(events).views(views).build()?;
    /// # drop(app);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect_views(self) -> Result<ViewStore, StoreError> {
        let pool = self.pool().await?;
        migrate(&pool, &self.prefix, &[&views::SCHEMA]).await?;
        Ok(ViewStore::new(PostgresViews::new(pool, &self.prefix)))
    }

    async fn pool(&self) -> Result<PgPool, StoreError> {
        Ok(PgPoolOptions::new()
            .max_connections(self.max_connections)
            .acquire_timeout(self.acquire_timeout)
            .connect(&self.url)
            .await
            .db()?)
    }
}

impl EventStore for PostgresStore {
    async fn append(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        expected_version: u64,
        events: Vec<NewEvent>,
    ) -> Result<Vec<Envelope>, StoreError> {
        check_batch(aggregate_type, aggregate_id, &events)?;
        self.group
            .append(aggregate_type, aggregate_id, expected_version, events)
            .await
    }

    async fn append_streams(
        &self,
        appends: Vec<StreamAppend>,
    ) -> Vec<Result<Vec<Envelope>, StoreError>> {
        self.group.append_all(appends).await
    }

    async fn read_matching(&self, query: EventQuery, after: u64) -> Result<Matching, StoreError> {
        boundary::read_matching(
            &self.pool,
            self.sql.last_position.clone(),
            &self.group.items,
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
        check_batch(aggregate_type, aggregate_id, &events)?;
        self.group
            .append_if(aggregate_type, aggregate_id, events, &condition)
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

    async fn wait_for_appends(&self) {
        Notifications::wait(&self.notifications, &self.pool).await;
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

    async fn due_deadlines(&self, query: DueQuery) -> Result<Vec<StoredDeadline>, StoreError> {
        let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
        let (segment, segments) = query.segment.unzip();
        let rows = sqlx::query(self.sql.due_deadlines.clone())
            .bind(query.now)
            .bind(limit)
            .bind(&query.aggregate_types)
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
        sqlx::query(self.sql.deadline_failed.clone())
            .bind(&failure.aggregate_type)
            .bind(&failure.aggregate_id)
            .bind(failure.deadline_id)
            .bind(&failure.error)
            .bind(failure.retry_at)
            .execute(&mut *acquire(&self.pool).await.db()?)
            .await
            .db()?;
        Ok(())
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
        let done = sqlx::query(self.sql.retry_deadline.clone())
            .bind(aggregate_type)
            .bind(aggregate_id)
            .bind(deadline_id)
            .bind(at)
            .execute(&mut *acquire(&self.pool).await.db()?)
            .await
            .db()?;
        Ok(done.rows_affected() > 0)
    }

    async fn change_deadlines(&self, changes: DeadlineChanges) -> Result<(), StoreError> {
        self.change_owned_deadlines(changes).await
    }

    async fn deadlines(&self, filter: DeadlineFilter) -> Result<Vec<StoredDeadline>, StoreError> {
        let rows = sqlx::query(self.sql.list_deadlines.clone())
            .bind(filter.owner_type)
            .bind(filter.owner_id)
            .bind(filter.due_before)
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
        let (pending, due, parked, earliest_due): (
            i64,
            i64,
            i64,
            Option<chrono::DateTime<chrono::Utc>>,
        ) = sqlx::query_as(self.sql.count_deadlines.clone())
            .bind(now)
            .bind(owner_types)
            .fetch_one(&mut *acquire(&self.pool).await.db()?)
            .await
            .db()?;
        let count = |n: i64| u64::try_from(n).unwrap_or_default();
        Ok(DeadlineCounts {
            pending: count(pending),
            due: count(due),
            parked: count(parked),
            earliest_due,
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
        let done = sqlx::query(self.sql.claim_deadline.clone())
            .bind(aggregate_type)
            .bind(aggregate_id)
            .bind(deadline_id)
            .bind(now)
            .bind(until)
            .execute(&mut *acquire(&self.pool).await.db()?)
            .await
            .db()?;
        Ok(done.rows_affected() > 0)
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
            let schema_version: i32 = found.try_get(1).ok()?;
            Some(Snapshot {
                aggregate_type: aggregate_type.to_owned(),
                aggregate_id: aggregate_id.to_owned(),
                version: u64::try_from(version).ok()?,
                schema_version: u32::try_from(schema_version).ok()?,
                state: JsonPayload::from_text(found.try_get::<String, _>(2).ok()?),
                taken_at: found.try_get(3).ok()?,
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
        let out_of_range = |what: &str, value: u64| {
            rejected(
                &snapshot.aggregate_type,
                &snapshot.aggregate_id,
                format!("snapshot {what} {value} is out of range"),
            )
        };
        let schema_version = i32::try_from(snapshot.schema_version)
            .map_err(|_| out_of_range("schema version", u64::from(snapshot.schema_version)))?;
        let version =
            stored(snapshot.version).ok_or_else(|| out_of_range("version", snapshot.version))?;
        sqlx::query(self.sql.save_snapshot.clone())
            .bind(&snapshot.aggregate_type)
            .bind(&snapshot.aggregate_id)
            .bind(version)
            .bind(schema_version)
            .bind(snapshot.state.as_str())
            .bind(snapshot.taken_at)
            .execute(&mut *acquire(&self.pool).await.db()?)
            .await
            .db()?;
        Ok(())
    }

    fn backend(&self) -> &'static str {
        "postgres"
    }

    fn views(&self) -> ViewStore {
        PostgresStore::views(self)
    }
}
