//! What the behaviour tests share, apart from the suites that use it: the
//! servers they need, names and files no other run uses, stores in fresh
//! tables, waiting for a condition, cleaning up a broker's names, and the
//! three backends as the read-side tests use them (`backends.rs`). Each
//! test crate includes it with `mod support;` and uses part of it.
#![allow(dead_code)]

pub mod backends;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use cqrs_core::store::{NewEvent, PostgresOptions, TablePrefix};
use cqrs_core::{JsonPayload, Metadata, PostgresStore, Uuid};
use serde_json::Value;

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

/// Runs `make` unless the backend's server is not configured: outside CI
/// such tests are skipped with a note, in CI (`CI=true`) they fail.
pub async fn require<T, F: Future<Output = T>>(
    url_var: &str,
    make: impl FnOnce(String) -> F,
) -> Option<T> {
    Some(make(server(url_var)?).await)
}

/// A path under the system's temp directory, unique to this process and
/// call, removed with its WAL files on drop.
#[derive(Debug)]
pub struct TempFile(PathBuf);

impl TempFile {
    /// A fresh path named `cqrs-{tag}-{pid}-{n}.sqlite`.
    pub fn new(tag: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "cqrs-{tag}-{}-{}.sqlite",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        TempFile(std::env::temp_dir().join(name))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut path = self.0.clone().into_os_string();
            path.push(suffix);
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A table prefix no other test or run uses: `{tag}{pid}_{n}_`.
pub fn unique_prefix(tag: &str) -> TablePrefix {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    TablePrefix::new(format!(
        "{tag}{}_{}_",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    ))
    .unwrap()
}

/// A PostgreSQL store at `url` in fresh tables under `prefix`, with a pool
/// of `connections`.
pub async fn postgres_store(url: &str, prefix: &TablePrefix, connections: u32) -> PostgresStore {
    PostgresOptions::new(url)
        .prefix(prefix.clone())
        .max_connections(connections)
        .connect()
        .await
        .unwrap()
}

/// A new event of the log named `name`, with `payload`.
pub fn new_event(name: &'static str, version: u32, payload: Value) -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        event_name: name,
        event_version: version,
        metadata: Metadata::default(),
        payload: JsonPayload::from_text(payload.to_string()),
        tags: Vec::new(),
    }
}
