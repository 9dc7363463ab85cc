//! Deadlines, on SQLite and PostgreSQL (with `CQRS_POSTGRES_URL`):
//!
//! - **A burst.** 100,000 orders of `cqrs_examples::shop` placed at one
//!   instant of a `TestClock`, so their `PaymentDue` deadlines all fall due
//!   in the same second; the clock is moved past it, and one node's
//!   processors (`cqrs.deadlines`, 4 segments) fire them: deadlines fired
//!   per second, and each one's lag from the moment they were all due
//!   (the clock moved) to its `OrderCancelled` recorded, p50 and p99.
//! - **Pending deadlines on command latency.** Two stores side by side,
//!   one holding 1,000,000 pending deadlines and one none; ordinary
//!   commands (bank deposits) and scheduling ones (placing an order)
//!   alternate between them command by command: the median latency on
//!   each, and the ratio.
//!
//! ```text
//! scripts/with-postgres cargo bench -p cqrs-benches --bench deadlines
//! ```
//!
//! Results go to stderr and `target/bench-results/deadlines.tsv`. Without
//! `--bench` (as `cargo test` runs it) it runs once on tiny data: a smoke
//! test.

use std::io::Write;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use cqrs_benches::{TempDatabase, postgres_store, postgres_url};
use cqrs_core::store::{DeadlineWrite, ScheduledDeadline, StreamAppend};
use cqrs_core::{Cqrs, EventStore, JsonPayload, Metadata, TestClock, Uuid};
use cqrs_examples::bank::{DepositMoney, OpenAccount};
use cqrs_examples::shop::{PAYMENT_WINDOW, PlaceOrder};

fn start() -> DateTime<Utc> {
    "2026-01-01T00:00:00Z".parse().expect("a time")
}

fn place(n: usize) -> PlaceOrder {
    PlaceOrder {
        customer: format!("customer-{}", n % 100),
        sku: "sku-1".into(),
        quantity: 1,
        unit_price: 100,
        card: "4242".into(),
    }
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * q) as usize]
}

fn app(store: impl EventStore, clock: &TestClock) -> Cqrs {
    Cqrs::builder(store)
        .without_event_handlers()
        // No registered processor (the checkout would place no order
        // here): only the deadlines' runner.
        .processors(|_| false)
        .clock(clock.clone())
        .poll_interval(Duration::from_millis(10))
        .build()
        .expect("an app")
}

/// Places `count` orders, 64 at a time, all at the clock's instant.
async fn place_orders(app: &Cqrs, count: usize, prefix: &str) {
    let workers: Vec<_> = (0..64)
        .map(|worker| {
            let (app, prefix) = (app.clone(), prefix.to_owned());
            tokio::spawn(async move {
                for n in (worker..count).step_by(64) {
                    app.execute(&format!("{prefix}{n}"), place(n))
                        .await
                        .expect("placed");
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.expect("the worker");
    }
}

/// A burst of `count` deadlines due in the same second, fired by one
/// node's processors.
async fn burst(backend: &str, store: impl EventStore + Clone, count: usize) -> Vec<String> {
    let clock = TestClock::at(start());
    let app = app(store.clone(), &clock);
    let placing = Instant::now();
    place_orders(&app, count, "o-").await;
    let placed = placing.elapsed();
    let running = app.processors().run();
    let shutdown = running.shutdown();
    let task = tokio::spawn(running);
    // Every deadline is due now.
    clock.advance(PAYMENT_WINDOW + Duration::from_secs(1));
    let due = Utc::now();
    let started = Instant::now();
    let mut from = 1;
    let mut lags = Vec::with_capacity(count);
    while lags.len() < count {
        let page = store.read_all(from, 10_000).await.expect("the log");
        let Some(last) = page.last() else {
            tokio::time::sleep(Duration::from_millis(5)).await;
            assert!(
                started.elapsed() < Duration::from_secs(600),
                "fired in 10 minutes"
            );
            continue;
        };
        from = last.position + 1;
        lags.extend(
            page.iter()
                .filter(|event| event.event_name == "shop.order.cancelled")
                .map(|event| (event.recorded_at - due).to_std().unwrap_or_default()),
        );
    }
    let fired_in = started.elapsed();
    shutdown.now().await;
    task.await.expect("the run").expect("one run");
    lags.sort();
    vec![
        format!(
            "{backend}\tplace {count} orders, each scheduling its payment deadline (64 at a time)\t{:.0} commands/s",
            count as f64 / placed.as_secs_f64()
        ),
        format!(
            "{backend}\tfire {count} deadlines due in the same second, one node\t{:.0} deadlines/s",
            count as f64 / fired_in.as_secs_f64()
        ),
        format!(
            "{backend}\tlag from due to recorded, p50 / p99\t{:.0} ms / {:.0} ms",
            quantile(&lags, 0.5).as_secs_f64() * 1e3,
            quantile(&lags, 0.99).as_secs_f64() * 1e3
        ),
    ]
}

/// Fills a store with `count` pending deadlines, on streams of their own
/// (a batch of deadlines alone, as a store takes it), 1,000 per call.
async fn fill(store: &impl EventStore, count: usize) {
    for chunk in (0..count).collect::<Vec<_>>().chunks(1_000) {
        let appends = chunk
            .iter()
            .map(|n| {
                let deadline = ScheduledDeadline {
                    name: "shop.order.payment_due".into(),
                    key: String::new(),
                    deadline_id: Uuid::now_v7(),
                    due_at: start() + TimeDelta::days(365) + TimeDelta::seconds(*n as i64),
                    version: 1,
                    payload: JsonPayload::from_text("null".to_owned()),
                    metadata: Metadata::default(),
                };
                StreamAppend::new("bench.pending", format!("p-{n}"), 0, Vec::new())
                    .with_deadlines(vec![DeadlineWrite::Schedule(deadline)])
            })
            .collect();
        for outcome in store.append_streams(appends).await {
            outcome.expect("pending deadline written");
        }
    }
}

/// Ordinary and scheduling commands alternating between a store with
/// `pending` deadlines and one with none.
async fn latency<S: EventStore>(
    backend: &str,
    (crowded, empty): (S, S),
    pending: usize,
    calls: usize,
) -> Vec<String> {
    let filling = Instant::now();
    fill(&crowded, pending).await;
    let filled = filling.elapsed();
    let clock = TestClock::at(start());
    let apps = [app(crowded, &clock), app(empty, &clock)];
    for app in &apps {
        for account in 0..100 {
            let id = format!("a-{account}");
            app.execute(&id, OpenAccount { owner: id.clone() })
                .await
                .expect("opened");
        }
    }
    let mut deposit = [Vec::with_capacity(calls), Vec::with_capacity(calls)];
    let mut schedule = [Vec::with_capacity(calls), Vec::with_capacity(calls)];
    for call in 0..calls {
        for step in 0..2 {
            let at = (call + step) % 2;
            let started = Instant::now();
            apps[at]
                .execute(&format!("a-{}", call % 100), DepositMoney { amount: 1 })
                .await
                .expect("deposited");
            deposit[at].push(started.elapsed());
            let started = Instant::now();
            apps[at]
                .execute(&format!("order-{call}"), place(call))
                .await
                .expect("placed");
            schedule[at].push(started.elapsed());
        }
    }
    let median = |mut values: Vec<Duration>| {
        values.sort();
        values[values.len() / 2]
    };
    let [deposit_crowded, deposit_empty] = deposit.map(median);
    let [schedule_crowded, schedule_empty] = schedule.map(median);
    let micros = |duration: Duration| duration.as_secs_f64() * 1e6;
    vec![
        format!(
            "{backend}\twrite {pending} pending deadlines (1,000 per append_streams)\t{:.0} deadlines/s",
            pending as f64 / filled.as_secs_f64()
        ),
        format!(
            "{backend}\tdeposit (no deadline), with {pending} pending / none\t{:.1} µs / {:.1} µs: {:.3}",
            micros(deposit_crowded),
            micros(deposit_empty),
            deposit_crowded.as_secs_f64() / deposit_empty.as_secs_f64()
        ),
        format!(
            "{backend}\tplace an order (schedules one), with {pending} pending / none\t{:.1} µs / {:.1} µs: {:.3}",
            micros(schedule_crowded),
            micros(schedule_empty),
            schedule_crowded.as_secs_f64() / schedule_empty.as_secs_f64()
        ),
    ]
}

fn main() {
    let full = std::env::args().any(|arg| arg == "--bench");
    let (burst_size, pending, calls) = if full {
        (100_000, 1_000_000, 2_001)
    } else {
        (20, 50, 3)
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let mut lines = Vec::new();
    runtime.block_on(async {
        let file = TempDatabase::new("deadlines-burst");
        lines.extend(burst("sqlite", file.open().await, burst_size).await);
        if let Some(url) = postgres_url() {
            let store = postgres_store(&url, "deadlines").await;
            lines.extend(burst("postgres", store, burst_size).await);
        }
        let (crowded, empty) = (
            TempDatabase::new("deadlines-crowded"),
            TempDatabase::new("deadlines-empty"),
        );
        let stores = (crowded.open().await, empty.open().await);
        lines.extend(latency("sqlite", stores, pending, calls).await);
        if let Some(url) = postgres_url() {
            let stores = (
                postgres_store(&url, "crowded").await,
                postgres_store(&url, "empty").await,
            );
            lines.extend(latency("postgres", stores, pending, calls).await);
        }
    });
    for line in &lines {
        eprintln!("deadlines: {line}");
    }
    if full {
        let results =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-results");
        std::fs::create_dir_all(&results).expect("the results directory");
        let mut file =
            std::fs::File::create(results.join("deadlines.tsv")).expect("the results file");
        for line in &lines {
            writeln!(file, "{line}").expect("written");
        }
    }
}
