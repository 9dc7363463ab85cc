//! The child role: an app that writes and projects until killed or its time
//! is up, printing the outcome of every command on its own line, so what it
//! was told survives a SIGKILL in the parent's pipe.
//!
//! `ack <role> <command id>`: the command's events are recorded.
//! `definite <role> <command id> <error>`: an error that says nothing was recorded.
//! `unknown <role> <command id> <error>`: the store cannot say.
//! `cancelled <role> <command id>`: the caller gave up waiting.
//! `probe <aggregate id> <error kind>`: a command on a hand-corrupted stream.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cqrs_core::prelude::*;
use cqrs_core::store::{PostgresOptions, SqliteOptions, TablePrefix};
use cqrs_core::{SqliteStore, StoreError, Uuid};

use super::ledger::LEDGER;
use super::options::Options;
use super::process::stop_requested;
use super::totals::TOTALS;
use cqrs_examples::bank::{DepositMoney, OpenAccount};

pub fn main(args: &[String]) -> ExitCode {
    let options = match Options::parse(args) {
        Ok(options) => options,
        Err(error) => {
            eprintln!("child: {error}");
            return ExitCode::from(2);
        }
    };
    runtime().block_on(async move {
        if let Some(path) = &options.sqlite {
            let store = SqliteStore::open(path)
                .await
                .expect("the SQLite store opens");
            let views = read_side(&options).await.unwrap_or_else(|| store.views());
            write(store, views, &options).await;
        } else if let Some(url) = &options.postgres {
            let prefix = TablePrefix::new(options.prefix.clone()).expect("a prefix");
            let connect = PostgresOptions::new(url)
                .prefix(prefix)
                .max_connections(12)
                .acquire_timeout(Duration::from_secs(2));
            // The server may be down while the child starts: keep trying.
            let store = loop {
                match connect.clone().connect().await {
                    Ok(store) => break store,
                    Err(error) => {
                        eprintln!("connecting: {error}");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            };
            let views = read_side(&options).await.unwrap_or_else(|| store.views());
            write(store, views, &options).await;
        }
    });
    ExitCode::SUCCESS
}

/// The read side in a database of its own, if the options name one.
async fn read_side(options: &Options) -> Option<ViewStore> {
    if let Some(path) = &options.read_sqlite {
        let views = SqliteOptions::file(path).open_views().await;
        return Some(views.expect("the read side's SQLite file opens"));
    }
    let url = options.read_postgres.as_ref()?;
    let prefix = TablePrefix::new(options.prefix.clone()).expect("a prefix");
    loop {
        let connect = PostgresOptions::new(url)
            .prefix(prefix.clone())
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(2));
        match connect.connect_views().await {
            Ok(views) => return Some(views),
            Err(error) => {
                eprintln!("connecting the read side: {error}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

async fn write<S: EventStore + Clone>(store: S, views: ViewStore, options: &Options) {
    let app = Cqrs::builder(store)
        .without_event_handlers()
        .views(views.clone())
        .processors({
            let tables = options.read_elsewhere();
            move |registration| {
                registration.name == TOTALS || (tables && registration.name == LEDGER)
            }
        })
        .poll_interval(Duration::from_millis(50))
        .build()
        .expect("the app builds");
    let processors = tokio::spawn(app.processors().run());
    let until = Instant::now() + Duration::from_secs_f64(options.seconds);
    let stop = stop_requested();
    println!("ready");
    let mut tasks = Vec::new();
    for task in 0..options.tasks {
        tasks.push(tokio::spawn(commands(
            app.clone(),
            format!("p{task}"),
            None,
            until,
            stop.clone(),
        )));
    }
    for task in 0..options.impatient {
        let deadline = Duration::from_micros(options.deadline_us);
        tasks.push(tokio::spawn(commands(
            app.clone(),
            format!("i{task}"),
            Some(deadline),
            until,
            stop.clone(),
        )));
    }
    if !options.probes.is_empty() {
        tasks.push(tokio::spawn(probes(
            app.clone(),
            options.probes.clone(),
            until,
            stop.clone(),
        )));
    }
    for task in tasks {
        let _ = task.await;
    }
    if options.drain {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let last = app.last_position().await;
            let mut checkpoint = views.checkpoint(TOTALS).await;
            if options.read_elsewhere()
                && let (Ok(totals), Ok(ledger)) = (&checkpoint, views.checkpoint(LEDGER).await)
            {
                checkpoint = Ok((*totals).min(ledger));
            }
            match (last, checkpoint) {
                (Ok(last), Ok(checkpoint)) if checkpoint >= last => break,
                _ if Instant::now() > deadline => {
                    eprintln!("the projection did not catch up");
                    break;
                }
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
    app.processors().shutdown().await;
    let _ = processors.await;
    println!("done");
}

/// One writer: deposits to its eight accounts in turn, opening each first.
async fn commands(
    app: Cqrs,
    role: String,
    deadline: Option<Duration>,
    until: Instant,
    stop: Arc<AtomicBool>,
) {
    // After a restart the child does not know which accounts exist: a
    // deposit to a missing one opens it next time, and an open of an
    // existing one deposits next time.
    let mut opened = [true; 8];
    let mut turn: u64 = 0;
    while Instant::now() < until && !stop.load(Ordering::SeqCst) {
        turn += 1;
        let account = (turn % 8) as usize;
        let id = format!("{role}-{account}");
        let command_id = Uuid::now_v7();
        let metadata = Metadata {
            command_id: Some(command_id),
            ..Metadata::default()
        };
        let opening = !opened[account];
        let outcome = if !opening {
            let deposit = app.execute_with(&id, DepositMoney { amount: 1 }, metadata);
            match deadline {
                Some(deadline) => tokio::time::timeout(jitter(deadline, turn), deposit)
                    .await
                    .ok(),
                None => Some(deposit.await),
            }
        } else {
            Some(
                app.execute_with(
                    &id,
                    OpenAccount {
                        owner: role.clone(),
                    },
                    metadata,
                )
                .await,
            )
        };
        let line = match outcome {
            None => format!("cancelled {role} {command_id}"),
            Some(Ok(done)) if !done.events.is_empty() => {
                opened[account] |= opening;
                format!("ack {role} {command_id}")
            }
            Some(Ok(_)) => format!("definite {role} {command_id} nothing decided"),
            Some(Err(CommandError::NotFound { .. })) => {
                opened[account] = false;
                format!("definite {role} {command_id} not found")
            }
            Some(Err(CommandError::AlreadyExists { .. })) => {
                opened[account] = true;
                format!("definite {role} {command_id} already exists")
            }
            Some(Err(CommandError::Store(error @ StoreError::OutcomeUnknown { .. }))) => {
                format!("unknown {role} {command_id} {}", one_line(&error))
            }
            Some(Err(error)) => {
                // An outage: do not spin.
                tokio::time::sleep(Duration::from_millis(20)).await;
                format!("definite {role} {command_id} {}", one_line(&error))
            }
        };
        println!("{line}");
    }
}

/// A deadline between a tenth of `deadline` and all of it.
fn jitter(deadline: Duration, turn: u64) -> Duration {
    let tenth = deadline / 10;
    tenth + (deadline - tenth) * ((turn * 7919 % 100) as u32) / 100
}

/// Commands on streams the parent corrupted by hand, once a second: each
/// must be a typed error and record nothing.
async fn probes(app: Cqrs, probes: Vec<String>, until: Instant, stop: Arc<AtomicBool>) {
    while Instant::now() < until && !stop.load(Ordering::SeqCst) {
        for id in &probes {
            let kind = match app.execute(id, DepositMoney { amount: 1 }).await {
                Ok(_) => "recorded".to_owned(),
                Err(CommandError::Store(StoreError::Corrupt { .. })) => "corrupt".to_owned(),
                Err(CommandError::NotFound { .. }) => "not-found".to_owned(),
                Err(other) => format!("other:{}", one_line(&other)),
            };
            println!("probe {id} {kind}");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The child's runtime: two workers, like the machines it is tested on.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
}

fn one_line(error: &impl std::fmt::Display) -> String {
    error.to_string().replace('\n', " ")
}

/// `child large --mode append|project --megabytes M --count N`: executes N
/// commands whose event carries M MB, or projects the log, and prints the
/// process's peak resident memory beside what it was before.
pub fn large(args: &[String]) -> ExitCode {
    let mut mode = String::new();
    let mut megabytes = 0usize;
    let mut count = 1usize;
    let mut rest = Vec::new();
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        let value = args.next().cloned().unwrap_or_default();
        match flag.as_str() {
            "--mode" => mode = value,
            "--megabytes" => megabytes = value.parse().unwrap_or(1),
            "--count" => count = value.parse().unwrap_or(1),
            _ => rest.extend([flag.clone(), value]),
        }
    }
    let Ok(options) = Options::parse(&rest) else {
        return ExitCode::from(2);
    };
    runtime().block_on(async move {
        if let Some(path) = &options.sqlite {
            let store = SqliteStore::open(path).await.expect("the store");
            let views = store.views();
            large_run(store, views, &mode, megabytes, count).await;
        } else if let Some(url) = &options.postgres {
            // sqlx keeps a read buffer per connection as large as the
            // largest row it read: two connections, so the figure is the
            // store's own and not 16 such buffers.
            let prefix = TablePrefix::new(options.prefix.clone()).expect("a prefix");
            let store = PostgresOptions::new(url)
                .prefix(prefix)
                .max_connections(2)
                .connect()
                .await
                .expect("the store");
            let views = store.views();
            large_run(store, views, &mode, megabytes, count).await;
        }
    });
    ExitCode::SUCCESS
}

async fn large_run<S: EventStore>(
    store: S,
    views: ViewStore,
    mode: &str,
    megabytes: usize,
    count: usize,
) {
    let app = Cqrs::builder(store)
        .without_event_handlers()
        .views(views)
        .processors(|registration| registration.name == TOTALS)
        .build()
        .expect("the app builds");
    let before = memory("VmRSS");
    if mode == "append" {
        for n in 0..count {
            // The command's own text is the caller's memory, counted as 1x.
            let owner = "m".repeat(megabytes << 20);
            app.execute(
                &format!("large-{n}-{}", Uuid::now_v7()),
                OpenAccount { owner },
            )
            .await
            .expect("a large command");
        }
    } else {
        app.processors()
            .catch_up()
            .await
            .expect("the projection catches up");
    }
    println!("memory {before} {}", memory("VmHWM"));
}

/// A figure of `/proc/self/status`, in bytes (0 where there is none).
fn memory(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|line| line.starts_with(field))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(0, |kilobytes| kilobytes * 1024)
}
