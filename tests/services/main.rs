//! The two services of `examples/services/` as OS processes over a broker
//! this suite starts itself, bounded in time:
//!
//! - `rabbitmq_chaos`: 10,000 orders through `orders` and `shipping` over a
//!   RabbitMQ of the suite's own; `orders` is SIGKILLed 3 times and started
//!   again, and RabbitMQ is stopped and started once. At the end every order
//!   was shipped once (10,000 shipments, none twice) and `orders` marked
//!   every one shipped once; the deliveries on the wire are printed beside
//!   the distinct event ids.
//! - `nats_chaos`: the same over a NATS server of its own, restarted once.
//!
//! `CQRS_SERVICES_ORDERS` sets the count (10,000 by default, the issue's).
//! Without the broker's program a scenario is skipped, and with `CI=true`
//! it fails. Children and brokers are ended by their own pids only.

#[path = "../support/process.rs"]
#[allow(dead_code, reason = "the process suites' runner; each uses part of it")]
mod process;

mod brokers;
mod child;
mod scenarios;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("child") {
        return child::main(&args[1..]);
    }
    process::run_suite("services", &args, scenarios::run)
}
