//! [`Gateway`]: a processor that publishes the log's events to a broker,
//! moving its checkpoint only past events the broker confirmed.

use std::sync::Arc;

use tracing::Instrument;

use super::selection::{self, Wildcards};
use super::{BrokerError, Outgoing, PublishFailure, Publisher};
use crate::aggregate::{Aggregate, EventPayload};
use crate::app::CqrsBuilder;
use crate::envelope::Envelope;
use crate::future::BoxFuture;
use crate::processor::{
    Failed, ParkedEvent, Processor, ProcessorError, ProcessorKind, Step, StepEnv, Work,
};
use crate::registry::{SelectionKind, UnknownSelection};
use crate::store::ReadLimit;

/// Publishes the events of the log to a broker, in the order of each
/// stream, at least once: a batch is published with its confirms
/// pipelined, and the checkpoint moves only past the events the broker
/// confirmed. The log is the outbox: nothing else is written first.
///
/// A gateway is a processor like the others: segmented by stream, leased
/// among the app's instances, retried and parked by the app's
/// [`RetryPolicy`](crate::processor::RetryPolicy) when the broker refuses
/// an event, and retried without end while the broker is unreachable.
///
/// # Examples
///
/// ```no_run
/// # #[cfg(feature = "rabbitmq")] {
/// # use cqrs_core::prelude::*;
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Debug, Clone, Serialize, Deserialize)]
/// # pub struct Place;
/// # #[derive(Debug, Clone, Command)]
/// # pub enum OrderCommand { Place(Place) }
/// # #[derive(Debug, Clone, Serialize, Deserialize)]
/// # pub struct Placed;
/// # #[derive(Debug, Clone, Event)]
/// # pub enum OrderEvent { Placed(Placed) }
/// # #[derive(Debug, thiserror::Error)]
/// # #[error("never")]
/// # pub struct Never;
/// # #[derive(Debug, Default, Aggregate)]
/// # #[aggregate(name = "Order", command = OrderCommand, event = OrderEvent, error = Never)]
/// # pub struct Order;
/// # #[aggregate_impl]
/// # impl Order {
/// #     #[command_handler(create)]
/// #     fn place(&self, _: Place) -> Result<Placed, Never> { Ok(Placed) }
/// #     #[apply]
/// #     fn placed(&mut self, _: &Placed) {}
/// # }
/// use cqrs_core::broker::{Gateway, RabbitMq};
/// use cqrs_core::{Cqrs, MemoryStore};
///
/// // By type: publishes Order's events. By name, `.aggregate_types(["order"])`
/// // would stop `build()` with `BuildError::UnknownSelection`
/// // ("... did you mean `Order`?").
/// let rabbit = RabbitMq::new("amqp://guest:guest@127.0.0.1:5672/%2f", "orders");
/// let app = Cqrs::builder(MemoryStore::new())
///     .gateway(Gateway::new("orders.gateway", rabbit).aggregate::<Order>())
///     .build()?;
/// # }
/// # Ok::<_, cqrs_core::BuildError>(())
/// ```
pub struct Gateway {
    name: &'static str,
    publisher: Arc<dyn Publisher>,
    aggregate_types: Option<Vec<String>>,
    events: Option<Vec<String>>,
    /// The names of those given as strings, checked when the app is built.
    named_types: Vec<String>,
    named_events: Vec<String>,
    segments: u32,
    batch: usize,
}

impl CqrsBuilder {
    /// Runs a [`Gateway`] that publishes the log's events to a broker, as a
    /// processor of this app. A name it selects that nothing registered has
    /// is [`BuildError::UnknownSelection`](crate::BuildError::UnknownSelection)
    /// at [`build`](CqrsBuilder::build).
    pub fn gateway(self, gateway: Gateway) -> Self {
        let selected = gateway.check();
        self.explicit_processor(Box::new(gateway), selected)
    }
}

impl Gateway {
    /// A gateway named `name` (which keys its checkpoints) that publishes
    /// every event of the log through `publisher`.
    pub fn new(name: &'static str, publisher: impl Publisher) -> Self {
        Self {
            name,
            publisher: Arc::new(publisher),
            aggregate_types: None,
            events: None,
            named_types: Vec::new(),
            named_events: Vec::new(),
            segments: 1,
            batch: 2000,
        }
    }

    /// Publishes the events of aggregate `A` (with those of any other
    /// aggregate selected; every aggregate's when none is).
    pub fn aggregate<A: Aggregate>(mut self) -> Self {
        self.aggregate_types
            .get_or_insert_with(Vec::new)
            .push(A::NAME.to_owned());
        self
    }

    /// Publishes the event `P` (with any other event selected; every
    /// event when none is).
    pub fn event<P: EventPayload>(mut self) -> Self {
        self.events
            .get_or_insert_with(Vec::new)
            .push(P::NAME.to_owned());
        self
    }

    /// Publishes the events of these aggregate types, by stored name
    /// (`#[aggregate(name = ..)]`). A name no registered aggregate has is
    /// [`BuildError::UnknownSelection`](crate::BuildError::UnknownSelection)
    /// when the app is built.
    pub fn aggregate_types<S: Into<String>>(mut self, types: impl IntoIterator<Item = S>) -> Self {
        let types: Vec<String> = types.into_iter().map(Into::into).collect();
        self.named_types.extend(types.iter().cloned());
        self.aggregate_types
            .get_or_insert_with(Vec::new)
            .extend(types);
        self
    }

    /// Publishes the events stored under these names. A name no registered
    /// event has is
    /// [`BuildError::UnknownSelection`](crate::BuildError::UnknownSelection)
    /// when the app is built.
    pub fn events<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        let names: Vec<String> = names.into_iter().map(Into::into).collect();
        self.named_events.extend(names.iter().cloned());
        self.events.get_or_insert_with(Vec::new).extend(names);
        self
    }

    /// Checks the names given as strings against the registry.
    pub(crate) fn check(&self) -> Result<(), UnknownSelection> {
        let owner = format!("gateway `{}`", self.name);
        selection::check(
            &owner,
            SelectionKind::AggregateType,
            &self.named_types,
            Wildcards::Amqp,
        )?;
        selection::check(
            &owner,
            SelectionKind::Event,
            &self.named_events,
            Wildcards::Amqp,
        )
    }

    /// Publishes from `segments` segments, which the app's instances share
    /// (1 by default). Each stream stays in one segment, so its events are
    /// published in order whatever the count.
    pub fn segments(mut self, segments: u32) -> Self {
        self.segments = segments.max(1);
        self
    }

    /// Reads up to `events` events of the log per batch (2,000 by default,
    /// more than other processors: a broker confirms a large batch about
    /// as fast as a small one) and publishes its segment's share of them
    /// with the confirms awaited together.
    pub fn batch(mut self, events: usize) -> Self {
        self.batch = events.max(1);
        self
    }

    /// Whether it publishes events of this aggregate type and name.
    fn publishes(&self, aggregate_type: &str, event_name: &str) -> bool {
        let listed = |list: &Option<Vec<String>>, value: &str| {
            list.as_ref()
                .is_none_or(|list| list.iter().any(|item| item == value))
        };
        listed(&self.aggregate_types, aggregate_type) && listed(&self.events, event_name)
    }

    /// Publishes the segment's events after its checkpoint and moves the
    /// checkpoint past those confirmed; on a failure, up to the event
    /// before the first one not confirmed.
    async fn run_step(
        &self,
        env: &StepEnv<'_>,
        work: &Work<'_>,
        limit: ReadLimit,
    ) -> Result<Step, Failed> {
        // One event at a time while a failure is narrowed down.
        let limit = if limit.events <= 1 {
            limit
        } else {
            ReadLimit {
                events: self.batch,
                ..limit
            }
        };
        let (checkpoint, batch) = work.read(env, limit).await?;
        let Some(last) = batch.last().map(|envelope| envelope.position) else {
            return Ok(Step::Idle(checkpoint));
        };
        let (mine, parked) = work.split(&batch, |_| true);
        let mine: Vec<&Envelope> = mine
            .into_iter()
            .filter(|event| self.publishes(&event.aggregate_type, &event.event_name))
            .collect();
        let parked: Vec<ParkedEvent> = parked
            .into_iter()
            .filter(|event| self.publishes(&event.aggregate_type, &event.event_name))
            .collect();
        if mine.is_empty() {
            return work.advance(env, checkpoint, last, parked).await;
        }
        let outgoing: Vec<Outgoing<'_>> = mine
            .iter()
            .map(|envelope| Outgoing::new(envelope))
            .collect();
        let Err(failure) = self.publish(&outgoing).await else {
            return work.advance(env, checkpoint, last, parked).await;
        };
        let Some(&failed) = mine.get(failure.confirmed) else {
            // Every event was confirmed after all.
            return work.advance(env, checkpoint, last, parked).await;
        };
        let confirmed = failed.position - 1;
        let mut committed = checkpoint;
        if confirmed > checkpoint {
            let before = parked
                .into_iter()
                .filter(|waiting| waiting.position < failed.position)
                .collect();
            if let Step::Advanced(position) =
                work.advance(env, checkpoint, confirmed, before).await?
            {
                committed = position;
            }
        }
        let error = ProcessorError::Broker(failure.error);
        // Only a refusal is the event's; an outage or a bad setup is not
        // parked with it.
        if matches!(error, ProcessorError::Broker(BrokerError::Refused { .. })) {
            Err(Failed::at(failed, error).after_committing(committed))
        } else {
            Err(Failed::after(committed, error).after_committing(committed))
        }
    }

    /// Publishes a batch in a `gateway.publish` span, and counts what was
    /// sent and confirmed.
    async fn publish(&self, outgoing: &[Outgoing<'_>]) -> Result<(), PublishFailure> {
        let span = tracing::info_span!(
            "gateway.publish",
            gateway = self.name,
            events = outgoing.len(),
            first_position = outgoing.first().map(|event| event.envelope().position),
            confirmed = tracing::field::Empty,
        );
        // One span per event, in the event's own trace, open until the
        // batch is confirmed; none made for a batch of thousands when no
        // subscriber takes them.
        let traced = tracing::span_enabled!(tracing::Level::INFO);
        let sends: Vec<tracing::Span> = outgoing
            .iter()
            .filter(|_| traced)
            .map(|event| {
                let envelope = event.envelope();
                let send = tracing::info_span!(
                    "gateway.send",
                    gateway = self.name,
                    position = envelope.position,
                    event_id = %envelope.event_id,
                );
                crate::telemetry::follow(&send, &envelope.metadata);
                send
            })
            .collect();
        let published = self
            .publisher
            .publish(outgoing)
            .instrument(span.clone())
            .await;
        drop(sends);
        let confirmed = match &published {
            Ok(()) => outgoing.len(),
            Err(failure) => failure.confirmed.min(outgoing.len()),
        };
        span.record("confirmed", confirmed);
        crate::telemetry::gateway(self.name, outgoing.len(), confirmed);
        published
    }

    /// Publishes one parked event again, then records it handled.
    async fn run_retry(
        &self,
        env: &StepEnv<'_>,
        work: &Work<'_>,
        envelope: &Envelope,
    ) -> Result<(), Failed> {
        self.publish(&[Outgoing::new(envelope)])
            .await
            .map_err(|failure| Failed::at(envelope, ProcessorError::Broker(failure.error)))?;
        work.handled(env, envelope).await
    }
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("name", &self.name)
            .field("aggregate_types", &self.aggregate_types)
            .field("events", &self.events)
            .field("segments", &self.segments)
            .field("batch", &self.batch)
            .finish_non_exhaustive()
    }
}

impl Processor for Gateway {
    fn name(&self) -> &'static str {
        self.name
    }

    fn key(&self) -> &str {
        self.name
    }

    fn kind(&self) -> ProcessorKind {
        ProcessorKind::Gateway
    }

    fn segments(&self) -> u32 {
        self.segments
    }

    fn step<'a>(
        &'a self,
        env: &'a StepEnv<'a>,
        work: &'a Work<'a>,
        limit: ReadLimit,
    ) -> BoxFuture<'a, Result<Step, Failed>> {
        Box::pin(self.run_step(env, work, limit))
    }

    fn retry<'a>(
        &'a self,
        env: &'a StepEnv<'a>,
        work: &'a Work<'a>,
        envelope: &'a Envelope,
    ) -> BoxFuture<'a, Result<(), Failed>> {
        Box::pin(self.run_retry(env, work, envelope))
    }
}
