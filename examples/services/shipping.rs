//! The shipping service: receives `OrderPlaced` from the orders service,
//! dispatches one shipment per order from a process manager, and publishes
//! `ShipmentDispatched` through a gateway. Runs until Ctrl-C; see
//! `examples/services/orders.rs` for how to run the pair.

use std::time::Duration;

use cqrs_examples::services::{Broker, Role, Service, ServiceConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config = ServiceConfig::from_args(Role::Shipping, &args)?;
    match &config.broker {
        Broker::RabbitMq(url) => {
            println!("shipping: RabbitMQ at {url}, exchange {}", config.namespace)
        }
        Broker::Nats(url) => println!("shipping: NATS at {url}, subjects {}.>", config.namespace),
    }
    let service = Service::start(&config).await?;
    let mut shown = None;
    loop {
        let dispatched = service.events("ShipmentDispatched").await?.len();
        if shown != Some(dispatched) {
            println!("shipping: {dispatched} shipments dispatched (Ctrl-C to stop)");
            shown = Some(dispatched);
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    service.stop().await;
    Ok(())
}
