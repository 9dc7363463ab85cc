//! The `EventStore` contract on `MemoryStore`, and what the app does with rows
//! it cannot read.

use cqrs_core::prelude::*;
use cqrs_core::store::NewEvent;
use cqrs_core::{
    CommandError, DecodeError, JsonPayload, LoadError, PayloadError, StoreError, Uuid,
};
use cqrs_examples::bank::*;

fn new_event(name: &'static str, payload: &str) -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        event_name: name,
        event_version: 1,
        metadata: Metadata::default(),
        payload: JsonPayload::from_text(payload),
        tags: Vec::new(),
    }
}

#[tokio::test]
async fn appends_check_the_expected_version() {
    let store = MemoryStore::new();
    let first = store
        .append("t", "s", 0, vec![new_event("A", "1"), new_event("B", "2")])
        .await
        .unwrap();
    assert_eq!(
        first
            .iter()
            .map(|e| (e.sequence, e.position))
            .collect::<Vec<_>>(),
        [(1, 1), (2, 2)]
    );
    let err = store
        .append("t", "s", 1, vec![new_event("C", "3")])
        .await
        .unwrap_err();
    match err {
        StoreError::Conflict(conflict) => {
            assert_eq!((conflict.expected, conflict.actual), (1, 2));
            assert_eq!(
                (
                    conflict.aggregate_type.as_str(),
                    conflict.aggregate_id.as_str()
                ),
                ("t", "s")
            );
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    let err = store
        .append("t", "new", 1, vec![new_event("C", "3")])
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict(ref c) if c.actual == 0),
        "{err:?}"
    );
    assert_eq!(store.read_all(1, 10).await.unwrap().len(), 2);
}

#[tokio::test]
async fn a_batch_is_all_or_nothing() {
    let store = MemoryStore::new();
    store
        .append("t", "s", 0, vec![new_event("A", "1")])
        .await
        .unwrap();
    let reused = store.read_all(1, 1).await.unwrap()[0].event_id;
    let mut batch = vec![new_event("B", "2"), new_event("C", "3")];
    batch[1].event_id = reused;
    let err = store.append("t", "s", 1, batch).await.unwrap_err();
    assert!(matches!(err, StoreError::Rejected { .. }), "{err:?}");
    assert_eq!(
        store.load("t", "s", 1).await.unwrap().len(),
        1,
        "B was not recorded"
    );
    let twice = new_event("D", "4");
    let err = store
        .append("t", "s", 1, vec![twice.clone(), twice])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Rejected { .. }), "{err:?}");
    assert_eq!(store.read_all(1, 10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn streams_and_the_global_log_read_in_order() {
    let store = MemoryStore::new();
    for round in 0..3u64 {
        for stream in ["a", "b"] {
            store
                .append("t", stream, round, vec![new_event("E", &round.to_string())])
                .await
                .unwrap();
        }
    }
    let a = store.load("t", "a", 2).await.unwrap();
    assert_eq!(a.iter().map(|e| e.sequence).collect::<Vec<_>>(), [2, 3]);
    assert_eq!(a.iter().map(|e| e.position).collect::<Vec<_>>(), [3, 5]);
    assert!(store.load("t", "a", 4).await.unwrap().is_empty());
    assert!(store.load("other", "a", 1).await.unwrap().is_empty());

    let page = store.read_all(2, 3).await.unwrap();
    assert_eq!(
        page.iter().map(|e| e.position).collect::<Vec<_>>(),
        [2, 3, 4]
    );
    assert!(store.read_all(7, 10).await.unwrap().is_empty());
    assert_eq!(
        store.read_all(0, 100).await.unwrap().len(),
        6,
        "position 0 reads from the start"
    );
}

#[tokio::test]
async fn unreadable_rows_give_typed_errors_and_the_rest_stays_usable() {
    let store = std::sync::Arc::new(MemoryStore::new());
    let app = Cqrs::builder(store.clone())
        .without_event_handlers()
        .without_processors()
        .build()
        .unwrap();
    app.execute("good", OpenAccount { owner: "g".into() })
        .await
        .unwrap();
    app.execute("bad", OpenAccount { owner: "b".into() })
        .await
        .unwrap();
    store
        .append("account", "bad", 1, vec![new_event("account.closed", "{}")])
        .await
        .unwrap();

    let err = app.load::<Account>("bad").await.unwrap_err();
    let LoadError::Decode(decode) = err else {
        panic!("expected a decode error, got {err:?}")
    };
    let DecodeError {
        aggregate_type,
        aggregate_id,
        sequence,
        position,
        event_name,
        source,
        ..
    } = *decode;
    assert_eq!(
        (
            aggregate_type.as_str(),
            aggregate_id.as_str(),
            sequence,
            position,
            event_name.as_str()
        ),
        ("account", "bad", 2, 3, "account.closed")
    );
    assert!(matches!(source, PayloadError::UnknownName { ref name } if name == "account.closed"));

    let err = app
        .execute("bad", DepositMoney { amount: 1 })
        .await
        .unwrap_err();
    assert!(
        matches!(err, CommandError::Decode(ref e) if e.sequence == 2),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "cannot decode event `account.closed` v1 at account `bad` sequence 2: \
         no event is stored as `account.closed`"
    );

    app.execute("good", DepositMoney { amount: 1 })
        .await
        .expect("other streams are unaffected");
    assert_eq!(store.read_all(1, 10).await.unwrap().len(), 4);
}

#[tokio::test]
async fn a_payload_of_the_wrong_shape_or_version_is_named() {
    let store = std::sync::Arc::new(MemoryStore::new());
    let app = Cqrs::builder(store.clone())
        .without_event_handlers()
        .without_processors()
        .build()
        .unwrap();
    store
        .append(
            "account",
            "shape",
            0,
            vec![new_event("AccountOpened", r#"{"owner": 42}"#)],
        )
        .await
        .unwrap();
    let err = app.load::<Account>("shape").await.unwrap_err();
    let LoadError::Decode(decode) = err else {
        panic!("{err:?}")
    };
    assert!(
        matches!(
            &decode.source,
            PayloadError::Invalid {
                rust_type: "AccountOpened",
                ..
            }
        ),
        "{decode:?}"
    );

    let mut newer = new_event("AccountOpened", r#"{"owner":"x"}"#);
    newer.event_version = 2;
    store
        .append("account", "version", 0, vec![newer])
        .await
        .unwrap();
    let err = app.load::<Account>("version").await.unwrap_err();
    let LoadError::Decode(decode) = err else {
        panic!("{err:?}")
    };
    assert!(
        matches!(&decode.source, PayloadError::UnknownVersion { version: 2, known, .. } if known == &[1]),
        "{decode:?}"
    );
}
