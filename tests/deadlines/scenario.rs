//! The scenario: holds due over 20 s, fired by 2 then 3 nodes, one killed
//! twice, some cancelled as they fall due.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use cqrs_core::store::{DueQuery, PostgresOptions};
use cqrs_core::{CommandError, Cqrs, Due, Event, EventStore, PostgresStore};

use super::cluster::{Cluster, within};
use super::database::Database;
use super::hold::{CancelHold, HOLD, HoldError, HoldEvent, PlaceHold};

const SCENARIO: &str = "postgres_deadlines_nodes_killed";

/// The size knob: `CQRS_DEADLINES_SCALE` (default 1) multiplies the holds.
fn scale() -> usize {
    std::env::var("CQRS_DEADLINES_SCALE")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(1usize)
        .max(1)
}

pub async fn run(filter: Option<String>) -> usize {
    if filter
        .as_deref()
        .is_some_and(|filter| !SCENARIO.contains(filter))
    {
        eprintln!("deadlines: no scenario matches {filter:?}; it is {SCENARIO}");
        return 1;
    }
    let ci = std::env::var("CI").as_deref() == Ok("true");
    let started = Instant::now();
    let result = match Database::create(SCENARIO).await {
        Ok(Some(database)) => {
            let result = nodes_killed(&database.url).await;
            database.drop().await;
            result
        }
        Ok(None) if ci => Err("CQRS_POSTGRES_URL is not set, and CI needs the server".to_owned()),
        Ok(None) => {
            eprintln!(
                "skipped {SCENARIO}: CQRS_POSTGRES_URL is not set (scripts/with-postgres sets it)"
            );
            return 0;
        }
        Err(error) => Err(error),
    };
    match result {
        Ok(()) => {
            eprintln!(
                "deadlines: {SCENARIO} passed in {:.1} s",
                started.elapsed().as_secs_f64()
            );
            0
        }
        Err(error) => {
            eprintln!("deadlines: {SCENARIO} FAILED: {error}");
            1
        }
    }
}

/// How a hold's cancel was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cancelled {
    /// `HoldCancelled` was recorded: it must never be released.
    Yes,
    /// It was released first: released once.
    ReleasedFirst,
}

async fn nodes_killed(url: &str) -> Result<(), String> {
    let holds = 20_000 * scale();
    let spread = Duration::from_secs(20);
    let store = PostgresOptions::new(url)
        .max_connections(16)
        .connect()
        .await
        .map_err(|error| error.to_string())?;
    let app = Cqrs::builder(store.clone())
        .without_event_handlers()
        .without_processors()
        .build()
        .map_err(|error| error.to_string())?;

    let mut cluster = Cluster::new(&[
        "--postgres",
        url,
        "--segments",
        "8",
        "--lease-ms",
        "4000",
        "--renewal-ms",
        "1000",
    ]);
    cluster.start()?;
    cluster.start()?;

    // The holds, due from 15 s on (placing them takes about 10 s in a
    // debug build), one every spread / holds, to the microsecond as the
    // store keeps them.
    let first_due = Due::At(Utc::now() + TimeDelta::seconds(15)).resolve(Utc::now());
    let step = TimeDelta::from_std(spread).map_err(|e| e.to_string())? / holds as i32;
    let due: Arc<Vec<DateTime<Utc>>> = Arc::new(
        (0..holds)
            .map(|n| Due::At(first_due + step * n as i32).resolve(first_due))
            .collect(),
    );
    let first_due = due[0];
    let placing = Instant::now();
    place_all(&app, &due).await?;
    eprintln!(
        "deadlines: {holds} holds placed in {:.1} s",
        placing.elapsed().as_secs_f64()
    );
    let late_cancels = spawn_cancels(&app, &due);
    let early_cancels: HashMap<usize, Cancelled> = (0..holds)
        .filter(|n| n % 20 == 0)
        .map(|n| (n, Cancelled::Yes))
        .collect();

    let at = |seconds: i64| first_due + TimeDelta::seconds(seconds);
    sleep_until(at(5)).await;
    cluster.start()?;
    let mut killed = Vec::new();
    for seconds in [8, 14] {
        sleep_until(at(seconds)).await;
        killed.push(cluster.kill(0));
        cluster.start()?;
    }
    eprintln!("deadlines: killed {killed:?}, 3 nodes running");

    let mut cancelled = early_cancels;
    for (n, answer) in late_cancels {
        let answer = answer
            .await
            .map_err(|error| error.to_string())?
            .map_err(|error| format!("cancelling hold {n}: {error}"))?;
        cancelled.insert(n, answer);
    }
    let expected_released = holds
        - cancelled
            .values()
            .filter(|answer| **answer == Cancelled::Yes)
            .count();
    let last_due = *due.last().unwrap_or(&first_due);
    sleep_until(last_due).await;
    let waited = within(Duration::from_secs(40), "every hold released", || {
        let store = store.clone();
        async move { Ok(released(&store).await?.len() >= expected_released) }
    })
    .await;
    let fenced = cluster.stop()?;
    waited?;
    check(&store, &due, &cancelled, expected_released, fenced).await
}

/// Places every hold, 32 commands at a time, and cancels one in twenty
/// right away.
async fn place_all(app: &Cqrs, due: &Arc<Vec<DateTime<Utc>>>) -> Result<(), String> {
    let tasks: Vec<_> = (0..32)
        .map(|worker| {
            let (app, due) = (app.clone(), Arc::clone(due));
            tokio::spawn(async move {
                for n in (worker..due.len()).step_by(32) {
                    let place = PlaceHold { due_at: due[n] };
                    app.execute(&hold_id(n), place)
                        .await
                        .map_err(|error| format!("placing hold {n}: {error}"))?;
                    // One in twenty is cancelled at once, long before it is due.
                    if n % 20 == 0 && cancel(&app, n).await? != Cancelled::Yes {
                        return Err(format!("hold {n} released before it was due"));
                    }
                }
                Ok::<_, String>(())
            })
        })
        .collect();
    for task in tasks {
        task.await.map_err(|error| error.to_string())??;
    }
    Ok(())
}

/// One hold in twenty is cancelled within 50 ms of its due time, racing
/// its fire: each from a task of its own, answering how it went.
fn spawn_cancels(
    app: &Cqrs,
    due: &Arc<Vec<DateTime<Utc>>>,
) -> Vec<(usize, tokio::task::JoinHandle<Result<Cancelled, String>>)> {
    (0..due.len())
        .filter(|n| n % 20 == 10)
        .map(|n| {
            let (app, due) = (app.clone(), Arc::clone(due));
            // From 50 ms before its due time to 50 ms after, by the hold.
            let offset = TimeDelta::milliseconds((n / 20 % 101) as i64 - 50);
            let task = tokio::spawn(async move {
                sleep_until(due[n] + offset).await;
                cancel(&app, n).await
            });
            (n, task)
        })
        .collect()
}

async fn cancel(app: &Cqrs, n: usize) -> Result<Cancelled, String> {
    match app.execute(&hold_id(n), CancelHold).await {
        Ok(_) => Ok(Cancelled::Yes),
        Err(CommandError::Domain(HoldError::Closed("released"))) => Ok(Cancelled::ReleasedFirst),
        Err(error) => Err(format!("cancelling hold {n}: {error}")),
    }
}

fn hold_id(n: usize) -> String {
    format!("h-{n}")
}

async fn sleep_until(at: DateTime<Utc>) {
    if let Ok(wait) = (at - Utc::now()).to_std() {
        tokio::time::sleep(wait).await;
    }
}

/// A released hold: its number, when it was due, when its handler decided,
/// and when the store recorded it.
struct Release {
    hold: usize,
    due_at: DateTime<Utc>,
    at: DateTime<Utc>,
    recorded_at: DateTime<Utc>,
}

/// Every release in the log.
async fn released(store: &PostgresStore) -> Result<Vec<Release>, String> {
    let mut releases = Vec::new();
    let mut from = 1;
    loop {
        let page = store
            .read_all(from, 5_000)
            .await
            .map_err(|error| error.to_string())?;
        let Some(last) = page.last() else {
            return Ok(releases);
        };
        from = last.position + 1;
        for envelope in page.iter().filter(|e| e.aggregate_type == HOLD) {
            let event = HoldEvent::decode(
                &envelope.event_name,
                envelope.event_version,
                &envelope.payload,
            )
            .map_err(|error| error.to_string())?;
            if let HoldEvent::Released(released) = event {
                let hold = envelope.aggregate_id[2..]
                    .parse()
                    .map_err(|_| format!("hold id {}", envelope.aggregate_id))?;
                releases.push(Release {
                    hold,
                    due_at: released.due_at,
                    at: released.at,
                    recorded_at: envelope.recorded_at,
                });
            }
        }
    }
}

async fn check(
    store: &PostgresStore,
    due: &[DateTime<Utc>],
    cancelled: &HashMap<usize, Cancelled>,
    expected_released: usize,
    fenced: std::collections::BTreeMap<String, u64>,
) -> Result<(), String> {
    let releases = released(store).await?;
    let mut times = vec![0u32; due.len()];
    let mut lags = Vec::with_capacity(releases.len());
    for release in &releases {
        times[release.hold] += 1;
        if release.due_at != due[release.hold] {
            return Err(format!(
                "hold {} released for another due time",
                release.hold
            ));
        }
        if release.at < release.due_at || release.recorded_at < release.due_at {
            return Err(format!(
                "hold {} released before its time: due {}, decided {}, recorded {}",
                release.hold, release.due_at, release.at, release.recorded_at
            ));
        }
        lags.push((release.recorded_at - release.due_at).num_milliseconds());
    }
    for (hold, count) in times.iter().enumerate() {
        let expected = match cancelled.get(&hold) {
            Some(Cancelled::Yes) => 0,
            Some(Cancelled::ReleasedFirst) | None => 1,
        };
        if *count != expected {
            return Err(format!(
                "hold {hold} released {count} times, expected {expected} (cancel: {:?})",
                cancelled.get(&hold)
            ));
        }
    }
    if releases.len() != expected_released {
        return Err(format!(
            "{} releases, expected {expected_released}",
            releases.len()
        ));
    }
    let pending = store
        .due_deadlines(DueQuery::new(DateTime::<Utc>::MAX_UTC, 10))
        .await
        .map_err(|error| error.to_string())?;
    if !pending.is_empty() {
        return Err(format!("deadlines left pending: {pending:?}"));
    }
    lags.sort_unstable();
    let at = |quantile: f64| lags[((lags.len() - 1) as f64 * quantile) as usize];
    let raced = cancelled
        .values()
        .filter(|answer| **answer == Cancelled::ReleasedFirst)
        .count();
    eprintln!(
        "deadlines: {} released once each, {} cancelled ({raced} cancels lost the race to the fire); \
         lag due to recorded p50 {} ms, p99 {} ms, max {} ms; batches fenced by node {fenced:?}",
        releases.len(),
        due.len() - releases.len(),
        at(0.5),
        at(0.99),
        at(1.0),
    );
    Ok(())
}
