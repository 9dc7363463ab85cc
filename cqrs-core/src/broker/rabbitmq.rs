//! [`RabbitMq`]: the gateway's publisher and the consumer's subscription on
//! RabbitMQ (lapin), through one durable topic exchange.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::Utc;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
};

use super::selection;
use super::{
    BrokerError, CONTENT_TYPE, Deliveries, Delivery, Outgoing, PublishFailure, Publisher,
    Subscription,
};
use crate::aggregate::{Aggregate, EventPayload};
use crate::future::BoxFuture;

const BROKER: &str = "RabbitMQ";

/// The prefix of the CloudEvents attributes in the headers.
pub(crate) const HEADER_PREFIX: &str = "cloudEvents_";

/// The header that says why a message was dead-lettered.
const REASON: &str = "cqrs_dead_letter_reason";

/// How long one exchange with the broker (connecting and declaring, a
/// publisher confirm, an ack) may take before the link counts as lost: the
/// client has no such bound, and a handshake with a broker that stops
/// half-way, or a confirm on a connection that died without a word, would
/// otherwise be waited for forever.
const PATIENCE: Duration = Duration::from_secs(30);

/// A RabbitMQ broker and the durable topic exchange the events go through.
///
/// As a [`Publisher`], it publishes each event as a persistent message with
/// routing key `<aggregate type>.<event name>` and waits for the publisher
/// confirms of a whole batch at once. As a [`Subscription`], consumer `c`
/// reads the durable queue `c`, bound to the exchange by
/// [`bind`](Self::bind)'s patterns (every event by default), and its dead
/// letters go to the durable queue `c.dead-letter`.
#[derive(Debug)]
pub struct RabbitMq {
    url: String,
    exchange: String,
    bindings: Vec<String>,
    link: async_lock::Mutex<Option<Link>>,
}

/// An open connection and its channel in confirm mode.
#[derive(Debug)]
struct Link {
    connection: Connection,
    channel: Channel,
}

impl RabbitMq {
    /// The broker at `url` (`amqp://user:password@host:port/vhost`) and the
    /// exchange `exchange`, declared durable and of type topic when missing.
    pub fn new(url: impl Into<String>, exchange: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            exchange: exchange.into(),
            bindings: Vec::new(),
            link: async_lock::Mutex::new(None),
        }
    }

    /// Consumes only the events whose routing key matches one of these
    /// patterns, such as `Order.OrderPlaced` or `Order.*` (`*` one word,
    /// `#` any number).
    /// A pattern that matches no event of a registered aggregate is
    /// refused by `Consumer::new`.
    pub fn bind<S: Into<String>>(mut self, patterns: impl IntoIterator<Item = S>) -> Self {
        self.bindings.extend(patterns.into_iter().map(Into::into));
        self
    }

    /// Consumes the events of aggregate `A` (binds `<A::NAME>.#`).
    pub fn aggregate<A: Aggregate>(mut self) -> Self {
        self.bindings.push(format!("{}.#", A::NAME));
        self
    }

    /// Consumes the event `P` (binds the routing key of each registered
    /// aggregate that records it).
    pub fn event<P: EventPayload>(mut self) -> Self {
        self.bindings.extend(selection::event_bindings(P::NAME));
        self
    }

    /// Connects, opens a channel in confirm mode and declares the exchange.
    async fn connect(&self) -> Result<Link, BrokerError> {
        within("connecting", self.connect_now()).await
    }

    async fn connect_now(&self) -> Result<Link, BrokerError> {
        let connection = Connection::connect(&self.url, ConnectionProperties::default())
            .await
            .map_err(unavailable)?;
        let channel = connection.create_channel().await.map_err(unavailable)?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(setup)?;
        channel
            .exchange_declare(
                self.exchange.as_str().into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(setup)?;
        Ok(Link {
            connection,
            channel,
        })
    }

    /// The publishing channel, connecting first if there is none.
    async fn channel(&self) -> Result<Channel, BrokerError> {
        let mut link = self.link.lock().await;
        if let Some(open) = &*link
            && open.connection.status().connected()
            && open.channel.status().connected()
        {
            return Ok(open.channel.clone());
        }
        if let Some(old) = link.take() {
            close(old.connection);
        }
        let open = self.connect().await?;
        let channel = open.channel.clone();
        *link = Some(open);
        Ok(channel)
    }

    async fn publish_batch(&self, batch: &[Outgoing<'_>]) -> Result<(), PublishFailure> {
        let failure = |confirmed, error| PublishFailure { confirmed, error };
        let channel = self.channel().await.map_err(|error| failure(0, error))?;
        let mut confirms = Vec::with_capacity(batch.len());
        let mut sent = Ok(());
        for event in batch {
            let send = channel.basic_publish(
                self.exchange.as_str().into(),
                event.routing_key().into(),
                BasicPublishOptions::default(),
                event.body(),
                properties(event),
            );
            match within("sending", async { send.await.map_err(unavailable) }).await {
                Ok(confirm) => confirms.push(confirm),
                Err(error) => {
                    sent = Err(error);
                    break;
                }
            }
        }
        // A send that failed leaves the events from it on unconfirmed.
        let sent_count = confirms.len();
        for (index, confirm) in confirms.into_iter().enumerate() {
            let confirmed = within("a publisher confirm", async {
                confirm.await.map_err(unavailable)
            });
            let error = match confirmed.await {
                Ok(Confirmation::Ack(_)) => continue,
                Ok(Confirmation::Nack(_)) => BrokerError::Refused {
                    broker: BROKER,
                    id: batch[index].id(),
                    reason: "negative publisher confirm".to_owned(),
                },
                Ok(Confirmation::NotRequested) => setup_error("the channel is not in confirm mode"),
                Err(error) => error,
            };
            if error.is_transient() {
                self.disconnect().await;
            }
            return Err(failure(index, error));
        }
        let Err(error) = sent else {
            return Ok(());
        };
        if error.is_transient() {
            self.disconnect().await;
        }
        Err(failure(sent_count, error))
    }

    async fn disconnect(&self) {
        if let Some(old) = self.link.lock().await.take() {
            close(old.connection);
        }
    }

    /// Declares consumer `consumer`'s durable queue, bound by the patterns,
    /// and its dead-letter queue; returns the dead-letter queue's name.
    async fn declare_queue(
        &self,
        channel: &Channel,
        consumer: &str,
    ) -> Result<String, BrokerError> {
        let durable = QueueDeclareOptions::durable();
        let dead_letters = format!("{consumer}.dead-letter");
        // One consumer at a time gets the queue's messages, in order, even
        // if two instances both believed they held the lease.
        let mut single = FieldTable::default();
        single.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
        for (queue, arguments) in [
            (consumer, single),
            (dead_letters.as_str(), FieldTable::default()),
        ] {
            channel
                .queue_declare(queue.into(), durable, arguments)
                .await
                .map_err(setup)?;
        }
        let all = ["#".to_owned()];
        let bindings = if self.bindings.is_empty() {
            &all[..]
        } else {
            &self.bindings[..]
        };
        for pattern in bindings {
            channel
                .queue_bind(
                    consumer.into(),
                    self.exchange.as_str().into(),
                    pattern.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(setup)?;
        }
        Ok(dead_letters)
    }

    async fn declare_only(&self, consumer: &str) -> Result<(), BrokerError> {
        let link = self.connect().await?;
        let declared = within(
            "declaring the queue",
            self.declare_queue(&link.channel, consumer),
        )
        .await;
        let closing = link.connection.close(200, "declared".into());
        let _ = tokio::time::timeout(Duration::from_secs(5), closing).await;
        declared.map(drop)
    }

    async fn open_queue(
        &self,
        consumer: &str,
        prefetch: u16,
    ) -> Result<Box<dyn Deliveries>, BrokerError> {
        within("opening the queue", self.open_queue_now(consumer, prefetch)).await
    }

    async fn open_queue_now(
        &self,
        consumer: &str,
        prefetch: u16,
    ) -> Result<Box<dyn Deliveries>, BrokerError> {
        let link = self.connect().await?;
        let channel = &link.channel;
        let dead_letters = self.declare_queue(channel, consumer).await?;
        // Twice a batch may wait unacknowledged: the next batch arrives
        // while one is recorded.
        channel
            .basic_qos(prefetch.saturating_mul(2), BasicQosOptions::default())
            .await
            .map_err(unavailable)?;
        let stream = channel
            .basic_consume(
                consumer.into(),
                format!("{consumer}-{}", uuid::Uuid::now_v7().simple()).into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(setup)?;
        Ok(Box::new(Queue {
            link: Some(link),
            stream,
            dead_letters,
            prefetch: usize::from(prefetch),
            unacked: BTreeSet::new(),
        }))
    }
}

impl Publisher for RabbitMq {
    fn publish<'a>(
        &'a self,
        batch: &'a [Outgoing<'a>],
    ) -> BoxFuture<'a, Result<(), PublishFailure>> {
        Box::pin(self.publish_batch(batch))
    }
}

impl Subscription for RabbitMq {
    fn bindings(&self) -> &[String] {
        &self.bindings
    }

    fn declare<'a>(&'a self, consumer: &'a str) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(self.declare_only(consumer))
    }

    fn open<'a>(
        &'a self,
        consumer: &'a str,
        prefetch: u16,
    ) -> BoxFuture<'a, Result<Box<dyn Deliveries>, BrokerError>> {
        Box::pin(self.open_queue(consumer, prefetch))
    }
}

/// The message properties and CloudEvents headers of an event.
fn properties(event: &Outgoing<'_>) -> BasicProperties {
    let envelope = event.envelope();
    let mut headers = FieldTable::default();
    for (name, value) in event.attributes() {
        headers.insert(
            format!("{HEADER_PREFIX}{name}").into(),
            AMQPValue::LongString(LongString::from(value)),
        );
    }
    if let Some(traceparent) = envelope.metadata.get(super::TRACEPARENT) {
        headers.insert(
            super::TRACEPARENT.into(),
            AMQPValue::LongString(LongString::from(traceparent)),
        );
    }
    let mut properties = BasicProperties::default()
        .with_message_id(event.id().to_string().into())
        .with_type(envelope.event_name.as_str().into())
        .with_content_type(CONTENT_TYPE.into())
        .with_delivery_mode(2)
        .with_timestamp(u64::try_from(envelope.recorded_at.timestamp()).unwrap_or_default())
        .with_headers(headers);
    if let Some(correlation) = envelope.metadata.correlation_id {
        properties = properties.with_correlation_id(correlation.to_string().into());
    }
    properties
}

/// A consumer's open queue.
struct Queue {
    link: Option<Link>,
    stream: lapin::Consumer,
    dead_letters: String,
    prefetch: usize,
    /// The tags delivered and not yet acknowledged.
    unacked: BTreeSet<u64>,
}

impl Queue {
    fn channel(&self) -> Result<&Channel, BrokerError> {
        self.link
            .as_ref()
            .map(|link| &link.channel)
            .ok_or_else(|| setup_error("the queue is closed"))
    }

    async fn receive(&mut self, wait: Duration) -> Result<Vec<Delivery>, BrokerError> {
        let deliveries = super::ready::ready(&mut self.stream, wait, self.prefetch)
            .await
            .ok_or_else(|| unavailable_reason("the consumer was cancelled"))?;
        let deliveries: Vec<Delivery> = deliveries
            .into_iter()
            .map(|delivery| delivery.map(received).map_err(unavailable))
            .collect::<Result<_, _>>()?;
        if deliveries.is_empty() {
            self.check_link()?;
        }
        self.unacked
            .extend(deliveries.iter().map(|delivery| delivery.tag));
        Ok(deliveries)
    }

    /// An error once the connection or the channel is no longer open:
    /// the client tells the consumer when they close, and this makes sure a
    /// consumer that waits for messages does not wait on a dead link.
    fn check_link(&self) -> Result<(), BrokerError> {
        let link = self
            .link
            .as_ref()
            .ok_or_else(|| setup_error("the queue is closed"))?;
        if link.connection.status().connected() && link.channel.status().connected() {
            Ok(())
        } else {
            Err(unavailable_reason("the connection to the broker closed"))
        }
    }

    async fn dead_letter_one(
        &mut self,
        delivery: &Delivery,
        reason: &str,
    ) -> Result<(), BrokerError> {
        let channel = self.channel()?;
        let mut headers = FieldTable::default();
        for (name, value) in &delivery.attributes {
            headers.insert(
                format!("{HEADER_PREFIX}{name}").into(),
                AMQPValue::LongString(LongString::from(value.as_str())),
            );
        }
        headers.insert(
            REASON.into(),
            AMQPValue::LongString(LongString::from(reason)),
        );
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_timestamp(u64::try_from(Utc::now().timestamp()).unwrap_or_default())
            .with_headers(headers);
        let confirm = channel
            .basic_publish(
                ShortString::from(""),
                self.dead_letters.as_str().into(),
                BasicPublishOptions::default(),
                &delivery.body,
                properties,
            )
            .await
            .map_err(unavailable)?
            .await
            .map_err(unavailable)?;
        if !confirm.is_ack() {
            return Err(unavailable_reason("the dead letter was not confirmed"));
        }
        self.ack_one(delivery).await
    }

    async fn ack_one(&mut self, delivery: &Delivery) -> Result<(), BrokerError> {
        self.channel()?
            .basic_ack(delivery.tag, BasicAckOptions::default())
            .await
            .map_err(unavailable)?;
        self.unacked.remove(&delivery.tag);
        Ok(())
    }

    /// Acknowledges the messages that lead those not yet acknowledged with
    /// one `multiple` ack (one frame, however many), the others one by one.
    async fn ack_all(&mut self, deliveries: &[&Delivery]) -> Result<(), BrokerError> {
        let tags: BTreeSet<u64> = deliveries.iter().map(|delivery| delivery.tag).collect();
        let leading = self
            .unacked
            .iter()
            .take_while(|tag| tags.contains(tag))
            .last()
            .copied();
        if let Some(last) = leading {
            let multiple = BasicAckOptions { multiple: true };
            self.channel()?
                .basic_ack(last, multiple)
                .await
                .map_err(unavailable)?;
            self.unacked = self.unacked.split_off(&(last + 1));
        }
        for delivery in deliveries {
            if leading.is_none_or(|last| delivery.tag > last) {
                self.ack_one(delivery).await?;
            }
        }
        Ok(())
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        // Unacknowledged messages go back to the queue, in order.
        if let Some(link) = self.link.take() {
            close(link.connection);
        }
    }
}

impl Queue {
    /// Closes the connection and waits for it: the broker puts the
    /// unacknowledged messages back at their places in the queue.
    async fn close_now(&mut self) {
        if let Some(link) = self.link.take() {
            let closing = link.connection.close(200, "closed".into());
            let _ = tokio::time::timeout(Duration::from_secs(5), closing).await;
        }
    }
}

impl Deliveries for Queue {
    fn close(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(self.close_now())
    }

    fn next(&mut self, wait: Duration) -> BoxFuture<'_, Result<Vec<Delivery>, BrokerError>> {
        Box::pin(self.receive(wait))
    }

    fn ack<'a>(
        &'a mut self,
        deliveries: &'a [&'a Delivery],
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(within("acknowledging", self.ack_all(deliveries)))
    }

    fn dead_letter<'a>(
        &'a mut self,
        delivery: &'a Delivery,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(within(
            "moving a message to the dead letters",
            self.dead_letter_one(delivery, reason),
        ))
    }
}

/// A delivery with its CloudEvents headers, without their prefix.
fn received(delivery: lapin::message::Delivery) -> Delivery {
    let mut attributes = Vec::new();
    if let Some(headers) = delivery.properties.headers() {
        for (name, value) in headers.inner() {
            let Some(name) = name.as_str().strip_prefix(HEADER_PREFIX) else {
                continue;
            };
            let value = match value {
                AMQPValue::LongString(text) => {
                    String::from_utf8_lossy(text.as_bytes()).into_owned()
                }
                AMQPValue::ShortString(text) => text.as_str().to_owned(),
                other => format!("{other:?}"),
            };
            attributes.push((name.to_owned(), value));
        }
    }
    Delivery {
        tag: delivery.delivery_tag,
        attributes,
        body: delivery.data,
        redelivered: delivery.redelivered,
    }
}

/// Closes a connection in the background, if a runtime runs.
fn close(connection: Connection) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            let _ = connection.close(200, "closed".into()).await;
        });
    }
}

/// `work`, or an outage once it took longer than [`PATIENCE`].
async fn within<T>(
    what: &str,
    work: impl Future<Output = Result<T, BrokerError>>,
) -> Result<T, BrokerError> {
    tokio::time::timeout(PATIENCE, work)
        .await
        .unwrap_or_else(|_| {
            Err(unavailable_reason(&format!(
                "{what}: no answer from the broker within {} s",
                PATIENCE.as_secs()
            )))
        })
}

fn unavailable(error: lapin::Error) -> BrokerError {
    BrokerError::Unavailable {
        broker: BROKER,
        source: Box::new(error),
    }
}

fn unavailable_reason(reason: &str) -> BrokerError {
    BrokerError::Unavailable {
        broker: BROKER,
        source: reason.into(),
    }
}

/// A declaration the broker refused closes the channel: not transient.
fn setup(error: lapin::Error) -> BrokerError {
    match error.kind() {
        lapin::ErrorKind::ProtocolError(_) => setup_error(&error.to_string()),
        _ => unavailable(error),
    }
}

fn setup_error(reason: &str) -> BrokerError {
    BrokerError::Setup {
        broker: BROKER,
        reason: reason.to_owned(),
    }
}
