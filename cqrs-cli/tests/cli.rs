//! The `cqrs` binary run against a real SQLite file and real PostgreSQL
//! tables holding the shop of `cqrs_examples::shop`, with two events
//! parked by a projection that fails on them and an order's payment
//! deadline pending: every subcommand, its output, its errors (one line,
//! exit code 1), and `rebuild` through the entry point an app embeds.

#![allow(clippy::unwrap_used, reason = "a test fails on the first surprise")]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use cqrs_core::CqrsBuilder;
use cqrs_core::prelude::*;
use cqrs_core::processor::RetryPolicy;
use cqrs_core::store::{PostgresOptions, SqliteOptions, TablePrefix};
use cqrs_examples::shop::*;
use serde_json::Value;

/// Counts orders, and fails on those of customer `fragile`.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
struct Fragile {
    orders: u32,
}

#[projection(name = "cli.fragile")]
impl Fragile {
    #[event_handler]
    async fn placed(event: &OrderPlaced, views: &mut Views<'_, Self>) -> Result<(), HandlerError> {
        if event.customer == "fragile" {
            return Err("fragile orders break this projection".into());
        }
        let mut count = views.get("all").await?.cloned().unwrap_or_default();
        count.orders += 1;
        views.insert("all", count);
        Ok(())
    }
}

/// Where the shop is, as the tool's arguments name it.
struct Store {
    args: Vec<String>,
}

fn unique(tag: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{tag}{}_{}_",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    )
}

fn builder_args(store: &Store) -> Vec<String> {
    store.args.clone()
}

/// The app the test writes with: the shop's processors and the fragile
/// projection, giving up on an event after two attempts.
fn shop_app(builder: CqrsBuilder) -> Cqrs {
    builder
        .without_event_handlers()
        // Not shop.revenue: its tables are the database's, and the
        // PostgreSQL case shares the server's database under a prefix.
        .processors(|registration| {
            (registration.name.starts_with("shop.") && registration.name != "shop.revenue")
                || registration.name == "cli.fragile"
        })
        .retry_policy(
            RetryPolicy::default()
                .max_attempts(2)
                .delays(Duration::from_millis(10), Duration::from_millis(10)),
        )
        .build()
        .unwrap()
}

fn place(customer: &str) -> PlaceOrder {
    PlaceOrder {
        customer: customer.into(),
        sku: "teapot".into(),
        quantity: 1,
        unit_price: 100,
        card: "4242".into(),
    }
}

/// Three orders, two of them fragile, processed until both are parked.
async fn fill(app: &Cqrs) {
    app.execute("teapot", AddProduct { quantity: 10 })
        .await
        .unwrap();
    for (id, customer) in [("o-1", "ann"), ("o-2", "fragile"), ("o-3", "fragile")] {
        app.execute(id, place(customer)).await.unwrap();
    }
    let running = app.processors().run();
    let shutdown = running.shutdown();
    let processing = tokio::spawn(running);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let head = app.last_position().await.unwrap();
        let parked = app.processors().parked("cli.fragile").await.unwrap().len();
        let settled = app
            .processors()
            .status()
            .iter()
            .all(|status| status.position == head);
        if parked == 2 && settled {
            break;
        }
        assert!(Instant::now() < deadline, "the shop settles");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shutdown.now().await;
    processing.await.unwrap().unwrap();
}

fn cqrs(store: &Store, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cqrs"))
        .args(builder_args(store))
        .args(args)
        .output()
        .unwrap()
}

/// Stdout of a command that must succeed.
fn ok(store: &Store, args: &[&str]) -> String {
    let output = cqrs(store, args);
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Stderr of a command that must fail with exit code 1, in one line.
fn fails(store: &Store, args: &[&str]) -> String {
    let output = cqrs(store, args);
    assert_eq!(output.status.code(), Some(1), "{args:?}");
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("cqrs: error: "), "{stderr}");
    stderr
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

async fn every_subcommand(store: Store, app: Cqrs) {
    fill(&app).await;
    let head = app.last_position().await.unwrap();

    // streams
    let types = ok(&store, &["streams"]);
    let order_line = types
        .lines()
        .find(|line| line.starts_with("shop.order "))
        .unwrap();
    let counts: Vec<&str> = order_line.split_whitespace().collect();
    assert_eq!(counts[1..], ["3", "6"], "placed and confirmed: {types}");
    let orders = ok(&store, &["streams", "--type", "shop.order"]);
    for id in ["o-1", "o-2", "o-3"] {
        assert!(orders.lines().any(|line| line.starts_with(id)), "{orders}");
    }
    assert!(fails(&store, &["streams", "--type", "shop.nothing"]).contains("shop.nothing"));

    // stream
    let events = json_lines(&ok(&store, &["stream", "shop.order", "o-1", "--json"]));
    let names: Vec<&str> = events
        .iter()
        .map(|event| event["event_name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["shop.order.placed", "shop.order.confirmed"]);
    assert_eq!(events[0]["payload"]["customer"], "ann");
    assert_eq!(events[1]["sequence"], 2);
    let pretty = ok(&store, &["stream", "shop.order", "o-1"]);
    assert!(
        pretty.contains("\n  \"event_name\": \"shop.order.placed\""),
        "{pretty}"
    );
    assert!(fails(&store, &["stream", "shop.order", "o-9"]).contains("o-9"));

    // tail
    let last = ok(&store, &["tail", "--last", "2"]);
    assert_eq!(last.lines().count(), 2, "{last}");
    assert!(
        last.lines()
            .last()
            .unwrap()
            .trim_start()
            .starts_with(&head.to_string())
    );
    let all = json_lines(&ok(&store, &["tail", "--from", "1", "--json"]));
    assert_eq!(all.len() as u64, head);
    let mut follow = Command::new(env!("CARGO_BIN_EXE_cqrs"))
        .args(builder_args(&store))
        .args(["tail", "--follow", "--json", "--last", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(follow.stdout.take().unwrap()).lines();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let restocked = app
        .execute("teapot", Restock { quantity: 5 })
        .await
        .unwrap();
    let line = tokio::task::spawn_blocking(move || lines.next().unwrap().unwrap())
        .await
        .unwrap();
    follow.kill().unwrap();
    follow.wait().unwrap();
    let followed: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(followed["position"], restocked.last_position().unwrap());
    assert_eq!(followed["event_name"], "shop.stock.restocked");
    let head = restocked.last_position().unwrap();

    // processors
    let table = ok(&store, &["processors"]);
    let fragile: Vec<&str> = table
        .lines()
        .find(|line| line.starts_with("cli.fragile "))
        .unwrap()
        .split_whitespace()
        .collect();
    // name, position, lag, segments, parked, owners
    assert_eq!(fragile[2], "1", "the restock is not processed: {table}");
    assert_eq!(fragile[3..], ["1", "2", "-"], "{table}");
    let rows = json_lines(&ok(&store, &["processors", "--json"]));
    let summary = rows
        .iter()
        .find(|row| row["processor"] == "shop.order_summary")
        .unwrap();
    assert_eq!(summary["position"], head - 1);

    // parked, retry, skip
    let parked = json_lines(&ok(&store, &["parked", "cli.fragile", "--json"]));
    assert_eq!(parked.len(), 2);
    assert!(parked.iter().all(|event| event["state"] == "parked"));
    assert!(
        parked[0]["error"]
            .as_str()
            .unwrap()
            .contains("fragile orders break this projection")
    );
    let first = parked[0]["position"].as_u64().unwrap().to_string();
    let second = parked[1]["position"].as_u64().unwrap().to_string();
    let listed = ok(&store, &["parked", "cli.fragile"]);
    assert!(
        listed.contains("shop.order/o-2 shop.order.placed"),
        "{listed}"
    );
    ok(&store, &["retry", "cli.fragile", &first]);
    ok(&store, &["skip", "cli.fragile", &second]);
    let decided = json_lines(&ok(&store, &["parked", "cli.fragile", "--json"]));
    let states: Vec<&str> = decided
        .iter()
        .map(|event| event["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["retrying", "skipped"]);
    assert!(fails(&store, &["skip", "cli.fragile", "1"]).contains("no event parked"));
    assert!(fails(&store, &["parked", "cli.nothing"]).contains("cli.nothing"));

    // reset: a process manager moves; a projection is rebuilt instead.
    ok(&store, &["reset", "shop.checkout", "0"]);
    let rows = json_lines(&ok(&store, &["processors", "--json"]));
    let checkout = rows
        .iter()
        .find(|row| row["processor"] == "shop.checkout")
        .unwrap();
    assert_eq!(checkout["position"], 0);
    assert_eq!(checkout["lag"], head);
    assert!(fails(&store, &["reset", "shop.checkout", "999999"]).contains("past the log"));
    assert!(fails(&store, &["reset", "shop.order_summary", "0"]).contains("is a projection"));

    // rebuild: the plain tool cannot, an app's binary can.
    assert!(fails(&store, &["rebuild", "shop.order_summary"]).contains("main_with"));
    let mut line = vec!["cqrs".to_owned()];
    line.extend(builder_args(&store));
    line.extend(["rebuild".to_owned(), "shop.order_summary".to_owned()]);
    tokio::task::spawn_blocking(move || {
        let build = |builder: CqrsBuilder| Ok(shop_app(builder));
        cqrs_cli::run(cqrs_cli::Cli::parse_from(line), Some(&build))
    })
    .await
    .unwrap()
    .unwrap();
    let rows = json_lines(&ok(&store, &["processors", "--json"]));
    let summary = rows
        .iter()
        .find(|row| row["processor"] == "shop.order_summary")
        .unwrap();
    assert_eq!(summary["position"], head);
    let rebuilt = app
        .views()
        .get::<OrderSummary>("o-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rebuilt.status, "confirmed");

    // deadlines: an order nobody processed waits for its payment.
    app.execute("o-9", place("late")).await.unwrap();
    let table = ok(&store, &["deadlines"]);
    let row = table
        .lines()
        .find(|line| line.contains("shop.order/o-9"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(row.contains("shop.order.payment_due"), "{row}");
    assert!(row.contains("pending"), "{row}");
    let rows = json_lines(&ok(
        &store,
        &[
            "deadlines",
            "--owner",
            "shop.order",
            "--id",
            "o-9",
            "--json",
        ],
    ));
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["name"], "shop.order.payment_due");
    assert_eq!(rows[0]["attempts"], 0);
    let deadline_id = rows[0]["deadline_id"].as_str().unwrap().to_owned();
    let none = ok(
        &store,
        &[
            "deadlines",
            "--owner",
            "shop.order",
            "--due-before",
            "2000-01-01T00:00:00Z",
        ],
    );
    assert_eq!(none.lines().count(), 1, "the header only: {none}");
    assert!(fails(&store, &["deadlines", "--id", "o-9"]).contains("--owner"));
    let retried = ok(
        &store,
        &["retry-deadline", "shop.order", "o-9", &deadline_id],
    );
    assert!(retried.contains("fires again"), "{retried}");
    let cancelled = ok(
        &store,
        &[
            "cancel-deadline",
            "shop.order",
            "o-9",
            "shop.order.payment_due",
        ],
    );
    assert!(
        cancelled.starts_with("cancelled shop.order.payment_due of shop.order/o-9"),
        "{cancelled}"
    );
    let again = ok(
        &store,
        &[
            "cancel-deadline",
            "shop.order",
            "o-9",
            "shop.order.payment_due",
        ],
    );
    assert!(again.starts_with("nothing to cancel"), "{again}");
    assert!(
        json_lines(&ok(
            &store,
            &["deadlines", "--owner", "shop.order", "--json"]
        ))
        .iter()
        .all(|row| row["owner_id"] != "o-9")
    );
    assert!(
        fails(
            &store,
            &["retry-deadline", "shop.order", "o-9", &deadline_id]
        )
        .contains("is pending")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sqlite() {
    let path: PathBuf = std::env::temp_dir().join(format!("{}.sqlite", unique("cqrs-cli-")));
    let store = SqliteOptions::file(&path).open().await.unwrap();
    let args = vec!["--sqlite".to_owned(), path.to_string_lossy().into_owned()];
    every_subcommand(Store { args }, shop_app(Cqrs::builder(store))).await;
    let _ = std::fs::remove_file(&path);
    assert!(
        fails(
            &Store {
                args: vec!["--sqlite".into(), path.to_string_lossy().into_owned()]
            },
            &["streams"]
        )
        .contains("no such file")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres() {
    let Ok(url) = std::env::var("CQRS_POSTGRES_URL") else {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "CQRS_POSTGRES_URL is not set; CI needs the server (run the tests through scripts/with-postgres)"
        );
        eprintln!("skipped: CQRS_POSTGRES_URL is not set (scripts/with-postgres sets it)");
        return;
    };
    let prefix = unique("cli");
    let store = PostgresOptions::new(url.as_str())
        .prefix(TablePrefix::new(prefix.clone()).unwrap())
        .connect()
        .await
        .unwrap();
    let args = vec![
        "--postgres".to_owned(),
        url.clone(),
        "--prefix".to_owned(),
        prefix,
    ];
    every_subcommand(Store { args }, shop_app(Cqrs::builder(store))).await;
    let unreachable = Store {
        args: vec!["--postgres".into(), "postgres://127.0.0.1:1/none".into()],
    };
    fails(&unreachable, &["streams"]);
}

/// An app that keeps its read side in a file of its own: the tool finds
/// the processors there with `--views-sqlite`, and without it sees none of
/// their progress.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_side_apart_is_named_by_its_own_option() {
    let events: PathBuf = std::env::temp_dir().join(format!("{}.sqlite", unique("cqrs-cli-log-")));
    let read: PathBuf = std::env::temp_dir().join(format!("{}.sqlite", unique("cqrs-cli-read-")));
    let store = SqliteOptions::file(&events).open().await.unwrap();
    let views = SqliteOptions::file(&read).open_views().await.unwrap();
    let app = shop_app(Cqrs::builder(store).views(views));
    fill(&app).await;
    let head = app.last_position().await.unwrap();
    let position = |args: Vec<String>| {
        let rows = json_lines(&ok(&Store { args }, &["processors", "--json"]));
        rows.iter()
            .find(|row| row["processor"] == "shop.order_summary")
            .map(|row| row["position"].as_u64().unwrap())
    };
    let log = vec!["--sqlite".to_owned(), events.to_string_lossy().into_owned()];
    let apart = [
        log.clone(),
        vec![
            "--views-sqlite".to_owned(),
            read.to_string_lossy().into_owned(),
        ],
    ]
    .concat();
    assert_eq!(position(apart.clone()), Some(head));
    assert_ne!(position(log), Some(head));
    let missing = [
        &apart[..2],
        &[
            "--views-sqlite".to_owned(),
            "/nonexistent/read.sqlite".to_owned(),
        ],
    ]
    .concat();
    assert!(fails(&Store { args: missing }, &["processors"]).contains("no such file"));
    for path in [events, read] {
        let _ = std::fs::remove_file(path);
    }
}
