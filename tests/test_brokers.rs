//! The gateway and the consumer against real brokers: what goes on the
//! wire, in which order, and that a consumer records each event once
//! whatever the broker delivers twice or cannot be read. RabbitMQ comes
//! from CQRS_RABBITMQ_URL and NATS from CQRS_NATS_URL (scripts/with-brokers
//! sets both); without them a test is skipped, except under CI=true, where
//! it fails.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use cqrs_core::broker::{Consumer, Gateway, JetStream, RabbitMq};
use cqrs_core::prelude::*;
use cqrs_core::processor::{FailureCause, ProcessorKind};
use cqrs_core::{SqliteStore, Uuid};
use cqrs_examples::shop::{ConfirmOrder, OrderSummary, PlaceOrder, Shop};
use lapin::options::{BasicGetOptions, BasicPublishOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use support::{delete_exchange, delete_stream, eventually, server, temp_path, unique};

/// The app that places orders and publishes them, with no processor but
/// its gateways.
fn producer(gateways: Vec<Gateway>) -> Cqrs {
    let mut builder = Cqrs::builder(MemoryStore::new())
        .processors(|_| false)
        .without_event_handlers();
    for gateway in gateways {
        builder = builder.gateway(gateway);
    }
    builder.build().unwrap()
}

/// `count` orders, each placed and confirmed: two events per stream.
async fn place_orders(app: &Cqrs, count: usize) {
    for n in 0..count {
        let id = format!("o-{n}");
        let metadata = Metadata {
            correlation_id: Some(Uuid::now_v7()),
            ..Metadata::default()
        }
        .with(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        );
        let place = PlaceOrder {
            customer: "ada".into(),
            sku: "sku-1".into(),
            quantity: 1,
            unit_price: 5,
            card: "4242".into(),
        };
        app.execute_with(&id, place, metadata).await.unwrap();
        app.execute(&id, ConfirmOrder).await.unwrap();
    }
}

/// The exchange as the gateway declares it, so a queue can be bound to it
/// before the gateway's first publish.
async fn declare(channel: &lapin::Channel, exchange: &str) {
    channel
        .exchange_declare(
            exchange.into(),
            lapin::ExchangeKind::Topic,
            lapin::options::ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
}

/// A queue of the test's own bound to all of `exchange`, declared first.
async fn raw_queue(channel: &lapin::Channel, exchange: &str) -> String {
    declare(channel, exchange).await;
    let queue = format!("{exchange}.raw");
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    channel
        .queue_bind(
            queue.as_str().into(),
            exchange.into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    queue
}

/// A connection to the test's RabbitMQ and a channel on it; the
/// connection is kept beside the channel so it stays open.
async fn open_channel(url: &str) -> (Connection, lapin::Channel) {
    let connection = Connection::connect(url, ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    (connection, channel)
}

fn text(value: &AMQPValue) -> String {
    match value {
        AMQPValue::LongString(text) => String::from_utf8_lossy(text.as_bytes()).into_owned(),
        AMQPValue::ShortString(text) => text.as_str().to_owned(),
        other => format!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_gateway_publishes_the_wire_format_in_stream_order() {
    let Some(url) = server("CQRS_RABBITMQ_URL") else {
        return;
    };
    let exchange = unique("wire");
    let (_connection, channel) = open_channel(&url).await;
    let app = producer(vec![
        Gateway::new("test.gateway", RabbitMq::new(&url, &exchange)).segments(4),
    ]);
    // A queue of our own reads the exchange.
    let queue = raw_queue(&channel, &exchange).await;
    let running = tokio::spawn(app.processors().run());
    place_orders(&app, 25).await;
    let log = app.read_all(1, 1000).await.unwrap();
    assert_eq!(log.len(), 50);

    let mut received = Vec::new();
    let started = Instant::now();
    while received.len() < log.len() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "got {} messages",
            received.len()
        );
        match channel
            .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            Some(message) => received.push(message.delivery),
            None => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    let by_id: HashMap<Uuid, &Envelope> = log.iter().map(|event| (event.event_id, event)).collect();
    let mut sequences: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for message in &received {
        let properties = &message.properties;
        let id: Uuid = properties
            .message_id()
            .as_ref()
            .unwrap()
            .as_str()
            .parse()
            .unwrap();
        let event = by_id[&id];
        assert_eq!(
            properties.kind().as_ref().unwrap().as_str(),
            event.event_name
        );
        assert_eq!(
            properties.content_type().as_ref().unwrap().as_str(),
            "application/json"
        );
        assert_eq!(*properties.delivery_mode(), Some(2));
        assert_eq!(
            *properties.timestamp(),
            Some(event.recorded_at.timestamp() as u64)
        );
        assert_eq!(
            properties
                .correlation_id()
                .as_ref()
                .map(|id| id.as_str().to_owned()),
            event.metadata.correlation_id.map(|id| id.to_string())
        );
        assert_eq!(
            message.routing_key.as_str(),
            format!("{}.{}", event.aggregate_type, event.event_name)
        );
        assert_eq!(message.data, event.payload.as_str().as_bytes());
        let headers: BTreeMap<String, String> = properties
            .headers()
            .as_ref()
            .unwrap()
            .inner()
            .iter()
            .map(|(name, value)| (name.as_str().to_owned(), text(value)))
            .collect();
        let header = |name: &str| headers.get(name).map(String::as_str);
        assert_eq!(header("cloudEvents_specversion"), Some("1.0"));
        assert_eq!(header("cloudEvents_id"), Some(id.to_string().as_str()));
        assert_eq!(
            header("cloudEvents_source"),
            Some(event.aggregate_type.as_str())
        );
        assert_eq!(
            header("cloudEvents_subject"),
            Some(event.aggregate_id.as_str())
        );
        assert_eq!(header("cloudEvents_type"), Some(event.event_name.as_str()));
        assert_eq!(
            header("cloudEvents_time"),
            Some(event.recorded_at.to_rfc3339().as_str())
        );
        assert_eq!(
            header("cloudEvents_sequence"),
            Some(event.sequence.to_string().as_str())
        );
        assert_eq!(
            header("cloudEvents_position"),
            Some(event.position.to_string().as_str())
        );
        assert_eq!(header("cloudEvents_eventversion"), Some("1"));
        assert_eq!(header("traceparent"), event.metadata.get("traceparent"));
        assert_eq!(
            header("cloudEvents_traceparent"),
            event.metadata.get("traceparent")
        );
        sequences
            .entry(event.aggregate_id.clone())
            .or_default()
            .push(event.sequence);
    }
    // Four segments publish side by side; each stream stays in order.
    for (stream, order) in &sequences {
        assert_eq!(order, &[1, 2], "stream {stream}");
    }
    let status = app.processors().status();
    assert_eq!(status[0].position, 50);

    running.abort();
    delete_exchange(&url, &exchange, &[&queue]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_gateway_publishes_the_wire_format_in_stream_order() {
    let Some(url) = server("CQRS_NATS_URL") else {
        return;
    };
    let name = unique("wire");
    let stream_name = name.replace('-', "_").to_uppercase();
    let app = producer(vec![
        Gateway::new("test.gateway", JetStream::new(&url, &stream_name, &name)).segments(4),
    ]);
    let running = tokio::spawn(app.processors().run());
    place_orders(&app, 25).await;
    let log = app.read_all(1, 1000).await.unwrap();
    let context = jetstream::new(async_nats::connect(&url).await.unwrap());
    eventually(
        "the stream holds every event",
        Duration::from_secs(30),
        async || match context.get_stream(&stream_name).await {
            Ok(mut stream) => stream.info().await.unwrap().state.messages == 50,
            Err(_) => false,
        },
    )
    .await;
    let stream = context.get_stream(&stream_name).await.unwrap();
    let by_id: HashMap<Uuid, &Envelope> = log.iter().map(|event| (event.event_id, event)).collect();
    let mut sequences: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for sequence in 1..=50 {
        let message = stream.get_raw_message(sequence).await.unwrap();
        let headers = &message.headers;
        let header = |name: &str| headers.get(name).map(|value| value.as_str().to_owned());
        assert!(header("Nats-Msg-Id").is_some(), "{headers:?}");
        let id: Uuid = header("Nats-Msg-Id").unwrap().parse().unwrap();
        let event = by_id[&id];
        assert_eq!(
            message.subject.as_str(),
            format!("{name}.{}.{}", event.aggregate_type, event.event_name)
        );
        assert_eq!(message.payload.as_ref(), event.payload.as_str().as_bytes());
        assert_eq!(header("ce-specversion").as_deref(), Some("1.0"));
        assert_eq!(header("ce-id"), Some(id.to_string()));
        assert_eq!(
            header("ce-source").as_deref(),
            Some(event.aggregate_type.as_str())
        );
        assert_eq!(
            header("ce-subject").as_deref(),
            Some(event.aggregate_id.as_str())
        );
        assert_eq!(
            header("ce-type").as_deref(),
            Some(event.event_name.as_str())
        );
        assert_eq!(
            header("ce-datacontenttype").as_deref(),
            Some("application/json")
        );
        assert_eq!(header("ce-sequence"), Some(event.sequence.to_string()));
        assert_eq!(header("ce-position"), Some(event.position.to_string()));
        assert_eq!(
            header("ce-correlationid"),
            event.metadata.correlation_id.map(|id| id.to_string())
        );
        assert_eq!(
            header("traceparent").as_deref(),
            event.metadata.get("traceparent")
        );
        sequences
            .entry(event.aggregate_id.clone())
            .or_default()
            .push(event.sequence);
    }
    for (stream, order) in &sequences {
        assert_eq!(order, &[1, 2], "stream {stream}");
    }
    running.abort();
    delete_stream(&url, &stream_name).await;
}

/// The app that receives orders: a SQLite log and the order summaries.
async fn receiver(path: &std::path::Path) -> Cqrs {
    let store = SqliteStore::open(path).await.unwrap();
    Cqrs::builder(store)
        .host::<Shop>()
        .processors(|processor| processor.name == "shop.order_summary")
        .without_event_handlers()
        .build()
        .unwrap()
}

/// Two gateways publish every event twice; the consumer records each once,
/// in stream order, and its projection sees each once.
async fn consumer_records_each_event_once(
    publisher: impl Fn(&'static str) -> Gateway,
    subscription: impl cqrs_core::broker::Subscription,
    consumer_name: &str,
    malformed: impl AsyncFnOnce(),
    expected_duplicates: bool,
) -> Cqrs {
    let producer = producer(vec![
        publisher("test.gateway.a"),
        publisher("test.gateway.b"),
    ]);
    let path = temp_path("receiver");
    let receiver = receiver(&path).await;
    let consumer = Consumer::new(consumer_name, &receiver, subscription)
        .unwrap()
        .prefetch(64);
    // Declared, not yet running: what is published now waits for it.
    consumer.declare().await.unwrap();
    let publishing = tokio::spawn(producer.processors().run());
    place_orders(&producer, 30).await;
    malformed().await;
    eventually(
        "both gateways published every event",
        Duration::from_secs(20),
        async || {
            let status = producer.processors().status();
            let gateways: Vec<_> = status
                .iter()
                .filter(|status| status.kind == ProcessorKind::Gateway)
                .collect();
            gateways.len() == 2 && gateways.iter().all(|gateway| gateway.position == 60)
        },
    )
    .await;
    assert_eq!(consumer.status().deliveries, 0);
    let consuming = consumer.run();
    let consumer_shutdown = consuming.shutdown();
    let consuming = tokio::spawn(consuming);
    let processing = tokio::spawn(receiver.processors().run());
    eventually(
        "every event is recorded",
        Duration::from_secs(60),
        async || {
            let status = consumer.status();
            status.recorded == 60 && status.dead_lettered == 2
        },
    )
    .await;
    let log = receiver.read_all(1, 1000).await.unwrap();
    let sent = producer.read_all(1, 1000).await.unwrap();
    assert_eq!(log.len(), 60);
    for (stream, events) in group(&log) {
        let names: Vec<&str> = events
            .iter()
            .map(|event| event.event_name.as_str())
            .collect();
        assert_eq!(
            names,
            ["shop.order.placed", "shop.order.confirmed"],
            "{stream}"
        );
    }
    let mut sent_ids: Vec<Uuid> = sent.iter().map(|event| event.event_id).collect();
    let mut got_ids: Vec<Uuid> = log.iter().map(|event| event.event_id).collect();
    sent_ids.sort();
    got_ids.sort();
    assert_eq!(sent_ids, got_ids, "the producer's event ids");
    eventually(
        "the summaries are up to date",
        Duration::from_secs(20),
        async || {
            receiver.views().all::<OrderSummary>().await.unwrap().len() == 30
                && receiver
                    .views()
                    .all::<OrderSummary>()
                    .await
                    .unwrap()
                    .iter()
                    .all(|(_, order)| order.status == "confirmed")
        },
    )
    .await;
    // Give the second copies time to arrive and be dropped.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = consumer.status();
    assert_eq!(status.recorded, 60);
    if expected_duplicates {
        assert!(status.duplicates > 0, "{status:?}");
    }
    assert_eq!(
        status.deliveries,
        status.recorded + status.duplicates + status.dead_lettered
    );
    println!(
        "{consumer_name}: {} deliveries, {} recorded, {} duplicates, {} dead letters",
        status.deliveries, status.recorded, status.duplicates, status.dead_lettered
    );
    assert_eq!(receiver.read_all(1, 1000).await.unwrap().len(), 60);
    consumer_shutdown.now().await;
    consuming.await.unwrap().unwrap();
    processing.abort();
    publishing.abort();
    let _ = std::fs::remove_file(&path);
    receiver
}

fn group(log: &[Envelope]) -> BTreeMap<String, Vec<&Envelope>> {
    let mut streams: BTreeMap<String, Vec<&Envelope>> = BTreeMap::new();
    for event in log {
        streams
            .entry(event.aggregate_id.clone())
            .or_default()
            .push(event);
    }
    streams
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_consumer_records_each_event_once_and_dead_letters_what_it_cannot_read() {
    let Some(url) = server("CQRS_RABBITMQ_URL") else {
        return;
    };
    let exchange = unique("inbox");
    let queue = format!("{exchange}.shipping");
    let (_connection, channel) = open_channel(&url).await;
    let publish = async |routing_key: &str, headers: FieldTable, body: &[u8]| {
        channel
            .basic_publish(
                exchange.as_str().into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                body,
                BasicProperties::default().with_headers(headers),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    };
    let malformed = async || {
        // No attributes at all.
        publish("shop.order.shop.order.placed", FieldTable::default(), b"{}").await;
        // Well formed, but no event type of this program has the name.
        let mut headers = FieldTable::default();
        let id = Uuid::now_v7().to_string();
        for (name, value) in [
            ("id", id.as_str()),
            ("source", "shop.order"),
            ("subject", "o-x"),
            ("type", "nobody.knows"),
            ("time", "2026-12-06T10:00:00+00:00"),
            ("sequence", "1"),
            ("position", "1"),
        ] {
            headers.insert(
                format!("cloudEvents_{name}").into(),
                AMQPValue::LongString(value.into()),
            );
        }
        publish("shop.order.nobody.knows", headers, b"{}").await;
    };
    consumer_records_each_event_once(
        |name| Gateway::new(name, RabbitMq::new(&url, &exchange)),
        RabbitMq::new(&url, &exchange).bind(["shop.order.#"]),
        &queue,
        malformed,
        true,
    )
    .await;
    // The dead letters carry their reasons.
    let dead_letters = format!("{queue}.dead-letter");
    let mut reasons = Vec::new();
    while let Some(message) = channel
        .basic_get(
            dead_letters.as_str().into(),
            BasicGetOptions { no_ack: true },
        )
        .await
        .unwrap()
    {
        let headers = message.delivery.properties.headers().clone().unwrap();
        reasons.push(text(&headers.inner()["cqrs_dead_letter_reason"]));
    }
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(reasons[0].contains("no `id` attribute"), "{reasons:?}");
    assert!(reasons[1].contains("nobody.knows"), "{reasons:?}");
    delete_exchange(&url, &exchange, &[&queue, &dead_letters]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_consumer_records_each_event_once_and_dead_letters_what_it_cannot_read() {
    let Some(url) = server("CQRS_NATS_URL") else {
        return;
    };
    let name = unique("inbox");
    let stream_name = name.replace('-', "_").to_uppercase();
    let client = async_nats::connect(&url).await.unwrap();
    let context = jetstream::new(client);
    let malformed = async || {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("ce-id", "not-a-uuid");
        context
            .publish_with_headers(format!("{name}.shop.order.x"), headers, "{}".into())
            .await
            .unwrap()
            .await
            .unwrap();
        let mut headers = async_nats::HeaderMap::new();
        for (attribute, value) in [
            ("id", Uuid::now_v7().to_string()),
            ("source", "shop.order".into()),
            ("subject", "o-x".into()),
            ("type", "shop.order.placed".into()),
            ("time", "2026-12-06T10:00:00+00:00".into()),
            ("sequence", "1".into()),
            ("position", "1".into()),
        ] {
            headers.insert(format!("ce-{attribute}").as_str(), value.as_str());
        }
        // A payload the store cannot hold: not JSON.
        context
            .publish_with_headers(format!("{name}.shop.order.y"), headers, "not json".into())
            .await
            .unwrap()
            .await
            .unwrap();
    };
    consumer_records_each_event_once(
        |gateway| Gateway::new(gateway, JetStream::new(&url, &stream_name, &name)),
        JetStream::new(&url, &stream_name, &name),
        "shipping",
        malformed,
        false,
    )
    .await;
    let dead = context
        .get_stream(format!("{stream_name}-DEAD-LETTER"))
        .await
        .unwrap();
    let mut reasons = Vec::new();
    for sequence in 1..=2 {
        let message = dead.get_raw_message(sequence).await.unwrap();
        reasons.push(
            message
                .headers
                .get("cqrs-dead-letter-reason")
                .unwrap()
                .as_str()
                .to_owned(),
        );
    }
    assert!(reasons[0].contains("`id` attribute"), "{reasons:?}");
    assert!(reasons[1].contains("not JSON"), "{reasons:?}");
    delete_stream(&url, &stream_name).await;
}

/// A consumer that starts with nothing in memory takes the first event of
/// a producer's stream for a new stream of its log: when its log holds that
/// stream already (it recorded it before a restart, and the broker delivers
/// it again), the log refuses the guess and every message is a duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_started_again_records_nothing_twice() {
    let Some(url) = server("CQRS_NATS_URL") else {
        return;
    };
    let prefix = unique("again");
    let stream = prefix.to_uppercase().replace('-', "_");
    let producer = producer(vec![Gateway::new(
        "test.gateway",
        JetStream::new(&url, &stream, &prefix),
    )]);
    place_orders(&producer, 5).await;
    producer.processors().catch_up().await.unwrap();
    let path = temp_path("again");
    let receiver = receiver(&path).await;
    let record = async || {
        let subscription = JetStream::new(&url, &stream, &prefix);
        let consumer = Consumer::new("receiver", &receiver, subscription).unwrap();
        let running = consumer.run();
        let shutdown = running.shutdown();
        let task = tokio::spawn(running);
        eventually(
            "every message is taken",
            Duration::from_secs(30),
            async || {
                let status = consumer.status();
                status.recorded + status.duplicates == 10
            },
        )
        .await;
        shutdown.now().await;
        task.await.unwrap().unwrap();
        let status = consumer.status();
        (status.recorded, status.duplicates)
    };
    assert_eq!(record().await, (10, 0));
    // Without its durable consumer, the stream is read again from the start.
    jetstream::new(async_nats::connect(&url).await.unwrap())
        .get_stream(&stream)
        .await
        .unwrap()
        .delete_consumer("receiver")
        .await
        .unwrap();
    assert_eq!(record().await, (0, 10));
    assert_eq!(receiver.read_all(1, 100).await.unwrap().len(), 10);
    delete_stream(&url, &stream).await;
    let _ = std::fs::remove_file(&path);
}

/// While the broker cannot be reached, commands go on and the gateway
/// reports the outage; once it can, the gateway publishes what the log
/// buffered, and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_rides_out_a_broker_outage() {
    let Some(url) = server("CQRS_RABBITMQ_URL") else {
        return;
    };
    let proxy = Proxy::start(&url).await;
    let exchange = unique("outage");
    let app = producer(vec![Gateway::new(
        "test.gateway",
        RabbitMq::new(proxy.url(&url), &exchange),
    )]);
    let (_connection, channel) = open_channel(&url).await;
    let queue = raw_queue(&channel, &exchange).await;
    let running = tokio::spawn(app.processors().run());
    place_orders(&app, 5).await;
    proxy.cut();
    place_orders_from(&app, 5, 10).await;
    eventually(
        "the gateway reports the outage and its lag",
        Duration::from_secs(20),
        async || {
            let status = &app.processors().status()[0];
            status
                .failure
                .as_ref()
                .is_some_and(|failure| failure.cause == FailureCause::Broker)
                && status.lag > 0
        },
    )
    .await;
    proxy.restore();
    let mut ids = std::collections::BTreeSet::new();
    let mut deliveries = 0;
    let started = Instant::now();
    while ids.len() < 20 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "got {} events; {:?}",
            ids.len(),
            app.processors().status()
        );
        match channel
            .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            Some(message) => {
                deliveries += 1;
                let properties = &message.delivery.properties;
                ids.insert(
                    properties
                        .message_id()
                        .as_ref()
                        .unwrap()
                        .as_str()
                        .to_owned(),
                );
            }
            None => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    println!("outage: {deliveries} deliveries of {} events", ids.len());
    eventually(
        "the failure and the lag clear",
        Duration::from_secs(20),
        async || {
            let status = &app.processors().status()[0];
            status.failure.is_none() && status.lag == 0
        },
    )
    .await;
    running.abort();
    delete_exchange(&url, &exchange, &[&queue]).await;
}

async fn place_orders_from(app: &Cqrs, from: usize, to: usize) {
    for n in from..to {
        let id = format!("o-{n}");
        let place = PlaceOrder {
            customer: "ada".into(),
            sku: "sku-1".into(),
            quantity: 1,
            unit_price: 5,
            card: "4242".into(),
        };
        app.execute(&id, place).await.unwrap();
        app.execute(&id, ConfirmOrder).await.unwrap();
    }
}

/// A TCP proxy on 127.0.0.1 in front of the broker that can cut every
/// connection and refuse new ones for a while.
struct Proxy {
    port: u16,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
    generation: std::sync::Arc<tokio::sync::watch::Sender<u64>>,
}

impl Proxy {
    async fn start(url: &str) -> Self {
        use std::sync::atomic::Ordering;
        let target = url
            .split('@')
            .next_back()
            .and_then(|rest| rest.split('/').next())
            .unwrap()
            .to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let open = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (generation, _) = tokio::sync::watch::channel(0u64);
        let generation = std::sync::Arc::new(generation);
        let proxy = Self {
            port,
            open: open.clone(),
            generation: generation.clone(),
        };
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if !open.load(Ordering::SeqCst) {
                    continue;
                }
                let target = target.clone();
                let mut cut = generation.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        proxy
    }

    fn url(&self, url: &str) -> String {
        let (credentials, rest) = url.rsplit_once('@').unwrap();
        let vhost = rest.split_once('/').map_or("", |(_, vhost)| vhost);
        format!("{credentials}@127.0.0.1:{}/{vhost}", self.port)
    }

    fn cut(&self) {
        self.open.store(false, std::sync::atomic::Ordering::SeqCst);
        self.generation.send_modify(|generation| *generation += 1);
    }

    fn restore(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A Python interpreter with pika importable, installing pika into the
/// target directory when it is missing; `None` to skip (under CI it fails).
fn python_with_pika() -> Option<(String, String)> {
    let ci = std::env::var("CI").as_deref() == Ok("true");
    let deps = format!("{}/python", env!("CARGO_TARGET_TMPDIR"));
    let imports = |path: &str| {
        std::process::Command::new("python3")
            .args(["-c", "import pika"])
            .env("PYTHONPATH", path)
            .output()
            .is_ok_and(|output| output.status.success())
    };
    if imports(&deps) {
        return Some(("python3".into(), deps));
    }
    let installed = std::process::Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .arg("--root-user-action=ignore")
        .args(["--target", &deps, "pika==1.3.2"])
        .status()
        .is_ok_and(|status| status.success());
    if installed && imports(&deps) {
        return Some(("python3".into(), deps));
    }
    assert!(!ci, "python3 with pika is needed (pip install pika failed)");
    eprintln!("skipped: python3 with pika is not available");
    None
}

/// pika, RabbitMQ's standard Python client, reads what the gateway
/// published and checks ids, types, subjects, bodies and each stream's
/// order against the store's events (tests/python/pika_consumer.py).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_consumer_reads_the_gateways_messages() {
    use std::io::{BufRead, Write};

    let Some(url) = server("CQRS_RABBITMQ_URL") else {
        return;
    };
    let Some((python, deps)) = python_with_pika() else {
        return;
    };
    let exchange = unique("python");
    let (_connection, channel) = open_channel(&url).await;
    declare(&channel, &exchange).await;
    let app = producer(vec![
        Gateway::new("test.gateway", RabbitMq::new(&url, &exchange)).segments(4),
    ]);
    place_orders(&app, 40).await;
    let log = app.read_all(1, 1000).await.unwrap();
    let expected: Vec<serde_json::Value> = log
        .iter()
        .map(|event| {
            serde_json::json!({
                "id": event.event_id.to_string(),
                "name": event.event_name,
                "aggregate_type": event.aggregate_type,
                "aggregate_id": event.aggregate_id,
                "sequence": event.sequence,
                "payload": event.payload.as_str(),
            })
        })
        .collect();
    let expected_path = std::env::temp_dir().join(format!("{exchange}.json"));
    std::fs::write(&expected_path, serde_json::to_vec(&expected).unwrap()).unwrap();

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/pika_consumer.py");
    let mut consumer = std::process::Command::new(python)
        .arg(script)
        .args([url.as_str(), exchange.as_str()])
        .arg(&expected_path)
        .env("PYTHONPATH", deps)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(consumer.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ready");
    // Its queue is bound: the gateway publishes what the log holds.
    let running = tokio::spawn(app.processors().run());
    writeln!(consumer.stdin.take().unwrap()).unwrap();
    let output: Vec<String> =
        tokio::task::spawn_blocking(move || lines.map_while(Result::ok).collect())
            .await
            .unwrap();
    let status = consumer.wait().unwrap();
    running.abort();
    let _ = std::fs::remove_file(&expected_path);
    delete_exchange(&url, &exchange, &[]).await;
    println!("pika consumer: {output:?}");
    assert!(status.success(), "{output:?}");
    assert_eq!(output, [format!("ok {}", log.len())]);
}

/// Two instances of one consumer (two apps on one SQLite file, one
/// consumer name) take turns: one holds the lease and consumes, the other
/// waits; when the first stops, the second takes over. Every stream's
/// events are recorded once and in order across the handover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_of_a_consumer_take_turns_and_keep_each_streams_order() {
    use cqrs_core::processor::Lease;

    let Some(url) = server("CQRS_RABBITMQ_URL") else {
        return;
    };
    let exchange = unique("group");
    let queue = format!("{exchange}.shipping");
    let path = temp_path("group");
    let instance = async |node: &str| {
        Cqrs::builder(SqliteStore::open(&path).await.unwrap())
            .host::<Shop>()
            .processors(|_| false)
            .without_event_handlers()
            .node_id(node)
            .lease(Lease::new(
                Duration::from_secs(2),
                Duration::from_millis(250),
            ))
            .build()
            .unwrap()
    };
    let apps = [instance("a").await, instance("b").await];
    let consumers: Vec<Consumer> = apps
        .iter()
        .map(|app| {
            Consumer::new(&queue, app, RabbitMq::new(&url, &exchange))
                .unwrap()
                .prefetch(16)
        })
        .collect();
    let runs: Vec<_> = consumers.iter().map(Consumer::run).collect();
    let shutdowns: Vec<_> = runs.iter().map(|run| run.shutdown()).collect();
    let tasks: Vec<_> = runs.into_iter().map(tokio::spawn).collect();
    let producer = producer(vec![Gateway::new(
        "test.gateway",
        RabbitMq::new(&url, &exchange),
    )]);
    let publishing = tokio::spawn(producer.processors().run());
    // One holds the lease and is connected, the other holds nothing.
    let consuming = |consumer: &Consumer| {
        let status = consumer.status();
        status.active && status.connected
    };
    let active = async || {
        eventually(
            "one consumer is active",
            Duration::from_secs(20),
            async || {
                consumers
                    .iter()
                    .filter(|consumer| consuming(consumer))
                    .count()
                    == 1
                    && consumers
                        .iter()
                        .filter(|consumer| consumer.status().active)
                        .count()
                        == 1
            },
        )
        .await;
        consumers.iter().position(consuming).unwrap()
    };
    let first = active().await;
    place_orders_from(&producer, 0, 40).await;
    eventually(
        "the first instance records",
        Duration::from_secs(20),
        async || consumers[first].status().recorded > 0,
    )
    .await;
    // The active instance stops mid-stream; the other takes over.
    shutdowns[first].now().await;
    place_orders_from(&producer, 40, 80).await;
    let second = 1 - first;
    eventually(
        "the second instance takes over",
        Duration::from_secs(20),
        async || consumers[second].status().active,
    )
    .await;
    let log = async || apps[0].read_all(1, 1000).await.unwrap();
    eventually(
        "every event is recorded",
        Duration::from_secs(30),
        async || log().await.len() == 160,
    )
    .await;
    let log = log().await;
    let sent = producer.read_all(1, 1000).await.unwrap();
    let mut sent_ids: Vec<Uuid> = sent.iter().map(|event| event.event_id).collect();
    let mut got_ids: Vec<Uuid> = log.iter().map(|event| event.event_id).collect();
    sent_ids.sort();
    got_ids.sort();
    assert_eq!(sent_ids, got_ids);
    for (stream, events) in group(&log) {
        let names: Vec<&str> = events
            .iter()
            .map(|event| event.event_name.as_str())
            .collect();
        assert_eq!(
            names,
            ["shop.order.placed", "shop.order.confirmed"],
            "{stream}"
        );
    }
    let (a, b) = (consumers[first].status(), consumers[second].status());
    println!(
        "group: first recorded {}, second recorded {}",
        a.recorded, b.recorded
    );
    assert!(a.recorded > 0 && b.recorded > 0, "{a:?} {b:?}");
    assert_eq!(a.recorded + b.recorded, 160);
    shutdowns[second].now().await;
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    publishing.abort();
    let dead_letters = format!("{queue}.dead-letter");
    delete_exchange(&url, &exchange, &[&queue, &dead_letters]).await;
    let _ = std::fs::remove_file(&path);
}
