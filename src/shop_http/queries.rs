//! The query endpoints, read from the shop's views, and the endpoints an
//! orchestrator and a metrics scraper call.

use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cqrs_core::sqlx;
use cqrs_core::view::{Cursor, QueryError, SqlPool};
use cqrs_core::{Indexed, Projection};
use serde::{Deserialize, Serialize};

use super::Shop;
use super::problem::Problem;
use crate::shop::{OrderSummary, StockLevel};

async fn view<P: Projection + Serialize>(shop: &Shop, id: &str, what: &str) -> Response {
    match shop.app.views().get::<P>(id).await {
        Ok(Some(view)) => Json(view).into_response(),
        Ok(None) => Problem::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no {what} `{id}`"),
        )
        .into_response(),
        Err(error) => Problem::of_view(&error).into_response(),
    }
}

/// `GET /orders/{id}`: the order's summary, as the projection has it.
pub async fn order(State(shop): State<Shop>, Path(id): Path<String>) -> Response {
    view::<OrderSummary>(&shop, &id, "order").await
}

/// What `GET /customers/{customer}/orders` takes after the `?`.
#[derive(Debug, Deserialize)]
pub struct OrdersQuery {
    /// Only orders in this status (`placed`, `confirmed`, `cancelled`).
    pub status: Option<String>,
    /// How many per page (20 by default, at most 100).
    pub limit: Option<usize>,
    /// The previous page's `next`.
    pub after: Option<String>,
}

/// The most orders one page of `GET /customers/{customer}/orders` holds.
const MOST_ORDERS: usize = 100;

/// `GET /customers/{customer}/orders?status=&limit=&after=`: the
/// customer's orders, newest first, a page at a time: `{"orders": [{"id",
/// ..summary}], "next": cursor or null}`, from a query on the summaries'
/// declared index.
pub async fn customer_orders(
    State(shop): State<Shop>,
    Path(customer): Path<String>,
    Query(query): Query<OrdersQuery>,
) -> Response {
    let limit = query.limit.unwrap_or(20);
    if limit > MOST_ORDERS {
        let detail = format!("a page holds at most {MOST_ORDERS} orders");
        return Problem::new(StatusCode::BAD_REQUEST, "bad_query", detail).into_response();
    }
    let after = match query.after.as_deref().map(str::parse::<Cursor>).transpose() {
        Ok(after) => after,
        Err(error) => {
            return Problem::new(StatusCode::BAD_REQUEST, "bad_cursor", error.to_string())
                .into_response();
        }
    };
    let f = OrderSummary::FIELDS;
    let mut orders = shop
        .app
        .views()
        .query::<OrderSummary>()
        .filter(f.customer.eq(customer));
    if let Some(status) = query.status {
        orders = orders.filter(f.status.eq(status));
    }
    let page = orders
        .order_by(f.placed_at.desc())
        .limit(limit)
        .after(after.as_ref())
        .fetch()
        .await;
    match page {
        Ok(page) => {
            let orders: Vec<serde_json::Value> = page
                .items
                .into_iter()
                .map(|(id, summary)| {
                    let mut order = serde_json::json!({ "id": id });
                    if let (Some(order), Ok(serde_json::Value::Object(fields))) =
                        (order.as_object_mut(), serde_json::to_value(summary))
                    {
                        order.extend(fields);
                    }
                    order
                })
                .collect();
            let next = page.next.map(|next| next.to_string());
            Json(serde_json::json!({ "orders": orders, "next": next })).into_response()
        }
        Err(QueryError::View(error)) => Problem::of_view(&error).into_response(),
        Err(
            error @ (QueryError::CursorMismatch | QueryError::Cursor(_) | QueryError::Key { .. }),
        ) => Problem::new(StatusCode::BAD_REQUEST, "bad_cursor", error.to_string()).into_response(),
        Err(error) => Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "query",
            error.to_string(),
        )
        .into_response(),
    }
}

/// `GET /products/{sku}`: its stock level.
pub async fn stock(State(shop): State<Shop>, Path(sku): Path<String>) -> Response {
    view::<StockLevel>(&shop, &sku, "product").await
}

/// What `GET /reports/revenue` takes after the `?`.
#[derive(Debug, Deserialize)]
pub struct RevenueQuery {
    /// The day, `YYYY-MM-DD` (UTC).
    pub day: String,
}

/// One product's line of the revenue report.
#[derive(Debug, Serialize)]
pub struct ProductRevenue {
    pub sku: String,
    /// Orders paid, less those refunded.
    pub orders: i64,
    pub revenue: i64,
}

/// The revenue report in plain SQL: `shop_revenue` is a view of the
/// serving version's table, whatever its number.
const REVENUE: &str = "SELECT sku, orders, revenue FROM shop_revenue WHERE day = $1 \
                       ORDER BY revenue DESC, sku";

/// `GET /reports/revenue?day=YYYY-MM-DD`: the orders paid and the revenue
/// per product that day, most revenue first: `{"day", "products": [{"sku",
/// "orders", "revenue"}]}`, from the tables of the `shop.revenue`
/// projection.
pub async fn revenue(State(shop): State<Shop>, Query(query): Query<RevenueQuery>) -> Response {
    if chrono::NaiveDate::parse_from_str(&query.day, "%Y-%m-%d").is_err() {
        let detail = format!("`{}` is not a day: YYYY-MM-DD", query.day);
        return Problem::new(StatusCode::BAD_REQUEST, "bad_query", detail).into_response();
    }
    let products = match shop.app.views().sql() {
        Some(SqlPool::Sqlite(pool)) => {
            sqlx::query_as::<_, (String, i64, i64)>(REVENUE)
                .bind(&query.day)
                .fetch_all(&pool)
                .await
        }
        Some(SqlPool::Postgres(pool)) => {
            sqlx::query_as::<_, (String, i64, i64)>(REVENUE)
                .bind(&query.day)
                .fetch_all(&pool)
                .await
        }
        _ => {
            let detail = "the revenue report needs the views in SQLite or PostgreSQL";
            return Problem::new(StatusCode::NOT_IMPLEMENTED, "no_tables", detail).into_response();
        }
    };
    match products {
        Ok(rows) => {
            let products: Vec<ProductRevenue> = rows
                .into_iter()
                .map(|(sku, orders, revenue)| ProductRevenue {
                    sku,
                    orders,
                    revenue,
                })
                .collect();
            Json(serde_json::json!({ "day": query.day, "products": products })).into_response()
        }
        Err(error) => Problem::of_sql(&error).into_response(),
    }
}

/// `GET /health`: the process answers.
pub async fn health() -> Response {
    Json(serde_json::json!({ "status": "ok" })).into_response()
}

/// `GET /ready`: the log answers, no processor has stopped, and the
/// service is not shutting down; 503 otherwise.
pub async fn ready(State(shop): State<Shop>) -> Response {
    if shop.stopping.load(Ordering::SeqCst) {
        return Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the service is shutting down",
        )
        .into_response();
    }
    let position = match shop.app.last_position().await {
        Ok(position) => position,
        Err(error) => return Problem::of_store(&error).into_response(),
    };
    let stopped: Vec<&str> = shop
        .app
        .processors()
        .status()
        .into_iter()
        .filter(|status| status.stopped)
        .map(|status| status.name)
        .collect();
    if !stopped.is_empty() {
        return Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "processor_stopped",
            format!("stopped: {}", stopped.join(", ")),
        )
        .into_response();
    }
    Json(serde_json::json!({ "status": "ready", "position": position })).into_response()
}

/// `GET /metrics`: the Prometheus text of every metric the process
/// recorded.
pub async fn metrics(State(shop): State<Shop>) -> Response {
    let Some(handle) = &shop.metrics else {
        return Problem::new(
            StatusCode::NOT_FOUND,
            "no_metrics",
            "another metrics recorder was installed first",
        )
        .into_response();
    };
    let mut response = handle.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    response
}
