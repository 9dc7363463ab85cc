//! The read side shared by several instances, on every backend: segments
//! spread evenly over the nodes and taken over from a dead one, a batch of
//! a paused node fenced off, views that two segments change losing no
//! update, parked events that hold up their stream alone, a new version of
//! a projection built beside the serving one, and a segment count that does
//! not fit refused until it does. Each node is an app of its own with a
//! node id, over the same store and views. (Nodes as OS processes:
//! `tests/scale_out/`.)

#[path = "scale_out/processors.rs"]
mod processors;
mod support;

use std::collections::HashSet;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cqrs_core::prelude::*;
use cqrs_core::processor::{
    Lease, ParkState, ProcessorStatus, RetryPolicy, SegmentStatus, Shutdown,
};
use cqrs_core::{CqrsBuilder, EventStore, Uuid};
use cqrs_examples::bank::*;
use cqrs_examples::shop::{OrderPlaced, PlaceOrder};
use processors::{
    BONUS, Bonus, PAUSE, POISONED, TRAIL, Trail, VERSIONED, Versioned, VersionedV2, check_trails,
};
use serde::{Deserialize, Serialize};
use support::backends::Backend;

const UNITS: &str = "scale.units_ordered";

/// Short enough to keep the takeovers quick, long enough for a loaded machine.
const LEASE: Duration = Duration::from_millis(800);
const RENEWAL: Duration = Duration::from_millis(200);

// ------------------------------------------------------------------ processors

/// Units ordered per SKU: one view per SKU, changed by the orders of every
/// segment.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnitsOrdered {
    pub units: u64,
    pub orders: u64,
}

#[projection(name = "scale.units_ordered", segments = 4)]
impl UnitsOrdered {
    #[event_handler]
    async fn placed(event: &OrderPlaced, views: &mut Views<'_, Self>) -> Result<(), ViewError> {
        let sku = views.get_or_default(&event.sku).await?;
        sku.units += u64::from(event.quantity);
        sku.orders += 1;
        Ok(())
    }
}

// ------------------------------------------------------------------ nodes

/// A node: an app with its own id over the backend's store and views.
fn node<S: EventStore + Clone>(
    backend: &Backend<S>,
    id: &str,
    configure: impl FnOnce(CqrsBuilder) -> CqrsBuilder,
) -> Cqrs {
    node_on(backend.store.clone(), backend.views.clone(), id, configure)
}

/// A node on a store and views of its own.
fn node_on(
    store: impl EventStore,
    views: ViewStore,
    id: &str,
    configure: impl FnOnce(CqrsBuilder) -> CqrsBuilder,
) -> Cqrs {
    let builder = Cqrs::builder(store)
        .without_event_handlers()
        .without_processors()
        .views(views)
        .node_id(id)
        .lease(Lease::new(LEASE, RENEWAL))
        .poll_interval(Duration::from_millis(50))
        .batch_size(20)
        .retry_policy(
            RetryPolicy::default()
                .max_attempts(3)
                .delays(Duration::from_millis(5), Duration::from_millis(20))
                .outage_delay(Duration::from_millis(50)),
        );
    configure(builder).build().unwrap()
}

fn trail_and_bonus(builder: CqrsBuilder) -> CqrsBuilder {
    builder.projection::<Trail>().process_manager(Bonus)
}

/// A running node's processors, and how to stop them.
struct Running {
    shutdown: Shutdown,
    task: tokio::task::JoinHandle<Result<(), cqrs_core::processor::RunError>>,
}

fn start(app: &Cqrs) -> Running {
    let running = app.processors().run();
    let shutdown = running.shutdown();
    Running {
        shutdown,
        task: tokio::spawn(running),
    }
}

impl Running {
    /// A graceful stop: the claims are given up.
    async fn stop(self) {
        self.shutdown.now().await;
        self.task.await.unwrap().unwrap();
    }

    /// A crash: the claims stay until their leases run out.
    async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

fn status(app: &Cqrs, name: &str) -> ProcessorStatus {
    app.processors()
        .status()
        .into_iter()
        .find(|status| status.name == name)
        .unwrap()
}

/// How many segments of `name` the node owns.
fn owned(app: &Cqrs, name: &str) -> usize {
    status(app, name)
        .segments
        .iter()
        .filter(|segment: &&SegmentStatus| segment.owned_here)
        .count()
}

/// Waits up to `limit` for `condition`, then fails with `what`.
async fn eventually<F: Future<Output = bool>>(
    limit: Duration,
    what: &str,
    mut condition: impl FnMut() -> F,
) -> Duration {
    let started = Instant::now();
    while !condition().await {
        assert!(started.elapsed() < limit, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

/// Ids no other test or run uses.
fn ids(tag: &str, count: usize) -> Vec<String> {
    let run = Uuid::now_v7().simple().to_string();
    (0..count)
        .map(|n| format!("{tag}-{}-{n}", &run[24..]))
        .collect()
}

/// Opens each account and deposits 1 to `deposits` into it, the accounts'
/// commands interleaved.
async fn write(app: &Cqrs, accounts: &[String], deposits: u64) {
    for id in accounts {
        app.execute(id, OpenAccount { owner: "o".into() })
            .await
            .unwrap();
    }
    for amount in 1..=deposits {
        for id in accounts {
            app.execute(id, DepositMoney { amount }).await.unwrap();
        }
    }
}

/// Waits until every processor of `app` has processed the whole log, the
/// commands its process managers send included.
async fn settle(app: &Cqrs) {
    let limit = Duration::from_secs(60);
    let started = Instant::now();
    loop {
        let last = app.last_position().await.unwrap();
        tokio::time::timeout(limit, app.processors().wait_for_all(last))
            .await
            .expect("the processors caught up")
            .unwrap();
        if app.last_position().await.unwrap() == last {
            return;
        }
        assert!(started.elapsed() < limit, "the log kept growing");
    }
}

// ------------------------------------------------------------------ checks

on_every_backend!(
    segments_spread_evenly_and_each_event_is_handled_once,
    a_dead_nodes_segments_are_taken_over_after_its_lease,
    a_node_restarted_under_its_id_takes_its_segments_back_at_once,
    a_paused_nodes_late_batch_is_fenced_off,
    views_two_segments_change_lose_no_update,
    a_poison_event_parks_its_stream_and_the_others_go_on,
    a_new_version_builds_beside_the_serving_one_then_serves,
    another_segment_count_waits_until_it_fits,
    a_waiter_learns_another_nodes_progress_as_it_commits,
);

async fn segments_spread_evenly_and_each_event_is_handled_once<S: EventStore + Clone>(
    backend: Backend<S>,
) {
    let a = node(&backend, "node-a", trail_and_bonus);
    let b = node(&backend, "node-b", trail_and_bonus);
    let running_a = start(&a);
    eventually(2 * LEASE, "node-a alone owns all 4 segments", || async {
        owned(&a, TRAIL) == 4
    })
    .await;
    let running_b = start(&b);
    let took = eventually(2 * LEASE + RENEWAL, "2 segments each", || async {
        owned(&a, TRAIL) == 2
            && owned(&b, TRAIL) == 2
            && owned(&a, BONUS) == 2
            && owned(&b, BONUS) == 2
    })
    .await;
    eprintln!("balanced 2 and 2 in {took:?}");

    let accounts = ids("spread", 24);
    write(&a, &accounts, 4).await;
    settle(&a).await;
    check_trails(&a, &accounts, true).await;
    for node in [&a, &b] {
        let trail = status(node, TRAIL);
        assert_eq!(trail.segments.len(), 4);
        assert!(trail.failure.is_none(), "{trail:?}");
    }
    running_a.stop().await;
    running_b.stop().await;
    let segments = backend.views.segments(TRAIL).await.unwrap();
    assert!(
        segments.iter().all(|segment| segment.owner.is_none()),
        "a graceful stop gives the claims up: {segments:?}"
    );
}

async fn a_dead_nodes_segments_are_taken_over_after_its_lease<S: EventStore + Clone>(
    backend: Backend<S>,
) {
    let a = node(&backend, "node-a", trail_and_bonus);
    let b = node(&backend, "node-b", trail_and_bonus);
    let (running_a, running_b) = (start(&a), start(&b));
    eventually(2 * LEASE + RENEWAL, "2 segments each", || async {
        owned(&a, TRAIL) == 2 && owned(&b, TRAIL) == 2
    })
    .await;
    let accounts = ids("takeover", 12);
    write(&a, &accounts[..6], 2).await;

    running_a.kill().await;
    // The dead node's claims hold for one lease; the next renewal after it
    // takes them.
    let took = eventually(
        LEASE + RENEWAL + Duration::from_secs(2),
        "node-b owns all 4",
        || async { owned(&b, TRAIL) == 4 && owned(&b, BONUS) == 4 },
    )
    .await;
    eprintln!("taken over in {took:?} (lease {LEASE:?})");
    assert!(
        took >= LEASE / 2,
        "not before the dead node's lease ran out: {took:?}"
    );

    write(&b, &accounts[6..], 2).await;
    settle(&b).await;
    check_trails(&b, &accounts, true).await;
    running_b.stop().await;
}

async fn a_node_restarted_under_its_id_takes_its_segments_back_at_once<S: EventStore + Clone>(
    backend: Backend<S>,
) {
    // A lease far longer than the test: only the node's own id lets it in.
    let long_lease = |builder: CqrsBuilder| {
        builder
            .projection::<Trail>()
            .lease(Lease::new(Duration::from_secs(60), RENEWAL))
    };
    let first = node(&backend, "pod-0", long_lease);
    let running = start(&first);
    eventually(2 * LEASE, "pod-0 owns all 4", || async {
        owned(&first, TRAIL) == 4
    })
    .await;
    running.kill().await;

    // Another node cannot have the dead node's segments before their leases
    // run out; the dead node, restarted under its id, takes them at once.
    let stranger = node(&backend, "pod-1", long_lease);
    let other = start(&stranger);
    tokio::time::sleep(3 * RENEWAL).await;
    assert_eq!(
        owned(&stranger, TRAIL),
        0,
        "the old claims are not free to others"
    );
    let restarted = node(&backend, "pod-0", long_lease);
    let running = start(&restarted);
    let took = eventually(Duration::from_secs(10), "2 segments each", || async {
        owned(&restarted, TRAIL) == 2 && owned(&stranger, TRAIL) == 2
    })
    .await;
    eprintln!("restarted under its id: its segments shared again in {took:?} (lease 60 s)");
    let accounts = ids("restarted", 4);
    write(&restarted, &accounts, 2).await;
    settle(&restarted).await;
    check_trails(&restarted, &accounts, false).await;
    running.stop().await;
    other.stop().await;
}

async fn a_paused_nodes_late_batch_is_fenced_off<S: EventStore + Clone>(backend: Backend<S>) {
    // Paused, node a keeps what it holds, as a process would: its own
    // connections. One segment, so the pause (in a handler) never falls
    // inside another segment's write: on SQLite that would hold the file's
    // write lock, and every writer with it, until the node resumed.
    let one_segment = |builder: CqrsBuilder| builder.projection::<Trail>().segments(TRAIL, 1);
    let (store, views) = backend.reopen().await;
    let a = node_on(store, views, "node-a", one_segment);
    let b = node(&backend, "node-b", one_segment);
    let accounts = ids("fenced", 8);
    for id in &accounts {
        a.execute(id, OpenAccount { owner: "o".into() })
            .await
            .unwrap();
    }
    // Node a runs alone on a thread of its own, which its first deposit
    // blocks mid-batch: coordinator and segments stop, as a process would
    // under SIGSTOP.
    let (resume, paused) = std::sync::mpsc::channel();
    let running = a.processors().run();
    let shutdown_a = running.shutdown();
    let thread = std::thread::spawn(move || {
        PAUSE.with(|pause| *pause.borrow_mut() = Some(paused));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(running)
    });
    eventually(2 * LEASE, "node-a owns the segment", || async {
        owned(&a, TRAIL) == 1
    })
    .await;
    for id in &accounts {
        b.execute(id, DepositMoney { amount: 1 }).await.unwrap();
    }
    let stopped = b.last_position().await.unwrap();

    // Node b takes the paused node's segment once its lease runs out.
    let running_b = start(&b);
    eventually(LEASE * 3, "node-b owns the segment", || async {
        owned(&b, TRAIL) == 1
    })
    .await;
    settle(&b).await;
    assert!(backend.views.checkpoint(TRAIL).await.unwrap() >= stopped);

    // Resumed, node a finishes its batch: its claim is stale, nothing is written.
    resume.send(()).unwrap();
    eventually(LEASE * 3, "node-a's batch is fenced", || async {
        status(&a, TRAIL).fenced >= 1
    })
    .await;
    shutdown_a.request();
    thread.join().unwrap().unwrap();
    settle(&b).await;
    check_trails(&b, &accounts, false).await;
    running_b.stop().await;
}

async fn views_two_segments_change_lose_no_update<S: EventStore + Clone>(backend: Backend<S>) {
    let units = |builder: CqrsBuilder| builder.projection::<UnitsOrdered>();
    let a = node(&backend, "node-a", units);
    let b = node(&backend, "node-b", units);
    let (running_a, running_b) = (start(&a), start(&b));
    eventually(2 * LEASE + RENEWAL, "2 segments each", || async {
        owned(&a, UNITS) == 2 && owned(&b, UNITS) == 2
    })
    .await;
    let skus = ids("sku", 2);
    let orders = ids("order", 60);
    let mut expected = vec![(0u64, 0u64); skus.len()];
    let writers: Vec<_> = orders
        .chunks(15)
        .map(|chunk| {
            let (app, skus, chunk) = (a.clone(), skus.clone(), chunk.to_vec());
            tokio::spawn(async move {
                for (n, order) in chunk.iter().enumerate() {
                    let place = PlaceOrder {
                        customer: "c".into(),
                        sku: skus[n % 2].clone(),
                        quantity: 1 + (n % 3) as u32,
                        unit_price: 1,
                        card: "ok".into(),
                    };
                    app.execute(order, place).await.unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    for n in 0..15 {
        let slot = &mut expected[n % 2];
        slot.0 += 4 * (1 + (n % 3) as u64);
        slot.1 += 4;
    }
    settle(&a).await;
    for (sku, (units, orders)) in skus.iter().zip(expected) {
        let view: UnitsOrdered = a.views().get(sku).await.unwrap().unwrap();
        assert_eq!((view.units, view.orders), (units, orders), "{sku}");
    }
    let conflicts = status(&a, UNITS).conflicts + status(&b, UNITS).conflicts;
    eprintln!("batches run again after another segment changed their views: {conflicts}");
    running_a.stop().await;
    running_b.stop().await;
}

async fn a_poison_event_parks_its_stream_and_the_others_go_on<S: EventStore + Clone>(
    backend: Backend<S>,
) {
    let app = node(&backend, "node-a", |builder| builder.projection::<Trail>());
    let accounts = ids("parked", 3);
    let (poisoned, skipped) = (&accounts[0], &accounts[1]);
    POISONED
        .lock()
        .unwrap()
        .extend([poisoned.clone(), skipped.clone()]);
    let running = start(&app);
    for id in &accounts {
        app.execute(id, OpenAccount { owner: "o".into() })
            .await
            .unwrap();
    }
    let deposit = async |id: &String, amount| {
        app.execute(id, DepositMoney { amount })
            .await
            .unwrap()
            .last_position()
            .unwrap()
    };
    for amount in [1, 2] {
        deposit(poisoned, amount).await;
    }
    let poison = deposit(poisoned, 13).await;
    let behind = deposit(poisoned, 4).await;
    for amount in [1, 2, 3] {
        deposit(&accounts[2], amount).await;
    }
    settle(&app).await;

    // The poison event is parked after its attempts, the event behind it
    // waits; every other stream is complete.
    let parked = app.processors().parked(TRAIL).await.unwrap();
    let summary: Vec<_> = parked
        .iter()
        .map(|event| {
            (
                event.position,
                event.state,
                event.attempts,
                event.error.is_some(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (poison, ParkState::Parked, 3, true),
            (behind, ParkState::Parked, 0, false)
        ]
    );
    assert!(
        parked[0]
            .error
            .as_deref()
            .unwrap()
            .contains("13 is unlucky")
    );
    assert_eq!(parked[0].aggregate_id, *poisoned);
    let trail: Trail = app.views().get(poisoned).await.unwrap().unwrap();
    assert_eq!(trail.events, 3, "opened, 1 and 2");
    check_trails(&app, &accounts[2..], false).await;
    eventually(
        Duration::from_secs(5),
        "status shows both parked",
        || async { status(&app, TRAIL).parked == 2 },
    )
    .await;

    // Later events of the stream wait too.
    let later = deposit(poisoned, 5).await;
    settle(&app).await;
    assert_eq!(
        app.processors()
            .parked(TRAIL)
            .await
            .unwrap()
            .last()
            .unwrap()
            .position,
        later
    );

    // After the fix, a retry handles the stream's parked events in order.
    POISONED.lock().unwrap().retain(|id| id != poisoned);
    assert!(app.processors().retry_parked(TRAIL, poison).await.unwrap());
    eventually(
        Duration::from_secs(10),
        "the parked events are retried",
        || async {
            app.processors()
                .parked(TRAIL)
                .await
                .unwrap()
                .iter()
                .all(|event| event.state == ParkState::Retried)
        },
    )
    .await;
    check_trails(&app, &accounts[..1], false).await;

    // A skip is recorded, and the stream goes on behind it.
    let skip = deposit(skipped, 13).await;
    deposit(skipped, 7).await;
    settle(&app).await;
    assert!(app.processors().skip_parked(TRAIL, skip).await.unwrap());
    assert!(
        !app.processors().skip_parked(TRAIL, skip).await.unwrap(),
        "decided once"
    );
    eventually(
        Duration::from_secs(10),
        "the skipped stream goes on",
        || async {
            let trail: Option<Trail> = app.views().get(skipped).await.unwrap();
            trail.is_some_and(|trail| trail.events == 2 && trail.last_sequence == 3)
        },
    )
    .await;
    let parked = app.processors().parked(TRAIL).await.unwrap();
    let decided = parked.iter().find(|event| event.position == skip).unwrap();
    assert_eq!(decided.state, ParkState::Skipped);
    assert!(decided.decided_at.is_some());
    assert!(
        parked.iter().all(|event| !event.is_blocking()),
        "{parked:?}"
    );
    eventually(
        Duration::from_secs(5),
        "status shows none parked",
        || async { status(&app, TRAIL).parked == 0 },
    )
    .await;

    // A lone parked event skipped from another process (as `cqrs skip`
    // does, through the views' tables): the owner picks the decision up at
    // a renewal, and the stream's next event is handled.
    let lone = deposit(skipped, 13).await;
    settle(&app).await;
    assert!(
        app.processors()
            .parked(TRAIL)
            .await
            .unwrap()
            .iter()
            .any(|event| event.position == lone && event.is_blocking())
    );
    assert!(app.views().skip_parked(TRAIL, lone).await.unwrap());
    let next = deposit(skipped, 8).await;
    eventually(
        Duration::from_secs(10),
        "the stream goes on after a skip from elsewhere",
        || async {
            let trail: Option<Trail> = app.views().get(skipped).await.unwrap();
            trail.is_some_and(|trail| trail.events == 3)
        },
    )
    .await;
    // It may have waited behind the skipped one until the owner's renewal,
    // as a record handled since.
    assert!(
        app.processors()
            .parked(TRAIL)
            .await
            .unwrap()
            .iter()
            .all(|event| event.position != next || event.state == ParkState::Retried),
        "the next event is handled"
    );
    running.stop().await;
}

async fn a_new_version_builds_beside_the_serving_one_then_serves<S: EventStore + Clone>(
    backend: Backend<S>,
) {
    let v1 = node(&backend, "node-a", |builder| {
        builder.projection::<Versioned>()
    });
    let accounts = ids("versioned", 10);
    write(&v1, &accounts, 30).await;
    v1.processors().catch_up().await.unwrap();
    let read = |app: &Cqrs| {
        let app = app.clone();
        let accounts = accounts.clone();
        async move {
            let mut built_by = HashSet::new();
            for id in &accounts {
                let view = app
                    .views()
                    .get::<Versioned>(id)
                    .await
                    .expect("no query fails");
                let view = view.expect("no view is missing");
                assert_eq!(view.events, 30, "{id}: never half-built");
                built_by.insert(view.built_by);
            }
            built_by
        }
    };
    assert_eq!(read(&v1).await, HashSet::from([1]));

    // A node with both versions: version 2 builds while version 1 serves.
    let both = node(&backend, "node-b", |builder| {
        builder
            .projection::<Versioned>()
            .projection::<VersionedV2>()
    });
    let running = start(&both);
    let served = Mutex::new(HashSet::new());
    let switched = eventually(
        Duration::from_secs(30),
        "queries switch to version 2",
        || {
            let read = read(&both);
            let served = &served;
            async move {
                let built_by = read.await;
                served.lock().unwrap().extend(built_by.iter().copied());
                built_by == HashSet::from([2])
            }
        },
    )
    .await;
    eprintln!(
        "switched in {switched:?}, reads saw versions {:?}",
        served.lock().unwrap()
    );
    eventually(Duration::from_secs(5), "version 1 retired", || async {
        let statuses = both.processors().status();
        statuses
            .iter()
            .any(|status| status.name == VERSIONED && status.version == 1 && status.retired)
    })
    .await;
    eventually(
        Duration::from_secs(5),
        "version 1's views dropped",
        || async { backend.views.segments(VERSIONED).await.unwrap().is_empty() },
    )
    .await;

    // Version 2 follows the log, and read-your-writes waits for it.
    let done = both
        .execute(&accounts[0], DepositMoney { amount: 1 })
        .await
        .unwrap();
    both.processors()
        .wait_for::<VersionedV2>(done.last_position().unwrap())
        .await
        .unwrap();
    let view: Versioned = both.views().get(&accounts[0]).await.unwrap().unwrap();
    assert_eq!((view.events, view.built_by), (31, 2));
    running.stop().await;
}

async fn another_segment_count_waits_until_it_fits<S: EventStore + Clone>(backend: Backend<S>) {
    let four = node(&backend, "node-a", |builder| builder.projection::<Trail>());
    let two = node(&backend, "node-b", |builder| {
        builder.projection::<Trail>().segments(TRAIL, 2)
    });
    let accounts = ids("resegment", 6);
    write(&four, &accounts, 3).await;
    let running_four = start(&four);
    settle(&four).await;
    eventually(2 * LEASE, "node-a owns all 4", || async {
        owned(&four, TRAIL) == 4
    })
    .await;

    // While node-a holds its 4 segments, node-b's 2 do not fit: it says so.
    let running_two = start(&two);
    eventually(
        Duration::from_secs(5),
        "node-b reports the count",
        || async {
            status(&two, TRAIL).failure.is_some_and(|failure| {
                failure
                    .error
                    .to_string()
                    .contains("has 4 segments in the store but 2 are declared")
            })
        },
    )
    .await;
    assert_eq!(backend.views.segments(TRAIL).await.unwrap().len(), 4);

    // Once node-a stopped, every segment at the end of the log, the count
    // changes from there and node-b goes on with 2.
    running_four.stop().await;
    eventually(Duration::from_secs(10), "node-b owns 2 of 2", || async {
        owned(&two, TRAIL) == 2
    })
    .await;
    write(&two, &ids("resegmented", 3), 2).await;
    settle(&two).await;
    check_trails(&two, &accounts, false).await;
    assert_eq!(backend.views.segments(TRAIL).await.unwrap().len(), 2);
    running_two.stop().await;
}

/// `execute_and_wait` on a node that runs none of the projection's
/// segments returns once the node that runs them committed, long before
/// the next lease renewal, which is when it used to learn of it (and never,
/// on a node that runs no processors at all, as this one).
async fn a_waiter_learns_another_nodes_progress_as_it_commits<S: EventStore + Clone>(
    backend: Backend<S>,
) {
    const RENEWAL: Duration = Duration::from_secs(10);
    let units = |builder: CqrsBuilder| {
        builder
            .projection::<UnitsOrdered>()
            .lease(Lease::new(3 * RENEWAL, RENEWAL))
    };
    let owner = node(&backend, "node-a", units);
    let waiter = node(&backend, "node-b", units);
    let running = start(&owner);
    eventually(Duration::from_secs(5), "node-a owns all 4", || async {
        owned(&owner, UNITS) == 4
    })
    .await;
    let mut slowest = Duration::ZERO;
    for n in 0..5 {
        let place = PlaceOrder {
            customer: "c".into(),
            sku: "ryw".into(),
            quantity: 1,
            unit_price: 1,
            card: "ok".into(),
        };
        let started = Instant::now();
        let order = format!("ryw-{n}");
        let waiting = waiter.execute_and_wait::<UnitsOrdered, _>(&order, place);
        tokio::time::timeout(RENEWAL, waiting)
            .await
            .expect("the wait ends before the next renewal")
            .unwrap();
        slowest = slowest.max(started.elapsed());
        let view: UnitsOrdered = waiter.views().get("ryw").await.unwrap().unwrap();
        assert_eq!(
            view.orders,
            n + 1,
            "the view holds the order once waited for"
        );
    }
    eprintln!("read your writes through another node: slowest of 5 in {slowest:?}");
    assert!(
        slowest < RENEWAL / 2,
        "a wait took {slowest:?}, as long as a lease renewal"
    );
    assert_eq!(owned(&waiter, UNITS), 0);
    running.stop().await;
}
