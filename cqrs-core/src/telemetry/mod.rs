//! What the runtime reports: `tracing` spans and metrics through the
//! `metrics` facade. Both cost next to nothing until the app installs a
//! subscriber or a recorder (a Prometheus exporter, say); which one is the
//! app's choice. With no subscriber that keeps a span's level, a command
//! builds no span (not even a disabled one, which tracing's `log` feature,
//! turned on by sqlx, would make look for a logger); with no recorder, its
//! appends are not timed.
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
//! | `cqrs_deadlines_fired_total` | counter | `owner_type`, `outcome` (`fired`, `gone`, `failed`, `outage`) |
//! | `cqrs_deadline_lag_seconds` | histogram | `owner_type` (due to fired) |
//! | `cqrs_deadlines_pending` | gauge | |
//! | `cqrs_deadlines_due` | gauge | |
//! | `cqrs_deadlines_parked` | gauge | |
//!
//! A command's `outcome` is one of [`CommandOutcome`]'s names; a consumer
//! message's is `recorded`, `handled`, `ignored`, `parked`, `duplicate` or
//! `dead_lettered`. The
//! commands' handles are registered with the recorder installed when the
//! app runs its first command of an aggregate type: install the recorder
//! before: whether appends are timed for `cqrs_append_seconds` is decided
//! then too. Append latency and events appended count commands' appends
//! (a consumer's are `cqrs_consumer_messages_total{outcome="recorded"}`). A
//! processor's lag in events is the log's head, as of the last lease
//! renewal, minus its slowest segment's position; in seconds, how old the
//! newest event of its last batch was when the batch was done (0 once it
//! has caught up). The deadline gauges are counted every 30 s by the
//! node that owns the first segment of `cqrs.deadlines`, over the owners
//! its app hosts.

mod metrics;
mod trace;

use crate::envelope::Envelope;
use crate::error::CommandError;

pub(crate) use metrics::{
    CommandMetrics, consumer, deadline_counts, deadline_fired, gateway, processor_delay,
    processor_lag,
};
pub use trace::{TRACEPARENT, TRACESTATE, continue_trace};
pub(crate) use trace::{follow, record};

/// How a command ended, as the `outcome` label and span field say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
#[repr(usize)]
pub enum CommandOutcome {
    /// `ok`: it recorded its events, or decided on none.
    Ok,
    /// `duplicate`: its command id was recorded before; nothing ran and
    /// the first outcome was answered.
    Duplicate,
    /// `id_reused`: its command id was recorded before with another command.
    IdReused,
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
    /// `error`: the store failed, an event could not be read or written,
    /// or the app is not built for the command (services missing, the
    /// aggregate's domain not hosted).
    Error,
}

impl CommandOutcome {
    /// Every outcome, in declaration order (their `as usize` values).
    pub(crate) const ALL: [Self; 9] = [
        Self::Ok,
        Self::Duplicate,
        Self::IdReused,
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
            Self::IdReused => "id_reused",
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
            CommandError::Conflict { .. } | CommandError::BoundaryChanged { .. } => Self::Conflict,
            CommandError::Rejected { .. } => Self::Rejected,
            CommandError::CommandIdReused { .. } => Self::IdReused,
            CommandError::MissingServices { .. }
            | CommandError::NotHosted { .. }
            | CommandError::EncodeCommand { .. }
            | CommandError::Decode(_)
            | CommandError::Encode { .. }
            | CommandError::EncodeDeadline { .. }
            | CommandError::DeadlineInstance { .. }
            | CommandError::DecodeDeadline { .. }
            | CommandError::InvalidTag(_)
            | CommandError::Store(_) => Self::Error,
        }
    }
}

/// Whether any subscriber may want spans at `level`: one atomic load, so
/// the hot paths build no span (and pay for none of its fields, nor for
/// tracing's `log` fallback, which sqlx turns on) when none would be kept.
pub(crate) fn spans_at(level: tracing::Level) -> bool {
    level <= tracing::level_filters::LevelFilter::current()
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
