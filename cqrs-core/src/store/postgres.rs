//! [`PostgresStore`]: the event log in PostgreSQL, with group commit.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::{AssertSqlSafe, Row as _, SqlSafeStr, SqlStr};
use tokio::sync::oneshot;
use uuid::Uuid;

use super::sql::{
    Migration, Row, TablePrefix, acquire, column, database_error, dense_stream, outcome_unknown,
    pending, read_log, stored,
};
use super::{
    Conflict, DatabaseError, EventStore, ReadLimit, RowLocation, Snapshot, StoreError, check_batch,
    command_id, is_stream, rejected,
};
use crate::envelope::{Envelope, JsonPayload, NewEvent};
use crate::view::{PostgresViews, ReadModels};

/// Schema changes, applied in order and recorded in `{p}schema_migrations`.
const MIGRATIONS: &[Migration] = &[
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
    (
        4,
        r#"
    -- The log head is a position: a head edited below 0 would make appends
    -- commit rows at positions no reader takes.
    ALTER TABLE {p}log_head ADD CONSTRAINT {p}log_head_in_range CHECK (position >= 0);
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
        };
        Ok(Self {
            pool,
            notifications: Arc::new(Notifications::new(prefix.expand("{p}appended"))),
            group: Arc::new(GroupCommit::default()),
            prefix,
            sql: Arc::new(statements),
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

    /// Queues the batch for the store's writer, starting one if none runs,
    /// and waits for the batch's outcome.
    async fn append_batch(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        expected_version: u64,
        events: Vec<NewEvent>,
    ) -> Result<Vec<Envelope>, StoreError> {
        check_batch(aggregate_type, aggregate_id, &events)?;
        let (pending, outcome) =
            Pending::new(aggregate_type, aggregate_id, expected_version, events)?;
        let start_writer = {
            let mut queue = lock(&self.group.queue);
            queue.pending.push_back(pending);
            !std::mem::replace(&mut queue.writing, true)
        };
        if start_writer {
            // Made before the task: a task its runtime drops before it ever
            // runs still lets the next append start a writer.
            let stopped = WriterStopped {
                group: Arc::clone(&self.group),
                normally: false,
            };
            let writer = self.clone().write_queued(stopped);
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => drop(runtime.spawn(writer)),
                // Outside a runtime nothing else can be waiting.
                Err(_) => writer.await,
            }
        }
        outcome.await.unwrap_or_else(|_| {
            Err(StoreError::OutcomeUnknown {
                aggregate_type: aggregate_type.to_owned(),
                aggregate_id: aggregate_id.to_owned(),
                source: DatabaseError::permanent("the store's writer stopped before it reported"),
            })
        })
    }

    /// The writer: writes queued batches group by group until none is left.
    async fn write_queued(self, mut stopped: WriterStopped) {
        loop {
            // The appends just told their outcome (or just queued behind the
            // one that started this writer) queue their next batches when
            // they run: let them, so the group is as large as the queue.
            tokio::task::yield_now().await;
            let group = {
                let mut queue = lock(&self.group.queue);
                let group = queue.take();
                if group.is_empty() {
                    queue.writing = false;
                    stopped.normally = true;
                    return;
                }
                group
            };
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
            counts.push(pending.count);
            for (event, json) in pending.events.iter().zip(&pending.metadata) {
                event_ids.push(event.event_id);
                names.push(event.event_name);
                // `Pending::new` checked that it fits.
                versions.push(event.event_version as i32);
                metadata.push(json.as_str());
                payloads.push(event.payload.as_str());
            }
        }
        // Nothing is sent before a connection is ready: a failure to get one
        // is certain to have appended nothing. (The writer is no caller's
        // future: its acquire needs no shield.)
        let mut connection = match self.pool.acquire().await {
            Ok(connection) => connection,
            Err(error) => {
                let error = StoreError::Database(database_error(error));
                return Pending::fail(group, |_| error.clone());
            }
        };
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
            .fetch_all(&mut *connection)
            .await;
        match rows {
            Ok(rows) if rows.len() == group.len() => {
                for (pending, row) in group.into_iter().zip(rows) {
                    let outcome = pending.outcome_of(&row);
                    pending.report(outcome);
                }
            }
            // The statement committed, but which batch is which is lost.
            Ok(rows) => {
                let reason = format!("{} outcomes for {} batches", rows.len(), group.len());
                let source = DatabaseError::permanent(reason);
                Pending::fail(group, |pending| pending.outcome_unknown(source.clone()));
            }
            Err(error) if outcome_unknown(&error) => {
                connection.close_on_drop();
                let source = database_error(error);
                Pending::fail(group, |pending| pending.outcome_unknown(source.clone()));
            }
            // One batch's data may have failed the whole group: write each
            // alone, so only that one fails.
            Err(sqlx::Error::Database(error))
                if group.len() > 1 && of_one_batch(error.code().as_deref()) =>
            {
                drop(connection);
                for pending in group {
                    Box::pin(self.write_group(vec![pending])).await;
                }
            }
            Err(error) => {
                let refused = self.refused(error);
                Pending::fail(group, |pending| pending.refused(&refused));
            }
        }
    }

    /// What an error the server answered a group with means; it rolled back.
    fn refused(&self, error: sqlx::Error) -> Refused {
        let sqlx::Error::Database(database) = &error else {
            return Refused::Database(database_error(error));
        };
        let message = database.message().to_owned();
        let code = database.code().map(|code| code.into_owned());
        if database.is_unique_violation() {
            let constraint = database.constraint().unwrap_or_default();
            return if constraint == self.prefix.expand("{p}events_event_id_key") {
                Refused::Rejected("an event id of the batch is already used".to_owned())
            } else if constraint == self.prefix.expand("{p}events_position_key") {
                Refused::PositionUsed
            } else {
                Refused::SequenceUsed(message)
            };
        }
        match code.as_deref() {
            // Text or JSON that PostgreSQL cannot hold, or too large for it.
            Some("22P05" | "22021" | "54000") => {
                Refused::Rejected(format!("a payload cannot be stored: {message}"))
            }
            Some("22003") => Refused::OutOfRange(message),
            _ => Refused::Database(database_error(error)),
        }
    }
}

/// Whether a server error that failed a whole group may be one batch's
/// alone: its data (class 22), a constraint (23) or a size limit (54).
fn of_one_batch(code: Option<&str>) -> bool {
    code.is_some_and(|code| {
        ["22", "23", "54"]
            .iter()
            .any(|class| code.starts_with(class))
    })
}

/// Why the server refused a group, for each of its batches.
enum Refused {
    Rejected(String),
    PositionUsed,
    SequenceUsed(String),
    OutOfRange(String),
    Database(DatabaseError),
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
    for (version, template) in pending(MIGRATIONS, current)? {
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
        let Some(from) = stored(from_sequence).filter(|_| is_stream(aggregate_type, aggregate_id))
        else {
            return Ok(Vec::new());
        };
        // From the start, rows at sequences below 1 are read too, to be
        // reported rather than never seen.
        let from = if from <= 1 { i64::MIN } else { from };
        let rows = sqlx::query(self.sql.load.clone())
            .bind(aggregate_type)
            .bind(aggregate_id)
            .bind(from)
            .fetch_all(&mut *acquire(&self.pool).await?)
            .await?
            .iter()
            .map(row)
            .collect::<Result<Vec<_>, _>>()?;
        dense_stream(aggregate_type, aggregate_id, from_sequence, rows)
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
        let position: i64 = sqlx::query_scalar(self.sql.last_position.clone())
            .fetch_one(&mut *acquire(&self.pool).await?)
            .await?;
        u64::try_from(position).map_err(|_| {
            StoreError::corrupt(
                RowLocation::default(),
                format!("the log head is at position {position}"),
            )
        })
    }

    async fn wait_for_appends(&self) {
        Notifications::wait(&self.notifications, &self.pool).await;
    }

    async fn has_command(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        command_id: Uuid,
    ) -> Result<bool, StoreError> {
        if !is_stream(aggregate_type, aggregate_id) {
            return Ok(false);
        }
        Ok(sqlx::query_scalar(self.sql.has_command.clone())
            .bind(aggregate_type)
            .bind(aggregate_id)
            .bind(command_id)
            .fetch_one(&mut *acquire(&self.pool).await?)
            .await?)
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
            .fetch_optional(&mut *acquire(&self.pool).await?)
            .await?;
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
            .execute(&mut *acquire(&self.pool).await?)
            .await?;
        Ok(())
    }
}

/// Appends waiting to be written together, and whether a writer runs.
#[derive(Debug, Default)]
struct GroupCommit {
    queue: Mutex<Queue>,
}

#[derive(Debug, Default)]
struct Queue {
    pending: VecDeque<Pending>,
    /// A writer task is running; it takes what is queued until nothing is.
    writing: bool,
}

/// The most events one group carries; more wait for the next turn.
const EVENTS_PER_GROUP: usize = 5_000;

impl Queue {
    /// The oldest queued batches whose appends still wait, up to the group's
    /// size (at least one).
    fn take(&mut self) -> Vec<Pending> {
        let mut group = Vec::new();
        let mut events = 0;
        while let Some(pending) = self.pending.front() {
            if pending.outcome.is_closed() {
                // Its caller gave up before it was written: it never will be.
                self.pending.pop_front();
                continue;
            }
            events += pending.events.len();
            if events > EVENTS_PER_GROUP && !group.is_empty() {
                break;
            }
            group.extend(self.pending.pop_front());
        }
        group
    }
}

/// Tells the queued appends when a writer ends without emptying the queue
/// (its runtime shut down or it panicked), and lets the next append start one.
struct WriterStopped {
    group: Arc<GroupCommit>,
    normally: bool,
}

impl Drop for WriterStopped {
    fn drop(&mut self) {
        if self.normally {
            return;
        }
        let orphans: Vec<Pending> = {
            let mut queue = lock(&self.group.queue);
            queue.writing = false;
            queue.pending.drain(..).collect()
        };
        let error = StoreError::Database(DatabaseError::permanent(
            "the store's writer stopped before it wrote this append",
        ));
        Pending::fail(orphans, |_| error.clone());
    }
}

/// One append's batch in the queue, and where its outcome goes.
#[derive(Debug)]
struct Pending {
    aggregate_type: String,
    aggregate_id: String,
    expected_version: u64,
    /// The expected version and the events' count as the database's
    /// integers; `new` checked that the events' versions fit in its `INTEGER`.
    expected: i64,
    count: i32,
    events: Vec<NewEvent>,
    metadata: Vec<String>,
    outcome: oneshot::Sender<Result<Vec<Envelope>, StoreError>>,
}

/// Where an append waits for its batch's outcome.
type Outcome = oneshot::Receiver<Result<Vec<Envelope>, StoreError>>;

impl Pending {
    fn new(
        aggregate_type: &str,
        aggregate_id: &str,
        expected_version: u64,
        events: Vec<NewEvent>,
    ) -> Result<(Self, Outcome), StoreError> {
        let out_of_range = |reason: String| {
            rejected(
                aggregate_type,
                aggregate_id,
                format!("{reason} is out of range"),
            )
        };
        let expected = stored(expected_version)
            .ok_or_else(|| out_of_range(format!("expected version {expected_version}")))?;
        let count = i32::try_from(events.len())
            .map_err(|_| out_of_range(format!("a batch of {} events", events.len())))?;
        let mut metadata = Vec::with_capacity(events.len());
        let mut versions = Vec::with_capacity(events.len());
        for event in &events {
            versions.push(
                i32::try_from(event.event_version)
                    .map_err(|_| out_of_range(format!("event version {}", event.event_version)))?,
            );
            metadata.push(serde_json::to_string(&event.metadata).map_err(|error| {
                rejected(
                    aggregate_type,
                    aggregate_id,
                    format!("metadata does not serialize: {error}"),
                )
            })?);
        }
        let (sender, receiver) = oneshot::channel();
        let pending = Self {
            aggregate_type: aggregate_type.to_owned(),
            aggregate_id: aggregate_id.to_owned(),
            expected_version,
            expected,
            count,
            events,
            metadata,
            outcome: sender,
        };
        Ok((pending, receiver))
    }

    fn report(self, outcome: Result<Vec<Envelope>, StoreError>) {
        // An append whose caller gave up has nobody to tell.
        let _ = self.outcome.send(outcome);
    }

    /// Reports a failure to every batch of `group`.
    fn fail(group: Vec<Self>, error: impl Fn(&Self) -> StoreError) {
        for pending in group {
            let error = error(&pending);
            pending.report(Err(error));
        }
    }

    fn outcome_unknown(&self, source: DatabaseError) -> StoreError {
        StoreError::OutcomeUnknown {
            aggregate_type: self.aggregate_type.clone(),
            aggregate_id: self.aggregate_id.clone(),
            source,
        }
    }

    fn refused(&self, refused: &Refused) -> StoreError {
        let stream = || RowLocation::in_stream(&self.aggregate_type, &self.aggregate_id, None);
        match refused {
            Refused::Rejected(reason) => {
                rejected(&self.aggregate_type, &self.aggregate_id, reason.clone())
            }
            Refused::PositionUsed => StoreError::corrupt(
                RowLocation::default(),
                "a position after the log head is already used: the head row is behind the stored events",
            ),
            Refused::SequenceUsed(message) => StoreError::corrupt(
                stream(),
                format!("a sequence after the stream's last one is already used ({message})"),
            ),
            Refused::OutOfRange(message) => StoreError::corrupt(
                stream(),
                format!(
                    "the log head or the stream's last sequence leaves no room for the batch ({message})"
                ),
            ),
            Refused::Database(error) => StoreError::Database(error.clone()),
        }
    }

    /// The batch's outcome from its row of `append_group`.
    fn outcome_of(&self, row: &PgRow) -> Result<Vec<Envelope>, StoreError> {
        let outcome: String = row.try_get(3)?;
        match outcome.as_str() {
            "appended" => {
                let first_position: i64 = row.try_get(1)?;
                let recorded_at: DateTime<Utc> = row.try_get(2)?;
                let first_position = u64::try_from(first_position).map_err(|_| {
                    StoreError::corrupt(
                        RowLocation::default(),
                        format!("the log head is at position {}", first_position - 1),
                    )
                })?;
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
                let actual = u64::try_from(actual).map_err(|_| {
                    StoreError::corrupt(
                        RowLocation::in_stream(&self.aggregate_type, &self.aggregate_id, None),
                        format!("the stream's last sequence is {actual}"),
                    )
                })?;
                Err(Conflict {
                    aggregate_type: self.aggregate_type.clone(),
                    aggregate_id: self.aggregate_id.clone(),
                    expected: self.expected_version,
                    actual,
                }
                .into())
            }
            "duplicate" => Err(StoreError::DuplicateCommand {
                aggregate_type: self.aggregate_type.clone(),
                aggregate_id: self.aggregate_id.clone(),
                command_id: command_id(&self.events).unwrap_or_default(),
            }),
            rejection => Err(rejected(
                &self.aggregate_type,
                &self.aggregate_id,
                rejection.trim_start_matches("rejected: ").to_owned(),
            )),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Only whole values are stored under these locks.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `LISTEN` on the append function's channel, by one task per store that
/// wakes every waiter on each notification. Waiters are raced against
/// timers and dropped all the time, so none of them owns the connection:
/// a dropped wait must not cancel a connect (see `sql::connection`).
#[derive(Debug)]
struct Notifications {
    channel: String,
    listening: AtomicBool,
    received: event_listener::Event,
    /// Fired when the store's last clone is dropped, to end the task.
    closed: event_listener::Event,
}

impl Notifications {
    fn new(channel: String) -> Self {
        Self {
            channel,
            listening: AtomicBool::new(false),
            received: event_listener::Event::new(),
            closed: event_listener::Event::new(),
        }
    }

    /// Resolves on the next notification, or when the listening connection
    /// is lost or cannot be made (waiters also poll, so a spurious wake-up
    /// only costs a read). Outside a tokio runtime it never resolves.
    async fn wait(self: &Arc<Self>, pool: &PgPool) {
        let received = self.received.listen();
        if !self.listening.swap(true, Ordering::SeqCst) {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => drop(runtime.spawn(listen(Arc::downgrade(self), pool.clone()))),
                Err(_) => self.listening.store(false, Ordering::SeqCst),
            }
        }
        received.await;
    }
}

impl Drop for Notifications {
    fn drop(&mut self) {
        self.closed.notify(usize::MAX);
    }
}

/// The listening task: connects, listens, passes notifications on, and
/// reconnects with a pause after a failure, until the store is dropped.
async fn listen(notifications: std::sync::Weak<Notifications>, pool: PgPool) {
    let pause = std::time::Duration::from_millis(500);
    loop {
        let Some((channel, closed)) = notifications
            .upgrade()
            .map(|notifications| (notifications.channel.clone(), notifications.closed.listen()))
        else {
            return;
        };
        let mut closed = std::pin::pin!(closed);
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(mut listener) => match listener.listen(&channel).await {
                Ok(()) => Some(listener),
                Err(error) => {
                    tracing::warn!("cannot LISTEN for appends: {error}");
                    None
                }
            },
            Err(error) => {
                tracing::warn!("cannot connect to LISTEN for appends: {error}");
                None
            }
        };
        while let Some(connected) = listener.as_mut() {
            let received = {
                let mut received = std::pin::pin!(connected.recv());
                std::future::poll_fn(|context| {
                    if closed.as_mut().poll(context).is_ready() {
                        return std::task::Poll::Ready(None);
                    }
                    received.as_mut().poll(context).map(Some)
                })
                .await
            };
            let Some(notifications) = notifications.upgrade() else {
                return;
            };
            match received {
                None => return,
                Some(Ok(_)) => {
                    notifications.received.notify(usize::MAX);
                }
                Some(Err(error)) => {
                    tracing::warn!("lost the LISTEN connection: {error}");
                    notifications.received.notify(usize::MAX);
                    listener = None;
                }
            }
        }
        futures_timer::Delay::new(pause).await;
    }
}
