//! Delivery to inline handlers (`#[event_handler(inline)]` and closures)
//! right after a commit, in the process that made it.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use crate::aggregate::{Event, EventPayload};
use crate::envelope::Envelope;
use crate::handler::{HandlerFailure, HandlerFn, HandlerFuture, HandlerOutcome};

type Call = Arc<dyn for<'a> Fn(&'a (dyn Any + Send + Sync)) -> HandlerFuture<'a> + Send + Sync>;

#[derive(Clone)]
struct EventHandler {
    name: Arc<str>,
    call: Call,
}

/// The inline handlers an app delivers to, by event enum and stored name.
#[derive(Clone, Default)]
pub(crate) struct InlineHandlers {
    by_event: foldhash::HashMap<TypeId, foldhash::HashMap<&'static str, Vec<EventHandler>>>,
}

impl InlineHandlers {
    /// Adds a registered `#[event_handler(inline)]` function.
    pub(crate) fn register(
        &mut self,
        name: &'static str,
        event_enum: TypeId,
        event_name: &'static str,
        call: HandlerFn,
    ) {
        self.insert(
            event_enum,
            event_name,
            EventHandler {
                name: name.into(),
                call: Arc::new(call),
            },
        );
    }

    pub(crate) fn register_fn<P, O>(
        &mut self,
        name: &str,
        handler: impl Fn(&P, &Envelope<P::Event>) -> O + Send + Sync + 'static,
    ) where
        P: EventPayload,
        O: HandlerOutcome,
    {
        let call = higher_ranked(move |envelope| {
            let Some(envelope) = envelope.downcast_ref::<Envelope<P::Event>>() else {
                return HandlerFuture::Skip;
            };
            match P::from_event(&envelope.payload) {
                Some(event) => HandlerFuture::Ready(handler(event, envelope).into_outcome()),
                None => HandlerFuture::Skip,
            }
        });
        self.insert(
            TypeId::of::<P::Event>(),
            P::NAME,
            EventHandler {
                name: name.into(),
                call: Arc::new(call),
            },
        );
    }

    fn insert(&mut self, event_enum: TypeId, event_name: &'static str, handler: EventHandler) {
        self.by_event
            .entry(event_enum)
            .or_default()
            .entry(event_name)
            .or_default()
            .push(handler);
    }

    pub(crate) fn len(&self) -> usize {
        self.by_event
            .values()
            .flat_map(HashMap::values)
            .map(Vec::len)
            .sum()
    }

    /// Runs every handler of every envelope in order, and reports the failures.
    pub(crate) async fn deliver<E: Event>(&self, envelopes: &[Envelope<E>]) -> Vec<HandlerFailure> {
        let mut failures = Vec::new();
        let Some(by_name) = self.by_event.get(&TypeId::of::<E>()) else {
            return failures;
        };
        for envelope in envelopes {
            let Some(handlers) = by_name.get(envelope.payload.event_type().name) else {
                continue;
            };
            for handler in handlers {
                let outcome = match (handler.call)(envelope) {
                    HandlerFuture::Skip => continue,
                    HandlerFuture::Ready(outcome) => outcome,
                    HandlerFuture::Pending(future) => future.await,
                };
                if let Err(error) = outcome {
                    tracing::warn!(
                        handler = &*handler.name,
                        event_id = %envelope.event_id,
                        event_name = %envelope.event_name,
                        "event handler failed: {error}"
                    );
                    failures.push(HandlerFailure {
                        handler: handler.name.to_string(),
                        event_id: envelope.event_id,
                        event_name: envelope.event_name.clone(),
                        error: Arc::from(error),
                    });
                }
            }
        }
        failures
    }
}

/// Makes a closure's signature generic over the envelope's lifetime, which
/// closure inference does not do on its own.
fn higher_ranked<F>(call: F) -> F
where
    F: for<'a> Fn(&'a (dyn Any + Send + Sync)) -> HandlerFuture<'a>,
{
    call
}

impl fmt::Debug for InlineHandlers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self
            .by_event
            .values()
            .flat_map(HashMap::values)
            .flatten()
            .map(|handler| &*handler.name)
            .collect();
        f.debug_struct("EventHandlers")
            .field("handlers", &names)
            .finish()
    }
}
