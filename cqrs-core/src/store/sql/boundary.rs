//! Event queries as both dialects run them: one statement per query item,
//! on statements of each dialect's own that take the same four parameters
//! (the position after which, the last position, the item's event names
//! as a JSON array or NULL for any, and its tags as a JSON array), and
//! the answers merged in position order.

use crate::boundary::{EventQuery, QueryItem, Tag};
use crate::envelope::Envelope;
use crate::store::StoreError;

use super::{DriverResult, Row, acquire, read, stored};
use crate::store::Matching;

/// The two statements of a dialect: one for an item with tags (found
/// through the tag index), one for an item of names alone.
#[derive(Debug, Clone)]
pub(crate) struct ItemStatements {
    pub(crate) tagged: sqlx::SqlStr,
    pub(crate) named: sqlx::SqlStr,
}

/// The events `query` matches after `after`, and the log's head: the head
/// read first, so every event up to it was committed before the events are
/// read (both dialects commit positions in order, under the log's one
/// write lock).
pub(crate) async fn read_matching<DB>(
    pool: &sqlx::Pool<DB>,
    last_position: sqlx::SqlStr,
    statements: &ItemStatements,
    query: &EventQuery,
    after: u64,
    row: fn(&DB::Row) -> Result<Row, StoreError>,
) -> Result<Matching, StoreError>
where
    DB: sqlx::Database,
    i64: for<'r> sqlx::Decode<'r, DB> + sqlx::Type<DB>,
    (i64,): for<'r> sqlx::FromRow<'r, DB::Row>,
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> Option<String>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    let head = read::last_position(pool, last_position).await?;
    let mut connection = acquire(pool).await.db()?;
    let events = matching::<DB>(&mut connection, statements, query, after, head, row).await?;
    Ok(Matching { events, head })
}

/// The events `query` matches at positions in `(after, upto]`, in
/// position order, on `connection`.
pub(crate) async fn matching<DB>(
    connection: &mut DB::Connection,
    statements: &ItemStatements,
    query: &EventQuery,
    after: u64,
    upto: u64,
    row: fn(&DB::Row) -> Result<Row, StoreError>,
) -> Result<Vec<Envelope>, StoreError>
where
    DB: sqlx::Database,
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> Option<String>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    // Past the largest stored integer nothing is stored.
    let Some(after) = stored(after) else {
        return Ok(Vec::new());
    };
    let upto = stored(upto).unwrap_or(i64::MAX);
    let mut events: Vec<Envelope> = Vec::new();
    for item in query.items() {
        let (names, tags) = parameters(item);
        let statement = if item.tags.is_empty() {
            statements.named.clone()
        } else {
            statements.tagged.clone()
        };
        let rows = sqlx::query::<DB>(statement)
            .bind(after)
            .bind(upto)
            .bind(names)
            .bind(tags)
            .fetch_all(&mut *connection)
            .await
            .db()?;
        for found in &rows {
            events.push(row(found)?.into_envelope()?);
        }
    }
    if query.items().len() > 1 {
        events.sort_by_key(|event| event.position);
        events.dedup_by_key(|event| event.position);
    }
    Ok(events)
}

/// An item's event names (NULL for any) and tags (once each) as JSON arrays.
fn parameters(item: &QueryItem) -> (Option<String>, String) {
    let names = (!item.event_names.is_empty())
        .then(|| serde_json::Value::from(item.event_names.clone()).to_string());
    (
        names,
        serde_json::Value::from(distinct_tags(&item.tags)).to_string(),
    )
}

/// An event's tags once each, sorted: the rows the stores keep of them.
pub(crate) fn distinct_tags(tags: &[Tag]) -> Vec<&str> {
    let mut tags: Vec<&str> = tags.iter().map(Tag::as_str).collect();
    tags.sort_unstable();
    tags.dedup();
    tags
}

/// An event's tags as the PostgreSQL functions take them: a JSON array, or
/// NULL for an event with none.
#[cfg(feature = "postgres")]
pub(crate) fn tags_json(tags: &[Tag]) -> Option<String> {
    (!tags.is_empty()).then(|| serde_json::Value::from(distinct_tags(tags)).to_string())
}
