//! Projections and process managers on every backend: checkpoints, exactly
//! once across restarts, a failure that stops a catch-up, rebuilds, read
//! your own writes, and commands that a restart does not repeat. (Several
//! nodes, segments, parked events and versions: `test_scale_out.rs`.)

mod support;

use std::time::Duration;

use cqrs_core::EventStore;
use cqrs_core::prelude::*;
use cqrs_core::processor::{ProcessorError, ProcessorsError, RetryPolicy};
use cqrs_examples::bank::*;
use serde::{Deserialize, Serialize};
use support::backends::{Backend, memory, postgres};

// ------------------------------------------------------------------ read side

/// One view per account: its balance and how many of its events were
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

/// Deposits per owner across accounts: views keyed by owner, not by
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

fn app<S: EventStore + Clone>(backend: &Backend<S>) -> Cqrs {
    Cqrs::builder(backend.store.clone())
        .without_event_handlers()
        .without_processors()
        .views(backend.views.clone())
        .projection::<Balance>()
        .projection::<OwnerTotals>()
        .process_manager(WelcomeBonus)
        .poll_interval(Duration::from_millis(50))
        .retry_policy(
            RetryPolicy::default()
                .max_attempts(3)
                .delays(Duration::from_millis(5), Duration::from_millis(20))
                .outage_delay(Duration::from_millis(20)),
        )
        .batch_size(7)
        .build()
        .unwrap()
}

on_every_backend!(
    catch_up_applies_every_event_once,
    a_restart_resumes_from_the_checkpoint,
    a_rebuild_reports_progress_and_matches,
    read_your_own_writes,
    process_manager_commands_run_once_across_restarts,
    a_failing_process_manager_is_surfaced,
);

async fn open_and_move(app: &Cqrs, id: &str, owner: &str, deposits: &[u64]) {
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

/// The views a correct projection holds for `id`: balance and count
/// from the stream itself.
async fn expected_balance(app: &Cqrs, id: &str) -> Balance {
    let stream = app.read_stream("account", id, 1).await.unwrap();
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
        let view = backend.views.get::<Balance>(id).await.unwrap().unwrap();
        assert_eq!(view, expected_balance(&app, id).await, "{id}");
    }
    let ada = backend
        .views
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
    let last = app.last_position().await.unwrap();
    assert_eq!(backend.views.checkpoint("balances").await.unwrap(), last);
    assert_eq!(
        backend.views.checkpoint("welcome_bonus").await.unwrap(),
        last
    );

    let before = backend.views.all::<Balance>().await.unwrap();
    app.processors().catch_up().await.unwrap();
    assert_eq!(
        backend.views.all::<Balance>().await.unwrap(),
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
    let view = backend.views.get::<Balance>("r").await.unwrap().unwrap();
    assert_eq!(view, expected_balance(&app, "r").await);
}

async fn a_rebuild_reports_progress_and_matches<S: EventStore + Clone>(backend: Backend<S>) {
    let app = app(&backend);
    for n in 0..6 {
        open_and_move(&app, &format!("rb-{n}"), "rita", &[n + 1, n + 2]).await;
    }
    app.processors().catch_up().await.unwrap();
    app.processors().catch_up().await.unwrap();
    let before = backend.views.all::<Balance>().await.unwrap();
    let mut reports = Vec::new();
    let done = app
        .processors()
        .rebuild::<Balance>(|progress| reports.push(progress))
        .await
        .unwrap();
    let last = app.last_position().await.unwrap();
    assert_eq!((done.done, done.total), (last, last));
    assert!(reports.len() >= 2, "one report per batch of 7: {reports:?}");
    assert!(
        reports.windows(2).all(|w| w[0].done < w[1].done),
        "{reports:?}"
    );
    assert!(done.rate() > 0.0);
    assert_eq!(backend.views.all::<Balance>().await.unwrap(), before);
    let err = app
        .processors()
        .rebuild_named("welcome_bonus", |_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ProcessorsError::Failed(failure)
            if matches!(&*failure.error, ProcessorError::Unsupported { .. })),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("only projections are rebuilt"),
        "{err}"
    );
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
            .execute_and_wait::<Balance, _>("ryw", DepositMoney { amount })
            .await
            .unwrap();
        let view = backend.views.get::<Balance>("ryw").await.unwrap().unwrap();
        assert!(
            view.last_position >= done.last_position().unwrap(),
            "the view already has the deposit"
        );
    }
    app.processors().shutdown().await;
    run.await.unwrap().unwrap();
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
    let stream = app.read_stream("account", "pm", 1).await.unwrap();
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
    let last = backend.views.checkpoint("welcome_bonus").await.unwrap();
    assert!(last > 0);
    backend
        .views
        .set_checkpoint("welcome_bonus", 0)
        .await
        .unwrap();
    let restarted = app_for_restart(&backend);
    restarted.processors().catch_up().await.unwrap();
    assert_eq!(app.read_stream("account", "pm", 1).await.unwrap().len(), 2);
    assert_eq!(
        backend.views.checkpoint("welcome_bonus").await.unwrap(),
        last
    );
}

fn app_for_restart<S: EventStore + Clone>(backend: &Backend<S>) -> Cqrs {
    Cqrs::builder(backend.store.clone())
        .without_event_handlers()
        .without_processors()
        .views(backend.views.clone())
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
            .to_string()
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
        .without_processors()
        .views(backend.views.clone())
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
            .wait_for::<Balance>(done.last_position().unwrap()),
    )
    .await
    .expect("woken by NOTIFY, not by the hour-long poll")
    .unwrap();
    reader.processors().shutdown().await;
    run.await.unwrap().unwrap();
}

/// A stop asked for before the spawned run was first polled holds: the run
/// returns at once instead of following the log forever.
#[tokio::test(flavor = "current_thread")]
async fn a_shutdown_before_the_run_starts_holds() {
    let backend = memory().await.unwrap();
    let app = app(&backend);
    let running = app.processors().run();
    let shutdown = running.shutdown();
    let task = tokio::spawn(running);
    shutdown.now().await;
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the run stopped")
        .unwrap()
        .unwrap();

    // The same through the app's handle, and a run that is dropped unpolled
    // does not keep a shutdown waiting.
    let task = tokio::spawn(app.processors().run());
    drop(app.processors().run());
    tokio::time::timeout(Duration::from_secs(10), app.processors().shutdown())
        .await
        .expect("the shutdown returned");
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the run stopped")
        .unwrap()
        .unwrap();
}
