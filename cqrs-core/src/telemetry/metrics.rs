//! The metrics the runtime records through the `metrics` facade (their
//! names and labels are in the module docs above): a command's handles,
//! registered once per aggregate type, and what processors, gateways and
//! consumers report.

use std::cell::Cell;
use std::time::{Duration, Instant};

use super::CommandOutcome;

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
    /// Whether a recorder keeps the histogram: appends are timed only then
    /// (two clock reads, 3% of an in-memory command here).
    timed: bool,
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
            timed: false,
        }
        .probed()
    }

    /// Finds out whether the histogram has a recorder behind it: the facade
    /// converts a value only for a recorder, and a sample recorded zero
    /// times records nothing.
    fn probed(mut self) -> Self {
        let kept = Cell::new(false);
        self.append_seconds.record_many(Probe(&kept), 0);
        self.timed = kept.get();
        self
    }

    /// When an append starts, if appends are timed.
    pub(crate) fn append_started(&self) -> Option<Instant> {
        self.timed.then(Instant::now)
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

    /// An append that started at `started` (see
    /// [`append_started`](Self::append_started)) ended, recording `events`.
    pub(crate) fn appended(&self, started: Option<Instant>, events: usize) {
        if let Some(started) = started {
            self.append_seconds.record(started.elapsed().as_secs_f64());
        }
        if events > 0 {
            self.appended.increment(events as u64);
        }
    }
}

/// A value that tells whether the metrics facade asked for it.
struct Probe<'a>(&'a Cell<bool>);

impl metrics::IntoF64 for Probe<'_> {
    fn into_f64(self) -> f64 {
        self.0.set(true);
        0.0
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

/// A deadline of an owner of `owner_type` was fired with this outcome,
/// `lag` after it fell due.
pub(crate) fn deadline_fired(owner_type: &str, outcome: &'static str, lag: Duration) {
    metrics::counter!(
        "cqrs_deadlines_fired_total",
        "owner_type" => owner_type.to_owned(),
        "outcome" => outcome
    )
    .increment(1);
    if outcome == "fired" {
        metrics::histogram!("cqrs_deadline_lag_seconds", "owner_type" => owner_type.to_owned())
            .record(lag.as_secs_f64());
    }
}

/// The deadlines pending, due and parked, as last counted.
pub(crate) fn deadline_counts(pending: u64, due: u64, parked: u64) {
    metrics::gauge!("cqrs_deadlines_pending").set(pending as f64);
    metrics::gauge!("cqrs_deadlines_due").set(due as f64);
    metrics::gauge!("cqrs_deadlines_parked").set(parked as f64);
}

/// A gateway sent `published` events and the broker confirmed `confirmed`.
pub(crate) fn gateway(gateway: &'static str, published: usize, confirmed: usize) {
    metrics::counter!("cqrs_gateway_published_total", "gateway" => gateway)
        .increment(published as u64);
    metrics::counter!("cqrs_gateway_confirmed_total", "gateway" => gateway)
        .increment(confirmed as u64);
}

/// A consumer's batch: how many messages came to each outcome.
pub(crate) fn consumer(consumer: &str, outcomes: &[(&'static str, u64)]) {
    for &(outcome, count) in outcomes {
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
