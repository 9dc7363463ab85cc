//! What only the SQL backends have: files that outlive the process, schemas
//! created by concurrent starts, table prefixes, and rows written straight
//! into the database (old versions, corrupt data).

mod conformance;
mod support;

use std::path::Path;
use std::sync::Arc;

use conformance::ledger::{Credit, Ledger, Open};
use cqrs_core::store::{PostgresOptions, SqliteOptions, TablePrefix};
use cqrs_core::{
    Cqrs, EventStore, LoadError, PayloadError, PostgresStore, SqliteStore, StoreError,
};
use serde_json::json;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{AssertSqlSafe, PgPool, SqlitePool};
use support::{TempFile, new_event, require, unique_prefix};

fn app<S: EventStore>(store: S) -> Cqrs {
    Cqrs::builder(store)
        .without_event_handlers()
        .without_processors()
        .build()
        .unwrap()
}

/// A pool of our own on a store's file, to read and write its tables
/// directly.
async fn raw_sqlite(path: &Path) -> SqlitePool {
    SqlitePool::connect_with(SqliteConnectOptions::new().filename(path))
        .await
        .unwrap()
}

// ---------------------------------------------------------------- SQLite

#[tokio::test]
async fn a_sqlite_file_outlives_the_store() {
    let file = TempFile::new("reopen");
    {
        let app = app(SqliteStore::open(file.path()).await.unwrap());
        app.execute("l", Open { owner: "o".into() }).await.unwrap();
        app.execute("l", Credit { amount: 4 }).await.unwrap();
    }
    let store = SqliteStore::open(file.path()).await.unwrap();
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&raw_sqlite(file.path()).await)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    let app = app(store);
    let ledger: Ledger = app.load("l").await.unwrap();
    assert_eq!(ledger.balance, 4);
    let done = app.execute("l", Credit { amount: 1 }).await.unwrap();
    assert_eq!((done.version, done.events[0].position), (3, 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_opens_of_one_file_migrate_once() {
    let file = TempFile::new("migrate");
    let opens: Vec<_> = (0..6)
        .map(|_| {
            let path = file.path().to_owned();
            tokio::spawn(async move { SqliteStore::open(path).await })
        })
        .collect();
    let mut stores = Vec::new();
    for open in opens {
        stores.push(open.await.unwrap().unwrap());
    }
    let raw = raw_sqlite(file.path()).await;
    let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM cqrs_schema_migrations")
        .fetch_all(&raw)
        .await
        .unwrap();
    assert_eq!(applied, [1, 2, 3, 4, 5]);
    let views: Vec<i64> = sqlx::query_scalar("SELECT version FROM cqrs_view_migrations")
        .fetch_all(&raw)
        .await
        .unwrap();
    assert_eq!(views, [1, 2, 3, 4, 5, 6], "the views' own migrations, once");
}

/// A file from before segments: its checkpoints become segment 0 of 1 at
/// the same position, and its views get a first revision.
#[tokio::test]
async fn a_checkpoint_from_before_segments_becomes_its_first_segment() {
    let file = TempFile::new("upgrade");
    drop(SqliteStore::open(file.path()).await.unwrap());
    let raw = raw_sqlite(file.path()).await;
    // Back to the views' schema 2, with a checkpoint and a view; 3 to 6
    // run again.
    sqlx::raw_sql(
        "DROP TABLE cqrs_segments; DROP TABLE cqrs_nodes; DROP TABLE cqrs_parked_events; \
         DROP TABLE cqrs_projections; DROP TABLE cqrs_inbox; \
         DROP TABLE cqrs_table_migrations; DROP TABLE cqrs_projection_tables; \
         DROP TABLE cqrs_read_side; \
         ALTER TABLE cqrs_views DROP COLUMN revision; ALTER TABLE cqrs_views DROP COLUMN keys; \
         CREATE TABLE cqrs_checkpoints (processor TEXT PRIMARY KEY, position INTEGER NOT NULL, updated_at INTEGER NOT NULL); \
         DELETE FROM cqrs_view_migrations WHERE version >= 3; \
         INSERT INTO cqrs_checkpoints VALUES ('old.projection', 5, 0); \
         INSERT INTO cqrs_views (projection, view_id, state) VALUES ('old.projection', 'v', '{\"n\":1}')",
    )
    .execute(&raw)
    .await
    .unwrap();
    raw.close().await;

    let views = SqliteStore::open(file.path()).await.unwrap().views();
    let segments = views.segments("old.projection").await.unwrap();
    assert_eq!(segments.len(), 1);
    assert_eq!(
        (
            segments[0].segment,
            segments[0].segments,
            segments[0].position
        ),
        (0, 1, 5)
    );
    assert!(segments[0].is_free());
    assert_eq!(views.checkpoint("old.projection").await.unwrap(), 5);
    let raw = raw_sqlite(file.path()).await;
    let revision: i64 = sqlx::query_scalar("SELECT revision FROM cqrs_views WHERE view_id = 'v'")
        .fetch_one(&raw)
        .await
        .unwrap();
    assert_eq!(revision, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_sqlite_stores_on_one_file_see_each_others_conflicts() {
    let file = TempFile::new("shared");
    let first = SqliteStore::open(file.path()).await.unwrap();
    let second = SqliteStore::open(file.path()).await.unwrap();
    first
        .append("t", "s", 0, vec![new_event("E", 1, json!({}))])
        .await
        .unwrap();
    let err = second
        .append("t", "s", 0, vec![new_event("E", 1, json!({}))])
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict(ref c) if c.actual == 1),
        "{err:?}"
    );
    let both = [first, second].map(|store| {
        tokio::spawn(async move {
            let mut landed = 0;
            while landed < 20 {
                let version = store.load("t", "s", 1).await.unwrap().len() as u64;
                match store
                    .append("t", "s", version, vec![new_event("E", 1, json!({}))])
                    .await
                {
                    Ok(_) => landed += 1,
                    Err(StoreError::Conflict(_)) => {}
                    Err(other) => panic!("{other:?}"),
                }
            }
        })
    });
    for task in both {
        task.await.unwrap();
    }
    let reader = SqliteStore::open(file.path()).await.unwrap();
    let log = reader.read_all(1, 100).await.unwrap();
    assert_eq!(
        log.iter().map(|e| e.position).collect::<Vec<_>>(),
        (1..=41).collect::<Vec<_>>()
    );
    assert_eq!(
        log.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        (1..=41).collect::<Vec<_>>()
    );
}

async fn sqlite_with_prefix(path: &Path, prefix: &str) -> Result<SqliteStore, StoreError> {
    SqliteOptions::file(path)
        .prefix(TablePrefix::new(prefix).unwrap())
        .open()
        .await
}

#[tokio::test]
async fn sqlite_prefixes_keep_logs_apart() {
    let file = TempFile::new("prefixes");
    let billing = sqlite_with_prefix(file.path(), "billing_").await.unwrap();
    let shipping = sqlite_with_prefix(file.path(), "shipping_").await.unwrap();
    billing
        .append("t", "s", 0, vec![new_event("E", 1, json!({}))])
        .await
        .unwrap();
    assert!(shipping.read_all(1, 10).await.unwrap().is_empty());
    shipping
        .append("t", "s", 0, vec![new_event("E", 1, json!({}))])
        .await
        .unwrap();
    assert_eq!(billing.read_all(1, 10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn old_versions_written_into_sqlite_are_upcast() {
    let file = TempFile::new("upcast");
    let store = SqliteStore::open(file.path()).await.unwrap();
    let raw = raw_sqlite(file.path()).await;
    let insert = "INSERT INTO cqrs_events (position, aggregate_type, aggregate_id, sequence, event_id, \
                  event_name, event_version, recorded_at, metadata, payload) \
                  VALUES (?1, 'ledger', 'raw', ?1, randomblob(16), ?2, ?3, 1700000000000000, '{}', ?4)";
    for (position, name, version, payload) in [
        (1, "ledger.opened", 1, r#"{"owner":"raw"}"#),
        (2, "ledger.credited", 1, r#"{"cents":700}"#),
    ] {
        sqlx::query(insert)
            .bind(position)
            .bind(name)
            .bind(version)
            .bind(payload)
            .execute(&raw)
            .await
            .unwrap();
    }
    let app = app(store);
    let ledger: Ledger = app.load("raw").await.unwrap();
    assert_eq!(ledger.balance, 7);
    let done = app.execute("raw", Credit { amount: 1 }).await.unwrap();
    assert_eq!(
        (
            done.version,
            done.events[0].position,
            done.events[0].event_version
        ),
        (3, 3, 2)
    );
}

#[tokio::test]
async fn corrupt_sqlite_rows_are_typed_errors() {
    let file = TempFile::new("corrupt");
    let app = app(SqliteStore::open(file.path()).await.unwrap());
    app.execute("fine", Open { owner: "f".into() })
        .await
        .unwrap();
    let pool = raw_sqlite(file.path()).await;
    let insert = "INSERT INTO cqrs_events (position, aggregate_type, aggregate_id, sequence, event_id, \
                  event_name, event_version, recorded_at, metadata, payload) \
                  VALUES (?1, 'ledger', ?2, 1, randomblob(16), 'ledger.opened', 1, 1700000000000000, ?3, ?4)";
    for (position, id, metadata, payload) in [
        (2, "bad-metadata", "not json", r#"{"owner":"x"}"#),
        (3, "bad-payload", "{}", "{not json"),
    ] {
        sqlx::query(insert)
            .bind(position)
            .bind(id)
            .bind(metadata)
            .bind(payload)
            .execute(&pool)
            .await
            .unwrap();
    }
    corrupt_rows_fail_alone(&app).await;
}

#[tokio::test]
async fn a_sqlite_schema_from_a_newer_build_is_refused() {
    let file = TempFile::new("too-new");
    sqlite_with_prefix(file.path(), "cqrs_").await.unwrap();
    sqlx::query("INSERT INTO cqrs_schema_migrations (version, applied_at) VALUES (99, 0)")
        .execute(&raw_sqlite(file.path()).await)
        .await
        .unwrap();
    let err = sqlite_with_prefix(file.path(), "cqrs_").await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::SchemaTooNew {
                found: 99,
                known: 5
            }
        ),
        "{err:?}"
    );
}

// ---------------------------------------------------------------- PostgreSQL

/// With a row of bad metadata at position 2 and one of a bad payload at 3
/// (stream `bad-payload`), each is a typed error naming its row, and the rest
/// of the store reads as before.
async fn corrupt_rows_fail_alone(app: &Cqrs) {
    let err = app.load::<Ledger>("bad-metadata").await.unwrap_err();
    assert!(
        matches!(&err, LoadError::Store(StoreError::Corrupt { at, reason }) if at.position == Some(2) && reason.contains("metadata")),
        "{err:?}"
    );
    let err = app.load::<Ledger>("bad-payload").await.unwrap_err();
    let LoadError::Decode(decode) = err else {
        panic!("{err:?}")
    };
    assert!(matches!(
        decode.source,
        PayloadError::Invalid {
            rust_type: "Opened",
            ..
        }
    ));
    assert_eq!(
        (
            decode.aggregate_id.as_str(),
            decode.sequence,
            decode.position
        ),
        ("bad-payload", 1, 3)
    );

    assert_eq!(
        app.read_all(1, 10).await.unwrap().len(),
        1,
        "a read returns the events before a corrupt row"
    );
    let err = app.read_all(2, 10).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Corrupt { at, .. } if at.position == Some(2)),
        "{err:?}"
    );
    assert_eq!(
        app.read_all(3, 10).await.unwrap().len(),
        1,
        "rows after it still read"
    );
    let ledger: Ledger = app.load("fine").await.unwrap();
    assert_eq!(ledger.balance, 0);
}

/// The test server's URL and a pool of our own on it, to read and write the
/// stores' tables directly.
async fn postgres_server() -> Option<(String, PgPool)> {
    require("CQRS_POSTGRES_URL", |url| async move {
        let pool = PgPool::connect(&url).await.unwrap();
        (url, pool)
    })
    .await
}

async fn postgres_with_prefix(
    url: &str,
    prefix: &TablePrefix,
) -> Result<PostgresStore, StoreError> {
    PostgresOptions::new(url)
        .prefix(prefix.clone())
        .max_connections(10)
        .connect()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_postgres_starts_migrate_once() {
    let Some((url, pool)) = postgres_server().await else {
        return;
    };
    let prefix = unique_prefix("mig");
    let starts: Vec<_> = (0..8)
        .map(|_| {
            let (url, prefix) = (url.clone(), prefix.clone());
            tokio::spawn(async move { postgres_with_prefix(&url, &prefix).await })
        })
        .collect();
    for start in starts {
        start.await.unwrap().unwrap();
    }
    let table = format!("{prefix}schema_migrations");
    let applied: Vec<i64> =
        sqlx::query_scalar(AssertSqlSafe(format!("SELECT version FROM {table}")))
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(applied, [1, 2, 3, 4, 5, 6, 7, 8]);
    let views: Vec<i64> = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT version FROM {prefix}view_migrations"
    )))
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(views, [1, 2, 3, 4, 5, 6], "the views' own migrations, once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_postgres_pools_see_each_others_conflicts_and_one_log() {
    let Some((url, _)) = postgres_server().await else {
        return;
    };
    let prefix = unique_prefix("two");
    let first = postgres_with_prefix(&url, &prefix).await.unwrap();
    let second = postgres_with_prefix(&url, &prefix).await.unwrap();
    first
        .append("t", "s", 0, vec![new_event("E", 1, json!({}))])
        .await
        .unwrap();
    let err = second
        .append("t", "s", 0, vec![new_event("E", 1, json!({}))])
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict(ref c) if c.expected == 0 && c.actual == 1),
        "{err:?}"
    );
    let writers: Vec<_> = [first.clone(), second.clone(), first.clone(), second.clone()]
        .into_iter()
        .map(|store| {
            tokio::spawn(async move {
                let mut landed = 0;
                while landed < 25 {
                    let version = store.load("t", "s", 1).await.unwrap().len() as u64;
                    match store
                        .append("t", "s", version, vec![new_event("E", 1, json!({}))])
                        .await
                    {
                        Ok(_) => landed += 1,
                        Err(StoreError::Conflict(_)) => {}
                        Err(other) => panic!("{other:?}"),
                    }
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    let log = second.read_all(1, 1000).await.unwrap();
    assert_eq!(
        log.iter().map(|e| e.position).collect::<Vec<_>>(),
        (1..=101).collect::<Vec<_>>()
    );
    assert_eq!(
        log.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        (1..=101).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn old_versions_written_into_postgres_are_upcast() {
    let Some((url, pool)) = postgres_server().await else {
        return;
    };
    let prefix = unique_prefix("raw");
    let store = postgres_with_prefix(&url, &prefix).await.unwrap();
    let insert = format!(
        "INSERT INTO {prefix}events (position, aggregate_type, aggregate_id, sequence, event_id, \
         event_name, event_version, recorded_at, metadata, payload) \
         VALUES ($1, 'ledger', 'raw', $1, gen_random_uuid(), $2, $3, now(), '{{}}', $4::jsonb)"
    );
    for (position, name, version, payload) in [
        (1i64, "ledger.opened", 1i32, r#"{"owner":"raw"}"#),
        (2, "ledger.credited", 1, r#"{"cents":700}"#),
    ] {
        sqlx::query(AssertSqlSafe(insert.clone()))
            .bind(position)
            .bind(name)
            .bind(version)
            .bind(payload)
            .execute(&pool)
            .await
            .unwrap();
    }
    sqlx::query(AssertSqlSafe(format!(
        "UPDATE {prefix}log_head SET position = 2"
    )))
    .execute(&pool)
    .await
    .unwrap();
    let app = app(store);
    let ledger: Ledger = app.load("raw").await.unwrap();
    assert_eq!(ledger.balance, 7);
    let done = app.execute("raw", Credit { amount: 1 }).await.unwrap();
    assert_eq!(
        (
            done.version,
            done.events[0].position,
            done.events[0].event_version
        ),
        (3, 3, 2)
    );
}

#[tokio::test]
async fn corrupt_postgres_rows_are_typed_errors() {
    let Some((url, pool)) = postgres_server().await else {
        return;
    };
    let prefix = unique_prefix("bad");
    let store = postgres_with_prefix(&url, &prefix).await.unwrap();
    let app = app(store);
    app.execute("fine", Open { owner: "f".into() })
        .await
        .unwrap();
    let insert = format!(
        "INSERT INTO {prefix}events (position, aggregate_type, aggregate_id, sequence, event_id, \
         event_name, event_version, recorded_at, metadata, payload) \
         VALUES ($1, 'ledger', $2, 1, gen_random_uuid(), 'ledger.opened', 1, now(), $3::jsonb, $4::jsonb)"
    );
    for (position, id, metadata, payload) in [
        (
            2i64,
            "bad-metadata",
            r#"{"correlation_id": 5}"#,
            r#"{"owner":"x"}"#,
        ),
        (
            3,
            "bad-payload",
            "{}",
            r#"{"owner": ["not", "a", "string"]}"#,
        ),
    ] {
        sqlx::query(AssertSqlSafe(insert.clone()))
            .bind(position)
            .bind(id)
            .bind(metadata)
            .bind(payload)
            .execute(&pool)
            .await
            .unwrap();
    }
    corrupt_rows_fail_alone(&app).await;
}

#[tokio::test]
async fn postgres_rejects_what_jsonb_cannot_hold_and_stays_usable() {
    let Some((url, _)) = postgres_server().await else {
        return;
    };
    let store = postgres_with_prefix(&url, &unique_prefix("nul"))
        .await
        .unwrap();
    let err = store
        .append(
            "t",
            "s",
            0,
            vec![new_event("E", 1, json!({ "text": "nul\u{0}" }))],
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Rejected { .. }), "{err:?}");
    store
        .append("t", "s", 0, vec![new_event("E", 1, json!({}))])
        .await
        .unwrap();
    assert_eq!(
        store.read_all(1, 10).await.unwrap()[0].position,
        1,
        "the failed append used no position"
    );
}

#[tokio::test]
async fn a_postgres_schema_from_a_newer_build_is_refused() {
    let Some((url, pool)) = postgres_server().await else {
        return;
    };
    let prefix = unique_prefix("new");
    postgres_with_prefix(&url, &prefix).await.unwrap();
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {prefix}schema_migrations (version) VALUES (99)"
    )))
    .execute(&pool)
    .await
    .unwrap();
    let err = postgres_with_prefix(&url, &prefix).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::SchemaTooNew {
                found: 99,
                known: 8
            }
        ),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_postgres_appends_commit_together_and_fail_alone() {
    let Some((url, _)) = postgres_server().await else {
        return;
    };
    let store = Arc::new(
        postgres_with_prefix(&url, &unique_prefix("group"))
            .await
            .unwrap(),
    );
    // Many appends at once are written in groups; the one a group cannot
    // hold fails alone and every other one lands.
    let appends: Vec<_> = (0..40)
        .map(|n| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let payload = if n == 17 {
                    json!({ "text": "nul\u{0}" })
                } else {
                    json!({ "n": n })
                };
                let events = vec![new_event("E", 1, payload), new_event("E", 1, json!({}))];
                (n, store.append("t", &format!("s{n}"), 0, events).await)
            })
        })
        .collect();
    for append in appends {
        let (n, outcome) = append.await.unwrap();
        match (n, outcome) {
            (17, Err(StoreError::Rejected { reason, .. })) => {
                assert!(reason.contains("payload"), "{reason}")
            }
            (17, other) => panic!("{other:?}"),
            (_, outcome) => assert_eq!(outcome.unwrap().len(), 2),
        }
    }
    let log = store.read_all(1, 1000).await.unwrap();
    assert_eq!(
        log.iter().map(|e| e.position).collect::<Vec<_>>(),
        (1..=78).collect::<Vec<_>>()
    );
    assert!(log.iter().all(|e| e.aggregate_id != "s17"));
}
