//! Deadlines fired by nodes that are OS processes, bounded in time.
//!
//! `postgres_deadlines_nodes_killed`: 20,000 holds due uniformly over 20 s
//! (`CQRS_DEADLINES_SCALE`, default 1, multiplies them), one in ten
//! cancelled (half at once, half within 50 ms of their due time, racing
//! the fire). Two nodes (this binary, `child` role: an app whose
//! processors run `cqrs.deadlines` over 8 segments) fire them; a third
//! joins 5 s after the first is due, and a node is SIGKILLed after 8 s
//! and 14 s and a new one started each time. Afterwards every hold not cancelled was released
//! exactly once, none before its time, none whose cancel was answered
//! `cancelled`, and no deadline is left pending; the firing lag (due to
//! recorded) is printed as p50/p99/max.
//!
//! The scenario uses a database of its own on the server at
//! `CQRS_POSTGRES_URL`, dropped afterwards; without it the scenario is
//! skipped, and with `CI=true` it fails. Children are ended by their own
//! pids only.

#[path = "../support/process.rs"]
#[allow(dead_code, reason = "the process suites' runner; each uses part of it")]
mod process;

#[path = "../support/database.rs"]
mod database;

#[path = "../scale_out/cluster.rs"]
#[allow(
    dead_code,
    reason = "the scale-out suite's nodes; this suite uses part of it"
)]
mod cluster;

mod hold;
mod node;
mod scenario;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("child") {
        return node::main(&args[1..]);
    }
    process::run_suite("deadlines", &args, scenario::run)
}
