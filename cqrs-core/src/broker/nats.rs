//! [`JetStream`]: the gateway's publisher and the consumer's subscription on
//! NATS JetStream (async-nats), through one stream.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::{AckPolicy, pull};
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self, Context, stream};

use super::selection;
use super::{
    BrokerError, Deliveries, Delivery, Outgoing, PublishFailure, Publisher, Subscription, Wildcards,
};
use crate::aggregate::{Aggregate, EventPayload};
use crate::future::BoxFuture;

const BROKER: &str = "NATS JetStream";

/// The prefix of the CloudEvents attributes in the headers.
pub(crate) const HEADER_PREFIX: &str = "ce-";

/// The header that says why a message was dead-lettered.
const REASON: &str = "cqrs-dead-letter-reason";

/// A NATS server with JetStream, and the stream the events go through.
///
/// As a [`Publisher`], it publishes each event on subject
/// `<prefix>.<aggregate type>.<event name>` with `Nats-Msg-Id` set to the
/// event id (so the stream drops a copy within its duplicate window) and
/// awaits the publish acknowledgements of a whole batch at once. The stream
/// (`stream`, on subjects `<prefix>.>`) is created when missing. As a
/// [`Subscription`], consumer `c` is the durable pull consumer `c` on that
/// stream, filtered by [`bind`](Self::bind)'s subject patterns; its dead
/// letters go to subject `<prefix>-dead-letter.c` in stream
/// `<stream>-DEAD-LETTER`.
#[derive(Debug)]
pub struct JetStream {
    url: String,
    stream: String,
    prefix: String,
    bindings: Vec<String>,
    link: async_lock::Mutex<Option<Context>>,
}

impl JetStream {
    /// The server at `url` (`nats://host:port`), the stream named `stream`
    /// and the subjects' first token `prefix`.
    pub fn new(
        url: impl Into<String>,
        stream: impl Into<String>,
        prefix: impl Into<String>,
    ) -> Self {
        Self {
            url: url.into(),
            stream: stream.into(),
            prefix: prefix.into(),
            bindings: Vec::new(),
            link: async_lock::Mutex::new(None),
        }
    }

    /// Consumes only the events whose subject after the prefix matches
    /// one of these patterns, such as `Order.OrderPlaced` or `Order.*`
    /// (`*` one token, `>` the rest). More than one needs NATS 2.10.
    /// A pattern that matches no event of a registered aggregate is
    /// refused by `Consumer::new`.
    pub fn bind<S: Into<String>>(mut self, patterns: impl IntoIterator<Item = S>) -> Self {
        self.bindings.extend(patterns.into_iter().map(Into::into));
        self
    }

    /// Consumes the events of aggregate `A` (binds `<A::NAME>.>`).
    pub fn aggregate<A: Aggregate>(mut self) -> Self {
        self.bindings.push(format!("{}.>", A::NAME));
        self
    }

    /// Consumes the event `P` (binds the subject of each registered
    /// aggregate that records it).
    pub fn event<P: EventPayload>(mut self) -> Self {
        self.bindings.extend(selection::event_bindings(P::NAME));
        self
    }

    fn dead_letter_subject(&self, consumer: &str) -> String {
        format!("{}-dead-letter.{consumer}", self.prefix)
    }

    /// Connects and creates the streams when missing.
    async fn connect(&self) -> Result<Context, BrokerError> {
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            .connect(self.url.as_str())
            .await
            .map_err(unavailable)?;
        let context = jetstream::new(client);
        let streams = [
            (self.stream.clone(), format!("{}.>", self.prefix)),
            (
                format!("{}-DEAD-LETTER", self.stream),
                format!("{}-dead-letter.>", self.prefix),
            ),
        ];
        for (name, subjects) in streams {
            context
                .get_or_create_stream(stream::Config {
                    name,
                    subjects: vec![subjects],
                    ..stream::Config::default()
                })
                .await
                .map_err(|error| setup(&error))?;
        }
        Ok(context)
    }

    async fn context(&self) -> Result<Context, BrokerError> {
        let mut link = self.link.lock().await;
        if let Some(context) = &*link {
            return Ok(context.clone());
        }
        let context = self.connect().await?;
        *link = Some(context.clone());
        Ok(context)
    }

    async fn publish_batch(&self, batch: &[Outgoing<'_>]) -> Result<(), PublishFailure> {
        let failure = |confirmed, error| PublishFailure { confirmed, error };
        let context = self.context().await.map_err(|error| failure(0, error))?;
        let mut acks = Vec::with_capacity(batch.len());
        let mut sent = Ok(());
        for event in batch {
            let subject = format!("{}.{}", self.prefix, event.routing_key());
            let publish = PublishMessage::build()
                .payload(event.body().to_vec().into())
                .headers(headers(event));
            match context.send_publish(subject, publish).await {
                Ok(ack) => acks.push(ack),
                Err(error) => {
                    sent = Err(publish_error(event, error));
                    break;
                }
            }
        }
        // A send that failed leaves the events from it on unconfirmed.
        let sent_count = acks.len();
        for (index, ack) in acks.into_iter().enumerate() {
            if let Err(error) = ack.await {
                let error = publish_error(&batch[index], error);
                if error.is_transient() {
                    *self.link.lock().await = None;
                }
                return Err(failure(index, error));
            }
        }
        sent.map_err(|error| failure(sent_count, error))
    }

    async fn open_consumer(
        &self,
        consumer: &str,
        prefetch: u16,
    ) -> Result<Box<dyn Deliveries>, BrokerError> {
        let context = self.connect().await?;
        let stream = context
            .get_stream(self.stream.as_str())
            .await
            .map_err(|error| setup(&error))?;
        let mut subjects: Vec<String> = self
            .bindings
            .iter()
            .map(|pattern| format!("{}.{pattern}", self.prefix))
            .collect();
        let mut config = pull::Config {
            durable_name: Some(consumer.to_owned()),
            ack_policy: AckPolicy::Explicit,
            ack_wait: Duration::from_secs(30),
            max_ack_pending: i64::from(prefetch) * 4,
            ..pull::Config::default()
        };
        if subjects.len() == 1 {
            config.filter_subject = subjects.remove(0);
        } else {
            config.filter_subjects = subjects;
        }
        let pull = stream
            .get_or_create_consumer(consumer, config)
            .await
            .map_err(|error| setup(&error))?;
        let messages = pull
            .stream()
            .max_messages_per_batch(usize::from(prefetch))
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await
            .map_err(unavailable)?;
        Ok(Box::new(PullConsumer {
            context,
            messages,
            pending: HashMap::new(),
            next_tag: 0,
            dead_letters: self.dead_letter_subject(consumer),
            prefetch: usize::from(prefetch),
        }))
    }
}

impl Publisher for JetStream {
    fn publish<'a>(
        &'a self,
        batch: &'a [Outgoing<'a>],
    ) -> BoxFuture<'a, Result<(), PublishFailure>> {
        Box::pin(self.publish_batch(batch))
    }
}

impl Subscription for JetStream {
    fn bindings(&self) -> &[String] {
        &self.bindings
    }

    fn wildcards(&self) -> Wildcards {
        Wildcards::Nats
    }

    /// Creates the stream, which keeps every event from then on for a
    /// durable consumer created later.
    fn declare<'a>(&'a self, _consumer: &'a str) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move { self.context().await.map(drop) })
    }

    fn open<'a>(
        &'a self,
        consumer: &'a str,
        prefetch: u16,
    ) -> BoxFuture<'a, Result<Box<dyn Deliveries>, BrokerError>> {
        Box::pin(self.open_consumer(consumer, prefetch))
    }
}

/// The CloudEvents headers of an event, and its W3C trace context.
fn headers(event: &Outgoing<'_>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    // The stream drops a copy with an id it holds (its duplicate window).
    headers.insert("Nats-Msg-Id", event.id().to_string().as_str());
    for (name, value) in event.attributes() {
        headers.insert(format!("{HEADER_PREFIX}{name}").as_str(), value.as_str());
    }
    if let Some(traceparent) = event.envelope().metadata.get(super::TRACEPARENT) {
        headers.insert(super::TRACEPARENT, traceparent);
    }
    headers
}

/// A consumer's open pull subscription.
struct PullConsumer {
    context: Context,
    messages: pull::Stream,
    /// Delivered and not yet acknowledged, by tag.
    pending: HashMap<u64, jetstream::Message>,
    next_tag: u64,
    dead_letters: String,
    prefetch: usize,
}

impl PullConsumer {
    async fn receive(&mut self, wait: Duration) -> Result<Vec<Delivery>, BrokerError> {
        let messages = super::ready::ready(&mut self.messages, wait, self.prefetch)
            .await
            .ok_or_else(|| unavailable_reason("the subscription ended"))?;
        let mut batch = Vec::with_capacity(messages.len());
        let mut failed = None;
        for message in messages {
            // Those after an error are kept too, to be given back in order.
            let message = match message {
                Ok(message) => message,
                Err(error) => {
                    failed.get_or_insert(error);
                    continue;
                }
            };
            let redelivered = message.info().is_ok_and(|info| info.delivered > 1);
            let mut attributes = Vec::new();
            if let Some(headers) = &message.headers {
                for (name, values) in headers.iter() {
                    let name: &str = name.as_ref();
                    if let (Some(name), Some(value)) =
                        (name.strip_prefix(HEADER_PREFIX), values.first())
                    {
                        attributes.push((name.to_owned(), value.as_str().to_owned()));
                    }
                }
            }
            self.next_tag += 1;
            batch.push(Delivery {
                tag: self.next_tag,
                attributes,
                body: message.payload.to_vec(),
                redelivered,
            });
            self.pending.insert(self.next_tag, message);
        }
        match failed {
            Some(error) => Err(unavailable(error)),
            None => Ok(batch),
        }
    }

    async fn ack_one(&mut self, delivery: &Delivery) -> Result<(), BrokerError> {
        let Some(message) = self.pending.remove(&delivery.tag) else {
            return Ok(());
        };
        message
            .ack()
            .await
            .map_err(|source| BrokerError::Unavailable {
                broker: BROKER,
                source,
            })
    }

    async fn dead_letter_one(
        &mut self,
        delivery: &Delivery,
        reason: &str,
    ) -> Result<(), BrokerError> {
        let mut headers = HeaderMap::new();
        for (name, value) in &delivery.attributes {
            headers.insert(format!("{HEADER_PREFIX}{name}").as_str(), value.as_str());
        }
        headers.insert(REASON, reason);
        self.context
            .publish_with_headers(
                self.dead_letters.clone(),
                headers,
                delivery.body.clone().into(),
            )
            .await
            .map_err(unavailable)?
            .await
            .map_err(unavailable)?;
        self.ack_one(delivery).await
    }
}

impl PullConsumer {
    /// Gives back what was delivered and not acknowledged, oldest first:
    /// JetStream delivers a message it was given back before newer ones.
    async fn give_back(&mut self) {
        let mut pending: Vec<(u64, jetstream::Message)> = self.pending.drain().collect();
        pending.sort_by_key(|(tag, _)| *tag);
        for (_, message) in pending {
            let _ = message.ack_with(AckKind::Nak(None)).await;
        }
    }
}

impl Deliveries for PullConsumer {
    fn close(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(self.give_back())
    }

    fn next(&mut self, wait: Duration) -> BoxFuture<'_, Result<Vec<Delivery>, BrokerError>> {
        Box::pin(self.receive(wait))
    }

    fn ack<'a>(
        &'a mut self,
        deliveries: &'a [&'a Delivery],
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            for delivery in deliveries {
                self.ack_one(delivery).await?;
            }
            Ok(())
        })
    }

    fn dead_letter<'a>(
        &'a mut self,
        delivery: &'a Delivery,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(self.dead_letter_one(delivery, reason))
    }
}

fn publish_error(event: &Outgoing<'_>, error: jetstream::context::PublishError) -> BrokerError {
    match error.kind() {
        PublishErrorKind::MaxPayloadExceeded
        | PublishErrorKind::WrongLastMessageId
        | PublishErrorKind::WrongLastSequence => BrokerError::Refused {
            broker: BROKER,
            id: event.id(),
            reason: error.to_string(),
        },
        // An invalid subject is refused before it is sent.
        PublishErrorKind::Other if error.to_string().contains("subject") => BrokerError::Refused {
            broker: BROKER,
            id: event.id(),
            reason: error.to_string(),
        },
        _ => unavailable(error),
    }
}

fn unavailable(error: impl std::error::Error + Send + Sync + 'static) -> BrokerError {
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

fn setup(error: &dyn std::error::Error) -> BrokerError {
    let reason = error.to_string();
    // A server that cannot be reached is an outage, not a bad setup.
    if reason.contains("timed out") || reason.contains("connect") || reason.contains("disconnected")
    {
        return unavailable_reason(&reason);
    }
    BrokerError::Setup {
        broker: BROKER,
        reason,
    }
}
