//! The order flow of an online shop, end to end: orders, stock and payments
//! as aggregates, the checkout process manager between them, two views
//! (order summaries across all three, stock levels) kept from the log by
//! projections running live, and an event handler that mails the customer.
//! The domain is `cqrs_examples::shop` (in `src/shop/`).
//!
//! ```text
//! cargo run --example shop                         # SQLite file shop.sqlite
//! cargo run --example shop -- --postgres URL       # or CQRS_POSTGRES_URL=URL
//! ```

use std::time::Duration;

use cqrs_core::prelude::*;
use cqrs_core::{LoadError, PostgresStore, SqliteStore};
use cqrs_examples::shop::*;

/// A durable event handler: it follows the log from its own checkpoint, so
/// an order confirmed just before a crash is still mailed after the restart
/// (at least once). `#[event_handler(inline)]` would run it right after the
/// commit instead, in this process only, and a crash in between loses it.
#[event_handler]
fn mail_confirmation(_: &OrderConfirmed, envelope: &Envelope<OrderEvent>) {
    println!("  [mail] order {} is confirmed", envelope.aggregate_id);
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let postgres = args
        .windows(2)
        .find(|pair| pair[0] == "--postgres")
        .map(|pair| pair[1].clone())
        .or_else(|| std::env::var("CQRS_POSTGRES_URL").ok());
    match postgres {
        Some(url) => {
            println!("store and views: PostgreSQL at {url}");
            run(PostgresStore::connect(&url).await?).await
        }
        None => {
            println!("store and views: SQLite file shop.sqlite (delete it to start over)");
            run(SqliteStore::open("shop.sqlite").await?).await
        }
    }
}

async fn run(store: impl EventStore) -> Result<(), Box<dyn std::error::Error>> {
    // Every #[projection], #[process_manager] and #[event_handler] of the
    // shop's domain, from the registry; views in the store's own database.
    let app = Cqrs::builder(store)
        .host::<Shop>()
        .poll_interval(Duration::from_millis(200))
        .build()?;
    let running = app.processors().run();
    let shutdown = running.shutdown();
    let running = tokio::spawn(running);

    for (sku, quantity) in [("mug", 5), ("teapot", 2), ("tea", 50)] {
        match app.load::<Stock>(sku).await {
            Ok(_) => {
                app.execute(sku, Restock { quantity }).await?;
                println!("restocked {quantity} {sku}");
            }
            Err(LoadError::NotFound { .. }) => {
                app.execute(sku, AddProduct { quantity }).await?;
                println!("added {quantity} {sku}");
            }
            Err(error) => return Err(error.into()),
        }
    }

    let run_id = uuid_suffix();
    let orders = [
        ("ada", "mug", 2, 900, "4242"),
        ("bob", "teapot", 1, 3500, "4242"),
        ("cyd", "teapot", 2, 3500, "4242"),
        ("dan", "tea", 4, 450, "0000-1111"),
        ("eve", "mug", 1, 900, "4242"),
    ];
    let mut ids = Vec::new();
    for (customer, sku, quantity, unit_price, card) in orders {
        let id = format!("order-{customer}-{run_id}");
        let place = PlaceOrder {
            customer: customer.into(),
            sku: sku.into(),
            quantity,
            unit_price,
            card: card.into(),
        };
        // Returns once the order summary shows the order: read your own writes.
        app.execute_and_wait::<OrderSummary, _>(&id, place).await?;
        ids.push(id);
    }

    // The checkout goes on in the background; wait until the log is quiet.
    settle(&app).await;
    let views = app.views();
    println!("\norders:");
    for id in &ids {
        if let Some(order) = views.get::<OrderSummary>(id).await? {
            println!(
                "  {id}: {} x{} {} -> stock {}, payment {}, {}{}",
                order.customer,
                order.quantity,
                order.sku,
                order.stock,
                order.payment,
                order.status,
                order
                    .reason
                    .map(|reason| format!(" ({reason})"))
                    .unwrap_or_default()
            );
        }
    }
    println!("stock levels:");
    for (sku, level) in views.all::<StockLevel>().await? {
        println!(
            "  {sku}: {} on hand, {} reserved, {} available",
            level.on_hand, level.reserved, level.available
        );
    }

    // Finish the batches in progress and stop, then rebuild a view.
    shutdown.now().await;
    running.await??;
    let rebuilt = app.processors().rebuild::<OrderSummary>(|_| {}).await?;
    println!(
        "\nrebuilt the order summaries from the log: {} events in {:.1?} ({:.0} events/s)",
        rebuilt.done,
        rebuilt.elapsed,
        rebuilt.rate()
    );
    Ok(())
}

/// Waits until every processor has reached the end of the log and no new
/// events arrive.
async fn settle(app: &Cqrs) {
    loop {
        let last = app.last_position().await.unwrap_or(0);
        let caught_up =
            tokio::time::timeout(Duration::from_secs(10), app.processors().wait_for_all(last))
                .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = app.last_position().await.unwrap_or(0);
        if now == last || caught_up.is_err() {
            return;
        }
    }
}

/// Distinct order ids per run, so a second run adds orders to the same file.
fn uuid_suffix() -> String {
    cqrs_core::Uuid::now_v7().simple().to_string()[24..].to_owned()
}
