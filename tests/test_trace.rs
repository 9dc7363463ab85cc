//! One trace from an HTTP request to another service's handler, exported
//! to OpenTelemetry's in-memory exporter: the request to `shop_http`
//! carries a W3C `traceparent`; the command it sends, its append, the
//! checkout process manager handling the event and the command it sends,
//! the gateway publishing to RabbitMQ, a consumer of another app (its own
//! SQLite log) recording the event and that app's projection handling it
//! all carry the request's trace id.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use cqrs_core::broker::{Consumer, Gateway, RabbitMq};
use cqrs_core::{Cqrs, SqliteStore};
use cqrs_examples::shop::{self, Order, OrderSummary};
use cqrs_examples::shop_http::{Shop, authorize};
use opentelemetry::trace::{TraceId, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use serde_json::json;
use support::{delete_exchange, server, temp_path};
use tracing_subscriber::layer::SubscriberExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_from_a_request_through_the_broker_to_another_services_handler() {
    let Some(url) = server("CQRS_RABBITMQ_URL") else {
        return;
    };
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test_trace")));
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let exchange = format!("trace-{}", cqrs_core::Uuid::now_v7().simple());
    // The shop: its checkout, and a gateway publishing its orders.
    let shop_path = temp_path("shop");
    let shop = Cqrs::builder(SqliteStore::open(&shop_path).await.unwrap())
        .without_event_handlers()
        .processors(|registration| registration.name == "shop.checkout")
        .layer(authorize)
        .gateway(
            Gateway::new("shop.trace_gateway", RabbitMq::new(&url, &exchange)).aggregate::<Order>(),
        )
        .poll_interval(Duration::from_millis(50))
        .build()
        .unwrap();
    // Another service: its own log, receiving the orders into its summary.
    let other_path = temp_path("other");
    let other = Cqrs::builder(SqliteStore::open(&other_path).await.unwrap())
        .host::<shop::Shop>()
        .without_event_handlers()
        .processors(|registration| registration.name == "shop.order_summary")
        .poll_interval(Duration::from_millis(50))
        .build()
        .unwrap();
    let queue = format!("{exchange}.summaries");
    let consumer = Consumer::new(
        &queue,
        &other,
        RabbitMq::new(&url, &exchange).bind(["shop.order.#"]),
    )
    .unwrap();
    consumer.declare().await.unwrap();
    let consuming = consumer.run();
    let consumer_shutdown = consuming.shutdown();
    let consuming = tokio::spawn(consuming);
    let processing = tokio::spawn(other.processors().run());

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(Shop::new(shop.clone()).serve(listener, async {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::new();
    let stocked = client
        .post(format!("{base}/products/teapot"))
        .bearer_auth("admin")
        .json(&json!({ "quantity": 10 }))
        .send()
        .await
        .unwrap();
    assert_eq!(stocked.status(), 201);
    // The caller's trace.
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let placed = client
        .post(format!("{base}/orders/o-1"))
        .bearer_auth("alice")
        .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
        .json(&json!({
            "customer": "alice", "sku": "teapot", "quantity": 1,
            "unit_price": 1200, "card": "4242",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(placed.status(), 201);

    // The other service confirms the order once the checkout has.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let summary = other.views().get::<OrderSummary>("o-1").await.unwrap();
        if summary.is_some_and(|summary| summary.status == "confirmed") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "o-1 confirmed over there"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    consumer_shutdown.now().await;
    consuming.await.unwrap().unwrap();
    processing.abort();
    stop.send(()).unwrap();
    serving.await.unwrap().unwrap();
    provider.force_flush().unwrap();

    let trace_id = TraceId::from_hex(trace).unwrap();
    let spans = exporter.get_finished_spans().unwrap();
    let in_trace: Vec<_> = spans
        .iter()
        .filter(|span| span.span_context.trace_id() == trace_id)
        .collect();
    let attribute = |span: &opentelemetry_sdk::trace::SpanData, key: &str| {
        span.attributes
            .iter()
            .find(|attribute| attribute.key.as_str() == key)
            .map(|attribute| attribute.value.to_string())
            .unwrap_or_default()
    };
    println!("trace {trace}: {} spans", in_trace.len());
    let mut seen = BTreeSet::new();
    for span in &in_trace {
        let what = match span.name.as_ref() {
            "execute" => attribute(span, "command"),
            "processor.handle" => format!(
                "{} {}",
                attribute(span, "processor"),
                attribute(span, "event")
            ),
            "store.append" | "store.load" => attribute(span, "aggregate_type"),
            "http.request" => attribute(span, "path"),
            "gateway.send" => attribute(span, "gateway"),
            "consumer.record" => attribute(span, "event"),
            _ => String::new(),
        };
        println!("  {} {:<18} {what}", span.span_context.span_id(), span.name);
        seen.insert(format!("{} {what}", span.name));
    }
    for expected in [
        "http.request /orders/o-1",
        "execute PlaceOrder",
        "store.append shop.order",
        "processor.handle shop.checkout shop.order.placed",
        "execute ReserveStock",
        "execute ChargeCard",
        "execute ConfirmOrder",
        "gateway.send shop.trace_gateway",
        "consumer.record shop.order.placed",
        "processor.handle shop.order_summary shop.order.placed",
        "processor.handle shop.order_summary shop.order.confirmed",
    ] {
        assert!(seen.contains(expected), "{expected} in {seen:#?}");
    }
    let _ = std::fs::remove_file(&shop_path);
    let _ = std::fs::remove_file(&other_path);
    // The test's queues and exchange go with it.
    let dead_letters = format!("{queue}.dead-letter");
    delete_exchange(&url, &exchange, &[&queue, &dead_letters]).await;
}
