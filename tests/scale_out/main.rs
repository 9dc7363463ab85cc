//! The read side shared by nodes that are OS processes, bounded in time.
//!
//! Each scenario starts nodes (this binary, `child` role: an app running a
//! 16-segment projection, and a process manager where the scenario says)
//! over one store, and checks what the issue promises:
//!
//! - `postgres_nodes_killed`: 4 nodes while the suite commits 100,000 events
//!   over 1,000 streams; one node SIGKILLed about every 5 s, 5 times, and
//!   started again. Afterwards the views equal a rebuild from the log, every
//!   event was applied once (0 lost, 0 twice) and every account got one
//!   bonus; each time the dead node's segments were owned again within the
//!   lease plus 2 s (the measured times are printed).
//! - `postgres_table_nodes_killed`: the same for a 16-segment table
//!   projection on 2 nodes, one SIGKILLed twice: every account's row equals
//!   its stream's fold and every event has one row; then its version 2
//!   builds new tables beside it while reads of the serving table run the
//!   whole time, none failing or partial, and version 1's tables are
//!   dropped after the switch.
//! - `postgres_owner_paused`: an owner SIGSTOPped past its lease, another
//!   node takes its segments, SIGCONT: its late batch is fenced off and
//!   nothing is applied twice.
//! - `postgres_balance`, `sqlite_balance`: 4 nodes own 4 segments each
//!   within two lease periods, then 3 or 4 each once a fifth joins, and 4
//!   again once one leaves; SQLite, several processes on one file: 2 nodes
//!   own 8 each.
//! - `postgres_live_rebuild`: version 2 of a projection builds over
//!   1,000,000 events while version 1 answers queries; no query fails or
//!   sees a missing or half-built view, and after the switch they read
//!   version 2's.
//!
//! PostgreSQL scenarios each use a database of their own on the server at
//! `CQRS_POSTGRES_URL`, dropped afterwards; without it they are skipped, and
//! with `CI=true` they fail. `CQRS_SCALE_OUT_SCALE` (default 1) multiplies
//! the events and kills; the CI value is the issue's. Children are ended
//! by their own pids only.

#[path = "../support/process.rs"]
#[allow(dead_code, reason = "the process suites' runner; each uses part of it")]
mod process;

#[path = "../support/database.rs"]
mod database;

mod cluster;
mod node;
mod processors;
mod scenarios;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("child") {
        return node::main(&args[1..]);
    }
    process::run_suite("scale_out", &args, scenarios::run)
}
