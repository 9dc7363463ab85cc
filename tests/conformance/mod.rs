//! The promises every `EventStore` keeps, as checks generic over the store.
//! `conformance!(name, factory)` turns them into one test each for a
//! backend; a new backend gets the whole suite from one line.

#![allow(dead_code)]

mod boundaries;
mod deadlines;
pub mod ledger;

#[allow(unused_imports)] // by the suites that include this module without the macro
pub use boundaries::{
    a_condition_fails_only_on_a_matching_event_after_it,
    a_query_by_name_and_one_by_tag_exclude_each_other, appends_racing_a_read_never_slip_past_it,
    one_writer_wins_each_round_through_one_boundary, retried_decisions_keep_a_capacity,
    tagged_events_are_read_by_query,
};
#[allow(unused_imports)] // by the suites that include this module without the macro
pub use deadlines::{
    a_batch_of_deadlines_alone_checks_the_version, a_claimed_deadline_is_fired_not_cancelled,
    a_failed_fire_waits_then_parks_until_retried, a_fire_consumes_its_deadline_once,
    a_refused_batch_writes_no_deadline, concurrent_fires_of_one_deadline_take_effect_once,
    deadlines_ride_their_batch, due_deadlines_come_by_segment,
    due_deadlines_come_earliest_first_up_to_the_limit, owned_changes_follow_their_origin,
    scheduling_again_replaces_and_cancelling_removes,
};

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::support::new_event;
use cqrs_core::store::{NewEvent, ReadLimit, Snapshot, StreamAppend};
use cqrs_core::{
    CommandError, Cqrs, DecodeError, Envelope, EventStore, JsonPayload, LoadError, Metadata,
    PayloadError, StoreError, Uuid,
};
use ledger::{Credit, Ledger, Open};
use serde_json::{Value, json};

/// Generates `#[tokio::test]`s running every check against the stores
/// `$factory` makes: an `async` expression, evaluated once per test, giving
/// `Some((store, guard))` (the guard is dropped after the check, to clean up)
/// or `None` to skip.
#[macro_export]
macro_rules! conformance {
    ($backend:ident, $factory:expr) => {
        mod $backend {
            #[allow(unused_imports)]
            use super::*;

            $crate::conformance!(@tests $factory;
                append_and_load,
                conflicts_record_nothing,
                concurrent_writers_on_one_stream,
                a_failed_batch_leaves_nothing,
                global_log_is_gap_free_under_concurrent_writers,
                read_all_pages,
                unicode_and_long_ids,
                large_payloads,
                unreadable_events_are_typed_errors,
                snapshots_are_kept_newest_first,
                snapshots_shorten_replay,
                old_versions_are_upcast,
                every_backend_refuses_the_same_batches,
                reads_of_impossible_streams_and_positions_find_nothing,
                reads_stop_at_the_byte_budget,
                commands_are_found_by_id,
                repeated_commands_answer_the_first_outcome,
                streams_append_together_each_checked_alone,
                deadlines_ride_their_batch,
                a_refused_batch_writes_no_deadline,
                scheduling_again_replaces_and_cancelling_removes,
                a_batch_of_deadlines_alone_checks_the_version,
                a_fire_consumes_its_deadline_once,
                concurrent_fires_of_one_deadline_take_effect_once,
                due_deadlines_come_earliest_first_up_to_the_limit,
                a_failed_fire_waits_then_parks_until_retried,
                due_deadlines_come_by_segment,
                owned_changes_follow_their_origin,
                a_claimed_deadline_is_fired_not_cancelled,
                tagged_events_are_read_by_query,
                a_condition_fails_only_on_a_matching_event_after_it,
                one_writer_wins_each_round_through_one_boundary,
                a_query_by_name_and_one_by_tag_exclude_each_other,
                retried_decisions_keep_a_capacity,
                appends_racing_a_read_never_slip_past_it,
            );
        }
    };
    (@tests $factory:expr; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $check() {
                if let Some((store, _guard)) = $factory.await {
                    $crate::conformance::$check(store).await;
                }
            }
        )*
    };
}

fn numbered(count: usize) -> Vec<NewEvent> {
    (0..count)
        .map(|n| new_event("Numbered", 1, json!({ "n": n })))
        .collect()
}

fn json_of(envelope: &Envelope) -> Value {
    serde_json::from_str(envelope.payload.as_str()).expect("stored payloads are JSON")
}

fn app<S: EventStore>(store: S) -> Cqrs {
    Cqrs::builder(store)
        .without_event_handlers()
        .without_processors()
        .build()
        .expect("registry")
}

/// What was appended reads back the same from the stream and the log.
pub async fn append_and_load<S: EventStore>(store: S) {
    let mut batch = numbered(3);
    batch[1].metadata = Metadata::default().with("user", "ada");
    batch[1].metadata.correlation_id = Some(Uuid::now_v7());
    batch[1].metadata.causation_id = Some(Uuid::now_v7());
    batch[2].event_version = 7;
    let appended = store.append("t", "s-1", 0, batch.clone()).await.unwrap();
    assert_eq!(appended.len(), 3);
    for (envelope, (sent, offset)) in appended.iter().zip(batch.iter().zip(1u64..)) {
        assert_eq!(envelope.event_id, sent.event_id);
        assert_eq!(envelope.sequence, offset);
        assert_eq!(envelope.position, offset);
        assert_eq!(envelope.event_name, sent.event_name);
        assert_eq!(envelope.event_version, sent.event_version);
        assert_eq!(envelope.metadata, sent.metadata);
        assert_eq!(
            (
                envelope.aggregate_type.as_str(),
                envelope.aggregate_id.as_str()
            ),
            ("t", "s-1")
        );
    }
    store.append("t", "s-2", 0, numbered(1)).await.unwrap();
    let more = store.append("t", "s-1", 3, numbered(2)).await.unwrap();
    assert_eq!(
        more.iter()
            .map(|e| (e.sequence, e.position))
            .collect::<Vec<_>>(),
        [(4, 5), (5, 6)]
    );

    let loaded = store.load("t", "s-1", 1).await.unwrap();
    assert_eq!(loaded.len(), 5);
    for (stored, sent) in loaded.iter().zip(appended.iter().chain(&more)) {
        assert_eq!(json_of(stored), json_of(sent));
        let mut stored = stored.clone();
        stored.payload = sent.payload.clone();
        assert_eq!(
            &stored, sent,
            "an envelope reads back as it was returned by append"
        );
    }
    let tail = store.load("t", "s-1", 4).await.unwrap();
    assert_eq!(tail.iter().map(|e| e.sequence).collect::<Vec<_>>(), [4, 5]);
    assert!(store.load("t", "s-1", 6).await.unwrap().is_empty());
    assert!(store.load("other", "s-1", 1).await.unwrap().is_empty());
    assert!(store.load("t", "missing", 1).await.unwrap().is_empty());

    let log = store.read_all(1, 100).await.unwrap();
    assert_eq!(
        log.iter().map(|e| e.position).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5, 6]
    );
    assert_eq!(log[3].aggregate_id, "s-2");
    assert!(log.windows(2).all(|w| w[0].recorded_at <= w[1].recorded_at));
}

/// A stale expected version is a typed conflict and appends nothing.
pub async fn conflicts_record_nothing<S: EventStore>(store: S) {
    store.append("t", "c", 0, numbered(2)).await.unwrap();
    for expected in [0, 1, 3] {
        match store.append("t", "c", expected, numbered(1)).await {
            Err(StoreError::Conflict(conflict)) => {
                assert_eq!((conflict.expected, conflict.actual), (expected, 2));
                assert_eq!(
                    (
                        conflict.aggregate_type.as_str(),
                        conflict.aggregate_id.as_str()
                    ),
                    ("t", "c")
                );
            }
            other => panic!("expected a conflict at {expected}, got {other:?}"),
        }
    }
    match store.append("t", "fresh", 4, numbered(1)).await {
        Err(StoreError::Conflict(conflict)) => assert_eq!(conflict.actual, 0),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(store.read_all(1, 100).await.unwrap().len(), 2);
    store.append("t", "c", 2, numbered(1)).await.unwrap();
}

/// Writers racing on one stream: each append either lands at the next
/// version or is a conflict; together they leave a gap-free stream.
pub async fn concurrent_writers_on_one_stream<S: EventStore>(store: S) {
    const WRITERS: usize = 8;
    const APPENDS: usize = 15;
    let store = Arc::new(store);
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let store = store.clone();
            tokio::spawn(async move {
                let (mut landed, mut conflicts) = (Vec::new(), 0);
                while landed.len() < APPENDS {
                    let version = store.load("t", "hot", 1).await.unwrap().len() as u64;
                    let batch = vec![new_event("Numbered", 1, json!({ "writer": writer }))];
                    match store.append("t", "hot", version, batch).await {
                        Ok(envelopes) => landed.push(envelopes[0].sequence),
                        Err(StoreError::Conflict(conflict)) => {
                            assert_eq!(conflict.expected, version);
                            assert!(conflict.actual > version);
                            conflicts += 1;
                        }
                        Err(other) => panic!("{other:?}"),
                    }
                }
                (landed, conflicts)
            })
        })
        .collect();
    let mut sequences = Vec::new();
    for writer in writers {
        sequences.extend(writer.await.unwrap().0);
    }
    let total = (WRITERS * APPENDS) as u64;
    let distinct: BTreeSet<u64> = sequences.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        sequences.len(),
        "no sequence was handed out twice"
    );
    assert_eq!(distinct, (1..=total).collect());
    let stream = store.load("t", "hot", 1).await.unwrap();
    assert_eq!(
        stream.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        (1..=total).collect::<Vec<_>>()
    );
}

/// A batch that fails half-way (a reused event id in its third event) leaves
/// nothing behind.
pub async fn a_failed_batch_leaves_nothing<S: EventStore>(store: S) {
    let first = store.append("t", "a", 0, numbered(1)).await.unwrap();
    let mut batch = numbered(5);
    batch[2].event_id = first[0].event_id;
    let err = store.append("t", "a", 1, batch).await.unwrap_err();
    assert!(matches!(err, StoreError::Rejected { .. }), "{err:?}");
    let mut twice = numbered(4);
    twice[3].event_id = twice[0].event_id;
    let err = store.append("t", "b", 0, twice).await.unwrap_err();
    assert!(matches!(err, StoreError::Rejected { .. }), "{err:?}");

    assert_eq!(store.load("t", "a", 1).await.unwrap().len(), 1);
    assert!(store.load("t", "b", 1).await.unwrap().is_empty());
    assert_eq!(store.read_all(1, 100).await.unwrap().len(), 1);
    let next = store.append("t", "a", 1, numbered(2)).await.unwrap();
    assert_eq!(
        next.iter()
            .map(|e| (e.sequence, e.position))
            .collect::<Vec<_>>(),
        [(2, 2), (3, 3)]
    );
}

/// A reader polling the log while writers commit sees every event exactly
/// once, in position order, with no position skipped.
pub async fn global_log_is_gap_free_under_concurrent_writers<S: EventStore>(store: S) {
    const WRITERS: usize = 6;
    const BATCHES: usize = 25;
    let store = Arc::new(store);
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (store, done) = (store.clone(), done.clone());
        tokio::spawn(async move {
            let mut seen: Vec<Envelope> = Vec::new();
            let mut next = 1;
            loop {
                let finished = done.load(std::sync::atomic::Ordering::SeqCst);
                let page = store.read_all(next, 37).await.unwrap();
                for envelope in &page {
                    assert_eq!(envelope.position, next, "the reader never skips a position");
                    next += 1;
                }
                let empty = page.is_empty();
                seen.extend(page);
                if finished && empty {
                    return seen;
                }
                if empty {
                    tokio::task::yield_now().await;
                }
            }
        })
    };
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let store = store.clone();
            tokio::spawn(async move {
                for batch in 0..BATCHES {
                    let stream = format!("w{writer}-{}", batch % 3);
                    let version = store.load("t", &stream, 1).await.unwrap().len() as u64;
                    store
                        .append("t", &stream, version, numbered(1 + batch % 4))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let seen = reader.await.unwrap();
    let table = store.read_all(1, usize::MAX).await.unwrap();
    let expected: usize = (0..BATCHES).map(|batch| 1 + batch % 4).sum::<usize>() * WRITERS;
    assert_eq!(table.len(), expected);
    assert_eq!(
        seen.iter().map(|e| e.event_id).collect::<Vec<_>>(),
        table.iter().map(|e| e.event_id).collect::<Vec<_>>(),
        "the reader saw exactly the table, in order"
    );
    // Within each stream the log preserves sequence order.
    for stream in table
        .iter()
        .map(|e| e.aggregate_id.clone())
        .collect::<BTreeSet<_>>()
    {
        let sequences: Vec<u64> = table
            .iter()
            .filter(|e| e.aggregate_id == stream)
            .map(|e| e.sequence)
            .collect();
        assert_eq!(sequences, (1..=sequences.len() as u64).collect::<Vec<_>>());
    }
}

/// `read_all` pages by position and limit.
pub async fn read_all_pages<S: EventStore>(store: S) {
    for stream in 0..4 {
        store
            .append("t", &format!("p{stream}"), 0, numbered(3))
            .await
            .unwrap();
    }
    let page = store.read_all(5, 4).await.unwrap();
    assert_eq!(
        page.iter().map(|e| e.position).collect::<Vec<_>>(),
        [5, 6, 7, 8]
    );
    assert_eq!(store.read_all(12, 10).await.unwrap().len(), 1);
    assert!(store.read_all(13, 10).await.unwrap().is_empty());
    assert!(store.read_all(1, 0).await.unwrap().is_empty());
    assert_eq!(store.read_all(0, 100).await.unwrap().len(), 12);
}

/// Any UTF-8 aggregate id of 1 to 1,024 bytes without NUL is a stream.
pub async fn unicode_and_long_ids<S: EventStore>(store: S) {
    let ids = [
        "ünïcødé-🦀-日本語-עברית-Ελληνικά".to_owned(),
        "a".repeat(1024),
        "🦀".repeat(256),
        "with space and 'quote\" and ; DROP TABLE".to_owned(),
    ];
    for id in &ids {
        store.append("t", id, 0, numbered(2)).await.unwrap();
        let loaded = store.load("t", id, 1).await.unwrap();
        assert_eq!(loaded.len(), 2);
        assert_eq!(&loaded[0].aggregate_id, id);
    }
    for bad in ["".to_owned(), "a".repeat(1025), "nul\0byte".to_owned()] {
        let err = store.append("t", &bad, 0, numbered(1)).await.unwrap_err();
        assert!(matches!(err, StoreError::Rejected { .. }), "{err:?}");
    }
    assert_eq!(store.read_all(1, 100).await.unwrap().len(), 2 * ids.len());
}

/// A 1 MiB payload reads back intact.
pub async fn large_payloads<S: EventStore>(store: S) {
    let text: String = (0..(1 << 20))
        .map(|n| char::from(b'a' + (n % 26) as u8))
        .collect();
    let batch = vec![new_event(
        "Big",
        1,
        json!({ "text": text, "unicode": "Ωmega ✓" }),
    )];
    store.append("t", "big", 0, batch).await.unwrap();
    let loaded = store.load("t", "big", 1).await.unwrap();
    assert_eq!(
        json_of(&loaded[0])["text"].as_str().map(str::len),
        Some(1 << 20)
    );
    assert_eq!(json_of(&loaded[0])["unicode"], "Ωmega ✓");
}

/// Events the app cannot read give typed errors that say where they are;
/// nothing panics and other streams stay usable.
pub async fn unreadable_events_are_typed_errors<S: EventStore>(store: S) {
    let store = Arc::new(store);
    let app = app(Arc::clone(&store));
    app.execute("ok", Open { owner: "o".into() }).await.unwrap();
    let opened = new_event("ledger.opened", 1, json!({ "owner": "x" }));
    let cases = [
        ("unknown-name", new_event("ledger.closed", 1, json!({}))),
        (
            "bad-shape",
            new_event("ledger.credited", 2, json!({ "amount": "lots" })),
        ),
        (
            "no-upcaster",
            new_event("ledger.credited", 9, json!({ "amount": 1 })),
        ),
    ];
    for (id, bad) in cases {
        let opened = NewEvent {
            event_id: Uuid::now_v7(),
            ..opened.clone()
        };
        store
            .append("ledger", id, 0, vec![opened, bad])
            .await
            .unwrap();
        let err = app.load::<Ledger>(id).await.unwrap_err();
        let LoadError::Decode(decode) = err else {
            panic!("{id}: {err:?}")
        };
        let DecodeError {
            aggregate_type,
            aggregate_id,
            sequence,
            event_name,
            source,
            ..
        } = *decode;
        assert_eq!(
            (aggregate_type.as_str(), aggregate_id.as_str(), sequence),
            ("ledger", id, 2)
        );
        match (id, &source) {
            ("unknown-name", PayloadError::UnknownName { name }) => {
                assert_eq!(name, "ledger.closed")
            }
            (
                "bad-shape",
                PayloadError::Invalid {
                    rust_type: "Credited",
                    ..
                },
            ) => {}
            (
                "no-upcaster",
                PayloadError::UnknownVersion {
                    version: 9, known, ..
                },
            ) => {
                assert_eq!(known, &[1, 2]);
            }
            _ => panic!("{id}: unexpected {event_name}: {source:?}"),
        }
        let err = app.execute(id, Credit { amount: 1 }).await.unwrap_err();
        assert!(matches!(err, CommandError::Decode(_)), "{err:?}");
    }
    app.execute("ok", Credit { amount: 5 })
        .await
        .expect("other streams are unaffected");
    let ledger: Ledger = app.load("ok").await.unwrap();
    assert_eq!(ledger.balance, 5);
}

/// The store keeps the newest snapshot of each aggregate.
pub async fn snapshots_are_kept_newest_first<S: EventStore>(store: S) {
    let snapshot = |version: u64, state: Value| Snapshot {
        aggregate_type: "t".into(),
        aggregate_id: "snap".into(),
        version,
        schema_version: 3,
        state: JsonPayload::from_text(state.to_string()),
        taken_at: chrono::DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap(),
    };
    assert_eq!(store.load_snapshot("t", "snap").await.unwrap(), None);
    store
        .save_snapshot(snapshot(10, json!({ "v": 10 })))
        .await
        .unwrap();
    store
        .save_snapshot(snapshot(5, json!({ "v": 5 })))
        .await
        .unwrap();
    let kept = store.load_snapshot("t", "snap").await.unwrap().unwrap();
    assert_eq!((kept.version, kept.schema_version), (10, 3));
    assert_eq!(
        serde_json::from_str::<Value>(kept.state.as_str()).unwrap(),
        json!({ "v": 10 })
    );
    assert_eq!(kept.taken_at, snapshot(0, json!(null)).taken_at);
    store
        .save_snapshot(snapshot(20, json!({ "v": 20 })))
        .await
        .unwrap();
    assert_eq!(
        store
            .load_snapshot("t", "snap")
            .await
            .unwrap()
            .unwrap()
            .version,
        20
    );
    assert_eq!(store.load_snapshot("t", "other").await.unwrap(), None);
}

/// With `snapshot_every = 5`, loading starts from the newest snapshot and
/// replays only the rest; a snapshot of another schema version, or one that
/// does not decode, is ignored and the stream replayed in full.
pub async fn snapshots_shorten_replay<S: EventStore>(store: S) {
    let store = Arc::new(store);
    let app = app(Arc::clone(&store));
    app.execute("l", Open { owner: "o".into() }).await.unwrap();
    for _ in 0..12 {
        app.execute("l", Credit { amount: 1 }).await.unwrap();
    }
    let snapshot = store
        .load_snapshot("ledger", "l")
        .await
        .unwrap()
        .expect("taken at 5 and 10");
    assert_eq!((snapshot.version, snapshot.schema_version), (10, 2));

    let ledger: Ledger = app.load("l").await.unwrap();
    assert_eq!(
        (ledger.balance, ledger.replayed),
        (12, 3),
        "events 11 to 13 replayed"
    );

    let stale = Snapshot {
        version: 13,
        schema_version: 1,
        ..snapshot.clone()
    };
    store.save_snapshot(stale).await.unwrap();
    let ledger: Ledger = app.load("l").await.unwrap();
    assert_eq!(
        (ledger.balance, ledger.replayed),
        (12, 13),
        "an old schema version is ignored"
    );

    let garbage = Snapshot {
        version: 13,
        state: JsonPayload::from_text(r#"{"unexpected": true}"#),
        ..snapshot
    };
    store.save_snapshot(garbage).await.unwrap();
    let ledger: Ledger = app.load("l").await.unwrap();
    assert_eq!(
        (ledger.balance, ledger.replayed),
        (12, 13),
        "an undecodable one is ignored"
    );
}

/// Events stored at an older version load as the current type.
pub async fn old_versions_are_upcast<S: EventStore>(store: S) {
    let old = vec![
        new_event("ledger.opened", 1, json!({ "owner": "old" })),
        new_event("ledger.credited", 1, json!({ "cents": 250 })),
        new_event("ledger.credited", 2, json!({ "amount": 3 })),
    ];
    store.append("ledger", "old", 0, old).await.unwrap();
    let app = app(store);
    let ledger: Ledger = app.load("old").await.unwrap();
    assert_eq!(ledger.balance, 5, "2.50 read as 2, plus 3");
    let done = app.execute("old", Credit { amount: 1 }).await.unwrap();
    assert_eq!(
        done.events[0].event_version, 2,
        "new events are written at the current version"
    );
}

/// What PostgreSQL cannot store, every backend refuses, typed and with
/// nothing appended: a payload that is not JSON or escapes NUL, NUL in an
/// event name or metadata value. (SQLite and memory used to take them.)
pub async fn every_backend_refuses_the_same_batches<S: EventStore>(store: S) {
    let not_json = NewEvent {
        payload: JsonPayload::from_text("{not json"),
        ..new_event("E", 1, json!({}))
    };
    let nul_payload = new_event("E", 1, json!({ "text": "nul\u{0}" }));
    let nul_name = new_event("bad\0name", 1, json!({}));
    let mut nul_metadata = new_event("E", 1, json!({}));
    nul_metadata.metadata = Metadata::default().with("user", "a\0b");
    for (what, bad) in [
        ("not JSON", not_json),
        ("NUL", nul_payload),
        ("NUL", nul_name),
        ("NUL", nul_metadata),
    ] {
        let mut batch = numbered(2);
        batch.push(bad);
        let err = store.append("t", "refused", 0, batch).await.unwrap_err();
        assert!(
            matches!(&err, StoreError::Rejected { reason, .. } if reason.contains(what)),
            "{what}: {err:?}"
        );
    }
    // An escaped backslash before `u0000` is text, not NUL.
    let literal = new_event("E", 1, json!({ "text": "\\u0000" }));
    store
        .append("t", "refused", 0, vec![literal])
        .await
        .unwrap();
    assert_eq!(store.read_all(1, 10).await.unwrap().len(), 1);
}

/// Reads of a stream no append could create, or from a position past any
/// the log can hold, find nothing (they used to be a database error on
/// PostgreSQL, or a "rejected append" for a read).
pub async fn reads_of_impossible_streams_and_positions_find_nothing<S: EventStore>(store: S) {
    store.append("t", "s", 0, numbered(2)).await.unwrap();
    for id in ["", "nul\0byte", &"a".repeat(2000)] {
        assert!(store.load("t", id, 1).await.unwrap().is_empty());
        assert!(
            store
                .load_command("t", id, Uuid::now_v7())
                .await
                .unwrap()
                .is_empty()
        );
        assert!(store.load_snapshot("t", id).await.unwrap().is_none());
    }
    assert!(store.load("t\0", "s", 1).await.unwrap().is_empty());
    assert!(store.read_all(u64::MAX, 10).await.unwrap().is_empty());
    assert!(store.load("t", "s", u64::MAX).await.unwrap().is_empty());
    assert!(store.read_all(0, 10).await.unwrap().len() == 2);
}

/// A read stops at the first event that brings it to its byte budget, and
/// always returns at least one event; memory follows bytes, not counts.
pub async fn reads_stop_at_the_byte_budget<S: EventStore>(store: S) {
    let big = |n: usize| new_event("Big", 1, json!({ "n": n, "fill": "x".repeat(300_000) }));
    store
        .append("t", "big", 0, (0..5).map(big).collect())
        .await
        .unwrap();
    let limit = ReadLimit::events(100).with_bytes(500_000);
    let read = store.read_all(1, limit).await.unwrap();
    assert_eq!(
        read.iter().map(|e| e.position).collect::<Vec<_>>(),
        [1, 2],
        "the second event passes the budget and ends the read"
    );
    let tiny = ReadLimit::events(100).with_bytes(1);
    assert_eq!(store.read_all(3, tiny).await.unwrap().len(), 1);
    let mut from = 1;
    let mut pages = 0;
    while let Some(last) = store.read_all(from, limit).await.unwrap().last() {
        from = last.position + 1;
        pages += 1;
    }
    assert_eq!((from, pages), (6, 3));
    assert_eq!(
        store.read_all(1, 100).await.unwrap().len(),
        5,
        "a count alone reads them all"
    );
}

/// A batch's command id finds exactly that batch's events, as appended, in
/// its stream only; a second batch with the id is refused.
pub async fn commands_are_found_by_id<S: EventStore>(store: S) {
    let with_id = |count: usize, command_id: Uuid| {
        let mut batch = numbered(count);
        for event in &mut batch {
            event.metadata.command_id = Some(command_id);
        }
        batch
    };
    let (first, second) = (Uuid::now_v7(), Uuid::now_v7());
    store.append("t", "s", 0, numbered(2)).await.unwrap();
    let recorded = store.append("t", "s", 2, with_id(3, first)).await.unwrap();
    store.append("t", "other", 0, numbered(1)).await.unwrap();
    store.append("t", "s", 5, with_id(1, second)).await.unwrap();
    store.append("t", "s", 6, numbered(2)).await.unwrap();

    let found = store.load_command("t", "s", first).await.unwrap();
    assert_eq!(
        found
            .iter()
            .map(|e| (e.event_id, e.sequence, e.position))
            .collect::<Vec<_>>(),
        recorded
            .iter()
            .map(|e| (e.event_id, e.sequence, e.position))
            .collect::<Vec<_>>()
    );
    assert!(found.iter().all(|e| e.metadata.command_id == Some(first)));
    assert_eq!(store.load_command("t", "s", second).await.unwrap().len(), 1);
    assert!(
        store
            .load_command("t", "other", first)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .load_command("t", "s", Uuid::now_v7())
            .await
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        store.append("t", "s", 8, with_id(1, first)).await,
        Err(StoreError::DuplicateCommand { command_id, .. }) if command_id == first
    ));
}

/// A command sent again with its command id answers what the first run
/// recorded, however far the stream has moved on; sent by 10 callers at
/// once, through two apps (two caches), it runs once and all 10 get the
/// same answer; the id sent with another command is a typed error.
pub async fn repeated_commands_answer_the_first_outcome<S: EventStore>(store: S) {
    let store = Arc::new(store);
    let (app, other) = (app(Arc::clone(&store)), app(Arc::clone(&store)));
    let key = |n: u128| Metadata {
        command_id: Some(Uuid::from_u128(0x1d00 + n)),
        ..Metadata::default()
    };
    app.execute_with(
        "l",
        Open {
            owner: "ada".into(),
        },
        key(0),
    )
    .await
    .unwrap();
    let first = app
        .execute_with("l", Credit { amount: 3 }, key(1))
        .await
        .unwrap();
    for _ in 0..12 {
        app.execute("l", Credit { amount: 1 }).await.unwrap();
    }
    // From this app's cache, and from another app that never loaded it.
    for runner in [&app, &other] {
        let again = runner
            .execute_with("l", Credit { amount: 3 }, key(1))
            .await
            .unwrap();
        assert!(again.duplicate);
        assert_eq!((again.aggregate_id.as_str(), again.version), ("l", 2));
        assert_eq!(again.events, first.events);
    }
    let opened = other
        .execute_with(
            "l",
            Open {
                owner: "ada".into(),
            },
            key(0),
        )
        .await
        .unwrap();
    assert!(opened.duplicate && opened.version == 1 && opened.events.len() == 1);

    // Another payload, or another command type, with a used id.
    for reused in [
        app.execute_with("l", Credit { amount: 4 }, key(1)).await,
        other.execute_with("l", Credit { amount: 4 }, key(1)).await,
    ] {
        assert!(
            matches!(
                reused,
                Err(CommandError::CommandIdReused { ref aggregate_id, command_id, command: "Credit", .. })
                    if aggregate_id == "l" && Some(command_id) == key(1).command_id
            ),
            "{reused:?}"
        );
    }
    let reused = app
        .execute_with(
            "l",
            Open {
                owner: "ada".into(),
            },
            key(1),
        )
        .await;
    assert!(
        matches!(
            reused,
            Err(CommandError::CommandIdReused {
                command: "Open",
                ..
            })
        ),
        "{reused:?}"
    );
    assert_eq!(store.load("ledger", "l", 1).await.unwrap().len(), 14);

    // Ten at once with one new id, through both apps.
    let mut racing = tokio::task::JoinSet::new();
    for n in 0..10 {
        let runner = if n % 2 == 0 {
            app.clone()
        } else {
            other.clone()
        };
        racing.spawn(async move {
            runner
                .execute_with("l", Credit { amount: 100 }, key(2))
                .await
                .unwrap()
        });
    }
    let answers: Vec<_> = racing.join_all().await;
    assert_eq!(answers.iter().filter(|done| !done.duplicate).count(), 1);
    let events = &answers[0].events;
    assert_eq!(events.len(), 1);
    for done in &answers {
        assert_eq!((done.version, &done.events), (15, events));
    }
    let stream = store.load("ledger", "l", 1).await.unwrap();
    assert_eq!(stream.len(), 15);
    assert_eq!(
        stream
            .iter()
            .filter(|e| e.metadata.command_id == key(2).command_id)
            .count(),
        1
    );
    assert_eq!(app.load::<Ledger>("l").await.unwrap().balance, 115);
}

/// `append_streams` checks each batch as `append` would, in the order given:
/// one refused (a conflict, a recorded command id, a reused event id, a
/// payload that is not JSON) records nothing of its own and leaves the
/// others; a stream given twice takes its second batch after its first;
/// each event keeps its own command id.
pub async fn streams_append_together_each_checked_alone<S: EventStore>(store: S) {
    let with_ids = |ids: &[Uuid]| {
        let mut batch = numbered(ids.len());
        for (event, id) in batch.iter_mut().zip(ids) {
            event.metadata.command_id = Some(*id);
        }
        batch
    };
    let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    store.append("t", "a", 0, with_ids(&[a])).await.unwrap();
    let taken = numbered(1);
    let mut reused = numbered(2);
    reused[1].event_id = taken[0].event_id;
    let mut not_json = numbered(1);
    not_json[0].payload = JsonPayload::from_text("{".to_owned());
    let outcomes = store
        .append_streams(vec![
            StreamAppend::new("t", "a", 1, with_ids(&[b, c])),
            StreamAppend::new("t", "b", 0, taken),
            StreamAppend::new("t", "c", 4, numbered(1)),
            StreamAppend::new("t", "d", 0, with_ids(&[Uuid::now_v7()])),
            StreamAppend::new("t", "d", 1, numbered(2)),
            StreamAppend::new("t", "a", 3, with_ids(&[b])),
            StreamAppend::new("t", "e", 0, reused),
            StreamAppend::new("t", "f", 0, not_json),
        ])
        .await;
    assert_eq!(outcomes.len(), 8);
    let sequences = |outcome: &Result<Vec<Envelope>, StoreError>| {
        outcome
            .as_ref()
            .map(|events| events.iter().map(|e| e.sequence).collect::<Vec<_>>())
            .map_err(|error| format!("{error:?}"))
    };
    assert_eq!(sequences(&outcomes[0]), Ok(vec![2, 3]));
    assert_eq!(sequences(&outcomes[1]), Ok(vec![1]));
    assert!(
        matches!(&outcomes[2], Err(StoreError::Conflict(conflict)) if conflict.actual == 0),
        "{:?}",
        outcomes[2]
    );
    assert_eq!(sequences(&outcomes[3]), Ok(vec![1]));
    assert_eq!(sequences(&outcomes[4]), Ok(vec![2, 3]));
    assert!(
        matches!(&outcomes[5], Err(StoreError::DuplicateCommand { command_id, .. }) if *command_id == b),
        "{:?}",
        outcomes[5]
    );
    assert!(
        matches!(&outcomes[6], Err(StoreError::Rejected { .. })),
        "{:?}",
        outcomes[6]
    );
    assert!(
        matches!(&outcomes[7], Err(StoreError::Rejected { .. })),
        "{:?}",
        outcomes[7]
    );

    // Nothing of the refused batches is stored, and the log has no gap.
    let log = store.read_all(1, 100).await.unwrap();
    assert_eq!(
        log.iter().map(|e| e.position).collect::<Vec<_>>(),
        (1..=7).collect::<Vec<u64>>()
    );
    assert_eq!(
        log.iter()
            .map(|e| (e.aggregate_id.as_str(), e.sequence))
            .filter(|(id, _)| *id != "d")
            .collect::<BTreeSet<_>>(),
        [("a", 1), ("a", 2), ("a", 3), ("b", 1)]
            .into_iter()
            .collect()
    );
    for (id, sequence) in [(b, 2), (c, 3)] {
        let found = store.load_command("t", "a", id).await.unwrap();
        assert_eq!(
            found.iter().map(|e| e.sequence).collect::<Vec<_>>(),
            vec![sequence],
            "each event keeps its own command id"
        );
    }
}
