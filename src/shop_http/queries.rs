//! The query endpoints, read from the shop's views, and the endpoints an
//! orchestrator and a metrics scraper call.

use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cqrs_core::Projection;
use serde::Serialize;

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

/// `GET /products/{sku}`: its stock level.
pub async fn stock(State(shop): State<Shop>, Path(sku): Path<String>) -> Response {
    view::<StockLevel>(&shop, &sku, "product").await
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
