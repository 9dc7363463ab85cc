//! Decisions over consistency boundaries beside aggregate commands, on
//! PostgreSQL (with `CQRS_POSTGRES_URL`) and SQLite, 8 clients:
//!
//! - **Disjoint boundaries.** Deposits to 1,000 accounts (the bank's
//!   aggregate) and decisions on 1,000 boundaries (`Tally`, one tag, each
//!   decision one event), each store warmed first (every account opened and
//!   every boundary decided once, so both start from kept state), runs
//!   alternating: commands per second of each, and their ratio.
//! - **One hot boundary.** 8 clients deciding on one tally: decisions per
//!   second, retries, and failures (none expected: retries are unbounded).
//!
//! ```text
//! scripts/with-postgres cargo bench -p cqrs-benches --bench boundaries
//! ```
//!
//! Results go to stderr and `target/bench-results/boundaries.tsv`. Without
//! `--bench` (as `cargo test` runs it) it runs once on tiny data.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use cqrs_benches::{TempDatabase, postgres_store, postgres_url};
use cqrs_core::prelude::*;
use cqrs_core::{DecisionModel, decision_impl};
use cqrs_examples::bank::{DepositMoney, OpenAccount};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Bump;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bumped {
    pub counter: String,
    pub total: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
pub enum TallyEvent {
    #[event(name = "bench.tally.bumped", tags(counter))]
    Bumped(Bumped),
}

#[derive(Debug, thiserror::Error)]
#[error("never")]
pub struct Never;

/// A counter decided on its own boundary: each decision records the next
/// total, which a stale one would repeat.
#[derive(Debug, Clone, Default, DecisionModel)]
#[decision(name = "bench.tally", command = Bump, event = TallyEvent, error = Never)]
pub struct Tally {
    #[tag]
    counter: String,
    total: u64,
}

#[decision_impl]
impl Tally {
    #[command_handler]
    fn bump(&self, _: Bump) -> Result<Bumped, Never> {
        Ok(Bumped {
            counter: self.counter.clone(),
            total: self.total + 1,
        })
    }

    #[apply]
    fn bumped(&mut self, event: &Bumped) {
        self.total = event.total;
    }
}

fn tally(counter: usize) -> Tally {
    Tally {
        counter: format!("c{counter}"),
        total: 0,
    }
}

const CLIENTS: usize = 8;

/// `commands` deposits round-robin over `streams` accounts, 8 clients:
/// commands per second.
async fn deposits(app: &Cqrs, streams: usize, commands: usize) -> f64 {
    let started = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let app = app.clone();
            tokio::spawn(async move {
                for n in (client..commands).step_by(CLIENTS) {
                    app.execute(&format!("a{}", n % streams), DepositMoney { amount: 1 })
                        .await
                        .expect("deposited");
                }
            })
        })
        .collect();
    for client in clients {
        client.await.expect("a client");
    }
    commands as f64 / started.elapsed().as_secs_f64()
}

/// `commands` decisions round-robin over `boundaries` tallies, 8 clients:
/// decisions per second, and the retries they took.
async fn decisions(app: &Cqrs, boundaries: usize, commands: usize) -> (f64, u32) {
    let started = Instant::now();
    let retries = Arc::new(AtomicU32::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let (app, retries) = (app.clone(), retries.clone());
            tokio::spawn(async move {
                for n in (client..commands).step_by(CLIENTS) {
                    let decided = app
                        .decide(tally(n % boundaries), Bump)
                        .await
                        .expect("decided");
                    retries.fetch_add(decided.retries, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for client in clients {
        client.await.expect("a client");
    }
    let rate = commands as f64 / started.elapsed().as_secs_f64();
    (rate, retries.load(Ordering::Relaxed))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

async fn run(
    backend: &str,
    store: impl EventStore + Clone,
    sizes: (usize, usize, usize),
) -> Vec<String> {
    let (streams, commands, runs) = sizes;
    let app = Cqrs::builder(store)
        .without_event_handlers()
        .without_processors()
        .max_retries(u32::MAX)
        .build()
        .expect("an app");
    for n in 0..streams {
        app.execute(&format!("a{n}"), OpenAccount { owner: "o".into() })
            .await
            .expect("opened");
        app.decide(tally(n), Bump).await.expect("decided");
    }
    let mut lines = Vec::new();
    let (mut ratios, mut aggregate_rates, mut decision_rates) =
        (Vec::new(), Vec::new(), Vec::new());
    for run in 0..runs {
        let aggregates = deposits(&app, streams, commands).await;
        let (decided, retries) = decisions(&app, streams, commands).await;
        ratios.push(decided / aggregates);
        aggregate_rates.push(aggregates);
        decision_rates.push(decided);
        lines.push(format!(
            "{backend}\tdisjoint\trun {run}\taggregates {aggregates:.0}/s\tdecisions {decided:.0}/s\tratio {:.2}\tretries {retries}",
            decided / aggregates
        ));
    }
    lines.push(format!(
        "{backend}\tdisjoint\tmedian\taggregates {:.0}/s\tdecisions {:.0}/s\tratio {:.2} (target >= 0.7)",
        median(aggregate_rates),
        median(decision_rates),
        median(ratios)
    ));
    let hot = commands / 5;
    let (rate, retries) = decisions(&app, 1, hot).await;
    // Every decision counted once: the last total is every bump of c0.
    let last = app.decide(tally(0), Bump).await.expect("decided");
    let TallyEvent::Bumped(bumped) = &last.events[0].payload;
    let expected = (1 + runs * commands / streams + hot + 1) as u64;
    assert_eq!(bumped.total, expected, "a bump lost or counted twice");
    lines.push(format!(
        "{backend}\thot\t{hot} decisions on one boundary\t{rate:.0}/s\tretries {retries}\tfailed 0\ttotal of c0 {}",
        bumped.total
    ));
    lines
}

fn main() {
    let full = std::env::args().any(|arg| arg == "--bench");
    let sizes = if full { (1_000, 8_000, 3) } else { (4, 16, 1) };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let mut lines = Vec::new();
    runtime.block_on(async {
        if let Some(url) = postgres_url() {
            lines.extend(run("postgres", postgres_store(&url, "boundaries").await, sizes).await);
        }
        let file = TempDatabase::new("boundaries");
        lines.extend(run("sqlite", file.open().await, sizes).await);
    });
    for line in &lines {
        eprintln!("boundaries: {line}");
    }
    if full {
        let results =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-results");
        std::fs::create_dir_all(&results).expect("the results directory");
        let mut file =
            std::fs::File::create(results.join("boundaries.tsv")).expect("the results file");
        for line in &lines {
            writeln!(file, "{line}").expect("written");
        }
    }
}
