//! What the runtime reports: `tracing` spans and metrics through the
//! `metrics` facade. Both cost next to nothing until the app installs a
//! subscriber or a recorder (a Prometheus exporter, say); which one is the
//! app's choice.
//!
//! # Spans
//!
//! | span | level | fields |
//! |---|---|---|
//! | `execute` | info | `aggregate_type`, `aggregate_id`, `command`, `version`, `retries`, `outcome` |
//! | `store.load` | debug | `backend`, `aggregate_type`, `aggregate_id`, `from_sequence`, `events` |
//! | `store.append` | debug | `backend`, `aggregate_type`, `aggregate_id`, `expected_version`, `events` |
//! | `processor.batch` | info | `processor`, `segment`, `from`, `to`, `lag` |
//! | `processor.handle` | info | `processor`, `position`, `event` (one event, in its trace) |
//! | `gateway.publish` | info | `gateway`, `events`, `first_position`, `confirmed` |
//! | `gateway.send` | info | `gateway`, `position`, `event_id` (one event, in its trace) |
//! | `consumer.receive` | info | `consumer`, `messages`, `recorded`, `duplicates`, `dead_lettered` |
//! | `consumer.record` | info | `consumer`, `event_id`, `event` (one message, in its trace) |
//!
//! # Trace context
//!
//! With feature `opentelemetry` and a `tracing-opentelemetry` layer
//! installed, `execute` records its span's W3C `traceparent` (and
//! `tracestate`) in the metadata of every event it records; a processor's
//! `processor.handle` span for an event, and so the commands a process
//! manager sends from it, a gateway's `gateway.send` span and a consumer's
//! `consumer.record` span are children of that context, and the broker's
//! messages carry it. One trace follows a request from its HTTP handler
//! (see [`continue_trace`]) through the log and the broker to another
//! service's handlers.
//!
//! # Metrics
//!
//! Labels are names (aggregate types, processors, backends, outcomes),
//! never ids, so a metrics backend keeps a handful of series.
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `cqrs_commands_total` | counter | `aggregate_type`, `outcome` |
//! | `cqrs_command_retries_total` | counter | `aggregate_type` |
//! | `cqrs_command_conflicts_total` | counter | `aggregate_type` |
//! | `cqrs_append_seconds` | histogram | `backend` |
//! | `cqrs_events_appended_total` | counter | `backend`, `aggregate_type` |
//! | `cqrs_processor_lag_events` | gauge | `processor` |
//! | `cqrs_processor_lag_seconds` | gauge | `processor` |
//! | `cqrs_processor_parked` | gauge | `processor` |
//! | `cqrs_gateway_published_total` | counter | `gateway` |
//! | `cqrs_gateway_confirmed_total` | counter | `gateway` |
//! | `cqrs_consumer_messages_total` | counter | `consumer`, `outcome` |
//!
//! A command's `outcome` is one of [`CommandOutcome`]'s names. The
//! commands' handles are registered with the recorder installed when the
//! app runs its first command of an aggregate type: install the recorder
//! before. Append latency and events appended count commands' appends
//! (a consumer's are `cqrs_consumer_messages_total{outcome="recorded"}`). A
//! processor's lag in events is the log's head, as of the last lease
//! renewal, minus its slowest segment's position; in seconds, how old the
//! newest event of its last batch was when the batch was done (0 once it
//! has caught up).

mod trace;

use std::time::Duration;

use crate::envelope::Envelope;
use crate::error::CommandError;

pub use trace::continue_trace;
pub(crate) use trace::{follow, record};

/// How a command ended, as the `outcome` label and span field say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
#[repr(usize)]
pub enum CommandOutcome {
    /// `ok`: it recorded its events, or decided on none.
    Ok,
    /// `duplicate`: its command id was recorded before; nothing ran.
    Duplicate,
    /// `domain`: the aggregate rejected it.
    Domain,
    /// `not_found`: it needs an aggregate that does not exist.
    NotFound,
    /// `already_exists`: it creates an aggregate that exists.
    AlreadyExists,
    /// `conflict`: other writers won every retry.
    Conflict,
    /// `rejected`: a command layer stopped it.
    Rejected,
    /// `error`: the store failed, or an event could not be read or written.
    Error,
}

impl CommandOutcome {
    /// Every outcome, in declaration order (their `as usize` values).
    const ALL: [Self; 8] = [
        Self::Ok,
        Self::Duplicate,
        Self::Domain,
        Self::NotFound,
        Self::AlreadyExists,
        Self::Conflict,
        Self::Rejected,
        Self::Error,
    ];

    /// The label value.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Duplicate => "duplicate",
            Self::Domain => "domain",
            Self::NotFound => "not_found",
            Self::AlreadyExists => "already_exists",
            Self::Conflict => "conflict",
            Self::Rejected => "rejected",
            Self::Error => "error",
        }
    }

    pub(crate) fn of_error<E>(error: &CommandError<E>) -> Self {
        match error {
            CommandError::Domain(_) => Self::Domain,
            CommandError::NotFound { .. } => Self::NotFound,
            CommandError::AlreadyExists { .. } => Self::AlreadyExists,
            CommandError::Conflict { .. } => Self::Conflict,
            CommandError::Rejected { .. } => Self::Rejected,
            CommandError::MissingServices { .. }
            | CommandError::Decode(_)
            | CommandError::Encode { .. }
            | CommandError::Store(_) => Self::Error,
        }
    }
}

/// The `processor.handle` span of one event, a child of the trace the
/// event's metadata carries.
pub(crate) fn handling(processor: &'static str, envelope: &Envelope) -> tracing::Span {
    let span = tracing::info_span!(
        "processor.handle",
        processor,
        position = envelope.position,
        event = envelope.event_name.as_str(),
    );
    follow(&span, &envelope.metadata);
    span
}

/// The metric handles of one aggregate type's commands, registered once
/// with the recorder installed when the app runs its first command of that
/// type, so a command pays for no key lookups.
pub(crate) struct CommandMetrics {
    /// By [`CommandOutcome`], indexed by `as usize`.
    outcomes: [metrics::Counter; CommandOutcome::ALL.len()],
    retries: metrics::Counter,
    conflicts: metrics::Counter,
    appended: metrics::Counter,
    append_seconds: metrics::Histogram,
}

impl CommandMetrics {
    pub(crate) fn new(aggregate_type: &'static str, backend: &'static str) -> Self {
        let outcome = |outcome: CommandOutcome| {
            metrics::counter!(
                "cqrs_commands_total",
                "aggregate_type" => aggregate_type,
                "outcome" => outcome.name()
            )
        };
        Self {
            outcomes: CommandOutcome::ALL.map(outcome),
            retries: metrics::counter!(
                "cqrs_command_retries_total",
                "aggregate_type" => aggregate_type
            ),
            conflicts: metrics::counter!(
                "cqrs_command_conflicts_total",
                "aggregate_type" => aggregate_type
            ),
            appended: metrics::counter!(
                "cqrs_events_appended_total",
                "backend" => backend,
                "aggregate_type" => aggregate_type
            ),
            append_seconds: metrics::histogram!("cqrs_append_seconds", "backend" => backend),
        }
    }

    /// A command ended.
    pub(crate) fn command(&self, outcome: CommandOutcome, retries: u32) {
        if let Some(counter) = self.outcomes.get(outcome as usize) {
            counter.increment(1);
        }
        if retries > 0 {
            self.retries.increment(u64::from(retries));
        }
    }

    /// Its append lost a race to another writer.
    pub(crate) fn conflict(&self) {
        self.conflicts.increment(1);
    }

    /// An append ended after `elapsed`, recording `events`.
    pub(crate) fn appended(&self, elapsed: Duration, events: usize) {
        self.append_seconds.record(elapsed.as_secs_f64());
        if events > 0 {
            self.appended.increment(events as u64);
        }
    }
}

/// Where a processor stands after a batch or a lease renewal.
pub(crate) fn processor_lag(processor: &'static str, events: u64, parked: u64) {
    metrics::gauge!("cqrs_processor_lag_events", "processor" => processor).set(events as f64);
    metrics::gauge!("cqrs_processor_parked", "processor" => processor).set(parked as f64);
}

/// How old the newest event of a processor's last batch was when it was
/// done, in its slowest segment on this node.
pub(crate) fn processor_delay(processor: &'static str, seconds: f64) {
    metrics::gauge!("cqrs_processor_lag_seconds", "processor" => processor).set(seconds);
}

/// A gateway sent `published` events and the broker confirmed `confirmed`.
pub(crate) fn gateway(gateway: &'static str, published: usize, confirmed: usize) {
    metrics::counter!("cqrs_gateway_published_total", "gateway" => gateway)
        .increment(published as u64);
    metrics::counter!("cqrs_gateway_confirmed_total", "gateway" => gateway)
        .increment(confirmed as u64);
}

/// A consumer's batch: messages recorded, already held, and dead-lettered.
pub(crate) fn consumer(consumer: &str, recorded: u64, duplicates: u64, dead_lettered: u64) {
    for (outcome, count) in [
        ("recorded", recorded),
        ("duplicate", duplicates),
        ("dead_lettered", dead_lettered),
    ] {
        if count > 0 {
            metrics::counter!(
                "cqrs_consumer_messages_total",
                "consumer" => consumer.to_owned(),
                "outcome" => outcome
            )
            .increment(count);
        }
    }
}
