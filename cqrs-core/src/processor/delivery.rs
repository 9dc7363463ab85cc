//! What process managers and durable event handlers share: they deliver
//! each event of their segment to code with effects outside the views (a
//! command, a call), then move the checkpoint, so an event is handled at
//! least once and, with command ids, once in effect.

use super::{Failed, ParkedEvent, Processor, ProcessorError, ProcessorKind, Step, StepEnv, Work};
use tracing::Instrument;

use crate::envelope::Envelope;
use crate::future::BoxFuture;
use crate::store::ReadLimit;

/// A processor whose events go to a handler with effects of its own.
pub(crate) trait Deliver: Send + Sync {
    /// Its name, which keys its segments.
    fn name(&self) -> &'static str;

    fn kind(&self) -> ProcessorKind;

    /// The number of segments it declares.
    fn segments(&self) -> u32;

    /// Whether it handles events stored under `event_name`.
    fn handles(&self, event_name: &str) -> bool;

    /// Hands one event to the handler.
    fn deliver<'a>(
        &'a self,
        env: &'a StepEnv<'a>,
        envelope: &'a Envelope,
    ) -> BoxFuture<'a, Result<(), ProcessorError>>;
}

impl<D: Deliver> Processor for D {
    fn name(&self) -> &'static str {
        Deliver::name(self)
    }

    fn key(&self) -> &str {
        Deliver::name(self)
    }

    fn kind(&self) -> ProcessorKind {
        Deliver::kind(self)
    }

    fn segments(&self) -> u32 {
        Deliver::segments(self)
    }

    fn step<'a>(
        &'a self,
        env: &'a StepEnv<'a>,
        work: &'a Work<'a>,
        limit: ReadLimit,
    ) -> BoxFuture<'a, Result<Step, Failed>> {
        Box::pin(step(self, env, work, limit))
    }

    fn retry<'a>(
        &'a self,
        env: &'a StepEnv<'a>,
        work: &'a Work<'a>,
        envelope: &'a Envelope,
    ) -> BoxFuture<'a, Result<(), Failed>> {
        Box::pin(retry(self, env, work, envelope))
    }

    fn receive<'a>(
        &'a self,
        env: &'a StepEnv<'a>,
        envelope: &'a Envelope,
    ) -> Option<BoxFuture<'a, Result<(), ProcessorError>>> {
        self.handles(&envelope.event_name)
            .then(|| self.deliver(env, envelope))
    }
}

/// One batch of a segment: delivers its events, then moves the checkpoint,
/// also past every event delivered before a failure (an effect is not
/// undone when a later event fails).
async fn step(
    processor: &dyn Deliver,
    env: &StepEnv<'_>,
    work: &Work<'_>,
    limit: ReadLimit,
) -> Result<Step, Failed> {
    let (checkpoint, batch) = work.read(env, limit).await?;
    let Some(last) = batch.last().map(|envelope| envelope.position) else {
        return Ok(Step::Idle(checkpoint));
    };
    let (mine, parked) = work.split(&batch, |name| processor.handles(name));
    for envelope in mine {
        let handling = crate::telemetry::handling(processor.name(), envelope);
        if let Err(error) = processor.deliver(env, envelope).instrument(handling).await {
            // Up to the event before it, with the waiting events before it.
            let delivered = envelope.position - 1;
            let before: Vec<ParkedEvent> = parked
                .into_iter()
                .filter(|waiting| waiting.position < envelope.position)
                .collect();
            if delivered > checkpoint {
                work.advance(env, checkpoint, delivered, before).await?;
            }
            let committed = delivered.max(checkpoint);
            return Err(Failed::at(envelope, error).after_committing(committed));
        }
    }
    work.advance(env, checkpoint, last, parked).await
}

/// Delivers one parked event again, then records that it was handled.
async fn retry(
    processor: &dyn Deliver,
    env: &StepEnv<'_>,
    work: &Work<'_>,
    envelope: &Envelope,
) -> Result<(), Failed> {
    processor
        .deliver(env, envelope)
        .instrument(crate::telemetry::handling(processor.name(), envelope))
        .await
        .map_err(|error| Failed::at(envelope, error))?;
    work.handled(env, envelope).await
}
