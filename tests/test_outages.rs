//! Failures that pass: appends cancelled among patient ones, a database that
//! is unavailable for a while, a SQLite file that cannot be written and then
//! can. What was acknowledged stays, every error is true, and commands and
//! processors work again on their own once the fault ends. (The same faults
//! across real processes and servers are in `tests/faults/`.)

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cqrs_core::prelude::*;
use cqrs_core::processor::{FailureCause, RetryPolicy};
use cqrs_core::store::DatabaseError;
use cqrs_core::store::{NewEvent, ReadLimit, Snapshot};
use cqrs_core::{SqliteStore, StoreError, Uuid};
use cqrs_examples::bank::*;
use serde::{Deserialize, Serialize};
use serde_json::json;
use support::{new_event, postgres_store, require, unique_prefix};

// ------------------------------------------------- cancelled among patient

/// 12 patient writers and 4 that give up after a random 0–3 ms, on one
/// PostgreSQL store. A cancelled append used to fail every append of its
/// group with `Interrupted`, though most had committed; now a patient append
/// always succeeds here (the database is healthy), each cancelled one either
/// landed or left nothing, and the log is dense.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancelled_append_never_decides_another_callers_outcome() {
    let Some(store) = require("CQRS_POSTGRES_URL", |url| async move {
        postgres_store(&url, &unique_prefix("storm"), 8).await
    })
    .await
    else {
        return;
    };
    let store = Arc::new(store);
    let patient: Vec<_> = (0..12)
        .map(|writer| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for version in 0..60u64 {
                    let event = new_event("E", 1, json!({ "writer": writer }));
                    ids.push(event.event_id);
                    store
                        .append("t", &format!("patient-{writer}"), version, vec![event])
                        .await
                        .unwrap_or_else(|error| panic!("a patient append failed: {error}"));
                }
                ids
            })
        })
        .collect();
    let impatient: Vec<_> = (0..4)
        .map(|writer| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let (mut acknowledged, mut cancelled) = (Vec::new(), 0);
                for attempt in 0..150u64 {
                    let id = format!("impatient-{writer}-{attempt}");
                    let event = new_event("E", 1, json!({}));
                    let event_id = event.event_id;
                    let deadline = Duration::from_micros(attempt * 7919 % 3000);
                    match tokio::time::timeout(deadline, store.append("t", &id, 0, vec![event]))
                        .await
                    {
                        Ok(Ok(_)) => acknowledged.push(event_id),
                        Ok(Err(error)) => panic!("an impatient append failed: {error}"),
                        Err(_) => cancelled += 1,
                    }
                }
                (acknowledged, cancelled)
            })
        })
        .collect();
    let mut must_hold = BTreeSet::new();
    for writer in patient {
        must_hold.extend(writer.await.unwrap());
    }
    let mut cancelled = 0;
    for writer in impatient {
        let (acknowledged, gave_up) = writer.await.unwrap();
        must_hold.extend(acknowledged);
        cancelled += gave_up;
    }
    assert!(
        cancelled > 50,
        "the storm cancelled only {cancelled} appends"
    );
    let log = store.read_all(1, ReadLimit::events(100_000)).await.unwrap();
    let held: BTreeSet<Uuid> = log.iter().map(|event| event.event_id).collect();
    assert!(
        must_hold.is_subset(&held),
        "an acknowledged append is missing"
    );
    assert_eq!(held.len(), log.len(), "an event is stored twice");
    for (envelope, position) in log.iter().zip(1..) {
        assert_eq!(envelope.position, position);
    }
}

// -------------------------------------------------------- a flaky database

/// A store that fails with a transient database error while `down` is set,
/// like a server that restarts or turns read-only.
#[derive(Clone)]
struct Flaky {
    inner: Arc<MemoryStore>,
    reads_down: Arc<AtomicBool>,
    appends_down: Arc<AtomicBool>,
    /// Reads fail with an error that will not heal by waiting.
    reads_broken: Arc<AtomicBool>,
}

impl Flaky {
    fn new() -> Self {
        Self {
            inner: Arc::new(MemoryStore::new()),
            reads_down: Arc::new(AtomicBool::new(false)),
            appends_down: Arc::new(AtomicBool::new(false)),
            reads_broken: Arc::new(AtomicBool::new(false)),
        }
    }

    fn check(flag: &AtomicBool) -> Result<(), StoreError> {
        if flag.load(Ordering::SeqCst) {
            let error =
                std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "the server is down");
            return Err(StoreError::Database(DatabaseError::transient(error)));
        }
        Ok(())
    }
}

impl EventStore for Flaky {
    async fn append(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        expected_version: u64,
        events: Vec<NewEvent>,
    ) -> Result<Vec<Envelope>, StoreError> {
        Self::check(&self.appends_down)?;
        self.inner
            .append(aggregate_type, aggregate_id, expected_version, events)
            .await
    }

    async fn load(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        from: u64,
    ) -> Result<Vec<Envelope>, StoreError> {
        self.inner.load(aggregate_type, aggregate_id, from).await
    }

    async fn read_all(
        &self,
        from: u64,
        limit: impl Into<ReadLimit> + Send,
    ) -> Result<Vec<Envelope>, StoreError> {
        Self::check(&self.reads_down)?;
        if self.reads_broken.load(Ordering::SeqCst) {
            return Err(StoreError::Database(DatabaseError::permanent(
                "no such table",
            )));
        }
        self.inner.read_all(from, limit).await
    }

    async fn last_position(&self) -> Result<u64, StoreError> {
        self.inner.last_position().await
    }

    async fn load_command(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        id: Uuid,
    ) -> Result<Vec<Envelope>, StoreError> {
        self.inner
            .load_command(aggregate_type, aggregate_id, id)
            .await
    }

    async fn load_snapshot(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> Result<Option<Snapshot>, StoreError> {
        self.inner.load_snapshot(aggregate_type, aggregate_id).await
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        self.inner.save_snapshot(snapshot).await
    }
}

/// Deposits per account.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Deposits {
    pub count: u64,
}

#[projection(name = "outages.deposits")]
impl Deposits {
    #[event_handler]
    async fn deposited(
        _: &MoneyDeposited,
        envelope: &Envelope,
        views: &mut Views<'_, Self>,
    ) -> Result<(), ViewError> {
        views.get_or_default(&envelope.aggregate_id).await?.count += 1;
        Ok(())
    }
}

/// Opens a savings account beside every account opened, through a command
/// that meets the outage when appends are down.
#[derive(Debug, Default)]
pub struct OpenSavings;

#[process_manager(name = "outages.open_savings")]
impl OpenSavings {
    #[event_handler]
    async fn opened(
        &self,
        event: &AccountOpened,
        envelope: &Envelope,
        context: &ProcessContext<'_>,
    ) -> Result<(), CommandError<AccountError>> {
        if envelope.aggregate_id.starts_with("savings-") {
            return Ok(());
        }
        let savings = format!("savings-{}", envelope.aggregate_id);
        context
            .execute(
                &savings,
                OpenAccount {
                    owner: event.owner.clone(),
                },
            )
            .await?;
        Ok(())
    }
}

fn flaky_app(store: &Flaky) -> Cqrs {
    Cqrs::builder(store.clone())
        .host::<Bank>()
        .without_event_handlers()
        .views(ViewStore::in_memory())
        .projection::<Deposits>()
        .process_manager(OpenSavings)
        .poll_interval(Duration::from_millis(20))
        .retry_policy(
            RetryPolicy::default()
                .max_attempts(3)
                .delays(Duration::from_millis(5), Duration::from_millis(20))
                .outage_delay(Duration::from_millis(50)),
        )
        .build()
        .unwrap()
}

/// With the log unreadable for far longer than the retry policy allows for a
/// failing handler, both processors keep trying (the failure shows as the
/// database's in `status()`, and they are not stopped) and catch up by
/// themselves when it heals. They used to stop for good after 3 attempts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processors_wait_out_an_outage_and_resume_by_themselves() {
    let store = Flaky::new();
    let app = flaky_app(&store);
    app.execute(
        "acc-1",
        OpenAccount {
            owner: "ada".into(),
        },
    )
    .await
    .unwrap();
    app.execute("acc-1", DepositMoney { amount: 5 })
        .await
        .unwrap();
    store.reads_down.store(true, Ordering::SeqCst);
    let runner = tokio::spawn(app.processors().run());
    tokio::time::sleep(Duration::from_millis(600)).await;
    for status in app.processors().status() {
        let failure = status.failure.as_ref().expect("the outage is visible");
        assert_eq!(failure.cause, FailureCause::Database, "{failure}");
        assert!(failure.attempts > 3, "{failure}");
        assert!(!status.stopped, "{} stopped on an outage", status.name);
    }
    store.reads_down.store(false, Ordering::SeqCst);
    let last = app.last_position().await.unwrap();
    tokio::time::timeout(
        Duration::from_secs(5),
        app.processors()
            .wait_for_named(last, &app.processors().names()),
    )
    .await
    .expect("the processors resume within the outage delay")
    .unwrap();
    assert!(
        app.processors()
            .status()
            .iter()
            .all(|status| status.failure.is_none())
    );
    let savings: Account = app.load("savings-acc-1").await.unwrap();
    assert_eq!(savings.balance, 0);
    app.processors().shutdown().await;
    runner.await.unwrap().unwrap();
}

/// A failure that will not heal by waiting is the event's, not an outage:
/// the processor stops after the policy's attempts and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_store_failure_stops_the_processor() {
    let store = Flaky::new();
    let app = flaky_app(&store);
    app.execute("acc-3", OpenAccount { owner: "cy".into() })
        .await
        .unwrap();
    store.reads_broken.store(true, Ordering::SeqCst);
    let runner = tokio::spawn(app.processors().run());
    let err = tokio::time::timeout(
        Duration::from_secs(5),
        app.processors().wait_for_named(1, &["outages.deposits"]),
    )
    .await
    .expect("a stopped processor ends the wait")
    .unwrap_err();
    let cqrs_core::processor::ProcessorsError::Failed(failure) = err else {
        panic!("{err:?}")
    };
    assert_eq!(
        (failure.cause, failure.attempts),
        (FailureCause::Event, 3),
        "{failure}"
    );
    app.processors().shutdown().await;
    runner.await.unwrap().unwrap();
}

/// A process manager's command that fails because the store is down is the
/// database's failure too: retried until it heals, and sent once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_manager_command_outlasts_an_outage() {
    let store = Flaky::new();
    let app = flaky_app(&store);
    app.execute(
        "acc-2",
        OpenAccount {
            owner: "bob".into(),
        },
    )
    .await
    .unwrap();
    store.appends_down.store(true, Ordering::SeqCst);
    let runner = tokio::spawn(app.processors().run());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let manager = app
        .processors()
        .status()
        .into_iter()
        .find(|status| status.name == "outages.open_savings")
        .unwrap();
    let failure = manager.failure.expect("the failing command shows");
    assert_eq!(failure.cause, FailureCause::Database, "{failure}");
    assert!(!manager.stopped);
    store.appends_down.store(false, Ordering::SeqCst);
    let opened = app.last_position().await.unwrap();
    tokio::time::timeout(
        Duration::from_secs(5),
        app.processors()
            .wait_for_named(opened, &["outages.open_savings"]),
    )
    .await
    .unwrap()
    .unwrap();
    let savings = app
        .read_stream("account", "savings-acc-2", 1)
        .await
        .unwrap();
    assert_eq!(savings.len(), 1, "the command ran once");
    app.processors().shutdown().await;
    runner.await.unwrap().unwrap();
}

// ------------------------------------------------ SQLite file unwritable

/// Makes files immutable (`chattr +i`) until dropped; `None` where the
/// filesystem or the user cannot.
struct Immutable(Vec<std::path::PathBuf>);

impl Immutable {
    fn set(paths: Vec<std::path::PathBuf>) -> Option<Self> {
        let guard = Immutable(Vec::new());
        let mut guard = guard;
        for path in paths.into_iter().filter(|path| path.exists()) {
            let done = std::process::Command::new("chattr")
                .arg("+i")
                .arg(&path)
                .status();
            if !done.is_ok_and(|status| status.success()) {
                return None;
            }
            guard.0.push(path);
        }
        Some(guard)
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = std::process::Command::new("chattr")
                .arg("-i")
                .arg(path)
                .status();
        }
    }
}

/// One disk error used to poison a pooled connection for the life of the
/// process: after the file was writable again, most commands still failed
/// ("begin_with at non-zero transaction depth"). Now every command succeeds
/// as soon as the file can be written, and none acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_file_that_could_not_be_written_works_again_at_once() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("outage-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bank.sqlite");
    let app = Cqrs::builder(SqliteStore::open(&path).await.unwrap())
        .host::<Bank>()
        .without_event_handlers()
        .build()
        .unwrap();
    let mut acknowledged = 0;
    for n in 0..4 {
        app.execute(&format!("acc-{n}"), OpenAccount { owner: "o".into() })
            .await
            .unwrap();
        acknowledged += 1;
    }
    // The database and its log; the `-shm` index is mapped into memory, and
    // a mapping SQLite cannot extend ends the process (SIGBUS).
    let files = ["", "-wal"].map(|suffix| dir.join(format!("bank.sqlite{suffix}")));
    let Some(immutable) = Immutable::set(files.to_vec()) else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI runs as root on a filesystem with chattr"
        );
        eprintln!("skipped: cannot make files immutable here (needs root and chattr)");
        return;
    };
    let mut failed = 0;
    for n in 0..40 {
        match app
            .execute(&format!("acc-{}", n % 4), DepositMoney { amount: 1 })
            .await
        {
            Ok(_) => acknowledged += 1,
            Err(CommandError::Store(error)) => {
                assert!(error.is_transient(), "{error}");
                failed += 1;
            }
            Err(other) => panic!("{other}"),
        }
    }
    assert!(failed > 0, "the immutable file took every write");
    drop(immutable);
    for n in 0..60 {
        app.execute(&format!("acc-{}", n % 4), DepositMoney { amount: 1 })
            .await
            .unwrap_or_else(|error| panic!("command {n} after recovery: {error}"));
        acknowledged += 1;
    }
    let stored = app.read_all(1, 10_000).await.unwrap();
    assert!(
        stored.len() >= acknowledged,
        "{} stored, {acknowledged} acknowledged",
        stored.len()
    );
    drop(app);
    let _ = std::fs::remove_dir_all(&dir);
}
