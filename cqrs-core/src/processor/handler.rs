//! [`HandlerRunner`]: a free `#[event_handler]` function run as a processor,
//! from its own checkpoint.

use std::any::Any;

use super::{Failed, Processor, ProcessorError, ProcessorKind, Step, StepEnv};
use crate::envelope::Envelope;
use crate::error::DecodeError;
use crate::future::BoxFuture;
use crate::handler::{HandlerFn, HandlerFuture};
use crate::store::ReadLimit;

/// Decodes an envelope of the log into the `Envelope<E>` a handler takes.
pub type DecodeFn = fn(&Envelope) -> Result<Box<dyn Any + Send + Sync>, Box<DecodeError>>;

/// Delivers each event of one stored name to one handler function, at least
/// once: the checkpoint moves past an event only after its handler returned
/// `Ok`, so a crash between a commit and the delivery only delays it.
pub(crate) struct HandlerRunner {
    name: &'static str,
    event_name: &'static str,
    decode: DecodeFn,
    call: HandlerFn,
}

impl HandlerRunner {
    pub(crate) fn new(
        name: &'static str,
        event_name: &'static str,
        decode: DecodeFn,
        call: HandlerFn,
    ) -> Self {
        Self {
            name,
            event_name,
            decode,
            call,
        }
    }

    async fn run_step(&self, env: &StepEnv<'_>, limit: ReadLimit) -> Result<Step, Failed> {
        let views = env.views.backend();
        let checkpoint = views
            .checkpoint(self.name)
            .await
            .map_err(Failed::checkpoint)?;
        let batch = env
            .store
            .read_all(checkpoint + 1, limit)
            .await
            .map_err(|error| Failed::after(checkpoint, error))?;
        let Some(last) = batch.last().map(|envelope| envelope.position) else {
            return Ok(Step::Idle(checkpoint));
        };
        // The checkpoint moves past every event delivered before a failure.
        let mut delivered = checkpoint;
        for envelope in &batch {
            if envelope.event_name == self.event_name
                && let Err(error) = self.deliver(envelope).await
            {
                if delivered > checkpoint {
                    views
                        .advance(self.name, checkpoint, delivered)
                        .await
                        .map_err(|error| Failed::after(delivered, error))?;
                }
                return Err(Failed::at(envelope, error).after_committing(delivered));
            }
            delivered = envelope.position;
        }
        // Another runner moving the checkpoint first is harmless: delivery is
        // at least once.
        views
            .advance(self.name, checkpoint, last)
            .await
            .map_err(|error| Failed::after(checkpoint, error))?;
        Ok(Step::Advanced(last))
    }

    async fn deliver(&self, envelope: &Envelope) -> Result<(), ProcessorError> {
        let decoded = (self.decode)(envelope)?;
        let outcome = match (self.call)(&*decoded) {
            HandlerFuture::Skip => Ok(()),
            HandlerFuture::Ready(outcome) => outcome,
            HandlerFuture::Pending(future) => future.await,
        };
        outcome.map_err(ProcessorError::Handler)
    }
}

impl Processor for HandlerRunner {
    fn name(&self) -> &'static str {
        self.name
    }

    fn kind(&self) -> ProcessorKind {
        ProcessorKind::EventHandler
    }

    fn step<'a>(
        &'a self,
        env: &'a StepEnv<'a>,
        limit: ReadLimit,
    ) -> BoxFuture<'a, Result<Step, Failed>> {
        Box::pin(self.run_step(env, limit))
    }

    fn reset<'a>(&'a self, _env: &'a StepEnv<'a>) -> BoxFuture<'a, Result<(), ProcessorError>> {
        // What a handler did cannot be undone: it is never rebuilt.
        Box::pin(std::future::ready(Err(ProcessorError::Unsupported {
            processor: self.name,
            kind: ProcessorKind::EventHandler,
            reason: "only projections are rebuilt",
        })))
    }
}
