//! `cqrs`, the command-line tool for a store of `cqrs-core`: the streams by
//! aggregate type, one stream's events, the global log (followed as it
//! grows), the processors (positions, lag, segment owners, parked events;
//! retry or skip a parked event, move a checkpoint), and the pending
//! deadlines (cancel one, retry a parked one).
//!
//! ```text
//! cqrs --sqlite shop.sqlite streams
//! cqrs --postgres postgres://localhost/shop stream shop.order o-1 --json
//! cqrs --sqlite shop.sqlite tail --follow
//! cqrs --sqlite shop.sqlite processors
//! cqrs --sqlite shop.sqlite parked shop.checkout
//! cqrs --sqlite shop.sqlite retry shop.checkout 42
//! cqrs --sqlite shop.sqlite reset shop.checkout 0
//! cqrs --sqlite shop.sqlite deadlines --owner shop.order --id o-1
//! cqrs --sqlite shop.sqlite cancel-deadline shop.order o-1 shop.order.payment_due
//! cqrs --sqlite shop.sqlite retry-deadline shop.order o-1 DEADLINE_ID
//! ```
//!
//! What needs the app's own code, rebuilding a projection, is
//! [`main_with`]: an app calls it from a binary of its own with how it
//! builds its app, and gets every command above plus `rebuild`, which shows
//! a progress bar (events done of the total, rate, time left), the way
//! Commanded's mix tasks run inside the app.
//!
//! Errors are one line on stderr and exit code 1; a mistake on the command
//! line exits with 2 and clap's usage.

mod deadlines;
mod log;
mod processors;
mod rebuild;
mod target;

use std::io::Write;
use std::process::ExitCode;

use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};
use cqrs_core::processor::Decision;
use cqrs_core::{BuildError, Cqrs, CqrsBuilder, Uuid};

pub use rebuild::rebuild;
pub use target::Target;

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "cqrs",
    version,
    about = "Look into a cqrs-core store: streams, the log, processors, deadlines"
)]
pub struct Cli {
    #[command(flatten)]
    pub target: Target,
    #[command(subcommand)]
    pub command: Command,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// The aggregate types with their streams and events; with `--type`,
    /// that type's streams.
    Streams {
        /// List the streams of this aggregate type.
        #[arg(long = "type")]
        aggregate_type: Option<String>,
    },
    /// One stream's events, as pretty JSON or, with `--json`, one JSON
    /// object per line.
    Stream {
        aggregate_type: String,
        aggregate_id: String,
        #[arg(long)]
        json: bool,
    },
    /// The global log: the last events, or those from a position, and with
    /// `--follow` those appended after, until interrupted.
    Tail {
        /// Start at this position (by default, the last `--last` events).
        #[arg(long)]
        from: Option<u64>,
        /// How many of the last events to show first.
        #[arg(long, default_value_t = 20)]
        last: u64,
        /// Keep printing events as they are appended.
        #[arg(long)]
        follow: bool,
        #[arg(long)]
        json: bool,
    },
    /// Every processor: position, lag, segments, owners, parked events.
    Processors {
        #[arg(long)]
        json: bool,
    },
    /// The events a processor parked, decided ones included.
    Parked {
        processor: String,
        #[arg(long)]
        json: bool,
    },
    /// Retries the parked events of the stream of the one at POSITION.
    Retry { processor: String, position: u64 },
    /// Skips the parked event at POSITION for good.
    Skip { processor: String, position: u64 },
    /// Moves every segment of a process manager or handler to POSITION (0:
    /// from the start); a projection is rebuilt instead.
    Reset { processor: String, position: u64 },
    /// Empties a projection and builds it again from the log (needs the
    /// app: see `main_with`).
    Rebuild { projection: String },
    /// The pending deadlines (parked ones too), earliest due first: of
    /// every owner, of one owner type (an aggregate type or a process
    /// manager's name) with `--owner`, of one owner with `--id` too.
    Deadlines {
        #[arg(long)]
        owner: Option<String>,
        #[arg(long)]
        id: Option<String>,
        /// Only those due before this time (RFC 3339).
        #[arg(long)]
        due_before: Option<DateTime<Utc>>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// Cancels an owner's pending deadline NAME (with `--key`, the one of
    /// that key); one already fired is left be, and says so.
    CancelDeadline {
        owner_type: String,
        owner_id: String,
        name: String,
        #[arg(long, default_value = "")]
        key: String,
    },
    /// Fires a pending or parked deadline again as soon as the runner
    /// looks, its failed attempts forgotten.
    RetryDeadline {
        owner_type: String,
        owner_id: String,
        deadline_id: Uuid,
    },
}

/// Why a command did not succeed.
#[derive(Debug)]
pub enum Failure {
    /// Printed as one line, with exit code 1.
    Error(String),
    /// Whoever read the output (`head`, say) closed it: a quiet success.
    OutputClosed,
}

impl<E: std::error::Error + 'static> From<E> for Failure {
    fn from(error: E) -> Self {
        let closed = (&error as &dyn std::error::Error)
            .downcast_ref::<std::io::Error>()
            .is_some_and(|error| error.kind() == std::io::ErrorKind::BrokenPipe);
        if closed {
            Self::OutputClosed
        } else {
            Self::Error(error.to_string())
        }
    }
}

/// How an embedding app builds its app over the tool's store.
pub type BuildApp = dyn Fn(CqrsBuilder) -> Result<Cqrs, BuildError>;

/// The `cqrs` binary: every command but `rebuild`.
pub fn main() -> ExitCode {
    exit(run(Cli::parse(), None))
}

/// The tool inside an app's own binary: `app` builds the app (its
/// projections registered) over the store the command line names, so
/// `rebuild` works too.
///
/// ```no_run
/// use cqrs_core::Cqrs;
///
/// fn main() -> std::process::ExitCode {
///     cqrs_cli::main_with(|builder| builder.without_event_handlers().build())
/// }
/// ```
pub fn main_with(app: impl Fn(CqrsBuilder) -> Result<Cqrs, BuildError> + 'static) -> ExitCode {
    exit(run(Cli::parse(), Some(&app)))
}

fn exit(result: Result<(), Failure>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::OutputClosed) => ExitCode::SUCCESS,
        Err(Failure::Error(message)) => {
            eprintln!("cqrs: error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// An app to inspect the store with: no handlers, processors or layers.
fn inspector(builder: CqrsBuilder) -> Result<Cqrs, BuildError> {
    builder
        .without_event_handlers()
        .without_processors()
        .build()
}

/// Runs one command line on a runtime of its own.
pub fn run(cli: Cli, app: Option<&BuildApp>) -> Result<(), Failure> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(execute(cli, app))
}

async fn execute(cli: Cli, app: Option<&BuildApp>) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    let builder = cli.target.builder().await?;
    match cli.command {
        Command::Streams { aggregate_type } => {
            log::streams(&inspector(builder)?, aggregate_type.as_deref(), &mut out).await
        }
        Command::Stream {
            aggregate_type,
            aggregate_id,
            json,
        } => {
            log::stream(
                &inspector(builder)?,
                &aggregate_type,
                &aggregate_id,
                json,
                &mut out,
            )
            .await
        }
        Command::Tail {
            from,
            last,
            follow,
            json,
        } => log::tail(&inspector(builder)?, from, last, follow, json, &mut out).await,
        Command::Processors { json } => {
            processors::list(&inspector(builder)?, json, &mut out).await
        }
        Command::Parked { processor, json } => {
            processors::parked(&inspector(builder)?, &processor, json, &mut out).await
        }
        Command::Retry {
            processor,
            position,
        } => {
            let app = inspector(builder)?;
            processors::decide(&app, &processor, position, Decision::Retry, &mut out).await
        }
        Command::Skip {
            processor,
            position,
        } => {
            let app = inspector(builder)?;
            processors::decide(&app, &processor, position, Decision::Skip, &mut out).await
        }
        Command::Reset {
            processor,
            position,
        } => processors::reset(&inspector(builder)?, &processor, position, &mut out).await,
        Command::Deadlines {
            owner,
            id,
            due_before,
            limit,
            json,
        } => {
            let listing = deadlines::Listing {
                owner_type: owner,
                owner_id: id,
                due_before,
                limit,
                json,
            };
            deadlines::list(&inspector(builder)?, listing, &mut out).await
        }
        Command::CancelDeadline {
            owner_type,
            owner_id,
            name,
            key,
        } => {
            let owner = (owner_type.as_str(), owner_id.as_str());
            deadlines::cancel(&inspector(builder)?, owner, &name, &key, &mut out).await
        }
        Command::RetryDeadline {
            owner_type,
            owner_id,
            deadline_id,
        } => {
            let owner = (owner_type.as_str(), owner_id.as_str());
            deadlines::retry(&inspector(builder)?, owner, deadline_id, &mut out).await
        }
        Command::Rebuild { projection } => {
            let Some(app) = app else {
                return Err(Failure::Error(
                    "rebuild needs the app's projections: call cqrs_cli::main_with from a binary of the app"
                        .into(),
                ));
            };
            let app = app(builder)?;
            let done = rebuild(&app, &projection).await?;
            writeln!(
                out,
                "rebuilt {projection}: {} events in {:.1} s ({:.0} events/s)",
                done.done,
                done.elapsed.as_secs_f64(),
                done.rate()
            )?;
            Ok(())
        }
    }
}
