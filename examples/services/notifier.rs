//! The notifier: tells each customer their order was placed. It has no
//! aggregate and records nothing in a log: it reacts to the orders
//! service's `OrderPlaced` through an inbox (`Consumer::inbox`), whose
//! table of handled message ids lives in its SQLite file, so a message
//! delivered again, or after a restart, sends nothing twice. Start it
//! beside the other two (see `examples/services/orders.rs`):
//!
//! ```text
//! cargo run --example notifier                  # or: -- --nats
//! ```
//!
//! It runs until Ctrl-C, or until it sent `--notifications N`.

use std::time::Duration;

use cqrs_examples::services::{Broker, Role, Service, ServiceConfig, notifier};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config = ServiceConfig::from_args(Role::Notifier, &args)?;
    let wanted: Option<usize> = args
        .windows(2)
        .find(|pair| pair[0] == "--notifications")
        .map(|pair| pair[1].parse())
        .transpose()?;
    match &config.broker {
        Broker::RabbitMq(url) => {
            println!("notifier: RabbitMQ at {url}, exchange {}", config.namespace)
        }
        Broker::Nats(url) => println!("notifier: NATS at {url}, subjects {}.>", config.namespace),
    }
    let service = Service::start(&config).await?;
    loop {
        if wanted.is_some_and(|wanted| notifier::sent().len() >= wanted) {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    let status = service.consumer().status();
    println!(
        "notifier: received {} messages: {} handled, {} duplicates, {} parked, {} dead letters",
        status.deliveries, status.handled, status.duplicates, status.parked, status.dead_lettered
    );
    service.stop().await;
    Ok(())
}
