//! The child role: one node, an app that hosts `Hold` and runs its
//! processors (so `cqrs.deadlines`) over a shared PostgreSQL store until
//! asked to stop or killed. Every 100 ms it prints `status <fenced>
//! <owned>`: the runner's batches fenced off so far and the segments it
//! owns; `done <fenced>` after a graceful stop.
//!
//! `--postgres URL`, `--id NODE`, `--segments N`, `--lease-ms N`,
//! `--renewal-ms N`.

use std::process::ExitCode;
use std::time::Duration;

use cqrs_core::Cqrs;
use cqrs_core::processor::Lease;
use cqrs_core::store::PostgresOptions;

use super::process::run_node;

/// The processor that fires deadlines.
pub const RUNNER: &str = "cqrs.deadlines";

struct Options {
    postgres: String,
    id: String,
    segments: u32,
    lease: Duration,
    renewal: Duration,
}

impl Options {
    fn parse(args: &[String]) -> Result<Self, String> {
        let mut options = Options {
            postgres: String::new(),
            id: String::new(),
            segments: 8,
            lease: Duration::from_secs(4),
            renewal: Duration::from_secs(1),
        };
        let mut args = args.iter();
        while let Some(flag) = args.next() {
            let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
            let number = || {
                value
                    .parse::<u64>()
                    .map_err(|_| format!("{flag} {value}: not a number"))
            };
            match flag.as_str() {
                "--postgres" => options.postgres = value.clone(),
                "--id" => options.id = value.clone(),
                "--segments" => {
                    options.segments = u32::try_from(number()?).map_err(|e| e.to_string())?
                }
                "--lease-ms" => options.lease = Duration::from_millis(number()?),
                "--renewal-ms" => options.renewal = Duration::from_millis(number()?),
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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(run(&options));
    ExitCode::SUCCESS
}

async fn run(options: &Options) {
    let store = PostgresOptions::new(&options.postgres)
        .max_connections(8)
        .connect()
        .await
        .expect("the PostgreSQL store");
    let app = Cqrs::builder(store)
        .without_event_handlers()
        // No registered processor: only the deadlines' runner.
        .processors(|_| false)
        .segments(RUNNER, options.segments)
        .node_id(&options.id)
        .lease(Lease::new(options.lease, options.renewal))
        .poll_interval(Duration::from_millis(100))
        .build()
        .expect("the app builds");
    run_node(&app, RUNNER).await;
}
