//! The metrics the runtime records through the `metrics` facade (their
//! names and labels are in the module docs above): a command's handles,
//! registered once per aggregate type, and what processors, gateways and
//! consumers report.

use std::time::Duration;

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
