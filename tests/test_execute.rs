//! `Cqrs::execute` and `Cqrs::load` on the in-memory store: routing by command
//! type, the create/existing rules, envelopes, metadata and replay.

use cqrs_core::prelude::*;
use cqrs_core::{LoadError, MemoryStore};
use cqrs_examples::bank::*;

fn app() -> Cqrs {
    Cqrs::builder(MemoryStore::new())
        .host::<Bank>()
        .without_event_handlers()
        .build()
        .expect("registry")
}

#[tokio::test]
async fn the_contract() {
    let app = app();
    let done = app
        .execute(
            "acc-1",
            OpenAccount {
                owner: "ada".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(done.version, 1);
    assert_eq!(done.events.len(), 1);
    assert_eq!(
        done.events[0].payload,
        AccountEvent::Opened(AccountOpened {
            owner: "ada".into()
        })
    );
    app.execute("acc-1", DepositMoney { amount: 100 })
        .await
        .unwrap();
    let err = app
        .execute("acc-1", WithdrawMoney { amount: 500 })
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        CommandError::Domain(AccountError::InsufficientFunds {
            balance: 100,
            requested: 500
        })
    ));
    let account: Account = app.load("acc-1").await.unwrap();
    assert_eq!(account.balance, 100);
    assert_eq!(account.owner, "ada");
}

#[tokio::test]
async fn accepts_the_command_enum() {
    let app = app();
    let command = AccountCommand::Open(OpenAccount {
        owner: "bob".into(),
    });
    let done = app.execute("acc-enum", command).await.unwrap();
    assert_eq!(done.version, 1);
}

#[tokio::test]
async fn create_runs_only_on_a_new_aggregate() {
    let app = app();
    app.execute(
        "acc-2",
        OpenAccount {
            owner: "ada".into(),
        },
    )
    .await
    .unwrap();
    let err = app
        .execute(
            "acc-2",
            OpenAccount {
                owner: "eve".into(),
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CommandError::AlreadyExists { aggregate_type: "account", aggregate_id, version: 1 } if aggregate_id == "acc-2"),
        "{err:?}"
    );
    let account: Account = app.load("acc-2").await.unwrap();
    assert_eq!(
        account.owner, "ada",
        "the rejected command recorded nothing"
    );
}

#[tokio::test]
async fn other_commands_need_an_existing_aggregate() {
    let app = app();
    let err = app
        .execute("nobody", DepositMoney { amount: 1 })
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CommandError::NotFound { aggregate_type: "account", aggregate_id } if aggregate_id == "nobody"),
        "{err:?}"
    );
    assert!(app.read_all(1, 10).await.unwrap().is_empty());
    let err = app.load::<Account>("nobody").await.unwrap_err();
    assert!(matches!(err, LoadError::NotFound { .. }), "{err:?}");
}

#[tokio::test]
async fn envelopes_carry_the_log_positions_and_stored_names() {
    let app = app();
    app.execute("a", OpenAccount { owner: "a".into() })
        .await
        .unwrap();
    app.execute("b", OpenAccount { owner: "b".into() })
        .await
        .unwrap();
    let done = app.execute("a", DepositMoney { amount: 5 }).await.unwrap();
    let envelope = &done.events[0];
    assert_eq!(envelope.aggregate_type, "account");
    assert_eq!(envelope.aggregate_id, "a");
    assert_eq!(envelope.sequence, 2);
    assert_eq!(envelope.position, 3);
    assert_eq!(envelope.event_name, "account.deposited");
    assert_eq!(envelope.event_version, 1);
    assert_eq!(envelope.event_id.get_version_num(), 7, "UUIDv7");

    let log = app.read_all(1, 100).await.unwrap();
    let names: Vec<&str> = log.iter().map(|e| e.event_name.as_str()).collect();
    assert_eq!(
        names,
        ["AccountOpened", "AccountOpened", "account.deposited"]
    );
    assert_eq!(log[2].payload.as_str(), r#"{"amount":5,"balance":5}"#);
    assert!(log.windows(2).all(|w| w[0].event_id < w[1].event_id));
    assert!(log.windows(2).all(|w| w[0].recorded_at <= w[1].recorded_at));
}

#[tokio::test]
async fn metadata_is_recorded_on_every_event_with_a_correlation_id() {
    let app = app();
    let metadata = Metadata::default().with("user", "ada");
    let done = app
        .execute_with(
            "m",
            OpenAccount {
                owner: "ada".into(),
            },
            metadata,
        )
        .await
        .unwrap();
    let recorded = &done.events[0].metadata;
    assert_eq!(recorded.get("user"), Some("ada"));
    assert!(recorded.correlation_id.is_some());
    let stored = app.read_stream("account", "m", 1).await.unwrap();
    assert_eq!(&stored[0].metadata, recorded);

    let correlation = uuid_v7_from(&done);
    let chained = Metadata {
        correlation_id: Some(correlation),
        ..Metadata::default()
    };
    let done = app
        .execute_with("m", DepositMoney { amount: 1 }, chained)
        .await
        .unwrap();
    assert_eq!(done.events[0].metadata.correlation_id, Some(correlation));
}

fn uuid_v7_from(done: &cqrs_core::Committed<AccountEvent>) -> cqrs_core::Uuid {
    done.events[0].metadata.correlation_id.expect("assigned")
}

#[tokio::test]
async fn a_rejected_command_changes_nothing() {
    let app = app();
    app.execute("r", OpenAccount { owner: "r".into() })
        .await
        .unwrap();
    app.execute("r", DepositMoney { amount: 10 }).await.unwrap();
    app.execute("r", WithdrawMoney { amount: 11 })
        .await
        .unwrap_err();
    let done = app
        .execute("r", WithdrawMoney { amount: 10 })
        .await
        .unwrap();
    assert_eq!(done.version, 3);
    assert_eq!(app.read_all(1, 100).await.unwrap().len(), 3);
}

#[tokio::test]
async fn the_cache_follows_writes_from_another_app() {
    // Two apps over one store: each caches the aggregate; the second must
    // notice the first's writes through the conflict, not lose them.
    let store = std::sync::Arc::new(MemoryStore::new());
    let first = Cqrs::builder(store.clone())
        .host::<Bank>()
        .without_event_handlers()
        .build()
        .unwrap();
    let second = Cqrs::builder(store.clone())
        .host::<Bank>()
        .without_event_handlers()
        .build()
        .unwrap();
    first
        .execute("shared", OpenAccount { owner: "s".into() })
        .await
        .unwrap();
    second
        .execute("shared", DepositMoney { amount: 1 })
        .await
        .unwrap();
    let done = first
        .execute("shared", DepositMoney { amount: 1 })
        .await
        .unwrap();
    assert_eq!(done.version, 3);
    assert_eq!(done.retries, 1, "the stale cache cost one retry");
    assert_eq!(
        done.events[0].payload,
        AccountEvent::Deposited(MoneyDeposited {
            amount: 1,
            balance: 2
        }),
        "decided on the caught-up state"
    );
}

#[tokio::test]
async fn a_rejection_from_a_cached_state_is_checked_against_the_store() {
    let store = std::sync::Arc::new(MemoryStore::new());
    let first = Cqrs::builder(store.clone())
        .host::<Bank>()
        .without_event_handlers()
        .build()
        .unwrap();
    let second = Cqrs::builder(store.clone())
        .host::<Bank>()
        .without_event_handlers()
        .build()
        .unwrap();
    first
        .execute("stale", OpenAccount { owner: "s".into() })
        .await
        .unwrap();
    second
        .execute("stale", DepositMoney { amount: 100 })
        .await
        .unwrap();
    // The first app's cache still says balance 0; the store says 100.
    let done = first
        .execute("stale", WithdrawMoney { amount: 50 })
        .await
        .expect("decided again on the state in the store");
    assert_eq!((done.version, done.retries), (3, 1));

    // A rejection that holds after catching up stays a rejection.
    let err = first
        .execute("stale", WithdrawMoney { amount: 500 })
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        CommandError::Domain(AccountError::InsufficientFunds { balance: 50, .. })
    ));

    // So does NotFound, once the store is asked.
    first
        .execute("later", DepositMoney { amount: 1 })
        .await
        .unwrap_err();
    second
        .execute("later", OpenAccount { owner: "l".into() })
        .await
        .unwrap();
    let done = first
        .execute("later", DepositMoney { amount: 1 })
        .await
        .expect("the aggregate another app created is found");
    assert_eq!(done.version, 2);
}
