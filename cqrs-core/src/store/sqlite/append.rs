//! Appends to a SQLite store: the version check and the insert in one
//! `BEGIN IMMEDIATE` transaction, retried on another connection when one
//! opened read-only meets SQLITE_READONLY.

use chrono::{DateTime, Utc};
use sqlx::{QueryBuilder, Sqlite};

use super::SqliteStore;
use super::transaction::{WriteTransaction, read_only};
use crate::envelope::{Envelope, NewEvent};
use crate::store::sql::{DriverResult, database_error, following, stored};
use crate::store::{Conflict, RowLocation, StoreError, check_batch, command_id, now, rejected};

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
        check_batch(aggregate_type, aggregate_id, &events)?;
        let expected = stored(expected_version).ok_or_else(|| {
            rejected(
                aggregate_type,
                aggregate_id,
                format!("expected version {expected_version} is beyond any stream's"),
            )
        })?;
        let mut metadata = Vec::with_capacity(events.len());
        for event in &events {
            metadata.push(serde_json::to_string(&event.metadata).map_err(|error| {
                rejected(
                    aggregate_type,
                    aggregate_id,
                    format!("metadata does not serialize: {error}"),
                )
            })?);
        }
        // A connection the pool opened while the file could not be written
        // refuses every write: the append is tried again on another one, as
        // many times as the pool may hold connections.
        let mut attempts = self.pool.options().get_max_connections() + 1;
        let (transaction, head) = loop {
            // Takes the database's write lock now, not at the first write, so
            // the version read below is still true at commit.
            let mut transaction = WriteTransaction::begin(&self.pool, &self.file).await?;
            let inserted = self
                .insert(
                    &mut transaction,
                    aggregate_type,
                    aggregate_id,
                    expected,
                    &events,
                    &metadata,
                )
                .await;
            match inserted {
                Ok(head) => break (transaction, head),
                // A batch the store refused leaves a healthy connection.
                Err(
                    error @ (StoreError::Conflict(_)
                    | StoreError::DuplicateCommand { .. }
                    | StoreError::Rejected { .. }),
                ) => {
                    transaction.rollback().await;
                    return Err(error);
                }
                // Dropping the transaction closes its connection.
                Err(error) if attempts > 1 && read_only(&error) => attempts -= 1,
                Err(error) => return Err(error),
            }
        };
        let recorded_at = head.recorded_at;
        if let Err(failed) = transaction.commit().await {
            let error = database_error(failed.error);
            return Err(if failed.outcome_unknown {
                StoreError::OutcomeUnknown {
                    aggregate_type: aggregate_type.to_owned(),
                    aggregate_id: aggregate_id.to_owned(),
                    source: error,
                }
            } else {
                StoreError::Database(error)
            });
        }

        Ok(events
            .into_iter()
            .zip(1u64..)
            .map(|(event, offset)| Envelope {
                event_id: event.event_id,
                aggregate_type: aggregate_type.to_owned(),
                aggregate_id: aggregate_id.to_owned(),
                sequence: expected_version + offset,
                position: head.position + offset,
                event_name: event.event_name.to_owned(),
                event_version: event.event_version,
                recorded_at,
                metadata: event.metadata,
                payload: event.payload,
            })
            .collect())
    }

    /// Checks the stream's version and inserts the batch after the log's
    /// last position, inside `transaction`.
    async fn insert(
        &self,
        transaction: &mut WriteTransaction,
        aggregate_type: &str,
        aggregate_id: &str,
        expected: i64,
        events: &[NewEvent],
        metadata: &[String],
    ) -> Result<Head, StoreError> {
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
                    .push_bind(command_id);
            });
            if let Err(error) = insert.build().execute(transaction.connection()).await {
                return Err(self.insert_failed(error, aggregate_type, aggregate_id, head));
            }
        }
        Ok(Head {
            position,
            recorded_at,
        })
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
