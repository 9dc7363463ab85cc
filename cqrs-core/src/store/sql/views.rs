//! The read side of both SQL dialects: its statements, one text for both
//! (PostgreSQL takes `$N` where SQLite takes `?N`), the decoding of their
//! rows, and [`sql_view_backend!`], the one [`ViewBackend`] implementation
//! both dialects instantiate. Times are milliseconds since the Unix epoch
//! from the nodes' clocks, as Axon's token claims are: the nodes' clocks
//! must agree to well within a lease.
//!
//! [`ViewBackend`]: crate::view::ViewBackend

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{AssertSqlSafe, SqlSafeStr, SqlStr};
use uuid::Uuid;

use super::{Dialect, TablePrefix, checkpoint_of};
use crate::processor::{Claim, ParkState, ParkedEvent, SegmentState, Settled};
use crate::view::ViewError;

/// The statements of the views, segments, parked events and versions.
#[derive(Debug, Clone)]
pub(crate) struct ViewStatements {
    pub(crate) insert_segment: SqlStr,
    pub(crate) delete_segments: SqlStr,
    pub(crate) segments: SqlStr,
    pub(crate) heartbeat: SqlStr,
    pub(crate) live_nodes: SqlStr,
    pub(crate) forget_nodes: SqlStr,
    pub(crate) claim: SqlStr,
    pub(crate) renew: SqlStr,
    pub(crate) release: SqlStr,
    pub(crate) leave: SqlStr,
    pub(crate) leave_node: SqlStr,
    pub(crate) checkpoint: SqlStr,
    /// The position under a current claim; PostgreSQL locks the row.
    pub(crate) fence: SqlStr,
    /// The position under a current claim, without a lock.
    pub(crate) token: SqlStr,
    pub(crate) advance: SqlStr,
    pub(crate) save_checkpoint: SqlStr,
    pub(crate) reset: SqlStr,
    pub(crate) clear_views: SqlStr,
    pub(crate) clear_parked: SqlStr,
    pub(crate) parked: SqlStr,
    pub(crate) parked_one: SqlStr,
    pub(crate) retry_stream: SqlStr,
    pub(crate) skip: SqlStr,
    pub(crate) park: SqlStr,
    pub(crate) settle_handled: SqlStr,
    pub(crate) settle_failed: SqlStr,
    pub(crate) settle_waiting: SqlStr,
    pub(crate) serving: SqlStr,
    pub(crate) adopt: SqlStr,
    pub(crate) switch: SqlStr,
    pub(crate) forget_processor: SqlStr,
    pub(crate) load: SqlStr,
    pub(crate) view: SqlStr,
    pub(crate) views: SqlStr,
}

impl ViewStatements {
    pub(crate) fn new(prefix: &TablePrefix, dialect: Dialect) -> Self {
        let sql = |template: &str| {
            let text = prefix.expand(template);
            let text = match dialect {
                Dialect::Sqlite => text
                    .replace("::TEXT", "")
                    .replace("::JSONB", "")
                    .replace(" FOR UPDATE SKIP LOCKED", "")
                    .replace(" FOR UPDATE", ""),
                Dialect::Postgres => text.replace('?', "$"),
            };
            AssertSqlSafe(text).into_sql_str()
        };
        const PARKED_COLUMNS: &str = "processor, segment, position, event_id, aggregate_type, \
             aggregate_id, event_name, error, attempts, parked_at, state, decided_at";
        Self {
            insert_segment: sql(
                "INSERT INTO {p}segments (processor, segment, segments, position, token) \
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (processor, segment) DO NOTHING",
            ),
            delete_segments: sql("DELETE FROM {p}segments WHERE processor = ?1"),
            segments: sql(
                "SELECT s.segment, s.segments, s.position, s.owner, s.token, s.lease_until, \
                 (SELECT COUNT(*) FROM {p}parked_events e WHERE e.processor = s.processor \
                  AND e.segment = s.segment AND e.state IN ('parked', 'retrying')), \
                 (SELECT COUNT(*) FROM {p}parked_events e WHERE e.processor = s.processor \
                  AND e.segment = s.segment AND e.state = 'retrying') \
                 FROM {p}segments s WHERE s.processor = ?1 ORDER BY s.segment",
            ),
            heartbeat: sql(
                "INSERT INTO {p}nodes (processor, node, lease_until) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (processor, node) DO UPDATE SET lease_until = excluded.lease_until",
            ),
            live_nodes: sql(
                "SELECT node FROM {p}nodes WHERE processor = ?1 AND lease_until > ?2 ORDER BY node",
            ),
            forget_nodes: sql("DELETE FROM {p}nodes WHERE processor = ?1 AND lease_until < ?2"),
            // A row a paused batch still locks is passed over, not waited
            // for: the claim is tried again at the next renewal.
            claim: sql(
                "UPDATE {p}segments SET owner = ?3, token = token + 1, lease_until = ?4 \
                 WHERE processor = ?1 AND segment IN (SELECT segment FROM {p}segments \
                 WHERE processor = ?1 AND segment = ?2 AND (owner IS NULL OR lease_until <= ?5) \
                 FOR UPDATE SKIP LOCKED) RETURNING token",
            ),
            renew: sql(
                "UPDATE {p}segments SET lease_until = ?3 WHERE processor = ?1 AND owner = ?2 \
                 RETURNING segment, token",
            ),
            release: sql("UPDATE {p}segments SET owner = NULL, lease_until = 0 \
                 WHERE processor = ?1 AND segment = ?2 AND token = ?3"),
            leave: sql(
                "UPDATE {p}segments SET owner = NULL, lease_until = 0 WHERE processor = ?1 AND owner = ?2",
            ),
            leave_node: sql("DELETE FROM {p}nodes WHERE processor = ?1 AND node = ?2"),
            checkpoint: sql(
                "SELECT position FROM {p}segments WHERE processor = ?1 AND segment = ?2",
            ),
            fence: sql(
                "SELECT position FROM {p}segments WHERE processor = ?1 AND segment = ?2 AND token = ?3 FOR UPDATE",
            ),
            token: sql(
                "SELECT position FROM {p}segments WHERE processor = ?1 AND segment = ?2 AND token = ?3",
            ),
            advance: sql("UPDATE {p}segments SET position = ?5 \
                 WHERE processor = ?1 AND segment = ?2 AND token = ?3 AND position = ?4"),
            save_checkpoint: sql(
                "UPDATE {p}segments SET position = ?4 WHERE processor = ?1 AND segment = ?2 AND token = ?3",
            ),
            reset: sql("UPDATE {p}segments SET position = ?2 WHERE processor = ?1"),
            clear_views: sql("DELETE FROM {p}views WHERE projection = ?1"),
            clear_parked: sql("DELETE FROM {p}parked_events WHERE processor = ?1"),
            parked: sql(&format!(
                "SELECT {PARKED_COLUMNS} FROM {{p}}parked_events WHERE processor = ?1 ORDER BY position"
            )),
            parked_one: sql(&format!(
                "SELECT {PARKED_COLUMNS} FROM {{p}}parked_events WHERE processor = ?1 AND position = ?2"
            )),
            retry_stream: sql(
                "UPDATE {p}parked_events SET state = 'retrying', decided_at = ?4 \
                 WHERE processor = ?1 AND aggregate_type = ?2 AND aggregate_id = ?3 AND state = 'parked'",
            ),
            skip: sql(
                "UPDATE {p}parked_events SET state = 'skipped', decided_at = ?3 \
                 WHERE processor = ?1 AND position = ?2 AND state = 'parked'",
            ),
            park: sql(&format!(
                "INSERT INTO {{p}}parked_events ({PARKED_COLUMNS}) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) \
                 ON CONFLICT (processor, position) DO NOTHING"
            )),
            settle_handled: sql(
                "UPDATE {p}parked_events SET state = 'retried', attempts = attempts + 1 \
                 WHERE processor = ?1 AND position = ?2",
            ),
            settle_failed: sql(
                "UPDATE {p}parked_events SET state = 'parked', error = ?3, attempts = attempts + 1 \
                 WHERE processor = ?1 AND position = ?2",
            ),
            settle_waiting: sql(
                "UPDATE {p}parked_events SET state = 'parked' WHERE processor = ?1 AND position = ?2",
            ),
            forget_processor: sql("DELETE FROM {p}nodes WHERE processor = ?1"),
            serving: sql("SELECT serving FROM {p}projections WHERE name = ?1"),
            adopt: sql(
                "INSERT INTO {p}projections (name, serving) VALUES (?1, ?2) ON CONFLICT (name) DO NOTHING",
            ),
            switch: sql("UPDATE {p}projections SET serving = ?3 WHERE name = ?1 AND serving = ?2"),
            load: sql(
                "SELECT state::TEXT, revision FROM {p}views WHERE projection = ?1 AND view_id = ?2",
            ),
            view: sql("SELECT state::TEXT FROM {p}views WHERE projection = \
                 COALESCE((SELECT serving FROM {p}projections WHERE name = ?1), ?1) AND view_id = ?2"),
            views: sql(
                "SELECT view_id, state::TEXT FROM {p}views WHERE projection = \
                 COALESCE((SELECT serving FROM {p}projections WHERE name = ?1), ?1) ORDER BY view_id",
            ),
        }
    }
}

/// Now, as the segments' and parked events' columns keep it.
pub(crate) fn now_millis() -> i64 {
    Utc::now().timestamp_millis()
}

/// A duration in the columns' milliseconds.
pub(crate) fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// `lease` from now.
pub(crate) fn lease_until(lease: Duration) -> i64 {
    now_millis().saturating_add(millis(lease))
}

/// A segment row: index, count, position, owner, token, lease end, parked,
/// retrying.
pub(crate) type SegmentRow = (i64, i64, i64, Option<String>, i64, i64, i64, i64);

pub(crate) fn segment_state(processor: &str, row: SegmentRow) -> Result<SegmentState, ViewError> {
    let (segment, segments, position, owner, token, lease_until, parked, retrying) = row;
    let number = |value: i64, what: &str| {
        u32::try_from(value)
            .map_err(|_| corrupt(processor, format!("{what} {value} is out of range")))
    };
    let count = |value: i64| u64::try_from(value).unwrap_or(0);
    let mut state = SegmentState {
        segment: number(segment, "segment")?,
        segments: number(segments, "segment count")?,
        position: checkpoint_of(processor, Some(position))?,
        owner,
        token: u64::try_from(token)
            .map_err(|_| corrupt(processor, format!("token {token} is negative")))?,
        expired: lease_until <= now_millis(),
        parked: count(parked),
        retrying: count(retrying),
    };
    if state.owner.is_none() {
        state.expired = true;
    }
    Ok(state)
}

/// A parked event's row, in the order of `ViewStatements::parked`.
pub(crate) type ParkedRow = (
    String,
    i64,
    i64,
    String,
    String,
    String,
    String,
    Option<String>,
    i64,
    i64,
    String,
    Option<i64>,
);

pub(crate) fn parked_event(row: ParkedRow) -> Result<ParkedEvent, ViewError> {
    let (
        processor,
        segment,
        position,
        event_id,
        aggregate_type,
        aggregate_id,
        event_name,
        error,
        attempts,
        parked_at,
        state,
        decided_at,
    ) = row;
    let bad = |reason: String| corrupt(&processor, reason);
    let time = |millis: i64| {
        DateTime::<Utc>::from_timestamp_millis(millis)
            .ok_or_else(|| bad(format!("parked event time {millis} is out of range")))
    };
    Ok(ParkedEvent {
        segment: u32::try_from(segment)
            .map_err(|_| bad(format!("segment {segment} is out of range")))?,
        position: checkpoint_of(&processor, Some(position))?,
        event_id: Uuid::parse_str(&event_id)
            .map_err(|_| bad(format!("event id `{event_id}` is not a UUID")))?,
        aggregate_type,
        aggregate_id,
        event_name,
        error,
        attempts: u32::try_from(attempts).unwrap_or(0),
        parked_at: time(parked_at)?,
        state: ParkState::parse(&state)
            .ok_or_else(|| bad(format!("parked event state `{state}` is unknown")))?,
        decided_at: decided_at.map(time).transpose()?,
        processor,
    })
}

/// The statement that records how a retry came out, and the error it binds.
pub(crate) fn settle_statement(
    sql: &ViewStatements,
    outcome: &Settled,
) -> (SqlStr, Option<String>) {
    match outcome {
        Settled::Handled => (sql.settle_handled.clone(), None),
        Settled::Failed(error) => (sql.settle_failed.clone(), Some(error.clone())),
        Settled::Waiting => (sql.settle_waiting.clone(), None),
    }
}

pub(crate) fn corrupt(processor: &str, reason: String) -> ViewError {
    ViewError::Corrupt {
        processor: processor.to_owned(),
        reason,
    }
}

/// One batch of a segment on a SQL backend: its open write transaction and
/// the statements it runs, owned, as its commit outlives the backend's borrow.
pub(crate) struct SqlBatch<W, S> {
    pub(crate) write: W,
    pub(crate) sql: ViewStatements,
    /// The dialect's statements that write views.
    pub(crate) writes: S,
    pub(crate) processor: String,
    pub(crate) claim: Claim,
    pub(crate) checkpoint: u64,
}

/// Implements `ViewBackend` for `$views` and `ViewTransaction` for its
/// batches, on statements both dialects share.
///
/// sqlx's bounds for a query generic over the database would fill every
/// signature here, so the one implementation is stamped out for each
/// dialect's concrete types instead. `$views` has fields `pool`, `sql`
/// (`ViewStatements`) and `writes` (`$writes`), and methods `connection()`
/// and `begin_write()` (giving a `$write`, with `connection()` and an
/// `async commit()`); `$write_views` stores a batch's changed views.
macro_rules! sql_view_backend {
    ($views:ty, $write:ty, $writes:ty, $write_views:path) => {
        impl $crate::view::ViewBackend for $views {
            fn prepare<'a>(
                &'a self,
                processor: &'a str,
                segments: u32,
                resegment: bool,
            ) -> $crate::future::BoxFuture<'a, Result<(), ViewError>> {
                Box::pin(async move {
                    let stored = self.segments(processor).await?;
                    let Some(position) =
                        $crate::processor::resegment_from(processor, &stored, segments, resegment)?
                    else {
                        return Ok(());
                    };
                    let token = stored
                        .iter()
                        .map(|segment| segment.token)
                        .max()
                        .unwrap_or(0);
                    let mut write = self.begin_write().await?;
                    sqlx::query(self.sql.delete_segments.clone())
                        .bind(processor)
                        .execute(write.connection())
                        .await
                        .db()?;
                    for segment in 0..segments.max(1) {
                        sqlx::query(self.sql.insert_segment.clone())
                            .bind(processor)
                            .bind(i64::from(segment))
                            .bind(i64::from(segments.max(1)))
                            .bind(stored_position(processor, position)?)
                            .bind(stored_position(processor, token)?)
                            .execute(write.connection())
                            .await
                            .db()?;
                    }
                    write.commit().await.map_err(ViewError::from)
                })
            }

            fn segments<'a>(
                &'a self,
                processor: &'a str,
            ) -> $crate::future::BoxFuture<'a, Result<Vec<SegmentState>, ViewError>> {
                Box::pin(async move {
                    let rows: Vec<$crate::store::sql::views::SegmentRow> =
                        sqlx::query_as(self.sql.segments.clone())
                            .bind(processor)
                            .fetch_all(&mut *self.connection().await?)
                            .await
                            .db()?;
                    rows.into_iter()
                        .map(|row| $crate::store::sql::views::segment_state(processor, row))
                        .collect()
                })
            }

            fn heartbeat<'a>(
                &'a self,
                processor: &'a str,
                node: &'a str,
                lease: std::time::Duration,
            ) -> $crate::future::BoxFuture<'a, Result<Vec<String>, ViewError>> {
                use $crate::store::sql::views::{lease_until, now_millis};
                Box::pin(async move {
                    let mut connection = self.connection().await?;
                    sqlx::query(self.sql.heartbeat.clone())
                        .bind(processor)
                        .bind(node)
                        .bind(lease_until(lease))
                        .execute(&mut *connection)
                        .await
                        .db()?;
                    let now = now_millis();
                    // Nodes gone for ten leases are forgotten.
                    let gone = $crate::store::sql::views::millis(lease * 10);
                    sqlx::query(self.sql.forget_nodes.clone())
                        .bind(processor)
                        .bind(now.saturating_sub(gone))
                        .execute(&mut *connection)
                        .await
                        .db()?;
                    Ok(sqlx::query_scalar(self.sql.live_nodes.clone())
                        .bind(processor)
                        .bind(now)
                        .fetch_all(&mut *connection)
                        .await
                        .db()?)
                })
            }

            fn claim<'a>(
                &'a self,
                processor: &'a str,
                segment: u32,
                node: &'a str,
                lease: std::time::Duration,
            ) -> $crate::future::BoxFuture<'a, Result<Option<Claim>, ViewError>> {
                use $crate::store::sql::views::{lease_until, now_millis};
                Box::pin(async move {
                    let token: Option<i64> = sqlx::query_scalar(self.sql.claim.clone())
                        .bind(processor)
                        .bind(i64::from(segment))
                        .bind(node)
                        .bind(lease_until(lease))
                        .bind(now_millis())
                        .fetch_optional(&mut *self.connection().await?)
                        .await
                        .db()?;
                    token
                        .map(|token| $crate::store::sql::views::claim_of(processor, segment, token))
                        .transpose()
                })
            }

            fn renew<'a>(
                &'a self,
                processor: &'a str,
                node: &'a str,
                lease: std::time::Duration,
            ) -> $crate::future::BoxFuture<'a, Result<Vec<Claim>, ViewError>> {
                Box::pin(async move {
                    let rows: Vec<(i64, i64)> = sqlx::query_as(self.sql.renew.clone())
                        .bind(processor)
                        .bind(node)
                        .bind($crate::store::sql::views::lease_until(lease))
                        .fetch_all(&mut *self.connection().await?)
                        .await
                        .db()?;
                    rows.into_iter()
                        .map(|(segment, token)| {
                            let segment = u32::try_from(segment).map_err(|_| {
                                $crate::store::sql::views::corrupt(
                                    processor,
                                    format!("segment {segment} is out of range"),
                                )
                            })?;
                            $crate::store::sql::views::claim_of(processor, segment, token)
                        })
                        .collect()
                })
            }

            fn release<'a>(
                &'a self,
                processor: &'a str,
                claim: Claim,
            ) -> $crate::future::BoxFuture<'a, Result<(), ViewError>> {
                Box::pin(async move {
                    sqlx::query(self.sql.release.clone())
                        .bind(processor)
                        .bind(i64::from(claim.segment))
                        .bind(stored_position(processor, claim.token)?)
                        .execute(&mut *self.connection().await?)
                        .await
                        .db()?;
                    Ok(())
                })
            }

            fn leave<'a>(
                &'a self,
                processor: &'a str,
                node: &'a str,
            ) -> $crate::future::BoxFuture<'a, Result<(), ViewError>> {
                Box::pin(async move {
                    let mut connection = self.connection().await?;
                    for statement in [&self.sql.leave, &self.sql.leave_node] {
                        sqlx::query(statement.clone())
                            .bind(processor)
                            .bind(node)
                            .execute(&mut *connection)
                            .await
                            .db()?;
                    }
                    Ok(())
                })
            }

            fn checkpoint<'a>(
                &'a self,
                processor: &'a str,
                segment: u32,
            ) -> $crate::future::BoxFuture<'a, Result<u64, ViewError>> {
                Box::pin(async move {
                    let position: Option<i64> = sqlx::query_scalar(self.sql.checkpoint.clone())
                        .bind(processor)
                        .bind(i64::from(segment))
                        .fetch_optional(&mut *self.connection().await?)
                        .await
                        .db()?;
                    checkpoint_of(processor, position)
                })
            }

            fn load<'a>(
                &'a self,
                processor: &'a str,
                view_id: &'a str,
            ) -> $crate::future::BoxFuture<'a, Result<Option<StoredView>, ViewError>> {
                Box::pin(async move {
                    let row: Option<(String, i64)> = sqlx::query_as(self.sql.load.clone())
                        .bind(processor)
                        .bind(view_id)
                        .fetch_optional(&mut *self.connection().await?)
                        .await
                        .db()?;
                    row.map(|(state, revision)| {
                        Ok(StoredView {
                            state,
                            revision: u64::try_from(revision).map_err(|_| {
                                $crate::store::sql::views::corrupt(
                                    processor,
                                    format!("view `{view_id}` has revision {revision}"),
                                )
                            })?,
                        })
                    })
                    .transpose()
                })
            }

            fn begin<'a>(
                &'a self,
                processor: &'a str,
                claim: Claim,
            ) -> $crate::future::BoxFuture<
                'a,
                Result<Box<dyn $crate::view::ViewTransaction + 'a>, ViewError>,
            > {
                Box::pin(async move {
                    let mut write = self.begin_write().await?;
                    let position: Option<i64> = sqlx::query_scalar(self.sql.fence.clone())
                        .bind(processor)
                        .bind(i64::from(claim.segment))
                        .bind(stored_position(processor, claim.token)?)
                        .fetch_optional(write.connection())
                        .await
                        .db()?;
                    let Some(position) = position else {
                        return Err(ViewError::fenced(processor, claim.segment));
                    };
                    let batch: Box<dyn $crate::view::ViewTransaction + 'a> =
                        Box::new($crate::store::sql::views::SqlBatch {
                            write,
                            sql: self.sql.clone(),
                            writes: self.writes.clone(),
                            processor: processor.to_owned(),
                            claim,
                            checkpoint: checkpoint_of(processor, Some(position))?,
                        });
                    Ok(batch)
                })
            }

            fn advance<'a>(
                &'a self,
                processor: &'a str,
                claim: Claim,
                from: u64,
                to: u64,
            ) -> $crate::future::BoxFuture<'a, Result<bool, ViewError>> {
                Box::pin(async move {
                    let mut connection = self.connection().await?;
                    let (segment, token) = (
                        i64::from(claim.segment),
                        stored_position(processor, claim.token)?,
                    );
                    let moved = sqlx::query(self.sql.advance.clone())
                        .bind(processor)
                        .bind(segment)
                        .bind(token)
                        .bind(stored_position(processor, from)?)
                        .bind(stored_position(processor, to)?)
                        .execute(&mut *connection)
                        .await
                        .db()?
                        .rows_affected();
                    if moved == 1 {
                        return Ok(true);
                    }
                    // Not moved: by another claim, or from elsewhere.
                    let current: Option<i64> = sqlx::query_scalar(self.sql.token.clone())
                        .bind(processor)
                        .bind(segment)
                        .bind(token)
                        .fetch_optional(&mut *connection)
                        .await
                        .db()?;
                    match current {
                        Some(_) => Ok(false),
                        None => Err(ViewError::fenced(processor, claim.segment)),
                    }
                })
            }

            fn reset<'a>(
                &'a self,
                processor: &'a str,
                position: u64,
                clear: bool,
            ) -> $crate::future::BoxFuture<'a, Result<(), ViewError>> {
                Box::pin(async move {
                    let mut write = self.begin_write().await?;
                    sqlx::query(self.sql.reset.clone())
                        .bind(processor)
                        .bind(stored_position(processor, position)?)
                        .execute(write.connection())
                        .await
                        .db()?;
                    if clear {
                        for statement in [&self.sql.clear_views, &self.sql.clear_parked] {
                            sqlx::query(statement.clone())
                                .bind(processor)
                                .execute(write.connection())
                                .await
                                .db()?;
                        }
                    }
                    write.commit().await.map_err(ViewError::from)
                })
            }

            fn parked<'a>(
                &'a self,
                processor: &'a str,
            ) -> $crate::future::BoxFuture<'a, Result<Vec<ParkedEvent>, ViewError>> {
                Box::pin(async move {
                    let rows: Vec<$crate::store::sql::views::ParkedRow> =
                        sqlx::query_as(self.sql.parked.clone())
                            .bind(processor)
                            .fetch_all(&mut *self.connection().await?)
                            .await
                            .db()?;
                    rows.into_iter()
                        .map($crate::store::sql::views::parked_event)
                        .collect()
                })
            }

            fn decide<'a>(
                &'a self,
                processor: &'a str,
                position: u64,
                decision: Decision,
            ) -> $crate::future::BoxFuture<'a, Result<bool, ViewError>> {
                Box::pin(async move {
                    let stored = stored_position(processor, position)?;
                    let mut write = self.begin_write().await?;
                    let row: Option<$crate::store::sql::views::ParkedRow> =
                        sqlx::query_as(self.sql.parked_one.clone())
                            .bind(processor)
                            .bind(stored)
                            .fetch_optional(write.connection())
                            .await
                            .db()?;
                    let Some(event) = row
                        .map($crate::store::sql::views::parked_event)
                        .transpose()?
                    else {
                        return Ok(false);
                    };
                    if event.state != $crate::processor::ParkState::Parked {
                        return Ok(false);
                    }
                    let now = $crate::store::sql::views::now_millis();
                    if decision == Decision::Skip {
                        sqlx::query(self.sql.skip.clone())
                            .bind(processor)
                            .bind(stored)
                            .bind(now)
                            .execute(write.connection())
                            .await
                            .db()?;
                    }
                    sqlx::query(self.sql.retry_stream.clone())
                        .bind(processor)
                        .bind(&event.aggregate_type)
                        .bind(&event.aggregate_id)
                        .bind(now)
                        .execute(write.connection())
                        .await
                        .db()?;
                    write.commit().await.map_err(ViewError::from)?;
                    Ok(true)
                })
            }

            fn serving<'a>(
                &'a self,
                projection: &'a str,
            ) -> $crate::future::BoxFuture<'a, Result<Option<String>, ViewError>> {
                Box::pin(async move {
                    Ok(sqlx::query_scalar(self.sql.serving.clone())
                        .bind(projection)
                        .fetch_optional(&mut *self.connection().await?)
                        .await
                        .db()?)
                })
            }

            fn switch<'a>(
                &'a self,
                projection: &'a str,
                from: Option<&'a str>,
                to: &'a str,
            ) -> $crate::future::BoxFuture<'a, Result<bool, ViewError>> {
                Box::pin(async move {
                    let mut connection = self.connection().await?;
                    let switched = match from {
                        None => {
                            sqlx::query(self.sql.adopt.clone())
                                .bind(projection)
                                .bind(to)
                                .execute(&mut *connection)
                                .await
                        }
                        Some(from) => {
                            sqlx::query(self.sql.switch.clone())
                                .bind(projection)
                                .bind(from)
                                .bind(to)
                                .execute(&mut *connection)
                                .await
                        }
                    };
                    Ok(switched.db()?.rows_affected() == 1)
                })
            }

            fn retire<'a>(
                &'a self,
                processor: &'a str,
            ) -> $crate::future::BoxFuture<'a, Result<(), ViewError>> {
                Box::pin(async move {
                    let mut write = self.begin_write().await?;
                    let sql = &self.sql;
                    for statement in [
                        &sql.clear_views,
                        &sql.clear_parked,
                        &sql.delete_segments,
                        &sql.forget_processor,
                    ] {
                        sqlx::query(statement.clone())
                            .bind(processor)
                            .execute(write.connection())
                            .await
                            .db()?;
                    }
                    write.commit().await.map_err(ViewError::from)
                })
            }

            fn view<'a>(
                &'a self,
                projection: &'a str,
                view_id: &'a str,
            ) -> $crate::future::BoxFuture<'a, Result<Option<String>, ViewError>> {
                Box::pin($crate::store::sql::read::view(
                    &self.pool,
                    self.sql.view.clone(),
                    projection,
                    view_id,
                ))
            }

            fn views<'a>(
                &'a self,
                projection: &'a str,
            ) -> $crate::future::BoxFuture<'a, Result<Vec<(String, String)>, ViewError>> {
                Box::pin($crate::store::sql::read::views(
                    &self.pool,
                    self.sql.views.clone(),
                    projection,
                ))
            }
        }

        impl $crate::view::ViewTransaction
            for $crate::store::sql::views::SqlBatch<$write, $writes>
        {
            fn checkpoint(&self) -> u64 {
                self.checkpoint
            }

            fn write(
                &mut self,
                changes: Vec<$crate::view::ViewChange>,
            ) -> $crate::future::BoxFuture<'_, Result<(), ViewError>> {
                Box::pin($write_views(
                    &mut self.write,
                    &self.writes,
                    &self.processor,
                    changes,
                ))
            }

            fn park(
                &mut self,
                events: Vec<ParkedEvent>,
            ) -> $crate::future::BoxFuture<'_, Result<(), ViewError>> {
                Box::pin(async move {
                    for event in events {
                        sqlx::query(self.sql.park.clone())
                            .bind(&event.processor)
                            .bind(i64::from(event.segment))
                            .bind(stored_position(&self.processor, event.position)?)
                            .bind(event.event_id.to_string())
                            .bind(&event.aggregate_type)
                            .bind(&event.aggregate_id)
                            .bind(&event.event_name)
                            .bind(&event.error)
                            .bind(i64::from(event.attempts))
                            .bind(event.parked_at.timestamp_millis())
                            .bind(event.state.as_str())
                            .bind(event.decided_at.map(|time| time.timestamp_millis()))
                            .execute(self.write.connection())
                            .await
                            .db()?;
                    }
                    Ok(())
                })
            }

            fn settle(
                &mut self,
                position: u64,
                outcome: Settled,
            ) -> $crate::future::BoxFuture<'_, Result<(), ViewError>> {
                Box::pin(async move {
                    let (statement, error) =
                        $crate::store::sql::views::settle_statement(&self.sql, &outcome);
                    let mut query = sqlx::query(statement)
                        .bind(&self.processor)
                        .bind(stored_position(&self.processor, position)?);
                    if let Some(error) = error {
                        query = query.bind(error);
                    }
                    query.execute(self.write.connection()).await.db()?;
                    Ok(())
                })
            }

            fn commit(
                self: Box<Self>,
                checkpoint: u64,
            ) -> $crate::future::BoxFuture<'static, Result<(), ViewError>> {
                let mut this = *self;
                Box::pin(async move {
                    // The claim is held since `begin` checked its token (the
                    // row is locked, or the file's write lock taken): this
                    // cannot miss.
                    sqlx::query(this.sql.save_checkpoint.clone())
                        .bind(&this.processor)
                        .bind(i64::from(this.claim.segment))
                        .bind(stored_position(&this.processor, this.claim.token)?)
                        .bind(stored_position(&this.processor, checkpoint)?)
                        .execute(this.write.connection())
                        .await
                        .db()?;
                    this.write.commit().await.map_err(ViewError::from)
                })
            }
        }
    };
}

pub(crate) use sql_view_backend;

/// A claim from its stored token.
pub(crate) fn claim_of(processor: &str, segment: u32, token: i64) -> Result<Claim, ViewError> {
    let token = u64::try_from(token)
        .map_err(|_| corrupt(processor, format!("token {token} is negative")))?;
    Ok(Claim { segment, token })
}
