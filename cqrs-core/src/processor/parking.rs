//! Parked events: an event whose handler still fails after its retries is
//! set aside with its error, and the later events of its stream wait behind
//! it for that processor, while every other stream goes on. An operator
//! lists them, retries them once a fix is deployed, or skips one; the
//! decision is kept, and the segment's owner retries them in order.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use super::{Claim, FailureCause, ProcessorError, Runner, Shared, Slot, lock};
use crate::envelope::Envelope;
use crate::store::ReadLimit;
use crate::view::{Decision, ParkState, ParkedEvent, Settled, ViewError};

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
