//! The conformance suite on every backend: memory, SQLite (file and memory)
//! and PostgreSQL. PostgreSQL tests need `CQRS_POSTGRES_URL`, which
//! `scripts/with-postgres` provides.

#[macro_use]
mod conformance;
mod support;

use cqrs_core::{MemoryStore, PostgresStore, SqliteStore};
use support::TempFile;

async fn memory() -> Option<(MemoryStore, ())> {
    Some((MemoryStore::new(), ()))
}

async fn sqlite_file() -> Option<(SqliteStore, TempFile)> {
    let file = TempFile::new("conformance");
    let store = SqliteStore::open(file.path()).await.unwrap();
    Some((store, file))
}

async fn sqlite_memory() -> Option<(SqliteStore, ())> {
    Some((SqliteStore::in_memory().await.unwrap(), ()))
}

/// A store in fresh tables of the shared test database: each test gets a
/// table prefix of its own, so tests run side by side.
async fn postgres() -> Option<(PostgresStore, ())> {
    support::require("CQRS_POSTGRES_URL", |url| async move {
        let prefix = support::unique_prefix("conf");
        (support::postgres_store(&url, &prefix, 12).await, ())
    })
    .await
}

conformance!(on_memory, memory());
conformance!(on_sqlite_file, sqlite_file());
conformance!(on_sqlite_memory, sqlite_memory());
conformance!(on_postgres, postgres());
