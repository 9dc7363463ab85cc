//! Events leave the service through a broker, and arrive in another
//! service exactly once in effect.
//!
//! A [`Gateway`] is a processor that publishes the log's events and moves
//! its checkpoint only past the events the broker confirmed: the log is the
//! outbox. A [`Consumer`] made by [`Consumer::new`] records each message it
//! receives as an event of its own app's log, under the producer's event
//! id and with that id as its command id, then acknowledges it; a message
//! delivered twice finds its id recorded and changes nothing. The app's
//! projections, process managers and event handlers then follow those
//! events like any others, from their checkpoints. One made by
//! [`Consumer::inbox`] hands each message to the app's process managers and
//! event handlers instead, and records its id in an inbox in the app's
//! database in the batch's transaction, so a message delivered twice is
//! handled once in effect, and no log holds another service's events. A
//! message that is not an event, or that the log refuses, goes to a
//! dead-letter queue with the reason.
//!
//! # Wire format
//!
//! The body is the stored payload's JSON, unchanged. The attributes are
//! CloudEvents' in binary mode ([`Outgoing::attributes`]): RabbitMQ carries
//! them as `cloudEvents_<name>` headers beside the AMQP properties
//! (`message_id`, `type`, `content_type`, `timestamp`, `correlation_id`),
//! NATS as `ce-<name>` headers beside `Nats-Msg-Id`. The routing key is
//! `<aggregate type>.<event name>` ([`RabbitMq`]'s topic exchange, and the
//! end of [`JetStream`]'s subjects).
//!
//! # Another broker
//!
//! A [`Publisher`] publishes a batch in order and says how many of its
//! events the broker confirmed; a [`Subscription`] opens the deliveries of
//! a consumer. A Kafka adapter would key each record by
//! [`Outgoing::stream`] (so one stream stays in one partition, in order),
//! put the attributes in record headers as `ce_<name>`, send a batch with
//! an idempotent producer and count the leading records acknowledged; its
//! subscription would commit a partition's offset after the consumer
//! recorded the records before it.

mod consumer;
mod gateway;
mod inbox;
mod message;
#[cfg(feature = "nats")]
mod nats;
mod outcome;
#[cfg(feature = "rabbitmq")]
mod rabbitmq;
#[cfg(any(feature = "rabbitmq", feature = "nats"))]
mod ready;
mod recorder;
mod selection;

use std::time::Duration;

pub use crate::error::BrokerError;
pub use crate::registry::{SelectionKind, UnknownSelection};
pub use crate::telemetry::{TRACEPARENT, TRACESTATE};
pub use consumer::{Consumer, ConsumerStatus};
pub use gateway::Gateway;
pub use message::{CONTENT_TYPE, MalformedMessage, Outgoing, Received, SPEC_VERSION};
#[cfg(feature = "nats")]
pub use nats::JetStream;
#[cfg(feature = "rabbitmq")]
pub use rabbitmq::RabbitMq;
pub use selection::Wildcards;

use crate::future::BoxFuture;

/// Publishes events to a broker.
pub trait Publisher: Send + Sync + 'static {
    /// Publishes `batch` in order and resolves once the broker confirmed
    /// every event of it; confirms are awaited together, not one by one.
    /// On a failure, says how many leading events were confirmed: the
    /// gateway publishes again from the first that was not.
    fn publish<'a>(
        &'a self,
        batch: &'a [Outgoing<'a>],
    ) -> BoxFuture<'a, Result<(), PublishFailure>>;
}

/// A batch the broker did not confirm whole.
#[derive(Debug)]
pub struct PublishFailure {
    /// How many events at the start of the batch the broker confirmed.
    pub confirmed: usize,
    /// Why the next one was not.
    pub error: BrokerError,
}

/// Opens a consumer's deliveries on a broker.
pub trait Subscription: Send + Sync + 'static {
    /// The patterns over `<aggregate type>.<event name>` it receives (`*`
    /// one word; `#` or a final `>` several), which `Consumer::new` checks
    /// against the registered events; empty for every event.
    fn bindings(&self) -> &[String] {
        &[]
    }

    /// How its binding patterns spell their wildcards.
    fn wildcards(&self) -> Wildcards {
        Wildcards::Amqp
    }

    /// Declares what consumer `consumer` reads (its queue, or the stream
    /// its durable consumer will read) so that every event published from
    /// then on waits there for it, whether or not it runs. Declaring again
    /// changes nothing.
    fn declare<'a>(&'a self, consumer: &'a str) -> BoxFuture<'a, Result<(), BrokerError>>;

    /// Declares what consumer `consumer` reads (its queue, or durable
    /// consumer, and where its dead letters go) and opens its deliveries:
    /// at most `prefetch` messages in one [`Deliveries::next`], and more
    /// delivered ahead, unacknowledged, so the next batch is on its way
    /// while one is handled.
    fn open<'a>(
        &'a self,
        consumer: &'a str,
        prefetch: u16,
    ) -> BoxFuture<'a, Result<Box<dyn Deliveries>, BrokerError>>;
}

/// The messages of one open subscription.
pub trait Deliveries: Send {
    /// The messages that arrive within `wait`, at least one unless it
    /// passes, in the order the broker delivers them.
    fn next(&mut self, wait: Duration) -> BoxFuture<'_, Result<Vec<Delivery>, BrokerError>>;

    /// Acknowledges messages, in their order: the broker will not deliver
    /// them again. A broker that can acknowledges them in one go
    /// (RabbitMQ: one `multiple` ack for those that lead the messages not
    /// yet acknowledged).
    fn ack<'a>(
        &'a mut self,
        deliveries: &'a [&'a Delivery],
    ) -> BoxFuture<'a, Result<(), BrokerError>>;

    /// Moves a message to the dead letters with `reason`, then
    /// acknowledges it.
    fn dead_letter<'a>(
        &'a mut self,
        delivery: &'a Delivery,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<(), BrokerError>>;

    /// Closes the subscription and gives back every message delivered and
    /// not acknowledged, so the broker delivers them again before newer
    /// ones, in their order.
    fn close(&mut self) -> BoxFuture<'_, ()>;
}

/// One message as a broker delivered it.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The broker's handle for acknowledging it.
    pub tag: u64,
    /// Its CloudEvents attributes, without the broker's prefix.
    pub attributes: Vec<(String, String)>,
    /// Its body.
    pub body: Vec<u8>,
    /// Whether the broker delivered it before.
    pub redelivered: bool,
}

impl Delivery {
    /// The value of one attribute.
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// The event it carries, or why it carries none.
    pub fn decode(&self) -> Result<Received, MalformedMessage> {
        Received::decode(|name| self.attribute(name), &self.body)
    }
}
