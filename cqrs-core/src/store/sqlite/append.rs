//! Appends to a SQLite store: the version check and the insert in one
//! `BEGIN IMMEDIATE` transaction (several streams' batches in one, each in
//! a savepoint), retried on another connection when one opened read-only
//! meets SQLITE_READONLY.

use chrono::{DateTime, Utc};
use sqlx::{AssertSqlSafe, QueryBuilder, Sqlite};

use super::transaction::{CommitFailed, WriteTransaction, read_only};
use super::{SqliteStore, row};
use crate::boundary::AppendCondition;
use crate::envelope::{Envelope, NewEvent};
use crate::store::deadline::{check_writes, gone};
use crate::store::sql::boundary::{distinct_tags, matching};
use crate::store::sql::{DriverResult, database_error, following, stored};
use crate::store::{
    Conflict, DeadlineWrite, RowLocation, StoreError, StreamAppend, check_batch, command_id, now,
    rejected, stream_hash,
};

/// SQLite caps bound parameters per statement at 32,766; eleven per event.
const EVENTS_PER_INSERT: usize = 2_900;

impl SqliteStore {
    pub(super) async fn append_batch(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        expected_version: u64,
        events: Vec<NewEvent>,
    ) -> Result<Vec<Envelope>, StoreError> {
        let batch = Batch::new(StreamAppend::new(
            aggregate_type,
            aggregate_id,
            expected_version,
            events,
        ))?;
        // A connection the pool opened while the file could not be written
        // refuses every write: the append is tried again on another one, as
        // many times as the pool may hold connections.
        let mut attempts = self.pool.options().get_max_connections() + 1;
        let (transaction, head) = loop {
            // Takes the database's write lock now, not at the first write, so
            // the version read below is still true at commit.
            let mut transaction = WriteTransaction::begin(&self.pool, &self.file).await?;
            match self.insert(&mut transaction, &batch).await {
                Ok(head) => break (transaction, head),
                // A batch the store refused leaves a healthy connection.
                Err(error) if refused(&error) => {
                    transaction.rollback().await;
                    return Err(error);
                }
                // Dropping the transaction closes its connection.
                Err(error) if attempts > 1 && read_only(&error) => attempts -= 1,
                Err(error) => return Err(error),
            }
        };
        if let Err(failed) = transaction.commit().await {
            return Err(batch.commit_failed(failed));
        }
        Ok(batch.appended(head))
    }

    /// Appends a batch at the end of its stream if nothing the condition's
    /// query matches was recorded after its position: the check, the
    /// stream's version and the insert under the write lock, in one
    /// transaction.
    pub(super) async fn append_conditional(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        events: Vec<NewEvent>,
        condition: &AppendCondition,
    ) -> Result<Vec<Envelope>, StoreError> {
        let mut batch = Batch::new(StreamAppend::new(aggregate_type, aggregate_id, 0, events))?;
        let mut attempts = self.pool.options().get_max_connections() + 1;
        let (transaction, head) = loop {
            let mut transaction = WriteTransaction::begin(&self.pool, &self.file).await?;
            match self
                .insert_if(&mut transaction, &mut batch, condition)
                .await
            {
                Ok(head) => break (transaction, head),
                Err(error) if refused(&error) => {
                    transaction.rollback().await;
                    return Err(error);
                }
                Err(error) if attempts > 1 && read_only(&error) => attempts -= 1,
                Err(error) => return Err(error),
            }
        };
        if let Err(failed) = transaction.commit().await {
            return Err(batch.commit_failed(failed));
        }
        Ok(batch.appended(head))
    }

    /// The condition's check, then the batch inserted at its stream's
    /// version, inside `transaction`.
    async fn insert_if(
        &self,
        transaction: &mut WriteTransaction,
        batch: &mut Batch,
        condition: &AppendCondition,
    ) -> Result<Head, StoreError> {
        let found = matching::<Sqlite>(
            transaction.connection(),
            &self.sql.items,
            &condition.query,
            condition.after,
            u64::MAX,
            row,
        )
        .await?;
        if let Some(event) = found.first() {
            return Err(StoreError::BoundaryChanged {
                after: condition.after,
                position: event.position,
            });
        }
        let (actual, _): (i64, i64) = sqlx::query_as(self.sql.versions.clone())
            .bind(&batch.aggregate_type)
            .bind(&batch.aggregate_id)
            .fetch_one(transaction.connection())
            .await
            .db()?;
        batch.expected = actual;
        batch.expected_version = u64::try_from(actual).map_err(|_| {
            StoreError::corrupt(
                RowLocation::in_stream(&batch.aggregate_type, &batch.aggregate_id, None),
                format!("the stream's last sequence is {actual}"),
            )
        })?;
        self.insert(transaction, batch).await
    }

    /// Appends several batches in one write transaction, each inside a
    /// savepoint so a refused one leaves the others; see
    /// [`EventStore::append_streams`](crate::EventStore::append_streams).
    pub(super) async fn append_batches(
        &self,
        appends: Vec<StreamAppend>,
    ) -> Vec<Result<Vec<Envelope>, StoreError>> {
        let mut outcomes: Vec<Result<Vec<Envelope>, StoreError>> = Vec::new();
        let mut batches = Vec::new();
        for append in appends {
            match Batch::new(append) {
                Ok(batch) => {
                    batches.push((outcomes.len(), batch));
                    outcomes.push(Ok(Vec::new()));
                }
                Err(error) => outcomes.push(Err(error)),
            }
        }
        if batches.is_empty() {
            return outcomes;
        }
        let mut attempts = self.pool.options().get_max_connections() + 1;
        let (transaction, heads) = loop {
            let mut transaction = match WriteTransaction::begin(&self.pool, &self.file).await {
                Ok(transaction) => transaction,
                Err(error) => {
                    for (index, _) in &batches {
                        outcomes[*index] = Err(error.clone());
                    }
                    return outcomes;
                }
            };
            match self.insert_each(&mut transaction, &batches).await {
                Ok(heads) => break (transaction, heads),
                Err(error) if attempts > 1 && read_only(&error) => attempts -= 1,
                Err(error) => {
                    for (index, _) in &batches {
                        outcomes[*index] = Err(error.clone());
                    }
                    return outcomes;
                }
            }
        };
        if let Err(failed) = transaction.commit().await {
            let outcome_unknown = failed.outcome_unknown;
            let error = database_error(failed.error);
            for ((index, batch), head) in batches.iter().zip(&heads) {
                outcomes[*index] = Err(match head {
                    Ok(_) if outcome_unknown => StoreError::OutcomeUnknown {
                        aggregate_type: batch.aggregate_type.clone(),
                        aggregate_id: batch.aggregate_id.clone(),
                        source: error.clone(),
                    },
                    Ok(_) => StoreError::Database(error.clone()),
                    Err(refusal) => refusal.clone(),
                });
            }
            return outcomes;
        }
        for ((index, batch), head) in batches.into_iter().zip(heads) {
            outcomes[index] = head.map(|head| batch.appended(head));
        }
        outcomes
    }

    /// Inserts each batch inside a savepoint: a refused batch is rolled
    /// back to it, and is its outcome; any other error ends them all.
    async fn insert_each(
        &self,
        transaction: &mut WriteTransaction,
        batches: &[(usize, Batch)],
    ) -> Result<Vec<Result<Head, StoreError>>, StoreError> {
        let mut heads = Vec::with_capacity(batches.len());
        for (_, batch) in batches {
            sqlx::raw_sql("SAVEPOINT cqrs_batch")
                .execute(transaction.connection())
                .await
                .db()?;
            let inserted = self.insert(transaction, batch).await;
            let end = match &inserted {
                Err(error) if refused(error) => "ROLLBACK TO cqrs_batch; RELEASE cqrs_batch",
                Err(error) => return Err(error.clone()),
                Ok(_) => "RELEASE cqrs_batch",
            };
            sqlx::raw_sql(AssertSqlSafe(end))
                .execute(transaction.connection())
                .await
                .db()?;
            heads.push(inserted);
        }
        Ok(heads)
    }

    /// Checks the stream's version and inserts the batch after the log's
    /// last position, inside `transaction`.
    async fn insert(
        &self,
        transaction: &mut WriteTransaction,
        batch: &Batch,
    ) -> Result<Head, StoreError> {
        let (aggregate_type, aggregate_id) = (&*batch.aggregate_type, &*batch.aggregate_id);
        let (expected, events, metadata) = (batch.expected, &batch.events, &batch.metadata);
        let (actual, head): (i64, i64) = sqlx::query_as(self.sql.versions.clone())
            .bind(aggregate_type)
            .bind(aggregate_id)
            .fetch_one(transaction.connection())
            .await
            .db()?;
        let command_id = command_id(events);
        if let Some(command_id) = command_id {
            let recorded: bool = sqlx::query_scalar(self.sql.has_command.clone())
                .bind(aggregate_type)
                .bind(aggregate_id)
                .bind(command_id)
                .fetch_one(transaction.connection())
                .await
                .db()?;
            if recorded {
                return Err(StoreError::DuplicateCommand {
                    aggregate_type: aggregate_type.to_owned(),
                    aggregate_id: aggregate_id.to_owned(),
                    command_id,
                });
            }
        }
        let (Ok(version), Ok(position)) = (u64::try_from(actual), u64::try_from(head)) else {
            return Err(StoreError::corrupt(
                RowLocation::in_stream(aggregate_type, aggregate_id, None),
                format!(
                    "the stream's last sequence ({actual}) or the log's last position ({head}) is negative"
                ),
            ));
        };
        if actual != expected {
            return Err(Conflict {
                aggregate_type: aggregate_type.to_owned(),
                aggregate_id: aggregate_id.to_owned(),
                expected: expected as u64,
                actual: version,
            }
            .into());
        }
        // Positions and sequences are SQLite integers: a log or stream that
        // ends near their largest value was written by hand.
        if following(head, events.len()).is_none() {
            return Err(StoreError::corrupt(
                RowLocation::at_position(position),
                format!(
                    "the log's last position leaves no room for {} more events",
                    events.len()
                ),
            ));
        }
        if following(expected, events.len()).is_none() {
            return Err(StoreError::corrupt(
                RowLocation::in_stream(aggregate_type, aggregate_id, Some(version)),
                format!(
                    "the stream's last sequence leaves no room for {} more events",
                    events.len()
                ),
            ));
        }
        self.write_deadlines(transaction, batch).await?;
        let recorded_at = now();
        let micros = recorded_at.timestamp_micros();
        let rows: Vec<(i64, &NewEvent, &str)> = events
            .iter()
            .zip(metadata)
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
                    .push_bind(event.metadata.command_id);
            });
            if let Err(error) = insert.build().execute(transaction.connection()).await {
                return Err(self.insert_failed(error, aggregate_type, aggregate_id, head));
            }
        }
        let tags: Vec<(i64, &str)> = events
            .iter()
            .zip(head + 1..)
            .flat_map(|(event, position)| {
                distinct_tags(&event.tags)
                    .into_iter()
                    .map(move |tag| (position, tag))
            })
            .collect();
        for chunk in tags.chunks(EVENTS_PER_INSERT) {
            let mut insert = QueryBuilder::<Sqlite>::new(self.sql.insert_tags_prefix.clone());
            insert.push_values(chunk, |mut values, &(position, tag)| {
                values.push_bind(tag).push_bind(position);
            });
            insert
                .build()
                .execute(transaction.connection())
                .await
                .db()?;
        }
        Ok(Head {
            position,
            recorded_at,
        })
    }

    /// Writes the batch's deadline changes, in order; a fire whose
    /// deadline is no longer pending refuses the batch.
    async fn write_deadlines(
        &self,
        transaction: &mut WriteTransaction,
        batch: &Batch,
    ) -> Result<(), StoreError> {
        let owner = (&*batch.aggregate_type, &*batch.aggregate_id);
        for (write, metadata) in &batch.deadlines {
            let changed = self
                .write_deadline(transaction, owner, write, metadata)
                .await?;
            if write.is_consume() && changed == 0 {
                return Err(gone(owner.0, owner.1, write.name(), write.key()));
            }
        }
        Ok(())
    }

    /// Writes one deadline change of `owner` (aggregate type and id), a
    /// schedule with its metadata as JSON; the rows it changed.
    pub(super) async fn write_deadline(
        &self,
        transaction: &mut WriteTransaction,
        (aggregate_type, aggregate_id): (&str, &str),
        write: &DeadlineWrite,
        metadata: &str,
    ) -> Result<u64, StoreError> {
        let (name, key) = (write.name(), write.key());
        let query = match write {
            DeadlineWrite::Schedule(deadline) => sqlx::query(self.sql.schedule_deadline.clone())
                .bind(aggregate_type)
                .bind(aggregate_id)
                .bind(name)
                .bind(key)
                .bind(deadline.deadline_id)
                .bind(deadline.due_at.timestamp_micros())
                .bind(i64::from(deadline.version))
                .bind(deadline.payload.as_str())
                .bind(metadata)
                .bind(i64::from(stream_hash(aggregate_type, aggregate_id))),
            DeadlineWrite::Cancel { .. } => sqlx::query(self.sql.cancel_deadline.clone())
                .bind(aggregate_type)
                .bind(aggregate_id)
                .bind(name)
                .bind(key),
            DeadlineWrite::Consume { deadline_id, .. } => {
                sqlx::query(self.sql.consume_deadline.clone())
                    .bind(aggregate_type)
                    .bind(aggregate_id)
                    .bind(name)
                    .bind(key)
                    .bind(*deadline_id)
            }
        };
        let done = query.execute(transaction.connection()).await.db()?;
        Ok(done.rows_affected())
    }

    /// What a failed insert means, by the constraint it broke.
    fn insert_failed(
        &self,
        error: sqlx::Error,
        aggregate_type: &str,
        aggregate_id: &str,
        head: i64,
    ) -> StoreError {
        let sqlx::Error::Database(database) = &error else {
            return database_error(error).into();
        };
        let message = database.message();
        let code = database.code().and_then(|code| code.parse::<i32>().ok());
        if database.is_unique_violation() {
            let table = self.prefix.expand("{p}events.");
            let columns = message.split(": ").nth(1).unwrap_or_default();
            return if columns == format!("{table}event_id") {
                rejected(
                    aggregate_type,
                    aggregate_id,
                    "an event id of the batch is already used".to_owned(),
                )
            } else if columns == format!("{table}position") {
                StoreError::corrupt(
                    RowLocation::at_position(head as u64),
                    "a position after the log's last one is already used",
                )
            } else {
                StoreError::corrupt(
                    RowLocation::in_stream(aggregate_type, aggregate_id, None),
                    format!("a sequence after the stream's last one is already used ({message})"),
                )
            };
        }
        if code == Some(18) {
            // SQLITE_TOOBIG
            return rejected(
                aggregate_type,
                aggregate_id,
                format!("the batch is larger than SQLite stores: {message}"),
            );
        }
        database_error(error).into()
    }
}

/// Where an append landed: the log's position before it, and its time.
struct Head {
    position: u64,
    recorded_at: DateTime<Utc>,
}

/// Whether the store refused a batch on its own account, leaving the
/// transaction and its connection healthy.
fn refused(error: &StoreError) -> bool {
    matches!(
        error,
        StoreError::Conflict(_)
            | StoreError::BoundaryChanged { .. }
            | StoreError::DuplicateCommand { .. }
            | StoreError::Rejected { .. }
            | StoreError::DeadlineGone { .. }
    )
}

/// A batch checked and encoded for the events table.
struct Batch {
    aggregate_type: String,
    aggregate_id: String,
    expected_version: u64,
    /// The expected version as SQLite's integer.
    expected: i64,
    events: Vec<NewEvent>,
    /// Each event's metadata as JSON.
    metadata: Vec<String>,
    /// The deadline writes, each with a schedule's metadata as JSON.
    deadlines: Vec<(DeadlineWrite, String)>,
}

impl Batch {
    fn new(append: StreamAppend) -> Result<Self, StoreError> {
        let StreamAppend {
            aggregate_type,
            aggregate_id,
            expected_version,
            events,
            deadlines,
        } = append;
        check_batch(&aggregate_type, &aggregate_id, &events)?;
        check_writes(&aggregate_type, &aggregate_id, &deadlines)?;
        let expected = stored(expected_version).ok_or_else(|| {
            rejected(
                &aggregate_type,
                &aggregate_id,
                format!("expected version {expected_version} is beyond any stream's"),
            )
        })?;
        let mut metadata = Vec::with_capacity(events.len());
        for event in &events {
            metadata.push(serde_json::to_string(&event.metadata).map_err(|error| {
                rejected(
                    &aggregate_type,
                    &aggregate_id,
                    format!("metadata does not serialize: {error}"),
                )
            })?);
        }
        let deadlines = deadlines
            .into_iter()
            .map(|write| {
                let metadata = match &write {
                    DeadlineWrite::Schedule(deadline) => serde_json::to_string(&deadline.metadata)
                        .map_err(|error| {
                            rejected(
                                &aggregate_type,
                                &aggregate_id,
                                format!("deadline metadata does not serialize: {error}"),
                            )
                        })?,
                    _ => String::new(),
                };
                Ok((write, metadata))
            })
            .collect::<Result<_, StoreError>>()?;
        Ok(Self {
            aggregate_type,
            aggregate_id,
            expected_version,
            expected,
            events,
            metadata,
            deadlines,
        })
    }

    /// What a failed commit of the batch means.
    fn commit_failed(&self, failed: CommitFailed) -> StoreError {
        let error = database_error(failed.error);
        if failed.outcome_unknown {
            StoreError::OutcomeUnknown {
                aggregate_type: self.aggregate_type.clone(),
                aggregate_id: self.aggregate_id.clone(),
                source: error,
            }
        } else {
            StoreError::Database(error)
        }
    }

    /// The committed envelopes of the batch, landed after `head`.
    fn appended(self, head: Head) -> Vec<Envelope> {
        self.events
            .into_iter()
            .zip(1u64..)
            .map(|(event, offset)| Envelope {
                event_id: event.event_id,
                aggregate_type: self.aggregate_type.clone(),
                aggregate_id: self.aggregate_id.clone(),
                sequence: self.expected_version + offset,
                position: head.position + offset,
                event_name: event.event_name.to_owned(),
                event_version: event.event_version,
                recorded_at: head.recorded_at,
                metadata: event.metadata,
                payload: event.payload,
            })
            .collect()
    }
}
