//! [`sql_view_backend!`]: the one [`ViewBackend`] implementation both SQL
//! dialects instantiate on the statements of `views.rs`, and [`SqlBatch`],
//! the batch it opens.
//!
//! [`ViewBackend`]: crate::view::ViewBackend

use super::views::ViewStatements;
use crate::view::Claim;

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
                        $crate::view::resegment_from(processor, &stored, segments, resegment)?
                    else {
                        return Ok(());
                    };
                    let token = stored
                        .iter()
                        .map(|segment| segment.token)
                        .max()
                        .unwrap_or(0);
                    let mut write = self.begin_write().await?;
                    // Replacing segments, not creating them: two instances
                    // creating the same processor's at once both insert
                    // (each row once), and neither deletes a row the
                    // other has meanwhile claimed.
                    if !stored.is_empty() {
                        sqlx::query(self.sql.delete_segments.clone())
                            .bind(processor)
                            .execute(write.connection())
                            .await
                            .db()?;
                    }
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

            fn processors(&self) -> $crate::future::BoxFuture<'_, Result<Vec<String>, ViewError>> {
                Box::pin(async move {
                    let mut names: Vec<String> = sqlx::query_scalar(self.sql.processors.clone())
                        .fetch_all(&mut *self.connection().await?)
                        .await
                        .db()?;
                    // By bytes, as the memory backend, whatever the collation.
                    names.sort();
                    Ok(names)
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
                        Box::new($crate::store::sql::view_backend::SqlBatch {
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
                    if event.state != $crate::view::ParkState::Parked {
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
            for $crate::store::sql::view_backend::SqlBatch<$write, $writes>
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
