//! The chaos runs: both services as processes over a broker of the suite's
//! own, `orders` killed 3 times and the broker restarted once, then every
//! order checked in both logs.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cqrs_core::{EventStore, SqliteStore};
use cqrs_examples::services::ShipmentDispatched;

use super::brokers::{self, Broker, Kind};
use super::process::{Line, Process};

const SCENARIOS: [&str; 2] = ["rabbitmq_chaos", "nats_chaos"];

/// How long a scenario may take once its broker runs.
const BOUND: Duration = Duration::from_secs(900);

pub async fn run(filter: Option<String>) -> usize {
    let ci = std::env::var("CI").as_deref() == Ok("true");
    let orders: usize = std::env::var("CQRS_SERVICES_ORDERS")
        .ok()
        .and_then(|count| count.parse().ok())
        .unwrap_or(10_000);
    let mut failures = 0;
    for name in SCENARIOS {
        if filter
            .as_deref()
            .is_some_and(|filter| !name.contains(filter))
        {
            continue;
        }
        let kind = if name.starts_with("rabbitmq") {
            Kind::RabbitMq
        } else {
            Kind::Nats
        };
        let Some(program) = brokers::program(&kind) else {
            if ci {
                eprintln!("services: {name} FAILED: its broker is not installed, and CI needs it");
                failures += 1;
            } else {
                eprintln!(
                    "skipped {name}: its broker is not installed (scripts/with-brokers installs it)"
                );
            }
            continue;
        };
        let started = Instant::now();
        match chaos(name, kind, program, orders).await {
            Ok(()) => println!(
                "services: {name:<16} passed in {:.1} s",
                started.elapsed().as_secs_f64()
            ),
            Err(error) => {
                eprintln!("services: {name} FAILED: {error}");
                failures += 1;
            }
        }
    }
    failures
}

/// One incarnation of a service: its process and the last counts it
/// printed.
struct Incarnation {
    process: Process,
    /// deliveries, recorded, duplicates, dead letters
    counts: [u64; 4],
    placed: usize,
}

impl Incarnation {
    fn start(args: &[String]) -> Result<Self, String> {
        let process = Process::spawn(args);
        let mut lines = Vec::new();
        if !process.wait_for("ready", Duration::from_secs(60), &mut lines) {
            let (_, stderr) = process.finish(Duration::ZERO);
            return Err(format!("{} did not start: {stderr}", args[0]));
        }
        Ok(Self {
            process,
            counts: [0; 4],
            placed: 0,
        })
    }

    fn read(&mut self) {
        let mut lines: Vec<Line> = Vec::new();
        self.process.drain(&mut lines);
        for line in lines {
            let words: Vec<&str> = line.text.split_whitespace().collect();
            match words.as_slice() {
                ["placed", n] => self.placed = n.parse().unwrap_or(self.placed),
                ["status", rest @ ..] if rest.len() == 4 => {
                    for (count, word) in self.counts.iter_mut().zip(rest) {
                        *count = word.parse().unwrap_or(*count);
                    }
                }
                _ => {}
            }
        }
    }
}

/// Counts a log's events as it grows.
struct Tally {
    store: SqliteStore,
    next: u64,
    /// Events by name, and by name and stream.
    by_name: BTreeMap<String, u64>,
    streams: BTreeMap<(String, String), u64>,
    ids: HashSet<cqrs_core::Uuid>,
    duplicate_ids: u64,
    shipped_orders: BTreeMap<String, u64>,
}

impl Tally {
    async fn open(path: &Path) -> Result<Self, String> {
        Ok(Self {
            store: SqliteStore::open(path)
                .await
                .map_err(|error| error.to_string())?,
            next: 1,
            by_name: BTreeMap::new(),
            streams: BTreeMap::new(),
            ids: HashSet::new(),
            duplicate_ids: 0,
            shipped_orders: BTreeMap::new(),
        })
    }

    async fn update(&mut self) -> Result<(), String> {
        loop {
            let page = self
                .store
                .read_all(self.next, 2000)
                .await
                .map_err(|error| error.to_string())?;
            let Some(last) = page.last() else {
                return Ok(());
            };
            self.next = last.position + 1;
            for event in page {
                *self.by_name.entry(event.event_name.clone()).or_default() += 1;
                *self
                    .streams
                    .entry((event.event_name.clone(), event.aggregate_id.clone()))
                    .or_default() += 1;
                if !self.ids.insert(event.event_id) {
                    self.duplicate_ids += 1;
                }
                if event.event_name == "ShipmentDispatched" {
                    let dispatched: ShipmentDispatched = event
                        .payload
                        .decode()
                        .map_err(|error| format!("a shipment that does not decode: {error}"))?;
                    *self.shipped_orders.entry(dispatched.order_id).or_default() += 1;
                }
            }
        }
    }

    fn count(&self, name: &str) -> u64 {
        self.by_name.get(name).copied().unwrap_or(0)
    }

    /// Streams with more than one event of `name`.
    fn repeated(&self, name: &str) -> Vec<String> {
        self.streams
            .iter()
            .filter(|((event, _), count)| event == name && **count > 1)
            .map(|((_, stream), _)| stream.clone())
            .collect()
    }
}

async fn chaos(name: &str, kind: Kind, program: PathBuf, orders: usize) -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("cqrs-services-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("broker")).map_err(|error| error.to_string())?;
    let result = run_chaos(name, kind, program, orders, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn run_chaos(
    name: &str,
    kind: Kind,
    program: PathBuf,
    orders: usize,
    dir: &Path,
) -> Result<(), String> {
    let nats = matches!(kind, Kind::Nats);
    let mut broker = Broker::start(kind, program, &dir.join("broker"))?;
    let broker_args = if nats {
        ["--nats".to_owned(), broker.url()]
    } else {
        ["--rabbitmq".to_owned(), broker.url()]
    };
    let path = |file: &str| dir.join(file).to_string_lossy().into_owned();
    let args = |role: &str| -> Vec<String> {
        let mut args = vec![
            role.to_owned(),
            "--database".to_owned(),
            path(&format!("{role}.sqlite")),
            "--namespace".to_owned(),
            format!("chaos-{}", std::process::id()),
        ];
        args.extend(broker_args.iter().cloned());
        args
    };
    let mut orders_args = args("orders");
    orders_args.extend(["--orders".to_owned(), orders.to_string()]);
    let mut shipping = Incarnation::start(&args("shipping"))?;
    let mut current = Incarnation::start(&orders_args)?;
    let mut ended: Vec<[u64; 4]> = Vec::new();
    let mut orders_log = Tally::open(&dir.join("orders.sqlite")).await?;
    let mut shipping_log = Tally::open(&dir.join("shipping.sqlite")).await?;

    let total = orders as u64;
    let mut kills = Vec::new();
    let mut restarted = None;
    // What each process said on stderr, told when the scenario stalls.
    let mut earlier: Vec<(&str, String)> = Vec::new();
    let started = Instant::now();
    loop {
        if started.elapsed() > BOUND {
            let logs = (&orders_log, &shipping_log);
            return Err(stalled(logs, current, shipping, &kills, restarted, earlier));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        current.read();
        shipping.read();
        orders_log.update().await?;
        shipping_log.update().await?;
        let placed = orders_log.count("OrderPlaced");
        let shipped = orders_log.count("OrderShipped");
        let kill = match kills.len() {
            0 => placed >= total / 4,
            1 => placed >= total * 3 / 4 && restarted.is_some(),
            2 => shipped >= total / 2,
            _ => false,
        };
        if kill {
            current.read();
            ended.push(current.counts);
            let stderr = current.process.kill();
            if stderr.contains("panicked") {
                return Err(format!("orders panicked before it was killed: {stderr}"));
            }
            earlier.push(("orders, killed", stderr));
            kills.push((placed, shipped));
            current = Incarnation::start(&orders_args)?;
        }
        if restarted.is_none() && placed >= total / 2 {
            let stopped = Instant::now();
            broker.restart()?;
            restarted = Some((placed, shipped, stopped.elapsed()));
        }
        if shipped >= total && shipping_log.count("ShipmentDispatched") >= total && kills.len() == 3
        {
            break;
        }
    }
    // Late copies on the wire have time to arrive, and must change nothing.
    tokio::time::sleep(Duration::from_secs(2)).await;
    current.read();
    shipping.read();
    current.process.stop();
    shipping.process.stop();
    let mut lines = Vec::new();
    current.process.drain(&mut lines);
    ended.push(current.counts);
    let (_, orders_stderr) = current.process.finish(Duration::from_secs(30));
    let shipping_counts = shipping.counts;
    let (_, shipping_stderr) = shipping.process.finish(Duration::from_secs(30));
    for stderr in [&orders_stderr, &shipping_stderr] {
        if stderr.contains("panicked") {
            return Err(format!("a service panicked: {stderr}"));
        }
    }
    orders_log.update().await?;
    shipping_log.update().await?;
    broker.stop();

    let mut problems = Vec::new();
    let expect = |problems: &mut Vec<String>, what: &str, got: u64| {
        if got != total {
            problems.push(format!("{what}: {got}, expected {total}"));
        }
    };
    expect(
        &mut problems,
        "orders placed",
        orders_log.count("OrderPlaced"),
    );
    expect(
        &mut problems,
        "orders marked shipped",
        orders_log.count("OrderShipped"),
    );
    expect(
        &mut problems,
        "shipments received by orders",
        orders_log.count("ShipmentDispatched"),
    );
    expect(
        &mut problems,
        "orders received by shipping",
        shipping_log.count("OrderPlaced"),
    );
    expect(
        &mut problems,
        "shipments",
        shipping_log.count("ShipmentDispatched"),
    );
    expect(
        &mut problems,
        "orders with a shipment",
        shipping_log.shipped_orders.len() as u64,
    );
    let twice: Vec<&String> = shipping_log
        .shipped_orders
        .iter()
        .filter(|(_, count)| **count > 1)
        .map(|(order, _)| order)
        .collect();
    if !twice.is_empty() {
        problems.push(format!("orders shipped twice: {twice:?}"));
    }
    for (log, event) in [(&orders_log, "OrderShipped"), (&orders_log, "OrderPlaced")] {
        let repeated = log.repeated(event);
        if !repeated.is_empty() {
            problems.push(format!("streams with {event} twice: {repeated:?}"));
        }
    }
    for (log, which) in [(&orders_log, "orders"), (&shipping_log, "shipping")] {
        if log.duplicate_ids > 0 {
            problems.push(format!(
                "{which}'s log holds {} event ids twice",
                log.duplicate_ids
            ));
        }
    }
    let sum = |counts: &[[u64; 4]], at: usize| counts.iter().map(|count| count[at]).sum::<u64>();
    println!(
        "services: {name:<16} {total} orders; orders SIGKILLed at (placed, shipped) {kills:?}; broker restarted at {:?} (down {:.1} s)",
        restarted.map(|(placed, shipped, _)| (placed, shipped)),
        restarted.map_or(0.0, |(_, _, down)| down.as_secs_f64()),
    );
    println!(
        "services: {name:<16} shipping received {} deliveries for {} distinct events ({} duplicates); orders' {} incarnations received {} deliveries for {} distinct events ({} duplicates, as counted before each kill)",
        shipping_counts[0],
        shipping_log.count("OrderPlaced"),
        shipping_counts[2],
        ended.len(),
        sum(&ended, 0),
        orders_log.count("ShipmentDispatched"),
        sum(&ended, 2),
    );
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// Why a scenario ran out of time: both logs' counts, the consumers'
/// counts, the faults so far, and what each process said last (the two
/// still running killed first).
fn stalled(
    (orders_log, shipping_log): (&Tally, &Tally),
    current: Incarnation,
    shipping: Incarnation,
    kills: &[(u64, u64)],
    restarted: Option<(u64, u64, Duration)>,
    mut earlier: Vec<(&str, String)>,
) -> String {
    let counts = format!(
        "not done within {BOUND:?}: {} placed, {} received by shipping, {} shipments, {} received by orders, {} orders shipped; consumers' deliveries, recorded, duplicates, dead letters: shipping {:?}, orders {:?}; orders SIGKILLed at {kills:?}, broker restarted at {restarted:?}",
        orders_log.count("OrderPlaced"),
        shipping_log.count("OrderPlaced"),
        shipping_log.count("ShipmentDispatched"),
        orders_log.count("ShipmentDispatched"),
        orders_log.count("OrderShipped"),
        shipping.counts,
        current.counts,
    );
    earlier.push(("orders, last", current.process.kill()));
    earlier.push(("shipping", shipping.process.kill()));
    let told: Vec<String> = earlier
        .iter()
        .map(|(who, stderr)| format!("{who} said:\n{}", tail(stderr, 20)))
        .collect();
    format!("{counts}\n{}", told.join("\n"))
}

/// The last `lines` lines of `text`.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
