//! The recorder: a consumer that records writes each message as an event of
//! the app's log, in the producer's stream, under the producer's event id,
//! with that id as its command id, so a message delivered twice changes
//! nothing.
//!
//! A batch of messages is one append of every stream's messages
//! ([`EventStore::append_streams`](crate::EventStore::append_streams)): one
//! transaction and one commit on the SQL stores. A stream's messages are one
//! batch of it, each event keeping its own command id; a batch the log
//! refuses (a message it holds already, a stream another writer moved) is
//! written again one message at a time, which tells each message's outcome.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use tracing::Instrument;

use super::message::by_stream;
use super::outcome::Outcome;
use super::{Received, TRACEPARENT, TRACESTATE};
use crate::app::Cqrs;
use crate::envelope::{Metadata, NewEvent};
use crate::future::{BoxFuture, JoinAll};
use crate::store::{StoreError, StreamAppend};

/// The most streams whose versions are kept; past it the map starts over.
const KEPT_VERSIONS: usize = 100_000;

/// The state of one recording consumer in this process.
#[derive(Default)]
pub(super) struct Recorder {
    /// The version of each stream it appended to last.
    versions: Mutex<HashMap<(String, String), u64>>,
}

/// A stream's messages of one batch, ready to append.
struct StreamMessages {
    stream: (String, String),
    /// Each message's place in the batch, and its event.
    messages: Vec<(usize, NewEvent)>,
    /// One span per message, continuing its producer's trace, open until
    /// its event is appended.
    spans: Vec<tracing::Span>,
    /// Whether its first message is the first event of the producer's
    /// stream: then the stream is new in this log too.
    opens: bool,
}

impl Recorder {
    /// Records a batch into the log: every stream's events in one append,
    /// then, for the streams the log refused, one event at a time.
    pub(super) async fn record(
        &self,
        consumer: &str,
        app: &Cqrs,
        events: Vec<(usize, (Received, &'static str))>,
    ) -> Vec<(usize, Outcome)> {
        let streams: Vec<StreamMessages> = by_stream(events, |(_, (received, _))| received)
            .into_iter()
            .map(|messages| StreamMessages::new(consumer, messages))
            .collect();
        let versions = self.versions(app, &streams).await;
        let mut outcomes = Vec::new();
        let mut appending = Vec::new();
        for (stream, version) in streams.into_iter().zip(versions) {
            match version {
                Ok(version) => appending.push((stream, version)),
                // The rest of the stream waits for the redelivery.
                Err(error) => outcomes.push((stream.first(), Outcome::of_store(error))),
            }
        }
        let refused = self
            .append_together(consumer, app, appending, &mut outcomes)
            .await;
        let alone = Mutex::new(Vec::new());
        let one_by_one: Vec<BoxFuture<'_, ()>> = refused
            .into_iter()
            .map(|stream| -> BoxFuture<'_, ()> {
                let alone = &alone;
                Box::pin(async move {
                    let recorded = self.one_by_one(consumer, app, stream).await;
                    lock(alone).extend(recorded);
                })
            })
            .collect();
        JoinAll(one_by_one).await;
        outcomes.extend(alone.into_inner().unwrap_or_else(PoisonError::into_inner));
        if outcomes
            .iter()
            .any(|(_, outcome)| matches!(outcome, Outcome::Recorded))
        {
            app.appended();
        }
        outcomes
    }

    /// Each stream's version, in the streams' order: the one it appended
    /// last, none for a stream the batch opens, else read, side by side.
    /// A guess that is wrong (the message was recorded before this process
    /// started) is refused by the log, and the stream written one message
    /// at a time.
    async fn versions(
        &self,
        app: &Cqrs,
        streams: &[StreamMessages],
    ) -> Vec<Result<u64, StoreError>> {
        let versions = Mutex::new(Vec::with_capacity(streams.len()));
        let reads: Vec<BoxFuture<'_, ()>> = streams
            .iter()
            .enumerate()
            .map(|(at, stream)| -> BoxFuture<'_, ()> {
                let versions = &versions;
                Box::pin(async move {
                    let version = match self.known(&stream.stream) {
                        Some(version) => Ok(version),
                        None if stream.opens => Ok(0),
                        None => self.version(app, &stream.stream).await,
                    };
                    lock(versions).push((at, version));
                })
            })
            .collect();
        JoinAll(reads).await;
        let mut versions = versions
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner);
        versions.sort_by_key(|(at, _)| *at);
        versions.into_iter().map(|(_, version)| version).collect()
    }

    /// Appends every stream's messages, each stream at its version, in one
    /// [`append_streams`](crate::EventStore::append_streams); adds the
    /// recorded messages to `outcomes` and returns the streams the log
    /// refused.
    async fn append_together(
        &self,
        consumer: &str,
        app: &Cqrs,
        streams: Vec<(StreamMessages, u64)>,
        outcomes: &mut Vec<(usize, Outcome)>,
    ) -> Vec<StreamMessages> {
        let appends = streams
            .iter()
            .map(|(stream, version)| {
                let (aggregate_type, aggregate_id) = stream.stream.clone();
                StreamAppend::new(aggregate_type, aggregate_id, *version, stream.events())
            })
            .collect();
        let appended = app.store().append_streams(appends).await;
        let mut refused = Vec::new();
        for ((stream, _), outcome) in streams.into_iter().zip(appended) {
            match outcome {
                Ok(events) => {
                    let version = events.last().map(|event| event.sequence);
                    self.appended(stream.stream.clone(), version);
                    outcomes.extend(stream.indices().map(|index| (index, Outcome::Recorded)));
                }
                Err(error) => {
                    tracing::debug!(consumer, %error, "recording a stream's messages one by one");
                    self.forget(&stream.stream);
                    refused.push(stream);
                }
            }
        }
        refused
    }

    /// Appends a stream's messages one at a time, each unless the stream
    /// holds it, until one fails: the rest wait for the redelivery.
    async fn one_by_one(
        &self,
        consumer: &str,
        app: &Cqrs,
        stream: StreamMessages,
    ) -> Vec<(usize, Outcome)> {
        let mut outcomes = Vec::new();
        for ((index, event), span) in stream.messages.into_iter().zip(stream.spans) {
            let outcome = self
                .append(consumer, app, &stream.stream, event)
                .instrument(span)
                .await;
            let failed = matches!(outcome, Outcome::Failed(_));
            outcomes.push((index, outcome));
            if failed {
                break;
            }
        }
        outcomes
    }

    /// Appends one received event to its stream unless the stream holds it.
    async fn append(
        &self,
        consumer: &str,
        app: &Cqrs,
        stream: &(String, String),
        event: NewEvent,
    ) -> Outcome {
        let store = app.store();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let version = match self.version(app, stream).await {
                Ok(version) => version,
                Err(error) => return Outcome::of_store(error),
            };
            let appended = store
                .append(&stream.0, &stream.1, version, vec![event.clone()])
                .await;
            match appended {
                Ok(events) => {
                    self.appended(stream.clone(), events.last().map(|event| event.sequence));
                    return Outcome::Recorded;
                }
                Err(StoreError::DuplicateCommand { .. }) => return Outcome::Duplicate,
                // Another writer, or an append whose outcome is unknown:
                // the next try sees which, by the command id.
                Err(error @ (StoreError::Conflict(_) | StoreError::OutcomeUnknown { .. }))
                    if attempts < 10 =>
                {
                    self.forget(stream);
                    tracing::debug!(consumer, %error, "appending again");
                }
                // It may have landed: a redelivery finds out.
                Err(error @ StoreError::OutcomeUnknown { .. }) => {
                    self.forget(stream);
                    return Outcome::Failed(error.to_string());
                }
                Err(error) => {
                    self.forget(stream);
                    return Outcome::of_store(error);
                }
            }
        }
    }

    /// The stream's version: the one it left it at, or the log's.
    async fn version(&self, app: &Cqrs, stream: &(String, String)) -> Result<u64, StoreError> {
        if let Some(version) = self.known(stream) {
            return Ok(version);
        }
        let events = app.store().load(&stream.0, &stream.1, 1).await?;
        Ok(events.last().map_or(0, |event| event.sequence))
    }

    /// The version it appended `stream` at last, if it kept it.
    fn known(&self, stream: &(String, String)) -> Option<u64> {
        lock(&self.versions).get(stream).copied()
    }

    fn appended(&self, stream: (String, String), version: Option<u64>) {
        let Some(version) = version else {
            return;
        };
        let mut versions = lock(&self.versions);
        if versions.len() >= KEPT_VERSIONS {
            versions.clear();
        }
        versions.insert(stream, version);
    }

    fn forget(&self, stream: &(String, String)) {
        lock(&self.versions).remove(stream);
    }
}

impl StreamMessages {
    fn new(consumer: &str, messages: Vec<(usize, (Received, &'static str))>) -> Self {
        let first = &messages[0].1.0;
        let stream = (first.aggregate_type.clone(), first.aggregate_id.clone());
        let opens = first.sequence == 1;
        let mut spans = Vec::with_capacity(messages.len());
        let messages = messages
            .into_iter()
            .map(|(index, (received, name))| {
                let span = if crate::telemetry::spans_at(tracing::Level::INFO) {
                    tracing::info_span!(
                        "consumer.record",
                        consumer,
                        event_id = %received.event_id,
                        event = name,
                    )
                } else {
                    tracing::Span::none()
                };
                if let Some(traceparent) = received.trace.get(TRACEPARENT) {
                    crate::telemetry::continue_trace(
                        &span,
                        traceparent,
                        received.trace.get(TRACESTATE).map(String::as_str),
                    );
                }
                let event = new_event(&received, name, &span);
                spans.push(span);
                (index, event)
            })
            .collect();
        Self {
            stream,
            messages,
            spans,
            opens,
        }
    }

    fn events(&self) -> Vec<NewEvent> {
        self.messages
            .iter()
            .map(|(_, event)| event.clone())
            .collect()
    }

    fn indices(&self) -> impl Iterator<Item = usize> + '_ {
        self.messages.iter().map(|(index, _)| *index)
    }

    fn first(&self) -> usize {
        self.messages[0].0
    }
}

/// The event a message records: the producer's id, which is also its
/// command id, and the producer's correlation, causation and trace, with
/// `span` as the parent of what the receiving app's handlers do with it.
fn new_event(received: &Received, name: &'static str, span: &tracing::Span) -> NewEvent {
    let mut metadata = Metadata {
        correlation_id: received.correlation_id,
        causation_id: received.causation_id,
        command_id: Some(received.event_id),
        ..Metadata::default()
    };
    metadata.values.extend(received.trace.clone());
    crate::telemetry::record(span, &mut metadata);
    NewEvent {
        event_id: received.event_id,
        event_name: name,
        event_version: received.event_version,
        metadata,
        payload: received.payload.clone(),
        tags: Vec::new(),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
