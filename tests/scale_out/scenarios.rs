//! The scenarios: nodes killed under load, an owner paused past its lease,
//! the shares as nodes join and leave, and a live rebuild under queries.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cqrs_core::sqlx::{self, PgPool};
use cqrs_core::store::{NewEvent, PostgresOptions};
use cqrs_core::{
    Cqrs, EventStore, JsonPayload, Metadata, PostgresStore, SqliteStore, Uuid, ViewStore,
};
use cqrs_examples::bank::{DepositMoney, OpenAccount};

use super::cluster::{Cluster, owners, within};
use super::database::Database;
use super::processors::{
    BONUS, TRAIL, TRAIL_TABLE, Trail, TrailTableV2, VERSIONED, Versioned, VersionedV2,
};

const SCENARIOS: [&str; 6] = [
    "postgres_nodes_killed",
    "postgres_table_nodes_killed",
    "postgres_owner_paused",
    "postgres_balance",
    "sqlite_balance",
    "postgres_live_rebuild",
];

/// The size knob: `CQRS_SCALE_OUT_SCALE` (default 1) multiplies the events
/// and the kills.
fn scale() -> usize {
    std::env::var("CQRS_SCALE_OUT_SCALE")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(1usize)
        .max(1)
}

pub async fn run(filter: Option<String>) -> usize {
    let ci = std::env::var("CI").as_deref() == Ok("true");
    let wanted: Vec<&str> = SCENARIOS
        .into_iter()
        .filter(|name| filter.as_deref().is_none_or(|filter| name.contains(filter)))
        .collect();
    if wanted.is_empty() {
        eprintln!("scale_out: no scenario matches {filter:?}; they are {SCENARIOS:?}");
        return 1;
    }
    let mut failures = 0;
    for name in wanted {
        let started = Instant::now();
        let result = if name.starts_with("postgres") {
            match Database::create(name).await {
                Ok(Some(database)) => {
                    let result = postgres(name, &database.url).await;
                    database.drop().await;
                    result
                }
                Ok(None) if ci => {
                    Err("CQRS_POSTGRES_URL is not set, and CI needs the server".to_owned())
                }
                Ok(None) => {
                    eprintln!(
                        "skipped {name}: CQRS_POSTGRES_URL is not set (scripts/with-postgres sets it)"
                    );
                    continue;
                }
                Err(error) => Err(error),
            }
        } else {
            sqlite_balance().await
        };
        match result {
            Ok(report) => {
                for line in report {
                    eprintln!("scale_out: {name:<28} {line}");
                }
                eprintln!(
                    "scale_out: {name:<28} passed in {:.1} s",
                    started.elapsed().as_secs_f64()
                );
            }
            Err(error) => {
                failures += 1;
                eprintln!("FAILED {name}: {error}");
            }
        }
    }
    failures
}

async fn postgres(name: &str, url: &str) -> Result<Vec<String>, String> {
    match name {
        "postgres_nodes_killed" => nodes_killed(url).await,
        "postgres_table_nodes_killed" => table_nodes_killed(url).await,
        "postgres_owner_paused" => owner_paused(url).await,
        "postgres_balance" => postgres_balance(url).await,
        "postgres_live_rebuild" => live_rebuild(url).await,
        _ => Err(format!("no such scenario: {name}")),
    }
}

async fn connect(url: &str) -> Result<PostgresStore, String> {
    PostgresOptions::new(url)
        .max_connections(16)
        .connect()
        .await
        .map_err(|error| error.to_string())
}

/// An app that only writes.
fn writer(store: impl EventStore) -> Result<Cqrs, String> {
    Cqrs::builder(store)
        .without_processors()
        .without_event_handlers()
        .build()
        .map_err(|error| error.to_string())
}

fn account(n: usize) -> String {
    format!("account-{n}")
}

/// Opens `accounts` accounts and deposits `deposits` times into each, from
/// 16 tasks; returns the commands acknowledged.
async fn write(app: &Cqrs, accounts: usize, deposits: u64) -> Result<u64, String> {
    let tasks: Vec<_> = (0..16)
        .map(|task| {
            let app = app.clone();
            tokio::spawn(async move {
                let mine: Vec<String> = (task..accounts).step_by(16).map(account).collect();
                for id in &mine {
                    app.execute(id, OpenAccount { owner: "o".into() })
                        .await
                        .map_err(|error| format!("{id}: {error}"))?;
                }
                for amount in 1..=deposits {
                    for id in &mine {
                        app.execute(id, DepositMoney { amount })
                            .await
                            .map_err(|error| format!("{id}: {error}"))?;
                    }
                }
                Ok::<u64, String>(mine.len() as u64 * (1 + deposits))
            })
        })
        .collect();
    let mut acknowledged = 0;
    for task in tasks {
        acknowledged += task.await.map_err(|error| error.to_string())??;
    }
    Ok(acknowledged)
}

/// Waits until `processors` have processed the whole log and the log
/// holds `events` events.
async fn caught_up(
    store: &impl EventStore,
    views: &ViewStore,
    processors: &[&str],
    events: u64,
    limit: Duration,
) -> Result<Duration, String> {
    within(limit, "the processors catch up", || async {
        let last = store
            .last_position()
            .await
            .map_err(|error| error.to_string())?;
        let mut done = last >= events;
        for processor in processors {
            done &= views
                .checkpoint(processor)
                .await
                .map_err(|error| error.to_string())?
                >= last;
        }
        Ok(done)
    })
    .await
}

/// What the views say against a rebuild from the log: accounts whose views
/// differ from the rebuild, events lost, events applied twice, accounts
/// without exactly one bonus.
async fn verify(
    store: &(impl EventStore + Clone),
    views: &ViewStore,
    accounts: usize,
    bonus: bool,
) -> Result<String, String> {
    let rebuilt = Cqrs::builder(store.clone())
        .without_processors()
        .without_event_handlers()
        .views(ViewStore::in_memory())
        .projection::<Trail>()
        .build()
        .map_err(|error| error.to_string())?;
    rebuilt
        .processors()
        .catch_up()
        .await
        .map_err(|error| error.to_string())?;
    let (mut differ, mut lost, mut twice, mut bonuses, mut events) = (0, 0, 0, 0, 0);
    for n in 0..accounts {
        let id = account(n);
        let stream = rebuilt
            .read_stream("account", &id, 1)
            .await
            .map_err(|error| error.to_string())?;
        let view: Trail = views
            .get(&id)
            .await
            .map_err(|error| error.to_string())?
            .ok_or(format!("no trail of {id}"))?;
        let rebuild: Option<Trail> = rebuilt
            .views()
            .get(&id)
            .await
            .map_err(|error| error.to_string())?;
        differ += usize::from(rebuild.as_ref() != Some(&view));
        let length = stream.len() as u64;
        events += length;
        lost += length.saturating_sub(view.events.saturating_sub(view.out_of_order));
        twice += view.out_of_order + view.events.saturating_sub(length);
        let caused = stream
            .iter()
            .filter(|event| event.metadata.causation_id.is_some())
            .count();
        bonuses += usize::from(bonus && caused != 1);
    }
    let report = format!(
        "{events} events over {accounts} streams: views differing from a rebuild {differ}, events lost {lost}, applied twice {twice}, accounts without exactly one bonus {bonuses}"
    );
    if differ + bonuses > 0 || lost + twice > 0 {
        return Err(report);
    }
    Ok(report)
}

/// SIGKILLs a node `kills` times, `every` apart, each time waiting until
/// the 16 segments of each of `processors` are owned again by live nodes
/// (within the `lease` plus 10 s), then starting it again; returns how long
/// each takeover took.
async fn kill_and_restart(
    cluster: &mut Cluster,
    views: &ViewStore,
    processors: &[&str],
    kills: usize,
    every: Duration,
    lease: Duration,
) -> Result<Vec<Duration>, String> {
    let mut takeovers = Vec::new();
    for kill in 0..kills {
        tokio::time::sleep(every).await;
        let dead = cluster.kill(kill % cluster.nodes.len());
        let took = within(
            lease + Duration::from_secs(10),
            "the dead node's segments are owned again",
            || async {
                let mut taken = true;
                for processor in processors {
                    let owners = owners(views, processor).await?;
                    taken &= !owners.contains_key(&dead) && owners.values().sum::<usize>() == 16;
                }
                Ok(taken)
            },
        )
        .await?;
        takeovers.push(took);
        cluster.start()?;
    }
    Ok(takeovers)
}

/// 4 nodes of a 16-segment `Trail` and `Bonus`, one SIGKILLed about every
/// 5 s and started again, while 1,000 accounts get 98 deposits each (and
/// their bonus): 100,000 events.
async fn nodes_killed(url: &str) -> Result<Vec<String>, String> {
    const LEASE: Duration = Duration::from_secs(4);
    let (accounts, deposits, kills) = (1000, 98 * scale() as u64, 5 * scale());
    let store = connect(url).await?;
    let views = store.views();
    let mut cluster = Cluster::new(&[
        "--postgres",
        url,
        "--lease-ms",
        "4000",
        "--renewal-ms",
        "1000",
        "--bonus",
    ]);
    for _ in 0..4 {
        cluster.start()?;
    }
    let app = writer(store.clone())?;
    let writing = tokio::spawn({
        let app = app.clone();
        async move { write(&app, accounts, deposits).await }
    });
    let takeovers = kill_and_restart(
        &mut cluster,
        &views,
        &[TRAIL, BONUS],
        kills,
        Duration::from_secs(2),
        LEASE,
    )
    .await?;
    let acknowledged = writing.await.map_err(|error| error.to_string())??;
    let events = acknowledged + accounts as u64;
    let drained = caught_up(
        &store,
        &views,
        &[TRAIL, BONUS],
        events,
        Duration::from_secs(300),
    )
    .await?;
    let fenced = cluster.stop()?;
    let report = verify(&store, &views, accounts, true).await?;
    let times: Vec<String> = takeovers
        .iter()
        .map(|took| format!("{:.2}", took.as_secs_f64()))
        .collect();
    let late = takeovers
        .iter()
        .filter(|took| **took > LEASE + Duration::from_secs(2))
        .count();
    let lines = vec![
        report,
        format!(
            "{kills} kills; segments owned again after (s): {} (lease 4 s, bound 6 s)",
            times.join(", ")
        ),
        format!(
            "caught up {:.1} s after the last command; batches fenced off per node: {fenced:?}",
            drained.as_secs_f64()
        ),
    ];
    if late > 0 {
        return Err(format!(
            "{late} takeovers took longer than the lease plus 2 s: {lines:?}"
        ));
    }
    Ok(lines)
}

/// 2 nodes of the 16-segment table projection `TrailTable` while 1,000
/// accounts get 99 deposits each (100,000 events), one node SIGKILLed
/// twice mid-run and started again. Afterwards every account's row is its
/// stream's fold and every event has one row. Then version 2 builds its
/// tables beside version 1's while queries read `scale_trail` the whole
/// time: none fails or sees a row missing or half-built, they read version
/// 2's rows after the switch, and version 1's tables are gone.
async fn table_nodes_killed(url: &str) -> Result<Vec<String>, String> {
    const LEASE: Duration = Duration::from_secs(4);
    let (accounts, deposits, kills) = (1000, 99 * scale() as u64, 2 * scale());
    let store = connect(url).await?;
    let views = store.views();
    let mut cluster = Cluster::new(&[
        "--postgres",
        url,
        "--lease-ms",
        "4000",
        "--renewal-ms",
        "1000",
        "--tables",
    ]);
    for _ in 0..2 {
        cluster.start()?;
    }
    let app = writer(store.clone())?;
    let writing = tokio::spawn({
        let app = app.clone();
        async move { write(&app, accounts, deposits).await }
    });
    let takeovers = kill_and_restart(
        &mut cluster,
        &views,
        &[TRAIL_TABLE],
        kills,
        Duration::from_secs(3),
        LEASE,
    )
    .await?;
    // Every command is one event: no process manager here.
    let events = writing.await.map_err(|error| error.to_string())??;
    let drained = caught_up(
        &store,
        &views,
        &[TRAIL_TABLE],
        events,
        Duration::from_secs(300),
    )
    .await?;
    let fenced = cluster.stop()?;
    let pool = PgPool::connect(url)
        .await
        .map_err(|error| error.to_string())?;
    let expected = Row::of(1 + deposits, 1);
    let rows = trail_rows(&pool).await?;
    let differ = rows
        .iter()
        .filter(|row| {
            **row
                != Row {
                    account: row.account.clone(),
                    ..expected.clone()
                }
        })
        .count();
    let recorded: (i64,) = sqlx::query_as("SELECT count(*) FROM scale_trail_events")
        .fetch_one(&pool)
        .await
        .map_err(|error| error.to_string())?;
    let parked = views
        .parked(TRAIL_TABLE)
        .await
        .map_err(|error| error.to_string())?;
    let report = format!(
        "{events} events over {accounts} streams: {} rows, differing from the log's fold {differ}, event rows {}, parked {}",
        rows.len(),
        recorded.0,
        parked.len()
    );
    if rows.len() != accounts
        || differ > 0
        || recorded.0.unsigned_abs() != events
        || !parked.is_empty()
    {
        return Err(report);
    }
    let times: Vec<String> = takeovers
        .iter()
        .map(|took| format!("{:.2}", took.as_secs_f64()))
        .collect();
    let mut lines = vec![
        report,
        format!(
            "{kills} kills; segments owned again after (s): {}; caught up {:.1} s after the last command; batches fenced off per node: {fenced:?}",
            times.join(", "),
            drained.as_secs_f64()
        ),
    ];
    lines.push(table_version_2(&store, &pool, accounts, 1 + deposits).await?);
    Ok(lines)
}

/// One row of `scale_trail`.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    account: String,
    events: i64,
    last_sequence: i64,
    out_of_order: i64,
    built_by: i64,
}

impl Row {
    /// The row of a stream of `events` events, built by `version`.
    fn of(events: u64, version: i64) -> Self {
        let events = i64::try_from(events).unwrap_or(i64::MAX);
        Row {
            account: String::new(),
            events,
            last_sequence: events,
            out_of_order: 0,
            built_by: version,
        }
    }
}

/// Every row of `scale_trail`, the serving version's, by account.
async fn trail_rows(pool: &PgPool) -> Result<Vec<Row>, String> {
    let rows: Vec<(String, i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT account, events, last_sequence, out_of_order, built_by FROM scale_trail ORDER BY account",
    )
    .fetch_all(pool)
    .await
    .map_err(|error| error.to_string())?;
    Ok(rows
        .into_iter()
        .map(
            |(account, events, last_sequence, out_of_order, built_by)| Row {
                account,
                events,
                last_sequence,
                out_of_order,
                built_by,
            },
        )
        .collect())
}

/// Version 2 of `TrailTable` builds beside version 1 while a task reads
/// all of `scale_trail` again and again: every read must hold `accounts`
/// complete rows of one version or the other; once the reads see only
/// version 2's, version 1's tables must be gone.
async fn table_version_2(
    store: &PostgresStore,
    pool: &PgPool,
    accounts: usize,
    per_stream: u64,
) -> Result<String, String> {
    let both = Cqrs::builder(store.clone())
        .without_processors()
        .without_event_handlers()
        .table_projection::<TrailTableV2>()
        .build()
        .map_err(|error| error.to_string())?;
    let running = both.processors().run();
    let shutdown = running.shutdown();
    let task = tokio::spawn(running);
    let stop = Arc::new(AtomicBool::new(false));
    let v2_only = Arc::new(AtomicBool::new(false));
    let reading = tokio::spawn({
        let (pool, stop, v2_only) = (pool.clone(), Arc::clone(&stop), Arc::clone(&v2_only));
        async move {
            let (mut reads, mut read_v1, mut read_v2, mut failures) =
                (0u64, 0u64, 0u64, Vec::new());
            while !stop.load(Ordering::SeqCst) {
                reads += 1;
                match trail_rows(&pool).await {
                    Ok(rows) => {
                        let version = rows.first().map_or(0, |row| row.built_by);
                        let whole = rows.len() == accounts
                            && rows.iter().all(|row| {
                                *row == Row {
                                    account: row.account.clone(),
                                    ..Row::of(per_stream, version)
                                }
                            });
                        match (whole, version) {
                            (true, 1) => read_v1 += 1,
                            (true, 2) => {
                                read_v2 += 1;
                                v2_only.store(true, Ordering::SeqCst);
                            }
                            _ => failures.push(format!(
                                "{} rows, the first {:?}",
                                rows.len(),
                                rows.first()
                            )),
                        }
                    }
                    Err(error) => failures.push(error),
                }
            }
            (reads, read_v1, read_v2, failures)
        }
    });
    let switched = within(Duration::from_secs(600), "queries read version 2", || {
        let v2_only = Arc::clone(&v2_only);
        async move { Ok(v2_only.load(Ordering::SeqCst)) }
    })
    .await;
    let dropped = within(
        Duration::from_secs(30),
        "version 1's tables dropped",
        || async {
            let left: (Option<String>,) =
                sqlx::query_as("SELECT to_regclass('scale_trail_v1')::TEXT")
                    .fetch_one(pool)
                    .await
                    .map_err(|error| error.to_string())?;
            Ok(left.0.is_none())
        },
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    let (reads, read_v1, read_v2, failures) = reading.await.map_err(|error| error.to_string())?;
    shutdown.now().await;
    task.await
        .map_err(|error| error.to_string())?
        .map_err(|error| error.to_string())?;
    let switched = switched?;
    dropped?;
    if !failures.is_empty() {
        return Err(format!(
            "{} reads failed, the first: {:?}",
            failures.len(),
            &failures[..failures.len().min(5)]
        ));
    }
    Ok(format!(
        "version 2 built beside it and serving after {:.1} s; {reads} reads of every row meanwhile ({read_v1} of version 1, {read_v2} of version 2), 0 failed or partial; version 1's tables dropped",
        switched.as_secs_f64()
    ))
}

/// An owner SIGSTOPped mid-batch past its lease: another node takes its
/// segments; SIGCONT, and its late batch is fenced off.
async fn owner_paused(url: &str) -> Result<Vec<String>, String> {
    let (accounts, deposits) = (100, 30);
    let store = connect(url).await?;
    let views = store.views();
    let app = writer(store.clone())?;
    write(&app, accounts, deposits).await?;
    let events = (accounts as u64) * (1 + deposits);
    // Each deposit takes 2 ms: the owner is in a batch nearly all the time.
    let mut cluster = Cluster::new(&[
        "--postgres",
        url,
        "--segments",
        "4",
        "--lease-ms",
        "2000",
        "--renewal-ms",
        "500",
        "--deposit-us",
        "2000",
    ]);
    let owner = cluster.start()?.id.clone();
    within(
        Duration::from_secs(10),
        "the first node owns all 4 and works",
        || async {
            let owned = owners(&views, TRAIL).await?.get(&owner) == Some(&4);
            Ok(owned
                && views
                    .checkpoint(TRAIL)
                    .await
                    .map_err(|error| error.to_string())?
                    > 0)
        },
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.nodes[0].signal("STOP");
    let paused = Instant::now();
    let other = cluster.start()?.id.clone();
    let took = within(
        Duration::from_secs(20),
        "the second node owns all 4",
        || async { Ok(owners(&views, TRAIL).await?.get(&other) == Some(&4)) },
    )
    .await;
    let resumed_at = paused.elapsed();
    cluster.nodes[0].signal("CONT");
    let took = took?;
    within(
        Duration::from_secs(20),
        "the resumed node's late batch is fenced off",
        || {
            let (fenced, _) = cluster.nodes[0].status();
            async move { Ok(fenced >= 1) }
        },
    )
    .await?;
    caught_up(&store, &views, &[TRAIL], events, Duration::from_secs(120)).await?;
    let fenced = cluster.stop()?;
    let report = verify(&store, &views, accounts, false).await?;
    Ok(vec![
        report,
        format!(
            "paused for {:.1} s (lease 2 s); the other node owned its segments after {:.1} s; batches fenced off per node: {fenced:?}",
            resumed_at.as_secs_f64(),
            took.as_secs_f64()
        ),
    ])
}

/// The shares, sorted, of the nodes with live leases on `Trail`.
async fn shares(views: &ViewStore) -> Result<Vec<usize>, String> {
    let mut shares: Vec<usize> = owners(views, TRAIL).await?.into_values().collect();
    shares.sort_unstable();
    Ok(shares)
}

/// Starts nodes until there are `to`, then waits until their shares of 16
/// segments are `expected`, for at most two leases.
async fn settle_to(
    cluster: &mut Cluster,
    views: &ViewStore,
    to: usize,
    expected: &[usize],
    lease: Duration,
) -> Result<String, String> {
    while cluster.nodes.len() < to {
        cluster.start()?;
    }
    let took = within(2 * lease, &format!("shares {expected:?}"), || async {
        Ok(shares(views).await? == expected)
    })
    .await?;
    Ok(format!(
        "{} nodes own {expected:?} within {:.2} s",
        cluster.nodes.len(),
        took.as_secs_f64()
    ))
}

async fn postgres_balance(url: &str) -> Result<Vec<String>, String> {
    let lease = Duration::from_secs(2);
    let views = connect(url).await?.views();
    let mut cluster = Cluster::new(&[
        "--postgres",
        url,
        "--lease-ms",
        "2000",
        "--renewal-ms",
        "500",
    ]);
    let mut lines = vec![settle_to(&mut cluster, &views, 4, &[4, 4, 4, 4], lease).await?];
    lines.push(settle_to(&mut cluster, &views, 5, &[3, 3, 3, 3, 4], lease).await?);
    // One leaves gracefully: its claims are given up at once.
    let mut leaving = Cluster::new(&[]);
    leaving.nodes.push(cluster.nodes.remove(0));
    leaving.stop()?;
    lines.push(settle_to(&mut cluster, &views, 4, &[4, 4, 4, 4], lease).await?);
    cluster.stop()?;
    Ok(lines)
}

/// Two processes on one SQLite file share 16 segments, 8 each, and handle
/// every event once.
async fn sqlite_balance() -> Result<Vec<String>, String> {
    let lease = Duration::from_secs(2);
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("scale-out-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|error| error.to_string())?;
    let path = dir.join("shared.sqlite");
    let store = SqliteStore::open(&path)
        .await
        .map_err(|error| error.to_string())?;
    let views = store.views();
    let file = path.display().to_string();
    let mut cluster = Cluster::new(&[
        "--sqlite",
        &file,
        "--lease-ms",
        "2000",
        "--renewal-ms",
        "500",
    ]);
    let result = async {
        let mut lines = vec![settle_to(&mut cluster, &views, 1, &[16], lease).await?];
        lines.push(settle_to(&mut cluster, &views, 2, &[8, 8], lease).await?);
        let app = writer(store.clone())?;
        let (accounts, deposits) = (40, 10);
        let events = write(&app, accounts, deposits).await?;
        caught_up(&store, &views, &[TRAIL], events, Duration::from_secs(60)).await?;
        lines.push(verify(&store, &views, accounts, false).await?);
        Ok::<_, String>(lines)
    }
    .await;
    let stopped = cluster.stop();
    let _ = std::fs::remove_dir_all(&dir);
    let lines = result?;
    stopped?;
    Ok(lines)
}

/// Version 2 of `Versioned` builds over 1,000,000 events while version 1,
/// built before, answers queries the whole time.
async fn live_rebuild(url: &str) -> Result<Vec<String>, String> {
    let (streams, per_stream) = (1000, 1000 * scale() as u64);
    let store = connect(url).await?;
    let started = Instant::now();
    append_deposits(&store, streams, per_stream).await?;
    let appended = started.elapsed();
    let build = |with_v2: bool| {
        let mut builder = Cqrs::builder(store.clone())
            .without_processors()
            .without_event_handlers()
            .projection::<Versioned>();
        if with_v2 {
            builder = builder.projection::<VersionedV2>();
        }
        builder.build().map_err(|error| error.to_string())
    };
    let v1 = build(false)?;
    let building = Instant::now();
    v1.processors()
        .catch_up()
        .await
        .map_err(|error| error.to_string())?;
    let v1_built = building.elapsed();

    let both = build(true)?;
    let running = both.processors().run();
    let shutdown = running.shutdown();
    let task = tokio::spawn(running);
    let queries = Arc::new(Queries::default());
    let querying = tokio::spawn({
        let (views, queries) = (both.views().clone(), Arc::clone(&queries));
        async move { queries.run(&views, streams, per_stream).await }
    });
    let switched = within(Duration::from_secs(600), "queries read version 2", || {
        let queries = Arc::clone(&queries);
        async move { Ok(queries.version_2_only.load(Ordering::SeqCst)) }
    })
    .await;
    queries.stop.store(true, Ordering::SeqCst);
    let failures = querying.await.map_err(|error| error.to_string())?;
    shutdown.now().await;
    task.await
        .map_err(|error| error.to_string())?
        .map_err(|error| error.to_string())?;
    let switched = switched?;
    if !failures.is_empty() {
        return Err(format!(
            "{} queries failed, the first: {:?}",
            failures.len(),
            &failures[..failures.len().min(5)]
        ));
    }
    let old = both
        .views()
        .segments(VERSIONED)
        .await
        .map_err(|error| error.to_string())?;
    if !old.is_empty() {
        return Err(format!("version 1 still has segments: {old:?}"));
    }
    let events = streams as u64 * per_stream;
    Ok(vec![
        format!(
            "{events} events appended in {:.1} s; version 1 built in {:.1} s",
            appended.as_secs_f64(),
            v1_built.as_secs_f64()
        ),
        format!(
            "version 2 built beside it and serving after {:.1} s; {} queries meanwhile ({} read version 1, {} version 2), 0 failed, missing or half-built",
            switched.as_secs_f64(),
            queries.done.load(Ordering::SeqCst),
            queries.read_v1.load(Ordering::SeqCst),
            queries.read_v2.load(Ordering::SeqCst),
        ),
    ])
}

/// `per_stream` deposits into each of `streams` accounts, appended to the
/// log directly, 1,000 to a batch.
async fn append_deposits(
    store: &PostgresStore,
    streams: usize,
    per_stream: u64,
) -> Result<(), String> {
    let tasks: Vec<_> = (0..8)
        .map(|task| {
            let store = store.clone();
            tokio::spawn(async move {
                for n in (task..streams).step_by(8) {
                    let mut version = 0;
                    while version < per_stream {
                        let batch: Vec<NewEvent> = (version + 1..=(version + 1000).min(per_stream))
                            .map(|sequence| NewEvent {
                                event_id: Uuid::now_v7(),
                                event_name: "account.deposited",
                                event_version: 1,
                                metadata: Metadata::default(),
                                payload: JsonPayload::from_text(format!(
                                    "{{\"amount\":1,\"balance\":{sequence}}}"
                                )),
                                tags: Vec::new(),
                            })
                            .collect();
                        let count = batch.len() as u64;
                        store
                            .append("account", &account(n), version, batch)
                            .await
                            .map_err(|error| error.to_string())?;
                        version += count;
                    }
                }
                Ok::<(), String>(())
            })
        })
        .collect();
    for task in tasks {
        task.await.map_err(|error| error.to_string())??;
    }
    Ok(())
}

/// Queries of `Versioned` while its versions change, and what they saw.
#[derive(Default)]
struct Queries {
    stop: AtomicBool,
    done: AtomicU64,
    read_v1: AtomicU64,
    read_v2: AtomicU64,
    /// Set once a read of every view found version 2's.
    version_2_only: AtomicBool,
}

impl Queries {
    /// Reads one view after another, and all of them every 100 reads, until
    /// stopped: each must be there, complete, built by version 1 or 2.
    async fn run(&self, views: &ViewStore, streams: usize, events: u64) -> Vec<String> {
        let mut failures = Vec::new();
        let mut n = 0;
        while !self.stop.load(Ordering::SeqCst) {
            n += 1;
            self.done.fetch_add(1, Ordering::SeqCst);
            if n % 100 == 0 {
                match views.all::<Versioned>().await {
                    Ok(all) if all.len() == streams => {
                        let built: Vec<Result<u32, String>> = all
                            .into_iter()
                            .map(|(id, view)| self.check(&id, Some(view), events))
                            .collect();
                        if built.iter().all(|version| *version == Ok(2)) {
                            self.version_2_only.store(true, Ordering::SeqCst);
                        }
                        failures.extend(built.into_iter().filter_map(Result::err));
                    }
                    Ok(all) => failures.push(format!("all: {} views of {streams}", all.len())),
                    Err(error) => failures.push(format!("all: {error}")),
                }
                continue;
            }
            let id = account(n % streams);
            let checked = match views.get::<Versioned>(&id).await {
                Ok(view) => self.check(&id, view, events),
                Err(error) => Err(format!("{id}: {error}")),
            };
            failures.extend(checked.err());
        }
        failures
    }

    /// The version that built a view read of `events` events.
    fn check(&self, id: &str, view: Option<Versioned>, events: u64) -> Result<u32, String> {
        match view {
            Some(view) if view.events == events && matches!(view.built_by, 1 | 2) => {
                let counter = if view.built_by == 1 {
                    &self.read_v1
                } else {
                    &self.read_v2
                };
                counter.fetch_add(1, Ordering::SeqCst);
                Ok(view.built_by)
            }
            other => Err(format!("{id}: {other:?}")),
        }
    }
}
