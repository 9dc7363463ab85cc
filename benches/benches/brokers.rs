//! Events per second through a broker: the gateway beside a plain
//! publisher loop of the same client with confirms, on RabbitMQ and on NATS
//! JetStream, and a consumer recording into a SQLite and a PostgreSQL app
//! whose projection follows them.
//!
//! ```text
//! scripts/with-postgres scripts/with-brokers cargo bench -p cqrs-benches --bench brokers
//! ```
//!
//! The log holds order-placed events (10 per stream) in memory. A gateway
//! run publishes all of them with `processors().catch_up()` (batches of 500
//! events, confirms pipelined within a batch). The plain loop publishes the
//! same bodies with the same properties and headers, waiting for the
//! confirms of each batch of B messages, for B of 100, 500 and 2,000; its
//! best B is the baseline. Messages go to a durable queue (RabbitMQ) or a
//! file stream (NATS), so a confirm means stored. The consumer run starts
//! once every message waits in its queue; it reports when the consumer
//! recorded the last event and when the projection's checkpoint reached
//! it, beside a plain lapin or async-nats consumer that only acknowledges
//! the messages (the broker's ceiling); `-- consumer` runs only these, on
//! both brokers. Runs alternate
//! gateway and loop;
//! figures are medians of 3 and the ratio the median of per-run ratios.
//! Results go to stderr and `target/bench-results/brokers.tsv`. Without
//! `--bench` (as `cargo test` runs it) one tiny run of each: a smoke test.

use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use cqrs_benches::{TempDatabase, postgres_store, postgres_url};
use cqrs_core::broker::{Consumer, Gateway, JetStream, Outgoing, RabbitMq, Subscription};
use cqrs_core::prelude::*;
use cqrs_core::store::NewEvent;
use cqrs_core::{JsonPayload, Uuid};
use cqrs_examples::shop::OrderPlaced;
use futures_core::Stream;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Connection, ConnectionProperties, ExchangeKind};

const PER_STREAM: usize = 10;
const BATCHES: [usize; 3] = [100, 500, 2000];

fn broker(variable: &str) -> Option<String> {
    let url = std::env::var(variable).ok();
    let in_ci = std::env::var("CI").is_ok_and(|ci| ci == "true");
    assert!(
        url.is_some() || !in_ci,
        "{variable} is not set: in CI the benchmarks run under scripts/with-brokers"
    );
    url
}

fn main() {
    let full = std::env::args().any(|arg| arg == "--bench");
    // `cargo bench --bench brokers -- consumer` runs the parts named.
    let parts: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| !arg.starts_with("--"))
        .collect();
    let wanted = |part: &str| parts.is_empty() || parts.iter().any(|name| part.contains(name));
    let (events, runs) = if full { (50_000, 3) } else { (200, 1) };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut lines = Vec::new();
    runtime.block_on(async {
        let log = log(events).await;
        if let Some(url) = broker("CQRS_RABBITMQ_URL").filter(|_| wanted("rabbitmq gateway")) {
            let (gateway, plain, ratios) = alternate(
                runs,
                || rabbit_gateway(&url, &log),
                || rabbit_loop(&url, &log),
            )
            .await;
            lines.extend(report("rabbitmq", events, &gateway, &plain, &ratios));
        }
        if let Some(url) = broker("CQRS_RABBITMQ_URL").filter(|_| wanted("rabbitmq consumer")) {
            for (every, how) in [(1, "acking each"), (500, "one multiple ack per 500")] {
                let drain = || rabbit_drain(&url, &log, every);
                lines.push(plain_consumer("rabbitmq", how, (runs, events), drain).await);
            }
            let consume = |receiver| consume_rabbit(&url, &log, receiver);
            lines.extend(consumers("rabbitmq", runs, events, consume).await);
        }
        if let Some(url) = broker("CQRS_NATS_URL").filter(|_| wanted("nats gateway")) {
            let (gateway, plain, ratios) =
                alternate(runs, || nats_gateway(&url, &log), || nats_loop(&url, &log)).await;
            lines.extend(report("nats", events, &gateway, &plain, &ratios));
        }
        if let Some(url) = broker("CQRS_NATS_URL").filter(|_| wanted("nats consumer")) {
            let drain = || nats_drain(&url, &log);
            lines.push(plain_consumer("nats", "acking each", (runs, events), drain).await);
            let consume = |receiver| consume_nats(&url, &log, receiver);
            lines.extend(consumers("nats", runs, events, consume).await);
        }
    });
    for line in &lines {
        eprintln!("{line}");
    }
    let directory =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-results");
    if full && parts.is_empty() && std::fs::create_dir_all(&directory).is_ok() {
        let _ = std::fs::write(directory.join("brokers.tsv"), lines.join("\n") + "\n");
    }
}

/// `events` order-placed events, 10 per stream, in a memory log.
async fn log(events: usize) -> Vec<Envelope> {
    let store = MemoryStore::new();
    for stream in 0..events / PER_STREAM {
        let batch = (0..PER_STREAM)
            .map(|n| NewEvent {
                event_id: Uuid::now_v7(),
                event_name: "shop.order.placed",
                event_version: 1,
                metadata: Metadata {
                    correlation_id: Some(Uuid::now_v7()),
                    ..Metadata::default()
                },
                payload: JsonPayload::encode(&OrderPlaced {
                    customer: "ada".into(),
                    sku: format!("sku-{n}"),
                    quantity: 1,
                    total: 5,
                    card: "4242".into(),
                })
                .expect("an order encodes"),
                tags: Vec::new(),
            })
            .collect();
        store
            .append("shop.order", &format!("o-{stream}"), 0, batch)
            .await
            .expect("append");
    }
    store.read_all(1, events).await.expect("read")
}

/// The log's events in a memory store of their own, for a gateway.
async fn app_with(log: &[Envelope], gateway: Gateway) -> Cqrs {
    let store = MemoryStore::new();
    for event in log {
        let new = NewEvent {
            event_id: event.event_id,
            event_name: "shop.order.placed",
            event_version: 1,
            metadata: event.metadata.clone(),
            payload: event.payload.clone(),
            tags: Vec::new(),
        };
        store
            .append(
                &event.aggregate_type,
                &event.aggregate_id,
                event.sequence - 1,
                vec![new],
            )
            .await
            .expect("append");
    }
    Cqrs::builder(store)
        .processors(|_| false)
        .without_event_handlers()
        .gateway(gateway)
        .build()
        .expect("app")
}

async fn alternate<G, L, GF, LF>(
    runs: usize,
    gateway: G,
    plain: L,
) -> (Vec<f64>, Vec<(usize, f64)>, Vec<f64>)
where
    G: Fn() -> GF,
    L: Fn() -> LF,
    GF: Future<Output = Duration>,
    LF: Future<Output = (usize, Duration)>,
{
    let (mut gateways, mut loops, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        let took = gateway().await;
        let (batch, best) = plain().await;
        gateways.push(took.as_secs_f64());
        loops.push((batch, best.as_secs_f64()));
        ratios.push(best.as_secs_f64() / took.as_secs_f64());
    }
    (gateways, loops, ratios)
}

fn report(
    broker: &str,
    events: usize,
    gateway: &[f64],
    plain: &[(usize, f64)],
    ratios: &[f64],
) -> Vec<String> {
    let rate = |seconds: f64| events as f64 / seconds;
    let gateway_rates: Vec<f64> = gateway.iter().map(|&seconds| rate(seconds)).collect();
    let plain_rates: Vec<f64> = plain.iter().map(|&(_, seconds)| rate(seconds)).collect();
    let batches: Vec<usize> = plain.iter().map(|&(batch, _)| batch).collect();
    vec![
        format!(
            "{broker} gateway\tevents/s\t{:.0}\truns {gateway_rates:.0?}",
            median(&gateway_rates)
        ),
        format!(
            "{broker} plain loop, best batch\tevents/s\t{:.0}\truns {plain_rates:.0?}, best batches {batches:?}",
            median(&plain_rates)
        ),
        format!(
            "{broker} gateway / plain loop\tx\t{:.2}\tper run {ratios:.2?}; target >= 0.8",
            median(ratios)
        ),
    ]
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(0.0)
}

/// The line of a plain client loop that drains `events` messages, from
/// `runs` runs of `drain`, which acknowledges `how`.
async fn plain_consumer<F, Fut>(
    broker: &str,
    how: &str,
    (runs, events): (usize, usize),
    drain: F,
) -> String
where
    F: Fn() -> Fut,
    Fut: Future<Output = Duration>,
{
    let mut rates = Vec::new();
    for _ in 0..runs {
        rates.push(events as f64 / drain().await.as_secs_f64());
    }
    format!(
        "{broker} plain consumer loop, {how}\tevents/s\t{:.0}\truns {rates:.0?}",
        median(&rates)
    )
}

/// The lines of a broker's consumer recording into SQLite, and into
/// PostgreSQL when there is one, from `runs` runs of `consume` each.
async fn consumers<F, Fut>(broker: &str, runs: usize, events: usize, consume: F) -> Vec<String>
where
    F: Fn(Receiver) -> Fut,
    Fut: Future<Output = (Duration, Duration)>,
{
    let mut receivers = vec![("SQLite", Receiver::Sqlite)];
    if let Some(url) = postgres_url() {
        receivers.push(("PostgreSQL", Receiver::Postgres(url)));
    }
    let mut lines = Vec::new();
    for (store, receiver) in receivers {
        let rates = consume_runs(runs, events, || consume(receiver.clone())).await;
        lines.extend(consumed(broker, store, &rates));
    }
    lines
}

/// Per run, the rates at which the consumer recorded the events and at
/// which the receiving app's projection had handled them.
async fn consume_runs<F, Fut>(runs: usize, events: usize, run: F) -> Vec<(f64, f64)>
where
    F: Fn() -> Fut,
    Fut: Future<Output = (Duration, Duration)>,
{
    let mut rates = Vec::new();
    for _ in 0..runs {
        let (recorded, projected) = run().await;
        let rate = |took: Duration| events as f64 / took.as_secs_f64();
        rates.push((rate(recorded), rate(projected)));
    }
    rates
}

fn consumed(broker: &str, store: &str, rates: &[(f64, f64)]) -> Vec<String> {
    let recorded: Vec<f64> = rates.iter().map(|&(recorded, _)| recorded).collect();
    let projected: Vec<f64> = rates.iter().map(|&(_, projected)| projected).collect();
    vec![
        format!(
            "{broker} consumer recording into {store}\tevents/s\t{:.0}\truns {recorded:.0?}",
            median(&recorded)
        ),
        format!(
            "{broker} consumer into a {store} projection\tevents/s\t{:.0}\truns {projected:.0?}",
            median(&projected)
        ),
    ]
}

fn unique(tag: &str) -> String {
    format!("cqrs-bench-{tag}-{}", Uuid::now_v7().simple())
}

/// An exchange with one durable queue bound to all of it, so a confirm
/// means the message is stored.
async fn rabbit_setup(url: &str, exchange: &str, queue: &str) -> lapin::Channel {
    let connection = Connection::connect(url, ConnectionProperties::default())
        .await
        .expect("RabbitMQ");
    let channel = connection.create_channel().await.expect("a channel");
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .exchange_declare(
            exchange.into(),
            ExchangeKind::Topic,
            durable,
            FieldTable::default(),
        )
        .await
        .expect("exchange");
    // As a consumer declares its queue: one active consumer at a time.
    let mut arguments = FieldTable::default();
    arguments.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
    channel
        .queue_declare(queue.into(), QueueDeclareOptions::durable(), arguments)
        .await
        .expect("queue");
    channel
        .queue_bind(
            queue.into(),
            exchange.into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind");
    channel
}

async fn rabbit_teardown(channel: &lapin::Channel, exchange: &str, queue: &str) {
    let _ = channel
        .queue_delete(queue.into(), QueueDeleteOptions::default())
        .await;
    let _ = channel
        .exchange_delete(exchange.into(), ExchangeDeleteOptions::default())
        .await;
}

async fn rabbit_gateway(url: &str, log: &[Envelope]) -> Duration {
    let exchange = unique("gateway");
    let channel = rabbit_setup(url, &exchange, &exchange).await;
    let app = app_with(
        log,
        Gateway::new("bench.gateway", RabbitMq::new(url, &exchange)),
    )
    .await;
    let started = Instant::now();
    app.processors().catch_up().await.expect("published");
    let took = started.elapsed();
    rabbit_teardown(&channel, &exchange, &exchange).await;
    took
}

/// The same properties and headers the gateway sends.
fn rabbit_properties(event: &Envelope) -> BasicProperties {
    let mut headers = FieldTable::default();
    for (name, value) in Outgoing::new(event).attributes() {
        headers.insert(
            format!("cloudEvents_{name}").into(),
            AMQPValue::LongString(LongString::from(value)),
        );
    }
    BasicProperties::default()
        .with_message_id(event.event_id.to_string().into())
        .with_type(event.event_name.as_str().into())
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_timestamp(event.recorded_at.timestamp() as u64)
        .with_headers(headers)
}

/// The plain loop at each batch size; the best one.
async fn rabbit_loop(url: &str, log: &[Envelope]) -> (usize, Duration) {
    let mut best = (0, Duration::MAX);
    for batch in BATCHES {
        let exchange = unique("loop");
        let channel = rabbit_setup(url, &exchange, &exchange).await;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirms");
        let started = Instant::now();
        for chunk in log.chunks(batch) {
            let mut confirms = Vec::with_capacity(chunk.len());
            for event in chunk {
                let routing_key = format!("{}.{}", event.aggregate_type, event.event_name);
                confirms.push(
                    channel
                        .basic_publish(
                            exchange.as_str().into(),
                            routing_key.into(),
                            BasicPublishOptions::default(),
                            event.payload.as_str().as_bytes(),
                            rabbit_properties(event),
                        )
                        .await
                        .expect("publish"),
                );
            }
            for confirm in confirms {
                assert!(confirm.await.expect("confirm").is_ack());
            }
        }
        let took = started.elapsed();
        rabbit_teardown(&channel, &exchange, &exchange).await;
        if took < best.1 {
            best = (batch, took);
        }
    }
    best
}

async fn nats_gateway(url: &str, log: &[Envelope]) -> Duration {
    let prefix = unique("gateway");
    let stream = prefix.to_uppercase().replace('-', "_");
    let app = app_with(
        log,
        Gateway::new("bench.gateway", JetStream::new(url, &stream, &prefix)),
    )
    .await;
    let started = Instant::now();
    app.processors().catch_up().await.expect("published");
    let took = started.elapsed();
    nats_teardown(url, &stream).await;
    took
}

async fn nats_loop(url: &str, log: &[Envelope]) -> (usize, Duration) {
    let context = async_nats::jetstream::new(async_nats::connect(url).await.expect("NATS"));
    let mut best = (0, Duration::MAX);
    for batch in BATCHES {
        let prefix = unique("loop");
        let stream = prefix.to_uppercase().replace('-', "_");
        context
            .get_or_create_stream(async_nats::jetstream::stream::Config {
                name: stream.clone(),
                subjects: vec![format!("{prefix}.>")],
                ..Default::default()
            })
            .await
            .expect("stream");
        let started = Instant::now();
        for chunk in log.chunks(batch) {
            let mut acks = Vec::with_capacity(chunk.len());
            for event in chunk {
                let mut headers = HeaderMap::new();
                headers.insert("Nats-Msg-Id", event.event_id.to_string().as_str());
                for (name, value) in Outgoing::new(event).attributes() {
                    headers.insert(format!("ce-{name}").as_str(), value.as_str());
                }
                let subject = format!("{prefix}.{}.{}", event.aggregate_type, event.event_name);
                acks.push(
                    context
                        .publish_with_headers(
                            subject,
                            headers,
                            event.payload.as_str().as_bytes().to_vec().into(),
                        )
                        .await
                        .expect("publish"),
                );
            }
            for ack in acks {
                ack.await.expect("ack");
            }
        }
        let took = started.elapsed();
        let _ = context.delete_stream(&stream).await;
        if took < best.1 {
            best = (batch, took);
        }
    }
    best
}

#[derive(Clone)]
enum Receiver {
    Sqlite,
    Postgres(String),
}

/// An exchange and its queue (named after `tag`) with every event of `log`
/// published by a gateway and waiting in the queue.
async fn rabbit_queued(url: &str, log: &[Envelope], tag: &str) -> (String, String, lapin::Channel) {
    let exchange = unique(tag);
    let queue = format!("{exchange}.receiver");
    let channel = rabbit_setup(url, &exchange, &queue).await;
    let producer = app_with(
        log,
        Gateway::new("bench.gateway", RabbitMq::new(url, &exchange)),
    )
    .await;
    producer.processors().catch_up().await.expect("published");
    (exchange, queue, channel)
}

/// Every event waits in a queue; then the time a plain lapin consumer
/// (prefetch 1,000, as the consumer's) takes to receive them all,
/// acknowledging every `every`th with a `multiple` ack (each one alone
/// when 1): the broker's ceiling for one consumer.
async fn rabbit_drain(url: &str, log: &[Envelope], every: usize) -> Duration {
    let (exchange, queue, channel) = rabbit_queued(url, log, "drain").await;
    channel
        .basic_qos(1000, BasicQosOptions::default())
        .await
        .expect("qos");
    let started = Instant::now();
    let mut deliveries = channel
        .basic_consume(
            queue.as_str().into(),
            "drain".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let mut received = 0;
    while received < log.len() {
        let delivery =
            std::future::poll_fn(|context| std::pin::Pin::new(&mut deliveries).poll_next(context))
                .await
                .expect("a delivery")
                .expect("no error");
        received += 1;
        if received % every == 0 || received == log.len() {
            let multiple = BasicAckOptions {
                multiple: every > 1,
            };
            delivery.ack(multiple).await.expect("acknowledged");
        }
    }
    let took = started.elapsed();
    rabbit_teardown(&channel, &exchange, &queue).await;
    took
}

/// Every event waits in the consumer's queue; then the time until the
/// consumer recorded the last one, and until the receiving app's
/// projection has handled it.
async fn consume_rabbit(url: &str, log: &[Envelope], receiver: Receiver) -> (Duration, Duration) {
    let (exchange, queue, channel) = rabbit_queued(url, log, "consume").await;
    let took = consume_into(receiver, &queue, RabbitMq::new(url, &exchange), log.len()).await;
    rabbit_teardown(&channel, &exchange, &queue).await;
    let _ = channel
        .queue_delete(
            format!("{queue}.dead-letter").as_str().into(),
            QueueDeleteOptions::default(),
        )
        .await;
    took
}

/// Every event waits in a stream; then the time until the consumer
/// recorded the last one, and until the receiving app's projection has
/// handled it.
async fn consume_nats(url: &str, log: &[Envelope], receiver: Receiver) -> (Duration, Duration) {
    let (stream, prefix) = nats_queued(url, log, "consume").await;
    let took = consume_into(
        receiver,
        "receiver",
        JetStream::new(url, &stream, &prefix),
        log.len(),
    )
    .await;
    nats_teardown(url, &stream).await;
    took
}

/// Runs a consumer named `name` of `subscription`, which holds `events`
/// events, into a new app with a projection: the time until it recorded
/// the last one, and until the projection has handled it.
async fn consume_into(
    receiver: Receiver,
    name: &str,
    subscription: impl Subscription,
    events: usize,
) -> (Duration, Duration) {
    let file = TempDatabase::new("consumer");
    let builder = match receiver {
        Receiver::Sqlite => Cqrs::builder(file.open().await),
        Receiver::Postgres(url) => Cqrs::builder(postgres_store(&url, "consumer").await),
    };
    let app = builder
        .host::<cqrs_examples::shop::Shop>()
        .processors(|processor| processor.name == "shop.order_summary")
        .without_event_handlers()
        .poll_interval(Duration::from_millis(20))
        .build()
        .expect("app");
    let consumer = Consumer::new(name, &app, subscription)
        .expect("a consumer")
        .prefetch(1000);
    let started = Instant::now();
    let consuming = consumer.run();
    let consumer_shutdown = consuming.shutdown();
    let consuming = tokio::spawn(consuming);
    let running = app.processors().run();
    let shutdown = running.shutdown();
    let processing = tokio::spawn(running);
    let last = events as u64;
    let mut recorded = None;
    while app
        .views()
        .checkpoint("shop.order_summary")
        .await
        .unwrap_or(0)
        < last
    {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "the consumer did not get through in 300 s: {:?}",
            consumer.status()
        );
        if recorded.is_none() && consumer.status().recorded >= last {
            recorded = Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = started.elapsed();
    let recorded = recorded.unwrap_or(took);
    consumer_shutdown.now().await;
    let _ = consuming.await;
    shutdown.now().await;
    let _ = processing.await;
    (recorded, took)
}

/// A stream (named after `tag`) with every event of `log` published by a
/// gateway: its name and its subjects' prefix.
async fn nats_queued(url: &str, log: &[Envelope], tag: &str) -> (String, String) {
    let prefix = unique(tag);
    let stream = prefix.to_uppercase().replace('-', "_");
    let producer = app_with(
        log,
        Gateway::new("bench.gateway", JetStream::new(url, &stream, &prefix)),
    )
    .await;
    producer.processors().catch_up().await.expect("published");
    (stream, prefix)
}

async fn nats_teardown(url: &str, stream: &str) {
    let context = async_nats::jetstream::new(async_nats::connect(url).await.expect("NATS"));
    let _ = context.delete_stream(stream).await;
    let _ = context.delete_stream(format!("{stream}-DEAD-LETTER")).await;
}

/// Every event waits in a stream; then the time a plain async-nats pull
/// consumer (1,000 a pull and 4,000 pending, as the consumer's) takes to
/// receive them all, acknowledging each: the broker's ceiling for one
/// consumer.
async fn nats_drain(url: &str, log: &[Envelope]) -> Duration {
    use async_nats::jetstream::consumer::{AckPolicy, pull};
    let (stream, _) = nats_queued(url, log, "drain").await;
    let context = async_nats::jetstream::new(async_nats::connect(url).await.expect("NATS"));
    let started = Instant::now();
    let consumer = context
        .get_stream(&stream)
        .await
        .expect("the stream")
        .get_or_create_consumer(
            "drain",
            pull::Config {
                durable_name: Some("drain".to_owned()),
                ack_policy: AckPolicy::Explicit,
                max_ack_pending: 4000,
                ..pull::Config::default()
            },
        )
        .await
        .expect("a consumer");
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(1000)
        .messages()
        .await
        .expect("messages");
    for _ in 0..log.len() {
        let message =
            std::future::poll_fn(|context| std::pin::Pin::new(&mut messages).poll_next(context))
                .await
                .expect("a message")
                .expect("no error");
        message.ack().await.expect("acknowledged");
    }
    let took = started.elapsed();
    nats_teardown(url, &stream).await;
    took
}
