//! [`Consumer`]: records the events another service published as events of
//! this app's log, once each, so its processors handle them once in effect.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tracing::Instrument;

use super::selection;
use super::{BrokerError, Deliveries, Delivery, Received, Subscription};
use crate::app::{BuildError, Cqrs};
use crate::envelope::{Metadata, NewEvent};
use crate::future::{BoxFuture, JoinAll};
use crate::processor::{Claim, Run, Running};
use crate::registry::{Registry, SelectionKind};
use crate::store::StoreError;
use crate::view::ViewError;

/// Receives events from a broker into an app.
///
/// Each message becomes an event of the app's own log, in the producer's
/// stream (aggregate type and id), under the producer's event id, with that
/// id as its command id: a stream records a command id once, so a message
/// delivered twice changes nothing. A message is acknowledged after its
/// event is committed. The app's `#[projection]`s, `#[process_manager]`s and
/// `#[event_handler]`s then handle these events like any others, from their
/// checkpoints, each once in effect; one whose handler keeps failing is
/// parked there. A message that is not an event in the wire format, whose
/// event name no event type of the program is stored under, or that the
/// log refuses goes to the dead letters with the reason.
///
/// One instance of the app at a time consumes: the consumer holds a lease
/// in the app's views (as processors hold their segments), and another
/// instance takes over when it lapses, so each stream's events are recorded
/// in the order the broker delivers them. After a broker or database
/// outage it reconnects with the pauses of the app's
/// [`RetryPolicy`](crate::processor::RetryPolicy), as processors do.
///
/// The streams it records are the producer's: the app should not also run
/// commands on aggregates of those types.
#[derive(Clone)]
pub struct Consumer {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    /// Its lease's key among the processors' segments.
    key: String,
    app: Cqrs,
    subscription: Box<dyn Subscription>,
    prefetch: AtomicU16,
    /// The stored event names of the program's event types.
    names: HashSet<&'static str>,
    /// The version of each stream it appended to last.
    versions: Mutex<HashMap<(String, String), u64>>,
    status: Mutex<ConsumerStatus>,
}

/// What a consumer did so far, in this process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsumerStatus {
    /// Its name.
    pub name: String,
    /// Whether it holds the lease, so this instance is the one consuming.
    pub active: bool,
    /// Whether its subscription is open.
    pub connected: bool,
    /// Messages delivered to it, duplicates included.
    pub deliveries: u64,
    /// Events it recorded in the log.
    pub recorded: u64,
    /// Messages whose event the log already held.
    pub duplicates: u64,
    /// Messages it moved to the dead letters.
    pub dead_lettered: u64,
    /// The producer's log position of the last event it recorded.
    pub position: u64,
    /// The last failure, cleared by the next batch recorded.
    pub last_error: Option<String>,
}

/// What became of one message.
enum Outcome {
    Recorded,
    Duplicate,
    /// The log refused it, for good.
    Refused(String),
    /// The log was unavailable: delivered again after the reconnect.
    Failed(StoreError),
}

/// The most streams whose versions are kept; past it the map starts over.
const KEPT_VERSIONS: usize = 100_000;

impl Consumer {
    /// A consumer named `name` (its queue's or durable consumer's name on
    /// the broker, and its lease's) that records what `subscription`
    /// delivers into `app`.
    ///
    /// A binding pattern of `subscription` that matches no event of a
    /// registered aggregate is [`BuildError::UnknownSelection`]. In a
    /// program that declares domains, an app that names none it hosts is
    /// [`BuildError::DomainsNotNamed`]: the events it receives would reach
    /// every domain's processors, the producer's included.
    pub fn new(
        name: impl Into<String>,
        app: &Cqrs,
        subscription: impl Subscription,
    ) -> Result<Self, BuildError> {
        let name = name.into();
        app.check_receiving()?;
        selection::check(
            &format!("consumer `{name}`"),
            SelectionKind::Binding,
            subscription.bindings(),
            subscription.wildcards(),
        )?;
        let names = Registry::global()
            .events()
            .iter()
            .flat_map(|registration| registration.types.iter().map(|event| event.name))
            .collect();
        Ok(Self {
            inner: Arc::new(Inner {
                key: format!("consumer:{name}"),
                status: Mutex::new(ConsumerStatus {
                    name: name.clone(),
                    ..ConsumerStatus::default()
                }),
                name,
                app: app.clone(),
                subscription: Box::new(subscription),
                prefetch: AtomicU16::new(256),
                names,
                versions: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// How many messages may be delivered and not yet acknowledged (256 by
    /// default): the most it records in one batch.
    pub fn prefetch(self, prefetch: u16) -> Self {
        self.inner.prefetch.store(prefetch.max(1), Ordering::SeqCst);
        self
    }

    /// Declares its queue or stream on the broker, so that what is
    /// published from now on waits for it even before [`run`](Self::run)
    /// consumes. RabbitMQ drops what no queue is bound to: a service
    /// should declare before it reports ready, and before a producer's
    /// events matter to it.
    pub async fn declare(&self) -> Result<(), BrokerError> {
        self.inner.subscription.declare(&self.inner.name).await
    }

    /// What it did so far.
    pub fn status(&self) -> ConsumerStatus {
        lock(&self.inner.status).clone()
    }

    /// Consumes until shut down, as the app's processors run: takes the
    /// lease when no other instance holds it, opens the subscription,
    /// records each batch and acknowledges it, and after a failure connects
    /// again after the pauses the app's
    /// [`RetryPolicy`](crate::processor::RetryPolicy) gives an outage
    /// (doubling from `first_delay` up to `outage_delay`). The returned
    /// [`Running`] is a future to spawn
    /// on a tokio runtime (which the RabbitMQ and NATS subscriptions run
    /// on); its [`Shutdown`](crate::processor::Shutdown) finishes the batch
    /// in progress, gives the lease up and stops.
    pub fn run(&self) -> Running {
        let run = Arc::new(Run::default());
        let inner = Arc::clone(&self.inner);
        let this_run = Arc::clone(&run);
        Running::new(run, async move {
            inner.follow(&this_run).await;
            Ok(())
        })
    }
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("name", &self.inner.name)
            .field("prefetch", &self.inner.prefetch.load(Ordering::SeqCst))
            .finish_non_exhaustive()
    }
}

impl Inner {
    /// Sessions, one after another, until the run is asked to stop.
    async fn follow(&self, run: &Run) {
        let mut failures = 0u32;
        while !run.is_stopping() {
            let pause = match self.session(run).await {
                Ok(()) => {
                    failures = 0;
                    self.app.processors().lease().renewal
                }
                // The broker or the database is out: waited out as the
                // app's processors wait out an outage.
                Err(error) => {
                    failures += 1;
                    tracing::warn!(consumer = %self.name, %error, "consumer failed");
                    self.update(|status| status.last_error = Some(error));
                    let policy = self.app.processors().retry_policy();
                    policy.delay(failures, policy.outage_delay)
                }
            };
            self.update(|status| status.connected = false);
            run.until_stopped(futures_timer::Delay::new(pause)).await;
        }
    }

    fn update(&self, change: impl FnOnce(&mut ConsumerStatus)) {
        change(&mut lock(&self.status));
    }

    /// Holds the lease and consumes while it lasts; `Ok` when another
    /// instance holds it or it is asked to stop.
    async fn session(&self, run: &Run) -> Result<(), String> {
        let processors = self.app.processors();
        let lease = processors.lease();
        let backend = self.app.views().backend();
        let view_error = |error: ViewError| error.to_string();
        backend
            .prepare(&self.key, 1, false)
            .await
            .map_err(view_error)?;
        // The lease runs from before the claim, not from when the
        // subscription is open: opening may take longer than a lease.
        let claimed = Instant::now();
        let Some(claim) = backend
            .claim(&self.key, 0, processors.node(), lease.length)
            .await
            .map_err(view_error)?
        else {
            self.update(|status| status.active = false);
            return Ok(());
        };
        self.update(|status| status.active = true);
        let consumed = self.consume(run, claim, claimed).await;
        self.update(|status| status.active = false);
        if let Err(error) = backend.release(&self.key, claim).await {
            tracing::warn!(consumer = %self.name, %error, "could not give up the lease");
        }
        consumed
    }

    /// Records batches while the claim lasts, then closes the
    /// subscription, giving back what it did not acknowledge in order.
    async fn consume(&self, run: &Run, claim: Claim, claimed: Instant) -> Result<(), String> {
        let mut deliveries = self
            .subscription
            .open(&self.name, self.prefetch.load(Ordering::SeqCst))
            .await
            .map_err(|error| error.to_string())?;
        self.update(|status| status.connected = true);
        let consumed = self.batches(run, claim, claimed, &mut *deliveries).await;
        deliveries.close().await;
        consumed
    }

    async fn batches(
        &self,
        run: &Run,
        claim: Claim,
        claimed: Instant,
        deliveries: &mut dyn Deliveries,
    ) -> Result<(), String> {
        let processors = self.app.processors();
        let lease = processors.lease();
        let backend = self.app.views().backend();
        let mut renewed = claimed;
        while !run.is_stopping() {
            let batch = deliveries
                .next(lease.renewal.min(Duration::from_millis(500)))
                .await
                .map_err(|error| error.to_string())?;
            // Renewed before a batch is recorded, so a batch starts with
            // most of a lease ahead of it.
            if renewed.elapsed() >= lease.renewal / 2 {
                let claims = backend
                    .renew(&self.key, processors.node(), lease.length)
                    .await
                    .map_err(|error| error.to_string())?;
                if !claims.contains(&claim) {
                    tracing::warn!(consumer = %self.name, "lease lost: another instance consumes");
                    return Ok(());
                }
                renewed = Instant::now();
            }
            if !batch.is_empty() {
                let span = tracing::info_span!(
                    "consumer.receive",
                    consumer = %self.name,
                    messages = batch.len(),
                    recorded = tracing::field::Empty,
                    duplicates = tracing::field::Empty,
                    dead_lettered = tracing::field::Empty,
                );
                self.record(deliveries, batch).instrument(span).await?;
                self.update(|status| status.last_error = None);
            }
        }
        Ok(())
    }

    /// Records a batch: each stream's events in order, the streams side by
    /// side; then acknowledges what was recorded or already held, and moves
    /// what cannot be recorded to the dead letters.
    async fn record(
        &self,
        deliveries: &mut dyn Deliveries,
        batch: Vec<Delivery>,
    ) -> Result<(), String> {
        let broker_error = |error: BrokerError| error.to_string();
        self.update(|status| status.deliveries += batch.len() as u64);
        let mut streams: Vec<Vec<(usize, Received, &'static str)>> = Vec::new();
        let mut stream_of: HashMap<(String, String), usize> = HashMap::new();
        let mut outcomes: Vec<Option<Outcome>> = (0..batch.len()).map(|_| None).collect();
        for (index, delivery) in batch.iter().enumerate() {
            let received = match delivery.decode() {
                Ok(received) => received,
                Err(malformed) => {
                    outcomes[index] = Some(Outcome::Refused(malformed.to_string()));
                    continue;
                }
            };
            let Some(&name) = self.names.get(received.event_name.as_str()) else {
                let reason = format!(
                    "no event type of this program is stored as `{}`",
                    received.event_name
                );
                outcomes[index] = Some(Outcome::Refused(reason));
                continue;
            };
            let stream = (
                received.aggregate_type.clone(),
                received.aggregate_id.clone(),
            );
            let next = streams.len();
            let at = *stream_of.entry(stream).or_insert(next);
            if at == next {
                streams.push(Vec::new());
            }
            streams[at].push((index, received, name));
        }
        let recorded = Mutex::new(Vec::new());
        let appends: Vec<BoxFuture<'_, ()>> = streams
            .into_iter()
            .map(|events| -> BoxFuture<'_, ()> {
                let recorded = &recorded;
                Box::pin(async move {
                    for (index, received, name) in events {
                        let recording = tracing::info_span!(
                            "consumer.record",
                            consumer = %self.name,
                            event_id = %received.event_id,
                            event = name,
                        );
                        if let Some(traceparent) = received.trace.get(super::TRACEPARENT) {
                            crate::telemetry::continue_trace(
                                &recording,
                                traceparent,
                                received.trace.get(super::TRACESTATE).map(String::as_str),
                            );
                        }
                        let outcome = self.append(&received, name).instrument(recording).await;
                        let failed = matches!(outcome, Outcome::Failed(_));
                        lock(recorded).push((index, received.position, outcome));
                        if failed {
                            // The rest of the stream waits for the redelivery.
                            break;
                        }
                    }
                })
            })
            .collect();
        JoinAll(appends).await;
        let mut position = 0;
        for (index, at, outcome) in recorded
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner)
        {
            if matches!(outcome, Outcome::Recorded) {
                position = position.max(at);
            }
            outcomes[index] = Some(outcome);
        }
        if outcomes
            .iter()
            .any(|outcome| matches!(outcome, Some(Outcome::Recorded)))
        {
            self.app.appended();
        }
        let mut failure = None;
        let (mut recorded, mut duplicates, mut dead) = (0, 0, 0);
        for (delivery, outcome) in batch.iter().zip(outcomes) {
            match outcome {
                Some(Outcome::Recorded) => {
                    recorded += 1;
                    deliveries.ack(delivery).await.map_err(broker_error)?;
                }
                Some(Outcome::Duplicate) => {
                    duplicates += 1;
                    deliveries.ack(delivery).await.map_err(broker_error)?;
                }
                Some(Outcome::Refused(reason)) => {
                    dead += 1;
                    tracing::warn!(consumer = %self.name, tag = delivery.tag, %reason, "message dead-lettered");
                    deliveries
                        .dead_letter(delivery, &reason)
                        .await
                        .map_err(broker_error)?;
                }
                Some(Outcome::Failed(error)) => {
                    failure.get_or_insert(error);
                }
                // Behind a failed event of its stream.
                None => {}
            }
        }
        let span = tracing::Span::current();
        span.record("recorded", recorded);
        span.record("duplicates", duplicates);
        span.record("dead_lettered", dead);
        crate::telemetry::consumer(&self.name, recorded, duplicates, dead);
        self.update(|status| {
            status.recorded += recorded;
            status.duplicates += duplicates;
            status.dead_lettered += dead;
            status.position = status.position.max(position);
        });
        match failure {
            Some(error) => Err(format!("recording a batch failed: {error}")),
            None => Ok(()),
        }
    }

    /// Appends one received event to its stream unless the stream holds it.
    async fn append(&self, received: &Received, name: &'static str) -> Outcome {
        let store = self.app.store();
        let stream = (
            received.aggregate_type.clone(),
            received.aggregate_id.clone(),
        );
        let mut metadata = Metadata {
            correlation_id: received.correlation_id,
            causation_id: received.causation_id,
            command_id: Some(received.event_id),
            ..Metadata::default()
        };
        metadata.values.extend(received.trace.clone());
        // The receiving app's handlers continue from this consumer's span.
        crate::telemetry::record(&tracing::Span::current(), &mut metadata);
        let event = NewEvent {
            event_id: received.event_id,
            event_name: name,
            event_version: received.event_version,
            metadata,
            payload: received.payload.clone(),
        };
        let mut attempts = 0;
        loop {
            attempts += 1;
            let known = lock(&self.versions).get(&stream).copied();
            let version = match known {
                Some(version) => version,
                None => match store.load(&stream.0, &stream.1, 1).await {
                    Ok(events) => events.last().map_or(0, |event| event.sequence),
                    Err(error) => return refused_or_failed(error),
                },
            };
            let appended = store
                .append(&stream.0, &stream.1, version, vec![event.clone()])
                .await;
            match appended {
                Ok(events) => {
                    let mut versions = lock(&self.versions);
                    if versions.len() >= KEPT_VERSIONS {
                        versions.clear();
                    }
                    let version = events.last().map_or(version, |event| event.sequence);
                    versions.insert(stream, version);
                    return Outcome::Recorded;
                }
                Err(StoreError::DuplicateCommand { .. }) => return Outcome::Duplicate,
                // Another writer, or an append whose outcome is unknown:
                // the next try sees which, by the command id.
                Err(error @ (StoreError::Conflict(_) | StoreError::OutcomeUnknown { .. }))
                    if attempts < 10 =>
                {
                    lock(&self.versions).remove(&stream);
                    tracing::debug!(consumer = %self.name, %error, "appending again");
                }
                // It may have landed: a redelivery finds out.
                Err(error @ StoreError::OutcomeUnknown { .. }) => {
                    lock(&self.versions).remove(&stream);
                    return Outcome::Failed(error);
                }
                Err(error) => {
                    lock(&self.versions).remove(&stream);
                    return refused_or_failed(error);
                }
            }
        }
    }
}

fn refused_or_failed(error: StoreError) -> Outcome {
    if error.is_transient() || matches!(error, StoreError::Conflict(_)) {
        Outcome::Failed(error)
    } else {
        Outcome::Refused(error.to_string())
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
