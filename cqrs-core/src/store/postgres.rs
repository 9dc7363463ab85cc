use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::{AssertSqlSafe, Row as _, SqlSafeStr, SqlStr};
use uuid::Uuid;

use super::sql::{Row, TablePrefix, to_i64};
use super::{EventStore, Snapshot, StoreError, check_stream, command_id};
use crate::envelope::{Envelope, JsonPayload, NewEvent};
use crate::error::Conflict;
use crate::view::{PostgresViews, ReadModels};

/// Schema changes, applied in order and recorded in `{p}schema_migrations`.
const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        r#"
    CREATE TABLE {p}events (
        position BIGINT NOT NULL UNIQUE,
        aggregate_type TEXT NOT NULL,
        aggregate_id TEXT NOT NULL,
        sequence BIGINT NOT NULL,
        event_id UUID NOT NULL UNIQUE,
        event_name TEXT NOT NULL,
        event_version INTEGER NOT NULL,
        recorded_at TIMESTAMPTZ NOT NULL,
        metadata JSONB NOT NULL,
        payload JSONB NOT NULL,
        PRIMARY KEY (aggregate_type, aggregate_id, sequence)
    );

    -- The last position handed out. Its row is the log's write lock.
    CREATE TABLE {p}log_head (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        position BIGINT NOT NULL
    );
    INSERT INTO {p}log_head (id, position) VALUES (1, 0);

    CREATE TABLE {p}snapshots (
        aggregate_type TEXT NOT NULL,
        aggregate_id TEXT NOT NULL,
        version BIGINT NOT NULL,
        schema_version INTEGER NOT NULL,
        state JSONB NOT NULL,
        taken_at TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (aggregate_type, aggregate_id)
    );

    -- Appends a batch to one stream if it is at p_expected. Returns the
    -- stream's version and, when appended, the first position and the time.
    -- Positions are handed out while the head row is locked, and the lock is
    -- held until commit, so they become visible in order: a reader resuming
    -- after the last position it saw cannot miss one committed later.
    CREATE FUNCTION {p}append(
        p_aggregate_type TEXT,
        p_aggregate_id TEXT,
        p_expected BIGINT,
        p_event_ids UUID[],
        p_names TEXT[],
        p_versions INTEGER[],
        p_metadata TEXT[],
        p_payloads TEXT[]
    ) RETURNS TABLE (actual BIGINT, first_position BIGINT, recorded_at TIMESTAMPTZ)
    LANGUAGE plpgsql AS $$
    #variable_conflict use_column
    DECLARE
        v_head BIGINT;
        v_actual BIGINT;
        v_now TIMESTAMPTZ := clock_timestamp();
    BEGIN
        SELECT h.position INTO v_head FROM {p}log_head h WHERE h.id = 1 FOR UPDATE;
        SELECT coalesce(max(e.sequence), 0) INTO v_actual FROM {p}events e
            WHERE e.aggregate_type = p_aggregate_type AND e.aggregate_id = p_aggregate_id;
        IF v_actual <> p_expected THEN
            RETURN QUERY SELECT v_actual, NULL::BIGINT, NULL::TIMESTAMPTZ;
            RETURN;
        END IF;
        INSERT INTO {p}events (position, aggregate_type, aggregate_id, sequence, event_id,
                               event_name, event_version, recorded_at, metadata, payload)
        SELECT v_head + b.ord, p_aggregate_type, p_aggregate_id, p_expected + b.ord, b.event_id,
               b.name, b.version, v_now, b.metadata::JSONB, b.payload::JSONB
        FROM unnest(p_event_ids, p_names, p_versions, p_metadata, p_payloads)
             WITH ORDINALITY AS b(event_id, name, version, metadata, payload, ord);
        UPDATE {p}log_head SET position = v_head + cardinality(p_event_ids) WHERE id = 1;
        RETURN QUERY SELECT v_actual, v_head + 1, v_now;
    END
    $$;
    "#,
    ),
    (
        2,
        r#"
    ALTER TABLE {p}events ADD COLUMN command_id UUID;
    CREATE INDEX {p}events_command ON {p}events (aggregate_type, aggregate_id, command_id)
        WHERE command_id IS NOT NULL;

    CREATE TABLE {p}views (
        projection TEXT NOT NULL,
        view_id TEXT NOT NULL,
        document JSONB NOT NULL,
        PRIMARY KEY (projection, view_id)
    );

    CREATE TABLE {p}checkpoints (
        processor TEXT PRIMARY KEY,
        position BIGINT NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
    );

    DROP FUNCTION {p}append(TEXT, TEXT, BIGINT, UUID[], TEXT[], INTEGER[], TEXT[], TEXT[]);

    -- As version 1, and: a batch of a command id the stream already holds is
    -- refused (duplicate = true), and a commit notifies `{p}appended` so
    -- event processors in other processes wake up.
    CREATE FUNCTION {p}append(
        p_aggregate_type TEXT,
        p_aggregate_id TEXT,
        p_expected BIGINT,
        p_event_ids UUID[],
        p_names TEXT[],
        p_versions INTEGER[],
        p_metadata TEXT[],
        p_payloads TEXT[],
        p_command_id UUID
    ) RETURNS TABLE (actual BIGINT, first_position BIGINT, recorded_at TIMESTAMPTZ, duplicate BOOLEAN)
    LANGUAGE plpgsql AS $$
    #variable_conflict use_column
    DECLARE
        v_head BIGINT;
        v_actual BIGINT;
        v_now TIMESTAMPTZ := clock_timestamp();
    BEGIN
        SELECT h.position INTO v_head FROM {p}log_head h WHERE h.id = 1 FOR UPDATE;
        IF p_command_id IS NOT NULL AND EXISTS (
            SELECT 1 FROM {p}events e
            WHERE e.aggregate_type = p_aggregate_type AND e.aggregate_id = p_aggregate_id
              AND e.command_id = p_command_id
        ) THEN
            RETURN QUERY SELECT NULL::BIGINT, NULL::BIGINT, NULL::TIMESTAMPTZ, TRUE;
            RETURN;
        END IF;
        SELECT coalesce(max(e.sequence), 0) INTO v_actual FROM {p}events e
            WHERE e.aggregate_type = p_aggregate_type AND e.aggregate_id = p_aggregate_id;
        IF v_actual <> p_expected THEN
            RETURN QUERY SELECT v_actual, NULL::BIGINT, NULL::TIMESTAMPTZ, FALSE;
            RETURN;
        END IF;
        INSERT INTO {p}events (position, aggregate_type, aggregate_id, sequence, event_id,
                               event_name, event_version, recorded_at, metadata, payload, command_id)
        SELECT v_head + b.ord, p_aggregate_type, p_aggregate_id, p_expected + b.ord, b.event_id,
               b.name, b.version, v_now, b.metadata::JSONB, b.payload::JSONB, p_command_id
        FROM unnest(p_event_ids, p_names, p_versions, p_metadata, p_payloads)
             WITH ORDINALITY AS b(event_id, name, version, metadata, payload, ord);
        UPDATE {p}log_head SET position = v_head + cardinality(p_event_ids) WHERE id = 1;
        PERFORM pg_notify('{p}appended', (v_head + cardinality(p_event_ids))::TEXT);
        RETURN QUERY SELECT v_actual, v_head + 1, v_now, FALSE;
    END
    $$;
    "#,
    ),
    (
        3,
        r#"
    -- As version 2, reading the stream's version with one probe of the
    -- primary key from its end. `max(sequence)` may be planned as a scan of
    -- the whole stream, which made each append slower as the stream grew.
    CREATE OR REPLACE FUNCTION {p}append(
        p_aggregate_type TEXT,
        p_aggregate_id TEXT,
        p_expected BIGINT,
        p_event_ids UUID[],
        p_names TEXT[],
        p_versions INTEGER[],
        p_metadata TEXT[],
        p_payloads TEXT[],
        p_command_id UUID
    ) RETURNS TABLE (actual BIGINT, first_position BIGINT, recorded_at TIMESTAMPTZ, duplicate BOOLEAN)
    LANGUAGE plpgsql AS $$
    #variable_conflict use_column
    DECLARE
        v_head BIGINT;
        v_actual BIGINT;
        v_now TIMESTAMPTZ := clock_timestamp();
    BEGIN
        SELECT h.position INTO v_head FROM {p}log_head h WHERE h.id = 1 FOR UPDATE;
        IF p_command_id IS NOT NULL AND EXISTS (
            SELECT 1 FROM {p}events e
            WHERE e.aggregate_type = p_aggregate_type AND e.aggregate_id = p_aggregate_id
              AND e.command_id = p_command_id
        ) THEN
            RETURN QUERY SELECT NULL::BIGINT, NULL::BIGINT, NULL::TIMESTAMPTZ, TRUE;
            RETURN;
        END IF;
        v_actual := coalesce((
            SELECT e.sequence FROM {p}events e
            WHERE e.aggregate_type = p_aggregate_type AND e.aggregate_id = p_aggregate_id
            ORDER BY e.sequence DESC LIMIT 1
        ), 0);
        IF v_actual <> p_expected THEN
            RETURN QUERY SELECT v_actual, NULL::BIGINT, NULL::TIMESTAMPTZ, FALSE;
            RETURN;
        END IF;
        INSERT INTO {p}events (position, aggregate_type, aggregate_id, sequence, event_id,
                               event_name, event_version, recorded_at, metadata, payload, command_id)
        SELECT v_head + b.ord, p_aggregate_type, p_aggregate_id, p_expected + b.ord, b.event_id,
               b.name, b.version, v_now, b.metadata::JSONB, b.payload::JSONB, p_command_id
        FROM unnest(p_event_ids, p_names, p_versions, p_metadata, p_payloads)
             WITH ORDINALITY AS b(event_id, name, version, metadata, payload, ord);
        UPDATE {p}log_head SET position = v_head + cardinality(p_event_ids) WHERE id = 1;
        PERFORM pg_notify('{p}appended', (v_head + cardinality(p_event_ids))::TEXT);
        RETURN QUERY SELECT v_actual, v_head + 1, v_now, FALSE;
    END
    $$;

    -- Whether an id of the batch is stored already or appears twice in it:
    -- one probe of the unique index per id.
    CREATE FUNCTION {p}reuses_event_id(p_event_ids UUID[]) RETURNS BOOLEAN
    LANGUAGE plpgsql AS $$
    DECLARE
        v_id UUID;
    BEGIN
        FOREACH v_id IN ARRAY p_event_ids LOOP
            IF EXISTS (SELECT 1 FROM {p}events e WHERE e.event_id = v_id) THEN
                RETURN TRUE;
            END IF;
        END LOOP;
        RETURN cardinality(p_event_ids) > 1
            AND cardinality(p_event_ids) <> (SELECT count(DISTINCT d) FROM unnest(p_event_ids) AS d);
    END
    $$;

    -- Appends a group of batches, each to its own stream at its own expected
    -- version, in one transaction: concurrent appends of one process share
    -- the head lock and the commit's flush (a lone batch uses {p}append). One row per batch, in order:
    -- 'appended' (with the first position), 'conflict' (with the stream's
    -- version), 'duplicate' (its command id is recorded), or 'rejected: ..'
    -- (a reused event id). A payload PostgreSQL cannot store fails the
    -- whole group; the store then writes its batches one by one.
    CREATE FUNCTION {p}append_group(
        p_types TEXT[],
        p_ids TEXT[],
        p_expected BIGINT[],
        p_command_ids UUID[],
        p_counts INTEGER[],
        p_event_ids UUID[],
        p_names TEXT[],
        p_versions INTEGER[],
        p_metadata TEXT[],
        p_payloads TEXT[]
    ) RETURNS TABLE (actual BIGINT, first_position BIGINT, recorded_at TIMESTAMPTZ, outcome TEXT)
    LANGUAGE plpgsql AS $$
    #variable_conflict use_column
    DECLARE
        v_head BIGINT;
        v_start BIGINT;
        v_actual BIGINT;
        v_now TIMESTAMPTZ := clock_timestamp();
        v_first INTEGER := 1;
        v_last INTEGER;
        -- The events to insert: their index in the arrays, batch and position.
        v_events INTEGER[] := '{}';
        v_batches INTEGER[] := '{}';
        v_positions BIGINT[] := '{}';
        v_sequences BIGINT[] := '{}';
    BEGIN
        -- The head row is the log's write lock: held until commit, so
        -- positions become visible in the order they are handed out.
        SELECT h.position INTO v_head FROM {p}log_head h WHERE h.id = 1 FOR UPDATE;
        v_start := v_head;
        FOR i IN 1 .. coalesce(cardinality(p_types), 0) LOOP
            v_last := v_first + p_counts[i] - 1;
            IF p_command_ids[i] IS NOT NULL AND EXISTS (
                SELECT 1 FROM {p}events e
                WHERE e.aggregate_type = p_types[i] AND e.aggregate_id = p_ids[i]
                  AND e.command_id = p_command_ids[i]
            ) THEN
                RETURN QUERY SELECT NULL::BIGINT, NULL::BIGINT, NULL::TIMESTAMPTZ, 'duplicate'::TEXT;
            ELSE
                v_actual := coalesce((
                    SELECT e.sequence FROM {p}events e
                    WHERE e.aggregate_type = p_types[i] AND e.aggregate_id = p_ids[i]
                    ORDER BY e.sequence DESC LIMIT 1
                ), 0);
                IF v_actual <> p_expected[i] THEN
                    RETURN QUERY SELECT v_actual, NULL::BIGINT, NULL::TIMESTAMPTZ, 'conflict'::TEXT;
                -- Under the head lock no other append can race this check.
                ELSIF {p}reuses_event_id(p_event_ids[v_first:v_last]) THEN
                    RETURN QUERY SELECT v_actual, NULL::BIGINT, NULL::TIMESTAMPTZ,
                        'rejected: an event id of the batch is already used'::TEXT;
                ELSE
                    FOR k IN v_first .. v_last LOOP
                        v_events := v_events || k;
                        v_batches := v_batches || i;
                        v_positions := v_positions || (v_head + k - v_first + 1);
                        v_sequences := v_sequences || (p_expected[i] + k - v_first + 1);
                    END LOOP;
                    RETURN QUERY SELECT v_actual, v_head + 1, v_now, 'appended'::TEXT;
                    v_head := v_head + p_counts[i];
                END IF;
            END IF;
            v_first := v_last + 1;
        END LOOP;
        IF v_head > v_start THEN
            -- One statement for every batch that passed its checks. Two
            -- batches of the group reusing one event id fail it whole; the
            -- store then writes the group's batches one by one.
            INSERT INTO {p}events (position, aggregate_type, aggregate_id, sequence, event_id,
                                   event_name, event_version, recorded_at, metadata, payload, command_id)
            SELECT n.position, p_types[n.batch], p_ids[n.batch], n.sequence,
                   p_event_ids[n.event], p_names[n.event], p_versions[n.event], v_now,
                   p_metadata[n.event]::JSONB, p_payloads[n.event]::JSONB, p_command_ids[n.batch]
            FROM unnest(v_events, v_batches, v_positions, v_sequences) AS n(event, batch, position, sequence);
            UPDATE {p}log_head SET position = v_head WHERE id = 1;
            PERFORM pg_notify('{p}appended', v_head::TEXT);
        END IF;
    END
    $$;
    "#,
    ),
];

/// Columns of an event row, in the order [`row`] reads them.
const COLUMNS: &str = "position, aggregate_type, aggregate_id, sequence, event_id, event_name, \
                       event_version, recorded_at, metadata::TEXT, payload::TEXT";

/// An event store in PostgreSQL, for many application instances sharing one log.
///
/// An append is one round trip: a call to a function the schema installs,
/// which checks the stream's version and inserts the whole batch in one
/// statement. Appends to any stream take one row lock until they commit, so
/// the global positions are dense and visible in order. Payloads are stored
/// as `JSONB`, which cannot hold the NUL character (`\u0000`).
///
/// The schema is created and upgraded on connect, under an advisory lock so
/// instances starting together apply each migration once.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    prefix: TablePrefix,
    sql: Statements,
    notifications: Arc<Notifications>,
    group: Arc<GroupCommit>,
}

/// The store's SQL, built once with the table prefix.
#[derive(Debug, Clone)]
struct Statements {
    append: SqlStr,
    append_group: SqlStr,
    has_command: SqlStr,
    last_position: SqlStr,
    load: SqlStr,
    read_all: SqlStr,
    load_snapshot: SqlStr,
    save_snapshot: SqlStr,
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user:password@host/database`).
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .connect(url)
            .await?;
        Self::from_pool(pool, TablePrefix::default()).await
    }

    /// A store over an existing pool, with its tables named `{prefix}events`
    /// and so on. Creates or upgrades the schema.
    pub async fn from_pool(pool: PgPool, prefix: TablePrefix) -> Result<Self, StoreError> {
        migrate(&pool, &prefix).await?;
        let sql = |template: &str| AssertSqlSafe(prefix.expand(template)).into_sql_str();
        let statements = Statements {
            append: sql("SELECT actual, first_position, recorded_at, \
                 CASE WHEN duplicate THEN 'duplicate' WHEN first_position IS NULL THEN 'conflict' \
                 ELSE 'appended' END \
                 FROM {p}append($1[1], $2[1], $3[1], $6, $7, $8, $9, $10, $4[1])"),
            append_group: sql("SELECT actual, first_position, recorded_at, outcome \
                 FROM {p}append_group($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"),
            has_command: sql("SELECT EXISTS (SELECT 1 FROM {p}events \
                 WHERE aggregate_type = $1 AND aggregate_id = $2 AND command_id = $3)"),
            last_position: sql("SELECT position FROM {p}log_head WHERE id = 1"),
            load: sql(&format!(
                "SELECT {COLUMNS} FROM {{p}}events \
                 WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence >= $3 ORDER BY sequence"
            )),
            read_all: sql(&format!(
                "SELECT {COLUMNS} FROM {{p}}events WHERE position >= $1 ORDER BY position LIMIT $2"
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
        };
        Ok(Self {
            pool,
            notifications: Arc::new(Notifications::new(prefix.expand("{p}appended"))),
            group: Arc::new(GroupCommit::default()),
            prefix,
            sql: statements,
        })
    }

    /// The connection pool, for the application's own tables.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Read models and checkpoints in this database, next to the events.
    pub fn read_models(&self) -> ReadModels {
        ReadModels::new(PostgresViews::new(self.pool.clone(), &self.prefix))
    }

    /// Queues the batch and, when this append's turn comes, writes every
    /// batch queued by then in one round trip and one commit.
    async fn append_batch(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        expected_version: u64,
        events: Vec<NewEvent>,
    ) -> Result<Vec<Envelope>, StoreError> {
        check_stream(aggregate_type, aggregate_id)?;
        let pending = Pending::new(aggregate_type, aggregate_id, expected_version, events)?;
        let outcome = Arc::clone(&pending.outcome);
        lock(&self.group.queue).push(pending);
        let _turn = self.group.turn.lock().await;
        loop {
            if let Some(outcome) = lock(&outcome).take() {
                return outcome;
            }
            let group = self.group.take();
            if group.is_empty() {
                // A writer took this batch and was cancelled before it
                // reported: whether it committed is unknown.
                return Err(StoreError::Interrupted {
                    aggregate_type: aggregate_type.to_owned(),
                    aggregate_id: aggregate_id.to_owned(),
                });
            }
            self.write_group(group).await;
        }
    }

    /// Writes a group and reports each batch's outcome to its append.
    async fn write_group(&self, group: Vec<Pending>) {
        let mut types = Vec::with_capacity(group.len());
        let mut ids = Vec::with_capacity(group.len());
        let mut expected = Vec::with_capacity(group.len());
        let mut command_ids = Vec::with_capacity(group.len());
        let mut counts = Vec::with_capacity(group.len());
        let (mut event_ids, mut names, mut versions, mut metadata, mut payloads) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for pending in &group {
            types.push(pending.aggregate_type.as_str());
            ids.push(pending.aggregate_id.as_str());
            expected.push(pending.expected);
            command_ids.push(command_id(&pending.events));
            counts.push(pending.events.len() as i32);
            for (event, json) in pending.events.iter().zip(&pending.metadata) {
                event_ids.push(event.event_id);
                names.push(event.event_name);
                versions.push(event.event_version as i32);
                metadata.push(json.as_str());
                payloads.push(event.payload.as_str());
            }
        }
        // A lone batch takes the simpler function: the unique index rejects
        // a reused event id there, with no check beforehand.
        let statement = if group.len() == 1 {
            self.sql.append.clone()
        } else {
            self.sql.append_group.clone()
        };
        let rows = sqlx::query(statement)
            .bind(&types)
            .bind(&ids)
            .bind(&expected)
            .bind(&command_ids)
            .bind(&counts)
            .bind(&event_ids)
            .bind(&names)
            .bind(&versions)
            .bind(&metadata)
            .bind(&payloads)
            .fetch_all(&self.pool)
            .await;
        let rows = match rows {
            Ok(rows) if rows.len() == group.len() => rows,
            Ok(rows) => {
                let reason = format!("{} outcomes for {} batches", rows.len(), group.len());
                for pending in group {
                    pending.report(Err(StoreError::GroupFailed {
                        reason: reason.clone(),
                    }));
                }
                return;
            }
            // One batch's payload may have failed the whole group: write each
            // alone, so only that one fails.
            Err(sqlx::Error::Database(_)) if group.len() > 1 => {
                for pending in group {
                    Box::pin(self.write_group(vec![pending])).await;
                }
                return;
            }
            Err(sqlx::Error::Database(error)) if error.is_unique_violation() => {
                for pending in group {
                    let rejected =
                        pending.rejected("an event id of the batch is already used".to_owned());
                    pending.report(Err(rejected));
                }
                return;
            }
            Err(sqlx::Error::Database(error)) if error.code().as_deref() == Some("22P05") => {
                for pending in group {
                    let reason = format!("a payload cannot be stored: {}", error.message());
                    let rejected = pending.rejected(reason);
                    pending.report(Err(rejected));
                }
                return;
            }
            Err(error) => {
                let reason = error.to_string();
                let mut group = group.into_iter();
                if let Some(first) = group.next() {
                    first.report(Err(error.into()));
                }
                for pending in group {
                    pending.report(Err(StoreError::GroupFailed {
                        reason: reason.clone(),
                    }));
                }
                return;
            }
        };
        for (pending, row) in group.into_iter().zip(rows) {
            let outcome = pending.outcome_of(&row);
            pending.report(outcome);
        }
    }

    async fn fetch(
        &self,
        query: sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> Result<Vec<Envelope>, StoreError> {
        query
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|pg_row| row(pg_row)?.into_envelope())
            .collect()
    }
}

fn row(row: &PgRow) -> Result<Row, StoreError> {
    let event_version: i32 = row.try_get(6)?;
    Ok(Row {
        position: row.try_get(0)?,
        aggregate_type: row.try_get(1)?,
        aggregate_id: row.try_get(2)?,
        sequence: row.try_get(3)?,
        event_id: row.try_get::<Uuid, _>(4)?,
        event_name: row.try_get(5)?,
        event_version: i64::from(event_version),
        recorded_at: row.try_get(7)?,
        metadata: row.try_get(8)?,
        payload: row.try_get(9)?,
    })
}

/// Creates or upgrades the schema. An advisory lock keyed by the prefix makes
/// instances that start together take turns, and DDL is transactional, so a
/// migration is applied once and entirely.
async fn migrate(pool: &PgPool, prefix: &TablePrefix) -> Result<(), StoreError> {
    let mut transaction = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(prefix.lock_key("cqrs-migrate"))
        .execute(&mut *transaction)
        .await?;
    let create = prefix.expand(
        "CREATE TABLE IF NOT EXISTS {p}schema_migrations (\
            version BIGINT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
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
        sqlx::query(AssertSqlSafe(
            prefix.expand("INSERT INTO {p}schema_migrations (version) VALUES ($1)"),
        ))
        .bind(version)
        .execute(&mut *transaction)
        .await?;
        tracing::info!(
            version,
            prefix = prefix.as_str(),
            "postgres event store schema upgraded"
        );
    }
    transaction.commit().await?;
    Ok(())
}

impl EventStore for PostgresStore {
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

    async fn wait_for_appends(&self) {
        self.notifications.wait(&self.pool).await;
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
        let schema_version: i32 = found.try_get(1)?;
        let (Ok(version), Ok(schema_version)) =
            (u64::try_from(version), u32::try_from(schema_version))
        else {
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
            state: JsonPayload::from_text(found.try_get::<String, _>(2)?),
            taken_at: found.try_get(3)?,
        }))
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        let schema_version =
            i32::try_from(snapshot.schema_version).map_err(|_| StoreError::Rejected {
                aggregate_type: snapshot.aggregate_type.clone(),
                aggregate_id: snapshot.aggregate_id.clone(),
                reason: format!(
                    "snapshot schema version {} is out of range",
                    snapshot.schema_version
                ),
            })?;
        sqlx::query(self.sql.save_snapshot.clone())
            .bind(&snapshot.aggregate_type)
            .bind(&snapshot.aggregate_id)
            .bind(to_i64(snapshot.version, "version")?)
            .bind(schema_version)
            .bind(snapshot.state.as_str())
            .bind(snapshot.taken_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

/// Appends waiting to be written together, and whose turn it is to write.
#[derive(Debug, Default)]
struct GroupCommit {
    queue: Mutex<Vec<Pending>>,
    /// Held by the append writing a group; the next one in line writes the
    /// batches queued meanwhile.
    turn: async_lock::Mutex<()>,
}

/// The most events one group carries; more wait for the next turn.
const EVENTS_PER_GROUP: usize = 5_000;

impl GroupCommit {
    /// The oldest queued batches, up to the group's size (at least one).
    fn take(&self) -> Vec<Pending> {
        let mut queue = lock(&self.queue);
        let mut events = 0;
        let count = queue
            .iter()
            .take_while(|pending| {
                events += pending.events.len();
                events <= EVENTS_PER_GROUP
            })
            .count()
            .max(1)
            .min(queue.len());
        queue.drain(..count).collect()
    }
}

/// One append's batch in the queue, and where its outcome goes.
#[derive(Debug)]
struct Pending {
    aggregate_type: String,
    aggregate_id: String,
    expected_version: u64,
    expected: i64,
    events: Vec<NewEvent>,
    metadata: Vec<String>,
    outcome: Outcome,
}

/// Where the group's writer leaves a batch's result for its append.
type Outcome = Arc<Mutex<Option<Result<Vec<Envelope>, StoreError>>>>;

impl Pending {
    fn new(
        aggregate_type: &str,
        aggregate_id: &str,
        expected_version: u64,
        events: Vec<NewEvent>,
    ) -> Result<Self, StoreError> {
        let rejected = |reason: String| StoreError::Rejected {
            aggregate_type: aggregate_type.to_owned(),
            aggregate_id: aggregate_id.to_owned(),
            reason,
        };
        let mut metadata = Vec::with_capacity(events.len());
        for event in &events {
            if i32::try_from(event.event_version).is_err() {
                return Err(rejected(format!(
                    "event version {} is out of range",
                    event.event_version
                )));
            }
            metadata.push(
                serde_json::to_string(&event.metadata)
                    .map_err(|error| rejected(format!("metadata does not serialize: {error}")))?,
            );
        }
        Ok(Self {
            aggregate_type: aggregate_type.to_owned(),
            aggregate_id: aggregate_id.to_owned(),
            expected_version,
            expected: to_i64(expected_version, "expected version")?,
            events,
            metadata,
            outcome: Arc::new(Mutex::new(None)),
        })
    }

    fn rejected(&self, reason: String) -> StoreError {
        StoreError::Rejected {
            aggregate_type: self.aggregate_type.clone(),
            aggregate_id: self.aggregate_id.clone(),
            reason,
        }
    }

    fn report(self, outcome: Result<Vec<Envelope>, StoreError>) {
        *lock(&self.outcome) = Some(outcome);
    }

    /// The batch's outcome from its row of `append_group`.
    fn outcome_of(&self, row: &PgRow) -> Result<Vec<Envelope>, StoreError> {
        let outcome: String = row.try_get(3)?;
        match outcome.as_str() {
            "appended" => {
                let first_position: i64 = row.try_get(1)?;
                let recorded_at: DateTime<Utc> = row.try_get(2)?;
                let first_position = u64::try_from(first_position).unwrap_or(0);
                Ok(self
                    .events
                    .iter()
                    .zip(0u64..)
                    .map(|(event, offset)| Envelope {
                        event_id: event.event_id,
                        aggregate_type: self.aggregate_type.clone(),
                        aggregate_id: self.aggregate_id.clone(),
                        sequence: self.expected_version + offset + 1,
                        position: first_position + offset,
                        event_name: event.event_name.to_owned(),
                        event_version: event.event_version,
                        recorded_at,
                        metadata: event.metadata.clone(),
                        payload: event.payload.clone(),
                    })
                    .collect())
            }
            "conflict" => {
                let actual: i64 = row.try_get(0)?;
                Err(Conflict {
                    aggregate_type: self.aggregate_type.clone(),
                    aggregate_id: self.aggregate_id.clone(),
                    expected: self.expected_version,
                    actual: u64::try_from(actual).unwrap_or(0),
                }
                .into())
            }
            "duplicate" => Err(StoreError::DuplicateCommand {
                aggregate_type: self.aggregate_type.clone(),
                aggregate_id: self.aggregate_id.clone(),
                command_id: command_id(&self.events).unwrap_or_default(),
            }),
            rejected => Err(StoreError::Rejected {
                aggregate_type: self.aggregate_type.clone(),
                aggregate_id: self.aggregate_id.clone(),
                reason: rejected.trim_start_matches("rejected: ").to_owned(),
            }),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Only whole values are stored under these locks.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `LISTEN` on the append function's channel, shared by every waiter of one
/// store: whoever holds the connection passes each notification on to the
/// others, so one connection serves any number of event processors.
#[derive(Debug)]
struct Notifications {
    channel: String,
    listener: async_lock::Mutex<Option<PgListener>>,
    received: event_listener::Event,
}

impl Notifications {
    fn new(channel: String) -> Self {
        Self {
            channel,
            listener: async_lock::Mutex::new(None),
            received: event_listener::Event::new(),
        }
    }

    /// Resolves on the next notification, or early on a connection error:
    /// waiters also poll, so a spurious wake-up only costs a read.
    async fn wait(&self, pool: &PgPool) {
        let received = self.received.listen();
        let Some(mut listener) = self.listener.try_lock() else {
            received.await;
            return;
        };
        if listener.is_none() {
            match PgListener::connect_with(pool).await {
                Ok(mut connected) => match connected.listen(&self.channel).await {
                    Ok(()) => *listener = Some(connected),
                    Err(error) => tracing::warn!("cannot LISTEN for appends: {error}"),
                },
                Err(error) => tracing::warn!("cannot connect to LISTEN for appends: {error}"),
            }
        }
        if let Some(connected) = listener.as_mut()
            && let Err(error) = connected.recv().await
        {
            tracing::warn!("lost the LISTEN connection: {error}");
            *listener = None;
        }
        drop(listener);
        self.received.notify(usize::MAX);
    }
}
