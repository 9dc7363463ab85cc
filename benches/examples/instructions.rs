//! Runs the generated or the hand-written account's `handle` or `apply` a
//! given number of times, for instruction counts of the macros' cost:
//!
//! ```text
//! cargo build --release -p cqrs-benches --example instructions
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/examples/instructions decide generated 100000
//! ```
//!
//! The difference between the totals of 200,000 and 100,000 iterations,
//! divided by 100,000, is the cost of one iteration without the program's
//! fixed start-up. `scripts/bench` does this for every pair.

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use cqrs_benches::hand::{HandAccount, HandCommand, HandEvent};
use cqrs_core::{Aggregate, CommandContext, Metadata};
use cqrs_examples::bank::{
    Account, AccountCommand, AccountEvent, DepositMoney, MoneyDeposited, MoneyWithdrawn,
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
    };
    let mut events = 0;
    for amount in 0..count {
        let command = command(black_box(amount));
        events += ready(black_box(aggregate).handle(command, &context, &()))
            .map_or(0, |decided| black_box(decided).len());
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
        _ => {
            eprintln!("usage: instructions <decide|apply> <generated|hand> [count]");
            std::process::exit(2);
        }
    };
    println!("{done}");
}
