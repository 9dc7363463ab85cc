//! The one views backend both SQL dialects share: [`ViewBackend`] for any
//! [`ViewDialect`], which each driver implements (its pool and
//! connections, its write transaction, how it writes a batch's views), as
//! sqlx's `Migrate` serves both drivers; and [`SqlBatch`], the batch it
//! opens, for [`ViewTransaction`]. The statements are `views.rs`'s, one
//! text for both dialects.

use sqlx::pool::PoolConnection;

use sqlx::AssertSqlSafe;

use super::query::{self, Bind};
use super::tables::TableSql;
use super::views::{ParkedRow, SegmentRow, ViewStatements};
use super::{Dialect, DriverResult, TablePrefix, checkpoint_of, stored_position};
use crate::future::BoxFuture;
use crate::view::{
    Claim, Connection, Decision, Index, ParkedEvent, Plan, QueriedView, SegmentState, Settled,
    SqlPool, StoredView, TableSchema, ViewBackend, ViewChange, ViewError, ViewTransaction,
    check_keyed,
};

/// What a SQL driver gives the views backend.
pub(crate) trait ViewDialect: Send + Sync + 'static {
    type Database: sqlx::Database;
    /// A write transaction: `BEGIN` on a connection of its own, rolled
    /// back unless committed.
    type Write: WriteConnection<Self::Database>;
    /// The statements that write a batch's views, which each batch owns.
    type Writes: Clone + Send + Sync + 'static;

    fn pool(&self) -> &sqlx::Pool<Self::Database>;

    fn statements(&self) -> &ViewStatements;

    fn writes(&self) -> &Self::Writes;

    /// A connection for a read or a single write.
    fn connection(&self) -> BoxFuture<'_, Result<PoolConnection<Self::Database>, ViewError>>;

    fn begin_write(&self) -> BoxFuture<'_, Result<Self::Write, ViewError>>;

    /// Stores a batch's changed views, each checked against the revision
    /// the batch read ([`ViewError::Conflict`] if another segment wrote it).
    fn write_views<'a>(
        write: &'a mut Self::Write,
        writes: &'a Self::Writes,
        processor: &'a str,
        changes: Vec<ViewChange>,
    ) -> BoxFuture<'a, Result<(), ViewError>>;

    /// How many rows a statement changed.
    fn rows_affected(result: &<Self::Database as sqlx::Database>::QueryResult) -> u64;

    /// Which SQL it speaks.
    const DIALECT: Dialect;

    /// Its tables' prefix, for the SQL a query renders.
    fn prefix(&self) -> &TablePrefix;

    /// The serving versions its queries last read.
    fn serving_versions(&self) -> &ServingVersions;

    /// Its pool, as users query tables through it.
    fn read_pool(&self) -> SqlPool;
}

/// An open write transaction of a driver.
pub(crate) trait WriteConnection<DB: sqlx::Database>: Send + 'static {
    fn connection(&mut self) -> &mut DB::Connection;

    /// The connection, as a table projection's handlers take it.
    fn tables(&mut self) -> Connection<'_>;

    fn commit(self) -> BoxFuture<'static, Result<(), ViewError>>;
}

/// One batch of a segment on a SQL backend: its open write transaction and
/// the statements it runs, owned, as its commit outlives the backend's borrow.
pub(crate) struct SqlBatch<D: ViewDialect> {
    write: D::Write,
    sql: ViewStatements,
    /// The dialect's statements that write views.
    writes: D::Writes,
    processor: String,
    claim: Claim,
    checkpoint: u64,
}

impl<D> ViewBackend for D
where
    D: ViewDialect,
    for<'q> <D::Database as sqlx::Database>::Arguments: sqlx::IntoArguments<D::Database>,
    for<'c> &'c mut <D::Database as sqlx::Database>::Connection:
        sqlx::Executor<'c, Database = D::Database>,
    for<'q> &'q str: sqlx::Encode<'q, D::Database> + sqlx::Type<D::Database>,
    for<'q> String:
        sqlx::Encode<'q, D::Database> + sqlx::Decode<'q, D::Database> + sqlx::Type<D::Database>,
    for<'q> i64:
        sqlx::Encode<'q, D::Database> + sqlx::Decode<'q, D::Database> + sqlx::Type<D::Database>,
    (i64,): for<'r> sqlx::FromRow<'r, <D::Database as sqlx::Database>::Row>,
    (String,): for<'r> sqlx::FromRow<'r, <D::Database as sqlx::Database>::Row>,
    for<'q> Option<String>: sqlx::Encode<'q, D::Database>,
    for<'q> Option<i64>: sqlx::Encode<'q, D::Database>,
    (String, i64): for<'r> sqlx::FromRow<'r, <D::Database as sqlx::Database>::Row>,
    (String, String): for<'r> sqlx::FromRow<'r, <D::Database as sqlx::Database>::Row>,
    (i64, i64): for<'r> sqlx::FromRow<'r, <D::Database as sqlx::Database>::Row>,
    SegmentRow: for<'r> sqlx::FromRow<'r, <D::Database as sqlx::Database>::Row>,
    ParkedRow: for<'r> sqlx::FromRow<'r, <D::Database as sqlx::Database>::Row>,
    for<'q> f64: sqlx::Encode<'q, D::Database> + sqlx::Type<D::Database>,
    for<'q> bool: sqlx::Encode<'q, D::Database> + sqlx::Type<D::Database>,
{
    fn prepare<'a>(
        &'a self,
        processor: &'a str,
        segments: u32,
        resegment: bool,
    ) -> crate::future::BoxFuture<'a, Result<(), ViewError>> {
        Box::pin(async move {
            let stored = self.segments(processor).await?;
            let Some(position) =
                crate::view::resegment_from(processor, &stored, segments, resegment)?
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
                sqlx::query(self.statements().delete_segments.clone())
                    .bind(processor)
                    .execute(write.connection())
                    .await
                    .db()?;
            }
            for segment in 0..segments.max(1) {
                sqlx::query(self.statements().insert_segment.clone())
                    .bind(processor)
                    .bind(i64::from(segment))
                    .bind(i64::from(segments.max(1)))
                    .bind(stored_position(processor, position)?)
                    .bind(stored_position(processor, token)?)
                    .execute(write.connection())
                    .await
                    .db()?;
            }
            write.commit().await
        })
    }

    fn segments<'a>(
        &'a self,
        processor: &'a str,
    ) -> crate::future::BoxFuture<'a, Result<Vec<SegmentState>, ViewError>> {
        Box::pin(async move {
            let rows: Vec<SegmentRow> = sqlx::query_as(self.statements().segments.clone())
                .bind(processor)
                .fetch_all(&mut *self.connection().await?)
                .await
                .db()?;
            rows.into_iter()
                .map(|row| crate::store::sql::views::segment_state(processor, row))
                .collect()
        })
    }

    fn processors(&self) -> crate::future::BoxFuture<'_, Result<Vec<String>, ViewError>> {
        Box::pin(async move {
            let mut names: Vec<String> = sqlx::query_scalar(self.statements().processors.clone())
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
    ) -> crate::future::BoxFuture<'a, Result<Vec<String>, ViewError>> {
        use crate::store::sql::views::{lease_until, now_millis};
        Box::pin(async move {
            let mut connection = self.connection().await?;
            sqlx::query(self.statements().heartbeat.clone())
                .bind(processor)
                .bind(node)
                .bind(lease_until(lease))
                .execute(&mut *connection)
                .await
                .db()?;
            let now = now_millis();
            // Nodes gone for ten leases are forgotten.
            let gone = crate::store::sql::views::millis(lease * 10);
            sqlx::query(self.statements().forget_nodes.clone())
                .bind(processor)
                .bind(now.saturating_sub(gone))
                .execute(&mut *connection)
                .await
                .db()?;
            Ok(sqlx::query_scalar(self.statements().live_nodes.clone())
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
    ) -> crate::future::BoxFuture<'a, Result<Option<Claim>, ViewError>> {
        use crate::store::sql::views::{lease_until, now_millis};
        Box::pin(async move {
            let token: Option<i64> = sqlx::query_scalar(self.statements().claim.clone())
                .bind(processor)
                .bind(i64::from(segment))
                .bind(node)
                .bind(lease_until(lease))
                .bind(now_millis())
                .fetch_optional(&mut *self.connection().await?)
                .await
                .db()?;
            token
                .map(|token| crate::store::sql::views::claim_of(processor, segment, token))
                .transpose()
        })
    }

    fn renew<'a>(
        &'a self,
        processor: &'a str,
        node: &'a str,
        lease: std::time::Duration,
    ) -> crate::future::BoxFuture<'a, Result<Vec<Claim>, ViewError>> {
        Box::pin(async move {
            let rows: Vec<(i64, i64)> = sqlx::query_as(self.statements().renew.clone())
                .bind(processor)
                .bind(node)
                .bind(crate::store::sql::views::lease_until(lease))
                .fetch_all(&mut *self.connection().await?)
                .await
                .db()?;
            rows.into_iter()
                .map(|(segment, token)| {
                    let segment = u32::try_from(segment).map_err(|_| {
                        crate::store::sql::views::corrupt(
                            processor,
                            format!("segment {segment} is out of range"),
                        )
                    })?;
                    crate::store::sql::views::claim_of(processor, segment, token)
                })
                .collect()
        })
    }

    fn release<'a>(
        &'a self,
        processor: &'a str,
        claim: Claim,
    ) -> crate::future::BoxFuture<'a, Result<(), ViewError>> {
        Box::pin(async move {
            sqlx::query(self.statements().release.clone())
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
    ) -> crate::future::BoxFuture<'a, Result<(), ViewError>> {
        Box::pin(async move {
            let mut connection = self.connection().await?;
            for statement in [&self.statements().leave, &self.statements().leave_node] {
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
    ) -> crate::future::BoxFuture<'a, Result<u64, ViewError>> {
        Box::pin(async move {
            let position: Option<i64> = sqlx::query_scalar(self.statements().checkpoint.clone())
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
    ) -> crate::future::BoxFuture<'a, Result<Option<StoredView>, ViewError>> {
        Box::pin(async move {
            let row: Option<(String, i64)> = sqlx::query_as(self.statements().load.clone())
                .bind(processor)
                .bind(view_id)
                .fetch_optional(&mut *self.connection().await?)
                .await
                .db()?;
            row.map(|(state, revision)| {
                Ok(StoredView {
                    state,
                    revision: u64::try_from(revision).map_err(|_| {
                        crate::store::sql::views::corrupt(
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
    ) -> crate::future::BoxFuture<'a, Result<Box<dyn crate::view::ViewTransaction + 'a>, ViewError>>
    {
        Box::pin(async move {
            let mut write = self.begin_write().await?;
            let position: Option<i64> = sqlx::query_scalar(self.statements().fence.clone())
                .bind(processor)
                .bind(i64::from(claim.segment))
                .bind(stored_position(processor, claim.token)?)
                .fetch_optional(write.connection())
                .await
                .db()?;
            let Some(position) = position else {
                return Err(ViewError::fenced(processor, claim.segment));
            };
            let batch: Box<dyn crate::view::ViewTransaction + 'a> = Box::new(SqlBatch::<D> {
                write,
                sql: self.statements().clone(),
                writes: self.writes().clone(),
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
    ) -> crate::future::BoxFuture<'a, Result<bool, ViewError>> {
        Box::pin(async move {
            let mut connection = self.connection().await?;
            let (segment, token) = (
                i64::from(claim.segment),
                stored_position(processor, claim.token)?,
            );
            let moved = sqlx::query(self.statements().advance.clone())
                .bind(processor)
                .bind(segment)
                .bind(token)
                .bind(stored_position(processor, from)?)
                .bind(stored_position(processor, to)?)
                .execute(&mut *connection)
                .await
                .db()?;
            let moved = D::rows_affected(&moved);
            if moved == 1 {
                return Ok(true);
            }
            // Not moved: by another claim, or from elsewhere.
            let current: Option<i64> = sqlx::query_scalar(self.statements().token.clone())
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
    ) -> crate::future::BoxFuture<'a, Result<(), ViewError>> {
        Box::pin(async move {
            let mut write = self.begin_write().await?;
            sqlx::query(self.statements().reset.clone())
                .bind(processor)
                .bind(stored_position(processor, position)?)
                .execute(write.connection())
                .await
                .db()?;
            if clear {
                for statement in [
                    &self.statements().clear_views,
                    &self.statements().clear_parked,
                ] {
                    sqlx::query(statement.clone())
                        .bind(processor)
                        .execute(write.connection())
                        .await
                        .db()?;
                }
                TableSql::new(write.connection(), D::DIALECT, self.prefix())
                    .clear(processor)
                    .await?;
            }
            write.commit().await
        })
    }

    fn parked<'a>(
        &'a self,
        processor: &'a str,
    ) -> crate::future::BoxFuture<'a, Result<Vec<ParkedEvent>, ViewError>> {
        Box::pin(async move {
            let rows: Vec<ParkedRow> = sqlx::query_as(self.statements().parked.clone())
                .bind(processor)
                .fetch_all(&mut *self.connection().await?)
                .await
                .db()?;
            rows.into_iter()
                .map(crate::store::sql::views::parked_event)
                .collect()
        })
    }

    fn decide<'a>(
        &'a self,
        processor: &'a str,
        position: u64,
        decision: Decision,
    ) -> crate::future::BoxFuture<'a, Result<bool, ViewError>> {
        Box::pin(async move {
            let stored = stored_position(processor, position)?;
            let mut write = self.begin_write().await?;
            let row: Option<ParkedRow> = sqlx::query_as(self.statements().parked_one.clone())
                .bind(processor)
                .bind(stored)
                .fetch_optional(write.connection())
                .await
                .db()?;
            let Some(event) = row
                .map(crate::store::sql::views::parked_event)
                .transpose()?
            else {
                return Ok(false);
            };
            if event.state != crate::view::ParkState::Parked {
                return Ok(false);
            }
            let now = crate::store::sql::views::now_millis();
            if decision == Decision::Skip {
                sqlx::query(self.statements().skip.clone())
                    .bind(processor)
                    .bind(stored)
                    .bind(now)
                    .execute(write.connection())
                    .await
                    .db()?;
            }
            sqlx::query(self.statements().retry_stream.clone())
                .bind(processor)
                .bind(&event.aggregate_type)
                .bind(&event.aggregate_id)
                .bind(now)
                .execute(write.connection())
                .await
                .db()?;
            write.commit().await?;
            Ok(true)
        })
    }

    fn serving<'a>(
        &'a self,
        projection: &'a str,
    ) -> crate::future::BoxFuture<'a, Result<Option<String>, ViewError>> {
        Box::pin(async move {
            Ok(sqlx::query_scalar(self.statements().serving.clone())
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
    ) -> crate::future::BoxFuture<'a, Result<bool, ViewError>> {
        Box::pin(async move {
            let mut write = self.begin_write().await?;
            let switched = match from {
                None => {
                    sqlx::query(self.statements().adopt.clone())
                        .bind(projection)
                        .bind(to)
                        .execute(write.connection())
                        .await
                }
                Some(from) => {
                    sqlx::query(self.statements().switch.clone())
                        .bind(projection)
                        .bind(from)
                        .bind(to)
                        .execute(write.connection())
                        .await
                }
            };
            if D::rows_affected(&switched.db()?) != 1 {
                return Ok(false);
            }
            // A table projection's serving names read the new version's
            // tables from the same commit on.
            TableSql::new(write.connection(), D::DIALECT, self.prefix())
                .repoint(from, to)
                .await?;
            write.commit().await?;
            Ok(true)
        })
    }

    fn retire<'a>(
        &'a self,
        processor: &'a str,
    ) -> crate::future::BoxFuture<'a, Result<(), ViewError>> {
        Box::pin(async move {
            let mut write = self.begin_write().await?;
            let sql = self.statements();
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
            TableSql::new(write.connection(), D::DIALECT, self.prefix())
                .drop_tables(processor)
                .await?;
            write.commit().await
        })
    }

    fn sql_pool(&self) -> Option<SqlPool> {
        Some(self.read_pool())
    }

    fn follow_log<'a>(&'a self, log_id: &'a str) -> BoxFuture<'a, Result<(), ViewError>> {
        Box::pin(async move {
            let mut connection = self.connection().await?;
            sqlx::query(self.statements().follow_log.clone())
                .bind(log_id)
                .execute(&mut *connection)
                .await
                .db()?;
            let (recorded,): (String,) = sqlx::query_as(self.statements().followed_log.clone())
                .fetch_one(&mut *connection)
                .await
                .db()?;
            if recorded == log_id {
                Ok(())
            } else {
                Err(ViewError::OtherLog {
                    recorded,
                    log: log_id.to_owned(),
                })
            }
        })
    }

    fn ensure_tables<'a>(
        &'a self,
        key: &'a str,
        schema: TableSchema,
    ) -> BoxFuture<'a, Result<(), ViewError>> {
        Box::pin(async move {
            let mut write = self.begin_write().await?;
            TableSql::new(write.connection(), D::DIALECT, self.prefix())
                .migrate(key, &schema)
                .await?;
            write.commit().await
        })
    }

    fn received<'a>(
        &'a self,
        consumer: &'a str,
        messages: &'a [uuid::Uuid],
    ) -> crate::future::BoxFuture<'a, Result<Vec<uuid::Uuid>, ViewError>> {
        Box::pin(async move {
            if messages.is_empty() {
                return Ok(Vec::new());
            }
            let rows: Vec<(String,)> = sqlx::query_as(self.statements().received.clone())
                .bind(consumer)
                .bind(crate::store::sql::views::id_list(messages))
                .fetch_all(&mut *self.connection().await?)
                .await
                .db()?;
            rows.into_iter()
                .map(|(id,)| {
                    uuid::Uuid::parse_str(&id).map_err(|_| {
                        crate::store::sql::views::corrupt(
                            consumer,
                            format!("inbox message id `{id}` is not a UUID"),
                        )
                    })
                })
                .collect()
        })
    }

    fn view<'a>(
        &'a self,
        projection: &'a str,
        view_id: &'a str,
    ) -> crate::future::BoxFuture<'a, Result<Option<String>, ViewError>> {
        Box::pin(crate::store::sql::read::view(
            self.pool(),
            self.statements().view.clone(),
            projection,
            view_id,
        ))
    }

    fn views<'a>(
        &'a self,
        projection: &'a str,
    ) -> crate::future::BoxFuture<'a, Result<Vec<(String, String)>, ViewError>> {
        Box::pin(crate::store::sql::read::views(
            self.pool(),
            self.statements().views.clone(),
            projection,
        ))
    }

    fn ensure_indexes<'a>(
        &'a self,
        key: &'a str,
        indexes: &'static [Index],
    ) -> BoxFuture<'a, Result<(), ViewError>> {
        Box::pin(async move {
            // One view's keys as JSON text, `null` for a view without.
            let sample: Option<(String,)> = sqlx::query_as(self.statements().sample_keys.clone())
                .bind(key)
                .fetch_optional(&mut *self.connection().await?)
                .await
                .db()?;
            let sample = sample.map(|(keys,)| Some(keys).filter(|keys| keys != "null"));
            check_keyed(key, indexes, sample)?;
            for statement in query::index_statements(indexes, key, self.prefix(), D::DIALECT) {
                sqlx::raw_sql(AssertSqlSafe(statement))
                    .execute(&mut *self.connection().await?)
                    .await
                    .db()?;
            }
            Ok(())
        })
    }

    fn query<'a>(&'a self, plan: &'a Plan) -> BoxFuture<'a, Result<Vec<QueriedView>, ViewError>> {
        Box::pin(async move {
            // The serving version as last read, checked by the statement
            // itself: an empty page may mean it no longer serves (a switch),
            // so the version is read again and, if it changed, the page too.
            let known = self.serving_versions().get(plan.projection);
            let mut key = match known {
                Some(key) => key,
                None => self.serving_now(plan.projection).await?,
            };
            loop {
                let page = self.page(plan, &key).await?;
                if !page.is_empty() {
                    return Ok(page);
                }
                let now = self.serving_now(plan.projection).await?;
                if now == key {
                    return Ok(page);
                }
                key = now;
            }
        })
    }
}

impl<D> PageQuery for D
where
    D: ViewDialect + ViewBackend,
    for<'q> <D::Database as sqlx::Database>::Arguments: sqlx::IntoArguments<D::Database>,
    for<'c> &'c mut <D::Database as sqlx::Database>::Connection:
        sqlx::Executor<'c, Database = D::Database>,
    for<'q> String: sqlx::Encode<'q, D::Database> + sqlx::Type<D::Database>,
    for<'q> i64: sqlx::Encode<'q, D::Database> + sqlx::Type<D::Database>,
    for<'q> f64: sqlx::Encode<'q, D::Database> + sqlx::Type<D::Database>,
    for<'q> bool: sqlx::Encode<'q, D::Database> + sqlx::Type<D::Database>,
    (String, String): for<'r> sqlx::FromRow<'r, <D::Database as sqlx::Database>::Row>,
{
    async fn serving_now(&self, projection: &'static str) -> Result<String, ViewError> {
        let key = ViewBackend::serving(self, projection)
            .await?
            .unwrap_or_else(|| projection.to_owned());
        self.serving_versions().set(projection, &key);
        Ok(key)
    }

    async fn page(&self, plan: &Plan, key: &str) -> Result<Vec<QueriedView>, ViewError> {
        {
            let rendered = query::render(plan, key, self.prefix(), D::DIALECT)?;
            let mut statement =
                sqlx::query_as::<D::Database, (String, String)>(AssertSqlSafe(rendered.sql));
            for bind in rendered.binds {
                statement = match bind {
                    Bind::Text(text) => statement.bind(text),
                    Bind::Int(int) => statement.bind(int),
                    Bind::Float(float) => statement.bind(float),
                    Bind::Bool(flag) => statement.bind(flag),
                };
            }
            let rows = statement
                .fetch_all(&mut *self.connection().await?)
                .await
                .db()?;
            Ok(rows)
        }
    }
}

/// One page of a query from one version's views.
trait PageQuery {
    /// The serving version of `projection`, read now (and remembered).
    async fn serving_now(&self, projection: &'static str) -> Result<String, ViewError>;

    async fn page(&self, plan: &Plan, key: &str) -> Result<Vec<QueriedView>, ViewError>;
}

/// The serving version of each projection as a query last read it.
#[derive(Debug, Clone, Default)]
pub(crate) struct ServingVersions(std::sync::Arc<std::sync::Mutex<Vec<(&'static str, String)>>>);

impl ServingVersions {
    fn get(&self, projection: &str) -> Option<String> {
        let known = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        known
            .iter()
            .find(|(name, _)| *name == projection)
            .map(|(_, key)| key.clone())
    }

    fn set(&self, projection: &'static str, key: &str) {
        let mut known = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        known.retain(|(name, _)| *name != projection);
        known.push((projection, key.to_owned()));
    }
}

impl<D> ViewTransaction for SqlBatch<D>
where
    D: ViewDialect,
    for<'q> <D::Database as sqlx::Database>::Arguments: sqlx::IntoArguments<D::Database>,
    for<'c> &'c mut <D::Database as sqlx::Database>::Connection:
        sqlx::Executor<'c, Database = D::Database>,
    for<'q> &'q str: sqlx::Encode<'q, D::Database> + sqlx::Type<D::Database>,
    for<'q> String:
        sqlx::Encode<'q, D::Database> + sqlx::Decode<'q, D::Database> + sqlx::Type<D::Database>,
    for<'q> i64:
        sqlx::Encode<'q, D::Database> + sqlx::Decode<'q, D::Database> + sqlx::Type<D::Database>,
    (i64,): for<'r> sqlx::FromRow<'r, <D::Database as sqlx::Database>::Row>,
    (String,): for<'r> sqlx::FromRow<'r, <D::Database as sqlx::Database>::Row>,
    for<'q> Option<String>: sqlx::Encode<'q, D::Database>,
    for<'q> Option<i64>: sqlx::Encode<'q, D::Database>,
    (String, i64): for<'r> sqlx::FromRow<'r, <D::Database as sqlx::Database>::Row>,
    (String, String): for<'r> sqlx::FromRow<'r, <D::Database as sqlx::Database>::Row>,
    (i64, i64): for<'r> sqlx::FromRow<'r, <D::Database as sqlx::Database>::Row>,
    SegmentRow: for<'r> sqlx::FromRow<'r, <D::Database as sqlx::Database>::Row>,
    ParkedRow: for<'r> sqlx::FromRow<'r, <D::Database as sqlx::Database>::Row>,
{
    fn checkpoint(&self) -> u64 {
        self.checkpoint
    }

    fn write(
        &mut self,
        changes: Vec<crate::view::ViewChange>,
    ) -> crate::future::BoxFuture<'_, Result<(), ViewError>> {
        Box::pin(D::write_views(
            &mut self.write,
            &self.writes,
            &self.processor,
            changes,
        ))
    }

    fn park(
        &mut self,
        events: Vec<ParkedEvent>,
    ) -> crate::future::BoxFuture<'_, Result<(), ViewError>> {
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
                    .bind(&event.message)
                    .execute(self.write.connection())
                    .await
                    .db()?;
            }
            Ok(())
        })
    }

    fn receive(
        &mut self,
        messages: Vec<uuid::Uuid>,
    ) -> crate::future::BoxFuture<'_, Result<(), ViewError>> {
        Box::pin(async move {
            if messages.is_empty() {
                return Ok(());
            }
            sqlx::query(self.sql.receive.clone())
                .bind(&self.processor)
                .bind(crate::store::sql::views::id_list(&messages))
                .bind(crate::store::sql::views::now_millis())
                .execute(self.write.connection())
                .await
                .db()?;
            Ok(())
        })
    }

    fn settle(
        &mut self,
        position: u64,
        outcome: Settled,
    ) -> crate::future::BoxFuture<'_, Result<(), ViewError>> {
        Box::pin(async move {
            let (statement, error) =
                crate::store::sql::views::settle_statement(&self.sql, &outcome);
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

    fn begin_tables(&mut self) -> BoxFuture<'_, Result<(), ViewError>> {
        Box::pin(async move {
            sqlx::raw_sql("SAVEPOINT cqrs_tables")
                .execute(self.write.connection())
                .await
                .db()?;
            Ok(())
        })
    }

    fn tables(&mut self) -> Option<Connection<'_>> {
        Some(self.write.tables())
    }

    fn end_tables(&mut self) -> BoxFuture<'_, Result<(), ViewError>> {
        Box::pin(async move {
            // Fails if the savepoint is gone: a handler ended the
            // transaction (its rows committed without the checkpoint) or
            // released or rolled back past it.
            let released = sqlx::raw_sql("RELEASE SAVEPOINT cqrs_tables")
                .execute(self.write.connection())
                .await;
            match released.db() {
                Ok(_) => Ok(()),
                Err(error) if error.is_transient() => Err(error.into()),
                Err(error) => Err(crate::store::sql::views::corrupt(
                    &self.processor,
                    format!(
                        "a handler ended its batch's transaction, or released or rolled back \
                         past the batch's savepoint; its writes may have been committed without \
                         the checkpoint ({error})"
                    ),
                )),
            }
        })
    }

    fn commit(
        self: Box<Self>,
        checkpoint: u64,
    ) -> crate::future::BoxFuture<'static, Result<(), ViewError>> {
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
            this.write.commit().await
        })
    }
}
