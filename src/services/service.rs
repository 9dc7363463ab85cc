//! How each service runs: its own SQLite database, its processors, a
//! gateway that publishes its own aggregate's events, and a consumer that
//! records the other service's (the notifier: no gateway, and a consumer
//! that reacts through an inbox).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use cqrs_core::broker::{
    BrokerError, Consumer, Gateway, JetStream, Publisher, RabbitMq, Subscription,
};
use cqrs_core::processor::{Running, Shutdown};
use cqrs_core::{Cqrs, SqliteStore};

use super::notifier::NotifierService;
use super::orders::{Order, OrderPlaced, OrdersService};
use super::shipping::{Shipment, ShipmentDispatched, ShippingService};

/// Which broker carries the events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Broker {
    /// RabbitMQ at this `amqp://` URL.
    RabbitMq(String),
    /// NATS JetStream at this `nats://` URL.
    Nats(String),
}

/// Which of the services.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Owns `Order`; receives `ShipmentDispatched`.
    Orders,
    /// Owns `Shipment`; receives `OrderPlaced`.
    Shipping,
    /// Owns nothing; reacts to `OrderPlaced` through an inbox.
    Notifier,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Self::Orders => "orders",
            Self::Shipping => "shipping",
            Self::Notifier => "notifier",
        }
    }

    /// Its gateway, if it publishes: its own aggregate's events through
    /// `publisher`.
    fn gateway(self, publisher: impl Publisher) -> Option<Gateway> {
        match self {
            Self::Orders => Some(Gateway::new("orders.gateway", publisher).aggregate::<Order>()),
            Self::Shipping => {
                Some(Gateway::new("shipping.gateway", publisher).aggregate::<Shipment>())
            }
            Self::Notifier => None,
        }
    }

    /// The app, hosting its domain, with its gateway.
    fn app(
        self,
        store: SqliteStore,
        publisher: impl Publisher,
    ) -> Result<Cqrs, cqrs_core::BuildError> {
        let builder = Cqrs::builder(store).poll_interval(Duration::from_millis(100));
        let builder = match self {
            Self::Orders => builder.host::<OrdersService>().without_event_handlers(),
            Self::Shipping => builder.host::<ShippingService>().without_event_handlers(),
            Self::Notifier => builder.host::<NotifierService>(),
        };
        match self.gateway(publisher) {
            Some(gateway) => builder.gateway(gateway).build(),
            None => builder.build(),
        }
    }

    /// Its consumer of `subscription`: the orders service and shipping
    /// record what they receive in their logs, the notifier reacts to it
    /// through its inbox.
    fn consumer(
        self,
        name: String,
        app: &Cqrs,
        subscription: impl Subscription,
    ) -> Result<Consumer, cqrs_core::BuildError> {
        match self {
            Self::Orders | Self::Shipping => Consumer::new(name, app, subscription),
            Self::Notifier => Consumer::inbox(name, app, subscription),
        }
    }
}

/// Where a service keeps its log and how it reaches the other.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub role: Role,
    /// Its SQLite file.
    pub database: PathBuf,
    pub broker: Broker,
    /// The RabbitMQ exchange, or the NATS subject prefix (its stream is the
    /// same in capitals); both services use the same.
    pub namespace: String,
}

impl ServiceConfig {
    /// Reads `--nats [URL]`, `--rabbitmq URL`, `--database FILE` and
    /// `--namespace NAME` from `args`; RabbitMQ on 127.0.0.1 by default.
    pub fn from_args(role: Role, args: &[String]) -> Result<Self, String> {
        let mut config = Self {
            role,
            database: PathBuf::from(format!("{}.sqlite", role.name())),
            broker: Broker::RabbitMq("amqp://guest:guest@127.0.0.1:5672/%2f".into()),
            namespace: "shop".into(),
        };
        let value = |at: usize| {
            args.get(at + 1)
                .filter(|value| !value.starts_with("--"))
                .cloned()
        };
        for (at, arg) in args.iter().enumerate() {
            let needed = || format!("{arg} needs a value");
            match arg.as_str() {
                "--rabbitmq" => config.broker = Broker::RabbitMq(value(at).ok_or_else(needed)?),
                "--nats" => {
                    let url = value(at).unwrap_or_else(|| "nats://127.0.0.1:4222".into());
                    config.broker = Broker::Nats(url);
                }
                "--database" => config.database = value(at).ok_or_else(needed)?.into(),
                "--namespace" => config.namespace = value(at).ok_or_else(needed)?,
                _ => {}
            }
        }
        Ok(config)
    }
}

/// A running service.
pub struct Service {
    pub app: Cqrs,
    consumer: Consumer,
    shutdown: Shutdown,
    processing: tokio::task::JoinHandle<Result<(), cqrs_core::processor::RunError>>,
    consumer_shutdown: Shutdown,
    consuming: tokio::task::JoinHandle<Result<(), cqrs_core::processor::RunError>>,
}

impl Service {
    /// Opens the service's log and starts its processors, gateway and
    /// consumer on the current tokio runtime.
    pub async fn start(config: &ServiceConfig) -> Result<Self, Box<dyn std::error::Error>> {
        let role = config.role;
        let store = SqliteStore::open(&config.database).await?;
        let stream = config.namespace.to_uppercase().replace(['.', '-'], "_");
        let (app, consumer) = match &config.broker {
            Broker::RabbitMq(url) => {
                let app = role.app(store, RabbitMq::new(url, &config.namespace))?;
                let subscription = RabbitMq::new(url, &config.namespace);
                let subscription = match role {
                    Role::Orders => subscription.event::<ShipmentDispatched>(),
                    Role::Shipping | Role::Notifier => subscription.event::<OrderPlaced>(),
                };
                let consumer = role.consumer(consumer_name(config), &app, subscription)?;
                (app, consumer)
            }
            Broker::Nats(url) => {
                let app = role.app(store, JetStream::new(url, &stream, &config.namespace))?;
                let subscription = JetStream::new(url, &stream, &config.namespace);
                let subscription = match role {
                    Role::Orders => subscription.event::<ShipmentDispatched>(),
                    Role::Shipping | Role::Notifier => subscription.event::<OrderPlaced>(),
                };
                let consumer = role.consumer(consumer_name(config), &app, subscription)?;
                (app, consumer)
            }
        };
        // What the other service publishes from now on waits for this one,
        // even before its consumer runs.
        declare(&consumer).await?;
        let running: Running = app.processors().run();
        let shutdown = running.shutdown();
        let processing = tokio::spawn(running);
        let consuming = consumer.run();
        let consumer_shutdown = consuming.shutdown();
        let consuming = tokio::spawn(consuming);
        Ok(Self {
            app,
            consumer,
            shutdown,
            processing,
            consumer_shutdown,
            consuming,
        })
    }

    /// Its consumer, to watch (`status()`) from any task.
    pub fn consumer(&self) -> Consumer {
        self.consumer.clone()
    }

    /// The events of its log stored under `event_name`, by stream, in log
    /// order.
    pub async fn events(
        &self,
        event_name: &str,
    ) -> Result<Vec<cqrs_core::Envelope>, cqrs_core::StoreError> {
        let mut found = Vec::new();
        let mut from = 1;
        loop {
            let page = self.app.read_all(from, 1000).await?;
            let Some(last) = page.last() else {
                return Ok(found);
            };
            from = last.position + 1;
            found.extend(
                page.into_iter()
                    .filter(|event| event.event_name == event_name),
            );
        }
    }

    /// Stops the consumer and the processors, each after its batch.
    pub async fn stop(self) {
        self.consumer_shutdown.now().await;
        let _ = self.consuming.await;
        self.shutdown.now().await;
        let _ = self.processing.await;
    }
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("consumer", &self.consumer)
            .finish_non_exhaustive()
    }
}

/// Declares the consumer's queue, trying again for up to 30 s while the
/// broker is unreachable (it may be starting beside this service).
async fn declare(consumer: &Consumer) -> Result<(), BrokerError> {
    let started = Instant::now();
    loop {
        match consumer.declare().await {
            Err(error) if error.is_transient() && started.elapsed() < Duration::from_secs(30) => {
                eprintln!("declaring the consumer's queue again: {error}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            declared => return declared,
        }
    }
}

/// The consumer's queue or durable consumer: one per namespace and service.
fn consumer_name(config: &ServiceConfig) -> String {
    format!("{}-{}", config.namespace, config.role.name())
}
