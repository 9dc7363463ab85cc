//! [`HandlerRunner`]: a free `#[event_handler]` function run as a processor,
//! from its own checkpoint.

use std::any::Any;

use super::delivery::Deliver;
use super::{ProcessorError, ProcessorKind, StepEnv};
use crate::envelope::Envelope;
use crate::error::DecodeError;
use crate::future::BoxFuture;
use crate::handler::{HandlerFn, HandlerFuture};

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

    async fn call(&self, envelope: &Envelope) -> Result<(), ProcessorError> {
        let decoded = (self.decode)(envelope)?;
        let outcome = match (self.call)(&*decoded) {
            HandlerFuture::Skip => Ok(()),
            HandlerFuture::Ready(outcome) => outcome,
            HandlerFuture::Pending(future) => future.await,
        };
        outcome.map_err(ProcessorError::Handler)
    }
}

impl Deliver for HandlerRunner {
    fn name(&self) -> &'static str {
        self.name
    }

    fn kind(&self) -> ProcessorKind {
        ProcessorKind::EventHandler
    }

    fn segments(&self) -> u32 {
        // Set by the builder's `segments`, as a function has no attribute for it.
        1
    }

    fn handles(&self, event_name: &str) -> bool {
        event_name == self.event_name
    }

    fn deliver<'a>(
        &'a self,
        _env: &'a StepEnv<'a>,
        envelope: &'a Envelope,
    ) -> BoxFuture<'a, Result<(), ProcessorError>> {
        Box::pin(self.call(envelope))
    }
}
