//! The child role: one node, an app that runs `Trail` (and with `--bonus`,
//! `Bonus`) over a shared store until asked to stop or killed. Every 100 ms
//! it prints `status <fenced> <owned>`: its batches fenced off so far and
//! the segments of `Trail` it owns; `done <fenced>` after a graceful stop.
//!
//! `--postgres URL | --sqlite PATH`, `--id NODE`, `--segments N`,
//! `--lease-ms N`, `--renewal-ms N`, `--deposit-us N` (the time `Trail`
//! takes per deposit), `--bonus`, `--tables` (`TrailTable` in place of
//! `Trail`, whose segments it then reports).

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Duration;

use cqrs_core::processor::Lease;
use cqrs_core::store::PostgresOptions;
use cqrs_core::{Cqrs, EventStore, SqliteStore};

use super::process::run_node;
use super::processors::{BONUS, Bonus, DEPOSIT_MICROS, TRAIL, TRAIL_TABLE, Trail, TrailTable};

#[derive(Debug, Default)]
struct Options {
    postgres: Option<String>,
    sqlite: Option<String>,
    id: String,
    segments: u32,
    lease_ms: u64,
    renewal_ms: u64,
    deposit_us: u64,
    bonus: bool,
    tables: bool,
}

impl Options {
    fn parse(args: &[String]) -> Result<Self, String> {
        let mut options = Options {
            segments: 16,
            lease_ms: 4000,
            renewal_ms: 1000,
            ..Options::default()
        };
        let mut args = args.iter();
        while let Some(flag) = args.next() {
            if flag == "--bonus" {
                options.bonus = true;
                continue;
            }
            if flag == "--tables" {
                options.tables = true;
                continue;
            }
            let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
            let number = || {
                value
                    .parse::<u64>()
                    .map_err(|_| format!("{flag} {value}: not a number"))
            };
            match flag.as_str() {
                "--postgres" => options.postgres = Some(value.clone()),
                "--sqlite" => options.sqlite = Some(value.clone()),
                "--id" => options.id = value.clone(),
                "--segments" => {
                    options.segments =
                        u32::try_from(number()?).map_err(|error| error.to_string())?
                }
                "--lease-ms" => options.lease_ms = number()?,
                "--renewal-ms" => options.renewal_ms = number()?,
                "--deposit-us" => options.deposit_us = number()?,
                _ => return Err(format!("unknown flag {flag}")),
            }
        }
        Ok(options)
    }
}

pub fn main(args: &[String]) -> ExitCode {
    let options = match Options::parse(args) {
        Ok(options) => options,
        Err(error) => {
            eprintln!("node: {error}");
            return ExitCode::from(2);
        }
    };
    DEPOSIT_MICROS.store(options.deposit_us, Ordering::Relaxed);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        if let Some(url) = &options.postgres {
            let store = PostgresOptions::new(url)
                .max_connections(8)
                .connect()
                .await
                .expect("the PostgreSQL store");
            run(store, &options).await;
        } else if let Some(path) = &options.sqlite {
            let store = SqliteStore::open(path).await.expect("the SQLite store");
            run(store, &options).await;
        }
    });
    ExitCode::SUCCESS
}

async fn run(store: impl EventStore, options: &Options) {
    let builder = Cqrs::builder(store)
        .without_event_handlers()
        .without_processors();
    let (mut builder, reported) = if options.tables {
        (builder.table_projection::<TrailTable>(), TRAIL_TABLE)
    } else {
        (builder.projection::<Trail>(), TRAIL)
    };
    builder = builder
        .segments(reported, options.segments)
        .node_id(&options.id)
        .lease(Lease::new(
            Duration::from_millis(options.lease_ms),
            Duration::from_millis(options.renewal_ms),
        ))
        .poll_interval(Duration::from_millis(100));
    if options.bonus {
        builder = builder
            .process_manager(Bonus)
            .segments(BONUS, options.segments);
    }
    let app = builder.build().expect("the app builds");
    run_node(&app, reported).await;
}
