//! What processors report: [`ProcessorStatus`], [`ProcessorFailure`] and
//! its [`FailureCause`], [`ProcessorError`], [`RetryPolicy`],
//! [`RebuildProgress`].

use std::error::Error;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use crate::database::DatabaseError;
use crate::error::DecodeError;
use crate::handler::HandlerError;
use crate::store::StoreError;
use crate::view::ViewError;

/// Why an event processor could not process an event.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProcessorError {
    /// A handler returned an error.
    #[error(transparent)]
    Handler(HandlerError),
    /// The event could not be decoded.
    #[error(transparent)]
    Decode(Box<DecodeError>),
    /// The views failed.
    #[error(transparent)]
    View(#[from] ViewError),
    /// The event store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A broker failed (a gateway's).
    #[error(transparent)]
    Broker(#[from] crate::error::BrokerError),
    /// The app that owns the processor is gone.
    #[error("the app was dropped")]
    AppDropped,

    /// A segment the call needs is held by another live node, such as a
    /// rebuild while other instances run the projection.
    #[error("segment {segment} of {processor} is held by another live node")]
    Claimed {
        /// The processor.
        processor: &'static str,
        /// The segment.
        segment: u32,
    },

    /// What was asked of the processor does not apply to its kind, such as
    /// rebuilding a process manager.
    #[error("{processor} is a {kind:?}: {reason}")]
    Unsupported {
        /// The processor.
        processor: &'static str,
        /// Its kind.
        kind: ProcessorKind,
        /// What it cannot do.
        reason: &'static str,
    },
}

impl From<Box<DecodeError>> for ProcessorError {
    fn from(error: Box<DecodeError>) -> Self {
        Self::Decode(error)
    }
}

impl ProcessorError {
    /// Whose failure this is: the database's when it was unavailable (a
    /// transient failure of the log or the views, also inside a
    /// handler, such as a process manager's command that met an outage);
    /// otherwise the event's: its handler failed, it does not decode, or the
    /// data it needs is corrupt.
    pub fn cause(&self) -> FailureCause {
        let outage = match self {
            Self::Handler(error) => caused_by_outage(&**error),
            Self::View(error) => error.is_transient(),
            Self::Store(error) => error.is_transient(),
            Self::Claimed { .. } => true,
            Self::Broker(error) => {
                return if error.is_transient() {
                    FailureCause::Broker
                } else {
                    FailureCause::Event
                };
            }
            Self::Decode(_) | Self::AppDropped | Self::Unsupported { .. } => false,
        };
        if outage {
            FailureCause::Database
        } else {
            FailureCause::Event
        }
    }
}

/// Whose failure stopped a processor for a while, which decides how it is
/// retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailureCause {
    /// The event cannot be processed as things stand (its handler failed, it
    /// does not decode, a row or view it needs is corrupt): retried by
    /// the [`RetryPolicy`], then the processor stops at the event until
    /// [`Processors::restart`](super::Processors::restart).
    Event,
    /// The event store or the views were unavailable (unreachable,
    /// restarting, read-only, busy): retried with a backoff of at most
    /// [`RetryPolicy::outage_delay`] for as long as it lasts, never counted
    /// against the policy; the processor resumes by itself.
    Database,
    /// The broker was unreachable or the connection broke: retried like an
    /// outage of the database, for as long as it lasts.
    Broker,
}

/// Which kind of processor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProcessorKind {
    /// Keeps views.
    Projection,
    /// Sends commands.
    ProcessManager,
    /// A free `#[event_handler]` function, delivered to from its checkpoint.
    EventHandler,
    /// Publishes events to a broker ([`Gateway`](crate::broker::Gateway)).
    Gateway,
    /// Fires the due deadlines of the segments it owns (`cqrs.deadlines`;
    /// see [`Deadlines::fire_due`](crate::Deadlines::fire_due)). Its
    /// position follows the log's head, which it reaches at every step.
    Deadlines,
}

/// Where a processor stopped, and why.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ProcessorFailure {
    /// The processor.
    pub processor: &'static str,
    /// The position of the event it could not process, or the first
    /// position it could not read.
    pub position: u64,
    /// That event's id, when the event was read.
    pub event_id: Option<Uuid>,
    /// What went wrong, the last time, with its sources.
    pub error: Arc<ProcessorError>,
    /// Whose failure it is, which decides how it is retried.
    pub cause: FailureCause,
    /// How many times it was tried.
    pub attempts: u32,
}

impl fmt::Display for ProcessorFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.cause {
            FailureCause::Event => "failed at",
            FailureCause::Database => "could not reach its database at",
            FailureCause::Broker => "could not reach its broker at",
        };
        write!(
            f,
            "processor {} {what} position {} after {} attempts: {}",
            self.processor, self.position, self.attempts, self.error
        )
    }
}

impl Error for ProcessorFailure {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&*self.error)
    }
}

/// What a processor is doing.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ProcessorStatus {
    /// Its name.
    pub name: &'static str,
    /// Projection, process manager or event handler.
    pub kind: ProcessorKind,
    /// The projection's version (1 for other processors).
    pub version: u32,
    /// This instance's node id.
    pub node: String,
    /// The position its slowest segment has processed up to.
    pub position: u64,
    /// Events of the log after `position`, as of this node's last lease
    /// renewal (0 until the first, and while it only catches up): a
    /// gateway's backlog to publish.
    pub lag: u64,
    /// Its segments, as this node last saw them.
    pub segments: Vec<SegmentStatus>,
    /// Events parked and not yet retried or skipped, in every segment.
    pub parked: u64,
    /// Batches of this node rejected because another node had claimed
    /// their segment in the meantime.
    pub fenced: u64,
    /// Batches of this node run again because another segment had changed
    /// one of their views in the meantime.
    pub conflicts: u64,
    /// Set while it retries or after it gave up; cleared by a success or
    /// [`Processors::restart`](super::Processors::restart).
    pub failure: Option<ProcessorFailure>,
    /// True once it met a failure it cannot retry (a misconfiguration, such
    /// as another segment count than the store's): it waits for
    /// [`Processors::restart`](super::Processors::restart).
    pub stopped: bool,
    /// True once a newer version of the projection serves the queries:
    /// this one no longer runs.
    pub retired: bool,
    /// True while an older version of the projection serves the queries
    /// and this one builds its own views beside it.
    pub building: bool,
}

/// One segment of a processor.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SegmentStatus {
    /// Its index.
    pub segment: u32,
    /// The position it has processed up to.
    pub position: u64,
    /// The node with a live lease on it, if any.
    pub owner: Option<String>,
    /// Whether this node owns it.
    pub owned_here: bool,
    /// Events it parked, not yet retried or skipped.
    pub parked: u64,
}

/// How a failing processor is retried.
///
/// A handler's own failure ([`FailureCause::Event`]) is tried `max_attempts`
/// times with a doubling pause from `first_delay` up to `max_delay`, then
/// the event is parked. A failure of the database ([`FailureCause::Database`])
/// is tried for as long as it lasts, with a doubling pause from `first_delay`
/// up to `outage_delay`, so the processor resumes within about that long
/// after the database heals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Attempts at one event, the first included, before it is parked.
    pub max_attempts: u32,
    /// The pause after the first failure; it doubles after each next one.
    pub first_delay: Duration,
    /// The longest pause between attempts at a failing event.
    pub max_delay: Duration,
    /// The longest pause between attempts while the database is unavailable.
    pub outage_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            first_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
            outage_delay: Duration::from_secs(1),
        }
    }
}

impl RetryPolicy {
    /// The same policy with `max_attempts` attempts at a failing event.
    pub fn max_attempts(self, max_attempts: u32) -> Self {
        Self {
            max_attempts: max_attempts.max(1),
            ..self
        }
    }

    /// The same policy pausing from `first_delay` up to `max_delay` between
    /// attempts at a failing event.
    pub fn delays(self, first_delay: Duration, max_delay: Duration) -> Self {
        Self {
            first_delay,
            max_delay,
            ..self
        }
    }

    /// The same policy pausing at most `outage_delay` between attempts
    /// while the database is unavailable.
    pub fn outage_delay(self, outage_delay: Duration) -> Self {
        Self {
            outage_delay,
            ..self
        }
    }

    /// The pause after the `attempt`-th failure in a row, at most `longest`.
    pub(crate) fn delay(&self, attempt: u32, longest: Duration) -> Duration {
        self.first_delay
            .saturating_mul(1 << attempt.saturating_sub(1).min(16))
            .min(longest)
    }
}

/// The progress of a rebuild.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RebuildProgress {
    /// Events of the log processed so far.
    pub done: u64,
    /// Events in the log when the rebuild started.
    pub total: u64,
    /// Time since the start.
    pub elapsed: Duration,
}

impl RebuildProgress {
    /// Events per second so far.
    pub fn rate(&self) -> f64 {
        let seconds = self.elapsed.as_secs_f64();
        if seconds > 0.0 {
            self.done as f64 / seconds
        } else {
            0.0
        }
    }
}

/// Why a call on [`Processors`](super::Processors) (waiting, rebuilding,
/// restarting) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProcessorsError {
    /// No processor of the app has this name.
    #[error("no processor is named `{0}`")]
    Unknown(String),
    /// The processor stopped on a failure, or failed the call.
    #[error(transparent)]
    Failed(ProcessorFailure),
}

/// Whether `error` or any error in its source chain is a transient store,
/// view or database failure: a handler that failed only because the
/// database was unavailable.
pub(crate) fn caused_by_outage(error: &(dyn Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(database) = error.downcast_ref::<DatabaseError>() {
            return database.is_transient();
        }
        if let Some(store) = error.downcast_ref::<StoreError>() {
            return store.is_transient();
        }
        next = error.source();
    }
    false
}
