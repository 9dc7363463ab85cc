//! `cqrs_examples::shop_http` served on 127.0.0.1 and driven with reqwest,
//! concurrently, on SQLite and on PostgreSQL: commands and their problems
//! (400, 401, 403, 404, 409, 422), an idempotent retry answered with the
//! first result, queries from the views, health, readiness, metrics, and a
//! shutdown in the middle of a burst that loses no answered command and
//! records no unanswered one.

#[path = "support/database.rs"]
mod database;
mod support;

use std::time::Duration;

use cqrs_core::{Cqrs, SqliteStore};
use cqrs_examples::services::Broker;
use cqrs_examples::shop_http::{self, Accepted, IDEMPOTENCY_KEY, REPLAYED, Shop};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::task::JoinSet;

struct Server {
    base: String,
    client: reqwest::Client,
    stop: tokio::sync::oneshot::Sender<()>,
    serving: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start(app: Cqrs) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(Shop::new(app).serve(listener, async {
        let _ = stopped.await;
    }));
    Server {
        base,
        client: reqwest::Client::new(),
        stop,
        serving,
    }
}

impl Server {
    fn post(&self, path: &str, user: Option<&str>, body: Value) -> reqwest::RequestBuilder {
        let request = self.client.post(format!("{}{path}", self.base)).json(&body);
        match user {
            Some(user) => request.bearer_auth(user),
            None => request,
        }
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
    }
}

fn order(n: usize) -> Value {
    json!({
        "customer": format!("customer-{n}"),
        "sku": "teapot",
        "quantity": 1 + n % 2,
        "unit_price": 1200,
        "card": "4242",
    })
}

/// Its status, and its problem's `code` (or "" for a success).
async fn outcome(response: reqwest::Response) -> (StatusCode, String) {
    let status = response.status();
    if status.is_success() {
        return (status, String::new());
    }
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json",
        "{status}"
    );
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["status"], status.as_u16());
    (status, problem["code"].as_str().unwrap().to_owned())
}

/// Per day an order was placed (UTC), the orders paid and their revenue,
/// refunds netted out, from the log.
async fn revenue_from_the_log(app: &Cqrs) -> std::collections::BTreeMap<String, (i64, i64)> {
    let mut placed = std::collections::HashMap::new();
    let mut revenue = std::collections::BTreeMap::new();
    let mut from = 1;
    loop {
        let page = app.read_all(from, 1000).await.unwrap();
        let Some(last) = page.last() else {
            return revenue;
        };
        from = last.position + 1;
        for event in &page {
            let amount = || {
                let payload: Value = event.payload.decode().unwrap();
                payload["amount"].as_i64().unwrap()
            };
            let sign = match event.event_name.as_str() {
                "shop.order.placed" => {
                    let day = event.recorded_at.date_naive().to_string();
                    placed.insert(event.aggregate_id.clone(), day);
                    continue;
                }
                "shop.payment.captured" => 1,
                "shop.payment.refunded" => -1,
                _ => continue,
            };
            let day = placed[&event.aggregate_id].clone();
            let line: &mut (i64, i64) = revenue.entry(day).or_default();
            line.0 += sign;
            line.1 += sign * amount();
        }
    }
}

async fn count(app: &Cqrs, event_name: &str) -> usize {
    let mut from = 1;
    let mut count = 0;
    loop {
        let page = app.read_all(from, 1000).await.unwrap();
        let Some(last) = page.last() else {
            return count;
        };
        from = last.position + 1;
        count += page
            .iter()
            .filter(|event| event.event_name == event_name)
            .count();
    }
}

async fn the_shop_answers_over_http(app: Cqrs) {
    let server = start(app.clone()).await;
    assert_eq!(server.get("/health").await.status(), StatusCode::OK);
    let ready: Value = server.get("/ready").await.json().await.unwrap();
    assert_eq!(ready["status"], "ready");

    // Who may do what.
    let stock = json!({ "quantity": 1000 });
    let attempts = [
        (None, StatusCode::UNAUTHORIZED, "unauthenticated"),
        (Some("alice"), StatusCode::FORBIDDEN, "forbidden"),
        (Some("admin"), StatusCode::CREATED, ""),
        (Some("admin"), StatusCode::CONFLICT, "already_exists"),
    ];
    for (user, status, code) in attempts {
        let response = server
            .post("/products/teapot", user, stock.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(
            outcome(response).await,
            (status, code.to_owned()),
            "{user:?}"
        );
    }

    // 40 orders at once, each with its key.
    let mut placing = JoinSet::new();
    for n in 0..40 {
        let request = server
            .post(&format!("/orders/o-{n}"), Some("alice"), order(n))
            .header(IDEMPOTENCY_KEY, format!("place-o-{n}"));
        placing.spawn(async move { (n, request.send().await.unwrap()) });
    }
    let mut first = vec![None; 40];
    while let Some(placed) = placing.join_next().await {
        let (n, response) = placed.unwrap();
        assert_eq!(response.status(), StatusCode::CREATED, "o-{n}");
        assert!(response.headers().get(REPLAYED).is_none());
        let accepted: Accepted = response.json().await.unwrap();
        assert_eq!(accepted.version, 1);
        first[n] = Some(accepted);
    }
    // The same requests again, once the checkout has moved the orders on:
    // each answers what it first recorded, and records nothing.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut retrying = JoinSet::new();
    for n in 0..10 {
        let request = server
            .post(&format!("/orders/o-{n}"), Some("alice"), order(n))
            .header(IDEMPOTENCY_KEY, format!("place-o-{n}"));
        retrying.spawn(async move { (n, request.send().await.unwrap()) });
    }
    while let Some(retried) = retrying.join_next().await {
        let (n, response) = retried.unwrap();
        assert_eq!(response.status(), StatusCode::CREATED, "o-{n}");
        assert_eq!(response.headers()[REPLAYED], "true");
        let accepted: Accepted = response.json().await.unwrap();
        assert_eq!(Some(accepted), first[n], "o-{n}");
    }
    assert_eq!(count(&app, "shop.order.placed").await, 40);
    // The same key with another body is not a retry: 422, nothing recorded.
    let response = server
        .post("/orders/o-1", Some("alice"), order(2))
        .header(IDEMPOTENCY_KEY, "place-o-1")
        .send()
        .await
        .unwrap();
    assert_eq!(
        outcome(response).await,
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused".to_owned()
        )
    );
    assert_eq!(count(&app, "shop.order.placed").await, 40);

    // Problems.
    let mut zero = order(99);
    zero["quantity"] = json!(0);
    let mut free = order(99);
    free["unit_price"] = json!(0);
    let problems = [
        (
            server.post("/orders/o-0", Some("alice"), order(0)),
            StatusCode::CONFLICT,
            "already_exists",
        ),
        (
            server.post("/orders/o-99", Some("alice"), zero),
            StatusCode::UNPROCESSABLE_ENTITY,
            "domain",
        ),
        (
            server.post("/orders/o-99", Some("alice"), free),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
        ),
        (
            server.post("/orders/o-99", Some("alice"), json!({ "sku": 3 })),
            StatusCode::BAD_REQUEST,
            "bad_body",
        ),
        (
            server.post(
                "/orders/o-99/cancel",
                Some("alice"),
                json!({ "reason": "x" }),
            ),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
    ];
    for (request, status, code) in problems {
        let response = request.send().await.unwrap();
        assert_eq!(outcome(response).await, (status, code.to_owned()));
    }
    assert_eq!(
        outcome(server.get("/orders/o-99").await).await,
        (StatusCode::NOT_FOUND, "not_found".to_owned())
    );

    // The read side catches up: every order confirmed by the checkout,
    // whose commands carried alice as their user.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    for n in 0..40 {
        loop {
            let response = server.get(&format!("/orders/o-{n}")).await;
            if response.status() == StatusCode::OK {
                let summary: Value = response.json().await.unwrap();
                if summary["status"] == "confirmed" {
                    break;
                }
            }
            assert!(tokio::time::Instant::now() < deadline, "o-{n} confirmed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let payments = app.read_all(1, 10_000).await.unwrap();
    assert!(
        payments
            .iter()
            .filter(|event| event.aggregate_type == "shop.payment")
            .all(|event| event.metadata.values.get("user").map(String::as_str) == Some("alice"))
    );
    // 60 units reserved for the 40 orders, as the stock view sees it.
    loop {
        let level: Value = server.get("/products/teapot").await.json().await.unwrap();
        if level["reserved"] == 60 {
            assert_eq!(level["available"], 1000 - 60, "{level}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{level}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // One customer's orders, newest first, a page at a time.
    for n in 0..5 {
        let mut body = order(n);
        body["customer"] = json!("carol");
        let response = server
            .post(&format!("/orders/carol-{n}"), Some("alice"), body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
    }
    // Every page, following `next`, once the summaries have all five.
    let pages = loop {
        let mut pages: Vec<Vec<String>> = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut path = "/customers/carol/orders?limit=2".to_owned();
            if let Some(after) = &after {
                path.push_str(&format!("&after={after}"));
            }
            let page: Value = server.get(&path).await.json().await.unwrap();
            let ids = page["orders"]
                .as_array()
                .unwrap()
                .iter()
                .map(|order| order["id"].as_str().unwrap().to_owned())
                .collect();
            pages.push(ids);
            match page["next"].as_str() {
                Some(next) => after = Some(next.to_owned()),
                None => break,
            }
        }
        if pages.concat().len() == 5 {
            break pages;
        }
        assert!(tokio::time::Instant::now() < deadline, "{pages:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let newest_first: Vec<String> = (0..5).rev().map(|n| format!("carol-{n}")).collect();
    assert_eq!(pages.concat(), newest_first, "{pages:?}");
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2, 1]);
    let cancelled: Value = server
        .get("/customers/carol/orders?status=cancelled")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(cancelled, json!({ "orders": [], "next": null }));
    for (path, code) in [
        ("/customers/carol/orders?after=zz", "bad_cursor"),
        ("/customers/carol/orders?limit=101", "bad_query"),
    ] {
        assert_eq!(
            outcome(server.get(path).await).await,
            (StatusCode::BAD_REQUEST, code.to_owned())
        );
    }

    // The revenue report, in plain SQL over the table projection: per day
    // of placement, the payments captured less those refunded.
    loop {
        let expected = revenue_from_the_log(&app).await;
        let mut reported = std::collections::BTreeMap::new();
        for day in expected.keys() {
            let report: Value = server
                .get(&format!("/reports/revenue?day={day}"))
                .await
                .json()
                .await
                .unwrap();
            for line in report["products"].as_array().unwrap() {
                let figures = (
                    line["orders"].as_i64().unwrap(),
                    line["revenue"].as_i64().unwrap(),
                );
                reported.insert(
                    (day.clone(), line["sku"].as_str().unwrap().to_owned()),
                    figures,
                );
            }
        }
        let expected: std::collections::BTreeMap<(String, String), (i64, i64)> = expected
            .into_iter()
            .map(|(day, figures)| ((day, "teapot".to_owned()), figures))
            .collect();
        if reported == expected && !expected.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{reported:?} {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        outcome(server.get("/reports/revenue?day=yesterday").await).await,
        (StatusCode::BAD_REQUEST, "bad_query".to_owned())
    );

    let metrics = server.get("/metrics").await.text().await.unwrap();
    for line in [
        r#"cqrs_commands_total{aggregate_type="shop.order",outcome="ok"}"#,
        r#"cqrs_commands_total{aggregate_type="shop.order",outcome="duplicate"}"#,
        r#"cqrs_commands_total{aggregate_type="shop.stock",outcome="rejected"}"#,
        "cqrs_append_seconds",
        r#"cqrs_processor_lag_events{processor="shop.checkout"}"#,
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }

    // A burst, and the shutdown once the first answer is back: each
    // request is answered 201 or never reaches the app, and the log holds
    // exactly the answered orders.
    let mut burst = JoinSet::new();
    for n in 100..160 {
        let request = server.post(&format!("/orders/o-{n}"), Some("alice"), order(n));
        burst.spawn(async move { request.send().await.map(|response| response.status()) });
    }
    let mut answered = 0;
    let mut refused = 0;
    let mut stop = Some(server.stop);
    while let Some(sent) = burst.join_next().await {
        match sent.unwrap() {
            Ok(status) => {
                assert_eq!(status, StatusCode::CREATED);
                answered += 1;
                if let Some(stop) = stop.take() {
                    stop.send(()).unwrap();
                }
            }
            Err(error) => {
                assert!(error.is_connect() || error.is_request(), "{error:?}");
                refused += 1;
            }
        }
    }
    tokio::time::timeout(Duration::from_secs(30), server.serving)
        .await
        .expect("the server stops")
        .unwrap()
        .unwrap();
    assert!(
        app.processors()
            .status()
            .iter()
            .all(|status| status.segments.iter().all(|segment| !segment.owned_here)),
        "the processors gave their segments up"
    );
    assert!(answered >= 1);
    // 40 orders, carol's 5, and those the burst got answered.
    assert_eq!(
        count(&app, "shop.order.placed").await,
        45 + answered,
        "{refused} refused"
    );
    println!("burst at shutdown: {answered} answered, {refused} refused");
}

/// A scripted run of the service publishing through RabbitMQ: every metric
/// the runtime records is on `/metrics`, the gateway's counts matching the
/// orders' events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_after_a_scripted_run() {
    let Some(url) = support::require("CQRS_RABBITMQ_URL", |url| async move { url }).await else {
        return;
    };
    let file = support::TempFile::new("shop-http-metrics");
    let store = SqliteStore::open(file.path()).await.unwrap();
    let exchange = format!("shop-metrics-{}", cqrs_core::Uuid::now_v7().simple());
    let broker = Broker::RabbitMq(url.clone());
    let app = shop_http::builder(store)
        .gateway(shop_http::gateway(&broker, &exchange))
        .build()
        .unwrap();
    let server = start(app.clone()).await;
    server
        .post("/products/teapot", Some("admin"), json!({ "quantity": 10 }))
        .send()
        .await
        .unwrap();
    for n in 0..5 {
        let response = server
            .post(&format!("/orders/m-{n}"), Some("alice"), order(n))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
    }
    // The checkout confirms all five; the gateway publishes both events of
    // each.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let metrics = loop {
        let metrics = server.get("/metrics").await.text().await.unwrap();
        let confirmed = metrics.lines().any(|line| {
            line.starts_with(r#"cqrs_gateway_confirmed_total{gateway="shop.gateway"}"#)
                && line.ends_with(" 10")
        });
        if confirmed {
            break metrics;
        }
        assert!(tokio::time::Instant::now() < deadline, "{metrics}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for family in [
        "cqrs_commands_total",
        "cqrs_command_retries_total",
        "cqrs_command_conflicts_total",
        "cqrs_append_seconds",
        "cqrs_events_appended_total",
        "cqrs_processor_lag_events",
        "cqrs_processor_lag_seconds",
        "cqrs_processor_parked",
        "cqrs_gateway_published_total",
        "cqrs_gateway_confirmed_total",
    ] {
        assert!(
            metrics.contains(&format!("# TYPE {family} ")),
            "{family} in\n{metrics}"
        );
    }
    assert!(metrics.contains(r#"cqrs_gateway_published_total{gateway="shop.gateway"} 10"#));
    server.stop.send(()).unwrap();
    server.serving.await.unwrap().unwrap();
    let connection = lapin::Connection::connect(&url, lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel
        .exchange_delete(exchange.as_str().into(), Default::default())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sqlite() {
    let file = support::TempFile::new("shop-http");
    let store = SqliteStore::open(file.path()).await.unwrap();
    the_shop_answers_over_http(shop_http::app(store).unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres() {
    // A database of its own: the revenue tables are the database's, not
    // the prefix's.
    if support::server("CQRS_POSTGRES_URL").is_none() {
        return;
    }
    let database = database::Database::create("shop_http")
        .await
        .unwrap()
        .unwrap();
    let store =
        support::postgres_store(&database.url, &support::unique_prefix("shop_http"), 10).await;
    the_shop_answers_over_http(shop_http::app(store).unwrap()).await;
    database.drop().await;
}
