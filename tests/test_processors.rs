//! Projections and process managers on every backend: checkpoints, exactly
//! once across restarts, failures that stop one processor, rebuilds, read
//! your own writes, and commands that a restart does not repeat.

mod common;
mod conformance;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use common::*;
use cqrs_core::prelude::*;
use cqrs_core::{
    EventStore, PostgresStore, ProcessorFailure, RetryPolicy, SqliteStore, TablePrefix, WaitError,
};
use serde::{Deserialize, Serialize};

// ------------------------------------------------------------------ read side

/// One document per account: its balance and how many of its events were
/// applied, which would exceed the stream's length if one were applied twice.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Balance {
    pub balance: u64,
    pub events: u64,
    pub last_position: u64,
}

#[projection(name = "balances")]
impl Balance {
    #[event_handler]
    async fn opened(
        _: &AccountOpened,
        envelope: &Envelope,
        views: &mut Views<'_, Self>,
    ) -> Result<(), ViewError> {
        views.insert(
            envelope.aggregate_id.clone(),
            Balance {
                balance: 0,
                events: 1,
                last_position: envelope.position,
            },
        );
        Ok(())
    }

    #[event_handler]
    async fn deposited(
        event: &MoneyDeposited,
        envelope: &Envelope,
        views: &mut Views<'_, Self>,
    ) -> Result<(), ViewError> {
        if POISON.load(Ordering::SeqCst)
            && event.amount == 13
            && envelope.aggregate_id.starts_with("poison")
        {
            return Err(ViewError::Store(cqrs_core::StoreError::Rejected {
                aggregate_type: "test".into(),
                aggregate_id: envelope.aggregate_id.clone(),
                reason: "13 is unlucky".into(),
            }));
        }
        let account = views.get_or_default(&envelope.aggregate_id).await?;
        assert!(
            envelope.position > account.last_position,
            "events arrive in log order, once"
        );
        account.balance = event.balance;
        account.events += 1;
        account.last_position = envelope.position;
        Ok(())
    }

    #[event_handler]
    async fn withdrawn(
        event: &MoneyWithdrawn,
        envelope: &Envelope,
        views: &mut Views<'_, Self>,
    ) -> Result<(), ViewError> {
        if let Some(account) = views.get_mut(&envelope.aggregate_id).await? {
            account.balance = event.balance;
            account.events += 1;
            account.last_position = envelope.position;
        }
        Ok(())
    }
}

/// Set by the test of failures: deposits of 13 into `poison*` accounts fail.
static POISON: AtomicBool = AtomicBool::new(false);

/// Deposits per owner across accounts: documents keyed by owner, not by
/// aggregate id.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct OwnerTotals {
    pub accounts: Vec<String>,
    pub deposited: u64,
}

#[projection(name = "owner_totals")]
impl OwnerTotals {
    #[event_handler]
    async fn opened(
        event: &AccountOpened,
        envelope: &Envelope,
        views: &mut Views<'_, Self>,
    ) -> Result<(), ViewError> {
        views
            .get_or_default(&event.owner)
            .await?
            .accounts
            .push(envelope.aggregate_id.clone());
        views.insert(
            format!("account:{}", envelope.aggregate_id),
            OwnerTotals {
                accounts: vec![event.owner.clone()],
                deposited: 0,
            },
        );
        Ok(())
    }

    #[event_handler]
    async fn deposited(
        event: &MoneyDeposited,
        envelope: &Envelope,
        views: &mut Views<'_, Self>,
    ) -> Result<(), ViewError> {
        let owner = match views
            .get(&format!("account:{}", envelope.aggregate_id))
            .await?
        {
            Some(link) => link.accounts[0].clone(),
            None => return Ok(()),
        };
        views.get_or_default(&owner).await?.deposited += event.amount;
        Ok(())
    }
}

/// Gives every new account a bonus of 10, as its own command.
#[derive(Debug, Default)]
pub struct WelcomeBonus;

#[process_manager(name = "welcome_bonus")]
impl WelcomeBonus {
    #[event_handler]
    async fn opened(
        &self,
        _: &AccountOpened,
        envelope: &Envelope,
        context: &ProcessContext<'_>,
    ) -> Result<(), String> {
        if envelope.aggregate_id.starts_with("no-bonus") {
            return Ok(());
        }
        if envelope.aggregate_id.starts_with("bonus-fails") {
            return Err(format!(
                "the bonus service is down for {}",
                envelope.aggregate_id
            ));
        }
        context
            .execute(&envelope.aggregate_id, DepositMoney { amount: 10 })
            .await
            .map(drop)
            .map_err(|error| error.to_string())
    }
}

// ------------------------------------------------------------------ backends

/// The same store and read models, for a second app as a restart would
/// build, and whatever must live until the test ends.
struct Backend<S> {
    store: S,
    read_models: ReadModels,
    _guard: Box<dyn std::any::Any + Send>,
}

fn app<S: EventStore + Clone>(backend: &Backend<S>) -> Cqrs<S> {
    Cqrs::builder(backend.store.clone())
        .without_event_handlers()
        .read_models(backend.read_models.clone())
        .projection::<Balance>()
        .projection::<OwnerTotals>()
        .process_manager(WelcomeBonus)
        .poll_interval(Duration::from_millis(50))
        .retry_policy(RetryPolicy {
            max_attempts: 3,
            first_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(20),
            outage_delay: Duration::from_millis(20),
        })
        .batch_size(7)
        .build()
        .unwrap()
}

async fn memory() -> Option<Backend<Arc<MemoryStore>>> {
    Some(Backend {
        store: Arc::new(MemoryStore::new()),
        read_models: ReadModels::in_memory(),
        _guard: Box::new(()),
    })
}

async fn sqlite() -> Option<Backend<SqliteStore>> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let path = std::env::temp_dir().join(format!(
        "cqrs-processors-{}-{}.sqlite",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    ));
    let store = SqliteStore::open(&path).await.unwrap();
    Some(Backend {
        read_models: store.read_models(),
        store,
        _guard: Box::new(RemoveOnDrop(path)),
    })
}

async fn postgres() -> Option<Backend<PostgresStore>> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    conformance::require("CQRS_POSTGRES_URL", |url| async move {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(10)
            .connect(&url)
            .await
            .unwrap();
        let prefix = format!(
            "proc{}_{}_",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        let store = PostgresStore::from_pool(pool, TablePrefix::new(prefix).unwrap())
            .await
            .unwrap();
        Backend {
            read_models: store.read_models(),
            store,
            _guard: Box::new(()),
        }
    })
    .await
}

struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut path = self.0.clone().into_os_string();
            path.push(suffix);
            let _ = std::fs::remove_file(path);
        }
    }
}

macro_rules! on_every_backend {
    ($($check:ident),* $(,)?) => {
        mod on_memory {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                if let Some(backend) = super::memory().await { super::$check(backend).await }
            })*
        }
        mod on_sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                if let Some(backend) = super::sqlite().await { super::$check(backend).await }
            })*
        }
        mod on_postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                if let Some(backend) = super::postgres().await { super::$check(backend).await }
            })*
        }
    };
}

on_every_backend!(
    catch_up_applies_every_event_once,
    a_restart_resumes_from_the_checkpoint,
    a_failing_projection_stops_alone_and_restarts,
    a_rebuild_reports_progress_and_matches,
    read_your_own_writes,
    process_manager_commands_run_once_across_restarts,
    a_failing_process_manager_is_surfaced,
);

async fn open_and_move<S: EventStore>(app: &Cqrs<S>, id: &str, owner: &str, deposits: &[u64]) {
    app.execute(
        id,
        OpenAccount {
            owner: owner.into(),
        },
    )
    .await
    .unwrap();
    for &amount in deposits {
        app.execute(id, DepositMoney { amount }).await.unwrap();
    }
}

/// The documents a correct projection holds for `id`: balance and count
/// from the stream itself.
async fn expected_balance<S: EventStore>(app: &Cqrs<S>, id: &str) -> Balance {
    let stream = app.store().load("account", id, 1).await.unwrap();
    let account: Account = app.load(id).await.unwrap();
    Balance {
        balance: account.balance,
        events: stream.len() as u64,
        last_position: stream.last().unwrap().position,
    }
}

async fn catch_up_applies_every_event_once<S: EventStore + Clone>(backend: Backend<S>) {
    let app = app(&backend);
    open_and_move(&app, "a", "ada", &[5, 7]).await;
    open_and_move(&app, "b", "ada", &[1]).await;
    open_and_move(&app, "c", "bob", &[]).await;
    app.processors().catch_up().await.unwrap();
    // The bonus deposits the process manager sent are events too.
    app.processors().catch_up().await.unwrap();
    for id in ["a", "b", "c"] {
        let view = backend
            .read_models
            .get::<Balance>(id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(view, expected_balance(&app, id).await, "{id}");
    }
    let ada = backend
        .read_models
        .get::<OwnerTotals>("ada")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        ada,
        OwnerTotals {
            accounts: vec!["a".into(), "b".into()],
            deposited: 5 + 7 + 1 + 10 + 10
        }
    );
    let last = app.store().last_position().await.unwrap();
    assert_eq!(
        backend.read_models.checkpoint("balances").await.unwrap(),
        last
    );
    assert_eq!(
        backend
            .read_models
            .checkpoint("welcome_bonus")
            .await
            .unwrap(),
        last
    );

    let before = backend.read_models.all::<Balance>().await.unwrap();
    app.processors().catch_up().await.unwrap();
    assert_eq!(
        backend.read_models.all::<Balance>().await.unwrap(),
        before,
        "a second run changes nothing"
    );
}

async fn a_restart_resumes_from_the_checkpoint<S: EventStore + Clone>(backend: Backend<S>) {
    {
        let app = app(&backend);
        open_and_move(&app, "r", "ray", &[1, 2, 3]).await;
        // Runs live, then is dropped mid-way through the next batches, as a
        // killed process would be.
        let processors = app.processors().clone();
        let run = tokio::spawn(async move { processors.run().await });
        for amount in 4..40 {
            app.execute("r", DepositMoney { amount }).await.unwrap();
        }
        run.abort();
        let _ = run.await;
    }
    let app = app(&backend);
    app.execute("r", DepositMoney { amount: 100 })
        .await
        .unwrap();
    app.processors().catch_up().await.unwrap();
    app.processors().catch_up().await.unwrap();
    let view = backend
        .read_models
        .get::<Balance>("r")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(view, expected_balance(&app, "r").await);
}

async fn a_failing_projection_stops_alone_and_restarts<S: EventStore + Clone>(backend: Backend<S>) {
    POISON.store(true, Ordering::SeqCst);
    let app = app(&backend);
    open_and_move(&app, "poison-1", "pat", &[1, 2, 13, 4]).await;
    let processors = app.processors().clone();
    let run = tokio::spawn(async move { processors.run().await });

    let poisoned = app.store().load("account", "poison-1", 1).await.unwrap()[3].position;
    let err = tokio::time::timeout(
        Duration::from_secs(30),
        app.processors().wait_for(poisoned, &["balances"]),
    )
    .await
    .expect("the failure ends the wait")
    .unwrap_err();
    let WaitError::Failed(ProcessorFailure {
        processor,
        position,
        attempts,
        error,
        ..
    }) = err
    else {
        panic!("{err:?}")
    };
    assert_eq!((processor, position, attempts), ("balances", poisoned, 3));
    assert!(error.contains("13 is unlucky"), "{error}");
    let status = app.processors().status();
    let balances = status.iter().find(|s| s.name == "balances").unwrap();
    assert!(balances.stopped);
    assert_eq!(
        balances.position,
        poisoned - 1,
        "the good events before it are committed"
    );
    let view = backend
        .read_models
        .get::<Balance>("poison-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(view.balance, 3);

    // Other processors and commands carry on.
    let done = app
        .execute("poison-1", DepositMoney { amount: 1 })
        .await
        .unwrap();
    tokio::time::timeout(
        Duration::from_secs(30),
        app.processors()
            .wait_for(done.last_position().unwrap(), &["owner_totals"]),
    )
    .await
    .unwrap()
    .unwrap();

    POISON.store(false, Ordering::SeqCst);
    app.processors().restart("balances").unwrap();
    tokio::time::timeout(
        Duration::from_secs(30),
        app.processors()
            .wait_for(done.last_position().unwrap(), &["balances"]),
    )
    .await
    .unwrap()
    .unwrap();
    app.processors().stop();
    run.await.unwrap();
    let view = backend
        .read_models
        .get::<Balance>("poison-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(view, expected_balance(&app, "poison-1").await);
}

async fn a_rebuild_reports_progress_and_matches<S: EventStore + Clone>(backend: Backend<S>) {
    let app = app(&backend);
    for n in 0..6 {
        open_and_move(&app, &format!("rb-{n}"), "rita", &[n + 1, n + 2]).await;
    }
    app.processors().catch_up().await.unwrap();
    app.processors().catch_up().await.unwrap();
    let before = backend.read_models.all::<Balance>().await.unwrap();
    let mut reports = Vec::new();
    let done = app
        .processors()
        .rebuild("balances", |progress| reports.push(progress))
        .await
        .unwrap();
    let last = app.store().last_position().await.unwrap();
    assert_eq!((done.done, done.total), (last, last));
    assert!(reports.len() >= 2, "one report per batch of 7: {reports:?}");
    assert!(reports.windows(2).all(|w| w[0].done < w[1].done));
    assert!(done.rate() > 0.0);
    assert_eq!(backend.read_models.all::<Balance>().await.unwrap(), before);
    let err = app
        .processors()
        .rebuild("welcome_bonus", |_| {})
        .await
        .unwrap_err();
    assert!(err.error.contains("only projections are rebuilt"), "{err}");
}

async fn read_your_own_writes<S: EventStore + Clone>(backend: Backend<S>) {
    let app = app(&backend);
    let processors = app.processors().clone();
    let run = tokio::spawn(async move { processors.run().await });
    app.execute(
        "ryw",
        OpenAccount {
            owner: "wes".into(),
        },
    )
    .await
    .unwrap();
    for amount in 1..=5 {
        let done = app
            .execute_and_wait("ryw", DepositMoney { amount }, &["balances"])
            .await
            .unwrap();
        let view = backend
            .read_models
            .get::<Balance>("ryw")
            .await
            .unwrap()
            .unwrap();
        assert!(
            view.last_position >= done.last_position().unwrap(),
            "the view already has the deposit"
        );
    }
    app.processors().stop();
    run.await.unwrap();
}

async fn process_manager_commands_run_once_across_restarts<S: EventStore + Clone>(
    backend: Backend<S>,
) {
    let app = app(&backend);
    let metadata = Metadata::default().with("user", "pm-test");
    let opened = app
        .execute_with(
            "pm",
            OpenAccount {
                owner: "pam".into(),
            },
            metadata,
        )
        .await
        .unwrap();
    app.processors().catch_up().await.unwrap();
    let stream = app.store().load("account", "pm", 1).await.unwrap();
    assert_eq!(stream.len(), 2, "opened, then the bonus");
    let bonus = &stream[1].metadata;
    assert_eq!(bonus.causation_id, Some(opened.events[0].event_id));
    assert_eq!(
        bonus.correlation_id,
        opened.events[0].metadata.correlation_id
    );
    assert_eq!(bonus.get("user"), Some("pm-test"));
    assert!(bonus.command_id.is_some());

    // A crash before the checkpoint moved: the process manager sees the
    // event again, in a fresh app, and must not pay the bonus twice.
    let last = backend
        .read_models
        .checkpoint("welcome_bonus")
        .await
        .unwrap();
    assert!(last > 0);
    backend
        .read_models
        .set_checkpoint("welcome_bonus", 0)
        .await
        .unwrap();
    let restarted = app_for_restart(&backend);
    restarted.processors().catch_up().await.unwrap();
    assert_eq!(app.store().load("account", "pm", 1).await.unwrap().len(), 2);
    assert_eq!(
        backend
            .read_models
            .checkpoint("welcome_bonus")
            .await
            .unwrap(),
        last
    );
}

fn app_for_restart<S: EventStore + Clone>(backend: &Backend<S>) -> Cqrs<S> {
    Cqrs::builder(backend.store.clone())
        .without_event_handlers()
        .read_models(backend.read_models.clone())
        .process_manager(WelcomeBonus)
        .build()
        .unwrap()
}

async fn a_failing_process_manager_is_surfaced<S: EventStore + Clone>(backend: Backend<S>) {
    let app = app(&backend);
    app.execute("bonus-fails-1", OpenAccount { owner: "x".into() })
        .await
        .unwrap();
    app.execute("no-bonus-1", OpenAccount { owner: "y".into() })
        .await
        .unwrap();
    let failure = app.processors().catch_up().await.unwrap_err();
    assert_eq!(failure.processor, "welcome_bonus");
    assert!(
        failure
            .error
            .contains("the bonus service is down for bonus-fails-1"),
        "{failure}"
    );
    let status = app.processors().status();
    let bonus = status.iter().find(|s| s.name == "welcome_bonus").unwrap();
    assert!(bonus.stopped);
    assert_eq!(bonus.failure.as_ref().unwrap().position, 1);
    let balances = status.iter().find(|s| s.name == "balances").unwrap();
    assert!(balances.failure.is_none(), "the projections ran to the end");
    assert_eq!(balances.position, 2);
}

#[tokio::test]
async fn postgres_wakes_processors_of_another_app_without_polling() {
    let Some(backend) = postgres().await else {
        return;
    };
    let writer = app_for_restart(&backend);
    let reader = Cqrs::builder(backend.store.clone())
        .without_event_handlers()
        .read_models(backend.read_models.clone())
        .projection::<Balance>()
        .poll_interval(Duration::from_secs(3600))
        .build()
        .unwrap();
    let processors = reader.processors().clone();
    let run = tokio::spawn(async move { processors.run().await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let done = writer
        .execute(
            "listen",
            OpenAccount {
                owner: "lin".into(),
            },
        )
        .await
        .unwrap();
    tokio::time::timeout(
        Duration::from_secs(10),
        reader
            .processors()
            .wait_for(done.last_position().unwrap(), &["balances"]),
    )
    .await
    .expect("woken by NOTIFY, not by the hour-long poll")
    .unwrap();
    reader.processors().stop();
    run.await.unwrap();
}
