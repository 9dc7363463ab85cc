//! Document queries over 1,000,000 views, on SQLite and PostgreSQL (with
//! `CQRS_POSTGRES_URL`), beside the same query in plain SQL on a table
//! made by hand with the same rows and an index on the same columns.
//!
//! The views are `cqrs_examples::shop::OrderSummary` (indexed by
//! `(customer, placed_at)` and `(customer, status, placed_at)`): 1,000
//! customers of 1,000 orders each, written straight into the views table
//! with their keys (as the projection writes them), then the projection
//! starts, which makes its indexes. Each round asks a random customer's 50
//! newest orders, through `ViewStore::query` (decoded into `OrderSummary`)
//! and through `sqlx` on the hand-made table (decoded the same way),
//! alternating: p50 and p99 of each, and the ratio of the medians. A
//! second pair asks for the second page (with a cursor / `WHERE (placed_at,
//! id) < (..)`).
//!
//! ```text
//! scripts/with-postgres cargo bench -p cqrs-benches --bench read_models
//! ```
//!
//! Results go to stderr and `target/bench-results/read_models.tsv`.
//! Without `--bench` (as `cargo test` runs it) it runs once on tiny data:
//! a smoke test.

use std::io::Write;
use std::time::{Duration, Instant};

use cqrs_benches::{TempDatabase, postgres_url};
use cqrs_core::store::{PostgresOptions, TablePrefix};
use cqrs_core::view::Cursor;
use cqrs_core::{Cqrs, EventStore, Indexed, ViewStore};
use cqrs_examples::shop::OrderSummary;
use sqlx::{AssertSqlSafe, Executor};

/// 2026-01-01T00:00:00Z in microseconds.
const START: i64 = 1_767_225_600_000_000;

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * q) as usize]
}

/// The SQL that fills both tables: `customers` × `each` orders, order `n`
/// of customer `c` placed `n` seconds after the start.
fn fill_sql(views: &str, hand: &str, customers: usize, each: usize, postgres: bool) -> Vec<String> {
    let rows = customers * each;
    let (json, keys) = if postgres {
        (
            "jsonb_build_object('customer', 'c-' || (i % {c}), 'placed_at', \
             to_char(to_timestamp(1767225600 + i / {c}) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), \
             'sku', 'teapot', 'quantity', 1, 'total', 1200, 'stock', 'reserved', 'payment', 'captured', \
             'status', CASE WHEN i % 7 = 0 THEN 'cancelled' ELSE 'confirmed' END, 'reason', NULL)",
            "jsonb_build_object('customer', 'c-' || (i % {c}), 'placed_at', {start} + (i / {c}) * 1000000, \
             'status', CASE WHEN i % 7 = 0 THEN 'cancelled' ELSE 'confirmed' END)",
        )
    } else {
        (
            "json_object('customer', 'c-' || (i % {c}), 'placed_at', \
             strftime('%Y-%m-%dT%H:%M:%SZ', 1767225600 + i / {c}, 'unixepoch'), \
             'sku', 'teapot', 'quantity', 1, 'total', 1200, 'stock', 'reserved', 'payment', 'captured', \
             'status', CASE WHEN i % 7 = 0 THEN 'cancelled' ELSE 'confirmed' END, 'reason', NULL)",
            "json_object('customer', 'c-' || (i % {c}), 'placed_at', {start} + (i / {c}) * 1000000, \
             'status', CASE WHEN i % 7 = 0 THEN 'cancelled' ELSE 'confirmed' END)",
        )
    };
    let json = json.replace("{c}", &customers.to_string());
    let keys = keys
        .replace("{c}", &customers.to_string())
        .replace("{start}", &START.to_string());
    let series = if postgres {
        format!("generate_series(0, {}) AS s(i)", rows - 1)
    } else {
        format!(
            "(WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i < {}) SELECT i FROM s)",
            rows - 1
        )
    };
    let id = "'o-' || i";
    vec![
        format!(
            "INSERT INTO {views} (projection, view_id, state, revision, keys) \
             SELECT 'shop.order_summary', {id}, {json}, 1, {keys} FROM {series}"
        ),
        format!(
            "CREATE TABLE {hand} (id TEXT PRIMARY KEY, customer TEXT NOT NULL, status TEXT NOT NULL, \
             placed_at BIGINT NOT NULL, state TEXT NOT NULL)"
        ),
        format!(
            "INSERT INTO {hand} (id, customer, status, placed_at, state) \
             SELECT {id}, 'c-' || (i % {customers}), \
             CASE WHEN i % 7 = 0 THEN 'cancelled' ELSE 'confirmed' END, \
             {START} + (i / {customers}) * 1000000, {json}{cast} FROM {series}",
            cast = if postgres { "::TEXT" } else { "" }
        ),
        format!("CREATE INDEX {hand}_customer ON {hand} (customer, placed_at, id)"),
        format!("ANALYZE {hand}"),
        format!("ANALYZE {views}"),
    ]
}

/// Rounds of one customer's newest 50, through the views and through the
/// hand-made table, alternating; then the second page of each.
async fn rounds<DB: sqlx::Database>(
    backend: &str,
    views: &ViewStore,
    pool: &sqlx::Pool<DB>,
    hand: &str,
    customers: usize,
    rounds: usize,
) -> Vec<String>
where
    for<'c> &'c sqlx::Pool<DB>: Executor<'c, Database = DB>,
    for<'q> <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
    for<'q> String: sqlx::Encode<'q, DB> + sqlx::Decode<'q, DB> + sqlx::Type<DB>,
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Decode<'q, DB> + sqlx::Type<DB>,
    (String, String, i64): for<'r> sqlx::FromRow<'r, DB::Row>,
{
    let placeholders = if backend == "postgres" {
        ["$1", "$2", "$3"]
    } else {
        ["?1", "?2", "?3"]
    };
    let [customer, placed, id] = placeholders;
    let first_sql = format!(
        "SELECT id, state, placed_at FROM {hand} WHERE customer = {customer} \
         ORDER BY placed_at DESC, id DESC LIMIT 50"
    );
    let next_sql = format!(
        "SELECT id, state, placed_at FROM {hand} WHERE customer = {customer} \
         AND (placed_at < {placed} OR (placed_at = {placed} AND id < {id})) \
         ORDER BY placed_at DESC, id DESC LIMIT 50"
    );
    let f = OrderSummary::FIELDS;
    let mut times: [Vec<Duration>; 4] = Default::default();
    for round in 0..rounds {
        let who = format!("c-{}", (round * 7919) % customers);
        // The framework: a page, then the next.
        let started = Instant::now();
        let page = views
            .query::<OrderSummary>()
            .filter(f.customer.eq(who.clone()))
            .order_by(f.placed_at.desc())
            .limit(50)
            .fetch()
            .await
            .expect("a page");
        times[0].push(started.elapsed());
        let cursor: Option<Cursor> = page.next;
        let next = match &cursor {
            Some(cursor) => {
                let started = Instant::now();
                let next = views
                    .query::<OrderSummary>()
                    .filter(f.customer.eq(who.clone()))
                    .order_by(f.placed_at.desc())
                    .limit(50)
                    .after(Some(cursor))
                    .fetch()
                    .await
                    .expect("the next page");
                times[2].push(started.elapsed());
                Some(next)
            }
            None => None,
        };
        // Plain SQL on the hand-made table, decoded the same way.
        let started = Instant::now();
        let rows: Vec<(String, String, i64)> = sqlx::query_as(AssertSqlSafe(first_sql.clone()))
            .bind(who.clone())
            .fetch_all(pool)
            .await
            .expect("rows");
        let decoded: Vec<(String, OrderSummary)> = rows
            .iter()
            .map(|(id, state, _)| (id.clone(), serde_json::from_str(state).expect("a summary")))
            .collect();
        times[1].push(started.elapsed());
        assert_eq!(decoded.len(), page.items.len(), "the same page");
        if let (Some(next), Some((last_id, _, last_at))) = (&next, rows.last()) {
            let started = Instant::now();
            let rows: Vec<(String, String, i64)> = sqlx::query_as(AssertSqlSafe(next_sql.clone()))
                .bind(who.clone())
                .bind(*last_at)
                .bind(last_id.clone())
                .fetch_all(pool)
                .await
                .expect("rows");
            let next_decoded: Vec<OrderSummary> = rows
                .iter()
                .map(|(_, state, _)| serde_json::from_str(state).expect("a summary"))
                .collect();
            times[3].push(started.elapsed());
            assert_eq!(next_decoded.len(), next.items.len(), "the same next page");
        }
    }
    for time in &mut times {
        time.sort();
    }
    let ms = |duration: Duration| duration.as_secs_f64() * 1e3;
    let line = |what: &str, ours: &[Duration], hand: &[Duration]| {
        if ours.is_empty() || hand.is_empty() {
            return format!("{backend}\t{what}: no full first page, not measured");
        }
        format!(
            "{backend}\t{what}: query p50 / p99 vs plain SQL p50 / p99\t{:.3} / {:.3} ms vs {:.3} / {:.3} ms: {:.2}x",
            ms(quantile(ours, 0.5)),
            ms(quantile(ours, 0.99)),
            ms(quantile(hand, 0.5)),
            ms(quantile(hand, 0.99)),
            quantile(ours, 0.5).as_secs_f64() / quantile(hand, 0.5).as_secs_f64()
        )
    };
    vec![
        line(
            &format!("a customer's newest 50 of {} views", customers * customers),
            &times[0],
            &times[1],
        ),
        line("the page after (a cursor)", &times[2], &times[3]),
    ]
}

fn app(store: impl EventStore) -> Cqrs {
    Cqrs::builder(store)
        .without_event_handlers()
        .processors(|registration| registration.name == "shop.order_summary")
        .build()
        .expect("an app")
}

fn main() {
    let full = std::env::args().any(|arg| arg == "--bench");
    let (customers, count) = if full { (1_000, 2_000) } else { (20, 5) };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let mut lines = Vec::new();
    runtime.block_on(async {
        let file = TempDatabase::new("read-models");
        let store = file.open().await;
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", file.0.display()))
            .await
            .expect("the file");
        let filling = Instant::now();
        for statement in fill_sql("cqrs_views", "hand_orders", customers, customers, false) {
            pool.execute(AssertSqlSafe(statement))
                .await
                .expect("filled");
        }
        let sqlite = app(store);
        sqlite.processors().catch_up().await.expect("indexed");
        eprintln!(
            "read_models: sqlite filled and indexed in {:.1} s",
            filling.elapsed().as_secs_f64()
        );
        lines.extend(
            rounds(
                "sqlite",
                sqlite.views(),
                &pool,
                "hand_orders",
                customers,
                count,
            )
            .await,
        );

        if let Some(url) = postgres_url() {
            let prefix = format!("bench{}_rm_", std::process::id());
            let store = PostgresOptions::new(url.as_str())
                .prefix(TablePrefix::new(prefix.clone()).expect("a prefix"))
                .connect()
                .await
                .expect("PostgreSQL");
            let pool = sqlx::PgPool::connect(&url).await.expect("PostgreSQL");
            let (views, hand) = (format!("{prefix}views"), format!("{prefix}hand_orders"));
            let filling = Instant::now();
            for statement in fill_sql(&views, &hand, customers, customers, true) {
                pool.execute(AssertSqlSafe(statement))
                    .await
                    .expect("filled");
            }
            let postgres = app(store);
            postgres.processors().catch_up().await.expect("indexed");
            pool.execute(AssertSqlSafe(format!("ANALYZE {views}")))
                .await
                .expect("analyzed");
            eprintln!(
                "read_models: postgres filled and indexed in {:.1} s",
                filling.elapsed().as_secs_f64()
            );
            lines
                .extend(rounds("postgres", postgres.views(), &pool, &hand, customers, count).await);
        }
    });
    for line in &lines {
        eprintln!("read_models: {line}");
    }
    if full {
        let results =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-results");
        std::fs::create_dir_all(&results).expect("the results directory");
        let mut file =
            std::fs::File::create(results.join("read_models.tsv")).expect("the results file");
        for line in &lines {
            writeln!(file, "{line}").expect("written");
        }
    }
}
