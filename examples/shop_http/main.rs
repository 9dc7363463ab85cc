//! The shop as an HTTP service: `cargo run --example shop_http` (SQLite
//! file `shop.sqlite`), or `-- --postgres URL`, `-- --sqlite FILE`,
//! `-- --addr 127.0.0.1:3000`; `-- --rabbitmq URL` or `-- --nats URL`
//! publishes the orders' events to exchange (or subjects) `shop`. Ctrl-C drains the requests in flight and
//! stops the processors. The endpoints are listed in
//! `src/shop_http/mod.rs`; for instance:
//!
//! ```text
//! curl -X POST localhost:3000/products/teapot -H 'Authorization: Bearer admin' \
//!      -H 'Content-Type: application/json' -d '{"quantity": 10}'
//! curl -X POST localhost:3000/orders/o-1 -H 'Authorization: Bearer alice' \
//!      -H 'Idempotency-Key: o-1-try' -H 'Content-Type: application/json' \
//!      -d '{"customer": "alice", "sku": "teapot", "quantity": 2, "unit_price": 1200, "card": "4242"}'
//! curl localhost:3000/orders/o-1
//! curl localhost:3000/metrics
//! ```

use cqrs_examples::shop_http::{Config, Shop, open};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config = Config::from_args(&args)?;
    let addr = args
        .windows(2)
        .find(|pair| pair[0] == "--addr")
        .map_or("127.0.0.1:3000", |pair| pair[1].as_str())
        .to_owned();
    let shop = Shop::new(open(&config).await?);
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!(
        "shop: listening on http://{addr} ({:?}, publishing to {:?}); Ctrl-C to stop",
        config.database, config.broker
    );
    shop.serve(listener, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    println!("shop: stopped");
    Ok(())
}
