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

use crate::database::DatabaseError;
use crate::envelope::{Envelope, NewEvent};
use crate::store::deadline::{check_writes, gone};
use crate::store::sql::DriverResult;
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
                 FROM {p}append($1[1], $2[1], $3[1], $5, $6, $7, $8, $9, $10)"),
            append_group: sql("SELECT actual, first_position, recorded_at, outcome \
                 FROM {p}append_group($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"),
            event_id_key: prefix.expand("{p}events_event_id_key"),
            position_key: prefix.expand("{p}events_position_key"),
            deadlines: DeadlineStatements {
                schedule: sql(&format!(
                    "INSERT INTO {{p}}deadlines AS d ({DEADLINE_COLUMNS}) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8::JSONB, $9::JSONB, $10, $6) \
                     ON CONFLICT (aggregate_type, aggregate_id, name, key) DO UPDATE SET \
                     deadline_id = excluded.deadline_id, due_at = excluded.due_at, \
                     version = excluded.version, payload = excluded.payload, \
                     metadata = excluded.metadata, fire_at = excluded.fire_at, attempts = 0, \
                     last_error = NULL, parked = FALSE"
                )),
                cancel: sql("DELETE FROM {p}deadlines \
                     WHERE aggregate_type = $1 AND aggregate_id = $2 AND name = $3 AND key = $4"),
                consume: sql("DELETE FROM {p}deadlines \
                     WHERE aggregate_type = $1 AND aggregate_id = $2 AND name = $3 AND key = $4 \
                     AND deadline_id = $5"),
            },
            queue: Mutex::new(Queue::default()),
        }
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
    async fn write_group(&self, mut group: Vec<Pending>) {
        if group.len() == 1 && !group[0].deadlines.is_empty() {
            let pending = group.remove(0);
            let outcome = self.write_decision(&pending).await;
            return pending.report(outcome);
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
        // A lone batch takes the simpler function. In either, the unique
        // index refuses a reused event id (for a group, the whole group,
        // whose batches are then written alone).
        let statement = if group.len() == 1 {
            self.append.clone()
        } else {
            self.append_group.clone()
        };
        let rows = append_query(statement, &group)
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

    /// Writes a batch that carries deadline changes, alone, in a
    /// transaction of its own: the append function checks and inserts its
    /// events, then its deadline writes follow, and a fire whose deadline is
    /// no longer pending rolls it all back.
    async fn write_decision(&self, pending: &Pending) -> Result<Vec<Envelope>, StoreError> {
        let refused = |error| pending.refused(&self.refused(error));
        let mut transaction = self.pool.begin().await.map_err(refused)?;
        let row = append_query(self.append.clone(), std::slice::from_ref(pending))
            .fetch_one(&mut *transaction)
            .await
            .map_err(refused)?;
        let appended = pending.outcome_of(&row)?;
        let (aggregate_type, aggregate_id) = (&*pending.aggregate_type, &*pending.aggregate_id);
        for (write, metadata) in &pending.deadlines {
            let (name, key) = (write.name(), write.key());
            let query = match write {
                DeadlineWrite::Schedule(deadline) => sqlx::query(self.deadlines.schedule.clone())
                    .bind(aggregate_type)
                    .bind(aggregate_id)
                    .bind(name)
                    .bind(key)
                    .bind(deadline.deadline_id)
                    .bind(deadline.due_at)
                    .bind(deadline.version as i32)
                    .bind(deadline.payload.as_str())
                    .bind(metadata.as_str())
                    .bind(i64::from(stream_hash(aggregate_type, aggregate_id))),
                DeadlineWrite::Cancel { .. } => sqlx::query(self.deadlines.cancel.clone())
                    .bind(aggregate_type)
                    .bind(aggregate_id)
                    .bind(name)
                    .bind(key),
                DeadlineWrite::Consume { deadline_id, .. } => {
                    sqlx::query(self.deadlines.consume.clone())
                        .bind(aggregate_type)
                        .bind(aggregate_id)
                        .bind(name)
                        .bind(key)
                        .bind(*deadline_id)
                }
            };
            let done = query.execute(&mut *transaction).await.map_err(refused)?;
            if matches!(write, DeadlineWrite::Consume { .. }) && done.rows_affected() == 0 {
                return Err(gone(aggregate_type, aggregate_id, name, key));
            }
        }
        match transaction.commit().await {
            Ok(()) => Ok(appended),
            Err(error) if outcome_unknown(&error) => {
                Err(pending.outcome_unknown(database_error(error)))
            }
            Err(error) => Err(StoreError::Database(database_error(error))),
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
fn append_query(statement: SqlStr, group: &[Pending]) -> Query<'_, Postgres, PgArguments> {
    let mut types = Vec::with_capacity(group.len());
    let mut ids = Vec::with_capacity(group.len());
    let mut expected = Vec::with_capacity(group.len());
    let mut counts = Vec::with_capacity(group.len());
    let (mut event_ids, mut names, mut versions, mut metadata, mut payloads) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut command_ids = Vec::new();
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

/// Group commit: appends waiting to be written together, and the task that
/// writes them.
#[derive(Debug)]
pub(super) struct GroupCommit {
    pool: PgPool,
    /// A lone batch's statement, and a group's.
    append: SqlStr,
    append_group: SqlStr,
    /// The unique constraints a refused insert may name.
    event_id_key: String,
    position_key: String,
    deadlines: DeadlineStatements,
    queue: Mutex<Queue>,
}

/// The deadline writes a decision's transaction makes.
#[derive(Debug)]
struct DeadlineStatements {
    schedule: SqlStr,
    cancel: SqlStr,
    consume: SqlStr,
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
            // A batch with deadline changes is written alone.
            let alone = !pending.deadlines.is_empty();
            events += pending.events.len();
            if (events > EVENTS_PER_GROUP || alone) && !group.is_empty() {
                break;
            }
            group.extend(self.pending.pop_front());
            if alone {
                break;
            }
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
        let outcome: String = row.try_get(3).db()?;
        match outcome.as_str() {
            "appended" => {
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
