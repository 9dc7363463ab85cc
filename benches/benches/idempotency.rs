//! What answering a repeated command costs: a command id sent again on a
//! stream of 10 events and on one of 10,000, beside loading each stream
//! (what answering cost when the first outcome was found by reading the
//! stream), on SQLite, PostgreSQL (with `CQRS_POSTGRES_URL`) and in memory.
//!
//! ```text
//! scripts/with-postgres cargo bench -p cqrs-benches --bench idempotency
//! ```
//!
//! The app keeps no aggregate in its cache (`cache_capacity(0)`), so each
//! repeat is answered as a new instance, or one that evicted the aggregate,
//! would answer it. Streams are measured alternating, call by call; each
//! figure is the median of the calls. Results go to stderr and
//! `target/bench-results/idempotency.tsv`. Without `--bench` (as `cargo
//! test` runs it) it runs once on tiny data: a smoke test.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cqrs_benches::{TempDatabase, batch, postgres_store, postgres_url};
use cqrs_core::{Cqrs, EventStore, Metadata, Uuid};
use cqrs_examples::bank::{Account, OpenAccount};

/// The streams measured: their ids and lengths.
const STREAMS: [(&str, usize); 2] = [("short", 10), ("long", 10_000)];

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

/// Opens each stream with a command id, then appends deposits up to its
/// length, and measures repeating the opening command beside loading the
/// stream. Returns one line per stream and measure.
async fn measure(backend: &str, store: impl EventStore, calls: usize, scale: usize) -> Vec<String> {
    let store = Arc::new(store);
    let app = Cqrs::builder(Arc::clone(&store))
        .without_event_handlers()
        .without_processors()
        .cache_capacity(0)
        .build()
        .expect("an app");
    let key = |id: &str| Metadata {
        command_id: Some(Uuid::new_v5(&Uuid::NAMESPACE_OID, id.as_bytes())),
        ..Metadata::default()
    };
    let open = |id: &str| OpenAccount { owner: id.into() };
    for (id, length) in STREAMS {
        let length = (length / scale).max(2);
        app.execute_with(id, open(id), key(id))
            .await
            .expect("opened");
        let mut version = 1;
        while version < length as u64 {
            let size = (length as u64 - version).min(500) as usize;
            store
                .append("account", id, version, batch(size))
                .await
                .expect("deposits appended");
            version += size as u64;
        }
    }

    let mut replay = vec![Vec::new(); STREAMS.len()];
    let mut load = vec![Vec::new(); STREAMS.len()];
    // Repeats first, then loads, so a load's large allocations do not
    // weigh on the repeat measured after it. Which stream goes first
    // alternates call by call.
    for call in 0..calls {
        for step in 0..STREAMS.len() {
            let at = (call + step) % STREAMS.len();
            let id = STREAMS[at].0;
            let started = Instant::now();
            let done = app
                .execute_with(id, open(id), key(id))
                .await
                .expect("answered");
            replay[at].push(started.elapsed());
            assert!(done.duplicate && done.version == 1 && done.events.len() == 1);
        }
    }
    for call in 0..calls {
        for step in 0..STREAMS.len() {
            let at = (call + step) % STREAMS.len();
            let started = Instant::now();
            app.load::<Account>(STREAMS[at].0).await.expect("loaded");
            load[at].push(started.elapsed());
        }
    }
    let replay: Vec<Duration> = replay.into_iter().map(median).collect();
    let load: Vec<Duration> = load.into_iter().map(median).collect();
    let mut lines = Vec::new();
    for (at, (id, length)) in STREAMS.iter().enumerate() {
        let length = (length / scale).max(2);
        lines.push(format!(
            "{backend}\trepeat the command, stream of {length} ({id})\t{:.1} µs",
            replay[at].as_secs_f64() * 1e6
        ));
        lines.push(format!(
            "{backend}\tload the stream of {length} ({id})\t{:.1} µs",
            load[at].as_secs_f64() * 1e6
        ));
    }
    lines.push(format!(
        "{backend}\trepeat, long / short\t{:.2}x",
        replay[1].as_secs_f64() / replay[0].as_secs_f64()
    ));
    lines.push(format!(
        "{backend}\tload, long / short\t{:.2}x",
        load[1].as_secs_f64() / load[0].as_secs_f64()
    ));
    lines
}

fn main() {
    let full = std::env::args().any(|arg| arg == "--bench");
    let (calls, scale) = if full { (201, 1) } else { (3, 1_000) };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime");
    let mut lines = Vec::new();
    runtime.block_on(async {
        let file = TempDatabase::new("idempotency");
        lines.extend(measure("sqlite", file.open().await, calls, scale).await);
        if let Some(url) = postgres_url() {
            let store = postgres_store(&url, "idempotency").await;
            lines.extend(measure("postgres", store, calls, scale).await);
        }
        lines.extend(measure("memory", cqrs_core::MemoryStore::new(), calls, scale).await);
    });
    for line in &lines {
        eprintln!("idempotency: {line}");
    }
    if full {
        let results =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-results");
        std::fs::create_dir_all(&results).expect("the results directory");
        let mut file =
            std::fs::File::create(results.join("idempotency.tsv")).expect("the results file");
        for line in &lines {
            writeln!(file, "{line}").expect("written");
        }
    }
}
