//! Events per second of a projection whose handler waits 1 ms per event (a
//! blocking call, as simulated I/O), with 1 and with 4 instances sharing
//! its 16 segments, on PostgreSQL.
//!
//! ```text
//! scripts/with-postgres cargo bench -p cqrs-benches --bench scale_out
//! ```
//!
//! Every instance is an OS process: this binary in its `node` role, with a
//! runtime and a pool of its own, as a deployed service is. A run appends
//! the events to fresh tables first (1,000 streams), then starts the
//! instances and polls the projection's checkpoint (its slowest segment)
//! until it reaches the end of the log. The rate is taken from the moment
//! the instances own their shares (⌊16/K⌋ or ⌈16/K⌉ each) to the end, so
//! the time nodes take to find each other (about one lease renewal, 0.5 s
//! here) is reported apart, with the rate over the whole run beside it.
//! Runs with 1 and 4 instances alternate; each figure is the median of its
//! runs and the ratio the median of per-pair ratios. Results go to stderr
//! and `target/bench-results/scale_out.tsv`. Without `--bench` (as
//! `cargo test` runs it) one tiny run of each: a smoke test.

use std::io::{BufRead, Write};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cqrs_benches::postgres_url;
use cqrs_core::prelude::*;
use cqrs_core::processor::Lease;
use cqrs_core::store::{NewEvent, PostgresOptions, TablePrefix};
use cqrs_core::{JsonPayload, PostgresStore, Uuid};
use cqrs_examples::bank::MoneyDeposited;
use serde::{Deserialize, Serialize};

const NAME: &str = "bench.slow_counts";
const SEGMENTS: u32 = 16;
const STREAMS: usize = 1000;

/// The handler's wait per event.
static WAIT_MICROS: AtomicU64 = AtomicU64::new(1000);

/// Events per stream: its deposits counted after a blocking wait.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct SlowCount {
    pub events: u64,
}

#[projection(name = "bench.slow_counts", segments = 16)]
impl SlowCount {
    #[event_handler]
    async fn deposited(
        _: &MoneyDeposited,
        envelope: &Envelope,
        views: &mut Views<'_, Self>,
    ) -> Result<(), ViewError> {
        std::thread::sleep(Duration::from_micros(WAIT_MICROS.load(Ordering::Relaxed)));
        views.get_or_default(&envelope.aggregate_id).await?.events += 1;
        Ok(())
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("node") {
        return node(&args[1..]);
    }
    let full = args.iter().any(|arg| arg == "--bench");
    let Some(url) = postgres_url() else {
        eprintln!("scale_out: skipped, CQRS_POSTGRES_URL is not set");
        return;
    };
    // Runs per instance count, and events per stream.
    let (runs, per_stream) = if full { (3, 40) } else { (1, 1) };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut lines = Vec::new();
    let mut results: [Vec<Run>; 2] = [Vec::new(), Vec::new()];
    for _ in 0..runs {
        for (slot, instances) in [1, 4].into_iter().enumerate() {
            let run = runtime.block_on(measure(&url, instances, per_stream));
            lines.push(format!(
                "scale_out: {instances} instance(s)\t{:.0} events/s once balanced\t{:.0} events/s overall\tbalanced after {:.2} s",
                run.balanced_rate, run.overall_rate, run.balanced_after
            ));
            eprintln!("{}", lines.last().expect("just pushed"));
            results[slot].push(run);
        }
    }
    let median = |mut values: Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let ratios: Vec<f64> = results[0]
        .iter()
        .zip(&results[1])
        .map(|(one, four)| four.balanced_rate / one.balanced_rate)
        .collect();
    let summary = format!(
        "scale_out: 1 ms per event, {SEGMENTS} segments, {} events\t1 instance {:.0} events/s\t4 instances {:.0} events/s\tratio {:.2} (runs {:?})",
        STREAMS as u64 * per_stream,
        median(results[0].iter().map(|run| run.balanced_rate).collect()),
        median(results[1].iter().map(|run| run.balanced_rate).collect()),
        median(ratios.clone()),
        ratios
            .iter()
            .map(|ratio| format!("{ratio:.2}"))
            .collect::<Vec<_>>(),
    );
    eprintln!("{summary}");
    lines.push(summary);
    let directory =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-results");
    std::fs::create_dir_all(&directory).expect("results directory");
    let mut file = std::fs::File::create(directory.join("scale_out.tsv")).expect("results file");
    for line in &lines {
        writeln!(file, "{line}").expect("write results");
    }
}

/// What one run measured.
struct Run {
    balanced_rate: f64,
    overall_rate: f64,
    balanced_after: f64,
}

async fn measure(url: &str, instances: usize, per_stream: u64) -> Run {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let prefix = format!(
        "bench{}_scale{}_",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    );
    let store = connect(url, &prefix).await;
    let last = append(&store, per_stream).await;
    let views = store.views();
    let started = Instant::now();
    let mut nodes: Vec<Child> = (0..instances).map(|n| spawn(url, &prefix, n)).collect();
    let mut balanced: Option<(Instant, u64)> = None;
    loop {
        let segments = views.segments(NAME).await.expect("the segments");
        let position = segments
            .iter()
            .map(|segment| segment.position)
            .min()
            .unwrap_or(0);
        if balanced.is_none() {
            let mut shares = std::collections::BTreeMap::new();
            for segment in &segments {
                if let Some(owner) = segment.owner.as_ref().filter(|_| !segment.expired) {
                    *shares.entry(owner.clone()).or_insert(0u32) += 1;
                }
            }
            let fair = SEGMENTS / instances as u32;
            if shares.len() == instances
                && shares
                    .values()
                    .all(|share| *share == fair || *share == fair + 1)
            {
                balanced = Some((Instant::now(), position));
            }
        }
        if position >= last && segments.len() == SEGMENTS as usize {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ended = Instant::now();
    for node in &mut nodes {
        drop(node.stdin.take());
    }
    for mut node in nodes {
        let _ = node.wait();
    }
    let (at, from) = balanced.unwrap_or((started, 0));
    Run {
        balanced_rate: (last - from) as f64 / ended.duration_since(at).as_secs_f64().max(1e-9),
        overall_rate: last as f64 / ended.duration_since(started).as_secs_f64(),
        balanced_after: at.duration_since(started).as_secs_f64(),
    }
}

/// `per_stream` deposits into each of `STREAMS` accounts; the log's end.
async fn append(store: &PostgresStore, per_stream: u64) -> u64 {
    let mut last = 0;
    for n in 0..STREAMS {
        let batch: Vec<NewEvent> = (1..=per_stream)
            .map(|balance| NewEvent {
                event_id: Uuid::now_v7(),
                event_name: "account.deposited",
                event_version: 1,
                metadata: Metadata::default(),
                payload: JsonPayload::from_text(format!(r#"{{"amount":1,"balance":{balance}}}"#)),
                tags: Vec::new(),
            })
            .collect();
        let appended = store
            .append("account", &format!("acc-{n}"), 0, batch)
            .await
            .expect("append");
        last = appended.last().map_or(last, |event| event.position);
    }
    last
}

/// The store in tables under `prefix`.
async fn connect(url: &str, prefix: &str) -> PostgresStore {
    PostgresOptions::new(url)
        .prefix(TablePrefix::new(prefix).expect("a prefix"))
        .max_connections(8)
        .connect()
        .await
        .expect("connect to CQRS_POSTGRES_URL and migrate")
}

/// Starts one instance; it stops when its stdin closes.
fn spawn(url: &str, prefix: &str, n: usize) -> Child {
    let mut child = Command::new(std::env::current_exe().expect("the bench binary"))
        .args(["node", url, prefix, &format!("node-{n}")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("an instance");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut ready = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut ready)
        .expect("the instance starts");
    child
}

/// The `node` role: one instance running the projection until stdin closes.
fn node(args: &[String]) {
    let [url, prefix, id] = args else {
        panic!("node URL PREFIX ID");
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let store = connect(url, prefix).await;
        let app = Cqrs::builder(store)
            .without_processors()
            .without_event_handlers()
            .projection::<SlowCount>()
            .node_id(id)
            .lease(Lease::new(
                Duration::from_secs(2),
                Duration::from_millis(500),
            ))
            .poll_interval(Duration::from_millis(50))
            .build()
            .expect("the app");
        let running = app.processors().run();
        let shutdown = running.shutdown();
        let task = tokio::spawn(running);
        println!("ready");
        tokio::task::spawn_blocking(|| std::io::stdin().lines().count())
            .await
            .expect("stdin");
        shutdown.now().await;
        task.await.expect("the run").expect("one run");
    });
}
