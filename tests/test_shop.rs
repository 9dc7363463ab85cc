//! The shop of `cqrs_examples::shop` under a realistic load on every backend: 1,000
//! orders, some with declined cards, some out of stock, the processor runner
//! killed half-way and a new app started in its place. Afterwards every order
//! is settled, the stock adds up, and every view equals a rebuild from the log.

#[path = "support/database.rs"]
mod database;
mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use cqrs_core::sqlx;
use cqrs_core::view::SqlPool;
use cqrs_core::{Cqrs, EventStore, MemoryStore, SqliteStore, ViewStore};
use cqrs_examples::shop::*;

const ORDERS: usize = 1_000;
const PRODUCTS: usize = 10;
const STOCK: u32 = 130;

fn app<S: EventStore + Clone>(store: &S, views: &ViewStore) -> Cqrs {
    Cqrs::builder(store.clone())
        .without_event_handlers()
        .views(views.clone())
        .processors(|registration| registration.name.starts_with("shop."))
        .poll_interval(Duration::from_millis(50))
        .build()
        .unwrap()
}

fn order(n: usize) -> (String, PlaceOrder) {
    let place = PlaceOrder {
        customer: format!("customer-{}", n % 37),
        sku: format!("sku-{}", n % PRODUCTS),
        quantity: 1 + (n % 3) as u32,
        unit_price: 100 + (n % 7) as u64 * 10,
        card: if n.is_multiple_of(9) {
            "0000-declined".into()
        } else {
            "4242".into()
        },
    };
    (format!("order-{n:04}"), place)
}

async fn place_orders(app: &Cqrs, orders: std::ops::Range<usize>) {
    for n in orders {
        let (id, place) = order(n);
        app.execute(&id, place).await.unwrap();
    }
}

/// Waits until every processor has processed the whole log and the process
/// manager has nothing more to send.
async fn settle(app: &Cqrs) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let last = app.last_position().await.unwrap();
        tokio::time::timeout_at(deadline, app.processors().wait_for_all(last))
            .await
            .expect("the processors settle")
            .unwrap();
        if app.last_position().await.unwrap() == last {
            return;
        }
    }
}

async fn the_shop_settles_and_its_views_equal_a_rebuild<S: EventStore + Clone>(
    store: S,
    views: ViewStore,
) {
    let first = app(&store, &views);
    for product in 0..PRODUCTS {
        first
            .execute(&format!("sku-{product}"), AddProduct { quantity: STOCK })
            .await
            .unwrap();
    }
    let processors = first.processors().clone();
    let running = tokio::spawn(async move { processors.run().await });
    place_orders(&first, 0..ORDERS / 2).await;
    // Killed mid-way: whatever batch or command was under way is cut off.
    running.abort();
    let _ = running.await;
    drop(first);

    let second = app(&store, &views);
    let processors = second.processors().clone();
    let running = tokio::spawn(async move { processors.run().await });
    place_orders(&second, ORDERS / 2..ORDERS).await;
    settle(&second).await;
    second.processors().shutdown().await;
    running.await.unwrap().unwrap();
    for status in second.processors().status() {
        assert!(status.failure.is_none(), "{status:?}");
    }

    // Every order is settled, by the rules of the checkout.
    let mut reserved_per_sku: BTreeMap<String, u32> = BTreeMap::new();
    let (mut confirmed, mut declined, mut short) = (0, 0, 0);
    for n in 0..ORDERS {
        let (id, place) = order(n);
        let order: Order = second.load(&id).await.unwrap();
        let summary = views.get::<OrderSummary>(&id).await.unwrap().unwrap();
        match (
            summary.stock.as_str(),
            summary.payment.as_str(),
            summary.status.as_str(),
        ) {
            ("reserved", "captured", "confirmed") => {
                assert_eq!(order.status, OrderStatus::Confirmed);
                assert!(!place.card.starts_with("0000"));
                *reserved_per_sku.entry(place.sku).or_default() += place.quantity;
                confirmed += 1;
            }
            ("released", "declined", "cancelled") => {
                assert_eq!(order.status, OrderStatus::Cancelled);
                assert!(place.card.starts_with("0000"));
                declined += 1;
            }
            ("short", "pending", "cancelled") => {
                assert_eq!(order.status, OrderStatus::Cancelled);
                short += 1;
            }
            other => panic!("{id} is not settled: {other:?}"),
        }
    }
    assert_eq!(confirmed + declined + short, ORDERS);
    assert!(
        declined > 50 && short > 10 && confirmed > 500,
        "{confirmed} {declined} {short}"
    );

    // The stock adds up, in the aggregates and in the view.
    for product in 0..PRODUCTS {
        let sku = format!("sku-{product}");
        let stock: Stock = second.load(&sku).await.unwrap();
        let reserved = reserved_per_sku.get(&sku).copied().unwrap_or(0);
        assert_eq!(stock.available + reserved, STOCK, "{sku}");
        let level = views.get::<StockLevel>(&sku).await.unwrap().unwrap();
        assert_eq!(
            level,
            StockLevel {
                on_hand: STOCK,
                reserved,
                available: STOCK - reserved
            },
            "{sku}"
        );
    }

    // The revenue tables hold each confirmed order's payment once, the
    // payments refunded after a cancel netted out (on SQL views).
    let revenue = revenue_per_sku(&views).await;
    if let Some(revenue) = &revenue {
        let mut expected: BTreeMap<String, (i64, i64)> = BTreeMap::new();
        for n in 0..ORDERS {
            let (id, place) = order(n);
            let order: Order = second.load(&id).await.unwrap();
            if order.status == OrderStatus::Confirmed {
                let line = expected.entry(place.sku).or_default();
                line.0 += 1;
                line.1 += i64::try_from(order.total).unwrap();
            }
        }
        let revenue: BTreeMap<String, (i64, i64)> = revenue
            .iter()
            .filter(|(_, line)| line.0 != 0)
            .map(|(sku, line)| (sku.clone(), *line))
            .collect();
        assert_eq!(revenue, expected);
    }

    // Every view equals a fresh rebuild from the log.
    let summaries = views.all::<OrderSummary>().await.unwrap();
    let levels = views.all::<StockLevel>().await.unwrap();
    assert_eq!(summaries.len(), ORDERS);
    let last = store.last_position().await.unwrap();
    let rebuilt = second.processors().rebuild::<OrderSummary>(|_| {});
    assert_eq!(rebuilt.await.unwrap().done, last);
    let rebuilt = second.processors().rebuild::<StockLevel>(|_| {});
    assert_eq!(rebuilt.await.unwrap().done, last);
    assert_eq!(views.all::<OrderSummary>().await.unwrap(), summaries);
    assert_eq!(views.all::<StockLevel>().await.unwrap(), levels);
    if revenue.is_some() {
        let rebuilt = second.processors().rebuild::<Revenue>(|_| {});
        assert_eq!(rebuilt.await.unwrap().done, last);
        assert_eq!(revenue_per_sku(&views).await, revenue);
    }
}

/// Orders paid and revenue per SKU, summed over the days, from the
/// tables of `shop.revenue`; `None` for views in memory, which hold none.
async fn revenue_per_sku(views: &ViewStore) -> Option<BTreeMap<String, (i64, i64)>> {
    const SQL: &str = "SELECT sku, CAST(SUM(orders) AS BIGINT), CAST(SUM(revenue) AS BIGINT) \
                       FROM shop_revenue GROUP BY sku";
    let rows: Vec<(String, i64, i64)> = match views.sql()? {
        SqlPool::Sqlite(pool) => sqlx::query_as(SQL).fetch_all(&pool).await.unwrap(),
        SqlPool::Postgres(pool) => sqlx::query_as(SQL).fetch_all(&pool).await.unwrap(),
        _ => return None,
    };
    Some(
        rows.into_iter()
            .map(|(sku, orders, revenue)| (sku, (orders, revenue)))
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_memory() {
    the_shop_settles_and_its_views_equal_a_rebuild(
        Arc::new(MemoryStore::new()),
        ViewStore::in_memory(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_sqlite() {
    let file = support::TempFile::new("shop");
    let store = SqliteStore::open(file.path()).await.unwrap();
    let views = store.views();
    the_shop_settles_and_its_views_equal_a_rebuild(store, views).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_postgres() {
    // A database of its own: the revenue tables are the database's, not
    // the prefix's.
    if support::server("CQRS_POSTGRES_URL").is_none() {
        return;
    }
    let database = database::Database::create("shop").await.unwrap().unwrap();
    let store = support::postgres_store(&database.url, &support::unique_prefix("shop"), 10).await;
    let views = store.views();
    the_shop_settles_and_its_views_equal_a_rebuild(store, views).await;
    database.drop().await;
}

/// An order whose payment has not arrived within its window cancels
/// itself (the fixture moves the clock); one confirmed in time does not.
#[test]
fn an_unpaid_order_is_cancelled_when_its_payment_window_closes() {
    use cqrs_core::prelude::TestFixture;

    TestFixture::<Order>::new()
        .when(order(1).1)
        .then_expect_deadline_after(PAYMENT_WINDOW, PaymentDue)
        .after(PAYMENT_WINDOW - Duration::from_secs(1))
        .then_expect_no_events()
        .after(Duration::from_secs(1))
        .then_expect_events([OrderCancelled {
            reason: PAYMENT_TIMED_OUT.into(),
        }])
        .then_expect_state(|order| assert_eq!(order.status, OrderStatus::Cancelled));
    TestFixture::<Order>::new()
        .when(order(1).1)
        .and_when(ConfirmOrder)
        .then_expect_no_deadlines()
        .after(PAYMENT_WINDOW * 2)
        .then_expect_no_events();
}

/// The race a payment window leaves: the window closes before the payment
/// is captured. The order is cancelled, its stock released, and the late
/// payment refunded, by the checkout.
#[tokio::test]
async fn a_payment_captured_after_the_window_closed_is_refunded() {
    let clock = cqrs_core::TestClock::at("2026-03-01T09:00:00Z".parse().unwrap());
    let store = Arc::new(MemoryStore::new());
    let app = Cqrs::builder(Arc::clone(&store))
        .without_event_handlers()
        .processors(|registration| registration.name.starts_with("shop."))
        .clock(clock.clone())
        .build()
        .unwrap();
    app.execute("sku-1", AddProduct { quantity: 10 })
        .await
        .unwrap();
    let (_, mut place) = order(1);
    place.sku = "sku-1".into();
    app.execute("o-1", place).await.unwrap();

    clock.advance(PAYMENT_WINDOW);
    let fired = app.deadlines().fire_due().await.unwrap();
    assert_eq!(fired.fired, 1, "{fired:?}");
    // The checkout runs only now: it reserves, charges, meets the
    // cancelled order, refunds, and releases the stock.
    for _ in 0..6 {
        app.processors().catch_up().await.unwrap();
    }
    let order: Order = app.load("o-1").await.unwrap();
    assert_eq!(order.status, OrderStatus::Cancelled);
    let stock: Stock = app.load("sku-1").await.unwrap();
    assert_eq!((stock.available, stock.held.len()), (10, 0), "released");
    let payment = store.load("shop.payment", "o-1", 1).await.unwrap();
    let names: Vec<&str> = payment.iter().map(|e| e.event_name.as_str()).collect();
    assert_eq!(names, ["shop.payment.captured", "shop.payment.refunded"]);
    let cancelled = store.load("shop.order", "o-1", 2).await.unwrap();
    assert_eq!(cancelled.len(), 1, "cancelled once: {cancelled:?}");
}
