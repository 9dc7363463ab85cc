//! What the macros cost: the generated command routing and event application
//! beside the same aggregate written by hand with a `match` (`src/hand.rs`).
//! Instruction counts of the same comparison (steadier than time on a shared
//! machine) are in BENCHMARKS.md, from `valgrind --tool=callgrind` on
//! `examples/instructions.rs`.
//!
//! ```text
//! cargo bench -p cqrs-benches --bench macros
//! ```

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use cqrs_benches::hand::{HandAccount, HandCommand, HandEvent};
use cqrs_core::{Aggregate, CommandContext, Metadata};
use cqrs_examples::bank::{Account, AccountCommand, AccountEvent, DepositMoney, MoneyDeposited};

use criterion::{Criterion, criterion_group, criterion_main};

/// Polls a future that never waits, once.
fn ready<F: Future>(future: F) -> F::Output {
    let mut context = Context::from_waker(Waker::noop());
    match pin!(future).poll(&mut context) {
        Poll::Ready(output) => output,
        Poll::Pending => unreachable!("the handlers measured here never wait"),
    }
}

fn handle<A: Aggregate<Services = ()>>(aggregate: &A, command: A::Command) -> usize {
    let metadata = Metadata::default();
    let context = CommandContext {
        aggregate_id: "acc-1",
        version: 7,
        metadata: &metadata,
        clock: &cqrs_core::SystemClock,
    };
    // The events go through `black_box`, or the optimizer may drop the
    // allocation on one side only and measure that instead.
    ready(aggregate.handle(command, &context, &()))
        .map_or(0, |decision| black_box(decision).events.len())
}

fn macros(c: &mut Criterion) {
    let mut group = c.benchmark_group("decide");
    let generated = Account {
        owner: String::new(),
        balance: 10,
    };
    let hand = HandAccount {
        owner: String::new(),
        balance: 10,
    };
    group.bench_function("generated", |b| {
        b.iter(|| {
            handle(
                black_box(&generated),
                AccountCommand::Deposit(DepositMoney {
                    amount: black_box(5),
                }),
            )
        })
    });
    group.bench_function("hand-written", |b| {
        b.iter(|| {
            handle(
                black_box(&hand),
                HandCommand::Deposit(DepositMoney {
                    amount: black_box(5),
                }),
            )
        })
    });
    group.finish();

    let mut group = c.benchmark_group("apply 1000 events");
    let generated_events: Vec<AccountEvent> = (1..=1_000)
        .map(|n| {
            AccountEvent::Deposited(MoneyDeposited {
                amount: 1,
                balance: n,
            })
        })
        .collect();
    let hand_events: Vec<HandEvent> = (1..=1_000)
        .map(|n| {
            HandEvent::Deposited(MoneyDeposited {
                amount: 1,
                balance: n,
            })
        })
        .collect();
    group.bench_function("generated", |b| {
        b.iter(|| {
            let mut account = Account::default();
            for event in black_box(&generated_events) {
                account.apply(event);
            }
            account.balance
        })
    });
    group.bench_function("hand-written", |b| {
        b.iter(|| {
            let mut account = HandAccount::default();
            for event in black_box(&hand_events) {
                account.apply(event);
            }
            account.balance
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = macros
}
criterion_main!(benches);
