//! A consumer that reacts through an inbox (`Consumer::inbox`), on RabbitMQ
//! and on NATS JetStream: the example `notifier` and a handler that fails
//! on one order, fed every message twice (the second time in reverse
//! order) and once more after a restart. Each message is handled once; the
//! failing one is retried, parked with the message behind it, and handled
//! once the operator retries it; nothing is appended to a log.

mod support;

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use cqrs_core::broker::{
    Consumer, JetStream, Outgoing, PublishFailure, Publisher, RabbitMq, Subscription,
};
use cqrs_core::prelude::*;
use cqrs_core::processor::{Decision, ParkState, RetryPolicy};
use cqrs_core::registry::Registry;
use cqrs_core::store::{PostgresOptions, TablePrefix};
use cqrs_core::{BoxFuture, BuildError, Domain, SqliteStore, Uuid};
use cqrs_examples::services::{
    MarkShipped, NotifierService, Order, OrdersService, PlaceOrder, notifier,
};
use support::{delete_exchange, delete_stream, eventually, server, temp_path, unique};

/// A handler beside the notifier's that fails on orders of a poisoned item
/// until the item is cured.
mod flaky {
    use super::*;
    use cqrs_examples::services::{OrderEvent, OrderPlaced};

    #[derive(Domain)]
    pub struct Flaky;

    /// Each call: the event id, and whether it succeeded.
    pub static CALLS: Mutex<Vec<(Uuid, bool)>> = Mutex::new(Vec::new());
    /// Items that no longer fail.
    pub static CURED: Mutex<Vec<String>> = Mutex::new(Vec::new());

    #[event_handler(name = "flaky.placed")]
    fn placed(event: &OrderPlaced, envelope: &Envelope<OrderEvent>) -> Result<(), String> {
        let cured = CURED
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&event.item);
        let fails = event.item.starts_with("poison") && !cured;
        CALLS
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((envelope.event_id, !fails));
        if fails {
            return Err(format!("cannot handle {}", event.item));
        }
        Ok(())
    }

    /// How often the handler was called for `event_id`, and how often it
    /// succeeded.
    pub fn calls(event_id: Uuid) -> (usize, usize) {
        let calls = CALLS.lock().unwrap_or_else(PoisonError::into_inner);
        let mine: Vec<bool> = calls
            .iter()
            .filter(|(id, _)| *id == event_id)
            .map(|(_, ok)| *ok)
            .collect();
        (mine.len(), mine.iter().filter(|ok| **ok).count())
    }
}

/// The orders service's log: ten orders, and one of a poisoned item that
/// is then shipped (a second event of its stream).
async fn orders(tag: &str) -> (Vec<Envelope>, String) {
    let app = Cqrs::builder(MemoryStore::new())
        .host::<OrdersService>()
        .without_processors()
        .build()
        .unwrap();
    for n in 0..10 {
        let place = PlaceOrder {
            item: "teapot".into(),
            quantity: 1 + n % 3,
        };
        app.execute(&format!("{tag}-{n}"), place).await.unwrap();
    }
    let poison = format!("poison-{tag}");
    let poisoned = format!("{tag}-poisoned");
    let place = PlaceOrder {
        item: poison.clone(),
        quantity: 1,
    };
    app.execute(&poisoned, place).await.unwrap();
    let shipped = MarkShipped {
        shipment: "s-1".into(),
    };
    app.execute(&poisoned, shipped).await.unwrap();
    (app.read_all(1, 100).await.unwrap(), poison)
}

/// Where the inbox app keeps its inbox: SQLite or PostgreSQL.
enum Database {
    Sqlite(std::path::PathBuf),
    Postgres(String, TablePrefix),
}

impl Database {
    /// The notifier, and the flaky handler beside it, in an app of their
    /// own: retried three times, 10 ms apart at first.
    async fn app(&self) -> Cqrs {
        match self {
            Self::Sqlite(path) => inbox_app(SqliteStore::open(path).await.unwrap()),
            Self::Postgres(url, prefix) => {
                let store = PostgresOptions::new(url)
                    .prefix(prefix.clone())
                    .connect()
                    .await
                    .unwrap();
                inbox_app(store)
            }
        }
    }
}

fn inbox_app(store: impl EventStore) -> Cqrs {
    Cqrs::builder(store)
        .host::<NotifierService>()
        .host::<flaky::Flaky>()
        .retry_policy(
            RetryPolicy::default()
                .max_attempts(3)
                .delays(Duration::from_millis(10), Duration::from_millis(50)),
        )
        .build()
        .unwrap()
}

async fn publish(publisher: &impl Publisher, events: &[&Envelope]) {
    let batch: Vec<Outgoing<'_>> = events.iter().map(|event| Outgoing::new(event)).collect();
    publisher.publish(&batch).await.unwrap();
}

/// The notifications of this test's orders, by order.
fn notifications(tag: &str) -> HashMap<String, Vec<Uuid>> {
    let mut sent: HashMap<String, Vec<Uuid>> = HashMap::new();
    for notification in notifier::sent() {
        if notification.order_id.starts_with(tag) {
            sent.entry(notification.order_id)
                .or_default()
                .push(notification.event_id);
        }
    }
    sent
}

/// Publishes to NATS as `JetStream` does but without `Nats-Msg-Id`, whose
/// duplicate window would keep a second copy from the consumer.
struct NatsCopies {
    context: async_nats::jetstream::Context,
    prefix: String,
}

impl Publisher for NatsCopies {
    fn publish<'a>(
        &'a self,
        batch: &'a [Outgoing<'a>],
    ) -> BoxFuture<'a, Result<(), PublishFailure>> {
        Box::pin(async move {
            for event in batch {
                let mut headers = async_nats::HeaderMap::new();
                for (name, value) in event.attributes() {
                    headers.insert(format!("ce-{name}").as_str(), value.as_str());
                }
                let subject = format!("{}.{}", self.prefix, event.routing_key());
                let body = event.body().to_vec().into();
                let sent = self.context.publish_with_headers(subject, headers, body);
                sent.await.unwrap().await.unwrap();
            }
            Ok(())
        })
    }
}

/// `publisher` sends the first copy of each message, `copies` the others.
async fn handles_each_message_once<S: Subscription>(
    tag: &str,
    publisher: impl Publisher,
    copies: impl Publisher,
    subscription: impl Fn() -> S,
    consumer_name: &str,
    database: &Database,
) {
    let (log, poison) = orders(tag).await;
    assert_eq!(log.len(), 12);
    let app = database.app().await;
    let consumer = Consumer::inbox(consumer_name, &app, subscription())
        .unwrap()
        .prefetch(64);
    consumer.declare().await.unwrap();
    // Every message twice: in order, then in reverse.
    let in_order: Vec<&Envelope> = log.iter().collect();
    let reversed: Vec<&Envelope> = log.iter().rev().collect();
    publish(&publisher, &in_order).await;
    publish(&copies, &reversed).await;
    let consuming = consumer.run();
    let shutdown = consuming.shutdown();
    let consuming = tokio::spawn(consuming);
    eventually(
        "every message is taken",
        Duration::from_secs(30),
        async || {
            let status = consumer.status();
            status.handled + status.parked + status.duplicates == 24
        },
    )
    .await;
    let status = consumer.status();
    assert_eq!(
        (status.handled, status.parked, status.duplicates),
        (10, 2, 12),
        "{status:?}"
    );

    // Each order placed was notified once, by its own event.
    let sent = notifications(tag);
    assert_eq!(sent.len(), 11, "{sent:?}");
    for event in log.iter().filter(|event| event.event_name == "OrderPlaced") {
        assert_eq!(sent[&event.aggregate_id], [event.event_id]);
        let expected = if event.aggregate_id.ends_with("poisoned") {
            (3, 0)
        } else {
            (1, 1)
        };
        assert_eq!(flaky::calls(event.event_id), expected, "{event:?}");
    }

    // The poisoned order is parked, with the shipment behind it.
    let parked = consumer.parked().await.unwrap();
    assert_eq!(parked.len(), 2, "{parked:?}");
    assert_eq!(parked[0].event_name, "OrderPlaced");
    assert_eq!(parked[0].attempts, 3);
    let error = parked[0].error.as_deref().unwrap_or_default();
    assert!(error.contains("cannot handle poison"), "{error}");
    assert_eq!(parked[1].event_name, "OrderShipped");
    assert_eq!(parked[1].error, None);
    assert!(parked.iter().all(|event| event.state == ParkState::Parked));

    // Cured and retried: the flaky handler takes it, the notifier (which
    // took it the first time) is not asked again.
    flaky::CURED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(poison);
    assert!(
        consumer
            .decide(parked[0].position, Decision::Retry)
            .await
            .unwrap()
    );
    eventually(
        "the parked messages are retried",
        Duration::from_secs(10),
        async || {
            let parked = consumer.parked().await.unwrap();
            parked.iter().all(|event| event.state == ParkState::Retried)
        },
    )
    .await;
    let placed = &log[10];
    assert_eq!(flaky::calls(placed.event_id), (4, 1));
    assert_eq!(notifications(tag)[&placed.aggregate_id].len(), 1);
    shutdown.now().await;
    consuming.await.unwrap().unwrap();

    // After a restart, a third copy of everything is known.
    let app = database.app().await;
    let consumer = Consumer::inbox(consumer_name, &app, subscription()).unwrap();
    let consuming = consumer.run();
    let shutdown = consuming.shutdown();
    let consuming = tokio::spawn(consuming);
    publish(&copies, &in_order).await;
    eventually(
        "the third copies are taken",
        Duration::from_secs(30),
        async || consumer.status().duplicates == 12,
    )
    .await;
    assert_eq!(consumer.status().handled, 0);
    assert_eq!(notifications(tag).values().map(Vec::len).sum::<usize>(), 11);
    shutdown.now().await;
    consuming.await.unwrap().unwrap();

    // The notifier keeps no log, and has no aggregate to keep one for.
    assert!(app.read_all(1, 10).await.unwrap().is_empty());
    assert!(
        Registry::global()
            .aggregates()
            .iter()
            .all(|aggregate| !aggregate.module.starts_with(NotifierService::MODULE))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_inbox_on_sqlite_handles_each_message_once_and_parks_what_keeps_failing() {
    let Some(url) = server("CQRS_RABBITMQ_URL") else {
        return;
    };
    let exchange = unique("inbox");
    let queue = format!("{exchange}.notifier");
    let path = temp_path("notifier");
    handles_each_message_once(
        &unique("rabbitmq"),
        RabbitMq::new(&url, &exchange),
        RabbitMq::new(&url, &exchange),
        || RabbitMq::new(&url, &exchange).aggregate::<Order>(),
        &queue,
        &Database::Sqlite(path.clone()),
    )
    .await;
    let _ = std::fs::remove_file(&path);
    let dead_letters = format!("{queue}.dead-letter");
    delete_exchange(&url, &exchange, &[&queue, &dead_letters]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_inbox_on_postgres_handles_each_message_once_and_parks_what_keeps_failing() {
    let (Some(url), Some(postgres)) = (server("CQRS_NATS_URL"), server("CQRS_POSTGRES_URL")) else {
        return;
    };
    let random = Uuid::now_v7().simple().to_string();
    let tables = format!("inbox{}_{}_", std::process::id(), &random[24..]);
    let tables = TablePrefix::new(tables).unwrap();
    let prefix = unique("inbox");
    let stream = prefix.replace('-', "_").to_uppercase();
    handles_each_message_once(
        &unique("nats"),
        JetStream::new(&url, &stream, &prefix),
        NatsCopies {
            context: async_nats::jetstream::new(async_nats::connect(&url).await.unwrap()),
            prefix: prefix.clone(),
        },
        || JetStream::new(&url, &stream, &prefix).aggregate::<Order>(),
        "notifier",
        &Database::Postgres(postgres, tables),
    )
    .await;
    delete_stream(&url, &stream).await;
}

#[test]
fn an_inbox_needs_a_handler_to_hand_messages_to() {
    let app = Cqrs::builder(MemoryStore::new())
        .host::<OrdersService>()
        .without_processors()
        .build()
        .unwrap();
    let subscription = RabbitMq::new("amqp://127.0.0.1:1", "unused");
    let error = Consumer::inbox("notifier", &app, subscription).unwrap_err();
    assert!(
        matches!(&error, BuildError::NothingReacts { consumer } if consumer == "notifier"),
        "{error:?}"
    );
    assert!(error.to_string().contains("#[event_handler]"), "{error}");
}
