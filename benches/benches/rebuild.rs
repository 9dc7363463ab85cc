//! Rebuild rate of the shop's order-summary view (a document projection),
//! and on SQLite and PostgreSQL of its revenue report (a table projection,
//! `shop.revenue`), from the start of the log to its end, in events of the
//! log per second: both read the same log, the report applies half of it
//! (placed and captured), in plain SQL statements, one per event.
//!
//! ```text
//! scripts/with-postgres cargo bench -p cqrs-benches --bench rebuild
//! ```
//!
//! The log holds `ORDERS` orders of the shop example, four events each
//! (placed, stock reserved, payment captured, confirmed): 100,000 events.
//! They are written straight into the store once, with durability relaxed
//! while loading; the rebuild itself runs on a store opened as usual.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cqrs_benches::{TempDatabase, TempPostgres, postgres_url};
use cqrs_core::store::NewEvent;
use cqrs_core::view::SqlPool;
use cqrs_core::{Cqrs, Event, EventStore, MemoryStore, Metadata, PostgresStore, Uuid, ViewStore};
use cqrs_examples::shop::{
    OrderConfirmed, OrderEvent, OrderPlaced, OrderSummary, PaymentCaptured, PaymentEvent, Revenue,
    StockEvent, StockReserved,
};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tokio::runtime::Runtime;

const ORDERS: usize = 25_000;
const PRODUCTS: usize = 20;

fn new_event<E: Event>(event: E) -> NewEvent {
    let event_type = event.event_type();
    NewEvent {
        event_id: Uuid::now_v7(),
        event_name: event_type.name,
        event_version: event_type.version,
        metadata: Metadata {
            correlation_id: Some(Uuid::now_v7()),
            ..Metadata::default()
        },
        payload: event.encode().expect("events serialize"),
        tags: Vec::new(),
    }
}

/// Writes `ORDERS` settled orders: their own streams, plus reservations
/// appended to each product's stream in batches.
async fn load_log<S: EventStore>(store: &S) -> u64 {
    let mut reservations: Vec<Vec<NewEvent>> = (0..PRODUCTS).map(|_| Vec::new()).collect();
    let mut versions = [0u64; PRODUCTS];
    for n in 0..ORDERS {
        let order_id = format!("order-{n:06}");
        let sku = n % PRODUCTS;
        let placed = OrderEvent::Placed(OrderPlaced {
            customer: format!("customer-{}", n % 1000),
            sku: format!("sku-{sku}"),
            quantity: 1 + (n % 3) as u32,
            total: 1000 + (n % 50) as u64,
            card: "4242".into(),
        });
        store
            .append("shop.order", &order_id, 0, vec![new_event(placed)])
            .await
            .expect("append");
        reservations[sku].push(new_event(StockEvent::Reserved(StockReserved {
            order_id: order_id.clone(),
            quantity: 1 + (n % 3) as u32,
        })));
        if reservations[sku].len() == 250 || n + PRODUCTS >= ORDERS {
            let batch = std::mem::take(&mut reservations[sku]);
            let count = batch.len() as u64;
            store
                .append("shop.stock", &format!("sku-{sku}"), versions[sku], batch)
                .await
                .expect("append");
            versions[sku] += count;
        }
        let captured = PaymentEvent::Captured(PaymentCaptured { amount: 1000 });
        store
            .append("shop.payment", &order_id, 0, vec![new_event(captured)])
            .await
            .expect("append");
        let confirmed = OrderEvent::Confirmed(OrderConfirmed);
        store
            .append("shop.order", &order_id, 1, vec![new_event(confirmed)])
            .await
            .expect("append");
    }
    store.last_position().await.expect("last position")
}

/// The projections the bench rebuilds.
#[derive(Clone, Copy)]
enum Rebuilt {
    OrderSummary,
    Revenue,
}

impl Rebuilt {
    fn name(self) -> &'static str {
        match self {
            Rebuilt::OrderSummary => "shop.order_summary",
            Rebuilt::Revenue => "shop.revenue",
        }
    }
}

fn bench_rebuild<S: EventStore>(
    c: &mut Criterion,
    runtime: &Runtime,
    backend: &str,
    store: S,
    views: ViewStore,
    events: u64,
    rebuilt: Rebuilt,
) {
    let builder = Cqrs::builder(store)
        .without_event_handlers()
        .without_processors()
        .views(views.clone());
    let app = match rebuilt {
        Rebuilt::OrderSummary => builder.projection::<OrderSummary>(),
        Rebuilt::Revenue => builder.table_projection::<Revenue>(),
    }
    .build()
    .expect("app");
    let mut group = c.benchmark_group("rebuild");
    group.throughput(Throughput::Elements(events));
    group.sample_size(10);
    let id = rebuilt.name().trim_start_matches("shop.");
    group.bench_function(BenchmarkId::new(id, backend), |b| {
        b.iter_custom(|iterations| {
            runtime.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iterations {
                    let start = Instant::now();
                    let progress = app
                        .processors()
                        .rebuild_named(rebuilt.name(), |_| {})
                        .await
                        .expect("rebuild");
                    total += start.elapsed();
                    assert_eq!(progress.done, events);
                }
                total
            })
        });
    });
    group.finish();
    match rebuilt {
        Rebuilt::OrderSummary => {
            let summaries = runtime.block_on(views.all::<OrderSummary>()).expect("read");
            assert_eq!(summaries.len(), ORDERS, "every order has its summary");
        }
        Rebuilt::Revenue => {
            let paid = runtime.block_on(paid_orders(&views));
            assert_eq!(paid, ORDERS as i64, "every payment is in the report");
        }
    }
}

/// The orders paid, as the revenue report's table counts them.
async fn paid_orders(views: &ViewStore) -> i64 {
    const SQL: &str = "SELECT CAST(SUM(orders) AS BIGINT) FROM shop_revenue";
    let (paid,): (i64,) = match views.sql() {
        Some(SqlPool::Sqlite(pool)) => sqlx::query_as(SQL).fetch_one(&pool).await,
        Some(SqlPool::Postgres(pool)) => sqlx::query_as(SQL).fetch_one(&pool).await,
        _ => panic!("the revenue report needs SQL views"),
    }
    .expect("the report");
    paid
}

fn rebuild(c: &mut Criterion) {
    let runtime = Runtime::new().expect("tokio runtime");

    let memory = Arc::new(MemoryStore::new());
    let events = runtime.block_on(load_log(&*memory));
    let views = ViewStore::in_memory();
    bench_rebuild(
        c,
        &runtime,
        "memory",
        memory,
        views,
        events,
        Rebuilt::OrderSummary,
    );

    let file = TempDatabase::new("rebuild");
    let events = runtime.block_on(async { load_log(&file.open().await).await });
    let sqlite = runtime.block_on(file.open());
    for rebuilt in [Rebuilt::OrderSummary, Rebuilt::Revenue] {
        let views = sqlite.views();
        bench_rebuild(
            c,
            &runtime,
            "sqlite-file",
            sqlite.clone(),
            views,
            events,
            rebuilt,
        );
    }

    match postgres_url() {
        Some(url) => {
            // A database of its own: the report's tables are the
            // database's, not a table prefix's.
            let (database, postgres, events) = runtime.block_on(async {
                let database = TempPostgres::create(&url, "rebuild").await;
                let postgres = PostgresStore::connect(&database.url)
                    .await
                    .expect("PostgreSQL");
                let events = load_log(&postgres).await;
                (database, postgres, events)
            });
            for rebuilt in [Rebuilt::OrderSummary, Rebuilt::Revenue] {
                let views = postgres.views();
                bench_rebuild(
                    c,
                    &runtime,
                    "postgres",
                    postgres.clone(),
                    views,
                    events,
                    rebuilt,
                );
            }
            drop(postgres);
            runtime.block_on(database.drop());
        }
        None => eprintln!("skipping PostgreSQL: CQRS_POSTGRES_URL is not set"),
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(10));
    targets = rebuild
}
criterion_main!(benches);
