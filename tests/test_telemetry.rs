//! The spans and metrics of `cqrs_core::telemetry` on the shop of
//! `cqrs_examples::shop`: a request's command, the checkout process
//! manager's commands inside its batches, the store's appends, a lost race,
//! a domain error and a gateway, seen by a subscriber and a recorder of the
//! test's own.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use cqrs_core::broker::{Gateway, Outgoing, PublishFailure, Publisher};
use cqrs_core::{CommandError, Cqrs, MemoryStore};
use cqrs_examples::shop::*;
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};

/// A span as the subscriber saw it: name, parent and fields.
#[derive(Debug, Clone)]
struct SeenSpan {
    name: &'static str,
    parent: Option<u64>,
    fields: BTreeMap<String, String>,
}

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

/// Records every span, with the span entered on its thread as its parent.
#[derive(Default)]
struct Spans {
    spans: Mutex<Vec<SeenSpan>>,
}

thread_local! {
    static ENTERED: std::cell::RefCell<Vec<u64>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Subscriber for &'static Spans {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, attributes: &Attributes<'_>) -> Id {
        let mut fields = BTreeMap::new();
        attributes.record(&mut Fields(&mut fields));
        let parent = attributes
            .parent()
            .map(Id::into_u64)
            .or_else(|| ENTERED.with(|entered| entered.borrow().last().copied()));
        let mut spans = self.spans.lock().unwrap();
        spans.push(SeenSpan {
            name: attributes.metadata().name(),
            parent: parent.filter(|_| !attributes.is_root()),
            fields,
        });
        Id::from_u64(spans.len() as u64)
    }

    fn record(&self, span: &Id, values: &Record<'_>) {
        let mut spans = self.spans.lock().unwrap();
        let seen = &mut spans[span.into_u64() as usize - 1];
        values.record(&mut Fields(&mut seen.fields));
    }

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, _: &Event<'_>) {}

    fn enter(&self, span: &Id) {
        ENTERED.with(|entered| entered.borrow_mut().push(span.into_u64()));
    }

    fn exit(&self, _: &Id) {
        ENTERED.with(|entered| entered.borrow_mut().pop());
    }
}

/// Counters, gauges (as bits of an f64) and histogram sample counts, by
/// name and sorted labels.
#[derive(Default)]
struct Metrics {
    values: Mutex<BTreeMap<String, Arc<AtomicU64>>>,
}

impl Metrics {
    fn cell(&self, kind: &str, key: &Key) -> Arc<AtomicU64> {
        let mut labels: Vec<String> = key
            .labels()
            .map(|label| format!("{}={}", label.key(), label.value()))
            .collect();
        labels.sort();
        let name = format!("{kind} {}{{{}}}", key.name(), labels.join(","));
        self.values.lock().unwrap().entry(name).or_default().clone()
    }

    fn get(&self, name: &str) -> Option<u64> {
        let values = self.values.lock().unwrap();
        values.get(name).map(|value| value.load(Ordering::SeqCst))
    }

    fn names(&self) -> Vec<String> {
        self.values.lock().unwrap().keys().cloned().collect()
    }
}

struct Cell(Arc<AtomicU64>);

impl metrics::CounterFn for Cell {
    fn increment(&self, value: u64) {
        self.0.fetch_add(value, Ordering::SeqCst);
    }

    fn absolute(&self, value: u64) {
        self.0.store(value, Ordering::SeqCst);
    }
}

impl metrics::GaugeFn for Cell {
    fn increment(&self, _: f64) {}

    fn decrement(&self, _: f64) {}

    fn set(&self, value: f64) {
        self.0.store(value.to_bits(), Ordering::SeqCst);
    }
}

impl metrics::HistogramFn for Cell {
    fn record(&self, _: f64) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl Recorder for &'static Metrics {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(Arc::new(Cell(self.cell("counter", key))))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(Arc::new(Cell(self.cell("gauge", key))))
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(Arc::new(Cell(self.cell("histogram", key))))
    }
}

/// The tests of this file one at a time: the recorder is global, and an
/// app's gauges are the process's.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn installed() -> (&'static Spans, &'static Metrics) {
    static INSTALLED: OnceLock<(&'static Spans, &'static Metrics)> = OnceLock::new();
    *INSTALLED.get_or_init(|| {
        let spans: &'static Spans = Box::leak(Box::default());
        let metrics: &'static Metrics = Box::leak(Box::default());
        tracing::subscriber::set_global_default(spans).unwrap();
        metrics::set_global_recorder(metrics).unwrap();
        (spans, metrics)
    })
}

/// A broker that confirms everything.
#[derive(Default)]
struct Confirming {
    published: Arc<AtomicU64>,
}

impl Publisher for Confirming {
    fn publish<'a>(
        &'a self,
        batch: &'a [Outgoing<'a>],
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<(), PublishFailure>> + Send + 'a>> {
        self.published
            .fetch_add(batch.len() as u64, Ordering::SeqCst);
        Box::pin(std::future::ready(Ok(())))
    }
}

fn place(n: usize) -> PlaceOrder {
    PlaceOrder {
        customer: "c-1".into(),
        sku: "teapot".into(),
        quantity: 1,
        unit_price: 100 + n as u64,
        card: "4242".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_appends_batches_and_publishing_are_traced_and_counted() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let (spans, metrics) = installed();
    let store = Arc::new(MemoryStore::new());
    let published = Arc::new(AtomicU64::new(0));
    let app = Cqrs::builder(store.clone())
        .without_event_handlers()
        .processors(|registration| registration.name == "shop.checkout")
        .gateway(Gateway::new(
            "shop.gateway",
            Confirming {
                published: published.clone(),
            },
        ))
        .build()
        .unwrap();
    let running = tokio::spawn(app.processors().run());
    app.execute("teapot", AddProduct { quantity: 100 })
        .await
        .unwrap();
    for n in 0..3 {
        app.execute(&format!("order-{n}"), place(n)).await.unwrap();
    }
    // A domain error: confirming an order that does not exist.
    let missing = app.execute("order-x", ConfirmOrder).await.unwrap_err();
    assert!(matches!(missing, CommandError::NotFound { .. }));
    // A lost race: another app restocks behind this one's cached state.
    let other = Cqrs::builder(store.clone())
        .without_event_handlers()
        .without_processors()
        .build()
        .unwrap();
    app.execute("kettle", AddProduct { quantity: 1 })
        .await
        .unwrap();
    other
        .execute("kettle", Restock { quantity: 1 })
        .await
        .unwrap();
    let restocked = app
        .execute("kettle", Restock { quantity: 1 })
        .await
        .unwrap();
    assert_eq!(restocked.retries, 1);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mut confirmed = true;
        for n in 0..3 {
            let order: Order = app.load(&format!("order-{n}")).await.unwrap();
            confirmed &= order.status == OrderStatus::Confirmed;
        }
        let head = app.last_position().await.unwrap();
        if confirmed && published.load(Ordering::SeqCst) == head {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the shop settles");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.processors()
        .wait_for_all(app.last_position().await.unwrap())
        .await
        .unwrap();
    running.abort();

    let seen = spans.spans.lock().unwrap().clone();
    let field = |span: &SeenSpan, name: &str| span.fields.get(name).cloned().unwrap_or_default();
    let executes: Vec<&SeenSpan> = seen.iter().filter(|span| span.name == "execute").collect();
    // The request's command: its fields, and its append inside it.
    let placed = seen
        .iter()
        .position(|span| span.name == "execute" && field(span, "aggregate_id") == "order-0")
        .expect("the first order's execute span");
    let span = &seen[placed];
    assert_eq!(field(span, "aggregate_type"), "shop.order");
    assert_eq!(field(span, "command"), "PlaceOrder");
    assert_eq!(field(span, "outcome"), "ok");
    assert_eq!(field(span, "version"), "1");
    assert_eq!(field(span, "retries"), "0");
    let append = seen
        .iter()
        .find(|span| span.name == "store.append" && span.parent == Some(placed as u64 + 1))
        .expect("the append inside the command's span");
    assert_eq!(field(append, "backend"), "memory");
    assert_eq!(field(append, "events"), "1");
    // The checkout's commands run inside the span of the event that
    // caused them, inside its batch's span.
    let reserve = executes
        .iter()
        .find(|span| field(span, "command") == "ReserveStock")
        .expect("the checkout's command");
    let handle = &seen[reserve.parent.expect("a parent") as usize - 1];
    assert_eq!(handle.name, "processor.handle");
    assert_eq!(field(handle, "processor"), "shop.checkout");
    assert_eq!(field(handle, "event"), "shop.order.placed");
    let batch = &seen[handle.parent.expect("a parent") as usize - 1];
    assert_eq!(batch.name, "processor.batch");
    assert_eq!(field(batch, "processor"), "shop.checkout");
    assert!(!field(batch, "to").is_empty(), "{batch:?}");
    assert!(
        executes
            .iter()
            .any(|span| field(span, "outcome") == "not_found")
    );
    assert!(
        executes
            .iter()
            .any(|span| field(span, "command") == "Restock" && field(span, "retries") == "1")
    );
    let publish = seen
        .iter()
        .find(|span| span.name == "gateway.publish")
        .expect("a gateway.publish span");
    assert_eq!(field(publish, "gateway"), "shop.gateway");
    assert_eq!(field(publish, "confirmed"), field(publish, "events"));

    // The metrics, labelled by names only.
    let count = |name: &str| metrics.get(name).unwrap_or(0);
    assert!(
        count("counter cqrs_commands_total{aggregate_type=shop.order,outcome=ok}") >= 6,
        "{:?}",
        metrics.names()
    );
    assert_eq!(
        count("counter cqrs_commands_total{aggregate_type=shop.order,outcome=not_found}"),
        1
    );
    assert_eq!(
        count("counter cqrs_command_conflicts_total{aggregate_type=shop.stock}"),
        1
    );
    assert!(count("counter cqrs_command_retries_total{aggregate_type=shop.stock}") >= 1);
    assert!(
        count("counter cqrs_events_appended_total{aggregate_type=shop.order,backend=memory}") >= 6
    );
    assert!(count("histogram cqrs_append_seconds{backend=memory}") >= 10);
    let head = app.last_position().await.unwrap();
    assert_eq!(
        count("counter cqrs_gateway_confirmed_total{gateway=shop.gateway}"),
        head
    );
    assert_eq!(
        count("counter cqrs_gateway_published_total{gateway=shop.gateway}"),
        head
    );
    for gauge in [
        "gauge cqrs_processor_lag_seconds{processor=shop.checkout}",
        "gauge cqrs_processor_lag_events{processor=shop.checkout}",
        "gauge cqrs_processor_parked{processor=shop.checkout}",
    ] {
        assert!(
            metrics.get(gauge).is_some(),
            "{gauge}: {:?}",
            metrics.names()
        );
    }
    for name in metrics.names() {
        assert!(
            !name.contains("order-") && !name.contains("teapot") && !name.contains("kettle"),
            "an id in a label: {name}"
        );
    }
}

/// A deadline fired is counted by outcome and its lag recorded, and the
/// node that owns the first segment of `cqrs.deadlines` sets the gauges of
/// what is pending; `status()` tells the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_fired_pending_and_late_are_measured() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let (_, metrics) = installed();
    let clock = cqrs_core::TestClock::at("2026-03-01T00:00:00Z".parse().unwrap());
    let app = Cqrs::builder(MemoryStore::new())
        .clock(clock.clone())
        .without_event_handlers()
        .processors(|_| false)
        .build()
        .unwrap();
    for n in 0..3 {
        app.execute(&format!("unpaid-{n}"), place(n)).await.unwrap();
    }
    app.processors().catch_up().await.unwrap();
    let gauge = |name: &str| metrics.get(name).map(f64::from_bits);
    assert_eq!(gauge("gauge cqrs_deadlines_pending{}"), Some(3.0));
    assert_eq!(gauge("gauge cqrs_deadlines_due{}"), Some(0.0));
    let status = app.deadlines().status().await.unwrap();
    assert_eq!((status.counts.pending, status.counts.due), (3, 0));
    assert_eq!(status.overdue, Duration::ZERO);
    assert_eq!(status.lag, None);

    // Two minutes late, as a node that was down would be.
    clock.advance(Duration::from_secs(17 * 60));
    let status = app.deadlines().status().await.unwrap();
    assert_eq!(status.counts.due, 3);
    assert_eq!(status.overdue, Duration::from_secs(120));
    let fired = app.deadlines().fire_due().await.unwrap();
    assert_eq!(fired.fired, 3);
    let fired_total = "counter cqrs_deadlines_fired_total{outcome=fired,owner_type=shop.order}";
    assert!(
        metrics.get(fired_total).unwrap_or(0) >= 3,
        "{:?}",
        metrics.names()
    );
    assert!(
        metrics
            .get("histogram cqrs_deadline_lag_seconds{owner_type=shop.order}")
            .unwrap_or(0)
            >= 3
    );
    let status = app.deadlines().status().await.unwrap();
    assert_eq!(status.counts.pending, 0);
    assert_eq!(status.fired, 3);
    let lag = status.lag.unwrap();
    assert_eq!(
        (lag.p50, lag.max),
        (Duration::from_secs(120), Duration::from_secs(120))
    );
}
