//! Appends per second on each backend, for batches of 1 and 10 events.
//!
//! ```text
//! scripts/with-postgres cargo bench -p cqrs-benches --bench appends
//! ```
//!
//! Each iteration appends one batch to one of 100 streams in turn, at the
//! stream's current version, from one client. Criterion's throughput line is
//! appends (batches) per second.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use cqrs_benches::{TempDatabase, batch, postgres_store, postgres_url};
use cqrs_core::{EventStore, MemoryStore};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tokio::runtime::Runtime;

const STREAMS: u64 = 100;

fn bench_appends<S: EventStore>(c: &mut Criterion, runtime: &Runtime, backend: &str, store: &S) {
    let mut group = c.benchmark_group("append");
    group.throughput(Throughput::Elements(1));
    for size in [1usize, 10] {
        let mut versions: HashMap<u64, u64> = HashMap::new();
        let mut next = 0u64;
        group.bench_function(
            BenchmarkId::new(backend, format!("{size}-event batch")),
            |b| {
                b.iter_custom(|iterations| {
                    runtime.block_on(async {
                        // Batches are built outside the timed part.
                        let batches: Vec<_> = (0..iterations).map(|_| batch(size)).collect();
                        let start = Instant::now();
                        for events in batches {
                            let stream = next % STREAMS;
                            next += 1;
                            let version = versions.entry(stream).or_default();
                            let id = format!("{backend}-{size}-{stream}");
                            store
                                .append("bench", &id, *version, events)
                                .await
                                .expect("append");
                            *version += size as u64;
                        }
                        start.elapsed()
                    })
                });
            },
        );
    }
    group.finish();
}

fn appends(c: &mut Criterion) {
    let runtime = Runtime::new().expect("tokio runtime");
    bench_appends(c, &runtime, "memory", &MemoryStore::new());

    let file = TempDatabase::new("appends");
    let sqlite = runtime.block_on(file.open());
    bench_appends(c, &runtime, "sqlite-file", &sqlite);

    match postgres_url() {
        Some(url) => {
            let postgres = runtime.block_on(postgres_store(&url, "appends"));
            bench_appends(c, &runtime, "postgres", &postgres);
        }
        None => eprintln!("skipping PostgreSQL: CQRS_POSTGRES_URL is not set"),
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    targets = appends
}
criterion_main!(benches);
