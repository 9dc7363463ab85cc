//! Commands per second, this framework beside cqrs-es 0.5 on the same data in
//! one run, and rebuild rates of a projection over a million events.
//!
//! ```text
//! scripts/with-postgres cargo bench -p cqrs-benches --bench workloads > /dev/null
//! ```
//!
//! Results go to stderr and `target/bench-results/workloads.tsv` (stdout
//! carries cqrs-es's `MemStore` log lines, one per commit: send it to
//! /dev/null). Without `--bench` (as `cargo test` runs it) every scenario
//! runs once on tiny data: a smoke test, not a measurement.
//!
//! Every system gets the same preloaded streams: in memory, fresh stores
//! for every run; on PostgreSQL, one store per system for all runs (each run
//! adds 2 events per aggregate). A run is `commands` deposits round-robin
//! over the aggregates, from one client or from several on disjoint
//! aggregates; before each timed run, an untimed pass sends every aggregate
//! a withdrawal it refuses, so each system starts with its data warm and the
//! streams keep their length. The systems' runs alternate, so a
//! noisy moment of the shared machine falls on all alike; each figure is the
//! median of its runs (5 in memory, 3 otherwise), and each ratio the median
//! of the per-run ratios. Contention runs start on a fresh aggregate of 10
//! events each time.

use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use cqrs_benches::peer::{
    BankAccount, BankCommand, MemoryRepository, peer_events, preload_mem_store,
};
use cqrs_benches::{TempDatabase, postgres_store, postgres_url};
use cqrs_core::store::NewEvent;
use cqrs_core::{
    Aggregate, CommandError, Cqrs, Event, EventStore, MemoryStore, Metadata, Uuid, ViewStore,
};
use cqrs_es::mem_store::MemStore;
use cqrs_es::persist::{PersistedEventRepository, PersistedEventStore, SerializedEvent};
use cqrs_es::{AggregateError, CqrsFramework};
use cqrs_examples::bank::{
    Account, AccountEvent, AccountOpened, Balance, DepositMoney, MoneyDeposited, OpenAccount,
    WithdrawMoney,
};

/// Sizes of one run; tiny in smoke mode.
#[derive(Clone, Copy)]
struct Sizes {
    runs: usize,
    postgres_commands: usize,
    /// (aggregates, events per aggregate, commands per run): each run adds
    /// at most a tenth of the streams' length.
    memory: [(usize, usize, usize); 3],
    /// Aggregates, the short and long stream lengths compared, and commands
    /// per run.
    stream_length: (usize, [usize; 2], usize),
    postgres: (usize, usize),
    /// Commands the 8 clients send to one aggregate: in memory, in PostgreSQL.
    contention: (usize, usize),
    rebuild: (usize, usize),
    /// Commands the 14 patient clients send per run, with and without
    /// cancellers beside them.
    storm: usize,
}

const FULL: Sizes = Sizes {
    runs: 5,
    postgres_commands: 2_000,
    memory: [
        (10_000, 10, 10_000),
        (1_000, 100, 10_000),
        (100, 1_000, 10_000),
    ],
    stream_length: (1_000, [10, 1_000], 50_000),
    postgres: (1_000, 10),
    contention: (4_000, 800),
    rebuild: (1_000, 1_000),
    storm: 7_000,
};

const SMOKE: Sizes = Sizes {
    runs: 1,
    postgres_commands: 16,
    memory: [(20, 3, 20), (10, 5, 10), (4, 8, 4)],
    stream_length: (4, [3, 8], 8),
    postgres: (16, 3),
    contention: (16, 16),
    rebuild: (10, 10),
    storm: 28,
};

struct Report {
    lines: Vec<String>,
}

impl Report {
    /// Records one figure: the median of `runs`, with every run beside it
    /// in the order they ran.
    fn record(
        &mut self,
        scenario: &str,
        system: &str,
        unit: &str,
        runs: Vec<f64>,
        note: &str,
    ) -> f64 {
        let mut sorted = runs.clone();
        sorted.sort_by(f64::total_cmp);
        let median = sorted[sorted.len() / 2];
        let precision = if unit == "x" { 2 } else { 0 };
        let all: Vec<String> = runs
            .iter()
            .map(|run| format!("{run:.precision$}"))
            .collect();
        let line = format!(
            "{scenario}\t{system}\t{median:.precision$}\t{unit}\t{}\t{note}",
            all.join(",")
        );
        eprintln!("{line}");
        self.lines.push(line);
        median
    }
}

fn ids(count: usize) -> Vec<String> {
    (0..count).map(|n| format!("acc-{n}")).collect()
}

fn main() {
    let full = std::env::args().any(|arg| arg == "--bench");
    let filter = std::env::args().skip(1).find(|arg| !arg.starts_with("--"));
    let sizes = if full { FULL } else { SMOKE };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut report = Report { lines: Vec::new() };
    let wanted = |name: &str| filter.as_deref().is_none_or(|filter| name.contains(filter));

    if wanted("memory") {
        for (aggregates, events, commands) in sizes.memory {
            runtime.block_on(memory(&mut report, sizes, aggregates, events, commands));
        }
        runtime.block_on(stream_length(&mut report, sizes));
    }
    if wanted("contention") {
        runtime.block_on(contention_memory(&mut report, sizes));
    }
    if wanted("rebuild") {
        runtime.block_on(rebuild_memory(&mut report, sizes));
    }
    if wanted("rebuild") {
        runtime.block_on(rebuild_sqlite(&mut report, sizes));
    }
    match postgres_url() {
        Some(url) => {
            if wanted("postgres") {
                runtime.block_on(postgres(&mut report, sizes, &url));
            }
            if wanted("contention") {
                runtime.block_on(contention_postgres(&mut report, sizes, &url));
            }
            if wanted("rebuild") {
                runtime.block_on(rebuild_postgres(&mut report, sizes, &url));
            }
            if wanted("storm") {
                runtime.block_on(storm(&mut report, sizes, &url));
            }
        }
        None => eprintln!("skipping PostgreSQL: CQRS_POSTGRES_URL is not set"),
    }

    let directory =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-results");
    std::fs::create_dir_all(&directory).expect("results directory");
    let mut file = std::fs::File::create(directory.join("workloads.tsv")).expect("results file");
    for line in &report.lines {
        writeln!(file, "{line}").expect("write results");
    }
}

// ------------------------------------------------------------------ data

fn deposit_events(count: usize) -> Vec<AccountEvent> {
    let mut events = vec![AccountEvent::Opened(AccountOpened {
        owner: "bench".into(),
    })];
    events.extend((1..count).map(|n| {
        AccountEvent::Deposited(MoneyDeposited {
            amount: 1,
            balance: n as u64,
        })
    }));
    events
}

fn new_event(event: &AccountEvent) -> NewEvent {
    let event_type = event.event_type();
    NewEvent {
        event_id: Uuid::now_v7(),
        event_name: event_type.name,
        event_version: event_type.version,
        metadata: Metadata::default(),
        payload: event.encode().expect("serializes"),
        tags: Vec::new(),
    }
}

/// `aggregates` streams of `events` events each, through the app as its
/// users would write them (the event ids come from the app).
async fn preload_through(app: &Cqrs, aggregates: &[String], events: usize) {
    for id in aggregates {
        app.execute(
            id,
            OpenAccount {
                owner: "bench".into(),
            },
        )
        .await
        .expect("open");
        for _ in 1..events {
            app.execute(id, DepositMoney { amount: 1 })
                .await
                .expect("deposit");
        }
    }
}

/// `aggregates` streams of `events` events each, appended in batches: for
/// the rebuild, whose log is large.
async fn preload_ours<S: EventStore>(store: &S, aggregates: &[String], events: usize) {
    let stream = deposit_events(events);
    for id in aggregates {
        for (chunk, offset) in stream.chunks(1_000).zip((0..).step_by(1_000)) {
            let batch = chunk.iter().map(new_event).collect();
            store
                .append(Account::NAME, id, offset as u64, batch)
                .await
                .expect("preload");
        }
    }
}

async fn preload_repository<R: PersistedEventRepository>(
    repository: &R,
    aggregates: &[String],
    events: usize,
) {
    let stream = peer_events(events);
    for id in aggregates {
        let serialized: Vec<SerializedEvent> = stream
            .iter()
            .enumerate()
            .map(|(sequence, event)| SerializedEvent {
                aggregate_id: id.clone(),
                sequence: sequence + 1,
                aggregate_type: "account".into(),
                event_type: cqrs_es::DomainEvent::event_type(event),
                event_version: "1".into(),
                payload: serde_json::to_value(event).expect("serializes"),
                metadata: serde_json::json!({}),
            })
            .collect();
        for chunk in serialized.chunks(1_000) {
            repository
                .persist::<BankAccount>(chunk, None)
                .await
                .expect("preload");
        }
    }
}

// ------------------------------------------------------------------ runs

/// A system under measurement, as its users call it.
trait Bank: Clone + Send + Sync + 'static {
    /// Deposits 1 on an existing account.
    fn deposit(&self, id: &str) -> impl Future<Output = Deposit> + Send;

    /// Withdraws more than the account holds: the system loads the account
    /// and decides, and the domain refuses, so no event is added.
    fn overdraw(&self, id: &str) -> impl Future<Output = ()> + Send;
}

/// How a deposit ended.
enum Deposit {
    /// Recorded, after this many retries of a lost conflict.
    Done { retries: u32 },
    /// Lost a conflict and gave up.
    Failed,
}

impl Bank for Cqrs {
    async fn deposit(&self, id: &str) -> Deposit {
        match self.execute(id, DepositMoney { amount: 1 }).await {
            Ok(done) => Deposit::Done {
                retries: done.retries,
            },
            Err(CommandError::Conflict { .. }) => Deposit::Failed,
            Err(error) => panic!("deposit: {error}"),
        }
    }

    async fn overdraw(&self, id: &str) {
        let refused = self.execute(id, WithdrawMoney { amount: u64::MAX }).await;
        assert!(matches!(refused, Err(CommandError::Domain(_))));
    }
}

impl<ES> Bank for Arc<CqrsFramework<BankAccount, ES>>
where
    ES: cqrs_es::EventStore<BankAccount> + 'static,
    ES::AC: Send,
{
    async fn deposit(&self, id: &str) -> Deposit {
        match self.execute(id, BankCommand::Deposit { amount: 1 }).await {
            Ok(()) => Deposit::Done { retries: 0 },
            Err(AggregateError::AggregateConflict) => Deposit::Failed,
            Err(error) => panic!("deposit: {error}"),
        }
    }

    async fn overdraw(&self, id: &str) {
        let refused = self
            .execute(id, BankCommand::Withdraw { amount: u64::MAX })
            .await;
        assert!(matches!(refused, Err(AggregateError::UserError(_))));
    }
}

/// What the clients of one run did.
struct Run {
    /// Deposits finished (recorded or failed) per second.
    rate: f64,
    retries: u32,
    failed: usize,
}

/// `commands` deposits from `clients` clients at once, each going
/// round-robin over its own share of `aggregates` (all of them when there is
/// one aggregate).
async fn run<B: Bank>(bank: &B, aggregates: &[String], commands: usize, clients: usize) -> Run {
    let start = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|client| {
            let bank = bank.clone();
            let mine: Vec<String> = if aggregates.len() == 1 {
                aggregates.to_vec()
            } else {
                aggregates
                    .iter()
                    .skip(client)
                    .step_by(clients)
                    .cloned()
                    .collect()
            };
            let count = commands / clients;
            tokio::spawn(async move {
                let (mut retries, mut failed) = (0, 0);
                for n in 0..count {
                    match bank.deposit(&mine[n % mine.len()]).await {
                        Deposit::Done { retries: more } => retries += more,
                        Deposit::Failed => failed += 1,
                    }
                }
                (retries, failed)
            })
        })
        .collect();
    let (mut retries, mut failed) = (0, 0);
    for task in tasks {
        let (more_retries, more_failed) = task.await.expect("client");
        retries += more_retries;
        failed += more_failed;
    }
    Run {
        rate: commands as f64 / start.elapsed().as_secs_f64(),
        retries,
        failed,
    }
}

/// Loads every aggregate with a command it refuses: the data is touched
/// and no event is added, so the streams keep their length.
async fn warm<B: Bank>(bank: &B, aggregates: &[String]) {
    for id in aggregates {
        bank.overdraw(id).await;
    }
}

fn ours_app<S: EventStore>(store: S) -> Cqrs {
    Cqrs::builder(store)
        .without_event_handlers()
        .without_processors()
        .build()
        .expect("app")
}

async fn memory(
    report: &mut Report,
    sizes: Sizes,
    aggregates: usize,
    events: usize,
    commands: usize,
) {
    let scenario = format!("memory: {aggregates} aggregates x {events} events");
    let ids = ids(aggregates);

    // Fresh stores for every run, so each starts at the stated length. They
    // are all kept to the end: memory one system frees would otherwise be
    // reused by the next, and that decided the results more than the code.
    let (mut ours_runs, mut mem_store_runs, mut persisted_runs) =
        (Vec::new(), Vec::new(), Vec::new());
    let mut kept = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..sizes.runs {
        let ours = ours_app(MemoryStore::new());
        preload_through(&ours, &ids, events).await;
        warm(&ours, &ids).await;
        ours_runs.push(run(&ours, &ids, commands, 1).await.rate);
        kept.0.push(ours);

        let mem_store = MemStore::<BankAccount>::default();
        preload_mem_store(&mem_store, &ids, events);
        let mem_store = Arc::new(CqrsFramework::new(mem_store, vec![], ()));
        warm(&mem_store, &ids).await;
        mem_store_runs.push(run(&mem_store, &ids, commands, 1).await.rate);
        kept.1.push(mem_store);

        let repository = MemoryRepository::default();
        preload_repository(&repository, &ids, events).await;
        let persisted = Arc::new(CqrsFramework::new(
            PersistedEventStore::new_event_store(repository),
            vec![],
            (),
        ));
        warm(&persisted, &ids).await;
        persisted_runs.push(run(&persisted, &ids, commands, 1).await.rate);
        kept.2.push(persisted);
    }
    drop(kept);
    let ratios = |peer: &[f64]| {
        ours_runs
            .iter()
            .zip(peer)
            .map(|(ours, peer)| ours / peer)
            .collect::<Vec<_>>()
    };
    let (mem_store_ratios, persisted_ratios) = (ratios(&mem_store_runs), ratios(&persisted_runs));
    report.record(
        &scenario,
        "cqrs-core MemoryStore",
        "commands/s",
        ours_runs,
        "",
    );
    report.record(
        &scenario,
        "cqrs-es MemStore",
        "commands/s",
        mem_store_runs,
        "",
    );
    report.record(
        &scenario,
        "cqrs-es PersistedEventStore (memory)",
        "commands/s",
        persisted_runs,
        "",
    );
    report.record(
        &scenario,
        "ratio vs MemStore",
        "x",
        mem_store_ratios,
        "median of per-run ratios",
    );
    report.record(
        &scenario,
        "ratio vs PersistedEventStore",
        "x",
        persisted_ratios,
        "median of per-run ratios",
    );
}

/// This framework alone, on the same number of aggregates with short and
/// with long streams: what the stream's length costs a command.
async fn stream_length(report: &mut Report, sizes: Sizes) {
    let (aggregates, [short, long], commands) = sizes.stream_length;
    let scenario = format!("memory: {aggregates} aggregates, {short} vs {long} events");
    let ids = ids(aggregates);
    let (mut short_runs, mut long_runs, mut kept) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..sizes.runs {
        for (events, runs) in [(short, &mut short_runs), (long, &mut long_runs)] {
            let store = Arc::new(MemoryStore::new());
            preload_ours(&store, &ids, events).await;
            let ours = ours_app(store);
            warm(&ours, &ids).await;
            runs.push(run(&ours, &ids, commands, 1).await.rate);
            // Kept to the end, as in `memory`.
            kept.push(ours);
        }
    }
    drop(kept);
    let ratios = long_runs
        .iter()
        .zip(&short_runs)
        .map(|(long, short)| long / short)
        .collect();
    let grown = commands / aggregates;
    let note = format!("each run adds {grown} events per aggregate");
    let system = "cqrs-core MemoryStore";
    report.record(
        &scenario,
        &format!("{system}, {short} events"),
        "commands/s",
        short_runs,
        &note,
    );
    report.record(
        &scenario,
        &format!("{system}, {long} events"),
        "commands/s",
        long_runs,
        &note,
    );
    report.record(
        &scenario,
        &format!("ratio {long} / {short} events"),
        "x",
        ratios,
        "median of per-run ratios",
    );
}

/// 8 clients sending deposits to one aggregate at once.
async fn contention_memory(report: &mut Report, sizes: Sizes) {
    let store = Arc::new(MemoryStore::new());
    preload_ours(&store, &ids(CONTENTION_RUNS), 10).await;
    let ours = ours_app(store);
    let repository = MemoryRepository::default();
    preload_repository(&repository, &ids(CONTENTION_RUNS), 10).await;
    let peer = Arc::new(CqrsFramework::new(
        PersistedEventStore::new_event_store(repository),
        vec![],
        (),
    ));
    let scenario = "contention: 8 clients, 1 aggregate, memory";
    let ours = ("cqrs-core MemoryStore", &ours);
    let peer = ("cqrs-es PersistedEventStore (memory)", &peer);
    contention(report, sizes, scenario, ours, peer, sizes.contention.0).await;
}

/// Runs of each contention scenario: each on an aggregate of its own with
/// 10 events, so every run measures the same thing.
const CONTENTION_RUNS: usize = 3;

/// Interleaved runs of both systems on one aggregate; the note gives each
/// run's retries and failures.
async fn contention(
    report: &mut Report,
    sizes: Sizes,
    scenario: &str,
    (ours_name, ours): (&str, &impl Bank),
    (peer_name, peer): (&str, &impl Bank),
    commands: usize,
) {
    let (mut ours_runs, mut ours_retries) = (Vec::new(), Vec::new());
    let (mut peer_runs, mut peer_succeeded, mut peer_failed) = (Vec::new(), Vec::new(), Vec::new());
    for id in ids(sizes.runs.min(CONTENTION_RUNS)) {
        let aggregate = [id];
        let done = run(ours, &aggregate, commands, 8).await;
        assert_eq!(
            done.failed, 0,
            "every command succeeds, retrying if it must"
        );
        ours_runs.push(done.rate);
        ours_retries.push(done.retries.to_string());
        let done = run(peer, &aggregate, commands, 8).await;
        peer_runs.push(done.rate);
        peer_succeeded.push(done.rate * (commands - done.failed) as f64 / commands as f64);
        peer_failed.push(done.failed.to_string());
    }
    let ratios = ours_runs
        .iter()
        .zip(&peer_succeeded)
        .map(|(ours, peer)| ours / peer)
        .collect();
    report.record(
        scenario,
        ours_name,
        "succeeded/s",
        ours_runs,
        &format!(
            "{commands} commands per run, none failed; retries: {}",
            ours_retries.join(", ")
        ),
    );
    report.record(
        scenario,
        peer_name,
        "succeeded/s",
        peer_succeeded,
        &format!(
            "{commands} commands per run; failed (it does not retry): {}",
            peer_failed.join(", ")
        ),
    );
    report.record(
        scenario,
        peer_name,
        "finished/s",
        peer_runs,
        "succeeded and failed together",
    );
    report.record(
        scenario,
        &format!("ratio vs {peer_name}"),
        "x",
        ratios,
        "succeeded/s, median of per-run ratios",
    );
}

// ------------------------------------------------------------------ PostgreSQL

async fn postgres(report: &mut Report, sizes: Sizes, url: &str) {
    let (aggregates, events) = sizes.postgres;
    let ids = ids(aggregates);
    for clients in [1, 8] {
        let scenario =
            format!("postgres: {aggregates} aggregates x {events} events, {clients} client(s)");
        let ours = ours_app(postgres_store(url, "workload").await);
        preload_through(&ours, &ids, events).await;
        let repository = postgres_es_repository(url).await;
        preload_repository(&repository, &ids, events).await;
        let peer = Arc::new(CqrsFramework::new(
            PersistedEventStore::new_event_store(repository),
            vec![],
            (),
        ));
        let (mut ours_runs, mut peer_runs) = (Vec::new(), Vec::new());
        for _ in 0..sizes.runs.min(3) {
            warm(&ours, &ids).await;
            ours_runs.push(
                run(&ours, &ids, sizes.postgres_commands, clients)
                    .await
                    .rate,
            );
            warm(&peer, &ids).await;
            peer_runs.push(
                run(&peer, &ids, sizes.postgres_commands, clients)
                    .await
                    .rate,
            );
        }
        let ratios = ours_runs
            .iter()
            .zip(&peer_runs)
            .map(|(ours, peer)| ours / peer)
            .collect();
        report.record(
            &scenario,
            "cqrs-core PostgresStore",
            "commands/s",
            ours_runs,
            "",
        );
        report.record(&scenario, "postgres-es", "commands/s", peer_runs, "");
        report.record(
            &scenario,
            "ratio vs postgres-es",
            "x",
            ratios,
            "median of per-run ratios",
        );
    }
}

/// Patient clients beside impatient ones on one PostgreSQL app, as the
/// fault probe ran them: 14 clients send deposits to their own aggregates
/// and wait for each; in every other run, 2 more clients send commands they
/// give up on after 0.3 to 3 ms (a request timeout near the normal latency),
/// cancelling many in the group commit's queue or mid-write. The impatient
/// clients either deposit to accounts of their own (a cancelled command keeps
/// its aggregate's cached state; one whose append landed makes the next
/// command conflict and catch up) or open new accounts. A control run has the 2 extra clients
/// wait like the others: what 2 more clients cost the 14, cancelling
/// nothing. The patient clients' rate in all three, from alternating runs,
/// and the medians of the per-run ratios. Every patient command must succeed.
async fn storm(report: &mut Report, sizes: Sizes, url: &str) {
    for new_accounts in [false, true] {
        storm_with(report, sizes, url, new_accounts).await;
    }
}

async fn storm_with(report: &mut Report, sizes: Sizes, url: &str, new_accounts: bool) {
    use std::sync::atomic::{AtomicBool, Ordering};
    const PATIENT: usize = 14;
    const IMPATIENT: usize = 2;
    let app = ours_app(postgres_store(url, "storm").await);
    let patient: Vec<String> = (0..PATIENT * 8).map(|n| format!("patient-{n}")).collect();
    let impatient: Vec<String> = (0..IMPATIENT * 8)
        .map(|n| format!("impatient-{n}"))
        .collect();
    preload_through(&app, &patient, 2).await;
    preload_through(&app, &impatient, 2).await;
    let (mut alone, mut beside, mut control, mut cancelled) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..sizes.runs.min(3) {
        // Alone, beside 2 impatient clients, beside 2 more patient ones.
        for (others, patience) in [(0, false), (IMPATIENT, false), (IMPATIENT, true)] {
            let cancellers = others > 0 && !patience;
            let stop = Arc::new(AtomicBool::new(false));
            let impatient_tasks: Vec<_> = (0..others)
                .map(|client| {
                    let (app, stop) = (app.clone(), Arc::clone(&stop));
                    let mine: Vec<String> = impatient
                        .iter()
                        .skip(client)
                        .step_by(IMPATIENT)
                        .cloned()
                        .collect();
                    tokio::spawn(async move {
                        let mut gave_up = 0u64;
                        let mut turn = 0u64;
                        while !stop.load(Ordering::SeqCst) {
                            turn += 1;
                            let deadline = if patience {
                                std::time::Duration::from_secs(60)
                            } else {
                                std::time::Duration::from_micros(300 + turn * 7919 % 2700)
                            };
                            let gave = if new_accounts {
                                let id = format!("new-{client}-{}", Uuid::now_v7());
                                let open = app.execute(
                                    &id,
                                    OpenAccount {
                                        owner: "late".into(),
                                    },
                                );
                                tokio::time::timeout(deadline, open).await.is_err()
                            } else {
                                let id = &mine[turn as usize % mine.len()];
                                let deposit = app.execute(id, DepositMoney { amount: 1 });
                                tokio::time::timeout(deadline, deposit).await.is_err()
                            };
                            gave_up += u64::from(gave);
                        }
                        gave_up
                    })
                })
                .collect();
            let run = run(&app, &patient, sizes.storm, PATIENT).await;
            assert_eq!(run.failed, 0, "a patient command failed beside cancellers");
            stop.store(true, Ordering::SeqCst);
            let mut gave_up = 0;
            for task in impatient_tasks {
                gave_up += task.await.expect("an impatient client");
            }
            match (others, cancellers) {
                (0, _) => alone.push(run.rate),
                (_, true) => {
                    beside.push(run.rate);
                    cancelled.push(gave_up as f64);
                }
                (_, false) => control.push(run.rate),
            }
        }
    }
    let ratio = |of: &[f64], to: &[f64]| {
        of.iter()
            .zip(to)
            .map(|(of, to)| of / to)
            .collect::<Vec<_>>()
    };
    let ratios = ratio(&beside, &alone);
    let against_control = ratio(&beside, &control);
    let impatient = if new_accounts {
        "opening new accounts"
    } else {
        "depositing to their own"
    };
    let scenario = format!(
        "postgres storm: {PATIENT} patient clients, {} commands; 2 impatient {impatient}",
        sizes.storm
    );
    report.record(&scenario, "patient, alone", "commands/s", alone, "");
    report.record(
        &scenario,
        "patient, beside the impatient",
        "commands/s",
        beside,
        "",
    );
    report.record(
        &scenario,
        "patient, beside 2 more patient",
        "commands/s",
        control,
        "control",
    );
    report.record(
        &scenario,
        "cancelled commands per run",
        "commands",
        cancelled,
        "",
    );
    report.record(
        &scenario,
        "ratio beside impatient / alone",
        "x",
        ratios,
        "median of per-run ratios; target >= 0.8",
    );
    report.record(
        &scenario,
        "ratio beside impatient / beside patient",
        "x",
        against_control,
        "what the cancellations cost beyond 2 more clients' load",
    );
}

/// postgres-es in tables of its own (the schema of its `db/init.sql`).
async fn postgres_es_repository(url: &str) -> postgres_es::PostgresEventRepository {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let suffix = format!(
        "{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    );
    let (events, snapshots) = (
        format!("peer_events_{suffix}"),
        format!("peer_snapshots_{suffix}"),
    );
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(url)
        .await
        .expect("connect");
    let schema = format!(
        "CREATE TABLE {events} (aggregate_type text NOT NULL, aggregate_id text NOT NULL, \
         sequence bigint CHECK (sequence >= 0) NOT NULL, event_type text NOT NULL, event_version text NOT NULL, \
         payload json NOT NULL, metadata json NOT NULL, PRIMARY KEY (aggregate_type, aggregate_id, sequence)); \
         CREATE TABLE {snapshots} (aggregate_type text NOT NULL, aggregate_id text NOT NULL, \
         last_sequence bigint CHECK (last_sequence >= 0) NOT NULL, current_snapshot bigint CHECK (current_snapshot >= 0) NOT NULL, \
         payload json NOT NULL, PRIMARY KEY (aggregate_type, aggregate_id, last_sequence));"
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(schema))
        .execute(&pool)
        .await
        .expect("postgres-es schema");
    let pool = postgres_es::default_postgress_pool(url).await;
    postgres_es::PostgresEventRepository::new(pool).with_tables(&events, &snapshots)
}

async fn contention_postgres(report: &mut Report, sizes: Sizes, url: &str) {
    let store = postgres_store(url, "contention").await;
    preload_ours(&store, &ids(CONTENTION_RUNS), 10).await;
    let ours = ours_app(store);
    let repository = postgres_es_repository(url).await;
    preload_repository(&repository, &ids(CONTENTION_RUNS), 10).await;
    let peer = Arc::new(CqrsFramework::new(
        PersistedEventStore::new_event_store(repository),
        vec![],
        (),
    ));
    let scenario = "contention: 8 clients, 1 aggregate, postgres";
    let ours = ("cqrs-core PostgresStore", &ours);
    let peer = ("postgres-es", &peer);
    contention(report, sizes, scenario, ours, peer, sizes.contention.1).await;
}

// ------------------------------------------------------------------ rebuild

async fn rebuild<S: EventStore>(
    report: &mut Report,
    sizes: Sizes,
    backend: &str,
    store: S,
    views: ViewStore,
) {
    let (aggregates, events) = sizes.rebuild;
    let app = Cqrs::builder(store)
        .without_event_handlers()
        .without_processors()
        .views(views.clone())
        .projection::<Balance>()
        .batch_size(5_000)
        .build()
        .expect("app");
    let mut runs = Vec::new();
    for _ in 0..sizes.runs.min(3) {
        let done = app
            .processors()
            .rebuild::<Balance>(|_| {})
            .await
            .expect("rebuild");
        assert_eq!(done.done as usize, aggregates * events);
        runs.push(done.rate());
    }
    let balance = views
        .get::<Balance>("acc-0")
        .await
        .expect("query")
        .expect("built");
    assert_eq!(balance.events as usize, events);
    let scenario = format!(
        "rebuild: {} events through a projection",
        aggregates * events
    );
    report.record(&scenario, backend, "events/s", runs, "");
}

async fn rebuild_memory(report: &mut Report, sizes: Sizes) {
    let store = MemoryStore::new();
    preload_ours(&store, &ids(sizes.rebuild.0), sizes.rebuild.1).await;
    rebuild(
        report,
        sizes,
        "cqrs-core MemoryStore",
        store,
        ViewStore::in_memory(),
    )
    .await;
}

async fn rebuild_sqlite(report: &mut Report, sizes: Sizes) {
    let file = TempDatabase::new("workload-rebuild");
    let store = file.open().await;
    preload_ours(&store, &ids(sizes.rebuild.0), sizes.rebuild.1).await;
    let views = store.views();
    rebuild(report, sizes, "cqrs-core SqliteStore (file)", store, views).await;
}

async fn rebuild_postgres(report: &mut Report, sizes: Sizes, url: &str) {
    let store = postgres_store(url, "rebuild").await;
    preload_ours(&store, &ids(sizes.rebuild.0), sizes.rebuild.1).await;
    let views = store.views();
    rebuild(report, sizes, "cqrs-core PostgresStore", store, views).await;
}
