//! Queries over a projection's views by declared fields, the same on every
//! backend: filters by equality and `IN` on a prefix of an index, a range
//! and an order on the next field, pages that seek past a cursor and never
//! repeat a view nor skip one, whatever is inserted meanwhile; and the
//! queries no index serves, refused before any read.

mod support;

use std::collections::BTreeSet;

use chrono::{DateTime, TimeDelta, Utc};
use cqrs_core::prelude::*;
use cqrs_core::view::{Cursor, MAX_LIMIT, Page, QueryError};
use serde::{Deserialize, Serialize};
use support::backends::Backend;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Place {
    pub customer: String,
    pub placed_at: DateTime<Utc>,
    pub total: u64,
}
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ship;

#[derive(Debug, Clone, Command)]
pub enum OrderCommand {
    Place(Place),
    Ship(Ship),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Placed {
    pub customer: String,
    pub placed_at: DateTime<Utc>,
    pub total: u64,
}
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Shipped;

#[derive(Debug, Clone, PartialEq, Event)]
pub enum OrderEvent {
    #[event(name = "query_test.placed")]
    Placed(Placed),
    #[event(name = "query_test.shipped")]
    Shipped(Shipped),
}

#[derive(Debug, thiserror::Error)]
#[error("never")]
pub struct Never;

#[derive(Debug, Default, Aggregate)]
#[aggregate(name = "query_test.order", command = OrderCommand, event = OrderEvent, error = Never)]
pub struct Order;

#[aggregate_impl]
impl Order {
    #[command_handler(create)]
    fn place(&self, command: Place) -> Result<Placed, Never> {
        Ok(Placed {
            customer: command.customer,
            placed_at: command.placed_at,
            total: command.total,
        })
    }

    #[command_handler]
    fn ship(&self, _: Ship) -> Result<Shipped, Never> {
        Ok(Shipped)
    }

    #[apply]
    fn placed(&mut self, _: &Placed) {}

    #[apply]
    fn shipped(&mut self, _: &Shipped) {}
}

/// One row per order, queried by customer, status and time.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, Indexed)]
#[indexes((customer, placed_at), (customer, status, placed_at), placed_at, total)]
pub struct OrderRow {
    pub customer: String,
    pub status: String,
    pub placed_at: DateTime<Utc>,
    pub total: u64,
    /// Not declared: no query filters by it.
    pub note: Option<String>,
}

#[projection(name = "query_test.orders", segments = 2)]
impl OrderRow {
    #[event_handler]
    async fn placed(event: &Placed, envelope: &Envelope, views: &mut Views<'_, Self>) {
        let row = OrderRow {
            customer: event.customer.clone(),
            status: "placed".to_owned(),
            placed_at: event.placed_at,
            total: event.total,
            note: None,
        };
        views.insert(envelope.aggregate_id.clone(), row);
    }

    #[event_handler]
    async fn shipped(
        _: &Shipped,
        envelope: &Envelope,
        views: &mut Views<'_, Self>,
    ) -> Result<(), ViewError> {
        if let Some(row) = views.get_mut(&envelope.aggregate_id).await? {
            row.status = "shipped".to_owned();
        }
        Ok(())
    }
}

fn start() -> DateTime<Utc> {
    "2026-01-01T00:00:00Z".parse().unwrap()
}

fn app<S: EventStore + Clone>(backend: &Backend<S>) -> Cqrs {
    Cqrs::builder(backend.store.clone())
        .without_event_handlers()
        .processors(|registration| registration.name == "query_test.orders")
        .views(backend.views.clone())
        .build()
        .unwrap()
}

/// Order `n`: customer `c-(n % 5)`, placed at one of 40 minutes (so many
/// share a time), a total of `n % 97`, every third one shipped.
fn order(n: usize) -> (String, Place, bool) {
    let place = Place {
        customer: format!("c-{}", n % 5),
        placed_at: start() + TimeDelta::minutes((n % 40) as i64),
        total: (n % 97) as u64,
    };
    (format!("o-{n:04}"), place, n.is_multiple_of(3))
}

async fn fill(app: &Cqrs, orders: impl IntoIterator<Item = usize>) {
    for n in orders {
        let (id, place, shipped) = order(n);
        app.execute(&id, place).await.unwrap();
        if shipped {
            app.execute(&id, Ship).await.unwrap();
        }
    }
    app.processors().catch_up().await.unwrap();
}

/// Every page of a query, following its cursors.
async fn every_page<F>(query: F) -> Vec<(String, OrderRow)>
where
    F: AsyncFn(Option<&Cursor>) -> Result<Page<OrderRow>, QueryError>,
{
    let mut all = Vec::new();
    let mut cursor = None;
    loop {
        let page = query(cursor.as_ref()).await.unwrap();
        all.extend(page.items);
        match page.next {
            Some(next) => cursor = Some(next),
            None => return all,
        }
    }
}

/// What a query must return, computed from every view in Rust.
fn expected(
    views: &[(String, OrderRow)],
    keep: impl Fn(&OrderRow) -> bool,
    key: impl Fn(&OrderRow) -> DateTime<Utc>,
    descending: bool,
) -> Vec<String> {
    let mut kept: Vec<(DateTime<Utc>, String)> = views
        .iter()
        .filter(|(_, row)| keep(row))
        .map(|(id, row)| (key(row), id.clone()))
        .collect();
    kept.sort();
    if descending {
        kept.reverse();
    }
    kept.into_iter().map(|(_, id)| id).collect()
}

fn ids(rows: &[(String, OrderRow)]) -> Vec<String> {
    rows.iter().map(|(id, _)| id.clone()).collect()
}

async fn filters_orders_and_pages_like_a_sort_in_rust<S: EventStore + Clone>(backend: Backend<S>) {
    let app = app(&backend);
    fill(&app, 0..300).await;
    let views = app.views();
    let all = views.all::<OrderRow>().await.unwrap();
    assert_eq!(all.len(), 300);
    let f = OrderRow::FIELDS;

    // One customer, newest first, pages of 7 (ties on the time by id).
    let pages = every_page(async |cursor| {
        views
            .query::<OrderRow>()
            .filter(f.customer.eq("c-2"))
            .order_by(f.placed_at.desc())
            .limit(7)
            .after(cursor)
            .fetch()
            .await
    })
    .await;
    let want = expected(&all, |row| row.customer == "c-2", |row| row.placed_at, true);
    assert_eq!(ids(&pages), want);
    assert!(pages.iter().all(|(_, row)| row.customer == "c-2"));

    // IN on the status, a range on the time, oldest first.
    let (from, to) = (
        start() + TimeDelta::minutes(5),
        start() + TimeDelta::minutes(30),
    );
    let pages = every_page(async |cursor| {
        views
            .query::<OrderRow>()
            .filter(f.customer.eq("c-1"))
            .filter(f.status.is_in(["placed", "shipped", "lost"]))
            .filter(f.placed_at.between(from, to))
            .limit(4)
            .after(cursor)
            .fetch()
            .await
    })
    .await;
    let want = expected(
        &all,
        |row| row.customer == "c-1" && row.placed_at >= from && row.placed_at < to,
        |row| row.placed_at,
        false,
    );
    assert_eq!(ids(&pages), want);

    // Only the shipped, by the second index.
    let shipped = every_page(async |cursor| {
        views
            .query::<OrderRow>()
            .filter(f.customer.eq("c-3"))
            .filter(f.status.eq("shipped"))
            .order_by(f.placed_at.asc())
            .limit(50)
            .after(cursor)
            .fetch()
            .await
    })
    .await;
    let want = expected(
        &all,
        |row| row.customer == "c-3" && row.status == "shipped",
        |row| row.placed_at,
        false,
    );
    assert_eq!(ids(&shipped), want);
    assert!(!shipped.is_empty());

    // A range on an integer field alone, inclusive bounds.
    let page = views
        .query::<OrderRow>()
        .filter(f.total.since(90u64))
        .filter(f.total.until(92u64))
        .limit(MAX_LIMIT);
    let refused = page.fetch().await;
    assert!(
        matches!(refused, Err(QueryError::FilteredTwice { .. })),
        "{refused:?}"
    );
    let rich = views
        .query::<OrderRow>()
        .filter(f.total.since(90u64))
        .limit(MAX_LIMIT)
        .fetch()
        .await
        .unwrap();
    let want: BTreeSet<String> = all
        .iter()
        .filter(|(_, row)| row.total >= 90)
        .map(|(id, _)| id.clone())
        .collect();
    assert_eq!(ids(&rich.items).into_iter().collect::<BTreeSet<_>>(), want);
    let totals: Vec<u64> = rich.items.iter().map(|(_, row)| row.total).collect();
    assert!(
        totals.is_sorted(),
        "ordered by the ranged field: {totals:?}"
    );

    // An empty IN, a limit of 0, and no match: empty pages, no cursor.
    for page in [
        views
            .query::<OrderRow>()
            .filter(f.customer.is_in(Vec::<String>::new()))
            .fetch()
            .await,
        views
            .query::<OrderRow>()
            .filter(f.customer.eq("c-1"))
            .limit(0)
            .fetch()
            .await,
        views
            .query::<OrderRow>()
            .filter(f.customer.eq("nobody"))
            .fetch()
            .await,
    ] {
        let page = page.unwrap();
        assert!(page.items.is_empty() && page.next.is_none());
    }
}

async fn queries_no_index_serves_are_refused_before_any_read<S: EventStore + Clone>(
    backend: Backend<S>,
) {
    let app = app(&backend);
    fill(&app, 0..10).await;
    let views = app.views();
    let f = OrderRow::FIELDS;
    // No index starts with the status.
    let refused = views
        .query::<OrderRow>()
        .filter(f.status.eq("placed"))
        .fetch()
        .await;
    let Err(QueryError::NotIndexed { fix, .. }) = &refused else {
        panic!("{refused:?}");
    };
    assert!(fix.contains("(status)"), "{fix}");
    // An order by a field the filters' index does not continue with.
    let refused = views
        .query::<OrderRow>()
        .filter(f.customer.eq("c-1"))
        .order_by(f.total.asc())
        .fetch()
        .await;
    assert!(
        matches!(refused, Err(QueryError::NotIndexed { .. })),
        "{refused:?}"
    );
    // A range and an order on different fields.
    let refused = views
        .query::<OrderRow>()
        .filter(f.total.since(3u64))
        .order_by(f.placed_at.asc())
        .fetch()
        .await;
    assert!(
        matches!(refused, Err(QueryError::NotIndexed { .. })),
        "{refused:?}"
    );
    let refused = views
        .query::<OrderRow>()
        .filter(f.customer.eq("c-1"))
        .limit(MAX_LIMIT + 1)
        .fetch()
        .await;
    assert!(matches!(refused, Err(QueryError::Limit(_))), "{refused:?}");
    let refused = views
        .query::<OrderRow>()
        .filter(f.customer.is_in((0..65).map(|n| format!("c-{n}"))))
        .fetch()
        .await;
    assert!(
        matches!(refused, Err(QueryError::TooManyValues { count: 65, .. })),
        "{refused:?}"
    );

    // A cursor belongs to its query's shape, and reads back from its text.
    let page = views
        .query::<OrderRow>()
        .filter(f.customer.eq("c-1"))
        .order_by(f.placed_at.desc())
        .limit(1)
        .fetch()
        .await
        .unwrap();
    let cursor = page.next.unwrap();
    let text = cursor.to_string();
    assert!(text.bytes().all(|byte| byte.is_ascii_hexdigit()), "{text}");
    assert_eq!(text.parse::<Cursor>().unwrap(), cursor);
    let other = views
        .query::<OrderRow>()
        .filter(f.customer.eq("c-1"))
        .order_by(f.placed_at.asc())
        .after(Some(&cursor))
        .fetch()
        .await;
    assert!(
        matches!(other, Err(QueryError::CursorMismatch)),
        "{other:?}"
    );
    for bad in ["", "zz", "7b7d", &text[..text.len() - 2]] {
        assert!(bad.parse::<Cursor>().is_err(), "{bad:?}");
    }
}

/// Paging while a writer inserts: every view there at the start and not
/// changed meanwhile comes once, none twice, and those inserted after the
/// cursor come too.
async fn pages_never_repeat_or_skip_under_inserts<S: EventStore + Clone>(backend: Backend<S>) {
    let app = app(&backend);
    fill(&app, (0..400).filter(|n| n % 5 == 4)).await;
    let views = app.views();
    let f = OrderRow::FIELDS;
    let before: BTreeSet<String> = views
        .all::<OrderRow>()
        .await
        .unwrap()
        .into_iter()
        .filter(|(_, row)| row.customer == "c-4" && row.status == "placed")
        .map(|(id, _)| id)
        .collect();
    let mut seen: Vec<String> = Vec::new();
    let mut cursor: Option<Cursor> = None;
    let mut more = (400..800).filter(|n| n % 5 == 4);
    loop {
        let page = views
            .query::<OrderRow>()
            .filter(f.customer.eq("c-4"))
            .filter(f.status.eq("placed"))
            .order_by(f.placed_at.asc())
            .limit(3)
            .after(cursor.as_ref())
            .fetch()
            .await
            .unwrap();
        seen.extend(page.items.into_iter().map(|(id, _)| id));
        // Views sorting before and after the cursor, between pages.
        let batch: Vec<usize> = more.by_ref().take(4).collect();
        if !batch.is_empty() {
            fill(&app, batch).await;
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let unique: BTreeSet<String> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "no view twice: {seen:?}");
    assert!(
        before.is_subset(&unique),
        "none of those there at the start skipped"
    );
}

on_every_backend!(
    filters_orders_and_pages_like_a_sort_in_rust,
    queries_no_index_serves_are_refused_before_any_read,
    pages_never_repeat_or_skip_under_inserts,
);

#[test]
fn values_no_index_keeps_are_refused_and_zero_is_one_key() {
    use cqrs_core::view::IndexKey;
    assert!(f64::NAN.key().is_err());
    assert!(f64::INFINITY.key().is_err());
    assert!(u64::MAX.key().is_err());
    assert!("nul\0".to_owned().key().is_err());
    assert_eq!((-0.0f64).key().unwrap(), 0.0f64.key().unwrap());
    assert_eq!(
        (i64::MAX as u64).key().unwrap(),
        cqrs_core::view::KeyValue::Int(i64::MAX)
    );
}

/// The plan of the query a page runs, as the database reports it: the
/// statement the views backend renders (filters on a prefix of an index,
/// ordered by its next field, the version as a literal).
fn page_query(views: &str, projection: &str, postgres: bool) -> String {
    let (customer, placed_at, view_id) = if postgres {
        (
            "((keys->>'customer') COLLATE \"C\")",
            "((keys->>'placed_at')::BIGINT)",
            "(view_id COLLATE \"C\")",
        )
    } else {
        (
            "json_extract(keys, '$.customer')",
            "json_extract(keys, '$.placed_at')",
            "view_id",
        )
    };
    format!(
        "SELECT view_id FROM {views} WHERE projection = '{projection}' AND keys IS NOT NULL \
         AND {customer} IN ('c-1') ORDER BY {placed_at} DESC, {view_id} DESC LIMIT 7"
    )
}

/// Each declared index is made when the projection starts, once however
/// often it starts, and the database answers a page from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_declared_indexes_are_made_and_serve_the_pages_on_sqlite() {
    let file = support::TempFile::new("indexes");
    let store = cqrs_core::SqliteStore::open(file.path()).await.unwrap();
    let backend = support::backends::Backend::of(store.clone(), store.views());
    let app = app(&backend);
    fill(&app, 0..50).await;
    let second = self::app(&backend);
    second.processors().catch_up().await.unwrap();
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", file.path().display()))
        .await
        .unwrap();
    let indexes: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND name LIKE 'cqrs_vx_%'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(indexes.len(), 4, "one per declared index: {indexes:?}");
    let plan: Vec<(i64, i64, i64, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "EXPLAIN QUERY PLAN {}",
        page_query("cqrs_views", "query_test.orders", false)
    )))
    .fetch_all(&pool)
    .await
    .unwrap();
    let detail: Vec<&str> = plan.iter().map(|row| row.3.as_str()).collect();
    assert!(
        detail
            .iter()
            .any(|step| step.contains("USING INDEX cqrs_vx_")),
        "{detail:?}"
    );
    assert!(
        !detail.iter().any(|step| step.contains("TEMP B-TREE")),
        "no sort: {detail:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_declared_indexes_are_made_and_serve_the_pages_on_postgres() {
    let Some((url, store, prefix)) = support::require("CQRS_POSTGRES_URL", |url| async move {
        let prefix = support::unique_prefix("idx");
        let store = support::postgres_store(&url, &prefix, 4).await;
        (url, store, prefix)
    })
    .await
    else {
        return;
    };
    let backend = support::backends::Backend::of(store.clone(), store.views());
    let app = app(&backend);
    fill(&app, 0..50).await;
    self::app(&backend).processors().catch_up().await.unwrap();
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let indexes: Vec<String> =
        sqlx::query_scalar("SELECT indexname FROM pg_indexes WHERE indexname LIKE $1")
            .bind(format!("{}vx_%", prefix.as_str()))
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(indexes.len(), 4, "one per declared index: {indexes:?}");
    let mut connection = pool.acquire().await.unwrap();
    sqlx::query("SET enable_seqscan = off")
        .execute(&mut *connection)
        .await
        .unwrap();
    let plan: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "EXPLAIN {}",
        page_query(
            &format!("{}views", prefix.as_str()),
            "query_test.orders",
            true
        )
    )))
    .fetch_all(&mut *connection)
    .await
    .unwrap();
    let text = plan.join("\n");
    assert!(text.contains(&format!("{}vx_", prefix.as_str())), "{text}");
    assert!(!text.contains("Sort"), "the index gives the order: {text}");
}

/// A version whose views were written before its type declared indexes
/// (or keyed by other fields) would answer queries without them: it does
/// not start, and says to declare a new version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_with_views_written_without_its_keys_does_not_start() {
    for keys in ["NULL", r#"'{"customer":"c-1"}'"#] {
        let file = support::TempFile::new("unindexed");
        let store = cqrs_core::SqliteStore::open(file.path()).await.unwrap();
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", file.path().display()))
            .await
            .unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO cqrs_views (projection, view_id, state, revision, keys) \
             VALUES ('query_test.orders', 'old', '{{}}', 1, {keys})"
        )))
        .execute(&pool)
        .await
        .unwrap();
        let backend = support::backends::Backend::of(store.clone(), store.views());
        let failure = app(&backend).processors().catch_up().await.unwrap_err();
        let text = failure.to_string();
        assert!(
            text.contains("cannot be queried") && text.contains("new version"),
            "{text}"
        );
    }
}
