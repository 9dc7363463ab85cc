//! Group commit: the appends one store makes at the same time are written
//! together by a task of the store's own, one transaction and one flush for
//! the whole group, each batch checked on its own.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use chrono::{DateTime, Utc};
use sqlx::Postgres;
use sqlx::postgres::{PgArguments, PgPool, PgRow};
use sqlx::query::Query;
use sqlx::{AssertSqlSafe, Row as _, SqlSafeStr, SqlStr};
use tokio::sync::oneshot;
use uuid::Uuid;

use super::COLUMNS;
use crate::boundary::{AppendCondition, EventQuery};
use crate::database::DatabaseError;
use crate::envelope::{Envelope, NewEvent};
use crate::store::deadline::{check_writes, gone};
use crate::store::sql::DriverResult;
use crate::store::sql::boundary::{ItemStatements, distinct_tags, tags_json};
use crate::store::sql::{DEADLINE_COLUMNS, TablePrefix, database_error, outcome_unknown, stored};
use crate::store::{
    Conflict, DeadlineWrite, RowLocation, StoreError, StreamAppend, check_batch, command_id,
    rejected, stream_hash,
};

impl GroupCommit {
    pub(super) fn new(pool: PgPool, prefix: &TablePrefix) -> Self {
        let sql = |template: &str| AssertSqlSafe(prefix.expand(template)).into_sql_str();
        Self {
            pool,
            append: sql("SELECT actual, first_position, recorded_at, \
                 CASE WHEN duplicate THEN 'duplicate' WHEN first_position IS NULL THEN 'conflict' \
                 ELSE 'appended' END \
                 FROM {p}append($1[1], $2[1], $3[1], $5, $6, $7, $8, $9, $10, $11)"),
            append_group: sql("SELECT actual, first_position, recorded_at, outcome \
                 FROM {p}append_group($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"),
            append_group_if: sql("SELECT actual, first_position, recorded_at, outcome \
                 FROM {p}append_group_if($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, \
                 $13::JSONB[])"),
            // An item's events are found through its first tag's rows, and
            // each must carry all of its tags ($4); names ($3) as a JSON
            // array, or NULL for any.
            items: ItemStatements {
                tagged: sql(&format!(
                    "SELECT {COLUMNS} FROM {{p}}events e WHERE e.position IN ( \
                       SELECT t.position FROM {{p}}event_tags t \
                       WHERE t.tag = $4::JSONB->>0 AND t.position > $1 AND t.position <= $2) \
                     AND ($3::TEXT IS NULL OR e.event_name IN (SELECT jsonb_array_elements_text($3::JSONB))) \
                     AND NOT EXISTS (SELECT 1 FROM jsonb_array_elements_text($4::JSONB) AS x(tag) \
                          WHERE NOT EXISTS (SELECT 1 FROM {{p}}event_tags a \
                                            WHERE a.tag = x.tag AND a.position = e.position)) \
                     ORDER BY e.position"
                )),
                named: sql(&format!(
                    "SELECT {COLUMNS} FROM {{p}}events e WHERE e.position > $1 AND e.position <= $2 \
                     AND ($3::TEXT IS NULL OR e.event_name IN (SELECT jsonb_array_elements_text($3::JSONB))) \
                     AND jsonb_array_length($4::JSONB) = 0 ORDER BY e.position"
                )),
            },
            event_id_key: prefix.expand("{p}events_event_id_key"),
            position_key: prefix.expand("{p}events_position_key"),
            deadlines: DeadlineStatements {
                // Each takes one array per column, a group's writes at once.
                schedule: sql(&format!(
                    "INSERT INTO {{p}}deadlines AS d ({DEADLINE_COLUMNS}) \
                     SELECT t, i, n, k, id, due, v, p::JSONB, m::JSONB, s, due \
                     FROM unnest($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::TEXT[], $5::UUID[], \
                                 $6::TIMESTAMPTZ[], $7::INTEGER[], $8::TEXT[], $9::TEXT[], $10::BIGINT[]) \
                          AS x(t, i, n, k, id, due, v, p, m, s) \
                     ON CONFLICT (aggregate_type, aggregate_id, name, key) DO UPDATE SET \
                     deadline_id = excluded.deadline_id, due_at = excluded.due_at, \
                     version = excluded.version, payload = excluded.payload, \
                     metadata = excluded.metadata, fire_at = excluded.fire_at, attempts = 0, \
                     last_error = NULL, parked = FALSE, claimed = FALSE"
                )),
                cancel: sql("DELETE FROM {p}deadlines d \
                     USING unnest($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::TEXT[]) AS x(t, i, n, k) \
                     WHERE d.aggregate_type = x.t AND d.aggregate_id = x.i AND d.name = x.n \
                     AND d.key = x.k AND NOT d.claimed"),
                consume: sql("DELETE FROM {p}deadlines d \
                     USING unnest($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::TEXT[], $5::UUID[]) \
                           AS x(t, i, n, k, id) \
                     WHERE d.aggregate_type = x.t AND d.aggregate_id = x.i AND d.name = x.n \
                     AND d.key = x.k AND d.deadline_id = x.id RETURNING d.deadline_id"),
            },
            queue: Mutex::new(Queue::default()),
        }
    }

    /// Appends a batch at the end of its stream if nothing the condition's
    /// query selects was recorded after its position: queued as any
    /// append, and written with its group in one call of the schema's
    /// group function for conditional batches, which checks each under the
    /// log head's lock (every append holds it until it commits) after the
    /// batches before it: a group's decisions share one commit.
    pub(super) async fn append_if(
        self: &Arc<Self>,
        aggregate_type: &str,
        aggregate_id: &str,
        events: Vec<NewEvent>,
        condition: &AppendCondition,
    ) -> Result<Vec<Envelope>, StoreError> {
        let (mut pending, outcome) =
            Pending::new(aggregate_type, aggregate_id, 0, events, Vec::new())?;
        pending.condition = Some(Condition {
            after: condition.after,
            stored_after: stored(condition.after).unwrap_or(i64::MAX),
            query: query_json(&condition.query),
        });
        self.queue(vec![pending]).await;
        Self::outcome(outcome, aggregate_type, aggregate_id).await
    }

    /// Queues the batch for the writer, starting one if none runs, and
    /// waits for the batch's outcome.
    pub(super) async fn append(
        self: &Arc<Self>,
        aggregate_type: &str,
        aggregate_id: &str,
        expected_version: u64,
        events: Vec<NewEvent>,
    ) -> Result<Vec<Envelope>, StoreError> {
        let (pending, outcome) = Pending::new(
            aggregate_type,
            aggregate_id,
            expected_version,
            events,
            Vec::new(),
        )?;
        self.queue(vec![pending]).await;
        Self::outcome(outcome, aggregate_type, aggregate_id).await
    }

    /// Queues the batches together, so one group takes as many of them as
    /// it holds, and waits for each one's outcome. A group checks its
    /// batches against the log as it was before the group, so the second
    /// batch of a stream waits for a later group: the batches go in waves,
    /// each stream at most once in each.
    pub(super) async fn append_all(
        self: &Arc<Self>,
        appends: Vec<StreamAppend>,
    ) -> Vec<Result<Vec<Envelope>, StoreError>> {
        let mut waves: Vec<Vec<(usize, StreamAppend)>> = Vec::new();
        let mut seen: HashMap<(&str, &str), usize> = HashMap::new();
        let streams: Vec<(String, String)> = appends
            .iter()
            .map(|append| (append.aggregate_type.clone(), append.aggregate_id.clone()))
            .collect();
        let mut outcomes: Vec<Option<Result<Vec<Envelope>, StoreError>>> =
            (0..appends.len()).map(|_| None).collect();
        for (index, append) in appends.into_iter().enumerate() {
            let stream = (streams[index].0.as_str(), streams[index].1.as_str());
            let wave = seen.entry(stream).or_insert(0);
            if waves.len() <= *wave {
                waves.push(Vec::new());
            }
            waves[*wave].push((index, append));
            *wave += 1;
        }
        for wave in waves {
            let mut queued = Vec::with_capacity(wave.len());
            let mut waiting = Vec::with_capacity(wave.len());
            for (index, append) in wave {
                let (aggregate_type, aggregate_id) = (&streams[index].0, &streams[index].1);
                let outcome = check_batch(aggregate_type, aggregate_id, &append.events)
                    .and_then(|()| check_writes(aggregate_type, aggregate_id, &append.deadlines))
                    .and_then(|()| {
                        Pending::new(
                            aggregate_type,
                            aggregate_id,
                            append.expected_version,
                            append.events,
                            append.deadlines,
                        )
                    })
                    .map(|(pending, outcome)| {
                        queued.push(pending);
                        outcome
                    });
                waiting.push((index, outcome));
            }
            self.queue(queued).await;
            for (index, outcome) in waiting {
                let (aggregate_type, aggregate_id) = (&streams[index].0, &streams[index].1);
                outcomes[index] = Some(match outcome {
                    Ok(outcome) => Self::outcome(outcome, aggregate_type, aggregate_id).await,
                    Err(refused) => Err(refused),
                });
            }
        }
        outcomes.into_iter().flatten().collect()
    }

    /// Waits for what the writer reports about a batch.
    async fn outcome(
        outcome: Outcome,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> Result<Vec<Envelope>, StoreError> {
        outcome.await.unwrap_or_else(|_| {
            Err(StoreError::OutcomeUnknown {
                aggregate_type: aggregate_type.to_owned(),
                aggregate_id: aggregate_id.to_owned(),
                source: DatabaseError::permanent("the store's writer stopped before it reported"),
            })
        })
    }

    /// Queues batches for the writer, starting one if none runs.
    async fn queue(self: &Arc<Self>, batches: Vec<Pending>) {
        if batches.is_empty() {
            return;
        }
        let start_writer = {
            let mut queue = lock(&self.queue);
            queue.pending.extend(batches);
            !std::mem::replace(&mut queue.writing, true)
        };
        if start_writer {
            // Made before the task: a task its runtime drops before it ever
            // runs still lets the next append start a writer.
            let stopped = WriterStopped {
                group: Arc::clone(self),
                normally: false,
            };
            let writer = Arc::clone(self).write_queued(stopped);
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => drop(runtime.spawn(writer)),
                // Outside a runtime nothing else can be waiting.
                Err(_) => writer.await,
            }
        }
    }

    /// The writer: writes queued batches group by group until none is left.
    async fn write_queued(self: Arc<Self>, mut stopped: WriterStopped) {
        loop {
            // The appends just told their outcome (or just queued behind the
            // one that started this writer) queue their next batches when
            // they run: let them, so the group is as large as the queue.
            tokio::task::yield_now().await;
            let group = {
                let mut queue = lock(&self.queue);
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
        if group.iter().any(|pending| !pending.deadlines.is_empty()) {
            return self.write_decisions(group).await;
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
        // In every statement the unique index refuses a reused event id
        // (for a group, the whole group, whose batches are then written
        // alone).
        let batches: Vec<&Pending> = group.iter().collect();
        let rows = self
            .group_statement(&batches)
            .fetch_all(&mut *connection)
            .await;
        drop(batches);
        match rows {
            Ok(rows) if rows.len() == group.len() => {
                for (pending, row) in group.into_iter().zip(rows) {
                    let outcome = pending.outcome_in_group(&row);
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

    /// The statement that writes a group, with its arguments: a lone batch
    /// the simpler function, a group one call of the group function, and a
    /// group with conditional batches the function that checks and inserts
    /// its batches one after the other.
    fn group_statement<'a>(&self, group: &[&'a Pending]) -> Query<'a, Postgres, PgArguments> {
        if !group.iter().any(|pending| pending.condition.is_some()) {
            let statement = if group.len() == 1 {
                self.append.clone()
            } else {
                self.append_group.clone()
            };
            return append_query(statement, group);
        }
        let (afters, queries): (Vec<Option<i64>>, Vec<Option<&str>>) = group
            .iter()
            .map(|pending| match &pending.condition {
                Some(condition) => (Some(condition.stored_after), Some(condition.query.as_str())),
                None => (None, None),
            })
            .unzip();
        append_query(self.append_group_if.clone(), group)
            .bind(afters)
            .bind(queries)
    }

    /// Writes a group of which some batches carry deadline changes, in one
    /// transaction: the append function checks and inserts every batch's
    /// events, then each appended batch's deadline writes follow, its
    /// consumed deadline first. A fire whose deadline is no longer pending
    /// would leave its events behind: the transaction is rolled back, that
    /// batch is refused with `DeadlineGone`, and the group written again
    /// without it. A batch whose data fails the group is found by writing
    /// them one by one, as plain groups are.
    async fn write_decisions(&self, mut group: Vec<Pending>) {
        loop {
            match self.try_decisions(&group).await {
                Written::Done(outcomes) => {
                    for (pending, outcome) in group.into_iter().zip(outcomes) {
                        pending.report(outcome);
                    }
                    return;
                }
                Written::Gone(gone_at) => {
                    for index in gone_at.into_iter().rev() {
                        let pending = group.remove(index);
                        let error = pending.gone();
                        pending.report(Err(error));
                    }
                    if group.is_empty() {
                        return;
                    }
                }
                Written::OneByOne => {
                    for pending in group {
                        Box::pin(self.write_decisions(vec![pending])).await;
                    }
                    return;
                }
                Written::Refused(refused) => {
                    return Pending::fail(group, |pending| pending.refused(&refused));
                }
            }
        }
    }

    /// One attempt at [`write_decisions`](Self::write_decisions).
    async fn try_decisions(&self, group: &[Pending]) -> Written {
        let mut transaction = match self.pool.begin().await {
            Ok(transaction) => transaction,
            Err(error) => return Written::Refused(self.refused(error)),
        };
        let split_or_refuse = |error: sqlx::Error| match &error {
            sqlx::Error::Database(database)
                if group.len() > 1 && of_one_batch(database.code().as_deref()) =>
            {
                Written::OneByOne
            }
            _ => Written::Refused(self.refused(error)),
        };
        let batches: Vec<&Pending> = group.iter().collect();
        let query = self.group_statement(&batches);
        let rows = match query.fetch_all(&mut *transaction).await {
            Ok(rows) if rows.len() == group.len() => rows,
            Ok(rows) => {
                let reason = format!("{} outcomes for {} batches", rows.len(), group.len());
                return Written::Refused(Refused::Database(DatabaseError::permanent(reason)));
            }
            Err(error) => return split_or_refuse(error),
        };
        let outcomes: Vec<Result<Vec<Envelope>, StoreError>> = group
            .iter()
            .zip(&rows)
            .map(|(pending, row)| pending.outcome_in_group(row))
            .collect();
        let appended: Vec<&Pending> = group
            .iter()
            .zip(&outcomes)
            .filter(|(_, outcome)| outcome.is_ok())
            .map(|(pending, _)| pending)
            .collect();
        // The fires first: one whose deadline is gone undoes the group.
        match self.consume(&mut transaction, &appended).await {
            Ok(gone) if gone.is_empty() => {}
            Ok(gone) => {
                let gone_at = group
                    .iter()
                    .enumerate()
                    .filter(|(_, pending)| gone.iter().any(|gone| std::ptr::eq(*gone, *pending)))
                    .map(|(index, _)| index)
                    .collect();
                // Dropping the transaction rolls it back.
                return Written::Gone(gone_at);
            }
            Err(error) => return split_or_refuse(error),
        }
        if let Err(error) = self.schedule_and_cancel(&mut transaction, &appended).await {
            return split_or_refuse(error);
        }
        match transaction.commit().await {
            Ok(()) => Written::Done(outcomes),
            Err(error) => {
                let unknown = outcome_unknown(&error);
                let source = database_error(error);
                Written::Done(
                    group
                        .iter()
                        .zip(outcomes)
                        .map(|(pending, outcome)| match outcome {
                            Ok(_) if unknown => Err(pending.outcome_unknown(source.clone())),
                            Ok(_) => Err(StoreError::Database(source.clone())),
                            refused => refused,
                        })
                        .collect(),
                )
            }
        }
    }

    /// Consumes the deadlines the fires of `appended` fire, in one
    /// statement; returns the batches whose deadline was no longer pending.
    async fn consume<'p>(
        &self,
        transaction: &mut sqlx::PgTransaction<'_>,
        appended: &[&'p Pending],
    ) -> Result<Vec<&'p Pending>, sqlx::Error> {
        let fires: Vec<(&'p Pending, &DeadlineWrite)> = appended
            .iter()
            .flat_map(|pending| {
                pending
                    .deadlines
                    .iter()
                    .filter(|(write, _)| write.is_consume())
                    .map(move |(write, _)| (*pending, write))
            })
            .collect();
        if fires.is_empty() {
            return Ok(Vec::new());
        }
        let mut columns = SlotColumns::default();
        let mut ids = Vec::with_capacity(fires.len());
        for (pending, write) in &fires {
            columns.push(pending, write);
            if let DeadlineWrite::Consume { deadline_id, .. } = write {
                ids.push(*deadline_id);
            }
        }
        let mut consumed: Vec<Uuid> = sqlx::query_scalar(self.deadlines.consume.clone())
            .bind(columns.types)
            .bind(columns.ids)
            .bind(columns.names)
            .bind(columns.keys)
            .bind(&ids)
            .fetch_all(&mut **transaction)
            .await?;
        // A deadline is consumed once: two fires of it in one group, the
        // first takes it and the second finds it gone.
        Ok(fires
            .into_iter()
            .zip(ids)
            .filter(
                |(_, id)| match consumed.iter().position(|taken| taken == id) {
                    Some(at) => {
                        consumed.swap_remove(at);
                        false
                    }
                    None => true,
                },
            )
            .map(|((pending, _), _)| pending)
            .collect())
    }

    /// Writes the schedules and cancels of `appended`, their net effect on
    /// each deadline (in order: the last write of a deadline wins), one
    /// statement each.
    async fn schedule_and_cancel(
        &self,
        transaction: &mut sqlx::PgTransaction<'_>,
        appended: &[&Pending],
    ) -> Result<(), sqlx::Error> {
        let mut last: Vec<(&Pending, &DeadlineWrite, &str)> = Vec::new();
        for pending in appended {
            for (write, metadata) in pending
                .deadlines
                .iter()
                .filter(|(write, _)| !write.is_consume())
            {
                let same = |(other, written, _): &(&Pending, &DeadlineWrite, &str)| {
                    other.aggregate_type == pending.aggregate_type
                        && other.aggregate_id == pending.aggregate_id
                        && written.name() == write.name()
                        && written.key() == write.key()
                };
                last.retain(|entry| !same(entry));
                last.push((pending, write, metadata));
            }
        }
        let mut cancels = SlotColumns::default();
        let mut schedules = SlotColumns::default();
        let (mut deadline_ids, mut due, mut versions, mut payloads, mut metadata, mut shards) = (
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
        );
        for (pending, write, json) in last {
            match write {
                DeadlineWrite::Schedule(deadline) => {
                    schedules.push(pending, write);
                    deadline_ids.push(deadline.deadline_id);
                    due.push(deadline.due_at);
                    // `Pending::new` checked that it fits.
                    versions.push(deadline.version as i32);
                    payloads.push(deadline.payload.as_str());
                    metadata.push(json);
                    shards.push(i64::from(stream_hash(
                        &pending.aggregate_type,
                        &pending.aggregate_id,
                    )));
                }
                _ => cancels.push(pending, write),
            }
        }
        if !cancels.types.is_empty() {
            sqlx::query(self.deadlines.cancel.clone())
                .bind(cancels.types)
                .bind(cancels.ids)
                .bind(cancels.names)
                .bind(cancels.keys)
                .execute(&mut **transaction)
                .await?;
        }
        if !schedules.types.is_empty() {
            sqlx::query(self.deadlines.schedule.clone())
                .bind(schedules.types)
                .bind(schedules.ids)
                .bind(schedules.names)
                .bind(schedules.keys)
                .bind(deadline_ids)
                .bind(due)
                .bind(versions)
                .bind(payloads)
                .bind(metadata)
                .bind(shards)
                .execute(&mut **transaction)
                .await?;
        }
        Ok(())
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
            return if constraint == self.event_id_key {
                Refused::Rejected("an event id of the batch is already used".to_owned())
            } else if constraint == self.position_key {
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

/// The append function's call for `group`: one array per column, each
/// batch's events one after the other.
fn append_query<'a>(statement: SqlStr, group: &[&'a Pending]) -> Query<'a, Postgres, PgArguments> {
    let mut types = Vec::with_capacity(group.len());
    let mut ids = Vec::with_capacity(group.len());
    let mut expected = Vec::with_capacity(group.len());
    let mut counts = Vec::with_capacity(group.len());
    let (mut event_ids, mut names, mut versions, mut metadata, mut payloads) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut command_ids = Vec::new();
    let mut tags = Vec::new();
    for pending in group {
        types.push(pending.aggregate_type.as_str());
        ids.push(pending.aggregate_id.as_str());
        expected.push(pending.expected);
        counts.push(pending.count);
        for (event, json) in pending.events.iter().zip(&pending.metadata) {
            event_ids.push(event.event_id);
            names.push(event.event_name);
            // `Pending::new` checked that it fits.
            versions.push(event.event_version as i32);
            metadata.push(json.as_str());
            payloads.push(event.payload.as_str());
            command_ids.push(event.metadata.command_id);
            tags.push(tags_json(&event.tags));
        }
    }
    sqlx::query(statement)
        .bind(types)
        .bind(ids)
        .bind(expected)
        .bind(counts)
        .bind(event_ids)
        .bind(names)
        .bind(versions)
        .bind(metadata)
        .bind(payloads)
        .bind(command_ids)
        .bind(tags)
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

/// What one attempt at writing a group with deadline changes came to.
enum Written {
    /// Committed (or its commit failed): each batch's outcome.
    Done(Vec<Result<Vec<Envelope>, StoreError>>),
    /// Rolled back: these batches' fires found their deadline gone.
    Gone(Vec<usize>),
    /// Rolled back: a batch's data failed the group; write them one by one.
    OneByOne,
    /// Rolled back, or never begun: every batch's outcome.
    Refused(Refused),
}

/// Why the server refused a group, for each of its batches.
enum Refused {
    Rejected(String),
    PositionUsed,
    SequenceUsed(String),
    OutOfRange(String),
    Database(DatabaseError),
}

/// Group commit: appends waiting to be written together, and the task that
/// writes them.
#[derive(Debug)]
pub(super) struct GroupCommit {
    pool: PgPool,
    /// A lone batch's statement, and a group's.
    append: SqlStr,
    append_group: SqlStr,
    /// A group's with conditional batches.
    append_group_if: SqlStr,
    /// The statements of event queries, for conditional appends and reads.
    pub(super) items: ItemStatements,
    /// The unique constraints a refused insert may name.
    event_id_key: String,
    position_key: String,
    pub(super) deadlines: DeadlineStatements,
    queue: Mutex<Queue>,
}

/// The stream, name and key of deadline writes, one array per column.
#[derive(Default)]
struct SlotColumns<'a> {
    types: Vec<&'a str>,
    ids: Vec<&'a str>,
    names: Vec<&'a str>,
    keys: Vec<&'a str>,
}

impl<'a> SlotColumns<'a> {
    fn push(&mut self, pending: &'a Pending, write: &'a DeadlineWrite) {
        self.types.push(&pending.aggregate_type);
        self.ids.push(&pending.aggregate_id);
        self.names.push(write.name());
        self.keys.push(write.key());
    }
}

/// The deadline writes a group's transaction makes (and, one row at a
/// time, [`change_deadlines`](super::deadlines)).
#[derive(Debug)]
pub(super) struct DeadlineStatements {
    pub(super) schedule: SqlStr,
    pub(super) cancel: SqlStr,
    pub(super) consume: SqlStr,
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
    /// The deadline writes, each with a schedule's metadata as JSON.
    deadlines: Vec<(DeadlineWrite, String)>,
    /// A conditional append's condition: appended at the end of its stream
    /// unless its query selects an event after its position.
    condition: Option<Condition>,
    outcome: oneshot::Sender<Result<Vec<Envelope>, StoreError>>,
}

/// An [`AppendCondition`] as the conditional append function takes it.
#[derive(Debug)]
struct Condition {
    /// The position read, as given.
    after: u64,
    /// The same as the database's integer; past its range nothing was
    /// recorded.
    stored_after: i64,
    /// The query, as JSON.
    query: String,
}

/// Where an append waits for its batch's outcome.
type Outcome = oneshot::Receiver<Result<Vec<Envelope>, StoreError>>;

impl Pending {
    fn new(
        aggregate_type: &str,
        aggregate_id: &str,
        expected_version: u64,
        events: Vec<NewEvent>,
        deadlines: Vec<DeadlineWrite>,
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
        let deadlines = deadlines
            .into_iter()
            .map(|write| {
                let metadata = match &write {
                    DeadlineWrite::Schedule(deadline) => {
                        i32::try_from(deadline.version).map_err(|_| {
                            out_of_range(format!("deadline version {}", deadline.version))
                        })?;
                        serde_json::to_string(&deadline.metadata).map_err(|error| {
                            rejected(
                                aggregate_type,
                                aggregate_id,
                                format!("deadline metadata does not serialize: {error}"),
                            )
                        })?
                    }
                    _ => String::new(),
                };
                Ok((write, metadata))
            })
            .collect::<Result<_, StoreError>>()?;
        let (sender, receiver) = oneshot::channel();
        let pending = Self {
            aggregate_type: aggregate_type.to_owned(),
            aggregate_id: aggregate_id.to_owned(),
            expected_version,
            expected,
            count,
            events,
            metadata,
            deadlines,
            condition: None,
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

    /// The refusal of a batch whose fire found its deadline gone.
    fn gone(&self) -> StoreError {
        let consumed = self
            .deadlines
            .iter()
            .map(|(write, _)| write)
            .find(|write| write.is_consume());
        let (name, key) = consumed.map_or(("", ""), |write| (write.name(), write.key()));
        gone(&self.aggregate_type, &self.aggregate_id, name, key)
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
    /// A batch's outcome from its row of a group's statement.
    fn outcome_in_group(&self, row: &PgRow) -> Result<Vec<Envelope>, StoreError> {
        match &self.condition {
            Some(condition) => self.conditional_outcome(condition, row),
            None => self.outcome_of(row),
        }
    }

    /// A conditional append's outcome: the first position its query
    /// selected after the read, or the batch at the stream's version.
    fn conditional_outcome(
        &self,
        condition: &Condition,
        row: &PgRow,
    ) -> Result<Vec<Envelope>, StoreError> {
        let outcome: String = row.try_get(3).db()?;
        let actual: Option<i64> = row.try_get(0).db()?;
        let actual = actual.map(u64::try_from).transpose().map_err(|_| {
            StoreError::corrupt(
                RowLocation::in_stream(&self.aggregate_type, &self.aggregate_id, None),
                "the stream's last sequence or the changed position is negative",
            )
        })?;
        match (outcome.as_str(), actual) {
            ("changed", Some(position)) => Err(StoreError::BoundaryChanged {
                after: condition.after,
                position,
            }),
            ("appended", Some(version)) => self.appended(version, row),
            _ => self.outcome_of(row),
        }
    }

    /// The envelopes of the batch, appended after the stream's `version`
    /// at the row's first position and time.
    fn appended(&self, version: u64, row: &PgRow) -> Result<Vec<Envelope>, StoreError> {
        let first_position: i64 = row.try_get(1).db()?;
        let recorded_at: DateTime<Utc> = row.try_get(2).db()?;
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
                sequence: version + offset + 1,
                position: first_position + offset,
                event_name: event.event_name.to_owned(),
                event_version: event.event_version,
                recorded_at,
                metadata: event.metadata.clone(),
                payload: event.payload.clone(),
            })
            .collect())
    }

    fn outcome_of(&self, row: &PgRow) -> Result<Vec<Envelope>, StoreError> {
        let outcome: String = row.try_get(3).db()?;
        match outcome.as_str() {
            "appended" => self.appended(self.expected_version, row),
            "conflict" => {
                let actual: i64 = row.try_get(0).db()?;
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
            other => Err(StoreError::Database(DatabaseError::permanent(format!(
                "the append function answered `{other}`, which this build does not know"
            )))),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Only whole values are stored under these locks.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// An event query as the conditional append function takes it: a JSON
/// array of items, each `{"names": [..], "tags": [..]}`, "names" left out
/// for any name.
fn query_json(query: &EventQuery) -> String {
    let items: Vec<serde_json::Value> = query
        .items()
        .iter()
        .map(|item| {
            let mut object = serde_json::Map::new();
            if !item.event_names.is_empty() {
                object.insert("names".into(), item.event_names.clone().into());
            }
            object.insert("tags".into(), distinct_tags(&item.tags).into());
            serde_json::Value::Object(object)
        })
        .collect();
    serde_json::Value::from(items).to_string()
}
