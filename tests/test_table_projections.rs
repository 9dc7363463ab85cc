//! Table projections on SQLite and PostgreSQL: handlers write the
//! projection's own tables in the batch's transaction, which commits the
//! checkpoint with them, so each event counts once across nodes, failures
//! and retries; queries read the serving version through a SQL view of the
//! tables' plain names; a version 2 builds its tables beside version 1 and
//! takes over, dropping version 1's; a migration that fails, or a handler
//! that ends the transaction, stops the projection with the reason; and a
//! read side in a database of its own follows one log.

#[path = "support/database.rs"]
mod database;
mod support;

use std::collections::{BTreeMap, HashSet};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use cqrs_core::prelude::*;
use cqrs_core::processor::{Lease, RetryPolicy};
use cqrs_core::sqlx::{self, PgPool, Row, SqlitePool};
use cqrs_core::store::SqliteOptions;
use cqrs_core::view::Connection;
use cqrs_core::{BuildError, PostgresStore, SqliteStore};
use serde::{Deserialize, Serialize};
use support::{TempFile, eventually};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Place {
    pub customer: String,
    pub total: i64,
}

#[derive(Debug, Clone, Command)]
pub enum OrderCommand {
    Place(Place),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Placed {
    pub customer: String,
    pub total: i64,
}

#[derive(Debug, Clone, PartialEq, Event)]
pub enum OrderEvent {
    #[event(name = "table_test.placed")]
    Placed(Placed),
}

#[derive(Debug, thiserror::Error)]
#[error("never")]
pub struct Never;

#[derive(Debug, Default, Aggregate)]
#[aggregate(name = "table_test.order", command = OrderCommand, event = OrderEvent, error = Never)]
pub struct Order;

#[aggregate_impl]
impl Order {
    #[command_handler(create)]
    fn place(&self, command: Place) -> Result<Placed, Never> {
        Ok(Placed {
            customer: command.customer,
            total: command.total,
        })
    }

    #[apply]
    fn placed(&mut self, _: &Placed) {}
}

/// The customers whose orders a handler refuses until they are cured: a
/// fault of the handler's own, for one event.
static POISONED: LazyLock<Mutex<HashSet<String>>> = LazyLock::new(Mutex::default);

fn poisoned(customer: &str) -> bool {
    POISONED.lock().unwrap().contains(customer)
}

/// Runs one statement on whichever database the tables are in: the same
/// text serves both (`$N` parameters, `INSERT .. AS t`, `ON CONFLICT`).
macro_rules! execute {
    ($tables:expr, $sql:expr $(, $bind:expr)* $(,)?) => {
        match $tables.connection() {
            Connection::Sqlite(db) => {
                sqlx::query($sql)$(.bind($bind))*.execute(&mut **db).await?;
            }
            Connection::Postgres(db) => {
                sqlx::query($sql)$(.bind($bind))*.execute(&mut **db).await?;
            }
            _ => return Err("the tables are in another database".into()),
        }
    };
}

/// Each customer's orders and their sum, and one row per order.
#[derive(Debug, Default)]
pub struct Totals;

#[projection(
    name = "table_test.totals",
    segments = 2,
    tables(table_test_totals, table_test_orders),
    migrations(
        sqlite("tests/sql/totals-v1.sqlite.sql"),
        postgres("tests/sql/totals-v1.postgres.sql"),
    )
)]
impl Totals {
    #[event_handler]
    async fn placed(
        event: &Placed,
        envelope: &Envelope,
        tables: &mut Tables<'_>,
    ) -> Result<(), HandlerError> {
        execute!(
            tables,
            "INSERT INTO table_test_orders_v1 (order_id, customer, total) VALUES ($1, $2, $3)",
            envelope.aggregate_id.as_str(),
            event.customer.as_str(),
            event.total,
        );
        if poisoned(&event.customer) {
            return Err(format!("{} is poisoned", event.customer).into());
        }
        execute!(
            tables,
            "INSERT INTO table_test_totals_v1 AS t (customer, orders, total) VALUES ($1, 1, $2) \
             ON CONFLICT (customer) DO UPDATE SET orders = t.orders + 1, total = t.total + excluded.total",
            event.customer.as_str(),
            event.total,
        );
        Ok(())
    }
}

/// Version 2: the same totals, and each customer's largest order.
#[derive(Debug, Default)]
pub struct TotalsV2;

#[projection(
    name = "table_test.totals",
    version = 2,
    segments = 2,
    tables(table_test_totals),
    migrations(
        sqlite("tests/sql/totals-v2.sqlite.sql"),
        postgres("tests/sql/totals-v2.postgres.sql"),
    )
)]
impl TotalsV2 {
    #[event_handler]
    async fn placed(event: &Placed, tables: &mut Tables<'_>) -> Result<(), HandlerError> {
        execute!(
            tables,
            "INSERT INTO table_test_totals_v2 AS t (customer, orders, total, largest) \
             VALUES ($1, 1, $2, $2) ON CONFLICT (customer) DO UPDATE SET orders = t.orders + 1, \
             total = t.total + excluded.total, largest = CASE WHEN excluded.largest > t.largest THEN excluded.largest ELSE t.largest END",
            event.customer.as_str(),
            event.total,
        );
        Ok(())
    }
}

/// A projection whose migration fails at its second statement.
#[derive(Debug, Default)]
pub struct Broken;

#[projection(
    name = "table_test.broken",
    tables(table_test_broken),
    migrations(sqlite("tests/sql/broken.sql"), postgres("tests/sql/broken.sql"))
)]
impl Broken {
    #[event_handler]
    async fn placed(_: &Placed, _: &mut Tables<'_>) -> Result<(), HandlerError> {
        Ok(())
    }
}

/// A projection whose handler commits the batch's transaction itself, at
/// the first order.
#[derive(Debug, Default)]
pub struct Rogue;

#[projection(
    name = "table_test.rogue",
    tables(table_test_rogue),
    migrations(sqlite("tests/sql/rogue.sql"), postgres("tests/sql/rogue.sql"))
)]
impl Rogue {
    #[event_handler]
    async fn placed(
        _: &Placed,
        envelope: &Envelope,
        tables: &mut Tables<'_>,
    ) -> Result<(), HandlerError> {
        execute!(
            tables,
            "INSERT INTO table_test_rogue_v1 (id) VALUES ($1)",
            envelope.aggregate_id.as_str(),
        );
        if envelope.aggregate_id == "o-0000" {
            execute!(tables, "COMMIT");
        }
        Ok(())
    }
}

/// A store, its views, and a pool that reads the tables as an
/// application's queries would.
pub struct Db<S> {
    store: S,
    views: ViewStore,
    read: Read,
}

enum Read {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// (customer, orders, total) per customer, by customer.
type Rows = Vec<(String, i64, i64)>;

impl Read {
    async fn rows(&self, sql: &'static str) -> Result<Rows, sqlx::Error> {
        fn row<R: Row>(row: &R) -> (String, i64, i64)
        where
            for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
            for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
            usize: sqlx::ColumnIndex<R>,
        {
            (row.get(0), row.get(1), row.get(2))
        }
        Ok(match self {
            Read::Sqlite(pool) => sqlx::query(sql)
                .fetch_all(pool)
                .await?
                .iter()
                .map(row)
                .collect(),
            Read::Postgres(pool) => sqlx::query(sql)
                .fetch_all(pool)
                .await?
                .iter()
                .map(row)
                .collect(),
        })
    }

    async fn totals(&self) -> Rows {
        self.rows("SELECT customer, orders, total FROM table_test_totals ORDER BY customer")
            .await
            .unwrap()
    }

    async fn table_exists(&self, table: &str) -> bool {
        let sql = match self {
            Read::Sqlite(_) => "SELECT name, 0, 0 FROM sqlite_master WHERE type = 'table'",
            Read::Postgres(_) => "SELECT tablename::TEXT, 0::BIGINT, 0::BIGINT FROM pg_tables",
        };
        let tables = self.rows(sql).await.unwrap();
        tables.iter().any(|(name, _, _)| name == table)
    }
}

fn app<S: EventStore + Clone>(db: &Db<S>, keep: impl Fn(&str, u32) -> bool + 'static) -> Cqrs {
    Cqrs::builder(db.store.clone())
        .without_event_handlers()
        .processors(move |registration| keep(registration.name, registration.version))
        .views(db.views.clone())
        .poll_interval(Duration::from_millis(20))
        .lease(Lease::new(
            Duration::from_secs(2),
            Duration::from_millis(100),
        ))
        .retry_policy(
            RetryPolicy::default()
                .max_attempts(2)
                .delays(Duration::from_millis(5), Duration::from_millis(10))
                .outage_delay(Duration::from_millis(20)),
        )
        .batch_size(25)
        .build()
        .unwrap()
}

fn version_1(name: &str, version: u32) -> bool {
    name == "table_test.totals" && version == 1
}

/// Order `n`: customer `c-(n % 7)`, a total of `n % 53 + 1`.
fn order(n: usize) -> (String, Place) {
    let place = Place {
        customer: format!("c-{}", n % 7),
        total: (n % 53 + 1) as i64,
    };
    (format!("o-{n:04}"), place)
}

fn expected(orders: impl IntoIterator<Item = usize>) -> Rows {
    let mut totals: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for n in orders {
        let (_, place) = order(n);
        let entry = totals.entry(place.customer).or_default();
        entry.0 += 1;
        entry.1 += place.total;
    }
    totals
        .into_iter()
        .map(|(customer, (orders, total))| (customer, orders, total))
        .collect()
}

async fn place(app: &Cqrs, orders: impl IntoIterator<Item = usize>) -> u64 {
    let mut last = 0;
    for n in orders {
        let (id, place) = order(n);
        last = app
            .execute(&id, place)
            .await
            .unwrap()
            .last_position()
            .unwrap();
    }
    last
}

/// Two nodes share the segments while orders arrive: every order is one
/// row, and the totals are those of the orders, whatever node applied
/// which batch.
async fn two_nodes_apply_each_event_once<S: EventStore + Clone>(db: Db<S>) {
    let (first, second) = (app(&db, version_1), app(&db, version_1));
    let runs = [first.processors().run(), second.processors().run()].map(tokio::spawn);
    let last = place(&first, 0..400).await;
    for app in [&first, &second] {
        tokio::time::timeout(
            Duration::from_secs(60),
            app.processors().wait_for::<Totals>(last),
        )
        .await
        .expect("caught up")
        .unwrap();
    }
    assert_eq!(db.read.totals().await, expected(0..400));
    let orders = db
        .read
        .rows("SELECT order_id, total, CAST(0 AS BIGINT) FROM table_test_orders ORDER BY order_id")
        .await
        .unwrap();
    assert_eq!(orders.len(), 400);
    first.processors().shutdown().await;
    second.processors().shutdown().await;
    for run in runs {
        run.await.unwrap().unwrap();
    }

    // A rebuild empties the tables and applies the log again.
    first.processors().rebuild::<Totals>(drop).await.unwrap();
    assert_eq!(db.read.totals().await, expected(0..400));
}

/// An event whose handler fails rolls back its whole batch, is retried
/// alone, then parked; the other streams go on. Retried once cured, it
/// counts once, and nothing else counted twice.
async fn a_failing_event_is_parked_then_retried_once<S: EventStore + Clone>(
    db: Db<S>,
    poison: &str,
) {
    POISONED.lock().unwrap().insert(poison.to_owned());
    let app = app(&db, version_1);
    let run = tokio::spawn(app.processors().run());
    let last = place(&app, 0..50).await;
    let poisoned = app
        .execute(
            "o-poisoned",
            Place {
                customer: poison.to_owned(),
                total: 1000,
            },
        )
        .await
        .unwrap()
        .last_position()
        .unwrap();
    let after = place(&app, 50..100).await;
    assert!(last < poisoned && poisoned < after);
    tokio::time::timeout(
        Duration::from_secs(60),
        app.processors().wait_for::<Totals>(after),
    )
    .await
    .expect("went on past the parked event")
    .unwrap();
    let parked = app.processors().parked("table_test.totals").await.unwrap();
    assert_eq!(
        parked
            .iter()
            .map(|event| event.position)
            .collect::<Vec<_>>(),
        [poisoned]
    );
    // Not even the order row the handler wrote before it failed.
    assert_eq!(db.read.totals().await, expected(0..100));
    let orders = "SELECT order_id, total, CAST(0 AS BIGINT) FROM table_test_orders";
    assert_eq!(db.read.rows(orders).await.unwrap().len(), 100);

    POISONED.lock().unwrap().remove(poison);
    assert!(
        app.processors()
            .retry_parked("table_test.totals", poisoned)
            .await
            .unwrap()
    );
    let mut cured = expected(0..100);
    cured.push((poison.to_owned(), 1, 1000));
    cured.sort();
    eventually(
        "the parked event applied",
        Duration::from_secs(30),
        async || db.read.totals().await == cured,
    )
    .await;
    assert_eq!(db.read.rows(orders).await.unwrap().len(), 101);
    app.processors().shutdown().await;
    run.await.unwrap().unwrap();
}

/// Version 2 builds its tables beside version 1's while queries read
/// version 1, takes over once caught up, and version 1's tables go.
async fn version_2_takes_over_and_drops_version_1<S: EventStore + Clone>(db: Db<S>) {
    let one = app(&db, version_1);
    place(&one, 0..120).await;
    one.processors().catch_up().await.unwrap();
    assert_eq!(db.read.totals().await, expected(0..120));
    assert!(db.read.table_exists("table_test_totals_v1").await);

    let two = app(&db, |name, version| {
        name == "table_test.totals" && version == 2
    });
    let run = tokio::spawn(two.processors().run());
    let largest =
        "SELECT customer, largest, CAST(0 AS BIGINT) FROM table_test_totals ORDER BY customer";
    eventually(
        "queries read version 2",
        Duration::from_secs(60),
        async || db.read.rows(largest).await.is_ok(),
    )
    .await;
    assert_eq!(db.read.totals().await, expected(0..120));
    let last = place(&two, 120..150).await;
    two.processors().wait_for::<TotalsV2>(last).await.unwrap();
    assert_eq!(db.read.totals().await, expected(0..150));
    eventually(
        "version 1's tables dropped",
        Duration::from_secs(30),
        async || {
            !db.read.table_exists("table_test_totals_v1").await
                && !db.read.table_exists("table_test_orders_v1").await
        },
    )
    .await;
    two.processors().shutdown().await;
    run.await.unwrap().unwrap();
}

/// Read your writes on a node that still runs version 1 after version 2
/// took over (a rolling deploy): its wait follows version 2, ending only
/// once version 2 has applied the command, whoever runs it.
async fn a_retired_version_waits_for_the_serving_one<S: EventStore + Clone>(db: Db<S>) {
    let one = app(&db, version_1);
    let running_one = tokio::spawn(one.processors().run());
    let last = place(&one, 0..20).await;
    one.processors().wait_for::<Totals>(last).await.unwrap();
    let version_2 = |name: &str, version| name == "table_test.totals" && version == 2;
    let two = app(&db, version_2);
    let running_two = tokio::spawn(two.processors().run());
    eventually("version 1 retired", Duration::from_secs(30), async || {
        db.views
            .segments("table_test.totals")
            .await
            .unwrap()
            .is_empty()
    })
    .await;
    // Ten lease renewals: the first node notices too.
    tokio::time::sleep(Duration::from_secs(1)).await;
    two.processors().shutdown().await;
    running_two.await.unwrap().unwrap();

    let written = place(&one, 20..21).await;
    let waiting = one.processors().wait_for::<Totals>(written);
    let waited = tokio::time::timeout(Duration::from_secs(1), waiting).await;
    assert!(waited.is_err(), "no node runs version 2: the wait goes on");
    let three = app(&db, version_2);
    let running_three = tokio::spawn(three.processors().run());
    tokio::time::timeout(
        Duration::from_secs(30),
        one.processors().wait_for::<Totals>(written),
    )
    .await
    .expect("version 2 applies it")
    .unwrap();
    assert_eq!(db.read.totals().await, expected(0..21));
    for app in [&one, &three] {
        app.processors().shutdown().await;
    }
    running_one.await.unwrap().unwrap();
    running_three.await.unwrap().unwrap();
}

/// A migration that fails stops its projection with the reason and
/// leaves nothing behind; a handler that commits the batch's transaction
/// itself is caught.
async fn bad_migrations_and_rogue_handlers_stop_the_projection<S: EventStore + Clone>(db: Db<S>) {
    let broken = app(&db, |name, _| name == "table_test.broken");
    place(&broken, 0..3).await;
    let failure = broken.processors().catch_up().await.unwrap_err();
    let message = failure.to_string();
    assert!(
        message.contains("step 1 of its migrations failed"),
        "{message}"
    );
    assert!(!db.read.table_exists("table_test_broken_v1").await);

    let rogue = app(&db, |name, _| name == "table_test.rogue");
    let failure = rogue.processors().catch_up().await.unwrap_err();
    let message = failure.to_string();
    assert!(
        message.contains("a handler ended its batch's transaction"),
        "{message}"
    );
}

/// Views in memory hold no tables: a table projection asked for by type
/// is refused, a registered one is left out.
#[test]
fn a_table_projection_needs_sql_views() {
    let refused = Cqrs::builder(MemoryStore::new())
        .without_processors()
        .table_projection::<Totals>()
        .build()
        .unwrap_err();
    assert_eq!(
        refused,
        BuildError::TablesNeedSql {
            projection: "table_test.totals"
        }
    );
    let app = Cqrs::builder(MemoryStore::new())
        .without_event_handlers()
        .build()
        .unwrap();
    let names = app.processors().names();
    assert!(!names.contains(&"table_test.totals"), "{names:?}");
}

/// A read side in a database of its own follows one log: an app over
/// another log that opens it is refused before anything runs, and the
/// app of its own log goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_side_follows_one_log() {
    let (one, two, read) = (
        TempFile::new("log-one"),
        TempFile::new("log-two"),
        TempFile::new("read-side"),
    );
    let views = SqliteOptions::file(read.path()).open_views().await.unwrap();
    let app = |store: SqliteStore| {
        Cqrs::builder(store)
            .without_event_handlers()
            .processors(|registration| version_1(registration.name, registration.version))
            .views(views.clone())
            .build()
            .unwrap()
    };
    let first = app(SqliteStore::open(one.path()).await.unwrap());
    place(&first, 0..3).await;
    first.processors().catch_up().await.unwrap();
    let other = app(SqliteStore::open(two.path()).await.unwrap());
    place(&other, 10..12).await;
    let failure = other.processors().catch_up().await.unwrap_err();
    assert!(
        failure.to_string().contains("follow another log"),
        "{failure}"
    );
    place(&first, 3..5).await;
    first.processors().catch_up().await.unwrap();
}

async fn sqlite() -> (Db<SqliteStore>, TempFile) {
    let file = TempFile::new("tables");
    let store = SqliteStore::open(file.path()).await.unwrap();
    let read = SqlitePool::connect(&format!("sqlite://{}", file.path().display()))
        .await
        .unwrap();
    let db = Db {
        views: store.views(),
        store,
        read: Read::Sqlite(read),
    };
    (db, file)
}

async fn postgres(scenario: &str) -> Option<(Db<PostgresStore>, database::Database)> {
    support::server("CQRS_POSTGRES_URL")?;
    let database = database::Database::create(scenario).await.unwrap()?;
    let store = PostgresStore::connect(&database.url).await.unwrap();
    let read = PgPool::connect(&database.url).await.unwrap();
    let db = Db {
        views: store.views(),
        store,
        read: Read::Postgres(read),
    };
    Some((db, database))
}

macro_rules! on_sql_backends {
    ($($check:ident $(($arg:expr))?),* $(,)?) => {
        mod on_sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let (db, _file) = super::sqlite().await;
                super::$check(db $(, concat!($arg, "-sqlite"))?).await;
            })*
        }
        mod on_postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                if let Some((db, database)) = super::postgres(stringify!($check)).await {
                    super::$check(db $(, concat!($arg, "-postgres"))?).await;
                    database.drop().await;
                }
            })*
        }
    };
}

on_sql_backends!(
    two_nodes_apply_each_event_once,
    a_failing_event_is_parked_then_retried_once("poisoned"),
    version_2_takes_over_and_drops_version_1,
    a_retired_version_waits_for_the_serving_one,
    bad_migrations_and_rogue_handlers_stop_the_projection,
);
