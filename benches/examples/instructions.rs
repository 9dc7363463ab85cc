//! Runs the generated or the hand-written account's `handle` or `apply` a
//! given number of times, for instruction counts of the macros' cost, or
//! a given number of deposits through this framework's `execute` on a
//! `MemoryStore` (`ours`; `ours-recorder` with a Prometheus recorder
//! installed; `ours-otel10` with spans at INFO to OpenTelemetry, one trace
//! in ten sampled) or through cqrs-es on its `MemStore` (10,000 accounts of
//! 10 events each, preloaded), for the in-memory command path's:
//!
//! ```text
//! cargo build --release -p cqrs-benches --example instructions
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/examples/instructions decide generated 100000
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/examples/instructions execute ours 100000
//! ```
//!
//! The difference between the totals of 200,000 and 100,000 iterations,
//! divided by 100,000, is the cost of one iteration without the program's
//! fixed start-up. `scripts/bench` does this for every pair.

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use std::sync::Arc;

use cqrs_benches::hand::{HandAccount, HandCommand, HandEvent};
use cqrs_benches::peer::{BankAccount, BankCommand, preload_mem_store};
use cqrs_core::{Aggregate, CommandContext, Cqrs, MemoryStore, Metadata};
use cqrs_es::CqrsFramework;
use cqrs_es::mem_store::MemStore;
use cqrs_examples::bank::{
    Account, AccountCommand, AccountEvent, DepositMoney, MoneyDeposited, MoneyWithdrawn,
    OpenAccount,
};

/// Polls a future that never waits, once.
fn ready<F: Future>(future: F) -> F::Output {
    let mut context = Context::from_waker(Waker::noop());
    match pin!(future).poll(&mut context) {
        Poll::Ready(output) => output,
        Poll::Pending => unreachable!("the handlers decided here never wait"),
    }
}

/// Decides `count` deposits; the events go through `black_box`, so the
/// optimizer cannot drop their allocation on one side only.
fn decide<A: Aggregate<Services = ()>>(
    aggregate: &A,
    count: u64,
    command: impl Fn(u64) -> A::Command,
) -> usize {
    let metadata = Metadata::default();
    let context = CommandContext {
        aggregate_id: "acc-1",
        version: 7,
        metadata: &metadata,
        clock: &cqrs_core::SystemClock,
    };
    let mut events = 0;
    for amount in 0..count {
        let command = command(black_box(amount));
        events += ready(black_box(aggregate).handle(command, &context, &()))
            .map_or(0, |decided| black_box(decided).events.len());
    }
    events
}

/// Applies `count` events, alternately deposits and withdrawals.
fn apply<A: Aggregate + Default>(count: u64, event: impl Fn(u64) -> A::Event) -> A {
    let mut aggregate = A::default();
    for n in 0..count {
        aggregate.apply(black_box(&event(n)));
    }
    aggregate
}

/// The accounts `execute` deposits to, and the events each starts with.
const ACCOUNTS: u64 = 10_000;
const EVENTS: u64 = 10;

/// `count` deposits through this framework, round-robin over the accounts,
/// after they were opened and loaded into the app's cache.
async fn execute_ours(count: u64) -> usize {
    let app = Cqrs::builder(MemoryStore::new())
        .without_event_handlers()
        .without_processors()
        .build()
        .expect("app");
    for account in 0..ACCOUNTS {
        let id = format!("account-{account}");
        let owner = "bench".to_owned();
        app.execute(&id, OpenAccount { owner }).await.expect("open");
        for _ in 1..EVENTS {
            app.execute(&id, DepositMoney { amount: 1 })
                .await
                .expect("deposit");
        }
    }
    let ids: Vec<String> = (0..ACCOUNTS).map(|n| format!("account-{n}")).collect();
    let mut done = 0;
    for n in 0..count {
        let id = &ids[(n % ACCOUNTS) as usize];
        let deposited = app
            .execute(
                id,
                DepositMoney {
                    amount: black_box(1),
                },
            )
            .await;
        done += deposited.map_or(0, |done| done.events.len());
    }
    done
}

/// `count` deposits through cqrs-es on its `MemStore`, as `execute_ours`.
async fn execute_mem_store(count: u64) -> usize {
    let store = MemStore::<BankAccount>::default();
    let ids: Vec<String> = (0..ACCOUNTS).map(|n| format!("account-{n}")).collect();
    preload_mem_store(&store, &ids, EVENTS as usize);
    let framework = Arc::new(CqrsFramework::new(store, vec![], ()));
    let mut done = 0;
    for n in 0..count {
        let id = &ids[(n % ACCOUNTS) as usize];
        let command = BankCommand::Deposit {
            amount: black_box(1),
        };
        done += usize::from(framework.execute(id, command).await.is_ok());
    }
    done
}

fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
        .block_on(future)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (what, which) = (args.next(), args.next());
    let count: u64 = args.next().and_then(|n| n.parse().ok()).unwrap_or(100_000);
    let deposit = |amount| DepositMoney { amount };
    let deposited = |n: u64| MoneyDeposited {
        amount: 1,
        balance: n,
    };
    let withdrawn = |n: u64| MoneyWithdrawn {
        amount: 1,
        balance: n,
    };
    let done = match (what.as_deref(), which.as_deref()) {
        (Some("decide"), Some("generated")) => decide(
            &Account {
                owner: String::new(),
                balance: 10,
            },
            count,
            |n| AccountCommand::Deposit(deposit(n)),
        ),
        (Some("decide"), Some("hand")) => decide(
            &HandAccount {
                owner: String::new(),
                balance: 10,
            },
            count,
            |n| HandCommand::Deposit(deposit(n)),
        ),
        (Some("apply"), Some("generated")) => {
            apply::<Account>(count, |n| match n % 2 {
                0 => AccountEvent::Deposited(deposited(n)),
                _ => AccountEvent::Withdrawn(withdrawn(n)),
            })
            .balance as usize
        }
        (Some("apply"), Some("hand")) => {
            apply::<HandAccount>(count, |n| match n % 2 {
                0 => HandEvent::Deposited(deposited(n)),
                _ => HandEvent::Withdrawn(withdrawn(n)),
            })
            .balance as usize
        }
        (Some("execute"), Some("ours")) => block_on(execute_ours(count)),
        (Some("execute"), Some("ours-recorder")) => {
            let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
            metrics::with_local_recorder(&recorder, || block_on(execute_ours(count)))
        }
        (Some("execute"), Some("ours-otel10")) => {
            use opentelemetry::trace::TracerProvider as _;
            use tracing_subscriber::layer::SubscriberExt as _;
            let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
                .with_sampler(opentelemetry_sdk::trace::Sampler::TraceIdRatioBased(0.1))
                .build();
            let subscriber = tracing_subscriber::registry()
                .with(tracing_subscriber::filter::LevelFilter::INFO)
                .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("bench")));
            tracing::subscriber::with_default(subscriber, || block_on(execute_ours(count)))
        }
        (Some("execute"), Some("mem-store")) => block_on(execute_mem_store(count)),
        _ => {
            eprintln!(
                "usage: instructions <decide|apply> <generated|hand> [count]\n       \
                 instructions execute <ours|ours-recorder|ours-otel10|mem-store> [count]"
            );
            std::process::exit(2);
        }
    };
    println!("{done}");
}
