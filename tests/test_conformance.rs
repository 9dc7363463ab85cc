//! The conformance suite on every backend: memory, SQLite (file and memory)
//! and PostgreSQL. PostgreSQL tests need `CQRS_POSTGRES_URL`, which
//! `scripts/with-postgres` provides.

#[macro_use]
mod conformance;

use std::sync::atomic::{AtomicU32, Ordering};

use cqrs_core::{MemoryStore, PostgresStore, SqliteStore, TablePrefix};

async fn memory() -> Option<(MemoryStore, ())> {
    Some((MemoryStore::new(), ()))
}

async fn sqlite_file() -> Option<(SqliteStore, TempFile)> {
    let file = TempFile::new("sqlite");
    let store = SqliteStore::open(&file.0).await.unwrap();
    Some((store, file))
}

async fn sqlite_memory() -> Option<(SqliteStore, ())> {
    Some((SqliteStore::in_memory().await.unwrap(), ()))
}

/// A store in fresh tables of the shared test database: each test gets a
/// table prefix of its own, so tests run side by side.
async fn postgres() -> Option<(PostgresStore, ())> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    conformance::require("CQRS_POSTGRES_URL", |url| async move {
        let prefix = format!(
            "conf{}_{}_",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(12)
            .connect(&url)
            .await
            .unwrap();
        let store = PostgresStore::from_pool(pool, TablePrefix::new(prefix).unwrap())
            .await
            .unwrap();
        (store, ())
    })
    .await
}

/// A path under the system's temp directory, removed with its WAL files on drop.
pub struct TempFile(std::path::PathBuf);

impl TempFile {
    fn new(extension: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "cqrs-test-{}-{}.{extension}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        TempFile(std::env::temp_dir().join(name))
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

conformance!(on_memory, memory());
conformance!(on_sqlite_file, sqlite_file());
conformance!(on_sqlite_memory, sqlite_memory());
conformance!(on_postgres, postgres());
