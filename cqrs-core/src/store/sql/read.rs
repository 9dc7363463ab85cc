//! The reads both dialects run alike, on statements of their own: one
//! stream's events, the log's last position, the events of one command
//! id, and on the read side one view and a projection's views. Only the row decoding differs, and it is passed in.

use uuid::Uuid;

use super::{DriverResult, Row, acquire, dense_stream, is_stream, stored};
use crate::envelope::Envelope;
use crate::store::{RowLocation, StoreError};
use crate::view::ViewError;

/// The events of one stream from `from_sequence` on, checked to be dense,
/// with `statement`, which takes the aggregate type, its id and the first
/// sequence.
pub(crate) async fn load_stream<DB>(
    pool: &sqlx::Pool<DB>,
    statement: sqlx::SqlStr,
    aggregate_type: &str,
    aggregate_id: &str,
    from_sequence: u64,
    row: fn(&DB::Row) -> Result<Row, StoreError>,
) -> Result<Vec<Envelope>, StoreError>
where
    DB: sqlx::Database,
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    let Some(from) = stored(from_sequence).filter(|_| is_stream(aggregate_type, aggregate_id))
    else {
        return Ok(Vec::new());
    };
    // From the start, rows at sequences below 1 are read too, to be
    // reported rather than never seen.
    let from = if from <= 1 { i64::MIN } else { from };
    let rows = sqlx::query::<DB>(statement)
        .bind(aggregate_type)
        .bind(aggregate_id)
        .bind(from)
        .fetch_all(&mut *acquire(pool).await.db()?)
        .await
        .db()?
        .iter()
        .map(row)
        .collect::<Result<Vec<_>, _>>()?;
    dense_stream(aggregate_type, aggregate_id, from_sequence, rows)
}

/// The position of the log's last event, 0 for an empty log.
pub(crate) async fn last_position<DB>(
    pool: &sqlx::Pool<DB>,
    statement: sqlx::SqlStr,
) -> Result<u64, StoreError>
where
    DB: sqlx::Database,
    i64: for<'r> sqlx::Decode<'r, DB> + sqlx::Type<DB>,
    for<'q> <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    (i64,): for<'r> sqlx::FromRow<'r, DB::Row>,
{
    let position: i64 = sqlx::query_scalar::<DB, i64>(statement)
        .fetch_one(&mut *acquire(pool).await.db()?)
        .await
        .db()?;
    u64::try_from(position).map_err(|_| {
        StoreError::corrupt(
            RowLocation::default(),
            format!("the log's last position is {position}"),
        )
    })
}

/// The events of the stream that record `command_id`, in sequence order,
/// with `statement`, which takes the aggregate type, its id and the command
/// id and selects them in any order.
pub(crate) async fn load_command<DB>(
    pool: &sqlx::Pool<DB>,
    statement: sqlx::SqlStr,
    aggregate_type: &str,
    aggregate_id: &str,
    command_id: Uuid,
    row: fn(&DB::Row) -> Result<Row, StoreError>,
) -> Result<Vec<Envelope>, StoreError>
where
    DB: sqlx::Database,
    for<'q> &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> Uuid: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    if !is_stream(aggregate_type, aggregate_id) {
        return Ok(Vec::new());
    }
    let mut events = sqlx::query::<DB>(statement)
        .bind(aggregate_type)
        .bind(aggregate_id)
        .bind(command_id)
        .fetch_all(&mut *acquire(pool).await.db()?)
        .await
        .db()?
        .iter()
        .map(|stored| row(stored)?.into_envelope())
        .collect::<Result<Vec<_>, _>>()?;
    events.sort_unstable_by_key(|event| event.sequence);
    Ok(events)
}

/// One view of `projection` as stored JSON, with `statement`, which takes
/// the projection's name and the view id.
pub(crate) async fn view<DB>(
    pool: &sqlx::Pool<DB>,
    statement: sqlx::SqlStr,
    projection: &str,
    view_id: &str,
) -> Result<Option<String>, ViewError>
where
    DB: sqlx::Database,
    for<'q> &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    (String,): for<'r> sqlx::FromRow<'r, DB::Row>,
{
    Ok(sqlx::query_scalar::<DB, String>(statement)
        .bind(projection)
        .bind(view_id)
        .fetch_optional(&mut *acquire(pool).await.db()?)
        .await
        .db()?)
}

/// Every view of `projection` as (view id, stored JSON), with `statement`,
/// which takes the projection's name.
pub(crate) async fn views<DB>(
    pool: &sqlx::Pool<DB>,
    statement: sqlx::SqlStr,
    projection: &str,
) -> Result<Vec<(String, String)>, ViewError>
where
    DB: sqlx::Database,
    for<'q> &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    (String, String): for<'r> sqlx::FromRow<'r, DB::Row>,
{
    Ok(sqlx::query_as::<DB, (String, String)>(statement)
        .bind(projection)
        .fetch_all(&mut *acquire(pool).await.db()?)
        .await
        .db()?)
}
