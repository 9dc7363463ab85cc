//! Rows written into the database by hand, the way an operator, a bad
//! migration or a restored backup would: gaps, sequences and positions out of
//! range or at `i64::MAX`, a position the log head does not count, columns of
//! the wrong type, a negative checkpoint. Each is a typed error naming the
//! row; nothing panics, wraps, or moves a reader past events it never saw.
//! On SQLite and PostgreSQL.

mod conformance;
mod support;

use conformance::ledger::{Credit, Credited, Ledger, Open, Opened};
use cqrs_core::prelude::*;
use cqrs_core::processor::FailureCause;
use cqrs_core::store::TablePrefix;
use cqrs_core::{LoadError, PostgresStore, SqliteStore, StoreError, ViewStore};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{AssertSqlSafe, PgPool, SqlitePool};
use support::{TempFile, new_event, postgres_store, require, unique_prefix};

/// Events per ledger, to see which events a projection applied.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct LedgerEvents {
    pub events: u64,
}

#[projection(name = "bad_rows.ledger_events")]
impl LedgerEvents {
    #[event_handler]
    async fn opened(
        _: &Opened,
        envelope: &Envelope,
        views: &mut Views<'_, Self>,
    ) -> Result<(), ViewError> {
        views.get_or_default(&envelope.aggregate_id).await?.events += 1;
        Ok(())
    }

    #[event_handler]
    async fn credited(
        _: &Credited,
        envelope: &Envelope,
        views: &mut Views<'_, Self>,
    ) -> Result<(), ViewError> {
        views.get_or_default(&envelope.aggregate_id).await?.events += 1;
        Ok(())
    }
}

/// A store and a way to write its tables directly.
struct Raw<S> {
    store: S,
    views: ViewStore,
    sql: Sql,
    _file: Option<TempFile>,
}

enum Sql {
    Sqlite(SqlitePool),
    Postgres(PgPool, TablePrefix),
}

impl<S: EventStore + Clone> Raw<S> {
    fn app(&self) -> Cqrs {
        Cqrs::builder(self.store.clone())
            .without_event_handlers()
            .views(self.views())
            .projection::<LedgerEvents>()
            .build()
            .unwrap()
    }

    fn views(&self) -> ViewStore {
        self.views.clone()
    }

    /// Runs `template` with `{p}` as the table prefix.
    async fn exec(&self, template: &str) {
        match &self.sql {
            Sql::Sqlite(pool) => {
                let sql = template.replace("{p}", "cqrs_");
                sqlx::raw_sql(AssertSqlSafe(sql))
                    .execute(pool)
                    .await
                    .unwrap();
            }
            Sql::Postgres(pool, prefix) => {
                let sql = template.replace("{p}", prefix.as_str());
                sqlx::raw_sql(AssertSqlSafe(sql))
                    .execute(pool)
                    .await
                    .unwrap();
            }
        }
    }

    /// Writes an event row of ledger `id` straight into the table; on
    /// PostgreSQL the log head is left alone unless `count` says so.
    async fn insert(
        &self,
        position: i64,
        id: &str,
        sequence: i64,
        name: &str,
        payload: &str,
        count: bool,
    ) {
        let sql = match &self.sql {
            Sql::Sqlite(_) => format!(
                "INSERT INTO {{p}}events (position, aggregate_type, aggregate_id, sequence, event_id, \
                 event_name, event_version, recorded_at, metadata, payload) \
                 VALUES ({position}, 'ledger', '{id}', {sequence}, randomblob(16), '{name}', 1, \
                 1700000000000000, '{{}}', '{payload}')"
            ),
            Sql::Postgres(..) => {
                let head = if count {
                    format!("; UPDATE {{p}}log_head SET position = {position}")
                } else {
                    String::new()
                };
                format!(
                    "INSERT INTO {{p}}events (position, aggregate_type, aggregate_id, sequence, event_id, \
                     event_name, event_version, recorded_at, metadata, payload) \
                     VALUES ({position}, 'ledger', '{id}', {sequence}, gen_random_uuid(), '{name}', 1, \
                     now(), '{{}}', '{payload}'){head}"
                )
            }
        };
        self.exec(&sql).await;
    }
}

/// A SQLite file, so that a second pool sees the store's tables.
async fn sqlite() -> Option<Raw<SqliteStore>> {
    let file = TempFile::new("bad-rows");
    let store = SqliteStore::open(file.path()).await.unwrap();
    let options = SqliteConnectOptions::new().filename(file.path());
    let pool = SqlitePool::connect_with(options).await.unwrap();
    Some(Raw {
        sql: Sql::Sqlite(pool),
        views: store.views(),
        store,
        _file: Some(file),
    })
}

async fn postgres() -> Option<Raw<PostgresStore>> {
    require("CQRS_POSTGRES_URL", |url| async move {
        let prefix = unique_prefix("bad");
        let store = postgres_store(&url, &prefix, 8).await;
        let pool = PgPool::connect(&url).await.unwrap();
        Raw {
            views: store.views(),
            store,
            sql: Sql::Postgres(pool, prefix),
            _file: None,
        }
    })
    .await
}

macro_rules! on_both {
    ($($check:ident),* $(,)?) => {
        mod on_sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                if let Some(raw) = super::sqlite().await {
                    super::$check(raw).await;
                }
            })*
        }
        mod on_postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                if let Some(raw) = super::postgres().await {
                    super::$check(raw).await;
                }
            })*
        }
    };
}

on_both!(
    a_gap_in_a_stream_is_corrupt_and_nothing_lands_on_top,
    a_row_at_sequence_zero_is_reported,
    a_position_far_ahead_stops_readers_before_it,
    a_stream_at_the_largest_sequence_refuses_more,
    a_negative_checkpoint_is_corrupt,
    a_read_failure_names_the_position_it_could_not_read,
);

/// Sequences 1, 2 and 4: loading names sequence 3, and a command does not
/// append a fifth event on top of the hole (it used to, at version 4).
async fn a_gap_in_a_stream_is_corrupt_and_nothing_lands_on_top<S: EventStore + Clone>(raw: Raw<S>) {
    raw.insert(1, "holey", 1, "ledger.opened", r#"{"owner":"o"}"#, true)
        .await;
    raw.insert(2, "holey", 2, "ledger.credited", r#"{"amount":1}"#, true)
        .await;
    raw.insert(3, "holey", 4, "ledger.credited", r#"{"amount":1}"#, true)
        .await;
    let app = raw.app();
    let err = app.load::<Ledger>("holey").await.unwrap_err();
    assert!(
        matches!(&err, LoadError::Store(StoreError::Corrupt { at, .. })
            if at.sequence == Some(3) && at.aggregate_id.as_deref() == Some("holey")),
        "{err:?}"
    );
    let err = app
        .execute("holey", Credit { amount: 1 })
        .await
        .unwrap_err();
    assert!(
        matches!(err, CommandError::Store(StoreError::Corrupt { .. })),
        "{err:?}"
    );
    assert_eq!(
        raw.store.read_all(1, 10).await.unwrap().len(),
        3,
        "nothing appended"
    );
    assert!(err.to_string().contains("sequence 3"), "{err}");
}

/// A row at sequence 0 was never read, so its event vanished from the
/// aggregate: now loading the stream reports it.
async fn a_row_at_sequence_zero_is_reported<S: EventStore + Clone>(raw: Raw<S>) {
    raw.insert(1, "zero", 0, "ledger.opened", r#"{"owner":"o"}"#, true)
        .await;
    raw.insert(2, "zero", 1, "ledger.opened", r#"{"owner":"o"}"#, true)
        .await;
    let err = raw.store.load("ledger", "zero", 1).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Corrupt { reason, at } if reason.contains("sequence 0") && at.position == Some(1)),
        "{err:?}"
    );
    let app = raw.app();
    assert!(app.load::<Ledger>("zero").await.is_err());
}

/// A row at position `i64::MAX` used to move every checkpoint there, so no
/// later event was projected; on SQLite the next append then wrapped (or
/// panicked in a debug build). Now the projection stops before it, the
/// append is refused, and nothing past the gap is skipped.
async fn a_position_far_ahead_stops_readers_before_it<S: EventStore + Clone>(raw: Raw<S>) {
    let app = raw.app();
    app.execute("a", Open { owner: "o".into() }).await.unwrap();
    app.execute("a", Credit { amount: 1 }).await.unwrap();
    raw.insert(
        i64::MAX,
        "far",
        1,
        "ledger.opened",
        r#"{"owner":"o"}"#,
        false,
    )
    .await;
    let failure = app.processors().catch_up().await.unwrap_err();
    assert_eq!(failure.position, 3, "{failure}");
    assert_eq!(failure.cause, FailureCause::Event, "{failure}");
    let views = raw.views();
    assert_eq!(views.checkpoint("bad_rows.ledger_events").await.unwrap(), 2);
    let err = raw.store.read_all(3, 10).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Corrupt { at, reason } if at.position == Some(3) && reason.contains(&i64::MAX.to_string())),
        "{err:?}"
    );
    let appended = app.execute("a", Credit { amount: 1 }).await;
    match &raw.sql {
        // SQLite hands out positions after the largest stored one: none is left.
        Sql::Sqlite(_) => {
            let err = appended.unwrap_err();
            assert!(
                matches!(&err, CommandError::Store(StoreError::Corrupt { at, reason })
                    if at.position == Some(i64::MAX as u64) && reason.contains("no room")),
                "{err:?}"
            );
            assert_eq!(raw.store.load("ledger", "a", 1).await.unwrap().len(), 2);
        }
        // PostgreSQL's head is still at 2: the event lands at 3 and is
        // projected; the reader then stops at the gap again.
        Sql::Postgres(..) => {
            assert_eq!(appended.unwrap().events[0].position, 3);
            // Corrupt data stops the processor until an operator restarts it.
            app.processors().restart("bad_rows.ledger_events").unwrap();
            let failure = app.processors().catch_up().await.unwrap_err();
            assert_eq!(failure.position, 4, "{failure}");
            assert_eq!(views.checkpoint("bad_rows.ledger_events").await.unwrap(), 3);
            let a: LedgerEvents = views.get("a").await.unwrap().unwrap();
            assert_eq!(a.events, 3);
        }
    }
}

/// A stream whose last sequence is `i64::MAX` cannot take another event:
/// the append is refused as corrupt data instead of wrapping to a negative
/// sequence that no load reads (SQLite) or failing with a raw database
/// error (PostgreSQL).
async fn a_stream_at_the_largest_sequence_refuses_more<S: EventStore + Clone>(raw: Raw<S>) {
    raw.insert(
        1,
        "full",
        i64::MAX,
        "ledger.opened",
        r#"{"owner":"o"}"#,
        true,
    )
    .await;
    let err = raw
        .store
        .append(
            "ledger",
            "full",
            i64::MAX as u64,
            vec![new_event("ledger.credited", 2, json!({"amount": 1}))],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Corrupt { at, reason }
            if at.aggregate_id.as_deref() == Some("full") && reason.contains("no room")),
        "{err:?}"
    );
    let err = raw
        .store
        .append(
            "ledger",
            "full",
            u64::MAX,
            vec![new_event("ledger.credited", 2, json!({"amount": 1}))],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Rejected { aggregate_id, .. } if aggregate_id == "full"),
        "{err:?}"
    );
    assert_eq!(raw.store.read_all(1, 10).await.unwrap().len(), 1);
}

/// A checkpoint edited to a negative number used to read as 0, so the
/// processor silently started over; now it is `ViewError::Corrupt`.
async fn a_negative_checkpoint_is_corrupt<S: EventStore + Clone>(raw: Raw<S>) {
    let app = raw.app();
    app.execute("a", Open { owner: "o".into() }).await.unwrap();
    app.processors().catch_up().await.unwrap();
    raw.exec("UPDATE {p}segments SET position = -5").await;
    let err = raw
        .views()
        .checkpoint("bad_rows.ledger_events")
        .await
        .unwrap_err();
    assert!(matches!(err, ViewError::Corrupt { .. }), "{err:?}");
    let failure = app.processors().catch_up().await.unwrap_err();
    assert!(failure.error.to_string().contains("-5"), "{failure}");
}

/// A failure to read the log names the first position the processor could
/// not read, not "position 0", after projecting the events before it; the
/// corrupt row stops the processor there (it will not heal by waiting).
async fn a_read_failure_names_the_position_it_could_not_read<S: EventStore + Clone>(raw: Raw<S>) {
    let app = raw.app();
    app.execute("a", Open { owner: "o".into() }).await.unwrap();
    raw.insert(2, "bad", 1, "ledger.opened", r#"{"owner":"o"}"#, true)
        .await;
    raw.exec("UPDATE {p}events SET metadata = '{\"correlation_id\": 5}' WHERE position = 2")
        .await;
    let failure = app.processors().catch_up().await.unwrap_err();
    assert_eq!(
        (failure.position, failure.cause),
        (2, FailureCause::Event),
        "{failure}"
    );
    let status = &app.processors().status()[0];
    assert!(
        status.stopped,
        "corrupt data stops the processor at its row"
    );
    let ledger: LedgerEvents = raw.views().get("a").await.unwrap().unwrap();
    assert_eq!(
        ledger.events, 1,
        "the event before the bad row was projected"
    );
}

// ------------------------------------------------------------- one backend

/// PostgreSQL: a row at the position after the head, written without moving
/// the head, made the next append fail as "an event id is already used";
/// now it says the position is taken.
#[tokio::test]
async fn a_position_the_head_does_not_count_is_named() {
    let Some(raw) = postgres().await else {
        return;
    };
    raw.store
        .append(
            "ledger",
            "a",
            0,
            vec![new_event("ledger.opened", 1, json!({"owner": "o"}))],
        )
        .await
        .unwrap();
    raw.insert(2, "stray", 1, "ledger.opened", r#"{"owner":"o"}"#, false)
        .await;
    let err = raw
        .store
        .append(
            "ledger",
            "b",
            0,
            vec![new_event("ledger.opened", 1, json!({"owner": "o"}))],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Corrupt { reason, .. } if reason.contains("position") && !reason.contains("event id")),
        "{err:?}"
    );
    raw.exec("UPDATE {p}log_head SET position = 2").await;
    let reused = raw.store.read_all(1, 1).await.unwrap()[0].event_id;
    let mut event = new_event("ledger.opened", 1, json!({"owner": "o"}));
    event.event_id = reused;
    let err = raw
        .store
        .append("ledger", "c", 0, vec![event])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Rejected { reason, .. } if reason.contains("event id")),
        "{err:?}"
    );
}

/// SQLite columns hold any type: a position, sequence or payload of the
/// wrong one is `Corrupt` naming the row, not a driver decode error.
#[tokio::test]
async fn sqlite_columns_of_the_wrong_type_are_corrupt() {
    let raw = sqlite().await.unwrap();
    let opened = || vec![new_event("ledger.opened", 1, json!({"owner": "o"}))];
    for (column, value) in [
        ("payload", "x'00ff'"),
        ("sequence", "'one'"),
        ("recorded_at", "'yesterday'"),
        ("event_id", "42"),
        ("position", "'first'"),
    ] {
        raw.exec("DELETE FROM {p}events").await;
        raw.store.append("ledger", "a", 0, opened()).await.unwrap();
        raw.store.append("ledger", "b", 0, opened()).await.unwrap();
        // The second row goes bad: the read returns the good one before it,
        // and the read that starts at it names it.
        raw.exec(&format!(
            "UPDATE {{p}}events SET {column} = {value} WHERE aggregate_id = 'b'"
        ))
        .await;
        let read = raw.store.read_all(1, 10).await.unwrap();
        assert_eq!(read.len(), 1, "{column}");
        let err = raw.store.read_all(2, 10).await.unwrap_err();
        assert!(
            matches!(&err, StoreError::Corrupt { at, .. } if at.position == Some(2) || column == "position"),
            "{column}: {err:?}"
        );
        let err = raw.store.load("ledger", "b", 1).await.unwrap_err();
        assert!(
            matches!(err, StoreError::Corrupt { .. }),
            "{column}: {err:?}"
        );
        assert_eq!(raw.store.load("ledger", "a", 1).await.unwrap().len(), 1);
    }
}

/// A SQLite file deleted or replaced under a running store used to take
/// commits into the deleted file (lost at exit); now appends are refused.
#[tokio::test]
async fn a_sqlite_file_deleted_or_replaced_is_noticed() {
    let dir = std::env::temp_dir().join(format!("cqrs-replaced-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("log.sqlite");
    let store = SqliteStore::open(&path).await.unwrap();
    let event = || vec![new_event("ledger.opened", 1, json!({"owner": "o"}))];
    store.append("ledger", "a", 0, event()).await.unwrap();
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    let err = store.append("ledger", "b", 0, event()).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::FileReplaced { path: p } if p == &path),
        "{err:?}"
    );
    // Another file at the same path is not the one the store opened either.
    let other = SqliteStore::open(&path).await.unwrap();
    other.append("ledger", "c", 0, event()).await.unwrap();
    let err = store.append("ledger", "d", 0, event()).await.unwrap_err();
    assert!(matches!(err, StoreError::FileReplaced { .. }), "{err:?}");
    assert_eq!(other.read_all(1, 10).await.unwrap().len(), 1);
    let views = store.views();
    let err = views.set_checkpoint("x", 1).await.unwrap_err();
    assert!(
        matches!(&err, ViewError::Database(e) if !e.is_transient()
            && e.to_string().contains("deleted or replaced")),
        "{err:?}"
    );
    drop((store, other));
    let _ = std::fs::remove_dir_all(&dir);
}

/// PostgreSQL: a log head edited below 0 would have made the next append
/// commit at position 0 and report it as stored; the schema refuses the edit.
#[tokio::test]
async fn a_negative_log_head_is_refused() {
    let Some(raw) = postgres().await else {
        return;
    };
    let Sql::Postgres(pool, prefix) = &raw.sql else {
        unreachable!("a PostgreSQL backend")
    };
    let edit = format!("UPDATE {prefix}log_head SET position = -1");
    let err = sqlx::raw_sql(AssertSqlSafe(edit))
        .execute(pool)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("log_head_in_range"), "{err}");
}
