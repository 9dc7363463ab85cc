//! Parked events: an event whose handler still fails after its retries is
//! set aside with its error, and the later events of its stream wait behind
//! it for that processor, while every other stream goes on. An operator
//! lists them, retries them once a fix is deployed, or skips one; the
//! decision is kept, and the segment's owner retries them in order.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Claim, FailureCause, ProcessorError, Runner, Shared, Slot, lock};
use crate::envelope::Envelope;
use crate::store::ReadLimit;
use crate::view::ViewError;

/// An event a processor set aside.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ParkedEvent {
    /// The processor (its checkpoint key).
    pub processor: String,
    /// The segment the event belongs to.
    pub segment: u32,
    /// The event's position in the log.
    pub position: u64,
    /// The event's id.
    pub event_id: Uuid,
    /// Its stream's aggregate type.
    pub aggregate_type: String,
    /// Its stream's aggregate id.
    pub aggregate_id: String,
    /// Its stored name.
    pub event_name: String,
    /// Why its handler failed; `None` for an event that waits behind an
    /// earlier parked event of its stream and was never tried.
    pub error: Option<String>,
    /// How many times it was tried.
    pub attempts: u32,
    /// When it was parked.
    pub parked_at: DateTime<Utc>,
    /// Where it stands.
    pub state: ParkState,
    /// When it was retried or skipped.
    pub decided_at: Option<DateTime<Utc>>,
}

impl ParkedEvent {
    /// `envelope`, parked by `processor` in `segment`.
    pub(crate) fn of(
        processor: &str,
        segment: u32,
        envelope: &Envelope,
        error: Option<String>,
        attempts: u32,
    ) -> Self {
        Self {
            processor: processor.to_owned(),
            segment,
            position: envelope.position,
            event_id: envelope.event_id,
            aggregate_type: envelope.aggregate_type.clone(),
            aggregate_id: envelope.aggregate_id.clone(),
            event_name: envelope.event_name.clone(),
            error,
            attempts,
            parked_at: Utc::now(),
            state: ParkState::Parked,
            decided_at: None,
        }
    }

    /// Whether it still holds up its stream.
    pub fn is_blocking(&self) -> bool {
        matches!(self.state, ParkState::Parked | ParkState::Retrying)
    }

    /// Its stream, as (aggregate type, aggregate id).
    pub fn stream(&self) -> (String, String) {
        (self.aggregate_type.clone(), self.aggregate_id.clone())
    }
}

/// Where a parked event stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ParkState {
    /// Set aside; its stream waits.
    Parked,
    /// Asked to be retried; the segment's owner retries it next, in order.
    Retrying,
    /// Retried and handled: kept as a record.
    Retried,
    /// Skipped by an operator, never handled: kept as a record.
    Skipped,
}

impl ParkState {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Parked => "parked",
            Self::Retrying => "retrying",
            Self::Retried => "retried",
            Self::Skipped => "skipped",
        }
    }

    /// The state stored as `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "parked" => Self::Parked,
            "retrying" => Self::Retrying,
            "retried" => Self::Retried,
            "skipped" => Self::Skipped,
            _ => return None,
        })
    }
}

/// What an operator decides about a parked event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Decision {
    /// Handle the parked events of its stream again, in order (after a
    /// fix is deployed).
    Retry,
    /// Never handle this event; the events of its stream behind it are
    /// handled next.
    Skip,
}

/// How a retried parked event came out, recorded in the batch that retried it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Settled {
    /// Handled: kept as [`ParkState::Retried`].
    Handled,
    /// Failed again: parked again with this error.
    Failed(String),
    /// Not tried, because an earlier event of its stream failed again: back
    /// to waiting.
    Waiting,
}

impl Shared {
    /// Sets a failing event aside: its stream waits behind it, the segment's
    /// checkpoint moves past it. False if the checkpoint is not right
    /// before it, so the events in between would be passed over.
    pub(super) async fn park(
        &self,
        runner: &Runner,
        slot: &Slot,
        claim: Claim,
        envelope: &Envelope,
        error: String,
        attempts: u32,
    ) -> Result<bool, ViewError> {
        let env = self.env();
        let work = runner.work(slot, claim);
        let mut transaction = work.begin(&env).await?;
        let checkpoint = transaction.checkpoint();
        if checkpoint >= envelope.position {
            return Ok(true);
        }
        if checkpoint + 1 < envelope.position {
            return Ok(false);
        }
        let event = ParkedEvent::of(runner.key(), slot.index, envelope, Some(error), attempts);
        let stream = event.stream();
        transaction.park(vec![event]).await?;
        transaction.commit(envelope.position).await?;
        lock(&slot.blocked).insert(stream, ParkState::Parked);
        slot.parked.fetch_add(1, Ordering::SeqCst);
        runner.progressed(slot, envelope.position);
        lock(&runner.state).failure = None;
        tracing::warn!(
            processor = runner.name(),
            segment = slot.index,
            position = envelope.position,
            "event parked"
        );
        Ok(true)
    }

    /// Retries the segment's parked events marked for a retry, stream by
    /// stream in log order; a stream whose event fails again stays parked
    /// from that event on.
    pub(super) async fn retry_parked(
        &self,
        runner: &Runner,
        slot: &Slot,
        claim: Claim,
    ) -> Result<(), ProcessorError> {
        let backend = self.views.backend();
        let env = self.env();
        let work = runner.work(slot, claim);
        loop {
            let parked: Vec<ParkedEvent> = backend
                .parked(runner.key())
                .await?
                .into_iter()
                .filter(|event| event.segment == slot.index && event.is_blocking())
                .collect();
            let retrying: Vec<&ParkedEvent> = parked
                .iter()
                .filter(|event| event.state == ParkState::Retrying)
                .collect();
            if retrying.is_empty() {
                // Events that waited behind one that was skipped or handled,
                // but were parked after the decision: their turn now.
                let head_failed = |stream: &(String, String)| {
                    parked.iter().any(|event| {
                        &event.stream() == stream
                            && event.state == ParkState::Parked
                            && event.error.is_some()
                    })
                };
                let orphan = parked.iter().find(|event| !head_failed(&event.stream()));
                if let Some(orphan) = orphan {
                    backend
                        .decide(runner.key(), orphan.position, Decision::Retry)
                        .await?;
                    continue;
                }
                let blocked: HashMap<(String, String), ParkState> = parked
                    .iter()
                    .map(|event| (event.stream(), event.state))
                    .collect();
                slot.parked.store(parked.len() as u64, Ordering::SeqCst);
                *lock(&slot.blocked) = blocked;
                return Ok(());
            }
            let mut failed_streams: Vec<(String, String)> = Vec::new();
            for event in retrying {
                let stream = event.stream();
                let outcome = if failed_streams.contains(&stream) {
                    Settled::Waiting
                } else {
                    let envelope = self
                        .store
                        .read_all(event.position, ReadLimit::events(1))
                        .await?
                        .into_iter()
                        .next()
                        .filter(|envelope| envelope.event_id == event.event_id);
                    match envelope {
                        // The log does not hold it there: keep it parked, say why.
                        None => Settled::Failed(format!(
                            "event {} is not at position {} of the log",
                            event.event_id, event.position
                        )),
                        Some(envelope) => {
                            match runner.processor.retry(&env, &work, &envelope).await {
                                Ok(()) => {
                                    tracing::info!(
                                        processor = runner.name(),
                                        position = event.position,
                                        "parked event handled"
                                    );
                                    continue;
                                }
                                Err(failed)
                                    if failed.is_fenced()
                                        || failed.error.cause() != FailureCause::Event =>
                                {
                                    return Err(failed.error);
                                }
                                Err(failed) => Settled::Failed(failed.error.to_string()),
                            }
                        }
                    }
                };
                if outcome != Settled::Waiting {
                    failed_streams.push(stream);
                }
                let mut transaction = work.begin(&env).await?;
                let checkpoint = transaction.checkpoint();
                transaction.settle(event.position, outcome).await?;
                transaction.commit(checkpoint).await?;
            }
        }
    }
}
