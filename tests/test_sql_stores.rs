//! What only the SQL backends have: files that outlive the process, schemas
//! created by concurrent starts, table prefixes, and rows written straight
//! into the database (old versions, corrupt data).

mod conformance;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use conformance::ledger::{Credit, Ledger, Open};
use conformance::{new_event, require};
use cqrs_core::{
    Cqrs, EventStore, LoadError, PayloadError, PostgresStore, SqliteStore, StoreError, TablePrefix,
};
use serde_json::json;
use sqlx::{AssertSqlSafe, PgPool, SqlitePool};

fn temp_path(name: &str) -> std::path::PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let file = format!(
        "cqrs-{name}-{}-{}.sqlite",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    );
    std::env::temp_dir().join(file)
}

fn remove(path: &std::path::Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        let _ = std::fs::remove_file(file);
    }
}

fn app<S: EventStore>(store: S) -> Cqrs<S> {
    Cqrs::builder(store)
        .without_event_handlers()
        .build()
        .unwrap()
}

// ---------------------------------------------------------------- SQLite

#[tokio::test]
async fn a_sqlite_file_outlives_the_store() {
    let path = temp_path("reopen");
    {
        let app = app(SqliteStore::open(&path).await.unwrap());
        app.execute("l", Open { owner: "o".into() }).await.unwrap();
        app.execute("l", Credit { amount: 4 }).await.unwrap();
    }
    let store = SqliteStore::open(&path).await.unwrap();
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    let app = app(store);
    let ledger: Ledger = app.load("l").await.unwrap();
    assert_eq!(ledger.balance, 4);
    let done = app.execute("l", Credit { amount: 1 }).await.unwrap();
    assert_eq!((done.version, done.events[0].position), (3, 3));
    remove(&path);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_opens_of_one_file_migrate_once() {
    let path = Arc::new(temp_path("migrate"));
    let opens: Vec<_> = (0..6)
        .map(|_| {
            let path = path.clone();
            tokio::spawn(async move { SqliteStore::open(&*path).await })
        })
        .collect();
    let mut stores = Vec::new();
    for open in opens {
        stores.push(open.await.unwrap().unwrap());
    }
    let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM cqrs_schema_migrations")
        .fetch_all(stores[0].pool())
        .await
        .unwrap();
    assert_eq!(applied, [1, 2]);
    remove(&path);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_sqlite_stores_on_one_file_see_each_others_conflicts() {
    let path = temp_path("shared");
    let first = SqliteStore::open(&path).await.unwrap();
    let second = SqliteStore::open(&path).await.unwrap();
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
    let reader = SqliteStore::open(&path).await.unwrap();
    let log = reader.read_all(1, 100).await.unwrap();
    assert_eq!(
        log.iter().map(|e| e.position).collect::<Vec<_>>(),
        (1..=41).collect::<Vec<_>>()
    );
    assert_eq!(
        log.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        (1..=41).collect::<Vec<_>>()
    );
    remove(&path);
}

async fn sqlite_with_prefix(pool: &SqlitePool, prefix: &str) -> SqliteStore {
    SqliteStore::from_pool(pool.clone(), TablePrefix::new(prefix).unwrap())
        .await
        .unwrap()
}

#[tokio::test]
async fn sqlite_prefixes_keep_logs_apart() {
    let pool = SqlitePool::connect("sqlite::memory:").await.unwrap();
    let billing = sqlite_with_prefix(&pool, "billing_").await;
    let shipping = sqlite_with_prefix(&pool, "shipping_").await;
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
    let store = SqliteStore::in_memory().await.unwrap();
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
            .execute(store.pool())
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
    let store = SqliteStore::in_memory().await.unwrap();
    let app = app(store);
    app.execute("fine", Open { owner: "f".into() })
        .await
        .unwrap();
    let pool = app.store().pool().clone();
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
    let pool = SqlitePool::connect("sqlite::memory:").await.unwrap();
    sqlite_with_prefix(&pool, "cqrs_").await;
    sqlx::query("INSERT INTO cqrs_schema_migrations (version, applied_at) VALUES (99, 0)")
        .execute(&pool)
        .await
        .unwrap();
    let err = SqliteStore::from_pool(pool, TablePrefix::default())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::SchemaTooNew {
                found: 99,
                known: 2
            }
        ),
        "{err:?}"
    );
}

// ---------------------------------------------------------------- PostgreSQL

/// With a row of bad metadata at position 2 and one of a bad payload at 3
/// (stream `bad-payload`), each is a typed error naming its row, and the rest
/// of the store reads as before.
async fn corrupt_rows_fail_alone<S: EventStore>(app: &Cqrs<S>) {
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
        app.store().read_all(1, 10).await.unwrap().len(),
        1,
        "a read returns the events before a corrupt row"
    );
    let err = app.store().read_all(2, 10).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Corrupt { at, .. } if at.position == Some(2)),
        "{err:?}"
    );
    assert_eq!(
        app.store().read_all(3, 10).await.unwrap().len(),
        1,
        "rows after it still read"
    );
    let ledger: Ledger = app.load("fine").await.unwrap();
    assert_eq!(ledger.balance, 0);
}

async fn postgres_pool() -> Option<PgPool> {
    require("CQRS_POSTGRES_URL", |url| async move {
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(20)
            .connect(&url)
            .await
            .unwrap()
    })
    .await
}

fn fresh_prefix(name: &str) -> TablePrefix {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    TablePrefix::new(format!(
        "{name}{}_{}_",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    ))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_postgres_starts_migrate_once() {
    let Some(pool) = postgres_pool().await else {
        return;
    };
    let prefix = fresh_prefix("mig");
    let starts: Vec<_> = (0..8)
        .map(|_| {
            let (pool, prefix) = (pool.clone(), prefix.clone());
            tokio::spawn(async move { PostgresStore::from_pool(pool, prefix).await })
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
    assert_eq!(applied, [1, 2, 3, 4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_postgres_pools_see_each_others_conflicts_and_one_log() {
    let Some(pool) = postgres_pool().await else {
        return;
    };
    let prefix = fresh_prefix("two");
    let other_pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(10)
        .connect_with(pool.connect_options().as_ref().clone())
        .await
        .unwrap();
    let first = PostgresStore::from_pool(pool, prefix.clone())
        .await
        .unwrap();
    let second = PostgresStore::from_pool(other_pool, prefix).await.unwrap();
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
    let Some(pool) = postgres_pool().await else {
        return;
    };
    let prefix = fresh_prefix("raw");
    let store = PostgresStore::from_pool(pool.clone(), prefix.clone())
        .await
        .unwrap();
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
    let Some(pool) = postgres_pool().await else {
        return;
    };
    let prefix = fresh_prefix("bad");
    let store = PostgresStore::from_pool(pool.clone(), prefix.clone())
        .await
        .unwrap();
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
    let Some(pool) = postgres_pool().await else {
        return;
    };
    let store = PostgresStore::from_pool(pool, fresh_prefix("nul"))
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
    let Some(pool) = postgres_pool().await else {
        return;
    };
    let prefix = fresh_prefix("new");
    PostgresStore::from_pool(pool.clone(), prefix.clone())
        .await
        .unwrap();
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {prefix}schema_migrations (version) VALUES (99)"
    )))
    .execute(&pool)
    .await
    .unwrap();
    let err = PostgresStore::from_pool(pool, prefix).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::SchemaTooNew {
                found: 99,
                known: 4
            }
        ),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_postgres_appends_commit_together_and_fail_alone() {
    let Some(pool) = postgres_pool().await else {
        return;
    };
    let store = Arc::new(
        PostgresStore::from_pool(pool, fresh_prefix("group"))
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

/// Real errors of both databases are classified by the database that sent
/// them: a PostgreSQL SQLSTATE made of digits (read-only `25006`) used to be
/// read as a SQLite code and called permanent, and a permission error
/// (`42501`) transient.
#[tokio::test]
async fn real_database_errors_are_classified_by_their_database() {
    let sqlite = sqlx::sqlite::SqlitePoolOptions::new()
        .connect_with(
            "sqlite::memory:"
                .parse::<sqlx::sqlite::SqliteConnectOptions>()
                .unwrap()
                .read_only(true),
        )
        .await
        .unwrap();
    let read_only = sqlx::query("CREATE TABLE t (x INTEGER)")
        .execute(&sqlite)
        .await
        .unwrap_err();
    let read_only = StoreError::from(read_only);
    assert!(read_only.is_transient(), "{read_only:?}");
    let syntax = sqlx::query("SELEC 1").execute(&sqlite).await.unwrap_err();
    assert!(!StoreError::from(syntax).is_transient());

    let Some(pool) = postgres_pool().await else {
        return;
    };
    let mut connection = pool.acquire().await.unwrap();
    sqlx::query("SET default_transaction_read_only = on")
        .execute(&mut *connection)
        .await
        .unwrap();
    let read_only = sqlx::query("CREATE TEMPORARY TABLE t (x INTEGER)")
        .execute(&mut *connection)
        .await;
    let read_only = StoreError::from(read_only.unwrap_err());
    assert!(read_only.is_transient(), "{read_only:?}");
    connection.close().await.unwrap();
    let mut connection = pool.acquire().await.unwrap();
    let missing = sqlx::query("SELECT * FROM no_such_table_here")
        .execute(&mut *connection)
        .await
        .unwrap_err();
    let missing = StoreError::from(missing);
    assert!(!missing.is_transient(), "{missing:?}");
    let serialization = sqlx::query(
        "DO $$ BEGIN RAISE EXCEPTION 'retry me' USING ERRCODE = 'serialization_failure'; END $$",
    )
    .execute(&mut *connection)
    .await
    .unwrap_err();
    assert!(StoreError::from(serialization).is_transient());
    let denied = sqlx::query(
        "DO $$ BEGIN RAISE EXCEPTION 'no' USING ERRCODE = 'insufficient_privilege'; END $$",
    )
    .execute(&mut *connection)
    .await
    .unwrap_err();
    assert!(!StoreError::from(denied).is_transient());
}
