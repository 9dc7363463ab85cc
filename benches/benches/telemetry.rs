//! What tracing and metrics cost `execute`, at the in-memory rate: the same
//! deposits with nothing installed, with a Prometheus recorder, and with
//! the recorder and spans at INFO exported through OpenTelemetry, every
//! trace or one in ten sampled, in one process, the four alternating run
//! by run.
//!
//! ```text
//! cargo bench -p cqrs-benches --bench telemetry
//! ```
//!
//! The recorder and the subscriber are installed for the thread of a
//! current-thread runtime only (`metrics::with_local_recorder`,
//! `tracing::subscriber::with_default`), so runs with and without them
//! alternate in one process. The exporter drops what it is given: the
//! figure is what the app pays, not what a collector does. Between runs,
//! untimed, the recorder's histograms are drained as the installed
//! exporter's upkeep drains them every 5 s. Results go to
//! stderr and `target/bench-results/telemetry.tsv`. Without `--bench` (as
//! `cargo test` runs it) it runs once on tiny data: a smoke test.

use std::io::Write;
use std::time::Instant;

use cqrs_core::{Cqrs, MemoryStore};
use cqrs_examples::bank::{DepositMoney, OpenAccount};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider, SpanData, SpanExporter};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;

/// An exporter that drops the spans it is given.
#[derive(Debug)]
struct Discard;

impl SpanExporter for Discard {
    fn export(&self, _: Vec<SpanData>) -> impl Future<Output = OTelSdkResult> + Send {
        std::future::ready(Ok(()))
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Telemetry {
    Off,
    Metrics,
    MetricsAndTraces,
    MetricsAndSampledTraces,
}

impl Telemetry {
    fn name(self) -> &'static str {
        match self {
            Self::Off => "nothing installed",
            Self::Metrics => "Prometheus recorder",
            Self::MetricsAndTraces => "Prometheus recorder + spans at INFO to OpenTelemetry",
            Self::MetricsAndSampledTraces => {
                "Prometheus recorder + spans at INFO to OpenTelemetry, 10% sampled"
            }
        }
    }
}

/// Commands per second of `commands` deposits round-robin over `accounts`.
fn run(runtime: &tokio::runtime::Runtime, app: &Cqrs, accounts: &[String], commands: usize) -> f64 {
    runtime.block_on(async {
        let started = Instant::now();
        for n in 0..commands {
            app.execute(&accounts[n % accounts.len()], DepositMoney { amount: 1 })
                .await
                .expect("a deposit");
        }
        commands as f64 / started.elapsed().as_secs_f64()
    })
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let full = std::env::args().any(|arg| arg == "--bench");
    let (runs, accounts, events, commands) = if full {
        (7, 10_000, 10, 20_000)
    } else {
        (1, 10, 3, 20)
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let recorder: PrometheusRecorder = PrometheusBuilder::new().build_recorder();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(Discard)
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(LevelFilter::INFO)
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("bench")));
    let subscriber = std::sync::Arc::new(subscriber);
    // One trace in ten: how production services run OpenTelemetry.
    let sampled_provider = SdkTracerProvider::builder()
        .with_sampler(Sampler::TraceIdRatioBased(0.1))
        .with_simple_exporter(Discard)
        .build();
    let sampled = tracing_subscriber::registry()
        .with(LevelFilter::INFO)
        .with(tracing_opentelemetry::layer().with_tracer(sampled_provider.tracer("bench")));
    let sampled = std::sync::Arc::new(sampled);

    let modes = [
        Telemetry::Off,
        Telemetry::Metrics,
        Telemetry::MetricsAndTraces,
        Telemetry::MetricsAndSampledTraces,
    ];
    // One app per mode, kept to the end, preloaded account by account in
    // turn so that their states interleave in memory: an app preloaded
    // whole before the others ran 8% faster than an identical one after
    // them (two with nothing installed, measured side by side). An app
    // registers its metric handles with the recorder of its first command,
    // so the apps with a recorder are preloaded under it.
    let ids: Vec<String> = (0..accounts).map(|n| format!("acc-{n}")).collect();
    let apps: Vec<Cqrs> = modes
        .iter()
        .map(|_| {
            Cqrs::builder(MemoryStore::new())
                .without_event_handlers()
                .without_processors()
                .build()
                .expect("an app")
        })
        .collect();
    for id in &ids {
        for (app, mode) in apps.iter().zip(&modes) {
            let preload = || {
                runtime.block_on(async {
                    app.execute(id, OpenAccount { owner: id.clone() })
                        .await
                        .expect("opened");
                    for _ in 1..events {
                        app.execute(id, DepositMoney { amount: 1 })
                            .await
                            .expect("deposited");
                    }
                })
            };
            if *mode == Telemetry::Off {
                preload();
            } else {
                metrics::with_local_recorder(&recorder, preload);
            }
        }
    }

    // Each round runs the modes in another order, so none always runs
    // first after the others.
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
    for round in 0..runs {
        for turn in 0..modes.len() {
            let at = (turn + round) % modes.len();
            let (app, mode) = (&apps[at], modes[at]);
            let rate = match mode {
                Telemetry::Off => run(&runtime, app, &ids, commands),
                Telemetry::Metrics => {
                    metrics::with_local_recorder(&recorder, || run(&runtime, app, &ids, commands))
                }
                Telemetry::MetricsAndTraces => metrics::with_local_recorder(&recorder, || {
                    tracing::subscriber::with_default(subscriber.clone(), || {
                        run(&runtime, app, &ids, commands)
                    })
                }),
                Telemetry::MetricsAndSampledTraces => {
                    metrics::with_local_recorder(&recorder, || {
                        tracing::subscriber::with_default(sampled.clone(), || {
                            run(&runtime, app, &ids, commands)
                        })
                    })
                }
            };
            rates[at].push(rate);
            // What the exporter's upkeep does every 5 s once installed:
            // drain the histograms' samples into their distributions.
            recorder.handle().run_upkeep();
        }
    }
    // Something was recorded, or the comparison means nothing.
    let rendered = recorder.handle().render();
    assert!(
        rendered.contains("cqrs_commands_total"),
        "the recorder saw no command"
    );

    let mut lines = Vec::new();
    let off = &rates[0];
    for (at, mode) in modes.iter().enumerate() {
        let ratios: Vec<f64> = rates[at]
            .iter()
            .zip(off)
            .map(|(on, off)| on / off)
            .collect();
        let all: Vec<String> = rates[at].iter().map(|rate| format!("{rate:.0}")).collect();
        let line = format!(
            "execute, memory, {accounts} accounts x {events} events, {commands} deposits\t{}\t{:.0}\tcmd/s\t{}\tratio to nothing installed {:.3}",
            mode.name(),
            median(rates[at].clone()),
            all.join(","),
            median(ratios),
        );
        eprintln!("{line}");
        lines.push(line);
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-results");
    std::fs::create_dir_all(&dir).expect("the results directory");
    let mut file = std::fs::File::create(dir.join("telemetry.tsv")).expect("the results file");
    for line in lines {
        writeln!(file, "{line}").expect("written");
    }
    let _ = provider.shutdown();
    let _ = sampled_provider.shutdown();
}
