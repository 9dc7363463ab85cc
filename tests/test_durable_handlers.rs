//! Free `#[event_handler]` functions are durable: each follows the log from
//! a checkpoint of its own, like a projection, so it sees every event at
//! least once, in order, also one committed by a process that died before
//! delivering it. Failures are retried and reported in `status()`.
//! (`#[event_handler(inline)]` is in `test_handlers.rs`.)

mod support;

use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cqrs_core::prelude::*;
use cqrs_core::processor::{Lease, ParkState, ProcessorKind, RetryPolicy};
use cqrs_core::{SqliteStore, ViewStore};
use cqrs_examples::bank::*;
use support::TempFile;

/// (account, amount, position) of every deposit `record_deposit` saw.
static DEPOSITS: Mutex<Vec<(String, u64, u64)>> = Mutex::new(Vec::new());

fn deposits_of(prefix: &str) -> Vec<(String, u64, u64)> {
    DEPOSITS
        .lock()
        .unwrap()
        .iter()
        .filter(|(account, ..)| account.starts_with(prefix))
        .cloned()
        .collect()
}

/// Set in the child process of the crash test: the handler kills its own
/// process while it delivers, before the checkpoint can move.
const DIE_WHILE_DELIVERING: &str = "CQRS_TEST_DIE_WHILE_DELIVERING";

#[event_handler]
fn record_deposit(event: &MoneyDeposited, envelope: &Envelope<AccountEvent>) {
    if std::env::var_os(DIE_WHILE_DELIVERING).is_some() {
        std::process::abort();
    }
    DEPOSITS.lock().unwrap().push((
        envelope.aggregate_id.clone(),
        event.amount,
        envelope.position,
    ));
}

/// Refuses withdrawals of `refuse-*` accounts while `REFUSING` is set.
static REFUSING: AtomicBool = AtomicBool::new(false);

#[event_handler(name = "durable.withdrawal_audit")]
async fn audit_withdrawal(
    event: &MoneyWithdrawn,
    envelope: &Envelope<AccountEvent>,
) -> Result<(), String> {
    tokio::task::yield_now().await;
    if REFUSING.load(Ordering::SeqCst) && envelope.aggregate_id.starts_with("refuse") {
        return Err(format!("the audit log refuses {}", event.amount));
    }
    Ok(())
}

/// `record_deposit` alone, on `store` and `views`, with a lease a crashed
/// process holds for a second.
fn deposits_app(store: impl EventStore, views: ViewStore) -> Cqrs {
    Cqrs::builder(store)
        .event_handlers(|handler| handler.name == "test_durable_handlers::record_deposit")
        .without_processors()
        .views(views)
        .poll_interval(Duration::from_millis(20))
        .lease(Lease::new(
            Duration::from_secs(1),
            Duration::from_millis(200),
        ))
        .build()
        .unwrap()
}

async fn open_and_deposit(app: &Cqrs, id: &str, amounts: &[u64]) -> u64 {
    app.execute(id, OpenAccount { owner: "o".into() })
        .await
        .unwrap();
    let mut last = 0;
    for &amount in amounts {
        let done = app.execute(id, DepositMoney { amount }).await.unwrap();
        last = done.last_position().unwrap();
    }
    last
}

#[tokio::test]
async fn a_durable_handler_sees_each_event_once_in_order_from_its_checkpoint() {
    let app = deposits_app(MemoryStore::new(), ViewStore::in_memory());
    let last = open_and_deposit(&app, "order-1", &[5, 6, 7]).await;
    assert!(
        deposits_of("order-").is_empty(),
        "nothing is delivered in the command's path"
    );
    app.processors().catch_up().await.unwrap();
    let seen = deposits_of("order-");
    assert_eq!(
        seen.iter()
            .map(|(_, amount, _)| *amount)
            .collect::<Vec<_>>(),
        [5, 6, 7]
    );
    assert!(seen.windows(2).all(|pair| pair[0].2 < pair[1].2));
    app.processors().catch_up().await.unwrap();
    assert_eq!(deposits_of("order-").len(), 3, "the checkpoint moved on");

    let status = app.processors().status();
    assert_eq!(status.len(), 1, "{status:?}");
    assert_eq!(status[0].name, "test_durable_handlers::record_deposit");
    assert_eq!(status[0].kind, ProcessorKind::EventHandler);
    assert_eq!(status[0].position, last);
    assert_eq!(
        app.views()
            .checkpoint("test_durable_handlers::record_deposit")
            .await
            .unwrap(),
        last
    );
}

/// A handler that keeps failing is retried by the policy, then its event is
/// parked with the error: the handler goes on with the other streams, and
/// after the fix a retry delivers it.
#[tokio::test]
async fn a_failing_durable_handler_is_retried_parked_and_retried_after_the_fix() {
    let app = Cqrs::builder(MemoryStore::new())
        .event_handlers(|handler| handler.name == "durable.withdrawal_audit")
        .without_processors()
        .poll_interval(Duration::from_millis(20))
        .retry_policy(
            RetryPolicy::default()
                .max_attempts(3)
                .delays(Duration::from_millis(2), Duration::from_millis(10)),
        )
        .build()
        .unwrap();
    assert_eq!(app.processors().names(), ["durable.withdrawal_audit"]);
    REFUSING.store(true, Ordering::SeqCst);
    for id in ["refuse-1", "fine-1"] {
        app.execute(id, OpenAccount { owner: "r".into() })
            .await
            .unwrap();
        app.execute(id, DepositMoney { amount: 50 }).await.unwrap();
    }
    let refused = app
        .execute("refuse-1", WithdrawMoney { amount: 20 })
        .await
        .unwrap()
        .last_position()
        .unwrap();
    let last = app
        .execute("fine-1", WithdrawMoney { amount: 5 })
        .await
        .unwrap()
        .last_position()
        .unwrap();
    let running = app.processors().run();
    let shutdown = running.shutdown();
    let task = tokio::spawn(running);

    // Parked after three attempts: the handler is past it.
    tokio::time::timeout(
        Duration::from_secs(10),
        app.processors()
            .wait_for_named(last, &["durable.withdrawal_audit"]),
    )
    .await
    .unwrap()
    .unwrap();
    let parked = app
        .processors()
        .parked("durable.withdrawal_audit")
        .await
        .unwrap();
    assert_eq!(parked.len(), 1, "{parked:?}");
    assert_eq!(
        (parked[0].position, parked[0].attempts, parked[0].state),
        (refused, 3, ParkState::Parked)
    );
    assert_eq!(parked[0].aggregate_id, "refuse-1");
    assert!(
        parked[0]
            .error
            .as_deref()
            .is_some_and(|error| error.contains("the audit log refuses 20")),
        "{parked:?}"
    );
    let status = &app.processors().status()[0];
    assert_eq!((status.parked, status.stopped), (1, false), "{status:?}");

    REFUSING.store(false, Ordering::SeqCst);
    assert!(
        app.processors()
            .retry_parked("durable.withdrawal_audit", refused)
            .await
            .unwrap()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let parked = app
            .processors()
            .parked("durable.withdrawal_audit")
            .await
            .unwrap();
        if parked[0].state == ParkState::Retried {
            assert_eq!(parked[0].attempts, 4, "{parked:?}");
            break;
        }
        assert!(Instant::now() < deadline, "not retried: {parked:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shutdown.now().await;
    task.await.unwrap().unwrap();
    assert_eq!(app.processors().status()[0].parked, 0);
}

#[test]
fn inline_handlers_are_not_processors_and_durable_ones_are() {
    let app = Cqrs::builder(MemoryStore::new())
        .without_processors()
        .build()
        .unwrap();
    let mut names = app.processors().names();
    names.sort_unstable();
    // The examples' notifier, linked in, has a durable handler too.
    assert_eq!(
        names,
        [
            "durable.withdrawal_audit",
            "notifier.order_placed",
            "test_durable_handlers::record_deposit"
        ]
    );
}

/// The child of the crash test: commits two deposits on the SQLite file
/// named by `CQRS_TEST_CRASH_CHILD`, then runs its processors, and dies
/// inside the first delivery. A no-op in the normal test run.
#[tokio::test]
async fn crash_child() {
    let Some(path) = std::env::var_os("CQRS_TEST_CRASH_CHILD") else {
        return;
    };
    let store = SqliteStore::open(&path).await.unwrap();
    let views = store.views();
    let app = deposits_app(store, views);
    open_and_deposit(&app, "crash-1", &[11, 12]).await;
    println!("committed");
    // The handler aborts the process on its first delivery.
    let _ = app.processors().catch_up().await;
    panic!("the handler was never called");
}

/// A process commits two deposits and is killed (SIGABRT) inside the
/// durable handler, before its checkpoint moved. A new process on the same
/// file delivers both: the handler never misses an event because the
/// committing process died. (An inline handler would have lost them.)
#[tokio::test]
async fn an_event_committed_by_a_process_that_died_is_delivered_after_the_restart() {
    let file = TempFile::new("durable-crash");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env("CQRS_TEST_CRASH_CHILD", file.path())
        .env(DIE_WHILE_DELIVERING, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            // Only the child this test started, by its pid.
            let _ = child.kill();
            panic!("the child did not die within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let stdout = std::io::read_to_string(child.stdout.take().unwrap()).unwrap();
    assert!(stdout.contains("committed"), "{stdout}");
    assert!(!status.success(), "the child died in the handler: {status}");

    let store = SqliteStore::open(file.path()).await.unwrap();
    let views = store.views();
    assert_eq!(
        views
            .checkpoint("test_durable_handlers::record_deposit")
            .await
            .unwrap(),
        0,
        "the dead process delivered nothing"
    );
    let app = deposits_app(store, views);
    app.processors().catch_up().await.unwrap();
    let seen = deposits_of("crash-");
    assert_eq!(
        seen.iter()
            .map(|(id, amount, _)| (id.as_str(), *amount))
            .collect::<Vec<_>>(),
        [("crash-1", 11), ("crash-1", 12)]
    );
}
