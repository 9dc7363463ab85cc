//! Optimistic concurrency: many writers on one aggregate, in one app and in
//! several apps sharing a store. No event may be lost or recorded twice.

use std::collections::BTreeSet;
use std::sync::Arc;

use cqrs_core::prelude::*;
use cqrs_examples::bank::*;

const TASKS: u64 = 8;
const DEPOSITS: u64 = 40;

fn app(store: Arc<MemoryStore>, max_retries: u32) -> Cqrs {
    Cqrs::builder(store)
        .host::<Bank>()
        .without_event_handlers()
        .max_retries(max_retries)
        .build()
        .unwrap()
}

/// Checks the stream holds one `Opened` and `TASKS * DEPOSITS` deposits with
/// gap-free sequences, and that the balances add up.
async fn check_stream(store: &MemoryStore, id: &str, versions: &[u64]) {
    let stream = store.load("account", id, 1).await.unwrap();
    let expected = 1 + TASKS * DEPOSITS;
    assert_eq!(stream.len() as u64, expected);
    let sequences: Vec<u64> = stream.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, (1..=expected).collect::<Vec<_>>());
    let distinct: BTreeSet<u64> = versions.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        versions.len(),
        "every success has its own version"
    );
    assert_eq!(
        distinct,
        (2..=expected).collect(),
        "and together they are the stream"
    );
    let ids: BTreeSet<_> = stream.iter().map(|e| e.event_id).collect();
    assert_eq!(ids.len() as u64, expected, "no event recorded twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_commands_in_one_app() {
    let store = Arc::new(MemoryStore::new());
    let app = app(store.clone(), 0);
    app.execute("hot", OpenAccount { owner: "h".into() })
        .await
        .unwrap();
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move {
                let mut versions = Vec::new();
                for _ in 0..DEPOSITS {
                    let done = app
                        .execute("hot", DepositMoney { amount: 1 })
                        .await
                        .unwrap();
                    assert_eq!(
                        done.retries, 0,
                        "commands in one app queue, they do not race"
                    );
                    versions.push(done.version);
                }
                versions
            })
        })
        .collect();
    let mut versions = Vec::new();
    for task in tasks {
        versions.extend(task.await.unwrap());
    }
    check_stream(&store, "hot", &versions).await;
    let account: Account = app.load("hot").await.unwrap();
    assert_eq!(account.balance, TASKS * DEPOSITS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_commands_from_apps_sharing_a_store() {
    let store = Arc::new(MemoryStore::new());
    let apps: Vec<_> = (0..4).map(|_| app(store.clone(), 1_000)).collect();
    apps[0]
        .execute("hot", OpenAccount { owner: "h".into() })
        .await
        .unwrap();
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let app = apps[task as usize % apps.len()].clone();
            tokio::spawn(async move {
                let mut versions = Vec::new();
                let mut retries = 0;
                for _ in 0..DEPOSITS {
                    let done = app
                        .execute("hot", DepositMoney { amount: 1 })
                        .await
                        .unwrap();
                    versions.push(done.version);
                    retries += done.retries;
                    tokio::task::yield_now().await;
                }
                (versions, retries)
            })
        })
        .collect();
    let mut versions = Vec::new();
    let mut retries = 0;
    for task in tasks {
        let (task_versions, task_retries) = task.await.unwrap();
        versions.extend(task_versions);
        retries += task_retries;
    }
    // Each app's cache goes stale whenever another app writes, so the
    // conflict-and-retry path must have run.
    assert!(retries > 0);
    check_stream(&store, "hot", &versions).await;
    // Each deposit was decided on the balance it saw: if a retry had decided
    // on a stale state, two deposits would record the same balance.
    let balances: BTreeSet<u64> = store
        .load("account", "hot", 2)
        .await
        .unwrap()
        .iter()
        .map(|e| e.payload.decode::<MoneyDeposited>().unwrap().balance)
        .collect();
    assert_eq!(balances, (1..=TASKS * DEPOSITS).collect());
}

#[tokio::test]
async fn a_conflict_past_the_retry_bound_is_an_error_and_changes_nothing() {
    let store = Arc::new(MemoryStore::new());
    let stubborn = app(store.clone(), 0);
    let other = app(store.clone(), 0);
    stubborn
        .execute("c", OpenAccount { owner: "c".into() })
        .await
        .unwrap();
    other
        .execute("c", DepositMoney { amount: 1 })
        .await
        .unwrap();

    let err = stubborn
        .execute("c", DepositMoney { amount: 1 })
        .await
        .unwrap_err();
    match err {
        CommandError::Conflict { conflict, attempts } => {
            assert_eq!(attempts, 1);
            assert_eq!((conflict.expected, conflict.actual), (1, 2));
            assert_eq!(conflict.aggregate_id, "c");
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(store.load("account", "c", 1).await.unwrap().len(), 2);

    // The conflict brought the cache up to date: the next command succeeds.
    let done = stubborn
        .execute("c", DepositMoney { amount: 1 })
        .await
        .unwrap();
    assert_eq!((done.version, done.retries), (3, 0));
}

#[tokio::test]
async fn a_small_cache_evicts_idle_aggregates_and_stays_correct() {
    let store = Arc::new(MemoryStore::new());
    let app = Cqrs::builder(store.clone())
        .host::<Bank>()
        .without_event_handlers()
        .cache_capacity(4)
        .build()
        .unwrap();
    for round in 0..3u64 {
        for id in 0..20 {
            let id = format!("acc-{id}");
            if round == 0 {
                app.execute(&id, OpenAccount { owner: id.clone() })
                    .await
                    .unwrap();
            }
            let done = app.execute(&id, DepositMoney { amount: 1 }).await.unwrap();
            assert_eq!(done.version, round + 2);
            assert_eq!(
                done.events[0].payload,
                AccountEvent::Deposited(MoneyDeposited {
                    amount: 1,
                    balance: round + 1
                })
            );
        }
    }
}
