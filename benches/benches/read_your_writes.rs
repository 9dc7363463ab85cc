//! Read your writes across nodes: `execute_and_wait` on one node for a
//! projection whose only segment another node runs, beside the same on the
//! node that runs it, on PostgreSQL (`CQRS_POSTGRES_URL`).
//!
//! ```text
//! scripts/with-postgres cargo bench -p cqrs-benches --bench read_your_writes
//! ```
//!
//! Two apps in one process over the same tables, each with its node id and
//! the default lease (renewed every 2 s): node `node-a` starts first and
//! claims the order summary's one segment; node `node-b` runs its
//! processors too, but the fair share of one segment over two nodes is
//! the first node's (by id), so it never claims it. Each node places orders one after
//! another and waits for the summary, the two nodes alternating run by
//! run. Results go to stderr and `target/bench-results/read_your_writes.tsv`.
//! Without `--bench` (as `cargo test` runs it) it runs once on tiny data: a
//! smoke test.

use std::io::Write;
use std::time::{Duration, Instant};

use cqrs_benches::{postgres_store, postgres_url};
use cqrs_core::{Cqrs, EventStore};
use cqrs_examples::shop::{OrderSummary, PlaceOrder};

const SUMMARY: &str = "shop.order_summary";

fn node(store: impl EventStore, id: &str) -> Cqrs {
    Cqrs::builder(store)
        .without_event_handlers()
        .without_processors()
        .projection::<OrderSummary>()
        .segments(SUMMARY, 1)
        .node_id(id)
        .build()
        .expect("a node")
}

fn order(n: usize) -> PlaceOrder {
    PlaceOrder {
        customer: format!("customer-{n}"),
        sku: "teapot".into(),
        quantity: 1,
        unit_price: 1200,
        card: "4242".into(),
    }
}

/// The latencies of `orders` placed on `app` one after another, each
/// waited for in the summary.
async fn place(app: &Cqrs, tag: &str, orders: usize) -> Vec<Duration> {
    let mut latencies = Vec::with_capacity(orders);
    for n in 0..orders {
        let started = Instant::now();
        app.execute_and_wait::<OrderSummary, _>(&format!("{tag}-{n}"), order(n))
            .await
            .expect("placed and summarized");
        latencies.push(started.elapsed());
    }
    latencies
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn main() {
    let full = std::env::args().any(|arg| arg == "--bench");
    let Some(url) = postgres_url() else {
        eprintln!("read_your_writes: CQRS_POSTGRES_URL is not set; skipped");
        return;
    };
    let (runs, orders) = if full { (5, 100) } else { (1, 3) };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let lines = runtime.block_on(async {
        let store = postgres_store(&url, "ryw").await;
        let owner = node(store.clone(), "node-a");
        let running_owner = owner.processors().run();
        let owner_shutdown = running_owner.shutdown();
        let owner_task = tokio::spawn(running_owner);
        // The owner claims the segment before the other node starts.
        let started = Instant::now();
        while !owner.processors().status()[0].segments[0].owned_here {
            assert!(started.elapsed() < Duration::from_secs(10), "the owner claims its segment");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let other = node(store.clone(), "node-b");
        let running_other = other.processors().run();
        let other_shutdown = running_other.shutdown();
        let other_task = tokio::spawn(running_other);

        let mut on_owner = Vec::new();
        let mut on_other = Vec::new();
        for run in 0..runs {
            on_other.extend(place(&other, &format!("other-{run}"), orders).await);
            on_owner.extend(place(&owner, &format!("owner-{run}"), orders).await);
        }
        assert!(
            !other.processors().status()[0].segments[0].owned_here,
            "the other node never ran the segment"
        );
        other_shutdown.now().await;
        owner_shutdown.now().await;
        other_task.await.expect("joined").expect("ran");
        owner_task.await.expect("joined").expect("ran");

        let mut lines = Vec::new();
        for (name, mut latencies) in [
            ("on the node that runs the segment", on_owner),
            ("on another node", on_other),
        ] {
            latencies.sort();
            lines.push(format!(
                "postgres\texecute_and_wait {name}, {} orders\tp50 {:.1} ms\tp99 {:.1} ms\tmax {:.1} ms",
                latencies.len(),
                quantile(&latencies, 0.5).as_secs_f64() * 1e3,
                quantile(&latencies, 0.99).as_secs_f64() * 1e3,
                latencies[latencies.len() - 1].as_secs_f64() * 1e3,
            ));
        }
        lines
    });
    for line in &lines {
        eprintln!("read_your_writes: {line}");
    }
    if full {
        let results =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-results");
        std::fs::create_dir_all(&results).expect("the results directory");
        let mut file =
            std::fs::File::create(results.join("read_your_writes.tsv")).expect("the results file");
        for line in &lines {
            writeln!(file, "{line}").expect("written");
        }
    }
}
