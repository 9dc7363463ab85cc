//! The orders service: places orders, publishes the `Order` events through
//! a gateway, and marks an order shipped when shipping's
//! `ShipmentDispatched` arrives. The domain and the wiring are
//! `cqrs_examples::services` (in `src/services/`). Start shipping first,
//! in another terminal; both need a RabbitMQ on 127.0.0.1:5672 (or NATS
//! with `--nats`):
//!
//! ```text
//! cargo run --example shipping                  # or: -- --nats
//! cargo run --example orders -- --orders 20     # or: -- --orders 20 --nats
//! ```
//!
//! Each keeps its own log (`orders.sqlite`, `shipping.sqlite`; delete them
//! to start over). `--rabbitmq URL`, `--nats URL`, `--database FILE` and
//! `--namespace NAME` (the exchange, or the subject prefix) change where.

use std::time::Duration;

use cqrs_core::CommandError;
use cqrs_examples::services::{Broker, Order, PlaceOrder, Role, Service, ServiceConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config = ServiceConfig::from_args(Role::Orders, &args)?;
    let count: usize = args
        .windows(2)
        .find(|pair| pair[0] == "--orders")
        .map_or(Ok(10), |pair| pair[1].parse())?;
    match &config.broker {
        Broker::RabbitMq(url) => {
            println!("orders: RabbitMQ at {url}, exchange {}", config.namespace)
        }
        Broker::Nats(url) => println!("orders: NATS at {url}, subjects {}.>", config.namespace),
    }
    let service = Service::start(&config).await?;
    for n in 0..count {
        let place = PlaceOrder {
            item: "teapot".into(),
            quantity: 1 + (n % 3) as u32,
        };
        match service.app.execute(&format!("order-{n}"), place).await {
            // Placed by an earlier run.
            Ok(_) | Err(CommandError::AlreadyExists { .. }) => {}
            Err(error) => return Err(error.into()),
        }
    }
    println!("orders: {count} orders placed; waiting for shipping");
    loop {
        let mut shipped = 0;
        for n in 0..count {
            let order: Order = service.app.load(&format!("order-{n}")).await?;
            shipped += usize::from(order.shipment.is_some());
        }
        println!("orders: {shipped} of {count} shipped");
        if shipped == count {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    let consumer = service.consumer().status();
    println!(
        "orders: received {} messages: {} recorded, {} duplicates, {} dead letters",
        consumer.deliveries, consumer.recorded, consumer.duplicates, consumer.dead_lettered
    );
    service.stop().await;
    Ok(())
}
