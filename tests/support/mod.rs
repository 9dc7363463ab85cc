//! What the behaviour tests share: the servers they need, names no other
//! run uses, waiting for a condition, and cleaning up a broker's names.
//! Each test crate includes it with `mod support;` and uses part of it.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use cqrs_core::Uuid;

/// A server's URL from `variable`, or `None` to skip the test; under CI
/// (`CI=true`) a missing server fails it.
pub fn server(variable: &str) -> Option<String> {
    match std::env::var(variable) {
        Ok(url) => Some(url),
        Err(_) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{variable} is not set: run the tests through scripts/test")
        }
        Err(_) => {
            eprintln!(
                "skipped: {variable} is not set (scripts/with-brokers and scripts/with-postgres set it)"
            );
            None
        }
    }
}

/// A name no other run uses.
pub fn unique(tag: &str) -> String {
    format!("cqrs-test-{tag}-{}", Uuid::now_v7().simple())
}

/// A SQLite file no other run uses.
pub fn temp_path(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("{}.sqlite", unique(tag)))
}

/// Waits until `done`, failing the test after `limit`.
pub async fn eventually(what: &str, limit: Duration, mut done: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    while !done().await {
        assert!(started.elapsed() < limit, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Deletes a RabbitMQ test's queues and exchange.
pub async fn delete_exchange(url: &str, exchange: &str, queues: &[&str]) {
    use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
    let connection = lapin::Connection::connect(url, lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    for queue in queues {
        channel
            .queue_delete((*queue).into(), QueueDeleteOptions::default())
            .await
            .unwrap();
    }
    channel
        .exchange_delete(exchange.into(), ExchangeDeleteOptions::default())
        .await
        .unwrap();
}

/// Deletes a NATS test's stream and its dead letters.
pub async fn delete_stream(url: &str, stream: &str) {
    let context = async_nats::jetstream::new(async_nats::connect(url).await.unwrap());
    context.delete_stream(stream).await.unwrap();
    // The dead letters' stream exists only once a consumer opened.
    let _ = context.delete_stream(format!("{stream}-DEAD-LETTER")).await;
}
