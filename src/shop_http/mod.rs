//! The shop of [`crate::shop`] as an HTTP service (axum): commands as
//! `POST`, queries from its views as `GET`, an `Idempotency-Key` header as
//! the command id, errors as problem JSON, health and readiness, Prometheus
//! metrics, an `http.request` span per request that continues the
//! caller's W3C trace, and a graceful shutdown that drains the requests in flight and
//! then stops the processors.
//!
//! | endpoint | does |
//! |---|---|
//! | `POST /products/{sku}` `{"quantity"}` | `AddProduct` (admin), 201 |
//! | `POST /products/{sku}/restock` `{"quantity"}` | `Restock` (admin), 200 |
//! | `POST /orders/{id}` `PlaceOrder` | places an order, 201; the checkout takes it on |
//! | `POST /orders/{id}/cancel` `{"reason"}` | `CancelOrder`, 200 |
//! | `GET /orders/{id}` | the order's summary view |
//! | `GET /customers/{customer}/orders?status=&limit=&after=` | the customer's orders, newest first, a page at a time (`{"orders", "next"}`) |
//! | `GET /products/{sku}` | the product's stock level view |
//! | `GET /reports/revenue?day=YYYY-MM-DD` | the orders paid and the revenue per product that day, in plain SQL over the `shop.revenue` table projection (`{"day", "products"}`) |
//! | `GET /health`, `GET /ready` | liveness; readiness (log reachable, no processor stopped, not shutting down) |
//! | `GET /metrics` | Prometheus text |
//!
//! A command answers `{"aggregate_id", "version", "position"}`; a request
//! sent again by the same user to the same endpoint with the same
//! `Idempotency-Key` runs nothing and answers what the first one recorded,
//! with `Idempotent-Replayed: true`; the same key with another body is 422
//! `idempotency_key_reused`. Problems:
//! 400 a body that is not the command, 401 no user, 403 a user who may not,
//! 404 no such aggregate or view, 409 it exists already or other writers
//! won every retry, 422 the aggregate or a layer refused the command, 503
//! the database is unavailable.

mod access;
mod commands;
mod problem;
mod queries;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use cqrs_core::broker::{Gateway, JetStream, RabbitMq};
use cqrs_core::{BuildError, Cqrs, CqrsBuilder, EventStore, PostgresStore, SqliteStore};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing::Instrument;

use crate::services::Broker;
use crate::shop::{self, AddProduct, CancelOrder, Order, PlaceOrder, Restock};

pub use access::{ADMIN, USER, authorize, validate};
pub use commands::{Accepted, Caller, IDEMPOTENCY_KEY, REPLAYED};
pub use problem::Problem;

/// Where the shop keeps its log and views, and where it publishes its
/// orders, if anywhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub database: Database,
    /// `--rabbitmq URL` or `--nats URL`: a gateway publishes the orders'
    /// events to exchange (or subject prefix) `shop`.
    pub broker: Option<Broker>,
}

/// A SQLite file or a PostgreSQL URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    /// A SQLite file.
    Sqlite(String),
    /// A PostgreSQL URL.
    Postgres(String),
}

impl Config {
    /// Reads `--sqlite FILE` or `--postgres URL` (`shop.sqlite` by
    /// default), and `--rabbitmq URL` or `--nats URL`.
    pub fn from_args(args: &[String]) -> Result<Self, String> {
        let mut config = Self {
            database: Database::Sqlite("shop.sqlite".into()),
            broker: None,
        };
        for (at, arg) in args.iter().enumerate() {
            let value = || {
                args.get(at + 1)
                    .cloned()
                    .ok_or_else(|| format!("{arg} needs a value"))
            };
            match arg.as_str() {
                "--sqlite" => config.database = Database::Sqlite(value()?),
                "--postgres" => config.database = Database::Postgres(value()?),
                "--rabbitmq" => config.broker = Some(Broker::RabbitMq(value()?)),
                "--nats" => config.broker = Some(Broker::Nats(value()?)),
                _ => {}
            }
        }
        Ok(config)
    }
}

/// The shop's app over `store`: the checkout and both views running, and
/// the access layers before every command. Add a [`gateway`] to publish.
pub fn builder(store: impl EventStore) -> CqrsBuilder {
    Cqrs::builder(store)
        .without_event_handlers()
        .host::<shop::Shop>()
        .layer(authorize)
        .layer(validate)
        .poll_interval(Duration::from_millis(50))
}

/// [`builder`], built.
pub fn app(store: impl EventStore) -> Result<Cqrs, BuildError> {
    builder(store).build()
}

/// A gateway `shop.gateway` that publishes the orders' events to
/// `broker`, on exchange `exchange` (RabbitMQ) or subjects `exchange.>` in
/// stream `EXCHANGE` (NATS).
pub fn gateway(broker: &Broker, exchange: &str) -> Gateway {
    let gateway = match broker {
        Broker::RabbitMq(url) => Gateway::new("shop.gateway", RabbitMq::new(url, exchange)),
        Broker::Nats(url) => Gateway::new(
            "shop.gateway",
            JetStream::new(
                url,
                exchange.to_uppercase().replace(['.', '-'], "_"),
                exchange,
            ),
        ),
    };
    gateway.aggregate::<Order>()
}

/// The shop's app as `config` says.
pub async fn open(config: &Config) -> Result<Cqrs, Box<dyn std::error::Error + Send + Sync>> {
    let builder = match &config.database {
        Database::Sqlite(path) => builder(SqliteStore::open(path).await?),
        Database::Postgres(url) => builder(PostgresStore::connect(url).await?),
    };
    let builder = match &config.broker {
        Some(broker) => builder.gateway(gateway(broker, "shop")),
        None => builder,
    };
    Ok(builder.build()?)
}

/// What every handler gets: the app (cheap to clone, shared), the metrics
/// and whether the service is shutting down.
#[derive(Debug, Clone)]
pub struct Shop {
    pub app: Cqrs,
    metrics: Option<PrometheusHandle>,
    stopping: Arc<AtomicBool>,
}

impl Shop {
    /// The service's state over `app`, with the process's Prometheus
    /// recorder (installed on first use, unless another recorder was).
    pub fn new(app: Cqrs) -> Self {
        Self {
            app,
            metrics: prometheus(),
            stopping: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The routes of the table above.
    pub fn router(&self) -> Router {
        Router::new()
            .route(
                "/products/{sku}",
                post(commands::create::<AddProduct>).get(queries::stock),
            )
            .route("/products/{sku}/restock", post(commands::change::<Restock>))
            .route(
                "/orders/{id}",
                post(commands::create::<PlaceOrder>).get(queries::order),
            )
            .route("/orders/{id}/cancel", post(commands::change::<CancelOrder>))
            .route(
                "/customers/{customer}/orders",
                get(queries::customer_orders),
            )
            .route("/reports/revenue", get(queries::revenue))
            .route("/health", get(queries::health))
            .route("/ready", get(queries::ready))
            .route("/metrics", get(queries::metrics))
            .layer(axum::middleware::from_fn(traced))
            .with_state(self.clone())
    }

    /// Serves on `listener` with the processors running until `shutdown`
    /// resolves; then answers `/ready` with 503, finishes the requests in
    /// flight, and stops the processors after their batches.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let running = self.app.processors().run();
        let processors = running.shutdown();
        let processing = tokio::spawn(running);
        let stopping = self.stopping.clone();
        let served = axum::serve(listener, self.router())
            .with_graceful_shutdown(async move {
                shutdown.await;
                stopping.store(true, Ordering::SeqCst);
            })
            .await;
        processors.now().await;
        let _ = processing.await;
        served
    }
}

/// Runs a request in an `http.request` span that continues the caller's
/// trace (its `traceparent` and `tracestate` headers), so the commands it
/// sends, and what they cause, join that trace.
async fn traced(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let span = tracing::info_span!(
        "http.request",
        method = %request.method(),
        path = request.uri().path(),
        status = tracing::field::Empty,
    );
    {
        let header = |name: &str| {
            request
                .headers()
                .get(name)
                .and_then(|value| value.to_str().ok())
        };
        if let Some(traceparent) = header("traceparent") {
            cqrs_core::telemetry::continue_trace(&span, traceparent, header("tracestate"));
        }
    }
    let response = next.run(request).instrument(span.clone()).await;
    span.record("status", response.status().as_u16());
    response
}

/// The process's Prometheus handle, if this crate installed the recorder.
fn prometheus() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new().install_recorder().ok()?;
            // Histograms keep their samples until upkeep drains them, whether
            // or not anyone scrapes.
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("prometheus-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(Duration::from_secs(5));
                        upkeep.run_upkeep();
                    }
                })
                .ok()?;
            Some(handle)
        })
        .clone()
}
