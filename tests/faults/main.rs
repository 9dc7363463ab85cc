//! The fault suite: real OS processes against real servers, bounded in time.
//!
//! Each scenario runs a writer child (this binary, `child` role) that sends
//! commands from several tasks and runs a projection, and injects one kind of
//! fault: SIGKILL of the writer at random moments (SQLite, PostgreSQL), the
//! PostgreSQL server killed and restarted, PostgreSQL made read-only, a
//! SQLite file made unwritable, appends cancelled among patient ones, rows
//! corrupted by hand. Afterwards every acknowledged command must be in the
//! log, no command told "nothing recorded" may be, positions and sequences
//! are dense with no event twice, the projection applied each event once,
//! commands and the projection work again within `RECOVERY_LIMIT` of a fault
//! ending without a restart, and no child panicked. Two SIGKILL scenarios
//! keep the read side in a database of its own (a second PostgreSQL
//! database, a SQLite file) and run a table projection there too, whose
//! table must hold each event once.
//!
//! PostgreSQL scenarios use a server of the suite's own (see `server.rs`);
//! SQLite ones a file under the target directory. `CQRS_FAULT_SCALE`
//! multiplies the kills and fault cycles (default 1, what CI runs). With
//! `CI=true` a scenario that cannot run (no PostgreSQL binaries, no
//! `chattr`) fails instead of being skipped.

mod check;
mod child;
mod ledger;
mod options;
#[path = "../support/process.rs"]
#[allow(dead_code, reason = "the process suites' runner; each uses part of it")]
mod process;
mod scenarios;
mod server;
mod totals;

use std::process::ExitCode;
use std::time::Duration;

use scenarios::{Report, Scale, Target};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match (
        args.first().map(String::as_str),
        args.get(1).map(String::as_str),
    ) {
        (Some("child"), Some("large")) => return child::large(&args[2..]),
        (Some("child"), _) => return child::main(&args[1..]),
        _ => {}
    }
    process::run_suite("faults", &args, suite)
}

/// Every scenario, by backend and fault.
const SCENARIOS: [&str; 12] = [
    "sqlite_writer_killed",
    "sqlite_file_unwritable",
    "sqlite_large_events",
    "sqlite_corrupted_by_hand",
    "postgres_writer_killed",
    "postgres_writer_killed_read_elsewhere",
    "postgres_writer_killed_read_in_sqlite",
    "postgres_server_restarted",
    "postgres_read_only",
    "postgres_cancelled_among_patient",
    "postgres_corrupted_by_hand",
    "postgres_large_events",
];

async fn suite(filter: Option<String>) -> usize {
    let scale = Scale::from_env();
    let ci = std::env::var("CI").as_deref() == Ok("true");
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("faults-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a directory for the SQLite files");
    let wanted: Vec<&str> = SCENARIOS
        .into_iter()
        .filter(|name| filter.as_deref().is_none_or(|filter| name.contains(filter)))
        .collect();
    if wanted.is_empty() {
        eprintln!("faults: no scenario matches {filter:?}; they are {SCENARIOS:?}");
        return 1;
    }
    let server = if wanted.iter().any(|name| name.starts_with("postgres")) {
        Some(scenarios::server())
    } else {
        None
    };
    let mut failures = 0;
    for name in wanted {
        let target = if name.starts_with("sqlite") {
            Ok(Target::Sqlite(dir.join(format!("{name}.sqlite"))))
        } else {
            match &server {
                Some(Ok(server)) => server.create_database(name).and_then(|()| {
                    Ok(Target::Postgres {
                        url: server.url(name),
                        prefix: "cqrs_".to_owned(),
                        read: read_side(name, server, &dir)?,
                    })
                }),
                Some(Err(error)) => Err(format!("no PostgreSQL server of its own: {error}")),
                None => Err("no server".to_owned()),
            }
        };
        let server = server.as_ref().and_then(|server| server.as_ref().ok());
        let result = match target {
            Ok(target) => run(name, target, server, &dir, scale).await,
            Err(error) => Err(error),
        };
        match result {
            Ok(Some(report)) => print(&report),
            Ok(None) if ci => {
                failures += 1;
                eprintln!("FAILED {name}: it cannot run here, and CI needs it (root, chattr)");
            }
            Ok(None) => eprintln!("skipped {name}: it cannot run here (needs root and chattr)"),
            Err(error) if !ci && server.is_none() && name.starts_with("postgres") => {
                eprintln!("skipped {name}: {error}");
            }
            Err(error) => {
                failures += 1;
                eprintln!("FAILED {name}: {error}");
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    failures
}

/// Runs one scenario; `None` when this machine cannot inject its fault.
async fn run(
    name: &str,
    target: Target,
    server: Option<&server::Server>,
    dir: &std::path::Path,
    scale: Scale,
) -> Result<Option<Report>, String> {
    let cycles = 3 * scale.0;
    let down = Duration::from_secs(2);
    let fault = name.split_once('_').map_or(name, |(_, fault)| fault);
    let report = match (fault, server) {
        ("writer_killed" | "writer_killed_read_elsewhere" | "writer_killed_read_in_sqlite", _) => {
            scenarios::writer_killed(name, target, 4 * scale.0).await
        }
        ("large_events", _) => scenarios::large_events(name, target).await,
        ("corrupted_by_hand", _) => scenarios::corrupted_by_hand(name, target).await,
        ("cancelled_among_patient", _) => {
            scenarios::cancelled_among_patient(name, target, 3.0 * scale.0 as f64).await
        }
        ("file_unwritable", _) => {
            let Target::Sqlite(path) = &target else {
                return Err("a SQLite scenario".to_owned());
            };
            if !can_chattr(dir) {
                return Ok(None);
            }
            // The database and its log; the `-shm` index is mapped into
            // memory, and a mapping SQLite cannot extend would end the
            // process (SIGBUS).
            let files = [path.clone(), path.with_extension("sqlite-wal")];
            let (begin, end) = (files.clone(), files.clone());
            let result = scenarios::outage(
                name,
                target.clone(),
                cycles,
                down,
                move || ok(scenarios::immutable(&begin, true), "chattr +i"),
                move || ok(scenarios::immutable(&end, false), "chattr -i"),
            )
            .await;
            scenarios::immutable(&files, false);
            result
        }
        ("server_restarted", Some(server)) => {
            scenarios::outage(name, target, cycles, down, || server.kill(), || server.up()).await
        }
        ("read_only", Some(server)) => {
            let (on, off) = (|| server.read_only(true), || server.read_only(false));
            scenarios::outage(name, target, cycles, down, on, off).await
        }
        _ => Err(format!("no such scenario, or no server for it: {name}")),
    };
    report.map(Some)
}

/// The read side of a scenario that keeps it in a database of its own: a
/// second database of the server, or a SQLite file.
fn read_side(
    name: &str,
    server: &server::Server,
    dir: &std::path::Path,
) -> Result<Option<scenarios::ReadSide>, String> {
    if name.ends_with("read_elsewhere") {
        let read = format!("{name}_read");
        server.create_database(&read)?;
        return Ok(Some(scenarios::ReadSide::Postgres(server.url(&read))));
    }
    if name.ends_with("read_in_sqlite") {
        let path = dir.join(format!("{name}.sqlite"));
        return Ok(Some(scenarios::ReadSide::Sqlite(path)));
    }
    Ok(None)
}

fn ok(done: bool, what: &str) -> Result<(), String> {
    if done {
        Ok(())
    } else {
        Err(format!("{what} failed"))
    }
}

/// Whether files in `dir` can be made immutable (root, a filesystem with
/// the attribute).
fn can_chattr(dir: &std::path::Path) -> bool {
    let probe = dir.join("chattr-probe");
    if std::fs::write(&probe, b"").is_err() {
        return false;
    }
    let files = [probe.clone()];
    let can = scenarios::immutable(&files, true);
    scenarios::immutable(&files, false);
    let _ = std::fs::remove_file(probe);
    can
}

fn print(report: &Report) {
    let figures = |durations: &[Duration]| -> String {
        if durations.is_empty() {
            return "-".to_owned();
        }
        let mut sorted = durations.to_vec();
        sorted.sort();
        let middle = (sorted[(sorted.len() - 1) / 2] + sorted[sorted.len() / 2]) / 2;
        format!(
            "median {:.2} s, worst {:.2} s of {}",
            middle.as_secs_f64(),
            sorted[sorted.len() - 1].as_secs_f64(),
            sorted.len()
        )
    };
    let verified = &report.verified;
    if verified.events == 0 {
        for note in &report.notes {
            println!("faults: {:<38} {note}", report.name);
        }
        return;
    }
    println!(
        "faults: {:<38} faults {:>4}  acknowledged {:>6}  events checked {:>6}  unknown outcomes {} landed / {} not",
        report.name,
        report.faults,
        verified.acknowledged,
        verified.events,
        verified.unknown_landed,
        verified.unknown_lost
    );
    if !report.command_recovery.is_empty() {
        println!(
            "faults: {:<38} commands back after the fault: {}; projection: {}",
            "",
            figures(&report.command_recovery),
            figures(&report.processor_recovery)
        );
    }
    for note in &report.notes {
        println!("faults: {:<38} {note}", "");
    }
}
