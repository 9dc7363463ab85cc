//! Shared setup for the benchmarks in `benches/`: the bank account on this
//! framework (`cqrs_examples::bank`), written by hand without the macros (`hand`), and on
//! cqrs-es (`peer`); stores on every backend, each in fresh tables or files.

pub mod hand;
pub mod peer;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use cqrs_core::store::{NewEvent, PostgresOptions, TablePrefix};
use cqrs_core::{JsonPayload, Metadata, PostgresStore, SqliteStore, Uuid};

/// The PostgreSQL server to measure against, if configured
/// (`scripts/with-postgres` sets it). Benchmarks of PostgreSQL are skipped
/// without it, except in CI (`CI=true`), where a missing server fails.
pub fn postgres_url() -> Option<String> {
    let url = std::env::var("CQRS_POSTGRES_URL").ok();
    let in_ci = std::env::var("CI").is_ok_and(|ci| ci == "true");
    assert!(
        url.is_some() || !in_ci,
        "CQRS_POSTGRES_URL is not set: in CI the benchmarks run under scripts/with-postgres"
    );
    url
}

/// A PostgreSQL database of a benchmark's own on the server at `url`, for
/// what lives in a database rather than under a table prefix (the tables
/// of table projections); dropped with [`drop`](Self::drop).
pub struct TempPostgres {
    admin: String,
    name: String,
    /// The database's URL.
    pub url: String,
}

impl TempPostgres {
    pub async fn create(url: &str, name: &str) -> Self {
        let (base, _) = url
            .rsplit_once('/')
            .expect("CQRS_POSTGRES_URL names a database");
        let name = format!("cqrs_bench_{name}_{}", std::process::id());
        let database = Self {
            admin: url.to_owned(),
            url: format!("{base}/{name}"),
            name,
        };
        database
            .run(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                database.name
            ))
            .await;
        database
            .run(&format!("CREATE DATABASE {}", database.name))
            .await;
        database
    }

    async fn run(&self, statement: &str) {
        use sqlx::Connection;
        let mut admin = sqlx::PgConnection::connect(&self.admin)
            .await
            .expect("the server");
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement.to_owned()))
            .execute(&mut admin)
            .await
            .expect(statement);
    }

    pub async fn drop(self) {
        self.run(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ))
        .await;
    }
}

/// A PostgreSQL store in tables of its own.
pub async fn postgres_store(url: &str, name: &str) -> PostgresStore {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let prefix = format!(
        "bench{}_{name}{}_",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    );
    PostgresOptions::new(url)
        .prefix(TablePrefix::new(prefix).expect("a valid prefix"))
        .connect()
        .await
        .expect("connect to CQRS_POSTGRES_URL and migrate")
}

/// A SQLite file in the temp directory, deleted (with its WAL) on drop.
#[derive(Debug)]
pub struct TempDatabase(pub PathBuf);

impl TempDatabase {
    pub fn new(name: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let file = format!(
            "cqrs-bench-{name}-{}-{}.sqlite",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        Self(std::env::temp_dir().join(file))
    }

    pub async fn open(&self) -> SqliteStore {
        SqliteStore::open(&self.0)
            .await
            .expect("open the SQLite file")
    }
}

impl Drop for TempDatabase {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut path = self.0.clone().into_os_string();
            path.push(suffix);
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A batch of `size` small events, as `Cqrs::execute` would hand to a store.
pub fn batch(size: usize) -> Vec<NewEvent> {
    (0..size)
        .map(|n| NewEvent {
            event_id: Uuid::now_v7(),
            event_name: "account.deposited",
            event_version: 1,
            metadata: Metadata {
                correlation_id: Some(Uuid::now_v7()),
                ..Metadata::default()
            },
            payload: JsonPayload::from_text(format!(r#"{{"amount":{n},"balance":{}}}"#, n * 2)),
            tags: Vec::new(),
        })
        .collect()
}
