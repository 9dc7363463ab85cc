//! `#[event_handler(inline)]` functions: registered through inventory,
//! called right after each commit with each event of their type, failures
//! reported beside the result. (Handlers that follow the log from a
//! checkpoint are in `test_durable_handlers.rs`.)

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use cqrs_core::Uuid;
use cqrs_core::prelude::*;
use cqrs_core::registry::Registry;
use cqrs_examples::bank::*;

/// (handler, aggregate id, sequence) of every delivery, across tests: each
/// test uses its own aggregate ids and reads only those.
static DELIVERED: Mutex<Vec<(&str, String, u64)>> = Mutex::new(Vec::new());

fn delivered(aggregate_id: &str) -> Vec<(&'static str, u64)> {
    DELIVERED
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, id, _)| id == aggregate_id)
        .map(|(handler, _, sequence)| (*handler, *sequence))
        .collect()
}

#[event_handler(inline)]
fn record_deposit(event: &MoneyDeposited, envelope: &Envelope<AccountEvent>) {
    assert_eq!(envelope.payload, AccountEvent::Deposited(event.clone()));
    DELIVERED.lock().unwrap().push((
        "record_deposit",
        envelope.aggregate_id.clone(),
        envelope.sequence,
    ));
}

#[event_handler(inline)]
async fn record_withdrawal(event: &MoneyWithdrawn, envelope: &Envelope<AccountEvent>) {
    tokio::task::yield_now().await;
    assert!(event.amount > 0);
    DELIVERED.lock().unwrap().push((
        "record_withdrawal",
        envelope.aggregate_id.clone(),
        envelope.sequence,
    ));
}

#[event_handler(inline)]
fn refuse_large_deposits(event: &MoneyDeposited) -> Result<(), String> {
    if event.amount > 1_000 {
        return Err(format!("{} is too large to audit", event.amount));
    }
    Ok(())
}

/// The app `refund_to_self` sends its command through.
static REENTRANT_APP: OnceLock<Cqrs> = OnceLock::new();

/// Sends a command back to the aggregate whose event it handles.
#[event_handler(inline)]
async fn refund_to_self(
    event: &MoneyWithdrawn,
    envelope: &Envelope<AccountEvent>,
) -> Result<(), String> {
    if envelope.aggregate_id != "h-reentrant" || event.amount != 100 {
        return Ok(());
    }
    let app = REENTRANT_APP.get().ok_or("no app")?;
    app.execute(&envelope.aggregate_id, DepositMoney { amount: 1 })
        .await
        .map(drop)
        .map_err(|error| error.to_string())
}

fn all_handlers() -> Cqrs {
    Cqrs::builder(MemoryStore::new())
        .host::<Bank>()
        .build()
        .unwrap()
}

async fn open(app: &Cqrs, id: &str) {
    app.execute(id, OpenAccount { owner: id.into() })
        .await
        .unwrap();
}

#[tokio::test]
async fn every_committed_event_reaches_its_handlers_in_order() {
    let app = all_handlers();
    open(&app, "h-order").await;
    app.execute("h-order", DepositMoney { amount: 10 })
        .await
        .unwrap();
    app.execute("h-order", WithdrawMoney { amount: 3 })
        .await
        .unwrap();
    app.execute("h-order", DepositMoney { amount: 1 })
        .await
        .unwrap();
    assert_eq!(
        delivered("h-order"),
        [
            ("record_deposit", 2),
            ("record_withdrawal", 3),
            ("record_deposit", 4)
        ]
    );
}

#[tokio::test]
async fn a_handler_may_send_a_command_to_the_same_aggregate() {
    let app = REENTRANT_APP.get_or_init(all_handlers);
    open(app, "h-reentrant").await;
    app.execute("h-reentrant", DepositMoney { amount: 100 })
        .await
        .unwrap();
    let done = tokio::time::timeout(
        Duration::from_secs(10),
        app.execute("h-reentrant", WithdrawMoney { amount: 100 }),
    )
    .await
    .expect("the handler's command does not wait on the aggregate it came from")
    .unwrap();
    assert!(
        done.handler_failures.is_empty(),
        "{:?}",
        done.handler_failures
    );
    let account: Account = app.load("h-reentrant").await.unwrap();
    assert_eq!(account.balance, 1);
    assert_eq!(
        delivered("h-reentrant"),
        [
            ("record_deposit", 2),
            ("record_withdrawal", 3),
            ("record_deposit", 4)
        ]
    );
}

#[tokio::test]
async fn a_rejected_command_delivers_nothing() {
    let app = all_handlers();
    open(&app, "h-rejected").await;
    app.execute("h-rejected", WithdrawMoney { amount: 3 })
        .await
        .unwrap_err();
    assert!(delivered("h-rejected").is_empty());
}

#[tokio::test]
async fn a_failing_handler_is_reported_and_the_events_stay() {
    let app = all_handlers();
    open(&app, "h-fail").await;
    let done = app
        .execute("h-fail", DepositMoney { amount: 5_000 })
        .await
        .unwrap();
    assert_eq!(done.version, 2);
    assert_eq!(done.handler_failures.len(), 1);
    let failure = &done.handler_failures[0];
    assert_eq!(failure.handler, "test_handlers::refuse_large_deposits");
    assert_eq!(failure.event_name, "account.deposited");
    assert_eq!(failure.event_id, done.events[0].event_id);
    assert_eq!(failure.error.to_string(), "5000 is too large to audit");
    assert_eq!(
        delivered("h-fail"),
        [("record_deposit", 2)],
        "the others still ran"
    );
    let account: Account = app.load("h-fail").await.unwrap();
    assert_eq!(account.balance, 5_000);
}

#[tokio::test]
async fn an_app_can_deliver_to_a_chosen_subset() {
    let app = Cqrs::builder(MemoryStore::new())
        .host::<Bank>()
        .event_handlers(|handler| handler.name.ends_with("::record_withdrawal"))
        .build()
        .unwrap();
    open(&app, "h-subset").await;
    let done = app
        .execute("h-subset", DepositMoney { amount: 5_000 })
        .await
        .unwrap();
    assert!(
        done.handler_failures.is_empty(),
        "refuse_large_deposits is not in the app"
    );
    app.execute("h-subset", WithdrawMoney { amount: 1 })
        .await
        .unwrap();
    assert_eq!(delivered("h-subset"), [("record_withdrawal", 3)]);

    let app = Cqrs::builder(MemoryStore::new())
        .host::<Bank>()
        .without_event_handlers()
        .build()
        .unwrap();
    open(&app, "h-none").await;
    app.execute("h-none", DepositMoney { amount: 1 })
        .await
        .unwrap();
    assert!(delivered("h-none").is_empty());
}

#[tokio::test]
async fn a_closure_can_handle_events_of_one_app() {
    type Seen = Arc<Mutex<Vec<(u64, Option<Uuid>)>>>;
    let seen: Seen = Arc::default();
    let sink = seen.clone();
    let app = Cqrs::builder(MemoryStore::new())
        .host::<Bank>()
        .without_event_handlers()
        .on_event("test::balances", move |event: &MoneyDeposited, envelope| {
            sink.lock()
                .unwrap()
                .push((event.balance, envelope.metadata.correlation_id));
        })
        .build()
        .unwrap();
    open(&app, "h-closure").await;
    let done = app
        .execute("h-closure", DepositMoney { amount: 7 })
        .await
        .unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        [(7, done.events[0].metadata.correlation_id)]
    );
}

#[test]
fn the_registry_lists_what_the_macros_registered() {
    let registry = Registry::global();
    registry.check().unwrap();
    let account = registry
        .aggregates()
        .iter()
        .find(|aggregate| aggregate.name == "account")
        .expect("Account is registered");
    assert_eq!(account.rust_type, "cqrs_examples::bank::Account");
    assert_eq!(account.command_type, "AccountCommand");
    assert_eq!(account.event_type, "AccountEvent");

    let events = registry
        .events()
        .iter()
        .find(|events| events.rust_type == "cqrs_examples::bank::AccountEvent")
        .expect("AccountEvent is registered");
    let names: Vec<(&str, u32, &str)> = events
        .types
        .iter()
        .map(|t| (t.name, t.version, t.payload))
        .collect();
    assert_eq!(
        names,
        [
            ("AccountOpened", 1, "AccountOpened"),
            ("account.deposited", 1, "MoneyDeposited"),
            ("MoneyWithdrawn", 1, "MoneyWithdrawn"),
        ]
    );

    let handlers: Vec<(&str, &str)> = registry
        .event_handlers()
        .iter()
        .map(|handler| (handler.name, handler.event_name))
        .collect();
    assert_eq!(
        handlers,
        [
            // The examples' notifier, linked into this binary.
            ("notifier.order_placed", "OrderPlaced"),
            ("test_handlers::record_deposit", "account.deposited"),
            ("test_handlers::record_withdrawal", "MoneyWithdrawn"),
            ("test_handlers::refund_to_self", "MoneyWithdrawn"),
            ("test_handlers::refuse_large_deposits", "account.deposited"),
        ]
    );

    let listing = registry.to_string();
    assert!(
        listing.contains(
            "account (cqrs_examples::bank::Account): commands AccountCommand, events AccountEvent"
        ),
        "{listing}"
    );
    assert!(
        listing
            .contains("account.deposited v1: MoneyDeposited in cqrs_examples::bank::AccountEvent"),
        "{listing}"
    );
    assert!(
        listing.contains("test_handlers::refuse_large_deposits <- account.deposited"),
        "{listing}"
    );
}
